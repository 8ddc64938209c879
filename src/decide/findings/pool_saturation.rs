//! `PoolSaturation`: a pod at (or over) its per-pod budget: the workload's
//! `poolwarden.io/pool-max`, else the policy's `budgets.maxConnectionsPerPod`. Without a budget
//! there is nothing to compare with, and nothing is found.
//!
//! At the budget, the pool is pinned at `pool_size + max_overflow` (seed 001). Over it, the pod
//! has more pools than the budget assumes: several worker processes, each with its own pool, or
//! a larger pool than declared. The words say which.

use super::{CHECKED_OUT_NOTE, Context, FindingKind, Sighting, SourceSessions};
use crate::api::human;
use crate::database::elapsed;
use crate::decide::POOL_MAX;

pub fn find(source: &SourceSessions<'_, '_>, context: &Context<'_>) -> Option<Sighting> {
    let budget = context.budgets.per_pod(source.source)?;
    let now = context.snapshot.observed_at;
    let (pod, sessions, held_for) = source
        .pods
        .iter()
        .filter(|(_, sessions)| sessions.len() >= budget as usize)
        .map(|(pod, sessions)| {
            let mut starts: Vec<jiff::Timestamp> =
                sessions.iter().map(|g| g.session.backend_start).collect();
            starts.sort();
            // At least `budget` of these sessions have all existed since the budget-th oldest
            // one started.
            let since = starts[budget as usize - 1];
            (*pod, sessions, elapsed(since, now))
        })
        .max_by_key(|(_, _, held)| *held)?;
    let held = sessions.len();
    let in_tx = sessions
        .iter()
        .filter(|g| g.session.state.is_idle_in_transaction())
        .count();
    let mut sighting = Sighting::about(source.source, FindingKind::PoolSaturation)
        .with_pids(sessions.iter().map(|g| g.session.pid));
    if held > budget as usize {
        sighting.summary = format!("{pod} holds {held} sessions, over its budget of {budget}");
        sighting.cause = format!(
            "more sessions than one pool of {budget} can open: a pod with several worker \
             processes (gunicorn/uvicorn workers, Celery concurrency) has one pool per process, \
             or the pool is larger than declared; set {POOL_MAX} on the workload to \
             pool_size + max_overflow times the worker processes, or shrink the pools"
        );
    } else {
        sighting.summary = format!("{pod} holds {held} sessions, its budget is {budget}");
        if in_tx * 2 >= held {
            sighting.cause = format!(
                "{}; {CHECKED_OUT_NOTE}",
                FindingKind::PoolSaturation.likely_cause()
            );
        }
    }
    sighting.evidence = format!(
        "{} ({in_tx} idle in transaction), for at least {}",
        sighting.summary,
        human(held_for)
    );
    sighting.held_for = held_for;
    Some(sighting)
}
