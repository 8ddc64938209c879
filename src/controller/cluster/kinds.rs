//! The kinds of pod owner poolwarden follows, defined once: this table drives the watches, the
//! owner chains of the index and the paths of the patches and Event references.
//!
//! An owner that is itself owned by one of these kinds (a ReplicaSet of a Deployment, a Job of a
//! CronJob) is never a workload: the top of its chain is. Whatever poolwarden's annotations it
//! carries are its controller's copies (the Deployment controller copies a Deployment's
//! annotations onto its ReplicaSets), never poolwarden's own writes.

use kube::core::{ApiResource, GroupVersionKind};

/// Where one kind lives in the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub kind: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
}

const fn kind(
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
) -> Kind {
    Kind {
        kind,
        group,
        version,
        plural,
    }
}

/// The owners of pods, in the order their watches start.
pub const OWNERS: [Kind; 6] = [
    kind("ReplicaSet", "apps", "v1", "replicasets"),
    kind("Deployment", "apps", "v1", "deployments"),
    kind("StatefulSet", "apps", "v1", "statefulsets"),
    kind("DaemonSet", "apps", "v1", "daemonsets"),
    kind("Job", "batch", "v1", "jobs"),
    kind("CronJob", "batch", "v1", "cronjobs"),
];

/// The owner kinds whose objects say how far they scale: watched whole (trimmed, see
/// [`super::scaling`]), not as metadata only.
pub const SCALED: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];

/// What scales a workload: an `autoscaling/v2` HorizontalPodAutoscaler (KEDA's ScaledObject
/// makes one).
pub const AUTOSCALER: Kind = kind(
    "HorizontalPodAutoscaler",
    "autoscaling",
    "v2",
    "horizontalpodautoscalers",
);

/// A bare pod is its own workload.
pub const POD: Kind = kind("Pod", "", "v1", "pods");

/// Secrets, watched for their metadata only.
pub const SECRET: Kind = kind("Secret", "", "v1", "secrets");

/// The owner kind named `name`, if poolwarden follows it.
pub fn owner(name: &str) -> Option<&'static Kind> {
    OWNERS.iter().find(|k| k.kind == name)
}

/// Whether the owner kind's objects say how far it scales.
pub fn scales(kind: &Kind) -> bool {
    SCALED.contains(&kind.kind)
}

/// A workload's kind: an owner kind, or `Pod`.
pub fn workload(name: &str) -> Option<&'static Kind> {
    owner(name).or((name == POD.kind).then_some(&POD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_kind_has_its_place_in_the_api() {
        let places: Vec<(&str, String, String)> = OWNERS
            .iter()
            .chain([&POD])
            .map(|k| {
                let r = k.api_resource();
                (k.kind, r.api_version, r.plural)
            })
            .collect();
        let expected = [
            ("ReplicaSet", "apps/v1", "replicasets"),
            ("Deployment", "apps/v1", "deployments"),
            ("StatefulSet", "apps/v1", "statefulsets"),
            ("DaemonSet", "apps/v1", "daemonsets"),
            ("Job", "batch/v1", "jobs"),
            ("CronJob", "batch/v1", "cronjobs"),
            ("Pod", "v1", "pods"),
        ]
        .map(|(k, v, p)| (k, v.to_owned(), p.to_owned()));
        assert_eq!(places, expected);
        assert_eq!(workload("Pod"), Some(&POD));
        assert_eq!(owner("Pod"), None, "a pod owns no pod");
        assert_eq!(workload("Rollout"), None);
    }
}
