//! The index's part in a workload's largest scale: the replicas and rollout of the workloads that
//! say them (Deployments, StatefulSets, DaemonSets) and the HorizontalPodAutoscalers that target
//! them, by namespace, fed by their watches and read into each workload's
//! [`ScaleSpec`] of a policy's view.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{ClusterIndex, Listed, MAX_REPLICAS, key};
use crate::controller::cluster::kinds;
use crate::controller::cluster::scaling::{TrimmedAutoscaler, TrimmedWorkload};
use crate::decide::scale::{Autoscaler, ScaleSpec};
use crate::decide::{POOL_MAX, WorkloadRef};

/// An autoscaler, trimmed to what it targets and how far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AutoscalerRecord {
    target_kind: String,
    target_name: String,
    max_replicas: u32,
}

impl ClusterIndex {
    /// A Deployment, StatefulSet or DaemonSet was added or changed (also: listed): its place in
    /// the owner chains and its annotations as for any owner, and its replicas and rollout.
    pub fn apply_workload(&mut self, kind: &str, workload: &TrimmedWorkload) {
        self.apply_owner(kind, &workload.metadata);
        let (Some(k), Some((ns, name))) = (kinds::owner(kind), key(&workload.metadata)) else {
            return;
        };
        if let Some(record) = self
            .namespace(ns)
            .owners
            .get_mut(&(k.kind, name.to_owned()))
        {
            record.scale = workload.scale(kind);
        }
    }

    /// An HorizontalPodAutoscaler was added or changed (also: listed).
    pub fn apply_autoscaler(&mut self, hpa: &TrimmedAutoscaler) {
        let Some((ns, name)) = key(&hpa.metadata) else {
            return;
        };
        let target = &hpa.spec.scale_target_ref;
        let record = AutoscalerRecord {
            target_kind: target.kind.clone(),
            target_name: target.name.clone(),
            max_replicas: hpa.spec.max_replicas,
        };
        self.namespace(ns)
            .autoscalers
            .insert(name.to_owned(), record);
    }

    pub fn delete_autoscaler(&mut self, meta: &ObjectMeta) {
        if let Some((ns, name)) = key(meta) {
            self.namespace(ns).autoscalers.remove(name);
        }
    }

    /// A full (re)list of autoscalers of `scope` has arrived: those it did not bring are gone.
    pub fn retain_autoscalers(&mut self, scope: Option<&str>, listed: &Listed) {
        for (ns, namespace) in &mut self.namespaces {
            if scope.is_some_and(|s| s != ns) {
                continue;
            }
            namespace
                .autoscalers
                .retain(|name, _| listed.contains(&(ns.clone(), name.clone())));
        }
    }

    /// The autoscaler that targets `workload`, the largest maximum should several (they would
    /// fight; the largest is the one to fear).
    pub fn autoscaler_of(&self, workload: &WorkloadRef) -> Option<Autoscaler> {
        let namespace = self.namespaces.get(workload.namespace.as_str())?;
        namespace
            .autoscalers
            .iter()
            .filter(|(_, a)| a.target_kind == workload.kind && a.target_name == workload.name)
            .map(|(name, a)| Autoscaler {
                name: name.clone(),
                max_replicas: a.max_replicas,
            })
            .max_by(|a, b| {
                a.max_replicas
                    .cmp(&b.max_replicas)
                    .then(b.name.cmp(&a.name))
            })
    }

    /// What the index knows of how far `workload` may scale, with `running` of its pods seen
    /// and `declared` by its `poolwarden.io/max-replicas`.
    pub(super) fn scale_of(
        &self,
        workload: &WorkloadRef,
        running: u32,
        declared: Option<u32>,
    ) -> ScaleSpec {
        let own = kinds::owner(&workload.kind).and_then(|kind| {
            self.namespaces
                .get(workload.namespace.as_str())?
                .owners
                .get(&(kind.kind, workload.name.to_string()))
        });
        let scale = own.map(|o| o.scale).unwrap_or_default();
        ScaleSpec {
            running,
            desired: scale.desired,
            rollout: scale.rollout,
            autoscaler: self.autoscaler_of(workload),
            declared,
        }
    }

    /// What the index knows now of how far `workload` may scale (its pods running, whatever
    /// selector), and the pool per pod it declares: for the admission webhook, which judges one
    /// workload at a time.
    pub fn workload_now(&self, workload: &WorkloadRef) -> (ScaleSpec, Option<u32>) {
        let running = self
            .namespaces
            .get(workload.namespace.as_str())
            .map_or(0, |ns| {
                ns.pods
                    .iter()
                    .filter(|(name, p)| {
                        &self.workload(&workload.namespace, name, p.owner.as_ref()) == workload
                    })
                    .count() as u32
            });
        let number = |key: &str| {
            self.annotations_of(workload)
                .and_then(|a| a.get(key))
                .and_then(|v| v.trim().parse::<u32>().ok())
        };
        (
            self.scale_of(workload, running, number(MAX_REPLICAS)),
            number(POOL_MAX),
        )
    }
}
