//! Scale (section 6): one controller for a platform's databases. The real `poolwarden
//! controller` binary against the Kubernetes API stand-in, with N PoolPolicies, each governing
//! its own database, spread over four servers (see [`scale_platform`](crate::scale_platform)):
//! two that answer, one that answers slowly, one that never answers. For each N: the
//! controller's CPU and memory, each cycle's lateness against its schedule, the monitoring
//! connections each server holds and the CPU its backends spend on poolwarden, the API writes,
//! and how soon every policy is reported after a start and reconciled again after a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use kube::Api;
use poolwarden::api::PoolPolicy;

use crate::common::*;
use crate::controller::Controller;
use crate::scale_platform::{self as platform, SERVERS, Served};
use crate::scale_probe::{self as probe, Backends};
use crate::standin::KubeStandin;

/// The log filter: info, and a line per cycle (its lateness) and per reconcile.
const RUST_LOG: &str = "info,poolwarden::controller::reconcile=debug";

/// How long a row waits for every status, and for every policy after a restart.
const WAIT_SECS: u64 = 900;

/// How often a row looks: listing 1,000 policies from the stand-in four times a second would
/// take the API server's time from the controller being measured.
fn poll(policies: usize) -> Duration {
    Duration::from_millis((policies as u64 * 2).max(250))
}

pub struct Sizes {
    pub rows: Vec<usize>,
    pub databases: usize,
    pub sessions_per_db: usize,
    pub interval: Duration,
    pub window: Duration,
}

fn sizes(cfg: &Config) -> Sizes {
    if cfg.tiny {
        Sizes {
            rows: vec![8],
            databases: 2,
            sessions_per_db: 3,
            interval: Duration::from_secs(2),
            window: Duration::from_secs(6),
        }
    } else {
        // 40 policies are 10 per server: what the servers spend then is the bar for 1,000.
        Sizes {
            rows: cfg
                .scale_policies
                .clone()
                .unwrap_or_else(|| vec![10, 40, 100, 1000]),
            databases: 250,
            sessions_per_db: 10,
            interval: Duration::from_secs(30),
            window: Duration::from_secs(cfg.scale_window),
        }
    }
}

/// What one row measured.
pub struct Row {
    pub policies: usize,
    pub seed_secs: f64,
    pub ready_secs: f64,
    /// Until every policy on A, B and C said Ready=True; and until D's said Ready=False too.
    pub reported_secs: (f64, f64),
    pub window_secs: f64,
    pub rss: Vec<f64>,
    pub hwm: f64,
    pub cpu_percent: f64,
    /// CPU % of one core over each 10 s of the window.
    pub cpu_slots: Vec<f64>,
    pub logged: probe::Logged,
    pub backends: Backends,
    /// Looks the controller took over the window: answered (A, B, C) and failed (D); NaN from a
    /// binary without `poolwarden_server_looks_total`.
    pub looks: (f64, f64),
    pub writes: std::collections::BTreeMap<&'static str, u64>,
    pub restart_ready_secs: f64,
    /// Until every policy on A, B and C was reconciled again; and D's had failed once too.
    pub restart_all_secs: (f64, f64),
    pub restart_hwm: f64,
}

pub async fn run(cfg: &Config) -> Res<Vec<Table>> {
    let sizes = sizes(cfg);
    let started = Instant::now();
    let servers = platform::servers(sizes.databases, sizes.sessions_per_db).await?;
    let setup_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "  scale: servers A, B, C with {} databases of {} sessions each ({setup_secs:.0} s)",
        sizes.databases, sizes.sessions_per_db
    );
    let mut rows = Vec::new();
    for &policies in &sizes.rows {
        rows.push(measure(cfg, &sizes, &servers, policies).await?);
        if !cfg.tiny {
            // The figures so far, in case a larger row does not finish.
            for t in crate::scale_tables::tables(&rows, &sizes, setup_secs) {
                eprintln!("{}", t.render());
            }
        }
    }
    let tables = crate::scale_tables::tables(&rows, &sizes, setup_secs);
    for served in servers {
        if let Some(sb) = served.sandbox {
            sb.stop();
        }
    }
    Ok(tables)
}

async fn measure(cfg: &Config, sizes: &Sizes, servers: &[Served], policies: usize) -> Res<Row> {
    let standin = KubeStandin::start();
    let client = standin.client().await;
    let dir = tempfile::tempdir()?;
    let interval = format!("{}s", sizes.interval.as_secs());
    let seeding = Instant::now();
    platform::seed(&client, policies, servers, &interval).await?;
    let seed_secs = seeding.elapsed().as_secs_f64();
    eprintln!("  scale: {policies} policies in the stand-in ({seed_secs:.0} s)");

    let kubeconfig = standin.kubeconfig(dir.path());
    let log = dir.path().join("controller.log");
    let args = ["--log-format", "json"];
    let starting = Instant::now();
    let mut controller =
        Controller::start_with(&cfg.controller_binary, &kubeconfig, &log, &args, RUST_LOG)?;
    let ready_secs = until_ready(&mut controller, &log, starting).await?;
    let policy_api: Api<PoolPolicy> = Api::all(client.clone());
    let mut live_reported_secs = None;
    loop {
        let (live, dead) = reported(&policy_api).await?;
        if live == live_count(policies) {
            live_reported_secs.get_or_insert(starting.elapsed().as_secs_f64());
            // A tiny run does not wait for D's logins to run out (10 s each).
            if cfg.tiny || dead == policies - live {
                break;
            }
        }
        if starting.elapsed() > Duration::from_secs(WAIT_SECS) {
            // Measured anyway: the row says how far it got.
            eprintln!(
                "  scale: after {WAIT_SECS} s, {live} of {} statuses on A, B and C Ready, {dead} \
                 of {} on D not Ready",
                live_count(policies),
                policies - live_count(policies)
            );
            break;
        }
        tokio::time::sleep(poll(policies)).await;
    }
    let reported_secs = (
        live_reported_secs.unwrap_or(f64::NAN),
        starting.elapsed().as_secs_f64(),
    );
    eprintln!(
        "  scale: ready after {ready_secs:.1} s, every policy reported after {:.1} s",
        reported_secs.1
    );
    // One interval more: every leak confirmed and annotated, every schedule settled.
    tokio::time::sleep(sizes.interval).await;

    let pid = controller.pid();
    let (log_start, api_start) = (probe::log_len(&log), standin.log_text().len());
    let mut backends = Backends::default();
    backends.sample(servers).await?;
    let cpu_start = process_cpu_seconds(pid)?;
    let looks_start = looks_taken(&controller).await;
    let window_start = Instant::now();
    let (mut rss, mut cpu_slots) = (Vec::new(), Vec::new());
    let (mut slot_start, mut slot_cpu) = (Instant::now(), cpu_start);
    while window_start.elapsed() < sizes.window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(memory_mib(pid)?.0);
        backends.sample(servers).await?;
        if slot_start.elapsed() >= Duration::from_secs(10) {
            let cpu = process_cpu_seconds(pid)?;
            cpu_slots.push((cpu - slot_cpu) / slot_start.elapsed().as_secs_f64() * 100.0);
            (slot_start, slot_cpu) = (Instant::now(), cpu);
        }
    }
    let window_secs = window_start.elapsed().as_secs_f64();
    let cpu_percent = (process_cpu_seconds(pid)? - cpu_start) / window_secs * 100.0;
    let hwm = memory_mib(pid)?.1;
    let looks_end = looks_taken(&controller).await;
    let looks = (looks_end.0 - looks_start.0, looks_end.1 - looks_start.1);
    let logged = probe::read_log(&log, log_start);
    let writes = probe::writes(standin.log_text().get(api_start..).unwrap_or_default());

    // A restart: how soon it is ready, and every policy reconciled again.
    controller.stop();
    let log = dir.path().join("restarted.log");
    let restarting = Instant::now();
    let mut controller =
        Controller::start_with(&cfg.controller_binary, &kubeconfig, &log, &args, RUST_LOG)?;
    let restart_ready_secs = until_ready(&mut controller, &log, restarting).await?;
    let mut live_again_secs = None;
    loop {
        let seen = probe::read_log(&log, 0);
        let name = |k: usize| format!("{}/{}", platform::namespace_of(k), platform::policy_name(k));
        let (dead, live): (Vec<usize>, Vec<usize>) =
            (0..policies).partition(|k| platform::server_of(*k) == SERVERS.len() - 1);
        if live.iter().all(|k| seen.reconciled.contains(&name(*k))) {
            live_again_secs.get_or_insert(restarting.elapsed().as_secs_f64());
            if cfg.tiny || dead.iter().all(|k| seen.failed.contains_key(&name(*k))) {
                break;
            }
        }
        if restarting.elapsed() > Duration::from_secs(WAIT_SECS) {
            eprintln!("  scale: not every policy was reconciled within {WAIT_SECS} s of a restart");
            break;
        }
        tokio::time::sleep(poll(policies)).await;
    }
    let restart_all_secs = (
        live_again_secs.unwrap_or(f64::NAN),
        restarting.elapsed().as_secs_f64(),
    );
    let restart_hwm = memory_mib(controller.pid())?.1;
    controller.stop();
    drop(standin);
    eprintln!("  scale: {policies} policies measured");
    Ok(Row {
        policies,
        seed_secs,
        ready_secs,
        reported_secs,
        window_secs,
        rss,
        hwm,
        cpu_percent,
        cpu_slots,
        logged,
        backends,
        looks,
        writes,
        restart_ready_secs,
        restart_all_secs,
        restart_hwm,
    })
}

/// The controller's `poolwarden_server_looks_total`: answered, failed.
async fn looks_taken(controller: &Controller) -> (f64, f64) {
    let mut counts = [f64::NAN; 2];
    for (count, outcome) in counts.iter_mut().zip(["answered", "failed"]) {
        let line = format!("poolwarden_server_looks_total{{outcome=\"{outcome}\"}}");
        if let Some(n) = controller.metric(&line).await {
            *count = n;
        }
    }
    (counts[0], counts[1])
}

async fn until_ready(controller: &mut Controller, log: &Path, since: Instant) -> Res<f64> {
    while !controller.ready().await {
        if since.elapsed() > Duration::from_secs(300) {
            return Err("the controller was not ready within 300 s".into());
        }
        if let Ok(Some(status)) = controller.child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("the controller exited ({status}):\n{text}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(since.elapsed().as_secs_f64())
}

/// The policies on A, B and C.
fn live_count(policies: usize) -> usize {
    (0..policies)
        .filter(|k| platform::server_of(*k) != SERVERS.len() - 1)
        .count()
}

/// How many policies on A, B and C say Ready=True, and on D Ready=False.
async fn reported(api: &Api<PoolPolicy>) -> Res<(usize, usize)> {
    let listed = api.list(&Default::default()).await?;
    let (mut live, mut dead) = (0, 0);
    for p in &listed.items {
        let Some(k) = p
            .metadata
            .name
            .as_deref()
            .and_then(|n| n.strip_prefix("db-"))
        else {
            continue;
        };
        let on_dead = k
            .parse::<usize>()
            .is_ok_and(|k| platform::server_of(k) == SERVERS.len() - 1);
        let ready = p.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.status == "True")
        });
        match (on_dead, ready) {
            (false, Some(true)) => live += 1,
            (true, Some(false)) => dead += 1,
            _ => {}
        }
    }
    Ok((live, dead))
}
