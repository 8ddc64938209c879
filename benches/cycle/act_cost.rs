//! Act, the kills' cost: poolwarden's termination (one statement; every session's live wait
//! event checked in the row of its own signal) against the bare, unchecked `pg_terminate_backend`
//! over as many sessions, at growing numbers of kills and of backends. Beside them, the design
//! poolwarden did not take: a statement per session, each with its own fresh read of every
//! backend's status.

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use poolwarden::database::ConnectOptions;
use poolwarden::database::postgres::Postgres;
use poolwarden::database::{Engine, SessionIdentity, SessionState, Verdict};
use tokio_postgres::types::Type;

use crate::common::*;

/// The bare work: the pids signalled without any check, in one statement.
pub const BARE_TERMINATE: &str = "SELECT pg_terminate_backend(pid) FROM unnest($1::int4[]) AS pid";

/// The alternative poolwarden did not take: a statement per session, each its own implicit
/// transaction and so its own fresh read of every backend's status (`pg_stat_get_activity`
/// copies them all), prepared once and pipelined (all sent before any answer is awaited).
/// Tight, but each read costs O(backends).
const PER_SESSION: &str = "
SELECT CASE WHEN s.backend_start = $2
             AND s.state = $3
             AND s.state_change = $4
             AND s.state IN ('idle', 'idle in transaction', 'idle in transaction (aborted)')
             AND s.backend_type = 'client backend'
             AND s.pid <> pg_backend_pid()
             AND s.application_name IS DISTINCT FROM 'poolwarden'
            THEN pg_terminate_backend(s.pid)
       END AS signalled
FROM pg_stat_get_activity($1) AS s";

const VICTIM: &str = "victim";
const BYSTANDER: &str = "bystander";

/// Opens `count` idle sessions named `application`, 16 at a time.
async fn open_named(
    sb: &poolwarden_sandbox::Sandbox,
    application: &str,
    count: usize,
) -> Res<Vec<Local>> {
    futures::stream::iter(0..count)
        .map(|_| open_local(sb, application, State::Idle))
        .buffer_unordered(16)
        .try_collect()
        .await
}

/// The `count` victims as poolwarden's snapshot shows them, once every one is idle (a session
/// reports idle a moment after its client has the answer to its last statement).
async fn victims(pg: &mut Postgres, count: usize) -> Res<Vec<SessionIdentity>> {
    for _ in 0..1000 {
        let idle: Vec<SessionIdentity> = pg
            .observe()
            .await?
            .sessions
            .iter()
            .filter(|s| s.application_name == VICTIM && s.state == SessionState::Idle)
            .filter_map(|s| s.identity())
            .collect();
        if idle.len() == count {
            return Ok(idle);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Err(format!("the {count} victims were never all idle").into())
}

async fn wait_victims_gone(admin: &tokio_postgres::Client) -> Res<()> {
    let start = Instant::now();
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&VICTIM],
            )
            .await?
            .get(0);
        if n == 0 {
            return Ok(());
        }
        if start.elapsed().as_secs() > 60 {
            return Err(format!("{n} victims still there after 60 s").into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// How a method ends `kills` sessions, in ms.
#[derive(Clone, Copy, Debug)]
enum Method {
    Bare,
    Poolwarden,
    PerSession,
}

async fn once(
    method: Method,
    sb: &poolwarden_sandbox::Sandbox,
    pg: &mut Postgres,
    admin: &tokio_postgres::Client,
    kills: usize,
) -> Res<f64> {
    let sessions = open_named(sb, VICTIM, kills).await?;
    let identities = victims(pg, kills).await?;
    let t = Instant::now();
    let signalled = match method {
        Method::Bare => {
            let pids = identities
                .iter()
                .map(|s| i32::try_from(s.pid))
                .collect::<Result<Vec<i32>, _>>()?;
            let client = pg.client().await?;
            let rows = client
                .query_typed(BARE_TERMINATE, &[(&pids, Type::INT4_ARRAY)])
                .await?;
            rows.iter().filter(|r| r.get::<_, bool>(0)).count()
        }
        Method::Poolwarden => pg
            .terminate(&identities)
            .await?
            .iter()
            .filter(|v| **v == Verdict::Signalled)
            .count(),
        Method::PerSession => {
            let client = pg.client().await?;
            let statement = client
                .prepare_typed(
                    PER_SESSION,
                    &[Type::INT4, Type::TIMESTAMPTZ, Type::TEXT, Type::TIMESTAMPTZ],
                )
                .await?;
            // Prepared before the clock starts: poolwarden would prepare it once per connection.
            let t = Instant::now();
            let answers = futures::future::join_all(identities.iter().map(|s| async {
                // PostgreSQL's pids are int4; no backend has -1.
                let pid = i32::try_from(s.pid).unwrap_or(-1);
                client
                    .query(
                        &statement,
                        &[&pid, &s.backend_start, &s.state, &s.state_change],
                    )
                    .await
            }))
            .await;
            let took = ms(t);
            let mut signalled = 0;
            for rows in answers {
                if rows?.first().and_then(|r| r.get::<_, Option<bool>>(0)) == Some(true) {
                    signalled += 1;
                }
            }
            return finish(method, admin, sessions, kills, signalled, took).await;
        }
    };
    let took = ms(t);
    finish(method, admin, sessions, kills, signalled, took).await
}

/// Checks that every victim was signalled and waits until they are gone.
async fn finish(
    method: Method,
    admin: &tokio_postgres::Client,
    sessions: Vec<Local>,
    kills: usize,
    signalled: usize,
    took: f64,
) -> Res<f64> {
    if signalled != kills {
        return Err(format!("{method:?}: {signalled} of {kills} signalled").into());
    }
    wait_victims_gone(admin).await?;
    drop(sessions);
    Ok(took)
}

/// Server time of one read of the backends, `pg_stat_get_activity(pid)`, in µs: what a
/// statement per session pays it for every kill, poolwarden's statement once per call.
pub async fn fresh_read_us(client: &tokio_postgres::Client, pid: i64) -> Res<Vec<f64>> {
    let sql = format!("EXPLAIN ANALYZE SELECT * FROM pg_stat_get_activity({pid})");
    let mut samples = Vec::new();
    for _ in 0..21 {
        let lines = client.query(&sql, &[]).await?;
        let ms: f64 = lines
            .iter()
            .find_map(|line| {
                let text: &str = line.get(0);
                text.strip_prefix("Execution Time: ")?
                    .strip_suffix(" ms")?
                    .parse()
                    .ok()
            })
            .ok_or("no Execution Time in EXPLAIN ANALYZE's output")?;
        samples.push(ms * 1e3);
    }
    Ok(samples)
}

pub async fn run(cfg: &Config) -> Res<Table> {
    let (backends, kills, runs): (&[usize], &[usize], usize) = if cfg.tiny {
        (&[40], &[5, 20], 2)
    } else {
        (&[1_000, 5_000], &[20, 100, 1_000], 5)
    };
    let most = backends.iter().max().copied().unwrap_or(0);
    let sb = sandbox(most as u32 + 50).await?;
    let admin = sb.admin().await?;
    let mut pg = Postgres::connect(&monitor_url(sb.port()), ConnectOptions::default()).await?;
    let mut table = Table::new(
        "Act: the kills' cost, poolwarden vs the bare unchecked `pg_terminate_backend`",
        &[
            "backends",
            "kills",
            "bare ms",
            "poolwarden ms",
            "ratio",
            "a statement per session, fresh read each ms",
            "ratio",
            "one read of the backends µs (server)",
        ],
    );
    let mut bystanders: Vec<Local> = Vec::new();
    for &total in backends {
        for &k in kills.iter().filter(|k| **k <= total) {
            // `total` backends in all while the victims are there.
            let wanted = total - k;
            if bystanders.len() < wanted {
                let more = open_named(&sb, BYSTANDER, wanted - bystanders.len()).await?;
                bystanders.extend(more);
            }
            bystanders.truncate(wanted);
            let mut samples = [Vec::new(), Vec::new(), Vec::new()];
            // Warm-up: the statements' plans and the backend's caches.
            once(Method::Poolwarden, &sb, &mut pg, &admin, k.min(20)).await?;
            once(Method::PerSession, &sb, &mut pg, &admin, k.min(20)).await?;
            for _ in 0..runs {
                for (i, method) in [Method::Bare, Method::Poolwarden, Method::PerSession]
                    .into_iter()
                    .enumerate()
                {
                    samples[i].push(once(method, &sb, &mut pg, &admin, k).await?);
                }
            }
            let read = match bystanders.first() {
                Some(b) => Stats::of(&fresh_read_us(pg.client().await?, b.pid).await?).show(0),
                None => "–".into(),
            };
            let [bare, ours, alternative] = samples.map(|s| Stats::of(&s));
            table.row(vec![
                thousands(total as u64),
                thousands(k as u64),
                bare.show(2),
                ours.show(2),
                format!("{:.2}", ours.median / bare.median),
                alternative.show(2),
                format!("{:.2}", alternative.median / bare.median),
                read,
            ]);
            eprintln!("  act: {k} kills among {total} backends measured");
        }
    }
    table.note(format!(
        "{runs} runs of each, interleaved, after a warm-up. Each run opens `kills` fresh idle \
         sessions (Unix socket) beside `backends − kills` idle bystanders, takes poolwarden's \
         snapshot for their identities, and times one call over the monitoring connection (TCP), \
         from the request to its last answer; then waits until the server shows none of the \
         victims before the next. bare: `{BARE_TERMINATE}`, unchecked. poolwarden: \
         `Engine::terminate`, one statement (one round trip): the identities checked against \
         the statement's one read of the backends, then each session's live wait event \
         (`Client`/`ClientRead`) in the row of its own signal. A statement per session: one \
         prepared statement executed per session, each its own implicit transaction, hence its \
         own fresh read with `pg_stat_get_activity(pid)`, all sent before any answer is awaited \
         (poolwarden's previous design, measured for comparison; prepared before the clock \
         starts). One read: `EXPLAIN ANALYZE` execution time of \
         `SELECT * FROM pg_stat_get_activity(pid)` for a bystander, 21 calls: each read copies \
         the status of every backend, which the statement per session pays once per kill."
    ));
    drop(bystanders);
    drop(pg);
    drop(admin);
    sb.stop();
    Ok(table)
}
