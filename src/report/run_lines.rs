//! What `poolwarden run` prints for each cycle, a line each: the cycle, the leaks confirmed or
//! suspected with their last statements, what was (or would be) ended by source and reason with
//! every pid, what to restart, and what was left alone.

use std::collections::BTreeMap;

use super::{checked_out_note, recovery_lines};
use crate::api::{Mode, count, human};
use crate::cycle::Cycle;
use crate::decide::Termination;

/// The lines of one cycle, without their line ends.
pub fn run_lines(cycle: &Cycle) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(cycle_line(cycle));
    for p in cycle.decision.poolers.iter() {
        if let Some(e) = &p.error {
            lines.push(format!("  pooler {} not read: {e}", p.tally.pooler));
        }
    }
    for f in &cycle.decision.findings {
        let statements = f.statements_said();
        if f.started {
            lines.push(format!(
                "  leak confirmed: {} on {}: {}{statements}",
                f.shown.kind.as_str(),
                f.shown.subject,
                f.shown.evidence
            ));
        } else if let Some(wait) = f.confirms_in {
            lines.push(format!(
                "  suspected (confirmed in {} if it holds): {} on {}: {}{statements}",
                human(wait),
                f.shown.kind.as_str(),
                f.shown.subject,
                f.shown.evidence
            ));
        }
    }
    let (terminated, verb) = match cycle.decision.mode {
        Mode::Enforce => (&cycle.outcome.terminated, "terminated"),
        Mode::DryRun => (&cycle.decision.dry_run, "would terminate"),
    };
    // One line per source and reason: readable at 20 sessions a cycle, and every pid is named.
    let mut by_source: BTreeMap<(String, &str), Vec<&Termination>> = BTreeMap::new();
    for t in terminated {
        by_source
            .entry((t.source.to_string(), t.reason.as_str()))
            .or_default()
            .push(t);
    }
    for ((source, reason), list) in by_source {
        let longest = list
            .iter()
            .map(|t| t.in_state_for)
            .max()
            .unwrap_or_default();
        let pids: Vec<String> = list.iter().map(|t| t.identity.pid.to_string()).collect();
        lines.push(format!(
            "  {verb} {} from {source} ({reason}, up to {}): pid {}",
            count(list.len(), "session"),
            human(longest),
            pids.join(", ")
        ));
    }
    if let Some(note) = checked_out_note(terminated) {
        lines.push(format!("  {note}"));
    }
    for line in recovery_lines(&cycle.decision) {
        lines.push(format!("  {line}"));
    }
    if !cycle.outcome.changed.is_empty() {
        lines.push(format!(
            "  left alone (changed since the snapshot): {}",
            cycle.outcome.changed.len()
        ));
    }
    if !cycle.outcome.gone.is_empty() {
        lines.push(format!(
            "  already gone (ended on their own): {}",
            cycle.outcome.gone.len()
        ));
    }
    if let Some(e) = &cycle.outcome.error {
        lines.push(format!("  termination failed: {e}"));
    }
    lines
}

/// One line per `run` cycle.
pub fn cycle_line(cycle: &Cycle) -> String {
    let d = &cycle.decision;
    let c = &d.capacity;
    let confirmed = d.findings.iter().filter(|f| f.confirmed).count();
    let suspected = d.findings.len() - confirmed;
    let acted = match d.mode {
        Mode::Enforce => format!("terminated {}", cycle.outcome.terminated.len()),
        Mode::DryRun => format!("would terminate {}", d.dry_run.len()),
    };
    format!(
        "{}  sessions {}/{} ({}%)  governed {} (idle {}, idle in tx {})  leaks {} (+{} suspected)  {}{}",
        d.observed_at.strftime("%H:%M:%S"),
        c.client_sessions,
        c.usable_connections,
        c.utilization_percent,
        d.in_scope.total,
        d.in_scope.idle,
        d.in_scope.idle_in_transaction,
        confirmed,
        suspected,
        acted,
        if d.deferred.is_empty() {
            String::new()
        } else {
            format!(" (+{} deferred)", d.deferred.len())
        }
    )
}
