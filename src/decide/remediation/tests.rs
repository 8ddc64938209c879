//! The eviction rule, cycle by cycle: which pods qualify, one at a time per workload, the Ready
//! gates, the hourly cap, a budget's refusal, and what `DryRun` and `Off` do.

use crate::decide::FastSet;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::decide::PodInfo;

fn t0() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

fn workload(kind: &str, name: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: "shop".into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn orders() -> WorkloadRef {
    workload("Deployment", "orders")
}

fn pod(name: &str, owner: &WorkloadRef, ready: bool) -> PodInfo {
    PodInfo {
        name: name.into(),
        ips: Vec::new(),
        started_at: None,
        workload: owner.clone(),
        ready,
    }
}

fn cluster(pods: Vec<PodInfo>) -> ClusterView {
    ClusterView {
        policy: Some("shop/orders-db".to_owned()),
        pods,
        ..ClusterView::default()
    }
}

fn evict(min_ready_pods: u32, max_evictions_per_hour: u32) -> Remediation {
    Remediation {
        pinned_pools: PinnedPoolRemedy::Evict,
        min_ready_pods,
        max_evictions_per_hour,
    }
}

fn pinned(pod: &str, owner: &WorkloadRef) -> PinnedPool {
    PinnedPool {
        source: Source::Workload(owner.clone()),
        pod: pod.to_owned(),
        sessions: 25,
    }
}

/// One cycle of the rule at `now`, nothing working again.
fn cycle(
    pools: Vec<PinnedPool>,
    cluster: &ClusterView,
    memory: &Evictions,
    settings: &Remediation,
    mode: Mode,
    now: Timestamp,
) -> (Recovery, Evictions) {
    plan(
        pools,
        FastSet::default,
        cluster,
        memory,
        settings,
        mode,
        now,
    )
}

fn evicted(recovery: &Recovery) -> Vec<&str> {
    recovery.evict.iter().map(|e| e.pod.as_str()).collect()
}

fn held(recovery: &Recovery) -> Vec<(&str, &HeldBecause)> {
    recovery
        .held
        .iter()
        .map(|h| (h.pod.as_str(), &h.why))
        .collect()
}

/// What the controller did: every eviction of `recovery` went through.
fn all_went(memory: &mut Evictions, recovery: &Recovery, now: Timestamp) {
    let results: Vec<(Eviction, EvictionOutcome)> = recovery
        .evict
        .iter()
        .map(|e| (e.clone(), EvictionOutcome::Evicted))
        .collect();
    memory.record(&results, now);
}

#[test]
fn one_pod_of_a_workload_at_a_time_the_next_once_every_pod_is_ready_again() {
    let settings = evict(2, 10);
    // Both pods of a three-replica Deployment pinned.
    let three = cluster(vec![
        pod("orders-a", &orders(), true),
        pod("orders-b", &orders(), true),
        pod("orders-c", &orders(), true),
    ]);
    let pools = vec![pinned("orders-a", &orders()), pinned("orders-b", &orders())];
    let (r, mut memory) = cycle(
        pools,
        &three,
        &Evictions::default(),
        &settings,
        Mode::Enforce,
        t0(),
    );
    assert_eq!(evicted(&r), ["orders-a"]);
    assert_eq!(
        held(&r),
        [(
            "orders-b",
            &HeldBecause::ReplacementNotReady {
                evicted: "orders-a".to_owned()
            }
        )]
    );
    assert_eq!(r.evict[0].sessions, 25);
    all_went(&mut memory, &r, t0());

    // orders-a is terminating: orders-b waits, and needs no new pinned pool to be remembered.
    let (r, memory) = cycle(vec![], &three, &memory, &settings, Mode::Enforce, at(30));
    assert!(r.evict.is_empty());
    assert_eq!(held(&r).len(), 1);
    // orders-a is gone, its replacement not Ready yet.
    let replacing = cluster(vec![
        pod("orders-b", &orders(), true),
        pod("orders-c", &orders(), true),
        pod("orders-d", &orders(), false),
    ]);
    let (r, memory) = cycle(
        vec![],
        &replacing,
        &memory,
        &settings,
        Mode::Enforce,
        at(60),
    );
    assert!(r.evict.is_empty(), "{r:?}");
    // Ready: orders-b goes.
    let replaced = cluster(vec![
        pod("orders-b", &orders(), true),
        pod("orders-c", &orders(), true),
        pod("orders-d", &orders(), true),
    ]);
    let (r, _) = cycle(vec![], &replaced, &memory, &settings, Mode::Enforce, at(90));
    assert_eq!(evicted(&r), ["orders-b"]);
    assert!(r.held.is_empty());
}

#[test]
fn only_a_deployments_or_a_statefulsets_pods_are_evicted() {
    let settings = evict(1, 10);
    for (kind, evictable) in [
        ("Deployment", true),
        ("StatefulSet", true),
        ("Pod", false),
        ("Job", false),
        ("CronJob", false),
        ("DaemonSet", false),
        ("ReplicaSet", false),
    ] {
        let owner = workload(kind, "w");
        let (r, _) = cycle(
            vec![pinned("w-0", &owner)],
            &cluster(vec![pod("w-0", &owner, true), pod("w-1", &owner, true)]),
            &Evictions::default(),
            &settings,
            Mode::Enforce,
            t0(),
        );
        if evictable {
            assert_eq!(evicted(&r), ["w-0"], "{kind}");
        } else {
            assert!(r.evict.is_empty(), "{kind}");
            assert_eq!(held(&r), [("w-0", &HeldBecause::NotReplaced)], "{kind}");
        }
    }
}

#[test]
fn a_workload_with_fewer_ready_pods_than_the_minimum_keeps_its_pod() {
    let one_ready = cluster(vec![
        pod("orders-a", &orders(), true),
        pod("orders-b", &orders(), false),
    ]);
    let pools = || vec![pinned("orders-a", &orders())];
    let (r, _) = cycle(
        pools(),
        &one_ready,
        &Evictions::default(),
        &evict(2, 10),
        Mode::Enforce,
        t0(),
    );
    assert!(r.evict.is_empty());
    assert_eq!(
        held(&r),
        [(
            "orders-a",
            &HeldBecause::TooFewReady {
                ready: 1,
                minimum: 2
            }
        )]
    );
    // The policy allows a single Ready pod to go.
    let (r, _) = cycle(
        pools(),
        &one_ready,
        &Evictions::default(),
        &evict(1, 10),
        Mode::Enforce,
        t0(),
    );
    assert_eq!(evicted(&r), ["orders-a"]);
}

#[test]
fn no_more_than_the_hourly_cap_in_any_hour() {
    let billing = workload("StatefulSet", "billing");
    let both = cluster(vec![
        pod("orders-a", &orders(), true),
        pod("orders-b", &orders(), true),
        pod("billing-0", &billing, true),
        pod("billing-1", &billing, true),
    ]);
    let settings = evict(2, 1);
    let (r, mut memory) = cycle(
        vec![pinned("orders-a", &orders()), pinned("billing-0", &billing)],
        &both,
        &Evictions::default(),
        &settings,
        Mode::Enforce,
        t0(),
    );
    assert_eq!(evicted(&r), ["billing-0"]);
    assert_eq!(held(&r), [("orders-a", &HeldBecause::HourlyCap { cap: 1 })]);
    all_went(&mut memory, &r, t0());
    assert_eq!(memory.in_the_last_hour(), 1);

    let after_billing = cluster(vec![
        pod("orders-a", &orders(), true),
        pod("orders-b", &orders(), true),
        pod("billing-1", &billing, true),
        pod("billing-2", &billing, true),
    ]);
    let (r, memory) = cycle(
        vec![],
        &after_billing,
        &memory,
        &settings,
        Mode::Enforce,
        at(59 * 60),
    );
    assert!(r.evict.is_empty());
    // An hour after the first: the next.
    let (r, _) = cycle(
        vec![],
        &after_billing,
        &memory,
        &settings,
        Mode::Enforce,
        at(60 * 60),
    );
    assert_eq!(evicted(&r), ["orders-a"]);
}

#[test]
fn a_pod_a_budget_refused_is_tried_again_next_cycle_never_forced() {
    let two = cluster(vec![
        pod("orders-a", &orders(), true),
        pod("orders-b", &orders(), true),
    ]);
    let settings = evict(2, 10);
    let (r, mut memory) = cycle(
        vec![pinned("orders-a", &orders())],
        &two,
        &Evictions::default(),
        &settings,
        Mode::Enforce,
        t0(),
    );
    assert_eq!(evicted(&r), ["orders-a"]);
    let refused = EvictionOutcome::Refused {
        message: "Cannot evict pod as it would violate the pod's disruption budget.".to_owned(),
    };
    memory.record(&[(r.evict[0].clone(), refused)], t0());
    assert_eq!(memory.in_the_last_hour(), 0, "a refusal is no eviction");

    let (r, _) = cycle(vec![], &two, &memory, &settings, Mode::Enforce, at(30));
    assert_eq!(evicted(&r), ["orders-a"], "asked again, the same way");
}

#[test]
fn a_pending_pod_is_dropped_once_gone_working_again_or_after_two_hours() {
    let one_ready = cluster(vec![
        pod("orders-a", &orders(), true),
        pod("orders-b", &orders(), false),
    ]);
    let settings = evict(2, 10);
    let (_, memory) = cycle(
        vec![pinned("orders-a", &orders())],
        &one_ready,
        &Evictions::default(),
        &settings,
        Mode::Enforce,
        t0(),
    );
    // Still waiting half an hour later.
    let (r, _) = cycle(
        vec![],
        &one_ready,
        &memory,
        &settings,
        Mode::Enforce,
        at(1800),
    );
    assert_eq!(held(&r).len(), 1);
    // Its pool works again: a session that is not idle in a transaction.
    let working: FastSet<&str> = FastSet::from_iter(["orders-a"]);
    let (r, _) = plan(
        vec![],
        || working,
        &one_ready,
        &memory,
        &settings,
        Mode::Enforce,
        at(60),
    );
    assert!(r.held.is_empty() && r.evict.is_empty(), "{r:?}");
    // Gone.
    let gone = cluster(vec![pod("orders-b", &orders(), true)]);
    let (r, _) = cycle(vec![], &gone, &memory, &settings, Mode::Enforce, at(60));
    assert!(r.held.is_empty() && r.evict.is_empty(), "{r:?}");
    // Two hours.
    let (r, _) = cycle(
        vec![],
        &one_ready,
        &memory,
        &settings,
        Mode::Enforce,
        at(7200),
    );
    assert!(r.held.is_empty() && r.evict.is_empty(), "{r:?}");
}

#[test]
fn dry_run_says_what_it_would_evict_and_off_evicts_nothing() {
    let two = cluster(vec![
        pod("orders-a", &orders(), true),
        pod("orders-b", &orders(), true),
    ]);
    let (r, memory) = cycle(
        vec![pinned("orders-a", &orders())],
        &two,
        &Evictions::default(),
        &evict(2, 10),
        Mode::DryRun,
        t0(),
    );
    assert!(r.evict.is_empty());
    assert_eq!(r.would_evict.len(), 1);
    assert_eq!(
        memory,
        Evictions::default(),
        "nothing was ended: nothing waits"
    );

    let (r, memory) = cycle(
        vec![pinned("orders-a", &orders())],
        &two,
        &Evictions::default(),
        &Remediation::default(),
        Mode::Enforce,
        t0(),
    );
    assert!(r.evict.is_empty() && r.would_evict.is_empty() && r.held.is_empty());
    assert_eq!(r.pinned.len(), 1, "the pinned pool is still named");
    assert_eq!(memory, Evictions::default());
}

#[test]
fn outside_a_cluster_a_pinned_pool_is_named_and_nothing_is_evicted() {
    let pool = PinnedPool {
        source: Source::Client {
            application: "reports-api".to_owned(),
            address: Some("10.1.0.2".parse().unwrap()),
        },
        pod: "10.1.0.2".to_owned(),
        sessions: 25,
    };
    let (r, memory) = cycle(
        vec![pool.clone()],
        &ClusterView::default(),
        &Evictions::default(),
        &evict(1, 10),
        Mode::Enforce,
        t0(),
    );
    assert_eq!(r.pinned, [pool]);
    assert!(r.evict.is_empty() && r.held.is_empty());
    assert_eq!(memory, Evictions::default());
}
