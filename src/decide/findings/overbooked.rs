//! `Overbooked`: the pools pointed at the server may open more connections than it accepts from
//! applications, and where that breaks.
//!
//! Booked, in a cluster: Σ over the workloads of (largest scale × pool per pod). The largest
//! scale is [`super::super::scale::largest`]'s (an autoscaler's maximum, the surge of a rollout,
//! the annotation). The pool per pod is declared (`poolwarden.io/pool-max`, else the policy's
//! `budgets.maxConnectionsPerPod`) or learned (the most sessions one pod was seen to hold, see
//! [`super::super::learned`]); a workload is booked once it declares a pool or has been seen
//! holding a session here, so that a workload that never connects books nothing.
//! Outside a cluster: Σ over the sources seen *during the window* of (their addresses × the
//! policy's per-pod budget), so that the figure does not move with whoever happened to be
//! connected in one snapshot.
//!
//! Where it breaks: from the replicas running now, the first scale event that crosses the line,
//! per workload, the others staying as they are: a rollout at the current scale, the replica at
//! which scaling up crosses it ("at 13 of Deployment/orders-api's 20 replicas"), a rollout at
//! the largest scale; "already" when the pods running now could; "only when several scale up at
//! once" when none does alone. Like every finding it must hold for the window, and clears a
//! window after it stops holding.

use serde::Serialize;

use super::{Budgets, FindingKind, Sighting};
use crate::decide::FastMap;
use crate::decide::attribution::Source;
use crate::decide::cluster::ClusterView;
use crate::decide::groups::Group;
use crate::decide::learned::LearnedPools;
use crate::decide::memory::SeenSources;
use crate::decide::rules::Rules;
use crate::decide::scale::{LargestScale, ScaleFrom, largest};

/// How the pool per pod of a booking was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PoolFrom {
    /// The workload's `poolwarden.io/pool-max`.
    Annotation,
    /// The policy's `budgets.maxConnectionsPerPod`.
    Policy,
    /// The most sessions one of its pods was seen to hold.
    Learned,
}

impl PoolFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolFrom::Annotation => "declared",
            PoolFrom::Policy => "policy",
            PoolFrom::Learned => "learned",
        }
    }
}

/// One workload's (or client's) share of the connections booked.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Booking {
    /// `Kind/name`, or `application@address` outside Kubernetes.
    pub source: String,
    /// Its largest scale: replicas, the surge of a rollout, and where they come from.
    pub scale: LargestScale,
    /// How that scale was found, in words: `HorizontalPodAutoscaler/orders-api maxReplicas,
    /// maxSurge 25%`.
    pub scale_from: String,
    pub pool_per_pod: u32,
    pub pool_from: PoolFrom,
    /// Pods at its largest scale × pool per pod.
    pub connections: u64,
    /// Sessions it holds now.
    pub holding: u32,
}

impl Booking {
    /// `Deployment/orders-api: 20 replicas + 5 surge (…) x 10 per pod (learned) = 250`.
    fn said(&self) -> String {
        let s = &self.scale;
        let pods = if s.pods() > s.replicas.saturating_add(s.surge) {
            format!("{} pods running", s.pods())
        } else if s.surge > 0 {
            format!("{} replicas + {} surge", s.replicas, s.surge)
        } else {
            format!("{} replicas", s.replicas)
        };
        format!(
            "{}: {pods} ({}) x {} per pod ({}) = {}",
            self.source,
            self.scale_from,
            self.pool_per_pod,
            self.pool_from.as_str(),
            self.connections
        )
    }
}

/// What [`overbooked`] found.
#[derive(Debug, Default)]
pub struct Overbooking {
    /// The connections booked, when any pool per pod is known.
    pub booked: Option<u64>,
    /// Every booking, the largest first.
    pub bookings: Vec<Booking>,
    /// Where the sum crosses the usable connections, in words; `None` while it does not.
    pub breaks_at: Option<String>,
    pub sighting: Option<Sighting>,
}

/// The pool per pod of a workload: declared, the policy's, or learned; `None` for a workload
/// that declares none and was never seen holding a session here.
fn pool_per_pod(
    declared: Option<u32>,
    policy: Option<u32>,
    learned: u32,
) -> Option<(u32, PoolFrom)> {
    if let Some(n) = declared.filter(|n| *n > 0) {
        return Some((n, PoolFrom::Annotation));
    }
    if learned == 0 {
        return None;
    }
    match policy.filter(|n| *n > 0) {
        Some(n) => Some((n, PoolFrom::Policy)),
        None => Some((learned, PoolFrom::Learned)),
    }
}

/// The bookings, and the finding if they exceed `usable`. `learned` are the marks after this look.
pub fn overbooked(
    usable: u32,
    groups: &[Group],
    cluster: &ClusterView,
    budgets: &Budgets<'_>,
    rules: &Rules,
    seen: &SeenSources,
    learned: &LearnedPools,
) -> Overbooking {
    // Looked up once per workload: a scan of the groups for each was quadratic in workloads.
    let held: FastMap<&Source, u32> = groups.iter().map(|g| (&g.source, g.counts.total)).collect();
    let holding = |source: &Source| held.get(source).copied().unwrap_or(0);
    let mut bookings: Vec<Booking> = Vec::new();
    if cluster.workloads.is_empty() {
        for (source, pods) in seen {
            if let Some(budget) = budgets.per_pod(source) {
                let addresses = pods.len() as u32;
                let scale = largest(&crate::decide::scale::ScaleSpec {
                    running: addresses,
                    ..Default::default()
                });
                bookings.push(Booking {
                    source: source.to_string(),
                    scale,
                    scale_from: "addresses seen in the window".into(),
                    pool_per_pod: budget,
                    pool_from: PoolFrom::Policy,
                    connections: u64::from(addresses) * u64::from(budget),
                    holding: holding(source),
                });
            }
        }
    } else {
        for info in &cluster.workloads {
            let learned = learned.get(&info.workload).map_or(0, |m| m.per_pod());
            let Some((pool, from)) =
                pool_per_pod(info.pool_max, rules.max_connections_per_pod, learned)
            else {
                continue;
            };
            let scale = largest(&info.scale);
            let source = Source::Workload(info.workload.clone());
            bookings.push(Booking {
                source: source.to_string(),
                scale_from: scale.explained(),
                connections: u64::from(scale.pods()) * u64::from(pool),
                scale,
                pool_per_pod: pool,
                pool_from: from,
                holding: holding(&source),
            });
        }
    }
    let booked = (!bookings.is_empty()).then(|| bookings.iter().map(|b| b.connections).sum());
    bookings.sort_by(|a, b| {
        b.holding
            .cmp(&a.holding)
            .then(b.connections.cmp(&a.connections))
            .then(a.source.cmp(&b.source))
    });

    let mut reasons = Vec::new();
    let mut breaks_at = None;
    if let Some(booked) = booked
        && booked > u64::from(usable)
    {
        let top: Vec<String> = bookings.iter().take(3).map(Booking::said).collect();
        let crossing = if cluster.workloads.is_empty() {
            String::new()
        } else {
            let words = where_it_breaks(&bookings, usable);
            let said = format!("; it breaks {words}");
            breaks_at = Some(words);
            said
        };
        reasons.push(format!(
            "at their largest scale the pools may open {booked} connections but the server \
             accepts {usable} from applications{crossing} ({})",
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
        sighting.shown.evidence = reasons.join("; ");
        sighting.shown.summary = sighting.shown.evidence.clone();
        sighting
    });
    Overbooking {
        booked,
        bookings,
        breaks_at,
        sighting,
    }
}

/// One scale event that crosses the line, and how many pods more than now it takes.
struct Crossing {
    pods_more: u32,
    words: String,
}

/// The first scale events that cross `usable`, one per workload, the nearest first: the others
/// stay at the replicas they run now.
fn where_it_breaks(bookings: &[Booking], usable: u32) -> String {
    let usable = u64::from(usable);
    let at_now = |b: &Booking| u64::from(b.scale.now) * u64::from(b.pool_per_pod);
    let now: u64 = bookings.iter().map(at_now).sum();
    if now > usable {
        return format!("already: the replicas running now may open {now}");
    }
    let mut crossings: Vec<Crossing> = bookings
        .iter()
        .filter_map(|b| {
            let room = usable - (now - at_now(b));
            let pool = u64::from(b.pool_per_pod);
            let s = &b.scale;
            let connections = |pods: u32| u64::from(pods) * pool;
            let rollout_now = s.in_rollout_at(s.now);
            if rollout_now > s.now && connections(rollout_now) > room {
                return Some(Crossing {
                    pods_more: rollout_now - s.now,
                    words: format!(
                        "during a rollout of {} at its {} replicas ({} pods at once)",
                        b.source, s.now, rollout_now
                    ),
                });
            }
            let first_over = u32::try_from(room / pool + 1).unwrap_or(u32::MAX);
            if first_over <= s.replicas {
                let of = match &s.from {
                    ScaleFrom::Nodes => "nodes",
                    _ => "replicas",
                };
                return Some(Crossing {
                    pods_more: first_over.saturating_sub(s.now),
                    words: format!("at {first_over} of {}'s {} {of}", b.source, s.replicas),
                });
            }
            let rollout_max = s.in_rollout_at(s.replicas);
            (connections(rollout_max) > room).then(|| Crossing {
                pods_more: rollout_max.saturating_sub(s.now),
                words: format!(
                    "during a rollout of {} at its {} replicas ({} pods at once)",
                    b.source, s.replicas, rollout_max
                ),
            })
        })
        .collect();
    if crossings.is_empty() {
        return "only when several of them scale up at once".into();
    }
    crossings.sort_by(|a, b| a.pods_more.cmp(&b.pods_more).then(a.words.cmp(&b.words)));
    let words: Vec<String> = crossings.into_iter().take(3).map(|c| c.words).collect();
    words.join(", ")
}
