//! Reconciling one PoolPolicy: observe (its Secret, the database, the cluster index) → decide
//! (pure) → act (terminate, annotate, raise Events) → report (status, metrics).
//!
//! Error policy: an invalid spec waits for the spec to change; a missing Secret or a failing
//! database is written into the status and retried with backoff; API conflicts retry at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::finalizer::{self, Event as Finalizing};
use kube::{Api, Resource, ResourceExt};

use super::context::Context;
use super::patches::{self, FIELD_MANAGER, FINALIZER};
use super::secret;
use super::status::{self, Outcome};
use crate::api::{PoolPolicy, count};
use crate::cycle::{self, Cycle};
use crate::decide::{Rules, Source, Subject, WorkloadRef};

/// Why a reconcile failed (everything else is written into the status and retried calmly).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<ReconcileError>>),
    #[error("the PoolPolicy has no namespace")]
    NoNamespace,
}

impl ReconcileError {
    /// A bounded name for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(e)) if e.code == 409 => "Conflict",
            Self::Kube(_) => "KubeApi",
            // Two triggers raced to add the finalizer; the JSON patch's test failed. Retry now.
            Self::Finalizer(e)
                if matches!(
                    e.as_ref(),
                    finalizer::Error::AddFinalizer(kube::Error::Api(s)) | finalizer::Error::RemoveFinalizer(kube::Error::Api(s))
                        if s.code == 409 || s.code == 422
                ) =>
            {
                "Conflict"
            }
            Self::Finalizer(_) => "Finalizer",
            Self::NoNamespace => "NoNamespace",
        }
    }
}

/// Entry point for the controller runtime.
pub async fn reconcile(
    policy: Arc<PoolPolicy>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = policy.namespace().ok_or(ReconcileError::NoNamespace)?;
    let api: Api<PoolPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer::finalizer(&api, FINALIZER, policy, |event| async {
        match event {
            Finalizing::Apply(policy) => apply(policy, &ctx).await,
            Finalizing::Cleanup(policy) => cleanup(policy, &ctx).await,
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

/// What to do after a failed reconcile.
pub fn error_policy(policy: Arc<PoolPolicy>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let name = patches::policy_ref(&policy);
    ctx.metrics.error(&name, error.category());
    tracing::warn!(policy = %name, %error, "reconcile failed");
    match error.category() {
        "Conflict" => Action::requeue(Duration::from_secs(1)),
        _ => {
            Action::requeue(ctx.backoff(&policy.uid().unwrap_or_default(), Duration::from_secs(5)))
        }
    }
}

async fn apply(policy: Arc<PoolPolicy>, ctx: &Context) -> Result<Action, ReconcileError> {
    let interval: Duration = policy.spec.interval.into();
    // Only the leader reads, acts or writes; the others keep their caches warm and wait.
    if !ctx.is_leader() {
        return Ok(Action::requeue(interval));
    }
    let started = Instant::now();
    let name = patches::policy_ref(&policy);
    let namespace = policy.namespace().unwrap_or_default();
    let uid = policy.uid().unwrap_or_default();

    let rules = match Rules::compile(&policy.spec) {
        Ok(rules) => rules,
        Err(invalid) => {
            write_status(ctx, &policy, Outcome::InvalidSpec(&invalid.to_string())).await?;
            return Ok(Action::await_change());
        }
    };
    let Some(database) = &policy.spec.database else {
        write_status(
            ctx,
            &policy,
            Outcome::InvalidSpec("spec.database.connectionSecretRef is required"),
        )
        .await?;
        return Ok(Action::await_change());
    };
    let url = match secret::database_url(&ctx.client, &namespace, &database.connection_secret_ref)
        .await
    {
        Ok(url) => url,
        Err(e) => {
            write_status(ctx, &policy, Outcome::Secret(e.reason(), &e.to_string())).await?;
            ctx.metrics.error(&name, e.reason());
            return Ok(Action::requeue(ctx.backoff(&uid, interval)));
        }
    };
    let engine = match ctx.engines.for_policy(&uid, &url) {
        Ok(engine) => engine,
        Err(e) => {
            write_status(ctx, &policy, Outcome::Database(&e)).await?;
            ctx.metrics.error(&name, e.category());
            return Ok(Action::requeue(ctx.backoff(&uid, interval)));
        }
    };
    let view = {
        let index = ctx.index.read().unwrap_or_else(|e| e.into_inner());
        index.view(
            &namespace,
            policy.spec.workloads.pod_selector.as_ref(),
            &name,
            Timestamp::now(),
        )
    };
    let view = match view {
        Ok(view) => view,
        Err(message) => {
            write_status(ctx, &policy, Outcome::InvalidSpec(&message)).await?;
            return Ok(Action::await_change());
        }
    };

    let memory = ctx.memory(&uid);
    let cycle = {
        let mut pg = engine.lock().await;
        // A replica that lost the lease stops acting at once.
        if !ctx.is_leader() {
            return Ok(Action::requeue(interval));
        }
        cycle::run_once(&mut *pg, &rules, &view, &memory).await
    };
    let cycle = match cycle {
        Ok(cycle) => cycle,
        Err(e) => {
            tracing::warn!(policy = %name, error = %e, "database cycle failed");
            write_status(ctx, &policy, Outcome::Database(&e)).await?;
            ctx.metrics.error(&name, e.category());
            return Ok(Action::requeue(ctx.backoff(&uid, interval)));
        }
    };
    let next = cycle.next_memory();
    let terminations_total = next.terminations_total;
    ctx.remember(&uid, next);

    if ctx.is_leader() {
        annotate(ctx, &cycle).await?;
        raise_events(ctx, &policy, &cycle).await;
    }
    write_status(
        ctx,
        &policy,
        Outcome::Cycle {
            cycle: &cycle,
            terminations_total,
        },
    )
    .await?;
    ctx.metrics.record(&name, &cycle);
    ctx.metrics
        .monitoring_connections
        .set(ctx.engines.open_targets() as i64);
    ctx.metrics
        .reconcile_duration
        .get_or_create(&super::metrics::PolicyLabels {
            policy: name.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(policy = %name, terminated = cycle.outcome.terminated.len(), "reconciled");
    Ok(Action::requeue(interval))
}

/// Writes the status when it says something new, or the heartbeat is due.
async fn write_status(
    ctx: &Context,
    policy: &PoolPolicy,
    outcome: Outcome<'_>,
) -> Result<(), ReconcileError> {
    let now = Timestamp::now();
    let new = status::build(
        policy.status.as_ref(),
        policy.metadata.generation,
        &outcome,
        now,
    );
    if !status::worth_writing(policy.status.as_ref(), &new, now) || !ctx.is_leader() {
        return Ok(());
    }
    let api: Api<PoolPolicy> =
        Api::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default());
    api.patch_status(
        &policy.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patches::status(&new)),
    )
    .await?;
    Ok(())
}

fn workload_api(ctx: &Context, workload: &WorkloadRef) -> Option<Api<DynamicObject>> {
    let resource = patches::workload_resource(workload)?;
    Some(Api::namespaced_with(
        ctx.client.clone(),
        &workload.namespace,
        &resource,
    ))
}

async fn annotate(ctx: &Context, cycle: &Cycle) -> Result<(), ReconcileError> {
    for change in &cycle.decision.annotations {
        let Some(api) = workload_api(ctx, &change.workload) else {
            continue;
        };
        let patch = patches::annotations(change);
        match api
            .patch(
                &change.workload.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(workload = %change.workload, removal = change.is_removal(), "annotated")
            }
            // The workload went away in the meantime: nothing left to mark.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn reference(workload: &WorkloadRef) -> Option<ObjectReference> {
    let resource = patches::workload_resource(workload)?;
    Some(ObjectReference {
        api_version: Some(resource.api_version),
        kind: Some(workload.kind.clone()),
        name: Some(workload.name.clone()),
        namespace: Some(workload.namespace.clone()),
        ..ObjectReference::default()
    })
}

/// `Warning ConnectionLeak` on a workload when a finding is confirmed; `Normal SessionsTerminated`
/// on the policy when it acted. An Event that cannot be written is logged, never retried.
async fn raise_events(ctx: &Context, policy: &PoolPolicy, cycle: &Cycle) {
    for f in cycle.decision.findings.iter().filter(|f| f.started) {
        let Subject::Source {
            source: Source::Workload(workload),
        } = &f.subject
        else {
            continue;
        };
        let Some(target) = reference(workload) else {
            continue;
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "ConnectionLeak".into(),
            note: Some(truncate(&format!(
                "{}: {}. Likely cause: {} (policy {})",
                f.kind.as_str(),
                f.summary,
                f.cause,
                patches::policy_ref(policy)
            ))),
            action: "Detected".into(),
            secondary: Some(policy.object_ref(&())),
        };
        if let Err(e) = ctx.recorder.publish(&event, &target).await {
            tracing::warn!(error = %e, "could not record a ConnectionLeak event");
        }
    }
    let terminated = &cycle.outcome.terminated;
    if !terminated.is_empty() {
        let mut sources: Vec<String> = terminated.iter().map(|t| t.source.to_string()).collect();
        sources.sort();
        sources.dedup();
        let event = Event {
            type_: EventType::Normal,
            reason: "SessionsTerminated".into(),
            note: Some(truncate(
                &match crate::report::checked_out_note(terminated) {
                    Some(note) => format!(
                        "terminated {} from {}; {note}",
                        count(terminated.len(), "session"),
                        sources.join(", ")
                    ),
                    None => format!(
                        "terminated {} from {}",
                        count(terminated.len(), "session"),
                        sources.join(", ")
                    ),
                },
            )),
            action: "Terminate".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &policy.object_ref(&())).await {
            tracing::warn!(error = %e, "could not record a SessionsTerminated event");
        }
    }
}

/// Event notes are limited to 1 kB by the API server.
fn truncate(note: &str) -> String {
    if note.len() <= 1000 {
        return note.to_owned();
    }
    let mut end = 997;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

/// The policy is being deleted: take back every annotation it wrote, close its connection.
async fn cleanup(policy: Arc<PoolPolicy>, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = patches::policy_ref(&policy);
    let namespace = policy.namespace().unwrap_or_default();
    let annotated = {
        let index = ctx.index.read().unwrap_or_else(|e| e.into_inner());
        index.annotated_by(&namespace, &name)
    };
    let patch = patches::remove_annotations();
    for workload in &annotated {
        let Some(api) = workload_api(ctx, workload) else {
            continue;
        };
        match api
            .patch(
                &workload.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => tracing::info!(%workload, "annotations removed"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.forget(&policy.uid().unwrap_or_default());
    ctx.metrics.forget(&name);
    tracing::info!(policy = %name, workloads = annotated.len(), "policy deleted; cleaned up");
    Ok(Action::await_change())
}
