//! Why a reconcile failed, one variant per step with its typed source, and [`error_policy`]: the
//! one place that chooses what happens next.
//!
//! - "fix your spec" (an invalid policy) and permanent database failures (bad credentials, a bad
//!   URL, missing privileges) wait for a change (the spec, or the Secret: both are watched), with
//!   a slow re-check in case the change came from somewhere poolwarden does not watch;
//! - transient failures ("the database blinked", a 403 while RBAC settles after an API server
//!   restart) back off from the policy's interval, with jitter, to at most
//!   [`MAX_BACKOFF_INTERVALS`] intervals: a policy is looked at again within two intervals of
//!   its database answering, never left unwatched for minutes after a short outage;
//! - a conflict (two writers raced) retries in a second;
//! - a cycle whose server is being looked at by another policy's cycle, with nothing usable
//!   known yet (see [`looks`](crate::controller::connections::looks)), comes back in about a second: not a failure, not
//!   counted, not in the status.
//!
//! Categories come from the variants (and their sources' variants), never from message text:
//! they are bounded, and serve as metric labels and condition reasons.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::finalizer;

use super::patches;
use super::validate::InvalidPolicy;
use crate::api::PoolPolicy;
use crate::controller::connections::engines::Connector;
use crate::controller::connections::secret::SecretError;
use crate::controller::context::Context;
use crate::database::DatabaseError;
use crate::decide::WorkloadRef;

/// The longest wait between retries of a transient failure, in the policy's intervals.
pub const MAX_BACKOFF_INTERVALS: u32 = 2;
/// How often a policy that waits for a change is looked at anyway.
pub const RECHECK: Duration = Duration::from_secs(600);
/// How soon a conflict is retried.
pub const CONFLICT_RETRY: Duration = Duration::from_secs(1);
/// How soon a cycle comes back when its server's look is in another policy's hands.
pub const LOOK_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the PoolPolicy has no namespace")]
    NoNamespace,
    /// Step 1, validate.
    #[error(transparent)]
    Invalid(#[from] InvalidPolicy),
    /// Step 2, dereference: the Secret.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Step 2, dereference: the engine the Secret's URL names.
    #[error(transparent)]
    Engine(DatabaseError),
    /// Step 3, the cycle.
    #[error(transparent)]
    Database(DatabaseError),
    /// Step 3: another policy's look at the server is in flight and none usable is known yet.
    #[error("waiting for another policy's look at the same server")]
    LookPending,
    /// Steps 3–5: the lease was lost (or its renew deadline passed) before an act or a write;
    /// that act or write was not done.
    #[error("this replica lost the lease")]
    LostLease,
    /// Step 4, act on the cluster.
    #[error("annotating {workload}: {source}")]
    Annotate {
        workload: WorkloadRef,
        source: kube::Error,
    },
    /// Step 5, report.
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
    /// Deletion: taking back the annotations.
    #[error("removing the annotations of {workload}: {source}")]
    Cleanup {
        workload: WorkloadRef,
        source: kube::Error,
    },
    /// Steps 4 and cleanup: taking stale copies of the annotations off a ReplicaSet or Job.
    #[error("taking the copies of poolwarden's annotations off {object}: {source}")]
    Copies {
        object: WorkloadRef,
        source: kube::Error,
    },
    /// Adding or removing the finalizer.
    #[error("finalizer: {0}")]
    Finalizer(#[source] kube::Error),
    #[error("the PoolPolicy has no name")]
    NoName,
}

/// What the failure asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Nothing changes until someone changes something.
    AfterChange,
    Backoff,
    Conflict,
    /// The follower's pace: the policy's interval.
    AtInterval,
    /// Not a failure: come back in about [`LOOK_RETRY`].
    Shortly,
}

fn kube_category(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(s) if s.code == 409 => "Conflict",
        kube::Error::Api(s) if s.code == 403 => "Forbidden",
        kube::Error::Api(s) if s.code == 404 => "NotFound",
        kube::Error::Api(_) => "KubeApi",
        _ => "KubeUnreachable",
    }
}

/// A conflict: a write raced another (409), or the finalizer's JSON patch found the list
/// changed since it read it (422 from its `test` operation).
fn kube_retry(error: &kube::Error, finalizer: bool) -> Retry {
    match error {
        kube::Error::Api(s) if s.code == 409 || (finalizer && s.code == 422) => Retry::Conflict,
        _ => Retry::Backoff,
    }
}

impl ReconcileError {
    /// The error of kube's finalizer helper, as the failure of the step that failed.
    pub fn from_finalizer(error: finalizer::Error<ReconcileError>) -> Self {
        match error {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                Self::Finalizer(e)
            }
            finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => Self::NoName,
        }
    }

    /// A short, bounded name: a metric label, and the condition reason of what the status shows.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NoNamespace => "NoNamespace",
            Self::NoName => "NoName",
            Self::Invalid(_) => super::status::reasons::INVALID_SPEC,
            Self::Secret(e) => e.reason(),
            Self::Engine(e) | Self::Database(e) => e.category(),
            Self::LostLease => "LostLease",
            Self::LookPending => "LookPending",
            Self::Annotate { source, .. }
            | Self::Cleanup { source, .. }
            | Self::Copies { source, .. } => kube_category(source),
            Self::Status(e) => kube_category(e),
            Self::Finalizer(e) => match kube_retry(e, true) {
                Retry::Conflict => "Conflict",
                _ => kube_category(e),
            },
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Self::NoNamespace | Self::NoName | Self::Invalid(_) => Retry::AfterChange,
            Self::Engine(e) | Self::Database(e) if !e.is_transient() => Retry::AfterChange,
            Self::Engine(_) | Self::Database(_) => Retry::Backoff,
            // A Secret can appear, and its watch says so at once; without it, back off.
            Self::Secret(_) => Retry::Backoff,
            Self::LostLease => Retry::AtInterval,
            Self::LookPending => Retry::Shortly,
            Self::Annotate { source, .. }
            | Self::Cleanup { source, .. }
            | Self::Copies { source, .. }
            | Self::Status(source) => kube_retry(source, false),
            Self::Finalizer(e) => kube_retry(e, true),
        }
    }
}

/// What to do after a failed reconcile: count it, say it, and choose when to come back.
pub fn error_policy<C: Connector>(
    policy: Arc<PoolPolicy>,
    error: &ReconcileError,
    ctx: Arc<Context<C>>,
) -> Action {
    let name = patches::policy_ref(&policy);
    let uid = policy.uid().unwrap_or_default();
    let interval: Duration = policy.spec.interval.into();
    if error.retry() == Retry::Shortly {
        // Spread, so that the policies waiting on one server do not come back as one.
        let wait = LOOK_RETRY.mul_f64(0.8 + ctx.jitter(&uid, 0));
        tracing::debug!(policy = %name, retry_in = ?wait, "{error}");
        return Action::requeue(wait);
    }
    ctx.metrics.error(&name, error.category());
    let wait = match error.retry() {
        Retry::AfterChange => RECHECK,
        Retry::Conflict => CONFLICT_RETRY,
        Retry::AtInterval => interval,
        Retry::Shortly => LOOK_RETRY,
        Retry::Backoff => {
            let failures = ctx.failed(&uid);
            let longest = interval.saturating_mul(MAX_BACKOFF_INTERVALS);
            let base = interval
                .saturating_mul(2u32.saturating_pow(failures.min(16) - 1))
                .min(longest);
            base.mul_f64(0.8 + ctx.jitter(&uid, failures)).min(longest)
        }
    };
    tracing::warn!(
        policy = %name,
        category = error.category(),
        %error,
        retry_in = ?wait,
        "reconcile failed"
    );
    Action::requeue(wait)
}
