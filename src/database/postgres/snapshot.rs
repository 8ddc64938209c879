//! The two statements of one look: the server's facts, then every backend.
//!
//! They are sent together (pipelined: one round trip) and executed in order, so `now()` is read
//! just *before* `pg_stat_activity`: ages measured from it can only come out a little short, never
//! long. Only columns that exist on PostgreSQL 12 and later are used.

use std::net::IpAddr;

use jiff::Timestamp;
use tokio_postgres::{Client, Row};

use super::connect::classify_query_error;
use crate::database::{DatabaseError, MonitorRole, ServerFacts, Session, SessionState, Snapshot};

const FACTS: &str = "
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
       CASE WHEN current_setting('server_version_num')::int >= 140000
            THEN (SELECT sum((to_jsonb(d) ->> 'sessions')::bigint) FROM pg_stat_database d)
       END::bigint                                                  AS sessions_opened
FROM pg_roles r
WHERE r.rolname = current_user";

const SESSIONS: &str = "
SELECT a.pid,
       coalesce(a.backend_type, '')      AS backend_type,
       a.datname::text                   AS datname,
       a.usename::text                   AS usename,
       coalesce(r.rolsuper, false)       AS user_is_superuser,
       coalesce(a.application_name, '')  AS application_name,
       a.client_addr,
       a.backend_start,
       a.xact_start,
       a.state,
       a.state_change
FROM pg_stat_activity a
LEFT JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.backend_start IS NOT NULL";

/// Reads the snapshot over `client`.
///
/// `query_typed` sends parse, bind and execute at once (no separate prepare, no named statement
/// to close), and both statements go out together: one round trip for the whole snapshot.
pub async fn take(client: &Client) -> Result<Snapshot, DatabaseError> {
    let (facts, sessions) = tokio::try_join!(
        client.query_typed_one(FACTS, &[]),
        client.query_typed(SESSIONS, &[])
    )
    .map_err(classify_query_error)?;
    let get_u32 = |name: &str| -> Result<u32, DatabaseError> {
        let v: i32 = facts.try_get(name).map_err(classify_query_error)?;
        Ok(u32::try_from(v).unwrap_or(0))
    };
    let server = ServerFacts {
        version: facts.try_get("version").map_err(classify_query_error)?,
        version_num: get_u32("version_num")?,
        max_connections: get_u32("max_connections")?,
        superuser_reserved_connections: get_u32("superuser_reserved")?,
        reserved_connections: get_u32("reserved")?,
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
    let sessions = match sessions.first() {
        Some(first) => {
            let columns = Columns::of(first)?;
            sessions
                .iter()
                .map(|row| session(row, &columns))
                .collect::<Result<_, _>>()?
        }
        None => Vec::new(),
    };
    Ok(Snapshot {
        observed_at: facts.try_get("observed_at").map_err(classify_query_error)?,
        own_pid: facts.try_get("own_pid").map_err(classify_query_error)?,
        server,
        monitor,
        sessions,
        sessions_opened_total: facts
            .try_get("sessions_opened")
            .map_err(classify_query_error)?,
    })
}

/// Where each column of `SESSIONS` is, found by name once per snapshot instead of once per
/// column in every row (thousands of rows, eleven columns).
struct Columns {
    pid: usize,
    backend_type: usize,
    datname: usize,
    usename: usize,
    user_is_superuser: usize,
    application_name: usize,
    client_addr: usize,
    backend_start: usize,
    xact_start: usize,
    state: usize,
    state_change: usize,
}

impl Columns {
    fn of(row: &Row) -> Result<Self, DatabaseError> {
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
            backend_start: at("backend_start")?,
            xact_start: at("xact_start")?,
            state: at("state")?,
            state_change: at("state_change")?,
        })
    }
}

fn session(row: &Row, at: &Columns) -> Result<Session, DatabaseError> {
    // Borrowed from the row: the state becomes an enum, so there is nothing to allocate.
    let state: Option<&str> = row.try_get(at.state).map_err(classify_query_error)?;
    Ok(Session {
        pid: row.try_get(at.pid).map_err(classify_query_error)?,
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
        backend_start: row
            .try_get::<_, Timestamp>(at.backend_start)
            .map_err(classify_query_error)?,
        xact_start: row.try_get(at.xact_start).map_err(classify_query_error)?,
        state: SessionState::from_pg(state),
        state_change: row.try_get(at.state_change).map_err(classify_query_error)?,
    })
}

/// The bare query the benchmarks compare against.
pub const BARE_QUERY: &str = "SELECT * FROM pg_stat_activity";
