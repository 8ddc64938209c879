//! Step 2 of a reconcile: what a valid policy refers to. Its Secret's URL (read only when the
//! Secret changed), the server that URL names (its connection and looks shared with the other
//! policies on that server),
//! the console URLs of the poolers in front (from their Secrets, by the same rules), and its view
//! of the cluster from the index (its own namespace only). A pooler whose Secret cannot be read
//! does not stop the cycle: it is passed on as unread, which keeps every idle session alive.

use jiff::Timestamp;
use kube::core::Selector;

use super::error::ReconcileError;
use super::status::reasons;
use super::validate::Valid;
use crate::api::{PoolPolicy, PoolerTarget};
use crate::controller::connections::engines::{Connector, SharedServer};
use crate::controller::connections::poolers::{self, Wanted};
use crate::controller::context::Context;
use crate::cycle::UnreadPooler;
use crate::decide::ClusterView;

/// What the cycle runs on.
pub struct Resolved<E> {
    pub server: SharedServer<E>,
    /// The policy's database URL (never leaves memory).
    pub url: String,
    pub view: ClusterView,
    /// The pooler consoles to read.
    pub poolers: Vec<Wanted>,
    /// The poolers whose Secret could not be read.
    pub unusable: Vec<UnreadPooler>,
}

pub async fn resolve<C: Connector>(
    ctx: &Context<C>,
    policy: &PoolPolicy,
    valid: &Valid<'_>,
    name: &str,
) -> Result<Resolved<C::Engine>, ReconcileError> {
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    let url = ctx
        .secrets
        .database_url(&ctx.client, namespace, valid.secret)
        .await?;
    let uid = policy.metadata.uid.as_deref().unwrap_or_default();
    let server = ctx
        .engines
        .for_policy(uid, &url)
        .map_err(ReconcileError::Engine)?;
    let view = {
        let index = ctx.index.read().unwrap_or_else(|e| e.into_inner());
        index.view(namespace, valid.selector.as_ref(), name, Timestamp::now())
    };
    let (poolers, unusable) = pooler_urls(
        ctx,
        namespace,
        &policy.spec.poolers,
        &valid.pooler_selectors,
    )
    .await;
    Ok(Resolved {
        server,
        url,
        view,
        poolers,
        unusable,
    })
}

/// The console URL of every pooler (of every Running, Ready replica of one given by `pods`),
/// from its Secret. What cannot be read is returned as unread poolers: a Secret that fails, a
/// pods pooler with no pod or a replica that runs but is not Ready (its connections to the
/// server cannot be told from a client's).
async fn pooler_urls<C: Connector>(
    ctx: &Context<C>,
    namespace: &str,
    targets: &[PoolerTarget],
    selectors: &[Option<Selector>],
) -> (Vec<Wanted>, Vec<UnreadPooler>) {
    let mut wanted = Vec::new();
    let mut unusable = Vec::new();
    for (target, selector) in targets.iter().zip(selectors) {
        let Some(secret) = target.secret() else {
            continue; // validate refuses it
        };
        let name = target
            .name
            .clone()
            .unwrap_or_else(|| format!("secret/{}", secret.name));
        let unread = |name: String, reason: &'static str, message: String| UnreadPooler {
            message: format!("pooler {name}: {message}"),
            name,
            reason,
        };
        let url = match ctx
            .secrets
            .database_url(&ctx.client, namespace, secret)
            .await
        {
            Ok(url) => url,
            Err(e) => {
                unusable.push(unread(name, e.reason(), e.to_string()));
                continue;
            }
        };
        let (Some(selector), Some(pods)) = (selector, &target.pods) else {
            wanted.push(Wanted {
                name: target.name.clone(),
                url,
            });
            continue;
        };
        let replicas = {
            let index = ctx.index.read().unwrap_or_else(|e| e.into_inner());
            index.selected_pods(namespace, selector)
        };
        if replicas.is_empty() {
            unusable.push(unread(
                name,
                reasons::NO_POOLER_PODS,
                format!("no pod in {namespace} matches {selector}"),
            ));
            continue;
        }
        for pod in replicas {
            let replica = format!("{name}/{}", pod.name);
            match pod.ip {
                // Not started yet: it holds no connection.
                None => {}
                Some(_) if !pod.ready => unusable.push(unread(
                    replica,
                    reasons::POOLER_POD_NOT_READY,
                    "running but not Ready".into(),
                )),
                Some(ip) => match poolers::at_address(&url, ip, pods.port) {
                    Ok(url) => wanted.push(Wanted {
                        name: Some(replica),
                        url,
                    }),
                    Err(message) => {
                        unusable.push(unread(replica, reasons::INVALID_POOLER_URL, message))
                    }
                },
            }
        }
    }
    (wanted, unusable)
}
