//! The cluster as the deciding function sees it: pods, their workloads, recently departed pods.
//!
//! Plain data, filled by the controller from its watch caches and empty when poolwarden runs
//! outside Kubernetes. Nothing here talks to an API server.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use jiff::Timestamp;
use serde::Serialize;

use super::name::Name;
use super::scale::ScaleSpec;

/// A workload that owns pods: `Deployment/orders-api` in `shop`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
/// Its names are shared ([`Name`]): every session attributed to it carries a copy.
pub struct WorkloadRef {
    pub namespace: Name,
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`, `ReplicaSet` or `Pod` (a bare pod).
    pub kind: Name,
    pub name: Name,
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// A running pod, trimmed to what attribution needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodInfo {
    pub name: Name,
    pub ips: Vec<IpAddr>,
    /// When the pod started; a session from its IP that is older belongs to someone else.
    pub started_at: Option<Timestamp>,
    pub workload: WorkloadRef,
    /// Running with its `Ready` condition true: serving. Evictions wait for Ready replacements.
    pub ready: bool,
}

/// A pod that is gone; sessions it opened and left behind are orphans.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DepartedPod {
    pub name: Name,
    pub ips: Vec<IpAddr>,
    pub started_at: Option<Timestamp>,
    pub departed_at: Timestamp,
    pub workload: WorkloadRef,
}

/// A workload's capacity facts and poolwarden's annotations currently on it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkloadInfo {
    pub workload: WorkloadRef,
    /// How far it may scale: its pods running now, its replicas, rollout strategy and
    /// autoscaler, and `poolwarden.io/max-replicas` (see [`super::scale`]).
    pub scale: ScaleSpec,
    /// `poolwarden.io/pool-max`: the pool size plus overflow the application declares per pod.
    pub pool_max: Option<u32>,
    /// The `poolwarden.io/*` annotations it carries now.
    pub annotations: BTreeMap<String, String>,
}

/// Everything the cluster contributes to a decision.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterView {
    /// `namespace/name` of the policy, written into annotations.
    pub policy: Option<String>,
    /// Pods of the policy's namespace that its pod selector picks.
    pub pods: Vec<PodInfo>,
    pub departed: Vec<DepartedPod>,
    pub workloads: Vec<WorkloadInfo>,
}

impl ClusterView {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.departed.is_empty() && self.workloads.is_empty()
    }
}
