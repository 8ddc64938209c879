//! What one cycle hands the next: findings in progress, the last session counter sample, the
//! churn tally, and the sources seen during the window.
//!
//! A [`Sighting`] becomes a [`Finding`]: *suspected* until it has held for the whole window (by
//! the snapshot's own evidence or across cycles), then *confirmed*, and it stays confirmed until
//! it has been gone for a window: no annotation flapping on a single quiet or noisy cycle.
//!
//! A finding belongs to its source and kind, not to the sessions that show it. Its window keeps
//! running while every look shows the shape, whichever sessions show it, and through a gap that
//! only the detection age explains: a pinned pool whose sessions a garbage collection replaced
//! shows nothing until the new ones are older than `idleInTransactionAge`, yet it was pinned all
//! along. So when a finding is seen again after a gap, the sessions that show it now say since
//! when they have been in its shape ([`Sighting::showing_for`]): if that began no later than
//! [`MISSED_LOOKS`] looks after the finding was last seen, the streak goes on; if later, the source
//! had recovered in between, and the window starts again. A finding whose shape has to hold at a
//! steady count (a pinned pool) starts again when the count changes. An unconfirmed finding that
//! is not seen is not reported, and is forgotten once gone for a window.
//!
//! What `Enforce` ends for a leak ([`Sighting::ended`]) is confirmed at once: the termination was
//! decided on that evidence, and ending the sessions must not hide the leak from its owners.

use std::collections::{BTreeMap, BTreeSet};

use crate::decide::FastMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::attribution::Source;
use super::findings::{ChurnTally, FindingKind, Shown, Sighting, Subject, statements};
use super::learned::LearnedPools;
use super::name::Name;
use super::remediation::Evictions;
use crate::database::elapsed;
use crate::database::fingerprint::SHORT_FINGERPRINT_CHARS;

/// Pods (or client addresses) of each source, with when each was last seen.
pub type SeenSources = BTreeMap<Source, BTreeMap<Name, Timestamp>>;

/// Carried from one decision to the next; `Memory::default()` for the first.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Memory {
    tracked: FastMap<(Subject, FindingKind), Tracked>,
    /// `(observed_at, sessions_opened_total)` of the previous snapshot.
    pub(super) last_sample: Option<(Timestamp, i64)>,
    /// Short-lived sessions per source over the last window.
    pub(super) churn_tally: ChurnTally,
    /// Sources seen during the last window, for `Overbooked`.
    pub(super) seen: SeenSources,
    /// The pool per pod learned for each workload (see [`super::learned`]).
    pub(super) learned: LearnedPools,
    /// Sessions terminated since this memory began.
    pub terminations_total: u64,
    /// Cycles run since this memory began (the audit trail numbers them).
    pub cycles: u64,
    /// Sessions (pid, backend start) the audit trail has recorded as refused and that are
    /// still refused: recorded once, not every cycle (see [`super::refusals`]).
    pub audited_refusals: BTreeSet<(i64, Timestamp)>,
    /// When the previous snapshot was taken: how far apart the looks are.
    pub(super) last_look: Option<Timestamp>,
    /// Pods waiting for their eviction, and the evictions made (see [`super::remediation`]).
    pub evictions: Evictions,
}

/// How many looks in a row may miss a finding's shape while its sessions are replaced (one
/// catches the pool mid-replacement, one sees the new sessions not yet settled) before a shape
/// that began later than that counts as a new streak.
pub(super) const MISSED_LOOKS: u32 = 2;

/// What a decision worked out for the next one (see [`Memory::after_look`]).
pub(super) struct WorkedOut {
    pub tracked: FastMap<(Subject, FindingKind), Tracked>,
    pub last_sample: Option<(Timestamp, i64)>,
    pub churn_tally: ChurnTally,
    pub seen: SeenSources,
    pub evictions: Evictions,
    pub learned: LearnedPools,
    pub refused: BTreeSet<(i64, Timestamp)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(super) struct Tracked {
    since: Timestamp,
    last_seen: Timestamp,
    confirmed: bool,
    sighting: Sighting,
}

/// A finding after the window is applied: what it shows, and where it stands in the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    #[serde(flatten)]
    pub shown: Shown,
    /// How long it has held, as far as poolwarden can tell.
    #[serde(rename = "heldForSeconds", serialize_with = "crate::api::seconds")]
    pub held_for: Duration,
    /// Held for the whole window: workloads are annotated for confirmed findings only.
    pub confirmed: bool,
    /// For a suspected finding, how much longer it must hold to be confirmed.
    #[serde(
        rename = "confirmsInSeconds",
        serialize_with = "crate::api::option_seconds"
    )]
    pub confirms_in: Option<Duration>,
    /// Seen in this snapshot; `false` for a confirmed finding that is clearing.
    pub present: bool,
    /// Confirmed in this cycle: the moment to raise a `ConnectionLeak` Event.
    pub started: bool,
    /// Sessions `Enforce` ends for it in this cycle (the finding is confirmed at once).
    #[serde(skip_serializing_if = "is_zero")]
    pub ended: u32,
}

impl Finding {
    /// `; last statements `…` (20), `…` (5)`, or nothing without them: what the one-line places
    /// (`run`'s lines, the `ConnectionLeak` Event) add after the summary.
    pub fn statements_said(&self) -> String {
        statements::said(&self.shown.last_statements, true, SHORT_FINGERPRINT_CHARS)
            .map(|s| format!("; {s}"))
            .unwrap_or_default()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Finding {
    fn new(
        sighting: Sighting,
        held_for: Duration,
        confirmed: bool,
        window: Duration,
        present: bool,
        started: bool,
    ) -> Self {
        Self {
            shown: sighting.shown,
            held_for,
            confirmed,
            confirms_in: (!confirmed).then(|| window.saturating_sub(held_for)),
            present,
            started,
            ended: if present { sighting.ended } else { 0 },
        }
    }
}

/// Confirmed first, then by subject and kind. Sorted by index, then moved once: a finding is
/// large, and a sort moves each element many times.
fn in_report_order(findings: Vec<Finding>) -> Vec<Finding> {
    let mut order: Vec<usize> = (0..findings.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&findings[a], &findings[b]);
        b.confirmed
            .cmp(&a.confirmed)
            .then_with(|| a.shown.subject.cmp(&b.shown.subject))
            .then(a.shown.kind.cmp(&b.shown.kind))
    });
    let mut slots: Vec<Option<Finding>> = findings.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

fn before(now: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| now.checked_sub(d).ok())
        .unwrap_or(Timestamp::MIN)
}

fn after(then: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| then.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

impl Memory {
    /// Applies the window to this snapshot's findings; returns them and the next memory.
    pub(super) fn advance(
        &self,
        sightings: Vec<Sighting>,
        now: Timestamp,
        window: Duration,
    ) -> (Vec<Finding>, FastMap<(Subject, FindingKind), Tracked>) {
        let mut next = FastMap::with_capacity_and_hasher(sightings.len(), Default::default());
        let mut findings = Vec::with_capacity(sightings.len() + self.tracked.len());
        for sighting in sightings {
            let key = (sighting.shown.subject.clone(), sighting.shown.kind);
            let proven_since = before(now, sighting.held_for);
            let previous = self.tracked.get(&key);
            let since = match previous {
                Some(p) if p.confirmed || self.goes_on(p, &sighting, now) => {
                    p.since.min(proven_since)
                }
                _ => proven_since,
            };
            let was_confirmed = previous.is_some_and(|p| p.confirmed);
            let held_for = elapsed(since, now);
            let confirmed = was_confirmed || held_for >= window || sighting.ended > 0;
            let started = confirmed && !was_confirmed;
            findings.push(Finding::new(
                sighting.clone(),
                held_for,
                confirmed,
                window,
                true,
                started,
            ));
            next.insert(
                key,
                Tracked {
                    since,
                    last_seen: now,
                    confirmed,
                    sighting,
                },
            );
        }
        for (key, t) in &self.tracked {
            if next.contains_key(key) || elapsed(t.last_seen, now) >= window {
                continue;
            }
            // Not seen now: a confirmed finding is reported as clearing until it has been gone
            // for a window; an unconfirmed one is remembered as long, unreported, in case its
            // sessions were only replaced (see `goes_on`).
            if t.confirmed {
                let held_for = elapsed(t.since, now);
                findings.push(Finding::new(
                    t.sighting.clone(),
                    held_for,
                    true,
                    window,
                    false,
                    false,
                ));
            }
            next.insert(key.clone(), t.clone());
        }
        (in_report_order(findings), next)
    }

    /// Whether `sighting` continues the unconfirmed streak of `previous`: seen in the previous
    /// look, or its sessions have been in the shape since no later than [`MISSED_LOOKS`] looks
    /// after it was last seen (they replaced the sessions that showed it, and were younger than
    /// the detection age in between). A shape held at a steady count must keep its count.
    fn goes_on(&self, previous: &Tracked, sighting: &Sighting, now: Timestamp) -> bool {
        if previous.sighting.stable_count != sighting.stable_count {
            return false;
        }
        let Some(last_look) = self.last_look else {
            return false;
        };
        if previous.last_seen == last_look {
            return true;
        }
        // Half a look more, for looks that are not evenly spaced.
        let spacing = elapsed(last_look, now);
        let tolerance = spacing * (MISSED_LOOKS + 1) + spacing / 2;
        let shown_since = before(now, sighting.showing_for.max(sighting.held_for));
        shown_since <= after(previous.last_seen, tolerance)
    }

    /// The memory after a look at `now`: what this decision worked out, with the counts and the
    /// refusals carried over (the act step and the audit trail update those).
    pub(super) fn after_look(&self, now: Timestamp, worked_out: WorkedOut) -> Self {
        let WorkedOut {
            tracked,
            last_sample,
            churn_tally,
            seen,
            evictions,
            learned,
            refused,
        } = worked_out;
        Self {
            tracked,
            last_sample,
            churn_tally,
            seen,
            learned,
            terminations_total: self.terminations_total,
            cycles: self.cycles,
            audited_refusals: refused,
            last_look: Some(now),
            evictions,
        }
    }

    /// The sources seen during the window up to `now`: the previous ones still within it, and
    /// the pods of each source seen now. `current` gives each source once, in order, and each
    /// one's pods once, in order: the two ordered lists are merged in one pass, and the maps
    /// built from ordered entries (looking each of ten thousand pods up in the previous maps
    /// compared a workload's names a dozen times per pod).
    pub(super) fn seen_until<'a>(
        &self,
        current: impl IntoIterator<Item = (&'a Source, Vec<&'a Name>)>,
        now: Timestamp,
        window: Duration,
    ) -> SeenSources {
        let within = |last: &Timestamp| elapsed(*last, now) < window;
        let still_seen = |pods: &BTreeMap<Name, Timestamp>| -> BTreeMap<Name, Timestamp> {
            pods.iter()
                .filter(|(_, last)| within(last))
                .map(|(pod, last)| (pod.clone(), *last))
                .collect()
        };
        let mut seen: Vec<(Source, BTreeMap<Name, Timestamp>)> = Vec::new();
        let mut previous = self.seen.iter().peekable();
        let mut keep_previous_before = |source: Option<&Source>, seen: &mut Vec<_>| {
            while let Some((earlier, pods)) =
                previous.next_if(|(earlier, _)| source.is_none_or(|s| *earlier < s))
            {
                let kept = still_seen(pods);
                if !kept.is_empty() {
                    seen.push((earlier.clone(), kept));
                }
            }
            previous.next_if(|(same, _)| source == Some(*same))
        };
        for (source, pods) in current {
            debug_assert!(pods.is_sorted(), "pods out of order");
            let before = keep_previous_before(Some(source), &mut seen);
            let mut earlier = before
                .into_iter()
                .flat_map(|(_, pods)| pods.iter().filter(|(_, last)| within(last)))
                .peekable();
            let mut merged = Vec::with_capacity(pods.len());
            for pod in pods {
                while let Some((name, last)) = earlier.next_if(|(name, _)| *name < pod) {
                    merged.push((name.clone(), *last));
                }
                earlier.next_if(|(name, _)| *name == pod);
                merged.push((pod.clone(), now));
            }
            merged.extend(earlier.map(|(name, last)| (name.clone(), *last)));
            seen.push((source.clone(), merged.into_iter().collect()));
        }
        keep_previous_before(None, &mut seen);
        debug_assert!(seen.is_sorted_by(|a, b| a.0 < b.0), "sources out of order");
        seen.into_iter().collect()
    }

    /// When the look the last decision was made on was taken, by the database's clock.
    pub fn last_look(&self) -> Option<Timestamp> {
        self.last_look
    }

    /// The pool per pod learned for each workload, to keep across restarts.
    pub fn learned(&self) -> &LearnedPools {
        &self.learned
    }

    /// A first memory that starts from marks kept elsewhere (a restarted controller's, from the
    /// policy's status); the marks it already has win.
    pub fn remembering(mut self, learned: LearnedPools) -> Self {
        for (workload, mark) in learned {
            self.learned.entry(workload).or_insert(mark);
        }
        self
    }

    /// Counts terminations the act step performed.
    pub fn record_terminations(&mut self, count: usize) {
        self.terminations_total += count as u64;
    }
}
