//! What the scale section reads while the controller runs: the monitoring connections each
//! server holds and the CPU their backends spend, the controller's JSON log (each cycle's
//! lateness, who has been reconciled) and the stand-in's request log (the writes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use crate::common::*;
use crate::scale_platform::{SERVERS, Served};

/// poolwarden's monitoring backends on each real server: how many at once, and their CPU.
#[derive(Default)]
pub struct Backends {
    /// Per server: the most poolwarden connections seen at once.
    pub most: [usize; 4],
    /// Per server: pid → (CPU ns when first seen, CPU ns when last seen).
    cpu: [HashMap<i64, (u64, u64)>; 4],
}

impl Backends {
    /// One sample of every server.
    pub async fn sample(&mut self, servers: &[Served]) -> Res<()> {
        for (s, served) in servers.iter().enumerate() {
            if let Some(silent) = &served.silent {
                self.most[s] = self.most[s].max(silent.open());
                continue;
            }
            let Some(admin) = &served.admin else { continue };
            let rows = admin
                .query(
                    "SELECT pid::int8 FROM pg_stat_activity WHERE application_name = 'poolwarden'",
                    &[],
                )
                .await?;
            self.most[s] = self.most[s].max(rows.len());
            for row in rows {
                let pid: i64 = row.get(0);
                if let Ok(ns) = cpu_ns(pid) {
                    let seen = self.cpu[s].entry(pid).or_insert((ns, ns));
                    seen.1 = ns;
                }
            }
        }
        Ok(())
    }

    /// Milliseconds of CPU server `s`'s poolwarden backends spent between their first and last
    /// sample.
    pub fn cpu_ms(&self, s: usize) -> f64 {
        self.cpu[s]
            .values()
            .map(|(first, last)| (last - first) as f64 / 1e6)
            .sum()
    }
}

/// What the controller's log says, from a byte offset on.
#[derive(Default)]
pub struct Logged {
    /// Per server: the lateness of each cycle on schedule, ms.
    pub lateness: [Vec<f64>; 4],
    /// Policies that were reconciled (a cycle ran) or failed a reconcile.
    pub reconciled: BTreeSet<String>,
    pub failed: BTreeMap<String, u64>,
}

/// Reads the controller's JSON log from `offset`.
pub fn read_log(path: &Path, offset: usize) -> Logged {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut logged = Logged::default();
    for line in text.get(offset..).unwrap_or_default().lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let fields = &entry["fields"];
        let policy = fields["policy"].as_str().unwrap_or_default();
        match fields["message"].as_str().unwrap_or_default() {
            "cycle started" => {
                if let (Some(k), Some(ms)) = (index_of(policy), fields["lateness_ms"].as_f64()) {
                    logged.lateness[k % SERVERS.len()].push(ms);
                }
            }
            "reconciled" => {
                logged.reconciled.insert(policy.to_owned());
            }
            "reconcile failed" => {
                *logged.failed.entry(policy.to_owned()).or_default() += 1;
            }
            _ => {}
        }
    }
    logged
}

/// `team-000/db-12` → 12.
pub fn index_of(policy: &str) -> Option<usize> {
    policy.rsplit_once("/db-")?.1.parse().ok()
}

pub fn log_len(path: &Path) -> usize {
    std::fs::metadata(path).map_or(0, |m| m.len() as usize)
}

/// The stand-in's write requests in `log`, by what they wrote.
pub fn writes(log: &str) -> BTreeMap<&'static str, u64> {
    let mut counted: BTreeMap<&'static str, u64> = [
        "PoolPolicy status",
        "PoolPolicy (finalizer)",
        "Event",
        "workload annotations",
        "Lease (leader election)",
    ]
    .into_iter()
    .map(|k| (k, 0))
    .collect();
    for line in log.lines() {
        let Some((method, path)) = line
            .strip_prefix("standin: ")
            .and_then(|rest| rest.split_once(' '))
        else {
            continue;
        };
        if !matches!(method, "PATCH" | "POST" | "PUT" | "DELETE") {
            continue;
        }
        let kind = if path.contains("/poolpolicies/") && path.contains("/status") {
            "PoolPolicy status"
        } else if path.contains("/poolpolicies/") {
            "PoolPolicy (finalizer)"
        } else if path.contains("/events") {
            "Event"
        } else if path.contains("/leases") {
            "Lease (leader election)"
        } else if ["/deployments/", "/replicasets/", "/pods/"]
            .iter()
            .any(|k| path.contains(k))
        {
            "workload annotations"
        } else {
            "other"
        };
        *counted.entry(kind).or_default() += 1;
    }
    counted
}

/// The `q` quantile (0–1) of `samples`, by rank.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n => v[((n as f64 * q).ceil() as usize).clamp(1, n) - 1],
    }
}
