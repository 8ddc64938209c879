//! How full the server is, as one snapshot shows it.

use serde::Serialize;

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
    /// New sessions per second, when measurable.
    pub new_sessions_per_second: Option<f64>,
}

/// Measures capacity; bookings and the churn rate are filled in by their detectors.
pub fn measure(snapshot: &Snapshot, scope_sessions: u32, scope_budget: Option<u32>) -> Capacity {
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
    Capacity {
        client_sessions,
        max_connections: snapshot.server.max_connections,
        reserved_connections: snapshot.server.reserved_total(),
        usable_connections: usable,
        utilization_percent,
        scope_sessions,
        scope_budget,
        booked_connections: None,
        new_sessions_per_second: None,
    }
}
