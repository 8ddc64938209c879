//! The leak findings of DESIGN.md §6, as one snapshot shows them: one detector per file.
//!
//! A detector turns what it sees into [`Sighting`]s. Each carries `held_for`: how long the
//! snapshot alone proves it has held (a session idle for three hours proves three hours of
//! idleness). [`super::memory`] adds what earlier cycles saw and applies the window before a
//! sighting becomes a confirmed [`Finding`](super::Finding).
//!
//! Detection needs no termination timeout: every detector has its own age or rate in
//! `spec.leakDetection`, with defaults, so a policy that sets nothing still reports every shape.

mod churn;
mod ended;
mod idle_accumulation;
mod idle_in_transaction;
mod long_transaction;
mod orphaned;
mod overbooked;
mod pool_saturation;
mod pooler_saturation;
mod server_saturation;
pub mod statements;

pub use churn::{ChurnTally, churn};
pub use ended::{ended, merge as merge_ended};
pub use overbooked::{Booking, PoolFrom, overbooked};
pub use pooler_saturation::pooler_saturation;
pub use server_saturation::server_saturation;
pub use statements::StatementGroup;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::attribution::{Attribution, Source};
use super::cluster::{ClusterView, WorkloadRef};
use super::groups::Governed;
use super::rules::Rules;
use crate::database::pgbouncer::ClientRow;
use crate::database::{SessionState, Snapshot};

/// The kinds of leak (and of risk) poolwarden recognises.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub enum FindingKind {
    IdleAccumulation,
    IdleInTransaction,
    PoolSaturation,
    ConnectionChurn,
    Orphaned,
    Overbooked,
    LongTransaction,
    ServerSaturation,
    /// A PgBouncer pool whose clients wait for a server connection.
    PoolerSaturation,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdleAccumulation => "IdleAccumulation",
            Self::IdleInTransaction => "IdleInTransaction",
            Self::PoolSaturation => "PoolSaturation",
            Self::ConnectionChurn => "ConnectionChurn",
            Self::Orphaned => "Orphaned",
            Self::Overbooked => "Overbooked",
            Self::LongTransaction => "LongTransaction",
            Self::ServerSaturation => "ServerSaturation",
            Self::PoolerSaturation => "PoolerSaturation",
        }
    }

    /// What usually causes it, pointing at the patterns poolwarden was born from. A detector may
    /// say something more precise for what it saw (see [`Sighting::cause`]).
    pub fn likely_cause(self) -> &'static str {
        match self {
            Self::IdleAccumulation => {
                "sessions stranded idle while the same pod keeps working: typically a pool \
                 inherited across fork() by long-lived worker processes; create the engine after \
                 the fork, or call engine.dispose() in the child"
            }
            Self::IdleInTransaction => {
                "a transaction left open: a session handed to a background task after the request \
                 closed it, a missing commit/rollback, or a service holding one session forever"
            }
            Self::PoolSaturation => {
                "the pool is pinned at pool_size + max_overflow: sessions are checked out and never \
                 returned (often a request-scoped session reused by a background task)"
            }
            Self::ConnectionChurn => {
                "sessions are opened and closed at a high rate: NullPool or an engine per request; \
                 keep one pool per process"
            }
            Self::Orphaned => {
                "sessions left behind by a pod that no longer exists: killed mid-transaction, or its \
                 node was lost"
            }
            Self::Overbooked => {
                "the pools' maximum (max replicas x per-pod pool) exceeds the server's usable \
                 connections: 'too many clients already' is waiting to happen; shrink the pools or \
                 put a pooler in front"
            }
            Self::LongTransaction => {
                "a service holding one transaction open and touching it now and then (a session \
                 created once and kept forever, e.g. in a singleton's constructor): vacuum cannot \
                 clean past its snapshot and its locks stay held; open a session per unit of work"
            }
            Self::ServerSaturation => {
                "the server is at its connection limit: new connections fail with 'too many \
                 clients already'; look at the top holders below"
            }
            Self::PoolerSaturation => {
                "the pooler's server pool is full and clients wait for a connection: clients \
                 holding transactions open behind it (see IdleInTransaction and LongTransaction on \
                 the holders named), or a default_pool_size too small for the load"
            }
        }
    }
}

/// What the owners of connections seen only at a pooler must know.
pub const POOLER_CLIENTS_NOTE: &str = "the connections listed as clients of a pooler hold no \
     server session now (they wait between transactions behind it): poolwarden cannot end them, \
     since ending a client's connection at PgBouncer needs its admin_users, which poolwarden never \
     asks for; restart (or fix) the workload to release them";

/// What a pinned pool's owners must know once poolwarden ends its sessions.
pub const CHECKED_OUT_NOTE: &str = "ending these sessions frees the server, not the application: \
     its pool still counts them as checked out, so restart (or fix) the workload to recover";

/// Who a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Subject {
    Source {
        source: Source,
    },
    /// The server as a whole (Overbooked, ServerSaturation, churn nobody can be named for).
    Server,
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Source { source } => source.fmt(f),
            Subject::Server => f.write_str("the server"),
        }
    }
}

/// A finding as one snapshot shows it, before the window is applied.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sighting {
    pub subject: Subject,
    pub kind: FindingKind,
    /// One human line of evidence, ages included.
    pub evidence: String,
    /// The evidence without ages, stable from cycle to cycle: what annotations and the status
    /// carry, so that they are rewritten only when something really changes.
    pub summary: String,
    /// What usually causes what was seen, and what to do.
    pub cause: String,
    /// How many sessions show it.
    pub sessions: u32,
    /// The sessions that show it, at most a handful.
    pub pids: Vec<i64>,
    /// The pooler's client connections that show it and hold no server session (so no pid),
    /// at most a handful. They count in `sessions`, and are never terminated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pooler_clients: Vec<PoolerClientRef>,
    /// How long the snapshot alone proves it has held.
    pub held_for: Duration,
    /// How long the sessions showing it have been in its shape, the detection age included
    /// (`held_for` plus that age; zero where there is none, for the same as `held_for`): a
    /// session that replaced one of a finding's sessions is in the shape long before it is old
    /// enough to show it, and the finding's streak goes on.
    #[serde(skip)]
    pub showing_for: Duration,
    /// For a shape that holds only at a steady count (a pinned pool): the count. Another count
    /// starts its window again.
    #[serde(skip)]
    pub stable_count: Option<u32>,
    /// Sessions `Enforce` ends for this leak in this cycle: confirmed at once.
    #[serde(skip)]
    pub ended: u32,
    /// What its sessions last ran, most common first ([`statements`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_statements: Vec<StatementGroup>,
    /// Every session that shows it (`pids` names a handful), until their statements are
    /// grouped ([`statements::attach`]).
    #[serde(skip)]
    members: Vec<i64>,
}

/// A client connection to a pooler, as a finding names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolerClientRef {
    pub pooler: String,
    /// Where it connects from (the pod); `None` over a Unix socket.
    pub address: Option<IpAddr>,
    pub port: Option<u16>,
}

impl std::fmt::Display for PoolerClientRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.address, self.port) {
            (Some(a), Some(p)) => write!(f, "{a}:{p}"),
            (Some(a), None) => write!(f, "{a}"),
            _ => f.write_str("local socket"),
        }
    }
}

/// A pooler's client that holds no server session now ([`super::pooler::unlinked_clients`]),
/// with its attribution: one of a pod's pool connections the server cannot see.
pub struct ClientConnection<'a> {
    pub pooler: &'a str,
    pub row: &'a ClientRow,
    pub attribution: Attribution,
}

/// One connection a pod holds, as the per-pod detectors (`PoolSaturation`, `IdleAccumulation`)
/// count them: a server session, or a pooler's client connection that holds none. Never the
/// two for one client: a client that holds a server session is counted by that session only.
pub struct Connection {
    pub state: SessionState,
    pub in_state_for: Duration,
    pub connected_for: Duration,
    pub held: Held,
}

/// Which connection, for the evidence.
pub enum Held {
    Session(i64),
    PoolerClient(PoolerClientRef),
}

impl Connection {
    fn of_session(g: &Governed<'_>, now: jiff::Timestamp) -> Self {
        Self {
            state: g.session.state,
            in_state_for: g.session.in_state_for(now),
            connected_for: g.session.connected_for(now),
            held: Held::Session(g.session.pid),
        }
    }

    /// A client waiting for a server is in use; any other holds no server and waits for its
    /// application: idle since its latest request (by the pooler's clock, as the detectors
    /// only compare durations).
    fn of_client(c: &ClientConnection<'_>) -> Self {
        let row = c.row;
        let connected_for = row.connected_for.unwrap_or_default();
        let (state, in_state_for) = if row.state.starts_with("waiting") {
            (SessionState::Active, row.waiting_for.unwrap_or_default())
        } else {
            (
                SessionState::Idle,
                row.since_request.unwrap_or(connected_for),
            )
        };
        Self {
            state,
            in_state_for,
            connected_for,
            held: Held::PoolerClient(PoolerClientRef {
                pooler: c.pooler.to_owned(),
                address: row.addr,
                port: row.port,
            }),
        }
    }
}

impl Sighting {
    /// A sighting about a source, with the kind's usual cause.
    fn about(source: &Source, kind: FindingKind) -> Self {
        Self::new(
            Subject::Source {
                source: source.clone(),
            },
            kind,
        )
    }

    /// A sighting about the server as a whole, with the kind's usual cause.
    fn about_server(kind: FindingKind) -> Self {
        Self::new(Subject::Server, kind)
    }

    fn new(subject: Subject, kind: FindingKind) -> Self {
        Self {
            subject,
            kind,
            evidence: String::new(),
            summary: String::new(),
            cause: kind.likely_cause().to_owned(),
            sessions: 0,
            pids: Vec::new(),
            pooler_clients: Vec::new(),
            held_for: Duration::ZERO,
            showing_for: Duration::ZERO,
            stable_count: None,
            ended: 0,
            last_statements: Vec::new(),
            members: Vec::new(),
        }
    }

    /// The connections showing it, sessions and pooler clients: all counted, a handful named.
    fn with_connections<'c>(
        mut self,
        connections: impl IntoIterator<Item = &'c Connection>,
    ) -> Self {
        let mut pids = Vec::new();
        let mut clients = Vec::new();
        for c in connections {
            match &c.held {
                Held::Session(pid) => pids.push(*pid),
                Held::PoolerClient(client) => clients.push(client.clone()),
            }
        }
        self.sessions = (pids.len() + clients.len()) as u32;
        self.pids = pids.iter().copied().take(EVIDENCE_PIDS).collect();
        self.members = pids;
        self.pooler_clients = clients.into_iter().take(EVIDENCE_PIDS).collect();
        self
    }

    /// The sessions showing it: all counted, a handful named.
    fn with_pids(mut self, pids: impl IntoIterator<Item = i64>) -> Self {
        let all: Vec<i64> = pids.into_iter().collect();
        self.sessions = all.len() as u32;
        self.pids = all.iter().copied().take(EVIDENCE_PIDS).collect();
        self.members = all;
        self
    }

    /// Where pooler clients show it, the cause says that poolwarden cannot end those: the last
    /// word of a detector that names connections.
    fn noting_pooler_clients(mut self) -> Self {
        if !self.pooler_clients.is_empty() {
            self.cause = format!("{}; {POOLER_CLIENTS_NOTE}", self.cause);
        }
        self
    }
}

/// What a pod's connections are called: sessions, unless some are only a pooler's clients.
fn connections_word(connections: &[Connection]) -> &'static str {
    if connections
        .iter()
        .any(|c| matches!(c.held, Held::PoolerClient(_)))
    {
        "connection"
    } else {
        "session"
    }
}

/// "; 3 client connections to pooler pgbouncer that hold no server session", when any are.
fn pooler_clients_said<'c>(connections: impl IntoIterator<Item = &'c Connection>) -> String {
    let mut n = 0;
    let mut poolers = std::collections::BTreeSet::new();
    for c in connections {
        if let Held::PoolerClient(client) = &c.held {
            n += 1;
            poolers.insert(client.pooler.as_str());
        }
    }
    if n == 0 {
        return String::new();
    }
    let poolers: Vec<&str> = poolers.into_iter().collect();
    format!(
        "; {} to pooler {} that hold no server session",
        crate::api::count(n, "client connection"),
        poolers.join(", ")
    )
}

/// A pinned pool of `pool_size + max_overflow` (25 in seed 001) is named in full.
const EVIDENCE_PIDS: usize = 50;

/// Per-pod budgets: a workload's `poolwarden.io/pool-max`, else the policy's. Built once per
/// decision, so that a source's budget is a lookup rather than a scan of every workload (with
/// thousands of workloads, the scans per source made deciding quadratic).
pub struct Budgets<'a> {
    declared: HashMap<&'a WorkloadRef, Option<u32>>,
    policy: Option<u32>,
}

impl<'a> Budgets<'a> {
    pub fn new(cluster: &'a ClusterView, rules: &Rules) -> Self {
        let mut declared = HashMap::with_capacity(cluster.workloads.len());
        for info in &cluster.workloads {
            // A workload listed twice counts with its first entry, as a scan would find it.
            declared.entry(&info.workload).or_insert(info.pool_max);
        }
        Self {
            declared,
            policy: rules.max_connections_per_pod,
        }
    }

    /// The per-pod budget for a source, and whether the workload declared it itself.
    pub fn per_pod(&self, source: &Source) -> Option<u32> {
        let declared = match source {
            Source::Workload(w) => self.declared.get(w).copied().flatten(),
            Source::Client { .. } | Source::Pooler { .. } => None,
        };
        // A budget of zero is no budget at all (an annotation typo must not condemn a whole pod).
        declared
            .filter(|b| *b > 0)
            .or(self.policy)
            .filter(|b| *b > 0)
    }
}

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
pub struct Context<'a> {
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
    context: &Context<'_>,
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
    let detectors: [fn(&SourceSessions<'_, '_>, &Context<'_>) -> Option<Sighting>; 5] = [
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

/// For each pid, how many sessions wait on its locks (from `blocked_by` of the lock waiters).
pub fn blockers(snapshot: &Snapshot) -> HashMap<i64, u32> {
    let mut blocks: HashMap<i64, u32> = HashMap::new();
    for s in &snapshot.sessions {
        for pid in &s.blocked_by {
            *blocks.entry(*pid).or_default() += 1;
        }
    }
    blocks
}
