//! One look at a MySQL-family server, in one round trip: the threads with their InnoDB
//! transactions, then the server's facts and counters, then the monitoring user's grants.
//!
//! The facts come *after* the threads, so the snapshot's clock (`NOW(6)` of a later statement)
//! is never earlier than the moments the thread rows carry: ages can only come out short.
//! When asked for, what each thread last ran comes last, in the same round trip
//! ([`super::statements`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::connect::{PROGRAM_NAME, classify_query_error};
use super::sql::{Queries, col};
use super::statements::{self, StatementRow};
use crate::database::ChurnLooks;
use crate::database::{
    CLIENT_BACKEND, ChurnSample, DatabaseError, Flavour, LastStatements, MonitorRole, ServerFacts,
    Session, SessionState, Snapshot, Statement,
};

/// What the engine remembers between looks.
#[derive(Debug, Default)]
pub struct Memory {
    /// When each thread was first seen: MySQL does not say when a thread connected.
    first_seen: HashMap<i64, Timestamp>,
    /// Users whose threads the server refused to let the monitor kill (MySQL 8's SYSTEM_USER):
    /// reported as protected from then on, never tried again.
    pub refused_users: HashSet<String>,
    /// The monitoring user, as the last snapshot read it.
    pub monitor_user: Option<String>,
}

/// One thread row as the server sent it.
#[derive(Debug)]
pub struct Thread {
    pub id: i64,
    pub user: String,
    pub host: Option<String>,
    pub db: Option<String>,
    pub command: String,
    pub state_change: Timestamp,
    pub thread_type: Option<String>,
    pub trx_started: Option<Timestamp>,
    pub program_name: Option<String>,
    /// The server's clock as the row was produced.
    pub now: Timestamp,
}

impl Thread {
    pub fn from_row(row: &Row) -> Result<Self, DatabaseError> {
        let text = |i: usize| -> Result<Option<String>, DatabaseError> {
            row.get_opt::<Option<String>, usize>(i)
                .transpose()
                .map(Option::flatten)
                .map_err(|e| DatabaseError::Query(format!("thread column {i}: {e}")))
        };
        let number = |i: usize| -> Result<Option<i64>, DatabaseError> {
            row.get_opt::<Option<i64>, usize>(i)
                .transpose()
                .map(Option::flatten)
                .map_err(|e| DatabaseError::Query(format!("thread column {i}: {e}")))
        };
        let id =
            number(col::ID)?.ok_or_else(|| DatabaseError::Query("a thread without id".into()))?;
        let state_change = micros(number(col::STATE_CHANGE_US)?.unwrap_or(0))?;
        Ok(Self {
            id,
            user: text(col::USER)?.unwrap_or_default(),
            host: text(col::HOST)?,
            db: text(col::DB)?,
            command: text(col::COMMAND)?.unwrap_or_default(),
            state_change,
            thread_type: text(col::THREAD_TYPE)?,
            trx_started: number(col::TRX_STARTED)?
                .map(|s| Timestamp::from_second(s).map_err(|e| DatabaseError::Query(e.to_string())))
                .transpose()?,
            program_name: text(col::PROGRAM_NAME)?,
            now: micros(number(col::NOW_US)?.unwrap_or(0))?,
        })
    }

    /// What kind of thread this is: only `client backend`s are ever candidates.
    pub fn kind(&self) -> &'static str {
        let command = self.command.as_str();
        if self.thread_type.as_deref() == Some("BACKGROUND")
            || matches!(self.user.as_str(), "system user" | "event_scheduler")
            || command == "Daemon"
        {
            "system thread"
        } else if command.starts_with("Binlog Dump")
            || command.starts_with("Slave_")
            || command.starts_with("Replica")
            || command == "Register Slave"
        {
            "replication"
        } else if command == "Connect" || self.user == "unauthenticated user" {
            "connecting"
        } else {
            CLIENT_BACKEND
        }
    }

    /// `Sleep` is idle (in a transaction when InnoDB has one open for the thread); a thread
    /// being killed is unknown; every other command is at work.
    pub fn state(&self) -> SessionState {
        match (self.command.as_str(), self.trx_started) {
            ("Sleep", None) => SessionState::Idle,
            ("Sleep", Some(_)) => SessionState::IdleInTransaction,
            ("Killed", _) => SessionState::Unknown,
            _ => SessionState::Active,
        }
    }

    /// Whether this is a poolwarden's monitoring connection, by its `program_name`.
    pub fn is_poolwarden(&self) -> bool {
        self.program_name.as_deref() == Some(PROGRAM_NAME)
    }

    /// The transaction's start, made conservative: `INNODB_TRX` shows it to the second, rounded
    /// down, so it is taken as the end of that second (never before the truth), and never after
    /// the thread's idle state began (an idle thread started its transaction earlier).
    pub fn xact_start(&self) -> Option<Timestamp> {
        let started = self.trx_started?;
        let latest = started
            .checked_add(SignedDuration::from_micros(999_999))
            .unwrap_or(started);
        Some(if self.command == "Sleep" {
            latest.min(self.state_change)
        } else {
            latest
        })
    }

    /// The client's address: the processlist's `HOST` without its port (`performance_schema`
    /// shows none). `None` for the Unix socket (`localhost`) and for names.
    pub fn client_addr(&self, with_port: bool) -> Option<IpAddr> {
        let host = self.host.as_deref()?;
        if !with_port {
            return host.parse().ok();
        }
        let (address, port) = host.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        address.trim_matches(['[', ']']).parse().ok()
    }
}

fn micros(us: i64) -> Result<Timestamp, DatabaseError> {
    Timestamp::from_microsecond(us).map_err(|e| DatabaseError::Query(e.to_string()))
}

/// Reads the snapshot over `conn`, with each thread's last statement when `read_statements` and
/// the server shows them: one round trip ([`read`]), its facts ([`Facts::of`]), and the sessions,
/// each dated no later than when this connection first saw it.
pub async fn take(
    conn: &mut Conn,
    queries: &Queries,
    memory: &mut Memory,
    read_statements: bool,
) -> Result<Snapshot, DatabaseError> {
    let read = read(conn, queries, read_statements).await?;
    let facts = Facts::of(&read)?;
    let privileges = Privileges::from_grants(&read.grants);
    let protected: HashSet<String> = read
        .system_users
        .iter()
        .filter_map(|grantee| grantee_user(grantee))
        .chain(memory.refused_users.iter().cloned())
        .collect();
    let sessions = sessions(&read, queries, memory, facts.observed_at, &protected)?;
    memory.monitor_user = Some(facts.monitor_user.clone());

    let server = ServerFacts {
        flavour: queries.flavour,
        version_num: version_number(&facts.version),
        version: facts
            .version
            .split('-')
            .next()
            .unwrap_or_default()
            .to_owned(),
        max_connections: facts.max_connections,
        // MySQL admits one connection beyond max_connections, for CONNECTION_ADMIN or SUPER
        // only: applications have max_connections.
        superuser_reserved_connections: 0,
        reserved_connections: 0,
        connected: read
            .counter("Threads_connected")
            .and_then(|n| u32::try_from(n).ok()),
        max_connections_per_user: (facts.per_user > 0).then_some(facts.per_user),
    };
    let monitor = MonitorRole {
        name: facts.monitor_user,
        is_superuser: privileges.kills_anyone(queries.flavour),
        can_signal_backends: privileges.may_kill_others(),
        can_read_all_stats: privileges.process || privileges.all,
    };
    Ok(Snapshot {
        observed_at: facts.observed_at,
        own_pid: facts.own_id,
        server,
        monitor,
        sessions,
        sessions_opened_total: read.counter("Connections"),
        churn: None,
        application_names_known: queries.attributes,
        last_statements: read.last_statements,
    })
}

/// What the snapshot's one round trip answered, statement by statement.
struct Read {
    threads: Vec<Row>,
    /// Thread id and when its InnoDB transaction started (Unix seconds).
    transactions: Vec<(i64, Option<i64>)>,
    facts: Vec<Row>,
    status: Vec<(String, String)>,
    grants: Vec<String>,
    system_users: Vec<String>,
    last_statement: HashMap<i64, Statement>,
    last_statements: LastStatements,
}

impl Read {
    /// A counter of `SHOW GLOBAL STATUS`.
    fn counter(&self, name: &str) -> Option<i64> {
        self.status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.parse::<i64>().ok())
    }
}

/// Sends the snapshot's statements in one round trip and collects each answer.
async fn read(
    conn: &mut Conn,
    queries: &Queries,
    read_statements: bool,
) -> Result<Read, DatabaseError> {
    let with_statements = read_statements && queries.statements.is_ok();
    let sql = if with_statements {
        &queries.snapshot_with_statements
    } else {
        &queries.snapshot
    };
    let mut result = conn
        .query_iter(sql.as_str())
        .await
        .map_err(classify_query_error)?;
    let threads: Vec<Row> = result.collect().await.map_err(classify_query_error)?;
    let transactions = result.collect().await.map_err(classify_query_error)?;
    let facts: Vec<Row> = result.collect().await.map_err(classify_query_error)?;
    let status = result.collect().await.map_err(classify_query_error)?;
    let grants = result.collect().await.map_err(classify_query_error)?;
    let system_users = if queries.flavour == Flavour::MySql {
        result.collect().await.map_err(classify_query_error)?
    } else {
        Vec::new()
    };
    let (last_statement, last_statements) = if with_statements {
        let consumers: Vec<String> = result.collect().await.map_err(classify_query_error)?;
        let variables: Vec<(String, String)> =
            result.collect().await.map_err(classify_query_error)?;
        let rows: Vec<StatementRow> = result.collect().await.map_err(classify_query_error)?;
        statements::last_statements(queries.flavour, &consumers, &variables, rows)
    } else {
        let why = match &queries.statements {
            Err(why) if read_statements => LastStatements::Unavailable(why.clone()),
            _ => LastStatements::NotRead,
        };
        (HashMap::new(), why)
    };
    result.drop_result().await.map_err(classify_query_error)?;
    Ok(Read {
        threads,
        transactions,
        facts,
        status,
        grants,
        system_users,
        last_statement,
        last_statements,
    })
}

/// The server's facts row, in the order of the facts statement.
struct Facts {
    observed_at: Timestamp,
    own_id: i64,
    version: String,
    max_connections: u32,
    /// `max_user_connections`; 0 when unlimited.
    per_user: u32,
    monitor_user: String,
}

impl Facts {
    fn of(read: &Read) -> Result<Self, DatabaseError> {
        let row = read
            .facts
            .first()
            .ok_or_else(|| DatabaseError::Query("the server's facts are missing".into()))?;
        let fact = |i: usize| -> Result<Option<String>, DatabaseError> {
            row.get_opt::<Option<String>, usize>(i)
                .transpose()
                .map(Option::flatten)
                .map_err(|e| DatabaseError::Query(format!("fact {i}: {e}")))
        };
        let number = |i: usize| -> Result<i64, DatabaseError> {
            fact(i)?
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| DatabaseError::Query(format!("fact {i} is not a number")))
        };
        Ok(Self {
            observed_at: micros(number(0)?)?,
            own_id: number(1)?,
            version: fact(2)?.unwrap_or_default(),
            max_connections: u32::try_from(number(3)?).unwrap_or(u32::MAX),
            per_user: u32::try_from(number(4)?).unwrap_or(0),
            monitor_user: fact(5)?.unwrap_or_default(),
        })
    }
}

/// The threads as sessions, with their transactions' starts; remembers when each was first seen.
fn sessions(
    read: &Read,
    queries: &Queries,
    memory: &mut Memory,
    observed_at: Timestamp,
    protected: &HashSet<String>,
) -> Result<Vec<Session>, DatabaseError> {
    let started: HashMap<i64, i64> = read
        .transactions
        .iter()
        .filter_map(|&(id, started)| Some((id, started?)))
        .collect();
    let mut sessions = Vec::with_capacity(read.threads.len());
    let mut first_seen = HashMap::with_capacity(read.threads.len());
    for row in &read.threads {
        let mut thread = Thread::from_row(row)?;
        if let Some(&second) = started.get(&thread.id) {
            thread.trx_started = Some(
                Timestamp::from_second(second).map_err(|e| DatabaseError::Query(e.to_string()))?,
            );
        }
        let seen = *memory.first_seen.get(&thread.id).unwrap_or(&observed_at);
        first_seen.insert(thread.id, seen);
        sessions.push(session(
            &thread,
            // The latest moment it can have connected.
            seen.min(thread.state_change),
            protected.contains(&thread.user),
            queries,
            read.last_statement.get(&thread.id).cloned(),
        ));
    }
    memory.first_seen = first_seen;
    Ok(sessions)
}

fn session(
    thread: &Thread,
    backend_start: Timestamp,
    protected: bool,
    queries: &Queries,
    last_statement: Option<Statement>,
) -> Session {
    Session {
        pid: thread.id,
        backend_type: thread.kind().to_owned(),
        database: thread.db.clone(),
        user: Some(thread.user.clone()),
        user_is_superuser: protected,
        application_name: thread.program_name.clone().unwrap_or_default(),
        client_addr: thread.client_addr(!queries.performance_schema),
        // The processlist's host has no port, so no pooler can be joined by address on MySQL.
        client_port: None,
        backend_start,
        xact_start: thread.xact_start(),
        state: thread.state(),
        state_change: Some(thread.state_change),
        // InnoDB has no snapshot horizon per session to read (its purge view is server-wide),
        // and lock waits are not read: LongTransaction goes by the transaction's age alone, and
        // no session is named as a blocker (docs/mysql.md).
        backend_xmin: None,
        xmin_age: None,
        blocked_by: Vec::new(),
        last_statement,
    }
}

/// Looks at the threads newer than the snapshot's again and again for `looks.budget`, as the
/// PostgreSQL engine does (see [`ChurnSample`]). Thread ids only grow while the server runs, so
/// "new" is simply an id above every id the snapshot showed. A thread seen in a look and missing
/// from the last one appeared and vanished; threads still there at the end only count as
/// persisted. The `Connections` counter is read once more at the end, for the rate.
pub async fn sample_churn(
    conn: &mut Conn,
    queries: &Queries,
    snapshot: &Snapshot,
    looks: ChurnLooks,
) -> Result<ChurnSample, DatabaseError> {
    let newest = snapshot
        .sessions
        .iter()
        .map(|s| s.pid)
        .chain([snapshot.own_pid])
        .max()
        .unwrap_or(0);
    let look_at = queries.newer_than(newest);
    let began = Instant::now();
    let mut looked = 0;
    let mut seen: HashMap<i64, Session> = HashMap::new();
    let mut present_at_last = HashSet::new();
    loop {
        looked += 1;
        let this_look = Instant::now();
        let rows: Vec<Row> = conn
            .query(look_at.as_str())
            .await
            .map_err(classify_query_error)?;
        present_at_last.clear();
        for row in &rows {
            let thread = Thread::from_row(row)?;
            present_at_last.insert(thread.id);
            seen.entry(thread.id).or_insert_with(|| {
                let start = thread.state_change.min(thread.now);
                // The quick looks read no statements: the churn finding names who opens the
                // sessions, and reading every new thread's statement at each look costs more.
                session(&thread, start, false, queries, None)
            });
        }
        if began.elapsed() >= looks.budget {
            break;
        }
        // Never look more than half the time: the pause grows with what a look costs.
        tokio::time::sleep(looks.pause.max(this_look.elapsed())).await;
    }
    let ended_at: Option<i64> = conn
        .query_first("SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)")
        .await
        .map_err(classify_query_error)?;
    let opened: Option<(String, String)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Connections'")
        .await
        .map_err(classify_query_error)?;
    let mut short_lived = Vec::new();
    let mut persisted = 0;
    for (id, session) in seen {
        if present_at_last.contains(&id) {
            persisted += 1;
        } else {
            short_lived.push(session);
        }
    }
    short_lived.sort_by_key(|s| s.pid);
    Ok(ChurnSample {
        started_at: snapshot.observed_at,
        ended_at: micros(ended_at.unwrap_or_default())?,
        looks: looked,
        opened_at_start: snapshot.sessions_opened_total,
        opened_at_end: opened.and_then(|(_, n)| n.parse().ok()),
        short_lived,
        persisted,
    })
}

/// `8.0.36` → 80036, `10.11.19-MariaDB-0+deb12u1` → 101119.
fn version_number(version: &str) -> u32 {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    major * 10_000 + minor * 100 + patch.min(99)
}

/// `'app'@'%'` → `app`.
fn grantee_user(grantee: &str) -> Option<String> {
    let user = grantee.split("@").next()?;
    Some(user.trim_matches(['\'', '`', '"']).to_owned())
}

/// The monitoring user's global privileges, from `SHOW GRANTS`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Privileges {
    pub all: bool,
    pub process: bool,
    pub super_: bool,
    pub connection_admin: bool,
    pub system_user: bool,
}

impl Privileges {
    /// Reads the `GRANT … ON *.* TO …` lines; grants through roles are not followed (grant the
    /// monitoring user its privileges directly).
    pub fn from_grants(lines: &[String]) -> Self {
        let mut p = Self::default();
        for line in lines {
            let Some(rest) = line.strip_prefix("GRANT ") else {
                continue;
            };
            let Some((list, _)) = rest.split_once(" ON *.* TO ") else {
                continue;
            };
            for privilege in list.split(',').map(|s| s.trim().to_ascii_uppercase()) {
                match privilege.as_str() {
                    "ALL PRIVILEGES" | "ALL" => p.all = true,
                    "PROCESS" => p.process = true,
                    "SUPER" => p.super_ = true,
                    "CONNECTION ADMIN" | "CONNECTION_ADMIN" => p.connection_admin = true,
                    "SYSTEM_USER" => p.system_user = true,
                    _ => {}
                }
            }
        }
        p
    }

    /// May end other users' threads (`KILL` needs CONNECTION ADMIN or SUPER for them).
    pub fn may_kill_others(&self) -> bool {
        self.all || self.super_ || self.connection_admin
    }

    /// May end any user's threads. On MySQL 8 only with SYSTEM_USER (which ALL includes); on
    /// MariaDB a user with SUPER may.
    pub fn kills_anyone(&self, flavour: crate::database::Flavour) -> bool {
        match flavour {
            crate::database::Flavour::MariaDb => self.all || self.super_,
            _ => self.all || (self.system_user && self.may_kill_others()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(command: &str, host: &str) -> Thread {
        Thread {
            id: 7,
            user: "app".into(),
            host: Some(host.into()),
            db: Some("shop".into()),
            command: command.into(),
            state_change: Timestamp::from_second(1_000).unwrap(),
            thread_type: None,
            trx_started: None,
            program_name: None,
            now: Timestamp::from_second(1_010).unwrap(),
        }
    }

    #[test]
    fn commands_become_states_and_kinds() {
        let mut t = thread("Sleep", "127.0.0.12:5000");
        assert_eq!(t.state(), SessionState::Idle);
        assert_eq!(t.kind(), CLIENT_BACKEND);
        t.trx_started = Some(Timestamp::from_second(990).unwrap());
        assert_eq!(t.state(), SessionState::IdleInTransaction);
        assert_eq!(thread("Query", "h:1").state(), SessionState::Active);
        assert_eq!(thread("Execute", "h:1").state(), SessionState::Active);
        assert_eq!(thread("Killed", "h:1").state(), SessionState::Unknown);
        assert_eq!(thread("Binlog Dump GTID", "h:1").kind(), "replication");
        assert_eq!(thread("Daemon", "localhost").kind(), "system thread");
        let mut bg = thread("Sleep", "");
        bg.thread_type = Some("BACKGROUND".into());
        assert_eq!(bg.kind(), "system thread");
    }

    #[test]
    fn the_transaction_start_is_rounded_up_but_never_after_the_idle_state() {
        let mut t = thread("Sleep", "h:1");
        t.trx_started = Some(Timestamp::from_second(990).unwrap());
        assert_eq!(
            t.xact_start(),
            Some(Timestamp::from_microsecond(990_999_999).unwrap())
        );
        t.trx_started = Some(Timestamp::from_second(1_000).unwrap());
        assert_eq!(t.xact_start(), Some(t.state_change));
    }

    #[test]
    fn hosts_lose_their_port() {
        let ip = |h: &str, port: bool| thread("Sleep", h).client_addr(port);
        assert_eq!(
            ip("127.0.0.12:44631", true),
            Some("127.0.0.12".parse().unwrap())
        );
        assert_eq!(ip("[::1]:44631", true), Some("::1".parse().unwrap()));
        assert_eq!(ip("localhost", true), None);
        assert_eq!(ip("app-7.example:3000", true), None);
        assert_eq!(ip("10.1.2.3", false), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(ip("::1", false), Some("::1".parse().unwrap()));
    }

    #[test]
    fn grants_say_what_the_monitor_may_do() {
        let p = Privileges::from_grants(&[
            "GRANT PROCESS, CONNECTION ADMIN ON *.* TO `monitor`@`%` IDENTIFIED BY PASSWORD 'x'"
                .into(),
            "GRANT SELECT ON `performance_schema`.* TO `monitor`@`%`".into(),
        ]);
        assert!(p.process && p.connection_admin && !p.super_);
        assert!(p.may_kill_others());
        assert!(!p.kills_anyone(crate::database::Flavour::MySql));
        let mysql8 = Privileges::from_grants(&[
            "GRANT PROCESS ON *.* TO `m`@`%`".into(),
            "GRANT CONNECTION_ADMIN,SYSTEM_USER ON *.* TO `m`@`%`".into(),
        ]);
        assert!(mysql8.kills_anyone(crate::database::Flavour::MySql));
        let none = Privileges::from_grants(&["GRANT USAGE ON *.* TO `w`@`%`".into()]);
        assert!(!none.process && !none.may_kill_others());
        assert!(
            Privileges::from_grants(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`".into()])
                .all
        );
    }

    #[test]
    fn versions_and_grantees() {
        assert_eq!(version_number("10.11.19-MariaDB-0+deb12u1"), 101119);
        assert_eq!(version_number("8.0.36"), 80036);
        assert_eq!(grantee_user("'app'@'%'").as_deref(), Some("app"));
    }
}
