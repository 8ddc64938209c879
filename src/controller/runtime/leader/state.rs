//! What the election keeps and every part of the controller reads: whether this replica may act
//! now, on its own monotonic clock, and the watchdog that stops it at the renew deadline.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::Timing;

/// The state the loop keeps and every part of the controller reads.
pub(super) struct Shared {
    /// `Some` while leading: the instant this replica must stop acting unless it renews.
    pub(super) until: Mutex<Option<Instant>>,
    pub(super) state: watch::Sender<bool>,
    /// `until` moved: the watchdog re-arms.
    pub(super) moved: Notify,
}

impl Shared {
    pub(super) fn until(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn may_act(&self, now: Instant) -> bool {
        self.until().is_some_and(|until| now < until)
    }

    pub(super) fn lead_until(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
        self.state
            .send_if_modified(|leading| !std::mem::replace(leading, true));
        self.moved.notify_one();
    }

    /// Stops acting, if leading; says why.
    pub(super) fn step_down(&self, why: &str) {
        if self.stop() {
            tracing::warn!(
                "{why}: stopped acting (no terminations, no writes) until it leads again"
            );
        }
    }

    /// Stops acting; whether it was leading.
    pub(super) fn stop(&self) -> bool {
        let was = self.until.lock().unwrap_or_else(|e| e.into_inner()).take();
        if was.is_some() {
            self.state.send_replace(false);
            self.moved.notify_one();
        }
        was.is_some()
    }
}

/// What the controller reads: whether this replica may act now, and when that changes.
#[derive(Clone)]
pub struct Leader {
    pub(super) changes: watch::Receiver<bool>,
    /// `None`: no election, the channel alone says (one replica, or the unit tests).
    pub(super) shared: Option<Arc<Shared>>,
}

impl Leader {
    /// No deadline: leads while `changes` says so (leader election off, and tests).
    pub fn from_channel(changes: watch::Receiver<bool>) -> Self {
        Self {
            changes,
            shared: None,
        }
    }

    /// Whether this replica may observe, terminate and write *now*: it holds the lease and its
    /// renew deadline has not passed. Read right before every act, not only by the loop.
    pub fn may_act(&self) -> bool {
        match &self.shared {
            Some(shared) => shared.may_act(Instant::now()),
            None => *self.changes.borrow(),
        }
    }

    /// `true` when this replica starts leading, `false` when it stops.
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.changes.clone()
    }
}

/// Flips the state to not-leading the moment the deadline passes without a renewal, and says so.
pub(super) async fn watchdog(shared: Arc<Shared>, timing: Timing) {
    loop {
        let Some(until) = shared.until() else {
            shared.moved.notified().await;
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep_until(until) => {
                if shared.until() == Some(until) {
                    shared.step_down(&format!(
                        "could not renew the lease within the renew deadline ({} s)",
                        timing.renew_deadline.as_secs_f64()
                    ));
                }
            }
            () = shared.moved.notified() => {}
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::Duration;

    fn timing() -> Timing {
        Timing::for_lease(Duration::from_secs(15))
    }

    pub(in crate::controller::runtime::leader) fn shared() -> Arc<Shared> {
        let (state, _) = watch::channel(false);
        Arc::new(Shared {
            until: Mutex::new(None),
            state,
            moved: Notify::new(),
        })
    }

    #[test]
    fn a_leader_may_act_only_before_its_renew_deadline_and_not_after_stepping_down() {
        let s = shared();
        let t0 = Instant::now();
        assert!(!s.may_act(t0));
        s.lead_until(t0 + Duration::from_secs(10));
        assert!(s.may_act(t0));
        assert!(s.may_act(t0 + Duration::from_millis(9_999)));
        assert!(!s.may_act(t0 + Duration::from_secs(10)));
        assert!(*s.state.borrow());
        s.step_down("test");
        assert!(!s.may_act(t0));
        assert!(!*s.state.borrow());
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_steps_down_at_the_deadline_without_the_loop() {
        let s = shared();
        let mut changes = s.state.subscribe();
        tokio::spawn(watchdog(s.clone(), timing()));
        let t0 = Instant::now();
        s.lead_until(t0 + Duration::from_secs(10));
        changes.wait_for(|l| *l).await.unwrap();
        changes.wait_for(|l| !*l).await.unwrap();
        assert!(Instant::now() >= t0 + Duration::from_secs(10));
        assert_eq!(s.until(), None);
    }
}
