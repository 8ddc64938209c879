//! Observe (section 1): poolwarden's snapshot against the bare `SELECT * FROM pg_stat_activity`,
//! over the same monitoring connection, at growing numbers of real backends; then what the churn
//! sampling and the blocking look-up add, beside the same bare scan.

use std::time::Instant;

use poolwarden::database::ConnectOptions;
use poolwarden::database::Engine;
use poolwarden::database::postgres::Postgres;
use tokio_postgres::{Client, NoTls};

use crate::common::*;

/// The blocking look-up as poolwarden asks it (lock waiters only) and as a naive monitor would
/// (every backend), each alone.
const BLOCKING_WAITERS_ONLY: &str = "SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity \
     WHERE wait_event_type = 'Lock'";
const BLOCKING_EVERY_BACKEND: &str = "SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity";

pub async fn run(cfg: &Config) -> Res<Vec<Table>> {
    let sizes: &[usize] = if cfg.tiny { &[20] } else { &[100, 1000, 5000] };
    let runs = if cfg.tiny { 5 } else { 15 };
    // Server CPU is read per batch of calls: several batches give median, min and max.
    let (batches, per_batch) = if cfg.tiny { (3, 5) } else { (5, 10) };
    let largest = sizes.iter().copied().max().unwrap_or(0);
    // The churn and blocking table adds a lock holder and one waiter per 100 backends.
    let sb = sandbox((largest + largest / 100) as u32 + 50).await?;
    let url = monitor_url(sb.port());
    let mut pg = Postgres::connect(&url, ConnectOptions::default()).await?;
    let (proxy_port, wire) = wire_proxy(sb.port()).await?;
    let mut counted =
        Postgres::connect(&monitor_url(proxy_port), ConnectOptions::default()).await?;

    let mut table = Table::new(
        "Observe: poolwarden's snapshot vs the bare query, same connection",
        &[
            "backends",
            "rows",
            "bare query ms",
            "snapshot ms",
            "ratio",
            "server CPU µs/call bare",
            "server CPU µs/call snapshot",
            "client CPU µs/call bare",
            "client CPU µs/call snapshot",
            "KiB from server bare / snapshot",
            "round trips bare / snapshot",
        ],
    );
    let mut extra = Table::new(
        "Observe: what churn sampling and the blocking look-up add, beside the bare scan",
        &[
            "backends",
            "lock waiters",
            "server CPU µs: bare scan",
            "snapshot (look-up for waiters)",
            "look-up alone, waiters only",
            "look-up for every backend",
            "one churn look",
            "churn sample: looks / ms / server CPU ms / % of a core",
        ],
    );
    let admin = sb.admin().await?;
    let (raw, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    let raw_pid: i32 = raw.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    let mut sampler = Postgres::connect(&url, ConnectOptions::default()).await?;
    let mut sessions = Vec::new();
    for &size in sizes {
        let opening = Instant::now();
        let more = open_many(&sb, sessions.len(), size - sessions.len(), true).await?;
        sessions.extend(more);
        eprintln!(
            "  observe: {size} sessions open ({:.1} s to open the last batch)",
            opening.elapsed().as_secs_f64()
        );

        // Warm the backend's caches (and the plans) before measuring.
        let mut rows = 0;
        let mut own_pid = 0;
        for _ in 0..3 {
            let snapshot = pg.observe().await?;
            rows = snapshot.sessions.len();
            own_pid = snapshot.own_pid;
            pg.bare_activity_query().await?;
        }

        // Wall time, alternating which goes first so that drift hits both alike.
        let (mut bare, mut ours) = (Vec::new(), Vec::new());
        for r in 0..runs {
            for first_bare in [r % 2 == 0, r % 2 != 0] {
                if first_bare {
                    let t = Instant::now();
                    pg.bare_activity_query().await?;
                    bare.push(ms(t));
                } else {
                    let t = Instant::now();
                    pg.observe().await?;
                    ours.push(ms(t));
                }
            }
        }

        // CPU: the monitoring backend's (schedstat, ns) and this process's (getrusage).
        let (mut srv_bare, mut srv_ours, mut cli_bare, mut cli_ours) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..batches {
            let (s0, c0) = (cpu_ns(own_pid)?, own_cpu_seconds());
            for _ in 0..per_batch {
                pg.bare_activity_query().await?;
            }
            let (s1, c1) = (cpu_ns(own_pid)?, own_cpu_seconds());
            for _ in 0..per_batch {
                pg.observe().await?;
            }
            let (s2, c2) = (cpu_ns(own_pid)?, own_cpu_seconds());
            let n = per_batch as f64;
            srv_bare.push((s1 - s0) as f64 / 1e3 / n);
            srv_ours.push((s2 - s1) as f64 / 1e3 / n);
            cli_bare.push((c1 - c0) * 1e6 / n);
            cli_ours.push((c2 - c1) * 1e6 / n);
        }

        // What crosses the wire, and how many times each call waits for the server, through
        // the proxy.
        counted.observe().await?;
        counted.bare_activity_query().await?;
        let before = wire.count();
        counted.bare_activity_query().await?;
        let wire_bare = wire.count() - before;
        let before = wire.count();
        counted.observe().await?;
        let wire_ours = wire.count() - before;
        let mut probe = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
        for (d, delay) in [std::time::Duration::ZERO, ROUND_TRIP_PROBE]
            .into_iter()
            .enumerate()
        {
            wire.set_delay(delay);
            for _ in 0..3 {
                let t = Instant::now();
                counted.bare_activity_query().await?;
                probe[0][d].push(ms(t));
                let t = Instant::now();
                counted.observe().await?;
                probe[1][d].push(ms(t));
            }
        }
        wire.set_delay(std::time::Duration::ZERO);
        let rt_bare = round_trips(&probe[0][0], &probe[0][1]);
        let rt_ours = round_trips(&probe[1][0], &probe[1][1]);

        let (b, o) = (Stats::of(&bare), Stats::of(&ours));
        table.row(vec![
            thousands(size as u64),
            thousands(rows as u64),
            b.show(2),
            o.show(2),
            format!("{:.2}", o.median / b.median),
            Stats::of(&srv_bare).show(0),
            Stats::of(&srv_ours).show(0),
            Stats::of(&cli_bare).show(0),
            Stats::of(&cli_ours).show(0),
            format!(
                "{:.0} / {:.0}",
                wire_bare.down as f64 / 1024.0,
                wire_ours.down as f64 / 1024.0
            ),
            format!("{rt_bare:.1} / {rt_ours:.1}"),
        ]);
        eprintln!("  observe: {size} backends measured");
        extra.row(
            churn_and_blocking(&sb, &admin, &raw, raw_pid, &mut sampler, size, batches).await?,
        );
        eprintln!("  observe: churn sampling and blocking look-up at {size} backends measured");
    }
    table.note(format!(
        "Backends: sessions of role `app` over the Unix socket, 92% idle, 4% idle in transaction, \
         2% aborted in a transaction, 2% running `pg_sleep`; rows also count poolwarden's own \
         connections and PostgreSQL's background processes. Wall times: {runs} runs each, \
         alternating, after 3 warm-up calls. CPU: {batches} batches of {per_batch} calls; server \
         CPU is the monitoring backend's (`/proc/PID/schedstat`), client CPU this process's \
         (`getrusage`), decoding included. Bytes: one call through a counting proxy; round \
         trips: how much longer a call takes when the proxy delays every answer of the server by \
         {} ms, in units of that delay (median of 3 calls each way). The snapshot is two \
         statements sent together (server facts, then the sessions).",
        ROUND_TRIP_PROBE.as_millis()
    ));
    extra.note(format!(
        "Same server and backends as above, plus one lock holder and its waiters (1% of the \
         backends, at least 2) blocked on `LOCK TABLE … ACCESS EXCLUSIVE`. Server CPU is the \
         monitoring backend's, per call, median (min–max) of {batches} batches. The snapshot \
         asks `pg_blocking_pids` only of sessions with `wait_event_type = 'Lock'`; the naive \
         column asks it of every backend. A churn sample is half a second of quick looks at new \
         backends, 5 ms apart (or as far apart as a look takes, whichever is longer), taken only when sessions were opened at more than 2 a second since \
         the previous cycle (and on the first): its server CPU is what such a cycle adds; the \
         last column's share is that CPU over the sample's wall time."
    ));
    drop(sessions);
    drop(pg);
    drop(counted);
    drop(sampler);
    drop(raw);
    sb.stop();
    Ok(vec![table, extra])
}

/// Server CPU (µs) of `sql` on `raw`, per call: median (min–max) over `batches` batches of 10.
async fn server_cpu(raw: &Client, pid: i32, sql: &str, batches: usize) -> Res<Stats> {
    let mut per_call = Vec::new();
    for _ in 0..3 {
        raw.simple_query(sql).await?;
    }
    for _ in 0..batches {
        let before = cpu_ns(i64::from(pid))?;
        for _ in 0..10 {
            raw.simple_query(sql).await?;
        }
        per_call.push((cpu_ns(i64::from(pid))? - before) as f64 / 1e3 / 10.0);
    }
    Ok(Stats::of(&per_call))
}

/// One row of the second table at `size` backends: lock waiters set up, everything measured,
/// the waiters released.
async fn churn_and_blocking(
    sb: &poolwarden_sandbox::Sandbox,
    admin: &Client,
    raw: &Client,
    raw_pid: i32,
    sampler: &mut Postgres,
    size: usize,
    batches: usize,
) -> Res<Vec<String>> {
    let db = app_admin(sb).await?;
    db.batch_execute("CREATE TABLE IF NOT EXISTS waitq (); GRANT ALL ON waitq TO app")
        .await?;
    let holder = open_local(sb, "lock-holder", State::Idle).await?;
    holder
        .client
        .batch_execute("BEGIN; LOCK TABLE waitq IN ACCESS EXCLUSIVE MODE")
        .await?;
    let waiters = (size / 100).max(2);
    let mut waiting = Vec::new();
    for _ in 0..waiters {
        let w = open_local(sb, "lock-waiter", State::Idle).await?;
        let c = w.client.clone();
        tokio::spawn(async move {
            let _ = c.simple_query("SELECT * FROM waitq").await;
        });
        waiting.push(w);
    }
    // Wait until they all wait on the lock.
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .await?
            .get(0);
        if n as usize >= waiters {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let bare = server_cpu(raw, raw_pid, "SELECT * FROM pg_stat_activity", batches).await?;
    let waiters_only = server_cpu(raw, raw_pid, BLOCKING_WAITERS_ONLY, batches).await?;
    let every = server_cpu(raw, raw_pid, BLOCKING_EVERY_BACKEND, batches).await?;

    // The snapshot, unsampled (no sessions come and go here), and sampled.
    let own = sampler.observe().await?.own_pid;
    let mut snapshot_cpu = Vec::new();
    for _ in 0..batches {
        let before = cpu_ns(own)?;
        for _ in 0..10 {
            // No sessions come and go here: not sampled.
            sampler.observe().await?;
        }
        snapshot_cpu.push((cpu_ns(own)? - before) as f64 / 1e3 / 10.0);
    }
    let (mut looks, mut wall, mut cpu, mut share, mut per_look) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..batches.min(5) {
        let before = cpu_ns(own)?;
        let t = Instant::now();
        let s = sampler.observe_with_churn_sample().await?;
        let ms_wall = ms(t);
        let cpu_ms = (cpu_ns(own)? - before) as f64 / 1e6;
        let n = s.churn.map_or(0, |c| c.looks);
        looks.push(f64::from(n));
        wall.push(ms_wall);
        cpu.push(cpu_ms);
        share.push(cpu_ms / ms_wall * 100.0);
        per_look.push(cpu_ms * 1e3 / f64::from(n.max(1)));
    }

    holder.client.batch_execute("COMMIT").await?;
    drop(waiting);
    drop(holder);
    Ok(vec![
        thousands(size as u64),
        waiters.to_string(),
        bare.show(0),
        Stats::of(&snapshot_cpu).show(0),
        waiters_only.show(0),
        every.show(0),
        Stats::of(&per_look).show(0),
        format!(
            "{:.0} / {:.0} / {:.1} / {:.0}%",
            Stats::of(&looks).median,
            Stats::of(&wall).median,
            Stats::of(&cpu).median,
            Stats::of(&share).median
        ),
    ])
}
