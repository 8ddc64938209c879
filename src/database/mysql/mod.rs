//! MySQL and MariaDB behind the [`Engine`](crate::database::Engine) seam: one long-lived
//! monitoring connection, reopened when it drops, as on PostgreSQL.
//!
//! What differs from PostgreSQL, and where it is handled:
//! - the thread list ([`sql`]): `performance_schema` on MySQL where enabled, else
//!   `information_schema.PROCESSLIST`; InnoDB transactions from `INNODB_TRX`; `program_name` from
//!   the connection attributes where `performance_schema` shows them;
//! - no connection start time: the engine remembers when it first saw each thread
//!   ([`snapshot::Remembered`]) and reports the latest moment a thread can have connected;
//! - no conditional kill: each thread is re-read just before its own `KILL CONNECTION`
//!   ([`terminate`]), and the window between the two is measured;
//! - churn: the `Connections` counter plays `pg_stat_database.sessions`, and the quick looks at
//!   new threads ([`churn::sample_churn`]) run when the PostgreSQL engine's would: on the first
//!   observation, and when more than
//!   [`CHURN_TRIGGER`](crate::database::churn::CHURN_TRIGGER) connections a second were opened
//!   since the previous one.

mod churn;
mod connect;
mod privileges;
mod snapshot;
mod sql;
mod statements;
mod terminate;
mod thread;
mod tls;

pub use connect::{MySqlTarget, PROGRAM_NAME, Processlist, is_mysql_url};
pub use tls::MySqlSslMode;

use std::time::Duration;

use jiff::Timestamp;
use mysql_async::Conn;

use crate::database::churn::churn_sample_due;
use crate::database::{ChurnLooks, ConnectOptions};
use crate::database::{DatabaseError, Engine, Flavour, SessionIdentity, Snapshot, Verdict};
use sql::Queries;

/// A MySQL-family server and poolwarden's monitoring connection to it.
pub struct MySql {
    target: MySqlTarget,
    connection: Option<Connection>,
    memory: snapshot::Remembered,
    /// The verify-to-kill windows of the last `terminate`.
    windows: Vec<Duration>,
    /// The fates of the last `terminate`, in the order asked.
    fates: Vec<Verdict>,
    /// `(observed_at, Connections)` of the previous observation: whether to sample churn.
    last_count: Option<(Timestamp, i64)>,
    observed_once: bool,
    looks: ChurnLooks,
    /// Whether the next observation reads what each thread last ran.
    read_statements: bool,
}

struct Connection {
    conn: Conn,
    queries: Queries,
    own_id: i64,
    may_kill_others: bool,
}

impl MySql {
    /// Prepares the target; nothing is connected until the first call.
    pub fn new(target: MySqlTarget) -> Self {
        Self {
            target,
            connection: None,
            memory: snapshot::Remembered::default(),
            windows: Vec::new(),
            fates: Vec::new(),
            last_count: None,
            observed_once: false,
            looks: ChurnLooks::default(),
            read_statements: true,
        }
    }

    /// Parses `url` and connects once, so that a bad URL, password or address fails right here.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, DatabaseError> {
        let mut engine = Self::new(MySqlTarget::parse(url, options)?);
        engine.connection().await?;
        Ok(engine)
    }

    pub fn target(&self) -> &MySqlTarget {
        &self.target
    }

    /// The server's flavour, once connected.
    pub fn flavour(&self) -> Option<Flavour> {
        self.connection.as_ref().map(|c| c.queries.flavour)
    }

    /// For each thread the last `terminate` killed: from its verification to the server's answer
    /// to `KILL`, the window in which it could have started a statement unseen.
    pub fn kill_windows(&self) -> &[Duration] {
        &self.windows
    }

    /// What became of each thread the last `terminate` was given, in order.
    pub fn last_fates(&self) -> &[Verdict] {
        &self.fates
    }

    async fn connection(&mut self) -> Result<&mut Connection, DatabaseError> {
        if self.connection.is_none() {
            let (mut conn, flavour) = self.target.connect().await?;
            let queries = Queries::discover(&mut conn, flavour, self.target.processlist()).await?;
            let own_id = i64::from(conn.id());
            tracing::info!(
                target = self.target.display(),
                flavour = flavour.name(),
                performance_schema = queries.performance_schema,
                "monitoring connection open"
            );
            self.connection = Some(Connection {
                conn,
                queries,
                own_id,
                may_kill_others: false,
            });
        }
        self.connection
            .as_mut()
            .ok_or_else(|| DatabaseError::ConnectionLost("no connection".into()))
    }

    /// Drops the connection after a failure that may have left it unusable.
    fn forget_if_lost(&mut self, error: &DatabaseError) {
        if matches!(error, DatabaseError::ConnectionLost(_)) {
            self.connection = None;
        }
    }

    /// Runs the bare thread list query (for benchmarks), returning the row count.
    #[cfg(feature = "bench")]
    pub async fn bare_processlist_query(&mut self) -> Result<usize, DatabaseError> {
        use mysql_async::prelude::Queryable;
        let c = self.connection().await?;
        let bare = c.queries.bare();
        let rows: Vec<mysql_async::Row> = c
            .conn
            .query(bare)
            .await
            .map_err(connect::classify_query_error)?;
        Ok(rows.len())
    }
}

/// Takes a snapshot, and samples churn on the first observation or when the `Connections`
/// counter rose by more than [`CHURN_TRIGGER`](crate::database::churn::CHURN_TRIGGER) a second
/// since the previous one.
async fn observe_and_sample(
    c: &mut Connection,
    memory: &mut snapshot::Remembered,
    previous: Option<(Timestamp, i64)>,
    first: bool,
    looks: ChurnLooks,
    read_statements: bool,
) -> Result<Snapshot, DatabaseError> {
    let mut snapshot = snapshot::take(&mut c.conn, &c.queries, memory, read_statements).await?;
    if churn_sample_due(previous, &snapshot, first) {
        snapshot.churn =
            Some(churn::sample_churn(&mut c.conn, &c.queries, &snapshot, looks).await?);
    }
    Ok(snapshot)
}

impl Engine for MySql {
    async fn observe(&mut self) -> Result<Snapshot, DatabaseError> {
        let result = match self.connection().await {
            Ok(_) => {
                let Self {
                    connection,
                    memory,
                    last_count,
                    observed_once,
                    looks,
                    read_statements,
                    ..
                } = self;
                let c = connection.as_mut().expect("connected above");
                let snapshot = observe_and_sample(
                    c,
                    memory,
                    *last_count,
                    !*observed_once,
                    *looks,
                    *read_statements,
                )
                .await;
                if let Ok(s) = &snapshot {
                    c.own_id = s.own_pid;
                    c.may_kill_others = s.monitor.can_signal_backends;
                    *observed_once = true;
                    *last_count = s.sessions_opened_total.map(|n| (s.observed_at, n));
                }
                snapshot
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.forget_if_lost(e);
        }
        result
    }

    async fn terminate(
        &mut self,
        sessions: &[SessionIdentity],
    ) -> Result<Vec<Verdict>, DatabaseError> {
        self.windows.clear();
        self.fates.clear();
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let result = match self.connection().await {
            Ok(_) => {
                let Self {
                    connection, memory, ..
                } = self;
                let c = connection.as_mut().expect("connected above");
                terminate::verified(
                    &mut c.conn,
                    &c.queries,
                    c.own_id,
                    c.may_kill_others,
                    memory,
                    sessions,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(done) => {
                if let Some(longest) = done.windows.iter().max() {
                    tracing::debug!(
                        kills = done.windows.len(),
                        longest_window_us = longest.as_micros() as u64,
                        "threads verified and killed one at a time"
                    );
                }
                self.windows = done.windows;
                self.fates = done.fates.clone();
                Ok(done.fates)
            }
            Err(e) => {
                self.forget_if_lost(&e);
                Err(e)
            }
        }
    }

    /// A connection poolwarden holds and has not seen fail (mysql_async notices a lost one on
    /// its next use, which drops it here).
    fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    fn read_statements(&mut self, read: bool) {
        self.read_statements = read;
    }
}
