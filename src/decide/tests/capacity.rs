//! `Overbooked` at the workloads' largest scale (issue 21): the autoscaler's maximum and the surge
//! of a rollout, the pool per pod declared or learned, and where the sum breaks.

use super::*;
use crate::decide::scale::{Autoscaler, Desired, IntOrPercent, Rollout};

/// Deployment `name` in shop, with pods `first..first + running` at 10.0.<first>.<n>.
struct App {
    name: &'static str,
    subnet: u8,
    running: u8,
    replicas: u32,
    hpa_max: Option<u32>,
    pool_max: Option<u32>,
}

impl App {
    fn workload(&self) -> WorkloadRef {
        WorkloadRef {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: self.name.into(),
        }
    }

    fn pod_ip(&self, n: u8) -> String {
        format!("10.0.{}.{n}", self.subnet)
    }

    fn pods(&self) -> Vec<PodInfo> {
        (1..=self.running)
            .map(|n| PodInfo {
                name: format!("{}-5d8f7-{n}", self.name).into(),
                ips: vec![ip(&self.pod_ip(n))],
                started_at: Some(ago(24 * HOUR)),
                workload: self.workload(),
                ready: true,
            })
            .collect()
    }

    fn info(&self) -> WorkloadInfo {
        WorkloadInfo {
            workload: self.workload(),
            scale: ScaleSpec {
                running: u32::from(self.running),
                desired: Some(Desired::Replicas(self.replicas)),
                rollout: Rollout::Surge(IntOrPercent::Percent(25)),
                autoscaler: self.hpa_max.map(|max_replicas| Autoscaler {
                    name: self.name.to_owned(),
                    max_replicas,
                }),
                declared: None,
            },
            pool_max: self.pool_max,
            annotations: BTreeMap::new(),
        }
    }

    /// `count` idle sessions from its pod `n`.
    fn sessions(&self, n: u8, count: i64, first_pid: i64) -> Vec<SessionBuilder> {
        (0..count)
            .map(|i| session(first_pid + i).client_addr(&self.pod_ip(n)))
            .collect()
    }
}

fn view(apps: &[&App]) -> ClusterView {
    ClusterView {
        policy: Some(POLICY_NAME.to_owned()),
        pods: apps.iter().flat_map(|a| a.pods()).collect(),
        workloads: apps.iter().map(|a| a.info()).collect(),
        ..ClusterView::default()
    }
}

/// A server that accepts 200 connections from applications.
fn server_of_200() -> SnapshotBuilder {
    let mut s = snapshot();
    s.server.max_connections = 203;
    s
}

const CHECKOUT: App = App {
    name: "checkout-api",
    subnet: 1,
    running: 2,
    replicas: 2,
    hpa_max: Some(4),
    pool_max: Some(25),
};
const ORDERS: App = App {
    name: "orders-api",
    subnet: 2,
    running: 3,
    replicas: 3,
    hpa_max: Some(20),
    pool_max: Some(10),
};
const BILLING: App = App {
    name: "billing-api",
    subnet: 3,
    running: 2,
    replicas: 2,
    hpa_max: Some(6),
    pool_max: Some(15),
};

#[test]
fn three_autoscaled_deployments_are_overbooked_before_any_of_them_scales() {
    // 4 x 25 + 20 x 10 + 6 x 15 = 390 at the autoscalers' maxima, 495 with each rollout's 25%
    // surge, against 200: the pods running now (2 + 3 + 2) would open 110.
    let cluster = view(&[&CHECKOUT, &ORDERS, &BILLING]);
    let d = decide_with(
        &server_of_200().build(),
        &rules("{}"),
        &cluster,
        &Memory::default(),
    );
    assert_eq!(d.capacity.booked_connections, Some(125 + 250 + 120));
    let f = the_finding(&d, FindingKind::Overbooked);
    assert!(
        f.shown.evidence.starts_with(
            "at their largest scale the pools may open 495 connections but the server accepts \
             200 from applications; it breaks at 13 of Deployment/orders-api's 20 replicas ("
        ),
        "{}",
        f.shown.evidence
    );
    assert!(
        f.shown.evidence.contains(
            "Deployment/orders-api: 20 replicas + 5 surge (HorizontalPodAutoscaler/orders-api \
             maxReplicas, maxSurge 25%) x 10 per pod (declared) = 250"
        ),
        "{}",
        f.shown.evidence
    );
    assert_eq!(
        d.capacity.breaks_at.as_deref(),
        Some("at 13 of Deployment/orders-api's 20 replicas")
    );
    let orders = d
        .capacity
        .bookings
        .iter()
        .find(|b| b.source == "Deployment/orders-api")
        .unwrap();
    assert_eq!(
        (orders.scale.replicas, orders.scale.surge, orders.scale.now),
        (20, 5, 3)
    );
    assert_eq!(orders.pool_from, PoolFrom::Annotation);
}

#[test]
fn the_words_say_which_scale_event_crosses_the_line() {
    let at = |apps: &[&App]| {
        decide_with(
            &snapshot().build(), // 97 usable
            &rules("{}"),
            &view(apps),
            &Memory::default(),
        )
        .capacity
        .breaks_at
    };
    let fixed = |running: u8, pool: u32| App {
        name: "orders-api",
        subnet: 2,
        running,
        replicas: u32::from(running),
        hpa_max: None,
        pool_max: Some(pool),
    };
    // 3 x 30 = 90 fits; a rollout runs a fourth pod.
    assert_eq!(
        at(&[&fixed(3, 30)]).as_deref(),
        Some("during a rollout of Deployment/orders-api at its 3 replicas (4 pods at once)")
    );
    // 4 x 30 = 120 already.
    assert_eq!(
        at(&[&fixed(4, 30)]).as_deref(),
        Some("already: the replicas running now may open 120")
    );
    // 3 x 8 fits; scaled up, the 13th replica crosses 97.
    let scaled = |hpa_max: u32| App {
        hpa_max: Some(hpa_max),
        ..fixed(3, 8)
    };
    assert_eq!(
        at(&[&scaled(20)]).as_deref(),
        Some("at 13 of Deployment/orders-api's 20 replicas")
    );
    // Up to 12 replicas it fits (96); only the surge of a rollout at 12 crosses.
    assert_eq!(
        at(&[&scaled(12)]).as_deref(),
        Some("during a rollout of Deployment/orders-api at its 12 replicas (15 pods at once)")
    );
    // Two that each fit at their largest scale, but not together.
    let a = App {
        hpa_max: Some(5),
        ..fixed(1, 10)
    };
    let b = App {
        name: "billing-api",
        subnet: 3,
        ..a
    };
    assert_eq!(
        at(&[&a, &b]).as_deref(),
        Some("only when several of them scale up at once")
    );
}

#[test]
fn the_pool_per_pod_is_learned_from_the_most_sessions_one_pod_held_and_kept() {
    let orders = App {
        pool_max: None,
        ..ORDERS
    };
    let cluster = view(&[&orders]);
    let busy = snapshot()
        .with_all(orders.sessions(1, 12, 100))
        .with_all(orders.sessions(2, 4, 200))
        .build();
    let d1 = decide_with(&busy, &rules("{}"), &cluster, &Memory::default());
    let booking = &d1.capacity.bookings[0];
    assert_eq!(
        (booking.pool_per_pod, booking.pool_from),
        (12, PoolFrom::Learned)
    );
    assert_eq!(booking.connections, 25 * 12);
    let f = the_finding(&d1, FindingKind::Overbooked);
    assert!(
        f.shown.evidence.contains("x 12 per pod (learned) = 300"),
        "{}",
        f.shown.evidence
    );

    // A quiet look later: the mark stands.
    let quiet = snapshot()
        .at(later(30))
        .with_all(orders.sessions(1, 2, 100))
        .build();
    let d2 = decide_with(&quiet, &rules("{}"), &cluster, &d1.memory);
    assert_eq!(d2.capacity.bookings[0].pool_per_pod, 12);

    // A restarted controller starts from the marks it kept in the status.
    let restarted = Memory::default().remembering(d2.memory.learned().clone());
    let d3 = decide_with(&quiet, &rules("{}"), &cluster, &restarted);
    assert_eq!(d3.capacity.bookings[0].pool_per_pod, 12);
    let forgot = decide_with(&quiet, &rules("{}"), &cluster, &Memory::default());
    assert_eq!(forgot.capacity.bookings[0].pool_per_pod, 2);
}

#[test]
fn a_declared_pool_wins_over_the_policys_which_wins_over_the_learned_one() {
    let orders = App {
        pool_max: None,
        ..ORDERS
    };
    let snap = snapshot().with_all(orders.sessions(1, 6, 100)).build();
    let pool = |app: &App, policy: &str| {
        let d = decide_with(&snap, &rules(policy), &view(&[app]), &Memory::default());
        let b = &d.capacity.bookings[0];
        (b.pool_per_pod, b.pool_from)
    };
    assert_eq!(pool(&orders, "{}"), (6, PoolFrom::Learned));
    let policy = "budgets: {maxConnectionsPerPod: 15}";
    assert_eq!(pool(&orders, policy), (15, PoolFrom::Policy));
    let declared = App {
        pool_max: Some(25),
        ..ORDERS
    };
    assert_eq!(pool(&declared, policy), (25, PoolFrom::Annotation));
}

#[test]
fn a_workload_never_seen_connected_books_nothing_unless_it_declares_a_pool() {
    let frontend = App {
        name: "frontend",
        subnet: 4,
        pool_max: None,
        ..ORDERS
    };
    let d = decide_with(
        &snapshot().build(),
        &rules("budgets: {maxConnectionsPerPod: 15}"),
        &view(&[&frontend]),
        &Memory::default(),
    );
    assert!(d.capacity.bookings.is_empty(), "{:#?}", d.capacity.bookings);
    assert_eq!(d.capacity.booked_connections, None);
    assert!(findings(&d, FindingKind::Overbooked).is_empty());
}

#[test]
fn overbooked_holds_for_the_window_before_it_is_confirmed_and_clears_a_window_after() {
    let cluster = view(&[&CHECKOUT, &ORDERS, &BILLING]);
    let policy = rules("leakDetection: {window: 10m}");
    let look = |at: i64, memory: &Memory, cluster: &ClusterView| {
        decide_with(
            &server_of_200().at(later(at)).build(),
            &policy,
            cluster,
            memory,
        )
    };
    let d1 = look(0, &Memory::default(), &cluster);
    let f = the_finding(&d1, FindingKind::Overbooked);
    assert!(!f.confirmed);
    assert_eq!(f.confirms_in, Some(secs(10 * MIN)));
    let d2 = look(10 * MIN, &d1.memory, &cluster);
    assert!(the_finding(&d2, FindingKind::Overbooked).confirmed);
    assert!(the_finding(&d2, FindingKind::Overbooked).started);

    // Billing gone and the autoscaler of orders-api capped at 5: 125 + 70 fits, and the finding
    // clears a window later.
    let capped = App {
        hpa_max: Some(5),
        ..ORDERS
    };
    let fits = view(&[&CHECKOUT, &capped]);
    let d3 = look(11 * MIN, &d2.memory, &fits);
    assert!(d3.capacity.booked_connections.unwrap() <= 200);
    let clearing = the_finding(&d3, FindingKind::Overbooked);
    assert!(clearing.confirmed && !clearing.present);
    let d4 = look(21 * MIN, &d3.memory, &fits);
    assert!(findings(&d4, FindingKind::Overbooked).is_empty());
}

#[test]
fn capacity_counts_client_sessions_against_the_usable_connections() {
    // 96 application sessions, poolwarden's own, and two background processes.
    let snap = snapshot()
        .with_all((100..196).map(session))
        .with(session(OWN_PID).application_name("poolwarden").active(0))
        .with(session(2).backend_type("walsender").active(HOUR))
        .with(session(3).backend_type("autovacuum launcher"))
        .build();
    let d = decide_standalone(&snap, &rules("budgets: {maxConnections: 90}"));
    let c = &d.capacity;
    assert_eq!(c.max_connections, 100);
    assert_eq!(c.reserved_connections, 3);
    assert_eq!(c.usable_connections, 97);
    assert_eq!(c.client_sessions, 97);
    assert_eq!(c.utilization_percent, 100);
    assert_eq!(c.scope_sessions, 96);
    assert_eq!(c.scope_budget, Some(90));

    let half = snapshot().with_all((100..148).map(session)).build();
    let d = decide_standalone(&half, &rules("{}"));
    assert_eq!(d.capacity.client_sessions, 48);
    assert!(
        (49..=50).contains(&d.capacity.utilization_percent),
        "{}",
        d.capacity.utilization_percent
    );
}

#[test]
fn reserved_connections_of_postgres_16_are_not_usable_by_applications() {
    let snap = snapshot().reserved_connections(2).build();
    let d = decide_standalone(&snap, &rules("{}"));
    assert_eq!(d.capacity.reserved_connections, 5);
    assert_eq!(d.capacity.usable_connections, 95);
}
