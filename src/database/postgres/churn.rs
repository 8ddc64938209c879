//! Churn on PostgreSQL: quick looks at the backends that appear and vanish after the snapshot,
//! taken when sessions come and go (see [`crate::database::churn`] for when and how often).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use jiff::Timestamp;
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use super::snapshot::{
    Columns, OPENED, Reading, SESSION_COLUMNS, Statements, session, statement_columns,
};
use crate::database::pg_client::classify_query_error;
use crate::database::{
    AfterLook, ChurnLooks, ChurnSample, DatabaseError, Session, Snapshot, churning,
};

/// One quick look at the client backends started since `$1`.
///
/// Not `pg_stat_activity`: each of its rows looks its process up by a scan of the process array,
/// so reading it is quadratic in the number of backends (24 ms of server CPU at 5,000, see
/// docs/benchmarks.md), and a churn sample looks dozens of times. The backend ids and start times
/// come from the status array directly (linear), and only the new backends are read in full.
fn new_backends_query(reading: Reading) -> String {
    format!(
        "SELECT {SESSION_COLUMNS}, {}
FROM (
    SELECT s.*, d.datname, u.rolname AS usename
    FROM pg_stat_get_backend_idset() AS id
    CROSS JOIN LATERAL pg_stat_get_activity(pg_stat_get_backend_pid(id)) AS s
    LEFT JOIN pg_database d ON d.oid = s.datid
    LEFT JOIN pg_roles u ON u.oid = s.usesysid
    WHERE pg_stat_get_backend_start(id) > $1
) a
LEFT JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.backend_type = 'client backend'",
        statement_columns(reading)
    )
}

/// Looks at the new backends again and again for `looks.budget` after `snapshot` was taken (up to
/// `looks.patience` while none has yet been seen to open and close).
///
/// A backend that the snapshot did not show, that is in one look and missing from the last one,
/// appeared and vanished: it is reported in [`ChurnSample::short_lived`]. Backends still there at
/// the end only count as persisted.
pub async fn sample_churn(
    client: &Client,
    snapshot: &Snapshot,
    looks: ChurnLooks,
    reading: Reading,
    statements: &Statements,
) -> Result<ChurnSample, DatabaseError> {
    // Only backends that appear after the snapshot count: one that the snapshot already showed
    // and that closes during the looks may have lived for hours (a pool resetting).
    let since = snapshot.observed_at - jiff::SignedDuration::from_secs(1);
    let known: HashSet<(i64, Timestamp)> = snapshot
        .sessions
        .iter()
        .filter(|s| s.backend_start > since)
        .map(|s| (s.pid, s.backend_start))
        .collect();
    let mut seen: HashMap<(i64, Timestamp), Session> = HashMap::new();
    // Prepared once: planning the statement again for every look would cost the server more
    // than running it.
    let look_at = client
        .prepare_typed(&new_backends_query(reading), &[Type::TIMESTAMPTZ])
        .await
        .map_err(classify_query_error)?;
    let began = Instant::now();
    let mut look = 0;
    let mut present_at_last = HashSet::new();
    let mut columns = None;
    let mut churning_now = None;
    loop {
        look += 1;
        let this_look = Instant::now();
        let rows = client
            .query(&look_at, &[&since])
            .await
            .map_err(classify_query_error)?;
        present_at_last.clear();
        for row in &rows {
            let at = match &columns {
                Some(at) => at,
                None => columns.insert(Columns::of(row)?),
            };
            let session = session(row, at, statements)?;
            let key = (session.pid, session.backend_start);
            if known.contains(&key) {
                continue;
            }
            present_at_last.insert(key);
            seen.entry(key).or_insert(session);
        }
        // Every backend in the last look is in `seen`: the rest have vanished.
        let vanished = seen.len() - present_at_last.len();
        match looks.after_look(began.elapsed(), vanished, churning_now) {
            AfterLook::Look => {}
            AfterLook::Stop => break,
            AfterLook::ReadCounter => {
                let now = opened_now(client).await?;
                churning_now = Some(churning(
                    (snapshot.observed_at, snapshot.sessions_opened_total),
                    now,
                ));
                continue;
            }
        }
        // Never look more than half the time: with thousands of backends a look takes
        // milliseconds of the server's CPU, and the pause grows with it.
        tokio::time::sleep(looks.pause.max(this_look.elapsed())).await;
    }
    // The counter once at the end (and at most once before): reading pg_stat_database costs more
    // than a look.
    let (last_at, opened_at_end) = opened_now(client).await?;
    let mut short_lived = Vec::new();
    let mut persisted = 0;
    for (key, session) in seen {
        if present_at_last.contains(&key) {
            persisted += 1;
        } else {
            short_lived.push(session);
        }
    }
    short_lived.sort_by_key(|s| (s.backend_start, s.pid));
    Ok(ChurnSample {
        started_at: snapshot.observed_at,
        ended_at: last_at,
        looks: look,
        opened_at_start: snapshot.sessions_opened_total,
        opened_at_end,
        short_lived,
        persisted,
    })
}

/// The server's clock and its count of sessions opened so far.
async fn opened_now(client: &Client) -> Result<(Timestamp, Option<i64>), DatabaseError> {
    let row = client
        .query_typed_one(
            &format!("SELECT clock_timestamp() AS at, {OPENED} AS opened"),
            &[],
        )
        .await
        .map_err(classify_query_error)?;
    Ok((
        row.try_get("at").map_err(classify_query_error)?,
        row.try_get("opened").map_err(classify_query_error)?,
    ))
}
