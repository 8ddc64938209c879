//! How full the server is, and whether the pools pointed at it can overfill it (`Overbooked`).

use std::time::Duration;

use serde::Serialize;

use super::attribution::Source;
use super::cluster::ClusterView;
use super::findings::{Budgets, FindingKind, Observed, Subject};
use super::groups::Group;
use super::rules::Rules;
use crate::database::Snapshot;

/// The server's connection capacity as seen in one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Client sessions on the whole server.
    pub client_sessions: u32,
    pub max_connections: u32,
    /// Slots ordinary roles cannot use.
    pub reserved_connections: u32,
    /// Connections usable by application roles.
    pub usable_connections: u32,
    /// `client_sessions / usable_connections`, in percent.
    pub utilization_percent: u32,
    /// Sessions the policy governs, against its `budgets.maxConnections`.
    pub scope_sessions: u32,
    pub scope_budget: Option<u32>,
    /// Σ (max replicas × per-pod budget) over the workloads (or clients) seen, when budgets are known.
    pub booked_connections: Option<u64>,
    /// New sessions per second since the previous snapshot, when measurable.
    pub new_sessions_per_second: Option<f64>,
}

/// Measures capacity and checks for `Overbooked`.
pub fn assess(
    snapshot: &Snapshot,
    scope_sessions: u32,
    groups: &[Group],
    cluster: &ClusterView,
    budgets: &Budgets<'_>,
    rules: &Rules,
) -> (Capacity, Option<Observed>) {
    let client_sessions = snapshot
        .sessions
        .iter()
        .filter(|s| s.is_client_backend())
        .count() as u32;
    let usable = snapshot.server.usable_connections();
    let utilization_percent = if usable == 0 {
        100
    } else {
        ((u64::from(client_sessions) * 100).div_ceil(u64::from(usable))) as u32
    };

    // Who is booked: every known workload in a cluster; every client seen outside one.
    let mut bookings: Vec<(String, u64)> = Vec::new();
    if cluster.workloads.is_empty() {
        for group in groups {
            if let Some(budget) = budgets.per_pod(&group.source) {
                bookings.push((
                    group.source.to_string(),
                    group.pods.len() as u64 * u64::from(budget),
                ));
            }
        }
    } else {
        for info in &cluster.workloads {
            let source = Source::Workload(info.workload.clone());
            if let Some(budget) = budgets.per_pod(&source) {
                bookings.push((
                    format!("{} ({} x {budget})", info.workload, info.max_replicas),
                    u64::from(info.max_replicas) * u64::from(budget),
                ));
            }
        }
    }
    let booked = (!bookings.is_empty()).then(|| bookings.iter().map(|(_, n)| n).sum::<u64>());

    let mut reasons = Vec::new();
    if let Some(booked) = booked
        && booked > u64::from(usable)
    {
        bookings.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top: Vec<String> = bookings
            .iter()
            .take(3)
            .map(|(who, n)| format!("{who}: {n}"))
            .collect();
        reasons.push(format!(
            "pools may open {booked} connections but the server accepts {usable} from applications (largest: {})",
            top.join(", ")
        ));
    }
    if let Some(budget) = rules.max_connections
        && budget > usable
    {
        reasons.push(format!(
            "the policy's budget of {budget} connections exceeds the {usable} the server accepts from applications"
        ));
    }
    let overbooked = (!reasons.is_empty()).then(|| Observed {
        subject: Subject::Server,
        kind: FindingKind::Overbooked,
        evidence: reasons.join("; "),
        summary: reasons.join("; "),
        pids: Vec::new(),
        // A matter of configuration, not of time: it holds as long as it is true.
        held_for: rules.window.max(Duration::from_secs(1)),
    });

    let capacity = Capacity {
        client_sessions,
        max_connections: snapshot.server.max_connections,
        reserved_connections: snapshot.server.reserved_total(),
        usable_connections: usable,
        utilization_percent,
        scope_sessions,
        scope_budget: rules.max_connections,
        booked_connections: booked,
        new_sessions_per_second: None,
    };
    (capacity, overbooked)
}
