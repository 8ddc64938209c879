//! What the MySQL engine does its own way, against a real MariaDB the test starts itself (the
//! rules both engines keep are in [`contract`](super::contract)): no conditional kill, connection
//! attributes only with performance_schema, grants, churn from a counter, seed 001.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::mariadb::{alive, gone, monitor_url, open, server, server_with};
use crate::support::{APP_DB, pause, rules};
use poolwarden::cycle::{Cycle, Pass};
use poolwarden::database::ConnectOptions;
use poolwarden::database::mysql::MySql;
use poolwarden::database::{DatabaseError, Engine, Flavour, Protection, SessionState, Verdict};
use poolwarden::decide::{self, ClusterView, FindingKind, Memory, Rules};
use poolwarden_sandbox::{MariaDb, MariaDbOptions, MySqlSession, MySqlSessionSpec};

const QUICK_IDLE: &str = "
mode: Enforce
idle: {idleTimeout: 300ms, idleInTransactionTimeout: 300ms}
";

async fn connect(url: &str) -> MySql {
    MySql::connect(url, ConnectOptions::default())
        .await
        .expect("monitoring connection")
}

async fn run_cycle(engine: &mut MySql, rules: &Rules) -> Cycle {
    Pass::new(rules, &ClusterView::default(), &Memory::default())
        .run(engine)
        .await
        .expect("cycle runs")
}

fn ended(c: &Cycle) -> Vec<i64> {
    c.outcome
        .terminated
        .iter()
        .map(|t| t.identity.pid)
        .collect()
}

/// MySQL has no conditional kill: each thread is re-read right before its own `KILL`, and the
/// window between the two is measured (the contract's tests check what is killed).
#[tokio::test]
async fn each_kill_leaves_its_verdict_and_its_measured_window() {
    let db = server().await;
    let leaked = open(&db, "worker", 11).await;
    pause(600).await;

    let mut my = connect(&monitor_url(&db)).await;
    let c = run_cycle(&mut my, &rules(QUICK_IDLE)).await;
    assert_eq!(ended(&c), vec![leaked.id()]);
    assert_eq!(my.last_fates(), [Verdict::Signalled]);
    assert_eq!(my.kill_windows().len(), 1);
    assert!(gone(&db, leaked.id()).await);
}

#[tokio::test]
async fn poolwarden_never_kills_its_own_thread_or_another_poolwardens() {
    let db = server_with(MariaDbOptions {
        performance_schema: true,
        ..Default::default()
    })
    .await;
    // Another poolwarden's monitoring connection, idle between its cycles, as user `app`.
    let other = open(&db, "poolwarden", 15).await;
    let leaked = open(&db, "worker", 16).await;
    pause(600).await;

    let mut my = connect(&monitor_url(&db)).await;
    let first = run_cycle(&mut my, &rules(QUICK_IDLE)).await;
    pause(600).await;
    // Our own connection is idle between cycles now, for longer than the timeout.
    let second = run_cycle(&mut my, &rules(QUICK_IDLE)).await;

    assert_eq!(ended(&first), vec![leaked.id()]);
    assert!(second.outcome.terminated.is_empty());
    assert!(other.is_alive().await);
    assert!(second.snapshot.application_names_known);
    assert_eq!(
        second.decision.out_of_scope[&decide::Exclusion::OwnSession],
        1
    );
    assert_eq!(
        second.decision.out_of_scope[&decide::Exclusion::PoolwardenSession],
        1
    );

    // Even handed the identities directly, the engine re-checks and refuses both.
    let snapshot = my.observe().await.unwrap();
    let identities: Vec<_> = snapshot
        .sessions
        .iter()
        .filter(|s| s.pid == other.id() || s.pid == snapshot.own_pid)
        .filter_map(|s| s.identity())
        .collect();
    assert_eq!(identities.len(), 2);
    let verdicts = my.terminate(&identities).await.unwrap();
    assert_eq!(verdicts, [Verdict::Changed, Verdict::Changed]);
    assert_eq!(my.last_fates(), verdicts);
    assert!(other.is_alive().await);
}

#[tokio::test]
async fn without_performance_schema_the_monitoring_users_threads_are_spared() {
    let db = server().await;
    // Another poolwarden, as the monitoring user: without connection attributes its name is
    // invisible, so its user is all there is to go by.
    let other = db
        .open_session(&MySqlSessionSpec::new("monitor", "monitor", "").program("poolwarden"))
        .await
        .unwrap();
    let leaked = open(&db, "worker", 11).await;
    pause(600).await;

    let mut my = connect(&monitor_url(&db)).await;
    let c = run_cycle(&mut my, &rules(QUICK_IDLE)).await;

    assert!(!c.snapshot.application_names_known);
    assert_eq!(ended(&c), vec![leaked.id()]);
    assert_eq!(
        c.decision.out_of_scope[&decide::Exclusion::PoolwardenSession],
        1
    );
    assert!(
        c.decision
            .warnings
            .iter()
            .any(|w| w.contains("performance_schema is off")),
        "{:?}",
        c.decision.warnings
    );
    assert!(other.is_alive().await);
}

#[tokio::test]
async fn a_thread_gone_or_in_a_new_transaction_is_never_killed() {
    let db = server().await;
    let s = open(&db, "worker", 11).await;
    s.begin_idle_in_transaction().await.unwrap();
    pause(600).await;
    let mut my = connect(&monitor_url(&db)).await;
    let snapshot = my.observe().await.unwrap();
    let mut identity = snapshot
        .sessions
        .iter()
        .find(|x| x.pid == s.id())
        .and_then(|x| x.identity())
        .unwrap();
    // Another transaction than the one judged.
    identity.xact_start = identity
        .xact_start
        .map(|t| t - jiff::SignedDuration::from_secs(30));
    let verdicts = my.terminate(&[identity.clone()]).await.unwrap();
    assert_eq!(verdicts, [Verdict::Changed]);
    assert_eq!(my.last_fates(), verdicts);
    // A thread id that is not there.
    identity.pid += 1000;
    let verdicts = my.terminate(&[identity]).await.unwrap();
    assert_eq!(verdicts, [Verdict::Gone]);
    assert_eq!(my.last_fates(), verdicts);
    assert!(s.is_alive().await);
}

#[tokio::test]
async fn a_monitor_without_connection_admin_is_told_so_and_kills_nothing() {
    let db = server().await;
    let leaked = open(&db, "worker", 11).await;
    pause(600).await;

    let mut my = connect(&(db.url("watcher", "watcher", "") + "?ssl-mode=DISABLED")).await;
    let c = run_cycle(&mut my, &rules(QUICK_IDLE)).await;

    assert!(c.outcome.terminated.is_empty());
    assert!(c.outcome.error.is_none(), "decide must not even try");
    assert_eq!(c.decision.protected.len(), 1);
    assert_eq!(
        c.decision.protected[0].protection,
        Protection::MissingSignalPrivilege
    );
    assert!(
        c.decision
            .warnings
            .iter()
            .any(|w| w.contains("GRANT CONNECTION ADMIN")),
        "{:?}",
        c.decision.warnings
    );
    assert!(alive(&db, leaked.id()).await);

    // Were it to try anyway, the server says no, and poolwarden names it.
    let identity = my
        .observe()
        .await
        .unwrap()
        .sessions
        .iter()
        .find(|s| s.pid == leaked.id())
        .unwrap()
        .identity()
        .unwrap();
    let err = my.terminate(&[identity]).await.unwrap_err();
    assert!(matches!(err, DatabaseError::PermissionDenied(_)), "{err:?}");
    assert!(err.to_string().contains("CONNECTION ADMIN"), "{err}");
    assert!(alive(&db, leaked.id()).await);
}

#[tokio::test]
async fn a_user_the_server_will_not_let_us_kill_is_reported_from_then_on_not_retried() {
    let db = server().await;
    let leaked = open(&db, "worker", 11).await;
    pause(600).await;
    // `watcher` believes it may kill (a grant it lost after the look, as it were): the server's
    // refusal is remembered for the user, whose threads are protected from the next look on.
    let mut my = connect(&(db.url("watcher", "watcher", "") + "?ssl-mode=DISABLED")).await;
    db.execute("GRANT CONNECTION ADMIN ON *.* TO 'watcher'@'%'")
        .await
        .unwrap();
    let snapshot = my.observe().await.unwrap();
    assert!(snapshot.monitor.can_signal_backends);
    db.execute("REVOKE CONNECTION ADMIN ON *.* FROM 'watcher'@'%'")
        .await
        .unwrap();
    let identity = snapshot
        .sessions
        .iter()
        .find(|s| s.pid == leaked.id())
        .and_then(|s| s.identity())
        .unwrap();
    let verdicts = my.terminate(&[identity]).await.unwrap();
    assert!(matches!(verdicts.as_slice(), [Verdict::Refused(_)]));
    assert_eq!(my.last_fates(), verdicts);

    let c = run_cycle(&mut my, &rules(QUICK_IDLE)).await;
    assert!(c.outcome.terminated.is_empty() && c.outcome.error.is_none());
    assert_eq!(c.decision.protected.len(), 1);
    assert_eq!(c.decision.protected[0].pid, leaked.id());
    assert!(alive(&db, leaked.id()).await);
}

#[tokio::test]
async fn the_snapshot_reads_addresses_states_transactions_and_server_facts() {
    let db = server_with(MariaDbOptions {
        max_connections: 40,
        performance_schema: true,
        ..Default::default()
    })
    .await;
    let s = open(&db, "orders-api-7d9f-x2x", 42).await;
    s.begin_idle_in_transaction().await.unwrap();
    pause(300).await;
    let mut my = connect(&monitor_url(&db)).await;
    let snapshot = my.observe().await.unwrap();

    let seen = snapshot.sessions.iter().find(|x| x.pid == s.id()).unwrap();
    assert_eq!(seen.client_addr, Some("127.0.0.42".parse().unwrap()));
    assert_eq!(seen.application_name, "orders-api-7d9f-x2x");
    assert_eq!(seen.user.as_deref(), Some("app"));
    assert_eq!(seen.database.as_deref(), Some(APP_DB));
    assert_eq!(seen.state, SessionState::IdleInTransaction);
    assert!(seen.is_client_backend());
    let idle = seen.in_state_for(snapshot.observed_at);
    assert!(idle >= Duration::from_millis(250), "{idle:?}");
    let xact = seen.xact_start.unwrap();
    assert!(xact <= seen.state_change.unwrap() && xact <= snapshot.observed_at);
    assert_eq!(snapshot.server.flavour, Flavour::MariaDb);
    assert_eq!(snapshot.server.max_connections, 40);
    assert!(snapshot.server.version_num >= 100_000);
    assert!(snapshot.server.connected.is_some_and(|n| n >= 2));
    assert!(snapshot.sessions_opened_total.is_some_and(|n| n >= 2));
    assert!(snapshot.monitor.can_signal_backends && snapshot.monitor.can_read_all_stats);
    assert!(!snapshot.monitor.is_superuser);
    assert_eq!(snapshot.monitor.name, "monitor");
    // Ages come from the server's clock: never in the future.
    assert!(snapshot.sessions.iter().all(|x| {
        x.backend_start <= snapshot.observed_at
            && x.state_change.is_none_or(|c| c <= snapshot.observed_at)
    }));
}

#[tokio::test]
async fn churn_is_measured_from_the_servers_connections_counter_across_cycles() {
    let db = std::sync::Arc::new(server().await);
    let mut my = connect(&monitor_url(&db)).await;
    let rules = rules("leakDetection: {newSessionsPerSecond: 5}\n");
    let first = Pass::new(&rules, &ClusterView::default(), &Memory::default())
        .run(&mut my)
        .await
        .unwrap();
    // A NullPool worker: a connection per unit of work, one statement, closed; and a pool that
    // opened once and stays (new, but it persists: not churn).
    let churner = {
        let db = db.clone();
        tokio::spawn(async move {
            loop {
                let s = open(&db, "celery-worker", 31).await;
                s.touch().await.unwrap();
                drop(s);
                pause(20).await;
            }
        })
    };
    pause(1000).await;
    let _lingering = open(&db, "storefront", 32).await;
    let second = Pass::new(&rules, &ClusterView::default(), &first.next_memory())
        .run(&mut my)
        .await
        .unwrap();
    churner.abort();
    let rate = second
        .decision
        .capacity
        .new_sessions_per_second
        .expect("measured");
    assert!(rate > 5.0, "{rate}");
    let churn = second
        .decision
        .findings
        .iter()
        .find(|f| f.shown.kind == FindingKind::ConnectionChurn)
        .expect("churn found");
    // Named from the threads the quick looks saw appear and vanish. No performance_schema: the
    // source is its address alone.
    assert_eq!(
        churn.shown.subject.to_string(),
        "(no application_name)@127.0.0.31",
        "{churn:#?}"
    );
    let sample = second.snapshot.churn.as_ref().expect("churn sampled");
    assert!(
        !sample.short_lived.is_empty() && sample.looks > 1,
        "{sample:#?}"
    );
    assert!(
        sample
            .short_lived
            .iter()
            .all(|s| s.client_addr == Some("127.0.0.31".parse().unwrap())),
        "{sample:#?}"
    );
}

/// Seed 001: FastAPI BackgroundTasks handed the request's session, `pool_size=10,
/// max_overflow=15`: 25 connections of one pod, each in `Sleep` with an open transaction.
async fn seed_001(db: &MariaDb) -> Vec<MySqlSession> {
    let mut pinned = Vec::new();
    for _ in 0..25 {
        let s = open(db, "reports-api", 22).await;
        s.begin_idle_in_transaction().await.unwrap();
        pinned.push(s);
    }
    pinned
}

const SEED_001_POLICY: &str = "
budgets: {maxConnectionsPerPod: 25}
idle: {idleInTransactionTimeout: 1s}
leakDetection: {window: 1s, idleInTransactionAge: 1s}
";

#[tokio::test]
async fn seed_001_a_pinned_pool_is_idle_in_transaction_and_saturated_on_the_right_threads() {
    let db = server().await;
    let pinned = seed_001(&db).await;
    // A healthy neighbour, busy every 100 ms.
    let healthy = open(&db, "storefront", 24).await;
    for _ in 0..16 {
        healthy.touch().await.unwrap();
        pause(100).await;
    }

    let mut my = connect(&monitor_url(&db)).await;
    let c = run_cycle(&mut my, &rules(SEED_001_POLICY)).await;

    let ids: BTreeSet<i64> = pinned.iter().map(MySqlSession::id).collect();
    let on = |kind: FindingKind| {
        c.decision
            .findings
            .iter()
            .find(|f| f.shown.kind == kind)
            .unwrap_or_else(|| panic!("{kind:?} in {:#?}", c.decision.findings))
    };
    for kind in [FindingKind::IdleInTransaction, FindingKind::PoolSaturation] {
        let f = on(kind);
        assert_eq!(
            f.shown.subject.to_string(),
            "(no application_name)@127.0.0.22"
        );
        let named: BTreeSet<i64> = f.shown.pids.iter().copied().collect();
        assert_eq!(named, ids, "{kind:?}: every pinned thread, no other");
    }
    assert!(
        on(FindingKind::PoolSaturation)
            .shown
            .evidence
            .contains("25 idle in transaction")
    );
    assert_eq!(c.decision.findings.len(), 2, "{:#?}", c.decision.findings);
    // DryRun (the default): nothing is killed; Enforce would end the pinned threads, 20 (the
    // default brake) this cycle and the rest the next.
    assert!(c.outcome.terminated.is_empty());
    let would: BTreeSet<i64> = [&c.decision.dry_run, &c.decision.deferred]
        .into_iter()
        .flatten()
        .map(|t| t.identity.pid)
        .collect();
    assert_eq!(would, ids);
    assert_eq!(c.decision.dry_run.len(), 20);
    for s in &pinned {
        assert!(alive(&db, s.id()).await);
    }
}

/// `poolwarden check --output json` (the binary) against `db` with `policy`, as the monitor.
fn check_json(db: &MariaDb, policy: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(["check", "--output", "json", "--policy"])
        .arg(&file)
        .args(["--database-url", &monitor_url(db)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn json_pids(finding: &serde_json::Value) -> BTreeSet<i64> {
    finding["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect()
}

fn json_finding<'r>(report: &'r serde_json::Value, kind: &str) -> Option<&'r serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
}

#[tokio::test]
async fn check_prints_seed_001_as_json_and_terminates_nothing() {
    let db = server().await;
    let pinned = seed_001(&db).await;
    pause(1200).await;
    let report = check_json(
        &db,
        &SEED_001_POLICY.replace("idle:", "mode: Enforce\nidle:"),
    );
    assert_eq!(report["server"]["flavour"], "MariaDb");
    let ids: BTreeSet<i64> = pinned.iter().map(MySqlSession::id).collect();
    let findings = report["findings"].as_array().unwrap();
    for kind in ["IdleInTransaction", "PoolSaturation"] {
        let f = findings
            .iter()
            .find(|f| f["kind"] == kind)
            .unwrap_or_else(|| panic!("{kind} in {findings:#?}"));
        assert_eq!(f["subject"]["source"]["address"], "127.0.0.22");
        assert_eq!(json_pids(f), ids, "{kind}: every pinned thread, no other");
    }
    // check never terminates, even with a policy in Enforce.
    assert!(
        report["outcome"]["terminated"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(report["terminate"].as_array().unwrap().is_empty());
    for s in &pinned {
        assert!(alive(&db, s.id()).await);
    }
}

/// Seed 001 with nothing but the defaults: a policy of only `database` (what a PoolPolicy in the
/// cluster needs; `check` takes the URL from `--database-url`). Once the transactions are older
/// than `leakDetection.idleInTransactionAge` (2m by default), `IdleInTransaction` names every
/// pinned thread and calls it a pinned pool; `PoolSaturation` needs a per-pod budget to compare
/// with (as on PostgreSQL) and names the same threads once the policy gives one.
#[tokio::test]
async fn check_with_the_default_policy_names_seed_001_after_the_default_two_minutes() {
    let db = server().await;
    let pinned = seed_001(&db).await;
    let since = std::time::Instant::now();
    let healthy = open(&db, "storefront", 24).await;
    let healthy_id = healthy.id();
    let busy = tokio::spawn(async move {
        loop {
            healthy.touch().await.unwrap();
            pause(1000).await;
        }
    });
    let two_minutes = std::time::Duration::from_secs(2 * 60 + 5);
    tokio::time::sleep(two_minutes.saturating_sub(since.elapsed())).await;

    let only_database = "database:\n  connectionSecretRef: {name: shop-mysql-monitor, key: uri}\n";
    let report = check_json(&db, only_database);
    let ids: BTreeSet<i64> = pinned.iter().map(MySqlSession::id).collect();
    let f = json_finding(&report, "IdleInTransaction")
        .unwrap_or_else(|| panic!("IdleInTransaction in {:#}", report["findings"]));
    assert_eq!(f["subject"]["source"]["address"], "127.0.0.22");
    assert_eq!(json_pids(f), ids, "a pinned pool is named in full");
    assert_eq!(f["sessions"], 25);
    assert!(
        f["evidence"].as_str().unwrap().contains(
            "every one of the 25 sessions of 127.0.0.22 is idle in a transaction: its pool is pinned"
        ),
        "{f:#}"
    );
    // No budget, yet a pinned pool: every session idle in a transaction at a steady count.
    let f = json_finding(&report, "PoolSaturation")
        .unwrap_or_else(|| panic!("PoolSaturation in {:#}", report["findings"]));
    assert_eq!(
        f["summary"],
        "127.0.0.22 holds 25 sessions, every one idle in a transaction: its pool is pinned"
    );
    assert_eq!(json_pids(f), ids);
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .all(|f| f["subject"]["source"]["address"] == "127.0.0.22"),
        "nothing on the healthy neighbour: {findings:#?}"
    );
    assert!(
        report["outcome"]["terminated"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(report["terminate"].as_array().unwrap().is_empty());

    // One line more, the pool's size: the pod at its budget, in the budget's words.
    let report = check_json(
        &db,
        &format!("{only_database}budgets: {{maxConnectionsPerPod: 25}}\n"),
    );
    let f = json_finding(&report, "PoolSaturation")
        .unwrap_or_else(|| panic!("PoolSaturation in {:#}", report["findings"]));
    assert_eq!(f["subject"]["source"]["address"], "127.0.0.22");
    assert_eq!(json_pids(f), ids);
    assert_eq!(
        f["summary"],
        "127.0.0.22 holds 25 sessions, its budget is 25"
    );
    assert!(json_finding(&report, "IdleInTransaction").is_some());
    assert!(
        report["outcome"]["terminated"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    for s in &pinned {
        assert!(alive(&db, s.id()).await);
    }
    assert!(alive(&db, healthy_id).await);
    busy.abort();
}

/// Seed 003's shape on MySQL: a service holding one transaction open and touching it now and
/// then. Its idle time keeps starting again, but `INNODB_TRX` keeps the transaction's start:
/// `LongTransaction` names it, `IdleInTransaction` does not. InnoDB shows no per-session purge
/// horizon and lock waits are not read, so the evidence has neither (docs/mysql.md).
#[tokio::test]
async fn a_transaction_touched_now_and_then_is_a_long_transaction() {
    let db = server().await;
    let holder = open(&db, "ledger-sync", 25).await;
    holder.begin_idle_in_transaction().await.unwrap();
    let healthy = open(&db, "storefront", 26).await;
    // Whole seconds in INNODB_TRX: well past 2s by the end.
    for _ in 0..14 {
        holder.touch().await.unwrap();
        healthy.touch().await.unwrap();
        pause(300).await;
    }
    let mut my = connect(&monitor_url(&db)).await;
    let c = run_cycle(
        &mut my,
        &rules("leakDetection: {transactionAge: 2s, idleInTransactionAge: 2s}\n"),
    )
    .await;
    let long: Vec<_> = c
        .decision
        .findings
        .iter()
        .filter(|f| f.shown.kind == FindingKind::LongTransaction)
        .collect();
    assert_eq!(long.len(), 1, "{:#?}", c.decision.findings);
    assert_eq!(
        long[0].shown.subject.to_string(),
        "(no application_name)@127.0.0.25"
    );
    assert_eq!(long[0].shown.pids, [holder.id()]);
    assert!(
        !long[0].shown.evidence.contains("xmin"),
        "{}",
        long[0].shown.evidence
    );
    assert!(
        c.decision
            .findings
            .iter()
            .all(|f| f.shown.kind == FindingKind::LongTransaction),
        "touched every 300 ms: not idle in a transaction: {:#?}",
        c.decision.findings
    );
    assert!(c.outcome.terminated.is_empty());
}

/// Without `PROCESS` the server shows a user its own threads only. poolwarden still looks, and
/// says what it cannot see and what to grant, as it does on PostgreSQL without `pg_monitor`
/// (docs/mysql.md); it does not fail.
#[tokio::test]
async fn without_process_poolwarden_sees_its_own_threads_and_says_what_to_grant() {
    let db = server().await;
    db.create_user("blind", "blind", &[]).await.unwrap();
    let other = open(&db, "orders-api", 21).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, "mode: DryRun\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(["check", "--output", "json", "--policy"])
        .arg(&file)
        .args([
            "--database-url",
            &(db.url("blind", "blind", "") + "?ssl-mode=DISABLED"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("sees only its own threads: GRANT PROCESS ON *.* TO blind")),
        "{warnings:#?}"
    );
    // The application's thread is not in view: nothing is said about it.
    assert_eq!(report["inScope"]["total"], 0, "{report:#}");
    assert!(other.is_alive().await);
}

/// What each thread last ran, from `performance_schema.events_statements_current`: fingerprinted
/// with every literal gone (MariaDB's backslash escapes and double-quoted strings included);
/// plainly unavailable when its consumers are off or `performance_schema` is; not read at all
/// when turned off.
#[tokio::test]
async fn each_thread_carries_its_last_statement_where_performance_schema_records_it() {
    use mysql_async::prelude::Queryable;
    let db = server_with(MariaDbOptions {
        performance_schema: true,
        statements_consumer: true,
        ..Default::default()
    })
    .await;
    let reader = open(&db, "api", 11).await;
    reader.begin_idle_in_transaction().await.unwrap();
    reader
        .execute(
            "/* controller='items', secret='abc' */ SELECT items.id, items.name\n  FROM items\n \
             WHERE items.id IN (1, 2, 3) AND items.name <> 'O\\'Brien' # trailing 'x'",
        )
        .await
        .unwrap();
    let writer = open(&db, "api", 11).await;
    writer
        .execute(
            r#"UPDATE items SET name = "say \"hi\"" WHERE id = -42 AND name = _utf8mb4'hidden'"#,
        )
        .await
        .unwrap();

    let mut my = connect(&monitor_url(&db)).await;
    let snapshot = my.observe().await.unwrap();
    assert_eq!(
        snapshot.last_statements,
        poolwarden::database::LastStatements::Read
    );
    let statement = |id: i64| {
        snapshot
            .sessions
            .iter()
            .find(|s| s.pid == id)
            .and_then(|s| s.last_statement.as_ref())
            .map(|s| s.fingerprint.clone())
            .unwrap_or_else(|| panic!("no statement for thread {id}"))
    };
    assert_eq!(
        statement(reader.id()),
        "SELECT items.id, items.name FROM items WHERE items.id IN (...) AND items.name <> ?"
    );
    assert_eq!(
        statement(writer.id()),
        "UPDATE items SET name = ? WHERE id = ? AND name = ?"
    );
    let fingerprints: Vec<String> = snapshot
        .sessions
        .iter()
        .filter_map(|s| s.last_statement.as_ref())
        .map(|s| s.fingerprint.clone())
        .collect();
    for literal in ["Brien", "abc", "hi", "42", "hidden", "'x'"] {
        assert!(
            fingerprints.iter().all(|f| !f.contains(literal)),
            "{literal} in {fingerprints:#?}"
        );
    }

    my.read_statements(false);
    let off = my.observe().await.unwrap();
    assert_eq!(
        off.last_statements,
        poolwarden::database::LastStatements::NotRead
    );
    assert!(off.sessions.iter().all(|s| s.last_statement.is_none()));
    my.read_statements(true);

    // A consumer turned off at run time: said plainly, and nothing is shown.
    let mut admin = db.admin().await.unwrap();
    admin
        .query_drop(
            "UPDATE performance_schema.setup_consumers SET ENABLED = 'NO' \
             WHERE NAME = 'events_statements_current'",
        )
        .await
        .unwrap();
    let unrecorded = my.observe().await.unwrap();
    let poolwarden::database::LastStatements::Unavailable(why) = &unrecorded.last_statements else {
        panic!("{:?}", unrecorded.last_statements)
    };
    assert!(
        why.contains("consumer events_statements_current is off"),
        "{why}"
    );
    assert!(
        unrecorded
            .sessions
            .iter()
            .all(|s| s.last_statement.is_none())
    );
}

#[tokio::test]
async fn without_performance_schema_no_statement_is_shown_and_the_look_says_why() {
    let db = server().await;
    let _leaked = open(&db, "worker", 11).await;
    let mut my = connect(&monitor_url(&db)).await;
    let snapshot = my.observe().await.unwrap();
    let poolwarden::database::LastStatements::Unavailable(why) = &snapshot.last_statements else {
        panic!("{:?}", snapshot.last_statements)
    };
    assert!(why.contains("performance_schema is off"), "{why}");
    assert!(snapshot.sessions.iter().all(|s| s.last_statement.is_none()));
}
