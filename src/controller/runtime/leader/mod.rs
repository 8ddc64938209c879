//! Leader election on a `Lease` (coordination.k8s.io/v1): several replicas may run, exactly one
//! acts, and a leader that cannot renew steps down before anyone else can take its place.
//!
//! The semantics are client-go's: a lease lasts [`Timing::lease_duration`] (15 s); the leader
//! renews every [`Timing::retry_period`] (2 s) and keeps, on its own monotonic clock, a
//! *leading until* of the start of its last successful renewal plus [`Timing::renew_deadline`]
//! (10 s). The moment that passes it stops acting, whatever the loop is doing (a request that
//! hangs, a starved task): [`Leader::may_act`] reads the instant itself and is checked before
//! every termination and every write, and a watchdog says so in a warning and flips the state.
//! Every request is bounded by [`Timing::request_timeout`], shorter than the renew deadline.
//! Writes carry the `resourceVersion` they read (a `409 Conflict` means another replica won).
//!
//! A standby never compares its clock with another node's: it judges a lease expired when it has
//! itself seen the same holder, `renewTime` and `resourceVersion` for a whole lease duration. So
//! a leader cut off from the API server stops at most a renew deadline after its last renewal,
//! and a standby takes over no sooner than a lease duration after it saw that renewal: 5 s apart
//! when clocks run at the same rate. A watch on the Lease (by `metadata.name`) wakes the standby
//! at once when the holder releases it; it also polls every retry period, with jitter, for
//! expiry. On shutdown the leader clears the holder, so a standby takes over within about a
//! second.
//!
//! This is our own loop, not kube-lease-manager (the charter's crate for leader election): its
//! 0.13 manager never marks itself not-leading while the API server is unreachable (a failed
//! renewal is retried with backoff, the state stays `true`), and its standby only sleeps until
//! the lease's expiry. A safety property the crate cannot give wins over the preference.

mod election;
mod follow;
mod rules;
mod state;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use follow::{became_leader, default_identity, follow_leadership};
pub use state::Leader;
use state::{Shared, watchdog};

/// The election's periods, client-go's defaults scaled to the lease duration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// How long a claim lasts without renewal, as written in the Lease.
    pub lease_duration: Duration,
    /// How long after its last successful renewal the leader stops acting.
    pub renew_deadline: Duration,
    /// How often the leader renews and the standby looks.
    pub retry_period: Duration,
}

impl Timing {
    /// 15 s → renew deadline 10 s, retry period 2 s (client-go's defaults), in proportion.
    pub fn for_lease(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration * 2 / 15,
        }
    }

    /// Every API request ends within this: two retry periods, well inside the renew deadline.
    pub fn request_timeout(&self) -> Duration {
        (self.retry_period * 2).min(self.renew_deadline / 2)
    }
}

/// This replica's place in the election.
pub struct Leadership {
    pub leader: Leader,
    campaign: Option<Campaign>,
    _always: Option<watch::Sender<bool>>,
}

struct Campaign {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    elect: JoinHandle<()>,
}

/// Names the Lease and who campaigns for it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub timing: Timing,
}

impl Leadership {
    /// Campaigns for the Lease in the background; returns at once, not leading yet.
    pub fn campaign(client: Client, candidate: Candidate) -> Self {
        let (state, changes) = watch::channel(false);
        let shared = Arc::new(Shared {
            until: Mutex::new(None),
            state,
            moved: Notify::new(),
        });
        let api: Api<Lease> = Api::namespaced(client, &candidate.namespace);
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(watchdog(shared.clone(), candidate.timing)),
            tokio::spawn(election::watch_lease(
                api.clone(),
                candidate.lease_name.clone(),
                wake.clone(),
            )),
        ];
        let elect = tokio::spawn(election::elect(
            api,
            candidate,
            shared.clone(),
            wake,
            stopped,
        ));
        Self {
            leader: Leader {
                changes,
                shared: Some(shared),
            },
            campaign: Some(Campaign { stop, tasks, elect }),
            _always: None,
        }
    }

    /// No election: this replica always leads (one replica, or leader election turned off).
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Self {
            leader: Leader::from_channel(rx),
            campaign: None,
            _always: Some(tx),
        }
    }

    /// The election's loops, by name, for `/healthz` (none without an election).
    pub fn loops(&self) -> Vec<(&'static str, tokio::task::AbortHandle)> {
        let Some(campaign) = &self.campaign else {
            return Vec::new();
        };
        let names = ["the lease's watchdog", "the lease's watch"];
        names
            .into_iter()
            .zip(campaign.tasks.iter().map(JoinHandle::abort_handle))
            .chain([("the election", campaign.elect.abort_handle())])
            .collect()
    }

    /// Stops campaigning and, if leading, gives the lease up so another replica takes over at once.
    pub async fn release(mut self) {
        let Some(campaign) = self.campaign.take() else {
            return;
        };
        let _ = campaign.stop.send(true);
        let _ = campaign.elect.await;
        for task in campaign.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rules::Observed;
    use rules::tests::lease;
    use tokio::time::Instant;

    fn timing() -> Timing {
        Timing::for_lease(Duration::from_secs(15))
    }

    #[test]
    fn the_defaults_are_client_gos_and_a_request_ends_before_the_renew_deadline() {
        let t = timing();
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        assert!(t.request_timeout() < t.renew_deadline);
        let short = Timing::for_lease(Duration::from_secs(4));
        assert!(short.retry_period < short.request_timeout());
        assert!(short.request_timeout() < short.renew_deadline);
        assert!(short.renew_deadline < short.lease_duration);
    }

    /// The two halves of the promise, together: the leader's deadline and the standby's expiry.
    #[test]
    fn a_cut_off_leader_stops_before_a_standby_can_judge_its_lease_expired() {
        // The leader's last renewal starts at t0; the standby sees it no sooner.
        let t = timing();
        let t0 = Instant::now();
        let s = state::tests::shared();
        s.lead_until(t0 + t.renew_deadline);
        let standby_saw = Observed::of(&lease("a", "9", 15), t0, t);
        let mut now = t0;
        while now < t0 + Duration::from_secs(30) {
            assert!(
                !(s.may_act(now) && standby_saw.expired(now)),
                "both would act {:?} after the renewal",
                now - t0
            );
            now += Duration::from_millis(100);
        }
    }
}
