//! `PoolSaturation`: a pod whose pool is full. Two shapes say so:
//!
//! - **At its budget**: a pod at (or over) its per-pod budget: the workload's
//!   `poolwarden.io/pool-max`, else the policy's `budgets.maxConnectionsPerPod`. At the budget,
//!   the pool is pinned at `pool_size + max_overflow` (seed 001). Over it, the pod has more pools
//!   than the budget assumes: several worker processes, each with its own pool, or a larger
//!   pool than declared. The words say which.
//! - **Pinned**, with or without a budget: every one of a pod's connections (two or more) idle in
//!   a transaction, each for at least [`PINNED_SETTLED`], at a steady count. Seed 001's 25
//!   sessions sit so at every look; a healthy pod's sessions are idle in a transaction only for
//!   the moments between a transaction's statements, never all of them, for seconds, at every
//!   look of a window. A full garbage collection returns the pinned connections and the pool
//!   leaks 25 new ones within a second: the shape goes on (see [`super::super::memory`]), and a
//!   different count starts the window again.
//!
//! Behind a transaction pooler a pod's pool connections are client connections to the pooler,
//! and only those inside a transaction hold a server session: the others count too, from the
//! pooler's `SHOW CLIENTS` (each client once: by its server session while it holds one).

use std::time::Duration;

use super::{
    CHECKED_OUT_NOTE, DetectorContext, FindingKind, Sighting, SourceSessions, connections_word,
    pooler_clients_said,
};
use crate::api::{count, human};
use crate::decide::POOL_MAX;

/// How long each of a pinned pool's connections has sat idle in a transaction, at least: longer
/// than a transaction of a healthy application waits between two statements.
pub const PINNED_SETTLED: Duration = Duration::from_secs(10);

pub fn find(source: &SourceSessions<'_, '_>, context: &DetectorContext<'_>) -> Option<Sighting> {
    context
        .budgets
        .per_pod(source.source)
        .and_then(|budget| at_budget(source, budget))
        .or_else(|| pinned(source))
}

fn at_budget(source: &SourceSessions<'_, '_>, budget: u32) -> Option<Sighting> {
    let (pod, sessions, held_for) = source
        .pods
        .iter()
        .map(|pod| (pod.name, pod.connections))
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
        Sighting::about(source.source, FindingKind::PoolSaturation).with_connections(sessions);
    let holds = count(held, connections_word(sessions));
    if held > budget as usize {
        sighting.shown.summary = format!("{pod} holds {holds}, over its budget of {budget}");
        sighting.shown.cause = format!(
            "more sessions than one pool of {budget} can open: a pod with several worker \
             processes (gunicorn/uvicorn workers, Celery concurrency) has one pool per process, \
             or the pool is larger than declared; set {POOL_MAX} on the workload to \
             pool_size + max_overflow times the worker processes, or shrink the pools"
        )
        .into();
    } else {
        sighting.shown.summary = format!("{pod} holds {holds}, its budget is {budget}");
        if in_tx * 2 >= held {
            sighting.shown.cause = format!("{}; {CHECKED_OUT_NOTE}", sighting.shown.cause).into();
        }
    }
    sighting.shown.evidence = format!(
        "{} ({in_tx} idle in transaction{}), for at least {}",
        sighting.shown.summary,
        pooler_clients_said(sessions),
        human(held_for)
    );
    sighting.held_for = held_for;
    Some(sighting.noting_pooler_clients())
}

fn pinned(source: &SourceSessions<'_, '_>) -> Option<Sighting> {
    let (pod, connections, held_for) = source
        .pods
        .iter()
        .map(|pod| (pod.name, pod.connections))
        .filter(|(_, connections)| {
            connections.len() >= 2
                && connections
                    .iter()
                    .all(|c| c.state.is_idle_in_transaction() && c.in_state_for >= PINNED_SETTLED)
        })
        // All of them have sat idle in a transaction since the youngest did.
        .filter_map(|(pod, connections)| {
            let held_for = connections.iter().map(|c| c.in_state_for).min()?;
            Some((pod, connections, held_for))
        })
        .max_by_key(|(_, _, held)| *held)?;
    let mut sighting =
        Sighting::about(source.source, FindingKind::PoolSaturation).with_connections(connections);
    sighting.shown.summary = format!(
        "{pod} holds {}, every one idle in a transaction: its pool is pinned",
        count(connections.len(), connections_word(connections))
    );
    sighting.shown.evidence = format!(
        "{} (for at least {})",
        sighting.shown.summary,
        human(held_for)
    );
    sighting.shown.cause = format!(
        "a pool pinned with every connection checked out and idle in a transaction (seed 001: a \
         request's session handed to a background task after the request closed it; a garbage \
         collection that returns the connections only lets the tasks pin new ones); \
         {CHECKED_OUT_NOTE}"
    )
    .into();
    sighting.held_for = held_for;
    sighting.stable_count = Some(connections.len() as u32);
    Some(sighting)
}
