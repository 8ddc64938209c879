//! The scale section's tables, from what each row measured.

use crate::common::*;
use crate::scale::{Row, Sizes};
use crate::scale_platform::{PER_POD, SERVERS, SLOW_DELAY};
use crate::scale_probe::quantile;

/// `p50 / p99 / max` of `ms`, or a dash.
fn spread(ms: &[f64]) -> String {
    if ms.is_empty() {
        return "–".into();
    }
    format!(
        "{:.0} / {:.0} / {:.0}",
        quantile(ms, 0.5),
        quantile(ms, 0.99),
        quantile(ms, 1.0)
    )
}

fn per_server(policies: usize) -> String {
    let most = policies.div_ceil(SERVERS.len());
    let least = policies / SERVERS.len();
    if most == least {
        most.to_string()
    } else {
        format!("{least}–{most}")
    }
}

pub fn tables(rows: &[Row], sizes: &Sizes, setup_secs: f64) -> Vec<Table> {
    let interval = sizes.interval.as_secs();
    let mut controller = Table::new(
        &format!("Scale: one controller, N policies over four servers (interval {interval}s)"),
        &[
            "policies (per server)",
            "CPU % of one core (10 s spans)",
            "RSS MiB (1 s samples)",
            "peak RSS MiB (start / restart)",
            "lateness ms p50 / p99 / max: A and B",
            "same: C (slow)",
            "cycles per policy (A, B, C)",
            "D (dead): failed reconciles",
            "start: ready s / A, B, C Ready s / D not Ready s",
            "restart: ready s / A, B, C reconciled s / D failed s",
        ],
    );
    for r in rows {
        let fast: Vec<f64> = r.logged.lateness[0]
            .iter()
            .chain(&r.logged.lateness[1])
            .copied()
            .collect();
        let live = (0..r.policies).filter(|k| k % SERVERS.len() != 3).count();
        let cycles: usize = r.logged.lateness[..3].iter().map(Vec::len).sum();
        let failed: u64 = r.logged.failed.values().sum();
        controller.row(vec![
            format!(
                "{} ({})",
                thousands(r.policies as u64),
                per_server(r.policies)
            ),
            if r.cpu_slots.is_empty() {
                format!("(whole window {:.1})", r.cpu_percent)
            } else {
                format!(
                    "{} (whole window {:.1})",
                    Stats::of(&r.cpu_slots).show(1),
                    r.cpu_percent
                )
            },
            Stats::of(&r.rss).show(1),
            format!("{:.1} / {:.1}", r.hwm, r.restart_hwm),
            spread(&fast),
            spread(&r.logged.lateness[2]),
            format!("{:.1}", cycles as f64 / live.max(1) as f64),
            failed.to_string(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                r.ready_secs, r.reported_secs.0, r.reported_secs.1
            ),
            format!(
                "{:.1} / {:.1} / {:.1}",
                r.restart_ready_secs, r.restart_all_secs.0, r.restart_all_secs.1
            ),
        ]);
    }
    let window = rows.first().map_or(0.0, |r| r.window_secs);
    let seeded = rows
        .iter()
        .map(|r| format!("{:.0} s for {}", r.seed_secs, thousands(r.policies as u64)))
        .collect::<Vec<_>>()
        .join(", ");
    controller.note(format!(
        "The real binary (`poolwarden controller`, leader election on, default `--concurrency`), \
         against the Kubernetes API stand-in. Policy k governs its own database on server \
         k mod 4, in DryRun, `interval: {interval}s`, scoped to that database and its \
         workload's pods (a Deployment of two pods per policy, ten policies a namespace). \
         Servers A, B and C (PostgreSQL, built once for every row): {} databases each, {} \
         sessions per database ({PER_POD} from each pod, named after it; the rest a report job's; \
         in every fifth database two of a pod's sessions idle in a transaction, a leak that is \
         confirmed and annotated), so {} backends per server whatever the row; C behind a proxy \
         that delivers everything the server sends {} ms late; D accepts connections and never \
         answers (poolwarden's login runs out its 10 s timeout). Measured over a {window:.0} s \
         window that starts one interval after every policy's status was written: CPU from \
         `/proc/PID/stat` (median of 10 s spans, min–max, and the whole window), memory from \
         `/proc/PID/status`; lateness is each cycle's start against its schedule (one interval \
         after the previous cycle was first tried), from the controller's own debug line per \
         cycle; \"cycles per policy\" counts those on A, B and C over the window. \"start\": from the \
         controller's start to `/readyz`, to every status on A, B and C saying Ready=True, and \
         to every status on D saying Ready=False with why (its first logins run out their \
         10 s). After the window the controller is stopped (SIGTERM) and started again: to \
         `/readyz`, to every policy on A, B and C having had a cycle, and to every policy on D \
         having failed one. Setting up the servers took {setup_secs:.0} s; seeding the \
         stand-in {seeded}.",
        sizes.databases,
        sizes.sessions_per_db,
        thousands((sizes.databases * sizes.sessions_per_db) as u64),
        SLOW_DELAY.as_millis(),
    ));

    let mut servers = Table::new(
        "Scale: what the servers spend on poolwarden",
        &[
            "policies (per server)",
            "monitoring connections at most: A / B / C / D",
            "CPU of poolwarden's backends, ms a minute: A / B / C",
            "same, % of one core (A + B + C)",
            "looks a minute: answered (A + B + C) / failed (D)",
            "CPU per answered look, ms",
        ],
    );
    for r in rows {
        let minutes = r.window_secs / 60.0;
        let cpu: Vec<f64> = (0..3).map(|s| r.backends.cpu_ms(s) / minutes).collect();
        let most = r.backends.most;
        servers.row(vec![
            format!(
                "{} ({})",
                thousands(r.policies as u64),
                per_server(r.policies)
            ),
            format!("{} / {} / {} / {}", most[0], most[1], most[2], most[3]),
            format!("{:.0} / {:.0} / {:.0}", cpu[0], cpu[1], cpu[2]),
            format!("{:.3}", cpu.iter().sum::<f64>() / 600.0),
            format!("{:.1} / {:.1}", r.looks.0 / minutes, r.looks.1 / minutes),
            format!("{:.1}", cpu.iter().sum::<f64>() / (r.looks.0 / minutes)),
        ]);
    }
    servers.note(
        "Connections: `pg_stat_activity` rows with `application_name = 'poolwarden'`, sampled \
         each second (on D, the connections its listener holds open). CPU: the monitoring \
         backends' `/proc/PID/schedstat` over the window, for every look (snapshot, and the \
         churn sample when due) taken over them. Looks: the controller's own count \
         (`poolwarden_server_looks_total`) over the window; by design about two a minute per \
         server at a 30 s interval, however many policies share them. Every row looks at servers \
         of the same size: what differs is how many policies read them.",
    );

    let mut writes = Table::new(
        "Scale: API writes per policy per hour",
        &[
            "policies",
            "status",
            "finalizer",
            "Events",
            "workload annotations",
            "Lease (per controller, an hour)",
        ],
    );
    for r in rows {
        let hours = r.window_secs / 3600.0;
        let per = |kind: &str| {
            r.writes.get(kind).copied().unwrap_or(0) as f64 / hours / r.policies as f64
        };
        writes.row(vec![
            thousands(r.policies as u64),
            format!("{:.1}", per("PoolPolicy status")),
            format!("{:.1}", per("PoolPolicy (finalizer)")),
            format!("{:.1}", per("Event")),
            format!("{:.1}", per("workload annotations")),
            format!(
                "{:.0}",
                r.writes
                    .get("Lease (leader election)")
                    .copied()
                    .unwrap_or(0) as f64
                    / hours
            ),
        ]);
    }
    writes.note(
        "Counted from the stand-in's request log over the same window. The status is written \
         when it changes and otherwise every 5 minutes (the heartbeat): 12 an hour per policy \
         when nothing changes; a window shorter than 5 minutes sees a share of them. The first \
         status, the finalizer and the leaks' annotations and Events are written before the \
         window.",
    );
    vec![controller, servers, writes]
}
