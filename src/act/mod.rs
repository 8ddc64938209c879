//! Acting on a decision: terminate what `Enforce` condemned, through the database seam.
//!
//! The engine re-verifies every session immediately before its own signal, against a fresh read
//! of that one backend (see [`Engine::terminate`]), so a session that woke up after the
//! snapshot, or a pid that was reused, is left alone. Nothing waits for the backends to exit:
//! the next snapshot confirms. What the engine says of each session is kept, per session.

use serde::Serialize;

use crate::api::Mode;
use crate::database::{DatabaseError, Engine, SessionIdentity, Verdict};
use crate::decide::{Decision, Termination};

/// What happened to the terminations a decision asked for.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Signalled: the sessions were still exactly as judged.
    pub terminated: Vec<Termination>,
    /// Left alone: still connected, but they did something since the snapshot.
    pub changed: Vec<Termination>,
    /// Already gone: they ended on their own, or their pid belongs to a newer session now.
    pub gone: Vec<Termination>,
    /// The server refused to signal them.
    pub refused: Vec<Refusal>,
    /// Why terminating failed, reported once per cycle (the next cycle decides afresh): the
    /// request as a whole, or, when sessions were refused, the first refusal.
    #[serde(serialize_with = "error_text")]
    pub error: Option<DatabaseError>,
}

/// A session the server would not let poolwarden end.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    #[serde(flatten)]
    pub termination: Termination,
    /// The server's reason.
    pub reason: String,
}

fn error_text<S: serde::Serializer>(e: &Option<DatabaseError>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.serialize_some(&e.to_string()),
        None => s.serialize_none(),
    }
}

/// Terminates `decision.terminate`. Does nothing unless the decision was made in `Enforce`.
pub async fn terminate(engine: &mut impl Engine, decision: &Decision) -> Outcome {
    if decision.mode != Mode::Enforce || decision.terminate.is_empty() {
        return Outcome::default();
    }
    let identities: Vec<SessionIdentity> = decision
        .terminate
        .iter()
        .map(|t| t.identity.clone())
        .collect();
    match engine.terminate(&identities).await {
        Ok(verdicts) if verdicts.len() == identities.len() => {
            sort(decision.terminate.iter().cloned().zip(verdicts))
        }
        Ok(verdicts) => {
            // An engine bug, not the server's doing: say so rather than guess which is which.
            let error = DatabaseError::Query(format!(
                "the engine returned {} verdicts for {} sessions",
                verdicts.len(),
                identities.len()
            ));
            tracing::error!(%error, "terminating sessions");
            Outcome {
                error: Some(error),
                ..Outcome::default()
            }
        }
        Err(error) => {
            tracing::warn!(%error, "terminating sessions failed");
            Outcome {
                error: Some(error),
                ..Outcome::default()
            }
        }
    }
}

/// Files each termination under its verdict.
fn sort(judged: impl Iterator<Item = (Termination, Verdict)>) -> Outcome {
    let mut outcome = Outcome::default();
    for (termination, verdict) in judged {
        match verdict {
            Verdict::Signalled => outcome.terminated.push(termination),
            Verdict::Changed => outcome.changed.push(termination),
            Verdict::Gone => outcome.gone.push(termination),
            Verdict::Refused(reason) => outcome.refused.push(Refusal {
                termination,
                reason,
            }),
        }
    }
    if let Some(first) = outcome.refused.first() {
        let error = DatabaseError::PermissionDenied(format!(
            "the server refused to end {} (pid {}: {})",
            crate::api::count(outcome.refused.len(), "session"),
            first.termination.identity.pid,
            first.reason
        ));
        tracing::warn!(%error, "terminating sessions");
        outcome.error = Some(error);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Reason, Source};

    fn termination(pid: i64) -> Termination {
        Termination {
            identity: SessionIdentity {
                pid,
                backend_start: jiff::Timestamp::UNIX_EPOCH,
                state: "idle",
                state_change: jiff::Timestamp::UNIX_EPOCH,
                xact_start: None,
            },
            reason: Reason::IdleTimeout,
            source: Source::Client {
                application: "worker".into(),
                address: None,
            },
            pod: "".into(),
            pooler: None,
            user: "app".into(),
            database: "app".into(),
            application_name: "worker".into(),
            in_state_for: std::time::Duration::from_secs(60),
            blocks: 0,
            checked_out: false,
            last_statement: None,
        }
    }

    #[test]
    fn every_session_is_filed_under_its_own_verdict() {
        let outcome = sort(
            [
                (termination(1), Verdict::Signalled),
                (termination(2), Verdict::Changed),
                (termination(3), Verdict::Gone),
                (termination(4), Verdict::Signalled),
            ]
            .into_iter(),
        );
        let pids = |list: &[Termination]| list.iter().map(|t| t.identity.pid).collect::<Vec<_>>();
        assert_eq!(pids(&outcome.terminated), vec![1, 4]);
        assert_eq!(pids(&outcome.changed), vec![2]);
        assert_eq!(pids(&outcome.gone), vec![3]);
        assert!(outcome.refused.is_empty());
        assert!(outcome.error.is_none());
    }

    #[test]
    fn a_refusal_is_kept_with_its_reason_and_reported_as_permission_denied() {
        let outcome = sort(
            [
                (termination(1), Verdict::Refused("permission denied".into())),
                (termination(2), Verdict::Signalled),
            ]
            .into_iter(),
        );
        assert_eq!(
            outcome.terminated.len(),
            1,
            "the refusal stops nothing else"
        );
        assert_eq!(outcome.refused[0].termination.identity.pid, 1);
        assert_eq!(outcome.refused[0].reason, "permission denied");
        let error = outcome.error.expect("the refusal is reported");
        assert_eq!(error.category(), "PermissionDenied");
        assert!(error.to_string().contains("pid 1"), "{error}");
    }
}
