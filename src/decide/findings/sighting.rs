//! A finding as one snapshot shows it ([`Sighting`]): who it is about, its evidence, and the
//! connections that show it.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::decide::attribution::{Attribution, Source};
use crate::decide::groups::Governed;

use super::{FindingKind, POOLER_CLIENTS_NOTE, StatementGroup};
use crate::database::SessionState;
use crate::database::pgbouncer::ClientRow;

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

/// What a finding shows: who, which kind, the evidence and the sessions. A detector's
/// [`Sighting`] and the [`Finding`](crate::decide::Finding) the window makes of it both carry it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shown {
    pub subject: Subject,
    pub kind: FindingKind,
    /// One human line of evidence, ages included.
    pub evidence: String,
    /// The evidence without ages, stable from cycle to cycle: what annotations and the status
    /// carry, so that they are rewritten only when something really changes.
    pub summary: String,
    /// What usually causes what was seen, and what to do: mostly the kind's own words, shared.
    pub cause: Cow<'static, str>,
    /// How many sessions show it.
    pub sessions: u32,
    /// The sessions that show it, at most a handful.
    pub pids: Vec<i64>,
    /// The pooler's client connections that show it and hold no server session (so no pid),
    /// at most a handful. They count in `sessions`, and are never terminated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pooler_clients: Vec<PoolerClientRef>,
    /// What its sessions last ran, fingerprinted and grouped, most common first (none with
    /// `leakDetection.lastStatements: Off`, or where the server does not show them; see
    /// [`statements`](super::statements)).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub last_statements: Vec<StatementGroup>,
}

/// A finding as one snapshot shows it, before the window is applied.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sighting {
    #[serde(flatten)]
    pub shown: Shown,
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
    /// Every session that shows it (`pids` names a handful), until their statements are
    /// grouped ([`statements::attach`](super::statements::attach)).
    #[serde(skip)]
    pub(super) members: Vec<i64>,
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
    pub(super) fn of_session(g: &Governed<'_>, now: jiff::Timestamp) -> Self {
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
    pub(super) fn of_client(c: &ClientConnection<'_>) -> Self {
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
    pub(super) fn about(source: &Source, kind: FindingKind) -> Self {
        Self::new(
            Subject::Source {
                source: source.clone(),
            },
            kind,
        )
    }

    /// A sighting about the server as a whole, with the kind's usual cause.
    pub(super) fn about_server(kind: FindingKind) -> Self {
        Self::new(Subject::Server, kind)
    }

    pub(super) fn new(subject: Subject, kind: FindingKind) -> Self {
        Self {
            shown: Shown {
                subject,
                kind,
                evidence: String::new(),
                summary: String::new(),
                cause: Cow::Borrowed(kind.likely_cause()),
                sessions: 0,
                pids: Vec::new(),
                pooler_clients: Vec::new(),
                last_statements: Vec::new(),
            },
            held_for: Duration::ZERO,
            showing_for: Duration::ZERO,
            stable_count: None,
            ended: 0,
            members: Vec::new(),
        }
    }

    /// The connections showing it, sessions and pooler clients: all counted, a handful named.
    pub(super) fn with_connections<'c>(
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
        self.shown.sessions = (pids.len() + clients.len()) as u32;
        self.shown.pids = pids.iter().copied().take(EVIDENCE_PIDS).collect();
        self.members = pids;
        self.shown.pooler_clients = clients.into_iter().take(EVIDENCE_PIDS).collect();
        self
    }

    /// The sessions showing it: all counted, a handful named.
    pub(super) fn with_pids(mut self, pids: impl IntoIterator<Item = i64>) -> Self {
        let all: Vec<i64> = pids.into_iter().collect();
        self.shown.sessions = all.len() as u32;
        self.shown.pids = all.iter().copied().take(EVIDENCE_PIDS).collect();
        self.members = all;
        self
    }

    /// Where pooler clients show it, the cause says that poolwarden cannot end those: the last
    /// word of a detector that names connections.
    pub(super) fn noting_pooler_clients(mut self) -> Self {
        if !self.shown.pooler_clients.is_empty() {
            self.shown.cause = format!("{}; {POOLER_CLIENTS_NOTE}", self.shown.cause).into();
        }
        self
    }
}

/// What a pod's connections are called: sessions, unless some are only a pooler's clients.
pub(super) fn connections_word<'c>(
    connections: impl IntoIterator<Item = &'c Connection>,
) -> &'static str {
    if connections
        .into_iter()
        .any(|c| matches!(c.held, Held::PoolerClient(_)))
    {
        "connection"
    } else {
        "session"
    }
}

/// "; 3 client connections to pooler pgbouncer that hold no server session", when any are.
pub(super) fn pooler_clients_said<'c>(
    connections: impl IntoIterator<Item = &'c Connection>,
) -> String {
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
pub(super) const EVIDENCE_PIDS: usize = 50;
