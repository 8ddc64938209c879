//! Who is behind a pooler (DESIGN.md §10): the join of `pg_stat_activity` with a PgBouncer's
//! `SHOW SERVERS` and `SHOW CLIENTS`. Pure: tested without a pooler or a database.
//!
//! Behind PgBouncer every server session comes from the pooler's address. The pooler knows more:
//!
//! 1. a backend is one of its server connections when the connection's `local_addr`/`local_port`
//!    are the backend's `client_addr`/`client_port` (and its `remote_pid`, when known, is the
//!    backend's pid). Where no address of the pooler's matches (NAT on the way) or it shows none
//!    (it connects over a Unix socket), `remote_pid` = `pid` decides, with the same user on both
//!    sides. Pids are only unique within one server, so a pooler that also fronts other servers
//!    should be reachable by address: then a connection whose address matches nothing here is
//!    another server's, whatever its pid;
//! 2. the server connection's `link` is the `ptr` of the client it serves right now;
//! 3. that client's `addr` is the pod.
//!
//! A server connection nobody is linked to is **held by the pooler**: kept for reuse, belonging
//! to no pod. It is counted per pooler and never blamed on anyone; ending it for being idle
//! would only make the pooler open another. In transaction pooling a server is linked exactly
//! while a client holds a transaction: the leaks that matter (idle in transaction, a transaction
//! held open for an hour) are the linked ones, and a server stays linked to the same client for
//! as long as its transaction lasts.
//!
//! The two views are read one after the other, so a link can change in between. A server and a
//! client count as linked only when each names the other (`link` both ways): PgBouncer reuses the
//! memory of a closed client for the next one, so a `ptr` alone could name a newcomer. A pair that
//! does not agree is **unsettled** this time: not attributed, never blamed.

mod join;
mod looks;
#[cfg(test)]
mod tests;

pub use join::{join, unlinked_clients};
pub use looks::{ConsoleUnread, PoolerLook, PoolerReport, join_looks};

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::database::pgbouncer::{ClientRow, ConsoleSnapshot};

/// One pooler in front of the server, and what its console showed.
#[derive(Clone, Copy, Debug)]
pub struct Pooler<'a> {
    /// How people know it: its console's `host:port`, or a name from the policy.
    pub name: &'a str,
    pub console: &'a ConsoleSnapshot,
}

/// The pooler's client that holds a server session right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PooledClient {
    pub pooler: String,
    /// Where the client connects from: the pod's IP. `None` over a Unix socket (a sidecar).
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub user: String,
    /// PgBouncer's name of the database, which need not be PostgreSQL's.
    pub database: String,
    pub application_name: Option<String>,
}

impl PooledClient {
    fn of(pooler: &str, client: &ClientRow) -> Self {
        Self {
            pooler: pooler.to_owned(),
            addr: client.addr,
            port: client.port,
            user: client.user.clone(),
            database: client.database.clone(),
            application_name: client.application_name.clone(),
        }
    }
}

/// One pool of one pooler: PgBouncer's database and user pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolKey {
    pub pooler: String,
    pub database: String,
    pub user: String,
}

/// What the poolers say about one backend that came through one of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Behind {
    /// A client holds it now: the client's address names who opened the work on it.
    Client(PooledClient),
    /// The pooler keeps it for reuse; nobody is behind it. Never blamed on a pod.
    HeldByPooler { pooler: String },
    /// The pooler's two views disagree about its client (the link changed between them): not
    /// attributed this time.
    Unsettled { pooler: String },
}

/// A pooler's server connections to this server, by what is behind them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolerTally {
    pub pooler: String,
    pub linked: u32,
    pub held_by_pooler: u32,
    pub unsettled: u32,
    /// Its server connections that match no backend of this server: connections to another
    /// server it also fronts, or ones opened or closed between the looks.
    pub elsewhere: u32,
}

/// The join's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolerJoin {
    /// By backend pid: every backend one of the poolers says is its server connection.
    pub by_pid: HashMap<i64, Behind>,
    /// By backend pid: the pool whose server connection the backend is.
    pub pool_of: HashMap<i64, PoolKey>,
    /// One per pooler, in the order given.
    pub tallies: Vec<PoolerTally>,
}

impl PoolerJoin {
    pub fn behind(&self, pid: i64) -> Option<&Behind> {
        self.by_pid.get(&pid)
    }
}
