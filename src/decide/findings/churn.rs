//! `ConnectionChurn`: the server opens more than `leakDetection.newSessionsPerSecond` sessions a
//! second, and whoever opens the short-lived ones is named.
//!
//! The rate comes from the server's own counter (`pg_stat_database.sessions`): between this
//! snapshot and the previous one, else across the snapshot's churn sample (so that a single
//! `check` measures it too). Sessions living a few milliseconds are all but invisible to one
//! look, so the source is named from the sample's quick looks: backends that appeared and
//! vanished. New sessions that persist (a pool refilling after a reset) are not churn.
//!
//! The tally of short-lived sessions per source is carried from cycle to cycle while the churn
//! lasts, so that the finding keeps its subject (and confirms) even when one cycle's looks catch
//! few sessions. Only when nothing could ever be attributed is the subject "the server".

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;

use super::{FindingKind, Sighting, Subject};
use crate::database::{Snapshot, elapsed};
use crate::decide::attribution::Source;
use crate::decide::groups::Governed;
use crate::decide::rules::Rules;

/// Sources at or above this share of the tally are named.
const SHARE: f64 = 0.25;
/// At most this many sources are named.
const NAMED: usize = 3;

/// What churn the snapshot shows.
pub struct Churn {
    /// New sessions per second, when measurable.
    pub rate: Option<f64>,
    pub sightings: Vec<Sighting>,
    /// Short-lived sessions per source while the churn lasts: the next cycle's `tally`.
    pub tally: BTreeMap<Source, u64>,
}

/// Measures the rate and names the sources of `short_lived` (the governed, attributed
/// short-lived sessions of the snapshot's churn sample).
pub fn churn(
    short_lived: &[Governed<'_>],
    snapshot: &Snapshot,
    previous: Option<(Timestamp, i64)>,
    tally: &BTreeMap<Source, u64>,
    rules: &Rules,
) -> Churn {
    let threshold = rules.detect.churn_per_second;
    let rate = between(previous, snapshot).or_else(|| snapshot.churn.as_ref()?.rate());
    let Some(rate) = rate.filter(|r| *r > threshold) else {
        return Churn {
            rate,
            sightings: Vec::new(),
            tally: BTreeMap::new(),
        };
    };
    let mut seen: HashMap<&Source, Vec<i64>> = HashMap::new();
    for g in short_lived {
        seen.entry(&g.attribution.source)
            .or_default()
            .push(g.session.pid);
    }
    let mut tally = tally.clone();
    for (source, pids) in &seen {
        *tally.entry((*source).clone()).or_default() += pids.len() as u64;
    }
    let total: u64 = tally.values().sum();
    let mut named: Vec<(&Source, u64)> = tally
        .iter()
        .filter(|(_, n)| total > 0 && **n as f64 >= SHARE * total as f64)
        .map(|(s, n)| (s, *n))
        .collect();
    named.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    named.truncate(NAMED);
    let looked = snapshot
        .churn
        .as_ref()
        .map_or(Duration::ZERO, |c| elapsed(c.started_at, c.ended_at));
    let summary = format!("more than {threshold} new sessions/s on the server");
    let mut sightings: Vec<Sighting> = named
        .iter()
        .map(|(source, n)| {
            let pids = seen.get(source).cloned().unwrap_or_default();
            let mut sighting =
                Sighting::about(source, FindingKind::ConnectionChurn).with_pids(pids.clone());
            sighting.evidence = format!(
                "{rate:.1} new sessions/s on the server (threshold {threshold}); {} of the {} \
                 sessions seen opening and closing within {:.1}s came from here ({n} of {total} \
                 while the churn lasts); new sessions that persist (pools refilling) are not counted",
                pids.len(),
                short_lived.len(),
                looked.as_secs_f64()
            );
            sighting.summary = summary.clone();
            sighting
        })
        .collect();
    if sightings.is_empty() {
        sightings.push(Sighting {
            subject: Subject::Server,
            kind: FindingKind::ConnectionChurn,
            evidence: format!(
                "{rate:.1} new sessions/s on the server (threshold {threshold}); none was seen \
                 opening and closing, so nobody can be named"
            ),
            summary,
            cause: FindingKind::ConnectionChurn.likely_cause().to_owned(),
            sessions: 0,
            pids: Vec::new(),
            pooler_clients: Vec::new(),
            held_for: Duration::ZERO,
        });
    }
    Churn {
        rate: Some(rate),
        sightings,
        tally,
    }
}

/// New sessions per second since the previous snapshot, from the server's session counter.
fn between(previous: Option<(Timestamp, i64)>, snapshot: &Snapshot) -> Option<f64> {
    let (then, opened_then) = previous?;
    let opened_now = snapshot.sessions_opened_total?;
    let seconds = elapsed(then, snapshot.observed_at).as_secs_f64();
    (seconds > 0.0 && opened_now >= opened_then)
        .then(|| (opened_now - opened_then) as f64 / seconds)
}
