//! Behind a pooler (DESIGN.md §10): sessions attributed through PgBouncer's console.

use super::*;

pub(super) const POOLER_IP: &str = "10.0.9.9";
const POOLER: &str = "pgbouncer";

/// The pooler's server connection from local port `port` to backend `pid`, linked to `client`.
fn pooled_server(port: u16, pid: i32, client: Option<&str>) -> ServerRow {
    ServerRow {
        ptr: format!("s{port}"),
        link: client.map(|c| format!("c-{c}")),
        user: "app".to_owned(),
        database: "orders".to_owned(),
        state: if client.is_some() { "active" } else { "idle" }.to_owned(),
        local_addr: Some(ip(POOLER_IP)),
        local_port: Some(port),
        remote_pid: Some(pid),
        connected_for: None,
        since_request: None,
    }
}

/// The pooler's client from `addr`, linked to the server from local port `server`.
fn pooled_client(addr: &str, server: Option<u16>) -> ClientRow {
    ClientRow {
        ptr: format!("c-{addr}"),
        link: server.map(|port| format!("s{port}")),
        user: "app".to_owned(),
        database: "orders".to_owned(),
        state: "active".to_owned(),
        addr: Some(ip(addr)),
        port: Some(40_000),
        application_name: None,
        connected_for: None,
        since_request: None,
        waiting_for: None,
    }
}

fn pool(waiting: u32, max_wait_secs: u64) -> PoolRow {
    PoolRow {
        database: "orders".to_owned(),
        user: "app".to_owned(),
        clients_active: 2,
        clients_waiting: waiting,
        servers_active: 2,
        servers_idle: 0,
        servers_used: 0,
        servers_tested: 0,
        servers_login: 0,
        max_wait: Duration::from_secs(max_wait_secs),
        pool_mode: Some("transaction".to_owned()),
    }
}

/// Behind the pooler: pid 301 (port 5001) is linked to pod 1 and idle in a transaction for 10
/// minutes; pid 302 (port 5002) is held by the pooler, idle for 5 hours; pid 303 (port 5003) is
/// linked to pod 2 and active.
fn behind_the_pooler() -> (Snapshot, ConsoleSnapshot) {
    let snap = snapshot()
        .with(
            session(301)
                .through_pooler(5001)
                .idle_in_transaction(10 * MIN),
        )
        .with(session(302).through_pooler(5002).idle(5 * HOUR))
        .with(session(303).through_pooler(5003).active(1))
        .build();
    let console = ConsoleSnapshot {
        servers: vec![
            pooled_server(5001, 301, Some(&pod_ip(1))),
            pooled_server(5002, 302, None),
            pooled_server(5003, 303, Some(&pod_ip(2))),
        ],
        clients: vec![
            pooled_client(&pod_ip(1), Some(5001)),
            pooled_client(&pod_ip(2), Some(5003)),
            pooled_client(&pod_ip(3), None),
        ],
        pools: vec![pool(0, 0)],
    };
    (snap, console)
}

fn decide_behind(
    snapshot: &Snapshot,
    looks: &[PoolerLook],
    rules: &Rules,
    cluster: &ClusterView,
) -> Decision {
    decide(Inputs {
        snapshot,
        rules,
        cluster,
        poolers: looks,
        memory: &Memory::default(),
    })
}

fn look(console: ConsoleSnapshot) -> Vec<PoolerLook> {
    vec![PoolerLook {
        name: POOLER.to_owned(),
        console: Ok(console),
    }]
}

fn held() -> Source {
    Source::Pooler {
        pooler: POOLER.to_owned(),
    }
}

#[test]
fn behind_a_pooler_an_idle_transaction_is_named_on_the_pod_holding_it_and_ended() {
    let (snap, console) = behind_the_pooler();
    let rules = rules("mode: Enforce\nidle: {idleInTransactionTimeout: 5m}\n");
    let d = decide_behind(&snap, &look(console), &rules, &cluster());

    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.shown.subject, about(deployment()));
    assert_eq!(f.shown.pids, vec![301]);
    assert_eq!(pids(&d.terminate), vec![301]);
    let t = &d.terminate[0];
    assert_eq!(t.pod, pod_name(1));
    assert_eq!(t.pooler.as_deref(), Some(POOLER));
    let g = group(&d, &deployment());
    assert_eq!(g.via, Via::Pooler);
    assert_eq!(
        g.pods,
        BTreeSet::from([pod_name(1).into(), pod_name(2).into()])
    );
    assert_eq!(g.poolers, BTreeSet::from([POOLER.to_owned()]));
    let report = &d.poolers[0];
    assert_eq!(
        (
            report.tally.linked,
            report.tally.held_by_pooler,
            report.clients
        ),
        (2, 1, 3)
    );
}

#[test]
fn a_connection_the_pooler_holds_is_counted_on_the_pooler_and_never_ended_however_idle() {
    let (snap, console) = behind_the_pooler();
    // Every rule that could condemn an idle session, as tight as they go.
    let rules = rules(
        "mode: Enforce\nidle: {idleTimeout: 1s, idleInTransactionTimeout: 1s, maxTransactionAge: 1s}\n\
         leakDetection: {strandedIdleAge: 1s, idleThreshold: 1}\n",
    );
    for cluster in [cluster(), ClusterView::default()] {
        let d = decide_behind(&snap, &look(console.clone()), &rules, &cluster);
        assert!(!pids(&d.terminate).contains(&302), "{:#?}", d.terminate);
        assert!(!pids(&d.deferred).contains(&302));
        let g = group(&d, &held());
        assert_eq!((g.counts.total, g.via), (1, Via::HeldByPooler));
        assert_eq!(g.pods, BTreeSet::from([POOLER.into()]));
        assert!(
            d.findings.iter().all(|f| f.shown.subject != about(held())),
            "{:#?}",
            d.findings
        );
    }
}

#[test]
fn outside_a_cluster_the_pooled_client_is_named_by_its_address() {
    let (snap, console) = behind_the_pooler();
    let d = decide_behind(&snap, &look(console), &rules("{}"), &ClusterView::default());
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.shown.subject, about(client("app", Some(&pod_ip(1)))));
    assert_eq!(
        pids(&d.dry_run),
        Vec::<i64>::new(),
        "the default ends nothing"
    );
    assert_eq!(group(&d, &client("app", Some(&pod_ip(2)))).via, Via::Pooler);
}

#[test]
fn a_link_the_two_views_disagree_about_is_nobodys_and_never_ended() {
    let (snap, mut console) = behind_the_pooler();
    // The server still names pod 1's client, which now names another server.
    console.clients[0].link = Some("s9999".to_owned());
    let rules = rules("mode: Enforce\nidle: {idleInTransactionTimeout: 5m}\n");
    let d = decide_behind(&snap, &look(console), &rules, &cluster());
    assert!(d.terminate.is_empty(), "{:#?}", d.terminate);
    assert_eq!(group(&d, &held()).via, Via::PoolerUnsettled);
    assert!(findings(&d, FindingKind::IdleInTransaction).is_empty());
    assert_eq!(d.poolers[0].tally.unsettled, 1);
}

#[test]
fn an_unreadable_pooler_is_a_warning_and_its_sessions_count_on_its_address() {
    let (snap, _) = behind_the_pooler();
    let looks = vec![PoolerLook {
        name: POOLER.to_owned(),
        console: Err(ConsoleUnread {
            reason: "Unreachable",
            message: "cannot reach 10.0.9.9:6432: connection refused".to_owned(),
        }),
    }];
    let rules = rules("mode: Enforce\nidle: {idleTimeout: 1m, idleInTransactionTimeout: 5m}\n");
    let d = decide_behind(&snap, &looks, &rules, &cluster());
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("pooler pgbouncer") && w.contains("connection refused")),
        "{:?}",
        d.warnings
    );
    assert_eq!(
        d.poolers[0].error.as_deref(),
        looks[0].console.as_ref().err().map(|e| e.message.as_str())
    );
    // As without a pooler: the pooler's address, unattributed. The idle transaction is a
    // client's whoever it is, and ended; the 5-hour idle one may be the pooler's own: kept.
    let g = group(&d, &client("app", Some(POOLER_IP)));
    assert_eq!((g.counts.total, g.via), (3, Via::Unattributed));
    assert_eq!(pids(&d.terminate), vec![301]);
}

#[test]
fn a_pool_with_clients_waiting_is_a_finding_on_the_pooler_naming_who_holds_it() {
    let (snap, mut console) = behind_the_pooler();
    console.pools = vec![pool(4, 7)];
    let d = decide_behind(&snap, &look(console.clone()), &rules("{}"), &cluster());
    let f = the_finding(&d, FindingKind::PoolerSaturation);
    assert_eq!(f.shown.subject, about(held()));
    assert_eq!(f.shown.sessions, 4);
    assert!(
        f.shown.evidence.contains("4 clients waiting"),
        "{}",
        f.shown.evidence
    );
    assert!(
        f.shown.evidence.contains(&format!("{} 1", pod_ip(1))),
        "{}",
        f.shown.evidence
    );
    assert_eq!(d.poolers[0].clients_waiting, 4);

    // A wait under a second is a burst the pool absorbs.
    console.pools = vec![pool(4, 0)];
    let d = decide_behind(&snap, &look(console), &rules("{}"), &cluster());
    assert!(findings(&d, FindingKind::PoolerSaturation).is_empty());
}

// Pooler clients in the per-pod findings: a pod's pool connections that hold no server session.

/// A client of the pooler from `addr:port`, holding no server session, quiet for `idle_secs`.
fn quiet_client(addr: &str, port: u16, idle_secs: u64) -> ClientRow {
    ClientRow {
        ptr: format!("c-{addr}-{port}"),
        port: Some(port),
        connected_for: Some(Duration::from_secs(idle_secs + 60)),
        since_request: Some(Duration::from_secs(idle_secs)),
        ..pooled_client(addr, None)
    }
}

/// The fork leak behind a transaction pooler: pod 1's parent queries every second (its server
/// connection is the pooler's between queries), and its four forked workers' connections are
/// the pooler's clients, quiet for 40 minutes, with no server session at all.
fn fork_leak_behind_the_pooler() -> (Snapshot, ConsoleSnapshot) {
    let snap = snapshot()
        .with(session(401).through_pooler(5001).idle(1))
        .build();
    let mut clients = vec![quiet_client(&pod_ip(1), 41_000, 1)];
    clients.extend((1..=4).map(|n| quiet_client(&pod_ip(1), 41_000 + n, 40 * 60)));
    let console = ConsoleSnapshot {
        servers: vec![pooled_server(5001, 401, None)],
        clients,
        pools: vec![pool(0, 0)],
    };
    (snap, console)
}

#[test]
fn stranded_pooler_clients_of_a_working_pod_are_idle_accumulation_and_never_ended() {
    let (snap, console) = fork_leak_behind_the_pooler();
    let strict = rules(
        "mode: Enforce\nidle: {idleTimeout: 1s, idleInTransactionTimeout: 1s, maxTransactionAge: 1s}\n",
    );
    for rules in [rules("{}"), strict] {
        let d = decide_behind(&snap, &look(console.clone()), &rules, &cluster());
        let f = the_finding(&d, FindingKind::IdleAccumulation);
        assert_eq!(f.shown.subject, about(deployment()));
        assert_eq!(f.shown.sessions, 4);
        assert!(
            f.shown.pids.is_empty(),
            "no server session: {:?}",
            f.shown.pids
        );
        let mut ports: Vec<Option<u16>> = f.shown.pooler_clients.iter().map(|c| c.port).collect();
        ports.sort_unstable();
        assert_eq!(ports, [41_001, 41_002, 41_003, 41_004].map(Some).to_vec());
        assert!(
            f.shown
                .pooler_clients
                .iter()
                .all(|c| c.pooler == POOLER && c.address == Some(ip(&pod_ip(1))))
        );
        assert!(
            f.shown.evidence.starts_with(&format!(
                "4 connections stranded idle for more than 30m00s on {}, which keeps using 1 other connection",
                pod_name(1)
            )),
            "{}",
            f.shown.evidence
        );
        assert!(
            f.shown
                .evidence
                .contains("4 client connections to pooler pgbouncer that hold no server session"),
            "{}",
            f.shown.evidence
        );
        assert!(
            f.shown.cause.contains(POOLER_CLIENTS_NOTE),
            "{}",
            f.shown.cause
        );
        // Nothing of the kind is ever a termination: the held server connection neither.
        assert!(d.terminate.is_empty() && d.dry_run.is_empty(), "{d:#?}");
    }
}

#[test]
fn stranded_pooler_clients_outside_a_cluster_are_named_by_their_address() {
    let (snap, console) = fork_leak_behind_the_pooler();
    let d = decide_behind(&snap, &look(console), &rules("{}"), &ClusterView::default());
    let f = the_finding(&d, FindingKind::IdleAccumulation);
    assert_eq!(f.shown.subject, about(client("", Some(&pod_ip(1)))));
    assert_eq!(f.shown.sessions, 4);
}

#[test]
fn a_pool_pinned_behind_the_pooler_counts_each_client_once() {
    // Pod 1 holds five connections through the pooler: two inside a transaction (each linked
    // to its server session, which is counted), three quiet between transactions (no session).
    let snap = snapshot()
        .with(session(501).through_pooler(5001).idle_in_transaction(30))
        .with(session(502).through_pooler(5002).idle_in_transaction(30))
        .build();
    let linked = |port: u16, server: u16| ClientRow {
        ptr: format!("c-{port}"),
        port: Some(port),
        connected_for: Some(Duration::from_secs(600)),
        since_request: Some(Duration::from_secs(30)),
        ..pooled_client(&pod_ip(1), Some(server))
    };
    let mut servers = vec![
        pooled_server(5001, 501, None),
        pooled_server(5002, 502, None),
    ];
    servers[0].link = Some("c-42001".to_owned());
    servers[1].link = Some("c-42002".to_owned());
    let mut clients = vec![linked(42_001, 5001), linked(42_002, 5002)];
    clients.extend((3..=5).map(|n| quiet_client(&pod_ip(1), 42_000 + n, 5)));
    let console = ConsoleSnapshot {
        servers,
        clients,
        pools: vec![pool(0, 0)],
    };

    let d = decide_behind(
        &snap,
        &look(console.clone()),
        &rules("budgets: {maxConnectionsPerPod: 5}"),
        &cluster(),
    );
    let f = the_finding(&d, FindingKind::PoolSaturation);
    assert_eq!(f.shown.subject, about(deployment()));
    assert_eq!(
        f.shown.sessions, 5,
        "not 7: a linked client counts by its session only"
    );
    assert_eq!(sorted(f.shown.pids.clone()), [501, 502]);
    assert_eq!(f.shown.pooler_clients.len(), 3);
    assert!(
        f.shown.evidence.starts_with(&format!(
            "{} holds 5 connections, its budget is 5 (2 idle in transaction; 3 client connections to pooler pgbouncer",
            pod_name(1)
        )),
        "{}",
        f.shown.evidence
    );
    assert!(
        f.shown.cause.contains(POOLER_CLIENTS_NOTE),
        "{}",
        f.shown.cause
    );

    // One budget higher, and nothing: the count is exact.
    let d = decide_behind(
        &snap,
        &look(console),
        &rules("budgets: {maxConnectionsPerPod: 6}"),
        &cluster(),
    );
    assert!(findings(&d, FindingKind::PoolSaturation).is_empty());
}

#[test]
fn pooler_clients_count_only_in_pools_of_governed_sessions_and_in_scope() {
    let (snap, mut console) = fork_leak_behind_the_pooler();
    // Another database's pool of the same pooler: its quiet clients are not this policy's.
    console.clients.extend((1..=4).map(|n| ClientRow {
        database: "reports".to_owned(),
        ..quiet_client(&pod_ip(2), 43_000 + n, 40 * 60)
    }));
    // poolwarden's own console connection is nobody's pool connection.
    console.clients.push(ClientRow {
        database: "pgbouncer".to_owned(),
        ..quiet_client(&pod_ip(3), 44_000, 40 * 60)
    });
    let d = decide_behind(&snap, &look(console.clone()), &rules("{}"), &cluster());
    assert_eq!(
        findings(&d, FindingKind::IdleAccumulation).len(),
        1,
        "{:#?}",
        d.findings
    );
    assert_eq!(
        the_finding(&d, FindingKind::IdleAccumulation)
            .shown
            .sessions,
        4
    );

    // Excluded users' clients are out of scope, as their sessions would be.
    let d = decide_behind(
        &snap,
        &look(console.clone()),
        &rules("scope: {excludeUsers: [app]}"),
        &cluster(),
    );
    assert!(findings(&d, FindingKind::IdleAccumulation).is_empty());

    // Without a governed server connection of the pool nothing says the pool is this
    // server's: its clients are not counted.
    let alone = snapshot().build();
    let d = decide_behind(&alone, &look(console), &rules("{}"), &cluster());
    assert!(findings(&d, FindingKind::IdleAccumulation).is_empty());
}

#[test]
fn healthy_pooler_clients_beside_the_parent_are_named_by_nothing() {
    // A pool busy every second: every client quiet for a second or two, none stranded.
    let snap = snapshot()
        .with(session(601).through_pooler(5001).idle(1))
        .build();
    let console = ConsoleSnapshot {
        servers: vec![pooled_server(5001, 601, None)],
        clients: (0..10)
            .map(|n| quiet_client(&pod_ip(2), 45_000 + n, u64::from(n % 3)))
            .collect(),
        pools: vec![pool(0, 0)],
    };
    let d = decide_behind(&snap, &look(console), &rules("{}"), &cluster());
    assert!(d.findings.is_empty(), "{:#?}", d.findings);
}

#[test]
fn a_pooler_client_waiting_for_a_server_is_in_use() {
    // The parent waits for a server (the pool is busy); its stranded workers are still found
    // beside it, and the waiting client is counted as the connection in use.
    let (snap, mut console) = fork_leak_behind_the_pooler();
    console.clients[0].state = "waiting".to_owned();
    console.clients[0].since_request = Some(Duration::from_secs(40 * 60));
    console.clients[0].waiting_for = Some(Duration::from_millis(300));
    let d = decide_behind(&snap, &look(console), &rules("{}"), &cluster());
    let f = the_finding(&d, FindingKind::IdleAccumulation);
    assert_eq!(f.shown.sessions, 4);
    assert!(
        f.shown
            .evidence
            .contains("which keeps using 1 other connection"),
        "{}",
        f.shown.evidence
    );
}
