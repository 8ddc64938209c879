//! What Enforce ends is a finding on its workload (DESIGN.md §6).

use super::*;

/// Enforce ending sessions idle in a transaction after a minute and idle ones after three:
/// shorter than the two minutes (and thirty) detection waits, so no detector sees what it ends.
const QUICK_ENFORCE: &str = "
mode: Enforce
idle: {idleTimeout: 3m, idleInTransactionTimeout: 1m}
";

/// Pod 1's pool of 25 sessions, idle in a transaction for 65 s, and a client outside the
/// cluster at work.
fn pinned_a_minute_ago() -> Snapshot {
    snapshot()
        .with_all((0..25).map(|i| {
            session(600 + i)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(65)
        }))
        .with(
            session(700)
                .application_name("storefront")
                .client_addr("10.1.0.2")
                .idle(5),
        )
        .build()
}

#[test]
fn sessions_enforce_ends_idle_in_a_transaction_are_a_confirmed_finding_at_once() {
    let policy = rules(QUICK_ENFORCE);
    let d1 = decide_with(
        &pinned_a_minute_ago(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    // The brake: 20 this cycle, the other 5 the next.
    assert_eq!(d1.terminate.len(), 20);
    let f = the_finding(&d1, FindingKind::IdleInTransaction);
    assert_eq!(f.shown.subject, about(deployment()));
    assert!(f.confirmed && f.started && f.present, "{f:#?}");
    assert_eq!(f.ended, 20);
    assert_eq!(f.shown.sessions, 20);
    assert_eq!(
        f.shown.summary,
        "20 sessions ended, idle in a transaction for more than 1m00s (idleInTransactionTimeout)"
    );
    assert!(
        f.shown.cause.contains(CHECKED_OUT_NOTE),
        "{}",
        f.shown.cause
    );
    // The workload is annotated in the cycle that ends its sessions; nobody else is.
    assert_eq!(d1.annotations.len(), 1, "{:#?}", d1.annotations);
    let change = &d1.annotations[0];
    assert_eq!(change.workload, orders_api());
    assert_eq!(
        change.annotations[LEAK].as_deref(),
        Some("IdleInTransaction")
    );
    let detail = change.annotations[LEAK_DETAIL].as_deref().unwrap();
    assert!(
        detail.contains("20 sessions ended, idle in a transaction"),
        "{detail}"
    );
    assert!(
        d1.findings
            .iter()
            .all(|f| f.shown.subject == about(deployment()))
    );
    let annotated = annotated_cluster(&applied(change));

    // The other 5: the same finding, still confirmed, not started again.
    let rest = snapshot()
        .at(later(30))
        .with_all((20..25).map(|i| {
            session(600 + i)
                .client_addr(&pod_ip(1))
                .state(SessionState::IdleInTransaction)
                .in_state_since(ago(65))
        }))
        .build();
    let d2 = decide_with(&rest, &policy, &annotated, &d1.memory);
    assert_eq!(d2.terminate.len(), 5);
    let f = the_finding(&d2, FindingKind::IdleInTransaction);
    assert!(f.confirmed && !f.started && f.ended == 5, "{f:#?}");
    // The detail says what was ended last.
    assert_eq!(d2.annotations.len(), 1, "{:#?}", d2.annotations);
    assert_eq!(
        d2.annotations[0].annotations.keys().collect::<Vec<_>>(),
        [LEAK_DETAIL]
    );
    let annotated = annotated_cluster(&[
        applied(change)[0],
        (LEAK_DETAIL, applied(&d2.annotations[0])[0].1),
        applied(change)[2],
    ]);

    // Nothing more ended, nothing more seen: it clears a window after the last, and only then.
    let quiet = |at: i64| snapshot().at(later(at)).build();
    let d3 = decide_with(&quiet(60), &policy, &annotated, &d2.memory);
    let f = the_finding(&d3, FindingKind::IdleInTransaction);
    assert!(f.confirmed && !f.present && f.ended == 0, "{f:#?}");
    assert!(d3.annotations.is_empty(), "{:#?}", d3.annotations);
    let d4 = decide_with(&quiet(30 + 10 * MIN), &policy, &annotated, &d3.memory);
    assert!(d4.findings.is_empty(), "{:#?}", d4.findings);
    assert!(d4.annotations[0].is_removal(), "{:#?}", d4.annotations);
}

#[test]
fn a_pinned_pool_enforce_ends_is_named_for_recovery_and_its_pod_evicted_when_asked() {
    // Pod 1's pool pinned; pod 2 holds two sessions idle in a transaction beside one at work: not
    // a pinned pool, though both of them are ended.
    let snap = snapshot()
        .with_all((0..5).map(|i| {
            session(600 + i)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(65)
        }))
        .with_all((0..2).map(|i| {
            session(610 + i)
                .client_addr(&pod_ip(2))
                .idle_in_transaction(65)
        }))
        .with(session(612).client_addr(&pod_ip(2)).active(1))
        .build();
    let off = decide_with(&snap, &rules(QUICK_ENFORCE), &cluster(), &Memory::default());
    assert_eq!(off.terminate.len(), 7);
    assert_eq!(
        off.recovery.pinned,
        [PinnedPool {
            source: deployment(),
            pod: pod_name(1),
            sessions: 5,
        }]
    );
    assert!(
        off.recovery.evict.is_empty(),
        "remediation is off by default"
    );

    let on = rules(&format!(
        "{QUICK_ENFORCE}remediation: {{pinnedPools: Evict}}\n"
    ));
    let d = decide_with(&snap, &on, &cluster(), &Memory::default());
    assert_eq!(
        d.recovery.evict,
        [Eviction {
            pod: pod_name(1),
            workload: orders_api(),
            sessions: 5,
        }]
    );
}

#[test]
fn what_dry_run_would_end_is_no_finding_before_its_detection_age() {
    let mut policy = rules(QUICK_ENFORCE);
    policy.mode = Mode::DryRun;
    let d = decide_with(
        &pinned_a_minute_ago(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    assert_eq!(d.dry_run.len(), 20);
    assert!(findings(&d, FindingKind::IdleInTransaction).is_empty());
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);
}

#[test]
fn sessions_enforce_ends_for_plain_idleness_are_no_finding() {
    // Seed 000's forked workers, idle for four minutes while the parent works.
    let snap = snapshot()
        .with(session(800).client_addr(&pod_ip(1)).active(0))
        .with_all((0..4).map(|i| session(801 + i).client_addr(&pod_ip(1)).idle(4 * MIN)))
        .build();
    let d = decide_with(
        &snap,
        &rules(QUICK_ENFORCE),
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    assert_eq!(reasons(&d.terminate), [Reason::IdleTimeout; 4]);
    assert!(d.findings.is_empty(), "{:#?}", d.findings);
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);
}

#[test]
fn orphans_and_transactions_too_old_that_enforce_ends_are_confirmed_at_once() {
    let with_departed = ClusterView {
        departed: vec![departed(4, ago(2 * MIN))],
        ..annotated_cluster(&[])
    };
    let orphans = snapshot()
        .with_all((0..2).map(|i| {
            session(230 + i)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .idle(5 * MIN)
        }))
        .build();
    let d = decide_with(
        &orphans,
        &rules(ENFORCE),
        &with_departed,
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::Orphaned);
    assert!(f.confirmed && f.started && f.ended == 2, "{f:#?}");
    assert!(
        f.shown.summary.ends_with(&format!(
            "2 sessions ended, left behind by pods that no longer exist ({})",
            pod_name(4)
        )),
        "{}",
        f.shown.summary
    );
    // The same in DryRun: two minutes of the window.
    let d = decide_with(
        &orphans,
        &rules(DRY_RUN),
        &with_departed,
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::Orphaned);
    assert!(!f.confirmed && f.ended == 0, "{f:#?}");

    // Transactions of 6 minutes, ended at 5: younger than the 10 minutes of detection.
    let policy = rules("mode: Enforce\nidle: {maxTransactionAge: 5m}");
    let snap = snapshot()
        .with(long_transaction(910, 6 * MIN, 20, 10))
        .with(long_transaction(911, 6 * MIN, 30, 10))
        .build();
    let d = decide_with(&snap, &policy, &annotated_cluster(&[]), &Memory::default());
    assert_eq!(reasons(&d.terminate), [Reason::TransactionTooOld; 2]);
    let f = the_finding(&d, FindingKind::LongTransaction);
    assert!(f.confirmed && f.started && f.ended == 2, "{f:#?}");
    assert_eq!(
        f.shown.summary,
        "2 sessions ended, idle in a transaction open for more than 5m00s (maxTransactionAge)"
    );
    assert_eq!(
        d.annotations[0].annotations[LEAK].as_deref(),
        Some("LongTransaction")
    );
}

#[test]
fn what_enforce_ends_of_a_leak_a_detector_sees_adds_to_that_finding() {
    // Idle in a transaction for three minutes: past the detection age too.
    let snap = snapshot()
        .with_all((0..3).map(|i| {
            session(600 + i)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(3 * MIN)
        }))
        .build();
    let d = decide_with(&snap, &rules(QUICK_ENFORCE), &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert!(f.confirmed && f.started && f.ended == 3, "{f:#?}");
    assert_eq!(
        f.shown.summary,
        "3 sessions idle in transaction for more than 2m00s; 3 sessions ended, idle in a \
         transaction for more than 1m00s (idleInTransactionTimeout)"
    );
}
