//! Leader election of the real binary, two replicas against the Kubernetes stand-in, each through
//! a TCP proxy of its own that the test can cut, and one real PostgreSQL whose log records every
//! terminating statement with its time and backend.
//!
//! - Split brain: the leader, cut off from the API server but still reaching the database, stops
//!   terminating before the standby can take the lease; the standby terminates only once it holds
//!   it; at no instant do both terminate. Said by PostgreSQL's own log, each backend traced to its
//!   replica through the kernel's socket table, and by poolwarden's logs and the Lease.
//! - Takeover: how long after the leader is stopped (SIGTERM: the lease is released) or killed
//!   (SIGKILL: the lease runs out) the standby holds the Lease. Printed, not asserted.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::support::controller::{Controller, cluster, create_policy, eventually, session};
use crate::support::kube::KubeStandin;
use crate::support::proxy::{ApiProxy, Link};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use poolwarden_sandbox::{Sandbox, SandboxOptions};

/// The real defaults: lease 15 s, renew deadline 10 s, retry period 2 s.
const LEASE_SECS: u64 = 15;

/// A PostgreSQL that logs every statement of the monitoring role, each line with its Unix time
/// in milliseconds and its backend pid.
async fn logged_database() -> Sandbox {
    let sb = Sandbox::start(SandboxOptions {
        settings: vec![("log_line_prefix".into(), "%n [%p] ".into())],
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    sb.create_database("orders").await.unwrap();
    sb.create_role("app", "app", &[]).await.unwrap();
    sb.create_role("monitor", "monitor", &["pg_monitor", "pg_signal_backend"])
        .await
        .unwrap();
    sb.admin()
        .await
        .unwrap()
        .batch_execute("ALTER ROLE monitor SET log_statement = 'all'")
        .await
        .unwrap();
    sb
}

/// A terminating statement in PostgreSQL's log: when (Unix seconds) and which backend ran it.
#[derive(Clone, Copy, Debug)]
struct Terminating {
    at: f64,
    backend: i32,
}

/// Every statement in the log that calls `pg_terminate_backend`.
fn terminating_statements(log: &str) -> Vec<Terminating> {
    let mut found = Vec::new();
    let mut entry: Option<(f64, i32, String)> = None;
    let mut close = |entry: Option<(f64, i32, String)>| {
        if let Some((at, backend, text)) = entry
            && (text.contains("execute") || text.contains("statement:"))
            && text.contains("pg_terminate_backend(")
        {
            found.push(Terminating { at, backend });
        }
    };
    for line in log.lines() {
        if let Some((at, backend, rest)) = prefixed(line) {
            close(entry.take());
            entry = Some((at, backend, rest.to_owned()));
        } else if let Some((_, _, text)) = &mut entry {
            text.push('\n');
            text.push_str(line);
        }
    }
    close(entry);
    found
}

/// `1764657601.123 [4242] rest` → (time, pid, rest).
fn prefixed(line: &str) -> Option<(f64, i32, &str)> {
    let (at, rest) = line.split_once(' ')?;
    let at: f64 = at.parse().ok()?;
    let rest = rest.strip_prefix('[')?;
    let (pid, rest) = rest.split_once("] ")?;
    Some((at, pid.parse().ok()?, rest))
}

/// The local TCP ports of process `pid`'s sockets, from /proc (the kernel's own table).
fn local_ports(pid: u32) -> HashSet<u16> {
    let mut inodes = HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy().into_owned();
                if let Some(inode) = target
                    .strip_prefix("socket:[")
                    .and_then(|t| t.strip_suffix(']'))
                {
                    inodes.insert(inode.to_owned());
                }
            }
        }
    }
    let mut ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            if cols.len() > 9 && inodes.contains(cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap_or("");
                if let Ok(port) = u16::from_str_radix(port, 16) {
                    ports.insert(port);
                }
            }
        }
    }
    ports
}

/// Which replica each poolwarden backend belongs to, learned by sampling `pg_stat_activity`
/// (backend pid, client port) against each replica's sockets.
type Backends = Arc<Mutex<BTreeMap<i32, &'static str>>>;

async fn trace_backends(
    sb: &Sandbox,
    replicas: Vec<(&'static str, u32)>,
) -> (Backends, AbortOnDrop) {
    let backends: Backends = Arc::default();
    let admin = sb.admin().await.unwrap();
    let task = tokio::spawn({
        let backends = backends.clone();
        async move {
            loop {
                let rows = admin
                    .query(
                        "SELECT pid, client_port FROM pg_stat_activity \
                         WHERE application_name = 'poolwarden' AND client_port IS NOT NULL",
                        &[],
                    )
                    .await
                    .unwrap_or_default();
                let ports: Vec<_> = replicas
                    .iter()
                    .map(|(name, pid)| (*name, local_ports(*pid)))
                    .collect();
                for row in rows {
                    let (pid, port): (i32, i32) = (row.get(0), row.get(1));
                    for (name, owned) in &ports {
                        if owned.contains(&(port as u16)) {
                            backends.lock().unwrap().insert(pid, name);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    (backends, AbortOnDrop(task))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The terminating statements so far, by replica (a backend not traced yet is left out).
fn terminations_by(sb: &Sandbox, backends: &Backends) -> BTreeMap<&'static str, Vec<f64>> {
    let log = std::fs::read_to_string(sb.log_path()).unwrap_or_default();
    let backends = backends.lock().unwrap();
    let mut by: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for t in terminating_statements(&log) {
        if let Some(name) = backends.get(&t.backend) {
            by.entry(name).or_default().push(t.at);
        }
    }
    by
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The time of the first line of `log` that contains `text`, from its RFC 3339 prefix.
fn logged_at(log: &str, text: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(text))?;
    let stamp: jiff::Timestamp = line.split_whitespace().next()?.parse().ok()?;
    Some(stamp.as_millisecond() as f64 / 1000.0)
}

async fn lease(client: &kube::Client) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), "default")
        .get_opt("poolwarden")
        .await
        .ok()?
}

fn holder(lease: &Option<Lease>) -> Option<String> {
    lease
        .as_ref()?
        .spec
        .as_ref()?
        .holder_identity
        .clone()
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_refused_by_the_api_stops_terminating_before_the_standby_takes_over() {
    split_brain(Link::Refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_api_requests_hang_stops_terminating_before_the_standby_takes_over() {
    split_brain(Link::Dropped).await;
}

/// A leads and terminates; A's link to the API server is cut (`cut`) while it still reaches the
/// database; B takes over; A's link comes back.
async fn split_brain(cut_by: Link) {
    let sb = Arc::new(logged_database().await);
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&client, &sb).await;
    create_policy(&client).await;
    let (proxy_a, proxy_b) = (
        ApiProxy::start(&kube.url()).await,
        ApiProxy::start(&kube.url()).await,
    );
    let a = Controller::start_with_lease(
        &proxy_a.kubeconfig(&kube, dir.path(), "kubeconfig-a"),
        dir.path(),
        "replica-a",
        LEASE_SECS,
        &[],
    );
    eventually("replica-a leads", 60, || async {
        (a.metric("poolwarden_leader") == Some(1.0)).then_some(())
    })
    .await;
    let b = Controller::start_with_lease(
        &proxy_b.kubeconfig(&kube, dir.path(), "kubeconfig-b"),
        dir.path(),
        "replica-b",
        LEASE_SECS,
        &[],
    );
    eventually("replica-b is ready", 60, || async {
        b.get("/readyz").filter(|(s, _)| *s == 200)
    })
    .await;
    let (backends, _tracing) = trace_backends(&sb, vec![("a", a.pid()), ("b", b.pid())]).await;

    // Fresh condemned sessions all along (open transactions, ended after 1 s): work for both.
    let condemned = tokio::spawn({
        let sb = sb.clone();
        async move {
            let mut held = Vec::new();
            loop {
                let s = session(&sb, 41).await;
                s.begin_idle_in_transaction().await.unwrap();
                held.push(s);
                held.retain(|s| !s.client().is_closed());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    let _condemned = AbortOnDrop(condemned);

    eventually("replica-a terminates", 60, || async {
        (terminations_by(&sb, &backends).get("a").map_or(0, Vec::len) >= 2).then_some(())
    })
    .await;
    assert!(
        !terminations_by(&sb, &backends).contains_key("b"),
        "the standby terminates nothing while the leader leads"
    );

    // Cut A off from the API server; it still reaches the database.
    let cut = unix_now();
    proxy_a.set(cut_by);
    eventually("replica-b leads", 90, || async {
        (b.metric("poolwarden_leader") == Some(1.0)).then_some(())
    })
    .await;
    eventually("replica-b terminates", 60, || async {
        (terminations_by(&sb, &backends).get("b").map_or(0, Vec::len) >= 2).then_some(())
    })
    .await;
    let taken = lease(&client).await;
    assert_eq!(holder(&taken).as_deref(), Some("replica-b"));
    let acquired = taken
        .as_ref()
        .and_then(|l| l.spec.as_ref()?.acquire_time.as_ref())
        .map(|t| t.0.as_millisecond() as f64 / 1000.0)
        .expect("the Lease says when replica-b acquired it");
    let a_audited = audited_terminations(&a.log());
    assert!(a_audited > 0, "A's audit trail records its terminations");
    let stepped_down = logged_at(
        &a.log(),
        "could not renew the lease within the renew deadline",
    );
    let b_leads = logged_at(&b.log(), "leading: reconciling PoolPolicies").unwrap();

    let by = terminations_by(&sb, &backends);
    let (of_a, of_b) = (&by["a"], &by["b"]);
    let a_last = of_a.iter().copied().fold(f64::MIN, f64::max);
    let b_first = of_b.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "{cut_by:?} at {cut:.3}; A stepped down {:+.3?} s after the cut, its last termination {:+.3} s; \
         B acquired the lease {:+.3} s, its first termination {:+.3} s; A's terminations {}, B's {}",
        stepped_down.map(|t| t - cut),
        a_last - cut,
        acquired - cut,
        b_first - cut,
        of_a.len(),
        of_b.len()
    );
    // The database's record: A's last termination came before B could acquire, B's first after.
    assert!(a_last < acquired, "A's last termination precedes B's lease");
    assert!(
        b_first > acquired,
        "B terminates only once it holds the lease"
    );
    assert!(a_last < b_first, "no instant at which both terminate");
    if cut_by == Link::Refused {
        // Its API writes failing fast, A went on with its cycles until its deadline: the test
        // has teeth (with requests that hang, A's cycle waits on its status write instead).
        assert!(
            of_a.iter().any(|t| *t > cut),
            "A still terminated after the cut, before its renew deadline"
        );
    }
    // Poolwarden's records: A stopped (its log, its metric) before B held the lease (the Lease,
    // B's log).
    let stepped_down =
        stepped_down.unwrap_or_else(|| panic!("A says it stopped acting:\n{}", a.log()));
    assert_eq!(
        a.metric("poolwarden_leader"),
        Some(0.0),
        "A no longer leads"
    );
    assert!(
        stepped_down < acquired,
        "A stopped acting before B acquired"
    );
    assert!(
        acquired <= b_leads + 0.001,
        "B led only once it held the lease"
    );

    // Restore A's link: it competes again, as standby, and does not act while B leads.
    proxy_a.set(Link::Up);
    let restored = unix_now();
    eventually("A hears the API server again", 60, || async {
        a.log()
            .contains("the API server answers again: competing as standby")
            .then_some(())
    })
    .await;
    let before = by["b"].len();
    eventually("B goes on terminating", 60, || async {
        (terminations_by(&sb, &backends).get("b").map_or(0, Vec::len) >= before + 3).then_some(())
    })
    .await;
    let by = terminations_by(&sb, &backends);
    assert_eq!(
        by["a"].len(),
        of_a.len(),
        "A terminated nothing while B led ({:.3} s after the restore)",
        unix_now() - restored
    );
    assert!(by["b"].iter().all(|t| *t > acquired));
    assert_eq!(a.metric("poolwarden_leader"), Some(0.0));
    assert_eq!(holder(&lease(&client).await).as_deref(), Some("replica-b"));
    // A's own audit trail agrees: it recorded no termination after B took over.
    assert_eq!(
        audited_terminations(&a.log()),
        a_audited,
        "A's audit trail grew while B led"
    );
}

/// The sessions a replica's audit trail says it terminated.
fn audited_terminations(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("poolwarden::audit") && l.contains("terminated"))
        .count()
}

/// The median of `runs`.
fn median(runs: &[f64]) -> f64 {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_after_a_release_and_after_a_crash_is_measured() {
    const RUNS: usize = 3;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kube.kubeconfig(dir.path());
    let start =
        |name: &str| Controller::start_with_lease(&kubeconfig, dir.path(), name, LEASE_SECS, &[]);
    let mut leader = start("replica-0");
    eventually("replica-0 leads", 60, || async {
        (leader.metric("poolwarden_leader") == Some(1.0)).then_some(())
    })
    .await;
    let (mut released, mut expired) = (Vec::new(), Vec::new());
    for run in 1..=2 * RUNS {
        let name = format!("replica-{run}");
        let standby = start(&name);
        eventually("the standby is ready", 60, || async {
            standby.get("/readyz").filter(|(s, _)| *s == 200)
        })
        .await;
        // Two renewals after the standby started: it has looked at the Lease by then.
        let version = |l: Option<Lease>| l.and_then(|l| l.metadata.resource_version);
        for _ in 0..2 {
            let seen = version(lease(&client).await);
            eventually("the leader renews", 30, || async {
                (version(lease(&client).await) != seen).then_some(())
            })
            .await;
        }
        let crash = run > RUNS;
        let stopped = Instant::now();
        if crash {
            leader.kill();
        } else {
            leader.terminate();
        }
        // Polled every 20 ms: the figure is that fine.
        let took = loop {
            if holder(&lease(&client).await).as_deref() == Some(name.as_str()) {
                break stopped.elapsed().as_secs_f64();
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(60),
                "no takeover in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if crash { &mut expired } else { &mut released }.push(took);
        leader = standby;
    }
    let show = |runs: &[f64]| {
        runs.iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "takeover with lease {LEASE_SECS} s (renew deadline 10 s, retry 2 s), time until the \
         standby holds the Lease:\n  SIGTERM (released): median {:.2} s of {} runs [{}]\n  \
         SIGKILL (expired):  median {:.2} s of {} runs [{}]",
        median(&released),
        released.len(),
        show(&released),
        median(&expired),
        expired.len(),
        show(&expired)
    );
    assert_eq!(released.len(), RUNS);
    assert_eq!(expired.len(), RUNS);
    // What makes a release prompt: the standbys watch the Lease, by its name.
    let log = kube.log_text();
    let lease_watch = log.lines().find(|l| {
        l.contains("/leases?")
            && l.contains("watch=true")
            && l.contains("fieldSelector=metadata.name")
    });
    assert!(lease_watch.is_some(), "no watch of the Lease by name");
}
