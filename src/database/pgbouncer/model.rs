//! What poolwarden sees of a PgBouncer: its server connections, its clients and its pools, as
//! `SHOW SERVERS`, `SHOW CLIENTS` and `SHOW POOLS` report them.
//!
//! Ages are measured by the pooler's own clock: PgBouncer prints its times in its own time zone to
//! the second, and never says what time it is, so "now" is the latest `request_time` among its
//! clients, which is poolwarden's own `SHOW CLIENTS` (see [`super::views`]). The operator's clock
//! never enters.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

/// One look at a pooler: the three views, read back to back.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleSnapshot {
    pub servers: Vec<ServerRow>,
    pub clients: Vec<ClientRow>,
    pub pools: Vec<PoolRow>,
}

/// One of the pooler's connections to a PostgreSQL server (`SHOW SERVERS`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerRow {
    /// The connection's address inside PgBouncer: what a client's `link` names.
    pub ptr: String,
    /// The client it serves right now (that client's `ptr`); `None` while the pooler holds it.
    pub link: Option<String>,
    pub user: String,
    /// PgBouncer's database name, which need not be PostgreSQL's.
    pub database: String,
    /// `active` (linked to a client), `idle` (ready for reuse), `used`, `tested`, `new`, …
    pub state: String,
    /// The pooler's end of the connection: PostgreSQL's `client_addr` and `client_port`.
    pub local_addr: Option<IpAddr>,
    pub local_port: Option<u16>,
    /// The PostgreSQL backend's pid; `None` when PgBouncer does not know it.
    pub remote_pid: Option<i32>,
    pub connected_for: Option<Duration>,
    pub since_request: Option<Duration>,
}

impl ServerRow {
    pub fn is_linked(&self) -> bool {
        self.link.is_some()
    }
}

/// One client of the pooler (`SHOW CLIENTS`): an application's connection, or a console user's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientRow {
    pub ptr: String,
    /// The server it holds right now (that server's `ptr`); `None` when it holds none.
    pub link: Option<String>,
    pub user: String,
    pub database: String,
    /// `active` (logged in; it may or may not hold a server) or `waiting` (for a server), …
    pub state: String,
    /// Where the client connects from: the pod. `None` over a Unix socket.
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub application_name: Option<String>,
    pub connected_for: Option<Duration>,
    /// Since its latest request: how long it has been quiet.
    pub since_request: Option<Duration>,
    /// How long it has been waiting for a server (`wait` + `wait_us`), when it waits.
    pub waiting_for: Option<Duration>,
}

impl ClientRow {
    /// A client of PgBouncer's own admin console (poolwarden's included), not of a database.
    pub fn is_console(&self) -> bool {
        self.database == CONSOLE_DATABASE
    }
}

/// The virtual database of PgBouncer's admin console.
pub const CONSOLE_DATABASE: &str = "pgbouncer";

/// One pool (a database and user pair) of the pooler (`SHOW POOLS`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolRow {
    pub database: String,
    pub user: String,
    /// Clients linked to a server or idle with no need of one (`cl_active`).
    pub clients_active: u32,
    /// Clients that sent a query and wait for a server (`cl_waiting`).
    pub clients_waiting: u32,
    /// Servers linked to a client (`sv_active`).
    pub servers_active: u32,
    /// Servers ready for reuse (`sv_idle`, `sv_used`, `sv_tested`).
    pub servers_idle: u32,
    pub servers_used: u32,
    pub servers_tested: u32,
    /// Servers logging in (`sv_login`).
    pub servers_login: u32,
    /// How long the oldest waiting client has waited (`maxwait` + `maxwait_us`).
    pub max_wait: Duration,
    /// `session`, `transaction` or `statement`, when the pooler says (PgBouncer 1.8+).
    pub pool_mode: Option<String>,
}
