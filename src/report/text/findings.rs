//! The report's findings: each leak with its evidence, its likely cause and what its sessions last ran.

use std::fmt::Write;

use crate::api::{count, human};
use crate::decide::{Decision, StatementGroup};

pub(super) fn findings(out: &mut String, d: &Decision) {
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
            f.shown.kind.as_str(),
            f.shown.subject
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
        let _ = writeln!(out, "            {}", f.shown.evidence);
        last_statements(out, &f.shown.last_statements);
        if !f.shown.pids.is_empty() {
            let pids: Vec<String> = f.shown.pids.iter().map(i64::to_string).collect();
            let more = (f.shown.sessions as usize)
                .checked_sub(f.shown.pids.len() + f.shown.pooler_clients.len())
                .filter(|n| *n > 0)
                .map(|n| format!(" and {n} more"))
                .unwrap_or_default();
            let _ = writeln!(out, "            sessions: {}{more}", pids.join(", "));
        }
        if let Some(first) = f.shown.pooler_clients.first() {
            let clients: Vec<String> = f
                .shown
                .pooler_clients
                .iter()
                .map(|c| c.to_string())
                .collect();
            let _ = writeln!(
                out,
                "            clients of pooler {} (no server session, not ended): {}",
                first.pooler,
                clients.join(", ")
            );
        }
        let _ = writeln!(out, "            likely cause: {}", f.shown.cause);
    }
    out.push('\n');
}

/// `last statement: `SELECT … = ?` (25 sessions, query_id 123)`, one statement a line.
pub(super) fn last_statements(out: &mut String, groups: &[StatementGroup]) {
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
