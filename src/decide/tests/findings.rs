//! Findings (DESIGN.md §6) and the window: leak shapes named on the right source, healthy ones not.

use super::*;

const LEAKS: &str = "
leakDetection: {window: 10m, newSessionsPerSecond: 20}
";

/// Sessions `range` on pod `n`, each idle for `idle` seconds.
fn idle_on_pod(n: u8, range: std::ops::Range<i64>, idle: i64) -> Vec<SessionBuilder> {
    range
        .map(|pid| session(pid).client_addr(&pod_ip(n)).idle(idle))
        .collect()
}

/// The fork leak of seed 000 on pod 1: four forked workers' sessions idle for `stranded`
/// seconds, the parent's session busy a moment ago.
fn forked_workers(stranded: i64) -> Vec<SessionBuilder> {
    let mut sessions = idle_on_pod(1, 300..304, stranded);
    sessions.push(session(305).client_addr(&pod_ip(1)).idle(1));
    sessions
}

#[test]
fn sessions_stranded_idle_while_their_pod_keeps_working_are_idle_accumulation_by_default() {
    let d = decide_with(
        &snapshot().with_all(forked_workers(31 * MIN)).build(),
        &rules("{}"),
        &cluster(),
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::IdleAccumulation);
    assert_eq!(f.shown.subject, about(deployment()));
    assert_eq!(sorted(f.shown.pids.clone()), [300, 301, 302, 303]);
    assert_eq!(f.shown.sessions, 4);
    assert!(
        f.shown.evidence.starts_with(&format!(
            "4 sessions stranded idle for more than 30m00s on {}, which keeps using 1 other session",
            pod_name(1)
        )),
        "{}",
        f.shown.evidence
    );
    // Stranded since the second oldest passed the age: a minute ago. Suspected, not confirmed.
    assert_eq!(f.held_for, secs(MIN));
    assert_eq!(f.confirms_in, Some(secs(9 * MIN)));
    assert!(f.present && !f.confirmed);
    assert!(
        d.terminate.is_empty() && d.dry_run.is_empty(),
        "no timeout, no termination"
    );

    // Two hours on, it has held far longer than the window.
    let d = decide_with(
        &snapshot().with_all(forked_workers(2 * HOUR)).build(),
        &rules("{}"),
        &cluster(),
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::IdleAccumulation);
    assert!(f.confirmed && f.started);
}

#[test]
fn a_lifo_pool_whose_spares_are_replaced_within_their_lifetime_is_no_leak() {
    // HikariCP-like: 10 connections, 2 busy, 8 spares idle until maxLifetime (30m) replaces them.
    let lifo = |spares_idle: i64| {
        let mut sessions: Vec<SessionBuilder> = (0..8)
            .map(|i| {
                session(310 + i)
                    .client_addr(&pod_ip(1))
                    .started_ago(spares_idle + 1)
                    .idle(spares_idle)
            })
            .collect();
        sessions.push(session(318).client_addr(&pod_ip(1)).active(0));
        sessions.push(session(319).client_addr(&pod_ip(1)).idle(0));
        snapshot().with_all(sessions).build()
    };
    for idle in [11 * MIN, 20 * MIN, 29 * MIN + 30] {
        let d = decide_with(&lifo(idle), &rules("{}"), &cluster(), &Memory::default());
        assert!(d.findings.is_empty(), "idle {idle}s: {:#?}", d.findings);
    }
}

#[test]
fn an_application_idle_as_a_whole_or_a_recycling_pool_is_no_leak() {
    // Every session idle for hours, none in use: the pool waits for traffic.
    let idle_app = snapshot()
        .with_all(idle_on_pod(1, 320..325, 3 * HOUR))
        .build();
    let d = decide_with(&idle_app, &rules("{}"), &cluster(), &Memory::default());
    assert!(d.findings.is_empty(), "{:#?}", d.findings);

    // A pool that recycles its connections every 10 minutes: never stranded.
    let mut recycling: Vec<SessionBuilder> = (0..4)
        .map(|i| {
            session(330 + i)
                .client_addr(&pod_ip(1))
                .started_ago(10 * MIN - i * MIN)
                .idle(10 * MIN - i * MIN - 1)
        })
        .collect();
    recycling.push(session(334).client_addr(&pod_ip(1)).active(0));
    let d = decide_with(
        &snapshot().with_all(recycling).build(),
        &rules("{}"),
        &cluster(),
        &Memory::default(),
    );
    assert!(d.findings.is_empty(), "{:#?}", d.findings);
}

#[test]
fn idle_accumulation_needs_two_stranded_sessions_on_one_pod() {
    let decide_for = |sessions: Vec<SessionBuilder>| {
        let snap = snapshot().with_all(sessions).build();
        decide_with(&snap, &rules("{}"), &cluster(), &Memory::default())
    };
    let busy_on = |n: u8, pid: i64| session(pid).client_addr(&pod_ip(n)).active(0);

    let one = decide_for(vec![
        session(340).client_addr(&pod_ip(1)).idle(HOUR),
        busy_on(1, 341),
    ]);
    assert!(findings(&one, FindingKind::IdleAccumulation).is_empty());

    // Spread over two pods, one stranded each.
    let spread = decide_for(vec![
        session(342).client_addr(&pod_ip(1)).idle(HOUR),
        session(343).client_addr(&pod_ip(2)).idle(HOUR),
        busy_on(1, 344),
        busy_on(2, 345),
    ]);
    assert!(findings(&spread, FindingKind::IdleAccumulation).is_empty());

    // Idle for exactly the age: not yet stranded.
    let young = decide_for([idle_on_pod(1, 346..348, 30 * MIN), vec![busy_on(1, 348)]].concat());
    assert!(findings(&young, FindingKind::IdleAccumulation).is_empty());
}

#[test]
fn with_an_idle_threshold_that_many_stranded_sessions_are_idle_accumulation_even_at_rest() {
    let policy = rules("leakDetection: {strandedIdleAge: 10m, idleThreshold: 5}");
    let decide_for = |sessions: Vec<SessionBuilder>| {
        let snap = snapshot().with_all(sessions).build();
        decide_with(&snap, &policy, &cluster(), &Memory::default())
    };
    let four = decide_for(idle_on_pod(1, 350..354, HOUR));
    assert!(findings(&four, FindingKind::IdleAccumulation).is_empty());

    // Idle for 2h, 1h50m, … 1h10m: held since the fifth oldest (1h20m) passed 10m.
    let six = decide_for(
        (0..6)
            .map(|i| {
                session(360 + i)
                    .client_addr(&pod_ip(1))
                    .idle(2 * HOUR - i * 10 * MIN)
            })
            .collect(),
    );
    let f = the_finding(&six, FindingKind::IdleAccumulation);
    assert_eq!(f.shown.pids, [360, 361, 362, 363, 364, 365]);
    assert!(
        f.shown
            .evidence
            .starts_with("6 sessions idle for more than 10m00s"),
        "{}",
        f.shown.evidence
    );
    assert_eq!(f.held_for, secs(HOUR + 10 * MIN));
    assert!(f.confirmed && f.started);
}

#[test]
fn idle_in_transaction_is_found_past_its_detection_age_whatever_the_timeouts() {
    // The termination timeout is 30m; detection has its own age.
    let policy = rules(
        "
idle: {idleInTransactionTimeout: 30m}
leakDetection: {window: 10m, idleInTransactionAge: 5m}
",
    );
    let snap = snapshot()
        .with(
            session(320)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(6 * MIN),
        )
        .with(
            session(321)
                .client_addr(&pod_ip(2))
                .idle_in_transaction(4 * MIN),
        )
        .build();
    let d = decide_with(&snap, &policy, &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.shown.subject, about(deployment()));
    assert_eq!(f.shown.pids, [320]);
    assert_eq!(f.shown.sessions, 1);
    assert_eq!(f.held_for, secs(MIN));
    assert_eq!(f.confirms_in, Some(secs(9 * MIN)));
    assert!(f.present && !f.confirmed);
    assert!(d.dry_run.is_empty(), "detecting is not condemning");

    let snap = snapshot()
        .with(
            session(321)
                .client_addr(&pod_ip(2))
                .idle_in_transaction(5 * MIN),
        )
        .build();
    let d = decide_with(&snap, &policy, &cluster(), &Memory::default());
    assert!(findings(&d, FindingKind::IdleInTransaction).is_empty());
}

#[test]
fn a_policy_of_nothing_reports_idle_in_transaction_after_two_minutes() {
    let policy = rules("{}");
    let snap = snapshot()
        .with(session(322).idle_in_transaction(2 * MIN + 1))
        .with(session(323).idle_in_transaction(2 * MIN))
        .build();
    let d = decide_standalone(&snap, &policy);
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.shown.subject, about(client("app", None)));
    assert_eq!(f.shown.pids, [322]);
    assert!(d.dry_run.is_empty() && d.terminate.is_empty());
}

#[test]
fn a_pod_whose_every_session_is_idle_in_transaction_is_called_a_pinned_pool() {
    let pinned = (0..25).map(|i| {
        session(330 + i)
            .client_addr(&pod_ip(1))
            .idle_in_transaction(10 * MIN)
    });
    let snap = snapshot().with_all(pinned).build();
    let d = decide_with(&snap, &rules("{}"), &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.shown.sessions, 25);
    assert_eq!(f.shown.pids.len(), 25, "a pinned pool is named in full");
    assert!(
        f.shown.evidence.contains(
            "every one of the 25 sessions of orders-api-7c9d8f6b5-1 is idle in a transaction"
        ),
        "{}",
        f.shown.evidence
    );
    assert!(f.shown.cause.contains("pool pinned"), "{}", f.shown.cause);
    assert!(
        f.shown.cause.contains(CHECKED_OUT_NOTE),
        "{}",
        f.shown.cause
    );
}

/// `count` sessions on pod `n`, the oldest started `oldest_start` before `t0`, one more each
/// minute after; all idle in a transaction for a minute but the youngest, which is running a
/// statement (so that the pool is not pinned: see [`pinned_pool`]).
fn pool_on_pod(n: u8, count: i64, oldest_start: i64) -> Vec<SessionBuilder> {
    (0..count)
        .map(|i| {
            let s = session(400 + i)
                .client_addr(&pod_ip(n))
                .started_at(ago(oldest_start - i * MIN));
            if i == count - 1 {
                s.active(1)
            } else {
                s.state(SessionState::IdleInTransaction)
                    .in_state_since(ago(MIN))
            }
        })
        .collect()
}

#[test]
fn pool_saturation_holds_since_the_budget_th_oldest_session_started() {
    let policy = rules(
        "
budgets: {maxConnectionsPerPod: 25}
leakDetection: {window: 10m}
",
    );
    // 30 sessions started 60, 59, … 31 minutes ago: the 25th oldest 36 minutes ago.
    let snap = snapshot().with_all(pool_on_pod(1, 30, 60 * MIN)).build();
    let d = decide_with(&snap, &policy, &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::PoolSaturation);
    assert_eq!(f.shown.subject, about(deployment()));
    assert_eq!(f.held_for, secs(36 * MIN));
    assert!(f.confirmed);
    assert!(
        f.shown
            .evidence
            .contains("holds 30 sessions, over its budget of 25"),
        "{}",
        f.shown.evidence
    );
    assert!(
        f.shown.cause.contains("several worker processes") && f.shown.cause.contains(POOL_MAX),
        "over budget is not a pinned pool: {}",
        f.shown.cause
    );
    assert!(!f.shown.cause.contains("pinned"), "{}", f.shown.cause);

    // Exactly at the budget, most of it idle in a transaction: pinned, and ending them does not
    // give the application its pool back.
    let at = snapshot().with_all(pool_on_pod(1, 25, 60 * MIN)).build();
    let d = decide_with(&at, &policy, &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::PoolSaturation);
    assert!(
        f.shown
            .evidence
            .contains("holds 25 sessions, its budget is 25"),
        "{}",
        f.shown.evidence
    );
    assert!(
        f.shown.cause.contains("pinned at pool_size + max_overflow"),
        "{}",
        f.shown.cause
    );
    assert!(
        f.shown.cause.contains(CHECKED_OUT_NOTE),
        "{}",
        f.shown.cause
    );

    let below = snapshot().with_all(pool_on_pod(1, 24, 60 * MIN)).build();
    let d = decide_with(&below, &policy, &cluster(), &Memory::default());
    assert!(findings(&d, FindingKind::PoolSaturation).is_empty());
}

#[test]
fn pool_saturation_is_confirmed_only_once_it_has_held_for_the_window() {
    let policy = rules(
        "
budgets: {maxConnectionsPerPod: 25}
leakDetection: {window: 10m}
",
    );
    // 25 sessions, the last of them started 5 minutes ago.
    let pool = pool_on_pod(1, 25, 29 * MIN);
    let first = snapshot().with_all(pool.clone()).build();
    let d1 = decide_with(&first, &policy, &cluster(), &Memory::default());
    let f = the_finding(&d1, FindingKind::PoolSaturation);
    assert_eq!(f.held_for, secs(5 * MIN));
    assert!(f.present && !f.confirmed && !f.started);

    let second = snapshot().at(later(6 * MIN)).with_all(pool).build();
    let d2 = decide_with(&second, &policy, &cluster(), &d1.memory);
    let f = the_finding(&d2, FindingKind::PoolSaturation);
    assert_eq!(f.held_for, secs(11 * MIN));
    assert!(f.present && f.confirmed && f.started);
}

#[test]
fn a_workloads_pool_max_overrides_the_policys_per_pod_budget() {
    let with_pool_max = |pool_max| ClusterView {
        workloads: vec![workload(2, Some(pool_max))],
        ..cluster()
    };
    let snap = snapshot().with_all(pool_on_pod(1, 25, 60 * MIN)).build();

    // The policy allows 50 per pod, the application declares 25: saturated.
    let generous = rules("budgets: {maxConnectionsPerPod: 50}");
    let d = decide_with(&snap, &generous, &with_pool_max(25), &Memory::default());
    let f = the_finding(&d, FindingKind::PoolSaturation);
    assert!(
        f.shown.evidence.contains("its budget is 25"),
        "{}",
        f.shown.evidence
    );

    // The policy allows 25 per pod, the application declares 30: not saturated.
    let strict = rules("budgets: {maxConnectionsPerPod: 25}");
    let d = decide_with(&snap, &strict, &with_pool_max(30), &Memory::default());
    assert!(findings(&d, FindingKind::PoolSaturation).is_empty());

    // Without the declaration, the policy's budget applies.
    let d = decide_with(&snap, &strict, &cluster(), &Memory::default());
    assert_eq!(findings(&d, FindingKind::PoolSaturation).len(), 1);
}

#[test]
fn a_zero_pool_max_on_a_workload_does_not_crash_the_decision() {
    // `poolwarden.io/pool-max: "0"` is written by application owners, not checked by any schema.
    let declared_zero = ClusterView {
        workloads: vec![workload(2, Some(0))],
        ..cluster()
    };
    let snap = snapshot()
        .with(session(450).client_addr(&pod_ip(1)).idle(HOUR))
        .build();
    let d = decide_with(&snap, &rules(ENFORCE), &declared_zero, &Memory::default());
    assert_eq!(pids(&d.terminate), [450]);
}

/// A long-lived client outside the cluster, connected long before either snapshot.
fn reporting_client() -> SessionBuilder {
    session(500)
        .application_name("reporting")
        .client_addr("192.168.1.10")
        .started_at(ago(5 * HOUR))
        .idle(MIN)
}

/// A churn sample from `at` to half a second later: `short_lived` appeared and vanished.
fn churn_sample(at: Timestamp, opened: (i64, i64), short_lived: &[SessionBuilder]) -> ChurnSample {
    ChurnSample {
        started_at: at,
        ended_at: at + SignedDuration::from_millis(500),
        looks: 50,
        opened_at_start: Some(opened.0),
        opened_at_end: Some(opened.1),
        short_lived: short_lived.iter().map(|s| s.build(at)).collect(),
        persisted: 0,
    }
}

/// A NullPool worker's session on pod 1, seen a moment after it opened.
pub(super) fn nullpool(pid: i64) -> SessionBuilder {
    session(pid)
        .client_addr(&pod_ip(1))
        .started_ago(0)
        .active(0)
}

/// Two decisions ten seconds apart; the second snapshot's sample shows `short_lived`, and a
/// reconnecting pool on pod 2 whose new sessions persist (they are in the snapshot, not the
/// sample's short-lived list).
pub(super) fn churn_between(
    opened_before: i64,
    opened_after: i64,
    short_lived: &[SessionBuilder],
) -> (Decision, Decision) {
    let policy = rules("{}");
    let first = snapshot()
        .sessions_opened(opened_before)
        .with(reporting_client())
        .build();
    let d1 = decide_with(&first, &policy, &cluster(), &Memory::default());
    let mut second = snapshot()
        .at(later(10))
        .sessions_opened(opened_after)
        .with(reporting_client())
        .with_all((0..5).map(|i| {
            session(510 + i)
                .client_addr(&pod_ip(2))
                .started_ago(2)
                .idle(1)
        }));
    second.churn = Some(churn_sample(
        later(10),
        (opened_after, opened_after),
        short_lived,
    ));
    let d2 = decide_with(&second.build(), &policy, &cluster(), &d1.memory);
    (d1, d2)
}

#[test]
fn connection_churn_is_blamed_on_whoever_opens_sessions_that_vanish_not_on_a_refilling_pool() {
    let (d1, d2) = churn_between(5_000, 6_000, &[nullpool(501), nullpool(502), nullpool(503)]);
    assert!(findings(&d1, FindingKind::ConnectionChurn).is_empty());
    assert_eq!(d1.capacity.new_sessions_per_second, None);

    assert_eq!(d2.capacity.new_sessions_per_second, Some(100.0));
    let f = the_finding(&d2, FindingKind::ConnectionChurn);
    assert_eq!(f.shown.subject, about(deployment()));
    assert_eq!(sorted(f.shown.pids.clone()), [501, 502, 503]);
    assert!(
        f.shown.evidence.contains("100.0 new sessions/s"),
        "{}",
        f.shown.evidence
    );
}

#[test]
fn connection_churn_keeps_its_subject_from_cycle_to_cycle_and_confirms() {
    let policy = rules("{}");
    let pods = || ClusterView {
        pods: vec![
            pod(1),
            pod(2),
            PodInfo {
                name: "celery-0".into(),
                ips: vec![ip("10.0.9.9")],
                started_at: Some(ago(24 * HOUR)),
                workload: WorkloadRef {
                    namespace: "shop".into(),
                    kind: "Deployment".into(),
                    name: "celery".into(),
                },
                ready: true,
            },
        ],
        ..ClusterView::default()
    };
    let celery = |pid: i64| {
        session(pid)
            .client_addr("10.0.9.9")
            .started_ago(0)
            .active(0)
    };
    let mut memory = Memory::default();
    let mut subjects = Vec::new();
    // 20 new sessions a second for eleven minutes, a cycle every 30 s. Some cycles' looks catch
    // nothing, one catches a session of the reconnecting API pool: the subject stays.
    for cycle in 0..23i64 {
        let at = later(cycle * 30);
        let opened = 10_000 + cycle * 600;
        let caught: Vec<SessionBuilder> = match cycle % 4 {
            0 => vec![celery(600), celery(601), celery(602)],
            1 => vec![],
            2 => vec![
                celery(603),
                celery(604),
                session(605).client_addr(&pod_ip(2)).started_ago(0).idle(0),
            ],
            _ => vec![celery(606), celery(607)],
        };
        let mut snap = snapshot().at(at).sessions_opened(opened);
        snap.churn = Some(churn_sample(at, (opened, opened + 10), &caught));
        let d = decide_with(&snap.build(), &policy, &pods(), &memory);
        if cycle > 0 {
            let found = findings(&d, FindingKind::ConnectionChurn);
            subjects.push(
                found
                    .iter()
                    .map(|f| f.shown.subject.to_string())
                    .collect::<Vec<_>>(),
            );
            if cycle == 22 {
                assert!(found.iter().all(|f| f.confirmed), "{found:#?}");
            }
        }
        memory = d.memory;
    }
    assert!(
        subjects.iter().all(|s| s == &["Deployment/celery"]),
        "{subjects:?}"
    );
}

#[test]
fn every_churner_over_the_threshold_is_named_whatever_its_share() {
    // Three NullPool workers: 12 new sessions a second, 30, and 3; a look every 30 s for eleven
    // minutes. Each look's half second catches a few of their sessions, in proportion on
    // average but not in any one look: the 12/s worker is caught three times in the first look,
    // beside ten of the other's (23%), and not at all in some.
    let worker = |n: u8| PodInfo {
        name: format!("celery-{n}").into(),
        ips: vec![ip(&format!("10.0.9.{n}"))],
        started_at: Some(ago(24 * HOUR)),
        workload: WorkloadRef {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: format!("celery-{n}").into(),
        },
        ready: true,
    };
    let pods = ClusterView {
        pods: vec![worker(1), worker(2), worker(3)],
        ..ClusterView::default()
    };
    let caught_12 = [3, 2, 5, 3, 0, 6, 3, 4, 2, 5, 3, 0];
    let caught_30 = [10, 8, 7, 9, 11, 6, 9, 8, 10, 7, 9, 9];
    let caught_3 = [0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    let policy = rules("{}");
    let mut memory = Memory::default();
    let mut pid = 10_000;
    for look in 0..23usize {
        let at = later(look as i64 * 30);
        let opened = 100_000 + look as i64 * 45 * 30;
        let mut caught = Vec::new();
        for (n, counts) in [(1, caught_12), (2, caught_30), (3, caught_3)] {
            for _ in 0..counts[look % counts.len()] {
                pid += 1;
                caught.push(
                    session(pid)
                        .client_addr(&format!("10.0.9.{n}"))
                        .started_ago(0)
                        .active(0),
                );
            }
        }
        let mut snap = snapshot().at(at).sessions_opened(opened);
        snap.churn = Some(churn_sample(at, (opened, opened + 22), &caught));
        let d = decide_with(&snap.build(), &policy, &pods, &memory);
        let churners: Vec<(String, bool)> = findings(&d, FindingKind::ConnectionChurn)
            .iter()
            .map(|f| (f.shown.subject.to_string(), f.confirmed))
            .collect();
        // Both from the first look, and confirmed a window later (within window + 2 intervals).
        let confirmed = look >= 20;
        assert_eq!(
            churners,
            [
                ("Deployment/celery-1".to_owned(), confirmed),
                ("Deployment/celery-2".to_owned(), confirmed)
            ],
            "look {look}"
        );
        memory = d.memory;
    }
}

#[test]
fn a_source_caught_once_or_twice_beside_a_churner_is_not_named() {
    // 80 new sessions a second: a worker on pod 1 opens them; pod 2 made one short-lived
    // connection (a health check), and was caught. Its share is small and one session says
    // nothing of its rate.
    let policy = rules("{}");
    let mut snap = snapshot().sessions_opened(1_000);
    let caught: Vec<SessionBuilder> = (0..12)
        .map(nullpool)
        .chain([session(99).client_addr(&pod_ip(2)).started_ago(0).active(0)])
        .collect();
    snap.churn = Some(churn_sample(t0(), (1_000, 1_040), &caught));
    let d = decide_standalone(&snap.build(), &policy);
    let named: Vec<String> = findings(&d, FindingKind::ConnectionChurn)
        .iter()
        .map(|f| f.shown.subject.to_string())
        .collect();
    assert_eq!(named, ["app@10.0.0.1"]);
}

#[test]
fn churn_seen_by_nobody_is_the_servers_and_a_single_look_measures_its_own_rate() {
    // `poolwarden check`: no previous decision, the sample's own counter gives the rate.
    let mut snap = snapshot().sessions_opened(1_000);
    snap.churn = Some(churn_sample(t0(), (1_000, 1_010), &[]));
    let d = decide_standalone(&snap.build(), &rules("{}"));
    assert_eq!(d.capacity.new_sessions_per_second, Some(20.0));
    let f = the_finding(&d, FindingKind::ConnectionChurn);
    assert_eq!(f.shown.subject, Subject::Server);
    assert!(
        f.shown.evidence.contains("nobody can be named"),
        "{}",
        f.shown.evidence
    );
}

#[test]
fn connection_churn_at_or_below_the_threshold_is_not_a_finding() {
    let (_, d) = churn_between(5_000, 5_050, &[nullpool(501)]);
    assert_eq!(d.capacity.new_sessions_per_second, Some(5.0));
    assert!(findings(&d, FindingKind::ConnectionChurn).is_empty());

    let (_, d) = churn_between(5_000, 5_100, &[nullpool(501)]);
    assert_eq!(d.capacity.new_sessions_per_second, Some(10.0));
    assert!(findings(&d, FindingKind::ConnectionChurn).is_empty());
}

#[test]
fn connection_churn_needs_a_previous_sample_or_a_churn_sample() {
    let snap = snapshot()
        .sessions_opened(1_000_000)
        .with(session(501).client_addr(&pod_ip(1)).started_ago(1))
        .build();
    let d = decide_with(&snap, &rules(LEAKS), &cluster(), &Memory::default());
    assert_eq!(d.capacity.new_sessions_per_second, None);
    assert!(findings(&d, FindingKind::ConnectionChurn).is_empty());
}

#[test]
fn sessions_of_a_departed_pod_are_an_orphaned_finding() {
    let gone_at = ago(2 * MIN);
    let with_departed = ClusterView {
        departed: vec![departed(4, gone_at)],
        ..cluster()
    };
    let snap = snapshot()
        .with(
            session(600)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .idle(5 * MIN),
        )
        .with(
            session(601)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .active(5 * MIN),
        )
        .with(session(602).client_addr(&pod_ip(1)).idle(5 * MIN))
        .build();
    let d = decide_with(&snap, &rules(DRY_RUN), &with_departed, &Memory::default());
    let f = the_finding(&d, FindingKind::Orphaned);
    assert_eq!(f.shown.subject, about(deployment()));
    assert_eq!(sorted(f.shown.pids.clone()), [600, 601]);
    assert!(
        f.shown.evidence.contains(&pod_name(4)),
        "{}",
        f.shown.evidence
    );
    assert_eq!(f.held_for, secs(2 * MIN));
    assert!(!f.confirmed);
}

#[test]
fn overbooked_when_max_replicas_times_pool_max_exceeds_the_usable_connections() {
    let overbooked = ClusterView {
        workloads: vec![workload(8, Some(15))],
        ..cluster()
    };
    let d = decide_with(
        &snapshot().build(),
        &rules(LEAKS),
        &overbooked,
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::Overbooked);
    assert_eq!(f.shown.subject, Subject::Server);
    assert!(f.shown.evidence.contains("120"), "{}", f.shown.evidence);
    assert!(f.shown.evidence.contains("97"), "{}", f.shown.evidence);
    assert!(
        f.shown.evidence.contains(
            "Deployment/orders-api: 8 replicas (poolwarden.io/max-replicas) x 15 per pod \
             (declared) = 120"
        ),
        "{}",
        f.shown.evidence
    );
    assert!(
        !f.confirmed,
        "it holds for the window, as every finding does"
    );
    assert_eq!(d.capacity.booked_connections, Some(120));

    let fits = ClusterView {
        workloads: vec![workload(6, Some(15))],
        ..cluster()
    };
    let d = decide_with(
        &snapshot().build(),
        &rules(LEAKS),
        &fits,
        &Memory::default(),
    );
    assert!(findings(&d, FindingKind::Overbooked).is_empty());
    assert_eq!(d.capacity.booked_connections, Some(90));
}

#[test]
fn overbooked_outside_kubernetes_counts_every_client_at_the_policys_per_pod_budget() {
    let policy = rules("budgets: {maxConnectionsPerPod: 25}");
    let clients = |n: u8| {
        (1..=n)
            .map(|i| session(700 + i64::from(i)).client_addr(&format!("192.168.1.{i}")))
            .collect::<Vec<_>>()
    };

    let d = decide_standalone(&snapshot().with_all(clients(4)).build(), &policy);
    let f = the_finding(&d, FindingKind::Overbooked);
    assert!(f.shown.evidence.contains("100"), "{}", f.shown.evidence);
    assert!(f.shown.evidence.contains("97"), "{}", f.shown.evidence);
    assert_eq!(d.capacity.booked_connections, Some(100));

    let d = decide_standalone(&snapshot().with_all(clients(3)).build(), &policy);
    assert!(findings(&d, FindingKind::Overbooked).is_empty());
    assert_eq!(d.capacity.booked_connections, Some(75));
}

#[test]
fn overbooked_when_the_policys_own_budget_exceeds_the_usable_connections() {
    let d = decide_standalone(
        &snapshot().build(),
        &rules("budgets: {maxConnections: 120}"),
    );
    let f = the_finding(&d, FindingKind::Overbooked);
    assert!(f.shown.evidence.contains("120"), "{}", f.shown.evidence);
    assert!(f.shown.evidence.contains("97"), "{}", f.shown.evidence);

    let d = decide_standalone(&snapshot().build(), &rules("budgets: {maxConnections: 97}"));
    assert!(findings(&d, FindingKind::Overbooked).is_empty());
}

pub(super) const STUCK_TX: &str = "
leakDetection: {window: 10m, idleInTransactionAge: 5m}
";

/// A session of pod 1 idle in a transaction since `since`.
pub(super) fn stuck_since(pid: i64, since: Timestamp) -> SessionBuilder {
    session(pid)
        .client_addr(&pod_ip(1))
        .state(SessionState::IdleInTransaction)
        .in_state_since(since)
}

/// Looks every 30 s from `t0` to `t0 + until` (seconds), each snapshot made by `look(at)`;
/// returns each decision with its time.
fn looks_every_30s(
    until: i64,
    policy: &Rules,
    cluster: &ClusterView,
    look: impl Fn(i64) -> Snapshot,
) -> Vec<(i64, Decision)> {
    let mut memory = Memory::default();
    let mut decisions = Vec::new();
    for at in (0..=until).step_by(30) {
        let d = decide_with(&look(at), policy, cluster, &memory);
        memory = d.memory.clone();
        decisions.push((at, d));
    }
    decisions
}

#[test]
fn an_unconfirmed_finding_whose_source_recovered_starts_its_window_again() {
    let policy = rules(STUCK_TX);
    // Until t0 + 30s pod 1 holds a session idle in a transaction since t0 - 6m (1m past the
    // age); it commits, and the pod is healthy until another session sits idle in a transaction
    // from t0 + 4m, past the age at t0 + 9m.
    let decisions = looks_every_30s(10 * MIN, &policy, &cluster(), |at| {
        let snap = snapshot().at(later(at));
        if at <= 30 {
            snap.with(stuck_since(800, ago(6 * MIN)))
        } else if at >= 4 * MIN {
            snap.with(stuck_since(801, later(4 * MIN)))
        } else {
            snap.with(session(800).client_addr(&pod_ip(1)).idle(1))
        }
        .build()
    });
    let held: Vec<(i64, Duration)> = decisions
        .iter()
        .filter_map(|(at, d)| {
            let f = findings(d, FindingKind::IdleInTransaction);
            f.first().map(|f| (*at, f.held_for))
        })
        .collect();
    assert_eq!(held[..2], [(0, secs(MIN)), (30, secs(MIN + 30))]);
    // The new session's shape began 3.5 minutes after the finding was last seen: more than
    // three looks. A recovery: the window starts again, from when it crossed the age.
    assert_eq!(held[2..], [(9 * MIN + 30, secs(30)), (10 * MIN, secs(MIN))]);
    assert!(
        decisions
            .iter()
            .all(|(_, d)| d.findings.iter().all(|f| !f.confirmed))
    );
}

#[test]
fn a_finding_whose_sessions_were_replaced_keeps_its_window() {
    let policy = rules(STUCK_TX);
    // Pod 1's session idle in a transaction since t0 - 6m ends at t0 + 1m; its replacement sits
    // idle in a transaction from t0 + 1m05s, past the age at t0 + 6m05s. Nothing shows the
    // finding for five minutes, yet the pod was in its shape all along.
    let decisions = looks_every_30s(10 * MIN, &policy, &cluster(), |at| {
        let snap = snapshot().at(later(at));
        if at <= MIN {
            snap.with(stuck_since(800, ago(6 * MIN)))
        } else {
            snap.with(stuck_since(801, later(MIN + 5)))
        }
        .build()
    });
    let shown: Vec<(i64, Duration, bool)> = decisions
        .iter()
        .filter_map(|(at, d)| {
            let f = findings(d, FindingKind::IdleInTransaction);
            f.first().map(|f| (*at, f.held_for, f.confirmed))
        })
        .collect();
    assert_eq!(shown.len(), 3 + 8, "{shown:?}");
    assert_eq!(shown[3], (6 * MIN + 30, secs(7 * MIN + 30), false));
    // Since t0 - 1m, as if never interrupted: confirmed at t0 + 9m.
    assert_eq!(shown[8], (9 * MIN, secs(10 * MIN), true));
}

/// Seed 001 as it really runs, in 30 s looks with the default policy: pod 1's pool of 25 sessions
/// sits idle in a transaction from `t0`; every 8 minutes (at 8m05s, 16m05s) a garbage collection
/// returns them all and the pool replaces them with 25 new sessions (new pids), idle in a
/// transaction a second later. Beside it, outside any cluster:
/// - storefront (10.1.0.2): 10 sessions, 2 running statements, 3 between the statements of a
///   transaction (idle in it for under a second), 5 idle;
/// - reports (10.1.0.3): 2 workers, each inside a transaction waiting a few seconds for an HTTP
///   call at every look.
fn seed_001_look(at: i64) -> Snapshot {
    let generation = (at - 5).max(0) / (8 * MIN);
    let replaced = generation * 8 * MIN + if generation == 0 { 0 } else { 5 };
    let settled = replaced + if generation == 0 { 0 } else { 1 };
    let pinned = (0..25).map(|i| {
        session(1000 * (generation + 1) + i)
            .application_name("orders-api")
            .client_addr("10.1.0.1")
            .started_at(later(replaced))
            .state(SessionState::IdleInTransaction)
            .in_state_since(later(settled))
    });
    let storefront = (0..10).map(|i| {
        let s = session(100 + i)
            .application_name("storefront")
            .client_addr("10.1.0.2")
            .started_ago(HOUR);
        match i {
            0 | 1 => s.active(0),
            2..=4 => s.idle_in_transaction(0),
            _ => s.idle(3),
        }
    });
    let reports = (0..2).map(|i| {
        session(200 + i)
            .application_name("reports")
            .client_addr("10.1.0.3")
            .started_ago(HOUR)
            .idle_in_transaction(3 + i)
    });
    snapshot()
        .at(later(at))
        .with_all(pinned)
        .with_all(storefront)
        .with_all(reports)
        .build()
}

#[test]
fn a_pinned_pool_whose_sessions_a_garbage_collection_replaces_is_confirmed_and_stays_so() {
    let decisions = looks_every_30s(
        20 * MIN,
        &rules("{}"),
        &ClusterView::default(),
        seed_001_look,
    );
    let leaky = about(client("orders-api", Some("10.1.0.1")));
    let confirmed_at = |kind: FindingKind| {
        decisions
            .iter()
            .find(|(_, d)| {
                d.findings
                    .iter()
                    .any(|f| f.shown.subject == leaky && f.shown.kind == kind && f.confirmed)
            })
            .map(|(at, _)| *at)
    };
    // Pinned from t0, every session settled 10 s later: seen at the first look after that.
    let pinned = confirmed_at(FindingKind::PoolSaturation).expect("PoolSaturation confirms");
    assert!(pinned <= 10 * MIN + 2 * 30, "confirmed at {pinned}s");
    // Within window + idleInTransactionAge + 2 intervals, through the replacement at 8m05s.
    let idle_in_tx =
        confirmed_at(FindingKind::IdleInTransaction).expect("IdleInTransaction confirms");
    assert!(
        idle_in_tx <= 10 * MIN + 2 * MIN + 2 * 30,
        "confirmed at {idle_in_tx}s"
    );

    for (at, d) in &decisions {
        for (kind, since) in [
            (FindingKind::PoolSaturation, pinned),
            (FindingKind::IdleInTransaction, idle_in_tx),
        ] {
            let found: Vec<&Finding> = d
                .findings
                .iter()
                .filter(|f| f.shown.subject == leaky && f.shown.kind == kind)
                .collect();
            if *at >= since {
                // Through the replacement at 16m05s: still confirmed, started only once.
                assert!(
                    found.len() == 1 && found[0].confirmed,
                    "{kind:?} at {at}s: {found:#?}"
                );
                assert_eq!(found[0].started, *at == since, "{kind:?} at {at}s");
            }
        }
        let named: Vec<String> = d
            .findings
            .iter()
            .filter(|f| f.shown.subject != leaky)
            .map(|f| format!("{:?} on {}", f.shown.kind, f.shown.subject))
            .collect();
        assert!(
            named.is_empty(),
            "healthy neighbours named at {at}s: {named:?}"
        );
    }
    let f = the_finding(&decisions.last().unwrap().1, FindingKind::PoolSaturation);
    assert_eq!(
        f.shown.summary,
        "10.1.0.1 holds 25 sessions, every one idle in a transaction: its pool is pinned"
    );
    assert!(
        f.shown.cause.contains(CHECKED_OUT_NOTE),
        "{}",
        f.shown.cause
    );
}

#[test]
fn a_pinned_pool_is_pool_saturation_without_a_budget_and_below_one() {
    let pinned = |secs_in_tx: i64| {
        snapshot()
            .with_all((0..25).map(|i| {
                session(330 + i)
                    .client_addr(&pod_ip(1))
                    .idle_in_transaction(secs_in_tx)
            }))
            .build()
    };
    for policy in ["{}", "budgets: {maxConnectionsPerPod: 50}"] {
        let d = decide_with(
            &pinned(3 * MIN),
            &rules(policy),
            &cluster(),
            &Memory::default(),
        );
        let f = the_finding(&d, FindingKind::PoolSaturation);
        assert_eq!(f.shown.subject, about(deployment()));
        assert_eq!(f.shown.sessions, 25);
        assert_eq!(f.held_for, secs(3 * MIN));
        assert!(!f.confirmed);
        assert_eq!(
            f.shown.evidence,
            "orders-api-7c9d8f6b5-1 holds 25 sessions, every one idle in a transaction: its pool \
             is pinned (for at least 3m00s)"
        );
    }
    // At the budget, the budget's words.
    let d = decide_with(
        &pinned(3 * MIN),
        &rules("budgets: {maxConnectionsPerPod: 25}"),
        &cluster(),
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::PoolSaturation);
    assert!(
        f.shown
            .summary
            .ends_with("holds 25 sessions, its budget is 25"),
        "{}",
        f.shown.summary
    );

    // Not yet settled: idle in a transaction for less than 10 s is a transaction between its
    // statements.
    let d = decide_with(&pinned(9), &rules("{}"), &cluster(), &Memory::default());
    assert!(
        findings(&d, FindingKind::PoolSaturation).is_empty(),
        "{:#?}",
        d.findings
    );
    // One session idle in a transaction is IdleInTransaction's alone; one in use unpins a pod.
    let one = snapshot()
        .with(
            session(330)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(HOUR),
        )
        .build();
    let d = decide_with(&one, &rules("{}"), &cluster(), &Memory::default());
    assert!(
        findings(&d, FindingKind::PoolSaturation).is_empty(),
        "{:#?}",
        d.findings
    );
    let in_use = snapshot()
        .with_all((0..24).map(|i| {
            session(330 + i)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(HOUR)
        }))
        .with(session(360).client_addr(&pod_ip(1)).idle(HOUR))
        .build();
    let d = decide_with(&in_use, &rules("{}"), &cluster(), &Memory::default());
    assert!(
        findings(&d, FindingKind::PoolSaturation).is_empty(),
        "{:#?}",
        d.findings
    );
}

#[test]
fn a_pinned_pool_whose_count_changes_starts_its_window_again() {
    // Pod 1 pins 10 sessions from t0; at t0 + 5m a second worker process pins 10 more.
    let decisions = looks_every_30s(12 * MIN, &rules("{}"), &cluster(), |at| {
        let workers = if at < 5 * MIN { 1 } else { 2 };
        snapshot()
            .at(later(at))
            .with_all((0..10 * workers).map(|i| {
                session(330 + i)
                    .client_addr(&pod_ip(1))
                    .state(SessionState::IdleInTransaction)
                    .in_state_since(if i < 10 { t0() } else { later(5 * MIN) })
            }))
            .build()
    });
    let held = |at: i64| {
        let (_, d) = decisions.iter().find(|(t, _)| *t == at).unwrap();
        let f = the_finding(d, FindingKind::PoolSaturation);
        (f.shown.sessions, f.held_for, f.confirmed)
    };
    assert_eq!(held(4 * MIN + 30), (10, secs(4 * MIN + 30), false));
    // The new sessions settle at 5m10s: 20 sessions pinned since 5m.
    assert_eq!(held(5 * MIN + 30), (20, secs(30), false));
    assert_eq!(held(12 * MIN), (20, secs(7 * MIN), false));
}

#[test]
fn a_finding_is_started_only_in_the_cycle_it_is_first_confirmed() {
    let policy = rules(STUCK_TX);
    let stuck = stuck_since(810, ago(6 * MIN));
    let mut memory = Memory::default();
    let mut seen = Vec::new();
    for at in [0, 5 * MIN, 9 * MIN, 10 * MIN] {
        let snap = snapshot().at(later(at)).with(stuck.clone()).build();
        let d = decide_with(&snap, &policy, &cluster(), &memory);
        let f = the_finding(&d, FindingKind::IdleInTransaction);
        seen.push((f.held_for, f.confirmed, f.started));
        memory = d.memory;
    }
    assert_eq!(
        seen,
        [
            (secs(MIN), false, false),
            (secs(6 * MIN), false, false),
            (secs(10 * MIN), true, true),
            (secs(11 * MIN), true, false),
        ]
    );
}

#[test]
fn a_confirmed_finding_stays_until_it_has_been_gone_for_a_full_window() {
    let policy = rules(STUCK_TX);
    let stuck = stuck_since(820, ago(20 * MIN));

    let d1 = decide_with(
        &snapshot().with(stuck.clone()).build(),
        &policy,
        &cluster(),
        &Memory::default(),
    );
    let f = the_finding(&d1, FindingKind::IdleInTransaction);
    assert!(f.present && f.confirmed && f.started);

    // Last seen at t0 + 30s.
    let d2 = decide_with(
        &snapshot().at(later(30)).with(stuck).build(),
        &policy,
        &cluster(),
        &d1.memory,
    );
    let f = the_finding(&d2, FindingKind::IdleInTransaction);
    assert!(f.present && f.confirmed && !f.started);

    let d3 = decide_with(
        &snapshot().at(later(60)).build(),
        &policy,
        &cluster(),
        &d2.memory,
    );
    let f = the_finding(&d3, FindingKind::IdleInTransaction);
    assert!(!f.present && f.confirmed && !f.started);
    assert_eq!(f.shown.pids, [820]);

    let d4 = decide_with(
        &snapshot().at(later(30 + 10 * MIN - 1)).build(),
        &policy,
        &cluster(),
        &d3.memory,
    );
    let f = the_finding(&d4, FindingKind::IdleInTransaction);
    assert!(!f.present && f.confirmed);

    let d5 = decide_with(
        &snapshot().at(later(30 + 10 * MIN)).build(),
        &policy,
        &cluster(),
        &d4.memory,
    );
    assert!(d5.findings.is_empty(), "{:#?}", d5.findings);
}
