//! The human report of a cycle: capacity, sessions by source, findings with their likely cause,
//! and what was (or would be) terminated.

use std::fmt::Write;

use super::table::Table;
use crate::api::{Mode, count, human};
use crate::cycle::Cycle;
use crate::decide::{Decision, Exclusion, Source, StatementGroup, Termination};

/// The full report, as `poolwarden check` prints it.
pub fn render(target: &str, cycle: &Cycle) -> String {
    let d = &cycle.decision;
    let server = &cycle.snapshot.server;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "poolwarden — {target} ({} {}), observed {}",
        server.flavour.name(),
        server.version,
        d.observed_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    );
    let _ = writeln!(
        out,
        "mode: {}\n",
        match d.mode {
            Mode::DryRun => "DryRun (reports only; nothing is terminated)",
            Mode::Enforce => "Enforce",
        }
    );

    capacity(&mut out, d);
    sources(&mut out, d);
    poolers(&mut out, d);
    findings(&mut out, d);
    terminations(&mut out, cycle);
    let recovery = recovery_lines(d);
    if !recovery.is_empty() {
        let _ = writeln!(out, "Pinned pools");
        for line in recovery {
            let _ = writeln!(out, "  {line}");
        }
        out.push('\n');
    }
    for w in &d.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

fn capacity(out: &mut String, d: &Decision) {
    let c = &d.capacity;
    let _ = writeln!(out, "Capacity");
    let _ = writeln!(
        out,
        "  client sessions  {} of {} usable ({}%)  [max_connections {}, {} reserved]  {}",
        c.client_sessions,
        c.usable_connections,
        c.utilization_percent,
        c.max_connections,
        c.reserved_connections,
        bar(c.utilization_percent)
    );
    let s = &d.in_scope;
    let _ = writeln!(
        out,
        "  governed         {}: {} active, {} idle, {} idle in transaction, {} other{}",
        s.total,
        s.active,
        s.idle,
        s.idle_in_transaction,
        s.other,
        c.scope_budget
            .map(|b| format!("  (budget {b})"))
            .unwrap_or_default()
    );
    if !d.out_of_scope.is_empty() {
        let parts: Vec<String> = d
            .out_of_scope
            .iter()
            .map(|(why, n)| format!("{n} {}", exclusion(*why)))
            .collect();
        let _ = writeln!(out, "  not governed     {}", parts.join(", "));
    }
    if let Some(booked) = c.booked_connections {
        let _ = writeln!(out, "  pools may open   {booked} connections in all");
    }
    if let Some(rate) = c.new_sessions_per_second {
        let _ = writeln!(out, "  new sessions     {rate:.1}/s");
    }
    out.push('\n');
}

fn exclusion(why: Exclusion) -> &'static str {
    match why {
        Exclusion::NotAClientBackend => "background",
        Exclusion::OwnSession => "poolwarden (this one)",
        Exclusion::PoolwardenSession => "poolwarden (another instance)",
        Exclusion::OtherDatabase => "other database",
        Exclusion::OtherUser => "other user",
        Exclusion::ExcludedUser => "excluded user",
        Exclusion::ExcludedApplication => "excluded application",
    }
}

fn bar(percent: u32) -> String {
    let filled = (percent.min(100) / 5) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled))
}

fn sources(out: &mut String, d: &Decision) {
    if d.groups.is_empty() {
        let _ = writeln!(out, "No governed sessions.\n");
        return;
    }
    let _ = writeln!(out, "Sessions by source");
    let mut t = Table::new(&[
        "source",
        "pods",
        "total",
        "active",
        "idle",
        "idle in tx",
        "oldest idle",
        "oldest in tx",
        "oldest tx",
    ])
    .numeric(&[1, 2, 3, 4, 5]);
    let age = |a: std::time::Duration| {
        if a.is_zero() {
            "-".to_owned()
        } else {
            human(a)
        }
    };
    for g in &d.groups {
        let source = match (&g.source, g.poolers.is_empty()) {
            (Source::Pooler { .. }, _) => format!("{} (held, no client)", g.source),
            (_, true) => g.source.to_string(),
            (_, false) => format!(
                "{} via pooler {}",
                g.source,
                g.poolers.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        t.row(vec![
            source,
            g.pods.len().to_string(),
            g.counts.total.to_string(),
            g.counts.active.to_string(),
            g.counts.idle.to_string(),
            g.counts.idle_in_transaction.to_string(),
            age(g.oldest_idle),
            age(g.oldest_idle_in_transaction),
            age(g.oldest_transaction),
        ]);
    }
    out.push_str(&t.render("  "));
    out.push('\n');
}

/// What each pooler in front showed: its server connections by what is behind them, its clients.
fn poolers(out: &mut String, d: &Decision) {
    if d.poolers.is_empty() {
        return;
    }
    let _ = writeln!(out, "Poolers");
    let mut t = Table::new(&[
        "pooler",
        "linked to a client",
        "held by the pooler",
        "unsettled",
        "clients",
        "waiting",
        "longest wait",
    ])
    .numeric(&[1, 2, 3, 4, 5]);
    for p in &d.poolers {
        if let Some(e) = &p.error {
            let _ = writeln!(out, "  {}: not read ({e})", p.tally.pooler);
            continue;
        }
        t.row(vec![
            p.tally.pooler.clone(),
            p.tally.linked.to_string(),
            p.tally.held_by_pooler.to_string(),
            p.tally.unsettled.to_string(),
            p.clients.to_string(),
            p.clients_waiting.to_string(),
            if p.max_wait.is_zero() {
                "-".to_owned()
            } else {
                human(p.max_wait)
            },
        ]);
    }
    if d.poolers.iter().any(|p| p.error.is_none()) {
        out.push_str(&t.render("  "));
    }
    out.push('\n');
}

fn findings(out: &mut String, d: &Decision) {
    if d.findings.is_empty() {
        let _ = writeln!(out, "Findings: none\n");
        return;
    }
    let _ = writeln!(out, "Findings");
    for f in &d.findings {
        let _ = writeln!(
            out,
            "  {:<9} {:<18} {}",
            status(f),
            f.kind.as_str(),
            f.subject
        );
        if let Some(wait) = f.confirms_in {
            let _ = writeln!(
                out,
                "            suspected: confirmed in {} if it holds (held {} of the {} window)",
                human(wait),
                human(f.held_for),
                human(f.held_for + wait)
            );
        }
        let _ = writeln!(out, "            {}", f.evidence);
        last_statements(out, &f.last_statements);
        if !f.pids.is_empty() {
            let pids: Vec<String> = f.pids.iter().map(i64::to_string).collect();
            let more = (f.sessions as usize)
                .checked_sub(f.pids.len() + f.pooler_clients.len())
                .filter(|n| *n > 0)
                .map(|n| format!(" and {n} more"))
                .unwrap_or_default();
            let _ = writeln!(out, "            sessions: {}{more}", pids.join(", "));
        }
        if let Some(first) = f.pooler_clients.first() {
            let clients: Vec<String> = f.pooler_clients.iter().map(|c| c.to_string()).collect();
            let _ = writeln!(
                out,
                "            clients of pooler {} (no server session, not ended): {}",
                first.pooler,
                clients.join(", ")
            );
        }
        let _ = writeln!(out, "            likely cause: {}", f.cause);
    }
    out.push('\n');
}

/// `last statement: `SELECT … = ?` (25 sessions, query_id 123)`, one statement a line.
fn last_statements(out: &mut String, groups: &[StatementGroup]) {
    let label = if groups.len() == 1 {
        "last statement:"
    } else {
        "last statements:"
    };
    let under_label = " ".repeat(label.len());
    for (i, g) in groups.iter().enumerate() {
        let query_id = g
            .query_id
            .map(|id| format!(", query_id {id}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "            {} `{}` ({}{query_id})",
            if i == 0 { label } else { &under_label },
            g.fingerprint,
            count(g.sessions as usize, "session")
        );
    }
}

/// A finding's standing: a leak (confirmed), a suspected one, or one clearing.
pub fn status(f: &crate::decide::Finding) -> &'static str {
    match (f.confirmed, f.present) {
        (true, true) => "LEAK",
        (true, false) => "clearing",
        (false, _) => "suspected",
    }
}

fn terminations(out: &mut String, cycle: &Cycle) {
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

fn termination_table(out: &mut String, list: &[Termination]) {
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
            term.user.clone(),
            term.database.clone(),
        ]);
    }
    out.push_str(&t.render("  "));
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
