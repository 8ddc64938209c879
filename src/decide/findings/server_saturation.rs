//! `ServerSaturation`: client sessions fill `leakDetection.serverSaturationPercent` (default 90%)
//! of the connections the server accepts from applications. New connections are about to fail
//! (seed 003's `too many clients already`): the finding names the top holders and their states.

use super::{FindingKind, Sighting};
use crate::decide::capacity::Capacity;
use crate::decide::groups::Group;
use crate::decide::rules::Rules;

/// How many holders are named.
const TOP: usize = 3;

pub fn server_saturation(capacity: &Capacity, groups: &[Group], rules: &Rules) -> Option<Sighting> {
    let usable = u64::from(capacity.usable_connections);
    let used = u64::from(capacity.client_sessions);
    let percent = u64::from(rules.detect.saturation_percent);
    if used * 100 < usable * percent {
        return None;
    }
    // Groups come biggest first.
    let top: Vec<String> = groups
        .iter()
        .take(TOP)
        .map(|g| {
            let c = &g.counts;
            let states: Vec<String> = [
                (c.active, "active"),
                (c.idle, "idle"),
                (c.idle_in_transaction, "idle in transaction"),
                (c.other, "other"),
            ]
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, state)| format!("{n} {state}"))
            .collect();
            format!("{} {} ({})", g.source, c.total, states.join(", "))
        })
        .collect();
    let summary = format!(
        "{used} of the {usable} connections the server accepts from applications are in use"
    );
    let holders = if top.is_empty() {
        "none of them governed by this policy".to_owned()
    } else {
        format!("top holders: {}", top.join("; "))
    };
    let mut sighting = Sighting::about_server(FindingKind::ServerSaturation);
    sighting.shown.evidence = format!("{summary} ({}%); {holders}", capacity.utilization_percent);
    sighting.shown.summary = summary;
    sighting.shown.sessions = capacity.client_sessions;
    Some(sighting)
}
