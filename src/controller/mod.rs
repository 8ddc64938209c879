//! `poolwarden controller`: reconciles every PoolPolicy in the cluster.
//!
//! Wiring only. Four folders, one concern each:
//! - [`cluster`]: the watches and the index of pods and owners they keep current;
//! - [`reconcile`]: the five steps per policy (validate → dereference → the cycle → act on the
//!   cluster → report), what a failure leads to, and the status and patches they write;
//! - [`connections`]: the database servers, their shared looks, the pooler consoles and the
//!   Secrets' URLs, kept across cycles;
//! - [`runtime`]: one controller runtime per scope, leader election, the API client, metrics and
//!   probes, a bounded shutdown.
//!
//! [`context`] is what every reconcile shares; [`webhook`] is the admission endpoint.
//!
//! Every replica watches and keeps its caches warm, leading or not, so that it is ready (and can
//! take over at once); only the lease holder reconciles.

mod cluster;
mod connections;
mod context;
mod reconcile;
mod runtime;
mod webhook;

pub use cluster::index::{ClusterIndex, MAX_REPLICAS};
pub use cluster::trimmed::TrimmedPod;
pub use cluster::watch::Namespaces;
pub use cluster::watcher::InitialList;
pub use connections::engines::{Connector, any_engine};
pub use reconcile::patches::{FIELD_MANAGER, FINALIZER};
pub use reconcile::status::{conditions, reasons};
pub use runtime::client::USER_AGENT;
pub use runtime::leader::default_identity;
pub use runtime::shutdown::{RUNTIME_TIMEOUT, SHUTDOWN_BOUND};
pub use webhook::{
    Certificate as WebhookCertificate, Placement as WebhookPlacement, WebhookConfig,
};

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use prometheus_client::registry::Registry;

use cluster::readiness::Readiness;
use cluster::watch::{self, watch_name};
use cluster::watcher::ListMode;
use connections::secret::Secrets;
use context::{Context, Parts};
use runtime::leader::{Candidate, Leadership, Timing, follow_leadership};
use runtime::liveness::Liveness;
use runtime::metrics::Metrics;
use runtime::scope::{self, OwnWatches, per_scope};
use runtime::shutdown::{self, stopped};
use runtime::{client, http};

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
        scope::run(
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
