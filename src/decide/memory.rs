//! What one cycle hands the next: findings in progress and the last session counter sample.
//!
//! A finding is *confirmed* once it has held for the whole window (by the snapshot's own evidence
//! or across cycles) and stays confirmed until it has been gone for a window: no annotation
//! flapping on a single quiet or noisy cycle.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::findings::{FindingKind, Observed, Subject};
use crate::database::elapsed;

/// Carried from one decision to the next; `Memory::default()` for the first.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Memory {
    tracked: BTreeMap<(Subject, FindingKind), Tracked>,
    /// `(observed_at, sessions_opened_total)` of the previous snapshot.
    pub(super) last_sample: Option<(Timestamp, i64)>,
    /// Sessions terminated since this memory began.
    pub terminations_total: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct Tracked {
    since: Timestamp,
    last_seen: Timestamp,
    confirmed: bool,
    evidence: String,
    summary: String,
    pids: Vec<i32>,
}

/// A finding after the window is applied.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub subject: Subject,
    pub kind: FindingKind,
    pub evidence: String,
    /// The evidence without ages: stable across cycles (see [`super::findings::Observed`]).
    pub summary: String,
    pub pids: Vec<i32>,
    /// How long it has held, as far as poolwarden can tell.
    pub held_for: Duration,
    /// Held for the whole window: workloads are annotated for confirmed findings only.
    pub confirmed: bool,
    /// Seen in this snapshot; `false` for a confirmed finding that is clearing.
    pub present: bool,
    /// Confirmed in this cycle: the moment to raise a `ConnectionLeak` Event.
    pub started: bool,
}

fn before(now: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| now.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN)
}

impl Memory {
    /// Applies the window to this snapshot's findings; returns them and the next memory.
    pub(super) fn advance(
        &self,
        observed: Vec<Observed>,
        now: Timestamp,
        window: Duration,
    ) -> (Vec<Finding>, BTreeMap<(Subject, FindingKind), Tracked>) {
        let mut next = BTreeMap::new();
        let mut findings = Vec::new();
        for o in observed {
            let key = (o.subject.clone(), o.kind);
            let proven_since = before(now, o.held_for);
            let previous = self.tracked.get(&key);
            let since = previous.map_or(proven_since, |p| p.since.min(proven_since));
            let was_confirmed = previous.is_some_and(|p| p.confirmed);
            let held_for = elapsed(since, now);
            let confirmed = was_confirmed || held_for >= window;
            findings.push(Finding {
                subject: o.subject,
                kind: o.kind,
                evidence: o.evidence.clone(),
                summary: o.summary.clone(),
                pids: o.pids.clone(),
                held_for,
                confirmed,
                present: true,
                started: confirmed && !was_confirmed,
            });
            next.insert(
                key,
                Tracked {
                    since,
                    last_seen: now,
                    confirmed,
                    evidence: o.evidence,
                    summary: o.summary,
                    pids: o.pids,
                },
            );
        }
        for (key, t) in &self.tracked {
            if next.contains_key(key) {
                continue;
            }
            // Unconfirmed streaks break at once; confirmed findings clear only after a window.
            if t.confirmed && elapsed(t.last_seen, now) < window {
                findings.push(Finding {
                    subject: key.0.clone(),
                    kind: key.1,
                    evidence: t.evidence.clone(),
                    summary: t.summary.clone(),
                    pids: t.pids.clone(),
                    held_for: elapsed(t.since, now),
                    confirmed: true,
                    present: false,
                    started: false,
                });
                next.insert(key.clone(), t.clone());
            }
        }
        findings.sort_by(|a, b| {
            b.confirmed
                .cmp(&a.confirmed)
                .then(a.subject.cmp(&b.subject))
                .then(a.kind.cmp(&b.kind))
        });
        (findings, next)
    }

    pub(super) fn with(
        tracked: BTreeMap<(Subject, FindingKind), Tracked>,
        last_sample: Option<(Timestamp, i64)>,
        terminations_total: u64,
    ) -> Self {
        Self {
            tracked,
            last_sample,
            terminations_total,
        }
    }

    /// Counts terminations the act step performed.
    pub fn record_terminations(&mut self, count: usize) {
        self.terminations_total += count as u64;
    }
}
