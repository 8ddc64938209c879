//! Reconciling one PoolPolicy, in five steps, each in the file named after it:
//!
//! 1. [`validate`]: the spec alone, no client;
//! 2. [`dereference`]: its Secret, the engine, its view of the cluster;
//! 3. the cycle: observe the server and the poolers in front → decide → act on the database
//!    ([`Pass::run_if`], with the policy's [`poolers`](crate::controller::connections::poolers), the lease
//!    checked again right before terminating);
//! 4. [`act_on_cluster`]: annotations and Events; then
//!    [`copies`]: copies of removed annotations that other controllers left;
//! 5. [`report`]: status and metrics, written once from what the steps ended with.
//!
//! A failed step ends the run with its own [`ReconcileError`]; [`error_policy`](error)
//! alone chooses when to come back. Deletion runs [`cleanup`] instead, behind
//! the finalizer. Only the leader reconciles; the others keep their caches warm and wait.

mod act_on_cluster;
mod capacity;
mod cleanup;
mod copies;
mod dereference;
pub(super) mod error;
pub(super) mod events;
mod evict;
pub(super) mod patches;
mod report;
pub(super) mod schedule;
pub(super) mod status;
mod validate;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as Finalizing};
use kube::{Api, ResourceExt};

use crate::api::PoolPolicy;
use crate::controller::connections::engines::Connector;
use crate::controller::connections::looks::{self, PolicyEngine, Want};
use crate::controller::context::{Context, WAIT_FOR_WATCHES};
use crate::cycle::{Cycle, Pass};
use crate::report::audit;
use dereference::Resolved;
use error::ReconcileError;
use patches::FINALIZER;
use validate::Valid;

/// Entry point for the controller runtime.
pub async fn reconcile<C: Connector>(
    policy: Arc<PoolPolicy>,
    ctx: Arc<Context<C>>,
) -> Result<Action, ReconcileError> {
    let _running = ctx.in_flight.enter();
    let started = Instant::now();
    let interval = policy.spec.interval.into();
    if !ctx.may_act() {
        return Ok(Action::requeue(interval));
    }
    // Attribution on a half-listed cluster would be wrong: wait for every watch's first list.
    if !ctx.readiness.is_ready() {
        return Ok(Action::requeue(WAIT_FOR_WATCHES));
    }
    let name = patches::policy_ref(&policy);
    let _timer = ctx.metrics.reconcile_timer(&name);
    let start = ctx
        .schedule
        .start(&policy.uid().unwrap_or_default(), started, interval);
    if let Some(late) = start.late {
        ctx.metrics.reconcile_lateness.observe(late.as_secs_f64());
        tracing::debug!(policy = %name, lateness_ms = late.as_millis() as u64, "cycle started");
    }
    let namespace = policy.namespace().ok_or(ReconcileError::NoNamespace)?;
    let api: Api<PoolPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer::finalizer(&api, FINALIZER, policy, |event| async {
        match event {
            Finalizing::Apply(policy) => apply(&policy, &ctx, start.first_tried).await,
            Finalizing::Cleanup(policy) => cleanup::policy(&ctx, &policy).await,
        }
    })
    .await
    .map_err(ReconcileError::from_finalizer)
}

/// Runs the five steps; the next cycle is due one interval after this one was `first_tried`
/// ([`schedule`]).
async fn apply<C: Connector>(
    policy: &PoolPolicy,
    ctx: &Context<C>,
    first_tried: Instant,
) -> Result<Action, ReconcileError> {
    let name = patches::policy_ref(policy);
    let uid = policy.uid().unwrap_or_default();
    let interval = policy.spec.interval.into();
    let mut ended = async {
        // 1. Validate: the spec alone.
        let valid = validate::policy(policy)?;
        // 2. Dereference: the Secret, the engine, the cluster view.
        let resolved = dereference::resolve(ctx, policy, &valid, &name).await?;
        // 3. The cycle: observe → decide → act on the database.
        run_cycle(ctx, policy, &valid, resolved, first_tried).await
    }
    .await;
    // 4. Act on the cluster: annotations and Events for what the cycle found, the pods to evict
    //    for their pinned pools, and the copies of annotations removed earlier that their
    //    workloads' controllers left behind.
    let told = match &mut ended {
        Ok(cycle) => {
            let told = act_on_cluster::tell(ctx, policy, cycle).await;
            cycle.evictions = evict::evict(ctx, policy, cycle).await;
            ctx.record_evictions(
                &policy.uid().unwrap_or_default(),
                &cycle.evictions,
                cycle.decision.observed_at,
            );
            let namespace = policy.namespace().unwrap_or_default();
            let wanted = cycle.decision.annotated_workloads();
            let taken_back = copies::take_back(ctx, &namespace, &name, &[], &wanted).await;
            told.and(taken_back)
        }
        Err(_) => Ok(()),
    };
    // 5. Report: status and metrics, once, from what the steps ended with.
    let reported = report::write(ctx, policy, &ended).await;
    match ended.and(told).and(reported) {
        Ok(()) => Ok(Action::requeue(ctx.schedule.ended(
            &uid,
            first_tried,
            interval,
        ))),
        // A cycle that comes back for its server's look keeps its first try.
        Err(ReconcileError::LookPending) => Err(ReconcileError::LookPending),
        Err(e) => {
            ctx.schedule.forget(&uid);
            Err(e)
        }
    }
}

async fn run_cycle<C: Connector>(
    ctx: &Context<C>,
    policy: &PoolPolicy,
    valid: &Valid<'_>,
    resolved: Resolved<C::Engine>,
    first_tried: Instant,
) -> Result<Cycle, ReconcileError> {
    let uid = policy.uid().unwrap_or_default();
    let mut memory = ctx.memory(&uid);
    if memory.cycles == 0 {
        // A controller that starts (or takes over the lease) picks up what was learned before.
        let namespace = policy.namespace().unwrap_or_default();
        memory = memory.remembering(capacity::learned(policy.status.as_ref(), &namespace));
    }
    // A policy with poolers in front reads their consoles alongside a look of its own; the
    // others share their server's recent look.
    let want = if resolved.poolers.is_empty() && resolved.unusable.is_empty() {
        let window = looks::share_window(policy.spec.interval.into());
        Want {
            url: resolved.url,
            after: memory.last_look(),
            not_before: Some(first_tried.checked_sub(window).unwrap_or(first_tried)),
            statements: valid.rules.last_statements,
        }
    } else {
        Want::own(resolved.url)
    };
    let poolers = ctx.poolers.of(&uid);
    let mut poolers = poolers.lock().await;
    let mut unread = poolers.align(&resolved.poolers);
    unread.extend(resolved.unusable);
    let mut engine = PolicyEngine {
        server: resolved.server,
        connector: ctx.engines.connector(),
        want,
        pending: false,
    };
    // A replica that lost the lease while it waited for the consoles does nothing.
    if !ctx.may_act() {
        return Err(ReconcileError::LostLease);
    }
    // Asked again right before terminating: the renew deadline may pass while it observes.
    let cycle = Pass::new(&valid.rules, &resolved.view, &memory)
        .behind(poolers.consoles())
        .with_unusable(unread)
        .run_if(&mut engine, || ctx.may_act())
        .await
        .map_err(|e| match engine.pending {
            true => ReconcileError::LookPending,
            false => ReconcileError::Database(e),
        })?
        .ok_or(ReconcileError::LostLease)?;
    // The audit trail first: what was ended is on record whatever the later steps do.
    audit::log(&audit::records(
        &patches::policy_ref(policy),
        &cycle,
        jiff::Timestamp::now(),
    ));
    ctx.remember(&uid, cycle.next_memory());
    Ok(cycle)
}
