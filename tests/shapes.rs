//! The leak shapes of the seeds, reproduced with their timing against a real PostgreSQL, and what
//! `poolwarden check --output json` reports for them with a policy of `{}`: nothing but defaults.
//! Each shape asserts the exact finding kind, subject and sessions; the healthy shapes beside
//! them must produce no finding at all.
//!
//! The quick shapes (churn, a full server) run with the rest of `cargo test`. The long ones take
//! the time the defaults need (sessions stranded for more than 30 minutes, a transaction older
//! than 10, idle in a transaction for more than 2): they are `#[ignore]`d here and run by
//! `scripts/test` in the background from the start (`--ignored`), side by side on their own
//! servers in one test, so that the suite waits for the longest wait once. Nothing is faked: the
//! ages are real.

mod support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poolwarden_sandbox::{ClientSession, Sandbox, SandboxOptions};
use serde_json::Value;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;

const BINARY: &str = env!("CARGO_BIN_EXE_poolwarden");

/// `poolwarden check --output json` against `sb` as the monitoring role, with a policy of `{}`.
async fn check_with_defaults(sb: &Sandbox) -> Value {
    check_with_defaults_and(sb, &[]).await
}

/// The same, with more arguments (`--pooler NAME=URL`).
async fn check_with_defaults_and(sb: &Sandbox, more: &[String]) -> Value {
    let policy = sb.dir().join("defaults.yaml");
    std::fs::write(&policy, "{}\n").unwrap();
    let out = tokio::process::Command::new(BINARY)
        .args([
            "check",
            "--output",
            "json",
            "--database-url",
            &monitor_url(sb),
        ])
        .arg("--policy")
        .arg(&policy)
        .args(more)
        .env_remove("POOLWARDEN_DATABASE_URL")
        .env_remove("POOLWARDEN_POOLER_URLS")
        .output()
        .await
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// Prints what `check` reported for a shape, for people reading the log (scripts/test keeps it
/// in target/long-shapes.log).
fn show(shape: &str, report: &Value) {
    eprintln!(
        "shapes: {shape}: check --output json reported findings {:#} with capacity {}",
        report["findings"], report["capacity"]
    );
}

fn findings(report: &Value) -> &Vec<Value> {
    report["findings"].as_array().expect("findings")
}

/// The findings about `application@127.0.0.host`.
fn about<'r>(report: &'r Value, application: &str, host: u8) -> Vec<&'r Value> {
    let address = format!("127.0.0.{host}");
    findings(report)
        .iter()
        .filter(|f| {
            let source = &f["subject"]["source"];
            source["application"] == application && source["address"] == address.as_str()
        })
        .collect()
}

/// The one finding of `kind` about `application@127.0.0.host`.
fn the_finding<'r>(report: &'r Value, kind: &str, application: &str, host: u8) -> &'r Value {
    let found: Vec<&Value> = about(report, application, host)
        .into_iter()
        .filter(|f| f["kind"] == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} about {application}: {:#}",
        report["findings"]
    );
    found[0]
}

fn pids(finding: &Value) -> BTreeSet<i64> {
    finding["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect()
}

/// What a finding says its sessions last ran: (fingerprint, sessions), most common first.
fn last_statements(finding: &Value) -> Vec<(String, u64)> {
    finding["lastStatements"]
        .as_array()
        .unwrap_or_else(|| panic!("no lastStatements: {finding:#}"))
        .iter()
        .map(|g| {
            (
                g["fingerprint"].as_str().unwrap().to_owned(),
                g["sessions"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn pids_of(sessions: &[ClientSession]) -> BTreeSet<i64> {
    sessions.iter().map(ClientSession::pid).collect()
}

async fn open_many(sb: &Sandbox, application: &str, host: u8, n: usize) -> Vec<ClientSession> {
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(open(sb, application, host).await);
    }
    sessions
}

/// Runs `SELECT 1` on `session` every `period`, for ever (until aborted): a session in use.
fn keep_busy(session: ClientSession, period: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            session.touch().await.expect("the busy session works");
            tokio::time::sleep(period).await;
        }
    })
}

/// Waits (up to 10 s) until the server shows no session of role `user`, asking on `session`
/// (on a full server, a connection of its own would take a slot).
async fn no_sessions_of(session: &ClientSession, user: &str) {
    for _ in 0..500 {
        let n: i64 = session
            .client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                &[&user],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        pause(20).await;
    }
    panic!("sessions of {user} are still there");
}

/// Sleeps until `deadline`, saying now and then how long is left (the long shapes wait minutes).
async fn wait_until(deadline: Instant, what: &str) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        eprintln!("shapes: {what}: {}s to go", left.as_secs());
        tokio::time::sleep(left.min(Duration::from_secs(120))).await;
    }
}

// ------------------------------------------------------------------------------------------------
// Quick shapes

/// Seed 002: a NullPool worker opens ~20 sessions a second that live a few milliseconds, next to
/// a long-lived pool that resets (closes all its connections and opens new ones) every 2 s.
#[tokio::test]
async fn nullpool_churn_is_named_on_the_worker_not_on_a_pool_that_reconnects() {
    let sb = Arc::new(sandbox().await);
    let opened: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let churner = {
        let (sb, opened) = (sb.clone(), opened.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                // Open, one statement (the pid), close: a unit of work under NullPool. Each on
                // its own task, so that a slow connection (a busy machine) keeps the rate.
                let (sb, opened) = (sb.clone(), opened.clone());
                tokio::spawn(async move {
                    let session = open(&sb, "celery-worker", 61).await;
                    opened.lock().unwrap().insert(session.pid());
                    drop(session);
                });
            }
        })
    };
    let resetting = {
        let sb = sb.clone();
        tokio::spawn(async move {
            loop {
                let sessions = open_many(&sb, "api", 62, 5).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                drop(sessions);
            }
        })
    };
    // Let the churn run for a few seconds before looking.
    pause(3000).await;

    let first = check_with_defaults(&sb).await;
    let second = check_with_defaults(&sb).await;
    show("churn", &second);
    churner.abort();
    resetting.abort();

    let opened = opened.lock().unwrap().clone();
    for report in [&first, &second] {
        let rate = report["capacity"]["newSessionsPerSecond"]
            .as_f64()
            .expect("measured");
        assert!(rate > 10.0, "{rate}");
        let f = the_finding(report, "ConnectionChurn", "celery-worker", 61);
        let seen = pids(f);
        assert!(!seen.is_empty(), "{f:#}");
        assert!(seen.is_subset(&opened), "{seen:?} not all the worker's");
        assert_eq!(f["sessions"].as_u64(), Some(seen.len() as u64));
        assert!(
            about(report, "api", 62).is_empty(),
            "the reconnecting pool is not churn: {:#}",
            report["findings"]
        );
        assert!(
            !findings(report)
                .iter()
                .any(|f| f["kind"] == "ConnectionChurn" && f["subject"]["type"] == "server"),
            "{:#}",
            report["findings"]
        );
    }
}

/// Seed 003: a server filled to its last usable slot. `check` names the top holders; a new
/// connection is refused with advice for this server's version; `run` waits for a slot, saying
/// so each time, instead of giving up.
#[tokio::test]
async fn a_full_server_is_server_saturation_and_run_waits_for_a_slot() {
    // 20 slots, 3 reserved for superusers: 17 for applications and poolwarden.
    let sb = sandbox_with(SandboxOptions {
        max_connections: 20,
        ..SandboxOptions::default()
    })
    .await;
    let mut pinned = open_many(&sb, "reports-api", 71, 10).await;
    for s in &pinned {
        s.begin_idle_in_transaction().await.unwrap();
    }
    let idle = open_many(&sb, "vabhub-api", 72, 6).await;

    // The 17th slot is poolwarden's own.
    let report = check_with_defaults(&sb).await;
    show("full server", &report);
    let f = findings(&report)
        .iter()
        .find(|f| f["kind"] == "ServerSaturation")
        .unwrap_or_else(|| panic!("{:#}", report["findings"]));
    assert_eq!(f["subject"]["type"], "server");
    assert_eq!(f["sessions"], 17);
    assert_eq!(
        f["evidence"],
        "17 of the 17 connections the server accepts from applications are in use (100%); top \
         holders: reports-api@127.0.0.71 10 (10 idle in transaction); vabhub-api@127.0.0.72 6 \
         (6 idle)"
    );
    assert_eq!(report["capacity"]["utilizationPercent"], 100);

    // Full now: one more application session takes the last slot, once check's own session has
    // left (its backend exits a moment after the command does).
    no_sessions_of(&idle[0], "monitor").await;
    let last = open(&sb, "vabhub-api", 72).await;
    let refused = tokio::process::Command::new(BINARY)
        .args(["check", "--database-url", &monitor_url(&sb), "--policy"])
        .arg(sb.dir().join("defaults.yaml"))
        .output()
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("the server is full"), "{err}");
    // PostgreSQL 15 and older have no pg_use_reserved_connections: the advice says what works.
    assert!(
        err.contains("CONNECTION LIMIT") && err.contains("keep poolwarden connected"),
        "{err}"
    );

    let mut run = tokio::process::Command::new(BINARY)
        .args(["run", "--interval", "1s", "--cycles", "1"])
        .args(["--database-url", &monitor_url(&sb), "--policy"])
        .arg(sb.dir().join("defaults.yaml"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(run.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    while said.len() < 2 {
        let line = lines.next_line().await.unwrap().expect("run keeps going");
        if line.contains("the server is full") {
            said.push(line);
        }
    }
    assert!(said[0].starts_with("attempt 1: "), "{said:?}");
    assert!(said[1].starts_with("attempt 2: "), "{said:?}");
    // A slot frees up: run gets in and does its cycle.
    drop(last);
    pinned.pop();
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(line);
    }
    let status = run.wait().await.unwrap();
    assert!(status.success(), "{rest:?}");
    let text = rest.join("\n");
    assert!(text.contains("connected after"), "{text}");
    assert!(text.contains("done: 1 cycle"), "{text}");
    drop(idle);
}

// ------------------------------------------------------------------------------------------------
// Long shapes: all in one test, side by side, each on its own server.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real ages of 30 minutes: scripts/test runs it in the background (--ignored)"]
async fn long_shapes_with_the_default_policy() {
    let shapes = [
        tokio::spawn(stranded_sessions_beside_healthy_pools()),
        tokio::spawn(transactions_held_open_and_touched()),
        tokio::spawn(a_pool_pinned_idle_in_transaction()),
        tokio::spawn(stranded_behind_a_transaction_pooler()),
        tokio::spawn(a_pinned_pool_replaced_at_each_garbage_collection()),
        tokio::spawn(a_pinned_pool_replaced_at_each_garbage_collection_on_mariadb()),
        tokio::spawn(two_churners_each_over_the_threshold()),
    ];
    let mut failed = Vec::new();
    for (name, shape) in [
        "stranded",
        "long transactions",
        "pinned pool",
        "stranded behind a pooler",
        "pinned pool replaced (PostgreSQL)",
        "pinned pool replaced (MariaDB)",
        "two churners",
    ]
    .into_iter()
    .zip(shapes)
    {
        if let Err(e) = shape.await {
            failed.push(format!("{name}: {e}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Seed 000 beside three healthy shapes on one server, looked at once every stranded session is
/// idle for longer than the 30 minutes the defaults allow:
/// - fork leak (127.0.0.21): the parent's session busy every second, one session per forked
///   worker (4) idle without limit: `IdleAccumulation` on exactly those four;
/// - LIFO pool (127.0.0.22, HikariCP-like): 10 connections, 2 busy, 8 spares idle until
///   `maxLifetime` (30 minutes, less up to 2.5% at random) replaces them: nothing;
/// - a pool that recycles its connections (127.0.0.23): every 10 minutes: nothing;
/// - an application idle as a whole (127.0.0.24): 5 sessions, none used: nothing.
async fn stranded_sessions_beside_healthy_pools() {
    let sb = Arc::new(sandbox().await);
    let began = Instant::now();

    app_admin(&sb)
        .await
        .batch_execute(
            "CREATE TABLE pfs_visit (pfs_visit_id int PRIMARY KEY, pfs_visit_description text);
             GRANT SELECT ON pfs_visit TO app;",
        )
        .await
        .unwrap();
    let parent = open(&sb, "obslog-api", 21).await;
    // Each forked worker's last query before its pool was left behind: the FITS lookup.
    let workers = open_many(&sb, "obslog-api", 21, 4).await;
    for (i, w) in workers.iter().enumerate() {
        w.client()
            .simple_query(&format!(
                "SELECT pfs_visit.pfs_visit_id, pfs_visit.pfs_visit_description FROM pfs_visit \
                 WHERE pfs_visit.pfs_visit_id = {}",
                120_000 + i
            ))
            .await
            .unwrap();
    }
    let stranded_since = Instant::now();
    let parent = keep_busy(parent, Duration::from_secs(1));

    // Each connection of the LIFO pool lives maxLifetime less a random variance, then is
    // replaced; the two busy slots keep working on theirs.
    let lifo: Vec<JoinHandle<()>> = (0..10u64)
        .map(|slot| {
            let sb = sb.clone();
            tokio::spawn(async move {
                let mut round = 0u64;
                loop {
                    let session = open(&sb, "orders-hikari", 22).await;
                    let variance = Duration::from_millis((slot * 7919 + round * 104_729) % 45_000);
                    let lifetime = Duration::from_secs(30 * 60) - variance;
                    let retire = Instant::now() + lifetime;
                    if slot < 2 {
                        while Instant::now() < retire {
                            session.touch().await.expect("busy slot");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    } else {
                        tokio::time::sleep_until(retire.into()).await;
                    }
                    drop(session);
                    round += 1;
                }
            })
        })
        .collect();

    // A pool that closes each connection after 10 minutes and opens another; one is in use.
    let recycling: Vec<JoinHandle<()>> = (0..5u64)
        .map(|slot| {
            let sb = sb.clone();
            tokio::spawn(async move {
                loop {
                    let session = open(&sb, "billing", 23).await;
                    let retire = Instant::now() + Duration::from_secs(10 * 60 - slot * 60);
                    while Instant::now() < retire {
                        if slot == 0 {
                            session.touch().await.expect("recycling pool");
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            })
        })
        .collect();

    let at_rest = open_many(&sb, "nightly-batch", 24, 5).await;

    // Stranded: idle for more than 30 minutes (the second oldest must be past it too).
    wait_until(
        stranded_since + Duration::from_secs(30 * 60 + 20),
        "stranded sessions",
    )
    .await;
    let report = check_with_defaults(&sb).await;
    show("stranded", &report);
    parent.abort();
    for t in lifo.iter().chain(&recycling) {
        t.abort();
    }

    let f = the_finding(&report, "IdleAccumulation", "obslog-api", 21);
    assert_eq!(pids(f), pids_of(&workers), "{f:#}");
    assert_eq!(f["sessions"], 4);
    assert_eq!(
        last_statements(f),
        [(
            "SELECT pfs_visit.pfs_visit_id, pfs_visit.pfs_visit_description FROM pfs_visit \
             WHERE pfs_visit.pfs_visit_id = ?"
                .to_owned(),
            4
        )]
    );
    assert_eq!(
        f["confirmed"], false,
        "suspected: held for seconds of the window"
    );
    assert!(f["confirmsInSeconds"].as_f64().unwrap() > 500.0, "{f:#}");
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .starts_with("4 sessions stranded idle for more than 30m00s on 127.0.0.21, which keeps using 1 other session"),
        "{f:#}"
    );
    assert_eq!(
        about(&report, "obslog-api", 21).len(),
        1,
        "{:#}",
        report["findings"]
    );
    for (app, host) in [
        ("orders-hikari", 22),
        ("billing", 23),
        ("nightly-batch", 24),
    ] {
        assert!(
            about(&report, app, host).is_empty(),
            "healthy {app}: {:#}",
            report["findings"]
        );
    }
    assert!(findings(&report).len() == 1, "{:#}", report["findings"]);
    eprintln!(
        "shapes: stranded: done after {}s",
        began.elapsed().as_secs()
    );
    drop(at_rest);
}

/// Seed 003: three services each hold one transaction open for ever (they wrote, so it has an
/// xid) and touch it every 3 s; one of them holds a row lock another session waits on. Beside
/// them, a healthy service runs short transactions every second.
async fn transactions_held_open_and_touched() {
    let sb = sandbox().await;
    let db = app_admin(&sb).await;
    db.batch_execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, touched timestamptz);
             INSERT INTO accounts SELECT g, now() FROM generate_series(1, 10) g;
             GRANT SELECT, UPDATE ON accounts TO app;",
    )
    .await
    .unwrap();

    let services = open_many(&sb, "vabhub-services", 41, 3).await;
    for (i, s) in services.iter().enumerate() {
        s.client()
            .batch_execute(&format!(
                "BEGIN; UPDATE accounts SET touched = now() WHERE id = {}",
                i + 1
            ))
            .await
            .unwrap();
    }
    let opened = Instant::now();
    let pids = pids_of(&services);
    // Each service touches its transaction every 3 s with the statement its code runs.
    let touching: Vec<JoinHandle<()>> = services
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(async move {
                loop {
                    s.client()
                        .simple_query(&format!(
                            "UPDATE accounts SET touched = now() WHERE id = {}",
                            i + 1
                        ))
                        .await
                        .expect("the service works");
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            })
        })
        .collect();
    let healthy = open(&sb, "storefront", 42).await;
    let healthy = tokio::spawn(async move {
        loop {
            healthy
                .client()
                .batch_execute("BEGIN; SELECT count(*) FROM accounts; COMMIT")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    // A minute before looking, another session waits on service 1's row.
    wait_until(opened + Duration::from_secs(9 * 60), "long transactions").await;
    let waiter = open(&sb, "reports", 43).await;
    let waiter_pid = waiter.pid();
    let waiting = tokio::spawn(async move {
        let _ = waiter
            .client()
            .batch_execute("UPDATE accounts SET touched = now() WHERE id = 1")
            .await;
    });
    sb.wait_for_state(waiter_pid, "active", Duration::from_secs(10))
        .await
        .unwrap();

    wait_until(
        opened + Duration::from_secs(10 * 60 + 20),
        "long transactions",
    )
    .await;
    let report = check_with_defaults(&sb).await;
    show("long transactions", &report);
    for t in &touching {
        t.abort();
    }
    healthy.abort();
    waiting.abort();

    let f = the_finding(&report, "LongTransaction", "vabhub-services", 41);
    assert_eq!(self::pids(f), pids, "{f:#}");
    assert_eq!(f["sessions"], 3);
    assert_eq!(
        last_statements(f),
        [(
            "UPDATE accounts SET touched = now() WHERE id = ?".to_owned(),
            3
        )]
    );
    let evidence = f["evidence"].as_str().unwrap();
    assert!(
        evidence.starts_with("3 transactions open for more than 10m00s (oldest 10m"),
        "{evidence}"
    );
    assert!(evidence.contains("oldest xmin held: "), "{evidence}");
    assert!(
        evidence.contains("1 session waiting on their locks"),
        "{evidence}"
    );
    // Touched every 3 s: never idle in a transaction for long.
    assert_eq!(about(&report, "vabhub-services", 41).len(), 1);
    for (app, host) in [("storefront", 42), ("reports", 43)] {
        assert!(
            about(&report, app, host).is_empty(),
            "{app}: {:#}",
            report["findings"]
        );
    }
}

/// Seed 001: a pool of `pool_size = 10, max_overflow = 15` pinned at its 25 connections, every
/// one idle in a transaction: `IdleInTransaction` on all 25 after the 2 minutes the defaults
/// allow, called a pinned pool, and `PoolSaturation` for the pinned pool itself.
async fn a_pool_pinned_idle_in_transaction() {
    let sb = sandbox().await;
    app_admin(&sb)
        .await
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, name text);
             INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 25) g;
             GRANT SELECT ON users TO app;",
        )
        .await
        .unwrap();
    let pinned = open_many(&sb, "reports-api", 51, 25).await;
    // The request's session, handed to a background task: `db_session.query(User)` by id, in a
    // transaction nobody ends.
    for (i, s) in pinned.iter().enumerate() {
        s.client()
            .simple_query(&format!(
                "BEGIN; SELECT users.id, users.name FROM users WHERE users.id = {}",
                i + 1
            ))
            .await
            .unwrap();
    }
    let since = Instant::now();
    let healthy = keep_busy(open(&sb, "storefront", 52).await, Duration::from_secs(1));

    wait_until(since + Duration::from_secs(2 * 60 + 15), "pinned pool").await;
    let report = check_with_defaults(&sb).await;
    show("pinned pool", &report);
    healthy.abort();

    let f = the_finding(&report, "IdleInTransaction", "reports-api", 51);
    assert_eq!(pids(f), pids_of(&pinned));
    assert_eq!(f["sessions"], 25);
    assert_eq!(
        last_statements(f),
        [(
            "BEGIN; SELECT users.id, users.name FROM users WHERE users.id = ?".to_owned(),
            25
        )]
    );
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .contains("every one of the 25 sessions of 127.0.0.51 is idle in a transaction: its pool is pinned"),
        "{f:#}"
    );
    assert!(
        f["cause"]
            .as_str()
            .unwrap()
            .contains("its pool still counts them as checked out"),
        "{f:#}"
    );
    assert!(
        about(&report, "storefront", 52).is_empty(),
        "{:#}",
        report["findings"]
    );
    // No budget is set: every session idle in a transaction at a steady count is a pinned pool
    // all the same, suspected until it has held for the window.
    let f = the_finding(&report, "PoolSaturation", "reports-api", 51);
    assert_eq!(pids(f), pids_of(&pinned));
    assert_eq!(
        f["summary"],
        "127.0.0.51 holds 25 sessions, every one idle in a transaction: its pool is pinned"
    );
    assert_eq!(f["confirmed"], false, "{f:#}");
    assert_eq!(about(&report, "reports-api", 51).len(), 2);
}

/// Seed 000 behind a PgBouncer in transaction pooling, with the default policy and the pooler
/// given by `--pooler`: the forked workers' connections are only the pooler's clients (no server
/// session between transactions), idle for more than the 30 minutes the defaults allow by the
/// pooler's own clock, while the parent (127.0.0.25) queries every second. `IdleAccumulation`
/// names those four clients, with no pid. Beside it, through the same pooler, a LIFO pool
/// (127.0.0.26, HikariCP-like: 10 connections, 2 busy every second with short transactions, the
/// spares replaced at `maxLifetime`, 30 minutes less up to 2.5%) is named by nothing.
async fn stranded_behind_a_transaction_pooler() {
    let sb = sandbox().await;
    let pooler = Arc::new(transaction_pooler(&sb, 5).await);
    let began = Instant::now();
    let shared = pooler.clone();
    let through = move |application: &'static str, host: u8| {
        let pooler = shared.clone();
        async move { through_pooler(&pooler, application, host).await }
    };
    let parent = through("obslog-api", 25).await;
    let mut workers = Vec::new();
    for _ in 0..4 {
        let worker = through("obslog-api", 25).await;
        worker.touch().await.unwrap();
        workers.push(worker);
    }
    let stranded_since = Instant::now();
    let parent = tokio::spawn(async move {
        loop {
            parent.touch().await.expect("the parent works");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let lifo: Vec<JoinHandle<()>> = (0..10u64)
        .map(|slot| {
            let through = through.clone();
            tokio::spawn(async move {
                let mut round = 0u64;
                loop {
                    let client = through("orders-hikari", 26).await;
                    let variance = Duration::from_millis((slot * 7919 + round * 104_729) % 45_000);
                    let retire = Instant::now() + Duration::from_secs(30 * 60) - variance;
                    if slot < 2 {
                        while Instant::now() < retire {
                            client
                                .client()
                                .batch_execute("BEGIN; SELECT 1; COMMIT")
                                .await
                                .expect("busy slot");
                            tokio::time::sleep(Duration::from_millis(1000)).await;
                        }
                    } else {
                        tokio::time::sleep_until(retire.into()).await;
                    }
                    drop(client);
                    round += 1;
                }
            })
        })
        .collect();

    wait_until(
        stranded_since + Duration::from_secs(30 * 60 + 20),
        "stranded behind a pooler",
    )
    .await;
    let report = check_with_defaults_and(
        &sb,
        &[
            "--pooler".to_owned(),
            format!("pgbouncer={}?sslmode=disable", pooler.stats_url()),
        ],
    )
    .await;
    show("stranded behind a pooler", &report);
    parent.abort();
    for t in &lifo {
        t.abort();
    }

    let f = the_finding(&report, "IdleAccumulation", "obslog-api", 25);
    assert_eq!(f["sessions"], 4, "{f:#}");
    assert_eq!(f["pids"], serde_json::json!([]), "{f:#}");
    let mut ports: Vec<u64> = f["poolerClients"]
        .as_array()
        .unwrap_or_else(|| panic!("{f:#}"))
        .iter()
        .map(|c| c["port"].as_u64().unwrap())
        .collect();
    ports.sort_unstable();
    let mut expected: Vec<u64> = workers
        .iter()
        .map(|w| u64::from(w.local_addr().port()))
        .collect();
    expected.sort_unstable();
    assert_eq!(ports, expected, "{f:#}");
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .starts_with("4 connections stranded idle for more than 30m00s on 127.0.0.25, which keeps using 1 other connection"),
        "{f:#}"
    );
    assert!(
        about(&report, "orders-hikari", 26).is_empty(),
        "healthy LIFO pool: {:#}",
        report["findings"]
    );
    assert!(findings(&report).len() == 1, "{:#}", report["findings"]);
    eprintln!(
        "shapes: stranded behind a pooler: done after {}s",
        began.elapsed().as_secs()
    );
}

// ------------------------------------------------------------------------------------------------
// Long shapes watched by `run`, cycle by cycle

/// The default interval of a policy of `{}`.
const INTERVAL: Duration = Duration::from_secs(30);
/// The default window and idle-in-transaction age.
const WINDOW: Duration = Duration::from_secs(10 * 60);
const IDLE_IN_TRANSACTION_AGE: Duration = Duration::from_secs(2 * 60);

/// `poolwarden run --output json` on `url` with a policy of `{}` for `duration`: every report it
/// printed, one JSON document a line, in order.
async fn run_with_defaults_for(url: &str, dir: &std::path::Path, duration: Duration) -> Vec<Value> {
    let policy = dir.join("defaults.yaml");
    std::fs::write(&policy, "{}\n").unwrap();
    let mut run = tokio::process::Command::new(BINARY)
        .args(["run", "--output", "json", "--database-url", url, "--policy"])
        .arg(&policy)
        .env_remove("POOLWARDEN_DATABASE_URL")
        .env_remove("POOLWARDEN_POOLER_URLS")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let mut lines = BufReader::new(run.stdout.take().unwrap()).lines();
    let mut reports = Vec::new();
    let until = tokio::time::Instant::now() + duration;
    while let Ok(line) = tokio::time::timeout_at(until, lines.next_line()).await {
        let line = line.unwrap().expect("run keeps going");
        reports.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
    }
    run.kill().await.unwrap();
    reports
}

/// Seconds since the first report, by the database's clock.
fn seconds_since_first(reports: &[Value], report: &Value) -> f64 {
    let at = |r: &Value| -> jiff::Timestamp { r["observedAt"].as_str().unwrap().parse().unwrap() };
    (at(report) - at(&reports[0]))
        .total(jiff::Unit::Second)
        .unwrap()
}

/// The report's findings of `kind` about a source at `127.0.0.host`.
fn of_kind_about<'r>(report: &'r Value, kind: &str, host: u8) -> Vec<&'r Value> {
    let address = format!("127.0.0.{host}");
    findings(report)
        .iter()
        .filter(|f| f["kind"] == kind && f["subject"]["source"]["address"] == address.as_str())
        .collect()
}

/// Checks, report by report, that a finding of `kind` about `host` is confirmed within
/// `within` of the first report and stays confirmed in every report after that, started once;
/// returns when it was confirmed (seconds after the first report).
fn confirmed_within_and_kept(reports: &[Value], kind: &str, host: u8, within: Duration) -> f64 {
    let first = reports
        .iter()
        .position(|r| {
            of_kind_about(r, kind, host)
                .iter()
                .any(|f| f["confirmed"] == true)
        })
        .unwrap_or_else(|| panic!("{kind} about 127.0.0.{host} never confirmed"));
    let at = seconds_since_first(reports, &reports[first]);
    assert!(
        at <= within.as_secs_f64(),
        "{kind} about 127.0.0.{host} confirmed {at:.0}s after the first look, not within {}s",
        within.as_secs()
    );
    for (i, r) in reports.iter().enumerate().skip(first) {
        let found = of_kind_about(r, kind, host);
        assert!(
            found.len() == 1 && found[0]["confirmed"] == true,
            "{kind} about 127.0.0.{host} at {:.0}s: {found:#?}",
            seconds_since_first(reports, r)
        );
        assert_eq!(found[0]["started"], i == first, "{kind} started once");
    }
    at
}

/// Asserts that no report names anything but the sources at `leaky` hosts.
fn nothing_but(reports: &[Value], leaky: &[u8]) {
    let leaky: Vec<String> = leaky.iter().map(|h| format!("127.0.0.{h}")).collect();
    for r in reports {
        for f in findings(r) {
            let address = f["subject"]["source"]["address"]
                .as_str()
                .unwrap_or_default();
            assert!(
                leaky.iter().any(|a| a == address),
                "{} on a healthy source at {:.0}s: {f:#}",
                f["kind"],
                seconds_since_first(reports, r)
            );
        }
    }
}

/// Seed 001 as it really runs (FastAPI `BackgroundTasks` handed the request's session;
/// `pool_size=10, max_overflow=15`): the pool of orders-api (127.0.0.56) is pinned at 25 sessions
/// idle in a transaction; every 8 minutes a full garbage collection returns all 25 and waiting
/// background tasks pin 25 new ones within a second. Beside it, storefront (127.0.0.57: 5
/// sessions running short transactions, a statement, 100 ms of work, commit) and reports
/// (127.0.0.58: 2 workers whose transactions wait 3 s for an HTTP call). `run` with a policy of
/// `{}` for 18.5 minutes, through two replacements: `PoolSaturation` (the pinned pool) confirms
/// within window + 2 intervals, `IdleInTransaction` within window + idleInTransactionAge + 2
/// intervals, both stay confirmed through the replacement at 16 minutes, the sessions they name
/// are always the pool's, and nothing is named on the neighbours.
async fn a_pinned_pool_replaced_at_each_garbage_collection() {
    let sb = Arc::new(sandbox().await);
    let pool_pids: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let pool = {
        let (sb, pool_pids) = (sb.clone(), pool_pids.clone());
        tokio::spawn(async move {
            loop {
                let pinned = futures::future::join_all((0..25).map(|_| async {
                    let s = open(&sb, "orders-api", 56).await;
                    s.begin_idle_in_transaction().await.unwrap();
                    s
                }))
                .await;
                pool_pids
                    .lock()
                    .unwrap()
                    .extend(pinned.iter().map(ClientSession::pid));
                tokio::time::sleep(Duration::from_secs(8 * 60)).await;
                drop(pinned);
            }
        })
    };
    let storefront: Vec<JoinHandle<()>> = (0..5)
        .map(|_| {
            let sb = sb.clone();
            tokio::spawn(async move {
                let s = open(&sb, "storefront", 57).await;
                loop {
                    s.client().batch_execute("BEGIN; SELECT 1").await.unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    s.client().batch_execute("COMMIT").await.unwrap();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            })
        })
        .collect();
    let reports_workers: Vec<JoinHandle<()>> = (0..2)
        .map(|_| {
            let sb = sb.clone();
            tokio::spawn(async move {
                let s = open(&sb, "reports", 58).await;
                loop {
                    s.client().batch_execute("BEGIN; SELECT 1").await.unwrap();
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    s.client().batch_execute("COMMIT").await.unwrap();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        })
        .collect();
    pause(2000).await;

    let reports = run_with_defaults_for(
        &monitor_url(&sb),
        sb.dir(),
        Duration::from_secs(18 * 60 + 30),
    )
    .await;
    pool.abort();
    for t in storefront.iter().chain(&reports_workers) {
        t.abort();
    }
    judge_pinned_pool_replaced("PostgreSQL", &reports, 56, &pool_pids.lock().unwrap());
}

/// What both engines' pinned pool must show (see [`a_pinned_pool_replaced_at_each_garbage_collection`]).
fn judge_pinned_pool_replaced(engine: &str, reports: &[Value], host: u8, pool: &BTreeSet<i64>) {
    eprintln!(
        "shapes: pinned pool replaced ({engine}): {} cycles over {:.0}s",
        reports.len(),
        seconds_since_first(reports, reports.last().unwrap())
    );
    let pinned = confirmed_within_and_kept(reports, "PoolSaturation", host, WINDOW + 2 * INTERVAL);
    let in_tx = confirmed_within_and_kept(
        reports,
        "IdleInTransaction",
        host,
        WINDOW + IDLE_IN_TRANSACTION_AGE + 2 * INTERVAL,
    );
    eprintln!(
        "shapes: pinned pool replaced ({engine}): PoolSaturation confirmed after {pinned:.0}s, \
         IdleInTransaction after {in_tx:.0}s, both kept through {:.0}s",
        seconds_since_first(reports, reports.last().unwrap())
    );
    for r in reports {
        for f in of_kind_about(r, "IdleInTransaction", host)
            .into_iter()
            .chain(of_kind_about(r, "PoolSaturation", host))
            .filter(|f| f["present"] == true)
        {
            assert!(pids(f).is_subset(pool), "the pool's sessions: {f:#}");
        }
    }
    nothing_but(reports, &[host]);
}

/// [`a_pinned_pool_replaced_at_each_garbage_collection`] on MariaDB, through its processlist:
/// orders-api at 127.0.0.66, a busy neighbour (storefront, 127.0.0.67) touched every second.
async fn a_pinned_pool_replaced_at_each_garbage_collection_on_mariadb() {
    let db = Arc::new(support::mariadb::server().await);
    let pool_ids: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let pool = {
        let (db, pool_ids) = (db.clone(), pool_ids.clone());
        tokio::spawn(async move {
            loop {
                let pinned = futures::future::join_all((0..25).map(|_| async {
                    let s = support::mariadb::open(&db, "orders-api", 66).await;
                    s.begin_idle_in_transaction().await.unwrap();
                    s
                }))
                .await;
                pool_ids
                    .lock()
                    .unwrap()
                    .extend(pinned.iter().map(poolwarden_sandbox::MySqlSession::id));
                tokio::time::sleep(Duration::from_secs(8 * 60)).await;
                drop(pinned);
            }
        })
    };
    let busy = {
        let db = db.clone();
        tokio::spawn(async move {
            let s = support::mariadb::open(&db, "storefront", 67).await;
            loop {
                s.touch().await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    pause(2000).await;

    let reports = run_with_defaults_for(
        &support::mariadb::monitor_url(&db),
        db.dir(),
        Duration::from_secs(18 * 60 + 30),
    )
    .await;
    pool.abort();
    busy.abort();
    judge_pinned_pool_replaced("MariaDB", &reports, 66, &pool_ids.lock().unwrap());
}

/// Two NullPool workers (seed 002), 12 and 30 new sessions a second (each alone over the
/// default threshold of 10), each session living a statement; beside them a pool of 5 that keeps
/// its sessions (127.0.0.63). `run` with a policy of `{}` for 11.5 minutes: both workers are
/// named, and confirmed within window + 2 intervals; the pool is named by nothing.
async fn two_churners_each_over_the_threshold() {
    let sb = Arc::new(sandbox().await);
    let opened: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let churner = |host: u8, per_second: u64| {
        let (sb, opened) = (sb.clone(), opened.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_second));
            loop {
                tick.tick().await;
                let (sb, opened) = (sb.clone(), opened.clone());
                tokio::spawn(async move {
                    let session = open(&sb, "celery-worker", host).await;
                    opened.lock().unwrap().insert(session.pid());
                    drop(session);
                });
            }
        })
    };
    let slow = churner(61, 12);
    let fast = churner(62, 30);
    let pool = open_many(&sb, "api", 63, 5).await;
    let pool: Vec<JoinHandle<()>> = pool
        .into_iter()
        .map(|s| keep_busy(s, Duration::from_secs(1)))
        .collect();
    pause(3000).await;

    let reports = run_with_defaults_for(
        &monitor_url(&sb),
        sb.dir(),
        Duration::from_secs(11 * 60 + 30),
    )
    .await;
    slow.abort();
    fast.abort();
    for t in &pool {
        t.abort();
    }
    let rates: Vec<f64> = reports
        .iter()
        .filter_map(|r| r["capacity"]["newSessionsPerSecond"].as_f64())
        .collect();
    eprintln!(
        "shapes: two churners: {} cycles, new sessions/s {:.0} to {:.0}",
        reports.len(),
        rates.iter().cloned().fold(f64::MAX, f64::min),
        rates.iter().cloned().fold(0.0, f64::max)
    );
    for host in [61, 62] {
        let at =
            confirmed_within_and_kept(&reports, "ConnectionChurn", host, WINDOW + 2 * INTERVAL);
        let named = reports
            .iter()
            .filter(|r| !of_kind_about(r, "ConnectionChurn", host).is_empty())
            .count();
        eprintln!(
            "shapes: two churners: 127.0.0.{host} named in {named} of {} cycles, confirmed after \
             {at:.0}s",
            reports.len()
        );
    }
    let opened = opened.lock().unwrap().clone();
    for r in &reports {
        for host in [61, 62] {
            for f in of_kind_about(r, "ConnectionChurn", host) {
                assert!(pids(f).is_subset(&opened), "the workers' sessions: {f:#}");
            }
        }
    }
    nothing_but(&reports, &[61, 62]);
}
