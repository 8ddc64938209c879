//! `Overbooked`: the pools pointed at the server may open more connections than it accepts from
//! applications. Booked: Σ over workloads of (max replicas × per-pod budget) in a cluster; outside
//! one, Σ over the sources seen *during the window* of (their pods or addresses × the per-pod
//! budget), so that the figure does not move with whoever happened to be connected in one
//! snapshot. The largest bookings are listed by the sessions they hold now, then by size.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::{Budgets, FindingKind, Sighting};
use crate::decide::attribution::Source;
use crate::decide::cluster::ClusterView;
use crate::decide::groups::Group;
use crate::decide::rules::Rules;

/// One booking: who, how many connections, how many sessions it holds now.
struct Booking {
    who: String,
    connections: u64,
    holding: u32,
}

/// The connections booked (when any budget is known), and the finding if they exceed `usable`.
pub fn overbooked(
    usable: u32,
    groups: &[Group],
    cluster: &ClusterView,
    budgets: &Budgets<'_>,
    rules: &Rules,
    seen: &BTreeMap<Source, BTreeMap<String, Timestamp>>,
) -> (Option<u64>, Option<Sighting>) {
    let holding = |source: &Source| {
        groups
            .iter()
            .find(|g| &g.source == source)
            .map_or(0, |g| g.counts.total)
    };
    let mut bookings: Vec<Booking> = Vec::new();
    if cluster.workloads.is_empty() {
        for (source, pods) in seen {
            if let Some(budget) = budgets.per_pod(source) {
                bookings.push(Booking {
                    who: format!("{source} ({} x {budget})", pods.len()),
                    connections: pods.len() as u64 * u64::from(budget),
                    holding: holding(source),
                });
            }
        }
    } else {
        for info in &cluster.workloads {
            let source = Source::Workload(info.workload.clone());
            if let Some(budget) = budgets.per_pod(&source) {
                bookings.push(Booking {
                    who: format!("{} ({} x {budget})", info.workload, info.max_replicas),
                    connections: u64::from(info.max_replicas) * u64::from(budget),
                    holding: holding(&source),
                });
            }
        }
    }
    let booked = (!bookings.is_empty()).then(|| bookings.iter().map(|b| b.connections).sum());

    let mut reasons = Vec::new();
    if let Some(booked) = booked
        && booked > u64::from(usable)
    {
        bookings.sort_by(|a, b| {
            b.holding
                .cmp(&a.holding)
                .then(b.connections.cmp(&a.connections))
                .then(a.who.cmp(&b.who))
        });
        let top: Vec<String> = bookings
            .iter()
            .take(3)
            .map(|b| format!("{}: {}, holding {}", b.who, b.connections, b.holding))
            .collect();
        reasons.push(format!(
            "pools may open {booked} connections but the server accepts {usable} from \
             applications (by sessions held: {})",
            top.join("; ")
        ));
    }
    if let Some(budget) = rules.max_connections
        && budget > usable
    {
        reasons.push(format!(
            "the policy's budget of {budget} connections exceeds the {usable} the server accepts \
             from applications"
        ));
    }
    let sighting = (!reasons.is_empty()).then(|| {
        let mut sighting = Sighting::about_server(FindingKind::Overbooked);
        sighting.evidence = reasons.join("; ");
        sighting.summary = reasons.join("; ");
        // A matter of configuration, not of time: it holds as long as it is true.
        sighting.held_for = rules.window.max(Duration::from_secs(1));
        sighting
    });
    (booked, sighting)
}
