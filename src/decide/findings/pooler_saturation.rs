//! `PoolerSaturation`: a PgBouncer pool whose clients wait for a server connection (`SHOW POOLS`:
//! `cl_waiting`, `maxwait`). A pool makes clients wait only when it cannot hand out or open a
//! server connection: `default_pool_size` (or the server's limit) is reached and every server is
//! held by a client. The finding is about the pooler (its subject is [`Source::Pooler`]) and names
//! the clients that hold the pool's servers, the usual culprits being transactions left open
//! behind it (`IdleInTransaction`, `LongTransaction` on those same clients).
//!
//! A wait shorter than [`MIN_WAIT`] is a pool doing its job under a burst, not a finding.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{FindingKind, Sighting};
use crate::api::{count, human};
use crate::database::pgbouncer::{ConsoleSnapshot, PoolRow};
use crate::decide::attribution::Source;

/// The longest wait a healthy pool may make a client bear.
pub const MIN_WAIT: Duration = Duration::from_secs(1);

/// How many holders are named.
const TOP: usize = 3;

/// One sighting per pool of `pooler` that makes clients wait.
pub fn pooler_saturation(pooler: &str, console: &ConsoleSnapshot) -> Vec<Sighting> {
    console
        .pools
        .iter()
        .filter(|p| p.clients_waiting > 0 && p.max_wait >= MIN_WAIT)
        .map(|pool| sighting(pooler, pool, console))
        .collect()
}

fn sighting(pooler: &str, pool: &PoolRow, console: &ConsoleSnapshot) -> Sighting {
    // Who holds the pool's servers: its linked clients, by address.
    let mut holders: BTreeMap<String, u32> = BTreeMap::new();
    for client in console
        .clients
        .iter()
        .filter(|c| c.link.is_some() && c.database == pool.database && c.user == pool.user)
    {
        let who = client
            .addr
            .map_or_else(|| "a local socket".to_owned(), |a| a.to_string());
        *holders.entry(who).or_default() += 1;
    }
    let mut holders: Vec<(String, u32)> = holders.into_iter().collect();
    holders.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let held_by = if holders.is_empty() {
        String::new()
    } else {
        let top: Vec<String> = holders
            .iter()
            .take(TOP)
            .map(|(who, n)| format!("{who} {n}"))
            .collect();
        format!("; servers held by {}", top.join(", "))
    };
    let summary = format!(
        "pool {}/{}: {} waiting for a server connection",
        pool.database,
        pool.user,
        count(pool.clients_waiting as usize, "client"),
    );
    let source = Source::Pooler {
        pooler: pooler.to_owned(),
    };
    let mut sighting = Sighting::about(&source, FindingKind::PoolerSaturation);
    sighting.shown.evidence = format!(
        "{summary} (longest {}); {} active, {} idle{held_by}",
        human(pool.max_wait),
        count(pool.servers_active as usize, "server"),
        pool.servers_idle + pool.servers_used + pool.servers_tested,
    );
    sighting.shown.summary = summary;
    sighting.shown.sessions = pool.clients_waiting;
    sighting.held_for = pool.max_wait;
    sighting
}
