//! Sessions counted per source (workload, or application and address) and per pod.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use super::attribution::{Attribution, Source, Via};
use super::name::Name;
use super::numbers::Numbers;
use crate::database::{Session, SessionState};

/// Counts of sessions by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateCounts {
    pub total: u32,
    pub active: u32,
    pub idle: u32,
    pub idle_in_transaction: u32,
    pub other: u32,
}

impl StateCounts {
    pub fn add(&mut self, state: SessionState) {
        self.total += 1;
        match state {
            SessionState::Active => self.active += 1,
            SessionState::Idle => self.idle += 1,
            s if s.is_idle_in_transaction() => self.idle_in_transaction += 1,
            _ => self.other += 1,
        }
    }
}

/// One source's governed sessions.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub source: Source,
    /// How its sessions were attributed (the least trusted way wins, so orphans show).
    pub via: Via,
    pub counts: StateCounts,
    pub pods: BTreeSet<Name>,
    /// The poolers its sessions came through, if any.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub poolers: BTreeSet<String>,
    #[serde(rename = "oldestIdleSeconds", serialize_with = "crate::api::seconds")]
    pub oldest_idle: Duration,
    #[serde(
        rename = "oldestIdleInTransactionSeconds",
        serialize_with = "crate::api::seconds"
    )]
    pub oldest_idle_in_transaction: Duration,
    /// The oldest open transaction, by `xact_start`, whatever its session's state.
    #[serde(
        rename = "oldestTransactionSeconds",
        serialize_with = "crate::api::seconds"
    )]
    pub oldest_transaction: Duration,
    #[serde(
        rename = "oldestConnectionSeconds",
        serialize_with = "crate::api::seconds"
    )]
    pub oldest_connection: Duration,
}

/// A governed session with its attribution: the unit everything after scope works on.
pub struct Governed<'a> {
    pub session: &'a Session,
    pub attribution: Attribution,
}

/// How much an attribution is worth; a group shows its least trusted one, so orphans stand out.
fn trust(via: Via) -> u8 {
    match via {
        Via::Orphaned => 0,
        Via::Unattributed | Via::HeldByPooler | Via::PoolerUnsettled => 1,
        Via::ApplicationName => 2,
        Via::Pooler => 3,
        Via::PodIp => 4,
    }
}

/// Groups governed sessions by source, biggest first: in a list by the sources' [`Numbers`],
/// the sort at the end gives the order.
pub fn by_source(
    governed: &[Governed<'_>],
    numbers: &Numbers<'_>,
    observed_at: jiff::Timestamp,
) -> Vec<Group> {
    let mut groups: Vec<Option<Group>> = numbers.sources.iter().map(|_| None).collect();
    let mut pod_counted = vec![false; numbers.pods.len()];
    for (g, n) in governed.iter().zip(&numbers.governed) {
        let s = g.session;
        let group = groups[n.source].get_or_insert_with(|| Group {
            source: g.attribution.source.clone(),
            via: g.attribution.via,
            counts: StateCounts::default(),
            pods: BTreeSet::new(),
            poolers: BTreeSet::new(),
            oldest_idle: Duration::ZERO,
            oldest_idle_in_transaction: Duration::ZERO,
            oldest_transaction: Duration::ZERO,
            oldest_connection: Duration::ZERO,
        });
        if trust(g.attribution.via) < trust(group.via) {
            group.via = g.attribution.via;
        }
        group.counts.add(s.state);
        if !pod_counted[n.pod] {
            pod_counted[n.pod] = true;
            group.pods.insert(g.attribution.pod.clone());
        }
        if let Some(pooler) = &g.attribution.pooler
            && !group.poolers.contains(pooler)
        {
            group.poolers.insert(pooler.clone());
        }
        let age = s.in_state_for(observed_at);
        match s.state {
            SessionState::Idle => group.oldest_idle = group.oldest_idle.max(age),
            st if st.is_idle_in_transaction() => {
                group.oldest_idle_in_transaction = group.oldest_idle_in_transaction.max(age);
            }
            _ => {}
        }
        if let Some(age) = s.in_transaction_for(observed_at) {
            group.oldest_transaction = group.oldest_transaction.max(age);
        }
        group.oldest_connection = group.oldest_connection.max(s.connected_for(observed_at));
    }
    // Ordered by number, then moved once: a group is large, and comparing sources compares a
    // workload's three names.
    let mut order: Vec<usize> = (0..groups.len()).filter(|&s| groups[s].is_some()).collect();
    let total = |s: usize| groups[s].as_ref().map_or(0, |g| g.counts.total);
    order.sort_unstable_by_key(|&s| (std::cmp::Reverse(total(s)), numbers.ranks[s]));
    order.into_iter().filter_map(|s| groups[s].take()).collect()
}
