//! Prometheus metrics (`/metrics`). Every label is bounded: policy names, workload names of the
//! policy's namespace, states, reasons, finding kinds, error categories, the engine (`postgresql`,
//! `mysql`, `mariadb`); never pids or error text.
//!
//! What a cycle saw carries the `engine` its server is, so that dashboards can tell a MySQL
//! target's sessions from a PostgreSQL one's; reconcile durations and errors do not (a reconcile
//! can fail before the engine is known).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::capacity_metrics::CapacityMetrics;
use crate::controller::connections::looks::LookCounters;
use crate::cycle::Cycle;
use crate::database::{Protection, elapsed};
use crate::decide::{Eviction, EvictionOutcome, Source, Subject};

/// `answered` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

/// A policy and the engine of its server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub policy: String,
    pub engine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    pub policy: String,
    /// `Kind/name`, or `unattributed`: addresses and application names are not bounded.
    pub workload: String,
    pub state: String,
    pub engine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub policy: String,
    pub reason: String,
    pub engine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub policy: String,
    pub kind: String,
    /// What the finding is on: `Kind/name`, `unattributed`, or `server` (Overbooked,
    /// ServerSaturation, churn nobody can be named for). Bounded like the sessions' label.
    pub workload: String,
    /// `postgresql`, `mysql` or `mariadb`.
    pub engine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    pub policy: String,
    /// `evicted`, `refused` (a PodDisruptionBudget), `gone` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub policy: String,
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtectionLabels {
    pub policy: String,
    /// `MissingSignalPrivilege` or `SuperuserSession`.
    pub protection: String,
}

/// Every [`Protection`], as its label: both series always exist, 0 when none.
const PROTECTIONS: [(Protection, &str); 2] = [
    (Protection::MissingSignalPrivilege, "MissingSignalPrivilege"),
    (Protection::SuperuserSession, "SuperuserSession"),
];

/// The label sets one policy has written: its gauges as the last cycle set them, and every
/// counter it has, so that all of them can go when the policy does (prometheus-client families
/// have no "remove where").
#[derive(Default)]
struct Written {
    sessions: Vec<SessionLabels>,
    findings: Vec<FindingLabels>,
    server: Option<ServerLabels>,
    reasons: HashSet<ReasonLabels>,
    categories: HashSet<String>,
    evictions: HashSet<EvictionLabels>,
}

/// Everything the controller measures.
pub struct Metrics {
    pub sessions: Family<SessionLabels, Gauge>,
    pub terminations: Family<ReasonLabels, Counter>,
    pub findings: Family<FindingLabels, Gauge>,
    pub utilization: Family<ServerLabels, Gauge<f64, AtomicU64>>,
    pub oldest_transaction: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    pub protected: Family<ProtectionLabels, Gauge>,
    /// Per policy with `spec.poolers`: the poolers (replicas) whose console the last cycle could
    /// not read. While above 0, nothing is ended for plain idleness.
    pub poolers_unread: Family<PolicyLabels, Gauge>,
    /// Pods the policy set out to evict for their pinned pools (`spec.remediation`), by outcome.
    pub evictions: Family<EvictionLabels, Counter>,
    pub reconcile_duration: Family<PolicyLabels, Histogram>,
    /// How late cycles started against their schedule (one interval after the previous start).
    pub reconcile_lateness: Histogram,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub leader: Gauge,
    pub monitoring_connections: Gauge,
    /// Looks taken at the database servers, answered or failed: shared by a server's policies.
    pub server_looks: LookCounters,
    /// Booked and usable connections per policy.
    pub capacity: CapacityMetrics,
    /// Label sets written per policy: gauges of vanished workloads, and every series of a
    /// deleted policy, are removed.
    written: Mutex<HashMap<String, Written>>,
}

impl Metrics {
    /// Creates the metrics and registers them under `poolwarden_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            sessions: Family::default(),
            terminations: Family::default(),
            findings: Family::default(),
            utilization: Family::default(),
            oldest_transaction: Family::default(),
            protected: Family::default(),
            poolers_unread: Family::default(),
            evictions: Family::default(),
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            reconcile_lateness: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            reconcile_errors: Family::default(),
            leader: Gauge::default(),
            monitoring_connections: Gauge::default(),
            server_looks: LookCounters::default(),
            capacity: CapacityMetrics::default(),
            written: Mutex::default(),
        };
        let r = registry.sub_registry_with_prefix("poolwarden");
        r.register(
            "sessions",
            "Client sessions governed by a policy, by workload and state",
            metrics.sessions.clone(),
        );
        r.register(
            "terminations",
            "Sessions terminated, by reason",
            metrics.terminations.clone(),
        );
        r.register(
            "findings",
            "Confirmed leak findings, by kind and the workload they are on",
            metrics.findings.clone(),
        );
        r.register(
            "server_utilization_ratio",
            "Client sessions over the connections usable by clients",
            metrics.utilization.clone(),
        );
        r.register(
            "oldest_transaction_seconds",
            "Age of the oldest open transaction of a client session on the policy's server (0: none)",
            metrics.oldest_transaction.clone(),
        );
        r.register(
            "protected_sessions",
            "Sessions the policy condemns but poolwarden may not end, by why (a missing privilege, a superuser's session)",
            metrics.protected.clone(),
        );
        r.register(
            "poolers_unread",
            "Poolers of the policy (spec.poolers) whose admin console the last cycle could not read; 0 without poolers; while above 0 no session is ended for plain idleness",
            metrics.poolers_unread.clone(),
        );
        r.register(
            "evictions",
            "Pods evicted (or refused by a PodDisruptionBudget, gone, failed) to recover their pinned pools, by outcome (spec.remediation)",
            metrics.evictions.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            metrics.reconcile_duration.clone(),
        );
        r.register(
            "reconcile_lateness_seconds",
            "How late cycles started: the time from when a cycle was due (one interval after the previous one of its policy started) to its start",
            metrics.reconcile_lateness.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconciles that failed, by error category",
            metrics.reconcile_errors.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the lease and acts",
            metrics.leader.clone(),
        );
        r.register(
            "monitoring_connections",
            "Database servers with an open monitoring connection (one per server, shared by its policies)",
            metrics.monitoring_connections.clone(),
        );
        let looks: Family<OutcomeLabels, Counter> = Family::default();
        // One statement each: the family's guard lives to the end of its statement, and a
        // second `get_or_create` under it would wait for the first forever.
        let outcome = |outcome: &str| OutcomeLabels {
            outcome: outcome.to_owned(),
        };
        let answered = looks.get_or_create(&outcome("answered")).clone();
        let failed = looks.get_or_create(&outcome("failed")).clone();
        let server_looks = LookCounters { answered, failed };
        r.register(
            "server_looks",
            "Looks taken at the database servers, by whether the server answered: about one per interval per server, however many policies share it",
            looks,
        );
        Self {
            capacity: CapacityMetrics::register(r),
            server_looks,
            ..metrics
        }
    }

    /// Counts the evictions a cycle attempted, by outcome.
    pub fn record_evictions(&self, policy: &str, results: &[(Eviction, EvictionOutcome)]) {
        let mut written = self.written.lock().ok();
        for (_, outcome) in results {
            let labels = EvictionLabels {
                policy: policy.to_owned(),
                outcome: crate::report::eviction_audit::action(outcome).to_owned(),
            };
            self.evictions.get_or_create(&labels).inc();
            if let Some(w) = written.as_mut() {
                w.entry(policy.to_owned())
                    .or_default()
                    .evictions
                    .insert(labels);
            }
        }
    }

    /// Records what a cycle saw and did.
    pub fn record(&self, policy: &str, cycle: &Cycle) {
        let d = &cycle.decision;
        let engine = cycle.snapshot.server.flavour.label().to_owned();
        // Replace the policy's gauges: workloads and findings that went away must not linger.
        self.remove_gauges(policy);
        let mut sessions = Vec::new();
        let mut findings = Vec::new();
        for g in &d.groups {
            let workload = workload_label(&g.source);
            for (state, n) in [
                ("active", g.counts.active),
                ("idle", g.counts.idle),
                ("idle_in_transaction", g.counts.idle_in_transaction),
                ("other", g.counts.other),
            ] {
                let labels = SessionLabels {
                    policy: policy.to_owned(),
                    workload: workload.clone(),
                    state: state.to_owned(),
                    engine: engine.clone(),
                };
                self.sessions.get_or_create(&labels).inc_by(i64::from(n));
                sessions.push(labels);
            }
        }
        let mut reasons = HashSet::new();
        for t in &cycle.outcome.terminated {
            let labels = ReasonLabels {
                policy: policy.to_owned(),
                reason: t.reason.as_str().to_owned(),
                engine: engine.clone(),
            };
            self.terminations.get_or_create(&labels).inc();
            reasons.insert(labels);
        }
        for f in d.findings.iter().filter(|f| f.confirmed) {
            let labels = FindingLabels {
                policy: policy.to_owned(),
                kind: f.shown.kind.as_str().to_owned(),
                engine: engine.clone(),
                workload: match &f.shown.subject {
                    Subject::Source { source } => workload_label(source),
                    Subject::Server => "server".to_owned(),
                },
            };
            self.findings.get_or_create(&labels).inc();
            findings.push(labels);
        }
        let server = ServerLabels {
            policy: policy.to_owned(),
            engine,
        };
        self.utilization
            .get_or_create(&server)
            .set(f64::from(d.capacity.utilization_percent) / 100.0);
        self.capacity.record(&server, &d.capacity);
        if let Ok(mut written) = self.written.lock() {
            let w = written.entry(policy.to_owned()).or_default();
            w.sessions = sessions;
            w.findings = findings;
            w.server = Some(server);
            w.reasons.extend(reasons);
        }
        let snapshot = &cycle.snapshot;
        let oldest = snapshot
            .sessions
            .iter()
            .filter(|s| s.is_client_backend() && s.pid != snapshot.own_pid)
            .filter_map(|s| s.xact_start)
            .min()
            .map_or(0.0, |start| {
                elapsed(start, snapshot.observed_at).as_secs_f64()
            });
        self.oldest_transaction
            .get_or_create(&PolicyLabels {
                policy: policy.to_owned(),
            })
            .set(oldest);
        // 0 for a policy without poolers, so that the alert on it has a series to watch.
        self.poolers_unread
            .get_or_create(&PolicyLabels {
                policy: policy.to_owned(),
            })
            .set(cycle.unread_poolers.len() as i64);
        for (protection, label) in PROTECTIONS {
            let n = d
                .protected
                .iter()
                .filter(|p| p.protection == protection)
                .count();
            self.protected
                .get_or_create(&ProtectionLabels {
                    policy: policy.to_owned(),
                    protection: label.to_owned(),
                })
                .set(n as i64);
        }
    }

    /// Starts timing a reconcile of `policy`: the time is recorded when the timer is dropped,
    /// on every path out of the reconcile.
    pub fn reconcile_timer(&self, policy: &str) -> ReconcileTimer {
        let histogram = self
            .reconcile_duration
            .get_or_create(&PolicyLabels {
                policy: policy.to_owned(),
            })
            .clone();
        ReconcileTimer {
            histogram,
            started: Instant::now(),
        }
    }

    pub fn error(&self, policy: &str, category: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                policy: policy.to_owned(),
                category: category.to_owned(),
            })
            .inc();
        if let Ok(mut written) = self.written.lock() {
            let w = written.entry(policy.to_owned()).or_default();
            w.categories.insert(category.to_owned());
        }
    }

    /// Removes the gauges the policy's last cycle set; its counters stay.
    fn remove_gauges(&self, policy: &str) {
        let previous = self.written.lock().ok().and_then(|mut w| {
            w.get_mut(policy).map(|w| {
                (
                    std::mem::take(&mut w.sessions),
                    std::mem::take(&mut w.findings),
                    w.server.take(),
                )
            })
        });
        if let Some((sessions, findings, server)) = previous {
            for l in sessions {
                self.sessions.remove(&l);
            }
            for l in findings {
                self.findings.remove(&l);
            }
            if let Some(server) = server {
                self.utilization.remove(&server);
                self.capacity.remove(&server);
            }
        }
        let labels = PolicyLabels {
            policy: policy.to_owned(),
        };
        self.oldest_transaction.remove(&labels);
        self.poolers_unread.remove(&labels);
        for (_, label) in PROTECTIONS {
            self.protected.remove(&ProtectionLabels {
                policy: policy.to_owned(),
                protection: label.to_owned(),
            });
        }
    }

    /// Forgets a deleted policy: every series that names it disappears, gauges and counters
    /// alike (a series of a policy that no longer exists would say something untrue).
    pub fn forget(&self, policy: &str) {
        self.remove_gauges(policy);
        let written = self.written.lock().ok().and_then(|mut w| w.remove(policy));
        for labels in written.iter().flat_map(|w| &w.reasons) {
            self.terminations.remove(labels);
        }
        for labels in written.iter().flat_map(|w| &w.evictions) {
            self.evictions.remove(labels);
        }
        for category in written.iter().flat_map(|w| &w.categories) {
            self.reconcile_errors.remove(&ErrorLabels {
                policy: policy.to_owned(),
                category: category.clone(),
            });
        }
        self.reconcile_duration.remove(&PolicyLabels {
            policy: policy.to_owned(),
        });
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// The bounded `workload` label of a source: addresses and application names are not bounded.
fn workload_label(source: &Source) -> String {
    match source {
        Source::Workload(w) => w.to_string(),
        Source::Client { .. } => "unattributed".to_owned(),
        Source::Pooler { .. } => "pooler".to_owned(),
    }
}
