//! From what the cycle read of each pooler's console (or why it could not) to the join and a
//! report for every pooler.

use serde::Serialize;

use super::{Pooler, PoolerJoin, PoolerTally, join};
use crate::database::Session;
use crate::database::pgbouncer::ConsoleSnapshot;

/// One pooler as a cycle saw it: its console's views, or why they could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolerLook {
    /// How people know it: its console's `host:port`, or a name from the policy.
    pub name: String,
    /// The views, or why they could not be read.
    pub console: Result<ConsoleSnapshot, ConsoleUnread>,
}

/// Why a pooler's console could not be read: the failure's kind and what a person reads.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsoleUnread {
    /// A short, bounded name: a condition reason, a metric label (`Unreachable`, `AuthFailed`…).
    pub reason: &'static str,
    /// What failed and what to do.
    pub message: String,
}

/// What a decision says about one pooler: its server connections to this server by what is
/// behind them, and its clients.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolerReport {
    #[serde(flatten)]
    pub tally: PoolerTally,
    /// Why its console could not be read this cycle; its sessions were then attributed to its
    /// address, as if it were any client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its clients (not counting admin-console users such as poolwarden).
    pub clients: u32,
    /// Clients waiting for a server connection, in all its pools.
    pub clients_waiting: u32,
    /// The longest any of them has waited.
    #[serde(rename = "maxWaitSeconds", serialize_with = "crate::api::seconds")]
    pub max_wait: std::time::Duration,
}

/// The join over the poolers that could be read, and a report for every pooler.
pub fn join_looks(sessions: &[Session], looks: &[PoolerLook]) -> (PoolerJoin, Vec<PoolerReport>) {
    let readable: Vec<Pooler<'_>> = looks
        .iter()
        .filter_map(|look| {
            Some(Pooler {
                name: &look.name,
                console: look.console.as_ref().ok()?,
            })
        })
        .collect();
    let joined = join(sessions, &readable);
    let mut tallies = joined.tallies.iter();
    let reports = looks
        .iter()
        .map(|look| match &look.console {
            Ok(console) => PoolerReport {
                tally: tallies.next().cloned().unwrap_or_default(),
                error: None,
                clients: console.clients.iter().filter(|c| !c.is_console()).count() as u32,
                clients_waiting: console.pools.iter().map(|p| p.clients_waiting).sum(),
                max_wait: console
                    .pools
                    .iter()
                    .map(|p| p.max_wait)
                    .max()
                    .unwrap_or_default(),
            },
            Err(e) => PoolerReport {
                tally: PoolerTally {
                    pooler: look.name.clone(),
                    ..PoolerTally::default()
                },
                error: Some(e.message.clone()),
                ..PoolerReport::default()
            },
        })
        .collect();
    (joined, reports)
}
