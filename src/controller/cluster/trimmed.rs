//! What the watches decode, and nothing more: objects trimmed as they arrive, so that a page of
//! pods costs its JSON, not its specs, container statuses and `managedFields` as objects.
//!
//! [`TrimmedPod`] keeps a pod's name, namespace, uid, resourceVersion, labels, owner references,
//! poolwarden's own annotations, phase, IPs, start time and its conditions' types and statuses
//! (whether it is Ready: a pooler's replica is read only then). [`TrimmedMeta`] keeps the same of any
//! object's metadata, asked for as metadata only (owners, Secrets). Every other field of the JSON
//! is skipped by the decoder without being kept.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::core::{ApiResource, DynamicResourceScope};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The prefix of every annotation poolwarden reads or writes.
pub const ANNOTATION_PREFIX: &str = "poolwarden.io/";

/// A pod, as attribution needs it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct TrimmedPod {
    #[serde(deserialize_with = "trimmed_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<TrimmedPodStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrimmedPodStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIp>>,
    #[serde(default)]
    pub start_time: Option<Time>,
    #[serde(default)]
    pub conditions: Option<Vec<PodCondition>>,
}

/// A pod condition's type and status, nothing more.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PodIp {
    pub ip: String,
}

impl kube::Resource for TrimmedPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Any object's metadata, trimmed; asked for as metadata only (`PartialObjectMetadata`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct TrimmedMeta {
    #[serde(deserialize_with = "trimmed_meta")]
    pub metadata: ObjectMeta,
}

impl kube::Resource for TrimmedMeta {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn metadata_api() -> bool {
        true
    }
    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The metadata fields poolwarden reads; the decoder skips the rest (`managedFields` above all).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "ours_only")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerReference>>,
}

pub(super) fn trimmed_meta<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ObjectMeta, D::Error> {
    let meta = Meta::deserialize(deserializer)?;
    Ok(ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        labels: meta.labels,
        annotations: meta.annotations,
        owner_references: meta.owner_references,
        ..ObjectMeta::default()
    })
}

/// Annotations, keeping only `poolwarden.io/*`: `kubectl.kubernetes.io/last-applied-configuration`
/// and the like are skipped unread.
fn ours_only<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Ours;
    impl<'de> Visitor<'de> for Ours {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of annotations")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut ours = BTreeMap::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key.starts_with(ANNOTATION_PREFIX) {
                    ours.insert(key.into_owned(), map.next_value::<String>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(Some(ours))
        }
    }
    deserializer.deserialize_option(Ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_keeps_only_what_attribution_needs() {
        let pod: TrimmedPod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "orders-7d9f-a", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "labels": {"app": "orders"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"a\": 1}",
                    "poolwarden.io/leak": "IdleAccumulation",
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-7d9f",
                                     "uid": "u-0", "controller": true}],
                "managedFields": [{"manager": "kubelet", "operation": "Update"}],
                "creationTimestamp": "2026-01-01T10:00:00Z",
            },
            "spec": {"containers": [{"name": "app", "image": "orders:1"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                       "startTime": "2026-01-01T10:00:01Z", "containerStatuses": [{"name": "app"}],
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": "2026-01-01T10:00:05Z"}]},
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&pod).unwrap(),
            json!({
                "metadata": {
                    "name": "orders-7d9f-a", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                    "labels": {"app": "orders"},
                    "annotations": {"poolwarden.io/leak": "IdleAccumulation"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                         "name": "orders-7d9f", "uid": "u-0", "controller": true}],
                },
                "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                           "startTime": "2026-01-01T10:00:01Z",
                           "conditions": [{"type": "Ready", "status": "True"}]},
            })
        );
    }

    #[test]
    fn metadata_without_annotations_or_status_decodes() {
        let meta: TrimmedMeta = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "orders", "namespace": "shop", "annotations": null},
        }))
        .unwrap();
        assert_eq!(meta.metadata.name.as_deref(), Some("orders"));
        assert_eq!(meta.metadata.annotations, None);
        let pod: TrimmedPod =
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "shop"}}))
                .unwrap();
        assert!(pod.status.is_none());
    }
}
