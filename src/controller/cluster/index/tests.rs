use std::collections::BTreeMap;

use kube::core::Selector;

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use serde_json::json;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const NOW: &str = "2026-01-01T12:00:00Z";

fn meta(ns: &str, name: &str, owner: Option<(&str, &str)>) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        resource_version: Some("7".into()),
        owner_references: owner.map(|(kind, name)| {
            vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: name.into(),
                uid: format!("uid-{name}"),
                controller: Some(true),
                block_owner_deletion: None,
            }]
        }),
        labels: Some(BTreeMap::from([(
            "app".into(),
            name.split('-').next().unwrap().into(),
        )])),
        ..ObjectMeta::default()
    }
}

fn pod(ns: &str, name: &str, ip: &str, owner: Option<(&str, &str)>) -> TrimmedPod {
    let mut pod: TrimmedPod = serde_json::from_value(json!({
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "startTime": "2026-01-01T10:00:00Z"},
        "metadata": {},
    }))
    .unwrap();
    pod.metadata = meta(ns, name, owner);
    pod
}

fn index() -> ClusterIndex {
    let mut index = ClusterIndex::default();
    index.apply_owner("Deployment", &meta("shop", "orders", None));
    index.apply_owner(
        "ReplicaSet",
        &meta("shop", "orders-7d9f", Some(("Deployment", "orders"))),
    );
    index.apply_owner("CronJob", &meta("shop", "nightly", None));
    index.apply_owner(
        "Job",
        &meta("shop", "nightly-2901", Some(("CronJob", "nightly"))),
    );
    let now = t(NOW);
    let rs = Some(("ReplicaSet", "orders-7d9f"));
    index.apply_pod(&pod("shop", "orders-7d9f-a", "10.0.0.1", rs), now);
    index.apply_pod(&pod("shop", "orders-7d9f-b", "10.0.0.2", rs), now);
    let job = Some(("Job", "nightly-2901"));
    index.apply_pod(&pod("shop", "nightly-2901-x", "10.0.0.3", job), now);
    index.apply_pod(&pod("shop", "debug", "10.0.0.4", None), now);
    let other = Some(("ReplicaSet", "x"));
    index.apply_pod(&pod("other", "orders-1", "10.0.9.9", other), now);
    index
}

fn view(index: &ClusterIndex) -> ClusterView {
    index.view("shop", None, "shop/p", t(NOW))
}

fn workload_of(view: &ClusterView, pod: &str) -> String {
    let pod = view.pods.iter().find(|p| p.name == pod).unwrap();
    pod.workload.to_string()
}

fn annotations(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

#[test]
fn owner_chains_lead_to_the_workload() {
    let view = view(&index());
    assert_eq!(workload_of(&view, "orders-7d9f-a"), "Deployment/orders");
    assert_eq!(workload_of(&view, "nightly-2901-x"), "CronJob/nightly");
    assert_eq!(workload_of(&view, "debug"), "Pod/debug");
    let orders = view
        .workloads
        .iter()
        .find(|w| w.workload.name == "orders")
        .unwrap();
    assert_eq!(orders.scale.running, 2);
}

#[test]
fn a_policy_sees_only_its_own_namespace_and_selected_pods() {
    let index = index();
    let names = |view: &ClusterView| -> Vec<String> {
        view.pods.iter().map(|p| p.name.to_string()).collect()
    };
    assert_eq!(
        names(&view(&index)),
        ["debug", "nightly-2901-x", "orders-7d9f-a", "orders-7d9f-b"]
    );
    let selector: Selector = LabelSelector {
        match_labels: Some(BTreeMap::from([("app".into(), "orders".into())])),
        ..LabelSelector::default()
    }
    .try_into()
    .unwrap();
    let view = index.view("shop", Some(&selector), "shop/p", t(NOW));
    assert_eq!(names(&view), ["orders-7d9f-a", "orders-7d9f-b"]);
    assert!(index.view("empty", None, "empty/p", t(NOW)).is_empty());
}

#[test]
fn deleted_and_finished_pods_are_remembered_as_departed_for_a_while() {
    let mut index = index();
    let now = t(NOW);
    let rs = Some(("ReplicaSet", "orders-7d9f"));
    index.delete_pod(&pod("shop", "orders-7d9f-a", "10.0.0.1", rs), now);
    let mut done = pod(
        "shop",
        "nightly-2901-x",
        "10.0.0.3",
        Some(("Job", "nightly-2901")),
    );
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    index.apply_pod(&done, now);

    let view = view(&index);
    let departed: Vec<(&str, String)> = view
        .departed
        .iter()
        .map(|d| (d.name.as_str(), d.workload.to_string()))
        .collect();
    assert_eq!(
        departed,
        [
            ("orders-7d9f-a", "Deployment/orders".to_owned()),
            ("nightly-2901-x", "CronJob/nightly".to_owned())
        ]
    );
    assert!(view.pods.iter().all(|p| p.name != "orders-7d9f-a"));
    // After the retention, forgotten.
    let later = index.view("shop", None, "shop/p", t("2026-01-01T13:00:01Z"));
    assert!(later.departed.is_empty());
}

#[test]
fn a_relist_departs_the_pods_it_did_not_bring() {
    let mut index = index();
    let listed: Listed = [("shop".to_owned(), "debug".to_owned())].into();
    index.retain_pods(Some("shop"), &listed, t(NOW));
    let view = view(&index);
    assert_eq!(view.pods.len(), 1);
    assert_eq!(view.departed.len(), 3);
    // Another namespace's pods were not part of that relist.
    assert_eq!(index.view("other", None, "other/p", t(NOW)).pods.len(), 1);

    index.retain_owners("ReplicaSet", None, &Listed::new());
    let view = index.view("other", None, "other/p", t(NOW));
    assert_eq!(view.pods[0].workload.to_string(), "ReplicaSet/x");
}

#[test]
fn the_departed_record_is_bounded_across_namespaces() {
    let mut index = ClusterIndex::default();
    let now = t(NOW);
    for i in 0..(DEPARTED_CAPACITY + 50) {
        let ns = if i % 2 == 0 { "shop" } else { "other" };
        index.delete_pod(&pod(ns, &format!("p-{i}"), "10.1.0.1", None), now);
    }
    let remembered: usize = index.namespaces.values().map(|n| n.departed.len()).sum();
    assert_eq!(remembered, DEPARTED_CAPACITY);
    assert_eq!(index.departed, DEPARTED_CAPACITY);
}

#[test]
fn only_poolwarden_annotations_are_kept_and_budgets_are_read_from_them() {
    let mut index = index();
    let mut deploy = meta("shop", "orders", None);
    deploy.annotations = annotations(&[
        ("poolwarden.io/pool-max", "25"),
        (MAX_REPLICAS, "10"),
        ("poolwarden.io/leak", "IdleAccumulation"),
        ("poolwarden.io/policy", "shop/p"),
        ("kubectl.kubernetes.io/last-applied-configuration", "{…}"),
    ]);
    index.apply_owner("Deployment", &deploy);
    let view = view(&index);
    let orders = view
        .workloads
        .iter()
        .find(|w| w.workload.name == "orders")
        .unwrap();
    assert_eq!(orders.pool_max, Some(25));
    assert_eq!(orders.scale.declared, Some(10));
    assert_eq!(
        orders.annotations.keys().collect::<Vec<_>>(),
        ["poolwarden.io/leak", "poolwarden.io/policy"]
    );
    assert_eq!(
        index.annotated_by("shop", "shop/p"),
        [WorkloadRef {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "orders".into()
        }]
    );
    assert!(index.annotated_by("shop", "shop/other").is_empty());
}

#[test]
fn the_copies_below_the_top_of_a_chain_are_not_poolwardens() {
    let mut index = index();
    // The Deployment controller copied the Deployment's annotations onto its ReplicaSet, and a
    // CronJob's made it onto a Job; a pod of the ReplicaSet carries some too.
    let copied = annotations(&[
        ("poolwarden.io/leak", "IdleAccumulation"),
        ("poolwarden.io/policy", "shop/p"),
    ]);
    let mut rs = meta("shop", "orders-7d9f", Some(("Deployment", "orders")));
    rs.annotations = copied.clone();
    index.apply_owner("ReplicaSet", &rs);
    let mut job = meta("shop", "nightly-2901", Some(("CronJob", "nightly")));
    job.annotations = copied.clone();
    index.apply_owner("Job", &job);
    let mut p = pod(
        "shop",
        "orders-7d9f-a",
        "10.0.0.1",
        Some(("ReplicaSet", "orders-7d9f")),
    );
    p.metadata.annotations = copied.clone();
    index.apply_pod(&p, t(NOW));

    assert!(index.annotated_by("shop", "shop/p").is_empty());
    let view = view(&index);
    assert!(
        view.workloads.iter().all(|w| w.annotations.is_empty()),
        "{:?}",
        view.workloads
    );
    let kinds: Vec<&str> = view
        .workloads
        .iter()
        .map(|w| w.workload.kind.as_str())
        .collect();
    assert_eq!(kinds, ["CronJob", "Deployment", "Pod"]);

    // A ReplicaSet nobody followed owns is a workload, and its annotations are its own.
    let mut lone = meta("shop", "lone", None);
    lone.annotations = copied;
    index.apply_owner("ReplicaSet", &lone);
    assert_eq!(index.annotated_by("shop", "shop/p").len(), 1);
}

#[test]
fn a_copy_is_stale_only_once_the_workload_no_longer_carries_its_key() {
    let mut index = index();
    let written = annotations(&[
        ("poolwarden.io/leak", "IdleAccumulation"),
        ("poolwarden.io/leak-detail", "4 sessions stranded"),
        ("poolwarden.io/policy", "shop/p"),
        ("poolwarden.io/pool-max", "10"),
    ]);
    let mut deployment = meta("shop", "orders", None);
    deployment.annotations = written.clone();
    index.apply_owner("Deployment", &deployment);
    let mut rs = meta("shop", "orders-7d9f", Some(("Deployment", "orders")));
    rs.annotations = written.clone();
    index.apply_owner("ReplicaSet", &rs);
    let mut job = meta("shop", "nightly-2901", Some(("CronJob", "nightly")));
    job.annotations = written.clone();
    index.apply_owner("Job", &job);
    // A Job whose CronJob the index has not heard of yet: nothing says the CronJob lost the
    // keys, so its copies stay.
    let mut early = meta("shop", "weekly-2901", Some(("CronJob", "weekly")));
    early.annotations = written.clone();
    index.apply_owner("Job", &early);

    // The Deployment still carries every key: its ReplicaSet's copies are current, not stale.
    // The CronJob carries none: the copies on its Job are.
    let stale = index.stale_copies("shop", "shop/p", &[], &[]);
    let rs_ref = WorkloadRef {
        namespace: "shop".into(),
        kind: "ReplicaSet".into(),
        name: "orders-7d9f".into(),
    };
    let job_ref = WorkloadRef {
        namespace: "shop".into(),
        kind: "Job".into(),
        name: "nightly-2901".into(),
    };
    let all_ours: Vec<String> = OWNED.iter().map(|k| (*k).to_owned()).collect();
    assert_eq!(
        stale,
        [StaleCopy {
            object: job_ref.clone(),
            keys: all_ours.clone(),
        }]
    );
    // Only another policy's copies: none of this one's.
    assert!(
        index
            .stale_copies("shop", "shop/other", &[], &[])
            .is_empty()
    );
    // A workload this cycle wants annotated: its copies stay, whatever the index has heard of
    // it (the copy of a write may reach the index before the write).
    let nightly = WorkloadRef {
        namespace: "shop".into(),
        kind: "CronJob".into(),
        name: "nightly".into(),
    };
    assert!(
        index
            .stale_copies("shop", "shop/p", &[], &[nightly])
            .is_empty()
    );

    // The finding cleared: the Deployment lost poolwarden's keys (the owner's pool-max stays,
    // and so does its copy: not poolwarden's to take back).
    deployment.annotations = annotations(&[("poolwarden.io/pool-max", "10")]);
    index.apply_owner("Deployment", &deployment);
    let stale = index.stale_copies("shop", "shop/p", &[], &[]);
    assert_eq!(
        stale,
        [
            StaleCopy {
                object: job_ref.clone(),
                keys: all_ours.clone(),
            },
            StaleCopy {
                object: rs_ref.clone(),
                keys: all_ours.clone(),
            },
        ]
    );

    // Just cleaned up, before the watch has told the index: known to carry nothing.
    deployment.annotations = written;
    index.apply_owner("Deployment", &deployment);
    let orders = WorkloadRef {
        namespace: "shop".into(),
        kind: "Deployment".into(),
        name: "orders".into(),
    };
    let stale = index.stale_copies("shop", "shop/p", &[orders], &[]);
    assert_eq!(stale.len(), 2, "{stale:?}");

    // Taken off: nothing left.
    rs.annotations = annotations(&[("poolwarden.io/pool-max", "10")]);
    index.apply_owner("ReplicaSet", &rs);
    job.annotations = None;
    index.apply_owner("Job", &job);
    assert!(index.stale_copies("shop", "shop/p", &[], &[]).is_empty());
}

#[test]
fn a_workload_is_known_by_uid_and_resource_version() {
    let index = index();
    let deployment = WorkloadRef {
        namespace: "shop".into(),
        kind: "Deployment".into(),
        name: "orders".into(),
    };
    assert_eq!(
        index.identity(&deployment),
        Some(&Identity {
            uid: Some("uid-orders".into()),
            resource_version: Some("7".into())
        })
    );
    let bare = WorkloadRef {
        kind: "Pod".into(),
        name: "debug".into(),
        ..deployment.clone()
    };
    assert_eq!(
        index.identity(&bare).and_then(|i| i.uid.as_deref()),
        Some("uid-debug")
    );
    let gone = WorkloadRef {
        name: "gone".into(),
        ..deployment
    };
    assert_eq!(index.identity(&gone), None);
}

#[test]
fn a_poolers_replicas_are_picked_by_selector_and_ready_only_when_running_and_ready() {
    let mut index = ClusterIndex::default();
    let now = t(NOW);
    let with = |name: &str, ip: Option<&str>, phase: &str, ready: &str| {
        let mut p: TrimmedPod = serde_json::from_value(json!({
            "status": {"phase": phase, "podIP": ip,
                       "conditions": [{"type": "Ready", "status": ready}]},
            "metadata": {},
        }))
        .unwrap();
        p.metadata = meta("shop", name, Some(("ReplicaSet", "pgbouncer-5c")));
        p
    };
    index.apply_pod(
        &with("pgbouncer-5c-a", Some("10.0.0.7"), "Running", "True"),
        now,
    );
    index.apply_pod(
        &with("pgbouncer-5c-b", Some("10.0.0.8"), "Running", "False"),
        now,
    );
    index.apply_pod(&with("pgbouncer-5c-c", None, "Pending", "False"), now);
    index.apply_pod(&pod("shop", "orders-7d9f-a", "10.0.0.1", None), now);
    let selector: Selector = LabelSelector {
        match_labels: Some(BTreeMap::from([("app".into(), "pgbouncer".into())])),
        ..LabelSelector::default()
    }
    .try_into()
    .unwrap();
    let picked = index.selected_pods("shop", &selector);
    let seen: Vec<(&str, Option<String>, bool)> = picked
        .iter()
        .map(|p| (p.name.as_str(), p.ip.map(|ip| ip.to_string()), p.ready))
        .collect();
    assert_eq!(
        seen,
        [
            ("pgbouncer-5c-a", Some("10.0.0.7".into()), true),
            ("pgbouncer-5c-b", Some("10.0.0.8".into()), false),
            ("pgbouncer-5c-c", None, false),
        ]
    );
    assert!(index.selected_pods("other", &selector).is_empty());
}

#[test]
fn a_workloads_scale_comes_from_its_own_object_and_the_autoscaler_that_targets_it() {
    use crate::controller::cluster::scaling::{TrimmedAutoscaler, TrimmedWorkload};
    use crate::decide::scale::{Autoscaler, Desired, IntOrPercent, Rollout};
    let mut index = index();
    let deployment: TrimmedWorkload = serde_json::from_value(json!({
        "metadata": {"name": "orders", "namespace": "shop", "uid": "uid-orders"},
        "spec": {"replicas": 3, "strategy": {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxSurge": "25%"}}},
    }))
    .unwrap();
    index.apply_workload("Deployment", &deployment);
    let hpa = |name: &str, target: &str, max: u32| -> TrimmedAutoscaler {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": target},
                     "maxReplicas": max},
        }))
        .unwrap()
    };
    index.apply_autoscaler(&hpa("orders", "orders", 20));
    index.apply_autoscaler(&hpa("other", "checkout", 50));
    let scale = |index: &ClusterIndex| {
        view(index)
            .workloads
            .into_iter()
            .find(|w| w.workload.name == "orders")
            .unwrap()
            .scale
    };
    let seen = scale(&index);
    assert_eq!(seen.running, 2);
    assert_eq!(seen.desired, Some(Desired::Replicas(3)));
    assert_eq!(seen.rollout, Rollout::Surge(IntOrPercent::Percent(25)));
    assert_eq!(
        seen.autoscaler,
        Some(Autoscaler {
            name: "orders".into(),
            max_replicas: 20
        })
    );
    // The owner chain still goes through it.
    assert_eq!(
        workload_of(&view(&index), "orders-7d9f-a"),
        "Deployment/orders"
    );

    // A relist that no longer brings the autoscaler: it is gone.
    let listed: Listed = [("shop".to_owned(), "other".to_owned())].into();
    index.retain_autoscalers(Some("shop"), &listed);
    assert_eq!(scale(&index).autoscaler, None);
    index.apply_autoscaler(&hpa("orders", "orders", 8));
    index.delete_autoscaler(&hpa("orders", "orders", 8).metadata);
    assert_eq!(scale(&index).autoscaler, None);
}
