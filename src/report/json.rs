//! The machine-readable report of a cycle (`--output json`).

use serde::Serialize;

use crate::cycle::Cycle;
use crate::database::ServerFacts;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    target: &'a str,
    server: &'a ServerFacts,
    #[serde(flatten)]
    decision: &'a crate::decide::Decision,
    outcome: &'a crate::act::Outcome,
}

/// The cycle as pretty-printed JSON.
pub fn to_json(target: &str, cycle: &Cycle) -> String {
    let report = Report {
        target,
        server: &cycle.snapshot.server,
        decision: &cycle.decision,
        outcome: &cycle.outcome,
    };
    serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
