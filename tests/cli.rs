//! The real `poolwarden` binary, run as a user would: `check`, `run`, `demo`, and its errors.

mod support;

use std::process::{Command, Output};

use poolwarden_sandbox::Sandbox;
use serde_json::Value;
use support::*;

const POLICY: &str = "\
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata: {name: orders-db}
spec:
  mode: Enforce
  idle: {idleTimeout: 400ms, idleInTransactionTimeout: 400ms}
  budgets: {maxConnectionsPerPod: 8}
  leakDetection: {window: 300ms, strandedIdleAge: 300ms, idleInTransactionAge: 300ms, idleThreshold: 5}
";

/// Runs this build's binary, or `POOLWARDEN_BIN` (to check that a test fails on another build).
fn poolwarden(args: &[&str]) -> Output {
    let binary = std::env::var_os("POOLWARDEN_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_poolwarden").into());
    Command::new(binary)
        .args(args)
        .env_remove("POOLWARDEN_DATABASE_URL")
        .output()
        .expect("the binary runs")
}

fn policy_file(dir: &Sandbox, text: &str) -> String {
    let path = dir.dir().join(format!("policy-{}.yaml", text.len()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn check_json_names_the_seed_findings_and_their_sessions_and_terminates_nothing() {
    let sb = sandbox().await;
    // Seed 000: a forked worker's inherited pool, idle.
    let mut inherited = Vec::new();
    for _ in 0..6 {
        inherited.push(open(&sb, "fits-worker", 21).await);
    }
    // Seed 001: a pool pinned at its cap, idle in transaction.
    let mut pinned = Vec::new();
    for _ in 0..8 {
        let s = open(&sb, "reports-api", 22).await;
        s.begin_idle_in_transaction().await.unwrap();
        pinned.push(s);
    }
    // Healthy: a running query.
    let busy = open(&sb, "storefront", 24).await;
    busy.start_active(10.0);
    sb.wait_for_state(busy.pid(), "active", std::time::Duration::from_secs(5))
        .await
        .unwrap();
    pause(1200).await;

    let policy = policy_file(&sb, POLICY);
    let out = poolwarden(&[
        "check",
        "--database-url",
        &monitor_url(&sb),
        "--policy",
        &policy,
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");

    let finding = |kind: &str, source: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == kind && f["subject"]["source"]["application"] == source)
            .unwrap_or_else(|| panic!("no {kind} for {source} in {:#}", report["findings"]))
            .clone()
    };
    let pids = |v: &Value| -> Vec<i64> {
        let mut p: Vec<i64> = v["pids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        p.sort();
        p
    };
    let sorted = |sessions: &[poolwarden_sandbox::ClientSession]| -> Vec<i64> {
        let mut p: Vec<i64> = sessions.iter().map(|s| s.pid()).collect();
        p.sort();
        p
    };
    assert_eq!(
        pids(&finding("IdleAccumulation", "fits-worker")),
        sorted(&inherited)
    );
    assert_eq!(
        pids(&finding("IdleInTransaction", "reports-api")),
        sorted(&pinned)
    );
    assert_eq!(
        pids(&finding("PoolSaturation", "reports-api")),
        sorted(&pinned)
    );
    assert!(
        finding("PoolSaturation", "reports-api")["confirmed"]
            .as_bool()
            .unwrap()
    );

    // check never terminates, even for an Enforce policy; it says what run would do.
    assert_eq!(report["mode"], "DryRun");
    assert!(report["terminate"].as_array().unwrap().is_empty());
    assert_eq!(report["dryRun"].as_array().unwrap().len(), 14);
    assert!(
        report["dryRun"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["identity"]["pid"] != busy.pid())
    );
    for s in inherited.iter().chain(&pinned) {
        assert!(s.is_alive().await);
    }
}

#[tokio::test]
async fn run_enforces_for_the_given_cycles_and_says_what_it_did() {
    let sb = sandbox().await;
    let leaked = open(&sb, "fits-worker", 21).await;
    pause(600).await;
    let policy = policy_file(&sb, POLICY);
    let out = poolwarden(&[
        "run",
        "--database-url",
        &monitor_url(&sb),
        "--policy",
        &policy,
        "--interval",
        "1s",
        "--cycles",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("terminated 1 session from fits-worker@127.0.0.21 (IdleTimeout, up to"),
        "{text}"
    );
    assert!(text.contains(&format!("pid {}", leaked.pid())), "{text}");
    assert!(
        text.contains("done: 2 cycles, 1 session terminated, 0 failed cycles"),
        "{text}"
    );
    assert!(gone(&sb, leaked.pid()).await);
}

/// Enforce with a timeout shorter than detection (1 s against the default 2 minutes, a window of
/// 10): what `run` ends for sitting idle in a transaction is a confirmed IdleInTransaction in
/// that cycle, in its lines and its JSON; what it ends for plain idleness is no finding.
#[tokio::test]
async fn run_names_the_leak_it_ends_in_the_cycle_that_ends_it() {
    let sb = sandbox().await;
    let policy = policy_file(
        &sb,
        "mode: Enforce\nidle: {idleTimeout: 2s, idleInTransactionTimeout: 1s}\n",
    );
    let run = |output: &'static str| {
        let (url, policy) = (monitor_url(&sb), policy.clone());
        async move {
            poolwarden(&[
                "run",
                "--database-url",
                &url,
                "--policy",
                &policy,
                "--output",
                output,
                "--cycles",
                "1",
            ])
        }
    };

    let mut in_tx = Vec::new();
    for _ in 0..3 {
        let s = open(&sb, "reports-api", 22).await;
        s.begin_idle_in_transaction().await.unwrap();
        in_tx.push(s);
    }
    let idle = open(&sb, "fits-worker", 23).await;
    pause(2500).await;
    let out = run("json").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f["kind"], "IdleInTransaction");
    assert_eq!(f["subject"]["source"]["address"], "127.0.0.22");
    assert_eq!(
        (f["confirmed"].clone(), f["ended"].clone()),
        (true.into(), 3.into())
    );
    assert_eq!(report["outcome"]["terminated"].as_array().unwrap().len(), 4);
    // Every session of 127.0.0.22 sat idle in a transaction: a pinned pool, to restart.
    assert_eq!(
        report["recovery"]["pinned"],
        serde_json::json!([{"source": {"type": "client", "application": "reports-api",
                                       "address": "127.0.0.22"},
                            "pod": "127.0.0.22", "sessions": 3}])
    );
    // What the ended sessions last ran: on the finding, and on each one ended for it.
    assert_eq!(
        f["lastStatements"],
        serde_json::json!([{"fingerprint": "BEGIN; SELECT ?", "sessions": 3}])
    );
    for t in report["outcome"]["terminated"].as_array().unwrap() {
        if t["reason"] == "IdleInTransactionTimeout" {
            assert_eq!(
                t["lastStatement"]["fingerprint"], "BEGIN; SELECT ?",
                "{t:#}"
            );
        }
    }
    for s in in_tx.iter().chain([&idle]) {
        assert!(gone(&sb, s.pid()).await);
    }

    let mut again = Vec::new();
    for _ in 0..2 {
        let s = open(&sb, "reports-api", 22).await;
        s.begin_idle_in_transaction().await.unwrap();
        again.push(s);
    }
    pause(1500).await;
    let out = run("table").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let confirmed = text
        .lines()
        .find(|l| l.starts_with("  leak confirmed: IdleInTransaction"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        confirmed.starts_with(
            "  leak confirmed: IdleInTransaction on reports-api@127.0.0.22: 2 sessions ended, \
             idle in a transaction for more than 1s (idleInTransactionTimeout)"
        ),
        "{text}"
    );
    assert!(
        confirmed.ends_with("; last statement `BEGIN; SELECT ?` (2)"),
        "{text}"
    );
    // What to restart: poolwarden never restarts anything outside a cluster.
    assert!(
        text.contains(
            "restart (or fix) reports-api@127.0.0.22 (127.0.0.22): its pool was pinned and its 2 \
             sessions were ended; the application still counts them as checked out"
        ),
        "{text}"
    );
}

/// `poolwarden run` in the background, its stdout read line by line as it comes.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stdout: Vec<String>,
}

impl Running {
    /// This build's binary, or `POOLWARDEN_BIN` (to check that a test fails on another build).
    fn start(args: &[&str]) -> Running {
        let binary = std::env::var_os("POOLWARDEN_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_poolwarden").into());
        let mut child = Command::new(binary)
            .args(args)
            .env_remove("POOLWARDEN_DATABASE_URL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            stdout: Vec::new(),
        }
    }

    /// Waits (30 s at most) for a line of stdout that `matches`.
    fn wait_for_line(&mut self, matches: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = self
                .lines
                .recv_timeout(std::time::Duration::from_millis(100))
            {
                let found = matches(&line);
                self.stdout.push(line);
                if found {
                    return;
                }
            }
        }
        panic!("no such line on stdout: {:#?}", self.stdout);
    }

    /// Sends `signal`; the exit status, all of stdout (lines) and stderr, within 20 s.
    fn stop(
        mut self,
        signal: nix::sys::signal::Signal,
    ) -> (std::process::ExitStatus, Vec<String>, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("no exit 20 s after {signal}: {:#?}", self.stdout);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_secs(2)) {
            self.stdout.push(line);
        }
        let mut stderr = String::new();
        use std::io::Read;
        let _ = self
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr);
        (status, self.stdout, stderr)
    }
}

/// What `docker compose stop` and systemd send: `run` stops as it does on Ctrl-C, with its
/// closing summary and status 0.
#[tokio::test]
async fn run_stops_on_sigterm_as_on_ctrl_c_with_its_summary() {
    let sb = sandbox().await;
    let policy = policy_file(&sb, POLICY);
    let url = monitor_url(&sb);
    let mut run = Running::start(&[
        "run",
        "--database-url",
        &url,
        "--policy",
        &policy,
        "--interval",
        "1s",
    ]);
    run.wait_for_line(|l| l.contains("  sessions "));
    let (status, stdout, stderr) = run.stop(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "{status:?}\n{stdout:#?}\n{stderr}");
    let last: Vec<&str> = stdout
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(last[0], "interrupted", "{stdout:#?}");
    assert!(last[1].starts_with("done: "), "{stdout:#?}");
}

/// With `--output json`, stdout is JSON lines and nothing else, interrupted or not: what `run`
/// says besides goes to stderr.
#[tokio::test]
async fn run_json_prints_json_lines_only_and_says_the_rest_on_stderr() {
    let sb = sandbox().await;
    let policy = policy_file(&sb, POLICY);
    let url = monitor_url(&sb);
    let mut run = Running::start(&[
        "run",
        "--database-url",
        &url,
        "--policy",
        &policy,
        "--interval",
        "1s",
        "--output",
        "json",
    ]);
    run.wait_for_line(|l| l.starts_with('{'));
    run.wait_for_line(|l| l.starts_with('{'));
    let (status, stdout, stderr) = run.stop(nix::sys::signal::Signal::SIGINT);
    assert_eq!(status.code(), Some(0), "{status:?}\n{stderr}");
    assert!(stdout.len() >= 2, "{stdout:#?}");
    for line in &stdout {
        let document: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?} in {stdout:#?}"));
        assert!(document["observedAt"].is_string(), "{line}");
    }
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(stderr.contains("done: "), "{stderr}");
}

/// The pids the server log shows ended by `pg_terminate_backend`, after byte `from` (every line
/// starts with PostgreSQL's default `log_line_prefix`, `%m [%p] `).
fn terminated_in_server_log(sb: &Sandbox, from: u64) -> Vec<i64> {
    let log = std::fs::read(sb.log_path()).expect("the server log");
    let text = String::from_utf8_lossy(&log[from as usize..]).into_owned();
    let mut pids: Vec<i64> = text
        .lines()
        .filter(|l| l.contains("FATAL:  terminating connection due to administrator command"))
        .map(|l| {
            let pid = l
                .split_once(" [")
                .and_then(|(_, rest)| rest.split_once(']'));
            pid.and_then(|(p, _)| p.parse().ok())
                .unwrap_or_else(|| panic!("no pid in the log line {l:?}"))
        })
        .collect();
    pids.sort();
    pids
}

#[tokio::test]
async fn run_enforce_leaves_one_audit_record_per_ended_session_as_the_server_log_shows() {
    let sb = sandbox().await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(open(&sb, "fits-worker", 21).await);
    }
    let mut in_transaction = Vec::new();
    for _ in 0..2 {
        let s = open(&sb, "reports-api", 22).await;
        s.begin_idle_in_transaction().await.unwrap();
        in_transaction.push(s);
    }
    // Healthy: a running query is never condemned, so it has no record.
    let busy = open(&sb, "storefront", 24).await;
    busy.start_active(20.0);
    sb.wait_for_state(busy.pid(), "active", std::time::Duration::from_secs(5))
        .await
        .unwrap();
    pause(600).await;
    let policy = policy_file(&sb, POLICY);
    let audit_path = sb.dir().join("audit.jsonl");
    // Appended to, never truncated: a record of an earlier run stays first.
    std::fs::write(&audit_path, "{\"earlier\":true}\n").unwrap();
    let log_start = std::fs::metadata(sb.log_path()).unwrap().len();
    let out = poolwarden(&[
        "--log-format",
        "json",
        "run",
        "--database-url",
        &monitor_url(&sb),
        "--policy",
        &policy,
        "--interval",
        "1s",
        "--cycles",
        "2",
        "--audit-log",
        &audit_path.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for s in idle.iter().chain(&in_transaction) {
        assert!(gone(&sb, s.pid()).await, "pid {} still there", s.pid());
    }
    assert!(busy.is_alive().await);

    let mut expected: Vec<i64> = idle
        .iter()
        .chain(&in_transaction)
        .map(|s| s.pid())
        .collect();
    expected.sort();
    let logged_by_server = terminated_in_server_log(&sb, log_start);
    assert_eq!(
        logged_by_server, expected,
        "the server ended exactly the leaked sessions"
    );

    let text = std::fs::read_to_string(&audit_path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("{\"earlier\":true}"));
    let records: Vec<Value> = lines
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut audited: Vec<i64> = records.iter().map(|r| r["pid"].as_i64().unwrap()).collect();
    audited.sort();
    assert_eq!(
        audited, logged_by_server,
        "one audit record per ended session:\n{text}"
    );
    for r in &records {
        let pid = r["pid"].as_i64().unwrap();
        assert_eq!(r["action"], "terminated", "{r}");
        assert_eq!(r["policy"], "orders-db", "{r}");
        assert_eq!(r["cycle"], 1, "{r}");
        assert_eq!(r["user"], "app", "{r}");
        assert_eq!(r["database"], APP_DB, "{r}");
        assert!(r["workload"].is_null(), "no cluster, no workload: {r}");
        assert!(r["idleSeconds"].as_f64().unwrap() >= 0.4, "{r}");
        assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
        if in_transaction.iter().any(|s| s.pid() == pid) {
            assert_eq!(r["reason"], "IdleInTransactionTimeout", "{r}");
            assert_eq!(r["source"], "reports-api@127.0.0.22", "{r}");
            assert_eq!(r["state"], "idle in transaction", "{r}");
            assert!(r["transactionAgeSeconds"].as_f64().unwrap() >= 0.4, "{r}");
        } else {
            assert_eq!(r["reason"], "IdleTimeout", "{r}");
            assert_eq!(r["source"], "fits-worker@127.0.0.21", "{r}");
            assert!(r["transactionAgeSeconds"].is_null(), "{r}");
        }
    }

    // The same records on stderr, as JSON log lines.
    let mut logged: Vec<i64> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "poolwarden::audit")
        .map(|l| {
            assert_eq!(l["fields"]["action"], "terminated", "{l}");
            assert_eq!(l["fields"]["policy"], "orders-db", "{l}");
            l["fields"]["pid"].as_i64().unwrap()
        })
        .collect();
    logged.sort();
    assert_eq!(logged, expected, "stderr:\n{}", stderr(&out));
}

#[tokio::test]
async fn a_session_poolwarden_may_not_end_is_one_refused_record_not_one_a_cycle() {
    let sb = sandbox().await;
    // `watcher` sees everything but may not signal other roles' backends.
    let leaked = open(&sb, "fits-worker", 21).await;
    pause(600).await;
    let policy = policy_file(&sb, POLICY);
    let audit_path = sb.dir().join("refused.jsonl");
    let log_start = std::fs::metadata(sb.log_path()).unwrap().len();
    let out = poolwarden(&[
        "run",
        "--database-url",
        &(sb.url("watcher", "watcher", APP_DB) + "?sslmode=disable"),
        "--policy",
        &policy,
        "--interval",
        "1s",
        "--cycles",
        "3",
        "--audit-log",
        &audit_path.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(leaked.is_alive().await);
    assert!(terminated_in_server_log(&sb, log_start).is_empty());
    let text = std::fs::read_to_string(&audit_path).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "one record over three cycles:\n{text}");
    let r = &records[0];
    assert_eq!(r["action"], "refused", "{r}");
    assert_eq!(r["pid"], leaked.pid(), "{r}");
    assert_eq!(r["cycle"], 1, "{r}");
    assert_eq!(r["reason"], "IdleTimeout", "{r}");
    assert_eq!(r["user"], "app", "{r}");
    assert!(
        r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("GRANT pg_signal_backend")),
        "{r}"
    );
    assert!(
        stderr(&out).contains("poolwarden may not end it"),
        "the refusal is logged too: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn each_failure_gets_one_clear_line_and_a_nonzero_exit_and_nothing_is_terminated() {
    let sb = sandbox().await;
    let leaked = open(&sb, "fits-worker", 21).await;
    pause(600).await;
    let good_policy = policy_file(&sb, POLICY);
    let url = monitor_url(&sb);
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let unreachable =
        format!("postgres://monitor:monitor@127.0.0.1:{closed_port}/app?sslmode=disable");
    let wrong_password = url.replace("monitor:monitor@", "monitor:nope@");
    let typo_policy = policy_file(&sb, "mode: Enforce\nidle: {idleTimout: 1s}\n");
    let bad_yaml = policy_file(&sb, "mode: [Enforce\n");

    let cases: [(&str, &str, &str); 6] = [
        ("redis://x@y/z", &good_policy, "invalid database URL"),
        (&unreachable, &good_policy, "cannot reach the database"),
        (&wrong_password, &good_policy, "authentication failed"),
        (&url, &typo_policy, "idle.idleTimout"),
        (&url, &bad_yaml, "not valid YAML"),
        (&url, "/nonexistent/policy.yaml", "cannot read policy file"),
    ];
    for command in ["check", "run"] {
        for (db, policy, expected) in cases {
            let out = poolwarden(
                &[
                    command,
                    "--database-url",
                    db,
                    "--policy",
                    policy,
                    "--cycles",
                    "1",
                ][..if command == "check" { 5 } else { 7 }],
            );
            assert_eq!(
                out.status.code(),
                Some(1),
                "{command} {db} {policy}: {}",
                stderr(&out)
            );
            let err = stderr(&out);
            assert!(
                err.starts_with("error: ") && err.contains(expected),
                "{command}: {err}"
            );
            assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
            assert!(!err.contains("nope"), "never echo a password: {err}");
        }
    }
    assert!(leaked.is_alive().await);
}

/// A `mysql://` URL pointed at a server that does not speak MySQL says so, whether the server
/// stays silent (PostgreSQL waits for its client to speak first) or answers something else (an
/// SSH banner, read as a MySQL packet header, is a packet of 4.7 MB).
#[tokio::test]
async fn a_mysql_url_at_a_server_that_is_not_mysql_says_so() {
    let sb = sandbox().await;
    let policy = policy_file(&sb, POLICY);
    let at_postgres = format!("mysql://monitor:monitor@127.0.0.1:{}/", sb.port());
    let banner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ssh_port = banner.local_addr().unwrap().port();
    let greeter = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = banner.accept().await {
            let _ = socket
                .write_all(b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n")
                .await;
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                drop(socket);
            });
        }
    });
    let at_ssh = format!("mysql://monitor:monitor@127.0.0.1:{ssh_port}/");
    for (url, expected) in [
        (&at_ssh, "did not answer as MySQL or MariaDB does"),
        (&at_postgres, "sent no MySQL greeting"),
    ] {
        let out = tokio::task::spawn_blocking({
            let (url, policy) = (url.clone(), policy.clone());
            move || poolwarden(&["check", "--database-url", &url, "--policy", &policy])
        })
        .await
        .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{url}: {err}");
        assert!(err.contains(expected), "{url}: {err}");
        assert!(!err.contains("max_allowed_packet"), "{url}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    greeter.abort();
}

#[test]
fn crd_prints_the_committed_definition() {
    let out = poolwarden(&["crd"]);
    assert!(out.status.success());
    let committed =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/poolpolicy.yaml")).unwrap();
    assert_eq!(out.stdout, committed);
}

#[test]
fn a_lease_duration_of_zero_is_refused_before_anything_starts() {
    let out = poolwarden(&["controller", "--lease-duration", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value '0' for '--lease-duration") && err.contains("1..=3600"),
        "{err}"
    );
}

#[test]
fn the_demo_ends_every_leak_and_spares_every_healthy_session() {
    let out = poolwarden(&["demo"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("Every leaked session was ended; every healthy one was left alone."),
        "{text}"
    );
    assert!(
        text.contains("The throwaway PostgreSQL is stopped and removed."),
        "{text}"
    );
    for finding in [
        "IdleAccumulation",
        "IdleInTransaction",
        "PoolSaturation",
        "Overbooked",
        "ConnectionChurn    celery-worker@127.0.0.25",
    ] {
        assert!(text.contains(finding), "the demo shows {finding}");
    }
    // The pinned pool's owners are told that ending its sessions does not give them it back.
    assert!(
        text.contains("its pool still counts them as checked out"),
        "{text}"
    );
    // Its policy is one `kubectl apply` accepts: the CRD requires `database`.
    assert!(
        text.contains("connectionSecretRef: {name: orders-db-monitor, key: uri}"),
        "{text}"
    );
    // The pod behind the PgBouncer (scripts/setup installs pgbouncer): named by its own address
    // through the pooler, its idle transaction ended, the pooler's held connections left alone.
    for line in [
        "--pooler pgbouncer=postgres://poolstats:",
        "checkout-api@127.0.0.26 via pooler pgbouncer",
        "pooler pgbouncer (held, no client)",
        "IdleInTransaction  checkout-api@127.0.0.26",
        "terminated 1 session from checkout-api@127.0.0.26 (IdleInTransactionTimeout",
        "The throwaway PgBouncer is stopped and removed.",
    ] {
        assert!(text.contains(line), "the demo shows {line:?}: {text}");
    }
    for (row, fate) in [
        (
            "checkout-api via PgBouncer: 1 transaction left idle",
            "all terminated",
        ),
        (
            "search-api via PgBouncer: a query every second",
            "untouched",
        ),
        (
            "PgBouncer's own server connections, idle, held for reuse",
            "untouched",
        ),
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(row) && l.trim_end().ends_with(fate)),
            "{row}: {fate}: {text}"
        );
    }
    assert!(!text.contains("pgbouncer is not installed"), "{text}");
}

#[test]
fn the_demo_without_a_working_pgbouncer_says_so_in_one_line_and_plays_the_rest() {
    let out = Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .arg("demo")
        .env_remove("POOLWARDEN_DATABASE_URL")
        .env("POOLWARDEN_PGBOUNCER", "/nonexistent/pgbouncer")
        .output()
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let said: Vec<&str> = text.lines().filter(|l| l.contains("PgBouncer")).collect();
    assert_eq!(
        said,
        [
            "  (PgBouncer did not start, so the pod behind it is left out: POOLWARDEN_PGBOUNCER is \
          /nonexistent/pgbouncer, which is not an executable file)"
        ],
        "{text}"
    );
    assert!(!text.contains("--pooler"), "{text}");
    assert!(
        text.contains("Every leaked session was ended; every healthy one was left alone."),
        "{text}"
    );
}

#[test]
fn the_mysql_demo_kills_every_leaked_thread_and_spares_every_healthy_one() {
    let out = poolwarden(&["demo", "--engine", "mysql"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("Every leaked thread was killed; every healthy one was left alone."),
        "{text}"
    );
    assert!(
        text.contains("The throwaway MariaDB is stopped and removed."),
        "{text}"
    );
    assert!(
        text.contains("(MariaDB 10."),
        "the report names the server: {text}"
    );
    for finding in ["IdleAccumulation", "IdleInTransaction", "PoolSaturation"] {
        assert!(text.contains(finding), "the demo shows {finding}");
    }
}

/// A policy for the seed shapes within a second: stranded, idle in a transaction and long
/// transactions all found at once.
const SEEDS_AT_ONCE: &str = "\
leakDetection: {window: 300ms, strandedIdleAge: 300ms, idleInTransactionAge: 300ms, transactionAge: 1s, idleThreshold: 3}
";

/// The literals the seed apps' statements carry: none may be printed.
const SEED_LITERALS: [&str; 4] = ["pending-9931", "done-4471", "1234567", "7654321"];

/// `check` as a person runs it (the table), and with `--output json`.
fn check_table_and_json(url: &str, policy: &str) -> (String, Value) {
    let table = poolwarden(&["check", "--database-url", url, "--policy", policy]);
    assert!(table.status.success(), "{}", stderr(&table));
    let json = poolwarden(&[
        "check",
        "--database-url",
        url,
        "--policy",
        policy,
        "--output",
        "json",
    ]);
    assert!(json.status.success(), "{}", stderr(&json));
    (
        String::from_utf8_lossy(&table.stdout).into_owned(),
        serde_json::from_slice(&json.stdout).expect("JSON on stdout"),
    )
}

/// The lines of `table` from the finding `kind` on `source` to the next finding.
fn finding_lines<'t>(table: &'t str, kind: &str, source: &str) -> Vec<&'t str> {
    let lines: Vec<&str> = table.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains(kind) && l.ends_with(source))
        .unwrap_or_else(|| panic!("no {kind} on {source} in\n{table}"));
    lines[start..]
        .iter()
        .skip(1)
        .take_while(|l| l.starts_with("            "))
        .copied()
        .collect()
}

/// The seeds' own statements, as their apps send them (client-side binding, literals inline):
/// `check` prints, under each leak, the statement its sessions last ran with no literal in it;
/// with `lastStatements: Off` it prints none, and its JSON carries none.
#[tokio::test]
async fn check_prints_under_each_seed_leak_what_its_sessions_last_ran_with_no_literal() {
    let sb = sandbox().await;
    app_admin(&sb)
        .await
        .batch_execute(
            "CREATE TABLE fits_files (id int PRIMARY KEY, path text, status text);
             CREATE TABLE reports (id int PRIMARY KEY, status text, finished_at timestamptz);
             CREATE TABLE subscriptions (user_id int, plan text);
             INSERT INTO reports SELECT g, 'queued', NULL FROM generate_series(1, 8) g;
             GRANT SELECT, UPDATE ON fits_files, reports, subscriptions TO app;",
        )
        .await
        .unwrap();
    // Seed 000: forked workers' inherited sessions, idle after their first query.
    let mut workers = Vec::new();
    for _ in 0..4 {
        let s = open(&sb, "fits-worker", 21).await;
        s.client()
            .simple_query(
                "SELECT fits_files.id, fits_files.path FROM fits_files \
                 WHERE fits_files.status = 'pending-9931' LIMIT 10",
            )
            .await
            .unwrap();
        workers.push(s);
    }
    // Seed 001: background tasks that wrote and never committed.
    let mut tasks = Vec::new();
    for id in 1..=5 {
        let s = open(&sb, "reports-api", 22).await;
        s.client()
            .simple_query(&format!(
                "BEGIN; UPDATE reports SET status = 'done-4471', finished_at = now() \
                 WHERE reports.id = {id} AND reports.id <> 1234567"
            ))
            .await
            .unwrap();
        tasks.push(s);
    }
    // Seed 003: a singleton service holding one transaction and touching it all the time.
    let service = open(&sb, "vabhub-services", 23).await;
    service.client().batch_execute("BEGIN").await.unwrap();
    let touching = tokio::spawn(async move {
        loop {
            service
                .client()
                .simple_query("SELECT count(*) FROM subscriptions WHERE user_id = 7654321")
                .await
                .unwrap();
            pause(100).await;
        }
    });
    pause(1500).await;

    let (table, report) = check_table_and_json(&monitor_url(&sb), &policy_file(&sb, SEEDS_AT_ONCE));
    touching.abort();
    let under = |kind: &str, source: &str| finding_lines(&table, kind, source).join("\n");
    let stranded = under("IdleAccumulation", "fits-worker@127.0.0.21");
    assert!(
        stranded.contains(
            "last statement: `SELECT fits_files.id, fits_files.path FROM fits_files WHERE \
             fits_files.status = ? LIMIT ?` (4 sessions)"
        ),
        "{table}"
    );
    let pinned = under("IdleInTransaction", "reports-api@127.0.0.22");
    assert!(
        pinned.contains(
            "last statement: `BEGIN; UPDATE reports SET status = ?, finished_at = now() WHERE \
             reports.id = ? AND reports.id <> ?` (5 sessions)"
        ),
        "{table}"
    );
    let long = under("LongTransaction", "vabhub-services@127.0.0.23");
    assert!(
        long.contains(
            "last statement: `SELECT count(*) FROM subscriptions WHERE user_id = ?` (1 session)"
        ),
        "{table}"
    );
    let printed = format!("{table}{report}");
    for literal in SEED_LITERALS {
        assert!(!printed.contains(literal), "{literal} printed:\n{printed}");
    }
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "IdleInTransaction")
        .unwrap();
    assert_eq!(finding["lastStatements"][0]["sessions"], 5, "{finding:#}");

    let (table, report) = check_table_and_json(
        &monitor_url(&sb),
        &policy_file(
            &sb,
            &SEEDS_AT_ONCE.replace(
                "idleThreshold: 3}",
                "idleThreshold: 3, lastStatements: \"Off\"}",
            ),
        ),
    );
    assert!(table.contains("IdleInTransaction"), "{table}");
    // (LongTransaction's evidence says how long ago the "last statement" was: that stays.)
    assert!(!table.contains("last statement:"), "{table}");
    assert!(!table.contains("last statements:"), "{table}");
    assert!(
        !report.to_string().contains("\"lastStatement"),
        "{report:#}"
    );
    drop((workers, tasks));
}

/// The same on MariaDB, whose `performance_schema` (with its `events_statements_current`
/// consumer) records each thread's last statement: seed 001 was a MySQL app.
#[tokio::test]
async fn check_on_mariadb_prints_what_each_leaks_threads_last_ran() {
    let db = support::mariadb::server_with(poolwarden_sandbox::MariaDbOptions {
        performance_schema: true,
        statements_consumer: true,
        ..Default::default()
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let s = support::mariadb::open(&db, "reports-api", 22).await;
        s.execute(
            "START TRANSACTION; SELECT items.id, items.name FROM items \
             WHERE items.name <> 'done-4471' AND items.id IN (1, 2, 1234567) LOCK IN SHARE MODE",
        )
        .await
        .unwrap();
        tasks.push(s);
    }
    pause(1500).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("seeds.yaml");
    std::fs::write(&policy, SEEDS_AT_ONCE).unwrap();
    let (table, report) = check_table_and_json(
        &support::mariadb::monitor_url(&db),
        &policy.display().to_string(),
    );
    let pinned = finding_lines(&table, "IdleInTransaction", "reports-api@127.0.0.22").join("\n");
    assert!(
        pinned.contains(
            "last statement: `SELECT items.id, items.name FROM items WHERE items.name <> ? AND \
             items.id IN (...) LOCK IN SHARE MODE` (5 sessions)"
        ),
        "{table}"
    );
    let printed = format!("{table}{report}");
    for literal in SEED_LITERALS {
        assert!(!printed.contains(literal), "{literal} printed:\n{printed}");
    }
    drop(tasks);
}
