//! What the admission webhook says about one change: the workload it scales, its largest scale
//! after the change ([`crate::decide::scale`]), and, for every PoolPolicy of its namespace whose
//! server it books connections on, whether the pools would then exceed what that server accepts.
//! Pure: the index and the policies' status are read by the caller.
//!
//! Changes judged: creating or updating a Deployment or StatefulSet (its replicas, rollout and
//! `poolwarden.io/*` annotations as the new object says), its `scale` subresource (`kubectl
//! scale`: the replicas), and creating or updating an HorizontalPodAutoscaler (its maximum, for
//! its target). Anything else says nothing.
//!
//! A workload counts against a policy's server when the policy's last cycle booked it (its
//! `status.capacity.workloads`), learned its pool (`status.learnedPools`), or the workload
//! declares `poolwarden.io/pool-max` and the policy's pod selector picks its pods: a workload
//! never seen connecting and declaring nothing is nobody's business. The sum is the policy's
//! last booked total with this workload's share replaced by its new one.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};
use serde_json::Value;

use crate::api::{CapacityStatus, LearnedPoolStatus};
use crate::controller::cluster::index::{ClusterIndex, MAX_REPLICAS};
use crate::controller::cluster::scaling::{TrimmedAutoscaler, TrimmedWorkload};
use crate::decide::scale::{Autoscaler, Desired, ScaleSpec, largest};
use crate::decide::{POOL_MAX, WorkloadRef};

/// One change, as the webhook sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub workload: WorkloadRef,
    /// How far it may scale once the change is made.
    pub scale: ScaleSpec,
    /// The pool per pod it declares (`poolwarden.io/pool-max`).
    pub pool_max: Option<u32>,
    /// The labels of its pods, when the change carries its pod template.
    pub pod_labels: Option<BTreeMap<String, String>>,
}

/// What the webhook reads of an admission request.
pub struct Request<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub sub_resource: Option<&'a str>,
    pub namespace: &'a str,
    pub name: &'a str,
    pub object: &'a Value,
}

/// The kind of a scalable workload served at `group`/`resource`.
fn workload_kind(group: &str, resource: &str) -> Option<&'static str> {
    match (group, resource) {
        ("apps", "deployments") => Some("Deployment"),
        ("apps", "statefulsets") => Some("StatefulSet"),
        _ => None,
    }
}

fn number(annotations: Option<&BTreeMap<String, String>>, key: &str) -> Option<u32> {
    annotations?.get(key)?.trim().parse().ok()
}

/// The change a request makes, with what the index knows for the rest; `None` for a request
/// that changes no workload's scale.
pub fn change(request: &Request<'_>, index: &ClusterIndex) -> Option<Change> {
    let workload = |kind: &str, name: &str| WorkloadRef {
        namespace: request.namespace.into(),
        kind: kind.into(),
        name: name.into(),
    };
    match (
        request.group,
        request.resource,
        request.sub_resource.unwrap_or_default(),
    ) {
        (group, resource, "") if workload_kind(group, resource).is_some() => {
            let kind = workload_kind(group, resource)?;
            let object: TrimmedWorkload = serde_json::from_value(request.object.clone()).ok()?;
            let name = object
                .metadata
                .name
                .clone()
                .unwrap_or(request.name.to_owned());
            let workload = workload(kind, &name);
            let (known, _) = index.workload_now(&workload);
            let own = object.scale(kind);
            let annotations = object.metadata.annotations.as_ref();
            Some(Change {
                scale: ScaleSpec {
                    running: known.running,
                    desired: own.desired,
                    rollout: own.rollout,
                    autoscaler: known.autoscaler,
                    declared: number(annotations, MAX_REPLICAS),
                },
                pool_max: number(annotations, POOL_MAX),
                pod_labels: pod_labels(request.object),
                workload,
            })
        }
        (group, resource, "scale") if workload_kind(group, resource).is_some() => {
            let replicas = request.object.pointer("/spec/replicas")?.as_u64()?;
            let workload = workload(workload_kind(group, resource)?, request.name);
            let (mut scale, pool_max) = index.workload_now(&workload);
            scale.desired = Some(Desired::Replicas(u32::try_from(replicas).ok()?));
            Some(Change {
                workload,
                scale,
                pool_max,
                pod_labels: None,
            })
        }
        ("autoscaling", "horizontalpodautoscalers", "") => {
            let hpa: TrimmedAutoscaler = serde_json::from_value(request.object.clone()).ok()?;
            let target = &hpa.spec.scale_target_ref;
            let workload = workload(&target.kind, &target.name);
            let (mut scale, pool_max) = index.workload_now(&workload);
            let name = hpa.metadata.name.clone().unwrap_or(request.name.to_owned());
            let this = Autoscaler {
                name: name.clone(),
                max_replicas: hpa.spec.max_replicas,
            };
            // Another autoscaler of the same workload with a larger maximum still counts.
            scale.autoscaler = Some(match scale.autoscaler {
                Some(other) if other.name != name && other.max_replicas > this.max_replicas => {
                    other
                }
                _ => this,
            });
            Some(Change {
                workload,
                scale,
                pool_max,
                pod_labels: None,
            })
        }
        _ => None,
    }
}

fn pod_labels(object: &Value) -> Option<BTreeMap<String, String>> {
    serde_json::from_value(object.pointer("/spec/template/metadata/labels")?.clone()).ok()
}

/// A PoolPolicy of the change's namespace, as far as the webhook needs it.
pub struct Policy<'a> {
    /// `namespace/name`.
    pub name: String,
    /// Its `spec.workloads.podSelector`, when it has one.
    pub selector: Option<&'a Selector>,
    /// Its last cycle's capacity (none yet: nothing to say).
    pub capacity: Option<&'a CapacityStatus>,
    pub learned: &'a [LearnedPoolStatus],
}

/// The warnings for `change`, one per policy whose server it would overbook.
pub fn warnings(change: &Change, policies: &[Policy<'_>]) -> Vec<String> {
    let who = format!("{}/{}", change.workload.kind, change.workload.name);
    let largest = largest(&change.scale);
    let mut said = Vec::new();
    for policy in policies {
        let Some(capacity) = policy.capacity else {
            continue;
        };
        let booking = capacity.workloads.iter().find(|w| w.workload == who);
        let learned = policy.learned.iter().find(|l| l.workload == who);
        let picked = match (&change.pod_labels, policy.selector) {
            (Some(labels), Some(selector)) => selector.matches(labels),
            _ => true,
        };
        let declared = change.pool_max.filter(|n| *n > 0 && picked);
        let Some(pool) = declared
            .or(booking.map(|b| b.pool_per_pod))
            .or(learned.map(|l| l.sessions_per_pod))
            .filter(|n| *n > 0)
        else {
            continue;
        };
        let now = booking.map_or(0, |b| b.connections);
        let then = u64::from(largest.pods()) * u64::from(pool);
        let booked = capacity.booked_connections.saturating_sub(now) + then;
        if booked <= u64::from(capacity.usable_connections) {
            continue;
        }
        let surge = if largest.surge > 0 {
            format!(" + {} in a rollout", largest.surge)
        } else {
            String::new()
        };
        said.push(format!(
            "poolwarden: at {} replicas{surge}, {pool} connections per pod, {who} brings the \
             pools on the database of PoolPolicy {} to {booked} connections; it accepts {}",
            largest.replicas, policy.name, capacity.usable_connections
        ));
    }
    said
}
