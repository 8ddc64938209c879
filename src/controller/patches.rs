//! The exact bodies poolwarden sends to the API server, built without IO so tests can pin them.

use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Map, Value, json};

use crate::api::{PoolPolicy, PoolPolicyStatus};
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
    let (group, version, plural) = match workload.kind.as_str() {
        "Deployment" => ("apps", "v1", "deployments"),
        "StatefulSet" => ("apps", "v1", "statefulsets"),
        "DaemonSet" => ("apps", "v1", "daemonsets"),
        "ReplicaSet" => ("apps", "v1", "replicasets"),
        "Job" => ("batch", "v1", "jobs"),
        "CronJob" => ("batch", "v1", "cronjobs"),
        "Pod" => ("", "v1", "pods"),
        _ => return None,
    };
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, &workload.kind),
        plural,
    ))
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
    }

    #[test]
    fn the_status_apply_body_names_the_kind() {
        let body = status(&PoolPolicyStatus {
            leaking_workloads: 2,
            ..PoolPolicyStatus::default()
        });
        assert_eq!(body["apiVersion"], "poolwarden.io/v1alpha1");
        assert_eq!(body["kind"], "PoolPolicy");
        assert_eq!(body["status"]["leakingWorkloads"], 2);
        assert!(
            body.get("spec").is_none(),
            "status apply never touches the spec"
        );
    }

    #[test]
    fn every_owner_kind_has_an_api_resource() {
        for (kind, plural, api_version) in [
            ("Deployment", "deployments", "apps/v1"),
            ("StatefulSet", "statefulsets", "apps/v1"),
            ("DaemonSet", "daemonsets", "apps/v1"),
            ("ReplicaSet", "replicasets", "apps/v1"),
            ("Job", "jobs", "batch/v1"),
            ("CronJob", "cronjobs", "batch/v1"),
            ("Pod", "pods", "v1"),
        ] {
            let w = WorkloadRef {
                kind: kind.into(),
                ..workload()
            };
            let r = workload_resource(&w).unwrap();
            assert_eq!(
                (r.plural.as_str(), r.api_version.as_str()),
                (plural, api_version)
            );
        }
        assert!(
            workload_resource(&WorkloadRef {
                kind: "Rollout".into(),
                ..workload()
            })
            .is_none()
        );
    }
}
