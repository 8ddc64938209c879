//! What poolwarden sees of a database server, independent of the engine that produced it.
//!
//! Every timestamp comes from the database's own clock, and every age is measured against
//! [`Snapshot::observed_at`], also the database's clock: the operator's clock never decides whether
//! a session is old enough to end.

use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::fingerprint::Statement;

/// One look at the server: its sessions and the facts needed to judge them.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// The database's `now()` when the snapshot was taken; ages are measured from here.
    pub observed_at: Timestamp,
    /// The backend (MySQL: the thread) serving poolwarden's own monitoring connection: never a
    /// candidate.
    pub own_pid: i64,
    pub server: ServerFacts,
    pub monitor: MonitorRole,
    /// Every backend the server reports, client backends and background processes alike.
    pub sessions: Vec<Session>,
    /// Sessions ever opened on the server (Σ `pg_stat_database.sessions`, PostgreSQL 14+): the
    /// difference between two snapshots measures churn that polling alone cannot see.
    pub sessions_opened_total: Option<i64>,
    /// Quick looks at the backends that appeared while the snapshot was taken, when the engine
    /// took them (see [`ChurnSample`]); `None` when it did not (a quiet server, or an engine that
    /// cannot).
    pub churn: Option<ChurnSample>,
    /// Whether sessions' application names can be seen at all. Always on PostgreSQL; on MySQL only
    /// through `performance_schema`'s connection attributes (`program_name`). Without them another
    /// poolwarden cannot be told by its name, so the monitoring user's sessions are spared instead.
    pub application_names_known: bool,
    /// Whether the sessions carry their last statements ([`Session::last_statement`]).
    pub last_statements: LastStatements,
}

/// Whether a snapshot's sessions carry what they last ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LastStatements {
    /// Read and fingerprinted (a session that ran nothing yet has none).
    Read,
    /// Not asked for: the policy turned them off (`leakDetection.lastStatements: Off`).
    #[default]
    NotRead,
    /// Asked for, but the server does not show them: why, and what to do.
    Unavailable(String),
}

/// Several quick looks at new backends within one observation, so that sessions living a few
/// milliseconds can be seen at all and attributed to whoever opens them.
///
/// A backend seen in one look and gone by a later one *appeared and vanished*: it is short-lived,
/// the signature of `NullPool` or an engine per request. A new backend still there at the last
/// look persists: a pool refilling after a reset, which is not churn.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChurnSample {
    /// The database's clock at the first and the last look.
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    /// How many looks were taken.
    pub looks: u32,
    /// Sessions opened on the server by the first and by the last look (PostgreSQL 14+), so
    /// that even a single observation (`poolwarden check`) can measure a rate.
    pub opened_at_start: Option<i64>,
    pub opened_at_end: Option<i64>,
    /// New backends that appeared and vanished between the looks, as first seen.
    pub short_lived: Vec<Session>,
    /// New backends still there at the last look.
    pub persisted: u32,
}

impl ChurnSample {
    /// New sessions per second between the first and the last look, when the engine counts them.
    pub fn rate(&self) -> Option<f64> {
        let (Some(start), Some(end)) = (self.opened_at_start, self.opened_at_end) else {
            return None;
        };
        let seconds = elapsed(self.started_at, self.ended_at).as_secs_f64();
        (seconds > 0.0 && end >= start).then(|| (end - start) as f64 / seconds)
    }
}

/// The server's identity and connection limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerFacts {
    /// Which server this is: the advice poolwarden gives (grants, settings) depends on it.
    pub flavour: Flavour,
    pub version: String,
    pub version_num: u32,
    pub max_connections: u32,
    /// `superuser_reserved_connections`.
    pub superuser_reserved_connections: u32,
    /// `reserved_connections` (PostgreSQL 16+; 0 before).
    pub reserved_connections: u32,
    /// The server's own count of open connections, where it keeps one (MySQL `Threads_connected`).
    pub connected: Option<u32>,
    /// The most connections one user may hold, where the server sets one for every user (MySQL
    /// `max_user_connections`; `None` when unlimited).
    pub max_connections_per_user: Option<u32>,
}

/// The kind of server behind a URL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum Flavour {
    #[default]
    PostgreSql,
    MySql,
    MariaDb,
}

impl Flavour {
    /// The product's name, for people.
    pub fn name(self) -> &'static str {
        match self {
            Self::PostgreSql => "PostgreSQL",
            Self::MySql => "MySQL",
            Self::MariaDb => "MariaDB",
        }
    }

    /// A short, bounded name for metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::PostgreSql => "postgresql",
            Self::MySql => "mysql",
            Self::MariaDb => "mariadb",
        }
    }

    pub fn is_mysql_family(self) -> bool {
        matches!(self, Self::MySql | Self::MariaDb)
    }
}

impl ServerFacts {
    /// Connection slots ordinary application roles can use.
    pub fn usable_connections(&self) -> u32 {
        self.max_connections
            .saturating_sub(self.superuser_reserved_connections)
            .saturating_sub(self.reserved_connections)
    }

    pub fn reserved_total(&self) -> u32 {
        self.superuser_reserved_connections + self.reserved_connections
    }
}

/// What the monitoring role may do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorRole {
    pub name: String,
    pub is_superuser: bool,
    /// Member of `pg_signal_backend`: may terminate other roles' (non-superuser) sessions.
    pub can_signal_backends: bool,
    /// Member of `pg_read_all_stats` (via `pg_monitor`): sees other roles' session states.
    pub can_read_all_stats: bool,
}

impl MonitorRole {
    /// Whether PostgreSQL will let this role terminate `session` (see `pg_signal_backend()`).
    pub fn may_terminate(&self, session: &Session) -> Result<(), Protection> {
        if self.is_superuser {
            return Ok(());
        }
        if session.user_is_superuser {
            return Err(Protection::SuperuserSession);
        }
        if self.can_signal_backends || session.user.as_deref() == Some(self.name.as_str()) {
            return Ok(());
        }
        Err(Protection::MissingSignalPrivilege)
    }
}

/// Why a session that the policy condemns cannot be terminated by poolwarden.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Protection {
    /// Only a superuser may end a superuser's session.
    SuperuserSession,
    /// The monitoring role is not a member of `pg_signal_backend`.
    MissingSignalPrivilege,
}

impl Protection {
    /// What to do about it on PostgreSQL (see [`Protection::advice_for`] for other servers).
    pub fn advice(self) -> &'static str {
        self.advice_for(Flavour::PostgreSql)
    }

    /// What to do about it on a server of `flavour`.
    pub fn advice_for(self, flavour: Flavour) -> &'static str {
        if flavour.is_mysql_family() {
            return match self {
                Protection::SuperuserSession => {
                    "the application connects as a user whose sessions the monitoring user may not \
                     end (MySQL 8: SYSTEM_USER; a user with SUPER or ALL PRIVILEGES); give the \
                     application its own user without them"
                }
                Protection::MissingSignalPrivilege => {
                    "the monitoring user may not end other users' sessions: GRANT CONNECTION ADMIN \
                     ON *.* TO it (MySQL 8: CONNECTION_ADMIN)"
                }
            };
        }
        match self {
            Protection::SuperuserSession => {
                "the application connects as a superuser; only a superuser may end its sessions. \
                 Give the application its own non-superuser role"
            }
            Protection::MissingSignalPrivilege => {
                "the monitoring role may not end other roles' sessions: GRANT pg_signal_backend TO it"
            }
        }
    }
}

/// One backend as `pg_stat_activity` shows it (or one MySQL thread as its processlist does).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// PostgreSQL's backend pid; MySQL's thread id (unsigned 32 bits and more, hence `i64`).
    pub pid: i64,
    /// `client backend` for application sessions; background workers, WAL senders and the like
    /// carry other names and are never touched.
    pub backend_type: String,
    pub database: Option<String>,
    pub user: Option<String>,
    pub user_is_superuser: bool,
    pub application_name: String,
    pub client_addr: Option<IpAddr>,
    /// The client's TCP port (`pg_stat_activity.client_port`); `None` over a Unix socket (and on
    /// MySQL, whose processlist shows the host without the port). With `client_addr` it names the
    /// other end of the connection, which a pooler's `SHOW SERVERS` shows as its
    /// `local_addr`/`local_port`.
    pub client_port: Option<u16>,
    /// When the session connected. MySQL does not say: there it is the latest moment the session
    /// can have connected (when poolwarden first saw it, or before its current state began).
    pub backend_start: Timestamp,
    /// When the session's current transaction began; `None` outside a transaction.
    pub xact_start: Option<Timestamp>,
    pub state: SessionState,
    pub state_change: Option<Timestamp>,
    /// The oldest transaction the session makes vacuum keep: PostgreSQL's `backend_xmin` (its
    /// snapshot), or its own `backend_xid` when that is older (a transaction that wrote holds its
    /// xid even between statements under READ COMMITTED). Vacuum cannot remove row versions newer
    /// than it. `None` when it holds none, or on engines without the notion.
    pub backend_xmin: Option<u32>,
    /// How many transactions ago `backend_xmin` was (`age(...)`): how far the session holds
    /// vacuum back.
    pub xmin_age: Option<u32>,
    /// For a session waiting on a lock, the sessions it waits for (`pg_blocking_pids`, asked only
    /// of sessions waiting on a lock, since it is not free); empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<i64>,
    /// What it last ran (or runs now), fingerprinted as the row was read: the statement's text
    /// itself is never kept. `None` when not read, not shown, or nothing was run yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_statement: Option<Statement>,
}

pub const CLIENT_BACKEND: &str = "client backend";

impl Session {
    pub fn is_client_backend(&self) -> bool {
        self.backend_type == CLIENT_BACKEND
    }

    /// How long the session has been in its current state, by the database's clock.
    pub fn in_state_for(&self, observed_at: Timestamp) -> Duration {
        self.state_change
            .map_or(Duration::ZERO, |changed| elapsed(changed, observed_at))
    }

    /// How long the session has been connected, by the database's clock.
    pub fn connected_for(&self, observed_at: Timestamp) -> Duration {
        elapsed(self.backend_start, observed_at)
    }

    /// How long its current transaction has been open, by the database's clock, whether or not
    /// it ran a statement since; `None` outside a transaction.
    pub fn in_transaction_for(&self, observed_at: Timestamp) -> Option<Duration> {
        self.xact_start.map(|start| elapsed(start, observed_at))
    }

    /// What a termination must find unchanged to proceed.
    pub fn identity(&self) -> Option<SessionIdentity> {
        Some(SessionIdentity {
            pid: self.pid,
            backend_start: self.backend_start,
            state: self.state.as_pg_str()?,
            state_change: self.state_change?,
            xact_start: self.xact_start,
        })
    }
}

/// `later - earlier`, never negative: a session that changed state while we looked is young.
pub fn elapsed(earlier: Timestamp, later: Timestamp) -> Duration {
    let span = later.as_duration() - earlier.as_duration();
    Duration::try_from(span).unwrap_or(Duration::ZERO)
}

/// The session as it was in the snapshot. A termination proceeds only if the server still shows
/// exactly this: the same pid with the same start (not a reused pid), in the same state since the
/// same moment (it did nothing since we looked), in the same transaction.
///
/// Engines check what they can read back: PostgreSQL all of it; MySQL, whose thread ids are never
/// reused while the server runs and which does not show when a thread connected, the id, the
/// state, the moment its state began (to its clock's resolution) and the transaction's start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionIdentity {
    pub pid: i64,
    pub backend_start: Timestamp,
    /// As `pg_stat_activity.state` says it.
    pub state: &'static str,
    pub state_change: Timestamp,
    pub xact_start: Option<Timestamp>,
}

/// `pg_stat_activity.state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    Active,
    Idle,
    IdleInTransaction,
    IdleInTransactionAborted,
    FastpathFunctionCall,
    Disabled,
    /// NULL: a background process, or a session the monitoring role may not inspect.
    Unknown,
}

impl SessionState {
    pub fn from_pg(state: Option<&str>) -> Self {
        match state {
            Some("active") => Self::Active,
            Some("idle") => Self::Idle,
            Some("idle in transaction") => Self::IdleInTransaction,
            Some("idle in transaction (aborted)") => Self::IdleInTransactionAborted,
            Some("fastpath function call") => Self::FastpathFunctionCall,
            Some("disabled") => Self::Disabled,
            _ => Self::Unknown,
        }
    }

    pub fn as_pg_str(self) -> Option<&'static str> {
        Some(match self {
            Self::Active => "active",
            Self::Idle => "idle",
            Self::IdleInTransaction => "idle in transaction",
            Self::IdleInTransactionAborted => "idle in transaction (aborted)",
            Self::FastpathFunctionCall => "fastpath function call",
            Self::Disabled => "disabled",
            Self::Unknown => return None,
        })
    }

    pub fn is_idle_in_transaction(self) -> bool {
        matches!(
            self,
            Self::IdleInTransaction | Self::IdleInTransactionAborted
        )
    }

    pub fn label(self) -> &'static str {
        self.as_pg_str().unwrap_or("unknown")
    }
}
