//! The human report of a cycle: capacity, sessions by source, findings with their likely cause,
//! and what was (or would be) terminated.

mod capacity;
mod findings;
mod sources;
mod terminations;

pub use findings::status;
pub use terminations::{checked_out_note, recovery_lines};

use capacity::capacity;
use findings::findings;
use sources::{poolers, sources};
use terminations::terminations;

use std::fmt::Write;

use crate::api::Mode;
use crate::cycle::Cycle;

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
