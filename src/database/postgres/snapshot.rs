//! The two statements of one look: the server's facts, then every backend. (When sessions come
//! and go, quick looks at the new backends follow: [`churn`](super::churn).)
//!
//! The two are sent together (pipelined: one round trip) and executed in order, so `now()` is read
//! just *before* `pg_stat_activity`: ages measured from it can only come out a little short, never
//! long. Only columns that exist on PostgreSQL 12 and later are used.
//!
//! `pg_blocking_pids` is called only for sessions waiting on a lock (`wait_event_type = 'Lock'`):
//! it takes the lock manager's partition locks, so asking it of every backend would cost the
//! server something on every cycle for nothing.
//!
//! What each client backend last ran (`query`, and `query_id` on 14+) is read only when asked
//! for ([`Reading`]), and fingerprinted row by row as the rows are decoded
//! ([`crate::database::fingerprint`]): the text itself never leaves this file. The server keeps
//! the first `track_activity_query_size - 1` bytes of a statement; the facts say how many, so
//! that a cut statement is marked as such.

use std::net::IpAddr;

use jiff::Timestamp;
use tokio_postgres::{Client, Row};

use crate::database::fingerprint::{self, Dialect};
use crate::database::pg_client::classify_query_error;
use crate::database::{
    DatabaseError, Flavour, LastStatements, MonitorRole, ServerFacts, Session, SessionState,
    Snapshot, Statement,
};

/// Σ `pg_stat_database.sessions`: PostgreSQL 14+, NULL before (read through `to_jsonb` so that the
/// statement parses on older servers too).
pub(super) const OPENED: &str = "CASE WHEN current_setting('server_version_num')::int >= 140000
            THEN (SELECT sum((to_jsonb(d) ->> 'sessions')::bigint) FROM pg_stat_database d)
       END::bigint";

/// Which statement columns a look reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// `query`: what each client backend last ran (`leakDetection.lastStatements`).
    pub statements: bool,
    /// `query_id` too (PostgreSQL 14+; NULL unless `compute_query_id` is on).
    pub query_id: bool,
}

/// What PostgreSQL shows in `query` for a backend the role may not inspect.
const INSUFFICIENT_PRIVILEGE: &str = "<insufficient privilege>";

pub(super) fn statement_columns(reading: Reading) -> &'static str {
    match (reading.statements, reading.query_id) {
        (false, _) => "NULL::text AS query, NULL::bigint AS query_id",
        (true, false) => {
            "CASE WHEN a.backend_type = 'client backend' THEN a.query END AS query, \
             NULL::bigint AS query_id"
        }
        (true, true) => {
            "CASE WHEN a.backend_type = 'client backend' THEN a.query END AS query, \
             CASE WHEN a.backend_type = 'client backend' THEN a.query_id END AS query_id"
        }
    }
}

pub(super) const SESSION_COLUMNS: &str = "a.pid,
       coalesce(a.backend_type, '')      AS backend_type,
       a.datname::text                   AS datname,
       a.usename::text                   AS usename,
       coalesce(r.rolsuper, false)       AS user_is_superuser,
       coalesce(a.application_name, '')  AS application_name,
       a.client_addr,
       a.client_port,
       a.backend_start,
       a.xact_start,
       a.state,
       a.state_change,
       (CASE WHEN a.backend_xid IS NOT NULL
                  AND (a.backend_xmin IS NULL OR age(a.backend_xid) > age(a.backend_xmin))
             THEN a.backend_xid ELSE a.backend_xmin END)::text AS backend_xmin,
       greatest(age(a.backend_xmin), age(a.backend_xid)) AS xmin_age,
       CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) END AS blocked_by";

fn facts_query() -> String {
    format!(
        "
SELECT now()                                                        AS observed_at,
       pg_backend_pid()                                             AS own_pid,
       split_part(current_setting('server_version'), ' ', 1)         AS version,
       current_setting('server_version_num')::int                   AS version_num,
       current_setting('max_connections')::int                      AS max_connections,
       current_setting('superuser_reserved_connections')::int       AS superuser_reserved,
       coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved,
       current_user::text                                           AS monitor,
       r.rolsuper                                                   AS monitor_is_superuser,
       pg_has_role(current_user, 'pg_signal_backend', 'USAGE')      AS can_signal,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')      AS can_read_all_stats,
       {OPENED}                                                     AS sessions_opened,
       current_setting('track_activity_query_size')                 AS query_size,
       current_setting('standard_conforming_strings') = 'on'        AS standard_strings
FROM pg_roles r
WHERE r.rolname = current_user"
    )
}

fn sessions_query(reading: Reading) -> String {
    format!(
        "SELECT {SESSION_COLUMNS}, {}
FROM pg_stat_activity a
LEFT JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.backend_start IS NOT NULL",
        statement_columns(reading)
    )
}

/// Reads the snapshot over `client`.
///
/// `query_typed` sends parse, bind and execute at once (no separate prepare, no named statement
/// to close), and both statements go out together: one round trip for the whole snapshot.
/// Also returns how its statements were fingerprinted, for the churn looks that may follow.
pub async fn take(
    client: &Client,
    reading: Reading,
) -> Result<(Snapshot, Statements), DatabaseError> {
    let (facts_sql, sessions_sql) = (facts_query(), sessions_query(reading));
    let (facts, sessions) = tokio::try_join!(
        client.query_typed_one(&facts_sql, &[]),
        client.query_typed(&sessions_sql, &[])
    )
    .map_err(classify_query_error)?;
    let get_u32 = |name: &str| -> Result<u32, DatabaseError> {
        let v: i32 = facts.try_get(name).map_err(classify_query_error)?;
        Ok(u32::try_from(v).unwrap_or(0))
    };
    let server = ServerFacts {
        flavour: Flavour::PostgreSql,
        version: facts.try_get("version").map_err(classify_query_error)?,
        version_num: get_u32("version_num")?,
        max_connections: get_u32("max_connections")?,
        superuser_reserved_connections: get_u32("superuser_reserved")?,
        reserved_connections: get_u32("reserved")?,
        connected: None,
        max_connections_per_user: None,
    };
    let monitor = MonitorRole {
        name: facts.try_get("monitor").map_err(classify_query_error)?,
        is_superuser: facts
            .try_get("monitor_is_superuser")
            .map_err(classify_query_error)?,
        can_signal_backends: facts.try_get("can_signal").map_err(classify_query_error)?,
        can_read_all_stats: facts
            .try_get("can_read_all_stats")
            .map_err(classify_query_error)?,
    };
    let statements = Statements {
        dialect: Dialect::PostgreSql {
            standard_strings: facts
                .try_get("standard_strings")
                .map_err(classify_query_error)?,
        },
        server_keeps: size_in_bytes(
            facts
                .try_get::<_, &str>("query_size")
                .map_err(classify_query_error)?,
        )
        .map(|size| size.saturating_sub(1)),
    };
    let sessions = match sessions.first() {
        Some(first) => {
            let columns = Columns::of(first)?;
            sessions
                .iter()
                .map(|row| session(row, &columns, &statements))
                .collect::<Result<_, _>>()?
        }
        None => Vec::new(),
    };
    let snapshot = Snapshot {
        observed_at: facts.try_get("observed_at").map_err(classify_query_error)?,
        own_pid: i64::from(
            facts
                .try_get::<_, i32>("own_pid")
                .map_err(classify_query_error)?,
        ),
        server,
        monitor,
        sessions,
        sessions_opened_total: facts
            .try_get("sessions_opened")
            .map_err(classify_query_error)?,
        churn: None,
        application_names_known: true,
        last_statements: if reading.statements {
            LastStatements::Read
        } else {
            LastStatements::NotRead
        },
    };
    Ok((snapshot, statements))
}

/// How the statements of one look are fingerprinted.
pub struct Statements {
    dialect: Dialect,
    /// `track_activity_query_size - 1`: the most bytes of a statement the server keeps.
    server_keeps: Option<usize>,
}

/// `track_activity_query_size` as `current_setting` shows it: `1kB`, `4MB`, or bytes before 13.
fn size_in_bytes(setting: &str) -> Option<usize> {
    let digits = setting.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match &setting[digits.len()..] {
        "" | "B" => 1,
        "kB" => 1024,
        "MB" => 1024 * 1024,
        _ => return None,
    };
    digits.parse::<usize>().ok().map(|n| n * unit)
}

/// Where each column of the sessions is, found by name once per snapshot instead of once per
/// column in every row (thousands of rows, fifteen columns).
pub(super) struct Columns {
    pid: usize,
    backend_type: usize,
    datname: usize,
    usename: usize,
    user_is_superuser: usize,
    application_name: usize,
    client_addr: usize,
    client_port: usize,
    backend_start: usize,
    xact_start: usize,
    state: usize,
    state_change: usize,
    backend_xmin: usize,
    xmin_age: usize,
    blocked_by: usize,
    query: usize,
    query_id: usize,
}

impl Columns {
    pub(super) fn of(row: &Row) -> Result<Self, DatabaseError> {
        let at = |name: &str| {
            row.columns()
                .iter()
                .position(|c| c.name() == name)
                .ok_or_else(|| DatabaseError::Query(format!("no column {name} in the sessions")))
        };
        Ok(Self {
            pid: at("pid")?,
            backend_type: at("backend_type")?,
            datname: at("datname")?,
            usename: at("usename")?,
            user_is_superuser: at("user_is_superuser")?,
            application_name: at("application_name")?,
            client_addr: at("client_addr")?,
            client_port: at("client_port")?,
            backend_start: at("backend_start")?,
            xact_start: at("xact_start")?,
            state: at("state")?,
            state_change: at("state_change")?,
            backend_xmin: at("backend_xmin")?,
            xmin_age: at("xmin_age")?,
            blocked_by: at("blocked_by")?,
            query: at("query")?,
            query_id: at("query_id")?,
        })
    }
}

pub(super) fn session(
    row: &Row,
    at: &Columns,
    statements: &Statements,
) -> Result<Session, DatabaseError> {
    // Borrowed from the row: the state becomes an enum, so there is nothing to allocate.
    let state: Option<&str> = row.try_get(at.state).map_err(classify_query_error)?;
    Ok(Session {
        pid: i64::from(
            row.try_get::<_, i32>(at.pid)
                .map_err(classify_query_error)?,
        ),
        backend_type: row.try_get(at.backend_type).map_err(classify_query_error)?,
        database: row.try_get(at.datname).map_err(classify_query_error)?,
        user: row.try_get(at.usename).map_err(classify_query_error)?,
        user_is_superuser: row
            .try_get(at.user_is_superuser)
            .map_err(classify_query_error)?,
        application_name: row
            .try_get(at.application_name)
            .map_err(classify_query_error)?,
        client_addr: row
            .try_get::<_, Option<IpAddr>>(at.client_addr)
            .map_err(classify_query_error)?,
        // -1 over a Unix socket, NULL for background processes.
        client_port: row
            .try_get::<_, Option<i32>>(at.client_port)
            .map_err(classify_query_error)?
            .and_then(|port| u16::try_from(port).ok()),
        backend_start: row
            .try_get::<_, Timestamp>(at.backend_start)
            .map_err(classify_query_error)?,
        xact_start: row.try_get(at.xact_start).map_err(classify_query_error)?,
        state: SessionState::from_pg(state),
        state_change: row.try_get(at.state_change).map_err(classify_query_error)?,
        backend_xmin: row
            .try_get::<_, Option<&str>>(at.backend_xmin)
            .map_err(classify_query_error)?
            .and_then(|x| x.parse().ok()),
        xmin_age: row
            .try_get::<_, Option<i32>>(at.xmin_age)
            .map_err(classify_query_error)?
            .and_then(|a| u32::try_from(a).ok()),
        blocked_by: row
            .try_get::<_, Option<Vec<i32>>>(at.blocked_by)
            .map_err(classify_query_error)?
            .unwrap_or_default()
            .into_iter()
            .map(i64::from)
            .collect(),
        last_statement: last_statement(row, at, statements)?,
    })
}

/// The row's statement, fingerprinted; the text is dropped with the row.
fn last_statement(
    row: &Row,
    at: &Columns,
    statements: &Statements,
) -> Result<Option<Statement>, DatabaseError> {
    let text: Option<&str> = row.try_get(at.query).map_err(classify_query_error)?;
    let Some(text) = text.filter(|t| *t != INSUFFICIENT_PRIVILEGE) else {
        return Ok(None);
    };
    let Some(fingerprint) =
        fingerprint::fingerprint(text, statements.dialect, statements.server_keeps)
    else {
        return Ok(None);
    };
    Ok(Some(Statement {
        fingerprint,
        query_id: row.try_get(at.query_id).map_err(classify_query_error)?,
    }))
}

/// The bare query the benchmarks compare against.
#[cfg(feature = "bench")]
pub const BARE_QUERY: &str = "SELECT * FROM pg_stat_activity";
