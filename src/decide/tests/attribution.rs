//! Attribution (DESIGN.md §5): which pod and workload a session belongs to.

use super::*;

#[test]
fn a_session_from_a_pod_ip_that_started_after_the_pod_belongs_to_its_deployment() {
    let snap = snapshot()
        .with(session(200).client_addr(&pod_ip(1)).idle(HOUR))
        .build();
    let d = decide_with(&snap, &rules(ENFORCE), &cluster(), &Memory::default());
    let g = group(&d, &deployment());
    assert_eq!(g.via, Via::PodIp);
    assert_eq!(g.pods, BTreeSet::from([pod_name(1).into()]));
    assert_eq!(d.terminate[0].source, deployment());
    assert_eq!(d.terminate[0].pod, pod_name(1));
}

#[test]
fn a_session_older_than_the_pod_on_its_ip_is_not_that_pods() {
    // Pod 1 was restarted ten minutes ago and got an address that was in use before.
    let restarted = ClusterView {
        pods: vec![PodInfo {
            started_at: Some(ago(10 * MIN)),
            ..pod(1)
        }],
        ..ClusterView::default()
    };
    let snap = snapshot()
        .with(
            session(210)
                .client_addr(&pod_ip(1))
                .started_ago(HOUR)
                .idle(MIN),
        )
        .with(
            session(211)
                .client_addr(&pod_ip(1))
                .started_ago(5 * MIN)
                .idle(MIN),
        )
        .build();
    let d = decide_with(&snap, &rules(ENFORCE), &restarted, &Memory::default());

    let old = group(&d, &client("app", Some(&pod_ip(1))));
    assert_eq!(old.via, Via::Unattributed);
    assert_eq!(old.counts.total, 1);
    let new = group(&d, &deployment());
    assert_eq!(new.via, Via::PodIp);
    assert_eq!(new.counts.total, 1);
}

#[test]
fn an_application_name_equal_to_a_pod_name_attributes_the_session_to_that_pod() {
    let restarted = ClusterView {
        pods: vec![PodInfo {
            started_at: Some(ago(10 * MIN)),
            ..pod(2)
        }],
        ..ClusterView::default()
    };
    let snap = snapshot()
        // Through a NAT: the address is the node's, the name is the pod's.
        .with(
            session(220)
                .application_name(&pod_name(2))
                .client_addr("192.168.7.7")
                .started_ago(MIN),
        )
        .with(session(221).application_name(&pod_name(2)).started_ago(MIN))
        // Same name, but older than the pod: a previous pod of that name.
        .with(
            session(222)
                .application_name(&pod_name(2))
                .client_addr("192.168.7.8")
                .started_ago(HOUR),
        )
        .build();
    let d = decide_with(&snap, &rules(DRY_RUN), &restarted, &Memory::default());

    let g = group(&d, &deployment());
    assert_eq!(g.via, Via::ApplicationName);
    assert_eq!(g.counts.total, 2);
    assert_eq!(g.pods, BTreeSet::from([pod_name(2).into()]));
    let stale = group(&d, &client(&pod_name(2), Some("192.168.7.8")));
    assert_eq!(stale.via, Via::Unattributed);
}

#[test]
fn a_groups_via_is_its_least_trusted_attribution_whatever_the_session_order() {
    let by_ip = session(225).client_addr(&pod_ip(1));
    let by_name = session(226)
        .application_name(&pod_name(2))
        .client_addr("192.168.7.7");
    for sessions in [
        [by_ip.clone(), by_name.clone()],
        [by_name.clone(), by_ip.clone()],
    ] {
        let snap = snapshot().with_all(sessions).build();
        let d = decide_with(&snap, &rules(DRY_RUN), &cluster(), &Memory::default());
        let g = group(&d, &deployment());
        assert_eq!(g.counts.total, 2);
        assert_eq!(
            g.via,
            Via::ApplicationName,
            "pids in order {:?}",
            snap.sessions.iter().map(|s| s.pid).collect::<Vec<_>>()
        );
    }
}

#[test]
fn an_idle_orphan_is_terminated_at_once_but_an_active_one_is_not() {
    let with_departed = ClusterView {
        departed: vec![departed(4, ago(2 * MIN))],
        ..cluster()
    };
    let snap = snapshot()
        // A healthy sibling on a running pod of the same Deployment.
        .with(session(229).client_addr(&pod_ip(1)).idle(30))
        .with(
            session(230)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .idle(5 * MIN),
        )
        .with(
            session(231)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .active(HOUR),
        )
        // Opened after the pod left: someone else's.
        .with(
            session(232)
                .client_addr(&pod_ip(4))
                .started_ago(MIN)
                .idle(30),
        )
        .with(
            session(233)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .idle_in_transaction(5 * MIN),
        )
        // Old enough, but it did something after the pod left: a live owner (a reused IP, or
        // clocks that disagree), never an orphan.
        .with(
            session(234)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .idle(30),
        )
        .build();
    let d = decide_with(&snap, &rules(ENFORCE), &with_departed, &Memory::default());

    assert_eq!(pids(&d.terminate), [230, 233]);
    assert_eq!(reasons(&d.terminate), [Reason::Orphaned, Reason::Orphaned]);
    assert!(d.terminate.iter().all(|t| t.pod == pod_name(4)));
    assert!(d.terminate.iter().all(|t| t.source == deployment()));

    // Orphans show in their Deployment's group even when a healthy session came first.
    let orphans = group(&d, &deployment());
    assert_eq!(orphans.via, Via::Orphaned);
    assert_eq!(orphans.counts.total, 4);
    assert_eq!(
        orphans.pods,
        BTreeSet::from([pod_name(1).into(), pod_name(4).into()])
    );
    let stranger = group(&d, &client("app", Some(&pod_ip(4))));
    assert_eq!(stranger.via, Via::Unattributed);
    assert_eq!(stranger.counts.total, 2, "232 and 234");
}

#[test]
fn sessions_matching_no_pod_are_grouped_by_application_and_address() {
    let snap = snapshot()
        .with(
            session(240)
                .application_name("billing-cron")
                .client_addr("192.168.1.10"),
        )
        .with(
            session(241)
                .application_name("billing-cron")
                .client_addr("192.168.1.10"),
        )
        .with(
            session(242)
                .application_name("billing-cron")
                .client_addr("192.168.1.11"),
        )
        .with(session(243).application_name(""))
        .build();
    let d = decide_with(&snap, &rules(DRY_RUN), &cluster(), &Memory::default());

    let sources: Vec<(&Source, u32, Via)> = d
        .groups
        .iter()
        .map(|g| (&g.source, g.counts.total, g.via))
        .collect();
    assert_eq!(
        sources,
        [
            (
                &client("billing-cron", Some("192.168.1.10")),
                2,
                Via::Unattributed
            ),
            (&client("", None), 1, Via::Unattributed),
            (
                &client("billing-cron", Some("192.168.1.11")),
                1,
                Via::Unattributed
            ),
        ]
    );
}
