//! Step 2 of a reconcile: what a valid policy refers to. Its Secret's URL (read only when the
//! Secret changed), the engine that URL names (shared with the other policies on that target),
//! and its view of the cluster from the index (its own namespace only).

use jiff::Timestamp;

use super::context::Context;
use super::engines::{Connector, SharedEngine};
use super::error::ReconcileError;
use super::validate::Valid;
use crate::api::PoolPolicy;
use crate::decide::ClusterView;

/// What the cycle runs on.
pub struct Inputs<E> {
    pub engine: SharedEngine<E>,
    pub view: ClusterView,
}

pub async fn inputs<C: Connector>(
    ctx: &Context<C>,
    policy: &PoolPolicy,
    valid: &Valid<'_>,
    name: &str,
) -> Result<Inputs<C::Engine>, ReconcileError> {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    let url = ctx
        .secrets
        .database_url(&ctx.client, namespace, valid.secret)
        .await?;
    let uid = policy.metadata.uid.as_deref().unwrap_or_default();
    let engine = ctx
        .engines
        .for_policy(uid, &url)
        .map_err(ReconcileError::Engine)?;
    let view = {
        let index = ctx.index.read().unwrap_or_else(|e| e.into_inner());
        index.view(namespace, valid.selector.as_ref(), name, Timestamp::now())
    };
    Ok(Inputs { engine, view })
}
