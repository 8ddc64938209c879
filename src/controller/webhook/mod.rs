//! The admission webhook (optional, `--webhook-addr`): a warning where the change is made. On
//! creating or updating a Deployment, StatefulSet or HorizontalPodAutoscaler, and on a `scale`
//! (`kubectl scale`), the API server asks `POST /validate`; poolwarden answers **allowed**,
//! always, with a warning for each PoolPolicy whose server the new largest scale would overbook
//! ([`judge`]), which `kubectl` prints as `Warning: poolwarden: …`. Never a denial: the chart
//! registers it with `failurePolicy: Ignore` and a short timeout, so that a poolwarden that is
//! down costs a `kubectl apply` nothing but that timeout at most (nothing at all when its pod is
//! gone: the API server finds no endpoint and goes on).
//!
//! Every replica serves it, leading or not, from its own caches: the cluster index and the
//! PoolPolicies (their status carries each server's bookings). HTTPS only ([`server`]), with a
//! certificate poolwarden makes and shares through a Secret, keeping the webhook
//! configuration's `caBundle` current ([`certificate`]), or cert-manager's, read from files.

mod certificate;
mod judge;
mod review;
mod server;
mod tls;

#[cfg(test)]
mod tests;

pub use certificate::Placement;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use kube::core::Selector;
use kube::runtime::reflector::Store;

use crate::api::PoolPolicy;
use crate::controller::cluster::index::ClusterIndex;

/// Where the webhook's certificate comes from.
#[derive(Clone, Debug)]
pub enum Certificate {
    /// Made by poolwarden, kept in a Secret, its CA written into the webhook configuration.
    SelfManaged(Placement),
    /// `tls.crt` and `tls.key` in this folder (cert-manager's Secret, mounted), re-read as they
    /// change.
    Files(PathBuf),
}

/// How the webhook is served.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    pub certificate: Certificate,
}

/// What the webhook judges with: the index and every scope's PoolPolicies.
#[derive(Clone)]
pub struct Judge {
    pub index: Arc<RwLock<ClusterIndex>>,
    pub policies: Vec<Store<PoolPolicy>>,
}

impl Judge {
    /// The warnings for one request (see [`judge`]).
    fn warnings(&self, request: &judge::Request<'_>) -> Vec<String> {
        let change = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            judge::change(request, &index)
        };
        let Some(change) = change else {
            return Vec::new();
        };
        let policies: Vec<Arc<PoolPolicy>> = self
            .policies
            .iter()
            .flat_map(|store| store.state())
            .filter(|p| p.metadata.namespace.as_deref() == Some(request.namespace))
            .collect();
        // A selector that does not parse picks nothing: validate says so on the policy.
        let selectors: Vec<Option<Selector>> = policies
            .iter()
            .map(|p| {
                p.spec
                    .workloads
                    .pod_selector
                    .clone()
                    .and_then(|s| Selector::try_from(s).ok())
            })
            .collect();
        let views: Vec<judge::Policy<'_>> = policies
            .iter()
            .zip(&selectors)
            .map(|(p, selector)| judge::Policy {
                name: format!(
                    "{}/{}",
                    request.namespace,
                    p.metadata.name.as_deref().unwrap_or_default()
                ),
                selector: selector.as_ref(),
                capacity: p.status.as_ref().and_then(|s| s.capacity.as_ref()),
                learned: p
                    .status
                    .as_ref()
                    .map_or(&[][..], |s| s.learned_pools.as_slice()),
            })
            .collect();
        judge::warnings(&change, &views)
    }
}

/// Serves the webhook until `stopped` resolves (see [`server::serve`]).
pub fn spawn(
    config: WebhookConfig,
    client: kube::Client,
    judge: Judge,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(server::serve(config, client, judge, stopped))
}
