//! The audit trail: one record for every session `Enforce` set out to end, saying what became of
//! it (terminated, or left alone and why), with who it belonged to, why it was condemned and how
//! long it had sat; and one for every condemned session poolwarden may not end (no privilege, a
//! superuser's session), once while it stays so, not every cycle. Each record is logged (target
//! `poolwarden::audit`, JSON under `--log-format json`); `poolwarden run --audit-log FILE` also
//! appends them to a file (see `standalone::AuditTrail`). The controller logs the same records.
//!
//! Records carry pids and names: they are for people and log stores, never metric labels.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::Serialize;

use crate::api::Mode;
use crate::cycle::Cycle;
use crate::database::{Session, elapsed};
use crate::decide::{Protected, Source, Termination};

/// What became of a session poolwarden set out to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Signalled: it was still exactly as judged.
    Terminated,
    /// Left alone: still connected, but it did something since the look.
    Changed,
    /// Already gone: it ended on its own, or its pid belongs to a newer session now.
    Gone,
    /// Not ended: the server refused, or the request failed (`detail` says which).
    Failed,
    /// Not ended: poolwarden may not end it (decided before acting), or the server refused to
    /// signal it (`detail` says why, and what to do).
    Refused,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Terminated => "terminated",
            Action::Changed => "changed",
            Action::Gone => "gone",
            Action::Failed => "failed",
            Action::Refused => "refused",
        }
    }
}

/// One session, one action.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub time: Timestamp,
    pub action: Action,
    /// `namespace/name` of the PoolPolicy (the manifest's name, or the file's, for `run`).
    pub policy: String,
    /// The policy's cycle that acted, counted from 1 since poolwarden started watching it.
    pub cycle: u64,
    pub pid: i64,
    pub user: String,
    pub database: String,
    pub application_name: String,
    /// The source the session was counted under: `Kind/name`, or `application@address`.
    pub source: String,
    /// `Kind/name` when the session was attributed to a workload.
    pub workload: Option<String>,
    /// The pod it came from, when known.
    pub pod: Option<String>,
    /// Why it was condemned (`IdleTimeout`, `IdleInTransactionTimeout`, `TransactionTooOld`,
    /// `Orphaned`).
    pub reason: &'static str,
    /// Its state when judged (`idle`, `idle in transaction`, …).
    pub state: String,
    /// How long it had sat in that state.
    #[serde(rename = "idleSeconds", serialize_with = "crate::api::seconds")]
    pub idle: std::time::Duration,
    /// How old its transaction was, when it was in one.
    #[serde(
        rename = "transactionAgeSeconds",
        serialize_with = "crate::api::option_seconds"
    )]
    pub transaction_age: Option<std::time::Duration>,
    /// Why it was not ended (for `changed` and `failed`).
    pub detail: Option<String>,
    /// What it last ran, every literal removed (none with `leakDetection.lastStatements: Off`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_statement: Option<String>,
    /// PostgreSQL's `query_id` of that statement, where `compute_query_id` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_id: Option<i64>,
}

/// The records of one cycle: one per session the decision condemned in `Enforce`, and one per
/// refused session not recorded yet; none in `DryRun` (nothing is ended).
pub fn records(policy: &str, cycle: &Cycle, at: Timestamp) -> Vec<AuditRecord> {
    let outcome = &cycle.outcome;
    let transaction_age = |s: Option<&Session>| {
        s.and_then(|s| s.xact_start)
            .map(|start| elapsed(start, cycle.snapshot.observed_at))
    };
    let record =
        |t: &Termination, action: Action, detail: Option<String>| {
            let transaction_age =
                transaction_age(cycle.snapshot.sessions.iter().find(|s| {
                    s.pid == t.identity.pid && s.backend_start == t.identity.backend_start
                }));
            AuditRecord {
                time: at,
                action,
                policy: policy.to_owned(),
                cycle: cycle.number,
                pid: t.identity.pid,
                user: t.user.to_string(),
                database: t.database.to_string(),
                application_name: t.application_name.to_string(),
                source: t.source.to_string(),
                workload: match &t.source {
                    Source::Workload(w) => Some(w.to_string()),
                    Source::Client { .. } | Source::Pooler { .. } => None,
                },
                pod: (!t.pod.is_empty()).then(|| t.pod.to_string()),
                reason: t.reason.as_str(),
                state: t.identity.state.to_owned(),
                idle: t.in_state_for,
                transaction_age,
                detail,
                last_statement: t.last_statement.as_ref().map(|s| s.fingerprint.clone()),
                query_id: t.last_statement.as_ref().and_then(|s| s.query_id),
            }
        };
    let mut out: Vec<AuditRecord> = outcome
        .terminated
        .iter()
        .map(|t| record(t, Action::Terminated, None))
        .collect();
    out.extend(outcome.changed.iter().map(|t| {
        record(
            t,
            Action::Changed,
            Some("active since the look: left alone".to_owned()),
        )
    }));
    out.extend(outcome.gone.iter().map(|t| {
        record(
            t,
            Action::Gone,
            Some("ended on its own, or its pid is a newer session's".to_owned()),
        )
    }));
    out.extend(outcome.refused.iter().map(|r| {
        record(
            &r.termination,
            Action::Refused,
            Some(format!("the server refused: {}", r.reason)),
        )
    }));
    if let Some(error) = &outcome.error {
        // The request failed: the condemned sessions it said nothing of were not ended.
        let detail = format!("not ended: {error}");
        let told: BTreeSet<i64> = out.iter().map(|r| r.pid).collect();
        out.extend(
            cycle
                .decision
                .terminate
                .iter()
                .filter(|t| !told.contains(&t.identity.pid))
                .map(|t| record(t, Action::Failed, Some(detail.clone()))),
        );
    }
    for (p, session) in refused(cycle) {
        if !cycle.decision.newly_refused.contains(&p.pid) {
            continue;
        }
        out.push(AuditRecord {
            time: at,
            action: Action::Refused,
            policy: policy.to_owned(),
            cycle: cycle.number,
            pid: p.pid,
            user: session.user.clone().unwrap_or_default(),
            database: session.database.clone().unwrap_or_default(),
            application_name: session.application_name.clone(),
            source: p.source.to_string(),
            workload: match &p.source {
                Source::Workload(w) => Some(w.to_string()),
                Source::Client { .. } | Source::Pooler { .. } => None,
            },
            pod: None,
            reason: p.reason.as_str(),
            state: session.state.as_pg_str().unwrap_or("unknown").to_owned(),
            idle: p.in_state_for,
            transaction_age: transaction_age(Some(session)),
            detail: Some(p.protection.advice().to_owned()),
            last_statement: p.last_statement.as_ref().map(|s| s.fingerprint.clone()),
            query_id: p.last_statement.as_ref().and_then(|s| s.query_id),
        });
    }
    out
}

/// The condemned sessions poolwarden may not end, with their snapshot rows (`Enforce` only).
fn refused(cycle: &Cycle) -> impl Iterator<Item = (&Protected, &Session)> {
    let enforce = cycle.decision.mode == Mode::Enforce;
    cycle
        .decision
        .protected
        .iter()
        .filter(move |_| enforce)
        .filter_map(|p| {
            let session = cycle.snapshot.sessions.iter().find(|s| s.pid == p.pid)?;
            Some((p, session))
        })
}

/// Logs each record (target `poolwarden::audit`): at `info` when a session was ended, at `warn`
/// when it was not.
pub fn log(records: &[AuditRecord]) {
    for r in records {
        macro_rules! emit {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    target: "poolwarden::audit",
                    action = r.action.as_str(),
                    policy = %r.policy,
                    cycle = r.cycle,
                    pid = r.pid,
                    user = %r.user,
                    database = %r.database,
                    application_name = %r.application_name,
                    source = %r.source,
                    workload = r.workload.as_deref(),
                    pod = r.pod.as_deref(),
                    reason = r.reason,
                    state = %r.state,
                    idle_seconds = r.idle.as_secs_f64(),
                    transaction_age_seconds = r.transaction_age.map(|d| d.as_secs_f64()),
                    detail = r.detail.as_deref(),
                    last_statement = r.last_statement.as_deref(),
                    query_id = r.query_id,
                    $message
                )
            };
        }
        match r.action {
            Action::Terminated => emit!(info, "session terminated"),
            Action::Changed => emit!(info, "session left alone: changed since the look"),
            Action::Gone => emit!(info, "session already gone"),
            Action::Failed => emit!(warn, "session not terminated"),
            Action::Refused => emit!(warn, "session not terminated: poolwarden may not end it"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::act::Outcome;
    use crate::database::{
        DatabaseError, MonitorRole, Protection, ServerFacts, SessionIdentity, SessionState,
        Snapshot,
    };
    use crate::decide::{Capacity, Decision, Memory, Reason, StateCounts};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    /// Backend `pid`, idle in a transaction begun at 0 s, idle since 40 s; observed at 100 s.
    fn session(pid: i64) -> Session {
        Session {
            pid,
            backend_type: "client backend".into(),
            database: Some("orders".into()),
            user: Some("app".into()),
            user_is_superuser: false,
            application_name: "worker".into(),
            client_addr: None,
            client_port: None,
            backend_start: at(0),
            xact_start: Some(at(0)),
            state: SessionState::IdleInTransaction,
            state_change: Some(at(40)),
            backend_xmin: None,
            xmin_age: None,
            blocked_by: Vec::new(),
            last_statement: None,
        }
    }

    fn termination(pid: i64) -> Termination {
        Termination {
            identity: SessionIdentity {
                pid,
                backend_start: at(0),
                state: "idle in transaction",
                state_change: at(40),
                xact_start: Some(at(0)),
            },
            reason: Reason::IdleInTransactionTimeout,
            source: Source::Client {
                application: "worker".into(),
                address: None,
            },
            pooler: None,
            pod: "".into(),
            user: "app".into(),
            database: "orders".into(),
            application_name: "worker".into(),
            in_state_for: Duration::from_secs(60),
            blocks: 0,
            checked_out: true,
            last_statement: None,
        }
    }

    fn cycle(mode: Mode, terminate: Vec<Termination>, outcome: Outcome) -> Cycle {
        Cycle {
            number: 7,
            snapshot: Snapshot {
                observed_at: at(100),
                own_pid: 1,
                server: ServerFacts::default(),
                monitor: MonitorRole::default(),
                sessions: (10..20).map(session).collect(),
                sessions_opened_total: None,
                churn: None,
                application_names_known: true,
                last_statements: crate::database::LastStatements::Read,
            },
            decision: Decision {
                observed_at: at(100),
                mode,
                terminate,
                dry_run: Vec::new(),
                deferred: Vec::new(),
                protected: Vec::new(),
                newly_refused: Default::default(),
                groups: Vec::new(),
                in_scope: StateCounts::default(),
                out_of_scope: Default::default(),
                findings: Vec::new(),
                capacity: Capacity::default(),
                poolers: Vec::new(),
                annotations: Vec::new(),
                recovery: Default::default(),
                warnings: Vec::new(),
                memory: Memory::default(),
            },
            outcome,
            unread_poolers: Vec::new(),
            evictions: Vec::new(),
        }
    }

    fn protected(pid: i64) -> Protected {
        Protected {
            pid,
            source: Source::Client {
                application: "worker".into(),
                address: None,
            },
            reason: Reason::IdleTimeout,
            protection: Protection::MissingSignalPrivilege,
            in_state_for: Duration::from_secs(60),
            last_statement: None,
        }
    }

    #[test]
    fn each_condemned_session_is_one_record_saying_what_became_of_it() {
        let c = cycle(
            Mode::Enforce,
            vec![termination(10), termination(11), termination(12)],
            Outcome {
                terminated: vec![termination(10)],
                changed: vec![termination(11)],
                error: Some(DatabaseError::Query("the statement failed".into())),
                ..Outcome::default()
            },
        );
        let records = records("shop/orders-db", &c, at(101));
        let summary: Vec<(i64, Action)> = records.iter().map(|r| (r.pid, r.action)).collect();
        assert_eq!(
            summary,
            vec![
                (10, Action::Terminated),
                (11, Action::Changed),
                (12, Action::Failed)
            ]
        );
        let r = &records[0];
        assert_eq!((r.policy.as_str(), r.cycle), ("shop/orders-db", 7));
        assert_eq!((r.user.as_str(), r.database.as_str()), ("app", "orders"));
        assert_eq!(r.reason, "IdleInTransactionTimeout");
        assert_eq!(r.idle, Duration::from_secs(60));
        assert_eq!(r.transaction_age, Some(Duration::from_secs(100)));
        assert_eq!(r.detail, None);
        assert!(
            records[2]
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("the statement failed"))
        );
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["idleSeconds"], 60.0);
        assert_eq!(json["transactionAgeSeconds"], 100.0);
        assert_eq!(json["action"], "terminated");
    }

    #[test]
    fn every_verdict_of_the_server_is_its_own_record_and_a_refusal_fails_nothing_else() {
        let c = cycle(
            Mode::Enforce,
            (10..14).map(termination).collect(),
            Outcome {
                terminated: vec![termination(10)],
                changed: vec![termination(11)],
                gone: vec![termination(12)],
                refused: vec![crate::act::Refusal {
                    termination: termination(13),
                    reason: "permission denied to terminate process".into(),
                }],
                // As the act step reports the first refusal.
                error: Some(DatabaseError::PermissionDenied("refused".into())),
            },
        );
        let records = records("p", &c, at(101));
        let summary: Vec<(i64, Action)> = records.iter().map(|r| (r.pid, r.action)).collect();
        assert_eq!(
            summary,
            vec![
                (10, Action::Terminated),
                (11, Action::Changed),
                (12, Action::Gone),
                (13, Action::Refused)
            ]
        );
        assert!(
            records[3]
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("permission denied to terminate process"))
        );
    }

    #[test]
    fn a_refusal_the_decision_calls_new_is_recorded_and_never_in_dry_run() {
        let mut c = cycle(Mode::Enforce, Vec::new(), Outcome::default());
        c.decision.protected = vec![protected(13)];
        c.decision.newly_refused = [13].into();
        let first = records("p", &c, at(101));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].action, Action::Refused);
        assert_eq!(first[0].state, "idle in transaction");
        assert!(
            first[0]
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("pg_signal_backend"))
        );

        // On record already (the decision says which are new: see decide::refusals).
        c.decision.newly_refused.clear();
        assert!(records("p", &c, at(102)).is_empty());

        c.decision.newly_refused = [13].into();
        c.decision.mode = Mode::DryRun;
        assert!(records("p", &c, at(102)).is_empty());
    }
}
