//! The report's capacity section: the server's connections, who holds them, what is booked.

use std::fmt::Write;

use crate::decide::{Decision, Exclusion};

pub(super) fn capacity(out: &mut String, d: &Decision) {
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

pub(super) fn exclusion(why: Exclusion) -> &'static str {
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

pub(super) fn bar(percent: u32) -> String {
    let filled = (percent.min(100) / 5) as usize;
    format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled))
}
