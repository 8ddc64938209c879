//! What the index keeps of each object: records trimmed to attribution's needs, and how they
//! are read off the objects' metadata.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::controller::cluster::kinds;
use crate::controller::cluster::scaling::WorkloadScale;
use crate::controller::cluster::trimmed::{ANNOTATION_PREFIX, TrimmedPod};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct OwnerLink {
    pub(super) kind: String,
    pub(super) name: String,
}

impl OwnerLink {
    /// Whether the object this link points from is owned by a kind poolwarden follows, i.e. is
    /// not the top of its chain.
    pub(super) fn is_followed(link: Option<&OwnerLink>) -> bool {
        link.is_some_and(|o| kinds::owner(&o.kind).is_some())
    }
}

/// A pod, trimmed.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PodRecord {
    pub(super) labels: BTreeMap<String, String>,
    pub(super) ips: Vec<IpAddr>,
    pub(super) started_at: Option<Timestamp>,
    pub(super) running: bool,
    /// Phase `Running` and condition `Ready` true: serving.
    pub(super) ready: bool,
    pub(super) owner: Option<OwnerLink>,
    /// poolwarden's annotations, on a bare pod only (its own workload).
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) identity: Identity,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Departed {
    pub(super) name: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) ips: Vec<IpAddr>,
    pub(super) started_at: Option<Timestamp>,
    pub(super) departed_at: Timestamp,
    pub(super) owner: Option<OwnerLink>,
}

/// An owner, trimmed to its place in the chain, its identity and, at the top of a chain,
/// poolwarden's annotations; below the top, the copies of the annotations poolwarden writes.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct OwnerRecord {
    pub(super) owner: Option<OwnerLink>,
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) copies: BTreeMap<String, String>,
    pub(super) identity: Identity,
    /// Its replicas and rollout, for the kinds that say (see [`super::scaling`]).
    pub(super) scale: WorkloadScale,
}

/// One namespace's pods, owners (by kind and name) and departed pods (oldest first).
#[derive(Debug, Default)]
pub(super) struct Namespace {
    pub(super) pods: HashMap<String, PodRecord>,
    pub(super) owners: HashMap<(&'static str, String), OwnerRecord>,
    pub(super) departed: VecDeque<Departed>,
    /// HorizontalPodAutoscalers by name.
    pub(super) autoscalers: HashMap<String, scale::AutoscalerRecord>,
}

pub(super) fn controller_of(meta: &ObjectMeta) -> Option<OwnerLink> {
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
pub(super) fn ours(meta: &ObjectMeta, owner: Option<&OwnerLink>) -> BTreeMap<String, String> {
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
pub(super) fn copies(meta: &ObjectMeta, owner: Option<&OwnerLink>) -> BTreeMap<String, String> {
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

pub(super) fn identity(meta: &ObjectMeta) -> Identity {
    Identity {
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
    }
}

pub(super) fn key(meta: &ObjectMeta) -> Option<(&str, &str)> {
    Some((meta.namespace.as_deref()?, meta.name.as_deref()?))
}

pub(super) fn pod_record(pod: &TrimmedPod) -> PodRecord {
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
