//! Step 4, continued: the pods the decision says to evict for their pinned pools
//! (`spec.remediation`, see [`crate::decide::Recovery`]), through the Eviction API
//! (`pods/eviction`, policy/v1), which honours PodDisruptionBudgets. A budget's refusal (429) is
//! respected: the pod stays pending, asked again at the next cycle, never forced; nothing is ever
//! deleted directly. Each attempt is an audit record, a metric, and for an evicted pod a
//! `Warning PodEvicted` Event on its workload (a refused one: `Warning EvictionBlocked`).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::EvictParams;
use kube::runtime::events::{Event, EventType};

use super::act_on_cluster::publish_about;
use super::{events, patches};
use crate::api::{PoolPolicy, count};
use crate::controller::connections::engines::Connector;
use crate::controller::context::Context;
use crate::cycle::Cycle;
use crate::decide::{Eviction, EvictionOutcome};
use crate::report::eviction_audit;

/// Evicts what the decision says, while this replica may act; returns what became of each.
pub async fn evict<C: Connector>(
    ctx: &Context<C>,
    policy: &PoolPolicy,
    cycle: &Cycle,
) -> Vec<(Eviction, EvictionOutcome)> {
    let planned = &cycle.decision.recovery.evict;
    if planned.is_empty() {
        return Vec::new();
    }
    let policy_name = patches::policy_ref(policy);
    let mut results = Vec::with_capacity(planned.len());
    for eviction in planned {
        if !ctx.may_act() {
            break;
        }
        let pods: Api<Pod> =
            Api::namespaced(ctx.eviction_client.clone(), &eviction.workload.namespace);
        let outcome = match pods.evict(&eviction.pod, &EvictParams::default()).await {
            Ok(_) => EvictionOutcome::Evicted,
            Err(kube::Error::Api(e)) if e.code == 429 => {
                EvictionOutcome::Refused { message: e.message }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => EvictionOutcome::Gone,
            Err(kube::Error::Api(e)) if e.code == 403 => EvictionOutcome::Failed {
                message: format!(
                    "{}: poolwarden may not create pods/eviction (the chart's rbac.evictPods: true \
                     grants it)",
                    e.message
                ),
            },
            Err(e) => EvictionOutcome::Failed {
                message: e.to_string(),
            },
        };
        tell(ctx, policy, &policy_name, eviction, &outcome).await;
        results.push((eviction.clone(), outcome));
    }
    let now = Timestamp::now();
    eviction_audit::log(&eviction_audit::records(
        &policy_name,
        cycle.number,
        &results,
        now,
    ));
    ctx.metrics.record_evictions(&policy_name, &results);
    results
}

/// The Event on the workload: what was evicted and why, or why it could not be.
async fn tell<C: Connector>(
    ctx: &Context<C>,
    policy: &PoolPolicy,
    policy_name: &str,
    eviction: &Eviction,
    outcome: &EvictionOutcome,
) {
    let why = format!(
        "its pool was pinned: every session sat idle in a transaction, and policy {policy_name} \
         ended {}",
        count(eviction.sessions as usize, "session")
    );
    let (reason, note) = match outcome {
        EvictionOutcome::Evicted => (
            events::POD_EVICTED,
            format!(
                "evicted pod {}: {why}, which freed the server but not the application (its \
                 pool still counted them as checked out); its controller replaces it",
                eviction.pod
            ),
        ),
        EvictionOutcome::Refused { message } => (
            events::EVICTION_BLOCKED,
            format!(
                "pod {} not evicted ({why}): {message}; asked again at the next cycle",
                eviction.pod
            ),
        ),
        EvictionOutcome::Gone | EvictionOutcome::Failed { .. } => return,
    };
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Evict".into(),
        secondary: Some(patches::policy_reference(policy)),
    };
    publish_about(ctx, &eviction.workload, &event).await;
}
