//! What the PostgreSQL engine does its own way, against a real PostgreSQL the test starts itself
//! (the rules both engines keep are in [`contract`](super::contract)): aborted transactions, the
//! conditional `pg_terminate_backend`, privileges, superusers, churn, a full server.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;
use poolwarden::cycle::Pass;
use poolwarden::database::{ChurnLooks, DatabaseError, Engine, Protection, SessionState, Verdict};
use poolwarden::decide::{self, ClusterView, Memory, Reason};

const QUICK_IDLE: &str = "
mode: Enforce
idle: {idleTimeout: 300ms, idleInTransactionTimeout: 300ms}
";

#[tokio::test]
async fn sessions_idle_in_transaction_and_aborted_are_terminated() {
    let sb = sandbox().await;
    let open_tx = open(&sb, "api", 12).await;
    open_tx.begin_idle_in_transaction().await.unwrap();
    let aborted = open(&sb, "api", 12).await;
    aborted.abort_transaction().await.unwrap();
    pause(600).await;

    let mut pg = connect(&monitor_url(&sb)).await;
    let c = cycle(&mut pg, &rules(QUICK_IDLE)).await;

    let ended: BTreeSet<i64> = c
        .outcome
        .terminated
        .iter()
        .map(|t| t.identity.pid)
        .collect();
    assert_eq!(ended, BTreeSet::from([open_tx.pid(), aborted.pid()]));
    assert!(
        c.outcome
            .terminated
            .iter()
            .all(|t| t.reason == Reason::IdleInTransactionTimeout)
    );
    let states: BTreeSet<String> = c
        .outcome
        .terminated
        .iter()
        .map(|t| t.identity.state.to_owned())
        .collect();
    assert_eq!(
        states,
        BTreeSet::from([
            "idle in transaction".to_owned(),
            "idle in transaction (aborted)".to_owned()
        ])
    );
    assert!(gone(&sb, open_tx.pid()).await && gone(&sb, aborted.pid()).await);
}

#[tokio::test]
async fn poolwarden_never_terminates_its_own_session_or_another_poolwardens() {
    let sb = sandbox().await;
    // Another poolwarden instance's monitoring connection, idle between its cycles.
    let other = open(&sb, "poolwarden", 15).await;
    pause(600).await;

    // Even as superuser, with every governed session condemned on sight.
    let mut pg = connect(&(sb.superuser_url() + "?sslmode=disable")).await;
    let first = cycle(&mut pg, &rules(QUICK_IDLE)).await;
    pause(600).await;
    // Our own connection is idle between cycles now, for longer than the timeout.
    let second = cycle(&mut pg, &rules(QUICK_IDLE)).await;

    for c in [&first, &second] {
        assert!(
            c.outcome.terminated.is_empty(),
            "{:?}",
            c.outcome.terminated
        );
        assert!(c.outcome.error.is_none());
    }
    assert!(other.is_alive().await);
    assert_eq!(
        second.decision.out_of_scope[&decide::Exclusion::OwnSession],
        1
    );
    assert_eq!(
        second.decision.out_of_scope[&decide::Exclusion::PoolwardenSession],
        1
    );
}

#[tokio::test]
async fn a_reused_pid_or_changed_start_time_is_never_signalled() {
    let sb = sandbox().await;
    let s = open(&sb, "worker", 11).await;
    pause(600).await;
    let mut pg = connect(&monitor_url(&sb)).await;
    let snapshot = pg.observe().await.unwrap();
    let mut identity = snapshot
        .sessions
        .iter()
        .find(|x| x.pid == s.pid())
        .and_then(|x| x.identity())
        .unwrap();
    // Same pid, different backend start: what a reused pid looks like.
    identity.backend_start -= jiff::SignedDuration::from_micros(1);
    let verdicts = pg.terminate(&[identity.clone()]).await.unwrap();
    assert_eq!(verdicts, vec![Verdict::Gone], "the session judged is gone");
    // Same pid and start, different state: the session moved on.
    identity.backend_start += jiff::SignedDuration::from_micros(1);
    identity.state = "idle in transaction";
    let verdicts = pg.terminate(&[identity]).await.unwrap();
    assert_eq!(verdicts, vec![Verdict::Changed]);
    assert!(s.is_alive().await);
}

/// The identity `snapshot` shows for `pid`.
fn identity_of(
    snapshot: &poolwarden::database::Snapshot,
    pid: i64,
) -> poolwarden::database::SessionIdentity {
    snapshot
        .sessions
        .iter()
        .find(|x| x.pid == pid)
        .and_then(|x| x.identity())
        .unwrap_or_else(|| panic!("backend {pid} has an identity in the snapshot"))
}

#[tokio::test]
async fn the_terminating_statement_itself_spares_what_is_not_an_idle_client_backend() {
    let sb = sandbox().await;
    // Idle, unchanged since the snapshot: only the statement's own checks stand in the way.
    let other_poolwarden = open(&sb, "poolwarden", 15).await;
    let busy = open(&sb, "worker", 11).await;
    busy.start_active(60.0);
    sb.wait_for_state(busy.pid(), "active", std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let mut pg = connect(&(sb.superuser_url() + "?sslmode=disable")).await;
    let snapshot = pg.observe().await.unwrap();

    let mut asked = vec![
        identity_of(&snapshot, other_poolwarden.pid()),
        // Active: it would take a forged identity to ask, and the statement still says no.
        poolwarden::database::SessionIdentity {
            state: "idle",
            ..identity_of(&snapshot, busy.pid())
        },
    ];
    // A background process (the checkpointer, say), with a forged idle identity.
    let background = snapshot
        .sessions
        .iter()
        .find(|x| !x.is_client_backend())
        .expect("a background process");
    asked.push(poolwarden::database::SessionIdentity {
        pid: background.pid,
        backend_start: background.backend_start,
        state: "idle",
        state_change: background.backend_start,
        xact_start: None,
    });
    let verdicts = pg.terminate(&asked).await.unwrap();

    assert_eq!(verdicts, vec![Verdict::Changed; 3]);
    assert!(other_poolwarden.is_alive().await);
    assert!(alive(&sb, busy.pid()).await);
    assert!(alive(&sb, background.pid).await);
}

#[tokio::test]
async fn one_call_keeps_each_sessions_verdict_and_a_refusal_stops_nothing() {
    let sb = sandbox().await;
    // The monitoring role `watcher` lacks pg_signal_backend, but may end its own role's sessions.
    let refused = open(&sb, "worker", 11).await;
    let own_role = sb
        .open_session(
            &poolwarden_sandbox::SessionSpec::new("watcher", "watcher", APP_DB)
                .application("worker"),
        )
        .await
        .unwrap();
    let woke = open(&sb, "worker", 11).await;
    let left = open(&sb, "worker", 11).await;
    let mut pg = connect(&(sb.url("watcher", "watcher", APP_DB) + "?sslmode=disable")).await;
    let snapshot = pg.observe().await.unwrap();
    let asked: Vec<_> = [refused.pid(), own_role.pid(), woke.pid(), left.pid()]
        .into_iter()
        .map(|pid| identity_of(&snapshot, pid))
        .collect();
    woke.touch().await.unwrap();
    let left_pid = left.pid();
    drop(left);
    assert!(gone(&sb, left_pid).await);

    let verdicts = pg.terminate(&asked).await.unwrap();

    assert_eq!(verdicts.len(), 4, "{verdicts:?}");
    assert!(
        matches!(&verdicts[0], Verdict::Refused(reason) if reason.contains("pg_signal_backend")),
        "{verdicts:?}"
    );
    assert_eq!(
        verdicts[1..],
        [Verdict::Signalled, Verdict::Changed, Verdict::Gone]
    );
    assert!(gone(&sb, own_role.pid()).await);
    assert!(refused.is_alive().await);
    assert!(woke.is_alive().await);
}

#[tokio::test]
async fn a_monitor_without_pg_signal_backend_is_told_so_and_terminates_nothing() {
    let sb = sandbox().await;
    let leaked = open(&sb, "worker", 11).await;
    pause(600).await;

    let mut pg = connect(&(sb.url("watcher", "watcher", APP_DB) + "?sslmode=disable")).await;
    let c = cycle(&mut pg, &rules(QUICK_IDLE)).await;

    assert!(c.outcome.terminated.is_empty());
    assert!(
        c.outcome.error.is_none(),
        "decide must not even try: {:?}",
        c.outcome.error
    );
    assert_eq!(c.decision.protected.len(), 1);
    assert_eq!(
        c.decision.protected[0].protection,
        Protection::MissingSignalPrivilege
    );
    assert!(
        c.decision
            .warnings
            .iter()
            .any(|w| w.contains("GRANT pg_signal_backend"))
    );
    assert!(leaked.is_alive().await);

    // Were it to try anyway, PostgreSQL says no, and poolwarden names it. (A fresh snapshot: the
    // liveness check above was activity, and a session that moved on is never signalled.)
    let identity = pg
        .observe()
        .await
        .unwrap()
        .sessions
        .iter()
        .find(|s| s.pid == leaked.pid())
        .unwrap()
        .identity()
        .unwrap();
    let verdicts = pg.terminate(&[identity]).await.unwrap();
    assert!(
        matches!(&verdicts[..], [Verdict::Refused(reason)] if reason.contains("pg_signal_backend")),
        "{verdicts:?}"
    );
    assert!(leaked.is_alive().await);
}

#[tokio::test]
async fn a_superuser_session_is_reported_with_advice_not_terminated() {
    let sb = sandbox().await;
    let as_postgres = sb
        .open_session(
            &poolwarden_sandbox::SessionSpec::new("postgres", "postgres", APP_DB)
                .application("legacy"),
        )
        .await
        .unwrap();
    let leaked = open(&sb, "worker", 11).await;
    pause(600).await;

    let mut pg = connect(&monitor_url(&sb)).await;
    let c = cycle(&mut pg, &rules(QUICK_IDLE)).await;

    let ended: Vec<i64> = c
        .outcome
        .terminated
        .iter()
        .map(|t| t.identity.pid)
        .collect();
    assert_eq!(ended, vec![leaked.pid()], "the ordinary session still goes");
    assert!(c.outcome.error.is_none());
    assert_eq!(c.decision.protected.len(), 1);
    assert_eq!(c.decision.protected[0].pid, as_postgres.pid());
    assert_eq!(
        c.decision.protected[0].protection,
        Protection::SuperuserSession
    );
    assert!(as_postgres.is_alive().await);
}

#[tokio::test]
async fn the_snapshot_reads_addresses_states_and_server_limits() {
    let sb = sandbox_with(poolwarden_sandbox::SandboxOptions {
        max_connections: 40,
        ..Default::default()
    })
    .await;
    let s = open(&sb, "orders-api-7d9f-x2x", 42).await;
    let mut pg = connect(&monitor_url(&sb)).await;
    let snapshot = pg.observe().await.unwrap();

    let seen = snapshot.sessions.iter().find(|x| x.pid == s.pid()).unwrap();
    assert_eq!(seen.client_addr, Some("127.0.0.42".parse().unwrap()));
    assert_eq!(seen.client_port, Some(s.local_addr().port()));
    assert_eq!(seen.application_name, "orders-api-7d9f-x2x");
    assert_eq!(seen.state, SessionState::Idle);
    assert_eq!(seen.user.as_deref(), Some("app"));
    assert!(seen.is_client_backend());
    assert_eq!(snapshot.server.max_connections, 40);
    assert_eq!(snapshot.server.superuser_reserved_connections, 3);
    assert!(snapshot.server.version_num >= 120000);
    assert!(snapshot.monitor.can_signal_backends && snapshot.monitor.can_read_all_stats);
    assert!(!snapshot.monitor.is_superuser);
    assert!(snapshot.sessions_opened_total.is_some_and(|n| n > 0));
    // Background processes are in the snapshot, and decide leaves them out.
    assert!(snapshot.sessions.iter().any(|x| !x.is_client_backend()));
    // Ages come from the database clock: never negative, never in the future.
    assert!(
        snapshot
            .sessions
            .iter()
            .all(|x| x.backend_start <= snapshot.observed_at)
    );
}

#[tokio::test]
async fn churn_between_cycles_that_no_look_caught_is_the_servers() {
    let sb = sandbox().await;
    let mut pg = connect(&monitor_url(&sb)).await;
    let rules = rules("leakDetection: {newSessionsPerSecond: 5}\n");
    let first = Pass::new(&rules, &ClusterView::default(), &Memory::default())
        .run(&mut pg)
        .await
        .unwrap();
    // 30 short sessions between the two looks, none while poolwarden looks, and one that stays.
    for _ in 0..30 {
        drop(open(&sb, "celery-worker", 31).await);
    }
    let _lingering = open(&sb, "celery-worker", 31).await;
    let second = Pass::new(&rules, &ClusterView::default(), &first.next_memory())
        .run(&mut pg)
        .await
        .unwrap();

    let rate = second
        .decision
        .capacity
        .new_sessions_per_second
        .expect("measured");
    assert!(rate > 5.0, "{rate}");
    // The churn sample looked, saw nothing open and close, and did not blame the survivor.
    let sample = second
        .snapshot
        .churn
        .as_ref()
        .expect("sampled: sessions came and went");
    assert!(
        sample.looks > 1 && sample.short_lived.is_empty(),
        "{sample:?}"
    );
    let churn = second
        .decision
        .findings
        .iter()
        .find(|f| f.shown.kind == decide::FindingKind::ConnectionChurn)
        .expect("churn found");
    assert_eq!(churn.shown.subject, decide::Subject::Server);
}

/// On a loaded machine a look takes longer and few fall within a few-millisecond session's life.
/// When the budget is spent with no new session seen to open and close while the server's counter
/// says sessions are being opened, the sample goes on (up to its patience) until it sees them go.
/// Here five sessions open just after the snapshot and close only after the budget: a sample that
/// stopped at its budget would have seen all five persist, and named nobody.
#[tokio::test]
async fn a_churn_sample_goes_on_past_its_budget_while_sessions_are_opened_and_none_was_seen_to_go()
{
    let sb = std::sync::Arc::new(sandbox().await);
    let budget = Duration::from_millis(500);
    let looks = ChurnLooks {
        budget,
        patience: Duration::from_secs(10),
        pause: Duration::from_millis(5),
    };
    let mut pg = connect(&monitor_url(&sb)).await.with_churn_looks(looks);
    let burst = {
        let sb = sb.clone();
        tokio::spawn(async move {
            pause(100).await;
            let mut sessions = Vec::new();
            for _ in 0..5 {
                sessions.push(open(&sb, "celery-worker", 33).await);
            }
            pause(1200).await;
            drop(sessions);
        })
    };
    let first = pg.observe().await.unwrap();
    burst.await.unwrap();

    let sample = first.churn.as_ref().expect("the first look samples");
    // The looks stop at the first look that misses one: the five close one after the other, so
    // some may still be there (persisted), but at least one was seen to go.
    assert!(!sample.short_lived.is_empty(), "{sample:?}");
    assert_eq!(
        sample.short_lived.len() + sample.persisted as usize,
        5,
        "{sample:?}"
    );
    assert!(
        sample
            .short_lived
            .iter()
            .all(|s| s.application_name == "celery-worker"),
        "{sample:?}"
    );
    let lasted = sample
        .ended_at
        .duration_since(sample.started_at)
        .unsigned_abs();
    assert!(lasted > budget, "{sample:?}");
}

/// A quiet server is looked at for the budget only: the counter says nobody is opening sessions.
#[tokio::test]
async fn a_churn_sample_on_a_quiet_server_stops_at_its_budget() {
    let sb = sandbox().await;
    let looks = ChurnLooks {
        budget: Duration::from_millis(200),
        patience: Duration::from_secs(30),
        pause: Duration::from_millis(5),
    };
    let mut pg = connect(&monitor_url(&sb)).await.with_churn_looks(looks);
    let first = pg.observe().await.unwrap();
    let sample = first.churn.as_ref().expect("the first look samples");
    let lasted = sample
        .ended_at
        .duration_since(sample.started_at)
        .unsigned_abs();
    assert!(lasted < Duration::from_secs(10), "{sample:?}");
    assert!(sample.short_lived.is_empty(), "{sample:?}");
}

#[tokio::test]
async fn a_quiet_server_is_not_sampled_for_churn_after_the_first_look() {
    let sb = sandbox().await;
    let mut pg = connect(&monitor_url(&sb)).await;
    let first = pg.observe().await.unwrap();
    assert!(
        first.churn.is_some(),
        "the first look has nothing to compare with"
    );
    pause(1100).await;
    let second = pg.observe().await.unwrap();
    assert!(second.churn.is_none(), "{:?}", second.churn);
}

#[tokio::test]
async fn a_transaction_past_max_transaction_age_ends_only_while_idle_in_it_blockers_first() {
    let sb = sandbox().await;
    let db = app_admin(&sb).await;
    db.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0), (2, 0);
         GRANT SELECT, UPDATE ON t TO app;",
    )
    .await
    .unwrap();

    // Two services holding a transaction and touching it; the first blocks a writer.
    let blocker = open(&sb, "service", 51).await;
    blocker
        .client()
        .batch_execute("BEGIN; UPDATE t SET v = v + 1 WHERE id = 1")
        .await
        .unwrap();
    let holder = open(&sb, "service", 51).await;
    holder
        .client()
        .batch_execute("BEGIN; UPDATE t SET v = v + 1 WHERE id = 2")
        .await
        .unwrap();
    // A long statement in a long transaction: active, never ended.
    let reporting = open(&sb, "reporting", 52).await;
    reporting.client().batch_execute("BEGIN").await.unwrap();
    reporting.start_active(30.0);
    sb.wait_for_state(reporting.pid(), "active", std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let waiter = open(&sb, "writer", 53).await;
    let waiter_pid = waiter.pid();
    let waiting = tokio::spawn(async move {
        let _ = waiter
            .client()
            .batch_execute("UPDATE t SET v = v + 1 WHERE id = 1")
            .await;
    });
    sb.wait_for_state(waiter_pid, "active", std::time::Duration::from_secs(5))
        .await
        .unwrap();
    pause(1200).await;

    let policy = "mode: Enforce\nidle: {maxTransactionAge: 1s, maxTerminationsPerCycle: 1}\n";
    let mut pg = connect(&monitor_url(&sb)).await;
    let c = cycle(&mut pg, &rules(policy)).await;
    let ended: Vec<i64> = c
        .outcome
        .terminated
        .iter()
        .map(|t| t.identity.pid)
        .collect();
    assert_eq!(
        ended,
        vec![blocker.pid()],
        "the blocker first, within the brake"
    );
    assert_eq!(c.outcome.terminated[0].reason, Reason::TransactionTooOld);
    assert_eq!(c.outcome.terminated[0].blocks, 1);
    assert!(c.outcome.terminated[0].checked_out);
    let deferred: Vec<i64> = c.decision.deferred.iter().map(|t| t.identity.pid).collect();
    assert_eq!(deferred, vec![holder.pid()]);
    assert!(gone(&sb, blocker.pid()).await);
    waiting.await.unwrap();

    // Next cycle: the holder; never the active reporting session, however old its transaction.
    let c = cycle(&mut pg, &rules(policy)).await;
    let ended: Vec<i64> = c
        .outcome
        .terminated
        .iter()
        .map(|t| t.identity.pid)
        .collect();
    assert_eq!(ended, vec![holder.pid()]);
    assert!(reporting.is_alive().await);
    // What was ended for its transaction's age is a LongTransaction at once; the active
    // reporting session's old transaction is not one: the default's 10 minutes have not passed.
    let long: Vec<_> = c
        .decision
        .findings
        .iter()
        .filter(|f| f.shown.kind == decide::FindingKind::LongTransaction)
        .collect();
    assert_eq!(long.len(), 1, "{long:#?}");
    assert_eq!((long[0].ended, long[0].confirmed), (1, true));
    assert_eq!(long[0].shown.pids, [holder.pid()]);
}

#[tokio::test]
async fn when_the_server_is_full_the_open_connection_still_acts_and_a_new_one_says_server_full() {
    // 10 slots, 3 reserved for superusers: 7 for everyone else.
    let sb = sandbox_with(poolwarden_sandbox::SandboxOptions {
        max_connections: 10,
        ..Default::default()
    })
    .await;
    let mut pg = connect(&monitor_url(&sb)).await;
    let mut leaked = Vec::new();
    for _ in 0..6 {
        leaked.push(open(&sb, "worker", 11).await);
    }
    pause(600).await;

    let err = poolwarden::database::postgres::Postgres::connect(
        &monitor_url(&sb),
        poolwarden::database::ConnectOptions::default(),
    )
    .await
    .err()
    .expect("no slot left for a new connection");
    assert!(matches!(err, DatabaseError::ServerFull { .. }), "{err:?}");
    assert_eq!(err.category(), "ServerFull");
    // The advice fits the server: PostgreSQL 16 has pg_use_reserved_connections, older ones not.
    let text = err.to_string();
    let version = pg.observe().await.unwrap().server.version_num;
    if version >= 160_000 {
        assert!(text.contains("pg_use_reserved_connections"), "{text}");
    } else {
        assert!(
            text.contains("CONNECTION LIMIT") && !text.contains("grant the monitoring role"),
            "{text}"
        );
    }

    // The connection poolwarden kept open observes and terminates all the same.
    let c = cycle(&mut pg, &rules(QUICK_IDLE)).await;
    assert_eq!(c.decision.capacity.client_sessions, 7);
    assert_eq!(c.decision.capacity.usable_connections, 7);
    assert_eq!(c.decision.capacity.utilization_percent, 100);
    assert_eq!(c.outcome.terminated.len(), 6);
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_the_login_is_unreachable_not_a_hang() {
    // A listener that takes the TCP connection and says nothing: the driver's connect timeout
    // covers only the TCP connect, so without a bound on the whole login this waits forever.
    let (port, holder) = silent_listener().await;
    let options = poolwarden::database::ConnectOptions {
        connect_timeout: std::time::Duration::from_millis(500),
        ..Default::default()
    };
    let url = format!("postgres://monitor:secret@127.0.0.1:{port}/postgres?sslmode=disable");
    let attempt = poolwarden::database::postgres::Postgres::connect(&url, options);
    // The outer bound only keeps a regression from hanging the suite; the assertion is the error.
    let err = tokio::time::timeout(std::time::Duration::from_secs(60), attempt)
        .await
        .expect("the login must be bounded by the connect timeout")
        .err()
        .expect("nobody answered, so no connection");
    assert!(
        matches!(err, DatabaseError::Unreachable { .. }),
        "expected Unreachable, got {err}"
    );
    assert!(err.is_transient(), "a silent server may answer later");
    assert!(
        err.to_string().contains("did not answer the login"),
        "{err}"
    );
    holder.abort();
}

/// What each session last ran, from `pg_stat_activity.query`: fingerprinted with every literal
/// gone, with `query_id` where `compute_query_id` is on, marked where the server cut it
/// (`track_activity_query_size`), and not even read when turned off.
#[tokio::test]
async fn each_session_carries_its_last_statement_fingerprinted() {
    let sb = sandbox_with(poolwarden_sandbox::SandboxOptions {
        settings: vec![
            ("compute_query_id".into(), "on".into()),
            ("track_activity_query_size".into(), "200".into()),
        ],
        ..Default::default()
    })
    .await;
    let admin = app_admin(&sb).await;
    admin
        .batch_execute(
            "CREATE TABLE users (id int PRIMARY KEY, name text, email text);
             INSERT INTO users VALUES (42, 'O''Brien', 'ob@example.com');
             GRANT SELECT, UPDATE ON users TO app;",
        )
        .await
        .unwrap();
    let reader = open(&sb, "api", 11).await;
    reader.client().batch_execute("BEGIN").await.unwrap();
    reader
        .client()
        .simple_query(
            "/* controller='users', secret='abc' */\n SELECT users.id, users.name\n   FROM users\n  \
             WHERE users.id = 42 AND users.email IN ('ob@example.com', 'x@y.z')",
        )
        .await
        .unwrap();
    let writer = open(&sb, "api", 11).await;
    writer
        .client()
        .simple_query(
            r"UPDATE users SET name = E'it\'s \\ hidden', email = $mail$a 'quoted' mail$mail$ WHERE id = -42",
        )
        .await
        .unwrap();
    let long = open(&sb, "api", 11).await;
    let columns: Vec<String> = (0..40).map(|i| format!("'literal-{i}' AS c{i}")).collect();
    long.client()
        .simple_query(&format!("SELECT {}", columns.join(", ")))
        .await
        .unwrap();

    let mut pg = connect(&monitor_url(&sb)).await;
    let snapshot = pg.observe().await.unwrap();
    assert_eq!(
        snapshot.last_statements,
        poolwarden::database::LastStatements::Read
    );
    let statement = |pid: i64| {
        snapshot
            .sessions
            .iter()
            .find(|s| s.pid == pid)
            .and_then(|s| s.last_statement.clone())
            .unwrap_or_else(|| panic!("no statement for {pid}"))
    };
    let read = statement(reader.pid());
    assert_eq!(
        read.fingerprint,
        "SELECT users.id, users.name FROM users WHERE users.id = ? AND users.email IN (...)"
    );
    assert!(read.query_id.is_some(), "compute_query_id is on: {read:?}");
    assert_eq!(
        statement(writer.pid()).fingerprint,
        "UPDATE users SET name = ?, email = ? WHERE id = ?"
    );
    let cut = statement(long.pid()).fingerprint;
    assert!(cut.starts_with("SELECT ? AS c0, ? AS c1,"), "{cut}");
    assert!(cut.ends_with('…'), "cut by the server: {cut}");
    let fingerprints: Vec<&str> = snapshot
        .sessions
        .iter()
        .filter_map(|s| s.last_statement.as_ref())
        .map(|s| s.fingerprint.as_str())
        .collect();
    for literal in [
        "42",
        "O'Brien",
        "ob@example.com",
        "hidden",
        "quoted",
        "abc",
        "literal-",
    ] {
        assert!(
            fingerprints.iter().all(|f| !f.contains(literal)),
            "{literal} in {fingerprints:#?}"
        );
    }

    pg.read_statements(false);
    let off = pg.observe().await.unwrap();
    assert_eq!(
        off.last_statements,
        poolwarden::database::LastStatements::NotRead
    );
    assert!(off.sessions.iter().all(|s| s.last_statement.is_none()));
}
