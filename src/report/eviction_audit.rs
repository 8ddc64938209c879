//! The audit trail of evictions: one record for every pod the controller set out to evict for its
//! pinned pool (`spec.remediation`), saying what became of it. Logged like the sessions' records
//! (target `poolwarden::audit`, JSON under `--log-format json`), beside them.
//!
//! Records carry pod names: they are for people and log stores, never metric labels.

use jiff::Timestamp;
use serde::Serialize;

use crate::decide::{Eviction, EvictionOutcome};

/// One pod, one eviction attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvictionRecord {
    pub time: Timestamp,
    /// `evicted`, `refused` (a PodDisruptionBudget), `gone` or `failed`.
    pub action: &'static str,
    /// `namespace/name` of the PoolPolicy.
    pub policy: String,
    /// The policy's cycle that acted.
    pub cycle: u64,
    pub pod: String,
    /// `Kind/name` of its workload.
    pub workload: String,
    /// Why: its pool was pinned, and `Enforce` ended this many of its sessions.
    pub sessions_ended: u32,
    /// The API server's words, when it did not evict.
    pub detail: Option<String>,
}

/// The action word of an outcome (bounded: also a metric label).
pub fn action(outcome: &EvictionOutcome) -> &'static str {
    match outcome {
        EvictionOutcome::Evicted => "evicted",
        EvictionOutcome::Refused { .. } => "refused",
        EvictionOutcome::Gone => "gone",
        EvictionOutcome::Failed { .. } => "failed",
    }
}

/// The records of one cycle's evictions.
pub fn records(
    policy: &str,
    cycle: u64,
    evictions: &[(Eviction, EvictionOutcome)],
    at: Timestamp,
) -> Vec<EvictionRecord> {
    evictions
        .iter()
        .map(|(e, outcome)| EvictionRecord {
            time: at,
            action: action(outcome),
            policy: policy.to_owned(),
            cycle,
            pod: e.pod.clone(),
            workload: e.workload.to_string(),
            sessions_ended: e.sessions,
            detail: match outcome {
                EvictionOutcome::Refused { message } | EvictionOutcome::Failed { message } => {
                    Some(message.clone())
                }
                EvictionOutcome::Evicted | EvictionOutcome::Gone => None,
            },
        })
        .collect()
}

/// Logs each record: at `warn` when a pod was evicted (a workload lost a pod) or could not be,
/// at `info` when it was gone already.
pub fn log(records: &[EvictionRecord]) {
    for r in records {
        macro_rules! emit {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    target: "poolwarden::audit",
                    action = r.action,
                    policy = %r.policy,
                    cycle = r.cycle,
                    pod = %r.pod,
                    workload = %r.workload,
                    sessions_ended = r.sessions_ended,
                    detail = r.detail.as_deref(),
                    $message
                )
            };
        }
        match r.action {
            "gone" => emit!(info, "pod to evict already gone"),
            "evicted" => emit!(warn, "pod evicted: its pool was pinned"),
            _ => emit!(warn, "pod not evicted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::WorkloadRef;

    #[test]
    fn each_attempt_is_one_record_with_the_servers_words_when_it_did_not_evict() {
        let eviction = |pod: &str| Eviction {
            pod: pod.to_owned(),
            workload: WorkloadRef {
                namespace: "shop".into(),
                kind: "Deployment".into(),
                name: "orders".into(),
            },
            sessions: 25,
        };
        let at: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let refused = "Cannot evict pod as it would violate the pod's disruption budget.";
        let records = records(
            "shop/orders-db",
            7,
            &[
                (eviction("orders-a"), EvictionOutcome::Evicted),
                (
                    eviction("orders-b"),
                    EvictionOutcome::Refused {
                        message: refused.to_owned(),
                    },
                ),
            ],
            at,
        );
        assert_eq!(
            serde_json::to_value(&records).unwrap(),
            serde_json::json!([
                {"time": "2026-01-01T12:00:00Z", "action": "evicted", "policy": "shop/orders-db",
                 "cycle": 7, "pod": "orders-a", "workload": "Deployment/orders",
                 "sessionsEnded": 25, "detail": null},
                {"time": "2026-01-01T12:00:00Z", "action": "refused", "policy": "shop/orders-db",
                 "cycle": 7, "pod": "orders-b", "workload": "Deployment/orders",
                 "sessionsEnded": 25, "detail": refused},
            ])
        );
    }
}
