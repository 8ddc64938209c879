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

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

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

/// The state the loop keeps and every part of the controller reads.
struct Shared {
    /// `Some` while leading: the instant this replica must stop acting unless it renews.
    until: Mutex<Option<Instant>>,
    state: watch::Sender<bool>,
    /// `until` moved: the watchdog re-arms.
    moved: Notify,
}

impl Shared {
    fn until(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn may_act(&self, now: Instant) -> bool {
        self.until().is_some_and(|until| now < until)
    }

    fn lead_until(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
        self.state
            .send_if_modified(|leading| !std::mem::replace(leading, true));
        self.moved.notify_one();
    }

    /// Stops acting, if leading; says why.
    fn step_down(&self, why: &str) {
        if self.stop() {
            tracing::warn!(
                "{why}: stopped acting (no terminations, no writes) until it leads again"
            );
        }
    }

    /// Stops acting; whether it was leading.
    fn stop(&self) -> bool {
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
    changes: watch::Receiver<bool>,
    /// `None`: no election, the channel alone says (one replica, or the unit tests).
    shared: Option<Arc<Shared>>,
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
            tokio::spawn(watch_lease(
                api.clone(),
                candidate.lease_name.clone(),
                wake.clone(),
            )),
        ];
        let elect = tokio::spawn(elect(api, candidate, shared.clone(), wake, stopped));
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

/// Flips the state to not-leading the moment the deadline passes without a renewal, and says so.
async fn watchdog(shared: Arc<Shared>, timing: Timing) {
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

/// Wakes the campaign whenever the Lease changes (a release is acted on at once).
async fn watch_lease(api: Api<Lease>, name: String, wake: Arc<Notify>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // Backed off while the API server is unreachable (the campaign polls meanwhile).
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        if let Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) = event {
            wake.notify_one();
        }
    }
}

/// The campaign: acquire, renew, step down, compete again; release on stop.
async fn elect(
    api: Api<Lease>,
    candidate: Candidate,
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let timing = candidate.timing;
    let jitter = std::hash::RandomState::new();
    let mut observed: Option<Observed> = None;
    let mut unreachable = false;
    for round in 0u64.. {
        let started = Instant::now();
        let leading = shared.may_act(started);
        let attempt = tokio::time::timeout(
            timing.request_timeout(),
            try_acquire_or_renew(&api, &candidate, &mut observed, started),
        )
        .await
        .unwrap_or(Err(Failure::TimedOut));
        match attempt {
            Ok(Attempt::Holding) => {
                if unreachable {
                    tracing::info!("the API server answers again");
                    unreachable = false;
                }
                // Measured from before the request: the server wrote it no sooner.
                shared.lead_until(started + timing.renew_deadline);
            }
            Ok(Attempt::HeldBy(holder)) => {
                if unreachable {
                    tracing::info!(%holder, "the API server answers again: competing as standby");
                    unreachable = false;
                }
                shared.step_down(&format!("the lease is held by {holder}"));
            }
            Err(failure) => {
                if !unreachable || leading {
                    tracing::warn!(error = %failure, leading, "cannot reach the Lease");
                }
                unreachable = true;
                // The watchdog steps down at the deadline; nothing to do before.
            }
        }
        let pause = if shared.may_act(Instant::now()) {
            timing.retry_period
        } else {
            // 0–20 % more, so that standbys do not ask in lockstep.
            let spread = (jitter.hash_one(round) % 201) as f64 / 1000.0;
            timing.retry_period.mul_f64(1.0 + spread)
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wake.notified(), if !shared.may_act(Instant::now()) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    release(&api, &candidate, &shared).await;
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("no answer within the request timeout")]
    TimedOut,
}

#[derive(Debug, PartialEq)]
enum Attempt {
    Holding,
    HeldBy(String),
}

/// One look at the Lease, and the write it calls for: create, take, renew, or nothing.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    candidate: &Candidate,
    observed: &mut Option<Observed>,
    now: Instant,
) -> Result<Attempt, Failure> {
    let params = PostParams {
        field_manager: Some(format!("poolwarden-{}", candidate.identity)),
        ..PostParams::default()
    };
    let wall = MicroTime(jiff::Timestamp::now());
    let Some(lease) = api.get_opt(&candidate.lease_name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(candidate.lease_name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(claim(&LeaseSpec::default(), candidate, wall, true)),
        };
        return match api.create(&params, &lease).await {
            Ok(_) => Ok(Attempt::Holding),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                Ok(Attempt::HeldBy("another replica".into()))
            }
            Err(e) => Err(e.into()),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let seen = Observed::of(&lease, now, candidate.timing);
    let expired = match observed {
        Some(before) if before.key == seen.key => before.expired(now),
        _ => {
            *observed = Some(seen);
            false
        }
    };
    let take = match judge(
        spec.holder_identity.as_deref(),
        &candidate.identity,
        expired,
    ) {
        Judgement::Wait(holder) => return Ok(Attempt::HeldBy(holder)),
        Judgement::Renew => false,
        Judgement::Take => true,
    };
    let mut new = lease.clone();
    new.spec = Some(claim(&spec, candidate, wall, take));
    match api.replace(&candidate.lease_name, &params, &new).await {
        Ok(_) => Ok(Attempt::Holding),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::HeldBy("another replica".into())),
        Err(e) => Err(e.into()),
    }
}

/// The spec with this replica as holder, renewed now; `take` starts a new term.
fn claim(spec: &LeaseSpec, candidate: &Candidate, now: MicroTime, take: bool) -> LeaseSpec {
    let mut new = spec.clone();
    new.holder_identity = Some(candidate.identity.clone());
    new.lease_duration_seconds = Some(candidate.timing.lease_duration.as_secs().max(1) as i32);
    new.renew_time = Some(now.clone());
    if take || new.acquire_time.is_none() {
        new.acquire_time = Some(now);
        new.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + i32::from(take));
    }
    new
}

/// What to do about a Lease, given who holds it and whether its claim has run out.
#[derive(Debug, PartialEq)]
enum Judgement {
    Renew,
    Take,
    Wait(String),
}

fn judge(holder: Option<&str>, me: &str, expired: bool) -> Judgement {
    match holder.filter(|h| !h.is_empty()) {
        Some(h) if h == me => Judgement::Renew,
        Some(h) if !expired => Judgement::Wait(h.to_owned()),
        // Released (no holder) or expired by our own observation.
        _ => Judgement::Take,
    }
}

/// A version of the Lease and when this replica first saw it, on its own clock.
#[derive(Clone, Debug, PartialEq)]
struct Observed {
    key: (Option<String>, Option<MicroTime>, Option<String>),
    seen: Instant,
    lasts: Duration,
}

impl Observed {
    fn of(lease: &Lease, now: Instant, timing: Timing) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            key: (
                spec.and_then(|s| s.holder_identity.clone()),
                spec.and_then(|s| s.renew_time.clone()),
                lease.metadata.resource_version.clone(),
            ),
            seen: now,
            lasts: spec
                .and_then(|s| s.lease_duration_seconds)
                .map_or(timing.lease_duration, |s| {
                    Duration::from_secs(s.max(0) as u64)
                }),
        }
    }

    /// Unchanged for a whole lease duration, as this replica has watched it.
    fn expired(&self, now: Instant) -> bool {
        now >= self.seen + self.lasts
    }
}

/// Clears the holder (and shortens the claim) so a standby takes over at once.
async fn release(api: &Api<Lease>, candidate: &Candidate, shared: &Shared) {
    let leading = shared.may_act(Instant::now());
    shared.stop();
    if !leading {
        return;
    }
    let params = PostParams {
        field_manager: Some(format!("poolwarden-{}", candidate.identity)),
        ..PostParams::default()
    };
    let released = async {
        let mut lease = api.get(&candidate.lease_name).await?;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&candidate.identity) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        api.replace(&candidate.lease_name, &params, &lease).await?;
        Ok::<_, kube::Error>(true)
    };
    match tokio::time::timeout(candidate.timing.request_timeout(), released).await {
        Ok(Ok(true)) => tracing::info!("lease released"),
        Ok(Ok(false)) => tracing::info!("the lease was no longer ours: nothing to release"),
        Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed"),
        Err(_) => tracing::warn!("releasing the lease timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_lease_is_renewed_by_its_holder_taken_when_free_or_expired_else_waited_for() {
        assert_eq!(judge(Some("a"), "a", false), Judgement::Renew);
        assert_eq!(judge(Some("a"), "a", true), Judgement::Renew);
        assert_eq!(judge(Some("b"), "a", false), Judgement::Wait("b".into()));
        assert_eq!(judge(Some("b"), "a", true), Judgement::Take);
        assert_eq!(judge(None, "a", false), Judgement::Take);
        assert_eq!(judge(Some(""), "a", false), Judgement::Take);
    }

    fn lease(holder: &str, rv: &str, secs: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(secs),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn expiry_counts_from_when_this_replica_saw_the_version_not_from_the_lease_times() {
        let t0 = Instant::now();
        let seen = Observed::of(&lease("b", "7", 15), t0, timing());
        assert!(!seen.expired(t0 + Duration::from_secs(14)));
        assert!(seen.expired(t0 + Duration::from_secs(15)));
        // A renewal is a new version: seen later, it lasts from then.
        let renewed = Observed::of(&lease("b", "8", 15), t0 + Duration::from_secs(10), timing());
        assert_ne!(seen.key, renewed.key);
        assert!(!renewed.expired(t0 + Duration::from_secs(20)));
    }

    fn shared() -> Arc<Shared> {
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

    #[test]
    fn a_cut_off_leader_stops_before_a_standby_can_judge_its_lease_expired() {
        // The leader's last renewal starts at t0; the standby sees it no sooner.
        let t = timing();
        let t0 = Instant::now();
        let s = shared();
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
