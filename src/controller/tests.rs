//! `tower-test` scenarios: the exact requests one reconcile sends to the API server, with the
//! database side real (a throwaway PostgreSQL) where the scenario needs one.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::pin::pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::{Pod, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower_test::mock::{self, Handle, SendResponse};

use super::context::Context;
use super::index::ClusterIndex;
use super::metrics::Metrics;
use super::reconcile::reconcile;
use crate::api::PoolPolicy;
use poolwarden_sandbox::{Sandbox, SandboxOptions, SessionSpec};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// One request as the API server received it.
struct Received {
    method: Method,
    uri: String,
    content_type: String,
    body: Value,
    respond: SendResponse<Response<Body>>,
}

impl Received {
    fn reply(self, status: u16, body: Value) {
        let response = Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
    }
}

async fn next(handle: &mut std::pin::Pin<&mut ApiHandle>) -> Received {
    let (request, respond) = tokio::time::timeout(Duration::from_secs(20), handle.next_request())
        .await
        .expect("a request within 20 s")
        .expect("the client is still there");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    Received {
        method: parts.method,
        uri: parts.uri.to_string(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        },
        respond,
    }
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": format!("{what} not found")})
}

fn context(
    client: Client,
    index: ClusterIndex,
    leader: bool,
) -> (Arc<Context>, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(leader);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "poolwarden".into(),
            instance: Some("test".into()),
        },
    );
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    let ctx = Context::new(client, Arc::new(RwLock::new(index)), metrics, recorder, rx);
    (Arc::new(ctx), tx)
}

fn policy(spec: Value, finalized: bool) -> PoolPolicy {
    let mut value = json!({
        "apiVersion": "poolwarden.io/v1alpha1",
        "kind": "PoolPolicy",
        "metadata": {"name": "orders-db", "namespace": "shop", "uid": "uid-1", "generation": 3,
                     "resourceVersion": "7"},
        "spec": spec,
    });
    if finalized {
        value["metadata"]["finalizers"] = json!(["poolwarden.io/cleanup"]);
    }
    serde_json::from_value(value).unwrap()
}

fn with_secret(mut spec: Value) -> Value {
    spec["database"] = json!({"connectionSecretRef": {"name": "orders-db-monitor"}});
    spec
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn a_new_policy_first_gets_the_finalizer() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (ctx, _leader) = context(
        Client::new(service, "default"),
        ClusterIndex::default(),
        true,
    );
    let p = policy(with_secret(json!({})), false);
    let echo = serde_json::to_value(policy(with_secret(json!({})), true)).unwrap();
    let task = tokio::spawn(reconcile(Arc::new(p), ctx));

    let mut handle = pin!(handle);
    let r = next(&mut handle).await;
    assert_eq!(r.method, Method::PATCH);
    assert_eq!(
        r.uri,
        "/apis/poolwarden.io/v1alpha1/namespaces/shop/poolpolicies/orders-db?"
    );
    assert_eq!(r.content_type, "application/json-patch+json");
    assert!(
        r.body.to_string().contains("poolwarden.io/cleanup"),
        "adds the finalizer: {}",
        r.body
    );
    r.reply(200, echo);
    let action = task.await.unwrap().unwrap();
    assert_eq!(action, Action::await_change());
    assert!(handle.next_request().await.is_none(), "nothing else");
}

#[tokio::test]
async fn an_invalid_spec_is_written_into_the_status_and_waits_for_a_change() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (ctx, _leader) = context(
        Client::new(service, "default"),
        ClusterIndex::default(),
        true,
    );
    let p = policy(
        with_secret(json!({"scope": {"excludeApplications": ["["]}})),
        true,
    );
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), ctx));

    let mut handle = pin!(handle);
    let r = next(&mut handle).await;
    assert_eq!(r.method, Method::PATCH);
    assert_eq!(
        r.uri,
        "/apis/poolwarden.io/v1alpha1/namespaces/shop/poolpolicies/orders-db/status?&force=true&fieldManager=poolwarden"
    );
    assert_eq!(r.content_type, "application/apply-patch+yaml");
    assert_eq!(r.body["kind"], "PoolPolicy");
    let ready = condition(&r.body["status"], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.scope.excludeApplications")
    );
    assert_eq!(r.body["status"]["observedGeneration"], 3);
    r.reply(200, serde_json::to_value(&p).unwrap());

    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(
        handle.next_request().await.is_none(),
        "no Secret read, no database"
    );
}

#[tokio::test]
async fn a_missing_secret_becomes_a_condition_and_a_retry() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (ctx, _leader) = context(
        Client::new(service, "default"),
        ClusterIndex::default(),
        true,
    );
    let p = policy(with_secret(json!({"interval": "10s"})), true);
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), ctx));

    let mut handle = pin!(handle);
    let r = next(&mut handle).await;
    assert_eq!(
        (r.method.clone(), r.uri.as_str()),
        (
            Method::GET,
            "/api/v1/namespaces/shop/secrets/orders-db-monitor"
        )
    );
    r.reply(404, not_found("secrets \"orders-db-monitor\""));
    let r = next(&mut handle).await;
    assert!(
        r.uri.starts_with(
            "/apis/poolwarden.io/v1alpha1/namespaces/shop/poolpolicies/orders-db/status"
        )
    );
    let ready = condition(&r.body["status"], "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("SecretNotFound"))
    );
    assert_eq!(
        condition(&r.body["status"], "DatabaseReachable")["reason"],
        "NotChecked"
    );
    r.reply(200, serde_json::to_value(&p).unwrap());

    let action = task.await.unwrap().unwrap();
    assert_ne!(action, Action::await_change(), "a Secret can appear: retry");
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn a_replica_that_does_not_lead_sends_nothing_and_terminates_nothing() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let idle = sb
        .open_session(
            &SessionSpec::new("postgres", "postgres", "postgres")
                .from_addr(Ipv4Addr::new(127, 0, 0, 31)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;

    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (ctx, _leader) = context(
        Client::new(service, "default"),
        ClusterIndex::default(),
        false,
    );
    let p = policy(
        with_secret(json!({"mode": "Enforce", "idle": {"idleTimeout": "300ms"}})),
        true,
    );
    let action = reconcile(Arc::new(p), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    assert!(pin!(handle).next_request().await.is_none());
    assert!(idle.is_alive().await);
}

fn workload_index(ip: &str) -> ClusterIndex {
    let owner = |kind: &str, name: &str| OwnerReference {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let meta = |name: &str, owner: Option<OwnerReference>| ObjectMeta {
        namespace: Some("shop".into()),
        name: Some(name.into()),
        owner_references: owner.map(|o| vec![o]),
        ..ObjectMeta::default()
    };
    let mut index = ClusterIndex::default();
    index.apply_owner("Deployment", &meta("orders-api", None));
    index.apply_owner(
        "ReplicaSet",
        &meta("orders-api-5c6d", Some(owner("Deployment", "orders-api"))),
    );
    let pod = Pod {
        metadata: meta(
            "orders-api-5c6d-q7x",
            Some(owner("ReplicaSet", "orders-api-5c6d")),
        ),
        spec: None,
        status: Some(PodStatus {
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            phase: Some("Running".into()),
            start_time: Some(Time("2020-01-01T00:00:00Z".parse().unwrap())),
            ..PodStatus::default()
        }),
    };
    index.apply_pod(&pod, jiff::Timestamp::now());
    index
}

#[tokio::test]
async fn one_reconcile_terminates_annotates_raises_events_and_reports_in_that_order() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.create_role("monitor", "monitor", &["pg_monitor", "pg_signal_backend"])
        .await
        .unwrap();
    sb.create_role("app", "app", &[]).await.unwrap();
    let mut leaked = Vec::new();
    for _ in 0..3 {
        let spec =
            SessionSpec::new("app", "app", "postgres").from_addr(Ipv4Addr::new(127, 0, 0, 31));
        leaked.push(sb.open_session(&spec).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (ctx, _leader) = context(
        Client::new(service, "default"),
        workload_index("127.0.0.31"),
        true,
    );
    let spec = with_secret(json!({
        "mode": "Enforce",
        "interval": "10s",
        "idle": {"idleTimeout": "300ms"},
        "leakDetection": {"window": "300ms", "strandedIdleAge": "300ms", "idleThreshold": 3},
    }));
    let p = policy(spec, true);
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), ctx));
    let mut handle = pin!(handle);

    // Observe: the Secret, from the policy's own namespace.
    let r = next(&mut handle).await;
    assert_eq!(
        (r.method.clone(), r.uri.as_str()),
        (
            Method::GET,
            "/api/v1/namespaces/shop/secrets/orders-db-monitor"
        )
    );
    let url = sb.url("monitor", "monitor", "postgres") + "?sslmode=disable";
    use base64::Engine as _;
    r.reply(
        200,
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "orders-db-monitor", "namespace": "shop"},
        "data": {"uri": base64::engine::general_purpose::STANDARD.encode(url)}}),
    );

    // Act: the workload is annotated, with only poolwarden's keys, as a merge patch.
    let r = next(&mut handle).await;
    assert_eq!(
        (r.method.clone(), r.uri.as_str()),
        (
            Method::PATCH,
            "/apis/apps/v1/namespaces/shop/deployments/orders-api?"
        )
    );
    assert_eq!(r.content_type, "application/merge-patch+json");
    let annotations = r.body["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        [
            "poolwarden.io/leak",
            "poolwarden.io/leak-detail",
            "poolwarden.io/policy"
        ]
    );
    assert_eq!(annotations["poolwarden.io/leak"], "IdleAccumulation");
    assert_eq!(annotations["poolwarden.io/policy"], "shop/orders-db");
    assert!(
        annotations["poolwarden.io/leak-detail"]
            .as_str()
            .unwrap()
            .contains("3 sessions idle")
    );
    r.reply(200, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "orders-api", "namespace": "shop"}}));

    // Events: the leak on the workload, then the terminations on the policy.
    let r = next(&mut handle).await;
    assert_eq!(
        (r.method.clone(), r.uri.as_str()),
        (
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/shop/events?"
        )
    );
    assert_eq!(
        (r.body["type"].as_str(), r.body["reason"].as_str()),
        (Some("Warning"), Some("ConnectionLeak"))
    );
    assert_eq!(r.body["regarding"]["kind"], "Deployment");
    assert_eq!(r.body["regarding"]["name"], "orders-api");
    assert_eq!(r.body["related"]["kind"], "PoolPolicy");
    let echo = r.body.clone();
    r.reply(201, echo);
    let r = next(&mut handle).await;
    assert_eq!(r.method, Method::POST);
    assert_eq!(
        (r.body["type"].as_str(), r.body["reason"].as_str()),
        (Some("Normal"), Some("SessionsTerminated"))
    );
    assert_eq!(r.body["regarding"]["kind"], "PoolPolicy");
    assert!(
        r.body["note"]
            .as_str()
            .unwrap()
            .contains("terminated 3 sessions from Deployment/orders-api")
    );
    let echo = r.body.clone();
    r.reply(201, echo);

    // Report: the status, by server-side apply.
    let r = next(&mut handle).await;
    assert!(r.uri.starts_with(
        "/apis/poolwarden.io/v1alpha1/namespaces/shop/poolpolicies/orders-db/status?"
    ));
    let status = &r.body["status"];
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(condition(status, "DatabaseReachable")["status"], "True");
    assert_eq!(condition(status, "Degraded")["status"], "False");
    assert_eq!(status["terminations"]["lastCycle"], 3);
    assert_eq!(status["leakingWorkloads"], 1);
    assert_eq!(status["topLeaks"][0]["workload"], "Deployment/orders-api");
    assert!(status["connections"].as_str().unwrap().contains('/'));
    r.reply(200, serde_json::to_value(&p).unwrap());

    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(10))
    );
    assert!(handle.next_request().await.is_none(), "nothing else");
    for s in &leaked {
        assert!(!s.is_alive().await, "terminated");
    }
}

#[tokio::test]
async fn deleting_a_policy_removes_its_annotations_then_its_finalizer() {
    let mut index = workload_index("10.0.0.1");
    index.apply_owner(
        "Deployment",
        &ObjectMeta {
            namespace: Some("shop".into()),
            name: Some("orders-api".into()),
            annotations: Some(BTreeMap::from([
                ("poolwarden.io/leak".into(), "IdleAccumulation".into()),
                ("poolwarden.io/policy".into(), "shop/orders-db".into()),
            ])),
            ..ObjectMeta::default()
        },
    );
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (ctx, _leader) = context(Client::new(service, "default"), index, true);
    let mut p = policy(with_secret(json!({})), true);
    p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), ctx));
    let mut handle = pin!(handle);

    let r = next(&mut handle).await;
    assert_eq!(
        (r.method.clone(), r.uri.as_str()),
        (
            Method::PATCH,
            "/apis/apps/v1/namespaces/shop/deployments/orders-api?"
        )
    );
    assert_eq!(
        r.body,
        json!({"metadata": {"annotations": {
            "poolwarden.io/leak": null, "poolwarden.io/leak-detail": null, "poolwarden.io/policy": null}}})
    );
    r.reply(200, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "orders-api", "namespace": "shop"}}));

    let r = next(&mut handle).await;
    assert_eq!(
        (r.method.clone(), r.uri.as_str()),
        (
            Method::PATCH,
            "/apis/poolwarden.io/v1alpha1/namespaces/shop/poolpolicies/orders-db?"
        )
    );
    assert_eq!(r.content_type, "application/json-patch+json");
    assert!(r.body.to_string().contains("\"remove\""), "{}", r.body);
    p.metadata.finalizers = None;
    r.reply(200, serde_json::to_value(&p).unwrap());

    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(handle.next_request().await.is_none());
}
