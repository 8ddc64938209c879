//! The pool per pod, learned where nobody declared it: the most sessions one pod of a workload
//! has been seen to hold on this server.
//!
//! A high-water mark that only grew would never forget a pool that was made smaller, so each
//! mark covers the current period ([`PERIOD`], a week: a weekly peak is in it) and the one before:
//! the number used is the larger of the two, so it reflects between one and two weeks of looks,
//! and a pool made smaller is forgotten within two. The marks go from cycle to cycle in the
//! [`Memory`](super::Memory) and, in a cluster, across restarts in the policy's status
//! (`status.learnedPools`): at most [`CAPACITY`] workloads, the largest kept.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::cluster::WorkloadRef;
use crate::database::elapsed;

/// How long one period of a mark lasts.
pub const PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);
/// At most this many workloads' marks are kept (the largest).
pub const CAPACITY: usize = 100;

/// One workload's mark.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LearnedPool {
    /// The most sessions one pod held since `period_start`.
    pub this_period: u32,
    /// The most in the period before.
    pub previous: u32,
    pub period_start: Timestamp,
}

impl LearnedPool {
    /// The pool per pod, as learned: the larger of the two periods.
    pub fn per_pod(&self) -> u32 {
        self.this_period.max(self.previous)
    }

    /// The mark at `now`: a period that has run out becomes the previous one (or nothing, if
    /// two have: nobody looked for that long).
    fn at(&self, now: Timestamp) -> Self {
        let age = elapsed(self.period_start, now);
        if age < PERIOD {
            return self.clone();
        }
        Self {
            this_period: 0,
            previous: if age < PERIOD * 2 {
                self.this_period
            } else {
                0
            },
            period_start: now,
        }
    }
}

/// The marks of every workload.
pub type LearnedPools = BTreeMap<WorkloadRef, LearnedPool>;

/// The marks after a look at `now` that saw, for each workload, the most sessions one of its pods
/// held (`seen`). A mark whose periods both ran out without a session is dropped.
pub fn learn(
    previous: &LearnedPools,
    seen: &BTreeMap<WorkloadRef, u32>,
    now: Timestamp,
) -> LearnedPools {
    let mut next: LearnedPools = previous
        .iter()
        .map(|(w, mark)| (w.clone(), mark.at(now)))
        .collect();
    for (workload, &sessions) in seen {
        let mark = next.entry(workload.clone()).or_insert(LearnedPool {
            this_period: 0,
            previous: 0,
            period_start: now,
        });
        mark.this_period = mark.this_period.max(sessions);
    }
    next.retain(|_, mark| mark.per_pod() > 0);
    if next.len() > CAPACITY {
        let mut by_size: Vec<(WorkloadRef, LearnedPool)> = next.into_iter().collect();
        by_size.sort_by(|(a, x), (b, y)| y.per_pod().cmp(&x.per_pod()).then(a.cmp(b)));
        by_size.truncate(CAPACITY);
        next = by_size.into_iter().collect();
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str) -> WorkloadRef {
        WorkloadRef {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: name.into(),
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn seen(pairs: &[(&str, u32)]) -> BTreeMap<WorkloadRef, u32> {
        pairs.iter().map(|(n, s)| (w(n), *s)).collect()
    }

    #[test]
    fn the_mark_is_the_most_one_pod_held_and_survives_quiet_looks() {
        let start = t("2026-01-05T10:00:00Z");
        let first = learn(&LearnedPools::new(), &seen(&[("orders", 12)]), start);
        let second = learn(&first, &seen(&[("orders", 25)]), t("2026-01-05T10:00:30Z"));
        let quiet = learn(&second, &seen(&[("orders", 3)]), t("2026-01-06T03:00:00Z"));
        let gone = learn(&quiet, &seen(&[]), t("2026-01-07T03:00:00Z"));
        assert_eq!(gone[&w("orders")].per_pod(), 25);
        assert_eq!(gone[&w("orders")].period_start, start);
    }

    #[test]
    fn a_smaller_pool_replaces_the_old_mark_within_two_periods() {
        let start = t("2026-01-05T10:00:00Z");
        let big = learn(&LearnedPools::new(), &seen(&[("orders", 25)]), start);
        // A week on, the pool was made smaller: the old mark still counts, as the previous week's.
        let week = learn(&big, &seen(&[("orders", 10)]), t("2026-01-12T10:00:00Z"));
        let mark = &week[&w("orders")];
        assert_eq!(
            (mark.this_period, mark.previous, mark.per_pod()),
            (10, 25, 25)
        );
        // Another week, and only the smaller pool was seen: it is the mark now.
        let two = learn(&week, &seen(&[("orders", 10)]), t("2026-01-19T10:00:01Z"));
        assert_eq!(two[&w("orders")].per_pod(), 10);
        // Nobody seen for two whole periods: forgotten.
        let later = learn(&two, &seen(&[]), t("2026-02-03T10:00:02Z"));
        assert!(later.is_empty());
    }

    #[test]
    fn at_most_capacity_marks_are_kept_the_largest_first() {
        let now = t("2026-01-05T10:00:00Z");
        let many: BTreeMap<WorkloadRef, u32> = (0..CAPACITY as u32 + 5)
            .map(|i| (w(&format!("app-{i:03}")), i + 1))
            .collect();
        let marks = learn(&LearnedPools::new(), &many, now);
        assert_eq!(marks.len(), CAPACITY);
        assert!(!marks.contains_key(&w("app-000")), "the smallest goes");
        assert!(marks.contains_key(&w(&format!("app-{:03}", CAPACITY + 4))));
    }
}
