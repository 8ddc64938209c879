//! The cluster as attribution needs it, kept up by watch events and kept by namespace, so that a
//! policy's view costs its own namespace, not the cluster: pods trimmed to labels, IPs, start
//! time, owner and identity; their owners trimmed to the owner chain, identity and poolwarden's
//! annotations; and a bounded record of pods that went away, whose sessions are orphans.
//!
//! Only the top of an owner chain is a workload, and only a workload's annotations are
//! poolwarden's: an owner that is owned by a followed kind (a ReplicaSet of a Deployment, a Job
//! of a CronJob) carries its controller's copies of them, never poolwarden's own writes. The
//! index keeps those copies apart, only to find the ones the workload no longer carries (its
//! controller never takes a copy back: see [`ClusterIndex::stale_copies`]).
//!
//! Synchronous and free of IO: the watch tasks feed it, the reconciler reads a [`ClusterView`]
//! out of it. No API call is made inside a reconcile for anything it can answer.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{Selector, SelectorExt};

use super::kinds;
use super::scaling::WorkloadScale;
use super::trimmed::{ANNOTATION_PREFIX, TrimmedPod};
use crate::database::elapsed;
use crate::decide::{
    ClusterView, DepartedPod, OWNED, POLICY, POOL_MAX, PodInfo, WorkloadInfo, WorkloadRef,
};

mod scale;
#[cfg(test)]
mod tests;

/// How long a departed pod's IP is remembered: sessions it left behind are orphans until then.
pub const DEPARTED_RETENTION: Duration = Duration::from_secs(3600);
/// At most this many departed pods are remembered in all (the oldest are forgotten first).
pub const DEPARTED_CAPACITY: usize = 10_000;
/// Set by application owners: the most replicas the workload may run (HPA maximum plus surge).
pub const MAX_REPLICAS: &str = "poolwarden.io/max-replicas";

/// The namespaces and names of the objects one full list (or relist) brought.
pub type Listed = HashSet<(String, String)>;

#[derive(Clone, Debug, PartialEq, Eq)]
struct OwnerLink {
    kind: String,
    name: String,
}

impl OwnerLink {
    /// Whether the object this link points from is owned by a kind poolwarden follows, i.e. is
    /// not the top of its chain.
    fn is_followed(link: Option<&OwnerLink>) -> bool {
        link.is_some_and(|o| kinds::owner(&o.kind).is_some())
    }
}

/// What an Event's reference needs beyond kind and name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// A pod a selector picked (see [`ClusterIndex::selected_pods`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedPod {
    pub name: String,
    pub ip: Option<IpAddr>,
    /// Running and Ready.
    pub ready: bool,
}

/// A pod, trimmed.
#[derive(Clone, Debug, PartialEq)]
struct PodRecord {
    labels: BTreeMap<String, String>,
    ips: Vec<IpAddr>,
    started_at: Option<Timestamp>,
    running: bool,
    /// Phase `Running` and condition `Ready` true: serving.
    ready: bool,
    owner: Option<OwnerLink>,
    /// poolwarden's annotations, on a bare pod only (its own workload).
    annotations: BTreeMap<String, String>,
    identity: Identity,
}

#[derive(Clone, Debug, PartialEq)]
struct Departed {
    name: String,
    labels: BTreeMap<String, String>,
    ips: Vec<IpAddr>,
    started_at: Option<Timestamp>,
    departed_at: Timestamp,
    owner: Option<OwnerLink>,
}

/// An owner, trimmed to its place in the chain, its identity and, at the top of a chain,
/// poolwarden's annotations; below the top, the copies of the annotations poolwarden writes.
#[derive(Clone, Debug, PartialEq)]
struct OwnerRecord {
    owner: Option<OwnerLink>,
    annotations: BTreeMap<String, String>,
    copies: BTreeMap<String, String>,
    identity: Identity,
    /// Its replicas and rollout, for the kinds that say (see [`super::scaling`]).
    scale: WorkloadScale,
}

/// An object below the top of its owner chain still carrying copies of poolwarden's annotations
/// that the workload at the top no longer carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleCopy {
    /// The ReplicaSet or Job (`kind` is its own).
    pub object: WorkloadRef,
    /// The keys to take off it.
    pub keys: Vec<String>,
}

/// One namespace's pods, owners (by kind and name) and departed pods (oldest first).
#[derive(Debug, Default)]
struct Namespace {
    pods: HashMap<String, PodRecord>,
    owners: HashMap<(&'static str, String), OwnerRecord>,
    departed: VecDeque<Departed>,
    /// HorizontalPodAutoscalers by name.
    autoscalers: HashMap<String, scale::AutoscalerRecord>,
}

/// Pods, owners and departed pods of the watched namespaces.
#[derive(Debug, Default)]
pub struct ClusterIndex {
    namespaces: HashMap<String, Namespace>,
    departed: usize,
}

fn controller_of(meta: &ObjectMeta) -> Option<OwnerLink> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| OwnerLink {
            kind: r.kind.clone(),
            name: r.name.clone(),
        })
}

/// poolwarden's annotations of a workload; nothing of an object that is not one.
fn ours(meta: &ObjectMeta, owner: Option<&OwnerLink>) -> BTreeMap<String, String> {
    if OwnerLink::is_followed(owner) {
        return BTreeMap::new();
    }
    meta.annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The annotations poolwarden writes, as copied onto an object below the top of its chain.
fn copies(meta: &ObjectMeta, owner: Option<&OwnerLink>) -> BTreeMap<String, String> {
    if !OwnerLink::is_followed(owner) {
        return BTreeMap::new();
    }
    meta.annotations
        .iter()
        .flatten()
        .filter(|(k, _)| OWNED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn identity(meta: &ObjectMeta) -> Identity {
    Identity {
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
    }
}

fn key(meta: &ObjectMeta) -> Option<(&str, &str)> {
    Some((meta.namespace.as_deref()?, meta.name.as_deref()?))
}

fn pod_record(pod: &TrimmedPod) -> PodRecord {
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = status
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|ip| ip.parse().ok())
    {
        ips.push(ip);
    }
    let phase = status.and_then(|s| s.phase.as_deref());
    let owner = controller_of(&pod.metadata);
    PodRecord {
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ips,
        started_at: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        running: !matches!(phase, Some("Succeeded" | "Failed")),
        ready: phase == Some("Running")
            && status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
        // A pod with an owner is never its own workload.
        annotations: if owner.is_none() {
            ours(&pod.metadata, None)
        } else {
            BTreeMap::new()
        },
        owner,
        identity: identity(&pod.metadata),
    }
}

impl ClusterIndex {
    fn namespace(&mut self, name: &str) -> &mut Namespace {
        self.namespaces.entry(name.to_owned()).or_default()
    }

    /// A pod was added or changed (also: listed). A pod that finished (Succeeded/Failed) gave its
    /// IP back: from here on it counts as departed.
    pub fn apply_pod(&mut self, pod: &TrimmedPod, now: Timestamp) {
        let Some((ns, name)) = key(&pod.metadata) else {
            return;
        };
        let record = pod_record(pod);
        if record.running {
            self.namespace(ns).pods.insert(name.to_owned(), record);
        } else if let Some(previous) = self.namespace(ns).pods.remove(name) {
            self.depart(ns, name, previous, now);
        }
    }

    /// A pod was deleted.
    pub fn delete_pod(&mut self, pod: &TrimmedPod, now: Timestamp) {
        let Some((ns, name)) = key(&pod.metadata) else {
            return;
        };
        let record = self
            .namespace(ns)
            .pods
            .remove(name)
            .unwrap_or_else(|| pod_record(pod));
        self.depart(ns, name, record, now);
    }

    /// A full (re)list of pods of `scope` (a namespace, or all when `None`) has arrived, pod by
    /// pod through [`ClusterIndex::apply_pod`]: those it did not bring went away while nobody
    /// watched.
    pub fn retain_pods(&mut self, scope: Option<&str>, listed: &Listed, now: Timestamp) {
        let mut gone = Vec::new();
        for (ns, namespace) in &self.namespaces {
            if scope.is_some_and(|s| s != ns) {
                continue;
            }
            for name in namespace.pods.keys() {
                if !listed.contains(&(ns.clone(), name.clone())) {
                    gone.push((ns.clone(), name.clone()));
                }
            }
        }
        for (ns, name) in gone {
            if let Some(record) = self.namespace(&ns).pods.remove(&name) {
                self.depart(&ns, &name, record, now);
            }
        }
    }

    fn depart(&mut self, ns: &str, name: &str, record: PodRecord, now: Timestamp) {
        if record.ips.is_empty() {
            return;
        }
        self.namespace(ns).departed.push_back(Departed {
            name: name.to_owned(),
            labels: record.labels,
            ips: record.ips,
            started_at: record.started_at,
            departed_at: now,
            owner: record.owner,
        });
        self.departed += 1;
        while self.departed > DEPARTED_CAPACITY {
            self.forget_oldest_departed();
        }
    }

    fn forget_oldest_departed(&mut self) {
        let oldest = self
            .namespaces
            .values_mut()
            .filter(|n| !n.departed.is_empty())
            .min_by_key(|n| n.departed.front().map(|d| d.departed_at));
        if let Some(namespace) = oldest {
            namespace.departed.pop_front();
        }
        self.departed -= 1;
    }

    /// An owner (ReplicaSet, Deployment, …) was added or changed (also: listed).
    pub fn apply_owner(&mut self, kind: &str, meta: &ObjectMeta) {
        let (Some(kind), Some((ns, name))) = (kinds::owner(kind), key(meta)) else {
            return;
        };
        let owner = controller_of(meta);
        let record = OwnerRecord {
            annotations: ours(meta, owner.as_ref()),
            copies: copies(meta, owner.as_ref()),
            owner,
            identity: identity(meta),
            scale: WorkloadScale::default(),
        };
        self.namespace(ns)
            .owners
            .insert((kind.kind, name.to_owned()), record);
    }

    pub fn delete_owner(&mut self, kind: &str, meta: &ObjectMeta) {
        if let (Some(kind), Some((ns, name))) = (kinds::owner(kind), key(meta)) {
            self.namespace(ns)
                .owners
                .remove(&(kind.kind, name.to_owned()));
        }
    }

    /// A full (re)list of one kind of owner of `scope` has arrived: those it did not bring are gone.
    pub fn retain_owners(&mut self, kind: &str, scope: Option<&str>, listed: &Listed) {
        for (ns, namespace) in &mut self.namespaces {
            if scope.is_some_and(|s| s != ns) {
                continue;
            }
            namespace
                .owners
                .retain(|(k, name), _| *k != kind || listed.contains(&(ns.clone(), name.clone())));
        }
    }

    /// The workload at the top of the owner chain: Pod → ReplicaSet → Deployment, Job → CronJob.
    fn workload(&self, namespace: &str, pod: &str, owner: Option<&OwnerLink>) -> WorkloadRef {
        let Some(mut current) = owner.cloned() else {
            return WorkloadRef {
                namespace: namespace.into(),
                kind: kinds::POD.kind.into(),
                name: pod.into(),
            };
        };
        let owners = self.namespaces.get(namespace).map(|n| &n.owners);
        // Chains are two links at most; the bound guards against a cycle in bad data.
        for _ in 0..4 {
            let next = kinds::owner(&current.kind)
                .and_then(|k| owners?.get(&(k.kind, current.name.clone())))
                .and_then(|o| o.owner.clone())
                .filter(|o| kinds::owner(&o.kind).is_some());
            match next {
                Some(parent) => current = parent,
                None => break,
            }
        }
        WorkloadRef {
            namespace: namespace.into(),
            kind: current.kind.into(),
            name: current.name.into(),
        }
    }

    fn annotations_of(&self, w: &WorkloadRef) -> Option<&BTreeMap<String, String>> {
        let namespace = self.namespaces.get(w.namespace.as_str())?;
        if w.kind == kinds::POD.kind {
            return namespace.pods.get(w.name.as_str()).map(|p| &p.annotations);
        }
        let kind = kinds::owner(&w.kind)?;
        namespace
            .owners
            .get(&(kind.kind, w.name.to_string()))
            .map(|o| &o.annotations)
    }

    /// The uid and resourceVersion of a workload, for an Event's reference.
    pub fn identity(&self, w: &WorkloadRef) -> Option<&Identity> {
        let namespace = self.namespaces.get(w.namespace.as_str())?;
        if w.kind == kinds::POD.kind {
            return namespace.pods.get(w.name.as_str()).map(|p| &p.identity);
        }
        let kind = kinds::owner(&w.kind)?;
        namespace
            .owners
            .get(&(kind.kind, w.name.to_string()))
            .map(|o| &o.identity)
    }

    /// What one policy may see: pods of its own namespace that its selector picks, pods of that
    /// namespace that left recently, and the workloads involved, including any still carrying this
    /// policy's annotations (so they can be cleared). Nothing from other namespaces.
    /// The pods of `namespace` that `selector` matches (a pooler's replicas), by name, with
    /// their first IP and whether they are Running and Ready.
    pub fn selected_pods(&self, namespace: &str, selector: &Selector) -> Vec<SelectedPod> {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Vec::new();
        };
        let mut pods: Vec<SelectedPod> = ns
            .pods
            .iter()
            .filter(|(_, record)| selector.matches(&record.labels))
            .map(|(name, record)| SelectedPod {
                name: name.clone(),
                ip: record.ips.first().copied(),
                ready: record.ready,
            })
            .collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        pods
    }

    pub fn view(
        &self,
        namespace: &str,
        selector: Option<&Selector>,
        policy: &str,
        now: Timestamp,
    ) -> ClusterView {
        let picks = |labels: &BTreeMap<String, String>| selector.is_none_or(|s| s.matches(labels));
        let mut view = ClusterView {
            policy: Some(policy.to_owned()),
            ..ClusterView::default()
        };
        let Some(ns) = self.namespaces.get(namespace) else {
            return view;
        };
        let mut replicas: BTreeMap<WorkloadRef, u32> = BTreeMap::new();
        for (name, record) in &ns.pods {
            if !picks(&record.labels) {
                continue;
            }
            let workload = self.workload(namespace, name, record.owner.as_ref());
            *replicas.entry(workload.clone()).or_default() += 1;
            view.pods.push(PodInfo {
                name: name.into(),
                ips: record.ips.clone(),
                started_at: record.started_at,
                workload,
                ready: record.ready,
            });
        }
        view.pods.sort_by(|a, b| a.name.cmp(&b.name));

        for d in &ns.departed {
            if picks(&d.labels) && elapsed(d.departed_at, now) < DEPARTED_RETENTION {
                let workload = self.workload(namespace, &d.name, d.owner.as_ref());
                replicas.entry(workload.clone()).or_default();
                view.departed.push(DepartedPod {
                    name: d.name.as_str().into(),
                    ips: d.ips.clone(),
                    started_at: d.started_at,
                    departed_at: d.departed_at,
                    workload,
                });
            }
        }
        // Workloads still annotated by this policy must be in view, or their annotations would
        // outlive the leak.
        for workload in self.annotated_by(namespace, policy) {
            replicas.entry(workload).or_default();
        }

        let no_annotations = BTreeMap::new();
        view.workloads = replicas
            .into_iter()
            .map(|(workload, running)| {
                let annotations = self.annotations_of(&workload).unwrap_or(&no_annotations);
                let number = |key: &str| {
                    annotations
                        .get(key)
                        .and_then(|v| v.trim().parse::<u32>().ok())
                };
                WorkloadInfo {
                    scale: self.scale_of(&workload, running, number(MAX_REPLICAS)),
                    pool_max: number(POOL_MAX),
                    annotations: annotations
                        .iter()
                        .filter(|(k, _)| OWNED.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    workload,
                }
            })
            .collect();
        view
    }

    /// The copies of `policy`'s annotations in `namespace` (those whose `poolwarden.io/policy`
    /// names it) that the workload at the top of their chain no longer carries, with the keys to
    /// take off. Removing a copy while the workload still carries the key would be undone by
    /// its controller at its next sync: a write loop. `cleared` are workloads known to carry none
    /// of poolwarden's annotations any more, whatever the index has heard yet; `wanted` are
    /// workloads the policy wants annotated now, whatever the index has heard yet (a copy may
    /// reach the index before the write it copies): their copies are never stale. Nor are the
    /// copies of a workload the index does not know (its watch has not told of it yet).
    pub fn stale_copies(
        &self,
        namespace: &str,
        policy: &str,
        cleared: &[WorkloadRef],
        wanted: &[WorkloadRef],
    ) -> Vec<StaleCopy> {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Vec::new();
        };
        let no_annotations = BTreeMap::new();
        let mut stale: Vec<StaleCopy> = ns
            .owners
            .iter()
            .filter(|(_, o)| o.copies.get(POLICY).is_some_and(|p| p == policy))
            .filter_map(|((kind, name), o)| {
                let link = OwnerLink {
                    kind: (*kind).to_owned(),
                    name: name.clone(),
                };
                let top = self.workload(namespace, name, Some(&link));
                if wanted.contains(&top) {
                    return None;
                }
                let carried = if cleared.contains(&top) {
                    &no_annotations
                } else {
                    self.annotations_of(&top)?
                };
                let keys: Vec<String> = o
                    .copies
                    .keys()
                    .filter(|k| !carried.contains_key(*k))
                    .cloned()
                    .collect();
                (!keys.is_empty()).then(|| StaleCopy {
                    object: WorkloadRef {
                        namespace: namespace.into(),
                        kind: link.kind.into(),
                        name: link.name.into(),
                    },
                    keys,
                })
            })
            .collect();
        stale.sort_by(|a, b| a.object.cmp(&b.object));
        stale
    }

    /// Workloads in `namespace` carrying annotations written by `policy` (for cleanup). Never an
    /// object below the top of its chain: what it carries are copies, not poolwarden's writes.
    pub fn annotated_by(&self, namespace: &str, policy: &str) -> Vec<WorkloadRef> {
        let Some(ns) = self.namespaces.get(namespace) else {
            return Vec::new();
        };
        let by = |annotations: &BTreeMap<String, String>| {
            annotations.get(POLICY).is_some_and(|p| p == policy)
        };
        let workload = |kind: &str, name: &str| WorkloadRef {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
        };
        let mut found: Vec<WorkloadRef> = ns
            .owners
            .iter()
            .filter(|(_, o)| by(&o.annotations))
            .map(|((kind, name), _)| workload(kind, name))
            .chain(
                ns.pods
                    .iter()
                    .filter(|(_, p)| by(&p.annotations))
                    .map(|(name, _)| workload(kinds::POD.kind, name)),
            )
            .collect();
        found.sort();
        found
    }
}
