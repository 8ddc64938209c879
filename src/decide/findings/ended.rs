//! What `Enforce` ends for a leak is that leak's finding on its source, confirmed at once: the
//! termination was decided on that evidence. Sessions ended for sitting idle in a transaction
//! past `idleInTransactionTimeout` make `IdleInTransaction`, for sitting idle in a transaction
//! older than `maxTransactionAge` make `LongTransaction`, for being left behind by a pod that no
//! longer exists make `Orphaned`.
//!
//! The timeouts are often shorter than the detection ages (a policy ends sessions idle in a
//! transaction for a minute; detection waits two), so the sessions are gone before any detector
//! could see them: without this, `Enforce` would hide the very leaks it ends from the owners of
//! the workload. Sessions ended for plain `idleTimeout` are no leak by themselves (a pool's spare
//! past a short timeout): they make no finding, and the controller tells the workload in a
//! `Normal` Event.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{CHECKED_OUT_NOTE, FindingKind, Sighting};
use crate::api::{count, human};
use crate::decide::attribution::Source;
use crate::decide::rules::Rules;
use crate::decide::terminations::{Reason, Termination};

/// The findings the sessions `Enforce` ends this cycle make, one per source and kind.
pub fn ended(selected: &[Termination], rules: &Rules) -> Vec<Sighting> {
    let mut by_finding: BTreeMap<(&Source, FindingKind), Vec<&Termination>> = BTreeMap::new();
    for t in selected {
        if let Some(kind) = leak_of(t.reason) {
            by_finding.entry((&t.source, kind)).or_default().push(t);
        }
    }
    by_finding
        .into_iter()
        .map(|((source, kind), ended)| sighting(source, kind, &ended, rules))
        .collect()
}

/// Adds what was ended to the finding a detector made of the same leak, or adds the finding.
pub fn merge(sightings: &mut Vec<Sighting>, ended: Vec<Sighting>) {
    for e in ended {
        match sightings
            .iter_mut()
            .find(|s| s.shown.subject == e.shown.subject && s.shown.kind == e.shown.kind)
        {
            Some(seen) => {
                seen.ended = e.ended;
                seen.members.extend(e.members);
                seen.shown.summary = format!("{}; {}", seen.shown.summary, e.shown.summary);
                seen.shown.evidence = format!("{}; {}", seen.shown.evidence, e.shown.evidence);
            }
            None => sightings.push(e),
        }
    }
}

/// The finding a termination's reason is evidence of; none for plain idleness.
fn leak_of(reason: Reason) -> Option<FindingKind> {
    match reason {
        Reason::IdleInTransactionTimeout => Some(FindingKind::IdleInTransaction),
        Reason::TransactionTooOld => Some(FindingKind::LongTransaction),
        Reason::Orphaned => Some(FindingKind::Orphaned),
        Reason::IdleTimeout => None,
    }
}

fn sighting(source: &Source, kind: FindingKind, ended: &[&Termination], rules: &Rules) -> Sighting {
    let sessions = count(ended.len(), "session");
    let oldest = ended
        .iter()
        .map(|t| t.in_state_for)
        .max()
        .unwrap_or_default();
    let mut sighting =
        Sighting::about(source, kind).with_pids(ended.iter().map(|t| t.identity.pid));
    let (summary, limit) = match kind {
        FindingKind::IdleInTransaction => {
            let limit = rules.idle_in_transaction_timeout.unwrap_or_default();
            (
                format!(
                    "{sessions} ended, idle in a transaction for more than {} \
                     (idleInTransactionTimeout)",
                    human(limit)
                ),
                limit,
            )
        }
        FindingKind::LongTransaction => (
            format!(
                "{sessions} ended, idle in a transaction open for more than {} \
                 (maxTransactionAge)",
                human(rules.max_transaction_age.unwrap_or_default())
            ),
            Duration::ZERO,
        ),
        _ => {
            let mut pods: Vec<&str> = ended.iter().map(|t| t.pod.as_str()).collect();
            pods.sort_unstable();
            pods.dedup();
            (
                format!(
                    "{sessions} ended, left behind by pods that no longer exist ({})",
                    pods.join(", ")
                ),
                Duration::ZERO,
            )
        }
    };
    sighting.shown.evidence = format!("{summary} (the longest in its state for {})", human(oldest));
    sighting.shown.summary = summary;
    if ended.iter().any(|t| t.checked_out) {
        sighting.shown.cause = format!("{}; {CHECKED_OUT_NOTE}", sighting.shown.cause).into();
    }
    sighting.held_for = oldest.saturating_sub(limit);
    sighting.showing_for = oldest;
    sighting.ended = ended.len() as u32;
    sighting
}
