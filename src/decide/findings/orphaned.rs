//! `Orphaned`: sessions from a pod that no longer exists (attribution's `Via::Orphaned`).

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;

use super::{DetectorContext, FindingKind, Sighting, SourceSessions};
use crate::api::count;
use crate::database::elapsed;
use crate::decide::FastMap;
use crate::decide::attribution::Via;
use crate::decide::cluster::ClusterView;

pub fn find(source: &SourceSessions<'_, '_>, context: &DetectorContext<'_>) -> Option<Sighting> {
    let orphans: Vec<_> = source
        .all()
        .filter(|g| g.attribution.via == Via::Orphaned)
        .collect();
    if orphans.is_empty() {
        return None;
    }
    let departed = orphans
        .iter()
        .filter_map(|g| context.departures.get(g.attribution.pod.as_str()))
        .min()
        .copied();
    let pods: BTreeSet<&str> = orphans.iter().map(|g| g.attribution.pod.as_str()).collect();
    let summary = format!(
        "{} from pods that no longer exist ({})",
        count(orphans.len(), "session"),
        pods.into_iter().collect::<Vec<_>>().join(", ")
    );
    let mut sighting = Sighting::about(source.source, FindingKind::Orphaned)
        .with_pids(orphans.iter().map(|g| g.session.pid));
    sighting.shown.evidence = summary.clone();
    sighting.shown.summary = summary;
    sighting.held_for =
        departed.map_or(Duration::ZERO, |d| elapsed(d, context.snapshot.observed_at));
    Some(sighting)
}

/// When each departed pod left (the earliest, for a name seen twice): looked up per orphan, not
/// scanned for each source.
pub fn departures(cluster: &ClusterView) -> FastMap<&str, Timestamp> {
    let mut departures: FastMap<&str, Timestamp> =
        FastMap::with_capacity_and_hasher(cluster.departed.len(), Default::default());
    for pod in &cluster.departed {
        departures
            .entry(pod.name.as_str())
            .and_modify(|at| *at = (*at).min(pod.departed_at))
            .or_insert(pod.departed_at);
    }
    departures
}
