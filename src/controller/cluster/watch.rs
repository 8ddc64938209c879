//! The watches: pods (trimmed as they arrive) and the owner kinds of [`kinds::OWNERS`] (metadata
//! only) feed the [`ClusterIndex`]; the controller's own watches (PoolPolicies, Secrets' metadata)
//! are built here too. Every watch registers with [`Readiness`], which is ready once each has
//! listed everything once.
//!
//! Initial lists arrive as a stream (`sendInitialEvents`, the WatchList feature) where the API
//! server serves it, else in pages (see [`super::watcher`]); either way each object goes into
//! the index as it arrives, so that memory holds a page at most, never the whole list. A relist
//! (after `410 Gone`) sweeps out what it did not bring.

use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};

use super::index::{ClusterIndex, Listed};
use super::kinds;
use super::readiness::{FirstList, Readiness};
use super::scaling::{TrimmedAutoscaler, TrimmedWorkload};
use super::trimmed::{TrimmedMeta, TrimmedPod};
use super::watcher::{ListMode, watcher};
use crate::controller::connections::secret::Secrets;

/// Which namespaces to watch: all, or a list.
#[derive(Clone, Debug)]
pub enum Namespaces {
    All,
    Only(Vec<String>),
}

impl Namespaces {
    pub fn scopes(&self) -> Vec<Option<String>> {
        match self {
            Namespaces::All => vec![None],
            Namespaces::Only(list) => list.iter().cloned().map(Some).collect(),
        }
    }
}

/// `pods`, or `pods in shop`.
pub fn watch_name(what: &str, scope: Option<&str>) -> String {
    match scope {
        Some(ns) => format!("{what} in {ns}"),
        None => what.to_owned(),
    }
}

/// The Api of pods in `scope`, decoded trimmed.
fn pod_api(client: &Client, scope: Option<&str>) -> Api<TrimmedPod> {
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The Api of a kind's metadata (owners, Secrets) in `scope`.
pub fn metadata_api(client: &Client, scope: Option<&str>, kind: &kinds::Kind) -> Api<TrimmedMeta> {
    let resource = kind.api_resource();
    match scope {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// The Api of a scalable kind's objects (decoded trimmed) in `scope`.
fn workload_api(client: &Client, scope: Option<&str>, kind: &kinds::Kind) -> Api<TrimmedWorkload> {
    let resource = kind.api_resource();
    match scope {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// The Api of HorizontalPodAutoscalers in `scope`, decoded trimmed.
fn autoscaler_api(client: &Client, scope: Option<&str>) -> Api<TrimmedAutoscaler> {
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Objects per page of a paged list: metadata is small, pods are not. kube holds a page's JSON
/// twice over while it decodes it, so a page of 500 pods carrying `managedFields` and a
/// `kubectl apply` annotation would cost tens of MiB for a moment.
pub const PAGE: u32 = 500;
pub const POD_PAGE: u32 = 100;

/// Marks the first list in [`Readiness`], and the failures before it, for a stream that goes on
/// elsewhere (a reflector, a controller's trigger). The watcher has logged the failures.
pub fn follow<K>(mut first: FirstList) -> impl FnMut(&Result<Event<K>, watcher::Error>) {
    move |item| match item {
        Ok(Event::InitDone) => first.done(),
        Err(error) => first.failed(error),
        Ok(_) => {}
    }
}

/// Keeps the Secrets' resourceVersions current from their watch, relists included.
pub fn secret_versions(
    secrets: Arc<Secrets>,
    scope: Option<String>,
) -> impl FnMut(&Result<Event<TrimmedMeta>, watcher::Error>) {
    let mut listing: Option<Listed> = None;
    move |item| {
        let key = |s: &TrimmedMeta| {
            let m = &s.metadata;
            Some((
                m.namespace.clone()?,
                m.name.clone()?,
                m.resource_version.clone()?,
            ))
        };
        match item {
            Ok(Event::Init) => listing = Some(Listed::new()),
            Ok(Event::InitApply(s)) | Ok(Event::Apply(s)) => {
                if let Some((ns, name, version)) = key(s) {
                    secrets.seen(&ns, &name, &version);
                    if let (Some(listing), Ok(Event::InitApply(_))) = (&mut listing, item) {
                        listing.insert((ns, name));
                    }
                }
            }
            Ok(Event::Delete(s)) => {
                if let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) {
                    secrets.gone(ns, name);
                }
            }
            Ok(Event::InitDone) => {
                secrets.retain(scope.as_deref(), &listing.take().unwrap_or_default());
            }
            Err(_) => {}
        }
    }
}

/// What one watch event means for an index.
pub enum Seen<K> {
    Applied(K),
    Deleted(K),
    /// A (re)list ended, having brought these.
    Listed(Listed),
}

/// Applies a watch's events as they come; a list's objects one by one, as they arrive.
pub async fn feed<K: Resource>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    mut first: FirstList,
    mut apply: impl FnMut(Seen<K>),
) {
    let mut stream = std::pin::pin!(stream);
    let mut listing: Option<Listed> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing = Some(Listed::new()),
            Ok(Event::InitApply(obj)) => {
                let meta = obj.meta();
                if let (Some(ns), Some(name)) = (&meta.namespace, &meta.name) {
                    listing
                        .get_or_insert_with(Listed::new)
                        .insert((ns.clone(), name.clone()));
                }
                apply(Seen::Applied(obj));
            }
            Ok(Event::InitDone) => {
                apply(Seen::Listed(listing.take().unwrap_or_default()));
                first.done();
            }
            Ok(Event::Apply(obj)) => apply(Seen::Applied(obj)),
            Ok(Event::Delete(obj)) => apply(Seen::Deleted(obj)),
            // The watcher has logged it, and backs off and retries by itself.
            Err(error) => first.failed(&error),
        }
    }
}

/// Starts the watches of pods, of every owner kind and of autoscalers, for every scope. All of
/// them register with `readiness` before the first starts, so that it cannot be ready before the
/// last has listed. The kinds that say how far they scale are watched whole (trimmed as they
/// arrive), the other owners as metadata only.
pub fn spawn_cluster_watches(
    client: &Client,
    namespaces: &Namespaces,
    mode: &Arc<ListMode>,
    index: Arc<RwLock<ClusterIndex>>,
    readiness: &Arc<Readiness>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let scopes = namespaces.scopes();
    let pods: Vec<FirstList> = scopes
        .iter()
        .map(|scope| readiness.expect(watch_name("pods", scope.as_deref())))
        .collect();
    let owners: Vec<Vec<FirstList>> = scopes
        .iter()
        .map(|scope| {
            kinds::OWNERS
                .iter()
                .chain([&kinds::AUTOSCALER])
                .map(|kind| readiness.expect(watch_name(kind.plural, scope.as_deref())))
                .collect()
        })
        .collect();
    let mut tasks = Vec::new();
    for ((scope, first), mut owners) in scopes.into_iter().zip(pods).zip(owners) {
        let autoscalers = owners
            .pop()
            .expect("the autoscalers' watch was registered last");
        tasks.push(spawn_autoscaler_watch(
            client,
            scope.as_deref(),
            mode,
            index.clone(),
            autoscalers,
        ));
        let pods = pod_api(client, scope.as_deref());
        let stream = watcher(pods, mode.clone(), POD_PAGE, first.name());
        let (index_, scope_) = (index.clone(), scope.clone());
        tasks.push(tokio::spawn(feed(stream, first, move |seen| {
            let now = Timestamp::now();
            let mut index = index_.write().unwrap_or_else(|e| e.into_inner());
            match seen {
                Seen::Applied(pod) => index.apply_pod(&pod, now),
                Seen::Deleted(pod) => index.delete_pod(&pod, now),
                Seen::Listed(listed) => index.retain_pods(scope_.as_deref(), &listed, now),
            }
        })));
        for (kind, first) in kinds::OWNERS.iter().zip(owners) {
            if kinds::scales(kind) {
                let api = workload_api(client, scope.as_deref(), kind);
                let stream = watcher(api, mode.clone(), PAGE, first.name());
                let (index, scope) = (index.clone(), scope.clone());
                tasks.push(tokio::spawn(feed(stream, first, move |seen| {
                    let mut index = index.write().unwrap_or_else(|e| e.into_inner());
                    match seen {
                        Seen::Applied(w) => index.apply_workload(kind.kind, &w),
                        Seen::Deleted(w) => index.delete_owner(kind.kind, &w.metadata),
                        Seen::Listed(listed) => {
                            index.retain_owners(kind.kind, scope.as_deref(), &listed)
                        }
                    }
                })));
                continue;
            }
            let api = metadata_api(client, scope.as_deref(), kind);
            let stream = watcher(api, mode.clone(), PAGE, first.name());
            let (index, scope) = (index.clone(), scope.clone());
            tasks.push(tokio::spawn(feed(stream, first, move |seen| {
                let mut index = index.write().unwrap_or_else(|e| e.into_inner());
                match seen {
                    Seen::Applied(o) => index.apply_owner(kind.kind, &o.metadata),
                    Seen::Deleted(o) => index.delete_owner(kind.kind, &o.metadata),
                    Seen::Listed(listed) => {
                        index.retain_owners(kind.kind, scope.as_deref(), &listed)
                    }
                }
            })));
        }
    }
    tasks
}

/// The watch of HorizontalPodAutoscalers of `scope`, feeding the index.
fn spawn_autoscaler_watch(
    client: &Client,
    scope: Option<&str>,
    mode: &Arc<ListMode>,
    index: Arc<RwLock<ClusterIndex>>,
    first: FirstList,
) -> tokio::task::JoinHandle<()> {
    let stream = watcher(
        autoscaler_api(client, scope),
        mode.clone(),
        PAGE,
        first.name(),
    );
    let scope = scope.map(str::to_owned);
    tokio::spawn(feed(stream, first, move |seen| {
        let mut index = index.write().unwrap_or_else(|e| e.into_inner());
        match seen {
            Seen::Applied(hpa) => index.apply_autoscaler(&hpa),
            Seen::Deleted(hpa) => index.delete_autoscaler(&hpa.metadata),
            Seen::Listed(listed) => index.retain_autoscalers(scope.as_deref(), &listed),
        }
    }))
}

/// What makes a policy worth reconciling at once: its spec, its deletion, its finalizers.
pub fn meaningful_change(policy: &crate::api::PoolPolicy) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::meaningful_change;
    use crate::api::PoolPolicy;

    fn policy() -> PoolPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
            "metadata": {"name": "orders-db", "namespace": "shop", "resourceVersion": "1"},
            "spec": {"mode": "DryRun"},
        }))
        .unwrap()
    }

    #[test]
    fn only_the_spec_deletion_and_finalizers_make_a_policy_worth_reconciling_at_once() {
        let before = meaningful_change(&policy());
        // poolwarden's own status writes bump the resourceVersion: they must not loop.
        let mut status_written = policy();
        status_written.metadata.resource_version = Some("2".into());
        status_written.status = Some(Default::default());
        assert_eq!(meaningful_change(&status_written), before);

        let mut spec = policy();
        spec.spec.mode = crate::api::Mode::Enforce;
        assert_ne!(meaningful_change(&spec), before);
        let mut deleted = policy();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-07T12:00:00Z".parse().unwrap(),
            ));
        assert_ne!(meaningful_change(&deleted), before);
        let mut finalized = policy();
        finalized.metadata.finalizers = Some(vec!["poolwarden.io/cleanup".into()]);
        assert_ne!(meaningful_change(&finalized), before);
    }
}
