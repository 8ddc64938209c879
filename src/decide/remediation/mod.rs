//! Giving a pinned pool back to its application: which pods to evict (`spec.remediation`).
//!
//! Ending the sessions of a pinned pool frees the server, not the application: its pool still
//! counts them as checked out, and every request fails until the process restarts (measured on
//! seed 001's app: 6.5 minutes of `QueuePool limit … reached` until a garbage collection). A pod
//! whose every session (two or more) sat idle in a transaction, and whose sessions `Enforce` ends
//! in this cycle for it, is a [`PinnedPool`]. Outside a cluster that is all: `run` says what to
//! restart. In a cluster, with `remediation.pinnedPools: Evict`, the pod is evicted so that its
//! controller replaces it, the way Kubernetes expects a controller to:
//!
//! - only a pod whose workload replaces it: a ReplicaSet's under a Deployment, a StatefulSet's;
//!   never a bare pod, a Job's, a DaemonSet's or a lone ReplicaSet's;
//! - only while its workload has at least `minReadyPods` Ready pods;
//! - one pod per workload at a time: the next only once the evicted pod is gone and every pod of
//!   the workload is Ready again;
//! - at most `maxEvictionsPerHour` for the policy;
//! - through the Eviction API, which honours PodDisruptionBudgets: a budget that refuses is
//!   respected, and the pod stays pending, retried at the next cycle; nothing is deleted.
//!
//! A pod stays pending until it is evicted, is gone, shows a working pool again (a session that is
//! not idle in a transaction) or has waited for [`PENDING_FOR`] (two hours). In `DryRun`, what `Enforce`
//! would end makes the pinned pools, and the reports say what would be evicted.

use std::collections::BTreeMap;

use crate::decide::FastSet;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::FastMap;
use super::attribution::Source;
use super::cluster::{ClusterView, PodInfo, WorkloadRef};
use super::groups::Governed;
use super::terminations::{Reason, Termination};
use crate::api::{Mode, PinnedPoolRemedy, Remediation};
use crate::database::elapsed;

/// How long a pod whose eviction is held back stays pending: longer than the hour of the cap,
/// so that a pod the cap held back is evicted once the hour frees a place.
pub const PENDING_FOR: Duration = Duration::from_secs(2 * 3600);
/// The hour `maxEvictionsPerHour` counts over.
const HOUR: Duration = Duration::from_secs(3600);

/// A pod whose pinned pool this cycle ends (in `DryRun`: would end).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinnedPool {
    pub source: Source,
    /// The pod (outside a cluster: the client address).
    pub pod: String,
    /// The sessions ended (or that would be), all of them idle in a transaction.
    pub sessions: u32,
}

/// A pod to evict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Eviction {
    pub pod: String,
    pub workload: WorkloadRef,
    /// The sessions of its pinned pool that were ended.
    pub sessions: u32,
}

/// A pod waiting for its eviction, and why not now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub pod: String,
    pub workload: WorkloadRef,
    pub why: HeldBecause,
}

/// Why a pending eviction waits (its `reason` as in the status: PascalCase, like a condition's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason")]
pub enum HeldBecause {
    /// Its workload would not replace it (a bare pod, a Job's, a DaemonSet's).
    NotReplaced,
    /// Its workload has fewer Ready pods than `minReadyPods`.
    TooFewReady { ready: u32, minimum: u32 },
    /// Another pod of the workload was evicted and its replacement is not Ready yet.
    ReplacementNotReady { evicted: String },
    /// The policy evicted `maxEvictionsPerHour` pods in the last hour.
    HourlyCap { cap: u32 },
    /// A PodDisruptionBudget refused the last attempt (the API server's words).
    DisruptionBudget { message: String },
}

impl HeldBecause {
    /// A bounded name, for metrics and conditions.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotReplaced => "NotReplaced",
            Self::TooFewReady { .. } => "TooFewReady",
            Self::ReplacementNotReady { .. } => "ReplacementNotReady",
            Self::HourlyCap { .. } => "HourlyCap",
            Self::DisruptionBudget { .. } => "DisruptionBudget",
        }
    }
}

impl std::fmt::Display for HeldBecause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotReplaced => f.write_str(
                "nothing would replace it (only a Deployment's or a StatefulSet's pods are evicted)",
            ),
            Self::TooFewReady { ready, minimum } => write!(
                f,
                "its workload has {ready} Ready pods, fewer than minReadyPods ({minimum})"
            ),
            Self::ReplacementNotReady { evicted } => write!(
                f,
                "waiting for the replacement of {evicted}, evicted earlier, to be Ready"
            ),
            Self::HourlyCap { cap } => write!(
                f,
                "{cap} pods were evicted in the last hour (maxEvictionsPerHour)"
            ),
            Self::DisruptionBudget { message } => {
                write!(f, "a PodDisruptionBudget refused the eviction: {message}")
            }
        }
    }
}

/// What the decision says about recovering pinned pools.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// Pods whose pinned pool this cycle ends (or, in `DryRun`, would end): they need a restart.
    pub pinned: Vec<PinnedPool>,
    /// Pods to evict now (`Enforce`).
    pub evict: Vec<Eviction>,
    /// What `Enforce` would evict (`DryRun`).
    pub would_evict: Vec<Eviction>,
    /// Pods waiting for their eviction.
    pub held: Vec<Held>,
}

impl Recovery {
    pub fn is_empty(&self) -> bool {
        self.pinned.is_empty()
            && self.evict.is_empty()
            && self.would_evict.is_empty()
            && self.held.is_empty()
    }
}

/// What one cycle hands the next about evictions.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Evictions {
    /// Pods waiting for their eviction, by name (a policy's pods are all in its namespace).
    pending: BTreeMap<String, Pending>,
    /// The pod of each workload evicted last, while its replacement is not Ready.
    in_flight: BTreeMap<WorkloadRef, String>,
    /// When this policy's evictions happened, in the last hour.
    recent: Vec<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Pending {
    workload: WorkloadRef,
    sessions: u32,
    since: Timestamp,
}

/// How an eviction the controller attempted ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvictionOutcome {
    /// Accepted: the pod goes, its controller replaces it.
    Evicted,
    /// A PodDisruptionBudget refused it (429, the API server's words): retried at the next
    /// cycle.
    Refused { message: String },
    /// The pod was gone already.
    Gone,
    /// Anything else (the API server's words): retried at the next cycle.
    Failed { message: String },
}

impl Evictions {
    /// Records what the controller did with this cycle's evictions.
    /// A refused or failed one stays pending.
    pub fn record(&mut self, results: &[(Eviction, EvictionOutcome)], now: Timestamp) {
        for (eviction, outcome) in results {
            match outcome {
                EvictionOutcome::Evicted => {
                    self.pending.remove(&eviction.pod);
                    self.in_flight
                        .insert(eviction.workload.clone(), eviction.pod.clone());
                    self.recent.push(now);
                }
                EvictionOutcome::Gone => {
                    self.pending.remove(&eviction.pod);
                }
                EvictionOutcome::Refused { .. } | EvictionOutcome::Failed { .. } => {}
            }
        }
    }

    /// Evictions in the last hour, as of the last record.
    pub fn in_the_last_hour(&self) -> usize {
        self.recent.len()
    }
}

/// The pods whose pinned pool `ended` ends: every one of the pod's governed sessions (two or
/// more) idle in a transaction, and at least one of them ended for it.
pub fn pinned_pools(governed: &[Governed<'_>], ended: &[Termination]) -> Vec<PinnedPool> {
    let mut ended_by_pod: BTreeMap<(&Source, &str), u32> = BTreeMap::new();
    for t in ended {
        if matches!(
            t.reason,
            Reason::IdleInTransactionTimeout | Reason::TransactionTooOld
        ) {
            *ended_by_pod.entry((&t.source, t.pod.as_str())).or_default() += 1;
        }
    }
    if ended_by_pod.is_empty() {
        return Vec::new();
    }
    // Only the pods something was ended of are counted: a handful, against every session. Found
    // by the pod's name alone (one short string hashed per session, not a workload's three
    // names too); a client's address can name pods of several sources, hence the list.
    let mut sessions: FastMap<&str, Vec<(&Source, u32, bool)>> = FastMap::default();
    for (source, pod) in ended_by_pod.keys() {
        sessions.entry(pod).or_default().push((source, 0, true));
    }
    for g in governed {
        let Some(pods) = sessions.get_mut(g.attribution.pod.as_str()) else {
            continue;
        };
        if let Some((_, n, all_in_tx)) = pods
            .iter_mut()
            .find(|(source, _, _)| **source == g.attribution.source)
        {
            *n += 1;
            *all_in_tx &= g.session.state.is_idle_in_transaction();
        }
    }
    ended_by_pod
        .into_iter()
        .filter(|((source, pod), _)| {
            sessions.get(pod).is_some_and(|pods| {
                pods.iter()
                    .any(|(s, n, all_in_tx)| s == source && *n >= 2 && *all_in_tx)
            })
        })
        .map(|((source, pod), ended)| PinnedPool {
            source: source.clone(),
            pod: pod.to_owned(),
            sessions: ended,
        })
        .collect()
}

/// Which pods to evict now, which wait and why, and what the next cycle must remember.
/// `working` gives the pods seen now with a session that is not idle in a transaction: their pool
/// works again, and a pending eviction of theirs is dropped. Asked only where pods are evicted.
pub fn plan<'w>(
    pinned: Vec<PinnedPool>,
    working: impl FnOnce() -> FastSet<&'w str>,
    cluster: &ClusterView,
    remembered: &Evictions,
    settings: &Remediation,
    mode: Mode,
    now: Timestamp,
) -> (Recovery, Evictions) {
    let mut recovery = Recovery {
        pinned,
        ..Recovery::default()
    };
    if cluster.is_empty() || settings.pinned_pools != PinnedPoolRemedy::Evict {
        return (recovery, Evictions::default());
    }
    let working = working();
    let pods: BTreeMap<&str, &PodInfo> =
        cluster.pods.iter().map(|p| (p.name.as_str(), p)).collect();
    let all_ready = |workload: &WorkloadRef| {
        cluster
            .pods
            .iter()
            .filter(|p| &p.workload == workload)
            .all(|p| p.ready)
    };
    let mut next = Evictions {
        pending: BTreeMap::new(),
        in_flight: remembered
            .in_flight
            .iter()
            .filter(|(workload, evicted)| {
                pods.contains_key(evicted.as_str()) || !all_ready(workload)
            })
            .map(|(w, p)| (w.clone(), p.clone()))
            .collect(),
        recent: remembered
            .recent
            .iter()
            .copied()
            .filter(|at| elapsed(*at, now) < HOUR)
            .collect(),
    };
    // Pending from earlier cycles, while still worth it; then this cycle's pinned pools.
    let mut candidates: BTreeMap<String, Pending> = remembered
        .pending
        .iter()
        .filter(|(pod, p)| {
            pods.contains_key(pod.as_str())
                && !working.contains(pod.as_str())
                && elapsed(p.since, now) < PENDING_FOR
        })
        .map(|(pod, p)| (pod.clone(), p.clone()))
        .collect();
    for pool in &recovery.pinned {
        let Source::Workload(workload) = &pool.source else {
            continue;
        };
        if pods.contains_key(pool.pod.as_str()) {
            candidates.entry(pool.pod.clone()).or_insert(Pending {
                workload: workload.clone(),
                sessions: pool.sessions,
                since: now,
            });
        }
    }
    let mut by_age: Vec<(String, Pending)> = candidates.into_iter().collect();
    by_age.sort_by(|a, b| a.1.since.cmp(&b.1.since).then(a.0.cmp(&b.0)));
    // The workloads a pod of which is evicted in this cycle, with that pod.
    let mut evicting_now: BTreeMap<WorkloadRef, String> = BTreeMap::new();
    for (pod, pending) in by_age {
        let workload = pending.workload.clone();
        let ready = cluster
            .pods
            .iter()
            .filter(|p| p.workload == workload && p.ready)
            .count() as u32;
        let evicted = next
            .in_flight
            .get(&workload)
            .or_else(|| evicting_now.get(&workload));
        let why = if !matches!(workload.kind.as_str(), "Deployment" | "StatefulSet") {
            Some(HeldBecause::NotReplaced)
        } else if let Some(evicted) = evicted {
            Some(HeldBecause::ReplacementNotReady {
                evicted: evicted.clone(),
            })
        } else if ready < settings.min_ready_pods {
            Some(HeldBecause::TooFewReady {
                ready,
                minimum: settings.min_ready_pods,
            })
        } else if next.recent.len() + evicting_now.len() >= settings.max_evictions_per_hour as usize
        {
            Some(HeldBecause::HourlyCap {
                cap: settings.max_evictions_per_hour,
            })
        } else {
            None
        };
        let eviction = Eviction {
            pod: pod.clone(),
            workload: workload.clone(),
            sessions: pending.sessions,
        };
        match why {
            None => {
                evicting_now.insert(workload, pod.clone());
                match mode {
                    Mode::Enforce => recovery.evict.push(eviction),
                    Mode::DryRun => recovery.would_evict.push(eviction),
                }
            }
            Some(why) => recovery.held.push(Held {
                pod: pod.clone(),
                workload,
                why,
            }),
        }
        // In DryRun nothing was ended: nothing waits for the next cycle.
        if mode == Mode::Enforce {
            // Pending until the controller says the pod went.
            next.pending.insert(pod, pending);
        }
    }
    (recovery, next)
}

#[cfg(test)]
mod tests;
