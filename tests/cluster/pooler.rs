//! End to end behind PgBouncer: the real `poolwarden controller` binary against the Kubernetes API
//! stand-in (tests/kube/standin.py), a real PostgreSQL and a real PgBouncer in transaction pooling
//! in front of it, all started by the test. The pods' IPs are 127.0.0.x addresses and their
//! clients connect to the pooler from them, so PostgreSQL sees only the pooler's address: the pod
//! is known through the pooler's console alone, which the policy names in `spec.poolers`.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::controller::{Controller, NS, create_secret, eventually};
use crate::support::kube::KubeStandin;
use crate::support::{APP_DB, alive, monitor_url, sandbox};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use poolwarden::api::PoolPolicy;
use poolwarden_sandbox::{
    PgBouncer, PgBouncerOptions, PoolMode, PooledClient, Sandbox, SessionSpec,
};
use serde_json::json;

/// A PgBouncer in transaction pooling with two server connections (database `app_tx`).
async fn pooler(sb: &Sandbox) -> PgBouncer {
    sb.start_pgbouncer(
        PgBouncerOptions::default()
            .database("app_tx", APP_DB, PoolMode::Transaction, 2)
            .user("app", "app"),
    )
    .await
    .expect("PgBouncer starts")
}

/// A client of role `app` through the pooler, from the pod's address `127.0.0.<host>`.
async fn pod_client(pooler: &PgBouncer, host: u8) -> PooledClient {
    pooler
        .open_client(
            &SessionSpec::new("app", "app", "app_tx").from_addr(Ipv4Addr::new(127, 0, 0, host)),
        )
        .await
        .expect("client opens through the pooler")
}

/// Deployment `name` → ReplicaSet → one running pod per `(pod, ip)`, labelled `app: name`.
async fn deployment(client: &kube::Client, name: &str, pods: &[(&str, &str)]) {
    let d: Deployment = Api::namespaced(client.clone(), NS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let owner = |kind: &str, name: &str, uid: &str| json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true}]);
    let rs_name = format!("{name}-5c6d");
    let rs: ReplicaSet = Api::namespaced(client.clone(), NS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": NS,
                             "ownerReferences": owner("Deployment", name, d.metadata.uid.as_deref().unwrap())},
                "spec": {"selector": {"matchLabels": {"app": name}}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    for (pod, ip) in pods {
        Api::<Pod>::namespaced(client.clone(), NS)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": NS, "labels": {"app": name},
                                 "ownerReferences": owner("ReplicaSet", &rs_name, rs.metadata.uid.as_deref().unwrap())},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
                    "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                               "startTime": "2020-01-01T00:00:00Z",
                               "conditions": [{"type": "Ready", "status": "True"}]},
                }))
                .unwrap(),
            )
            .await
            .unwrap();
    }
}

/// The application: Deployment `orders-api`, pods a (127.0.0.61) and b (127.0.0.62).
async fn orders_api(client: &kube::Client) {
    deployment(
        client,
        "orders-api",
        &[
            ("orders-api-5c6d-a", "127.0.0.61"),
            ("orders-api-5c6d-b", "127.0.0.62"),
        ],
    )
    .await;
}

/// Waits until the backend `pid` is gone; its audit record, which must name pod a.
async fn ended_on_pod_a(sb: &Sandbox, controller: &Controller, pid: i64) -> String {
    eventually("the leaked server session is ended", 90, || async {
        (!alive(sb, pid).await).then_some(())
    })
    .await;
    let audited = controller
        .log()
        .lines()
        .find(|l| l.contains("session terminated") && l.contains(&format!("pid={pid}")))
        .unwrap_or_else(|| panic!("no audit record of {pid}"))
        .to_owned();
    assert!(audited.contains("orders-api-5c6d-a"), "{audited}");
    audited
}

/// PoolPolicy `shop/orders-db` in Enforce on Secret `orders-db-monitor`, with `poolers`.
async fn policy(client: &kube::Client, poolers: serde_json::Value) {
    let policy: PoolPolicy = serde_json::from_value(json!({
        "apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
        "metadata": {"name": "orders-db", "namespace": NS},
        "spec": {
            "database": {"connectionSecretRef": {"name": "orders-db-monitor"}},
            "mode": "Enforce",
            "interval": "1s",
            "scope": {"users": ["app"]},
            // As tight as idleness rules go: only the pooler's word keeps its connections.
            // The open transaction is ended once it has been named for a while.
            "idle": {"idleTimeout": "1s", "idleInTransactionTimeout": "15s"},
            "leakDetection": {"window": "1s", "idleInTransactionAge": "1s"},
            "poolers": poolers,
        },
    }))
    .unwrap();
    Api::<PoolPolicy>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
}

/// A healthy pod's client: a statement every second; `failed` is set if one fails.
struct Busy {
    task: tokio::task::JoinHandle<()>,
    failed: Arc<AtomicBool>,
}

impl Busy {
    fn start(client: PooledClient) -> Self {
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let task = tokio::spawn(async move {
            loop {
                if client.touch().await.is_err() {
                    flag.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Self { task, failed }
    }

    fn still_works(&self) -> bool {
        !self.failed.load(Ordering::SeqCst) && !self.task.is_finished()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn condition(policy: &PoolPolicy, type_: &str) -> Option<Condition> {
    policy
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// Reconciles seen in the controller's log (one `reconciled` line each at debug).
fn reconciles(controller: &Controller) -> usize {
    controller.log().matches("reconciled").count()
}

/// Waits for `n` more reconciles.
async fn cycles(controller: &Controller, n: usize) {
    let from = reconciles(controller);
    eventually(&format!("{n} more reconciles"), 60, || async {
        (reconciles(controller) >= from + n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_the_pod_of_an_idle_transaction_is_named_and_ended_and_held_connections_never()
 {
    let sb = sandbox().await;
    let pgbouncer = pooler(&sb).await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    create_secret(&client, "orders-db-monitor", &monitor_url(&sb)).await;
    create_secret(
        &client,
        "orders-pgbouncer",
        &(pgbouncer.stats_url() + "?sslmode=disable"),
    )
    .await;
    orders_api(&client).await;

    let healthy = pod_client(&pgbouncer, 62).await;
    let leaking = pod_client(&pgbouncer, 61).await;
    policy(
        &client,
        json!([{"name": "pgbouncer", "consoleSecretRef": {"name": "orders-pgbouncer"}}]),
    )
    .await;
    let mut controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    eventually("PoolersReachable is True", 60, || async {
        let p = policies.get("orders-db").await.ok()?;
        let c = condition(&p, "PoolersReachable")?;
        (c.status == "True").then_some(())
    })
    .await;

    // Pod a leaves a transaction open: a server is linked to it as long as it stays open.
    let leaked_pid = leaking.begin_idle_in_transaction().await.unwrap();
    // Pod b is healthy: a statement every second, on the other server, which the pooler holds
    // in between.
    let held_pid = healthy.backend_pid().await.unwrap();
    assert_ne!(leaked_pid, held_pid);
    let healthy = Busy::start(healthy);

    // Named on the pod's Deployment: status, annotation, Event.
    let status = eventually("the leak is in the status", 60, || async {
        let s = policies.get("orders-db").await.ok()?.status?;
        s.top_leaks
            .iter()
            .any(|l| {
                l.workload == "Deployment/orders-api"
                    && l.findings.contains(&"IdleInTransaction".to_owned())
            })
            .then_some(s)
    })
    .await;
    assert_eq!(status.top_leaks.len(), 1, "{:#?}", status.top_leaks);
    let reachable = status
        .conditions
        .iter()
        .find(|c| c.type_ == "PoolersReachable")
        .unwrap();
    assert_eq!(reachable.reason, "Read");
    assert!(
        reachable
            .message
            .contains("pgbouncer: 1 linked to a client"),
        "{reachable:?}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let annotations = eventually("the Deployment is annotated", 30, || async {
        let a = deployments
            .get("orders-api")
            .await
            .ok()?
            .metadata
            .annotations?;
        a.get("poolwarden.io/leak")
            .filter(|v| v.contains("IdleInTransaction"))?;
        Some(a)
    })
    .await;
    assert_eq!(annotations["poolwarden.io/policy"], "shop/orders-db");
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    eventually("a ConnectionLeak Event on the Deployment", 30, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("ConnectionLeak")
                    && e.regarding
                        .as_ref()
                        .is_some_and(|r| r.kind.as_deref() == Some("Deployment"))
            })
            .then_some(())
    })
    .await;

    // Ended through the verified termination; the connection the pooler holds never, though it
    // sits idle past `idleTimeout: 1s` between the healthy pod's statements.
    // The audit trail names the pod behind the pooler, and its Deployment.
    let audited = ended_on_pod_a(&sb, &controller, leaked_pid).await;
    assert!(audited.contains("Deployment/orders-api"), "{audited}");
    assert!(
        leaking.touch().await.is_err(),
        "the pooler closed the leaking client"
    );
    cycles(&controller, 3).await;
    assert!(alive(&sb, held_pid).await, "the held connection was ended");
    assert!(healthy.still_works(), "the healthy pod's client failed");
    let p = policies.get("orders-db").await.unwrap();
    assert_eq!(p.status.unwrap().terminations.total, 1);
    let unread = "poolwarden_poolers_unread{policy=\"shop/orders-db\"}";
    assert_eq!(controller.metric(unread), Some(0.0));

    // The console becomes unreachable (its Secret now names a closed port): the condition says
    // so, nothing crashes, and no connection is ended for being idle.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    Api::<Secret>::namespaced(client.clone(), NS)
        .patch(
            "orders-pgbouncer",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"uri": format!(
                "postgres://poolstats:x@127.0.0.1:{closed_port}/pgbouncer?sslmode=disable"
            )}})),
        )
        .await
        .unwrap();
    let down = eventually("PoolersReachable turns False", 60, || async {
        let p = policies.get("orders-db").await.ok()?;
        condition(&p, "PoolersReachable").filter(|c| c.status == "False")
    })
    .await;
    assert_eq!(down.reason, "Unreachable", "{down:?}");
    assert!(
        down.message.contains("pgbouncer") && down.message.contains("ended for being idle"),
        "{down:?}"
    );
    cycles(&controller, 3).await;
    assert!(controller.is_running(), "{}", controller.log());
    assert!(alive(&sb, held_pid).await, "a held connection was ended");
    assert!(healthy.still_works());
    let p = policies.get("orders-db").await.unwrap();
    assert_eq!(condition(&p, "Ready").unwrap().status, "True");
    assert_eq!(p.status.unwrap().terminations.total, 1);
    assert_eq!(controller.metric(unread), Some(1.0));
}

/// Two PgBouncers as the two replicas of a pooler Deployment: one port, each at its pod's IP.
async fn replicas(sb: &Sandbox) -> (PgBouncer, PgBouncer, u16) {
    let free = std::net::TcpListener::bind("127.0.0.91:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut started = Vec::new();
    for host in [91, 92] {
        let options = PgBouncerOptions {
            listen: Some(std::net::SocketAddrV4::new(
                Ipv4Addr::new(127, 0, 0, host),
                port,
            )),
            ..PgBouncerOptions::default()
                .database("app_tx", APP_DB, PoolMode::Transaction, 2)
                .user("app", "app")
        };
        started.push(sb.start_pgbouncer(options).await.expect("a replica starts"));
    }
    let b = started.pop().unwrap();
    let a = started.pop().unwrap();
    (a, b, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ready_replica_of_a_pooler_deployment_is_read_and_one_not_ready_stops_idle_terminations()
 {
    let sb = sandbox().await;
    let (replica_a, replica_b, port) = replicas(&sb).await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    create_secret(&client, "orders-db-monitor", &monitor_url(&sb)).await;
    // The credentials; the host is replaced by each replica's pod IP.
    create_secret(
        &client,
        "orders-pgbouncer-stats",
        &(replica_a
            .stats_url()
            .replace("127.0.0.91", "orders-pgbouncer.shop.svc")
            + "?sslmode=disable"),
    )
    .await;
    deployment(
        &client,
        "orders-pgbouncer",
        &[
            ("orders-pgbouncer-5c6d-a", "127.0.0.91"),
            ("orders-pgbouncer-5c6d-b", "127.0.0.92"),
        ],
    )
    .await;
    orders_api(&client).await;
    // Pod a goes through replica a, pod b through replica b.
    let leaking = pod_client(&replica_a, 61).await;
    let healthy = pod_client(&replica_b, 62).await;
    policy(
        &client,
        json!([{"name": "pgbouncer", "pods": {
            "selector": {"matchLabels": {"app": "orders-pgbouncer"}},
            "port": port,
            "consoleSecretRef": {"name": "orders-pgbouncer-stats"},
        }}]),
    )
    .await;
    let controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    let reachable = eventually("PoolersReachable is True", 60, || async {
        let p = policies.get("orders-db").await.ok()?;
        condition(&p, "PoolersReachable").filter(|c| c.status == "True")
    })
    .await;
    assert!(
        reachable
            .message
            .contains("pgbouncer/orders-pgbouncer-5c6d-a: ")
            && reachable
                .message
                .contains("pgbouncer/orders-pgbouncer-5c6d-b: "),
        "{reachable:?}"
    );

    // The held connection is replica b's, idle between the healthy pod's statements.
    let leaked_pid = leaking.begin_idle_in_transaction().await.unwrap();
    let held_pid = healthy.backend_pid().await.unwrap();
    let healthy = Busy::start(healthy);
    ended_on_pod_a(&sb, &controller, leaked_pid).await;
    cycles(&controller, 3).await;
    assert!(alive(&sb, held_pid).await, "the held connection was ended");
    assert!(healthy.still_works());

    // Replica b stops being Ready: not read, and while it runs its connections cannot be told
    // from a client's, so nothing is ended for being idle.
    Api::<Pod>::namespaced(client.clone(), NS)
        .patch_status(
            "orders-pgbouncer-5c6d-b",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
        )
        .await
        .unwrap();
    let down = eventually("PoolersReachable turns False", 60, || async {
        let p = policies.get("orders-db").await.ok()?;
        condition(&p, "PoolersReachable").filter(|c| c.status == "False")
    })
    .await;
    assert_eq!(down.reason, "PoolerPodNotReady", "{down:?}");
    assert!(
        down.message.contains("pgbouncer/orders-pgbouncer-5c6d-b"),
        "{down:?}"
    );
    cycles(&controller, 3).await;
    assert!(alive(&sb, held_pid).await, "a held connection was ended");
    assert!(healthy.still_works());
}
