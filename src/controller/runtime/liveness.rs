//! `/healthz`: whether the loops the controller lives on still run. The watches keep the index
//! and the policies current, the election keeps the lease (or gives it up in time): a loop of
//! these that ended while no one asked the controller to stop leaves a process that answers but
//! no longer does its work, and the kubelet should restart it. The HTTP handler answering at all
//! shows the runtime itself is alive.

use std::sync::Mutex;

use tokio::task::AbortHandle;

/// The long-running loops, by name.
#[derive(Default)]
pub struct Liveness {
    loops: Mutex<Vec<(String, AbortHandle)>>,
}

impl Liveness {
    /// Follows `task` under `name`.
    pub fn follow(&self, name: impl Into<String>, task: AbortHandle) {
        if let Ok(mut loops) = self.loops.lock() {
            loops.push((name.into(), task));
        }
    }

    /// The loops that have ended, by name (none while all run).
    pub fn ended(&self) -> Vec<String> {
        self.loops
            .lock()
            .map(|loops| {
                loops
                    .iter()
                    .filter(|(_, task)| task.is_finished())
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loop_that_ended_is_named_and_one_that_runs_is_not() {
        let liveness = Liveness::default();
        let running = tokio::spawn(std::future::pending::<()>());
        let ended = tokio::spawn(async {});
        liveness.follow("watch pods", running.abort_handle());
        liveness.follow("lease election", ended.abort_handle());
        ended.await.unwrap();
        assert_eq!(liveness.ended(), ["lease election"]);
        running.abort();
    }
}
