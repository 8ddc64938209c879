//! What poolwarden writes back into a PoolPolicy: the story of the last look at the server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::capacity::{CapacityStatus, LearnedPoolStatus};

/// Observed state, written only when it changes (plus a slow heartbeat).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `DatabaseReachable` and `Degraded`, with reasons such as `InvalidSpec`,
    /// `AuthFailed`, `PermissionDenied` or `ServerFull`; with `spec.poolers`, also
    /// `PoolersReachable` (whether every pooler's console was read, and why not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the server was last looked at (the database's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,
    /// Sessions on the server over the connections usable by clients, e.g. `42/97`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<String>,
    /// The server's version and connection limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerStatus>,
    /// Sessions on the server by state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionCounts>,
    /// Percent of the client-usable connections in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization_percent: Option<u32>,
    /// Sessions terminated in the last cycle and since the controller started.
    #[serde(default)]
    pub terminations: TerminationCounts,
    /// How many workloads (or client applications) currently have a confirmed leak finding.
    #[serde(default)]
    pub leaking_workloads: u32,
    /// The worst leaking workloads, most sessions first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_leaks: Vec<LeakReport>,
    /// Pods evicted to give their pinned pools back to their applications, pods waiting for it
    /// and why, and what `DryRun` would evict (`spec.remediation`); absent when there is nothing
    /// to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evictions: Option<EvictionStatus>,
    /// The connections the workloads' pools may open at their largest scale (an autoscaler's
    /// maximum, the surge of a rollout), against what the server accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityStatus>,
    /// The pool per pod learned for workloads that declare none (`poolwarden.io/pool-max`),
    /// kept across restarts of poolwarden (at most 100, the largest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learned_pools: Vec<LearnedPoolStatus>,
}

/// Evictions of pods whose pinned pool was ended (`spec.remediation`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvictionStatus {
    /// Pods this policy evicted in the last hour (`maxEvictionsPerHour` caps it).
    pub last_hour: u32,
    /// Pods waiting for their eviction, and why not yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<WaitingEviction>,
    /// In `DryRun`: the pods `Enforce` would evict now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_evict: Vec<String>,
}

/// A pod waiting for its eviction.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitingEviction {
    pub pod: String,
    /// `Kind/name` of its workload.
    pub workload: String,
    /// `DisruptionBudget`, `TooFewReady`, `ReplacementNotReady`, `HourlyCap`, `NotReplaced` or
    /// `Failed`.
    pub reason: String,
    pub message: String,
}

/// The server's identity and limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// `server_version`, e.g. `15.8`.
    pub version: String,
    /// `max_connections`.
    pub max_connections: u32,
    /// Slots ordinary roles cannot use (`superuser_reserved_connections` + `reserved_connections`).
    pub reserved_connections: u32,
}

/// Session counts by state.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionCounts {
    /// Client sessions on the whole server.
    pub total: u32,
    /// Client sessions the policy governs.
    pub in_scope: u32,
    /// Governed sessions running a statement.
    pub active: u32,
    /// Governed sessions waiting for a command.
    pub idle: u32,
    /// Governed sessions idle inside an open transaction (aborted ones included).
    pub idle_in_transaction: u32,
}

/// Termination counters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TerminationCounts {
    /// Terminated in the last cycle.
    pub last_cycle: u32,
    /// Terminated since this controller started.
    pub total: u64,
}

/// One leaking workload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeakReport {
    /// `Kind/name` of the workload, or `application@address` outside Kubernetes.
    pub workload: String,
    /// The finding kinds, e.g. `IdleAccumulation`.
    pub findings: Vec<String>,
    /// Sessions this workload holds.
    pub sessions: u32,
    /// One line of evidence and the usual cause.
    pub detail: String,
    /// The statement most of the leak's sessions last ran, with every literal replaced by `?`
    /// (shortened; none with `spec.leakDetection.lastStatements: Off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_statement: Option<String>,
}
