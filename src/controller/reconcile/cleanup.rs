//! A PoolPolicy is being deleted: take back every annotation it wrote, close its connection,
//! forget its memory and metrics. What it wrote is on the workloads at the top of their chains;
//! once they no longer carry it, the copies their controllers made below (a Deployment's
//! ReplicaSets) are taken off too ([`copies`](super::copies)): nothing in the namespace keeps a
//! `poolwarden.io/` key of the policy.

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::error::ReconcileError;
use super::{copies, patches};
use crate::api::PoolPolicy;
use crate::controller::connections::engines::Connector;
use crate::controller::context::Context;

pub async fn policy<C: Connector>(
    ctx: &Context<C>,
    policy: &PoolPolicy,
) -> Result<Action, ReconcileError> {
    let name = patches::policy_ref(policy);
    let namespace = policy.namespace().unwrap_or_default();
    let annotated = {
        let index = ctx.index.read().unwrap_or_else(|e| e.into_inner());
        index.annotated_by(&namespace, &name)
    };
    let patch = Patch::Merge(patches::remove_annotations());
    let mut cleared = Vec::new();
    for workload in &annotated {
        let Some(resource) = patches::workload_resource(workload) else {
            continue;
        };
        if !ctx.may_act() {
            return Err(ReconcileError::LostLease);
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &workload.namespace, &resource);
        match api
            .patch(&workload.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                tracing::info!(%workload, "annotations removed");
                cleared.push(workload.clone());
            }
            Err(kube::Error::Api(e)) if e.code == 404 => cleared.push(workload.clone()),
            Err(source) => {
                return Err(ReconcileError::Cleanup {
                    workload: workload.clone(),
                    source,
                });
            }
        }
    }
    copies::take_back(ctx, &namespace, &name, &cleared, &[]).await?;
    ctx.forget(&policy.uid().unwrap_or_default());
    ctx.metrics.forget(&name);
    tracing::info!(policy = %name, workloads = annotated.len(), "policy deleted; cleaned up");
    Ok(Action::await_change())
}
