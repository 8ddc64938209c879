//! The campaign against the API server: acquire, renew, step down, compete again, release.

use std::hash::BuildHasher;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::Candidate;
use super::rules::{Judgement, Observed, claim, judge};
use super::state::Shared;

/// Wakes the campaign whenever the Lease changes (a release is acted on at once).
pub(super) async fn watch_lease(api: Api<Lease>, name: String, wake: Arc<Notify>) {
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
pub(super) async fn elect(
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
