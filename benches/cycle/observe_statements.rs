//! Observe (section 1, #22): what reading and fingerprinting each session's last statement adds
//! to a snapshot, beside the same snapshot with `lastStatements: Off` (the column not even read)
//! and the bare `SELECT * FROM pg_stat_activity`, at growing numbers of real backends whose
//! last statements are ORM-like queries full of literals; and the fingerprinting alone, in
//! process, over the same texts.

use std::time::Instant;

use poolwarden::database::ConnectOptions;
use poolwarden::database::Engine;
use poolwarden::database::fingerprint::{Dialect, fingerprint};
use poolwarden::database::postgres::Postgres;

use crate::common::*;

/// How many different statements the backends run (each with its own literals).
const SHAPES: usize = 50;

/// The statement backend `i` runs: an ORM's SELECT of a varying column list, by id, by a list
/// of ids and by an e-mail, with a sqlcommenter-style comment; 250–400 bytes.
fn statement(i: usize) -> String {
    let columns = ["id", "name", "email", "org_id", "created_at", "status"];
    let shape = i % SHAPES;
    let picked: Vec<String> = columns
        .iter()
        .take(2 + shape % columns.len().saturating_sub(1))
        .map(|c| format!("users.{c} AS users_{c}"))
        .collect();
    format!(
        "SELECT {} FROM users WHERE users.id = {i} AND users.org_id IN ({}, {}, {}) \
         AND users.email = 'user{i}@example.com' AND users.status <> 'deleted-{shape}' \
         /* controller='users',route='/users/{i}' */",
        picked.join(", "),
        i % 7,
        i % 11,
        i % 13
    )
}

pub async fn run(cfg: &Config) -> Res<Table> {
    let sizes: &[usize] = if cfg.tiny { &[20] } else { &[1000, 5000] };
    let runs = if cfg.tiny { 5 } else { 15 };
    let (batches, per_batch) = if cfg.tiny { (3, 5) } else { (5, 10) };
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let sb = sandbox(largest as u32 + 50).await?;
    let url = monitor_url(sb.port());
    let admin = app_admin(&sb).await?;
    admin
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, name text, email text, org_id int, \
             created_at timestamptz, status text); GRANT SELECT ON users TO app",
        )
        .await?;
    let mut on = Postgres::connect(&url, ConnectOptions::default()).await?;
    let mut off = Postgres::connect(&url, ConnectOptions::default()).await?;
    off.read_statements(false);
    let (proxy_port, wire) = wire_proxy(sb.port()).await?;
    let mut counted =
        Postgres::connect(&monitor_url(proxy_port), ConnectOptions::default()).await?;

    let mut table = Table::new(
        "Observe: what each session's last statement, read and fingerprinted, adds to a snapshot",
        &[
            "backends",
            "statement bytes",
            "bare query ms",
            "snapshot ms, Off",
            "snapshot ms, Fingerprint",
            "client CPU µs/call Off / Fingerprint",
            "server CPU µs/call Off / Fingerprint",
            "KiB from server Off / Fingerprint",
            "fingerprinting alone µs (all statements)",
        ],
    );
    let mut sessions = Vec::new();
    for &size in sizes {
        let more = open_many(&sb, sessions.len(), size - sessions.len(), true).await?;
        sessions.extend(more);
        // Every backend not running its `pg_sleep` runs its statement (an aborted transaction
        // refuses it, and still shows it). Sessions open in any order: ask which are busy.
        let busy: std::collections::HashSet<i64> = admin
            .query(
                "SELECT pid::int8 FROM pg_stat_activity WHERE usename = 'app' AND state = 'active'",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (i, s) in sessions.iter().enumerate() {
            if !busy.contains(&s.pid) {
                let _ = s.client.simple_query(&statement(i)).await;
            }
        }
        let texts: Vec<String> = admin
            .query(
                "SELECT query FROM pg_stat_activity WHERE usename = 'app'",
                &[],
            )
            .await?
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(0))
            .collect();
        let mut lengths: Vec<f64> = texts.iter().map(|t| t.len() as f64).collect();
        lengths.sort_by(f64::total_cmp);

        for _ in 0..3 {
            on.observe().await?;
            off.observe().await?;
            on.bare_activity_query().await?;
        }
        let (mut bare, mut with_off, mut with_on) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..runs {
            let order: [u8; 3] = if r % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
            for which in order {
                let t = Instant::now();
                match which {
                    0 => {
                        on.bare_activity_query().await?;
                        bare.push(ms(t));
                    }
                    1 => {
                        off.observe().await?;
                        with_off.push(ms(t));
                    }
                    _ => {
                        on.observe().await?;
                        with_on.push(ms(t));
                    }
                }
            }
        }

        let (own_on, own_off) = (on.observe().await?.own_pid, off.observe().await?.own_pid);
        let (mut cli_off, mut cli_on, mut srv_off, mut srv_on) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..batches {
            let n = per_batch as f64;
            let (s0, c0) = (cpu_ns(own_off)?, own_cpu_seconds());
            for _ in 0..per_batch {
                off.observe().await?;
            }
            let (s1, c1) = (cpu_ns(own_off)?, own_cpu_seconds());
            srv_off.push((s1 - s0) as f64 / 1e3 / n);
            cli_off.push((c1 - c0) * 1e6 / n);
            let (s0, c0) = (cpu_ns(own_on)?, own_cpu_seconds());
            for _ in 0..per_batch {
                on.observe().await?;
            }
            let (s1, c1) = (cpu_ns(own_on)?, own_cpu_seconds());
            srv_on.push((s1 - s0) as f64 / 1e3 / n);
            cli_on.push((c1 - c0) * 1e6 / n);
        }

        let mut kib = [0.0; 2];
        for (k, read) in [false, true].into_iter().enumerate() {
            counted.read_statements(read);
            counted.observe().await?;
            let before = wire.count();
            counted.observe().await?;
            kib[k] = (wire.count().down - before.down) as f64 / 1024.0;
        }

        let mut alone = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let made = texts
                .iter()
                .filter_map(|text| fingerprint(text, Dialect::POSTGRESQL, Some(1023)))
                .count();
            alone.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(made);
        }

        table.row(vec![
            thousands(size as u64),
            format!("{:.0}", Stats::of(&lengths).median),
            Stats::of(&bare).show(2),
            Stats::of(&with_off).show(2),
            Stats::of(&with_on).show(2),
            format!(
                "{} / {}",
                Stats::of(&cli_off).show(0),
                Stats::of(&cli_on).show(0)
            ),
            format!(
                "{} / {}",
                Stats::of(&srv_off).show(0),
                Stats::of(&srv_on).show(0)
            ),
            format!("{:.0} / {:.0}", kib[0], kib[1]),
            Stats::of(&alone).show(0),
        ]);
        eprintln!("  observe: last statements at {size} backends measured");
    }
    table.note(format!(
        "Backends as in the first table (92% idle, 4% idle in transaction, 2% aborted, 2% running \
         `pg_sleep`), each but the running ones after an ORM-like SELECT of {SHAPES} shapes with \
         its own literals (an id, a list of ids, an e-mail, a sqlcommenter comment; median length \
         in the second column). Off is a second monitoring connection told not to read \
         statements (`lastStatements: \"Off\"`: `query` is not even selected). Wall times: {runs} \
         runs each, alternating; CPU: {batches} batches of {per_batch} calls, server CPU each \
         connection's own backend's; bytes: one call through the counting proxy. The last \
         column fingerprints the same texts in this process, without the database ({runs} runs)."
    ));
    drop(sessions);
    drop(on);
    drop(off);
    drop(counted);
    drop(admin);
    sb.stop();
    Ok(table)
}
