//! One pass of observe → decide → act, shared by `check`, `run` and the controller.

use crate::act::{self, Outcome};
use crate::database::{DatabaseError, Engine, Snapshot};
use crate::decide::{self, ClusterView, Decision, Inputs, Memory, Rules};

/// Everything one cycle saw, decided and did.
pub struct Cycle {
    /// This cycle's number for its policy, from 1 (the memory counts them).
    pub number: u64,
    pub snapshot: Snapshot,
    pub decision: Decision,
    pub outcome: Outcome,
}

impl Cycle {
    /// The memory for the next cycle, with this cycle's terminations counted.
    pub fn next_memory(&self) -> Memory {
        let mut memory = self.decision.memory.clone();
        memory.record_terminations(self.outcome.terminated.len());
        memory.cycles = self.number;
        memory.audited_refusals = crate::report::audit::refused_sessions(self);
        memory
    }
}

/// Observes, decides and acts once.
pub async fn run_once(
    engine: &mut impl Engine,
    rules: &Rules,
    cluster: &ClusterView,
    memory: &Memory,
) -> Result<Cycle, DatabaseError> {
    let snapshot = engine.observe().await?;
    let decision = decide::decide(Inputs {
        snapshot: &snapshot,
        rules,
        cluster,
        memory,
    });
    let outcome = act::terminate(engine, &decision).await;
    Ok(Cycle {
        number: memory.cycles + 1,
        snapshot,
        decision,
        outcome,
    })
}
