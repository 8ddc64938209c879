//! What became of one session poolwarden asked an engine to end.
//!
//! Every engine verifies and signals each session on its own, immediately before its own signal,
//! so each session gets its own verdict: one refusal or one session that woke up says nothing
//! about the others.

use serde::Serialize;

/// The fate of one [`SessionIdentity`](super::SessionIdentity) passed to
/// [`Engine::terminate`](super::Engine::terminate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Still exactly as judged (same start, same idle state since the same moment) when read
    /// afresh, and signalled. It exits on its own; the next snapshot confirms.
    Signalled,
    /// Still connected, but no longer as judged: it did something since the snapshot, or is no
    /// longer a candidate at all. Left alone.
    Changed,
    /// No longer there: it ended on its own, or its pid now belongs to a newer session. Nothing
    /// was signalled.
    Gone,
    /// The server refused to signal it (a superuser's session, a role without the privilege),
    /// with the server's reason. Reported; never retried within the cycle.
    Refused(String),
}
