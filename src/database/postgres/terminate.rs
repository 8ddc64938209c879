//! Termination in one statement that re-verifies every session first.
//!
//! The CTE is `MATERIALIZED`: an optimisation fence, so PostgreSQL must finish deciding *which*
//! backends still match their snapshot before `pg_terminate_backend` runs on any of them. Put
//! into a `WHERE` clause instead, the call could be pushed down to the scan of
//! `pg_stat_activity` and run for rows the join would have discarded.

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use super::connect::classify_query_error;
use crate::database::{DatabaseError, SessionIdentity};

const TERMINATE_VERIFIED: &str = "
WITH verified AS MATERIALIZED (
    SELECT a.pid
    FROM pg_stat_activity a
    JOIN unnest($1::int4[], $2::timestamptz[], $3::text[], $4::timestamptz[])
         AS t(pid, backend_start, state, state_change)
      ON  a.pid = t.pid
      AND a.backend_start = t.backend_start
      AND a.state = t.state
      AND a.state_change = t.state_change
    WHERE a.backend_type = 'client backend'
      AND a.pid <> pg_backend_pid()
      AND a.state IN ('idle', 'idle in transaction', 'idle in transaction (aborted)')
)
SELECT pid, pg_terminate_backend(pid) AS signalled FROM verified";

/// Signals every session that still matches its identity; returns the pids signalled.
pub async fn verified(
    client: &Client,
    sessions: &[SessionIdentity],
) -> Result<Vec<i64>, DatabaseError> {
    if sessions.is_empty() {
        return Ok(Vec::new());
    }
    // PostgreSQL's pids are int4: an id beyond that range cannot be one of its backends.
    let sessions: Vec<(i32, &SessionIdentity)> = sessions
        .iter()
        .filter_map(|s| Some((i32::try_from(s.pid).ok()?, s)))
        .collect();
    let pids: Vec<i32> = sessions.iter().map(|(pid, _)| *pid).collect();
    let starts: Vec<jiff::Timestamp> = sessions.iter().map(|(_, s)| s.backend_start).collect();
    let states: Vec<&str> = sessions.iter().map(|(_, s)| s.state.as_str()).collect();
    let changes: Vec<jiff::Timestamp> = sessions.iter().map(|(_, s)| s.state_change).collect();
    // `query_typed`: parse, bind and execute in one go, one round trip.
    let rows = client
        .query_typed(
            TERMINATE_VERIFIED,
            &[
                (&pids, Type::INT4_ARRAY),
                (&starts, Type::TIMESTAMPTZ_ARRAY),
                (&states, Type::TEXT_ARRAY),
                (&changes, Type::TIMESTAMPTZ_ARRAY),
            ],
        )
        .await
        .map_err(classify_query_error)?;
    Ok(rows
        .iter()
        .filter(|row| row.get::<_, bool>("signalled"))
        .map(|row| i64::from(row.get::<_, i32>("pid")))
        .collect())
}
