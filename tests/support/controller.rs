//! What the end-to-end tests share: the real `poolwarden controller` binary run against the
//! Kubernetes stand-in, a PostgreSQL with the roles the tests use, and the cluster they attribute
//! to (a Deployment → ReplicaSet → two pods in `shop`) with its PoolPolicy.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use poolwarden::api::PoolPolicy;
use poolwarden_sandbox::{ClientSession, Sandbox, SessionSpec};
use serde_json::json;

pub const NS: &str = "shop";

/// The controller binary, its log in a file; killed on drop.
pub struct Controller {
    pub child: Child,
    pub port: u16,
    log: std::path::PathBuf,
}

impl Controller {
    pub fn start(kubeconfig: &Path, dir: &Path, identity: &str) -> Self {
        Self::start_with_env(kubeconfig, dir, identity, &[])
    }

    pub fn start_with_env(
        kubeconfig: &Path,
        dir: &Path,
        identity: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with_lease(kubeconfig, dir, identity, 4, env)
    }

    /// A replica whose lease lasts `lease_secs` (renew deadline ⅔ of it, retry period 2⁄15).
    pub fn start_with_lease(
        kubeconfig: &Path,
        dir: &Path,
        identity: &str,
        lease_secs: u64,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with_args(kubeconfig, dir, identity, lease_secs, env, &[])
    }

    /// [`Controller::start_with_lease`], with more command-line arguments.
    pub fn start_with_args(
        kubeconfig: &Path,
        dir: &Path,
        identity: &str,
        lease_secs: u64,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(format!("controller-{identity}.log"));
        let child = Command::new(binary())
            .args(["controller", "--http-addr", &format!("127.0.0.1:{port}")])
            .args([
                "--lease-namespace",
                "default",
                "--lease-duration",
                &lease_secs.to_string(),
                "--identity",
                identity,
            ])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,poolwarden=debug")
            .envs(env.iter().copied())
            .env_remove("POD_NAMESPACE")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the binary starts");
        Self { child, port, log }
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    pub fn metric(&self, line_start: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The operating system's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to release the lease. Waits for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (within 20 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.terminate_within(Duration::from_secs(20)).0
    }

    /// SIGTERM, then the exit status and how long after the signal it came; fails the test if
    /// it has not come within `limit`.
    pub fn terminate_within(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let signalled = Instant::now();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, signalled.elapsed());
            }
            assert!(
                signalled.elapsed() < limit,
                "no exit {limit:?} after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- controller log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// `GET path` on 127.0.0.1:port over HTTP/1.0: the status and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A Secret `name` in `shop` whose key `uri` holds `url`.
pub async fn create_secret(client: &kube::Client, name: &str, url: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "stringData": {"uri": url},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// The binary under test: this build's, or `POOLWARDEN_BIN` (to run a test against another
/// build, e.g. to check that it fails on the code before a fix).
fn binary() -> std::ffi::OsString {
    std::env::var_os("POOLWARDEN_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_poolwarden").into())
}

/// Polls `check` until it yields, or fails after `secs` seconds saying `what`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn database() -> Sandbox {
    database_with(Default::default()).await
}

/// [`database`], with these options (`max_connections`, settings).
pub async fn database_with(options: poolwarden_sandbox::SandboxOptions) -> Sandbox {
    let sb = Sandbox::start(options).await.unwrap();
    sb.create_database("orders").await.unwrap();
    sb.create_role("app", "app", &[]).await.unwrap();
    sb.create_role("monitor", "monitor", &["pg_monitor", "pg_signal_backend"])
        .await
        .unwrap();
    sb
}

pub async fn session(sb: &Sandbox, host: u8) -> ClientSession {
    let spec = SessionSpec::new("app", "app", "orders")
        .application("orders-api")
        .from_addr(Ipv4Addr::new(127, 0, 0, host));
    sb.open_session(&spec).await.unwrap()
}

/// Secret, Deployment → ReplicaSet → two pods (127.0.0.41, .42) in `shop`; the Deployment's uid.
pub async fn cluster(client: &kube::Client, sb: &Sandbox) -> String {
    let url = sb.url("monitor", "monitor", "orders") + "?sslmode=disable";
    cluster_on(client, &url).await
}

/// [`cluster`], its Secret holding `url`.
pub async fn cluster_on(client: &kube::Client, url: &str) -> String {
    create_secret(client, "orders-db-monitor", url).await;
    create_workload(
        client,
        "orders-api",
        &[
            ("orders-api-5c6d-a", "127.0.0.41"),
            ("orders-api-5c6d-b", "127.0.0.42"),
        ],
    )
    .await
}

/// Deployment `name` → ReplicaSet `name-5c6d` → running `pods` (name, IP) in `shop`; the
/// Deployment's uid.
pub async fn create_workload(client: &kube::Client, name: &str, pods: &[(&str, &str)]) -> String {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let d = deployments
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
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let rs = replicasets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": format!("{name}-5c6d"), "namespace": NS,
                             "ownerReferences": owner("Deployment", name, d.metadata.uid.as_deref().unwrap())},
                "spec": {"selector": {"matchLabels": {"app": name}}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    for (pod, ip) in pods {
        create_pod(client, &rs, pod, ip).await;
    }
    d.metadata.uid.unwrap()
}

/// A running, Ready pod of `rs`.
pub async fn create_pod(client: &kube::Client, rs: &ReplicaSet, name: &str, ip: &str) {
    let owner = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs.metadata.name,
                        "uid": rs.metadata.uid, "controller": true}]);
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NS, "labels": rs.spec.as_ref().and_then(|s| s.selector.match_labels.clone()),
                             "ownerReferences": owner},
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

pub async fn create_policy(client: &kube::Client) {
    create_policy_with(
        client,
        json!({
            "mode": "Enforce",
            "interval": "1s",
            // Idle sessions are left alone (the leak stays visible); open transactions are ended.
            "idle": {"idleInTransactionTimeout": "1s"},
            "leakDetection": {"window": "1s", "strandedIdleAge": "1s", "idleThreshold": 3},
        }),
    )
    .await;
}

/// PoolPolicy `shop/orders-db` on Secret `orders-db-monitor`, with the rest of `spec`.
pub async fn create_policy_with(client: &kube::Client, mut spec: serde_json::Value) {
    spec["database"] = json!({"connectionSecretRef": {"name": "orders-db-monitor"}});
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    let policy: PoolPolicy = serde_json::from_value(json!({
        "apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
        "metadata": {"name": "orders-db", "namespace": NS},
        "spec": spec,
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
}
