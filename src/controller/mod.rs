//! `poolwarden controller`: reconciles every PoolPolicy in the cluster.
//!
//! Wiring only; each step lives in a file named after it: [`watch`] keeps the [`index`] of pods
//! and owners current (the kinds it follows are the one table of [`kinds`]), [`reconcile`] runs
//! the five steps per policy ([`validate`] → [`dereference`] → the cycle → [`act_on_cluster`] →
//! [`report`]), [`error`] chooses what a failure leads to, [`status`] and [`patches`] build what
//! is written, [`leader`] makes sure one replica acts, [`client`] says who is asking, [`http`] serves metrics and probes.
//!
//! Every replica watches and keeps its caches warm, leading or not, so that it is ready (and can
//! take over at once); only the lease holder reconciles.

mod act_on_cluster;
mod capacity;
mod capacity_metrics;
mod cleanup;
mod client;
mod context;
mod copies;
mod dereference;
mod engines;
mod error;
mod events;
mod evict;
mod http;
mod index;
mod kinds;
mod leader;
mod liveness;
mod looks;
mod metrics;
mod patches;
mod poolers;
mod readiness;
mod reconcile;
mod report;
mod scaling;
mod schedule;
mod secret;
mod shutdown;
mod status;
mod trimmed;
mod validate;
mod watch;
mod watcher;
mod webhook;

#[cfg(test)]
mod tests;

pub use client::USER_AGENT;
pub use engines::{Connector, any_engine};
pub use index::{ClusterIndex, MAX_REPLICAS};
pub use patches::{FIELD_MANAGER, FINALIZER};
pub use shutdown::{RUNTIME_TIMEOUT, SHUTDOWN_BOUND};
pub use status::{conditions, reasons};
pub use trimmed::TrimmedPod;
pub use watch::Namespaces;
pub use watcher::InitialList;
pub use webhook::{
    Certificate as WebhookCertificate, Placement as WebhookPlacement, WebhookConfig,
};

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use tokio::sync::watch as signal;

use crate::api::PoolPolicy;
use context::{Context, Parts};
use leader::{Candidate, Leadership, Timing};
use liveness::Liveness;
use metrics::Metrics;
use readiness::{FirstList, Readiness};
use secret::Secrets;
use trimmed::TrimmedMeta;
use watch::watch_name;
use watcher::ListMode;

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub namespaces: Namespaces,
    pub http_addr: SocketAddr,
    pub leader_election: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration_secs: u64,
    pub identity: String,
    /// Watch Secrets (metadata only): a changed credential re-triggers its policies, and an
    /// unchanged one is not read again.
    pub watch_secrets: bool,
    /// How the watches get their initial lists.
    pub initial_list: InitialList,
    /// How many policies are reconciled at once, at most, over all the watched scopes.
    pub concurrency: u16,
    /// The admission webhook, when it is served.
    pub webhook: Option<WebhookConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot build a Kubernetes client (in-cluster config or KUBECONFIG): {0}")]
    Client(#[from] kube::Error),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The watches of one scope's controller: its PoolPolicies, and its Secrets if watched.
struct OwnWatches {
    scope: Option<String>,
    policies: FirstList,
    secrets: Option<FirstList>,
}

/// Runs until SIGTERM or Ctrl-C, then stops within [`SHUTDOWN_BOUND`] (see [`shutdown`]):
/// lets running reconciles finish, closes database connections and releases the lease.
/// `connector` makes the engine each policy's database URL names.
pub async fn run<C: Connector>(config: Config, connector: C) -> Result<(), ControllerError> {
    let stop_rx = crate::signals::stop_requested();
    tokio::spawn({
        let stopped = stopped(stop_rx.clone());
        async move {
            stopped.await;
            tracing::info!("shutting down");
        }
    });
    let clients = client::clients().await?;
    let client = clients.api.clone();

    // Every watch registers before the first starts: ready means all of them have listed.
    let readiness = Arc::new(Readiness::default());
    let own: Vec<OwnWatches> = config
        .namespaces
        .scopes()
        .into_iter()
        .map(|scope| OwnWatches {
            policies: readiness.expect(watch_name("poolpolicies", scope.as_deref())),
            secrets: config
                .watch_secrets
                .then(|| readiness.expect(watch_name("secrets", scope.as_deref()))),
            scope,
        })
        .collect();
    let index = Arc::new(RwLock::new(ClusterIndex::default()));
    let list_mode = ListMode::new(config.initial_list);
    let watch_tasks = watch::spawn_cluster_watches(
        &client,
        &config.namespaces,
        &list_mode,
        index.clone(),
        &readiness,
    );

    let liveness = Arc::new(Liveness::default());
    for task in &watch_tasks {
        liveness.follow("a watch of the cluster", task.abort_handle());
    }
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let health = http::Health {
        registry: Arc::new(registry),
        readiness: readiness.clone(),
        liveness: liveness.clone(),
    };
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| ControllerError::Http {
            addr: config.http_addr,
            source,
        })?;
    tracing::info!(addr = %config.http_addr, "serving /metrics, /healthz, /readyz");
    let mut http_task = tokio::spawn({
        let stopped = stopped(stop_rx.clone());
        async move {
            axum::serve(listener, http::router(health))
                .with_graceful_shutdown(stopped)
                .await
        }
    });

    let leadership = if config.leader_election {
        Leadership::campaign(
            client.clone(),
            Candidate {
                namespace: config.lease_namespace.clone(),
                lease_name: config.lease_name.clone(),
                identity: config.identity.clone(),
                timing: Timing::for_lease(Duration::from_secs(config.lease_duration_secs)),
            },
        )
    } else {
        Leadership::always()
    };
    for (name, task) in leadership.loops() {
        liveness.follow(name, task);
    }
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "poolwarden".into(),
            instance: Some(config.identity.clone()),
        },
    );
    let ctx = Arc::new(Context::new(Parts {
        client: client.clone(),
        eviction_client: clients.evictions,
        index,
        readiness,
        connector,
        secrets: Arc::new(Secrets::new(config.watch_secrets)),
        metrics: metrics.clone(),
        recorder,
        leader: leadership.leader.clone(),
    }));
    let following = tokio::spawn(follow_leadership(
        leadership.leader.changes(),
        metrics.clone(),
        config.identity.clone(),
    ));

    // Each scope's PoolPolicies, cached: its controller fills the cache, the webhook reads it.
    let stores: Vec<_> = own.iter().map(|_| reflector::store()).collect();
    let webhook_task = config.webhook.clone().map(|webhook| {
        let judge = webhook::Judge {
            index: ctx.index.clone(),
            policies: stores.iter().map(|(reader, _)| reader.clone()).collect(),
        };
        webhook::spawn(webhook, client.clone(), judge, stopped(stop_rx.clone()))
    });
    // One runtime per scope: the bound is shared among them, each runs at least one.
    let concurrency = per_scope(config.concurrency, own.len());
    let controllers = own.into_iter().zip(stores).map(|(watches, store)| {
        controller(
            client.clone(),
            watches,
            store,
            list_mode.clone(),
            ctx.clone(),
            concurrency,
            stopped(stop_rx.clone()),
        )
    });
    let ending = shutdown::run_until_stopped(
        futures::future::join_all(controllers),
        stopped(stop_rx.clone()),
        &ctx.in_flight,
    )
    .await;
    if ending == shutdown::Ending::Abandoned {
        tracing::warn!(
            grace_seconds = shutdown::RECONCILE_GRACE.as_secs(),
            "reconciles still running at the end of the grace period were abandoned"
        );
    }

    following.abort();
    metrics.leader.set(0);
    ctx.engines.close_all();
    ctx.poolers.close_all();
    ctx.count_connections();
    if tokio::time::timeout(shutdown::RELEASE_TIMEOUT, leadership.release())
        .await
        .is_err()
    {
        tracing::warn!(
            "the lease could not be released in time: a standby takes it once it runs out"
        );
    }
    for task in watch_tasks.into_iter().chain(webhook_task) {
        task.abort();
    }
    if tokio::time::timeout(shutdown::HTTP_TIMEOUT, &mut http_task)
        .await
        .is_err()
    {
        http_task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Says, and shows in `poolwarden_leader`, when this replica starts and stops leading.
async fn follow_leadership(
    mut leader: signal::Receiver<bool>,
    metrics: Arc<Metrics>,
    identity: String,
) {
    let mut leading = false;
    loop {
        let now = *leader.borrow_and_update();
        metrics.leader.set(i64::from(now));
        match (leading, now) {
            (false, true) => tracing::info!(%identity, "leading: reconciling PoolPolicies"),
            (true, false) => tracing::warn!(%identity, "no longer leading: not acting"),
            (false, false) => tracing::info!(%identity, "waiting to lead"),
            (true, true) => {}
        }
        leading = now;
        if leader.changed().await.is_err() {
            return;
        }
    }
}

/// Fires each time this replica becomes the leader: every policy is reconciled at once then,
/// not at the end of the interval it was last put off by.
fn became_leader(leader: signal::Receiver<bool>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(leader, |mut leader| async move {
        loop {
            leader.changed().await.ok()?;
            if *leader.borrow_and_update() {
                return Some(((), leader));
            }
        }
    })
}

/// One controller runtime over the policies of a scope (a namespace, or all).
async fn controller<C: Connector>(
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
        .predicate_filter(meaningful_change, Default::default());
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
            move |secret: TrimmedMeta| {
                let (ns, name) = (secret.namespace(), secret.name_any());
                reader
                    .state()
                    .into_iter()
                    .filter(|p| p.namespace() == ns && p.spec.refers_to_secret(&name))
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
            kinds::SECRET.api_resource(),
        );
    }
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error::error_policy, ctx)
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
fn per_scope(total: u16, scopes: usize) -> u16 {
    let scopes = u16::try_from(scopes.max(1)).unwrap_or(u16::MAX);
    (total / scopes).max(1)
}

/// What makes a policy worth reconciling at once: its spec, its deletion, its finalizers.
fn meaningful_change(policy: &PoolPolicy) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&policy.spec)
        .unwrap_or_default()
        .hash(&mut hasher);
    policy
        .metadata
        .deletion_timestamp
        .is_some()
        .hash(&mut hasher);
    policy.metadata.finalizers.hash(&mut hasher);
    Some(hasher.finish())
}

/// Resolves once the channel says stop (`Sync`, as kube's graceful shutdown asks).
fn stopped(rx: signal::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, done) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        crate::signals::stopped(rx).await;
        let _ = tx.send(());
    });
    async move {
        let _ = done.await;
    }
}

/// The default identity: the pod name (downward API), else the host name and pid.
pub fn default_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "poolwarden".into());
        format!("{host}-{}", std::process::id())
    })
}
