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
use super::numbers::Numbers;
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

/// A pod's sessions and pooler clients, while they are sorted out.
#[derive(Default)]
struct Sorting<'g, 'a> {
    sessions: Vec<&'g Governed<'a>>,
    pooler_clients: Vec<&'g ClientConnection<'a>>,
}

impl<'g, 'a> Sorting<'g, 'a> {
    fn into_pod(self, name: &'g str, now: jiff::Timestamp) -> PodSessions<'g, 'a> {
        let mut connections = Vec::with_capacity(self.sessions.len() + self.pooler_clients.len());
        connections.extend(self.sessions.iter().map(|g| Connection::of_session(g, now)));
        connections.extend(self.pooler_clients.iter().map(|c| Connection::of_client(c)));
        PodSessions {
            name,
            sessions: self.sessions,
            connections,
        }
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
    numbers: &Numbers<'_>,
    context: &DetectorContext<'_>,
) -> Vec<Sighting> {
    // By pod number while sorting sessions out, ordered once for the detectors.
    let mut by_pod: Vec<Sorting<'_, '_>> =
        numbers.pods.iter().map(|_| Sorting::default()).collect();
    // A pooler's held connections are nobody's leak: what PgBouncer does with them is its own
    // policy (server_idle_timeout); a pool that makes clients wait is `pooler_saturation`'s.
    for (g, n) in governed.iter().zip(&numbers.governed) {
        if !g.attribution.via.is_held_by_pooler() {
            by_pod[n.pod].sessions.push(g);
        }
    }
    for (c, n) in pooler_clients.iter().zip(&numbers.pooler_clients) {
        by_pod[n.pod].pooler_clients.push(c);
    }
    let mut pods_of: Vec<Vec<usize>> = numbers.sources.iter().map(|_| Vec::new()).collect();
    for (pod, sorting) in by_pod.iter().enumerate() {
        if !(sorting.sessions.is_empty() && sorting.pooler_clients.is_empty()) {
            pods_of[numbers.pods[pod].1].push(pod);
        }
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
    let mut sources: Vec<SourceSessions<'_, '_>> = pods_of
        .into_iter()
        .enumerate()
        .filter(|(_, pods)| !pods.is_empty())
        .map(|(source, mut pods)| {
            pods.sort_unstable_by_key(|pod| numbers.pod(*pod).as_str());
            SourceSessions {
                source: numbers.source(source),
                pods: pods
                    .into_iter()
                    .map(|pod| {
                        let name = numbers.pod(pod).as_str();
                        std::mem::take(&mut by_pod[pod]).into_pod(name, now)
                    })
                    .collect(),
            }
        })
        .collect();
    sources.sort_unstable_by(|a, b| a.source.cmp(b.source));
    sources
        .iter()
        .flat_map(|source| detectors.iter().filter_map(move |d| d(source, context)))
        .collect()
}
