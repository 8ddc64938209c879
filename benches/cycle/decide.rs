//! Decide (section 2): the pure function on synthetic snapshots, with a cluster index of pods;
//! and the controller's step before it, the index → `ClusterView` for one policy.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use poolwarden::controller::{ClusterIndex, TrimmedPod};
use poolwarden::database::{MonitorRole, ServerFacts, Session, SessionState, Snapshot};
use poolwarden::decide::scale::ScaleSpec;
use poolwarden::decide::{
    self, ClusterView, DepartedPod, Inputs, LEAK, Memory, POLICY, PodInfo, Rules, WorkloadInfo,
    WorkloadRef,
};
use serde_json::json;

use crate::common::*;

const NS: &str = "shop";
const POLICY_NAME: &str = "shop/orders-db";
const PODS_PER_WORKLOAD: usize = 10;

/// The policy decided with: what a production policy looks like.
const RULES: &str = "
mode: Enforce
scope: {excludeApplications: [psql, 'pg_dump*']}
idle: {idleTimeout: 30m, idleInTransactionTimeout: 5m, maxTerminationsPerCycle: 20}
budgets: {maxConnectionsPerPod: 15}
leakDetection: {window: 10m, idleThreshold: 5}
";

/// xorshift64*: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn ago(now: Timestamp, secs: u64) -> Timestamp {
    now - SignedDuration::from_secs(secs as i64)
}

fn pod_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        1 + (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ))
}

fn workload(w: usize) -> WorkloadRef {
    WorkloadRef {
        namespace: NS.into(),
        kind: "Deployment".into(),
        name: format!("orders-{w}").into(),
    }
}

/// `pods` running pods in workloads of ten, a twentieth as many departed pods, and the
/// workloads: half declare `poolwarden.io/pool-max`, a tenth carry this policy's annotations.
fn cluster(pods: usize, now: Timestamp) -> ClusterView {
    let workloads = pods.div_ceil(PODS_PER_WORKLOAD);
    let pod_infos = (0..pods)
        .map(|i| PodInfo {
            name: format!("orders-{}-7d9f6c-{i}", i / PODS_PER_WORKLOAD).into(),
            ips: vec![pod_ip(i)],
            started_at: Some(ago(now, 7 * 86400)),
            workload: workload(i / PODS_PER_WORKLOAD),
            ready: true,
        })
        .collect();
    let departed = (0..(pods / 20).max(5))
        .map(|k| DepartedPod {
            name: format!("orders-{}-5b8c4d-{k}", k % workloads).into(),
            ips: vec![IpAddr::V4(Ipv4Addr::new(10, 100, (k >> 8) as u8, k as u8))],
            started_at: Some(ago(now, 8 * 86400)),
            departed_at: ago(now, 300),
            workload: workload(k % workloads),
        })
        .collect();
    let workload_infos = (0..workloads)
        .map(|w| WorkloadInfo {
            workload: workload(w),
            scale: ScaleSpec {
                running: PODS_PER_WORKLOAD as u32,
                declared: Some(PODS_PER_WORKLOAD as u32 + 2),
                ..ScaleSpec::default()
            },
            pool_max: (w % 2 == 0).then_some(10),
            annotations: if w % 10 == 0 {
                BTreeMap::from([
                    (LEAK.to_owned(), "IdleAccumulation".to_owned()),
                    (POLICY.to_owned(), POLICY_NAME.to_owned()),
                ])
            } else {
                BTreeMap::new()
            },
        })
        .collect();
    ClusterView {
        policy: Some(POLICY_NAME.into()),
        pods: pod_infos,
        departed,
        workloads: workload_infos,
    }
}

/// `count` backends: 85% from pod IPs, 5% named after their pod behind a pooler, 3% orphans of
/// departed pods, 5% clients outside the cluster, 1% superuser sessions, 1% background
/// processes. 70% of client sessions idle, 15% active, 15% idle in a transaction; ages up to 2 h.
fn snapshot(count: usize, cluster: &ClusterView, now: Timestamp, seed: u64) -> Snapshot {
    let mut rng = Rng(seed | 1);
    let mut sessions = Vec::with_capacity(count);
    for j in 0..count {
        let pid = 1000 + j as i64;
        let kind = j % 100;
        let pod = &cluster.pods[rng.below(cluster.pods.len() as u64) as usize];
        let roll = rng.below(100);
        let state = match roll {
            0..70 => SessionState::Idle,
            70..85 => SessionState::Active,
            85..95 => SessionState::IdleInTransaction,
            _ => SessionState::IdleInTransactionAborted,
        };
        let in_state = if state == SessionState::Active {
            rng.below(10)
        } else {
            rng.below(7200)
        };
        let mut state_change = ago(now, in_state);
        let mut backend_start = ago(now, in_state + rng.below(6 * 3600));
        let mut user = "app";
        let mut application = "orders".to_owned();
        let mut client_addr = pod.ips.first().copied();
        let mut backend_type = "client backend";
        match kind {
            85..90 => {
                application = pod.name.to_string();
                client_addr = Some(IpAddr::V4(Ipv4Addr::new(10, 250, 0, 1)));
            }
            90..93 => {
                let d = &cluster.departed[rng.below(cluster.departed.len() as u64) as usize];
                client_addr = d.ips.first().copied();
                state_change = d.departed_at - SignedDuration::from_secs(rng.below(600) as i64);
                backend_start = state_change - SignedDuration::from_secs(rng.below(3600) as i64);
            }
            93..98 => {
                application = format!("cron-{}", j % 20);
                client_addr = Some(IpAddr::V4(Ipv4Addr::new(192, 168, (j % 4) as u8, 7)));
            }
            98 => user = "postgres",
            99 => backend_type = "background worker",
            _ => {}
        }
        let (state, state_change, user, xact_start) = if backend_type == "client backend" {
            let xact = match state {
                SessionState::Active => Some(state_change),
                s if s.is_idle_in_transaction() => {
                    Some(state_change - SignedDuration::from_secs(1))
                }
                _ => None,
            };
            (state, Some(state_change), Some(user.to_owned()), xact)
        } else {
            (SessionState::Unknown, None, None, None)
        };
        sessions.push(Session {
            pid,
            backend_type: backend_type.into(),
            database: Some("orders".into()),
            user_is_superuser: user.as_deref() == Some("postgres"),
            user,
            application_name: application,
            client_addr,
            client_port: client_addr.map(|_| 40_000 + (pid % 20_000) as u16),
            backend_start,
            xact_start,
            state,
            state_change,
            backend_xmin: xact_start.map(|_| 1000 + j as u32),
            xmin_age: xact_start.map(|_| 50),
            blocked_by: Vec::new(),
            last_statement: None,
        });
    }
    Snapshot {
        observed_at: now,
        own_pid: 999,
        server: ServerFacts {
            version: "15.8".into(),
            version_num: 150008,
            max_connections: count as u32 + 100,
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
        sessions_opened_total: Some(10_000_000),
        churn: None,
        application_names_known: true,
        last_statements: poolwarden::database::LastStatements::Read,
    }
}

fn rules() -> Res<Rules> {
    let spec = serde_saphyr::from_str(RULES)?;
    Ok(Rules::compile(&spec)?)
}

/// The same pods as Kubernetes objects, for the index.
fn k8s_pods(pods: usize) -> Res<Vec<TrimmedPod>> {
    (0..pods)
        .map(|i| {
            let w = i / PODS_PER_WORKLOAD;
            let ip = pod_ip(i).to_string();
            Ok(serde_json::from_value(json!({
                "metadata": {"name": format!("orders-{w}-7d9f6c-{i}"), "namespace": NS,
                    "labels": {"app": format!("orders-{w}"), "pod-template-hash": "7d9f6c"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": format!("orders-{w}-7d9f6c"), "uid": format!("rs-{w}"),
                        "controller": true}]},
                "spec": {"containers": [{"name": "app", "image": "orders:1"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                    "startTime": "2025-01-01T00:00:00Z"},
            }))?)
        })
        .collect()
}

fn owner_metas(workloads: usize) -> Res<(Vec<ObjectMeta>, Vec<ObjectMeta>)> {
    let mut replicasets = Vec::new();
    let mut deployments = Vec::new();
    for w in 0..workloads {
        replicasets.push(serde_json::from_value(json!({
            "name": format!("orders-{w}-7d9f6c"), "namespace": NS,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                "name": format!("orders-{w}"), "uid": format!("d-{w}"), "controller": true}],
        }))?);
        deployments.push(serde_json::from_value(json!({
            "name": format!("orders-{w}"), "namespace": NS,
            "annotations": {"poolwarden.io/pool-max": "10"},
        }))?);
    }
    Ok((replicasets, deployments))
}

pub async fn run(cfg: &Config) -> Res<Table> {
    let pods = if cfg.tiny { 100 } else { 10_000 };
    let sizes: &[(usize, usize)] = if cfg.tiny {
        &[(1_000, 5)]
    } else {
        &[(10_000, 21), (100_000, 7)]
    };
    let now: Timestamp = "2025-06-01T12:00:00Z".parse()?;
    let rules = rules()?;
    let view = cluster(pods, now);
    let mut table = Table::new(
        "Decide: the pure function on synthetic snapshots",
        &[
            "step",
            "sessions",
            "pods (workloads)",
            "runs",
            "ms",
            "µs / session",
            "CPU ms",
            "CPU µs / session",
            "terminate / deferred / protected / findings / annotation changes",
        ],
    );

    for &(count, runs) in sizes {
        // The previous cycle, ten seconds earlier: its memory (findings in progress, the session
        // counter) is what a steady-state decision starts from.
        let earlier_at = now - SignedDuration::from_secs(10);
        let mut earlier = snapshot(count, &view, earlier_at, 7);
        earlier.sessions_opened_total = Some(9_999_900);
        let memory = decide::decide(Inputs {
            snapshot: &earlier,
            rules: &rules,
            cluster: &view,
            poolers: &[],
            memory: &Memory::default(),
        })
        .memory;
        drop(earlier);
        let snap = snapshot(count, &view, now, 11);
        let (mut samples, mut cpu) = (Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..runs + 1 {
            let (t, on_cpu) = (Instant::now(), thread_cpu_ns());
            let decision = decide::decide(Inputs {
                snapshot: &snap,
                rules: &rules,
                cluster: &view,
                poolers: &[],
                memory: &memory,
            });
            samples.push(ms(t));
            cpu.push((thread_cpu_ns() - on_cpu) as f64 / 1e6);
            last = Some(decision);
        }
        samples.remove(0); // warm-up
        cpu.remove(0);
        let d = last.ok_or("no decision")?;
        let s = Stats::of(&samples);
        let c = Stats::of(&cpu);
        table.row(vec![
            "decide".into(),
            thousands(count as u64),
            format!("{} ({})", thousands(pods as u64), view.workloads.len()),
            runs.to_string(),
            s.show(2),
            format!("{:.2}", s.median * 1e3 / count as f64),
            c.show(2),
            format!("{:.2}", c.median * 1e3 / count as f64),
            format!(
                "{} / {} / {} / {} / {}",
                d.terminate.len(),
                d.deferred.len(),
                d.protected.len(),
                d.findings.len(),
                d.annotations.len()
            ),
        ]);
        eprintln!("  decide: {count} sessions measured");
    }

    // The controller's step before deciding: its index of pods and owners → one policy's view.
    let workloads = pods.div_ceil(PODS_PER_WORKLOAD);
    let mut index = ClusterIndex::default();
    for pod in k8s_pods(pods)? {
        index.apply_pod(&pod, now);
    }
    let (replicasets, deployments) = owner_metas(workloads)?;
    for rs in &replicasets {
        index.apply_owner("ReplicaSet", rs);
    }
    for deployment in &deployments {
        index.apply_owner("Deployment", deployment);
    }
    let runs = if cfg.tiny { 5 } else { 21 };
    let mut samples = Vec::new();
    let mut seen = 0;
    for _ in 0..runs + 1 {
        let t = Instant::now();
        let v = index.view(NS, None, POLICY_NAME, now);
        samples.push(ms(t));
        seen = v.pods.len();
    }
    samples.remove(0);
    let s = Stats::of(&samples);
    table.row(vec![
        "index → view (controller)".into(),
        "–".into(),
        format!("{} ({workloads})", thousands(seen as u64)),
        runs.to_string(),
        s.show(2),
        "–".into(),
        "–".into(),
        "–".into(),
        "–".into(),
    ]);

    table.note(format!(
        "Synthetic snapshots (deterministic): 85% of sessions from pod IPs, 5% named after their \
         pod behind a pooler, 3% orphans of departed pods, 5% clients outside the cluster, 1% \
         superuser sessions, 1% background processes; 70% idle, 15% active, 15% idle in a \
         transaction, ages up to 2 h. Pods in Deployments of {PODS_PER_WORKLOAD}, a twentieth \
         as many departed pods, all in the policy's namespace. Policy: Enforce, idleTimeout 30m, \
         idleInTransactionTimeout 5m, maxTerminationsPerCycle 20, maxConnectionsPerPod 15, \
         window 10m. Each decision starts from the memory of a decision 10 s earlier (steady \
         state); one warm-up run is discarded. Allocator: mimalloc, as in the image's binary. ms: wall time, median (min–max); CPU: the \
         deciding thread's own time on a core (`/proc/thread-self/schedstat`), which a busy \
         machine does not inflate as it does the wall time."
    ));
    Ok(table)
}
