//! The sessions poolwarden may not end, as the audit trail records them: each condemned session it
//! may not end (a superuser's, or none may be without `pg_signal_backend`) gets one record while it
//! stays so, not one every cycle, and another if it is refused again after a spell of not being
//! so. A session is its pid and its backend start: a reused pid is another session. Nothing is
//! refused in `DryRun`: nothing is ended there.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::terminations::Protected;
use super::{FastMap, FastSet};
use crate::api::Mode;
use crate::database::Snapshot;

/// A session: its pid and its backend's start.
pub type SessionKey = (i64, Timestamp);

/// The refused sessions of this decision, and the pids of those not on record yet (`recorded`:
/// the previous decision's refused sessions).
pub fn refusals(
    protected: &[Protected],
    snapshot: &Snapshot,
    mode: Mode,
    recorded: &BTreeSet<SessionKey>,
) -> (BTreeSet<SessionKey>, BTreeSet<i64>) {
    if mode != Mode::Enforce {
        return (BTreeSet::new(), BTreeSet::new());
    }
    if protected.is_empty() {
        return (BTreeSet::new(), BTreeSet::new());
    }
    // One pass over the sessions, not one per refused session: thousands of them (a superuser's
    // pool) against a hundred thousand sessions made this the costliest step of deciding.
    let protected_pids: FastSet<i64> = protected.iter().map(|p| p.pid).collect();
    let mut backend_start: FastMap<i64, Timestamp> = FastMap::default();
    for s in &snapshot.sessions {
        if protected_pids.contains(&s.pid) {
            backend_start.entry(s.pid).or_insert(s.backend_start);
        }
    }
    let refused: BTreeSet<SessionKey> = protected
        .iter()
        .filter_map(|p| Some((p.pid, *backend_start.get(&p.pid)?)))
        .collect();
    let new = refused
        .iter()
        .filter(|key| !recorded.contains(key))
        .map(|(pid, _)| *pid)
        .collect();
    (refused, new)
}
