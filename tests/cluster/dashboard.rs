//! The Grafana dashboard (deploy/poolwarden-dashboard.json) against what poolwarden really
//! exports: the real `poolwarden controller` works on a real PostgreSQL through the Kubernetes API
//! stand-in, a real Prometheus (Debian's `prometheus`, installed by scripts/setup) scrapes its
//! /metrics, and every panel's query, and every variable's, must parse and return series.
//!
//! The scene gives every panel something to show: a pod whose idle sessions are terminated
//! (terminations), whose open transactions stay (findings, long transactions), and a second
//! policy whose database is unreachable (reconcile errors). The controller's audit records of the
//! ended sessions are checked on the way, and so are the alert rules: every metric they name is
//! one the binary exports, and Prometheus accepts every expression.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::controller::http_get as get;
use crate::support::kube::KubeStandin;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use poolwarden::api::PoolPolicy;
use poolwarden_sandbox::{Sandbox, SessionSpec};
use serde_json::{Value, json};

const NS: &str = "shop";
/// What Grafana substitutes for `$__rate_interval` at a 1 s scrape interval, give or take.
const RATE_INTERVAL: &str = "15s";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process of the test's, killed on drop; its log is printed if the test fails.
struct Process {
    name: &'static str,
    child: Child,
    log: std::path::PathBuf,
}

impl Process {
    fn start(name: &'static str, command: &mut Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start ({e}): run scripts/setup"));
        Self { name, child, log }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} log (last lines) ---", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A query as Grafana sends it with every variable at "All".
fn as_grafana_sends_it(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$namespace", ".*")
        .replace("$policy", ".*")
        .replace("$workload", ".*")
}

/// What Prometheus answers to an instant query: `Err` if it does not parse (or fails), else the
/// number of series.
fn series(prometheus: u16, expr: &str) -> Result<usize, String> {
    let (status, body) = get(
        prometheus,
        &format!("/api/v1/query?query={}", url_encode(expr)),
    )
    .ok_or("no answer")?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if status != 200 || v["status"] != "success" {
        return Err(format!("HTTP {status}: {body}"));
    }
    Ok(v["data"]["result"].as_array().map_or(0, Vec::len))
}

/// The values `label_values(selector, label)` (a Grafana variable query) offers.
fn label_values(prometheus: u16, query: &str) -> Result<Vec<String>, String> {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .ok_or_else(|| format!("not a label_values query: {query}"))?;
    let (selector, label) = inner
        .rsplit_once(',')
        .ok_or_else(|| format!("no label in {query}"))?;
    let selector = as_grafana_sends_it(selector.trim());
    let (status, body) = get(
        prometheus,
        &format!(
            "/api/v1/label/{}/values?match[]={}",
            label.trim(),
            url_encode(&selector)
        ),
    )
    .ok_or("no answer")?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if status != 200 || v["status"] != "success" {
        return Err(format!("HTTP {status}: {body}"));
    }
    Ok(v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect())
}

async fn create<K>(api: &Api<K>, value: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(value).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_parses_and_returns_series_from_a_real_prometheus() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/poolwarden-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();

    let sb = Sandbox::start(Default::default()).await.unwrap();
    sb.create_database("orders").await.unwrap();
    sb.create_role("app", "app", &[]).await.unwrap();
    sb.create_role("monitor", "monitor", &["pg_monitor", "pg_signal_backend"])
        .await
        .unwrap();
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();

    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let url = sb.url("monitor", "monitor", "orders") + "?sslmode=disable";
    let closed = format!(
        "postgres://monitor:monitor@127.0.0.1:{}/orders?sslmode=disable",
        free_port()
    );
    for (name, uri) in [("orders-db-monitor", url), ("gone-db-monitor", closed)] {
        create(
            &secrets,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": name, "namespace": NS}, "stringData": {"uri": uri}}),
        )
        .await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    create(
        &pods,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "orders-api", "namespace": NS, "labels": {"app": "orders-api"}},
               "spec": {"containers": [{"name": "app", "image": "orders:1"}]},
               "status": {"phase": "Running", "podIP": "127.0.0.51", "podIPs": [{"ip": "127.0.0.51"}],
                          "startTime": "2020-01-01T00:00:00Z"}}),
    )
    .await;
    let session = || {
        SessionSpec::new("app", "app", "orders")
            .application("orders-api")
            .from_addr(Ipv4Addr::new(127, 0, 0, 51))
    };
    // Idle sessions, ended (IdleTimeout); open transactions, kept and reported.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(sb.open_session(&session()).await.unwrap());
    }
    let mut in_transaction = Vec::new();
    for _ in 0..2 {
        let s = sb.open_session(&session()).await.unwrap();
        s.begin_idle_in_transaction().await.unwrap();
        in_transaction.push(s);
    }
    let policies: Api<PoolPolicy> = Api::namespaced(client.clone(), NS);
    for (name, secret) in [
        ("orders-db", "orders-db-monitor"),
        ("gone-db", "gone-db-monitor"),
    ] {
        create(
            &policies,
            json!({"apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
                   "metadata": {"name": name, "namespace": NS},
                   "spec": {"database": {"connectionSecretRef": {"name": secret}},
                            "mode": "Enforce", "interval": "1s",
                            "idle": {"idleTimeout": "2s"},
                            "leakDetection": {"window": "1s", "idleInTransactionAge": "1s",
                                              "transactionAge": "1s"}}}),
        )
        .await;
    }

    let metrics_port = free_port();
    let controller = Process::start(
        "controller",
        Command::new(env!("CARGO_BIN_EXE_poolwarden"))
            .args([
                "--log-format",
                "json",
                "controller",
                "--leader-election=false",
            ])
            .arg(format!("--http-addr=127.0.0.1:{metrics_port}"))
            .env("KUBECONFIG", kube.kubeconfig(dir.path()))
            .env_remove("POD_NAMESPACE"),
        dir.path(),
    );
    let prometheus_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             \x20 - job_name: poolwarden\n\
             \x20   static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
        ),
    )
    .unwrap();
    let _prometheus = Process::start(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}")),
        dir.path(),
    );

    let mut queries: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries.push((
                panel["title"].as_str().unwrap().to_owned(),
                as_grafana_sends_it(expr),
            ));
        }
    }
    assert!(queries.len() >= 10, "the dashboard has its panels");

    // Wait until every query returns series (each has to have something to count: a confirmed
    // finding, a termination, a failed reconcile, a rate over two scrapes).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut waiting = Vec::new();
        for (title, expr) in &queries {
            match series(prometheus_port, expr) {
                Ok(n) if n > 0 => {}
                Ok(_) => waiting.push(format!("{title}: no series for {expr}")),
                Err(e) if e == "no answer" => waiting.push(format!("Prometheus not up yet ({e})")),
                Err(e) => panic!("panel {title:?}: Prometheus refuses {expr}: {e}"),
            }
        }
        if waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s, panel queries still without series:\n  {}",
            waiting.join("\n  ")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The variables: each offers values; the namespace regex finds the policy's namespace.
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"].as_str().unwrap();
        let values = label_values(prometheus_port, query)
            .unwrap_or_else(|e| panic!("variable {}: {e}", var["name"]));
        assert!(
            !values.is_empty(),
            "variable {} offers nothing for {query}",
            var["name"]
        );
        match var["name"].as_str().unwrap() {
            "namespace" => {
                assert_eq!(var["regex"], "/^([^/]+)\\//");
                assert!(values.iter().all(|v| v.starts_with("shop/")), "{values:?}");
            }
            "policy" => assert!(values.contains(&"shop/orders-db".to_owned()), "{values:?}"),
            "workload" => assert!(values.contains(&"Pod/orders-api".to_owned()), "{values:?}"),
            other => panic!("a variable the test does not know: {other}"),
        }
    }
    // The alert rules ask only for metrics the binary exports, in expressions Prometheus accepts.
    let rules: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/poolwarden-rules.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut alerts = 0;
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        let expr = rule["expr"].as_str().unwrap();
        let alert = rule["alert"].as_str().unwrap();
        series(prometheus_port, expr)
            .unwrap_or_else(|e| panic!("alert {alert}: Prometheus refuses {expr}: {e}"));
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("poolwarden_"))
        {
            let n = series(prometheus_port, &format!("count({{__name__=\"{name}\"}})")).unwrap();
            assert!(
                n > 0,
                "alert {alert} asks for {name}, which poolwarden does not export"
            );
        }
        alerts += 1;
    }
    assert!(alerts >= 11, "the rules file has its alerts");

    // The controller logged one audit record per ended session, as JSON.
    let audit_records = || {
        let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["target"] == "poolwarden::audit" && l["fields"]["action"] == "terminated")
            .collect::<Vec<Value>>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while audit_records().len() < idle.len() {
        assert!(
            Instant::now() < deadline,
            "audit records: {:?}",
            audit_records()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut audited: Vec<i64> = audit_records()
        .iter()
        .map(|l| {
            assert_eq!(l["fields"]["policy"], "shop/orders-db", "{l}");
            assert_eq!(l["fields"]["workload"], "Pod/orders-api", "{l}");
            assert_eq!(l["fields"]["pod"], "orders-api", "{l}");
            assert_eq!(l["fields"]["reason"], "IdleTimeout", "{l}");
            l["fields"]["pid"].as_i64().unwrap()
        })
        .collect();
    audited.sort();
    let mut ended: Vec<i64> = idle.iter().map(|s| s.pid()).collect();
    ended.sort();
    assert_eq!(audited, ended, "one audit record per ended session");
    for s in &in_transaction {
        assert!(
            s.is_alive().await,
            "open transactions are reported, not ended"
        );
    }

    println!(
        "{} panel queries and their variables return series",
        queries.len()
    );
}
