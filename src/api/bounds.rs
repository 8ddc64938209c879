//! The limits of every duration in a PoolPolicy, stated once: the CRD's CEL rules are built from
//! them, and `decide::Rules::compile` checks policy files (and anything else that bypassed the API
//! server) against the same limits with the same messages.
//!
//! Why each rule starts with `self != '' && self.matches(…)`: CEL's `duration()` fails with `type conversion
//! error from 'string' to 'google.protobuf.Duration'` on a value too large for Go's duration
//! (e.g. `99999999999h`), and the API server runs CEL even on a value its pattern refused. The
//! pattern ([`super::duration::DURATION_PATTERN`]) admits nothing that large, so behind the
//! `matches` guard `duration()` always converts, and the person applying the policy reads the
//! message below instead of a conversion error.

use kube::core::Rule;

use super::duration::{DURATION_PATTERN, Duration};

/// The smallest value a duration field accepts.
#[derive(Clone, Copy, Debug)]
pub enum Minimum {
    /// Anything above zero.
    AboveZero,
    /// At least this many seconds.
    AtLeastSeconds(u64),
}

/// One duration field's limits and what a person is told when a value is outside them.
#[derive(Clone, Copy, Debug)]
pub struct DurationBound {
    /// The field as written in the policy (`idleTimeout`).
    pub field: &'static str,
    /// The field's path from the resource (`spec.idle.idleTimeout`).
    pub path: &'static str,
    pub minimum: Minimum,
    /// The largest value accepted, in hours.
    pub maximum_hours: u64,
    /// What to do instead, appended to the message (may be empty).
    pub hint: &'static str,
}

impl DurationBound {
    /// The CEL rule for the CRD.
    pub fn rule(&self) -> Rule {
        let minimum = match self.minimum {
            Minimum::AboveZero => "duration(self) > duration('0s')".to_owned(),
            Minimum::AtLeastSeconds(s) => format!("duration(self) >= duration('{s}s')"),
        };
        // The pattern is written with `[.]`, never `\.`, so it needs no escaping in CEL.
        let expression = format!(
            "self != '' && self.matches('{DURATION_PATTERN}') && {minimum} && duration(self) <= duration('{}h')",
            self.maximum_hours
        );
        Rule::new(expression).message(self.message().as_str())
    }

    /// The message of the CRD's rule and of `Rules::compile`.
    pub fn message(&self) -> String {
        let range = match self.minimum {
            Minimum::AboveZero => format!("greater than 0s and at most {}h", self.maximum_hours),
            Minimum::AtLeastSeconds(s) => format!("from {s}s to {}h", self.maximum_hours),
        };
        let days = match self.maximum_hours {
            h if h >= 48 && h % 24 == 0 => format!(" ({} days)", h / 24),
            _ => String::new(),
        };
        let hint = match self.hint {
            "" => String::new(),
            hint => format!("; {hint}"),
        };
        format!(
            "{} must be {range}{days}, written largest unit first like {}{hint}",
            self.field,
            self.examples()
        )
    }

    /// Up to three values to show, each of them one this field accepts: `interval` refuses
    /// `500ms` and `1h30m`, so its message must not offer them.
    fn examples(&self) -> String {
        let fitting: Vec<&str> = ["1h30m", "5m", "500ms", "1m30s"]
            .into_iter()
            .filter(|e| e.parse().is_ok_and(|d| self.within(d)))
            .take(3)
            .collect();
        match fitting.split_last() {
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => "1m".to_owned(),
        }
    }

    fn within(&self, value: Duration) -> bool {
        let value = value.as_std();
        let above_minimum = match self.minimum {
            Minimum::AboveZero => !value.is_zero(),
            Minimum::AtLeastSeconds(s) => value >= std::time::Duration::from_secs(s),
        };
        above_minimum && value <= std::time::Duration::from_secs(self.maximum_hours * 3600)
    }

    /// `Err(message)` when `value` is outside the limits.
    pub fn check(&self, value: Duration) -> Result<(), String> {
        if self.within(value) {
            Ok(())
        } else {
            Err(format!("{}: {}", self.path, self.message()))
        }
    }
}

const DAYS_30: u64 = 30 * 24;

pub const INTERVAL: DurationBound = DurationBound {
    field: "interval",
    path: "spec.interval",
    minimum: Minimum::AtLeastSeconds(1),
    maximum_hours: 1,
    hint: "",
};
pub const IDLE_TIMEOUT: DurationBound = DurationBound {
    field: "idleTimeout",
    path: "spec.idle.idleTimeout",
    minimum: Minimum::AboveZero,
    maximum_hours: DAYS_30,
    hint: "leave it out to never end idle sessions",
};
pub const IDLE_IN_TRANSACTION_TIMEOUT: DurationBound = DurationBound {
    field: "idleInTransactionTimeout",
    path: "spec.idle.idleInTransactionTimeout",
    minimum: Minimum::AboveZero,
    maximum_hours: DAYS_30,
    hint: "leave it out to never end such sessions",
};
pub const MAX_TRANSACTION_AGE: DurationBound = DurationBound {
    field: "maxTransactionAge",
    path: "spec.idle.maxTransactionAge",
    minimum: Minimum::AboveZero,
    maximum_hours: DAYS_30,
    hint: "leave it out to never end sessions for their transaction's age",
};
pub const WINDOW: DurationBound = DurationBound {
    field: "window",
    path: "spec.leakDetection.window",
    minimum: Minimum::AboveZero,
    maximum_hours: 24,
    hint: "",
};
pub const STRANDED_IDLE_AGE: DurationBound = DurationBound {
    field: "strandedIdleAge",
    path: "spec.leakDetection.strandedIdleAge",
    minimum: Minimum::AboveZero,
    maximum_hours: DAYS_30,
    hint: "",
};
pub const IDLE_IN_TRANSACTION_AGE: DurationBound = DurationBound {
    field: "idleInTransactionAge",
    path: "spec.leakDetection.idleInTransactionAge",
    minimum: Minimum::AboveZero,
    maximum_hours: DAYS_30,
    hint: "",
};
pub const TRANSACTION_AGE: DurationBound = DurationBound {
    field: "transactionAge",
    path: "spec.leakDetection.transactionAge",
    minimum: Minimum::AboveZero,
    maximum_hours: DAYS_30,
    hint: "",
};

/// Every duration field of the spec, for tests that walk them all.
pub const ALL: [DurationBound; 8] = [
    INTERVAL,
    IDLE_TIMEOUT,
    IDLE_IN_TRANSACTION_TIMEOUT,
    MAX_TRANSACTION_AGE,
    WINDOW,
    STRANDED_IDLE_AGE,
    IDLE_IN_TRANSACTION_AGE,
    TRANSACTION_AGE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_says_the_range_and_how_to_write_it() {
        assert_eq!(
            IDLE_TIMEOUT.message(),
            "idleTimeout must be greater than 0s and at most 720h (30 days), written largest unit \
             first like 1h30m, 5m or 500ms; leave it out to never end idle sessions"
        );
        assert_eq!(
            INTERVAL.message(),
            "interval must be from 1s to 1h, written largest unit first like 5m or 1m30s"
        );
    }

    #[test]
    fn every_message_offers_only_values_its_field_accepts() {
        for bound in ALL {
            let message = bound.message();
            let examples = message
                .split(" like ")
                .nth(1)
                .and_then(|rest| rest.split(';').next())
                .unwrap();
            for example in examples
                .split([',', ' '])
                .filter(|w| !w.is_empty() && *w != "or")
            {
                let value: Duration = example.parse().unwrap();
                assert!(bound.check(value).is_ok(), "{message}: {example}");
            }
        }
    }

    #[test]
    fn check_refuses_outside_the_range_with_the_path() {
        let d = |s: &str| s.parse::<Duration>().unwrap();
        assert!(INTERVAL.check(d("1s")).is_ok());
        assert!(INTERVAL.check(d("1h")).is_ok());
        assert!(INTERVAL.check(d("500ms")).is_err());
        let err = INTERVAL.check(d("99999999999h")).unwrap_err();
        assert!(
            err.starts_with("spec.interval: interval must be from 1s to 1h"),
            "{err}"
        );
        assert!(WINDOW.check(Duration::from_secs(0)).is_err());
        assert!(IDLE_TIMEOUT.check(d("720h")).is_ok());
        assert!(IDLE_TIMEOUT.check(d("720h1s")).is_err());
    }

    #[test]
    fn the_rule_guards_the_conversion_with_the_pattern() {
        let rule = WINDOW.rule();
        assert_eq!(
            rule.rule,
            format!(
                "self != '' && self.matches('{DURATION_PATTERN}') && \
                 duration(self) > duration('0s') && \
                 duration(self) <= duration('24h')"
            )
        );
        assert!(!DURATION_PATTERN.contains('\\'), "CEL would need escapes");
    }
}
