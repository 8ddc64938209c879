//! Observe (section 1): poolwarden's snapshot against the bare `SELECT * FROM pg_stat_activity`,
//! over the same monitoring connection, at growing numbers of real backends.

use std::time::Instant;

use poolwarden::database::Engine;
use poolwarden::database::postgres::{ConnectOptions, Postgres};

use crate::common::*;

pub async fn run(cfg: &Config) -> Res<Table> {
    let sizes: &[usize] = if cfg.tiny { &[20] } else { &[100, 1000, 5000] };
    let runs = if cfg.tiny { 5 } else { 15 };
    // Server CPU is read per batch of calls: several batches give median, min and max.
    let (batches, per_batch) = if cfg.tiny { (3, 5) } else { (5, 10) };
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let sb = sandbox(largest as u32 + 50).await?;
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
    drop(sessions);
    drop(pg);
    drop(counted);
    sb.stop();
    Ok(table)
}
