//! `Orphaned`: sessions from a pod that no longer exists (attribution's `Via::Orphaned`).

use std::collections::BTreeSet;
use std::time::Duration;

use super::{DetectorContext, FindingKind, Sighting, SourceSessions};
use crate::api::count;
use crate::database::elapsed;
use crate::decide::attribution::Via;

pub fn find(source: &SourceSessions<'_, '_>, context: &DetectorContext<'_>) -> Option<Sighting> {
    let orphans: Vec<_> = source
        .all()
        .filter(|g| g.attribution.via == Via::Orphaned)
        .collect();
    if orphans.is_empty() {
        return None;
    }
    let departed = context
        .cluster
        .departed
        .iter()
        .filter(|p| orphans.iter().any(|g| g.attribution.pod == p.name))
        .map(|p| p.departed_at)
        .min();
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
