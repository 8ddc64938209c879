//! Copies of poolwarden's annotations that another controller made and never takes back. The
//! Deployment controller copies a Deployment's annotations onto its ReplicaSets and never removes
//! a key the Deployment lost (a CronJob's Jobs are treated alike, should copies appear there). So
//! once the workload no longer carries a key, poolwarden takes that key off the objects below it
//! in its chain; never before: a copy removed while the workload still carries the key comes back
//! at the controller's next sync, a write every cycle.
//!
//! Called after every cycle (the index has heard of the workload's annotations being removed by
//! then: a copy of a key removed in one cycle goes in the next) and when a policy is deleted (with
//! the workloads just cleaned, before the index has heard of it: the policy is gone after that).
//! Only copies naming the policy are its business.

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};

use super::error::ReconcileError;
use super::patches;
use crate::controller::cluster::kinds;
use crate::controller::connections::engines::Connector;
use crate::controller::context::Context;
use crate::decide::WorkloadRef;

/// Takes the stale copies of `policy`'s annotations off the objects of `namespace`; `cleared`
/// are workloads known to carry none of poolwarden's annotations any more, `wanted` those the
/// policy wants annotated now (see [`ClusterIndex::stale_copies`](super::ClusterIndex)). Every
/// copy is tried; the first failure is returned.
pub async fn take_back<C: Connector>(
    ctx: &Context<C>,
    namespace: &str,
    policy: &str,
    cleared: &[WorkloadRef],
    wanted: &[WorkloadRef],
) -> Result<(), ReconcileError> {
    let stale = {
        let index = ctx.index.read().unwrap_or_else(|e| e.into_inner());
        index.stale_copies(namespace, policy, cleared, wanted)
    };
    let mut first_failure = None;
    for copy in stale {
        if !ctx.may_act() {
            return Err(ReconcileError::LostLease);
        }
        let Some(kind) = kinds::owner(&copy.object.kind) else {
            continue;
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), namespace, &kind.api_resource());
        let patch = Patch::Merge(patches::remove_keys(&copy.keys));
        match api
            .patch(&copy.object.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                tracing::info!(object = %copy.object, keys = ?copy.keys, "stale copies of annotations removed")
            }
            // Gone in the meantime: nothing left to take back.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                tracing::warn!(object = %copy.object, error = %source, "removing stale copies of annotations failed");
                first_failure.get_or_insert(ReconcileError::Copies {
                    object: copy.object,
                    source,
                });
            }
        }
    }
    first_failure.map_or(Ok(()), Err)
}
