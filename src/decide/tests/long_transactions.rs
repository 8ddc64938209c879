//! Long transactions, a full server, a stable Overbooked.

use super::*;

/// A session of pod 1 whose transaction began `open` seconds ago and which last ran a statement
/// `touched` seconds ago, holding `backend_xmin` from `xmin_age` transactions back.
pub(super) fn long_transaction(pid: i64, open: i64, touched: i64, xmin_age: u32) -> SessionBuilder {
    let mut s = session(pid)
        .client_addr(&pod_ip(1))
        .idle_in_transaction(touched);
    s.session.xact_start = Some(ago(open));
    s.session.backend_xmin = Some(5_000 + xmin_age);
    s.session.xmin_age = Some(xmin_age);
    s
}

/// A session waiting on a lock held by `blocker`.
fn waiting_for(pid: i64, blocker: i64) -> SessionBuilder {
    let mut s = session(pid).client_addr(&pod_ip(2)).active(30);
    s.session.blocked_by = vec![blocker];
    s
}

#[test]
fn a_transaction_touched_every_few_seconds_is_a_long_transaction_by_its_age() {
    let snap = snapshot()
        // Seed 003: one transaction open for 14 minutes, its session busy two seconds ago.
        .with(long_transaction(900, 14 * MIN, 2, 1_234))
        .with(long_transaction(901, 11 * MIN, 4, 700))
        .with(long_transaction(902, 9 * MIN, 1, 600))
        .with(waiting_for(903, 900))
        .with(waiting_for(904, 900))
        .build();
    let d = decide_with(&snap, &rules("{}"), &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::LongTransaction);
    assert_eq!(f.shown.subject, about(deployment()));
    assert_eq!(f.shown.pids, [900, 901]);
    assert_eq!(f.shown.sessions, 2);
    assert_eq!(f.held_for, secs(4 * MIN));
    for needle in [
        "2 transactions open for more than 10m00s (oldest 14m00s, pid 900, idle in transaction, last statement 2s ago)",
        "oldest xmin held: 6234, 1234 transactions ago (vacuum cannot clean past it)",
        "2 sessions waiting on their locks",
    ] {
        assert!(
            f.shown.evidence.contains(needle),
            "{needle:?} not in {}",
            f.shown.evidence
        );
    }
    // IdleInTransaction measures state_change: a touched session is not idle for long.
    assert!(findings(&d, FindingKind::IdleInTransaction).is_empty());
    assert!(
        d.dry_run.is_empty(),
        "nothing ends without maxTransactionAge"
    );
}

#[test]
fn max_transaction_age_ends_only_sessions_idle_in_that_transaction_blockers_first() {
    let policy = rules("mode: Enforce\nidle: {maxTransactionAge: 10m, maxTerminationsPerCycle: 1}");
    let mut active = session(913).client_addr(&pod_ip(1)).active(5);
    active.session.xact_start = Some(ago(HOUR));
    let snap = snapshot()
        .with(long_transaction(910, 40 * MIN, 3, 10))
        .with(long_transaction(911, 12 * MIN, 2, 10))
        .with(waiting_for(912, 911))
        // A long statement in a long transaction: never ended.
        .with(active)
        .with(long_transaction(914, 9 * MIN, 2, 10))
        .build();
    let d = decide_with(&snap, &policy, &cluster(), &Memory::default());
    // 911 blocks a session: it goes first, within the brake of one.
    assert_eq!(pids(&d.terminate), [911]);
    assert_eq!(d.terminate[0].reason, Reason::TransactionTooOld);
    assert_eq!(d.terminate[0].blocks, 1);
    assert!(d.terminate[0].checked_out);
    assert_eq!(pids(&d.deferred), [910]);
}

#[test]
fn a_server_at_its_usable_connections_is_server_saturation_naming_the_top_holders() {
    let mut sessions: Vec<SessionBuilder> = (0..60)
        .map(|i| {
            session(1000 + i)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(30)
        })
        .collect();
    sessions.extend((0..30).map(|i| session(1100 + i).client_addr(&pod_ip(2)).idle(30)));
    sessions.extend((0..7).map(|i| {
        session(1200 + i)
            .application_name("reporting")
            .client_addr("192.168.1.10")
            .active(1)
    }));
    let d = decide_with(
        &snapshot().with_all(sessions).build(),
        &rules("{}"),
        &cluster(),
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::ServerSaturation);
    assert_eq!(f.shown.subject, Subject::Server);
    assert_eq!(f.shown.sessions, 97);
    assert_eq!(
        f.shown.evidence,
        "97 of the 97 connections the server accepts from applications are in use (100%); top \
         holders: Deployment/orders-api 90 (30 idle, 60 idle in transaction); \
         reporting@192.168.1.10 7 (7 active)"
    );

    let below = snapshot()
        .with_all((0..87).map(|i| session(1300 + i)))
        .build();
    let d = decide_standalone(&below, &rules("{}"));
    assert!(findings(&d, FindingKind::ServerSaturation).is_empty());
    let at = snapshot()
        .with_all((0..88).map(|i| session(1300 + i)))
        .build();
    let d = decide_standalone(&at, &rules("{}"));
    assert_eq!(findings(&d, FindingKind::ServerSaturation).len(), 1);
}

#[test]
fn overbooked_counts_the_clients_seen_over_the_window_ranked_by_what_they_hold() {
    let policy = rules("budgets: {maxConnectionsPerPod: 25}");
    let client_on = |app: &str, host: u8, pid: i64| {
        session(pid)
            .application_name(app)
            .client_addr(&format!("192.168.1.{host}"))
    };
    // Cycle 1: api from three hosts, a healthy "aaa" batch from one (sorted first by name).
    let first = snapshot()
        .with_all((0..3).map(|h| client_on("api", 10 + h, 800 + i64::from(h))))
        .with_all((0..5).map(|i| client_on("api", 10, 810 + i)))
        .with(client_on("aaa-batch", 20, 820))
        .build();
    let d1 = decide_standalone(&first, &policy);
    let f = the_finding(&d1, FindingKind::Overbooked);
    assert_eq!(d1.capacity.booked_connections, Some(100));
    let ranked =
        f.shown.evidence.find("api@").unwrap() < f.shown.evidence.find("aaa-batch@").unwrap();
    assert!(ranked, "the biggest holder first: {}", f.shown.evidence);

    // Thirty seconds later two api hosts are between connections: still booked, still found.
    let second = snapshot()
        .at(later(30))
        .with(client_on("api", 10, 800))
        .with(client_on("aaa-batch", 20, 820))
        .build();
    let d2 = decide_with(&second, &policy, &ClusterView::default(), &d1.memory);
    assert_eq!(d2.capacity.booked_connections, Some(100));
    assert_eq!(findings(&d2, FindingKind::Overbooked).len(), 1);

    // A window after they were last seen, they no longer count.
    let later_on = snapshot()
        .at(later(10 * MIN + 1))
        .with(client_on("api", 10, 800))
        .with(client_on("aaa-batch", 20, 820))
        .build();
    let d3 = decide_with(&later_on, &policy, &ClusterView::default(), &d2.memory);
    assert_eq!(d3.capacity.booked_connections, Some(50));
}

#[test]
fn durations_in_the_decisions_json_are_seconds() {
    let snap = snapshot().with(session(1400).idle(31 * MIN)).build();
    let d = decide_standalone(&snap, &rules(DRY_RUN));
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["dryRun"][0]["inStateForSeconds"], 1860.0);
    assert_eq!(json["groups"][0]["oldestIdleSeconds"], 1860.0);
    assert!(json.to_string().find("secs").is_none(), "{json:#}");
}
