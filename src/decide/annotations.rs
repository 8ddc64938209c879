//! The annotations each workload should carry, compared with what it carries now.
//!
//! Only confirmed findings are written; a workload's annotations go once its findings have cleared
//! for a window (see [`super::memory`]). A workload annotated by another policy is left to it.

use std::collections::{BTreeMap, BTreeSet};

use crate::decide::FastMap;

use serde::Serialize;

use super::attribution::Source;
use super::cluster::{ClusterView, WorkloadRef};
use super::findings::{Subject, statements};
use super::memory::Finding;
use crate::database::fingerprint::SHORT_FINGERPRINT_CHARS;

/// The finding kinds, comma separated, e.g. `IdleAccumulation,PoolSaturation`.
pub const LEAK: &str = "poolwarden.io/leak";
/// One human line: counts, oldest age, the statement its sessions last ran, likely cause.
pub const LEAK_DETAIL: &str = "poolwarden.io/leak-detail";
/// `namespace/name` of the policy that wrote the annotations.
pub const POLICY: &str = "poolwarden.io/policy";
/// Set by the application's owners: its pool size plus overflow per pod.
pub const POOL_MAX: &str = "poolwarden.io/pool-max";

/// The keys poolwarden writes (and removes).
pub const OWNED: [&str; 3] = [LEAK, LEAK_DETAIL, POLICY];

/// A change to one workload's annotations: `None` values remove the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AnnotationChange {
    pub workload: WorkloadRef,
    pub annotations: BTreeMap<String, Option<String>>,
}

impl AnnotationChange {
    pub fn is_removal(&self) -> bool {
        self.annotations.values().all(Option::is_none)
    }
}

/// What to change so every known workload carries exactly what its findings say.
pub fn plan(findings: &[Finding], cluster: &ClusterView, annotate: bool) -> Vec<AnnotationChange> {
    let Some(policy) = cluster.policy.as_deref() else {
        return Vec::new();
    };
    // Confirmed findings by workload, in their order: one pass, not one per workload.
    let mut by_workload: FastMap<&WorkloadRef, Vec<&Finding>> = FastMap::default();
    for f in findings.iter().filter(|f| f.confirmed) {
        if let Subject::Source {
            source: Source::Workload(w),
        } = &f.shown.subject
        {
            by_workload.entry(w).or_default().push(f);
        }
    }
    let mut changes = Vec::new();
    for info in &cluster.workloads {
        let ours = info.annotations.get(POLICY).is_none_or(|p| p == policy);
        if !ours {
            continue;
        }
        let confirmed: &[&Finding] = by_workload.get(&info.workload).map_or(&[], Vec::as_slice);
        let desired: BTreeMap<&str, String> = if confirmed.is_empty() || !annotate {
            BTreeMap::new()
        } else {
            let kinds: BTreeSet<&str> = confirmed.iter().map(|f| f.shown.kind.as_str()).collect();
            let first = confirmed[0];
            BTreeMap::from([
                (LEAK, kinds.into_iter().collect::<Vec<_>>().join(",")),
                (LEAK_DETAIL, detail(first)),
                (POLICY, policy.to_owned()),
            ])
        };
        let mut change = BTreeMap::new();
        for key in OWNED {
            let now = info.annotations.get(key);
            match desired.get(key) {
                Some(want) if now != Some(want) => {
                    change.insert(key.to_owned(), Some(want.clone()));
                }
                None if now.is_some() => {
                    change.insert(key.to_owned(), None);
                }
                _ => {}
            }
        }
        if !change.is_empty() {
            changes.push(AnnotationChange {
                workload: info.workload.clone(),
                annotations: change,
            });
        }
    }
    changes
}

/// `IdleInTransaction: 25 sessions …; last statement `SELECT … = ?`; likely cause: …`. The
/// statement is the most common one, without its count: the line changes when the leak does,
/// not when a count moves.
fn detail(finding: &Finding) -> String {
    let statement = statements::said(
        &finding.shown.last_statements,
        false,
        SHORT_FINGERPRINT_CHARS,
    )
    .map(|s| format!("; {s}"))
    .unwrap_or_default();
    format!(
        "{}: {}{statement}; likely cause: {}",
        finding.shown.kind.as_str(),
        finding.shown.summary,
        finding.shown.cause
    )
}
