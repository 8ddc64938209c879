//! One pass of observe → decide → act, shared by `check`, `run` and the controller.
//!
//! With poolers in front, their consoles are read at the same time as the server's snapshot (all
//! at once, not after the snapshot's churn sample, which takes half a second), so that the links
//! they show are those of the sessions the snapshot saw. Where a link changes in between, one
//! cycle may name the wrong client: a finding confirms only when it holds over the window, and
//! the verified termination skips a session whose state changed since the snapshot. A console
//! that cannot be read does not fail the cycle: the decision warns, and the sessions behind that
//! pooler are attributed as if there were no pooler.

use crate::act::{self, Outcome};
use crate::database::pgbouncer::PoolerConsole;
use crate::database::{DatabaseError, Engine, Snapshot};
use crate::decide::{
    self, ClusterView, ConsoleUnread, Decision, Eviction, EvictionOutcome, Inputs, Memory,
    PoolerLook, Rules,
};

/// Everything one cycle saw, decided and did.
pub struct Cycle {
    /// This cycle's number for its policy, from 1 (the memory counts them).
    pub number: u64,
    pub snapshot: Snapshot,
    pub decision: Decision,
    pub outcome: Outcome,
    /// The poolers whose consoles this cycle could not read, and why (their sessions were
    /// attributed as if there were no pooler, and nothing was ended for being idle).
    pub unread_poolers: Vec<UnreadPooler>,
    /// The pods the controller set out to evict for their pinned pools, and what became of each
    /// (`decision.recovery.evict`; always empty outside a cluster).
    pub evictions: Vec<(Eviction, EvictionOutcome)>,
}

/// A pooler whose console a cycle could not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadPooler {
    pub name: String,
    /// A short, bounded name for why: a condition reason, a metric label.
    pub reason: &'static str,
    /// What a person reads: what failed and what to do.
    pub message: String,
}

impl Cycle {
    /// The memory for the next cycle, with this cycle's terminations counted.
    pub fn next_memory(&self) -> Memory {
        let mut memory = self.decision.memory.clone();
        memory.record_terminations(self.outcome.terminated.len());
        memory.cycles = self.number;
        memory
    }
}

/// One pass of observe → decide → act: what it decides with, and what stands in front of the
/// server. `check`, `run` and the controller differ only in what they set here.
pub struct Pass<'a> {
    rules: &'a Rules,
    cluster: &'a ClusterView,
    memory: &'a Memory,
    /// The poolers in front, whose consoles are read with the snapshot.
    poolers: &'a mut [PoolerConsole],
    /// Poolers in front that cannot even be asked (their Secret or URL is wrong). They count as
    /// unread: their connections cannot be told from a client's, so no session is ended for
    /// being idle.
    unusable: Vec<UnreadPooler>,
}

impl<'a> Pass<'a> {
    /// A pass straight at the server, no pooler in front.
    pub fn new(rules: &'a Rules, cluster: &'a ClusterView, memory: &'a Memory) -> Self {
        Self {
            rules,
            cluster,
            memory,
            poolers: &mut [],
            unusable: Vec::new(),
        }
    }

    /// With `poolers` in front of the server.
    pub fn behind(mut self, poolers: &'a mut [PoolerConsole]) -> Self {
        self.poolers = poolers;
        self
    }

    /// With more poolers in front that cannot be asked.
    pub fn with_unusable(mut self, unusable: Vec<UnreadPooler>) -> Self {
        self.unusable = unusable;
        self
    }

    /// Observes, decides and acts once.
    pub async fn run(self, engine: &mut impl Engine) -> Result<Cycle, DatabaseError> {
        let cycle = self.run_if(engine, || true).await?;
        Ok(cycle.expect("a guard that always allows"))
    }

    /// [`run`](Self::run), asking `may_act` right before terminating: `None` when it says no
    /// (the controller's leader whose renew deadline passed while it observed).
    pub async fn run_if(
        self,
        engine: &mut impl Engine,
        may_act: impl Fn() -> bool,
    ) -> Result<Option<Cycle>, DatabaseError> {
        let Self {
            rules,
            cluster,
            memory,
            poolers,
            unusable,
        } = self;
        // Policies sharing an engine may differ: each says, before its own look.
        engine.read_statements(rules.last_statements);
        let (snapshot, (mut looks, mut unread)) = tokio::join!(engine.observe(), read_all(poolers));
        let snapshot = snapshot?;
        looks.extend(unusable.iter().map(|u| PoolerLook {
            name: u.name.clone(),
            console: Err(ConsoleUnread {
                reason: u.reason,
                message: u.message.clone(),
            }),
        }));
        unread.extend(unusable);
        let decision = decide::decide(Inputs {
            snapshot: &snapshot,
            rules,
            cluster,
            poolers: &looks,
            memory,
        });
        if !may_act() {
            return Ok(None);
        }
        let outcome = act::terminate(engine, &decision).await;
        Ok(Some(Cycle {
            number: memory.cycles + 1,
            snapshot,
            decision,
            outcome,
            unread_poolers: unread,
            evictions: Vec::new(),
        }))
    }
}

/// Reads every pooler's console at once; a failure is kept as its message.
pub async fn look_at(poolers: &mut [PoolerConsole]) -> Vec<PoolerLook> {
    read_all(poolers).await.0
}

/// [`look_at`], and the poolers that could not be read with why.
async fn read_all(poolers: &mut [PoolerConsole]) -> (Vec<PoolerLook>, Vec<UnreadPooler>) {
    let seen = futures::future::join_all(poolers.iter_mut().map(|console| async move {
        let seen = console.observe().await;
        if let Err(e) = &seen {
            tracing::warn!(pooler = console.name(), error = %e, "pooler console not read");
        }
        (console.name().to_owned(), seen)
    }))
    .await;
    let mut unread = Vec::new();
    let looks = seen
        .into_iter()
        .map(|(name, seen)| {
            if let Err(e) = &seen {
                unread.push(UnreadPooler {
                    name: name.clone(),
                    reason: e.category(),
                    message: e.to_string(),
                });
            }
            PoolerLook {
                name,
                console: seen.map_err(|e| ConsoleUnread {
                    reason: e.category(),
                    message: e.to_string(),
                }),
            }
        })
        .collect();
    (looks, unread)
}
