//! Watch tasks that keep the [`ClusterIndex`] current: pods (whole, trimmed on arrival) and the
//! six owner kinds (metadata only). Each reports when its first full list has arrived; the
//! controller is ready when all have.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::index::ClusterIndex;

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

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn meta_api<K>(client: &Client, namespace: Option<&str>) -> Api<PartialObjectMeta<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Tracks how many watches have listed everything once.
#[derive(Clone)]
pub struct Synced {
    expected: usize,
    synced: Arc<AtomicUsize>,
    pub ready: Arc<AtomicBool>,
}

impl Synced {
    fn one_done(&self) {
        if self.synced.fetch_add(1, Ordering::SeqCst) + 1 >= self.expected {
            self.ready.store(true, Ordering::SeqCst);
            tracing::info!("watch caches synced");
        }
    }
}

/// Starts every watch; returns when they end (never, short of the stream failing for good).
pub fn spawn_all(
    client: &Client,
    namespaces: &Namespaces,
    index: Arc<RwLock<ClusterIndex>>,
) -> (Synced, Vec<tokio::task::JoinHandle<()>>) {
    let scopes = namespaces.scopes();
    let sync = Synced {
        expected: scopes.len() * 7,
        synced: Arc::default(),
        ready: Arc::default(),
    };
    let mut tasks = Vec::new();
    for scope in scopes {
        let ns = scope.as_deref();
        tasks.push(tokio::spawn(pods(
            api::<Pod>(client, ns),
            scope.clone(),
            index.clone(),
            sync.clone(),
        )));
        tasks.push(owners::<ReplicaSet>(
            meta_api(client, ns),
            "ReplicaSet",
            scope.clone(),
            index.clone(),
            sync.clone(),
        ));
        tasks.push(owners::<Deployment>(
            meta_api(client, ns),
            "Deployment",
            scope.clone(),
            index.clone(),
            sync.clone(),
        ));
        tasks.push(owners::<StatefulSet>(
            meta_api(client, ns),
            "StatefulSet",
            scope.clone(),
            index.clone(),
            sync.clone(),
        ));
        tasks.push(owners::<DaemonSet>(
            meta_api(client, ns),
            "DaemonSet",
            scope.clone(),
            index.clone(),
            sync.clone(),
        ));
        tasks.push(owners::<Job>(
            meta_api(client, ns),
            "Job",
            scope.clone(),
            index.clone(),
            sync.clone(),
        ));
        tasks.push(owners::<CronJob>(
            meta_api(client, ns),
            "CronJob",
            scope.clone(),
            index.clone(),
            sync.clone(),
        ));
    }
    (sync, tasks)
}

async fn pods(
    api: Api<Pod>,
    scope: Option<String>,
    index: Arc<RwLock<ClusterIndex>>,
    sync: Synced,
) {
    let stream = watcher(api);
    feed(stream, sync, |event| {
        let now = Timestamp::now();
        let Ok(mut index) = index.write() else { return };
        match event {
            Applied::One(pod) => index.apply_pod(&pod, now),
            Applied::Gone(pod) => index.delete_pod(&pod, now),
            Applied::All(pods) => index.replace_pods(scope.as_deref(), &pods, now),
        }
    })
    .await;
}

fn owners<K>(
    api: Api<PartialObjectMeta<K>>,
    kind: &'static str,
    scope: Option<String>,
    index: Arc<RwLock<ClusterIndex>>,
    sync: Synced,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        // Metadata only: the owner chain and annotations are all attribution needs.
        let stream = kube::runtime::watcher(api, watcher::Config::default()).default_backoff();
        feed(stream, sync, |event: Applied<PartialObjectMeta<K>>| {
            let Ok(mut index) = index.write() else { return };
            match event {
                Applied::One(o) => index.apply_owner(kind, &o.metadata),
                Applied::Gone(o) => index.delete_owner(kind, &o.metadata),
                Applied::All(all) => {
                    let metas: Vec<ObjectMeta> = all.into_iter().map(|o| o.metadata).collect();
                    index.replace_owners(kind, scope.as_deref(), &metas);
                }
            }
        })
        .await;
    })
}

fn watcher(api: Api<Pod>) -> impl Stream<Item = Result<Event<Pod>, watcher::Error>> {
    kube::runtime::watcher(api, watcher::Config::default()).default_backoff()
}

/// A watch event, with the initial list gathered into one replacement.
enum Applied<K> {
    One(K),
    Gone(K),
    All(Vec<K>),
}

async fn feed<K>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    sync: Synced,
    mut apply: impl FnMut(Applied<K>),
) {
    let mut stream = std::pin::pin!(stream);
    let mut listing: Option<Vec<K>> = None;
    let mut synced = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing = Some(Vec::new()),
            Ok(Event::InitApply(obj)) => listing.get_or_insert_with(Vec::new).push(obj),
            Ok(Event::InitDone) => {
                apply(Applied::All(listing.take().unwrap_or_default()));
                if !synced {
                    synced = true;
                    sync.one_done();
                }
            }
            Ok(Event::Apply(obj)) => apply(Applied::One(obj)),
            Ok(Event::Delete(obj)) => apply(Applied::Gone(obj)),
            // The watcher backs off and retries by itself; say so, once per failure.
            Err(e) => tracing::warn!(error = %e, "watch failed; retrying"),
        }
    }
}
