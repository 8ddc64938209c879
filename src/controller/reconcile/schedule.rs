//! When each policy's next cycle is due, and how late it started.
//!
//! A cycle comes back one interval after the previous one was first tried, not after it ended:
//! a policy's cycles are then an interval apart whatever a cycle takes (a slow server's look, a
//! queue of reconciles), instead of drifting later by each cycle's own duration. A cycle that
//! must come back for its server's look ([`LookPending`](super::error::ReconcileError)) keeps
//! its first try as its start. What is left is lateness: the time between when a cycle was due
//! and when it was first tried, which a bounded concurrency or a busy controller adds. It is
//! measured here (the histogram `poolwarden_reconcile_lateness_seconds`, and a debug line per
//! cycle that the scale benchmark reads) for cycles that come back on schedule: a retry after a
//! failure, or a cycle for a change of the spec, is not on schedule.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Schedule {
    policies: Mutex<HashMap<String, Due>>,
}

#[derive(Clone, Copy, Default)]
struct Due {
    /// When the next cycle is due.
    next: Option<Instant>,
    /// When the cycle under way (come back for its look) was first tried.
    tried: Option<Instant>,
}

/// A cycle's start, as the schedule sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Start {
    /// When the cycle was first tried: the next one is due an interval after.
    pub first_tried: Instant,
    /// How late that was, for a cycle on schedule tried for the first time.
    pub late: Option<Duration>,
}

impl Schedule {
    /// A cycle of `uid` is tried `now`, at `interval`.
    pub fn start(&self, uid: &str, now: Instant, interval: Duration) -> Start {
        let mut policies = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        let due = policies.entry(uid.to_owned()).or_default();
        // A cycle come back for its look; one tried more than an interval ago starts over.
        if let Some(tried) = due
            .tried
            .filter(|t| now.saturating_duration_since(*t) < interval)
        {
            return Start {
                first_tried: tried,
                late: None,
            };
        }
        due.tried = Some(now);
        Start {
            first_tried: now,
            late: due.next.filter(|next| now >= *next).map(|next| now - next),
        }
    }

    /// The cycle first tried at `first_tried` ended well: the next is due one `interval` after.
    /// Returns how long from now until then (zero when it is already due).
    pub fn ended(&self, uid: &str, first_tried: Instant, interval: Duration) -> Duration {
        let next = first_tried + interval;
        self.policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                uid.to_owned(),
                Due {
                    next: Some(next),
                    tried: None,
                },
            );
        next.saturating_duration_since(Instant::now())
    }

    /// The policy's cycle failed, or the policy is gone: its next cycle is not on schedule.
    pub fn forget(&self, uid: &str) {
        self.policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(30);

    #[test]
    fn the_next_cycle_is_due_an_interval_after_the_last_one_was_first_tried() {
        let schedule = Schedule::default();
        let first = Instant::now() - Duration::from_secs(3);
        let start = schedule.start("uid", first, INTERVAL);
        assert_eq!(start.late, None);
        // It came back once for its look, 1 s later: still the same cycle, first tried then.
        let again = schedule.start("uid", first + Duration::from_secs(1), INTERVAL);
        assert_eq!((again.first_tried, again.late), (first, None));
        // It took 3 s in all: the next is due in 27 s, not 30.
        let wait = schedule.ended("uid", again.first_tried, INTERVAL);
        assert!(wait <= Duration::from_secs(27), "{wait:?}");
        assert!(wait > Duration::from_secs(26), "{wait:?}");
        let due = first + INTERVAL;
        // Early, for a change of the spec: not late.
        let early = schedule.start("uid", due - Duration::from_secs(5), INTERVAL);
        assert_eq!(early.late, None);
        schedule.ended("uid", early.first_tried, INTERVAL);
        let due = early.first_tried + INTERVAL;
        let on_time = schedule.start("uid", due + Duration::from_millis(250), INTERVAL);
        assert_eq!(on_time.late, Some(Duration::from_millis(250)));
    }

    #[test]
    fn a_cycle_longer_than_its_interval_is_due_at_once_and_a_failure_is_off_schedule() {
        let schedule = Schedule::default();
        let long_ago = Instant::now() - Duration::from_secs(40);
        let start = schedule.start("uid", long_ago, INTERVAL);
        assert_eq!(
            schedule.ended("uid", start.first_tried, INTERVAL),
            Duration::ZERO
        );
        schedule.forget("uid");
        assert_eq!(schedule.start("uid", Instant::now(), INTERVAL).late, None);
        // A first try more than an interval old starts over.
        let stale = schedule.start("uid", Instant::now() + INTERVAL * 2, INTERVAL);
        assert!(stale.first_tried > Instant::now());
    }
}
