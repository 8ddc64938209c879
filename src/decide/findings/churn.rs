//! `ConnectionChurn`: the server opens more than `leakDetection.newSessionsPerSecond` sessions a
//! second, and whoever opens the short-lived ones is named.
//!
//! The rate comes from the server's own counter (`pg_stat_database.sessions`): between this
//! snapshot and the previous one, else across the snapshot's churn sample (so that a single
//! `check` measures it too). Sessions living a few milliseconds are all but invisible to one
//! look, so the source is named from the sample's quick looks: backends that appeared and
//! vanished. New sessions that persist (a pool refilling after a reset) are not churn.
//!
//! A look catches a handful of short-lived sessions (about 15 in half a second at 40 a second),
//! so one look says little about a source's share. The [`ChurnTally`] adds up what the looks of
//! the last window caught, per source, and a source is named when
//! - its own rate may exceed the threshold: the server's rate times its share of the tally, with
//!   the share taken at the top of its sampling noise (a count `n` could as well have been
//!   `n + 2√n`), so that a source opening 12 sessions a second beside one opening 30 is named
//!   look after look, though some looks catch none of its sessions. At least [`CAUGHT`] of its
//!   sessions must have been caught: one or two say nothing of a rate (a cron job's connection
//!   that happened to be short), however far above the threshold the server is; or
//! - it opens at least a quarter of the short-lived sessions: several sources that together
//!   exceed the threshold are each named.
//!
//! Only when nothing could ever be attributed is the subject "the server".

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::{FindingKind, Sighting};
use crate::api::human;
use crate::database::{Snapshot, elapsed};
use crate::decide::attribution::Source;
use crate::decide::groups::Governed;
use crate::decide::rules::Rules;

/// Sources at or above this share of the tally are named.
const SHARE: f64 = 0.25;
/// A source's own rate is estimated from at least this many of its short-lived sessions.
const CAUGHT: u64 = 3;
/// At least this many sources may be named (more when the rate leaves room for more churners
/// over the threshold).
const NAMED: usize = 3;

/// The short-lived sessions each source was seen opening, look by look, over the last window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChurnTally {
    looks: Vec<(Timestamp, BTreeMap<Source, u64>)>,
}

impl ChurnTally {
    /// This tally with `seen` (short-lived sessions per source) added at `now`, and the looks
    /// older than `window` dropped.
    fn with_look(
        &self,
        now: Timestamp,
        seen: &HashMap<&Source, Vec<i64>>,
        window: Duration,
    ) -> Self {
        let mut looks: Vec<_> = self
            .looks
            .iter()
            .filter(|(at, _)| elapsed(*at, now) < window)
            .cloned()
            .collect();
        if !seen.is_empty() {
            let counts = seen
                .iter()
                .map(|(source, pids)| ((*source).clone(), pids.len() as u64))
                .collect();
            looks.push((now, counts));
        }
        Self { looks }
    }

    /// Short-lived sessions per source over the window.
    fn totals(&self) -> BTreeMap<&Source, u64> {
        let mut totals = BTreeMap::new();
        for (_, counts) in &self.looks {
            for (source, n) in counts {
                *totals.entry(source).or_default() += n;
            }
        }
        totals
    }
}

/// What churn the snapshot shows.
pub struct Churn {
    /// New sessions per second, when measurable.
    pub rate: Option<f64>,
    pub sightings: Vec<Sighting>,
    /// The next cycle's tally.
    pub tally: ChurnTally,
}

/// Measures the rate and names the sources of `short_lived` (the governed, attributed
/// short-lived sessions of the snapshot's churn sample).
pub fn churn(
    short_lived: &[Governed<'_>],
    snapshot: &Snapshot,
    previous: Option<(Timestamp, i64)>,
    tally: &ChurnTally,
    rules: &Rules,
) -> Churn {
    let now = snapshot.observed_at;
    let threshold = rules.detect.churn_per_second;
    let mut seen: HashMap<&Source, Vec<i64>> = HashMap::new();
    for g in short_lived {
        seen.entry(&g.attribution.source)
            .or_default()
            .push(g.session.pid);
    }
    let tally = tally.with_look(now, &seen, rules.window);
    let rate = between(previous, snapshot).or_else(|| snapshot.churn.as_ref()?.rate());
    let Some(rate) = rate.filter(|r| *r > threshold) else {
        return Churn {
            rate,
            sightings: Vec::new(),
            tally,
        };
    };
    let totals = tally.totals();
    let total: u64 = totals.values().sum();
    let may_exceed = |n: u64| {
        let caught = n as f64;
        n >= CAUGHT && rate * (caught + 2.0 * caught.sqrt()) / total as f64 > threshold
    };
    let mut named: Vec<(&Source, u64)> = totals
        .into_iter()
        .filter(|(_, n)| *n as f64 >= SHARE * total as f64 || may_exceed(*n))
        .collect();
    named.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    named.truncate(NAMED.max((rate / threshold).ceil() as usize));
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
            sighting.shown.evidence = format!(
                "{rate:.1} new sessions/s on the server (threshold {threshold}); {} of the {} \
                 sessions seen opening and closing within {:.1}s came from here, {n} of {total} \
                 over the last {} (about {:.1}/s); new sessions that persist (pools refilling) \
                 are not counted",
                pids.len(),
                short_lived.len(),
                looked.as_secs_f64(),
                human(rules.window),
                rate * *n as f64 / total as f64
            );
            sighting.shown.summary = summary.clone();
            sighting
        })
        .collect();
    if sightings.is_empty() {
        let mut sighting = Sighting::about_server(FindingKind::ConnectionChurn);
        sighting.shown.evidence = if total == 0 {
            format!(
                "{rate:.1} new sessions/s on the server (threshold {threshold}); none was seen \
                 opening and closing, so nobody can be named"
            )
        } else {
            format!(
                "{rate:.1} new sessions/s on the server (threshold {threshold}); the {total} \
                 sessions seen opening and closing over the last {} came from many sources, \
                 none opening a quarter of them or enough to pass the threshold alone",
                human(rules.window)
            )
        };
        sighting.shown.summary = summary;
        sightings.push(sighting);
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
