//! One look at a MySQL-family server, in one round trip: the threads with their InnoDB
//! transactions, then the server's facts and counters, then the monitoring user's grants.
//!
//! The facts come *after* the threads, so the snapshot's clock (`NOW(6)` of a later statement)
//! is never earlier than the moments the thread rows carry: ages can only come out short.
//! When asked for, what each thread last ran comes last, in the same round trip
//! ([`super::statements`]).

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::connect::classify_query_error;
use super::privileges::{Privileges, grantee_user};
use super::sql::Queries;
use super::statements::{self, StatementRow};
use super::thread::{Thread, micros, session};
use crate::database::{
    DatabaseError, Flavour, LastStatements, MonitorRole, ServerFacts, Session, Snapshot, Statement,
};

/// What the engine remembers between looks.
#[derive(Debug, Default)]
pub struct Remembered {
    /// When each thread was first seen: MySQL does not say when a thread connected.
    first_seen: HashMap<i64, Timestamp>,
    /// Users whose threads the server refused to let the monitor kill (MySQL 8's SYSTEM_USER):
    /// reported as protected from then on, never tried again.
    pub refused_users: HashSet<String>,
    /// The monitoring user, as the last snapshot read it.
    pub monitor_user: Option<String>,
}

/// Reads the snapshot over `conn`, with each thread's last statement when `read_statements` and
/// the server shows them: one round trip ([`read`]), its facts ([`Facts::of`]), and the sessions,
/// each dated no later than when this connection first saw it.
pub async fn take(
    conn: &mut Conn,
    queries: &Queries,
    memory: &mut Remembered,
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
    memory: &mut Remembered,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(version_number("10.11.19-MariaDB-0+deb12u1"), 101119);
        assert_eq!(version_number("8.0.36"), 80036);
    }
}
