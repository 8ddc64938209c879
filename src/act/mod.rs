//! Acting on a decision: terminate what `Enforce` condemned, through the database seam.
//!
//! The database re-verifies every session in the same statement that signals it (see
//! `database::postgres`), so a session that woke up after the snapshot, or a pid that was reused,
//! is left alone. Nothing waits for the backends to exit: the next snapshot confirms.

use serde::Serialize;

use crate::api::Mode;
use crate::database::{DatabaseError, Engine, SessionIdentity};
use crate::decide::{Decision, Termination};

/// What happened to the terminations a decision asked for.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Signalled: the sessions were still exactly as judged.
    pub terminated: Vec<Termination>,
    /// Left alone: gone, or did something since the snapshot.
    pub changed: Vec<Termination>,
    /// The statement failed (reported once per cycle; the next cycle decides afresh).
    #[serde(serialize_with = "error_text")]
    pub error: Option<DatabaseError>,
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
        Ok(signalled) => {
            let (terminated, changed) = decision
                .terminate
                .iter()
                .cloned()
                .partition(|t| signalled.contains(&t.identity.pid));
            Outcome {
                terminated,
                changed,
                error: None,
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
