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
pub use orphaned::departures;
pub use overbooked::{Booking, PoolFrom, overbooked};
pub use pooler_saturation::pooler_saturation;
pub use server_saturation::server_saturation;
pub use sighting::*;
pub use statements::StatementGroup;

use super::FastMap;
use super::attribution::Source;
use super::groups::Governed;
use super::rules::Rules;
use crate::database::Snapshot;

/// One source's governed sessions, by pod (for clients outside Kubernetes: by address), and the
/// pooler clients of its pods that hold no server session: sorted out once per decision, for
/// every detector.
pub struct SourceSessions<'g, 'a> {
    pub source: &'g Source,
    /// By pod name.
    pub pods: Vec<PodSessions<'g, 'a>>,
}

/// One pod's governed sessions, and every connection it holds.
pub struct PodSessions<'g, 'a> {
    pub name: &'g str,
    pub sessions: Vec<&'g Governed<'a>>,
    /// Its server sessions, then its pooler clients that hold none: what the per-pod detectors
    /// count.
    pub connections: Vec<Connection>,
}

impl<'g, 'a> SourceSessions<'g, 'a> {
    fn all(&self) -> impl Iterator<Item = &'g Governed<'a>> + '_ {
        self.pods
            .iter()
            .flat_map(|pod| pod.sessions.iter().copied())
    }
}

/// A source's sessions and pooler clients by pod, while they are sorted out.
#[derive(Default)]
struct Sorting<'g, 'a> {
    sessions: FastMap<&'g str, Vec<&'g Governed<'a>>>,
    pooler_clients: FastMap<&'g str, Vec<&'g ClientConnection<'a>>>,
}

impl<'g, 'a> Sorting<'g, 'a> {
    fn into_pods(mut self, now: jiff::Timestamp) -> Vec<PodSessions<'g, 'a>> {
        let mut names: Vec<&'g str> = self.sessions.keys().copied().collect();
        names.extend(
            self.pooler_clients
                .keys()
                .filter(|pod| !self.sessions.contains_key(*pod)),
        );
        names.sort_unstable();
        names
            .into_iter()
            .map(|name| {
                let sessions = self.sessions.remove(name).unwrap_or_default();
                let clients = self.pooler_clients.remove(name).unwrap_or_default();
                let mut connections = Vec::with_capacity(sessions.len() + clients.len());
                connections.extend(sessions.iter().map(|g| Connection::of_session(g, now)));
                connections.extend(clients.iter().map(|c| Connection::of_client(c)));
                PodSessions {
                    name,
                    sessions,
                    connections,
                }
            })
            .collect()
    }
}

/// What every source detector may consult besides the source's own sessions.
pub struct DetectorContext<'a> {
    pub snapshot: &'a Snapshot,
    pub budgets: &'a Budgets<'a>,
    pub rules: &'a Rules,
    /// For each pid, how many sessions wait on its locks.
    pub blocks: &'a FastMap<i64, u32>,
    /// When each departed pod left (see [`departures`]).
    pub departures: FastMap<&'a str, jiff::Timestamp>,
}

/// Every finding about a source, from the governed sessions and the pooler clients that hold
/// none: each detector in turn.
pub fn about_sources(
    governed: &[Governed<'_>],
    pooler_clients: &[ClientConnection<'_>],
    context: &DetectorContext<'_>,
) -> Vec<Sighting> {
    // Hashed while sorting sessions out, ordered once for the detectors (see `groups::by_source`).
    let mut by_source: FastMap<&Source, Sorting<'_, '_>> = FastMap::default();
    // A pooler's held connections are nobody's leak: what PgBouncer does with them is its own
    // policy (server_idle_timeout); a pool that makes clients wait is `pooler_saturation`'s.
    for g in governed
        .iter()
        .filter(|g| !g.attribution.via.is_held_by_pooler())
    {
        by_source
            .entry(&g.attribution.source)
            .or_default()
            .sessions
            .entry(g.attribution.pod.as_str())
            .or_default()
            .push(g);
    }
    for c in pooler_clients {
        by_source
            .entry(&c.attribution.source)
            .or_default()
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
    let now = context.snapshot.observed_at;
    let mut sources: Vec<SourceSessions<'_, '_>> = by_source
        .into_iter()
        .map(|(source, sorting)| SourceSessions {
            source,
            pods: sorting.into_pods(now),
        })
        .collect();
    sources.sort_unstable_by(|a, b| a.source.cmp(b.source));
    sources
        .iter()
        .flat_map(|source| detectors.iter().filter_map(move |d| d(source, context)))
        .collect()
}
