//! The capacity part of the status ([`crate::api::CapacityStatus`]): what the cycle booked, and
//! the pools it learned, written with the rest of the status (never on their own); and the
//! learned pools read back from the status when a controller starts without a memory of the
//! policy, so that a restart does not forget them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    CAPACITY_WORKLOADS, CapacityStatus, LearnedPoolStatus, PoolPolicyStatus, WorkloadBooking,
};
use crate::cycle::Cycle;
use crate::decide::{LearnedPool, LearnedPools, WorkloadRef};

/// Fills `capacity` and `learnedPools` from what `cycle` decided.
pub fn fill(status: &mut PoolPolicyStatus, cycle: &Cycle) {
    let c = &cycle.decision.capacity;
    status.capacity = c.booked_connections.map(|booked| {
        let mut workloads: Vec<WorkloadBooking> = c
            .bookings
            .iter()
            .map(|b| WorkloadBooking {
                workload: b.source.clone(),
                replicas: b.scale.replicas,
                surge: b.scale.surge,
                scale_from: b.scale_from.clone(),
                pool_per_pod: b.pool_per_pod,
                pool_from: b.pool_from.as_str().to_owned(),
                connections: b.connections,
            })
            .collect();
        workloads.sort_by(|a, b| {
            b.connections
                .cmp(&a.connections)
                .then(a.workload.cmp(&b.workload))
        });
        workloads.truncate(CAPACITY_WORKLOADS);
        CapacityStatus {
            usable_connections: c.usable_connections,
            booked_connections: booked,
            breaks_at: c.breaks_at.clone(),
            workloads,
        }
    });
    status.learned_pools = cycle
        .decision
        .memory
        .learned()
        .iter()
        .map(|(w, mark)| LearnedPoolStatus {
            workload: w.to_string(),
            sessions_per_pod: mark.per_pod(),
            this_period: mark.this_period,
            period_start: Time(mark.period_start),
        })
        .collect();
}

/// The learned pools a status kept, for the workloads of `namespace` (the policy's). Entries
/// that do not name a `Kind/name` are skipped: a status is written by poolwarden, but anyone
/// may edit it.
pub fn learned(status: Option<&PoolPolicyStatus>, namespace: &str) -> LearnedPools {
    status
        .into_iter()
        .flat_map(|s| &s.learned_pools)
        .filter_map(|l| {
            let (kind, name) = l.workload.split_once('/')?;
            let workload = WorkloadRef {
                namespace: namespace.into(),
                kind: kind.into(),
                name: name.into(),
            };
            let mark = LearnedPool {
                this_period: l.this_period,
                // What counts is the larger of the two: keeping the larger as the previous
                // period's gives the same pool per pod until the period runs out.
                previous: l.sessions_per_pod,
                period_start: l.period_start.0,
            };
            Some((workload, mark))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_pools_read_back_as_they_were_written() {
        let at = Time("2026-01-05T10:00:00Z".parse().unwrap());
        let status = PoolPolicyStatus {
            learned_pools: vec![
                LearnedPoolStatus {
                    workload: "Deployment/orders-api".into(),
                    sessions_per_pod: 25,
                    this_period: 10,
                    period_start: at.clone(),
                },
                LearnedPoolStatus {
                    workload: "garbage".into(),
                    sessions_per_pod: 3,
                    this_period: 3,
                    period_start: at.clone(),
                },
            ],
            ..PoolPolicyStatus::default()
        };
        let learned = learned(Some(&status), "shop");
        assert_eq!(learned.len(), 1);
        let (workload, mark) = learned.iter().next().unwrap();
        assert_eq!(workload.to_string(), "Deployment/orders-api");
        assert_eq!(workload.namespace, "shop");
        assert_eq!((mark.per_pod(), mark.this_period), (25, 10));
        assert_eq!(mark.period_start, at.0);
        assert!(super::learned(None, "shop").is_empty());
    }
}
