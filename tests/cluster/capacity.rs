//! End to end, capacity at the workloads' largest scale (issue 21): the real `poolwarden
//! controller` against the Kubernetes stand-in (Deployments with their replicas and rollout
//! strategy, HorizontalPodAutoscalers) and a real PostgreSQL that accepts 200 connections from
//! applications. Pod IPs are 127.0.0.x addresses, so sessions opened from them are the pods'.

use crate::support::controller::{
    Controller, NS, create_pod, create_policy_with, create_secret, database_with, eventually,
    session,
};
use crate::support::kube::KubeStandin;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, Patch, PatchParams, PostParams};
use poolwarden::api::{CapacityStatus, PoolPolicy};
use poolwarden_sandbox::{ClientSession, Sandbox, SandboxOptions};
use serde_json::json;

/// A PostgreSQL whose `max_connections` of 203 leaves 200 to applications (3 reserved for
/// superusers), with the roles the end-to-end tests use.
async fn server_of_200() -> Sandbox {
    database_with(SandboxOptions {
        max_connections: 203,
        ..SandboxOptions::default()
    })
    .await
}

/// Deployment `name` (`replicas`, RollingUpdate with a 25% surge, `annotations`) → ReplicaSet →
/// running `pods` (name, IP), and an autoscaler of `hpa_max` replicas for it.
async fn autoscaled(
    client: &kube::Client,
    name: &str,
    replicas: u32,
    hpa_max: u32,
    annotations: serde_json::Value,
    pods: &[(&str, &str)],
) {
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {"replicas": replicas,
                 "strategy": {"type": "RollingUpdate",
                              "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "app:1"}]}}},
    }))
    .unwrap();
    let d = Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{name}-5c6d"), "namespace": NS,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": name, "uid": d.metadata.uid,
                                          "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": name}}},
    }))
    .unwrap();
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    for (pod, ip) in pods {
        create_pod(client, &rs, pod, ip).await;
    }
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": 1, "maxReplicas": hpa_max},
    }))
    .unwrap();
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &hpa)
        .await
        .unwrap();
}

/// checkout-api (2 of at most 4, 25 per pod declared), orders-api (3 of at most 20, its pool
/// learned from the sessions the test opens), billing-api (2 of at most 6, 15 per pod declared).
async fn three_autoscaled_deployments(client: &kube::Client) {
    let pool = |n: u32| json!({"poolwarden.io/pool-max": n.to_string()});
    autoscaled(
        client,
        "checkout-api",
        2,
        4,
        pool(25),
        &[
            ("checkout-api-a", "127.0.0.61"),
            ("checkout-api-b", "127.0.0.62"),
        ],
    )
    .await;
    autoscaled(
        client,
        "orders-api",
        3,
        20,
        json!({}),
        &[
            ("orders-api-a", "127.0.0.51"),
            ("orders-api-b", "127.0.0.52"),
            ("orders-api-c", "127.0.0.53"),
        ],
    )
    .await;
    autoscaled(
        client,
        "billing-api",
        2,
        6,
        pool(15),
        &[
            ("billing-api-a", "127.0.0.71"),
            ("billing-api-b", "127.0.0.72"),
        ],
    )
    .await;
}

async fn capacity(policies: &Api<PoolPolicy>) -> Option<CapacityStatus> {
    policies.get("orders-db").await.ok()?.status?.capacity
}

/// The cluster of both tests: the server of 200, the stand-in with the three autoscaled
/// Deployments and PoolPolicy shop/orders-db (`{}`, looking every second), and orders-api's pod
/// a holding 10 sessions (its pool per pod, learned), which the caller keeps open.
struct Scene {
    sb: Sandbox,
    kube: KubeStandin,
    client: kube::Client,
    dir: tempfile::TempDir,
    busy: Vec<ClientSession>,
}

async fn scene() -> Scene {
    let sb = server_of_200().await;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let url = sb.url("monitor", "monitor", "orders") + "?sslmode=disable";
    create_secret(&client, "orders-db-monitor", &url).await;
    three_autoscaled_deployments(&client).await;
    let mut busy = Vec::new();
    for _ in 0..10 {
        busy.push(session(&sb, 51).await);
    }
    create_policy_with(
        &client,
        json!({"interval": "1s", "leakDetection": {"window": "2s"}}),
    )
    .await;
    Scene {
        sb,
        kube,
        client,
        dir: tempfile::tempdir().unwrap(),
        busy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_autoscaled_deployments_are_overbooked_before_they_scale_and_a_restart_keeps_the_learned_pool()
 {
    let Scene {
        sb,
        kube,
        client,
        dir,
        busy,
    } = scene().await;
    // Another pod of orders-api holds 2: the pool per pod is the most one pod holds, 10.
    let _quiet = [session(&sb, 52).await, session(&sb, 52).await];

    let controller = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-a");
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    // 4 x 25 + 20 x 10 + 6 x 15 = 390 at the autoscalers' maxima, 495 with each rollout's surge
    // of 25%, against 200: Overbooked, although the pods running now would open only 110.
    let booked = eventually("Overbooked, where it breaks, in the status", 60, || async {
        capacity(&policies)
            .await
            .filter(|c| c.booked_connections == 495)
    })
    .await;
    assert_eq!(booked.usable_connections, 200);
    assert_eq!(
        booked.breaks_at.as_deref(),
        Some("at 13 of Deployment/orders-api's 20 replicas")
    );
    let orders = booked
        .workloads
        .iter()
        .find(|w| w.workload == "Deployment/orders-api")
        .unwrap();
    assert_eq!(
        (
            orders.replicas,
            orders.surge,
            orders.pool_per_pod,
            orders.pool_from.as_str()
        ),
        (20, 5, 10, "learned")
    );
    assert_eq!(
        orders.scale_from,
        "HorizontalPodAutoscaler/orders-api maxReplicas, maxSurge 25%"
    );
    let gauges = |c: &Controller| {
        (
            c.metric(
                "poolwarden_booked_connections{policy=\"shop/orders-db\",engine=\"postgresql\"}",
            ),
            c.metric(
                "poolwarden_usable_connections{policy=\"shop/orders-db\",engine=\"postgresql\"}",
            ),
        )
    };
    assert_eq!(gauges(&controller), (Some(495.0), Some(200.0)));
    eventually("the confirmed Overbooked finding", 30, || async {
        controller.metric(
            "poolwarden_findings{policy=\"shop/orders-db\",kind=\"Overbooked\",workload=\"server\",engine=\"postgresql\"}",
        )
    })
    .await;
    let status = policies.get("orders-db").await.unwrap().status.unwrap();
    let learned = &status.learned_pools;
    assert_eq!(learned.len(), 1, "{learned:?}");
    assert_eq!(
        (learned[0].workload.as_str(), learned[0].sessions_per_pod),
        ("Deployment/orders-api", 10)
    );

    // The autoscaler of orders-api is capped at 8 (its watch brings the change): none of the
    // three crosses the line alone any more.
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), NS)
        .patch(
            "orders-api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxReplicas": 8}})),
        )
        .await
        .unwrap();
    let capped = eventually("the capped autoscaler counted", 30, || async {
        capacity(&policies)
            .await
            .filter(|c| c.booked_connections == 125 + 100 + 120)
    })
    .await;
    assert_eq!(
        capped.breaks_at.as_deref(),
        Some("only when several of them scale up at once")
    );

    // A new controller, after the busy pod closed its sessions: it starts from the pool it
    // learned before (in the status), not from the 2 sessions it sees now.
    drop(controller);
    drop(busy);
    let restarted = Controller::start(&kube.kubeconfig(dir.path()), dir.path(), "replica-b");
    eventually("the restarted controller's bookings", 60, || async {
        let (booked, _) = gauges(&restarted);
        booked.filter(|b| *b > 0.0)
    })
    .await;
    assert_eq!(gauges(&restarted), (Some(345.0), Some(200.0)));
}

/// poolwarden's ValidatingWebhookConfiguration, as the chart renders it (no caBundle yet:
/// poolwarden writes it), its Service in `namespace`.
async fn webhook_configuration(client: &kube::Client, namespace: &str) {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "poolwarden"},
        "webhooks": [{
            "name": "capacity.poolwarden.io",
            "clientConfig": {"service": {"namespace": namespace, "name": "poolwarden",
                                         "path": "/validate", "port": 443}},
            "rules": [
                {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["deployments", "statefulsets", "deployments/scale",
                               "statefulsets/scale"]},
                {"apiGroups": ["autoscaling"], "apiVersions": ["v2"],
                 "operations": ["CREATE", "UPDATE"], "resources": ["horizontalpodautoscalers"]},
            ],
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                                        "operator": "In", "values": [NS]}]},
            "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 2,
            "admissionReviewVersions": ["v1"],
        }],
    }))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
}

/// `kubectl scale deployment orders-api --replicas=N`: the status code and the `Warning`
/// headers of the answer.
async fn kubectl_scale(client: &kube::Client, replicas: u32) -> (u16, Vec<String>) {
    let request = http::Request::patch(format!(
        "/apis/apps/v1/namespaces/{NS}/deployments/orders-api/scale"
    ))
    .header("Content-Type", "application/merge-patch+json")
    .body(kube::client::Body::from(
        serde_json::to_vec(&json!({"spec": {"replicas": replicas}})).unwrap(),
    ))
    .unwrap();
    let answer = client.send(request).await.unwrap();
    let warnings = answer
        .headers()
        .get_all("Warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (answer.status().as_u16(), warnings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_beyond_the_servers_connections_warns_and_succeeds_and_without_poolwarden_just_succeeds()
 {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let Scene {
        sb: _sb,
        kube,
        client,
        dir,
        busy: _busy,
    } = scene().await;
    // The controller's namespace is the lease's (`default` in these tests).
    webhook_configuration(&client, "default").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut controller = Controller::start_with_args(
        &kube.kubeconfig(dir.path()),
        dir.path(),
        "replica-a",
        4,
        &[],
        &["--webhook-addr", &address],
    );
    kube.endpoints("default/poolwarden", Some(&address));
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    eventually("the bookings in the status", 60, || async {
        capacity(&policies)
            .await
            .filter(|c| c.booked_connections == 495)
    })
    .await;
    // poolwarden made its certificate, kept it in a Secret and made the API server trust it.
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    eventually("the caBundle", 30, || async {
        let c = configs.get("poolwarden").await.ok()?;
        c.webhooks?[0].client_config.ca_bundle.clone()
    })
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    let secret = secrets.get("poolwarden-webhook-tls").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));

    // 30 replicas of orders-api (beyond its autoscaler's 20) + 8 in a rollout, 10 per pod: 380
    // in place of 250, so 625 of 200. Allowed, with poolwarden's warning.
    let (status, warnings) = eventually("the webhook's warning", 30, || async {
        let (status, warnings) = kubectl_scale(&client, 30).await;
        (!warnings.is_empty()).then_some((status, warnings))
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        warnings,
        [
            "299 - \"poolwarden: at 30 replicas + 8 in a rollout, 10 connections per pod, \
          Deployment/orders-api brings the pools on the database of PoolPolicy shop/orders-db \
          to 625 connections; it accepts 200\""
        ]
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let d = deployments.get("orders-api").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(30));
    // Back to 3: its autoscaler still allows 20, and that is what the warning says now.
    let (status, warnings) = kubectl_scale(&client, 3).await;
    assert_eq!(status, 200);
    assert!(
        warnings[0].contains("poolwarden: at 20 replicas + 5 in a rollout")
            && warnings[0].contains("to 495 connections"),
        "{warnings:?}"
    );

    // The webhook's pod is gone: killed, and its endpoint with it. The same command succeeds.
    controller.kill();
    let started = std::time::Instant::now();
    assert_eq!(kubectl_scale(&client, 30).await, (200, vec![]));
    println!(
        "with the endpoint of a killed poolwarden: {:?}",
        started.elapsed()
    );
    kube.endpoints("default/poolwarden", None);
    let started = std::time::Instant::now();
    assert_eq!(kubectl_scale(&client, 31).await, (200, vec![]));
    println!("with no endpoint: {:?}", started.elapsed());
    // One that accepts and never answers holds the change up for the timeout (2 s), no more.
    let (silent, _listening) = crate::support::silent_listener().await;
    kube.endpoints("default/poolwarden", Some(&format!("127.0.0.1:{silent}")));
    let started = std::time::Instant::now();
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        kubectl_scale(&client, 32),
    )
    .await
    .expect("the API server gives up on the webhook after its timeout");
    assert_eq!(answered, (200, vec![]));
    println!("with a webhook that never answers: {:?}", started.elapsed());
    assert!(
        kube.log_text().contains("ignored (failurePolicy: Ignore)"),
        "the stand-in called the webhook and ignored its failure"
    );
}
