//! A workload's largest scale: the most pods of it that may run at once, from what its objects
//! say, and how that number was found. Pure: the controller's index (and the admission webhook)
//! fill a [`ScaleSpec`] from the cluster's objects; [`largest`] applies the rules.
//!
//! The rules, as the Kubernetes controllers apply them:
//! - the replicas: an HorizontalPodAutoscaler's `maxReplicas` where one targets the workload (KEDA's
//!   ScaledObject makes such an HPA, so it counts too), never less than the replicas asked for
//!   now (`kubectl scale` beyond the maximum holds until the autoscaler scales back); else the
//!   desired replicas (`spec.replicas`; for a DaemonSet, the nodes that should run its pod);
//! - the surge of a rollout at that scale: a RollingUpdate Deployment's `maxSurge`, a count or a
//!   percentage of the replicas rounded up (the Deployment controller's `ResolveFenceposts`;
//!   `maxUnavailable`, rounded down, only lowers how many run); a Recreate Deployment ends its
//!   old pods first, so none; a StatefulSet replaces its pods in place, one identity at a time
//!   (OrderedReady or Parallel, `maxUnavailable` or not), so none; a DaemonSet's `maxSurge` runs
//!   the new pod beside the old on that many of its nodes (a percentage rounded up, as its
//!   controller does);
//! - the annotation `poolwarden.io/max-replicas` overrides all of that (its owner counts the surge);
//! - never fewer than the pods running now: pods still shutting down after a rollout hold their
//!   pools too, and neither controller counts them.

use serde::Serialize;

/// A count, or a percentage of the replicas (`maxSurge: 2`, `maxSurge: 25%`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IntOrPercent {
    Count(u32),
    Percent(u32),
}

impl IntOrPercent {
    /// As Kubernetes reads an `IntOrString`: a number, or a string of digits and `%`. Anything
    /// else is `None` (the API server refuses it before it gets here).
    pub fn parse(value: &serde_json::Value) -> Option<Self> {
        match value {
            serde_json::Value::Number(n) => n.as_u64().map(|n| Self::Count(saturate(n))),
            serde_json::Value::String(s) => {
                let digits = s.trim().strip_suffix('%')?;
                digits
                    .parse::<u64>()
                    .ok()
                    .map(|n| Self::Percent(saturate(n)))
            }
            _ => None,
        }
    }

    /// Resolved against `total`, rounded up (`GetScaledValueFromIntOrPercent(…, true)`).
    pub fn scaled_up(self, total: u32) -> u32 {
        match self {
            Self::Count(n) => n,
            Self::Percent(p) => saturate((u64::from(p) * u64::from(total)).div_ceil(100)),
        }
    }
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// How a workload replaces its pods in a rollout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Rollout {
    /// New pods start beside the old ones, up to a surge: a RollingUpdate Deployment, a
    /// DaemonSet with `maxSurge`.
    Surge(IntOrPercent),
    /// The old pods end before the new ones start: a Recreate Deployment.
    Recreate,
    /// Each pod is replaced where it stood: a StatefulSet, a DaemonSet without `maxSurge`, an
    /// `OnDelete` strategy.
    InPlace,
    /// Nothing is known (a Job, a CronJob, a bare pod, a kind poolwarden does not follow).
    #[default]
    Unknown,
}

impl Rollout {
    /// The pods a rollout adds at `replicas`.
    pub fn surge_at(self, replicas: u32) -> u32 {
        match self {
            Rollout::Surge(surge) => surge.scaled_up(replicas),
            Rollout::Recreate | Rollout::InPlace | Rollout::Unknown => 0,
        }
    }

    /// How a report says it, e.g. `maxSurge 25%`.
    fn said(self) -> Option<String> {
        match self {
            Rollout::Surge(IntOrPercent::Count(n)) => Some(format!("maxSurge {n}")),
            Rollout::Surge(IntOrPercent::Percent(p)) => Some(format!("maxSurge {p}%")),
            _ => None,
        }
    }
}

/// The replicas a workload asks for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Desired {
    /// `spec.replicas` of a Deployment, StatefulSet or ReplicaSet.
    Replicas(u32),
    /// A DaemonSet's `status.desiredNumberScheduled`: one pod per node that should run it.
    Nodes(u32),
}

impl Desired {
    fn count(self) -> u32 {
        match self {
            Desired::Replicas(n) | Desired::Nodes(n) => n,
        }
    }
}

/// An autoscaler that targets the workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaler {
    /// The HorizontalPodAutoscaler's name (KEDA names its own `keda-hpa-<ScaledObject>`).
    pub name: String,
    pub max_replicas: u32,
}

/// What the cluster says about how far a workload may scale.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSpec {
    /// Its pods running now (those of the policy's selector).
    pub running: u32,
    /// The replicas it asks for now, where its kind has a number for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<Desired>,
    pub rollout: Rollout,
    /// The autoscaler that targets it (the largest maximum, should several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<Autoscaler>,
    /// `poolwarden.io/max-replicas`, set by its owners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<u32>,
}

/// Where the largest number of replicas comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "camelCase")]
pub enum ScaleFrom {
    /// `poolwarden.io/max-replicas`.
    Annotation,
    /// An HorizontalPodAutoscaler's `maxReplicas`.
    Autoscaler { name: String },
    /// `spec.replicas`.
    Replicas,
    /// The nodes that should run a DaemonSet's pod.
    Nodes,
    /// Nothing else is known: the pods running now.
    Running,
}

/// The most pods of a workload that may run at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LargestScale {
    /// The most replicas it may be scaled to.
    pub replicas: u32,
    /// The pods a rollout adds at that scale.
    pub surge: u32,
    /// The replicas it runs (or asks for) now, whichever is more.
    pub now: u32,
    #[serde(flatten)]
    pub from: ScaleFrom,
    #[serde(skip)]
    pub rollout: Rollout,
}

impl LargestScale {
    /// The most pods at once: the replicas and the surge of a rollout, or the pods running now
    /// if more (some still shutting down).
    pub fn pods(&self) -> u32 {
        self.replicas.saturating_add(self.surge).max(self.now)
    }

    /// The pods at `replicas` in the middle of a rollout.
    pub fn in_rollout_at(&self, replicas: u32) -> u32 {
        replicas.saturating_add(self.rollout.surge_at(replicas))
    }

    /// How a report says where the number comes from: `HorizontalPodAutoscaler/orders-api
    /// maxReplicas, maxSurge 25%`.
    pub fn explained(&self) -> String {
        let base = match &self.from {
            ScaleFrom::Annotation => "poolwarden.io/max-replicas".to_owned(),
            ScaleFrom::Autoscaler { name } => format!("HorizontalPodAutoscaler/{name} maxReplicas"),
            ScaleFrom::Replicas => "spec.replicas".to_owned(),
            ScaleFrom::Nodes => "nodes that run it".to_owned(),
            ScaleFrom::Running => "pods running".to_owned(),
        };
        match self.rollout.said().filter(|_| self.surge > 0) {
            Some(surge) => format!("{base}, {surge}"),
            None => base,
        }
    }
}

/// The largest scale of a workload (see the module doc for the rules).
pub fn largest(spec: &ScaleSpec) -> LargestScale {
    let desired = spec.desired.map(Desired::count);
    let now = spec.running.max(desired.unwrap_or(0));
    if let Some(declared) = spec.declared.filter(|n| *n > 0) {
        return LargestScale {
            replicas: declared,
            surge: 0,
            now,
            from: ScaleFrom::Annotation,
            rollout: Rollout::Unknown,
        };
    }
    let (replicas, from) = match (&spec.autoscaler, spec.desired) {
        (Some(hpa), _) => (
            hpa.max_replicas.max(desired.unwrap_or(0)),
            ScaleFrom::Autoscaler {
                name: hpa.name.clone(),
            },
        ),
        (None, Some(Desired::Replicas(n))) => (n, ScaleFrom::Replicas),
        (None, Some(Desired::Nodes(n))) => (n, ScaleFrom::Nodes),
        (None, None) => (spec.running, ScaleFrom::Running),
    };
    LargestScale {
        replicas,
        surge: spec.rollout.surge_at(replicas),
        now,
        from,
        rollout: spec.rollout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: u32, surge: serde_json::Value) -> ScaleSpec {
        ScaleSpec {
            running: replicas,
            desired: Some(Desired::Replicas(replicas)),
            rollout: Rollout::Surge(IntOrPercent::parse(&surge).unwrap()),
            ..ScaleSpec::default()
        }
    }

    fn hpa(max_replicas: u32) -> Option<Autoscaler> {
        Some(Autoscaler {
            name: "orders-api".into(),
            max_replicas,
        })
    }

    /// (replicas, surge, pods at once)
    fn counts(spec: &ScaleSpec) -> (u32, u32, u32) {
        let l = largest(spec);
        (l.replicas, l.surge, l.pods())
    }

    #[test]
    fn a_surge_percentage_is_rounded_up_as_the_deployment_controller_does() {
        // (replicas, maxSurge) -> surge
        let table = [
            (4, json!("25%"), 1),
            (5, json!("25%"), 2), // 1.25 -> 2
            (10, json!("25%"), 3),
            (20, json!("25%"), 5),
            (1, json!("1%"), 1), // any share of a pod is a pod
            (3, json!("0%"), 0),
            (3, json!("100%"), 3),
            (7, json!(2), 2), // a count is a count, whatever the replicas
            (0, json!("25%"), 0),
        ];
        for (replicas, surge, expected) in table {
            let spec = deployment(replicas, surge.clone());
            assert_eq!(
                counts(&spec),
                (replicas, expected, replicas + expected),
                "{replicas} replicas, maxSurge {surge}"
            );
        }
    }

    #[test]
    fn an_autoscaler_sets_the_replicas_and_the_surge_is_taken_at_its_maximum() {
        let mut spec = deployment(3, json!("25%"));
        spec.autoscaler = hpa(20);
        let l = largest(&spec);
        assert_eq!((l.replicas, l.surge, l.now, l.pods()), (20, 5, 3, 25));
        assert_eq!(
            l.from,
            ScaleFrom::Autoscaler {
                name: "orders-api".into()
            }
        );
        assert_eq!(
            l.explained(),
            "HorizontalPodAutoscaler/orders-api maxReplicas, maxSurge 25%"
        );
        // Scaled by hand beyond the autoscaler's maximum: that many, until it scales back.
        spec.desired = Some(Desired::Replicas(30));
        assert_eq!(counts(&spec), (30, 8, 38));
    }

    #[test]
    fn a_recreate_deployment_and_a_stateful_set_never_surge() {
        for rollout in [Rollout::Recreate, Rollout::InPlace] {
            let spec = ScaleSpec {
                running: 3,
                desired: Some(Desired::Replicas(3)),
                rollout,
                autoscaler: hpa(6),
                declared: None,
            };
            assert_eq!(counts(&spec), (6, 0, 6), "{rollout:?}");
        }
    }

    #[test]
    fn a_daemon_set_runs_one_pod_per_node_and_surges_on_nodes() {
        let spec = ScaleSpec {
            running: 9,
            desired: Some(Desired::Nodes(10)),
            rollout: Rollout::Surge(IntOrPercent::Percent(15)),
            ..ScaleSpec::default()
        };
        let l = largest(&spec);
        assert_eq!((l.replicas, l.surge, l.pods()), (10, 2, 12)); // 1.5 nodes -> 2
        assert_eq!(l.from, ScaleFrom::Nodes);
    }

    #[test]
    fn the_annotation_overrides_the_rules_but_not_the_pods_running_now() {
        let mut spec = deployment(3, json!("25%"));
        spec.autoscaler = hpa(20);
        spec.declared = Some(8);
        let l = largest(&spec);
        assert_eq!((l.replicas, l.surge, l.pods()), (8, 0, 8));
        assert_eq!(l.from, ScaleFrom::Annotation);
        spec.running = 11;
        assert_eq!(largest(&spec).pods(), 11);
        // Zero is a typo, not a workload that never runs.
        spec.declared = Some(0);
        assert_eq!(largest(&spec).replicas, 20);
    }

    #[test]
    fn without_facts_the_pods_running_now_count_and_so_do_pods_still_shutting_down() {
        let spec = ScaleSpec {
            running: 4,
            ..ScaleSpec::default()
        };
        assert_eq!(counts(&spec), (4, 0, 4));
        assert_eq!(largest(&spec).from, ScaleFrom::Running);
        // Mid-rollout, the old pods that are shutting down still hold their pools.
        let mut rolling = deployment(4, json!("25%"));
        rolling.running = 7;
        assert_eq!(largest(&rolling).pods(), 7);
    }

    #[test]
    fn int_or_string_reads_as_kubernetes_reads_it() {
        assert_eq!(IntOrPercent::parse(&json!(3)), Some(IntOrPercent::Count(3)));
        assert_eq!(
            IntOrPercent::parse(&json!("30%")),
            Some(IntOrPercent::Percent(30))
        );
        for bad in [json!("3"), json!("x%"), json!(-1), json!(null), json!(1.5)] {
            assert_eq!(IntOrPercent::parse(&bad), None, "{bad}");
        }
    }
}
