//! `poolwarden controller`: reconciles every PoolPolicy in the cluster.
//!
//! Wiring only; each step lives in a file named after it: [`watch`] keeps the [`index`] of pods
//! and owners current, [`reconcile`] runs observe → decide → act → report per policy,
//! [`status`] and [`patches`] build what is written, [`leader`] makes sure one replica acts,
//! [`http`] serves metrics and probes.

mod context;
mod engines;
mod http;
mod index;
mod leader;
mod metrics;
mod patches;
mod reconcile;
mod secret;
mod status;
mod watch;

#[cfg(test)]
mod tests;

pub use index::{ClusterIndex, MAX_REPLICAS};
pub use patches::{FIELD_MANAGER, FINALIZER};
pub use status::{conditions, reasons};
pub use watch::Namespaces;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use tokio::sync::watch as signal;

use crate::api::PoolPolicy;
use context::Context;
use leader::Leadership;

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
    /// Watch Secrets (metadata only) so that a changed credential re-triggers its policies.
    pub watch_secrets: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cannot build a Kubernetes client (in-cluster config or KUBECONFIG): {0}")]
    Client(#[from] kube::Error),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Runs until SIGTERM or Ctrl-C, then finishes in-flight reconciles, closes database connections
/// and releases the lease.
pub async fn run(config: Config) -> Result<(), ControllerError> {
    let client = Client::try_default().await?;
    let (stop_tx, stop_rx) = signal::channel(false);
    tokio::spawn(async move {
        terminated().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let index = Arc::new(RwLock::new(ClusterIndex::default()));
    let (sync, watch_tasks) = watch::spawn_all(&client, &config.namespaces, index.clone());

    let mut registry = Registry::default();
    let metrics = Arc::new(metrics::Metrics::register(&mut registry));
    let health = http::Health {
        registry: Arc::new(registry),
        ready: sync.ready.clone(),
    };
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| ControllerError::Http {
            addr: config.http_addr,
            source,
        })?;
    tracing::info!(addr = %config.http_addr, "serving /metrics, /healthz, /readyz");
    let http_task = tokio::spawn({
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
            &config.lease_namespace,
            &config.lease_name,
            &config.identity,
            config.lease_duration_secs,
        )
        .await?
    } else {
        Leadership::always()
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "poolwarden".into(),
            instance: Some(config.identity.clone()),
        },
    );
    let ctx = Arc::new(Context::new(
        client.clone(),
        index,
        metrics.clone(),
        recorder,
        leadership.is_leader.clone(),
    ));

    let mut leader = leadership.is_leader.clone();
    let mut stop = stop_rx.clone();
    loop {
        tracing::info!(identity = %config.identity, "waiting to lead");
        tokio::select! {
            _ = leader.wait_for(|l| *l) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        tracing::info!(identity = %config.identity, "leading: reconciling PoolPolicies");
        metrics.leader.set(1);
        // Stop reconciling the moment the lease is lost or shutdown begins.
        let (term_tx, term_rx) = signal::channel(false);
        let watcher_task = {
            let mut leader = leader.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = leader.wait_for(|l| !*l) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                let _ = term_tx.send(true);
            })
        };
        let controllers = config.namespaces.scopes().into_iter().map(|scope| {
            controller(
                client.clone(),
                scope,
                config.watch_secrets,
                ctx.clone(),
                stopped(term_rx.clone()),
            )
        });
        futures::future::join_all(controllers).await;
        watcher_task.abort();
        metrics.leader.set(0);
        if *stop.borrow() {
            break;
        }
        tracing::warn!("lost the lease: no longer acting");
    }

    ctx.engines.close_all();
    leadership.release().await;
    for task in watch_tasks {
        task.abort();
    }
    let _ = http_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// One controller runtime over the policies of `scope` (a namespace, or all).
async fn controller(
    client: Client,
    scope: Option<String>,
    watch_secrets: bool,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let policies: Api<PoolPolicy> = match &scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    // Reconcile on spec changes and deletion, not on our own status writes: those would loop.
    let changes = watcher(policies, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(meaningful_change, Default::default());
    let mut controller = Controller::for_stream(changes, reader.clone());
    if watch_secrets {
        // Metadata only: poolwarden never keeps Secret data in memory.
        let secrets: Api<PartialObjectMeta<Secret>> = match &scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let secret_changes = watcher(secrets, watcher::Config::default())
            .default_backoff()
            .touched_objects();
        controller =
            controller.watches_stream(secret_changes, move |secret: PartialObjectMeta<Secret>| {
                let (ns, name) = (secret.namespace(), secret.name_any());
                reader
                    .state()
                    .into_iter()
                    .filter(|p| {
                        p.namespace() == ns
                            && p.spec
                                .database
                                .as_ref()
                                .is_some_and(|d| d.connection_secret_ref.name == name)
                    })
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            });
    }
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile loop");
            }
        })
        .await;
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

/// Resolves once the channel says stop.
fn stopped(mut rx: signal::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, done) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = rx.wait_for(|s| *s).await;
        let _ = tx.send(());
    });
    async move {
        let _ = done.await;
    }
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
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
