//! One controller runtime per scope (a namespace, or all): it watches the scope's PoolPolicies
//! (and their Secrets' metadata) and reconciles each policy when it changes, when its interval
//! comes round, and at once when this replica becomes the leader. The runtimes share one bound
//! on the reconciles running at once.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector;
use kube::{Api, Client};

use super::leader::became_leader;
use crate::api::PoolPolicy;
use crate::controller::cluster::kinds;
use crate::controller::cluster::readiness::FirstList;
use crate::controller::cluster::trimmed::TrimmedMeta;
use crate::controller::cluster::watch;
use crate::controller::cluster::watcher::{self, ListMode};
use crate::controller::connections::engines::Connector;
use crate::controller::connections::secret;
use crate::controller::context::Context;
use crate::controller::reconcile::{self, error::error_policy};

/// The watches of one scope's controller: its PoolPolicies, and its Secrets if watched.
pub struct OwnWatches {
    pub scope: Option<String>,
    pub policies: FirstList,
    pub secrets: Option<FirstList>,
}

/// One controller runtime over the policies of a scope (a namespace, or all).
pub async fn run<C: Connector>(
    client: Client,
    watches: OwnWatches,
    (reader, writer): (
        reflector::Store<PoolPolicy>,
        reflector::store::Writer<PoolPolicy>,
    ),
    mode: Arc<ListMode>,
    ctx: Arc<Context<C>>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let scope = watches.scope.as_deref();
    let policies: Api<PoolPolicy> = match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let name = watches.policies.name().to_owned();
    // Reconcile on spec changes and deletion, not on our own status writes: those would loop.
    let changes = watcher::watcher(policies, mode.clone(), watch::PAGE, &name)
        .inspect(watch::follow(watches.policies))
        .reflect(writer)
        .applied_objects()
        .predicate_filter(watch::meaningful_change, Default::default());
    let mut controller = Controller::for_stream(changes, reader.clone())
        .with_config(controller::Config::default().concurrency(concurrency))
        .reconcile_all_on(became_leader(ctx.leader.changes()));
    if let Some(first) = watches.secrets {
        let api = watch::metadata_api(&client, scope, &kinds::SECRET);
        let secret_changes = watcher::watcher(api, mode, watch::PAGE, first.name())
            .inspect(watch::secret_versions(
                ctx.secrets.clone(),
                watches.scope.clone(),
            ))
            .inspect(watch::follow(first))
            .touched_objects();
        controller = controller.watches_stream_with(
            secret_changes,
            move |secret: TrimmedMeta| secret::policies_using(&reader, &secret),
            kinds::SECRET.api_resource(),
        );
    }
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                // error_policy has said it, with when the next try is.
                Err(controller::Error::ReconcilerFailed(_, object)) => {
                    tracing::debug!(%object, "reconcile failed")
                }
                // The watch has said it (see watcher.rs), and retries by itself.
                Err(controller::Error::QueueError(error)) => {
                    tracing::debug!(%error, "a watch of the controller failed")
                }
                Err(controller::Error::ObjectNotFound(object)) => {
                    tracing::warn!(%object, "asked to reconcile a PoolPolicy the cache does not hold")
                }
                Err(error) => tracing::warn!(%error, "the controller's event stream failed"),
            }
        })
        .await;
}

/// Each of `scopes` runtimes' share of `total` reconciles at once: at least one each.
pub fn per_scope(total: u16, scopes: usize) -> u16 {
    let scopes = u16::try_from(scopes.max(1)).unwrap_or(u16::MAX);
    (total / scopes).max(1)
}

#[cfg(test)]
mod tests {
    use super::per_scope;

    #[test]
    fn the_concurrency_is_shared_among_the_scopes_each_running_one_at_least() {
        assert_eq!(per_scope(16, 1), 16);
        assert_eq!(per_scope(16, 3), 5);
        assert_eq!(per_scope(2, 5), 1);
        assert_eq!(per_scope(16, 0), 16);
    }
}
