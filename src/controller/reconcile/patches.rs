//! The exact bodies poolwarden sends to the API server, and the object references of its
//! Events, built without IO so tests can pin them.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::ApiResource;
use serde_json::{Map, Value, json};

use crate::api::{PoolPolicy, PoolPolicyStatus};
use crate::controller::cluster::index::Identity;
use crate::controller::cluster::kinds;
use crate::decide::{AnnotationChange, OWNED, WorkloadRef};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "poolwarden";
/// Held by every PoolPolicy so that deleting it first removes the annotations it wrote.
pub const FINALIZER: &str = "poolwarden.io/cleanup";

/// A JSON merge patch touching only poolwarden's annotations (`null` removes a key).
pub fn annotations(change: &AnnotationChange) -> Value {
    let annotations: Map<String, Value> = change
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
        .collect();
    json!({ "metadata": { "annotations": annotations } })
}

/// A merge patch removing every annotation poolwarden writes.
pub fn remove_annotations() -> Value {
    let annotations: Map<String, Value> = OWNED
        .iter()
        .map(|k| ((*k).to_owned(), Value::Null))
        .collect();
    json!({ "metadata": { "annotations": annotations } })
}

/// A merge patch removing the annotations `keys`.
pub fn remove_keys(keys: &[String]) -> Value {
    let annotations: Map<String, Value> = keys.iter().map(|k| (k.clone(), Value::Null)).collect();
    json!({ "metadata": { "annotations": annotations } })
}

/// The server-side apply body for a PoolPolicy's status.
pub fn status(status: &PoolPolicyStatus) -> Value {
    json!({
        "apiVersion": "poolwarden.io/v1alpha1",
        "kind": "PoolPolicy",
        "status": status,
    })
}

/// Where a workload kind lives in the API.
pub fn workload_resource(workload: &WorkloadRef) -> Option<ApiResource> {
    kinds::workload(&workload.kind).map(kinds::Kind::api_resource)
}

/// An Event's reference to a workload, complete as `kubectl describe` needs it to find the Event
/// (it matches on kind, name, namespace and uid): `None` for a kind poolwarden does not follow.
pub fn workload_reference(
    workload: &WorkloadRef,
    identity: Option<&Identity>,
) -> Option<ObjectReference> {
    let kind = kinds::workload(&workload.kind)?;
    Some(ObjectReference {
        api_version: Some(kind.api_version()),
        kind: Some(kind.kind.to_owned()),
        name: Some(workload.name.to_string()),
        namespace: Some(workload.namespace.to_string()),
        uid: identity.and_then(|i| i.uid.clone()),
        resource_version: identity.and_then(|i| i.resource_version.clone()),
        ..ObjectReference::default()
    })
}

/// An Event's reference to a policy.
pub fn policy_reference(policy: &PoolPolicy) -> ObjectReference {
    ObjectReference {
        api_version: Some("poolwarden.io/v1alpha1".into()),
        kind: Some("PoolPolicy".into()),
        name: policy.metadata.name.clone(),
        namespace: policy.metadata.namespace.clone(),
        uid: policy.metadata.uid.clone(),
        resource_version: policy.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// `namespace/name` of a policy, as written into annotations.
pub fn policy_ref(policy: &PoolPolicy) -> String {
    format!(
        "{}/{}",
        policy.metadata.namespace.as_deref().unwrap_or_default(),
        policy.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn workload() -> WorkloadRef {
        WorkloadRef {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "orders".into(),
        }
    }

    #[test]
    fn an_annotation_patch_touches_only_our_keys_and_removes_with_null() {
        let change = AnnotationChange {
            workload: workload(),
            annotations: BTreeMap::from([
                ("poolwarden.io/leak".into(), Some("IdleAccumulation".into())),
                ("poolwarden.io/leak-detail".into(), None),
            ]),
        };
        assert_eq!(
            annotations(&change),
            json!({"metadata": {"annotations": {
                "poolwarden.io/leak": "IdleAccumulation",
                "poolwarden.io/leak-detail": null,
            }}})
        );
        assert_eq!(
            remove_annotations(),
            json!({"metadata": {"annotations": {
                "poolwarden.io/leak": null,
                "poolwarden.io/leak-detail": null,
                "poolwarden.io/policy": null,
            }}})
        );
        assert_eq!(
            remove_keys(&["poolwarden.io/leak".into()]),
            json!({"metadata": {"annotations": {"poolwarden.io/leak": null}}})
        );
    }

    #[test]
    fn the_status_apply_body_is_the_status_alone() {
        let body = status(&PoolPolicyStatus {
            leaking_workloads: 2,
            ..PoolPolicyStatus::default()
        });
        assert_eq!(
            body,
            json!({
                "apiVersion": "poolwarden.io/v1alpha1",
                "kind": "PoolPolicy",
                "status": serde_json::to_value(PoolPolicyStatus {
                    leaking_workloads: 2,
                    ..PoolPolicyStatus::default()
                })
                .unwrap(),
            })
        );
        assert_eq!(body["status"]["leakingWorkloads"], 2);
    }

    #[test]
    fn an_events_reference_names_the_workload_completely() {
        let identity = Identity {
            uid: Some("0f0e-uid".into()),
            resource_version: Some("4242".into()),
        };
        assert_eq!(
            serde_json::to_value(workload_reference(&workload(), Some(&identity))).unwrap(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders",
                   "namespace": "shop", "uid": "0f0e-uid", "resourceVersion": "4242"})
        );
        let cronjob = WorkloadRef {
            kind: "CronJob".into(),
            ..workload()
        };
        assert_eq!(
            serde_json::to_value(workload_reference(&cronjob, None)).unwrap(),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "name": "orders", "namespace": "shop"})
        );
        let rollout = WorkloadRef {
            kind: "Rollout".into(),
            ..workload()
        };
        assert_eq!(workload_reference(&rollout, None), None);
    }
}
