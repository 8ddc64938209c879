//! The watches: pods (trimmed as they arrive) and the owner kinds of [`kinds::OWNERS`] (metadata
//! only) feed the [`ClusterIndex`]; the controller's own watches (PoolPolicies, Secrets' metadata)
//! are built here too. Every watch registers with [`Readiness`], which is ready once each has
//! listed everything once.
//!
//! Initial lists arrive as a stream (`sendInitialEvents`, the WatchList feature) where the API
//! server offers it, else in pages of 500 (`limit`/`continue`); either way each object goes into
//! the index as it arrives, so that memory holds a page at most, never the whole list. A relist
//! (after `410 Gone`) sweeps out what it did not bring.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Config, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::index::{ClusterIndex, Listed};
use super::kinds;
use super::secret::Secrets;
use super::trimmed::{TrimmedMeta, TrimmedPod};

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

/// How a watch gets its initial list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialList {
    /// A streaming list where the API server offers one; pages where it refuses.
    #[default]
    Auto,
    /// Always a streaming list (`sendInitialEvents`).
    Streaming,
    /// Always pages of 500 (`limit`/`continue`).
    Paged,
}

/// Whether every watch has listed everything once: only then can attribution be trusted.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The watches that have not listed yet.
    waiting: Mutex<BTreeSet<String>>,
    ready: AtomicBool,
    /// Set once the first watch registered: an empty set before that means nothing started.
    started: AtomicBool,
}

impl Readiness {
    /// Registers a watch by name; it counts as listed once [`FirstList::done`] is called.
    pub fn expect(self: &Arc<Self>, name: String) -> FirstList {
        self.started.store(true, Ordering::SeqCst);
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.insert(name.clone());
        FirstList {
            name,
            readiness: self.clone(),
            done: false,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The watches still waiting for their first list, by name.
    pub fn waiting_for(&self) -> Vec<String> {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.iter().cloned().collect()
    }

    fn listed(&self, name: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.remove(name);
        if waiting.is_empty() && self.started.load(Ordering::SeqCst) {
            self.ready.store(true, Ordering::SeqCst);
            tracing::info!("every watch has listed: ready");
        }
    }
}

/// One watch's place in [`Readiness`].
#[derive(Debug)]
pub struct FirstList {
    name: String,
    readiness: Arc<Readiness>,
    done: bool,
}

impl FirstList {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The watch has listed everything once (later relists change nothing).
    pub fn done(&mut self) {
        if !self.done {
            self.done = true;
            tracing::info!(watch = %self.name, "listed");
            self.readiness.listed(&self.name);
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

/// Objects per page of a paged list: metadata is small, pods are not. kube holds a page's JSON
/// twice over while it decodes it, so a page of 500 pods carrying `managedFields` and a
/// `kubectl apply` annotation would cost tens of MiB for a moment.
pub const PAGE: u32 = 500;
pub const POD_PAGE: u32 = 100;

/// A watcher with backoff whose initial list streams where it can (see [`InitialList`]), else
/// comes in pages of `page_size`. With `Auto`, a server that refuses streaming lists (400/422 to
/// `sendInitialEvents`) gets paged lists from then on.
pub fn watcher<K>(
    api: Api<K>,
    initial: InitialList,
    page_size: u32,
    name: &str,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Send + Sync,
{
    let start = move |api: Api<K>, streaming: bool| {
        let config = if streaming {
            Config::default().streaming_lists()
        } else {
            Config::default().page_size(page_size)
        };
        kube::runtime::watcher(api, config)
            .default_backoff()
            .boxed()
    };
    let streaming = initial != InitialList::Paged;
    let name: Arc<str> = name.into();
    let state = (start(api.clone(), streaming), streaming);
    futures::stream::unfold(state, move |(mut inner, mut streaming)| {
        let (api, name) = (api.clone(), name.clone());
        async move {
            loop {
                let item = inner.next().await?;
                if streaming && initial == InitialList::Auto && refuses_streaming(&item) {
                    tracing::warn!(watch = %name, "the API server does not offer streaming lists; listing in pages instead");
                    inner = start(api.clone(), false);
                    streaming = false;
                    continue;
                }
                return Some((item, (inner, streaming)));
            }
        }
    })
}

fn refuses_streaming<K>(item: &Result<Event<K>, watcher::Error>) -> bool {
    matches!(item, Err(watcher::Error::WatchStartFailed(kube::Error::Api(s))) if s.code == 400 || s.code == 422)
}

/// Marks the first list in [`Readiness`] and logs failures at `warn`, for a stream that goes on
/// elsewhere (a reflector, a controller's trigger).
pub fn follow<K>(mut first: FirstList) -> impl FnMut(&Result<Event<K>, watcher::Error>) {
    move |item| match item {
        Ok(Event::InitDone) => first.done(),
        Err(error) => tracing::warn!(watch = %first.name(), %error, "watch failed; retrying"),
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
            // The watcher backs off and retries by itself; say so, once per failure.
            Err(error) => tracing::warn!(watch = %first.name(), %error, "watch failed; retrying"),
        }
    }
}

/// Starts the watches of pods and of every owner kind, for every scope. All of them register
/// with `readiness` before the first starts, so that it cannot be ready before the last has listed.
pub fn spawn_cluster_watches(
    client: &Client,
    namespaces: &Namespaces,
    initial: InitialList,
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
                .map(|kind| readiness.expect(watch_name(kind.plural, scope.as_deref())))
                .collect()
        })
        .collect();
    let mut tasks = Vec::new();
    for ((scope, first), owners) in scopes.into_iter().zip(pods).zip(owners) {
        let pods = pod_api(client, scope.as_deref());
        let stream = watcher(pods, initial, POD_PAGE, first.name());
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
            let api = metadata_api(client, scope.as_deref(), kind);
            let stream = watcher(api, initial, PAGE, first.name());
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
