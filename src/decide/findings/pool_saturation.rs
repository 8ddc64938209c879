//! `PoolSaturation`: a pod at (or over) its per-pod budget: the workload's
//! `poolwarden.io/pool-max`, else the policy's `budgets.maxConnectionsPerPod`. Without a budget
//! there is nothing to compare with, and nothing is found.
//!
//! At the budget, the pool is pinned at `pool_size + max_overflow` (seed 001). Over it, the pod
//! has more pools than the budget assumes: several worker processes, each with its own pool, or
//! a larger pool than declared. The words say which.
//!
//! Behind a transaction pooler a pod's pool connections are client connections to the pooler,
//! and only those inside a transaction hold a server session: the others count too, from the
//! pooler's `SHOW CLIENTS` (each client once: by its server session while it holds one).

use std::time::Duration;

use super::{
    CHECKED_OUT_NOTE, Context, FindingKind, Sighting, SourceSessions, connections_word,
    pooler_clients_said,
};
use crate::api::{count, human};
use crate::decide::POOL_MAX;

pub fn find(source: &SourceSessions<'_, '_>, context: &Context<'_>) -> Option<Sighting> {
    let budget = context.budgets.per_pod(source.source)?;
    let now = context.snapshot.observed_at;
    let (pod, sessions, held_for) = source
        .connections(now)
        .into_iter()
        .filter(|(_, sessions)| sessions.len() >= budget as usize)
        .map(|(pod, sessions)| {
            let mut ages: Vec<Duration> = sessions.iter().map(|c| c.connected_for).collect();
            ages.sort_by_key(|age| std::cmp::Reverse(*age));
            // At least `budget` of these connections have all existed since the budget-th
            // oldest one opened.
            let held_for = ages[budget as usize - 1];
            (pod, sessions, held_for)
        })
        .max_by_key(|(_, _, held)| *held)?;
    let held = sessions.len();
    let in_tx = sessions
        .iter()
        .filter(|c| c.state.is_idle_in_transaction())
        .count();
    let mut sighting =
        Sighting::about(source.source, FindingKind::PoolSaturation).with_connections(&sessions);
    let holds = count(held, connections_word(&sessions));
    if held > budget as usize {
        sighting.summary = format!("{pod} holds {holds}, over its budget of {budget}");
        sighting.cause = format!(
            "more sessions than one pool of {budget} can open: a pod with several worker \
             processes (gunicorn/uvicorn workers, Celery concurrency) has one pool per process, \
             or the pool is larger than declared; set {POOL_MAX} on the workload to \
             pool_size + max_overflow times the worker processes, or shrink the pools"
        );
    } else {
        sighting.summary = format!("{pod} holds {holds}, its budget is {budget}");
        if in_tx * 2 >= held {
            sighting.cause = format!("{}; {CHECKED_OUT_NOTE}", sighting.cause);
        }
    }
    sighting.evidence = format!(
        "{} ({in_tx} idle in transaction{}), for at least {}",
        sighting.summary,
        pooler_clients_said(&sessions),
        human(held_for)
    );
    sighting.held_for = held_for;
    Some(sighting.noting_pooler_clients())
}
