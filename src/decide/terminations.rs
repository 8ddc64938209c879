//! Which sessions to end this cycle, and why.
//!
//! A session is condemned only if the policy governs it, it is idle (never active), and it has sat
//! in that state past a timeout, its transaction is older than `maxTransactionAge` while it sits
//! idle in it, or it was left behind by a pod that no longer exists. Sessions that block others
//! go first, then the longest-idle, and `maxTerminationsPerCycle` caps the list: never a mass kill.

use crate::decide::FastMap;
use std::time::Duration;

use serde::Serialize;

use super::attribution::{Attribution, Source, Via};
use super::findings::statements;
use super::name::{Name, SharedNames};
use super::rules::Rules;
use crate::database::{Protection, Session, SessionIdentity, SessionState, Snapshot, Statement};

/// Why a session is ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Reason {
    IdleTimeout,
    IdleInTransactionTimeout,
    /// Idle in a transaction older than `maxTransactionAge`.
    TransactionTooOld,
    /// Left behind by a pod that no longer exists.
    Orphaned,
}

impl Reason {
    /// A bounded label for metrics and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::IdleTimeout => "IdleTimeout",
            Reason::IdleInTransactionTimeout => "IdleInTransactionTimeout",
            Reason::TransactionTooOld => "TransactionTooOld",
            Reason::Orphaned => "Orphaned",
        }
    }
}

/// A session to end, with everything needed to verify it is still the one we judged.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Termination {
    pub identity: SessionIdentity,
    pub reason: Reason,
    pub source: Source,
    pub pod: Name,
    /// The pooler the session came through: the source and pod are its client's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooler: Option<String>,
    pub user: Name,
    pub database: Name,
    pub application_name: Name,
    #[serde(rename = "inStateForSeconds", serialize_with = "crate::api::seconds")]
    pub in_state_for: Duration,
    /// How many sessions wait on its locks: blockers go first.
    pub blocks: u32,
    /// Idle inside a transaction: the application's pool counts it as checked out, and will
    /// until the process restarts, even once the session is gone.
    pub checked_out: bool,
    /// What it last ran, fingerprinted (none with `leakDetection.lastStatements: Off`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_statement: Option<Statement>,
}

/// A condemned session poolwarden may not end, and what to do about it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Protected {
    pub pid: i64,
    pub source: Source,
    pub reason: Reason,
    pub protection: Protection,
    #[serde(rename = "inStateForSeconds", serialize_with = "crate::api::seconds")]
    pub in_state_for: Duration,
    /// What it last ran, fingerprinted (none with `leakDetection.lastStatements: Off`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_statement: Option<Statement>,
}

/// The outcome of judging every governed session.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Verdicts {
    /// Condemned and allowed, longest-idle first, within the cap.
    pub selected: Vec<Termination>,
    /// Condemned and allowed, but over this cycle's cap: next cycle.
    pub deferred: Vec<Termination>,
    pub protected: Vec<Protected>,
}

/// Why `session` should end, if it should.
pub fn condemn(
    session: &Session,
    attribution: &Attribution,
    observed_at: jiff::Timestamp,
    rules: &Rules,
) -> Option<Reason> {
    // A pooler's own connection (held for reuse, or unsettled this time) is never ended: the
    // pooler manages its idle connections (server_idle_timeout), and ending one only makes it open
    // another. An unsettled one is left for the next cycle, when the pooler's views agree.
    if attribution.via.is_held_by_pooler() {
        return None;
    }
    let age = session.in_state_for(observed_at);
    let past = |timeout: Option<Duration>| timeout.is_some_and(|t| age > t);
    match session.state {
        SessionState::Idle
        | SessionState::IdleInTransaction
        | SessionState::IdleInTransactionAborted
            if attribution.via == Via::Orphaned =>
        {
            Some(Reason::Orphaned)
        }
        SessionState::Idle if past(rules.idle_timeout) => Some(Reason::IdleTimeout),
        s if s.is_idle_in_transaction() && past(rules.idle_in_transaction_timeout) => {
            Some(Reason::IdleInTransactionTimeout)
        }
        // Only while idle in that transaction: the termination re-checks the state and its
        // timestamp, so a session that started a statement since the snapshot is left alone.
        s if s.is_idle_in_transaction()
            && rules.max_transaction_age.is_some_and(|limit| {
                session
                    .in_transaction_for(observed_at)
                    .is_some_and(|age| age > limit)
            }) =>
        {
            Some(Reason::TransactionTooOld)
        }
        // Active, fast-path, disabled or unknown: never.
        _ => None,
    }
}

/// Sorts the condemned into selected (within the cap), deferred and protected. `blocks` says how
/// many sessions wait on each pid's locks.
pub fn select(
    condemned: Vec<(&Session, &Attribution, Reason)>,
    snapshot: &Snapshot,
    blocks: &FastMap<i64, u32>,
    rules: &Rules,
) -> Verdicts {
    let mut verdicts = Verdicts::default();
    // Ordered before they are written out, and by a small key: a termination carries a dozen
    // strings, and sorting thousands of them moved far more memory than deciding on them took.
    let mut allowed = Vec::new();
    for (session, attribution, reason) in condemned {
        let in_state_for = session.in_state_for(snapshot.observed_at);
        if let Err(protection) = snapshot.monitor.may_terminate(session) {
            verdicts.protected.push(Protected {
                pid: session.pid,
                source: attribution.source.clone(),
                reason,
                protection,
                in_state_for,
                last_statement: statements::of(session, rules).cloned(),
            });
            continue;
        }
        let blocks = blocks.get(&session.pid).copied().unwrap_or(0);
        allowed.push((blocks, in_state_for, session, attribution, reason));
    }
    allowed.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(b.1.cmp(&a.1))
            .then(a.2.pid.cmp(&b.2.pid))
    });
    let count = allowed.len();
    let mut names = SharedNames::default();
    let mut allowed =
        allowed
            .into_iter()
            .filter_map(|(blocks, in_state_for, session, attribution, reason)| {
                // Without a state and its timestamp there is nothing to re-verify against: leave it.
                let identity = session.identity()?;
                Some(Termination {
                    identity,
                    reason,
                    source: attribution.source.clone(),
                    pod: attribution.pod.clone(),
                    pooler: attribution.pooler.clone(),
                    user: names.of(session.user.as_deref().unwrap_or_default()),
                    database: names.of(session.database.as_deref().unwrap_or_default()),
                    application_name: names.of(&session.application_name),
                    in_state_for,
                    blocks,
                    checked_out: session.state.is_idle_in_transaction(),
                    last_statement: statements::of(session, rules).cloned(),
                })
            });
    // Written straight into the list each belongs to, each sized once: splitting one list, or
    // growing one by doubling, would copy the thousands deferred again.
    let cap = rules.max_terminations_per_cycle.min(count);
    verdicts.selected = Vec::with_capacity(cap);
    verdicts.selected.extend(allowed.by_ref().take(cap));
    verdicts.deferred = Vec::with_capacity(count - cap);
    verdicts.deferred.extend(allowed);
    verdicts
        .protected
        .sort_by_key(|p| std::cmp::Reverse(p.in_state_for));
    verdicts
}
