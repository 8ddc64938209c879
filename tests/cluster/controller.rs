//! End to end: the real `poolwarden controller` binary, over HTTP, against the Kubernetes API
//! stand-in (tests/kube/standin.py) and a real PostgreSQL (or MariaDB) started by the test. Pod
//! IPs are 127.0.0.x addresses, so sessions opened from them are the pods' sessions.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use crate::support::alive;
use crate::support::kube::{KubeStandin, TEST_USER_AGENT};
use crate::support::proxy::{ApiProxy, Link};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use poolwarden::api::PoolPolicy;
use poolwarden_sandbox::{MariaDb, MariaDbOptions, MySqlSession, MySqlSessionSpec};
use serde_json::json;

use crate::support::controller::{
    Controller, NS, cluster, cluster_on, create_policy, create_policy_with, create_secret,
    create_workload, database, eventually, session,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_ends_leaks_marks_the_workload_reports_and_cleans_up() {
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&client, &sb).await;

    // Pod a leaks: 4 sessions idle (an inherited pool) and 2 idle in transaction.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(session(&sb, 41).await);
    }
    let mut in_tx = Vec::new();
    for _ in 0..2 {
        let s = session(&sb, 41).await;
        s.begin_idle_in_transaction().await.unwrap();
        in_tx.push(s);
    }
    // Pod b is busy and healthy.
    let busy = session(&sb, 42).await;
    busy.start_active(120.0);
    create_policy(&client).await;

    let mut controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");
    eventually("/readyz says ready", 30, || async {
        controller.get("/readyz").filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(controller.get("/healthz").map(|(s, _)| s), Some(200));

    // The open transactions are terminated; idle and busy sessions are not.
    for s in &in_tx {
        let pid = s.pid();
        eventually(&format!("pid {pid} terminated"), 30, || async {
            (!alive(&sb, pid).await).then_some(())
        })
        .await;
    }
    for s in idle.iter().chain([&busy]) {
        assert!(alive(&sb, s.pid()).await);
    }

    // The Deployment carries the leak, written by this policy.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let annotations = eventually("the Deployment is annotated", 30, || async {
        let d = deployments.get("orders-api").await.ok()?;
        let a = d.metadata.annotations?;
        a.get("poolwarden.io/leak")
            .filter(|v| v.contains("IdleAccumulation"))?;
        Some(a)
    })
    .await;
    assert_eq!(annotations["poolwarden.io/policy"], "shop/orders-db");
    assert!(
        annotations["poolwarden.io/leak-detail"]
            .contains("idle for more than 1s on orders-api-5c6d-a")
    );

    // The Events exist.
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let reasons = eventually(
        "ConnectionLeak and SessionsTerminated events",
        30,
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            let found: Vec<(String, String)> = list
                .items
                .iter()
                .map(|e| {
                    let regarding = e
                        .regarding
                        .as_ref()
                        .and_then(|r| r.kind.clone())
                        .unwrap_or_default();
                    (e.reason.clone().unwrap_or_default(), regarding)
                })
                .collect();
            let has =
                |reason: &str, kind: &str| found.iter().any(|(r, k)| r == reason && k == kind);
            (has("ConnectionLeak", "Deployment") && has("SessionsTerminated", "PoolPolicy"))
                .then_some(found)
        },
    )
    .await;
    assert!(!reasons.is_empty());

    // The status tells the story.
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    let status = eventually(
        "the status shows the terminations and the leak",
        30,
        || async {
            let p = policies.get("orders-db").await.ok()?;
            let s = p.status?;
            (s.terminations.total >= 2 && s.leaking_workloads >= 1).then_some(s)
        },
    )
    .await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Reconciled")
    );
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "DatabaseReachable" && c.status == "True")
    );
    assert_eq!(status.top_leaks[0].workload, "Deployment/orders-api");
    assert!(
        status.top_leaks[0]
            .findings
            .contains(&"IdleAccumulation".to_owned())
    );
    assert!(
        status
            .connections
            .as_deref()
            .is_some_and(|c| c.ends_with("/97"))
    );
    let p = policies.get("orders-db").await.unwrap();
    assert_eq!(
        p.metadata.finalizers,
        Some(vec!["poolwarden.io/cleanup".to_owned()])
    );

    // Metrics, with bounded labels.
    let terminated = controller
        .metric("poolwarden_terminations_total{policy=\"shop/orders-db\",reason=\"IdleInTransactionTimeout\",engine=\"postgresql\"}")
        .unwrap();
    assert_eq!(terminated, 2.0);
    assert_eq!(controller.metric("poolwarden_leader"), Some(1.0));
    assert_eq!(
        controller.metric("poolwarden_monitoring_connections"),
        Some(1.0)
    );

    // Deleting the policy takes its annotations back, then lets it go.
    policies
        .delete("orders-db", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the annotations are removed", 30, || async {
        let d = deployments.get("orders-api").await.ok()?;
        let a = d.metadata.annotations.unwrap_or_default();
        (!a.keys().any(|k| k.starts_with("poolwarden.io/"))).then_some(())
    })
    .await;
    eventually("the policy is gone", 30, || async {
        policies
            .get_opt("orders-db")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // Its connection is closed, and no series names it any more.
    eventually("the deleted policy's metrics go", 30, || async {
        let (_, metrics) = controller.get("/metrics")?;
        let left = metrics.contains("policy=\"shop/orders-db\"");
        (controller.metric("poolwarden_monitoring_connections") == Some(0.0) && !left).then_some(())
    })
    .await;

    // SIGTERM: a clean exit, no monitoring session left behind, the lease released.
    let exit = controller.terminate();
    assert!(exit.success(), "{exit:?}\n{}", controller.log());
    let admin = sb.admin().await.unwrap();
    let ours: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'poolwarden'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ours, 0, "the monitoring connection was closed");
    let lease = Api::<Lease>::namespaced(client.clone(), "default")
        .get("poolwarden")
        .await
        .unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(holder.is_empty(), "released, not held by {holder:?}");

    // Every request the binary sent said who it was; the rest are this test's own.
    let agents = kube.user_agents();
    let version = format!("poolwarden/{}", env!("CARGO_PKG_VERSION"));
    let senders: Vec<&str> = agents.keys().map(String::as_str).collect();
    assert_eq!(senders, [TEST_USER_AGENT, version.as_str()], "{agents:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_stays_passive_until_the_leader_goes_then_takes_over() {
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&client, &sb).await;
    create_policy(&client).await;
    let kubeconfig = kube.kubeconfig(dir.path());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let holder = || async {
        let lease = leases.get_opt("poolwarden").await.ok()??;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    };

    let mut first = Controller::start(&kubeconfig, dir.path(), "replica-a");
    eventually("replica-a leads", 30, || async {
        (first.metric("poolwarden_leader") == Some(1.0)).then_some(())
    })
    .await;
    let second = Controller::start(&kubeconfig, dir.path(), "replica-b");
    eventually("replica-b is ready", 30, || async {
        second.get("/readyz").filter(|(s, _)| *s == 200)
    })
    .await;
    // Passive for longer than a lease lasts, while the first renews.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(second.metric("poolwarden_leader"), Some(0.0));
        assert_eq!(holder().await.as_deref(), Some("replica-a"));
    }

    let exit = first.terminate();
    assert!(exit.success(), "{exit:?}\n{}", first.log());
    eventually("replica-b takes over", 30, || async {
        (second.metric("poolwarden_leader") == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(holder().await.as_deref(), Some("replica-b"));

    // And acts: a new leak is ended by the new leader.
    let s = session(&sb, 41).await;
    s.begin_idle_in_transaction().await.unwrap();
    eventually(
        "the new leader terminates the open transaction",
        30,
        || async { (!alive(&sb, s.pid()).await).then_some(()) },
    )
    .await;
    assert!(second.log().contains("leading: reconciling PoolPolicies"));
}

/// Reconciles of the policy so far (the reconcile-duration histogram's count).
fn reconciles(controller: &Controller) -> f64 {
    controller
        .metric("poolwarden_reconcile_duration_seconds_count{policy=\"shop/orders-db\"}")
        .unwrap_or(0.0)
}

/// The requests the stand-in logged after `from` (a length of its log) that `matches`.
fn requests_since(kube: &KubeStandin, from: usize, matches: impl Fn(&str) -> bool) -> Vec<String> {
    kube.log_text()
        .get(from..)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("standin: "))
        .filter(|l| matches(l))
        .map(str::to_owned)
        .collect()
}

/// A write to a workload: a PATCH of a Deployment, ReplicaSet or pod.
fn workload_write(line: &str) -> bool {
    line.starts_with("PATCH ")
        && ["/deployments/", "/replicasets/", "/pods/"]
            .iter()
            .any(|k| line.contains(k))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaking_deployment_is_annotated_once_and_its_event_is_where_kubectl_describe_looks() {
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    let deployment_uid = cluster(&client, &sb).await;
    // Pod a leaks 4 idle sessions (an inherited pool); nothing is ended (no idle timeout).
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(session(&sb, 41).await);
    }
    create_policy(&client).await;
    let controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");

    // The Deployment is annotated; the Deployment controller copies that onto its ReplicaSet.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    eventually("the Deployment is annotated", 60, || async {
        let d = deployments.get("orders-api").await.ok()?;
        d.metadata.annotations?.get("poolwarden.io/leak")?;
        Some(())
    })
    .await;
    let copied = eventually("the copy on the ReplicaSet", 30, || async {
        let rs = replicasets.get("orders-api-5c6d").await.ok()?;
        let a = rs.metadata.annotations?;
        a.get("poolwarden.io/leak")?;
        Some(a)
    })
    .await;
    assert_eq!(copied["poolwarden.io/policy"], "shop/orders-db");

    // Steady state with the leak confirmed: five more reconciles, and not one write to a workload.
    let mark = kube.log_text().len();
    let start = reconciles(&controller);
    eventually("five more reconciles", 60, || async {
        (reconciles(&controller) >= start + 5.0).then_some(())
    })
    .await;
    let writes = requests_since(&kube, mark, workload_write);
    assert!(
        writes.is_empty(),
        "workload writes in steady state: {writes:#?}"
    );
    let d = deployments.get("orders-api").await.unwrap();
    assert_eq!(
        d.metadata.annotations.unwrap()["poolwarden.io/leak"],
        "IdleAccumulation"
    );
    let all = requests_since(&kube, 0, workload_write);
    assert_eq!(
        all,
        ["PATCH /apis/apps/v1/namespaces/shop/deployments/orders-api"],
        "one write in all: the Deployment's annotations"
    );

    // `kubectl describe deployment orders-api` lists v1 Events by these four fields.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), NS);
    let describe = ListParams::default().fields(&format!(
        "involvedObject.name=orders-api,involvedObject.namespace={NS},involvedObject.kind=Deployment,involvedObject.uid={deployment_uid}"
    ));
    let shown = eventually(
        "the ConnectionLeak Event, as describe finds it",
        30,
        || async {
            let list = events.list(&describe).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("ConnectionLeak"))
        },
    )
    .await;
    assert_eq!(shown.type_.as_deref(), Some("Warning"));
    let regarding = shown.involved_object;
    assert_eq!(
        (
            regarding.api_version.as_deref(),
            regarding.kind.as_deref(),
            regarding.name.as_deref(),
            regarding.namespace.as_deref(),
            regarding.uid.as_deref(),
        ),
        (
            Some("apps/v1"),
            Some("Deployment"),
            Some("orders-api"),
            Some(NS),
            Some(deployment_uid.as_str())
        )
    );
    assert!(
        regarding.resource_version.is_some(),
        "the reference names the version it saw"
    );
    drop(idle);
}

/// The Events about `workload` (a Deployment in `shop`): (type, reason, note).
async fn events_about(client: &kube::Client, workload: &str) -> Vec<(String, String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let list = events.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("Deployment") && r.name.as_deref() == Some(workload)
            })
        })
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until the server no longer shows any of `sessions`.
async fn all_ended(
    sb: &poolwarden_sandbox::Sandbox,
    sessions: &[poolwarden_sandbox::ClientSession],
) {
    for s in sessions {
        let pid = s.pid();
        eventually(&format!("pid {pid} ended"), 60, || async {
            (!alive(sb, pid).await).then_some(())
        })
        .await;
    }
}

/// The first Event with `reason` about Deployment `workload`, once there is one: (type, reason,
/// note).
async fn event_about(
    client: &kube::Client,
    workload: &str,
    reason: &str,
) -> (String, String, String) {
    eventually(&format!("the {reason} Event on {workload}"), 10, || async {
        events_about(client, workload)
            .await
            .into_iter()
            .find(|(_, r, _)| r == reason)
    })
    .await
}

/// Enforce with timeouts shorter than the detection ages, as the real-cluster run had them
/// (idle in a transaction ended at 2 s, idle at 4 s, detection at its defaults of 2 and 30
/// minutes, a window of 10): no detector can see these leaks before they are ended.
/// - orders-api's pinned pool (5 sessions idle in a transaction) is ended, and in that reconcile
///   its Deployment is annotated `IdleInTransaction` and gets a `Warning ConnectionLeak` Event
///   naming what was ended;
/// - obslog-api's forked workers (3 idle sessions beside a busy parent) are ended for plain
///   idleness: a `Normal SessionsTerminated` Event on its Deployment says so, and no annotation;
/// - storefront, busy, gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_enforce_ends_is_told_on_each_workload_in_the_reconcile_that_ends_it() {
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&client, &sb).await;
    create_workload(
        &client,
        "obslog-api",
        &[("obslog-api-5c6d-a", "127.0.0.43")],
    )
    .await;
    create_workload(
        &client,
        "storefront",
        &[("storefront-5c6d-a", "127.0.0.44")],
    )
    .await;

    let mut pinned = Vec::new();
    for _ in 0..5 {
        let s = session(&sb, 41).await;
        s.begin_idle_in_transaction().await.unwrap();
        pinned.push(s);
    }
    let parent = session(&sb, 43).await;
    parent.start_active(120.0);
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(session(&sb, 43).await);
    }
    let mut busy = Vec::new();
    for _ in 0..2 {
        let s = session(&sb, 44).await;
        s.start_active(120.0);
        busy.push(s);
    }
    create_policy_with(
        &client,
        json!({
            "mode": "Enforce",
            "interval": "1s",
            "idle": {"idleInTransactionTimeout": "2s", "idleTimeout": "4s"},
        }),
    )
    .await;
    let controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");

    all_ended(&sb, &pinned).await;
    all_ended(&sb, &workers).await;
    // Told on the pinned pool's Deployment: the annotation and the Warning, naming what was
    // ended. The window is 10 minutes: only the termination can have confirmed it.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let annotations = eventually("orders-api is annotated", 10, || async {
        deployments
            .get("orders-api")
            .await
            .ok()?
            .metadata
            .annotations
    })
    .await;
    assert_eq!(annotations["poolwarden.io/leak"], "IdleInTransaction");
    let detail = &annotations["poolwarden.io/leak-detail"];
    assert!(
        detail.contains("5 sessions ended, idle in a transaction for more than 2s"),
        "{detail}"
    );
    let warned = event_about(&client, "orders-api", "ConnectionLeak").await;
    assert_eq!(warned.0, "Warning");
    assert!(warned.2.contains("5 sessions ended"), "{}", warned.2);
    assert!(warned.2.contains("checked out"), "{}", warned.2);

    // The forked workers: ended for idleness, a Normal Event, no leak annotation.
    let told = event_about(&client, "obslog-api", "SessionsTerminated").await;
    assert_eq!(told.0, "Normal");
    assert!(
        told.2
            .contains("ended 3 sessions of this workload: 3 IdleTimeout"),
        "{}",
        told.2
    );
    assert!(told.2.contains("obslog-api-5c6d-a"), "{}", told.2);

    // A few more reconciles: the healthy neighbour and the forked workers' parent are left
    // alone, and nobody else is marked.
    let start = reconciles(&controller);
    eventually("three more reconciles", 30, || async {
        (reconciles(&controller) >= start + 3.0).then_some(())
    })
    .await;
    assert!(alive(&sb, parent.pid()).await);
    for s in &busy {
        assert!(alive(&sb, s.pid()).await);
    }
    for name in ["obslog-api", "storefront"] {
        let d = deployments.get(name).await.unwrap();
        let marked: Vec<String> = d
            .metadata
            .annotations
            .unwrap_or_default()
            .into_keys()
            .filter(|k| k.starts_with("poolwarden.io/"))
            .collect();
        assert!(marked.is_empty(), "{name}: {marked:?}");
    }
    assert!(
        events_about(&client, "storefront").await.is_empty(),
        "{:?}",
        events_about(&client, "storefront").await
    );
    assert!(
        !events_about(&client, "obslog-api")
            .await
            .iter()
            .any(|(_, reason, _)| reason == "ConnectionLeak")
    );
    // Remediation is off by default: the pinned pool's pod is left to its owners.
    assert!(requests_since(&kube, 0, |l| l.contains("/eviction")).is_empty());
}

/// orders-api (two Ready replicas: .41 and .42) with the pool of its pod a pinned (3 sessions
/// idle in a transaction) and its pod b at work; storefront (.44) at work beside it; a policy in
/// `Enforce` that ends a transaction idle for 2 s, with `remediation` as given.
async fn pinned_replica(
    sb: &poolwarden_sandbox::Sandbox,
    client: &kube::Client,
    remediation: serde_json::Value,
) -> Vec<poolwarden_sandbox::ClientSession> {
    cluster(client, sb).await;
    create_workload(client, "storefront", &[("storefront-5c6d-a", "127.0.0.44")]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let s = session(sb, 41).await;
        s.begin_idle_in_transaction().await.unwrap();
        held.push(s);
    }
    for host in [42, 44] {
        let s = session(sb, host).await;
        s.start_active(120.0);
        held.push(s);
    }
    create_policy_with(
        client,
        json!({
            "mode": "Enforce",
            "interval": "1s",
            "idle": {"idleInTransactionTimeout": "2s"},
            "remediation": remediation,
        }),
    )
    .await;
    held
}

fn pod_names(pods: &[Pod]) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    names
}

/// With `remediation.pinnedPools: Evict`, the pod whose pinned pool was ended is evicted, its
/// ReplicaSet replaces it, and nothing else is touched: the other replica, the neighbour, and
/// the replacement (it holds no pinned pool) stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_pinned_pool_was_ended_is_evicted_and_replaced() {
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    let held = pinned_replica(&sb, &client, json!({"pinnedPools": "Evict"})).await;
    let controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let replaced = eventually("pod a evicted and replaced by a Ready pod", 60, || async {
        let list = pods.list(&ListParams::default()).await.ok()?.items;
        let names = pod_names(&list);
        let new: Vec<&Pod> = list
            .iter()
            .filter(|p| {
                let name = p.metadata.name.as_deref().unwrap_or_default();
                name.starts_with("orders-api-5c6d-") && !name.ends_with("-b")
            })
            .collect();
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        (!names.contains(&"orders-api-5c6d-a".to_owned()) && new.len() == 1 && ready(new[0]))
            .then_some(names)
    })
    .await;
    for s in &held[..3] {
        assert!(
            !alive(&sb, s.pid()).await,
            "the pinned sessions were ended first"
        );
    }
    assert!(
        replaced.contains(&"orders-api-5c6d-b".to_owned()),
        "{replaced:?}"
    );
    assert!(
        replaced.contains(&"storefront-5c6d-a".to_owned()),
        "{replaced:?}"
    );

    let warned = eventually("the PodEvicted Event on orders-api", 10, || async {
        events_about(&client, "orders-api")
            .await
            .into_iter()
            .find(|(_, reason, _)| reason == "PodEvicted")
    })
    .await;
    assert_eq!(warned.0, "Warning");
    assert!(
        warned
            .2
            .contains("evicted pod orders-api-5c6d-a: its pool was pinned"),
        "{}",
        warned.2
    );
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    eventually("the status counts the eviction", 10, || async {
        let status = policies.get("orders-db").await.ok()?.status?;
        (status.evictions?.last_hour == 1).then_some(())
    })
    .await;
    assert_eq!(
        controller
            .metric("poolwarden_evictions_total{policy=\"shop/orders-db\",outcome=\"evicted\"}"),
        Some(1.0)
    );

    // A few more reconciles: one eviction in all, and nothing else written to a pod.
    let start = reconciles(&controller);
    eventually("three more reconciles", 30, || async {
        (reconciles(&controller) >= start + 3.0).then_some(())
    })
    .await;
    let evictions = requests_since(&kube, 0, |l| l.contains("/eviction"));
    assert_eq!(
        evictions,
        ["POST /api/v1/namespaces/shop/pods/orders-api-5c6d-a/eviction"],
        "one eviction in all"
    );
    for s in &held[3..] {
        assert!(alive(&sb, s.pid()).await, "busy sessions are left alone");
    }
}

/// A PodDisruptionBudget that allows no disruption: the eviction is refused (429), nothing is
/// forced or deleted, the status says why, and the reconciles go on at their pace (a refused
/// eviction is asked again next cycle, not retried inside one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disruption_budget_that_allows_none_keeps_the_pod_and_the_status_says_why() {
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    let budgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("policy", "v1", "PodDisruptionBudget"),
            "poddisruptionbudgets",
        ),
    );
    budgets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "orders-api", "namespace": NS},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "orders-api"}}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let _held = pinned_replica(&sb, &client, json!({"pinnedPools": "Evict"})).await;
    let controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");

    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    let waiting = eventually("the status says a budget refused", 60, || async {
        let status = policies.get("orders-db").await.ok()?.status?;
        status.evictions?.waiting.into_iter().next()
    })
    .await;
    assert_eq!(
        (
            waiting.pod.as_str(),
            waiting.workload.as_str(),
            waiting.reason.as_str()
        ),
        (
            "orders-api-5c6d-a",
            "Deployment/orders-api",
            "DisruptionBudget"
        )
    );
    assert!(
        waiting
            .message
            .contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{}",
        waiting.message
    );
    // Asked again each cycle, at the cycle's pace, and never forced.
    let start = reconciles(&controller);
    eventually("three more reconciles", 30, || async {
        (reconciles(&controller) >= start + 3.0).then_some(())
    })
    .await;
    assert!(requests_since(&kube, 0, |l| l.contains("/eviction")).len() >= 2);
    assert!(
        requests_since(&kube, 0, |l| l.starts_with("DELETE")
            && l.contains("/pods/"))
        .is_empty()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    assert_eq!(
        pod_names(&pods.list(&ListParams::default()).await.unwrap().items),
        [
            "orders-api-5c6d-a",
            "orders-api-5c6d-b",
            "storefront-5c6d-a"
        ]
    );
    assert!(
        events_about(&client, "orders-api")
            .await
            .iter()
            .any(|(kind, reason, _)| kind == "Warning" && reason == "EvictionBlocked")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_api_server_forgets_its_history_the_controller_relists_and_catches_up() {
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&client, &sb).await;
    // Pod b holds one idle session.
    let held = session(&sb, 42).await;
    create_policy(&client).await;
    let controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");
    eventually("the first reconcile", 60, || async {
        (reconciles(&controller) >= 1.0).then_some(())
    })
    .await;
    assert!(
        alive(&sb, held.pid()).await,
        "a live pod's idle session stays"
    );

    // Pod b goes while the watches hold back; then the API server restarts: its history is
    // compacted (410 Gone) and, for a few seconds, RBAC answers 403. Only a relist tells the
    // controller that b is gone and its session an orphan.
    kube.pause_watches();
    Api::<Pod>::namespaced(client.clone(), NS)
        .delete("orders-api-5c6d-b", &DeleteParams::default())
        .await
        .unwrap();
    kube.forbid(2);
    kube.expire();
    eventually("the orphaned session is ended", 60, || async {
        (!alive(&sb, held.pid()).await).then_some(())
    })
    .await;
    let gone = requests_since(&kube, 0, |l| l.contains("410 Gone")).len();
    assert!(gone > 0, "the controller's watches were told 410 Gone");
    assert!(
        controller.log().contains("watch failed; retrying"),
        "the failures were logged"
    );
    assert_eq!(controller.get("/readyz").map(|(s, _)| s), Some(200));
    // The metrics are reported after the cycle has acted on the cluster: wait for that step.
    let terminated = eventually("the termination counted", 30, || async {
        controller.metric(
            "poolwarden_terminations_total{policy=\"shop/orders-db\",reason=\"Orphaned\",engine=\"postgresql\"}",
        )
    })
    .await;
    assert_eq!(terminated, 1.0);
}

/// `count` pods of Deployments named `orders-{w}`, as a cluster holds them: each carries a large
/// `kubectl.kubernetes.io/last-applied-configuration` (16 KiB), as `kubectl apply` leaves on
/// objects. Returns the size of their JSON in all, in MiB.
async fn many_pods(client: &kube::Client, count: usize) -> f64 {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let applied = "x".repeat(16 * 1024);
    let pod = |i: usize| -> Pod {
        let ip = format!("10.2.{}.{}", i / 250, i % 250 + 1);
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("orders-{}-x-{i}", i / 10), "namespace": NS,
                         "labels": {"app": format!("orders-{}", i / 10)},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}},
            "spec": {"containers": [{"name": "app", "image": "orders:1"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "startTime": "2020-01-01T00:00:00Z"},
        }))
        .unwrap()
    };
    let bytes = serde_json::to_vec(&pod(1234)).unwrap().len() * count;
    futures::stream::iter(0..count)
        .map(|i| {
            let (pods, pod) = (pods.clone(), pod(i));
            async move {
                pods.create(&PostParams::default(), &pod).await.unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    bytes as f64 / (1024.0 * 1024.0)
}

/// The controller's peak resident memory (VmHWM), in MiB.
fn peak_mib(controller: &Controller) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", controller.child.id())).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// A controller, once `/readyz` says ready.
async fn ready_controller(kube: &KubeStandin, dir: &Path, identity: &str) -> Controller {
    // One malloc arena: the same allocator behaviour however many cores the machine has.
    let controller = Controller::start_with_env(
        &kube.kubeconfig(dir),
        dir,
        identity,
        &[("MALLOC_ARENA_MAX", "1")],
    );
    eventually("/readyz says ready", 120, || async {
        controller.get("/readyz").filter(|(s, _)| *s == 200)
    })
    .await;
    controller
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_list_of_pods_is_paged_and_never_held_whole() {
    // A server without streaming lists: the controller falls back to paged lists.
    let kube = KubeStandin::start_with(&["--no-streaming-lists"]);
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    // What the controller costs with nothing to list.
    let mut empty = ready_controller(&kube, dir.path(), "empty").await;
    let baseline = peak_mib(&empty);
    empty.terminate();

    const PODS: usize = 2_000;
    let all = many_pods(&client, PODS).await;
    let mark = kube.log_text().len();
    let controller = ready_controller(&kube, dir.path(), "replica-a").await;
    // Holding the whole list (as objects, or even as JSON) would cost more than `all`; a page at
    // a time costs a fraction of it.
    let peak = peak_mib(&controller);
    eprintln!(
        "controller peak resident memory: {baseline:.1} MiB with no pods, {peak:.1} MiB with \
         {PODS} pods ({all:.1} MiB of JSON)"
    );
    assert!(
        peak - baseline < all / 2.0,
        "the first list cost {:.1} MiB ({all:.1} MiB of JSON in all)",
        peak - baseline
    );
    let pages = requests_since(&kube, mark, |l| {
        l.starts_with("GET /api/v1/pods?") && !l.contains("watch=true")
    });
    assert_eq!(pages.len(), PODS.div_ceil(100), "{pages:#?}");
    assert!(pages.iter().all(|p| p.contains("limit=100")), "{pages:#?}");
    assert!(
        pages[1..].iter().all(|p| p.contains("continue=")),
        "{pages:#?}"
    );
}

/// A MariaDB with database `orders`, user `app` and the monitoring user `monitor`.
async fn mariadb() -> MariaDb {
    let db = MariaDb::start(MariaDbOptions::default()).await.unwrap();
    db.create_database("orders").await.unwrap();
    db.create_user("app", "app", &["ALL ON orders.*"])
        .await
        .unwrap();
    db.create_user("monitor", "monitor", &["PROCESS, CONNECTION ADMIN ON *.*"])
        .await
        .unwrap();
    db
}

async fn mysql_session(db: &MariaDb, host: u8) -> MySqlSession {
    let spec = MySqlSessionSpec::new("app", "app", "orders")
        .program("orders-api")
        .from_addr(Ipv4Addr::new(127, 0, 0, host));
    db.open_session(&spec).await.unwrap()
}

/// How many threads of `user` the MariaDB shows, asked as root.
async fn mysql_threads_of(db: &MariaDb, user: &str) -> i64 {
    use mysql_async::prelude::Queryable;
    let mut admin = db.admin().await.unwrap();
    let n: Option<i64> = admin
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ?",
            (user,),
        )
        .await
        .unwrap();
    n.unwrap_or(0)
}

/// The same policy, with a Secret holding a `mysql://` URL: the controller reconciles a MariaDB
/// end to end. MariaDB's `performance_schema` is off, as it ships: threads are attributed by the
/// pod IP alone, and the status and metrics say which engine they come from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_url_in_the_secret_is_reconciled_end_to_end_with_attribution_by_pod_ip() {
    let db = mariadb().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    let url = db.url("monitor", "monitor", "") + "?ssl-mode=DISABLED";
    cluster_on(&client, &url).await;

    // Pod a leaks: 4 threads idle (an inherited pool) and 2 idle in a transaction.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(mysql_session(&db, 41).await);
    }
    let mut in_tx = Vec::new();
    for _ in 0..2 {
        let s = mysql_session(&db, 41).await;
        s.begin_idle_in_transaction().await.unwrap();
        in_tx.push(s);
    }
    // Pod b is busy and healthy.
    let busy = mysql_session(&db, 42).await;
    busy.start_active(120.0);
    create_policy(&client).await;

    let controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");
    eventually("/readyz says ready", 30, || async {
        controller.get("/readyz").filter(|(s, _)| *s == 200)
    })
    .await;

    // The open transactions are killed; idle and busy threads are not.
    for s in &in_tx {
        let id = s.id();
        eventually(&format!("thread {id} killed"), 30, || async {
            (!crate::support::mariadb::alive(&db, id).await).then_some(())
        })
        .await;
    }
    for s in idle.iter().chain([&busy]) {
        assert!(
            crate::support::mariadb::alive(&db, s.id()).await,
            "thread {} lives",
            s.id()
        );
    }

    // Attributed by pod IP: the Deployment carries the leak, on pod a.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let annotations = eventually("the Deployment is annotated", 30, || async {
        let d = deployments.get("orders-api").await.ok()?;
        let a = d.metadata.annotations?;
        a.get("poolwarden.io/leak")
            .filter(|v| v.contains("IdleAccumulation"))?;
        Some(a)
    })
    .await;
    assert!(
        annotations["poolwarden.io/leak-detail"].contains("on orders-api-5c6d-a"),
        "{annotations:?}"
    );

    // The status names the engine.
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    let status = eventually("the status shows the kills", 30, || async {
        let s = policies.get("orders-db").await.ok()?.status?;
        (s.terminations.total >= 2 && s.leaking_workloads >= 1).then_some(s)
    })
    .await;
    let reachable = status
        .conditions
        .iter()
        .find(|c| c.type_ == "DatabaseReachable")
        .unwrap();
    assert_eq!(reachable.status, "True");
    assert!(
        reachable.message.starts_with("MariaDB "),
        "{}",
        reachable.message
    );
    assert_eq!(status.top_leaks[0].workload, "Deployment/orders-api");

    // Metrics carry the engine.
    let terminated = eventually("the kills counted", 30, || async {
        controller.metric(
            "poolwarden_terminations_total{policy=\"shop/orders-db\",reason=\"IdleInTransactionTimeout\",engine=\"mariadb\"}",
        )
    })
    .await;
    assert_eq!(terminated, 2.0);
    assert_eq!(
        controller.metric(
            "poolwarden_sessions{policy=\"shop/orders-db\",workload=\"Deployment/orders-api\",state=\"idle\",engine=\"mariadb\"}"
        ),
        Some(4.0),
        "{:?}",
        controller.get("/metrics")
    );
    assert!(
        controller
            .metric(
                "poolwarden_server_utilization_ratio{policy=\"shop/orders-db\",engine=\"mariadb\"}"
            )
            .is_some()
    );

    // SIGTERM: a clean exit, the monitoring thread closed.
    let mut controller = controller;
    let exit = controller.terminate();
    assert!(exit.success(), "{exit:?}\n{}", controller.log());
    eventually("the monitoring thread is gone", 10, || async {
        (mysql_threads_of(&db, "monitor").await == 0).then_some(())
    })
    .await;
}

/// A Secret that appears re-triggers its policy at once: with a 5-minute interval, the retry after
/// "Secret not found" would come 4 to 6 minutes later; the watch makes it seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_appears_retriggers_its_policy_at_once() {
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    create_policy_with(&client, json!({"interval": "5m"})).await;
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    let _controller = ready_controller(&kube, dir.path(), "replica-a").await;
    let ready = || async {
        let p = policies.get("orders-db").await.ok()?;
        let status = p.status?;
        let c = status.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        Some((c.status, c.reason))
    };
    eventually("the policy says its Secret is missing", 60, || async {
        ready()
            .await
            .filter(|(_, reason)| reason == "SecretNotFound")
    })
    .await;

    let url = sb.url("monitor", "monitor", "orders") + "?sslmode=disable";
    create_secret(&client, "orders-db-monitor", &url).await;
    // Well within the 4 minutes the backoff alone would take.
    eventually(
        "the policy reconciles once its Secret exists",
        60,
        || async {
            ready()
                .await
                .filter(|(status, reason)| status == "True" && reason == "Reconciled")
        },
    )
    .await;
}

/// How long after SIGTERM the controller must have exited: its bound (15 s, see
/// src/controller/runtime/shutdown.rs) plus 10 s of slack for a loaded machine, still inside the chart's
/// `terminationGracePeriodSeconds` of 30 s.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(25);

/// The watches of a controller over all namespaces: pods, six kinds of owner,
/// HorizontalPodAutoscalers, PoolPolicies and Secrets.
const WATCHES: usize = 10;

/// Lines of the controller's log that contain `text`.
fn log_lines(controller: &Controller, text: &str) -> Vec<String> {
    controller
        .log()
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_owned)
        .collect()
}

/// An API server whose storage cannot request watch progress accepts every streaming list and
/// fails it inside the stream. With its default flags the controller lists in pages instead,
/// says so once, and reconciles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_streaming_lists_fail_inside_the_stream_the_controller_lists_in_pages_and_reconciles()
{
    let sb = database().await;
    let kube = KubeStandin::start_with(&["--no-watch-progress"]);
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&client, &sb).await;
    create_policy(&client).await;
    let mut controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");

    eventually("/readyz says ready", 60, || async {
        controller.get("/readyz").filter(|(s, _)| *s == 200)
    })
    .await;
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    eventually("the policy is reconciled", 60, || async {
        let p = policies.get("orders-db").await.ok()?;
        p.metadata.finalizers.filter(|f| !f.is_empty())?;
        let ready = p
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status == "True").then_some(())
    })
    .await;
    assert!(
        kube.log_text().contains("RequestWatchProgress is disabled"),
        "the streaming lists were tried and failed"
    );
    let said = log_lines(&controller, "lists in pages");
    assert_eq!(said.len(), 1, "said once: {said:#?}");
    assert!(
        said[0].contains("RequestWatchProgress"),
        "with the reason: {}",
        said[0]
    );
    let failures = log_lines(&controller, "watch failed");
    assert!(
        failures.is_empty(),
        "no watch failed after all: {failures:#?}"
    );
    let exit = controller.terminate();
    assert!(exit.success(), "{exit:?}\n{}", controller.log());
}

/// Forced to stream on a server where streaming lists fail, the watches never list: `/readyz`
/// says which and why, the log stays short however long that lasts, and SIGTERM still ends the
/// process, within the bound, with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_every_watch_fails_the_controller_says_why_briefly_and_stops_on_sigterm() {
    let kube = KubeStandin::start_with(&["--no-watch-progress"]);
    let dir = tempfile::tempdir().unwrap();
    let mut controller = Controller::start_with_args(
        &kube.kubeconfig(dir.path()),
        dir.path(),
        "replica-a",
        4,
        &[],
        &["--initial-list", "streaming"],
    );
    let body = eventually("/readyz says why it is not ready", 30, || async {
        let (status, body) = controller.get("/readyz")?;
        (status == 503 && body.contains("RequestWatchProgress is disabled")).then_some(body)
    })
    .await;
    assert!(
        body.starts_with("waiting for the first list of: ")
            && body.contains("pods (last failure: "),
        "{body}"
    );
    // Each watch fails again and again, backing off; each warns once within a minute (every
    // failure is logged at debug, which this test's RUST_LOG shows too).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let failures: Vec<String> = log_lines(&controller, "watch failed")
        .into_iter()
        .filter(|l| l.contains(" WARN "))
        .collect();
    assert!(
        (1..=WATCHES).contains(&failures.len()),
        "{} lines: {failures:#?}",
        failures.len()
    );

    let (exit, took) = controller.terminate_within(SHUTDOWN_LIMIT);
    assert!(exit.success(), "{exit:?}\n{}", controller.log());
    eprintln!("exited {took:?} after SIGTERM");
}

/// The database stops answering in the middle of a cycle (its backend is stopped, as by a
/// network that drops packets): the reconcile waits for ever. SIGTERM abandons it after its
/// grace and ends the process within the bound, with status 0, the lease released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_controller_within_the_bound_while_a_database_hangs() {
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&client, &sb).await;
    create_policy(&client).await;
    let mut controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");
    let cycles = || log_lines(&controller, "reconciled").len();
    eventually("the first cycle", 60, || async {
        (cycles() >= 1).then_some(())
    })
    .await;

    // poolwarden's own backend stops; the next look waits on it for ever.
    let admin = sb.admin().await.unwrap();
    let backend: i32 = admin
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'poolwarden'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let backend = nix::unistd::Pid::from_raw(backend);
    nix::sys::signal::kill(backend, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // A cycle that had its look before the signal may still end; after that, none does. The
    // look hangs in a task of its own: the policy's reconciles come back for it instead of
    // hanging with it (see src/controller/connections/looks.rs), so nothing holds the shutdown.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (stalled, tried) = (cycles(), reconciles(&controller));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cycles(), stalled, "the look hangs: no cycle ends");
    assert!(
        reconciles(&controller) > tried,
        "the reconciles come back for the look rather than hang with it: {}",
        controller.log()
    );

    let (exit, took) = controller.terminate_within(SHUTDOWN_LIMIT);
    nix::sys::signal::kill(backend, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(exit.success(), "{exit:?}\n{}", controller.log());
    eprintln!("exited {took:?} after SIGTERM");
    let lease = Api::<Lease>::namespaced(client.clone(), "default")
        .get("poolwarden")
        .await
        .unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(holder.is_empty(), "released, not held by {holder:?}");
}

/// Every `poolwarden.io/` annotation on the objects of `shop` a workload can be, as
/// `Kind/name key`.
async fn poolwarden_keys(client: &kube::Client) -> Vec<String> {
    let mut found = Vec::new();
    for (group, version, kind, plural) in [
        ("apps", "v1", "Deployment", "deployments"),
        ("apps", "v1", "ReplicaSet", "replicasets"),
        ("apps", "v1", "StatefulSet", "statefulsets"),
        ("apps", "v1", "DaemonSet", "daemonsets"),
        ("batch", "v1", "Job", "jobs"),
        ("batch", "v1", "CronJob", "cronjobs"),
        ("", "v1", "Pod", "pods"),
    ] {
        let resource = kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(group, version, kind),
            plural,
        );
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client.clone(), NS, &resource);
        for object in api.list(&ListParams::default()).await.unwrap() {
            let name = object.metadata.name.clone().unwrap_or_default();
            for key in object.metadata.annotations.unwrap_or_default().keys() {
                if key.starts_with("poolwarden.io/") {
                    found.push(format!("{kind}/{name} {key}"));
                }
            }
        }
    }
    found
}

/// A write to the ReplicaSet of the test's cluster.
fn replicaset_write(line: &str) -> bool {
    line.starts_with("PATCH ") && line.contains("/replicasets/orders-api-5c6d")
}

/// The Deployment controller copies the Deployment's annotations onto its ReplicaSet and never
/// takes a copy back. Once the Deployment no longer carries poolwarden's keys (the finding
/// cleared; the policy deleted), the controller takes the copies off: no object in the namespace
/// keeps a `poolwarden.io/` key. Never before: the ReplicaSet is not written while the
/// Deployment carries the keys (that would be undone at the next sync: a write loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_removed_annotations_are_taken_back_and_a_deleted_policy_leaves_no_key() {
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&client, &sb).await;
    // Pod a leaks 4 idle sessions (an inherited pool); nothing is ended (no idle timeout).
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(session(&sb, 41).await);
    }
    create_policy(&client).await;
    let controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let copied = || async {
        let rs = replicasets.get("orders-api-5c6d").await.ok()?;
        rs.metadata.annotations?.get("poolwarden.io/leak").cloned()
    };
    eventually("the copy on the ReplicaSet", 60, || async {
        copied().await.map(|_| ())
    })
    .await;
    // While the Deployment carries the keys, its ReplicaSet is never written.
    let start = reconciles(&controller);
    eventually("three more reconciles", 60, || async {
        (reconciles(&controller) >= start + 3.0).then_some(())
    })
    .await;
    assert_eq!(
        requests_since(&kube, 0, replicaset_write),
        Vec::<String>::new()
    );

    // The leak ends: the finding clears, the Deployment's annotations go, then the copies.
    idle.clear();
    eventually("no poolwarden.io key left in the namespace", 60, || async {
        poolwarden_keys(&client).await.is_empty().then_some(())
    })
    .await;
    let writes = requests_since(&kube, 0, workload_write);
    let last_deployment_write = writes
        .iter()
        .rposition(|w| w.contains("/deployments/orders-api"))
        .unwrap();
    let first_replicaset_write = writes.iter().position(|w| replicaset_write(w)).unwrap();
    assert!(
        first_replicaset_write > last_deployment_write,
        "the copies went only after the Deployment's keys: {writes:#?}"
    );

    // It leaks again: marked and copied again. Then the policy is deleted: by the time it is
    // gone, nothing in the namespace carries its keys.
    for _ in 0..4 {
        idle.push(session(&sb, 41).await);
    }
    eventually("the copy on the ReplicaSet, again", 60, || async {
        copied().await.map(|_| ())
    })
    .await;
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    policies
        .delete("orders-db", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the policy is gone", 30, || async {
        policies
            .get_opt("orders-db")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(poolwarden_keys(&client).await, Vec::<String>::new());
}

/// The API server stops answering (its connections hang) while the leader writes what a cycle
/// did: SIGTERM abandons that write after the grace, gives up on releasing the lease after its
/// timeout, and ends the process within the bound, with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_controller_within_the_bound_while_the_api_server_hangs() {
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&client, &sb).await;
    create_policy(&client).await;
    let proxy = ApiProxy::start(&kube.url()).await;
    let kubeconfig = proxy.kubeconfig(&kube, dir.path(), "through-proxy");
    // A lease of 15 s: the leader still leads, and may end a session, well after the cut.
    let mut controller =
        Controller::start_with_args(&kubeconfig, dir.path(), "replica-a", 15, &[], &[]);
    eventually("the first reconcile", 60, || async {
        (reconciles(&controller) >= 1.0).then_some(())
    })
    .await;

    // The API server hangs. A reconcile writing at that moment waits; if none was, the next
    // ends an open transaction and sets out to say so (an Event, the status), and waits there.
    proxy.set(Link::Dropped);
    let leak = session(&sb, 41).await;
    leak.begin_idle_in_transaction().await.unwrap();
    for _ in 0..25 {
        if !alive(&sb, leak.pid()).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (exit, took) = controller.terminate_within(SHUTDOWN_LIMIT);
    assert!(exit.success(), "{exit:?}\n{}", controller.log());
    eprintln!("exited {took:?} after SIGTERM");
}

/// The literals the leaking sessions' statements carry: none may reach the cluster or the log.
const LITERALS: [&str; 3] = ["ob@example.com", "sekrit-9731", "O'Brien"];

/// Runs `sql` as a superuser in database `orders`.
async fn as_owner(sb: &poolwarden_sandbox::Sandbox, sql: &str) {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(sb.dir())
        .port(sb.port())
        .user("postgres")
        .dbname("orders")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = connection.await;
}

/// `n` sessions from `127.0.0.host`, each idle in a transaction after reading a user by
/// literals, as an ORM with client-side binding sends it.
async fn left_reading_users(
    sb: &poolwarden_sandbox::Sandbox,
    host: u8,
    n: usize,
) -> Vec<poolwarden_sandbox::ClientSession> {
    let mut sessions = Vec::new();
    for _ in 0..n {
        let s = session(sb, host).await;
        s.client().batch_execute("BEGIN").await.unwrap();
        s.client()
            .simple_query(
                "SELECT users.id, users.name\n  FROM users\n WHERE users.id = 42 \
                 AND users.email = 'ob@example.com' AND users.token <> 'sekrit-9731'",
            )
            .await
            .unwrap();
        sessions.push(s);
    }
    sessions
}

/// What a leak's sessions last ran, where its owners look: the `leak-detail` annotation, the
/// `ConnectionLeak` Event, the status' top leaks and the audit records, fingerprinted with no
/// literal anywhere, the controller's log included. Then `lastStatements: Off`: a new leak's
/// Event and audit records say nothing of them, and the annotation and status drop them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaks_last_statements_are_told_where_its_owners_look_and_off_removes_them() {
    const READ_USER: &str = "SELECT users.id, users.name FROM users WHERE users.id = ? AND \
                             users.email = ? AND users.token <> ?";
    let sb = database().await;
    as_owner(
        &sb,
        "CREATE TABLE users (id int PRIMARY KEY, name text, email text, token text);
         INSERT INTO users VALUES (42, 'O''Brien', 'ob@example.com', 'sekrit-9731');
         GRANT SELECT ON users TO app;",
    )
    .await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&client, &sb).await;
    create_workload(
        &client,
        "storefront",
        &[("storefront-5c6d-a", "127.0.0.44")],
    )
    .await;
    let pinned = left_reading_users(&sb, 41, 3).await;
    create_policy_with(
        &client,
        json!({"mode": "Enforce", "interval": "1s", "idle": {"idleInTransactionTimeout": "2s"}}),
    )
    .await;
    let controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");

    all_ended(&sb, &pinned).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let annotations = eventually("orders-api is annotated", 10, || async {
        deployments
            .get("orders-api")
            .await
            .ok()?
            .metadata
            .annotations
    })
    .await;
    let detail = &annotations["poolwarden.io/leak-detail"];
    assert!(
        detail.contains(&format!("; last statement `{READ_USER}`; likely cause: ")),
        "{detail}"
    );
    let warned = event_about(&client, "orders-api", "ConnectionLeak").await;
    assert!(
        warned.2.contains(&format!(
            "; last statement `{READ_USER}` (3). Likely cause: "
        )),
        "{}",
        warned.2
    );
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    let status = eventually("the status names the leak", 10, || async {
        let status = policies.get("orders-db").await.ok()?.status?;
        (!status.top_leaks.is_empty()).then_some(status)
    })
    .await;
    assert_eq!(
        status.top_leaks[0].last_statement.as_deref(),
        Some(READ_USER)
    );
    for s in &pinned {
        let audited = log_lines(&controller, &format!("pid={} ", s.pid()));
        assert!(
            audited
                .iter()
                .any(|l| l.contains("session terminated") && l.contains(READ_USER)),
            "{audited:#?}"
        );
    }
    let told = format!(
        "{annotations:?} {:?} {} {}",
        events_about(&client, "orders-api").await,
        serde_json::to_string(&status).unwrap(),
        controller.log()
    );
    for literal in LITERALS {
        assert!(!told.contains(literal), "{literal} in {told}");
    }

    // Off: nothing of the statements is read or told any more.
    policies
        .patch(
            "orders-db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"leakDetection": {"lastStatements": "Off"}}})),
        )
        .await
        .unwrap();
    eventually("the annotation says no statement", 30, || async {
        let a = deployments
            .get("orders-api")
            .await
            .ok()?
            .metadata
            .annotations?;
        (!a.get("poolwarden.io/leak-detail")?
            .contains("last statement"))
        .then_some(())
    })
    .await;
    let storefront = left_reading_users(&sb, 44, 2).await;
    all_ended(&sb, &storefront).await;
    let warned = event_about(&client, "storefront", "ConnectionLeak").await;
    assert!(!warned.2.contains("last statement `"), "{}", warned.2);
    let status = policies.get("orders-db").await.unwrap().status.unwrap();
    assert!(
        status.top_leaks.iter().all(|l| l.last_statement.is_none()),
        "{:#?}",
        status.top_leaks
    );
    for s in &storefront {
        let audited = log_lines(&controller, &format!("pid={} ", s.pid()));
        assert!(
            audited.iter().any(|l| l.contains("session terminated")),
            "{audited:#?}"
        );
        assert!(
            audited.iter().all(|l| !l.contains("last_statement")),
            "{audited:#?}"
        );
    }
}

/// A server that accepts connections and never answers (a host whose PostgreSQL hangs, or a
/// network that drops what it sends): each login there runs out its timeout. Counts the
/// connections it holds open now.
fn silent_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = open.clone();
    std::thread::spawn(move || {
        for mut socket in listener.incoming().flatten() {
            let counted = counted.clone();
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(1..) = socket.read(&mut buf) {}
                counted.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_answers_delays_no_other_policy() {
    use std::sync::atomic::Ordering;
    let sb = database().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&client, &sb).await;
    create_policy(&client).await;
    // Its neighbour's server never answers; its login would wait 30 s for it.
    let (port, open) = silent_server();
    let url = format!(
        "postgres://monitor:monitor@127.0.0.1:{port}/ghost?sslmode=disable&connect_timeout=30"
    );
    create_secret(&client, "ghost-db-monitor", &url).await;
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    let ghost: PoolPolicy = serde_json::from_value(json!({
        "apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
        "metadata": {"name": "ghost-db", "namespace": NS},
        "spec": {"database": {"connectionSecretRef": {"name": "ghost-db-monitor"}},
                 "interval": "1s"},
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &ghost)
        .await
        .unwrap();
    // One reconcile at a time: a cycle that waited out the dead server's login would hold the
    // only worker, and orders-db would wait with it.
    let controller = Controller::start_with_args(
        &kube.kubeconfig(dir.path()),
        dir.path(),
        "replica-a",
        4,
        &[],
        &["--concurrency", "1"],
    );
    eventually("a login at the silent server", 60, || async {
        (open.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let before = reconciles(&controller);
    eventually("orders-db reconciled three times more", 25, || async {
        (reconciles(&controller) >= before + 3.0).then_some(())
    })
    .await;
    // All of it while that login was still hanging: nobody waited for it.
    assert!(
        open.load(Ordering::SeqCst) > 0,
        "the silent server's login was given up before orders-db's cycles: {}",
        controller.log()
    );
    let ghost = policies.get("ghost-db").await.unwrap();
    let reconciled = ghost.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    assert!(!reconciled, "ghost-db cannot have been reconciled");
}
