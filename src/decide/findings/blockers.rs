//! The lock graph, as far as findings need it: who blocks how many.

use crate::database::Snapshot;
use crate::decide::FastMap;

/// For each pid, how many sessions wait on its locks (from `blocked_by` of the lock waiters).
pub fn blockers(snapshot: &Snapshot) -> FastMap<i64, u32> {
    let mut blocks: FastMap<i64, u32> = FastMap::default();
    for s in &snapshot.sessions {
        for pid in &s.blocked_by {
            *blocks.entry(*pid).or_default() += 1;
        }
    }
    blocks
}
