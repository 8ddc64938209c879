//! The cluster as attribution needs it, kept up by watch events: pods trimmed to name, labels,
//! IPs, start time and owner; their owners trimmed to the owner chain and poolwarden's
//! annotations; and a bounded record of pods that went away, whose sessions are orphans.
//!
//! Synchronous and free of IO: the watch tasks feed it, the reconciler reads a
//! [`ClusterView`] out of it. No API call is made inside a reconcile for anything it can answer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::core::{Selector, SelectorExt};

use crate::decide::{ClusterView, DepartedPod, PodInfo, WorkloadInfo, WorkloadRef};

/// How long a departed pod's IP is remembered: sessions it left behind are orphans until then.
pub const DEPARTED_RETENTION: Duration = Duration::from_secs(3600);
/// At most this many departed pods are remembered (the oldest are forgotten first).
pub const DEPARTED_CAPACITY: usize = 10_000;
/// Set by application owners: the most replicas the workload may run (HPA maximum plus surge).
pub const MAX_REPLICAS: &str = "poolwarden.io/max-replicas";

/// The kinds of pod owner poolwarden follows.
pub const OWNER_KINDS: [&str; 6] = [
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
];

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct OwnerLink {
    kind: String,
    name: String,
}

/// A pod, trimmed.
#[derive(Clone, Debug, PartialEq)]
struct PodRecord {
    labels: BTreeMap<String, String>,
    ips: Vec<IpAddr>,
    started_at: Option<Timestamp>,
    running: bool,
    owner: Option<OwnerLink>,
    /// poolwarden's annotations on a bare pod (its own workload).
    annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
struct Departed {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    ips: Vec<IpAddr>,
    started_at: Option<Timestamp>,
    departed_at: Timestamp,
    owner: Option<OwnerLink>,
}

/// An owner, trimmed to its place in the chain and poolwarden's annotations.
#[derive(Clone, Debug, PartialEq)]
struct OwnerRecord {
    owner: Option<OwnerLink>,
    annotations: BTreeMap<String, String>,
}

/// Pods, owners and departed pods of the whole cluster (or the watched namespaces).
#[derive(Debug, Default)]
pub struct ClusterIndex {
    pods: HashMap<(String, String), PodRecord>,
    owners: HashMap<(String, String, String), OwnerRecord>,
    departed: VecDeque<Departed>,
}

fn controller_of(meta: &ObjectMeta) -> Option<OwnerLink> {
    let refs: &[OwnerReference] = meta.owner_references.as_deref().unwrap_or_default();
    refs.iter()
        .find(|r| r.controller == Some(true))
        .map(|r| OwnerLink {
            kind: r.kind.clone(),
            name: r.name.clone(),
        })
}

/// Only poolwarden's annotations are kept: everything else on an object is not our business.
fn ours(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("poolwarden.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn key(meta: &ObjectMeta) -> Option<(String, String)> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn pod_record(pod: &Pod) -> PodRecord {
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
    PodRecord {
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ips,
        started_at: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        running: !matches!(phase, Some("Succeeded" | "Failed")),
        owner: controller_of(&pod.metadata),
        annotations: ours(&pod.metadata),
    }
}

impl ClusterIndex {
    /// A pod was added or changed. A pod that finished (Succeeded/Failed) gave its IP back: from
    /// here on it counts as departed.
    pub fn apply_pod(&mut self, pod: &Pod, now: Timestamp) {
        let Some(key) = key(&pod.metadata) else {
            return;
        };
        let record = pod_record(pod);
        if !record.running {
            if let Some(previous) = self.pods.remove(&key) {
                self.depart(key, previous, now);
            }
            return;
        }
        self.pods.insert(key, record);
    }

    /// A pod was deleted.
    pub fn delete_pod(&mut self, pod: &Pod, now: Timestamp) {
        let Some(key) = key(&pod.metadata) else {
            return;
        };
        let record = self.pods.remove(&key).unwrap_or_else(|| pod_record(pod));
        self.depart(key, record, now);
    }

    /// A full relist of pods (of one namespace, or all when `scope` is `None`): those no longer
    /// there went away while we were not watching.
    pub fn replace_pods(&mut self, scope: Option<&str>, pods: &[Pod], now: Timestamp) {
        let mut fresh = HashMap::new();
        for pod in pods {
            if let Some(key) = key(&pod.metadata) {
                let record = pod_record(pod);
                if record.running {
                    fresh.insert(key, record);
                }
            }
        }
        let in_scope = |ns: &str| scope.is_none_or(|s| s == ns);
        let gone: Vec<_> = self
            .pods
            .keys()
            .filter(|k| in_scope(&k.0) && !fresh.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(record) = self.pods.remove(&key) {
                self.depart(key, record, now);
            }
        }
        self.pods.extend(fresh);
    }

    fn depart(&mut self, (namespace, name): (String, String), record: PodRecord, now: Timestamp) {
        if record.ips.is_empty() {
            return;
        }
        self.departed.push_back(Departed {
            namespace,
            name,
            labels: record.labels,
            ips: record.ips,
            started_at: record.started_at,
            departed_at: now,
            owner: record.owner,
        });
        while self.departed.len() > DEPARTED_CAPACITY {
            self.departed.pop_front();
        }
    }

    /// An owner (ReplicaSet, Deployment, …) was added or changed.
    pub fn apply_owner(&mut self, kind: &str, meta: &ObjectMeta) {
        if let Some((ns, name)) = key(meta) {
            self.owners.insert(
                (kind.to_owned(), ns, name),
                OwnerRecord {
                    owner: controller_of(meta),
                    annotations: ours(meta),
                },
            );
        }
    }

    pub fn delete_owner(&mut self, kind: &str, meta: &ObjectMeta) {
        if let Some((ns, name)) = key(meta) {
            self.owners.remove(&(kind.to_owned(), ns, name));
        }
    }

    /// A full relist of one kind of owner (of one namespace, or all when `scope` is `None`).
    pub fn replace_owners(&mut self, kind: &str, scope: Option<&str>, metas: &[ObjectMeta]) {
        self.owners
            .retain(|(k, ns, _), _| k != kind || scope.is_some_and(|s| s != ns));
        for meta in metas {
            self.apply_owner(kind, meta);
        }
    }

    /// The workload at the top of the owner chain: Pod → ReplicaSet → Deployment, Job → CronJob.
    fn workload(&self, namespace: &str, pod_name: &str, owner: Option<&OwnerLink>) -> WorkloadRef {
        let mut current = match owner {
            Some(o) => o.clone(),
            None => {
                return WorkloadRef {
                    namespace: namespace.to_owned(),
                    kind: "Pod".into(),
                    name: pod_name.to_owned(),
                };
            }
        };
        // Chains are two links at most; the bound guards against a cycle in bad data.
        for _ in 0..4 {
            let next = self
                .owners
                .get(&(
                    current.kind.clone(),
                    namespace.to_owned(),
                    current.name.clone(),
                ))
                .and_then(|o| o.owner.clone())
                .filter(|o| OWNER_KINDS.contains(&o.kind.as_str()));
            match next {
                Some(parent) => current = parent,
                None => break,
            }
        }
        WorkloadRef {
            namespace: namespace.to_owned(),
            kind: current.kind,
            name: current.name,
        }
    }

    fn annotations_of(&self, w: &WorkloadRef) -> BTreeMap<String, String> {
        if w.kind == "Pod" {
            return self
                .pods
                .get(&(w.namespace.clone(), w.name.clone()))
                .map(|p| p.annotations.clone())
                .unwrap_or_default();
        }
        self.owners
            .get(&(w.kind.clone(), w.namespace.clone(), w.name.clone()))
            .map(|o| o.annotations.clone())
            .unwrap_or_default()
    }

    /// What one policy may see: pods of its own namespace that its selector picks, pods of that
    /// namespace that left recently, and the workloads involved, including any still carrying this
    /// policy's annotations (so they can be cleared). Nothing from other namespaces.
    pub fn view(
        &self,
        namespace: &str,
        selector: Option<&LabelSelector>,
        policy: &str,
        now: Timestamp,
    ) -> Result<ClusterView, String> {
        let selector: Option<Selector> = selector
            .cloned()
            .map(Selector::try_from)
            .transpose()
            .map_err(|e| format!("spec.workloads.podSelector: {e}"))?;
        let picks =
            |labels: &BTreeMap<String, String>| selector.as_ref().is_none_or(|s| s.matches(labels));

        let mut pods = Vec::new();
        let mut replicas: BTreeMap<WorkloadRef, u32> = BTreeMap::new();
        for ((ns, name), record) in &self.pods {
            if ns != namespace || !picks(&record.labels) {
                continue;
            }
            let workload = self.workload(ns, name, record.owner.as_ref());
            *replicas.entry(workload.clone()).or_default() += 1;
            pods.push(PodInfo {
                name: name.clone(),
                ips: record.ips.clone(),
                started_at: record.started_at,
                workload,
            });
        }
        pods.sort_by(|a, b| a.name.cmp(&b.name));

        let departed: Vec<DepartedPod> = self
            .departed
            .iter()
            .filter(|d| d.namespace == namespace && picks(&d.labels))
            .filter(|d| crate::database::elapsed(d.departed_at, now) < DEPARTED_RETENTION)
            .map(|d| DepartedPod {
                name: d.name.clone(),
                ips: d.ips.clone(),
                started_at: d.started_at,
                departed_at: d.departed_at,
                workload: self.workload(&d.namespace, &d.name, d.owner.as_ref()),
            })
            .collect();
        for d in &departed {
            replicas.entry(d.workload.clone()).or_default();
        }
        // Workloads still annotated by this policy must be in view, or their annotations would
        // outlive the leak.
        for workload in self.annotated_by(namespace, policy) {
            replicas.entry(workload).or_default();
        }

        let workloads = replicas
            .into_iter()
            .map(|(workload, running)| {
                let annotations = self.annotations_of(&workload);
                let number = |key: &str| {
                    annotations
                        .get(key)
                        .and_then(|v| v.trim().parse::<u32>().ok())
                };
                WorkloadInfo {
                    max_replicas: running.max(number(MAX_REPLICAS).unwrap_or(0)),
                    pool_max: number(crate::decide::POOL_MAX),
                    annotations: annotations
                        .into_iter()
                        .filter(|(k, _)| crate::decide::OWNED.contains(&k.as_str()))
                        .collect(),
                    workload,
                }
            })
            .collect();
        Ok(ClusterView {
            policy: Some(policy.to_owned()),
            pods,
            departed,
            workloads,
        })
    }

    /// Workloads in `namespace` carrying annotations written by `policy` (for cleanup).
    pub fn annotated_by(&self, namespace: &str, policy: &str) -> Vec<WorkloadRef> {
        let mut found: Vec<WorkloadRef> = self
            .owners
            .iter()
            .filter(|((_, ns, _), o)| {
                ns == namespace
                    && o.annotations
                        .get(crate::decide::POLICY)
                        .is_some_and(|p| p == policy)
            })
            .map(|((kind, ns, name), _)| WorkloadRef {
                namespace: ns.clone(),
                kind: kind.clone(),
                name: name.clone(),
            })
            .chain(
                self.pods
                    .iter()
                    .filter(|((ns, _), p)| {
                        ns == namespace
                            && p.annotations
                                .get(crate::decide::POLICY)
                                .is_some_and(|v| v == policy)
                    })
                    .map(|((ns, name), _)| WorkloadRef {
                        namespace: ns.clone(),
                        kind: "Pod".into(),
                        name: name.clone(),
                    }),
            )
            .collect();
        found.sort();
        found
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn meta(ns: &str, name: &str, owner: Option<(&str, &str)>) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            owner_references: owner.map(|(kind, name)| {
                vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: kind.into(),
                    name: name.into(),
                    uid: format!("uid-{name}"),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]
            }),
            labels: Some(BTreeMap::from([(
                "app".into(),
                name.split('-').next().unwrap().into(),
            )])),
            ..ObjectMeta::default()
        }
    }

    fn pod(ns: &str, name: &str, ip: &str, owner: Option<(&str, &str)>) -> Pod {
        Pod {
            metadata: meta(ns, name, owner),
            spec: None,
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                start_time: Some(Time(t("2026-01-01T10:00:00Z"))),
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
        }
    }

    fn index() -> ClusterIndex {
        let mut index = ClusterIndex::default();
        index.apply_owner("Deployment", &meta("shop", "orders", None));
        index.apply_owner(
            "ReplicaSet",
            &meta("shop", "orders-7d9f", Some(("Deployment", "orders"))),
        );
        index.apply_owner("CronJob", &meta("shop", "nightly", None));
        index.apply_owner(
            "Job",
            &meta("shop", "nightly-2901", Some(("CronJob", "nightly"))),
        );
        let now = t("2026-01-01T12:00:00Z");
        index.apply_pod(
            &pod(
                "shop",
                "orders-7d9f-a",
                "10.0.0.1",
                Some(("ReplicaSet", "orders-7d9f")),
            ),
            now,
        );
        index.apply_pod(
            &pod(
                "shop",
                "orders-7d9f-b",
                "10.0.0.2",
                Some(("ReplicaSet", "orders-7d9f")),
            ),
            now,
        );
        index.apply_pod(
            &pod(
                "shop",
                "nightly-2901-x",
                "10.0.0.3",
                Some(("Job", "nightly-2901")),
            ),
            now,
        );
        index.apply_pod(&pod("shop", "debug", "10.0.0.4", None), now);
        index.apply_pod(
            &pod("other", "orders-1", "10.0.9.9", Some(("ReplicaSet", "x"))),
            now,
        );
        index
    }

    fn workload_of(view: &ClusterView, pod: &str) -> String {
        view.pods
            .iter()
            .find(|p| p.name == pod)
            .unwrap()
            .workload
            .to_string()
    }

    #[test]
    fn owner_chains_lead_to_the_workload() {
        let view = index()
            .view("shop", None, "shop/p", t("2026-01-01T12:00:00Z"))
            .unwrap();
        assert_eq!(workload_of(&view, "orders-7d9f-a"), "Deployment/orders");
        assert_eq!(workload_of(&view, "nightly-2901-x"), "CronJob/nightly");
        assert_eq!(workload_of(&view, "debug"), "Pod/debug");
        let orders = view
            .workloads
            .iter()
            .find(|w| w.workload.name == "orders")
            .unwrap();
        assert_eq!(orders.max_replicas, 2);
    }

    #[test]
    fn a_policy_sees_only_its_own_namespace_and_selected_pods() {
        let index = index();
        let view = index
            .view("shop", None, "shop/p", t("2026-01-01T12:00:00Z"))
            .unwrap();
        assert_eq!(view.pods.len(), 4);
        assert!(view.pods.iter().all(|p| !p.name.starts_with("orders-1")));
        let selector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "orders".into())])),
            ..LabelSelector::default()
        };
        let view = index
            .view("shop", Some(&selector), "shop/p", t("2026-01-01T12:00:00Z"))
            .unwrap();
        let names: Vec<&str> = view.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["orders-7d9f-a", "orders-7d9f-b"]);
    }

    #[test]
    fn deleted_and_finished_pods_are_remembered_as_departed_for_a_while() {
        let mut index = index();
        let now = t("2026-01-01T12:00:00Z");
        index.delete_pod(
            &pod(
                "shop",
                "orders-7d9f-a",
                "10.0.0.1",
                Some(("ReplicaSet", "orders-7d9f")),
            ),
            now,
        );
        let mut done = pod(
            "shop",
            "nightly-2901-x",
            "10.0.0.3",
            Some(("Job", "nightly-2901")),
        );
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        index.apply_pod(&done, now);

        let view = index.view("shop", None, "shop/p", now).unwrap();
        let departed: Vec<(&str, String)> = view
            .departed
            .iter()
            .map(|d| (d.name.as_str(), d.workload.to_string()))
            .collect();
        assert_eq!(
            departed,
            [
                ("orders-7d9f-a", "Deployment/orders".to_owned()),
                ("nightly-2901-x", "CronJob/nightly".to_owned())
            ]
        );
        assert!(view.pods.iter().all(|p| p.name != "orders-7d9f-a"));
        // After the retention, forgotten.
        let later = t("2026-01-01T13:00:01Z");
        assert!(
            index
                .view("shop", None, "shop/p", later)
                .unwrap()
                .departed
                .is_empty()
        );
    }

    #[test]
    fn a_relist_departs_the_pods_that_vanished_while_unwatched() {
        let mut index = index();
        let now = t("2026-01-01T12:00:00Z");
        index.replace_pods(None, &[pod("shop", "debug", "10.0.0.4", None)], now);
        let view = index.view("shop", None, "shop/p", now).unwrap();
        assert_eq!(view.pods.len(), 1);
        assert_eq!(view.departed.len(), 3);
    }

    #[test]
    fn the_departed_record_is_bounded() {
        let mut index = ClusterIndex::default();
        let now = t("2026-01-01T12:00:00Z");
        for i in 0..(DEPARTED_CAPACITY + 50) {
            let name = format!("p-{i}");
            index.delete_pod(&pod("shop", &name, "10.1.0.1", None), now);
        }
        assert_eq!(index.departed.len(), DEPARTED_CAPACITY);
    }

    #[test]
    fn only_poolwarden_annotations_are_kept_and_budgets_are_read_from_them() {
        let mut index = index();
        let mut deploy = meta("shop", "orders", None);
        deploy.annotations = Some(BTreeMap::from([
            ("poolwarden.io/pool-max".into(), "25".into()),
            (MAX_REPLICAS.into(), "10".into()),
            ("poolwarden.io/leak".into(), "IdleAccumulation".into()),
            ("poolwarden.io/policy".into(), "shop/p".into()),
            (
                "kubectl.kubernetes.io/last-applied-configuration".into(),
                "{…}".into(),
            ),
        ]));
        index.apply_owner("Deployment", &deploy);
        let view = index
            .view("shop", None, "shop/p", t("2026-01-01T12:00:00Z"))
            .unwrap();
        let orders = view
            .workloads
            .iter()
            .find(|w| w.workload.name == "orders")
            .unwrap();
        assert_eq!(orders.pool_max, Some(25));
        assert_eq!(orders.max_replicas, 10);
        assert_eq!(
            orders.annotations.keys().collect::<Vec<_>>(),
            ["poolwarden.io/leak", "poolwarden.io/policy"]
        );
        assert_eq!(index.annotated_by("shop", "shop/p").len(), 1);
        assert!(index.annotated_by("shop", "shop/other").is_empty());
    }

    #[test]
    fn a_bad_selector_is_reported_not_panicked_on() {
        let selector = LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "app".into(),
                    operator: "Sometimes".into(),
                    values: None,
                },
            ]),
            ..LabelSelector::default()
        };
        let err = index()
            .view("shop", Some(&selector), "shop/p", t("2026-01-01T12:00:00Z"))
            .unwrap_err();
        assert!(err.contains("podSelector"), "{err}");
    }
}
