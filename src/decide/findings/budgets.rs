//! The per-pod connection budgets a decision judges pools by.

use crate::decide::FastMap;
use crate::decide::attribution::Source;
use crate::decide::cluster::{ClusterView, WorkloadRef};
use crate::decide::rules::Rules;

/// Per-pod budgets: a workload's `poolwarden.io/pool-max`, else the policy's. Built once per
/// decision, so that a source's budget is a lookup rather than a scan of every workload (with
/// thousands of workloads, the scans per source made deciding quadratic).
pub struct Budgets<'a> {
    declared: FastMap<&'a WorkloadRef, Option<u32>>,
    policy: Option<u32>,
}

impl<'a> Budgets<'a> {
    pub fn new(cluster: &'a ClusterView, rules: &Rules) -> Self {
        let mut declared =
            FastMap::with_capacity_and_hasher(cluster.workloads.len(), Default::default());
        for info in &cluster.workloads {
            // A workload listed twice counts with its first entry, as a scan would find it.
            declared.entry(&info.workload).or_insert(info.pool_max);
        }
        Self {
            declared,
            policy: rules.max_connections_per_pod,
        }
    }

    /// The per-pod budget for a source, and whether the workload declared it itself.
    pub fn per_pod(&self, source: &Source) -> Option<u32> {
        let declared = match source {
            Source::Workload(w) => self.declared.get(w).copied().flatten(),
            Source::Client { .. } | Source::Pooler { .. } => None,
        };
        // A budget of zero is no budget at all (an annotation typo must not condemn a whole pod).
        declared
            .filter(|b| *b > 0)
            .or(self.policy)
            .filter(|b| *b > 0)
    }
}
