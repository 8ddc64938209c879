//! Controller steady state (section 5): the real `poolwarden controller` binary against the
//! Kubernetes API stand-in holding thousands of pods, and a real PostgreSQL where one Deployment
//! leaks (a confirmed finding, annotated once) while nothing changes: the API requests it makes
//! (from the stand-in's log, one line a request), its resident memory and CPU, and how soon it is
//! ready, with its first lists streamed and paged.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use poolwarden::api::PoolPolicy;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use crate::standin::KubeStandin;

const NS: &str = "shop";
const SECRET: &str = "orders-db-monitor";
const PODS_PER_WORKLOAD: usize = 10;
/// Idle sessions of the leaking pod (`pod_name(0)`): past the threshold, a confirmed finding.
const LEAKED: usize = 5;
/// The policies, all on the same database: (name, mode, idle rules).
const POLICIES: [(&str, &str, &str); 2] = [
    ("orders-db", "Enforce", "30m"),
    ("orders-db-report", "DryRun", "10m"),
];
const INTERVAL: &str = "1s";
const IMAGE: &str = "registry.example.com/shop/orders:1.42.0";

fn pod_name(i: usize) -> String {
    format!("orders-{}-7d9f6c-{i}", i / PODS_PER_WORKLOAD)
}

fn pod_ip(i: usize) -> String {
    IpAddr::V4(Ipv4Addr::new(
        10,
        1 + (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ))
    .to_string()
}

/// A pod as a Deployment's ReplicaSet makes it, with the status a kubelet reports.
fn pod(i: usize) -> Value {
    let w = i / PODS_PER_WORKLOAD;
    let ip = pod_ip(i);
    let t = "2025-05-01T08:00:00Z";
    let conditions: Vec<Value> = ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .map(|c| json!({"type": c, "status": "True", "lastTransitionTime": t}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name(i), "namespace": NS,
            "labels": {
                "app": format!("orders-{w}"), "pod-template-hash": "7d9f6c", "tier": "backend",
            },
            "annotations": {"kubectl.kubernetes.io/restartedAt": t},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("orders-{w}-7d9f6c"),
                "uid": format!("00000000-0000-0000-0001-{w:012}"),
                "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {
            "containers": [{
                "name": "app", "image": IMAGE,
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "PGAPPNAME", "value": "$(POD_NAME)"},
                    {"name": "DATABASE_HOST", "value": "orders-db.shop.svc"},
                ],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"memory": "256Mi"},
                },
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                    "periodSeconds": 10},
                "volumeMounts": [{"name": "kube-api-access", "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
            }],
            "volumes": [{"name": "kube-api-access",
                "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
            "nodeName": format!("node-{}", i % 40), "serviceAccountName": "orders",
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
        },
        "status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "hostIP": format!("192.168.10.{}", i % 40), "startTime": t, "qosClass": "Burstable",
            "conditions": conditions,
            "containerStatuses": [{
                "name": "app", "ready": true, "started": true, "restartCount": 0,
                "image": IMAGE,
                "imageID": format!("{IMAGE}@sha256:{:064x}", 0x4f53_cda1_8c2b_aa0c_u64),
                "containerID": format!("containerd://{:064x}", i),
                "state": {"running": {"startedAt": t}},
            }],
        },
    })
}

/// The Secret, Deployments and ReplicaSets, then `pods` pods, 32 requests at a time.
async fn seed(client: &kube::Client, pods: usize, url: &str) -> Res<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": NS},
                "stringData": {"uri": url},
            }))?,
        )
        .await?;
    let workloads = pods.div_ceil(PODS_PER_WORKLOAD);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    futures::stream::iter(0..workloads)
        .map(|w| {
            let (deployments, replicasets) = (deployments.clone(), replicasets.clone());
            async move {
                let selector = json!({"matchLabels": {"app": format!("orders-{w}")}});
                let d: Deployment = serde_json::from_value(json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": format!("orders-{w}"), "namespace": NS},
                    "spec": {"replicas": PODS_PER_WORKLOAD, "selector": selector,
                        "template": {"metadata": {"labels": {"app": format!("orders-{w}")}},
                            "spec": {"containers": [{"name": "app", "image": IMAGE}]}}},
                }))?;
                deployments.create(&PostParams::default(), &d).await?;
                let rs: ReplicaSet = serde_json::from_value(json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": format!("orders-{w}-7d9f6c"), "namespace": NS,
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                            "name": format!("orders-{w}"),
                            "uid": format!("00000000-0000-0000-0002-{w:012}"),
                            "controller": true}]},
                    "spec": {"replicas": PODS_PER_WORKLOAD, "selector": selector},
                }))?;
                replicasets.create(&PostParams::default(), &rs).await?;
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    futures::stream::iter(0..pods)
        .map(|i| {
            let pod_api = pod_api.clone();
            async move {
                let p: Pod = serde_json::from_value(pod(i))?;
                pod_api.create(&PostParams::default(), &p).await?;
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await
}

async fn create_policies(client: &kube::Client) -> Res<()> {
    let api: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    for (name, mode, idle) in POLICIES {
        let policy: PoolPolicy = serde_json::from_value(json!({
            "apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "database": {"connectionSecretRef": {"name": SECRET}},
                "mode": mode, "interval": INTERVAL,
                "idle": {"idleTimeout": idle, "idleInTransactionTimeout": "5m"},
                "budgets": {"maxConnectionsPerPod": 15},
                "leakDetection": {"window": "5s", "strandedIdleAge": "5s", "idleThreshold": 3},
            },
        }))?;
        api.create(&PostParams::default(), &policy).await?;
    }
    Ok(())
}

/// The controller binary; killed on drop.
pub struct Controller {
    pub child: Child,
    port: u16,
}

impl Controller {
    fn start(binary: &Path, kubeconfig: &Path, log: &Path, initial_list: &str) -> Res<Controller> {
        Controller::start_with(
            binary,
            kubeconfig,
            log,
            &["--initial-list", initial_list],
            "info",
        )
    }

    /// Starts `poolwarden controller` with more `args`, logging with the filter `rust_log`.
    pub fn start_with(
        binary: &Path,
        kubeconfig: &Path,
        log: &Path,
        args: &[&str],
        rust_log: &str,
    ) -> Res<Controller> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .args(["controller", "--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--lease-namespace", "default", "--identity", "bench"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", rust_log)
            .env_remove("POD_NAMESPACE")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        Ok(Controller { child, port })
    }

    pub async fn ready(&self) -> bool {
        self.get("/readyz").await.is_some_and(|response| {
            response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
        })
    }

    /// The value of the first line of `/metrics` that starts with `line_start`.
    pub async fn metric(&self, line_start: &str) -> Option<f64> {
        let response = self.get("/metrics").await?;
        response
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The whole response to a GET of `path`, status line included.
    async fn get(&self, path: &str) -> Option<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        Some(response)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one run measured.
struct Measured {
    pods: usize,
    initial_list: &'static str,
    seed_secs: f64,
    ready_secs: f64,
    window_secs: f64,
    rss: Vec<f64>,
    hwm: f64,
    cpu_percent: f64,
    requests: BTreeMap<&'static str, u64>,
}

/// Sorts one logged request: `standin: PATCH /apis/...`.
fn classify(line: &str) -> Option<&'static str> {
    let rest = line.strip_prefix("standin: ")?;
    let (method, path) = rest.split_once(' ')?;
    let write = matches!(method, "PATCH" | "POST" | "PUT" | "DELETE");
    Some(match method {
        _ if write && path.contains("/poolpolicies/") && path.contains("/status") => {
            "write: PoolPolicy status"
        }
        _ if write && path.contains("/poolpolicies/") => "write: PoolPolicy (finalizer)",
        _ if write && path.contains("/leases") => "write: Lease (leader election)",
        _ if write && path.contains("/events") => "write: Event",
        _ if write
            && ["/deployments/", "/replicasets/", "/pods/"]
                .iter()
                .any(|k| path.contains(k)) =>
        {
            "write: workload annotations"
        }
        _ if write => "write: other",
        "GET" if path.contains("watch=true") || path.contains("watch=1") => "read: watch request",
        "GET" if path.contains(&format!("/secrets/{SECRET}")) => "read: Secret GET",
        "GET" if path.contains("/leases/") => "read: Lease GET",
        "GET" => "read: other (lists, discovery)",
        _ => "other",
    })
}

async fn measure(
    binary: &Path,
    pods: usize,
    initial_list: &'static str,
    window: Duration,
) -> Res<Measured> {
    let sb = sandbox(100).await?;
    // Idle sessions named after pods (attribution by application_name), well under every limit;
    // the first pod holds a few more: a leak, confirmed once they are idle for the window (5 s).
    let mut sessions = Vec::new();
    for i in 0..pods.min(30) {
        sessions.push(open_local(&sb, &pod_name(i), State::Idle).await?);
    }
    if pods > 0 {
        for _ in 1..LEAKED {
            sessions.push(open_local(&sb, &pod_name(0), State::Idle).await?);
        }
    }
    let standin = KubeStandin::start();
    let client = standin.client().await;
    let dir = tempfile::tempdir()?;
    let seeding = Instant::now();
    seed(&client, pods, &monitor_url(sb.port())).await?;
    let seed_secs = seeding.elapsed().as_secs_f64();
    create_policies(&client).await?;
    eprintln!("  controller: {pods} pods in the stand-in ({seed_secs:.0} s)");

    let starting = Instant::now();
    let mut controller = Controller::start(
        binary,
        &standin.kubeconfig(dir.path()),
        &dir.path().join("controller.log"),
        initial_list,
    )?;
    while !controller.ready().await {
        if starting.elapsed() > Duration::from_secs(300) {
            return Err("the controller was not ready within 300 s".into());
        }
        if let Ok(Some(status)) = controller.child.try_wait() {
            let log =
                std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default();
            return Err(format!("the controller exited ({status}):\n{log}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_secs = starting.elapsed().as_secs_f64();

    // Every policy has written its first status: from here on nothing changes.
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    loop {
        let mut done = 0;
        for (name, _, _) in POLICIES {
            let p = policies.get(name).await?;
            if p.status.and_then(|s| s.last_check_time).is_some() {
                done += 1;
            }
        }
        if done == POLICIES.len() {
            break;
        }
        if starting.elapsed() > Duration::from_secs(300) {
            return Err("the policies got no status within 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The leak is confirmed and annotated on its Deployment (the stand-in copies that onto the
    // ReplicaSet, as the Deployment controller does): from here on nothing changes.
    if pods > 0 {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
        loop {
            let d = deployments.get("orders-0").await?;
            let annotations = d.metadata.annotations.unwrap_or_default();
            if annotations.contains_key("poolwarden.io/leak") {
                break;
            }
            if starting.elapsed() > Duration::from_secs(300) {
                return Err("the leak was not annotated within 300 s".into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    eprintln!(
        "  controller: ready after {ready_secs:.1} s; measuring {} s of steady state",
        window.as_secs()
    );

    // The window: no request of ours reaches the stand-in from here to its end.
    let log_start = standin.log_text().len();
    let pid = controller.pid();
    let cpu_start = process_cpu_seconds(pid)?;
    let start = Instant::now();
    let mut rss = Vec::new();
    while start.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(memory_mib(pid)?.0);
    }
    let window_secs = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds(pid)? - cpu_start;
    let hwm = memory_mib(pid)?.1;
    let log = standin.log_text();
    // The requests a steady state should not make are listed even when none was made.
    let mut requests: BTreeMap<&'static str, u64> = [
        "write: PoolPolicy status",
        "write: PoolPolicy (finalizer)",
        "write: Event",
        "write: workload annotations",
        "read: Secret GET",
    ]
    .into_iter()
    .map(|k| (k, 0))
    .collect();
    for line in log.get(log_start..).unwrap_or_default().lines() {
        if let Some(kind) = classify(line) {
            *requests.entry(kind).or_default() += 1;
        }
    }
    controller.stop();
    drop(sessions);
    drop(standin);
    sb.stop();
    Ok(Measured {
        pods,
        initial_list,
        seed_secs,
        ready_secs,
        window_secs,
        rss,
        hwm,
        cpu_percent: cpu / window_secs * 100.0,
        requests,
    })
}

pub async fn run(cfg: &Config) -> Res<Vec<Table>> {
    let pods = if cfg.tiny { 100 } else { 10_000 };
    let window = Duration::from_secs(cfg.controller_window);
    let short = Duration::from_secs(30).min(window);
    let binary = &cfg.controller_binary;
    let mut runs = Vec::new();
    if !cfg.tiny {
        // The same controller with no pods at all: what the pods cost.
        runs.push(measure(binary, 0, "auto", short).await?);
    }
    // The stand-in offers streaming lists, which `auto` takes; the paged run lists the way a
    // server without them is listed (pods by 100, the rest by 500).
    runs.push(measure(binary, pods, "paged", short).await?);
    runs.push(measure(binary, pods, "auto", window).await?);
    let main = runs.last().ok_or("no run")?;
    let per_policy = POLICIES.len() as f64;

    let mut requests = Table::new(
        &format!(
            "Controller steady state: API requests ({} policies, interval {INTERVAL}, {} pods)",
            POLICIES.len(),
            thousands(main.pods as u64)
        ),
        &[
            "request",
            &format!("in {:.0} s", main.window_secs),
            "per hour",
            "per policy per hour",
        ],
    );
    for (kind, n) in &main.requests {
        let per_hour = *n as f64 * 3600.0 / main.window_secs;
        let shared = kind.contains("Lease") || kind.contains("watch") || kind.contains("lists");
        requests.row(vec![
            (*kind).to_owned(),
            n.to_string(),
            format!("{per_hour:.0}"),
            if shared {
                "(per controller)".into()
            } else {
                format!("{:.0}", per_hour / per_policy)
            },
        ]);
    }
    requests.note(format!(
        "Counted from the stand-in's request log over the window, after every policy had \
         written its first status, the leak was annotated, and 5 s more; nothing in the cluster \
         or the database changed. Policies: {} on one database and one Secret, interval \
         {INTERVAL}. A confirmed leak ({LEAKED} idle sessions of `{}`, Deployment `orders-0`) is \
         annotated on its Deployment before the window (the stand-in copies the annotations onto \
         the ReplicaSet, as the Deployment controller does) and not written again. The Secret is \
         read when its resourceVersion changes (Secrets' metadata is watched), not per cycle. \
         The status is written when it changes, and otherwise every 5 minutes (the heartbeat, \
         `lastCheckTime`): 12 writes per policy per hour when nothing changes; a window shorter \
         than 5 minutes sees none. Lease writes are leader election (one per controller, not per \
         policy).",
        POLICIES
            .iter()
            .map(|(n, m, _)| format!("`{n}` ({m})"))
            .collect::<Vec<_>>()
            .join(" and "),
        pod_name(0)
    ));

    let mut memory = Table::new(
        "Controller resident memory and CPU",
        &[
            "pods in the API",
            "first list",
            "seeding s",
            "ready after s",
            "VmRSS MiB (1 s samples)",
            "VmHWM MiB (peak)",
            "CPU % of one core",
        ],
    );
    for m in &runs {
        let first_list = match (m.pods, m.initial_list) {
            (0, _) => "–",
            (_, "paged") => "paged",
            _ => "streamed",
        };
        memory.row(vec![
            thousands(m.pods as u64),
            first_list.to_owned(),
            format!("{:.0}", m.seed_secs),
            format!("{:.1}", m.ready_secs),
            Stats::of(&m.rss).show(1),
            format!("{:.1}", m.hwm),
            format!("{:.1}", m.cpu_percent),
        ]);
    }
    let pod_bytes = serde_json::to_vec(&pod(1234))?.len();
    memory.note(format!(
        "The real binary (`poolwarden controller`, leader election on), against the Kubernetes \
         API stand-in: {} Deployments, as many ReplicaSets, pods of ~{:.1} KiB of JSON each \
         (spec and kubelet status, no managedFields), all in the policies' namespace; {} idle \
         sessions named after pods ({} more on the leaking one). Memory from `/proc/PID/status` \
         each second of the window ({:.0} s; {:.0} s for the other rows); CPU from \
         `/proc/PID/stat` over the window; \"ready\" is `/readyz` (every watch has listed once). \
         \"streamed\": the first lists as watch events (`sendInitialEvents`, which the stand-in \
         offers); \"paged\": `--initial-list paged`, in pages of `limit`/`continue` (pods by 100, \
         metadata by 500) as from a server without streaming lists. Pods are decoded trimmed \
         (`controller::cluster::trimmed`) and indexed one by one as they arrive.",
        thousands(main.pods.div_ceil(PODS_PER_WORKLOAD) as u64),
        pod_bytes as f64 / 1024.0,
        main.pods.min(30),
        LEAKED - 1,
        main.window_secs,
        short.as_secs_f64(),
    ));
    Ok(vec![requests, memory])
}
