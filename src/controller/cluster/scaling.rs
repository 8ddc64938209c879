//! What the watches of scalable workloads and of their autoscalers decode, and what it means for
//! a workload's largest scale ([`crate::decide::scale`]).
//!
//! [`TrimmedWorkload`] keeps of a Deployment, StatefulSet or DaemonSet its metadata (trimmed as
//! [`super::trimmed`] does), its replicas, its rollout strategy with `maxSurge`, and a DaemonSet's
//! `status.desiredNumberScheduled`; the pod template, the bulk of the object, is skipped by the
//! decoder unread. [`TrimmedAutoscaler`] keeps of an `autoscaling/v2` HorizontalPodAutoscaler its
//! target and `maxReplicas` (KEDA's ScaledObject works through such an HPA, `keda-hpa-<name>`).

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, DynamicResourceScope};
use serde::{Deserialize, Serialize};

use super::kinds;
use super::trimmed::trimmed_meta;
use crate::decide::scale::{Desired, IntOrPercent, Rollout};

/// A Deployment, StatefulSet or DaemonSet, as its largest scale needs it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct TrimmedWorkload {
    #[serde(deserialize_with = "trimmed_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: WorkloadSpec,
    #[serde(default)]
    pub status: WorkloadStatus,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    #[serde(default)]
    pub replicas: Option<u32>,
    /// A Deployment's.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// A StatefulSet's or a DaemonSet's.
    #[serde(default)]
    pub update_strategy: Option<Strategy>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub rolling_update: Option<RollingUpdate>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    /// An IntOrString: `2` or `"25%"`.
    #[serde(default)]
    pub max_surge: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// A DaemonSet's: the nodes that should run its pod.
    #[serde(default)]
    pub desired_number_scheduled: Option<u32>,
}

/// What a workload's own object says about its scale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadScale {
    pub desired: Option<Desired>,
    pub rollout: Rollout,
}

/// The `maxSurge` the API server fills in when a rolling update leaves it out.
const DEPLOYMENT_DEFAULT_SURGE: IntOrPercent = IntOrPercent::Percent(25);

impl TrimmedWorkload {
    /// Its replicas and rollout, read by the rules of its `kind`.
    pub fn scale(&self, kind: &str) -> WorkloadScale {
        let replicas = Desired::Replicas(self.spec.replicas.unwrap_or(1));
        let surge = |s: &Strategy, default: IntOrPercent| {
            s.rolling_update
                .as_ref()
                .and_then(|r| r.max_surge.as_ref())
                .map_or(Some(default), IntOrPercent::parse)
        };
        match kind {
            "Deployment" => {
                let strategy = self.spec.strategy.clone().unwrap_or_default();
                let rollout = match strategy.type_.as_deref() {
                    Some("Recreate") => Rollout::Recreate,
                    _ => surge(&strategy, DEPLOYMENT_DEFAULT_SURGE)
                        .map_or(Rollout::Unknown, Rollout::Surge),
                };
                WorkloadScale {
                    desired: Some(replicas),
                    rollout,
                }
            }
            // Pods keep their identity: each is replaced where it stood, never beside itself.
            "StatefulSet" => WorkloadScale {
                desired: Some(replicas),
                rollout: Rollout::InPlace,
            },
            "DaemonSet" => {
                let strategy = self.spec.update_strategy.clone().unwrap_or_default();
                let rollout = match strategy.type_.as_deref() {
                    Some("OnDelete") => Rollout::InPlace,
                    _ => match surge(&strategy, IntOrPercent::Count(0)) {
                        Some(IntOrPercent::Count(0) | IntOrPercent::Percent(0)) => Rollout::InPlace,
                        Some(s) => Rollout::Surge(s),
                        None => Rollout::Unknown,
                    },
                };
                WorkloadScale {
                    desired: self.status.desired_number_scheduled.map(Desired::Nodes),
                    rollout,
                }
            }
            _ => WorkloadScale::default(),
        }
    }
}

impl kube::Resource for TrimmedWorkload {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

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

/// An `autoscaling/v2` HorizontalPodAutoscaler: what it scales and how far.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct TrimmedAutoscaler {
    #[serde(deserialize_with = "trimmed_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AutoscalerSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerSpec {
    #[serde(default)]
    pub scale_target_ref: ScaleTarget,
    #[serde(default)]
    pub max_replicas: u32,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ScaleTarget {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

impl kube::Resource for TrimmedAutoscaler {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        kinds::AUTOSCALER.kind.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        kinds::AUTOSCALER.group.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        kinds::AUTOSCALER.version.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        kinds::AUTOSCALER.plural.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload(value: serde_json::Value) -> TrimmedWorkload {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_deployment_keeps_its_replicas_and_surge_and_drops_its_template() {
        let d = workload(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "orders-api", "namespace": "shop",
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                         "poolwarden.io/pool-max": "10"}},
            "spec": {"replicas": 3,
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                     "selector": {"matchLabels": {"app": "orders-api"}},
                     "template": {"metadata": {"labels": {"app": "orders-api"}},
                                  "spec": {"containers": [{"name": "app", "image": "orders:1"}]}}},
            "status": {"replicas": 3, "readyReplicas": 3},
        }));
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({
                "metadata": {"name": "orders-api", "namespace": "shop",
                             "annotations": {"poolwarden.io/pool-max": "10"}},
                "spec": {"replicas": 3, "strategy": {"type": "RollingUpdate",
                                                     "rollingUpdate": {"maxSurge": "25%"}},
                         "updateStrategy": null},
                "status": {"desiredNumberScheduled": null},
            })
        );
        assert_eq!(
            d.scale("Deployment"),
            WorkloadScale {
                desired: Some(Desired::Replicas(3)),
                rollout: Rollout::Surge(IntOrPercent::Percent(25)),
            }
        );
    }

    #[test]
    fn each_kind_reads_its_own_strategy() {
        let recreate =
            workload(json!({"metadata": {}, "spec": {"strategy": {"type": "Recreate"}}}));
        assert_eq!(recreate.scale("Deployment").rollout, Rollout::Recreate);
        assert_eq!(
            recreate.scale("Deployment").desired,
            Some(Desired::Replicas(1)),
            "replicas default to 1"
        );
        let counted = workload(json!({"metadata": {}, "spec": {"replicas": 4,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2}}}}));
        assert_eq!(
            counted.scale("Deployment").rollout,
            Rollout::Surge(IntOrPercent::Count(2))
        );
        // OrderedReady or Parallel, maxUnavailable or not: a StatefulSet never surges.
        let parallel = workload(json!({"metadata": {}, "spec": {"replicas": 5,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}}}));
        assert_eq!(
            parallel.scale("StatefulSet"),
            WorkloadScale {
                desired: Some(Desired::Replicas(5)),
                rollout: Rollout::InPlace,
            }
        );
        let daemons = workload(json!({"metadata": {},
            "spec": {"updateStrategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxSurge": "10%", "maxUnavailable": 0}}},
            "status": {"desiredNumberScheduled": 12}}));
        assert_eq!(
            daemons.scale("DaemonSet"),
            WorkloadScale {
                desired: Some(Desired::Nodes(12)),
                rollout: Rollout::Surge(IntOrPercent::Percent(10)),
            }
        );
        let no_surge = workload(json!({"metadata": {},
            "spec": {"updateStrategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxUnavailable": 1}}}}));
        assert_eq!(no_surge.scale("DaemonSet").rollout, Rollout::InPlace);
        assert_eq!(
            no_surge.scale("DaemonSet").desired,
            None,
            "not scheduled yet"
        );
    }

    #[test]
    fn an_autoscaler_keeps_its_target_and_maximum() {
        let hpa: TrimmedAutoscaler = serde_json::from_value(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "keda-hpa-orders", "namespace": "shop",
                         "labels": {"scaledobject.keda.sh/name": "orders"}},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                        "name": "orders-api"},
                     "minReplicas": 2, "maxReplicas": 20,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                  "target": {"type": "Utilization", "averageUtilization": 70}}}]},
            "status": {"currentReplicas": 3, "desiredReplicas": 3},
        }))
        .unwrap();
        assert_eq!(hpa.spec.scale_target_ref.kind, "Deployment");
        assert_eq!(hpa.spec.scale_target_ref.name, "orders-api");
        assert_eq!(hpa.spec.max_replicas, 20);
    }
}
