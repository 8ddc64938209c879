//! Reading the index: a policy's view of its namespace, the identities and annotations of
//! workloads, the pods a selector picks, and the copies of annotations left behind.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

use super::*;
use crate::controller::cluster::kinds;
use crate::database::elapsed;

impl ClusterIndex {
    /// The workload at the top of the owner chain: Pod → ReplicaSet → Deployment, Job → CronJob.
    pub(super) fn workload(
        &self,
        namespace: &str,
        pod: &str,
        owner: Option<&OwnerLink>,
    ) -> WorkloadRef {
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

    pub(super) fn annotations_of(&self, w: &WorkloadRef) -> Option<&BTreeMap<String, String>> {
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
