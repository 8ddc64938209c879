//! `tower-test` scenarios: the exact requests one reconcile sends to the API server, in order,
//! body by body, with a scripted database ([`Script`]) where the database is not the point and a
//! real throwaway PostgreSQL where it is. Then [`error_policy`] for every kind of failure.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::{Method, Request, Response};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower_test::mock::{self, Handle, SendResponse};

use super::error::{CONFLICT_RETRY, RECHECK, ReconcileError, error_policy};
use super::validate::InvalidPolicy;
use crate::api::PoolPolicy;
use crate::controller::cluster::index::ClusterIndex;
use crate::controller::cluster::readiness::Readiness;
use crate::controller::cluster::trimmed::TrimmedPod;
use crate::controller::connections::engines::Connector;
use crate::controller::connections::secret::{SecretError, Secrets};
use crate::controller::context::{Context, Parts};
use crate::controller::reconcile::reconcile;
use crate::controller::runtime::leader::Leader;
use crate::controller::runtime::metrics::Metrics;
use crate::database::{
    DatabaseError, Engine, MonitorRole, ServerFacts, Session, SessionIdentity, SessionState,
    Snapshot,
};
use crate::decide::{self, Decision, Memory, Rules, WorkloadRef};

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

    /// `(method, uri, content type)`, to compare in one go.
    fn line(&self) -> (Method, &str, &str) {
        (self.method.clone(), &self.uri, &self.content_type)
    }
}

async fn next(handle: &mut Pin<Box<ApiHandle>>) -> Received {
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
            serde_json::from_slice(&bytes).unwrap()
        },
        respond,
    }
}

/// The body with what differs from run to run replaced by `"<now>"`: the transition times of
/// conditions, an Event's time and the clock-made suffix of its name.
fn stable(mut body: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k == "lastTransitionTime" || k == "eventTime" {
                        *v = json!("<now>");
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut body);
    if body["kind"] == "Event"
        && let Some(name) = body["metadata"]["name"].as_str()
    {
        let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
        body["metadata"]["name"] = json!(format!("{stem}.<now>"));
    }
    body
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": format!("{what} not found")})
}

const URL: &str = "postgres://monitor@orders-db.shop:5432/orders";
const NOW: &str = "2026-03-01T10:00:00Z";
const POLICY_STATUS: &str = "/apis/poolwarden.io/v1alpha1/namespaces/shop/poolpolicies/orders-db/status?&force=true&fieldManager=poolwarden";
const APPLY: &str = "application/apply-patch+yaml";

/// What the scripted database answers and what it was asked.
#[derive(Clone, Default)]
struct Script {
    snapshots: Arc<Mutex<VecDeque<Result<Snapshot, DatabaseError>>>>,
    terminated: Arc<Mutex<Vec<Vec<SessionIdentity>>>>,
    observed: Arc<Mutex<usize>>,
    /// Whether the last look succeeded: the scripted monitoring connection is open.
    connected: Arc<Mutex<bool>>,
}

impl Script {
    fn answering(answers: Vec<Result<Snapshot, DatabaseError>>) -> Self {
        let script = Self::default();
        script.snapshots.lock().unwrap().extend(answers);
        script
    }

    fn observed(&self) -> usize {
        *self.observed.lock().unwrap()
    }

    fn terminated(&self) -> Vec<Vec<SessionIdentity>> {
        self.terminated.lock().unwrap().clone()
    }

    /// The connector of [`URL`]: any other URL is invalid.
    fn connector(&self) -> impl Connector + use<> {
        let script = self.clone();
        move |url: &str| {
            if url == URL {
                Ok(Scripted(script.clone()))
            } else {
                Err(DatabaseError::InvalidUrl(format!(
                    "not the scripted URL: {url}"
                )))
            }
        }
    }
}

/// An engine that plays a [`Script`]: snapshots in order; every termination succeeds.
struct Scripted(Script);

impl Engine for Scripted {
    async fn observe(&mut self) -> Result<Snapshot, DatabaseError> {
        *self.0.observed.lock().unwrap() += 1;
        let next = self.0.snapshots.lock().unwrap().pop_front();
        let answer = next.unwrap_or_else(|| {
            Err(DatabaseError::Query(
                "the script has no more snapshots".into(),
            ))
        });
        *self.0.connected.lock().unwrap() = answer.is_ok();
        answer
    }

    fn is_connected(&self) -> bool {
        *self.0.connected.lock().unwrap()
    }

    async fn terminate(
        &mut self,
        sessions: &[SessionIdentity],
    ) -> Result<Vec<crate::database::Verdict>, DatabaseError> {
        self.0.terminated.lock().unwrap().push(sessions.to_vec());
        Ok(vec![crate::database::Verdict::Signalled; sessions.len()])
    }
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn ago(secs: i64) -> Timestamp {
    t(NOW) - jiff::SignedDuration::from_secs(secs)
}

/// An idle session of `app` from `addr`, idle for `idle_secs`.
fn idle(pid: i64, addr: [u8; 4], idle_secs: i64) -> Session {
    Session {
        pid,
        backend_type: crate::database::CLIENT_BACKEND.into(),
        database: Some("orders".into()),
        user: Some("app".into()),
        user_is_superuser: false,
        application_name: "orders-api".into(),
        client_addr: Some(IpAddr::V4(Ipv4Addr::from(addr))),
        client_port: None,
        backend_start: ago(7200),
        xact_start: None,
        state: SessionState::Idle,
        state_change: Some(ago(idle_secs)),
        backend_xmin: None,
        xmin_age: None,
        blocked_by: Vec::new(),
        last_statement: None,
    }
}

fn snapshot(sessions: Vec<Session>) -> Snapshot {
    Snapshot {
        observed_at: t(NOW),
        own_pid: 1,
        server: ServerFacts {
            version: "16.4".into(),
            version_num: 160004,
            max_connections: 100,
            superuser_reserved_connections: 3,
            reserved_connections: 0,
            ..ServerFacts::default()
        },
        monitor: MonitorRole {
            name: "monitor".into(),
            is_superuser: false,
            can_signal_backends: true,
            can_read_all_stats: true,
        },
        sessions,
        sessions_opened_total: Some(1000),
        churn: None,
        application_names_known: true,
        last_statements: crate::database::LastStatements::Read,
    }
}

/// A context, the mock API server it talks to, the registry of its metrics, and the sender that
/// says whether it leads.
type Harness<C> = (
    Arc<Context<C>>,
    Pin<Box<ApiHandle>>,
    Registry,
    watch::Sender<bool>,
);

/// A context on a mock API server; its metrics registered in the returned registry.
fn context<C: Connector>(
    connector: C,
    index: ClusterIndex,
    leader: bool,
    ready: bool,
    watched_secrets: bool,
) -> Harness<C> {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (tx, rx) = watch::channel(leader);
    let readiness = Arc::new(Readiness::default());
    let mut first = readiness.expect("pods".into());
    if ready {
        first.done();
    }
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "poolwarden".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Context::new(Parts {
        eviction_client: client.clone(),
        client,
        index: Arc::new(RwLock::new(index)),
        readiness,
        connector,
        secrets: Arc::new(Secrets::new(watched_secrets)),
        metrics,
        recorder,
        leader: Leader::from_channel(rx),
    });
    (Arc::new(ctx), Box::pin(handle), registry, tx)
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

fn secret(resource_version: &str) -> Value {
    use base64::Engine as _;
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "orders-db-monitor", "namespace": "shop", "resourceVersion": resource_version},
           "data": {"uri": base64::engine::general_purpose::STANDARD.encode(URL)}})
}

/// What the API answers to a PATCH of a Deployment.
fn deployment_echo() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "orders-api", "namespace": "shop"}})
}

fn meta(name: &str, owner: Option<(&str, &str)>, annotations: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        namespace: Some("shop".into()),
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        resource_version: Some("11".into()),
        owner_references: owner.map(|(kind, owner)| {
            vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: kind.into(),
                name: owner.into(),
                uid: format!("uid-{owner}"),
                controller: Some(true),
                block_owner_deletion: None,
            }]
        }),
        annotations: (!annotations.is_empty()).then(|| {
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        }),
        ..ObjectMeta::default()
    }
}

/// Deployment `orders-api` → ReplicaSet `orders-api-5c6d` → pod `orders-api-5c6d-q7x` at `ip`.
fn workload_index(ip: &str, annotations: &[(&str, &str)]) -> ClusterIndex {
    let mut index = ClusterIndex::default();
    index.apply_owner("Deployment", &meta("orders-api", None, annotations));
    // The Deployment controller's copies of the Deployment's annotations.
    index.apply_owner(
        "ReplicaSet",
        &meta(
            "orders-api-5c6d",
            Some(("Deployment", "orders-api")),
            annotations,
        ),
    );
    let mut pod: TrimmedPod = serde_json::from_value(json!({
        "metadata": {},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "startTime": "2020-01-01T00:00:00Z"},
    }))
    .unwrap();
    pod.metadata = meta(
        "orders-api-5c6d-q7x",
        Some(("ReplicaSet", "orders-api-5c6d")),
        &[],
    );
    index.apply_pod(&pod, t(NOW));
    index
}

/// The decision the controller should carry out, from the same inputs: the texts of annotations
/// and Events are the deciding code's, and the controller must send them unchanged.
fn expected_decision(policy: &PoolPolicy, snapshot: &Snapshot, index: &ClusterIndex) -> Decision {
    let rules = Rules::compile(&policy.spec).unwrap();
    let view = index.view("shop", None, "shop/orders-db", t(NOW));
    decide::decide(decide::Inputs {
        snapshot,
        rules: &rules,
        cluster: &view,
        poolers: &[],
        memory: &Memory::default(),
    })
}

fn encoded(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test]
async fn a_new_policy_first_gets_the_finalizer() {
    let script = Script::default();
    let (ctx, mut handle, _, _leader) = context(
        script.connector(),
        ClusterIndex::default(),
        true,
        true,
        true,
    );
    let p = policy(with_secret(json!({})), false);
    let echo = serde_json::to_value(policy(with_secret(json!({})), true)).unwrap();
    let task = tokio::spawn(reconcile(Arc::new(p), ctx));

    let r = next(&mut handle).await;
    assert_eq!(
        r.line(),
        (
            Method::PATCH,
            "/apis/poolwarden.io/v1alpha1/namespaces/shop/poolpolicies/orders-db?",
            "application/json-patch+json"
        )
    );
    assert_eq!(
        r.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["poolwarden.io/cleanup"]},
        ])
    );
    r.reply(200, echo);
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(handle.next_request().await.is_none(), "nothing else");
    assert_eq!(script.observed(), 0);
}

#[tokio::test]
async fn an_invalid_spec_is_written_into_the_status_and_waits_for_a_change() {
    let (ctx, mut handle, registry, _leader) = context(
        Script::default().connector(),
        ClusterIndex::default(),
        true,
        true,
        true,
    );
    let p = policy(
        with_secret(json!({"scope": {"excludeApplications": ["["]}})),
        true,
    );
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), ctx.clone()));

    let r = next(&mut handle).await;
    assert_eq!(r.line(), (Method::PATCH, POLICY_STATUS, APPLY));
    let message = validate_message(&p);
    assert_eq!(
        stable(r.body.clone()),
        json!({
            "apiVersion": "poolwarden.io/v1alpha1",
            "kind": "PoolPolicy",
            "status": {
                "observedGeneration": 3,
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": message,
                     "lastTransitionTime": "<now>", "observedGeneration": 3},
                    {"type": "DatabaseReachable", "status": "False", "reason": "NotChecked",
                     "message": "the spec is invalid", "lastTransitionTime": "<now>", "observedGeneration": 3},
                ],
                "terminations": {"lastCycle": 0, "total": 0},
                "leakingWorkloads": 0,
            },
        })
    );
    assert!(
        message.contains("spec.scope.excludeApplications"),
        "{message}"
    );
    r.reply(200, serde_json::to_value(&p).unwrap());

    let error = task.await.unwrap().unwrap_err();
    assert!(
        matches!(error, ReconcileError::Invalid(InvalidPolicy::Rules(_))),
        "{error:?}"
    );
    assert_eq!(
        error_policy(Arc::new(p), &error, ctx.clone()),
        Action::requeue(RECHECK)
    );
    let metrics = encoded(&registry);
    assert!(
        metrics.contains(
            "poolwarden_reconcile_errors_total{policy=\"shop/orders-db\",category=\"InvalidSpec\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("poolwarden_reconcile_duration_seconds_count{policy=\"shop/orders-db\"} 1\n"),
        "the failed reconcile was timed too: {metrics}"
    );
    drop(ctx);
    assert!(
        handle.next_request().await.is_none(),
        "no Secret read, no database"
    );
}

fn validate_message(p: &PoolPolicy) -> String {
    super::validate::policy(p).err().unwrap().to_string()
}

#[tokio::test]
async fn a_missing_secret_becomes_a_condition_and_a_retry_with_backoff() {
    let (ctx, mut handle, _, _leader) = context(
        Script::default().connector(),
        ClusterIndex::default(),
        true,
        true,
        true,
    );
    let p = policy(with_secret(json!({"interval": "10s"})), true);
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), ctx.clone()));

    let r = next(&mut handle).await;
    assert_eq!(
        r.line(),
        (
            Method::GET,
            "/api/v1/namespaces/shop/secrets/orders-db-monitor",
            ""
        )
    );
    r.reply(404, not_found("secrets \"orders-db-monitor\""));
    let r = next(&mut handle).await;
    assert_eq!(r.line(), (Method::PATCH, POLICY_STATUS, APPLY));
    let message = "Secret shop/orders-db-monitor not found";
    assert_eq!(
        stable(r.body.clone())["status"]["conditions"],
        json!([
            {"type": "Ready", "status": "False", "reason": "SecretNotFound", "message": message,
             "lastTransitionTime": "<now>", "observedGeneration": 3},
            {"type": "DatabaseReachable", "status": "False", "reason": "NotChecked", "message": message,
             "lastTransitionTime": "<now>", "observedGeneration": 3},
        ])
    );
    r.reply(200, serde_json::to_value(&p).unwrap());

    let error = task.await.unwrap().unwrap_err();
    assert!(
        matches!(error, ReconcileError::Secret(SecretError::NotFound { .. })),
        "{error:?}"
    );
    // A Secret can appear: back off from the interval (±20%), doubling.
    let p = Arc::new(p);
    let first = retry_secs(error_policy(p.clone(), &error, ctx.clone()));
    let second = retry_secs(error_policy(p, &error, ctx.clone()));
    assert!((8.0..=12.0).contains(&first), "{first}");
    assert!((16.0..=24.0).contains(&second), "{second}");
    drop(ctx);
    assert!(handle.next_request().await.is_none());
}

/// The wait an `Action::requeue` asks for, in seconds.
fn retry_secs(action: Action) -> f64 {
    let text = format!("{action:?}");
    let wait = ["requeue_after: Some(", "requeue_after: Some(Duration("]
        .iter()
        .find_map(|p| text.split_once(p).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("not a requeue: {text}"));
    let (number, unit) = wait
        .trim_end_matches([')', ' ', '}'])
        .split_at(wait.find(|c: char| c.is_ascii_alphabetic()).unwrap());
    let n: f64 = number.parse().unwrap();
    match unit.trim_end_matches([')', ' ', '}']) {
        "s" => n,
        "ms" => n / 1000.0,
        "µs" => n / 1e6,
        other => panic!("unit {other} in {text}"),
    }
}

#[tokio::test]
async fn a_replica_that_does_not_lead_or_has_not_listed_sends_nothing_and_asks_nothing() {
    let script = Script::answering(vec![Ok(snapshot(vec![idle(101, [127, 0, 0, 31], 600)]))]);
    let spec = with_secret(json!({"mode": "Enforce", "idle": {"idleTimeout": "300ms"}}));
    for (leader, ready) in [(false, true), (true, false)] {
        let (ctx, mut handle, _, _leader) = context(
            script.connector(),
            workload_index("127.0.0.31", &[]),
            leader,
            ready,
            true,
        );
        let action = reconcile(Arc::new(policy(spec.clone(), true)), ctx.clone())
            .await
            .unwrap();
        let expected = if leader {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        };
        assert_eq!(action, Action::requeue(expected));
        drop(ctx);
        assert!(handle.next_request().await.is_none());
    }
    assert_eq!(script.observed(), 0);
}

#[tokio::test]
async fn one_reconcile_terminates_annotates_raises_events_and_reports_in_that_order() {
    let sessions = vec![
        idle(101, [127, 0, 0, 31], 600),
        idle(102, [127, 0, 0, 31], 600),
        idle(103, [127, 0, 0, 31], 900),
    ];
    let snap = snapshot(sessions.clone());
    let script = Script::answering(vec![Ok(snap.clone())]);
    let index = workload_index("127.0.0.31", &[]);
    let spec = with_secret(json!({
        "mode": "Enforce",
        "interval": "10s",
        "idle": {"idleTimeout": "5m"},
        "leakDetection": {"window": "1m", "strandedIdleAge": "5m", "idleThreshold": 3},
    }));
    let p = policy(spec, true);
    let expected = expected_decision(&p, &snap, &index);
    let (ctx, mut handle, _, _leader) = context(script.connector(), index, true, true, true);
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), ctx.clone()));

    // Dereference: the Secret, from the policy's own namespace.
    let r = next(&mut handle).await;
    assert_eq!(
        r.line(),
        (
            Method::GET,
            "/api/v1/namespaces/shop/secrets/orders-db-monitor",
            ""
        )
    );
    r.reply(200, secret("5"));

    // Act on the cluster: the Deployment (never its ReplicaSet) gets poolwarden's keys only.
    let r = next(&mut handle).await;
    assert_eq!(
        r.line(),
        (
            Method::PATCH,
            "/apis/apps/v1/namespaces/shop/deployments/orders-api?",
            "application/merge-patch+json"
        )
    );
    let change = &expected.annotations[0].annotations;
    assert_eq!(
        r.body,
        json!({"metadata": {"annotations": {
            "poolwarden.io/leak": "IdleAccumulation",
            "poolwarden.io/leak-detail": change["poolwarden.io/leak-detail"],
            "poolwarden.io/policy": "shop/orders-db",
        }}})
    );
    r.reply(200, deployment_echo());

    // Events: the leak on the Deployment, complete as `kubectl describe` finds it …
    let finding = expected
        .findings
        .iter()
        .find(|f| f.started)
        .expect("a finding starts");
    let r = next(&mut handle).await;
    assert_eq!(
        r.line(),
        (
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/shop/events?",
            "application/json"
        )
    );
    let policy_reference = json!({"apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
        "name": "orders-db", "namespace": "shop", "uid": "uid-1", "resourceVersion": "7"});
    assert_eq!(
        stable(r.body.clone()),
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "orders-api.<now>", "namespace": "shop"},
            "action": "Detected",
            "reason": "ConnectionLeak",
            "type": "Warning",
            "eventTime": "<now>",
            "note": format!("IdleAccumulation: {}. Likely cause: {} (policy shop/orders-db)",
                            finding.shown.summary, finding.shown.cause),
            "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders-api",
                          "namespace": "shop", "uid": "uid-orders-api", "resourceVersion": "11"},
            "related": policy_reference,
            "reportingController": "poolwarden",
            "reportingInstance": "test",
        })
    );
    let echo = r.body.clone();
    r.reply(201, echo);
    // … what was ended, on the Deployment, for its owners …
    let r = next(&mut handle).await;
    assert_eq!(
        stable(r.body.clone()),
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "orders-api.<now>", "namespace": "shop"},
            "action": "Terminate",
            "reason": "SessionsTerminated",
            "type": "Normal",
            "eventTime": "<now>",
            "note": "policy shop/orders-db ended 3 sessions of this workload: 3 IdleTimeout (up \
                     to 15m00s); pods orders-api-5c6d-q7x",
            "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders-api",
                          "namespace": "shop", "uid": "uid-orders-api", "resourceVersion": "11"},
            "related": policy_reference,
            "reportingController": "poolwarden",
            "reportingInstance": "test",
        })
    );
    let echo = r.body.clone();
    r.reply(201, echo);
    // … and the terminations on the policy.
    let r = next(&mut handle).await;
    assert_eq!(
        stable(r.body.clone()),
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "orders-db.<now>", "namespace": "shop"},
            "action": "Terminate",
            "reason": "SessionsTerminated",
            "type": "Normal",
            "eventTime": "<now>",
            "note": "terminated 3 sessions from Deployment/orders-api",
            "regarding": policy_reference,
            "reportingController": "poolwarden",
            "reportingInstance": "test",
        })
    );
    let echo = r.body.clone();
    r.reply(201, echo);

    // Report: the status, by server-side apply.
    let r = next(&mut handle).await;
    assert_eq!(r.line(), (Method::PATCH, POLICY_STATUS, APPLY));
    let ready_message = super::status::ready_message(expected.mode);
    let detail = format!("IdleAccumulation: {}", finding.shown.summary);
    assert_eq!(
        stable(r.body.clone())["status"],
        json!({
            "observedGeneration": 3,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Reconciled", "message": ready_message,
                 "lastTransitionTime": "<now>", "observedGeneration": 3},
                {"type": "DatabaseReachable", "status": "True", "reason": "Connected",
                 "message": "PostgreSQL 16.4", "lastTransitionTime": "<now>", "observedGeneration": 3},
                {"type": "Degraded", "status": "False", "reason": "AsExpected",
                 "message": "poolwarden can see and end every governed session",
                 "lastTransitionTime": "<now>", "observedGeneration": 3},
            ],
            "lastCheckTime": NOW,
            "connections": "3/97",
            "server": {"version": "16.4", "maxConnections": 100, "reservedConnections": 3},
            "sessions": {"total": 3, "inScope": 3, "active": 0, "idle": 3, "idleInTransaction": 0},
            "utilizationPercent": expected.capacity.utilization_percent,
            "terminations": {"lastCycle": 3, "total": 3},
            "leakingWorkloads": 1,
            "topLeaks": [{"workload": "Deployment/orders-api", "findings": ["IdleAccumulation"],
                          "sessions": 3, "detail": detail}],
            // The one pod held 3 sessions: its pool per pod, learned, and kept for a restart.
            "capacity": {"usableConnections": 97, "bookedConnections": 3, "workloads": [
                {"workload": "Deployment/orders-api", "replicas": 1, "surge": 0,
                 "scaleFrom": "pods running", "poolPerPod": 3, "poolFrom": "learned",
                 "connections": 3}]},
            "learnedPools": [{"workload": "Deployment/orders-api", "sessionsPerPod": 3,
                              "thisPeriod": 3, "periodStart": NOW}],
        })
    );
    r.reply(200, serde_json::to_value(&p).unwrap());

    // Back one interval after this cycle started: less what the cycle took.
    let wait = retry_secs(task.await.unwrap().unwrap());
    assert!(wait <= 10.0 && wait > 8.0, "{wait}");
    // The database: one look, then exactly the condemned sessions, as they were seen.
    assert_eq!(script.observed(), 1);
    let identities: Vec<SessionIdentity> = sessions.iter().map(|s| s.identity().unwrap()).collect();
    let mut terminated = script.terminated();
    terminated[0].sort_by_key(|s| s.pid);
    assert_eq!(terminated, [identities]);
    drop(ctx);
    assert!(handle.next_request().await.is_none(), "nothing else");
}

#[tokio::test]
async fn a_watched_secret_is_read_again_only_when_it_changed() {
    // Taken now: the status heartbeat (every 5 minutes) must not fall due in between.
    let quiet = || {
        Ok(Snapshot {
            observed_at: Timestamp::now(),
            ..snapshot(vec![])
        })
    };
    let script = Script::answering(vec![quiet(), quiet(), quiet()]);
    let (ctx, mut handle, _, _leader) = context(
        script.connector(),
        ClusterIndex::default(),
        true,
        true,
        true,
    );
    let p = Arc::new(policy(with_secret(json!({"interval": "10s"})), true));
    ctx.secrets.seen("shop", "orders-db-monitor", "5");

    // First reconcile: read, at resourceVersion 5; the status says Ready.
    let task = tokio::spawn(reconcile(p.clone(), ctx.clone()));
    let r = next(&mut handle).await;
    assert_eq!(
        r.line().1,
        "/api/v1/namespaces/shop/secrets/orders-db-monitor"
    );
    r.reply(200, secret("5"));
    let r = next(&mut handle).await;
    assert_eq!(r.line(), (Method::PATCH, POLICY_STATUS, APPLY));
    r.reply(200, serde_json::to_value(&*p).unwrap());
    task.await.unwrap().unwrap();

    // Second: the watch still says 5, so no request at all (the status is unchanged too).
    let p = Arc::new(policy(with_secret(json!({"interval": "10s"})), true));
    let mut with_status = (*p).clone();
    with_status.status = Some(super::status::build(
        None,
        Some(3),
        &super::status::Ended::Cycle {
            cycle: &crate::cycle::Pass::new(
                &Rules::compile(&p.spec).unwrap(),
                &decide::ClusterView::default(),
                &Memory::default(),
            )
            .run(&mut Scripted(Script::answering(vec![quiet()])))
            .await
            .unwrap(),
            terminations_total: 0,
        },
        Timestamp::now(),
    ));
    let with_status = Arc::new(with_status);
    // (A request would go unanswered here: the reconcile would not end.)
    tokio::time::timeout(
        Duration::from_secs(10),
        reconcile(with_status.clone(), ctx.clone()),
    )
    .await
    .expect("no request: the Secret is not read again")
    .unwrap();
    assert_eq!(script.observed(), 2);

    // The Secret changed (the watch saw resourceVersion 6): read again.
    ctx.secrets.seen("shop", "orders-db-monitor", "6");
    let task = tokio::spawn(reconcile(with_status, ctx.clone()));
    let r = next(&mut handle).await;
    assert_eq!(
        r.line().1,
        "/api/v1/namespaces/shop/secrets/orders-db-monitor"
    );
    r.reply(200, secret("6"));
    task.await.unwrap().unwrap();
    assert_eq!(script.observed(), 3);
    drop(ctx);
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn a_database_failure_is_reported_and_retried_by_its_kind() {
    let refused = DatabaseError::AuthFailed {
        target: "orders-db.shop:5432/orders".into(),
        detail: "password authentication failed for user \"monitor\"".into(),
    };
    let down = DatabaseError::Unreachable {
        target: "orders-db.shop:5432/orders".into(),
        detail: "connection refused".into(),
    };
    let message = refused.to_string();
    let script = Script::answering(vec![Err(refused), Err(down)]);
    let (ctx, mut handle, registry, _leader) = context(
        script.connector(),
        ClusterIndex::default(),
        true,
        true,
        false,
    );
    let p = Arc::new(policy(with_secret(json!({"interval": "10s"})), true));

    let task = tokio::spawn(reconcile(p.clone(), ctx.clone()));
    next(&mut handle).await.reply(200, secret("5"));
    let r = next(&mut handle).await;
    assert_eq!(r.line(), (Method::PATCH, POLICY_STATUS, APPLY));
    assert_eq!(
        stable(r.body.clone())["status"]["conditions"],
        json!([
            {"type": "Ready", "status": "False", "reason": "AuthFailed", "message": message,
             "lastTransitionTime": "<now>", "observedGeneration": 3},
            {"type": "DatabaseReachable", "status": "False", "reason": "AuthFailed", "message": message,
             "lastTransitionTime": "<now>", "observedGeneration": 3},
        ])
    );
    r.reply(200, serde_json::to_value(&*p).unwrap());
    let error = task.await.unwrap().unwrap_err();
    assert!(matches!(
        error,
        ReconcileError::Database(DatabaseError::AuthFailed { .. })
    ));
    // Bad credentials wait for the Secret to change.
    assert_eq!(
        error_policy(p.clone(), &error, ctx.clone()),
        Action::requeue(RECHECK)
    );

    // Without a Secret watch, the Secret is read every time; an unreachable server backs off.
    let task = tokio::spawn(reconcile(p.clone(), ctx.clone()));
    next(&mut handle).await.reply(200, secret("5"));
    next(&mut handle)
        .await
        .reply(200, serde_json::to_value(&*p).unwrap());
    let error = task.await.unwrap().unwrap_err();
    assert!(matches!(
        error,
        ReconcileError::Database(DatabaseError::Unreachable { .. })
    ));
    let wait = retry_secs(error_policy(p, &error, ctx.clone()));
    assert!((8.0..=12.0).contains(&wait), "{wait}");
    let metrics = encoded(&registry);
    for category in ["AuthFailed", "Unreachable"] {
        let line = format!(
            "poolwarden_reconcile_errors_total{{policy=\"shop/orders-db\",category=\"{category}\"}} 1\n"
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    // Each failed login is a look taken at the server, counted once.
    for line in [
        "poolwarden_server_looks_total{outcome=\"failed\"} 2\n",
        "poolwarden_server_looks_total{outcome=\"answered\"} 0\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    drop(ctx);
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn deleting_a_policy_removes_its_annotations_then_its_finalizer() {
    // The Deployment carries the policy's annotations, its ReplicaSet the Deployment
    // controller's copies: the Deployment is cleaned first, then, as it no longer carries them,
    // the copies its controller will never take back.
    let index = workload_index(
        "10.0.0.1",
        &[
            ("poolwarden.io/leak", "IdleAccumulation"),
            ("poolwarden.io/policy", "shop/orders-db"),
        ],
    );
    let (ctx, mut handle, _, _leader) =
        context(Script::default().connector(), index, true, true, true);
    let mut p = policy(with_secret(json!({})), true);
    p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), ctx.clone()));

    let r = next(&mut handle).await;
    assert_eq!(
        r.line(),
        (
            Method::PATCH,
            "/apis/apps/v1/namespaces/shop/deployments/orders-api?",
            "application/merge-patch+json"
        )
    );
    assert_eq!(
        r.body,
        json!({"metadata": {"annotations": {
            "poolwarden.io/leak": null, "poolwarden.io/leak-detail": null, "poolwarden.io/policy": null}}})
    );
    r.reply(200, deployment_echo());

    let r = next(&mut handle).await;
    assert_eq!(
        r.line(),
        (
            Method::PATCH,
            "/apis/apps/v1/namespaces/shop/replicasets/orders-api-5c6d?",
            "application/merge-patch+json"
        )
    );
    assert_eq!(
        r.body,
        json!({"metadata": {"annotations": {
            "poolwarden.io/leak": null, "poolwarden.io/policy": null}}})
    );
    r.reply(200, deployment_echo());

    let r = next(&mut handle).await;
    assert_eq!(
        r.line(),
        (
            Method::PATCH,
            "/apis/poolwarden.io/v1alpha1/namespaces/shop/poolpolicies/orders-db?",
            "application/json-patch+json"
        )
    );
    assert_eq!(
        r.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "poolwarden.io/cleanup"},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
    p.metadata.finalizers = None;
    r.reply(200, serde_json::to_value(&p).unwrap());

    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    drop(ctx);
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn the_gauges_follow_what_exists_a_lost_connection_and_a_deleted_policy_drop_out() {
    let down = || DatabaseError::Unreachable {
        target: "orders-db.shop:5432/orders".into(),
        detail: "connection refused".into(),
    };
    let sessions = vec![idle(101, [10, 0, 0, 1], 5)];
    let script = Script::answering(vec![
        Ok(snapshot(sessions.clone())),
        Err(down()),
        Ok(snapshot(sessions)),
    ]);
    let (ctx, mut handle, registry, _leader) = context(
        script.connector(),
        ClusterIndex::default(),
        true,
        true,
        false,
    );
    let mut p = policy(with_secret(json!({"interval": "10s"})), true);
    let once = async |handle: &mut Pin<Box<ApiHandle>>, p: &PoolPolicy| {
        let task = tokio::spawn(reconcile(Arc::new(p.clone()), ctx.clone()));
        next(handle).await.reply(200, secret("5"));
        let r = next(handle).await;
        assert_eq!(r.line(), (Method::PATCH, POLICY_STATUS, APPLY));
        r.reply(200, serde_json::to_value(p).unwrap());
        task.await.unwrap()
    };
    let connections = |registry: &Registry| {
        let metrics = encoded(registry);
        let line = metrics
            .lines()
            .find(|l| l.starts_with("poolwarden_monitoring_connections "))
            .map(str::to_owned);
        (line, metrics)
    };
    let ours = "policy=\"shop/orders-db\"";

    once(&mut handle, &p).await.unwrap();
    let (line, metrics) = connections(&registry);
    assert_eq!(
        line.as_deref(),
        Some("poolwarden_monitoring_connections 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("poolwarden_sessions{{{ours}")),
        "{metrics}"
    );

    // The server goes away: its connection is closed, and the gauge says so.
    let error = once(&mut handle, &p).await.unwrap_err();
    error_policy(Arc::new(p.clone()), &error, ctx.clone());
    let (line, metrics) = connections(&registry);
    assert_eq!(
        line.as_deref(),
        Some("poolwarden_monitoring_connections 0"),
        "{metrics}"
    );

    // It answers again.
    once(&mut handle, &p).await.unwrap();
    let (line, metrics) = connections(&registry);
    assert_eq!(
        line.as_deref(),
        Some("poolwarden_monitoring_connections 1"),
        "{metrics}"
    );

    // Deleted: its connection closes, and no series names it any more.
    p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), ctx.clone()));
    let r = next(&mut handle).await;
    assert_eq!(r.method, Method::PATCH, "{}", r.uri);
    p.metadata.finalizers = None;
    r.reply(200, serde_json::to_value(&p).unwrap());
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    let (line, metrics) = connections(&registry);
    assert_eq!(
        line.as_deref(),
        Some("poolwarden_monitoring_connections 0"),
        "{metrics}"
    );
    let left: Vec<&str> = metrics.lines().filter(|l| l.contains(ours)).collect();
    assert!(left.is_empty(), "series of the deleted policy: {left:#?}");
    drop(ctx);
    assert!(handle.next_request().await.is_none());
}

fn api_error(code: u16) -> kube::Error {
    kube::Error::Api(Box::new(kube::core::Status {
        status: Some(kube::core::response::StatusSummary::Failure),
        code,
        message: format!("HTTP {code}"),
        reason: String::new(),
        details: None,
        metadata: None,
    }))
}

#[tokio::test]
async fn error_policy_chooses_by_the_kind_of_failure_and_counts_every_one() {
    let (ctx, _handle, registry, _leader) = context(
        Script::default().connector(),
        ClusterIndex::default(),
        true,
        true,
        true,
    );
    let p = Arc::new(policy(with_secret(json!({"interval": "10s"})), true));
    let deployment = WorkloadRef {
        namespace: "shop".into(),
        kind: "Deployment".into(),
        name: "orders-api".into(),
    };
    let db = |e: DatabaseError| e;
    let invalid =
        Rules::compile(&policy(json!({"scope": {"excludeApplications": ["["]}}), true).spec)
            .err()
            .unwrap();
    let secret = |e| ReconcileError::Secret(e);
    #[derive(Debug, PartialEq)]
    enum Wait {
        Recheck,
        Conflict,
        Interval,
        Backoff,
    }
    let cases: Vec<(ReconcileError, &str, Wait)> = vec![
        (ReconcileError::NoNamespace, "NoNamespace", Wait::Recheck),
        (ReconcileError::NoName, "NoName", Wait::Recheck),
        (
            InvalidPolicy::Rules(invalid).into(),
            "InvalidSpec",
            Wait::Recheck,
        ),
        (
            InvalidPolicy::NoDatabase.into(),
            "InvalidSpec",
            Wait::Recheck,
        ),
        (
            secret(SecretError::NotFound {
                namespace: "shop".into(),
                name: "db".into(),
            }),
            "SecretNotFound",
            Wait::Backoff,
        ),
        (
            secret(SecretError::KeyMissing {
                namespace: "shop".into(),
                name: "db".into(),
                key: "uri".into(),
            }),
            "SecretKeyMissing",
            Wait::Backoff,
        ),
        (
            secret(SecretError::Api {
                namespace: "shop".into(),
                name: "db".into(),
                source: api_error(403),
            }),
            "SecretUnreadable",
            Wait::Backoff,
        ),
        (
            ReconcileError::Engine(db(DatabaseError::InvalidUrl("mysql://x".into()))),
            "InvalidUrl",
            Wait::Recheck,
        ),
        (
            ReconcileError::Database(DatabaseError::AuthFailed {
                target: "db".into(),
                detail: "no".into(),
            }),
            "AuthFailed",
            Wait::Recheck,
        ),
        (
            ReconcileError::Database(DatabaseError::PermissionDenied("pg_stat_activity".into())),
            "PermissionDenied",
            Wait::Recheck,
        ),
        (
            ReconcileError::Database(DatabaseError::ServerFull {
                detail: "too many clients".into(),
                advice: crate::database::server_full_advice(None, ""),
            }),
            "ServerFull",
            Wait::Backoff,
        ),
        (
            ReconcileError::Database(DatabaseError::ConnectionLost("reset".into())),
            "ConnectionLost",
            Wait::Backoff,
        ),
        // TLS fails the same way until a certificate, a CA or the URL changes: `run` stops on
        // it, and the controller waits for a change (with its slow re-check) rather than retrying.
        (
            ReconcileError::Database(DatabaseError::Tls("handshake".into())),
            "TlsError",
            Wait::Recheck,
        ),
        (
            ReconcileError::Database(DatabaseError::TlsNotOffered {
                target: "db:5432".into(),
            }),
            "TlsError",
            Wait::Recheck,
        ),
        (ReconcileError::LostLease, "LostLease", Wait::Interval),
        (
            ReconcileError::Annotate {
                workload: deployment.clone(),
                source: api_error(403),
            },
            "Forbidden",
            Wait::Backoff,
        ),
        (
            ReconcileError::Annotate {
                workload: deployment.clone(),
                source: api_error(500),
            },
            "KubeApi",
            Wait::Backoff,
        ),
        (
            ReconcileError::Status(api_error(409)),
            "Conflict",
            Wait::Conflict,
        ),
        (
            ReconcileError::Cleanup {
                workload: deployment,
                source: api_error(503),
            },
            "KubeApi",
            Wait::Backoff,
        ),
        (
            ReconcileError::Finalizer(api_error(409)),
            "Conflict",
            Wait::Conflict,
        ),
        // The finalizer's JSON patch `test` failed: another writer changed the list.
        (
            ReconcileError::Finalizer(api_error(422)),
            "Conflict",
            Wait::Conflict,
        ),
        (
            ReconcileError::Finalizer(api_error(404)),
            "NotFound",
            Wait::Backoff,
        ),
    ];
    for (error, category, wait) in &cases {
        assert_eq!(error.category(), *category, "{error:?}");
        let secs = retry_secs(error_policy(p.clone(), error, ctx.clone()));
        let chose = if secs == RECHECK.as_secs_f64() {
            Wait::Recheck
        } else if secs == CONFLICT_RETRY.as_secs_f64() {
            Wait::Conflict
        } else if secs == 10.0 {
            Wait::Interval
        } else {
            Wait::Backoff
        };
        assert_eq!(&chose, wait, "{error:?} waits {secs} s");
    }
    // Every one was counted, by its category.
    let metrics = encoded(&registry);
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("poolwarden_reconcile_errors_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, cases.len() as u64);
    assert!(metrics.contains(
        "poolwarden_reconcile_errors_total{policy=\"shop/orders-db\",category=\"Conflict\"} 3\n"
    ));
    // Waiting for another policy's look at the server is no failure: back in about a second,
    // spread, and not counted.
    let pending = ReconcileError::LookPending;
    assert_eq!(pending.category(), "LookPending");
    let secs = retry_secs(error_policy(p.clone(), &pending, ctx.clone()));
    assert!((0.8..=1.2).contains(&secs), "{secs}");
    assert!(!encoded(&registry).contains("LookPending"));
    // A failure from inside kube's finalizer helper keeps its own kind.
    let inner = ReconcileError::from_finalizer(kube::runtime::finalizer::Error::ApplyFailed(
        ReconcileError::Database(DatabaseError::ServerFull {
            detail: "full".into(),
            advice: crate::database::server_full_advice(None, ""),
        }),
    ));
    assert_eq!(inner.category(), "ServerFull");
}

#[tokio::test]
async fn a_long_outage_backs_off_to_two_intervals_at_most() {
    let (ctx, _handle, _, _leader) = context(
        Script::default().connector(),
        ClusterIndex::default(),
        true,
        true,
        true,
    );
    let p = Arc::new(policy(with_secret(json!({"interval": "10s"})), true));
    let failures = [
        ReconcileError::Database(DatabaseError::Unreachable {
            target: "orders-db.shop:5432/orders".into(),
            detail: "connection refused".into(),
        }),
        ReconcileError::Secret(SecretError::NotFound {
            namespace: "shop".into(),
            name: "orders-db-monitor".into(),
        }),
    ];
    for failure in &failures {
        // Twenty failures in a row, as in an outage of several minutes.
        let waits: Vec<f64> = (0..20)
            .map(|_| retry_secs(error_policy(p.clone(), failure, ctx.clone())))
            .collect();
        assert!((8.0..=12.0).contains(&waits[0]), "{failure}: {waits:?}");
        // It backs off, and never beyond two intervals: the policy is looked at again within
        // two intervals of its database (or Secret) coming back.
        assert!(
            waits[1..].iter().all(|w| *w >= 16.0),
            "{failure}: {waits:?}"
        );
        assert!(waits.iter().all(|w| *w <= 20.0), "{failure}: {waits:?}");
        // A success starts the backoff over.
        ctx.remember("uid-1", Memory::default());
    }
}

#[tokio::test]
async fn against_a_real_postgresql_one_reconcile_ends_exactly_the_leaked_sessions() {
    use poolwarden_sandbox::{Sandbox, SandboxOptions, SessionSpec};
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
    let healthy = sb
        .open_session(
            &SessionSpec::new("app", "app", "postgres").from_addr(Ipv4Addr::new(127, 0, 0, 32)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    healthy.start_active(60.0);

    let (ctx, mut handle, _, _leader) = context(
        crate::controller::any_engine,
        workload_index("127.0.0.31", &[]),
        true,
        true,
        true,
    );
    let spec = with_secret(json!({
        "mode": "Enforce",
        "interval": "10s",
        "idle": {"idleTimeout": "300ms"},
        "leakDetection": {"window": "300ms", "strandedIdleAge": "300ms", "idleThreshold": 3},
    }));
    let p = policy(spec, true);
    let task = tokio::spawn(reconcile(Arc::new(p.clone()), ctx.clone()));

    let r = next(&mut handle).await;
    assert_eq!(
        r.line().1,
        "/api/v1/namespaces/shop/secrets/orders-db-monitor"
    );
    use base64::Engine as _;
    let url = sb.url("monitor", "monitor", "postgres") + "?sslmode=disable";
    r.reply(
        200,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "orders-db-monitor", "namespace": "shop", "resourceVersion": "5"},
               "data": {"uri": base64::engine::general_purpose::STANDARD.encode(url)}}),
    );
    // The annotation, three Events, the status: in that order, as the scripted scenario pins
    // them.
    let mut sent = Vec::new();
    for _ in 0..5 {
        let r = next(&mut handle).await;
        sent.push((r.method.clone(), r.uri.clone()));
        let echo = if r.method == Method::POST {
            r.body.clone()
        } else {
            serde_json::to_value(&p).unwrap()
        };
        let code = if r.method == Method::POST { 201 } else { 200 };
        r.reply(code, echo);
    }
    let events = "/apis/events.k8s.io/v1/namespaces/shop/events?";
    assert_eq!(
        sent,
        [
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/shop/deployments/orders-api?".to_owned()
            ),
            (Method::POST, events.to_owned()),
            (Method::POST, events.to_owned()),
            (Method::POST, events.to_owned()),
            (Method::PATCH, POLICY_STATUS.to_owned()),
        ]
    );
    let wait = retry_secs(task.await.unwrap().unwrap());
    assert!(wait <= 10.0 && wait > 5.0, "{wait}");
    for s in &leaked {
        assert!(!s.is_alive().await, "terminated");
    }
    assert!(healthy.is_alive().await, "a busy session is left alone");
    ctx.engines.close_all();
    drop(ctx);
    assert!(handle.next_request().await.is_none(), "nothing else");
}
