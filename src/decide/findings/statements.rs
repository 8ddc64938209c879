//! What a finding's sessions last ran: the fingerprints the engines made as they read the
//! snapshot ([`crate::database::fingerprint`]), grouped with counts, most common first, so that
//! the workload's owners can find the code that leaked them: "25 sessions, last statement
//! `SELECT … WHERE users.id = ?` (25)".
//!
//! Every session that shows a finding counts, not only the handful it names; a churn finding's
//! are the short-lived sessions of the snapshot's quick looks. With
//! `leakDetection.lastStatements: Off` no finding carries any, whatever a snapshot holds.

use std::collections::BTreeMap;

use crate::decide::FastMap;

use serde::Serialize;

use super::{FindingKind, Sighting};
use crate::database::fingerprint::short;
use crate::database::{Session, Snapshot, Statement};
use crate::decide::rules::Rules;

/// The most statements one finding lists: the most common ones.
pub const MAX_GROUPS: usize = 5;

/// The sessions of a finding that last ran one statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementGroup {
    /// The statement with every literal removed (`…` at the end when it was cut).
    pub fingerprint: String,
    /// PostgreSQL's `query_id`, when every session of the group reported the same one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_id: Option<i64>,
    /// How many of the finding's sessions last ran it.
    pub sessions: u32,
}

/// A session's statement, unless the policy turned statements off.
pub fn of<'s>(session: &'s Session, rules: &Rules) -> Option<&'s Statement> {
    if !rules.last_statements {
        return None;
    }
    session.last_statement.as_ref()
}

/// Gives each sighting the statements its sessions last ran.
pub fn attach(sightings: &mut [Sighting], snapshot: &Snapshot, rules: &Rules) {
    if !rules.last_statements {
        for s in sightings.iter_mut() {
            s.members.clear();
        }
        return;
    }
    let current = by_pid(&snapshot.sessions);
    let short_lived = by_pid(snapshot.churn.iter().flat_map(|c| &c.short_lived));
    for sighting in sightings.iter_mut() {
        let mut members = std::mem::take(&mut sighting.members);
        members.sort_unstable();
        members.dedup();
        let statements = if sighting.shown.kind == FindingKind::ConnectionChurn {
            &short_lived
        } else {
            &current
        };
        sighting.shown.last_statements = group(
            members
                .iter()
                .filter_map(|pid| statements.get(pid))
                .copied(),
        );
    }
}

fn by_pid<'s>(sessions: impl IntoIterator<Item = &'s Session>) -> FastMap<i64, &'s Statement> {
    sessions
        .into_iter()
        .filter_map(|s| Some((s.pid, s.last_statement.as_ref()?)))
        .collect()
}

/// Statements grouped by fingerprint, most common first (then by fingerprint), at most
/// [`MAX_GROUPS`].
pub fn group<'s>(statements: impl IntoIterator<Item = &'s Statement>) -> Vec<StatementGroup> {
    // fingerprint → (sessions, the query_id they share; None once two differ)
    let mut by_fingerprint: BTreeMap<&str, (u32, Option<Option<i64>>)> = BTreeMap::new();
    for s in statements {
        let (n, query_id) = by_fingerprint.entry(&s.fingerprint).or_default();
        *n += 1;
        *query_id = match *query_id {
            None => Some(s.query_id),
            Some(seen) if seen == s.query_id => Some(seen),
            Some(_) => Some(None),
        };
    }
    let mut groups: Vec<StatementGroup> = by_fingerprint
        .into_iter()
        .map(|(fingerprint, (sessions, query_id))| StatementGroup {
            fingerprint: fingerprint.to_owned(),
            query_id: query_id.flatten(),
            sessions,
        })
        .collect();
    groups.sort_by(|a, b| {
        b.sessions
            .cmp(&a.sessions)
            .then(a.fingerprint.cmp(&b.fingerprint))
    });
    groups.truncate(MAX_GROUPS);
    groups
}

/// One line for annotations, Events and the status: "last statement `…` (25)", or "last
/// statements `…` (20), `…` (5)", each fingerprint shortened to `max_chars` characters. Without
/// `counts`, the most common statement alone and no count: a line that stays the same while the
/// leak does (an annotation is rewritten only when it changes). `None` without statements.
pub fn said(groups: &[StatementGroup], counts: bool, max_chars: usize) -> Option<String> {
    let first = groups.first()?;
    if !counts {
        return Some(format!(
            "last statement `{}`",
            short(&first.fingerprint, max_chars)
        ));
    }
    let listed: Vec<String> = groups
        .iter()
        .map(|g| format!("`{}` ({})", short(&g.fingerprint, max_chars), g.sessions))
        .collect();
    Some(format!(
        "last statement{} {}",
        if groups.len() == 1 { "" } else { "s" },
        listed.join(", ")
    ))
}
