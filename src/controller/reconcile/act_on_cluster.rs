//! Step 4 of a reconcile: what the cycle found, told on the cluster. Annotations on the workloads
//! at the top of their owner chains (only the changes the decision asks for, as merge patches of
//! poolwarden's keys), `Warning ConnectionLeak` Events on the workloads where a finding starts
//! (what `Enforce` ends for a leak starts its finding in the same cycle; the note says what the
//! leak's sessions last ran, fingerprinted), a `Normal
//! SessionsTerminated` Event on each workload whose sessions were ended, for a leak or for plain
//! idleness, so that its owners see what was ended, and one on the policy when it acted. Each
//! write is made only while this replica may still act (its lease held, the renew deadline not
//! passed).

use std::collections::BTreeMap;

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};

use super::error::ReconcileError;
use super::{events, patches};
use crate::api::{PoolPolicy, count, human};
use crate::controller::connections::engines::Connector;
use crate::controller::context::Context;
use crate::cycle::Cycle;
use crate::decide::{AnnotationChange, Source, Subject, Termination, WorkloadRef};

/// Annotates, then raises the Events. Every annotation is tried; the first failure is returned.
/// An Event that cannot be written is logged, never retried.
pub async fn tell<C: Connector>(
    ctx: &Context<C>,
    policy: &PoolPolicy,
    cycle: &Cycle,
) -> Result<(), ReconcileError> {
    let mut first_failure = None;
    for change in &cycle.decision.annotations {
        if let Err(e) = annotate(ctx, change).await {
            tracing::warn!(error = %e, "annotating failed");
            first_failure.get_or_insert(e);
        }
    }
    raise_events(ctx, policy, cycle).await;
    first_failure.map_or(Ok(()), Err)
}

async fn annotate<C: Connector>(
    ctx: &Context<C>,
    change: &AnnotationChange,
) -> Result<(), ReconcileError> {
    let workload = &change.workload;
    if !ctx.may_act() {
        return Err(ReconcileError::LostLease);
    }
    let Some(resource) = patches::workload_resource(workload) else {
        return Ok(());
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &workload.namespace, &resource);
    let patch = Patch::Merge(patches::annotations(change));
    match api
        .patch(&workload.name, &PatchParams::default(), &patch)
        .await
    {
        Ok(_) => {
            tracing::info!(%workload, removal = change.is_removal(), "annotated");
            Ok(())
        }
        // The workload went away in the meantime: nothing left to mark.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(ReconcileError::Annotate {
            workload: workload.clone(),
            source,
        }),
    }
}

async fn raise_events<C: Connector>(ctx: &Context<C>, policy: &PoolPolicy, cycle: &Cycle) {
    let policy_name = patches::policy_ref(policy);
    let policy_reference = patches::policy_reference(policy);
    for f in cycle.decision.findings.iter().filter(|f| f.started) {
        let Subject::Source {
            source: Source::Workload(workload),
        } = &f.shown.subject
        else {
            continue;
        };
        // The statements before the cause: the note is cut at 1 kB, and they are what the
        // owners look for.
        let statements = f.statements_said();
        let event = Event {
            type_: EventType::Warning,
            reason: events::CONNECTION_LEAK.into(),
            note: Some(truncate(&format!(
                "{}: {}{statements}. Likely cause: {} (policy {policy_name})",
                f.shown.kind.as_str(),
                f.shown.summary,
                f.shown.cause,
            ))),
            action: "Detected".into(),
            secondary: Some(policy_reference.clone()),
        };
        if !publish_about(ctx, workload, &event).await {
            return;
        }
    }
    let terminated = &cycle.outcome.terminated;
    for (workload, ended) in by_workload(terminated) {
        let event = Event {
            type_: EventType::Normal,
            reason: events::SESSIONS_TERMINATED.into(),
            note: Some(truncate(&ended_note(&ended, &policy_name))),
            action: "Terminate".into(),
            secondary: Some(policy_reference.clone()),
        };
        if !publish_about(ctx, workload, &event).await {
            return;
        }
    }
    if !terminated.is_empty() {
        let mut sources: Vec<String> = terminated.iter().map(|t| t.source.to_string()).collect();
        sources.sort();
        sources.dedup();
        let event = Event {
            type_: EventType::Normal,
            reason: events::SESSIONS_TERMINATED.into(),
            note: Some(truncate(&terminated_note(terminated, &sources))),
            action: "Terminate".into(),
            secondary: None,
        };
        if !ctx.may_act() {
            return;
        }
        if let Err(error) = ctx.recorder.publish(&event, &policy_reference).await {
            tracing::warn!(policy = %policy_name, %error, "could not record a SessionsTerminated event");
        }
    }
}

/// Publishes `event` about `workload` (skipped when the index cannot name it: it went away);
/// `false` once this replica may no longer act, and the caller stops.
pub(super) async fn publish_about<C: Connector>(
    ctx: &Context<C>,
    workload: &WorkloadRef,
    event: &Event,
) -> bool {
    let target = {
        let index = ctx.index.read().unwrap_or_else(|e| e.into_inner());
        patches::workload_reference(workload, index.identity(workload))
    };
    let Some(target) = target else {
        return true;
    };
    if !ctx.may_act() {
        return false;
    }
    if let Err(error) = ctx.recorder.publish(event, &target).await {
        tracing::warn!(%workload, %error, reason = %event.reason, "could not record an event");
    }
    true
}

/// `terminated N sessions from …`, with the checked-out note when the report has one.
fn terminated_note(terminated: &[Termination], sources: &[String]) -> String {
    let base = format!(
        "terminated {} from {}",
        count(terminated.len(), "session"),
        sources.join(", ")
    );
    match crate::report::checked_out_note(terminated) {
        Some(note) => format!("{base}; {note}"),
        None => base,
    }
}

/// The sessions ended this cycle, by the workload they came from.
fn by_workload(terminated: &[Termination]) -> BTreeMap<&WorkloadRef, Vec<&Termination>> {
    let mut by_workload: BTreeMap<&WorkloadRef, Vec<&Termination>> = BTreeMap::new();
    for t in terminated {
        if let Source::Workload(workload) = &t.source {
            by_workload.entry(workload).or_default().push(t);
        }
    }
    by_workload
}

/// `policy shop/orders-db ended 4 sessions of this workload: 4 IdleTimeout (up to 3m10s), …`:
/// one note per workload and cycle, every reason counted, the pods named.
fn ended_note(ended: &[&Termination], policy_name: &str) -> String {
    let mut by_reason: BTreeMap<&str, (usize, std::time::Duration)> = BTreeMap::new();
    for t in ended {
        let (n, longest) = by_reason.entry(t.reason.as_str()).or_default();
        *n += 1;
        *longest = (*longest).max(t.in_state_for);
    }
    let reasons: Vec<String> = by_reason
        .into_iter()
        .map(|(reason, (n, longest))| format!("{n} {reason} (up to {})", human(longest)))
        .collect();
    let mut pods: Vec<&str> = ended.iter().map(|t| t.pod.as_str()).collect();
    pods.sort_unstable();
    pods.dedup();
    let note = format!(
        "policy {policy_name} ended {} of this workload: {}; pods {}",
        count(ended.len(), "session"),
        reasons.join(", "),
        pods.join(", ")
    );
    match crate::report::checked_out_note(ended.iter().copied()) {
        Some(checked_out) => format!("{note}; {checked_out}"),
        None => note,
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
