//! The pure rules of the election: what to do about a Lease, and when this replica may judge
//! another's claim expired (only by its own clock, never by comparing it with another node's).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use tokio::time::Instant;

use super::{Candidate, Timing};

/// The spec with this replica as holder, renewed now; `take` starts a new term.
pub(super) fn claim(
    spec: &LeaseSpec,
    candidate: &Candidate,
    now: MicroTime,
    take: bool,
) -> LeaseSpec {
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
pub(super) enum Judgement {
    Renew,
    Take,
    Wait(String),
}

pub(super) fn judge(holder: Option<&str>, me: &str, expired: bool) -> Judgement {
    match holder.filter(|h| !h.is_empty()) {
        Some(h) if h == me => Judgement::Renew,
        Some(h) if !expired => Judgement::Wait(h.to_owned()),
        // Released (no holder) or expired by our own observation.
        _ => Judgement::Take,
    }
}

/// A version of the Lease and when this replica first saw it, on its own clock.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Observed {
    pub(super) key: (Option<String>, Option<MicroTime>, Option<String>),
    seen: Instant,
    lasts: Duration,
}

impl Observed {
    pub(super) fn of(lease: &Lease, now: Instant, timing: Timing) -> Self {
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
    pub(super) fn expired(&self, now: Instant) -> bool {
        now >= self.seen + self.lasts
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn timing() -> Timing {
        Timing::for_lease(Duration::from_secs(15))
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

    pub(in crate::controller::runtime::leader) fn lease(
        holder: &str,
        rv: &str,
        secs: i32,
    ) -> Lease {
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
}
