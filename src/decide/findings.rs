//! The six leak findings of DESIGN.md §6, as observed in one snapshot.
//!
//! Each finding carries `held_for`: how long the snapshot alone proves it has held (a session idle
//! for three hours proves three hours of idleness). [`super::memory`] adds what earlier cycles saw
//! and applies the window before a finding is confirmed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use super::attribution::{Source, Via};
use super::cluster::{ClusterView, WorkloadRef};
use super::groups::Governed;
use super::rules::Rules;
use crate::api::{count, human};
use crate::database::{SessionState, Snapshot, elapsed};

/// The kinds of leak poolwarden recognises.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub enum FindingKind {
    IdleAccumulation,
    IdleInTransaction,
    PoolSaturation,
    ConnectionChurn,
    Orphaned,
    Overbooked,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdleAccumulation => "IdleAccumulation",
            Self::IdleInTransaction => "IdleInTransaction",
            Self::PoolSaturation => "PoolSaturation",
            Self::ConnectionChurn => "ConnectionChurn",
            Self::Orphaned => "Orphaned",
            Self::Overbooked => "Overbooked",
        }
    }

    /// What usually causes it, pointing at the patterns poolwarden was born from.
    pub fn likely_cause(self) -> &'static str {
        match self {
            Self::IdleAccumulation => {
                "idle sessions pile up: typically a pool inherited across fork() by long-lived worker \
                 processes; create the engine after the fork, or call engine.dispose() in the child"
            }
            Self::IdleInTransaction => {
                "a transaction left open: a session handed to a background task after the request \
                 closed it, a missing commit/rollback, or a service holding one session forever"
            }
            Self::PoolSaturation => {
                "the pool is pinned at pool_size + max_overflow: sessions are checked out and never \
                 returned (often a request-scoped session reused by a background task)"
            }
            Self::ConnectionChurn => {
                "sessions are opened and closed at a high rate: NullPool or an engine per request; \
                 keep one pool per process"
            }
            Self::Orphaned => {
                "sessions left behind by a pod that no longer exists: killed mid-transaction, or its \
                 node was lost"
            }
            Self::Overbooked => {
                "the pools' maximum (max replicas x per-pod pool) exceeds the server's usable \
                 connections: 'too many clients already' is waiting to happen; shrink the pools or \
                 put a pooler in front"
            }
        }
    }
}

/// Who a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Subject {
    Source {
        source: Source,
    },
    /// The server as a whole (Overbooked, unattributable churn).
    Server,
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Source { source } => source.fmt(f),
            Subject::Server => f.write_str("the server"),
        }
    }
}

/// A finding as one snapshot shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    pub subject: Subject,
    pub kind: FindingKind,
    /// One human line of evidence, ages included.
    pub evidence: String,
    /// The evidence without ages, stable from cycle to cycle: what annotations and the status
    /// carry, so that they are rewritten only when something really changes.
    pub summary: String,
    /// The sessions that show it, at most a handful.
    pub pids: Vec<i32>,
    /// How long the snapshot alone proves it has held.
    pub held_for: Duration,
}

const EVIDENCE_PIDS: usize = 10;

/// Per-pod budgets: a workload's `poolwarden.io/pool-max`, else the policy's. Built once per
/// decision, so that a source's budget is a lookup rather than a scan of every workload (with
/// thousands of workloads, the scans per source made deciding quadratic).
pub struct Budgets<'a> {
    declared: HashMap<&'a WorkloadRef, Option<u32>>,
    policy: Option<u32>,
}

impl<'a> Budgets<'a> {
    pub fn new(cluster: &'a ClusterView, rules: &Rules) -> Self {
        let mut declared = HashMap::with_capacity(cluster.workloads.len());
        for info in &cluster.workloads {
            // A workload listed twice counts with its first entry, as a scan would find it.
            declared.entry(&info.workload).or_insert(info.pool_max);
        }
        Self {
            declared,
            policy: rules.max_connections_per_pod,
        }
    }

    /// The per-pod budget for a source.
    pub fn per_pod(&self, source: &Source) -> Option<u32> {
        let declared = match source {
            Source::Workload(w) => self.declared.get(w).copied().flatten(),
            Source::Client { .. } => None,
        };
        // A budget of zero is no budget at all (an annotation typo must not condemn a whole pod).
        declared
            .filter(|b| *b > 0)
            .or(self.policy)
            .filter(|b| *b > 0)
    }
}

/// Findings about sources, from the governed sessions.
pub fn observe(
    governed: &[Governed<'_>],
    snapshot: &Snapshot,
    cluster: &ClusterView,
    budgets: &Budgets<'_>,
    rules: &Rules,
) -> Vec<Observed> {
    let now = snapshot.observed_at;
    // source -> pod -> sessions
    let mut pods: BTreeMap<&Source, BTreeMap<&str, Vec<&Governed<'_>>>> = BTreeMap::new();
    for g in governed {
        pods.entry(&g.attribution.source)
            .or_default()
            .entry(g.attribution.pod.as_str())
            .or_default()
            .push(g);
    }
    let mut found = Vec::new();
    for (source, by_pod) in &pods {
        let subject = || Subject::Source {
            source: (*source).clone(),
        };
        let all: Vec<&Governed<'_>> = by_pod.values().flatten().copied().collect();

        // IdleAccumulation: one pod holds idle_threshold sessions idle for longer than the window.
        if let Some((pod, ages, pids)) = by_pod
            .iter()
            .map(|(pod, sessions)| {
                let mut idle: Vec<(Duration, i32)> = sessions
                    .iter()
                    .filter(|g| g.session.state == SessionState::Idle)
                    .map(|g| (g.session.in_state_for(now), g.session.pid))
                    .filter(|(age, _)| *age > rules.window)
                    .collect();
                idle.sort_by(|a, b| b.cmp(a));
                let ages: Vec<Duration> = idle.iter().map(|(a, _)| *a).collect();
                let pids: Vec<i32> = idle.iter().map(|(_, p)| *p).collect();
                (*pod, ages, pids)
            })
            .filter(|(_, ages, _)| ages.len() >= rules.idle_threshold as usize)
            .max_by_key(|(_, ages, _)| ages.len())
        {
            // The condition has held since the threshold-th oldest session crossed the window.
            let kth = ages[rules.idle_threshold as usize - 1];
            let summary = format!(
                "{} idle for more than {} on {pod}",
                count(ages.len(), "session"),
                human(rules.window)
            );
            found.push(Observed {
                subject: subject(),
                kind: FindingKind::IdleAccumulation,
                evidence: format!("{summary} (oldest idle {})", human(ages[0])),
                summary,
                pids: pids.into_iter().take(EVIDENCE_PIDS).collect(),
                held_for: kth.saturating_sub(rules.window),
            });
        }

        // IdleInTransaction: sessions idle in a transaction past the timeout (or the window).
        let limit = rules.idle_in_transaction_timeout.unwrap_or(rules.window);
        let mut stuck: Vec<(Duration, i32)> = all
            .iter()
            .filter(|g| g.session.state.is_idle_in_transaction())
            .map(|g| (g.session.in_state_for(now), g.session.pid))
            .filter(|(age, _)| *age > limit)
            .collect();
        if !stuck.is_empty() {
            stuck.sort_by(|a, b| b.cmp(a));
            let summary = format!(
                "{} idle in transaction for more than {}",
                count(stuck.len(), "session"),
                human(limit)
            );
            found.push(Observed {
                subject: subject(),
                kind: FindingKind::IdleInTransaction,
                evidence: format!("{summary} (oldest {})", human(stuck[0].0)),
                summary,
                pids: stuck.iter().map(|(_, p)| *p).take(EVIDENCE_PIDS).collect(),
                held_for: stuck[0].0.saturating_sub(limit),
            });
        }

        // PoolSaturation: a pod holds at least its per-pod budget.
        if let Some(budget) = budgets.per_pod(source) {
            let saturated = by_pod
                .iter()
                .filter(|(_, sessions)| sessions.len() >= budget as usize)
                .map(|(pod, sessions)| {
                    let mut starts: Vec<jiff::Timestamp> =
                        sessions.iter().map(|g| g.session.backend_start).collect();
                    starts.sort();
                    // At least `budget` of these sessions have all existed since the budget-th
                    // oldest one started.
                    let since = starts[budget as usize - 1];
                    (*pod, sessions, elapsed(since, now))
                })
                .max_by_key(|(_, _, held)| *held);
            if let Some((pod, sessions, held_for)) = saturated {
                let in_tx = sessions
                    .iter()
                    .filter(|g| g.session.state.is_idle_in_transaction())
                    .count();
                let summary = format!(
                    "{pod} holds {} sessions, its budget is {budget}",
                    sessions.len()
                );
                found.push(Observed {
                    subject: subject(),
                    kind: FindingKind::PoolSaturation,
                    evidence: format!(
                        "{summary} ({in_tx} idle in transaction), for at least {}",
                        human(held_for)
                    ),
                    summary,
                    pids: sessions
                        .iter()
                        .map(|g| g.session.pid)
                        .take(EVIDENCE_PIDS)
                        .collect(),
                    held_for,
                });
            }
        }

        // Orphaned: sessions from a pod that no longer exists.
        let orphans: Vec<&Governed<'_>> = all
            .iter()
            .copied()
            .filter(|g| g.attribution.via == Via::Orphaned)
            .collect();
        if !orphans.is_empty() {
            let departed = cluster
                .departed
                .iter()
                .filter(|p| orphans.iter().any(|g| g.attribution.pod == p.name))
                .map(|p| p.departed_at)
                .min();
            let summary = format!(
                "{} from pods that no longer exist ({})",
                count(orphans.len(), "session"),
                orphans
                    .iter()
                    .map(|g| g.attribution.pod.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            found.push(Observed {
                subject: subject(),
                kind: FindingKind::Orphaned,
                evidence: summary.clone(),
                summary,
                pids: orphans
                    .iter()
                    .map(|g| g.session.pid)
                    .take(EVIDENCE_PIDS)
                    .collect(),
                held_for: departed.map_or(Duration::ZERO, |d| elapsed(d, now)),
            });
        }
    }
    found
}

/// `ConnectionChurn`: new sessions per second since the previous snapshot, from the server's own
/// session counter (short-lived sessions are mostly invisible to polling), attributed to the
/// sources of the new backends this snapshot does see.
pub fn churn(
    governed: &[Governed<'_>],
    snapshot: &Snapshot,
    previous: Option<(jiff::Timestamp, i64)>,
    rules: &Rules,
) -> (Option<f64>, Vec<Observed>) {
    let (Some((then, opened_then)), Some(opened_now)) = (previous, snapshot.sessions_opened_total)
    else {
        return (None, Vec::new());
    };
    let seconds = elapsed(then, snapshot.observed_at).as_secs_f64();
    if seconds <= 0.0 || opened_now < opened_then {
        return (None, Vec::new());
    }
    let rate = (opened_now - opened_then) as f64 / seconds;
    if rate <= rules.churn_per_second {
        return (Some(rate), Vec::new());
    }
    let mut fresh: HashMap<&Source, Vec<i32>> = HashMap::new();
    for g in governed.iter().filter(|g| g.session.backend_start > then) {
        fresh
            .entry(&g.attribution.source)
            .or_default()
            .push(g.session.pid);
    }
    let seen: usize = fresh.values().map(Vec::len).sum();
    let evidence = |n: usize| {
        format!(
            "{rate:.1} new sessions/s on the server (threshold {}); {n} of the {seen} new sessions still visible came from here",
            rules.churn_per_second
        )
    };
    let summary = format!(
        "more than {} new sessions/s on the server",
        rules.churn_per_second
    );
    let mut found: Vec<Observed> = fresh
        .iter()
        // A source responsible for at least a quarter of what we could see.
        .filter(|(_, pids)| pids.len() * 4 >= seen)
        .map(|(source, pids)| Observed {
            subject: Subject::Source {
                source: (*source).clone(),
            },
            kind: FindingKind::ConnectionChurn,
            evidence: evidence(pids.len()),
            summary: summary.clone(),
            pids: pids.iter().copied().take(EVIDENCE_PIDS).collect(),
            held_for: Duration::ZERO,
        })
        .collect();
    if found.is_empty() {
        found.push(Observed {
            subject: Subject::Server,
            kind: FindingKind::ConnectionChurn,
            evidence: format!(
                "{rate:.1} new sessions/s on the server (threshold {}); they close too fast to be seen",
                rules.churn_per_second
            ),
            summary,
            pids: Vec::new(),
            held_for: Duration::ZERO,
        });
    }
    found.sort_by(|a, b| a.subject.cmp(&b.subject));
    (Some(rate), found)
}
