//! The webhook's answers to real `admission.k8s.io/v1` AdmissionReview bodies (as kube-apiserver
//! sends them for `kubectl scale`, `kubectl apply` of a Deployment and of an HPA): always
//! allowed, with a warning when the new largest scale would overbook a governed server.

use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use super::Judge;
use super::review::{BadReview, answer};
use crate::api::PoolPolicy;
use crate::controller::cluster::index::ClusterIndex;
use crate::controller::cluster::scaling::TrimmedWorkload;
use crate::controller::cluster::trimmed::TrimmedPod;

/// orders-api: a Deployment of 3 replicas (maxSurge 25%), its 3 pods running.
fn index() -> ClusterIndex {
    let mut index = ClusterIndex::default();
    let deployment: TrimmedWorkload = serde_json::from_value(json!({
        "metadata": {"name": "orders-api", "namespace": "shop", "uid": "u-d"},
        "spec": {"replicas": 3, "strategy": {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxSurge": "25%"}}},
    }))
    .unwrap();
    index.apply_workload("Deployment", &deployment);
    index.apply_owner(
        "ReplicaSet",
        &serde_json::from_value(json!({
            "name": "orders-api-5c6d", "namespace": "shop",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                 "name": "orders-api", "uid": "u-d", "controller": true}],
        }))
        .unwrap(),
    );
    for n in 1..=3 {
        let pod: TrimmedPod = serde_json::from_value(json!({
            "metadata": {"name": format!("orders-api-5c6d-{n}"), "namespace": "shop",
                         "labels": {"app": "orders-api"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": "orders-api-5c6d", "uid": "u-rs",
                                              "controller": true}]},
            "status": {"phase": "Running", "podIP": format!("10.0.0.{n}")},
        }))
        .unwrap();
        index.apply_pod(&pod, Timestamp::now());
    }
    index
}

/// PoolPolicy shop/orders-db whose last cycle booked 120 of 200 usable connections: orders-api
/// 4 pods (3 + 1 surge) x 10 learned, and 80 for others.
fn policy(selector: Value) -> PoolPolicy {
    serde_json::from_value(json!({
        "apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
        "metadata": {"name": "orders-db", "namespace": "shop"},
        "spec": {"database": {"connectionSecretRef": {"name": "db"}},
                 "workloads": {"podSelector": selector}},
        "status": {"capacity": {
            "usableConnections": 200, "bookedConnections": 120,
            "workloads": [
                {"workload": "Deployment/orders-api", "replicas": 3, "surge": 1,
                 "scaleFrom": "spec.replicas, maxSurge 25%", "poolPerPod": 10,
                 "poolFrom": "learned", "connections": 40},
                {"workload": "Deployment/checkout-api", "replicas": 2, "surge": 0,
                 "scaleFrom": "spec.replicas", "poolPerPod": 40, "poolFrom": "declared",
                 "connections": 80},
            ]}},
    }))
    .unwrap()
}

fn judge(policies: Vec<PoolPolicy>) -> Judge {
    let (reader, mut writer) = reflector::store();
    for p in policies {
        writer.apply_watcher_event(&Event::Apply(p));
    }
    Judge {
        index: Arc::new(RwLock::new(index())),
        policies: vec![reader],
    }
}

/// An AdmissionReview as kube-apiserver sends it.
fn review(
    kind: (&str, &str, &str),
    resource: (&str, &str, &str),
    sub_resource: Option<&str>,
    name: &str,
    operation: &str,
    object: Value,
) -> Vec<u8> {
    let mut request = json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
        "resource": {"group": resource.0, "version": resource.1, "resource": resource.2},
        "requestKind": {"group": kind.0, "version": kind.1, "kind": kind.2},
        "requestResource": {"group": resource.0, "version": resource.1, "resource": resource.2},
        "name": name, "namespace": "shop", "operation": operation,
        "userInfo": {"username": "jane", "groups": ["system:authenticated"]},
        "object": object, "oldObject": null, "dryRun": false,
        "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1",
                    "fieldManager": "kubectl-client-side-apply"},
    });
    if let Some(sub) = sub_resource {
        request["subResource"] = json!(sub);
        request["requestSubResource"] = json!(sub);
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request,
    }))
    .unwrap()
}

/// `kubectl scale deployment orders-api --replicas=N`.
fn scale(replicas: u32) -> Vec<u8> {
    review(
        ("autoscaling", "v1", "Scale"),
        ("apps", "v1", "deployments"),
        Some("scale"),
        "orders-api",
        "UPDATE",
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
               "metadata": {"name": "orders-api", "namespace": "shop", "uid": "u-d",
                            "resourceVersion": "812", "creationTimestamp": "2026-01-01T10:00:00Z"},
               "spec": {"replicas": replicas},
               "status": {"replicas": 3, "selector": "app=orders-api"}}),
    )
}

/// The response of an answer, checked to be an allowed AdmissionReview for the request's uid.
fn response(judge: &Judge, body: &[u8]) -> Value {
    let out = answer(body, |r| judge.warnings(r)).expect("an answer");
    let review: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let response = review["response"].clone();
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true, "never denied: {response}");
    response
}

#[test]
fn kubectl_scale_beyond_what_the_server_accepts_is_allowed_with_a_warning() {
    let judge = judge(vec![policy(json!({}))]);
    // 30 replicas + 8 in a rollout, 10 per pod: 380 in place of 40, so 460 of 200.
    let r = response(&judge, &scale(30));
    assert_eq!(
        r["warnings"],
        json!([
            "poolwarden: at 30 replicas + 8 in a rollout, 10 connections per pod, \
             Deployment/orders-api brings the pools on the database of PoolPolicy shop/orders-db \
             to 460 connections; it accepts 200"
        ])
    );
    assert!(
        r["warnings"][0].as_str().unwrap().len() <= 256,
        "the API server's limit"
    );
    // 5 replicas + 2: 70, so 150 of 200: nothing to say.
    let r = response(&judge, &scale(5));
    assert_eq!(r.get("warnings"), None, "{r}");
}

#[test]
fn an_autoscaler_or_a_deployment_applied_is_judged_at_its_new_largest_scale() {
    let judge = judge(vec![policy(json!({}))]);
    let hpa = review(
        ("autoscaling", "v2", "HorizontalPodAutoscaler"),
        ("autoscaling", "v2", "horizontalpodautoscalers"),
        None,
        "orders-api",
        "CREATE",
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": "orders-api", "namespace": "shop"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                           "name": "orders-api"},
                        "minReplicas": 3, "maxReplicas": 20,
                        "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                     "target": {"type": "Utilization", "averageUtilization": 70}}}]}}),
    );
    let r = response(&judge, &hpa);
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("poolwarden: at 20 replicas + 5 in a rollout, 10 connections per pod"),
        "{r}"
    );

    // A new Deployment that declares its pool and whose pods the policy picks.
    let reports = |labels: Value| {
        review(
            ("apps", "v1", "Deployment"),
            ("apps", "v1", "deployments"),
            None,
            "reports",
            "CREATE",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "reports", "namespace": "shop",
                                "annotations": {"poolwarden.io/pool-max": "50"}},
                   "spec": {"replicas": 4, "strategy": {"type": "Recreate"},
                            "selector": {"matchLabels": labels.clone()},
                            "template": {"metadata": {"labels": labels},
                                         "spec": {"containers": [{"name": "r", "image": "r:1"}]}}}}),
        )
    };
    let judge = self::judge(vec![policy(json!({"matchLabels": {"tier": "db"}}))]);
    let r = response(&judge, &reports(json!({"app": "reports", "tier": "db"})));
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap()
            .contains("at 4 replicas, 50 connections per pod, Deployment/reports brings the pools on the database of PoolPolicy shop/orders-db to 320 connections"),
        "{r}"
    );
    // Pods the policy does not pick, declaring nothing it knows of: not its business.
    let r = response(&judge, &reports(json!({"app": "reports", "tier": "web"})));
    assert_eq!(r.get("warnings"), None, "{r}");
}

#[test]
fn namespaces_without_a_policy_and_unrelated_requests_get_no_warning() {
    let judge = judge(vec![policy(json!({}))]);
    let mut elsewhere: Value = serde_json::from_slice(&scale(30)).unwrap();
    elsewhere["request"]["namespace"] = json!("billing");
    let r = response(&judge, &serde_json::to_vec(&elsewhere).unwrap());
    assert_eq!(r.get("warnings"), None);
    // A deletion (no object), a ConfigMap, a Deployment whose spec is nonsense: allowed, quiet.
    let deletion = review(
        ("apps", "v1", "Deployment"),
        ("apps", "v1", "deployments"),
        None,
        "orders-api",
        "DELETE",
        Value::Null,
    );
    assert_eq!(response(&judge, &deletion).get("warnings"), None);
    let config_map = review(
        ("", "v1", "ConfigMap"),
        ("", "v1", "configmaps"),
        None,
        "x",
        "CREATE",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}}),
    );
    assert_eq!(response(&judge, &config_map).get("warnings"), None);
    let nonsense = review(
        ("apps", "v1", "Deployment"),
        ("apps", "v1", "deployments"),
        None,
        "orders-api",
        "UPDATE",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "orders-api"}, "spec": {"replicas": "many"}}),
    );
    assert_eq!(response(&judge, &nonsense).get("warnings"), None);
}

#[test]
fn a_body_that_is_no_admission_review_is_a_bad_request_not_a_crash() {
    let judge = judge(vec![policy(json!({}))]);
    let ask = |body: &[u8]| answer(body, |r| judge.warnings(r));
    assert!(matches!(ask(b"not json"), Err(BadReview::NotAReview(_))));
    assert!(matches!(ask(b""), Err(BadReview::NotAReview(_))));
    assert!(matches!(
        ask(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
        Err(BadReview::NoRequest)
    ));
    assert!(matches!(
        ask(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#
        ),
        Err(BadReview::NotAReview(_))
    ));
}
