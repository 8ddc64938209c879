//! The capacity gauges, one series each per policy (labels `policy` and `engine`, bounded):
//! `poolwarden_booked_connections`, what the workloads' pools may open at their largest scale,
//! and `poolwarden_usable_connections`, what the server accepts from applications. Booked over
//! usable above 1 is `Overbooked` (the `PoolwardenOverbooked` alert). A policy with no pool per
//! pod known has no booked series.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::metrics::ServerLabels;
use crate::decide::Capacity;

#[derive(Default)]
pub struct CapacityMetrics {
    pub booked: Family<ServerLabels, Gauge>,
    pub usable: Family<ServerLabels, Gauge>,
}

impl CapacityMetrics {
    /// Registers them in `registry` (already prefixed `poolwarden`).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "booked_connections",
            "Connections the workloads' pools may open at their largest scale (autoscaler maximum, rollout surge) x pool per pod; absent while no pool per pod is known",
            metrics.booked.clone(),
        );
        registry.register(
            "usable_connections",
            "Connections the policy's server accepts from applications (max_connections less the reserved slots)",
            metrics.usable.clone(),
        );
        metrics
    }

    /// Sets the policy's series from what its cycle saw.
    pub fn record(&self, labels: &ServerLabels, capacity: &Capacity) {
        self.usable
            .get_or_create(labels)
            .set(i64::from(capacity.usable_connections));
        match capacity.booked_connections {
            Some(booked) => {
                self.booked
                    .get_or_create(labels)
                    .set(i64::try_from(booked).unwrap_or(i64::MAX));
            }
            None => {
                self.booked.remove(labels);
            }
        }
    }

    /// Removes the policy's series.
    pub fn remove(&self, labels: &ServerLabels) {
        self.booked.remove(labels);
        self.usable.remove(labels);
    }
}
