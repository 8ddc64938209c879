//! Durations as people write them in a PoolPolicy: `30s`, `5m`, `1h30m`, `500ms`.
//!
//! Parsing follows Go's `time.ParseDuration` (kube's own `Duration`), so the strings mean what they
//! mean everywhere else in Kubernetes. The schema adds a pattern so that `kubectl apply` rejects
//! nonsense and negative values before poolwarden ever sees them.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written as a Go duration string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

/// What the CRD schema accepts: a number and a unit for each of `h`, `m`, `s` and `ms`, largest
/// first, each at most once (`1h30m`, `90s`, `1.5h`, `500ms`), with no more digits than the
/// largest limit of any field needs. That bound keeps every accepted value within Go's duration
/// range, so the CRD's CEL rules can always convert it (see [`super::bounds`]). `[.]`, not `\.`,
/// so that the same text works inside a CEL string.
pub const DURATION_PATTERN: &str = "^([0-9]{1,6}([.][0-9]{1,9})?h)?([0-9]{1,7}([.][0-9]{1,9})?m)?\
     ([0-9]{1,9}([.][0-9]{1,9})?s)?([0-9]{1,12}([.][0-9]{1,9})?ms)?$";

/// The longest duration string the schema accepts (it bounds the cost of the CEL rules).
pub const DURATION_MAX_LENGTH: u64 = 64;

/// The units in the order they must appear, with their length in nanoseconds.
const UNITS: [(&str, u128); 4] = [
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Self(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {reason} (write it like 30s, 5m, 1h30m or 500ms)")]
pub struct ParseDurationError {
    input: String,
    reason: String,
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    /// Parses what [`DURATION_PATTERN`] accepts, with the same unit order and fraction digits and
    /// up to 12 digits before the point (so that a value far too large is still a number the
    /// limits of [`super::bounds`] refuse by name, not an overflow).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| ParseDurationError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        if s.trim().is_empty() {
            return Err(fail("it is empty"));
        }
        if s.starts_with('-') {
            return Err(fail("it must not be negative"));
        }
        let mut rest = s;
        let mut next_unit = 0;
        let mut nanos: u128 = 0;
        while !rest.is_empty() {
            let whole_len = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (whole, after) = rest.split_at(whole_len);
            let (fraction, after) = match after.strip_prefix('.') {
                Some(after) => {
                    let len = after
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(after.len());
                    if len == 0 {
                        return Err(fail("a point needs digits after it"));
                    }
                    after.split_at(len)
                }
                None => ("", after),
            };
            if whole.is_empty() {
                return Err(fail("each unit needs a number before it"));
            }
            if whole.len() > 12 || fraction.len() > 9 {
                return Err(fail("it has too many digits"));
            }
            let unit_len = after
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
                return Err(fail(if unit.is_empty() {
                    "it needs a unit"
                } else {
                    "the units are h, m, s and ms"
                }));
            };
            if index < next_unit {
                return Err(fail(
                    "the units must go from the largest to the smallest, each once",
                ));
            }
            next_unit = index + 1;
            let per_unit = UNITS[index].1;
            let whole: u128 = whole.parse().expect("at most 12 digits");
            let fraction_nanos = match fraction {
                "" => 0,
                digits => {
                    let scale = 10u128.pow(digits.len() as u32);
                    digits.parse::<u128>().expect("at most 9 digits") * per_unit / scale
                }
            };
            nanos += whole * per_unit + fraction_nanos;
            rest = after;
        }
        let secs = u64::try_from(nanos / 1_000_000_000).expect("12 digits of hours fit");
        let subsec = (nanos % 1_000_000_000) as u32;
        Ok(Self(std::time::Duration::new(secs, subsec)))
    }
}

impl fmt::Display for Duration {
    /// The shortest exact rendering: `90s` becomes `1m30s`, `1500ms` stays `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_ms = self.0.as_millis();
        if total_ms == 0 {
            return f.write_str("0s");
        }
        if total_ms % 1000 != 0 {
            return write!(f, "{total_ms}ms");
        }
        let secs = total_ms / 1000;
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": DURATION_MAX_LENGTH,
        })
    }
}

/// Serialises a duration as a number of seconds (`90.5`), for `--output json`.
pub fn seconds<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// [`seconds`] for an optional duration (`null` when absent).
pub fn option_seconds<S: Serializer>(
    d: &Option<std::time::Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// `1 session`, `3 sessions`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A human rendering of an age, coarse on purpose: `3h12m`, `4m10s`, `12s`.
pub fn human(age: std::time::Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
        _ => format!("{}d{:02}h", secs / 86400, (secs % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_people_write() {
        assert_eq!("30s".parse::<Duration>().unwrap(), Duration::from_secs(30));
        assert_eq!("5m".parse::<Duration>().unwrap(), Duration::from_secs(300));
        assert_eq!(
            "1h30m".parse::<Duration>().unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            "500ms".parse::<Duration>().unwrap(),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn rejects_negative_and_garbage_with_a_hint() {
        let err = "-5m".parse::<Duration>().unwrap_err().to_string();
        assert!(err.contains("negative"), "{err}");
        let err = "five minutes".parse::<Duration>().unwrap_err().to_string();
        assert!(err.contains("30s, 5m"), "{err}");
        assert!("".parse::<Duration>().is_err());
    }

    #[test]
    fn only_the_shape_the_crd_accepts_is_parsed() {
        for bad in [
            "30m1h",
            "1h1h",
            "1.h",
            ".5h",
            "5us",
            "5ns",
            "5",
            "h",
            "1d",
            "1h 30m",
            "+5m",
            "1.1234567890s",
            "1234567890123h",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} parsed");
        }
        assert_eq!(
            "1h30m15s250ms".parse::<Duration>().unwrap().as_std(),
            std::time::Duration::from_millis(5_415_250)
        );
        assert_eq!(
            "0.5s".parse::<Duration>().unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            "1.5h".parse::<Duration>().unwrap(),
            Duration::from_secs(5400)
        );
    }

    #[test]
    fn displays_round_trip() {
        for s in ["30s", "5m", "1h30m", "500ms", "1h0m1s"] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }
        assert_eq!(Duration::from_secs(90).to_string(), "1m30s");
    }

    #[test]
    fn the_schema_pattern_agrees_with_the_parser_on_typical_input() {
        // The pattern is what the API server checks; keep it in step with what we parse.
        let pattern = DURATION_PATTERN;
        assert!(pattern.starts_with('^') && pattern.ends_with('$'));
        for ok in ["30s", "5m", "1h30m", "500ms", "1.5h"] {
            assert!(ok.parse::<Duration>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn human_ages_are_short() {
        assert_eq!(human(std::time::Duration::from_secs(12)), "12s");
        assert_eq!(human(std::time::Duration::from_secs(250)), "4m10s");
        assert_eq!(
            human(std::time::Duration::from_secs(3 * 3600 + 720)),
            "3h12m"
        );
        assert_eq!(
            human(std::time::Duration::from_secs(2 * 86400 + 3600)),
            "2d01h"
        );
    }
}
