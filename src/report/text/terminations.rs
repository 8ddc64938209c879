//! The report's terminations: what was (or would be) ended, what was deferred or protected, and the pinned pools to recover.

use std::fmt::Write;

use crate::api::{Mode, count, human};
use crate::cycle::Cycle;
use crate::decide::{Decision, Termination};
use crate::report::table::Table;

pub(super) fn terminations(out: &mut String, cycle: &Cycle) {
    let d = &cycle.decision;
    let o = &cycle.outcome;
    let (title, list): (&str, &[Termination]) = match d.mode {
        Mode::Enforce => ("Terminated", &o.terminated),
        Mode::DryRun => ("Would terminate (Enforce mode)", &d.dry_run),
    };
    let unsignalled = o.changed.len() + o.gone.len() + o.refused.len();
    if list.is_empty() && unsignalled == 0 && d.deferred.is_empty() && o.error.is_none() {
        let _ = writeln!(out, "{title}: nothing\n");
    } else {
        let _ = writeln!(out, "{title}: {} sessions", list.len());
        termination_table(out, list);
        if let Some(note) = checked_out_note(list) {
            let _ = writeln!(out, "  {note}");
        }
    }
    let pids = |list: &mut dyn Iterator<Item = &Termination>| {
        list.map(|t| t.identity.pid.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !o.changed.is_empty() {
        let _ = writeln!(
            out,
            "  left alone, changed since the snapshot: {}",
            pids(&mut o.changed.iter())
        );
    }
    if !o.gone.is_empty() {
        let _ = writeln!(
            out,
            "  already gone (ended on their own): {}",
            pids(&mut o.gone.iter())
        );
    }
    if !o.refused.is_empty() {
        let _ = writeln!(
            out,
            "  refused by the server: {}",
            pids(&mut o.refused.iter().map(|r| &r.termination))
        );
    }
    if let Some(e) = &o.error {
        let _ = writeln!(out, "  termination failed: {e}");
    }
    if !d.deferred.is_empty() {
        let _ = writeln!(
            out,
            "  {} more over this cycle's cap (maxTerminationsPerCycle); next cycle",
            d.deferred.len()
        );
    }
    if !d.protected.is_empty() {
        let _ = writeln!(out, "  {} condemned but protected:", d.protected.len());
        for p in d.protected.iter().take(10) {
            let _ = writeln!(
                out,
                "    pid {} ({}, {} for {}): {}",
                p.pid,
                p.source,
                p.reason.as_str(),
                human(p.in_state_for),
                p.protection.advice_for(cycle.snapshot.server.flavour)
            );
        }
    }
    out.push('\n');
}

/// What a decision says of pinned pools whose sessions it ends (or would end): what to restart,
/// and what is evicted (or would be), or waits and why. No line without a pinned pool.
pub fn recovery_lines(d: &Decision) -> Vec<String> {
    let r = &d.recovery;
    let verb = match d.mode {
        Mode::Enforce => "were ended",
        Mode::DryRun => "would be ended",
    };
    let mut lines: Vec<String> = r
        .pinned
        .iter()
        .map(|p| {
            format!(
                "restart (or fix) {} ({}): its pool was pinned and its {} {verb}; the \
                 application still counts them as checked out",
                p.source,
                p.pod,
                count(p.sessions as usize, "session")
            )
        })
        .collect();
    for e in &r.evict {
        lines.push(format!("evicting pod {} of {}", e.pod, e.workload));
    }
    for e in &r.would_evict {
        lines.push(format!(
            "would evict pod {} of {} (Enforce mode)",
            e.pod, e.workload
        ));
    }
    for h in &r.held {
        lines.push(format!(
            "pod {} of {} waits for its eviction: {}",
            h.pod, h.workload, h.why
        ));
    }
    lines
}

/// What a pinned pool's owners must hear when its sessions are (or would be) ended.
pub fn checked_out_note<'t>(list: impl IntoIterator<Item = &'t Termination>) -> Option<String> {
    let checked_out = list.into_iter().filter(|t| t.checked_out).count();
    (checked_out > 0).then(|| {
        format!(
            "{checked_out} of these were idle in a transaction, checked out of their pool: {}",
            crate::decide::CHECKED_OUT_NOTE
        )
    })
}

pub(super) fn termination_table(out: &mut String, list: &[Termination]) {
    if list.is_empty() {
        return;
    }
    let mut t =
        Table::new(&["pid", "reason", "for", "source", "pod", "user", "database"]).numeric(&[0]);
    for term in list {
        t.row(vec![
            term.identity.pid.to_string(),
            term.reason.as_str().to_owned(),
            human(term.in_state_for),
            term.source.to_string(),
            term.pod.to_string(),
            term.user.to_string(),
            term.database.to_string(),
        ]);
    }
    out.push_str(&t.render("  "));
}
