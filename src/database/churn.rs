//! When and how an engine samples churn: quick looks at new backends, taken only when sessions
//! come and go. Engine-neutral: PostgreSQL's `pg_stat_database.sessions` and MySQL's
//! `Connections` counter play the same part.

use std::time::Duration;

use jiff::Timestamp;

use super::Snapshot;

/// How an engine's quick looks at new backends are paced.
#[derive(Clone, Copy, Debug)]
pub struct ChurnLooks {
    /// How long to keep looking.
    pub budget: Duration,
    /// How long (from the first look) to go on looking past `budget` while sessions are being
    /// opened but none has yet been seen to open and close. On a loaded server or machine each
    /// look takes longer, fewer fall within a few-millisecond session's life, and a churn whose
    /// source nobody saw cannot be named: that is what the looks are for. Only then do they cost
    /// the server more. Under the 2 s a controller's cycle waits for its look.
    pub patience: Duration,
    /// The shortest pause between two looks (it is never shorter than the last look took). A
    /// session living a few milliseconds is seen when a look falls within its life: the shorter
    /// the pause, the more are seen, the more the server works.
    pub pause: Duration,
}

impl Default for ChurnLooks {
    fn default() -> Self {
        Self {
            budget: Duration::from_millis(500),
            patience: Duration::from_millis(1500),
            pause: Duration::from_millis(5),
        }
    }
}

/// What a churn sample does after a look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterLook {
    /// Look again.
    Look,
    /// The budget is spent and nothing has been seen to open and close: read the server's
    /// session counter, to know whether sessions are still being opened (see
    /// [`ChurnLooks::patience`]).
    ReadCounter,
    /// Done.
    Stop,
}

impl ChurnLooks {
    /// What to do `elapsed` after the first look, when `vanished` new sessions have been seen to
    /// open and close so far, and `churning` is what the counter said once read: whether sessions
    /// were opened at more than [`CHURN_TRIGGER`] a second since the snapshot. Looks go on past
    /// the budget only for churn that is really there and that no look has caught yet.
    pub fn after_look(
        &self,
        elapsed: Duration,
        vanished: usize,
        churning: Option<bool>,
    ) -> AfterLook {
        if elapsed < self.budget {
            return AfterLook::Look;
        }
        if vanished > 0 || elapsed >= self.patience {
            return AfterLook::Stop;
        }
        match churning {
            None => AfterLook::ReadCounter,
            Some(true) => AfterLook::Look,
            Some(false) => AfterLook::Stop,
        }
    }
}

/// New sessions per second since the previous observation above which churn is sampled.
pub const CHURN_TRIGGER: f64 = 2.0;

/// Whether to sample churn after `snapshot`: when sessions were opened at more than
/// [`CHURN_TRIGGER`] per second since `previous` (`(observed_at, sessions opened)`), and on the
/// `first` observation.
pub fn churn_sample_due(
    previous: Option<(Timestamp, i64)>,
    snapshot: &Snapshot,
    first: bool,
) -> bool {
    match (previous, snapshot.sessions_opened_total) {
        (Some((then, before)), Some(now)) => {
            let seconds = crate::database::elapsed(then, snapshot.observed_at).as_secs_f64();
            seconds <= 0.0 || (now - before) as f64 / seconds > CHURN_TRIGGER
        }
        // Nothing to compare with yet: look once. Without the counter (before PostgreSQL 14)
        // there is never anything to compare with, and the first look is the only one.
        _ => first,
    }
}

/// Whether sessions were opened at more than [`CHURN_TRIGGER`] a second between two readings of
/// the server's session counter, each `(read at, sessions opened)`. Without the counter (before
/// PostgreSQL 14) nothing says so.
pub fn churning(before: (Timestamp, Option<i64>), after: (Timestamp, Option<i64>)) -> bool {
    match (before.1, after.1) {
        (Some(then), Some(now)) => {
            let seconds = crate::database::elapsed(before.0, after.0).as_secs_f64();
            seconds > 0.0 && (now - then) as f64 / seconds > CHURN_TRIGGER
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF: Duration = Duration::from_millis(500);

    #[test]
    fn looks_stop_at_the_budget_once_a_session_was_seen_to_open_and_close() {
        let looks = ChurnLooks::default();
        assert_eq!(looks.after_look(HALF / 2, 1, None), AfterLook::Look);
        assert_eq!(looks.after_look(HALF, 1, None), AfterLook::Stop);
    }

    #[test]
    fn past_the_budget_with_nobody_seen_the_counter_says_whether_to_go_on() {
        let looks = ChurnLooks::default();
        assert_eq!(looks.after_look(HALF / 2, 0, None), AfterLook::Look);
        assert_eq!(looks.after_look(HALF, 0, None), AfterLook::ReadCounter);
        // A quiet server (the first look of a cycle samples whatever the rate): done.
        assert_eq!(looks.after_look(HALF, 0, Some(false)), AfterLook::Stop);
        // Sessions are being opened and none was caught: on, up to the patience.
        assert_eq!(looks.after_look(HALF, 0, Some(true)), AfterLook::Look);
        let nearly = looks.patience - Duration::from_millis(1);
        assert_eq!(looks.after_look(nearly, 0, Some(true)), AfterLook::Look);
        assert_eq!(
            looks.after_look(looks.patience, 0, Some(true)),
            AfterLook::Stop
        );
        assert_eq!(looks.after_look(nearly, 1, Some(true)), AfterLook::Stop);
    }

    #[test]
    fn churning_is_the_counter_over_the_trigger_between_two_readings() {
        let then: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-12-07T12:00:01Z".parse().unwrap();
        assert!(churning((then, Some(100)), (later, Some(103))));
        assert!(!churning((then, Some(100)), (later, Some(102))));
        assert!(!churning((then, Some(100)), (later, None)));
        assert!(!churning((then, None), (later, Some(1000))));
        assert!(!churning((then, Some(100)), (then, Some(1000))));
    }
}
