//! Act (section 3): many idle sessions condemned and terminated in one cycle, the cap raised
//! to fit; then the kills' cost at several sizes (`act_cost`) and the race (`act_race`).

use std::time::{Duration, Instant};

use poolwarden::act;
use poolwarden::database::ConnectOptions;
use poolwarden::database::Engine;
use poolwarden::database::postgres::Postgres;
use poolwarden::decide::{self, ClusterView, Inputs, Memory, Rules};
use tokio_postgres::types::Type;

use crate::act_cost::BARE_TERMINATE;
use crate::common::*;

fn rules(cap: usize) -> Res<Rules> {
    let yaml = format!(
        "mode: Enforce\n\
         scope: {{users: [app]}}\n\
         idle: {{idleTimeout: 500ms, maxTerminationsPerCycle: {cap}}}\n"
    );
    let spec = serde_saphyr::from_str(&yaml)?;
    Ok(Rules::compile(&spec)?)
}

/// One cycle's phases.
struct Phases {
    observe: f64,
    decide: f64,
    terminate: f64,
    gone: f64,
    terminated: usize,
}

async fn cycle(pg: &mut Postgres, sb_admin: &tokio_postgres::Client, rules: &Rules) -> Res<Phases> {
    let t = Instant::now();
    let snapshot = pg.observe().await?;
    let observe = ms(t);
    let t = Instant::now();
    let decision = decide::decide(Inputs {
        snapshot: &snapshot,
        rules,
        cluster: &ClusterView::default(),
        poolers: &[],
        memory: &Memory::default(),
    });
    let decide = ms(t);
    let t = Instant::now();
    let outcome = act::terminate(pg, &decision).await;
    let terminate = ms(t);
    if let Some(e) = outcome.error {
        return Err(e.into());
    }
    let gone = wait_no_app_sessions(sb_admin, Duration::from_secs(60)).await?;
    Ok(Phases {
        observe,
        decide,
        terminate,
        gone: terminate + gone.as_secs_f64() * 1e3,
        terminated: outcome.terminated.len(),
    })
}

/// Opens `count` idle sessions, then terminates them with [`BARE_TERMINATE`] over `client`:
/// `(statement ms, until none is left ms)`.
async fn bare(
    sb: &poolwarden_sandbox::Sandbox,
    client: &tokio_postgres::Client,
    admin: &tokio_postgres::Client,
    count: usize,
) -> Res<(f64, f64)> {
    let sessions = open_many(sb, 0, count, false).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let pids = sessions
        .iter()
        .map(|s| i32::try_from(s.pid))
        .collect::<Result<Vec<i32>, _>>()?;
    let t = Instant::now();
    let rows = client
        .query_typed(BARE_TERMINATE, &[(&pids, Type::INT4_ARRAY)])
        .await?;
    let statement = ms(t);
    if rows.len() != count {
        return Err(format!("the bare statement returned {} rows", rows.len()).into());
    }
    let gone = wait_no_app_sessions(admin, Duration::from_secs(60)).await?;
    drop(sessions);
    Ok((statement, statement + gone.as_secs_f64() * 1e3))
}

pub async fn run(cfg: &Config) -> Res<Vec<Table>> {
    let mut tables = vec![one_cycle(cfg).await?];
    tables.push(crate::act_cost::run(cfg).await?);
    tables.push(crate::act_race::run(cfg).await?);
    Ok(tables)
}

/// One cycle that ends 1,000 sessions, phase by phase.
async fn one_cycle(cfg: &Config) -> Res<Table> {
    let count = if cfg.tiny { 20 } else { 1_000 };
    let runs = if cfg.tiny { 2 } else { 5 };
    let sb = sandbox(count as u32 + 30).await?;
    let admin = sb.admin().await?;
    let rules = rules(count)?;
    let mut pg = Postgres::connect(&monitor_url(sb.port()), ConnectOptions::default()).await?;
    let (proxy_port, wire) = wire_proxy(sb.port()).await?;
    let mut counted =
        Postgres::connect(&monitor_url(proxy_port), ConnectOptions::default()).await?;

    // A first cycle through the proxy, for the bytes; it warms the server up, too.
    let sessions = open_many(&sb, 0, count, false).await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = wire.count();
    let snapshot = counted.observe().await?;
    let observed = wire.count() - before;
    let decision = decide::decide(Inputs {
        snapshot: &snapshot,
        rules: &rules,
        cluster: &ClusterView::default(),
        poolers: &[],
        memory: &Memory::default(),
    });
    let before = wire.count();
    let outcome = act::terminate(&mut counted, &decision).await;
    let terminated_wire = wire.count() - before;
    if outcome.terminated.len() != count {
        return Err(format!(
            "expected {count} terminations, got {} ({:?})",
            outcome.terminated.len(),
            outcome.error
        )
        .into());
    }
    wait_no_app_sessions(&admin, Duration::from_secs(60)).await?;
    drop(sessions);

    let before = wire.count();
    bare(&sb, counted.client().await?, &admin, count).await?;
    let bare_wire = wire.count() - before;

    // Round trips: the same statements with and without the server's answers delayed. The
    // termination is sent again with the same identities; it finds none of them any more, but
    // it is the same statements with the same parameters.
    let identities: Vec<_> = decision
        .terminate
        .iter()
        .map(|t| t.identity.clone())
        .collect();
    let mut probe = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for (d, delay) in [Duration::ZERO, ROUND_TRIP_PROBE].into_iter().enumerate() {
        wire.set_delay(delay);
        for _ in 0..5 {
            let t = Instant::now();
            counted.observe().await?;
            probe[0][d].push(ms(t));
            let t = Instant::now();
            counted.terminate(&identities).await?;
            probe[1][d].push(ms(t));
        }
    }
    wire.set_delay(Duration::ZERO);
    let rt_observe = round_trips(&probe[0][0], &probe[0][1]);
    let rt_terminate = round_trips(&probe[1][0], &probe[1][1]);

    let mut phases = Vec::new();
    let mut bares = Vec::new();
    for _ in 0..runs {
        bares.push(bare(&sb, pg.client().await?, &admin, count).await?);
        let sessions = open_many(&sb, 0, count, false).await?;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let p = cycle(&mut pg, &admin, &rules).await?;
        if p.terminated != count {
            return Err(format!("expected {count} terminations, got {}", p.terminated).into());
        }
        phases.push(p);
        drop(sessions);
    }
    eprintln!("  act: {runs} cycles of {count} terminations measured");

    let stat = |f: fn(&Phases) -> f64| Stats::of(&phases.iter().map(f).collect::<Vec<_>>());
    let mut table = Table::new(
        &format!(
            "Act: {} idle sessions terminated in one cycle",
            thousands(count as u64)
        ),
        &["phase", "ms", "round trips", "KiB to / from server"],
    );
    let kib = |w: WireCount| {
        format!(
            "{:.1} / {:.1}",
            w.up as f64 / 1024.0,
            w.down as f64 / 1024.0
        )
    };
    table.row(vec![
        "observe".into(),
        stat(|p| p.observe).show(2),
        format!("{rt_observe:.1}"),
        kib(observed),
    ]);
    table.row(vec![
        "decide".into(),
        stat(|p| p.decide).show(2),
        "–".into(),
        "–".into(),
    ]);
    table.row(vec![
        "terminate (one statement, each session checked live before its signal)".into(),
        stat(|p| p.terminate).show(2),
        format!("{rt_terminate:.1}"),
        kib(terminated_wire),
    ]);
    table.row(vec![
        "whole cycle".into(),
        stat(|p| p.observe + p.decide + p.terminate).show(2),
        format!("{:.1}", rt_observe + rt_terminate),
        kib(WireCount {
            up: observed.up + terminated_wire.up,
            down: observed.down + terminated_wire.down,
        }),
    ]);
    table.row(vec![
        "until the server shows none left".into(),
        stat(|p| p.gone).show(1),
        "–".into(),
        "–".into(),
    ]);
    let bare_stat = |f: fn(&(f64, f64)) -> f64| Stats::of(&bares.iter().map(f).collect::<Vec<_>>());
    table.row(vec![
        "bare: `pg_terminate_backend` over the pids, unchecked".into(),
        bare_stat(|b| b.0).show(2),
        "1".into(),
        kib(bare_wire),
    ]);
    table.row(vec![
        "bare: until the server shows none left".into(),
        bare_stat(|b| b.1).show(1),
        "–".into(),
        "–".into(),
    ]);
    table.note(format!(
        "{runs} runs; each opens {count} idle sessions of role `app` (Unix socket), waits until \
         they are past `idleTimeout: 500ms`, then runs observe → decide → terminate over the \
         monitoring connection (TCP) with `maxTerminationsPerCycle: {count}`. Termination does \
         not wait for the backends to exit; the last row is measured from the start of the \
         termination until `pg_stat_activity` shows none of them (polled every 2 ms). \
         Bytes: one extra cycle through a counting proxy. Round trips: how much longer each \
         statement takes when the proxy delays every answer of the server by {} ms, in units \
         of that delay (median of 5 calls each way). The bare rows: as many fresh sessions, \
         signalled by `{BARE_TERMINATE}` in one round trip (`query_typed`), with no \
         re-verification, over the same connection; {runs} runs, interleaved with the others.",
        ROUND_TRIP_PROBE.as_millis()
    ));
    drop(pg);
    drop(counted);
    drop(admin);
    sb.stop();
    Ok(table)
}
