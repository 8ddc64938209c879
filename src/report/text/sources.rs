//! The report's sessions by source (workload, or client address), and the poolers in front.

use std::fmt::Write;

use crate::api::human;
use crate::decide::{Decision, Source};
use crate::report::table::Table;

pub(super) fn sources(out: &mut String, d: &Decision) {
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
pub(super) fn poolers(out: &mut String, d: &Decision) {
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
