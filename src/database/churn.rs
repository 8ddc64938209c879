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
    /// The shortest pause between two looks (it is never shorter than the last look took). A
    /// session living a few milliseconds is seen when a look falls within its life: the shorter
    /// the pause, the more are seen, the more the server works.
    pub pause: Duration,
}

impl Default for ChurnLooks {
    fn default() -> Self {
        Self {
            budget: Duration::from_millis(500),
            pause: Duration::from_millis(5),
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
