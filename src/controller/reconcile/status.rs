//! The PoolPolicy status, built purely from what a reconcile saw: conditions with transition
//! times that change only on transitions, and the rule for when the status is worth writing.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    EvictionStatus, LeakReport, Mode, PoolPolicyStatus, ServerStatus, SessionCounts,
    TerminationCounts, WaitingEviction,
};
use crate::cycle::Cycle;
use crate::database::DatabaseError;
use crate::database::fingerprint::{SHORT_FINGERPRINT_CHARS, short};
use crate::decide::{EvictionOutcome, HeldBecause, Subject};

/// Condition types.
pub mod conditions {
    /// The policy is being applied: the last cycle ran.
    pub const READY: &str = "Ready";
    /// The monitoring connection works.
    pub const DATABASE_REACHABLE: &str = "DatabaseReachable";
    /// The policy runs, but cannot do all it should (privileges, superuser sessions).
    pub const DEGRADED: &str = "Degraded";
    /// Every pooler in `spec.poolers` was read (only on a policy that names poolers).
    pub const POOLERS_REACHABLE: &str = "PoolersReachable";
}

/// Condition reasons (bounded: they double as Event reasons and metric labels).
pub mod reasons {
    pub const RECONCILED: &str = "Reconciled";
    pub const CONNECTED: &str = "Connected";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    pub const SECRET_UNREADABLE: &str = "SecretUnreadable";
    pub const NOT_CHECKED: &str = "NotChecked";
    pub const PERMISSION_DENIED: &str = "PermissionDenied";
    pub const SUPERUSER_SESSIONS: &str = "SuperuserSessions";
    pub const TERMINATION_FAILED: &str = "TerminationFailed";
    /// Every pooler's console was read. When one was not, the reason is its error's category
    /// (`Unreachable`, `AuthFailed`, `NotPermitted`, …) or its Secret's (`SecretNotFound`, …).
    pub const READ: &str = "Read";
    /// A pooler given by `pods` matches no pod.
    pub const NO_POOLER_PODS: &str = "NoPoolerPods";
    /// A pooler's replica runs but is not Ready: its console is not read.
    pub const POOLER_POD_NOT_READY: &str = "PoolerPodNotReady";
    /// A pooler's Secret holds no URL that can be read (or rewritten for a replica).
    pub const INVALID_POOLER_URL: &str = "InvalidUrl";
}

/// How the status is refreshed when nothing changes.
pub const HEARTBEAT: Duration = Duration::from_secs(300);
const TOP_LEAKS: usize = 5;

/// What a reconcile ended with, as far as the status tells it.
pub enum Ended<'a> {
    Cycle {
        cycle: &'a Cycle,
        terminations_total: u64,
    },
    InvalidSpec(&'a str),
    /// The Secret or its key is missing: `(reason, message)`.
    Secret(&'static str, &'a str),
    Database(&'a DatabaseError),
}

/// A condition whose `lastTransitionTime` moves only when its status does.
fn condition(
    previous: &[Condition],
    type_: &str,
    value: bool,
    reason: &str,
    message: String,
    now: Timestamp,
    generation: Option<i64>,
) -> Condition {
    let status = if value { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// The new status. Fields `ended` says nothing about keep their previous values.
pub fn build(
    previous: Option<&PoolPolicyStatus>,
    generation: Option<i64>,
    ended: &Ended<'_>,
    now: Timestamp,
) -> PoolPolicyStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let before = status.conditions.clone();
    let cond = |type_: &str, value: bool, reason: &str, message: String| {
        condition(&before, type_, value, reason, message, now, generation)
    };
    status.observed_generation = generation;
    status.conditions = match ended {
        Ended::Cycle { cycle, .. } => {
            let d = &cycle.decision;
            let (degraded, reason, message) = degradation(cycle);
            vec![
                cond(
                    conditions::READY,
                    true,
                    reasons::RECONCILED,
                    // No counts here: they change at almost every cycle, and a condition
                    // that changes is a status write (the counts are in `sessions`).
                    ready_message(d.mode).to_owned(),
                ),
                cond(
                    conditions::DATABASE_REACHABLE,
                    true,
                    reasons::CONNECTED,
                    format!(
                        "{} {}",
                        cycle.snapshot.server.flavour.name(),
                        cycle.snapshot.server.version
                    ),
                ),
                // Degraded reads the other way round: True means trouble.
                cond(conditions::DEGRADED, degraded, reason, message),
            ]
            .into_iter()
            .chain(poolers_reachable(cycle).map(|(ok, reason, message)| {
                cond(conditions::POOLERS_REACHABLE, ok, reason, message)
            }))
            .collect()
        }
        Ended::InvalidSpec(message) => vec![
            cond(
                conditions::READY,
                false,
                reasons::INVALID_SPEC,
                (*message).to_owned(),
            ),
            cond(
                conditions::DATABASE_REACHABLE,
                false,
                reasons::NOT_CHECKED,
                "the spec is invalid".into(),
            ),
        ],
        Ended::Secret(reason, message) => vec![
            cond(conditions::READY, false, reason, (*message).to_owned()),
            cond(
                conditions::DATABASE_REACHABLE,
                false,
                reasons::NOT_CHECKED,
                (*message).to_owned(),
            ),
        ],
        Ended::Database(error) => vec![
            cond(
                conditions::READY,
                false,
                error.category(),
                error.to_string(),
            ),
            cond(
                conditions::DATABASE_REACHABLE,
                false,
                error.category(),
                error.to_string(),
            ),
        ],
    };
    if let Ended::Cycle {
        cycle,
        terminations_total,
    } = ended
    {
        fill_observations(&mut status, cycle, *terminations_total);
    } else {
        // No cycle, no look at the poolers: what was last known of them stands.
        status.conditions.extend(
            before
                .iter()
                .find(|c| c.type_ == conditions::POOLERS_REACHABLE)
                .cloned(),
        );
    }
    status
}

/// `PoolersReachable`, on a policy with poolers: True with each one's tally, or False naming
/// every pooler that could not be read and why. Nothing was ended for being idle then, and the
/// message says so.
fn poolers_reachable(cycle: &Cycle) -> Option<(bool, &'static str, String)> {
    let reports = &cycle.decision.poolers;
    if reports.is_empty() {
        return None;
    }
    if let Some(first) = cycle.unread_poolers.first() {
        let unread: Vec<String> = cycle
            .unread_poolers
            .iter()
            .map(|u| format!("{}: {}", u.name, u.message))
            .collect();
        return Some((
            false,
            first.reason,
            format!(
                "{} of {} poolers not read ({}); their sessions are attributed by address and none \
                 is ended for being idle",
                unread.len(),
                reports.len(),
                unread.join("; ")
            ),
        ));
    }
    let tallies: Vec<String> = reports
        .iter()
        .map(|r| {
            let t = &r.tally;
            format!(
                "{}: {} linked to a client, {} held by the pooler, {} clients ({} waiting)",
                t.pooler, t.linked, t.held_by_pooler, r.clients, r.clients_waiting
            )
        })
        .collect();
    Some((true, reasons::READ, tallies.join("; ")))
}

fn degradation(cycle: &Cycle) -> (bool, &'static str, String) {
    use crate::database::Protection;
    let d = &cycle.decision;
    if let Some(e) = &cycle.outcome.error {
        let reason = if matches!(e, DatabaseError::PermissionDenied(_)) {
            reasons::PERMISSION_DENIED
        } else {
            reasons::TERMINATION_FAILED
        };
        return (true, reason, e.to_string());
    }
    let flavour = cycle.snapshot.server.flavour;
    let count = |p: Protection| d.protected.iter().filter(|x| x.protection == p).count();
    if count(Protection::MissingSignalPrivilege) > 0 {
        return (
            true,
            reasons::PERMISSION_DENIED,
            Protection::MissingSignalPrivilege
                .advice_for(flavour)
                .to_owned(),
        );
    }
    if count(Protection::SuperuserSession) > 0 {
        return (
            true,
            reasons::SUPERUSER_SESSIONS,
            format!(
                "{} condemned sessions belong to {}: {}",
                count(Protection::SuperuserSession),
                if flavour.is_mysql_family() {
                    "users the monitoring user may not kill"
                } else {
                    "superusers"
                },
                Protection::SuperuserSession.advice_for(flavour)
            ),
        );
    }
    if let Some(w) = d.warnings.first() {
        return (true, reasons::PERMISSION_DENIED, w.clone());
    }
    (
        false,
        reasons::AS_EXPECTED,
        "poolwarden can see and end every governed session".into(),
    )
}

fn fill_observations(status: &mut PoolPolicyStatus, cycle: &Cycle, terminations_total: u64) {
    let d = &cycle.decision;
    let c = &d.capacity;
    status.last_check_time = Some(Time(d.observed_at));
    status.connections = Some(format!("{}/{}", c.client_sessions, c.usable_connections));
    status.server = Some(ServerStatus {
        version: cycle.snapshot.server.version.clone(),
        max_connections: c.max_connections,
        reserved_connections: c.reserved_connections,
    });
    status.sessions = Some(SessionCounts {
        total: c.client_sessions,
        in_scope: d.in_scope.total,
        active: d.in_scope.active,
        idle: d.in_scope.idle,
        idle_in_transaction: d.in_scope.idle_in_transaction,
    });
    status.utilization_percent = Some(c.utilization_percent);
    status.terminations = TerminationCounts {
        last_cycle: cycle.outcome.terminated.len() as u32,
        total: terminations_total,
    };

    // Confirmed findings, per source, worst first.
    let mut leaks: BTreeMap<String, LeakReport> = BTreeMap::new();
    for f in d.findings.iter().filter(|f| f.confirmed) {
        let Subject::Source { source } = &f.shown.subject else {
            continue;
        };
        let sessions = d
            .groups
            .iter()
            .find(|g| &g.source == source)
            .map_or(0, |g| g.counts.total);
        let entry = leaks
            .entry(source.to_string())
            .or_insert_with(|| LeakReport {
                workload: source.to_string(),
                findings: Vec::new(),
                sessions,
                detail: format!("{}: {}", f.shown.kind.as_str(), f.shown.summary),
                last_statement: f
                    .shown
                    .last_statements
                    .first()
                    .map(|g| short(&g.fingerprint, SHORT_FINGERPRINT_CHARS)),
            });
        entry.findings.push(f.shown.kind.as_str().to_owned());
    }
    status.leaking_workloads = leaks.len() as u32;
    let mut top: Vec<LeakReport> = leaks.into_values().collect();
    top.sort_by(|a, b| {
        b.sessions
            .cmp(&a.sessions)
            .then(a.workload.cmp(&b.workload))
    });
    top.truncate(TOP_LEAKS);
    status.top_leaks = top;
    status.evictions = evictions(cycle);
    super::capacity::fill(status, cycle);
}

/// What the status says of evictions: those of the last hour (this cycle's included), the pods
/// waiting and why (a budget's refusal in this cycle's own words), what `DryRun` would evict.
fn evictions(cycle: &Cycle) -> Option<EvictionStatus> {
    let recovery = &cycle.decision.recovery;
    let evicted_now = cycle
        .evictions
        .iter()
        .filter(|(_, o)| *o == EvictionOutcome::Evicted)
        .count();
    let mut waiting: Vec<WaitingEviction> = recovery
        .held
        .iter()
        .map(|h| WaitingEviction {
            pod: h.pod.clone(),
            workload: h.workload.to_string(),
            reason: h.why.as_str().to_owned(),
            message: h.why.to_string(),
        })
        .collect();
    for (e, outcome) in &cycle.evictions {
        let (reason, message) = match outcome {
            EvictionOutcome::Refused { message } => (
                "DisruptionBudget",
                HeldBecause::DisruptionBudget {
                    message: message.clone(),
                }
                .to_string(),
            ),
            EvictionOutcome::Failed { message } => {
                ("Failed", format!("the eviction failed: {message}"))
            }
            EvictionOutcome::Evicted | EvictionOutcome::Gone => continue,
        };
        waiting.push(WaitingEviction {
            pod: e.pod.clone(),
            workload: e.workload.to_string(),
            reason: reason.to_owned(),
            message,
        });
    }
    let status = EvictionStatus {
        last_hour: (cycle.decision.memory.evictions.in_the_last_hour() + evicted_now) as u32,
        waiting,
        would_evict: recovery.would_evict.iter().map(|e| e.pod.clone()).collect(),
    };
    (status != EvictionStatus::default()).then_some(status)
}

/// The Ready condition's message after a cycle: what the controller does, never what it counted.
pub fn ready_message(mode: Mode) -> &'static str {
    match mode {
        Mode::DryRun => {
            "the server is looked at and the policy applied in DryRun: nothing is ended"
        }
        Mode::Enforce => "the server is looked at and the policy applied in Enforce",
    }
}

/// How far the share of usable connections in use must move before that alone is worth a write.
pub const UTILIZATION_STEP: u32 = 5;

/// Whether `new` is worth a write: it says something `old` does not, or the heartbeat is due.
///
/// The live counts (`connections`, `sessions`, `utilizationPercent`) move at almost every cycle
/// on a busy server: written each time, they would make every policy write its status at every
/// cycle (at 1,000 policies and a 30 s interval, some 33 writes a second to the API server).
/// They ride along with the writes that say something new, move the status on their own when the
/// server's use moves by [`UTILIZATION_STEP`] points or more, and are refreshed at least at every
/// heartbeat; the metrics carry them live.
pub fn worth_writing(
    old: Option<&PoolPolicyStatus>,
    new: &PoolPolicyStatus,
    now: Timestamp,
) -> bool {
    let Some(old) = old else { return true };
    // Compared as the API server keeps them: times to the second (a time kept to the
    // microsecond here and read back to the second would otherwise differ at every cycle).
    let lasting = |s: &PoolPolicyStatus| {
        serde_json::to_value(PoolPolicyStatus {
            last_check_time: None,
            connections: None,
            sessions: None,
            utilization_percent: None,
            ..s.clone()
        })
        .ok()
    };
    if lasting(old) != lasting(new) {
        return true;
    }
    let utilization_moved = match (old.utilization_percent, new.utilization_percent) {
        (Some(a), Some(b)) => a.abs_diff(b) >= UTILIZATION_STEP,
        (a, b) => a.is_some() != b.is_some(),
    };
    if utilization_moved {
        return true;
    }
    match &old.last_check_time {
        Some(Time(last)) => crate::database::elapsed(*last, now) >= HEARTBEAT,
        None => new.last_check_time.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::DatabaseError;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn find<'a>(s: &'a PoolPolicyStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn transition_times_move_only_when_a_condition_flips() {
        let down = DatabaseError::Unreachable {
            target: "db:5432/orders".into(),
            detail: "connection refused".into(),
        };
        let first = build(
            None,
            Some(1),
            &Ended::Database(&down),
            t("2026-01-01T10:00:00Z"),
        );
        let ready = find(&first, conditions::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Unreachable")
        );
        assert_eq!(ready.last_transition_time.0, t("2026-01-01T10:00:00Z"));

        // Still down ten minutes later, for another reason: same transition time.
        let refused = DatabaseError::AuthFailed {
            target: "db:5432/orders".into(),
            detail: "password authentication failed".into(),
        };
        let second = build(
            Some(&first),
            Some(1),
            &Ended::Database(&refused),
            t("2026-01-01T10:10:00Z"),
        );
        let ready = find(&second, conditions::READY);
        assert_eq!(ready.reason, "AuthFailed");
        assert_eq!(ready.last_transition_time.0, t("2026-01-01T10:00:00Z"));

        // Fixed spec problem: Ready flips, so its time moves.
        let third = build(
            Some(&second),
            Some(2),
            &Ended::InvalidSpec("spec.idle.idleTimeout: bad"),
            t("2026-01-01T10:20:00Z"),
        );
        assert_eq!(
            find(&third, conditions::READY).last_transition_time.0,
            t("2026-01-01T10:00:00Z")
        );
        assert_eq!(find(&third, conditions::READY).reason, "InvalidSpec");
        assert_eq!(third.observed_generation, Some(2));
    }

    #[test]
    fn a_failure_keeps_the_last_observations() {
        let previous = PoolPolicyStatus {
            connections: Some("42/97".into()),
            leaking_workloads: 2,
            ..PoolPolicyStatus::default()
        };
        let down = DatabaseError::ServerFull {
            detail: "sorry, too many clients already".into(),
            advice: crate::database::server_full_advice(None, ""),
        };
        let s = build(
            Some(&previous),
            None,
            &Ended::Database(&down),
            t("2026-01-01T10:00:00Z"),
        );
        assert_eq!(s.connections.as_deref(), Some("42/97"));
        assert_eq!(s.leaking_workloads, 2);
        assert_eq!(
            find(&s, conditions::DATABASE_REACHABLE).reason,
            "ServerFull"
        );
    }

    #[test]
    fn without_a_cycle_what_was_last_known_of_the_poolers_stands() {
        let at = t("2026-01-01T10:00:00Z");
        let poolers = Condition {
            type_: conditions::POOLERS_REACHABLE.into(),
            status: "False".into(),
            reason: "Unreachable".into(),
            message: "pooler pgbouncer: cannot reach PgBouncer's admin console".into(),
            last_transition_time: Time(at),
            observed_generation: Some(1),
        };
        let previous = PoolPolicyStatus {
            conditions: vec![poolers.clone()],
            ..PoolPolicyStatus::default()
        };
        let down = DatabaseError::Unreachable {
            target: "db:5432/orders".into(),
            detail: "connection refused".into(),
        };
        let s = build(
            Some(&previous),
            Some(1),
            &Ended::Database(&down),
            t("2026-01-01T10:01:00Z"),
        );
        assert_eq!(find(&s, conditions::POOLERS_REACHABLE), &poolers);
        assert_eq!(find(&s, conditions::READY).status, "False");
    }

    #[test]
    fn an_unchanged_status_is_written_only_on_the_heartbeat() {
        let now = t("2026-01-01T10:00:00Z");
        let old = PoolPolicyStatus {
            last_check_time: Some(Time(now)),
            connections: Some("5/97".into()),
            utilization_percent: Some(5),
            ..PoolPolicyStatus::default()
        };
        let mut new = old.clone();
        new.last_check_time = Some(Time(t("2026-01-01T10:00:30Z")));
        assert!(!worth_writing(Some(&old), &new, t("2026-01-01T10:00:30Z")));
        assert!(
            worth_writing(Some(&old), &new, t("2026-01-01T10:05:00Z")),
            "heartbeat"
        );
        new.leaking_workloads = 1;
        assert!(
            worth_writing(Some(&old), &new, t("2026-01-01T10:00:30Z")),
            "a change"
        );
        assert!(worth_writing(None, &new, now), "the first status");
    }

    #[test]
    fn live_counts_alone_wait_for_the_heartbeat_unless_the_servers_use_moves_a_step() {
        let now = t("2026-01-01T10:00:00Z");
        let later = t("2026-01-01T10:00:30Z");
        let counts = |total: u32, active: u32| SessionCounts {
            total,
            in_scope: total,
            active,
            idle: total - active,
            idle_in_transaction: 0,
        };
        let old = PoolPolicyStatus {
            last_check_time: Some(Time(now)),
            connections: Some("40/97".into()),
            sessions: Some(counts(40, 3)),
            utilization_percent: Some(41),
            ..PoolPolicyStatus::default()
        };
        let with = |connections: &str, sessions, utilization| PoolPolicyStatus {
            last_check_time: Some(Time(later)),
            connections: Some(connections.into()),
            sessions: Some(sessions),
            utilization_percent: Some(utilization),
            ..old.clone()
        };
        // A session more, two became active: not on its own.
        let busier = with("43/97", counts(43, 5), 44);
        assert!(!worth_writing(Some(&old), &busier, later));
        assert!(worth_writing(
            Some(&old),
            &busier,
            t("2026-01-01T10:05:00Z")
        ));
        // Five points of the server's usable connections, either way: at once.
        assert!(worth_writing(
            Some(&old),
            &with("45/97", counts(45, 3), 46),
            later
        ));
        assert!(worth_writing(
            Some(&old),
            &with("35/97", counts(35, 3), 36),
            later
        ));
        // No longer measured (the server went away): at once.
        let unmeasured = PoolPolicyStatus {
            utilization_percent: None,
            ..with("40/97", counts(40, 3), 41)
        };
        assert!(worth_writing(Some(&old), &unmeasured, later));
    }

    #[test]
    fn a_time_read_back_to_the_second_is_the_time_written() {
        // What the API server gives back: the learned pool's period start to the second.
        let read_back: PoolPolicyStatus = serde_json::from_value(serde_json::json!({
            "lastCheckTime": "2026-01-01T10:00:00Z",
            "learnedPools": [{"workload": "Deployment/app", "sessionsPerPod": 4,
                              "thisPeriod": 4, "periodStart": "2026-01-01T09:59:52Z"}],
        }))
        .unwrap();
        // What the next cycle builds: the same start, kept to the microsecond.
        let mut built = read_back.clone();
        built.learned_pools[0].period_start = Time(t("2026-01-01T09:59:52.123456Z"));
        built.last_check_time = Some(Time(t("2026-01-01T10:00:30.5Z")));
        assert_ne!(read_back, built, "different in memory");
        assert!(!worth_writing(
            Some(&read_back),
            &built,
            t("2026-01-01T10:00:30.5Z")
        ));
    }

    #[test]
    fn the_ready_message_carries_no_count() {
        for mode in [Mode::DryRun, Mode::Enforce] {
            assert!(!ready_message(mode).chars().any(|c| c.is_ascii_digit()));
        }
    }
}
