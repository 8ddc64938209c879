//! Act, the race: sessions flipping between idle spells just around the timeout and short
//! statements, ended by poolwarden and then by the common two-step killer (list the idle pids,
//! then `pg_terminate_backend` over them), same workload; the server log tells which of the
//! sessions each ended were in the middle of a statement.

use std::time::{Duration, Instant};

use poolwarden::standalone::{self, Output, RunOptions};
use poolwarden_sandbox::{AdminTerminations, FlippingSpec, Sandbox};
use tokio_postgres::types::Type;

use crate::act_cost::{BARE_TERMINATE, fresh_read_us};
use crate::common::*;

const TIMEOUT_MS: u64 = 1000;
const INTERVAL: Duration = Duration::from_secs(1);

/// The two-step killer's first step.
const LIST_IDLE: &str = "
SELECT pid FROM pg_stat_activity
WHERE usename = 'app' AND state = 'idle' AND state_change < now() - make_interval(secs => $1)";

/// Reads the log until it shows `wanted` more terminations than at `from`.
async fn until_terminated(
    sb: &Sandbox,
    from: &mut u64,
    wanted: usize,
    patience: Duration,
) -> Res<AdminTerminations> {
    let start = Instant::now();
    let mut seen = AdminTerminations::default();
    while seen.total < wanted {
        if start.elapsed() > patience {
            return Err(format!("only {} sessions ended in {patience:?}", seen.total).into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (later, next) = sb.admin_terminations_since(*from)?;
        seen.add(later);
        *from = next;
    }
    Ok(seen)
}

/// What a killer did to the workload.
struct Tally {
    seen: AdminTerminations,
    seconds: f64,
}

async fn poolwarden(sb: &Sandbox, from: &mut u64, wanted: usize) -> Res<Tally> {
    let yaml = format!(
        "mode: Enforce\n\
         scope: {{users: [app]}}\n\
         idle: {{idleTimeout: {TIMEOUT_MS}ms, maxTerminationsPerCycle: 10000}}\n"
    );
    let rules = poolwarden::decide::Rules::compile(&serde_saphyr::from_str(&yaml)?)?;
    let url = monitor_url(sb.port());
    let start = Instant::now();
    let runner = tokio::spawn(async move {
        let options = RunOptions {
            interval: INTERVAL,
            cycles: None,
            output: Output::Table,
        };
        let mut audit = poolwarden::standalone::AuditTrail::log_only("bench");
        standalone::run(&url, &[], &rules, options, &mut audit, &mut std::io::sink()).await
    });
    let seen = until_terminated(sb, from, wanted, Duration::from_secs(3600)).await;
    runner.abort();
    let _ = runner.await;
    Ok(Tally {
        seen: seen?,
        seconds: start.elapsed().as_secs_f64(),
    })
}

async fn two_step(sb: &Sandbox, from: &mut u64, wanted: usize) -> Res<Tally> {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=monitor password=monitor dbname=app",
            sb.port()
        ),
        tokio_postgres::NoTls,
    )
    .await?;
    let driver = tokio::spawn(connection);
    let start = Instant::now();
    let killer: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>> =
        tokio::spawn(async move {
            let timeout = TIMEOUT_MS as f64 / 1e3;
            loop {
                let rows = client
                    .query_typed(LIST_IDLE, &[(&timeout, Type::FLOAT8)])
                    .await?;
                let pids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
                client
                    .query_typed(BARE_TERMINATE, &[(&pids, Type::INT4_ARRAY)])
                    .await?;
                tokio::time::sleep(INTERVAL).await;
            }
        });
    let seen = until_terminated(sb, from, wanted, Duration::from_secs(3600)).await;
    if killer.is_finished() {
        // It only stops on an error, which explains the figures.
        killer.await??;
    } else {
        killer.abort();
    }
    driver.abort();
    Ok(Tally {
        seen: seen?,
        seconds: start.elapsed().as_secs_f64(),
    })
}

pub async fn run(cfg: &Config) -> Res<Table> {
    let (sessions, ours, theirs) = if cfg.tiny {
        (40, 40, 40)
    } else {
        (300, 10_000, 2_000)
    };
    let sb = sandbox(sessions as u32 + 30).await?;
    let spec = FlippingSpec {
        sessions,
        user: "app".into(),
        database: "app".into(),
        application_name: "flipper".into(),
        idle: (
            Duration::from_millis(TIMEOUT_MS / 2),
            Duration::from_millis(TIMEOUT_MS * 3 / 2),
        ),
        busy: (Duration::ZERO, Duration::from_millis(20)),
    };
    let flipping = sb.start_flipping(&spec).await?;
    let mut from = sb.log_len()?;
    let ours = poolwarden(&sb, &mut from, ours).await?;
    eprintln!(
        "  act race: poolwarden ended {} ({} mid-statement)",
        ours.seen.total,
        ours.seen.mid_statement.len()
    );
    let theirs = two_step(&sb, &mut from, theirs).await?;
    eprintln!(
        "  act race: the two-step killer ended {} ({} mid-statement)",
        theirs.seen.total,
        theirs.seen.mid_statement.len()
    );
    // What one read of the backends costs among this many backends.
    let admin = sb.admin().await?;
    let bystander: i32 = admin
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'flipper' LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    let backends: i64 = admin
        .query_one("SELECT count(*) FROM pg_stat_activity", &[])
        .await?
        .get(0);
    let read = Stats::of(&fresh_read_us(&admin, i64::from(bystander)).await?);
    let counts = flipping.stop().await;

    let mut table = Table::new(
        "Act: the race, sessions ended in the middle of a statement",
        &[
            "killer",
            "sessions ended",
            "ended mid-statement",
            "per 10,000 ended",
            "seconds",
            "ended per second",
        ],
    );
    for (name, t) in [
        ("poolwarden (the loop of `poolwarden run`, Enforce)", &ours),
        (
            "two-step: list idle pids, then `pg_terminate_backend`",
            &theirs,
        ),
    ] {
        let mid = t.seen.mid_statement.len();
        table.row(vec![
            name.into(),
            thousands(t.seen.total as u64),
            thousands(mid as u64),
            format!("{:.1}", mid as f64 * 1e4 / t.seen.total.max(1) as f64),
            format!("{:.0}", t.seconds),
            format!("{:.1}", t.seen.total as f64 / t.seconds),
        ]);
    }
    table.note(format!(
        "{sessions} sessions of role `app` (Unix socket), each idle for a uniformly random \
         {}–{} ms, then running `SELECT pg_sleep(x)` for a uniformly random 0–20 ms, again and \
         again; a session ended is replaced at once. They ran {} statements in all and were \
         ended {} times (as they saw it). Both killers: `idleTimeout` {TIMEOUT_MS} ms, every \
         {} s, one after the other on the same sessions. poolwarden: the library loop of \
         `poolwarden run`, `maxTerminationsPerCycle: 10000`. Two-step: `{}` then `{BARE_TERMINATE}` \
         over the pids it listed, over one connection. Counted in the server log: backends that \
         logged `FATAL: terminating connection due to administrator command`, and those of them \
         whose report goes on with `STATEMENT:` (ended while executing a statement). One \
         read of the backends (`pg_stat_get_activity(pid)`, `EXPLAIN ANALYZE`, {backends} \
         backends): {} µs; poolwarden's terminating statement reads them once, then checks \
         each session's live wait event in the row of its own signal.",
        TIMEOUT_MS / 2,
        TIMEOUT_MS * 3 / 2,
        thousands(counts.statements),
        thousands(counts.ended),
        INTERVAL.as_secs(),
        LIST_IDLE.split_whitespace().collect::<Vec<_>>().join(" "),
        read.show(0),
    ));
    sb.stop();
    Ok(table)
}
