//! Step 5 of a reconcile: the status and the metrics, written once, from what the steps ended
//! with: a cycle, or the failure of a step. The status goes out by server-side apply, and only
//! when it says something new or its heartbeat is due; a failure keeps the last observations.

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::error::ReconcileError;
use super::patches::{self, FIELD_MANAGER};
use super::status::{self, Ended};
use crate::api::PoolPolicy;
use crate::controller::connections::engines::Connector;
use crate::controller::context::Context;
use crate::cycle::Cycle;

/// Reports `ended`. Failures that happen before a cycle (an invalid spec, the Secret, the
/// database) are the ones the status tells; the others leave it as it is.
pub async fn write<C: Connector>(
    ctx: &Context<C>,
    policy: &PoolPolicy,
    ended: &Result<Cycle, ReconcileError>,
) -> Result<(), ReconcileError> {
    let name = patches::policy_ref(policy);
    let uid = policy.uid().unwrap_or_default();
    ctx.count_connections();
    let message;
    let ended = match ended {
        Ok(cycle) => {
            ctx.metrics.record(&name, cycle);
            tracing::debug!(policy = %name, terminated = cycle.outcome.terminated.len(), "reconciled");
            Ended::Cycle {
                cycle,
                terminations_total: ctx.terminations_total(&uid),
            }
        }
        Err(e @ ReconcileError::Invalid(_)) => {
            message = e.to_string();
            Ended::InvalidSpec(&message)
        }
        Err(ReconcileError::Secret(e)) => {
            message = e.to_string();
            Ended::Secret(e.reason(), &message)
        }
        Err(ReconcileError::Engine(e) | ReconcileError::Database(e)) => Ended::Database(e),
        Err(_) => return Ok(()),
    };
    write_status(ctx, policy, &ended).await
}

/// Writes the status when it says something new, or the heartbeat is due; only the leader writes.
async fn write_status<C: Connector>(
    ctx: &Context<C>,
    policy: &PoolPolicy,
    ended: &Ended<'_>,
) -> Result<(), ReconcileError> {
    let now = Timestamp::now();
    let previous = policy.status.as_ref();
    let new = status::build(previous, policy.metadata.generation, ended, now);
    if !status::worth_writing(previous, &new, now) || !ctx.may_act() {
        return Ok(());
    }
    let api: Api<PoolPolicy> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    api.patch_status(
        &policy.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patches::status(&new)),
    )
    .await
    .map_err(ReconcileError::Status)?;
    Ok(())
}
