//! Observe on MySQL (part of section 1): poolwarden's snapshot against the bare processlist
//! query over the same connection, at 100 and 1,000 real MariaDB threads; then the cost of
//! killing one thread at a time, each re-read first, and the window that leaves.

use std::time::Instant;

use poolwarden::api::Mode;
use poolwarden::database::ConnectOptions;
use poolwarden::database::Engine;
use poolwarden::database::mysql::MySql;
use poolwarden::decide::{self, ClusterView, Inputs, Memory, Rules};
use poolwarden_sandbox::{MariaDb, MariaDbOptions, MySqlSession, MySqlSessionSpec};

use crate::common::*;

async fn open(db: &MariaDb, n: usize) -> Res<Vec<MySqlSession>> {
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let s = db
            .open_session(&MySqlSessionSpec::new("app", "app", "app").program("bench"))
            .await?;
        // One in ten idle in a transaction, the rest idle, as a pool at rest looks.
        if i % 10 == 0 {
            s.begin_idle_in_transaction().await?;
        }
        sessions.push(s);
    }
    Ok(sessions)
}

pub async fn run(cfg: &Config) -> Res<Vec<Table>> {
    let sizes: &[usize] = if cfg.tiny { &[20] } else { &[100, 1000] };
    let runs = if cfg.tiny { 5 } else { 15 };
    let kills = if cfg.tiny { 10 } else { 100 };
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let db = MariaDb::start(MariaDbOptions {
        max_connections: (largest + kills + 50) as u32,
        ..Default::default()
    })
    .await?;
    db.create_database("app").await?;
    db.create_user("app", "app", &["ALL ON app.*"]).await?;
    db.create_user("monitor", "monitor", &["PROCESS, CONNECTION ADMIN ON *.*"])
        .await?;
    let url = db.url("monitor", "monitor", "") + "?ssl-mode=DISABLED";
    let mut my = MySql::connect(&url, ConnectOptions::default()).await?;

    let mut table = Table::new(
        "Observe (MariaDB): poolwarden's snapshot vs the bare processlist query, same connection",
        &["threads", "rows", "bare query ms", "snapshot ms", "ratio"],
    );
    let mut sessions = Vec::new();
    for &size in sizes {
        sessions.extend(open(&db, size - sessions.len()).await?);
        eprintln!("  observe (MariaDB): {size} threads open");
        let mut rows = 0;
        for _ in 0..3 {
            rows = my.observe().await?.sessions.len();
            my.bare_processlist_query().await?;
        }
        let (mut bare, mut ours) = (Vec::new(), Vec::new());
        for r in 0..runs {
            for first_bare in [r % 2 == 0, r % 2 != 0] {
                let t = Instant::now();
                if first_bare {
                    my.bare_processlist_query().await?;
                    bare.push(ms(t));
                } else {
                    my.observe().await?;
                    ours.push(ms(t));
                }
            }
        }
        let (b, o) = (Stats::of(&bare), Stats::of(&ours));
        table.row(vec![
            thousands(size as u64),
            thousands(rows as u64),
            b.show(2),
            o.show(2),
            format!("{:.2}", o.median / b.median),
        ]);
    }
    table.note(format!(
        "MariaDB {} from Debian's mariadb-server, performance_schema off (its default), so the \
         thread list is `information_schema.PROCESSLIST`; threads of user `app` over TCP, 90% \
         idle, 10% idle in a transaction; rows also count poolwarden's own and root's. Bare: \
         `SELECT * FROM information_schema.PROCESSLIST`. Snapshot: one multi-statement round trip \
         (threads, then `INNODB_TRX` matched to them by id, facts, `SHOW GLOBAL STATUS`, `SHOW GRANTS`). \
         {runs} runs each, alternating, after 3 warm-up calls.",
        my.observe().await?.server.version
    ));
    drop(sessions);

    // Kills: `kills` idle threads past the timeout, all condemned in one cycle.
    let victims = open(&db, kills).await?;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let spec = serde_saphyr::from_str(&format!(
        "mode: Enforce\nidle: {{idleTimeout: 300ms, idleInTransactionTimeout: 300ms, \
         maxTerminationsPerCycle: {kills}}}\nscope: {{users: [app]}}\n"
    ))?;
    let rules = Rules::compile(&spec)?;
    let snapshot = my.observe().await?;
    let decision = decide::decide(Inputs {
        snapshot: &snapshot,
        rules: &rules,
        cluster: &ClusterView::default(),
        memory: &Memory::default(),
        poolers: &[],
    });
    assert_eq!(decision.mode, Mode::Enforce);
    let identities: Vec<_> = decision
        .terminate
        .iter()
        .map(|t| t.identity.clone())
        .collect();
    let t = Instant::now();
    let signalled = my.terminate(&identities).await?;
    let total = ms(t);
    let windows: Vec<f64> = my
        .kill_windows()
        .iter()
        .map(|w| w.as_secs_f64() * 1e6)
        .collect();
    let w = Stats::of(&windows);
    let mut act = Table::new(
        "Act (MariaDB): threads killed one at a time, each re-read just before its KILL",
        &[
            "kills",
            "killed",
            "whole call ms",
            "ms per kill",
            "window µs median (min–max)",
        ],
    );
    act.row(vec![
        thousands(identities.len() as u64),
        thousands(signalled.len() as u64),
        format!("{total:.1}"),
        format!("{:.2}", total / identities.len().max(1) as f64),
        w.show(0),
    ]);
    act.note(
        "The window: from sending a thread's verification to the server's answer to its `KILL \
         CONNECTION`, an upper bound of the time in which the thread could have started a \
         statement unseen (two round trips over loopback TCP, the client included). One call, \
         over the monitoring connection.",
    );
    drop(victims);
    drop(my);
    db.stop();
    Ok(vec![table, act])
}
