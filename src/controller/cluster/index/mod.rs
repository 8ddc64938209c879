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

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::kinds;
use super::scaling::WorkloadScale;
use super::trimmed::TrimmedPod;
use crate::decide::{
    ClusterView, DepartedPod, OWNED, POLICY, POOL_MAX, PodInfo, WorkloadInfo, WorkloadRef,
};
use records::{
    Departed, Namespace, OwnerLink, OwnerRecord, PodRecord, controller_of, copies, identity, key,
    ours, pod_record,
};

mod reading;
mod records;
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

/// An object below the top of its owner chain still carrying copies of poolwarden's annotations
/// that the workload at the top no longer carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleCopy {
    /// The ReplicaSet or Job (`kind` is its own).
    pub object: WorkloadRef,
    /// The keys to take off it.
    pub keys: Vec<String>,
}

/// Pods, owners and departed pods of the watched namespaces.
#[derive(Debug, Default)]
pub struct ClusterIndex {
    namespaces: HashMap<String, Namespace>,
    departed: usize,
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
}
