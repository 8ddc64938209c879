//! The capacity part of a PoolPolicy's status: the connections the workloads' pools may open at
//! their largest scale against what the server accepts (`Overbooked`), and the pool per pod
//! poolwarden learned where nobody declared one, kept here so that a restarted controller does
//! not start learning again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many workloads are listed in `capacity.workloads` (the largest bookings).
pub const CAPACITY_WORKLOADS: usize = 100;

/// The workloads' pools at their largest scale against the server's usable connections.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityStatus {
    /// Connections the server accepts from applications (`max_connections` less the reserved
    /// slots).
    pub usable_connections: u32,
    /// What the workloads' pools may open at once: Σ (largest scale × pool per pod). More than
    /// `usableConnections` is `Overbooked`.
    pub booked_connections: u64,
    /// Where the sum crosses the usable connections, starting from the replicas running now,
    /// e.g. `at 13 of Deployment/orders-api's 20 replicas` or `during a rollout of
    /// Deployment/checkout-api at its 6 replicas (8 pods at once)`. Absent while it fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaks_at: Option<String>,
    /// Each workload's share, the largest first (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadBooking>,
}

/// One workload's share of the booked connections.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadBooking {
    /// `Kind/name`.
    pub workload: String,
    /// The most replicas it may be scaled to: its HorizontalPodAutoscaler's `maxReplicas`,
    /// else `spec.replicas` (a DaemonSet: the nodes that run it), or its
    /// `poolwarden.io/max-replicas` annotation.
    pub replicas: u32,
    /// The pods a rollout adds at that scale (a Deployment's `maxSurge`, rounded up).
    pub surge: u32,
    /// Where `replicas` and `surge` come from, e.g. `HorizontalPodAutoscaler/orders-api
    /// maxReplicas, maxSurge 25%`.
    pub scale_from: String,
    /// The connections one pod's pool may open.
    pub pool_per_pod: u32,
    /// How `poolPerPod` was found: `declared` (the workload's `poolwarden.io/pool-max`),
    /// `policy` (`spec.budgets.maxConnectionsPerPod`) or `learned` (the most sessions one of
    /// its pods was seen to hold: see `learnedPools`).
    pub pool_from: String,
    /// Its pods at the largest scale × `poolPerPod`.
    pub connections: u64,
}

/// The most sessions one pod of a workload was seen to hold on the server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LearnedPoolStatus {
    /// `Kind/name`.
    pub workload: String,
    /// The pool per pod as learned: the most sessions one of its pods held, in this period or
    /// the one before (a period is a week; a pool made smaller is forgotten within two).
    pub sessions_per_pod: u32,
    /// The most since `periodStart`.
    pub this_period: u32,
    pub period_start: Time,
}
