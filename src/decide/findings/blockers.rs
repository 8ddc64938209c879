//! The lock graph, as far as findings need it: who blocks how many.

use std::collections::HashMap;

use crate::database::Snapshot;

/// For each pid, how many sessions wait on its locks (from `blocked_by` of the lock waiters).
pub fn blockers(snapshot: &Snapshot) -> HashMap<i64, u32> {
    let mut blocks: HashMap<i64, u32> = HashMap::new();
    for s in &snapshot.sessions {
        for pid in &s.blocked_by {
            *blocks.entry(*pid).or_default() += 1;
        }
    }
    blocks
}
