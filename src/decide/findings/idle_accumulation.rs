//! `IdleAccumulation`: sessions stranded idle on a pod that keeps working.
//!
//! The fork leak (seed 000): worker processes forked from a server inherit its pool; each keeps a
//! session idle without limit while the parent's sessions stay busy. A healthy pool can look the
//! same for a while: a LIFO pool (HikariCP) keeps its spares idle until `maxLifetime` (30 minutes
//! by default) replaces them. Nothing in a snapshot, nor across cycles, tells the two apart
//! before then, so a session counts as stranded only once idle for longer than
//! `leakDetection.strandedIdleAge` (default 30m): beyond the lifetime a healthy pool gives a spare.
//!
//! Not flagged: a pool that recycles its connections (its sessions never get that old), an
//! application idle as a whole (no session in use beside the idle ones: its pool simply waits),
//! unless `idleThreshold` is set and that many sessions are stranded on one pod.
//!
//! Behind a transaction pooler the forked workers' connections are the pooler's clients, idle
//! between transactions with no server session at all: they count from `SHOW CLIENTS`, idle
//! since their latest request, beside the pod's server sessions (the parent's, while it runs).

use super::{
    Connection, DetectorContext, FindingKind, Sighting, SourceSessions, connections_word,
    pooler_clients_said,
};
use crate::api::{count, human};
use crate::database::SessionState;

/// A pod's stranded connections (oldest idle first) and how many others it is using.
struct Pod<'p> {
    name: &'p str,
    stranded: Vec<&'p Connection>,
    in_use: usize,
}

pub fn find(source: &SourceSessions<'_, '_>, context: &DetectorContext<'_>) -> Option<Sighting> {
    let detect = &context.rules.detect;
    let mut best: Option<Pod<'_>> = None;
    for pod in &source.pods {
        let connections = pod.connections;
        // In use: running, in a transaction, or idle only briefly (within the window).
        let in_use = connections
            .iter()
            .filter(|c| c.state != SessionState::Idle || c.in_state_for <= context.rules.window)
            .count();
        let mut stranded: Vec<&Connection> = connections
            .iter()
            .filter(|c| c.state == SessionState::Idle && c.in_state_for > detect.stranded_idle_age)
            .collect();
        let stranded_while_working = stranded.len() >= 2 && in_use > 0;
        let over_threshold = detect
            .idle_threshold
            .is_some_and(|t| stranded.len() >= t as usize);
        if !(stranded_while_working || over_threshold) {
            continue;
        }
        stranded.sort_by_key(|c| std::cmp::Reverse(c.in_state_for));
        if best
            .as_ref()
            .is_none_or(|b| stranded.len() > b.stranded.len())
        {
            best = Some(Pod {
                name: pod.name,
                stranded,
                in_use,
            });
        }
    }
    let Pod {
        name: pod,
        stranded,
        in_use,
    } = best?;
    // The condition holds since the second oldest (or the threshold-th) crossed the age.
    let needed = if in_use > 0 {
        2
    } else {
        detect.idle_threshold.unwrap_or(2) as usize
    };
    let kth = stranded[needed.min(stranded.len()) - 1].in_state_for;
    let word = connections_word(stranded.iter().copied());
    let summary = if in_use > 0 {
        format!(
            "{} stranded idle for more than {} on {pod}, which keeps using {}",
            count(stranded.len(), word),
            human(detect.stranded_idle_age),
            count(in_use, &format!("other {word}"))
        )
    } else {
        format!(
            "{} idle for more than {} on {pod}",
            count(stranded.len(), word),
            human(detect.stranded_idle_age)
        )
    };
    let mut sighting = Sighting::about(source.source, FindingKind::IdleAccumulation)
        .with_connections(stranded.iter().copied());
    sighting.shown.evidence = format!(
        "{summary} (oldest idle {}{})",
        human(stranded[0].in_state_for),
        pooler_clients_said(stranded.iter().copied())
    );
    sighting.shown.summary = summary;
    sighting.held_for = kth.saturating_sub(detect.stranded_idle_age);
    sighting.showing_for = kth;
    Some(sighting.noting_pooler_clients())
}
