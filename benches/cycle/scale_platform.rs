//! The platform of the scale section: four database servers and the cluster in front of them.
//!
//! Servers A and B are real PostgreSQL servers poolwarden reaches directly; C is a real server
//! behind a proxy that delays everything it answers ([`SLOW_DELAY`]); D accepts connections and
//! never answers (a host whose PostgreSQL hangs, or a network that drops what it sends):
//! poolwarden's login there runs out its timeout. A, B and C hold the same databases, each with
//! its sessions: named after the two pods of its workload (attribution by `application_name`),
//! a report job's that no pod owns, and, in every fifth database, a pod that leaves two of its
//! sessions idle in a transaction (a leak, confirmed and annotated). D holds nothing.
//!
//! Policy `k` governs database `app_{k / 4}` on server `k % 4`, in namespace `team-{k / 10}`,
//! with its own Secret, Deployment, ReplicaSet and two pods. The servers are built once with the
//! databases of the largest row, so that every row looks at the same servers; each row seeds a
//! fresh stand-in with its policies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use poolwarden_sandbox::Sandbox;
use serde_json::{Value, json};

use crate::common::*;

/// The servers, in policy order: policy `k` is on `SERVERS[k % 4]`.
pub const SERVERS: [&str; 4] = ["A", "B", "C (slow)", "D (dead)"];
/// How late server C's proxy delivers everything the server sends.
pub const SLOW_DELAY: Duration = Duration::from_millis(500);
/// Sessions per database: the two pods' (four each) and the report job's.
pub const PER_POD: usize = 4;
const PODS: usize = 2;

pub fn server_of(policy: usize) -> usize {
    policy % SERVERS.len()
}

pub fn database_of(policy: usize) -> String {
    format!("app_{:03}", policy / SERVERS.len())
}

pub fn namespace_of(policy: usize) -> String {
    format!("team-{:03}", policy / 10)
}

pub fn policy_name(policy: usize) -> String {
    format!("db-{policy}")
}

fn pod_name(policy: usize, pod: usize) -> String {
    format!("app-{policy}-7d9f6c-{pod}")
}

/// Whether policy `k`'s database holds a leak.
pub fn leaks(policy: usize) -> bool {
    policy % 5 == 0
}

/// One server as poolwarden sees it.
pub struct Served {
    /// The real server (none for D).
    pub sandbox: Option<Sandbox>,
    /// The port poolwarden connects to (the server's, the proxy's, or the silent listener's).
    pub port: u16,
    /// D's connections open now, and the most at once.
    pub silent: Option<Arc<Silent>>,
    /// A superuser session kept open for the probes: one that came and went each second would
    /// change what poolwarden sees (and writes) every cycle.
    pub admin: Option<tokio_postgres::Client>,
    _sessions: Vec<Local>,
}

/// A listener that accepts connections and never answers.
#[derive(Default)]
pub struct Silent {
    open: AtomicUsize,
    pub most: AtomicUsize,
}

impl Silent {
    async fn start() -> Res<(u16, Arc<Silent>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let silent = Arc::new(Silent::default());
        let counted = silent.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = counted.clone();
                let now = counted.open.fetch_add(1, Ordering::SeqCst) + 1;
                counted.most.fetch_max(now, Ordering::SeqCst);
                tokio::spawn(async move {
                    // Read and drop whatever comes, until the client gives up.
                    let mut buf = [0u8; 1024];
                    while let Ok(1..) = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await {
                    }
                    counted.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok((port, silent))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Starts the servers, each real one with `databases` databases of `sessions_per_db`
/// sessions (`PODS × PER_POD` from pods, the rest the report job's).
pub async fn servers(databases: usize, sessions_per_db: usize) -> Res<Vec<Served>> {
    let max_connections = (databases * sessions_per_db + 40) as u32;
    let (a, b, c) = tokio::try_join!(
        real(databases, sessions_per_db, max_connections, 0),
        real(databases, sessions_per_db, max_connections, 1),
        real(databases, sessions_per_db, max_connections, 2),
    )?;
    let (c_sandbox, c_sessions) = c;
    let (proxy_port, wire) = wire_proxy(c_sandbox.port()).await?;
    wire.set_delay(SLOW_DELAY);
    // The proxy's counters live as long as its task, which holds them.
    drop(wire);
    let (dead_port, silent) = Silent::start().await?;
    let (a_admin, b_admin, c_admin) =
        tokio::try_join!(a.0.admin(), b.0.admin(), c_sandbox.admin())?;
    let direct = |(sandbox, sessions): (Sandbox, Vec<Local>), admin| Served {
        port: sandbox.port(),
        sandbox: Some(sandbox),
        silent: None,
        admin: Some(admin),
        _sessions: sessions,
    };
    Ok(vec![
        direct(a, a_admin),
        direct(b, b_admin),
        Served {
            port: proxy_port,
            sandbox: Some(c_sandbox),
            silent: None,
            admin: Some(c_admin),
            _sessions: c_sessions,
        },
        Served {
            sandbox: None,
            port: dead_port,
            silent: Some(silent),
            admin: None,
            _sessions: Vec::new(),
        },
    ])
}

async fn real(
    databases: usize,
    sessions_per_db: usize,
    max_connections: u32,
    server: usize,
) -> Res<(Sandbox, Vec<Local>)> {
    let sb = sandbox(max_connections).await?;
    let admin = Arc::new(sb.admin().await?);
    // From the template, a few at a time: CREATE DATABASE copies it, and waits for a checkpoint.
    futures::stream::iter(0..databases)
        .map(|d| {
            let admin = admin.clone();
            async move {
                let name = database_of(d * SERVERS.len());
                admin
                    .batch_execute(&format!("CREATE DATABASE {name} STRATEGY FILE_COPY"))
                    .await
            }
        })
        .buffer_unordered(4)
        .try_collect::<()>()
        .await?;
    let sessions = futures::stream::iter(0..databases)
        .flat_map(|d| {
            let policy = d * SERVERS.len() + server;
            futures::stream::iter((0..sessions_per_db).map(move |j| (policy, j)))
        })
        .map(|(policy, j)| {
            let sb = &sb;
            async move {
                let (application, state) = if j < PODS * PER_POD {
                    let pod = j % PODS;
                    // The leaking pod leaves two of its sessions idle in a transaction.
                    let leaked = leaks(policy) && pod == 0 && j < 2 * PODS;
                    let state = if leaked {
                        State::IdleInTransaction
                    } else {
                        State::Idle
                    };
                    (pod_name(policy, pod), state)
                } else {
                    ("report-job".to_owned(), State::Idle)
                };
                open_local_in(sb, &database_of(policy), &application, state).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    drop(admin);
    Ok((sb, sessions))
}

/// Everything a policy needs in the cluster: its Secret, workload and pods, then the policy.
pub async fn seed(
    client: &kube::Client,
    policies: usize,
    servers: &[Served],
    interval: &str,
) -> Res<()> {
    futures::stream::iter(0..policies)
        .map(|k| async move {
            let url = monitor_url(servers[server_of(k)].port)
                .replace("/app?", &format!("/{}?", database_of(k)));
            for object in objects(k, &url, interval) {
                create(client, object).await?;
            }
            Ok::<(), Error>(())
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
}

async fn create(client: &kube::Client, object: Value) -> Res<()> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let plural = match kind {
        "Secret" => "secrets",
        "Deployment" => "deployments",
        "ReplicaSet" => "replicasets",
        "Pod" => "pods",
        _ => "poolpolicies",
    };
    let base = if api_version == "v1" {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{api_version}")
    };
    let request = http::Request::post(format!("{base}/namespaces/{namespace}/{plural}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&object)?)?;
    client.request::<Value>(request).await?;
    Ok(())
}

/// Policy `k`'s objects, in the order they are created.
fn objects(k: usize, url: &str, interval: &str) -> Vec<Value> {
    let ns = namespace_of(k);
    let app = format!("app-{k}");
    let labels = json!({"app": app, "pod-template-hash": "7d9f6c"});
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": policy_name(k), "namespace": ns},
               "stringData": {"uri": url}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": app, "namespace": ns},
               "spec": {"replicas": PODS, "selector": {"matchLabels": {"app": app}},
                        "template": {"metadata": {"labels": {"app": app}},
                                     "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}}),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
               "metadata": {"name": format!("{app}-7d9f6c"), "namespace": ns,
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                "name": app, "uid": format!("00000000-0000-0000-0002-{k:012}"),
                                "controller": true}]},
               "spec": {"replicas": PODS, "selector": {"matchLabels": labels}}}),
    ];
    for pod in 0..PODS {
        let ip = format!("10.{}.{}.{}", 1 + pod, (k / 256) % 256, k % 256);
        let t = "2025-05-01T08:00:00Z";
        objects.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name(k, pod), "namespace": ns, "labels": labels,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "name": format!("{app}-7d9f6c"),
                             "uid": format!("00000000-0000-0000-0001-{k:012}"),
                             "controller": true}]},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": t,
                       "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}]},
        }));
    }
    objects.push(json!({
        "apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
        "metadata": {"name": policy_name(k), "namespace": ns},
        "spec": {
            "database": {"connectionSecretRef": {"name": policy_name(k)}},
            "mode": "DryRun", "interval": interval,
            "scope": {"databases": [database_of(k)]},
            "workloads": {"podSelector": {"matchLabels": {"app": app}}},
            "leakDetection": {"window": "10s", "idleInTransactionAge": "5s"},
        },
    }));
    objects
}
