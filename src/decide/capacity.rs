//! How full the server is, as one snapshot shows it.

use serde::Serialize;

use super::findings::Booking;
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
    /// Σ (largest scale × pool per pod) over the workloads (or clients) seen, when a pool per
    /// pod is known for any.
    pub booked_connections: Option<u64>,
    /// Each workload's share of `booked_connections`, the biggest holders first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bookings: Vec<Booking>,
    /// Where the bookings cross the usable connections, in words ("at 13 of
    /// Deployment/orders-api's 20 replicas"); only in a cluster, only while they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaks_at: Option<String>,
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
        bookings: Vec::new(),
        breaks_at: None,
        new_sessions_per_second: None,
    }
}
