//! Step 2 of a reconcile: what a valid policy refers to. Its Secret's URL (read only when the
//! Secret changed), the engine that URL names (shared with the other policies on that target),
//! the console URLs of the poolers in front (from their Secrets, by the same rules), and its view
//! of the cluster from the index (its own namespace only). A pooler whose Secret cannot be read
//! does not stop the cycle: it is passed on as unread, which keeps every idle session alive.

use jiff::Timestamp;

use super::context::Context;
use super::engines::{Connector, SharedEngine};
use super::error::ReconcileError;
use super::poolers::Wanted;
use super::validate::Valid;
use crate::api::{PoolPolicy, PoolerTarget};
use crate::cycle::UnreadPooler;
use crate::decide::ClusterView;

/// What the cycle runs on.
pub struct Inputs<E> {
    pub engine: SharedEngine<E>,
    pub view: ClusterView,
    /// The pooler consoles to read.
    pub poolers: Vec<Wanted>,
    /// The poolers whose Secret could not be read.
    pub unusable: Vec<UnreadPooler>,
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
    let (poolers, unusable) = pooler_urls(ctx, namespace, &policy.spec.poolers).await;
    Ok(Inputs {
        engine,
        view,
        poolers,
        unusable,
    })
}

/// The console URL of every pooler, from its Secret; the Secrets that fail, as unread poolers.
async fn pooler_urls<C: Connector>(
    ctx: &Context<C>,
    namespace: &str,
    targets: &[PoolerTarget],
) -> (Vec<Wanted>, Vec<UnreadPooler>) {
    let mut wanted = Vec::new();
    let mut unusable = Vec::new();
    for target in targets {
        let secret = &target.console_secret_ref;
        match ctx
            .secrets
            .database_url(&ctx.client, namespace, secret)
            .await
        {
            Ok(url) => wanted.push(Wanted {
                name: target.name.clone(),
                url,
            }),
            Err(e) => {
                let name = target
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("secret/{}", secret.name));
                unusable.push(UnreadPooler {
                    message: format!("pooler {name}: {e}"),
                    name,
                    reason: e.reason(),
                });
            }
        }
    }
    (wanted, unusable)
}
