//! `LongTransaction`: transactions open for longer than `leakDetection.transactionAge` (default
//! 10m) by `xact_start` on the server's clock, however recently their session ran a statement.
//!
//! Seed 003's services keep one transaction open forever and touch it every few seconds:
//! `state_change` stays fresh while `xact_start` ages, so the idle-in-transaction age misses them.
//! What they cost is reported with them: the oldest xmin held (`backend_xmin`, or the session's own
//! `backend_xid` when older: vacuum cannot clean past it) and how many sessions wait on their locks.

use std::time::Duration;

use super::{DetectorContext, FindingKind, Sighting, SourceSessions};
use crate::api::{count, human};
use crate::database::Session;

pub fn find(source: &SourceSessions<'_, '_>, context: &DetectorContext<'_>) -> Option<Sighting> {
    let now = context.snapshot.observed_at;
    let limit = context.rules.detect.transaction_age;
    let mut long: Vec<(Duration, i64, &Session)> = source
        .all()
        .filter_map(|g| Some((g.session.in_transaction_for(now)?, g.session.pid, g.session)))
        .filter(|(age, _, _)| *age > limit)
        .collect();
    if long.is_empty() {
        return None;
    }
    // Oldest first; pids are unique, so the order is total.
    long.sort_by_key(|(age, pid, _)| std::cmp::Reverse((*age, *pid)));
    let oldest = long[0].2;
    let held_back = long
        .iter()
        .filter_map(|(_, _, s)| Some((s.xmin_age?, s.backend_xmin?)))
        .max();
    let blocked: u32 = long
        .iter()
        .map(|(_, pid, _)| context.blocks.get(pid).copied().unwrap_or(0))
        .sum();
    let summary = format!(
        "{} open for more than {}",
        count(long.len(), "transaction"),
        human(limit)
    );
    let mut evidence = format!(
        "{summary} (oldest {}, pid {}, {}, last statement {} ago)",
        human(long[0].0),
        oldest.pid,
        oldest.state.label(),
        human(oldest.in_state_for(now))
    );
    if let Some((age, xmin)) = held_back {
        evidence.push_str(&format!(
            "; oldest xmin held: {xmin}, {age} transactions ago (vacuum cannot clean past it)"
        ));
    }
    if blocked > 0 {
        evidence.push_str(&format!(
            "; {} waiting on their locks",
            count(blocked as usize, "session")
        ));
    }
    let mut sighting = Sighting::about(source.source, FindingKind::LongTransaction)
        .with_pids(long.iter().map(|(_, pid, _)| *pid));
    sighting.shown.evidence = evidence;
    sighting.shown.summary = summary;
    sighting.held_for = long[0].0.saturating_sub(limit);
    sighting.showing_for = long[0].0;
    Some(sighting)
}
