//! `spec.remediation`: what poolwarden may do beyond ending sessions, to give a workload its pool
//! back. Off by default.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What poolwarden may do, beyond ending sessions, for a workload whose pool was pinned. Ending
/// the sessions of a pinned pool frees the server, not the application: its pool still counts
/// them as checked out until the process restarts. Off by default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Remediation {
    /// `Evict`: once `Enforce` has ended the sessions of a pod whose every session sat idle in a
    /// transaction (a pinned pool), evict that pod through the Eviction API, which honours
    /// PodDisruptionBudgets, so that its ReplicaSet (under a Deployment) or StatefulSet replaces
    /// it. Never a bare pod, a Job's or a DaemonSet's; one pod per workload at a time, the next
    /// only once every pod of the workload is Ready again; a budget refusing the eviction is
    /// retried later, never forced; nothing is ever deleted directly. In `DryRun`, reports say
    /// what would be evicted. The chart must grant `create` on `pods/eviction`
    /// (`remediation.evictPods: true`). `Off` (the default): never.
    #[serde(default)]
    pub pinned_pools: PinnedPoolRemedy,
    /// A workload must have at least this many Ready pods for one of them to be evicted.
    /// Default 2; 1 allows evicting a workload's only pod (it serves nothing until the
    /// replacement is Ready).
    #[serde(default = "default_min_ready_pods")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_ready_pods: u32,
    /// At most this many pods evicted by this policy in any hour. Default 3.
    #[serde(default = "default_max_evictions_per_hour")]
    #[schemars(range(min = 1, max = 100))]
    pub max_evictions_per_hour: u32,
}

/// What to do for a pod whose pinned pool `Enforce` has ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PinnedPoolRemedy {
    /// Nothing beyond ending the sessions (and saying that the workload must be restarted).
    #[default]
    Off,
    /// Evict the pod, so that its controller replaces it.
    Evict,
}

fn default_min_ready_pods() -> u32 {
    2
}

fn default_max_evictions_per_hour() -> u32 {
    3
}

impl Default for Remediation {
    fn default() -> Self {
        Self {
            pinned_pools: PinnedPoolRemedy::Off,
            min_ready_pods: default_min_ready_pods(),
            max_evictions_per_hour: default_max_evictions_per_hour(),
        }
    }
}

impl Remediation {
    /// The default stays out of a policy written back (`kubectl get -o yaml`).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}
