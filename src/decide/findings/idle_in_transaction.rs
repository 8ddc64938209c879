//! `IdleInTransaction`: sessions idle inside a transaction for longer than
//! `leakDetection.idleInTransactionAge` (default 2m), whatever the termination timeouts say.
//!
//! When every session a pod holds sits idle in a transaction, its pool is pinned (seed 001: 25 =
//! `pool_size + max_overflow`, all checked out by background tasks): the cause says so, and that
//! ending them will not give the application its pool back.

use std::time::Duration;

use super::{CHECKED_OUT_NOTE, DetectorContext, FindingKind, Sighting, SourceSessions};
use crate::api::{count, human};

pub fn find(source: &SourceSessions<'_, '_>, context: &DetectorContext<'_>) -> Option<Sighting> {
    let now = context.snapshot.observed_at;
    let limit = context.rules.detect.idle_in_transaction_age;
    let mut stuck: Vec<(Duration, i64)> = source
        .all()
        .filter(|g| g.session.state.is_idle_in_transaction())
        .map(|g| (g.session.in_state_for(now), g.session.pid))
        .filter(|(age, _)| *age > limit)
        .collect();
    if stuck.is_empty() {
        return None;
    }
    stuck.sort_by(|a, b| b.cmp(a));
    // A pod all of whose sessions (several of them) are idle in a transaction: a pinned pool.
    let pinned = source.pods.iter().find(|pod| {
        let sessions = pod.sessions;
        sessions.len() >= 2
            && sessions.iter().all(|g| {
                g.session.state.is_idle_in_transaction() && g.session.in_state_for(now) > limit
            })
    });
    let summary = format!(
        "{} idle in transaction for more than {}",
        count(stuck.len(), "session"),
        human(limit)
    );
    let mut sighting = Sighting::about(source.source, FindingKind::IdleInTransaction)
        .with_pids(stuck.iter().map(|(_, pid)| *pid));
    sighting.shown.evidence = match pinned {
        Some(pod) => format!(
            "{summary} (oldest {}); every one of the {} sessions of {} is idle in a \
             transaction: its pool is pinned",
            human(stuck[0].0),
            pod.sessions.len(),
            pod.name
        ),
        None => format!("{summary} (oldest {})", human(stuck[0].0)),
    };
    if pinned.is_some() {
        sighting.shown.cause = format!(
            "a pool pinned with every connection checked out and idle in a transaction (seed 001: \
             a request's session handed to a background task after the request closed it); \
             {CHECKED_OUT_NOTE}"
        )
        .into();
    }
    sighting.shown.summary = summary;
    sighting.held_for = stuck[0].0.saturating_sub(limit);
    sighting.showing_for = stuck[0].0;
    Some(sighting)
}
