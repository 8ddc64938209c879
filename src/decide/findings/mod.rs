//! The leak findings of DESIGN.md §6, as one snapshot shows them: one detector per file.
//!
//! A detector turns what it sees into [`Sighting`]s. Each carries `held_for`: how long the
//! snapshot alone proves it has held (a session idle for three hours proves three hours of
//! idleness). [`super::memory`] adds what earlier cycles saw and applies the window before a
//! sighting becomes a confirmed [`Finding`](super::Finding).
//!
//! Detection needs no termination timeout: every detector has its own age or rate in
//! `spec.leakDetection`, with defaults, so a policy that sets nothing still reports every shape.
//!
//! Beside the detectors: [`kind`] (the kinds and their likely causes), [`sighting`] (what a
//! sighting carries), [`budgets`] (per-pod budgets), [`blockers`] (who blocks how many), and
//! [`statements`] (what a finding's sessions last ran).

mod blockers;
mod budgets;
mod churn;
mod ended;
mod idle_accumulation;
mod idle_in_transaction;
mod kind;
mod long_transaction;
mod orphaned;
mod overbooked;
mod pool_saturation;
mod pooler_saturation;
mod server_saturation;
mod sighting;
pub mod statements;

pub use blockers::blockers;
pub use budgets::Budgets;
pub use churn::{ChurnTally, churn};
pub use ended::{ended, merge as merge_ended};
pub use kind::{CHECKED_OUT_NOTE, FindingKind, POOLER_CLIENTS_NOTE};
pub use overbooked::{Booking, PoolFrom, overbooked};
pub use pooler_saturation::pooler_saturation;
pub use server_saturation::server_saturation;
pub use sighting::*;
pub use statements::StatementGroup;

use std::collections::{BTreeMap, HashMap};

use super::attribution::Source;
use super::cluster::ClusterView;
use super::groups::Governed;
use super::rules::Rules;
use crate::database::Snapshot;

/// One source's governed sessions, by pod (for clients outside Kubernetes: by address), and the
/// pooler clients of its pods that hold no server session.
pub struct SourceSessions<'g, 'a> {
    pub source: &'g Source,
    pub pods: BTreeMap<&'g str, Vec<&'g Governed<'a>>>,
    pub pooler_clients: BTreeMap<&'g str, Vec<&'g ClientConnection<'a>>>,
}

impl<'g, 'a> SourceSessions<'g, 'a> {
    fn new(source: &'g Source) -> Self {
        Self {
            source,
            pods: BTreeMap::new(),
            pooler_clients: BTreeMap::new(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &'g Governed<'a>> + '_ {
        self.pods.values().flatten().copied()
    }

    /// Every connection of each pod: its server sessions, then its pooler clients.
    fn connections(&self, now: jiff::Timestamp) -> BTreeMap<&'g str, Vec<Connection>> {
        let mut by_pod: BTreeMap<&'g str, Vec<Connection>> = BTreeMap::new();
        for (pod, sessions) in &self.pods {
            by_pod
                .entry(pod)
                .or_default()
                .extend(sessions.iter().map(|g| Connection::of_session(g, now)));
        }
        for (pod, clients) in &self.pooler_clients {
            by_pod
                .entry(pod)
                .or_default()
                .extend(clients.iter().map(|c| Connection::of_client(c)));
        }
        by_pod
    }
}

/// What every source detector may consult besides the source's own sessions.
pub struct DetectorContext<'a> {
    pub snapshot: &'a Snapshot,
    pub cluster: &'a ClusterView,
    pub budgets: &'a Budgets<'a>,
    pub rules: &'a Rules,
    /// For each pid, how many sessions wait on its locks.
    pub blocks: &'a HashMap<i64, u32>,
}

/// Every finding about a source, from the governed sessions and the pooler clients that hold
/// none: each detector in turn.
pub fn about_sources(
    governed: &[Governed<'_>],
    pooler_clients: &[ClientConnection<'_>],
    context: &DetectorContext<'_>,
) -> Vec<Sighting> {
    // Hashed while sorting sessions out, ordered once for the detectors (see `groups::by_source`).
    let mut by_source: HashMap<&Source, SourceSessions<'_, '_>> = HashMap::new();
    // A pooler's held connections are nobody's leak: what PgBouncer does with them is its own
    // policy (server_idle_timeout); a pool that makes clients wait is `pooler_saturation`'s.
    for g in governed
        .iter()
        .filter(|g| !g.attribution.via.is_held_by_pooler())
    {
        by_source
            .entry(&g.attribution.source)
            .or_insert_with(|| SourceSessions::new(&g.attribution.source))
            .pods
            .entry(g.attribution.pod.as_str())
            .or_default()
            .push(g);
    }
    for c in pooler_clients {
        by_source
            .entry(&c.attribution.source)
            .or_insert_with(|| SourceSessions::new(&c.attribution.source))
            .pooler_clients
            .entry(c.attribution.pod.as_str())
            .or_default()
            .push(c);
    }
    // Churn, Overbooked and ServerSaturation look beyond one source: see their own functions.
    let detectors: [fn(&SourceSessions<'_, '_>, &DetectorContext<'_>) -> Option<Sighting>; 5] = [
        idle_accumulation::find,
        idle_in_transaction::find,
        long_transaction::find,
        pool_saturation::find,
        orphaned::find,
    ];
    let mut sources: Vec<SourceSessions<'_, '_>> = by_source.into_values().collect();
    sources.sort_by(|a, b| a.source.cmp(b.source));
    sources
        .iter()
        .flat_map(|source| detectors.iter().filter_map(move |d| d(source, context)))
        .collect()
}
