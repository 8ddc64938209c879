//! Churn on MySQL: the threads that appear and vanish between the snapshot's looks.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::connect::classify_query_error;
use super::sql::Queries;
use super::thread::{Thread, micros, session};
use crate::database::{
    AfterLook, ChurnLooks, ChurnSample, DatabaseError, Session, Snapshot, churning,
};
use jiff::Timestamp;

/// Looks at the threads newer than the snapshot's again and again for `looks.budget` (up to
/// `looks.patience` while none has yet been seen to open and close), as the PostgreSQL engine does
/// (see [`ChurnSample`]). Thread ids only grow while the server runs, so "new" is simply an id
/// above every id the snapshot showed. A thread seen in a look and missing
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
    let mut churning_now = None;
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
        // Every thread in the last look is in `seen`: the rest have vanished.
        let vanished = seen.len() - present_at_last.len();
        match looks.after_look(began.elapsed(), vanished, churning_now) {
            AfterLook::Look => {}
            AfterLook::Stop => break,
            AfterLook::ReadCounter => {
                let now = opened_now(conn).await?;
                churning_now = Some(churning(
                    (snapshot.observed_at, snapshot.sessions_opened_total),
                    now,
                ));
                continue;
            }
        }
        // Never look more than half the time: the pause grows with what a look costs.
        tokio::time::sleep(looks.pause.max(this_look.elapsed())).await;
    }
    let (ended_at, opened_at_end) = opened_now(conn).await?;
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
        ended_at,
        looks: looked,
        opened_at_start: snapshot.sessions_opened_total,
        opened_at_end,
        short_lived,
        persisted,
    })
}

/// The server's clock and its `Connections` counter.
async fn opened_now(conn: &mut Conn) -> Result<(Timestamp, Option<i64>), DatabaseError> {
    let at: Option<i64> = conn
        .query_first("SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)")
        .await
        .map_err(classify_query_error)?;
    let opened: Option<(String, String)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Connections'")
        .await
        .map_err(classify_query_error)?;
    Ok((
        micros(at.unwrap_or_default())?,
        opened.and_then(|(_, n)| n.parse().ok()),
    ))
}
