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
    pub sessions: &'g [&'g Governed<'a>],
    /// Its server sessions, then its pooler clients that hold none: what the per-pod detectors
    /// count.
    pub connections: &'g [Connection],
}

impl<'g, 'a> SourceSessions<'g, 'a> {
    fn all(&self) -> impl Iterator<Item = &'g Governed<'a>> + '_ {
        self.pods
            .iter()
            .flat_map(|pod| pod.sessions.iter().copied())
    }
}

/// Every pod's sessions and connections, each kind in one list, pod after pod in the order the
/// detectors read them (by source, then by pod name): a list or two per pod, for ten thousand
/// pods, cost more to allocate than the detectors took to read them.
struct ByPod<'g, 'a> {
    /// The pods that show anything, in order, each with its source.
    order: Vec<(usize, usize)>,
    sessions: Vec<&'g Governed<'a>>,
    connections: Vec<Connection>,
    /// Where each pod's sessions and connections begin and end, by rank in `order`.
    spans: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl<'g, 'a> ByPod<'g, 'a> {
    fn sort_out(
        governed: &'g [Governed<'a>],
        pooler_clients: &'g [ClientConnection<'a>],
        numbers: &Numbers<'_>,
        now: jiff::Timestamp,
    ) -> Self {
        // A pooler's held connections are nobody's leak: what PgBouncer does with them is its
        // own policy (server_idle_timeout); a pool that makes clients wait is
        // `pooler_saturation`'s.
        let counted = || {
            governed
                .iter()
                .zip(&numbers.governed)
                .filter(|(g, _)| !g.attribution.via.is_held_by_pooler())
        };
        let mut sessions_of = vec![0usize; numbers.pods.len()];
        let mut clients_of = vec![0usize; numbers.pods.len()];
        for (_, n) in counted() {
            sessions_of[n.pod] += 1;
        }
        for n in &numbers.pooler_clients {
            clients_of[n.pod] += 1;
        }
        let mut order: Vec<(usize, usize)> = (0..numbers.pods.len())
            .filter(|&pod| sessions_of[pod] + clients_of[pod] > 0)
            .map(|pod| (numbers.pods[pod].1, pod))
            .collect();
        let ranks = &numbers.ranks;
        // A pod's name is unique within its source: no two are equal.
        order.sort_unstable_by(|a, b| {
            ranks[a.0]
                .cmp(&ranks[b.0])
                .then_with(|| numbers.pod(a.1).cmp(numbers.pod(b.1)))
        });
        // Where each pod's sessions go (a counting sort: each pod's in the order governed).
        let mut next_session = vec![0usize; numbers.pods.len()];
        let mut spans = Vec::with_capacity(order.len());
        let (mut at_session, mut at_connection) = (0, 0);
        for &(_, pod) in &order {
            next_session[pod] = at_session;
            let connections = sessions_of[pod] + clients_of[pod];
            spans.push((
                at_session..at_session + sessions_of[pod],
                at_connection..at_connection + connections,
            ));
            at_session += sessions_of[pod];
            at_connection += connections;
        }
        let mut slots: Vec<Option<&'g Governed<'a>>> = vec![None; at_session];
        for (g, n) in counted() {
            slots[next_session[n.pod]] = Some(g);
            next_session[n.pod] += 1;
        }
        let sessions: Vec<&'g Governed<'a>> = slots.into_iter().flatten().collect();
        let mut clients: Vec<Vec<&ClientConnection<'_>>> = vec![Vec::new(); numbers.pods.len()];
        for (c, n) in pooler_clients.iter().zip(&numbers.pooler_clients) {
            clients[n.pod].push(c);
        }
        let mut connections = Vec::with_capacity(at_connection);
        for (&(_, pod), (own, _)) in order.iter().zip(&spans) {
            connections.extend(
                sessions[own.clone()]
                    .iter()
                    .map(|g| Connection::of_session(g, now)),
            );
            connections.extend(clients[pod].iter().map(|c| Connection::of_client(c)));
        }
        Self {
            order,
            sessions,
            connections,
            spans,
        }
    }

    /// Each source that shows anything, with its pods, in order.
    fn sources<'b>(&'b self, numbers: &Numbers<'b>) -> Vec<SourceSessions<'b, 'a>> {
        let mut sources: Vec<SourceSessions<'b, 'a>> = Vec::new();
        let mut last_source = None;
        for (&(source, pod), (own, all)) in self.order.iter().zip(&self.spans) {
            if last_source != Some(source) {
                last_source = Some(source);
                sources.push(SourceSessions {
                    source: numbers.source(source),
                    pods: Vec::new(),
                });
            }
            if let Some(last) = sources.last_mut() {
                last.pods.push(PodSessions {
                    name: numbers.pod(pod).as_str(),
                    sessions: &self.sessions[own.clone()],
                    connections: &self.connections[all.clone()],
                });
            }
        }
        sources
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
    let now = context.snapshot.observed_at;
    let by_pod = ByPod::sort_out(governed, pooler_clients, numbers, now);
    let sources = by_pod.sources(numbers);
    // Churn, Overbooked and ServerSaturation look beyond one source: see their own functions.
    let detectors: [fn(&SourceSessions<'_, '_>, &DetectorContext<'_>) -> Option<Sighting>; 5] = [
        idle_accumulation::find,
        idle_in_transaction::find,
        long_transaction::find,
        pool_saturation::find,
        orphaned::find,
    ];
    sources
        .iter()
        .flat_map(|source| detectors.iter().filter_map(move |d| d(source, context)))
        .collect()
}
