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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::database::Session;
use crate::database::pgbouncer::{ClientRow, ConsoleSnapshot, ServerRow};

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

/// How surely a server connection was matched to a backend: a matching address and port beats
/// a pid alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Strength {
    Pid,
    Endpoint,
}

/// The backends of the server, indexed for the two ways of matching.
struct Backends<'s> {
    by_endpoint: HashMap<(IpAddr, u16), &'s Session>,
    by_pid: HashMap<i64, &'s Session>,
}

/// What a server connection's local address and port say.
enum ByEndpoint<'s> {
    Match(&'s Session),
    /// A backend has that address and port but another pid: the same local port towards
    /// another server the pooler fronts.
    Conflict,
    /// No backend has it, or the pooler does not show it.
    Nothing,
}

impl<'s> Backends<'s> {
    fn new(sessions: &'s [Session]) -> Self {
        let mut by_endpoint = HashMap::new();
        let mut by_pid = HashMap::new();
        for session in sessions.iter().filter(|s| s.is_client_backend()) {
            if let (Some(addr), Some(port)) = (session.client_addr, session.client_port) {
                by_endpoint.insert((addr, port), session);
            }
            by_pid.insert(session.pid, session);
        }
        Self {
            by_endpoint,
            by_pid,
        }
    }

    fn by_endpoint(&self, server: &ServerRow) -> ByEndpoint<'s> {
        let endpoint = server.local_addr.zip(server.local_port);
        match endpoint.and_then(|e| self.by_endpoint.get(&e)) {
            Some(session)
                if server
                    .remote_pid
                    .is_none_or(|pid| i64::from(pid) == session.pid) =>
            {
                ByEndpoint::Match(session)
            }
            Some(_) => ByEndpoint::Conflict,
            None => ByEndpoint::Nothing,
        }
    }

    /// The backend with the server connection's pid, when its user is the connection's.
    fn by_pid(&self, server: &ServerRow) -> Option<&'s Session> {
        let session = self.by_pid.get(&i64::from(server.remote_pid?))?;
        let same_user = session
            .user
            .as_deref()
            .is_none_or(|user| user == server.user);
        same_user.then_some(*session)
    }

    /// The backends this pooler's server connections are. When some of its connections match by
    /// address and port, the server sees the pooler's addresses as they are, and a connection
    /// that matches none is another server's: its pid would only find a stranger. Only where no
    /// address matches (NAT on the way) or none is shown (a Unix socket) does the pid decide.
    fn matches(&self, servers: &[ServerRow]) -> Vec<Option<(&'s Session, Strength)>> {
        let by_endpoint: Vec<ByEndpoint<'s>> =
            servers.iter().map(|s| self.by_endpoint(s)).collect();
        let addresses_seen = by_endpoint
            .iter()
            .any(|m| matches!(m, ByEndpoint::Match(_)));
        servers
            .iter()
            .zip(by_endpoint)
            .map(|(server, endpoint)| match endpoint {
                ByEndpoint::Match(session) => Some((session, Strength::Endpoint)),
                ByEndpoint::Conflict => None,
                ByEndpoint::Nothing => {
                    let shows_endpoint = server.local_addr.is_some() && server.local_port.is_some();
                    if addresses_seen && shows_endpoint {
                        None
                    } else {
                        self.by_pid(server).map(|s| (s, Strength::Pid))
                    }
                }
            })
            .collect()
    }
}

/// Joins the backends of one server with what the poolers in front of it show.
pub fn join(sessions: &[Session], poolers: &[Pooler<'_>]) -> PoolerJoin {
    // Without a pooler in front there is nothing to match: skip indexing every backend.
    if poolers.is_empty() {
        return PoolerJoin::default();
    }
    let backends = Backends::new(sessions);
    // The surest claim on each backend, with the pooler that made it; two poolers claiming one
    // backend equally surely leave it unsettled.
    let mut claims: HashMap<i64, (Strength, Behind, usize, PoolKey)> = HashMap::new();
    let mut contested: HashSet<i64> = HashSet::new();
    let mut tallies: Vec<PoolerTally> = Vec::with_capacity(poolers.len());
    for (index, pooler) in poolers.iter().enumerate() {
        let mut tally = PoolerTally {
            pooler: pooler.name.to_owned(),
            ..PoolerTally::default()
        };
        let links = Links::new(&pooler.console.clients);
        let servers = &pooler.console.servers;
        for (server, matched) in servers.iter().zip(backends.matches(servers)) {
            let Some((session, strength)) = matched else {
                tally.elsewhere += 1;
                continue;
            };
            let behind = what_is_behind(server, &links, pooler.name);
            match claims.get(&session.pid) {
                Some((earlier, ..)) if *earlier > strength => continue,
                Some((earlier, ..)) if *earlier == strength => {
                    contested.insert(session.pid);
                }
                _ => {}
            }
            let pool = PoolKey {
                pooler: pooler.name.to_owned(),
                database: server.database.clone(),
                user: server.user.clone(),
            };
            claims.insert(session.pid, (strength, behind, index, pool));
        }
        tallies.push(tally);
    }

    let mut by_pid = HashMap::with_capacity(claims.len());
    let mut pool_of = HashMap::with_capacity(claims.len());
    for (pid, (_, mut behind, index, pool)) in claims {
        if contested.contains(&pid) {
            behind = Behind::Unsettled {
                pooler: poolers[index].name.to_owned(),
            };
        }
        let tally = &mut tallies[index];
        match &behind {
            Behind::Client(_) => tally.linked += 1,
            Behind::HeldByPooler { .. } => tally.held_by_pooler += 1,
            Behind::Unsettled { .. } => tally.unsettled += 1,
        }
        by_pid.insert(pid, behind);
        pool_of.insert(pid, pool);
    }
    PoolerJoin {
        by_pid,
        pool_of,
        tallies,
    }
}

/// A pooler's clients by their `ptr`, and by the server they name as their `link`.
struct Links<'c> {
    by_ptr: HashMap<&'c str, &'c ClientRow>,
    by_link: HashMap<&'c str, &'c ClientRow>,
}

impl<'c> Links<'c> {
    fn new(clients: &'c [ClientRow]) -> Self {
        Self {
            by_ptr: clients.iter().map(|c| (c.ptr.as_str(), c)).collect(),
            by_link: clients
                .iter()
                .filter_map(|c| Some((c.link.as_deref()?, c)))
                .collect(),
        }
    }
}

/// Whom the server connection serves: a client only when each names the other.
fn what_is_behind(server: &ServerRow, links: &Links<'_>, pooler: &str) -> Behind {
    let pooler = pooler.to_owned();
    let Some(link) = server.link.as_deref() else {
        // A client that names this server although the server names nobody got it in between.
        return if links.by_link.contains_key(server.ptr.as_str()) {
            Behind::Unsettled { pooler }
        } else {
            Behind::HeldByPooler { pooler }
        };
    };
    match links.by_ptr.get(link) {
        Some(client) if client.link.as_deref() == Some(server.ptr.as_str()) => {
            Behind::Client(PooledClient::of(&pooler, client))
        }
        _ => Behind::Unsettled { pooler },
    }
}

/// The clients of the given pools that hold no server connection right now: an application's
/// pool connections that PostgreSQL cannot see (between transactions in transaction pooling, or
/// waiting for a server). A client that holds one is left out: its server session is counted
/// already, attributed to the same client, and must not be counted twice. Admin-console clients
/// (poolwarden's own) are not any pool's.
pub fn unlinked_clients<'l>(
    looks: &'l [PoolerLook],
    pools: &BTreeSet<PoolKey>,
) -> Vec<(&'l str, PooledClient, &'l ClientRow)> {
    let mut clients = Vec::new();
    for look in looks {
        let Ok(console) = &look.console else { continue };
        for client in &console.clients {
            let pool = PoolKey {
                pooler: look.name.clone(),
                database: client.database.clone(),
                user: client.user.clone(),
            };
            if client.link.is_none() && !client.is_console() && pools.contains(&pool) {
                clients.push((
                    look.name.as_str(),
                    PooledClient::of(&look.name, client),
                    client,
                ));
            }
        }
    }
    clients
}

/// One pooler as a cycle saw it: its console's views, or why they could not be read.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolerLook {
    /// How people know it: its console's `host:port`, or a name from the policy.
    pub name: String,
    /// The views, or why they could not be read.
    pub console: Result<ConsoleSnapshot, ConsoleUnread>,
}

/// Why a pooler's console could not be read: the failure's kind and what a person reads.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsoleUnread {
    /// A short, bounded name: a condition reason, a metric label (`Unreachable`, `AuthFailed`…).
    pub reason: &'static str,
    /// What failed and what to do.
    pub message: String,
}

/// What a decision says about one pooler: its server connections to this server by what is
/// behind them, and its clients.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolerReport {
    #[serde(flatten)]
    pub tally: PoolerTally,
    /// Why its console could not be read this cycle; its sessions were then attributed to its
    /// address, as if it were any client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its clients (not counting admin-console users such as poolwarden).
    pub clients: u32,
    /// Clients waiting for a server connection, in all its pools.
    pub clients_waiting: u32,
    /// The longest any of them has waited.
    #[serde(rename = "maxWaitSeconds", serialize_with = "crate::api::seconds")]
    pub max_wait: std::time::Duration,
}

/// The join over the poolers that could be read, and a report for every pooler.
pub fn join_looks(sessions: &[Session], looks: &[PoolerLook]) -> (PoolerJoin, Vec<PoolerReport>) {
    let readable: Vec<Pooler<'_>> = looks
        .iter()
        .filter_map(|look| {
            Some(Pooler {
                name: &look.name,
                console: look.console.as_ref().ok()?,
            })
        })
        .collect();
    let joined = join(sessions, &readable);
    let mut tallies = joined.tallies.iter();
    let reports = looks
        .iter()
        .map(|look| match &look.console {
            Ok(console) => PoolerReport {
                tally: tallies.next().cloned().unwrap_or_default(),
                error: None,
                clients: console.clients.iter().filter(|c| !c.is_console()).count() as u32,
                clients_waiting: console.pools.iter().map(|p| p.clients_waiting).sum(),
                max_wait: console
                    .pools
                    .iter()
                    .map(|p| p.max_wait)
                    .max()
                    .unwrap_or_default(),
            },
            Err(e) => PoolerReport {
                tally: PoolerTally {
                    pooler: look.name.clone(),
                    ..PoolerTally::default()
                },
                error: Some(e.message.clone()),
                ..PoolerReport::default()
            },
        })
        .collect();
    (joined, reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::{CLIENT_BACKEND, SessionState};

    const POOLER_IP: &str = "10.244.0.5";

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// A backend of user `app` whose client is the pooler at `POOLER_IP:port`.
    fn backend(pid: i64, port: u16) -> Session {
        Session {
            pid,
            backend_type: CLIENT_BACKEND.to_owned(),
            database: Some("shop".to_owned()),
            user: Some("app".to_owned()),
            user_is_superuser: false,
            application_name: String::new(),
            client_addr: Some(ip(POOLER_IP)),
            client_port: Some(port),
            backend_start: jiff::Timestamp::UNIX_EPOCH,
            xact_start: None,
            state: SessionState::Idle,
            state_change: None,
            backend_xmin: None,
            xmin_age: None,
            blocked_by: Vec::new(),
            last_statement: None,
        }
    }

    /// A server connection from `POOLER_IP:port` to backend `pid`, linked to client `link`.
    fn server(ptr: &str, port: u16, pid: i32, link: Option<&str>) -> ServerRow {
        ServerRow {
            ptr: ptr.to_owned(),
            link: link.map(str::to_owned),
            user: "app".to_owned(),
            database: "shop_tx".to_owned(),
            state: if link.is_some() { "active" } else { "idle" }.to_owned(),
            local_addr: Some(ip(POOLER_IP)),
            local_port: Some(port),
            remote_pid: Some(pid),
            connected_for: None,
            since_request: None,
        }
    }

    /// A client from `addr` linked to server `link`.
    fn client(ptr: &str, addr: &str, link: Option<&str>) -> ClientRow {
        ClientRow {
            ptr: ptr.to_owned(),
            link: link.map(str::to_owned),
            user: "app".to_owned(),
            database: "shop_tx".to_owned(),
            state: "active".to_owned(),
            addr: addr.parse().ok(),
            port: Some(38000),
            application_name: None,
            connected_for: None,
            since_request: None,
            waiting_for: None,
        }
    }

    fn console(servers: Vec<ServerRow>, clients: Vec<ClientRow>) -> ConsoleSnapshot {
        ConsoleSnapshot {
            servers,
            clients,
            pools: Vec::new(),
        }
    }

    fn one(sessions: &[Session], console: &ConsoleSnapshot) -> PoolerJoin {
        join(
            sessions,
            &[Pooler {
                name: "pgbouncer:6432",
                console,
            }],
        )
    }

    fn client_addr(join: &PoolerJoin, pid: i64) -> Option<IpAddr> {
        match join.behind(pid) {
            Some(Behind::Client(client)) => client.addr,
            other => panic!("backend {pid} is not linked to a client: {other:?}"),
        }
    }

    #[test]
    fn a_linked_server_session_belongs_to_the_client_address() {
        let sessions = [backend(101, 41000)];
        let console = console(
            vec![server("0xs1", 41000, 101, Some("0xc1"))],
            vec![client("0xc1", "10.244.1.17", Some("0xs1"))],
        );
        let join = one(&sessions, &console);
        assert_eq!(client_addr(&join, 101), Some(ip("10.244.1.17")));
        assert_eq!(join.tallies[0].linked, 1);
    }

    #[test]
    fn an_unlinked_server_session_is_held_by_the_pooler_and_counted() {
        let sessions = [backend(101, 41000), backend(102, 41001)];
        let console = console(
            vec![
                server("0xs1", 41000, 101, None),
                server("0xs2", 41001, 102, None),
            ],
            vec![client("0xc1", "10.244.1.17", None)],
        );
        let join = one(&sessions, &console);
        for pid in [101, 102] {
            assert_eq!(
                join.behind(pid),
                Some(&Behind::HeldByPooler {
                    pooler: "pgbouncer:6432".into()
                })
            );
        }
        assert_eq!(join.tallies[0].held_by_pooler, 2);
        assert_eq!(join.tallies[0].linked, 0);
    }

    #[test]
    fn behind_nat_the_pid_and_the_user_decide() {
        // PostgreSQL sees the node's address, not the pooler's.
        let mut natted = backend(101, 5000);
        natted.client_addr = Some(ip("192.168.0.9"));
        let mut other_user = backend(102, 5001);
        other_user.client_addr = Some(ip("192.168.0.9"));
        other_user.user = Some("batch".into());
        let sessions = [natted, other_user];
        let console = console(
            vec![
                server("0xs1", 41000, 101, Some("0xc1")),
                server("0xs2", 41001, 102, Some("0xc2")),
            ],
            vec![
                client("0xc1", "10.244.1.17", Some("0xs1")),
                client("0xc2", "10.244.1.18", Some("0xs2")),
            ],
        );
        let join = one(&sessions, &console);
        assert_eq!(client_addr(&join, 101), Some(ip("10.244.1.17")));
        // Pid 102 of user batch here is not the pooler's pid 102 of user app (another server's).
        assert_eq!(join.behind(102), None);
        assert_eq!(join.tallies[0].elsewhere, 1);
    }

    #[test]
    fn a_pooler_on_a_unix_socket_is_matched_by_pid() {
        let mut local = backend(101, 0);
        local.client_addr = None;
        local.client_port = None;
        let console = console(
            vec![unix_server("0xs1", 101, Some("0xc1"))],
            vec![client("0xc1", "10.244.1.17", Some("0xs1"))],
        );
        let join = one(&[local], &console);
        assert_eq!(client_addr(&join, 101), Some(ip("10.244.1.17")));
    }

    #[test]
    fn the_same_local_port_towards_another_server_is_not_this_backend() {
        // The pooler fronts two servers; its connection to the other one reuses local port
        // 41000, and PgBouncer knows it as pid 9999.
        let sessions = [backend(101, 41000)];
        let console = console(
            vec![server("0xs9", 41000, 9999, Some("0xc1"))],
            vec![client("0xc1", "10.244.1.17", Some("0xs9"))],
        );
        let join = one(&sessions, &console);
        assert_eq!(join.behind(101), None);
        assert_eq!(join.tallies[0].elsewhere, 1);
    }

    #[test]
    fn where_addresses_match_a_pid_alone_finds_only_strangers() {
        // The pooler's connections show up here with their addresses, so its connection to
        // another server (pid 102 there) is not the direct session that has pid 102 here.
        let direct = Session {
            client_addr: Some(ip("10.244.1.50")),
            ..backend(102, 50000)
        };
        let sessions = [backend(101, 41000), direct];
        let console = console(
            vec![
                server("0xs1", 41000, 101, None),
                server("0xs2", 43000, 102, Some("0xc2")),
            ],
            vec![client("0xc2", "10.244.1.18", Some("0xs2"))],
        );
        let join = one(&sessions, &console);
        assert!(matches!(
            join.behind(101),
            Some(Behind::HeldByPooler { .. })
        ));
        assert_eq!(join.behind(102), None);
        assert_eq!(join.tallies[0].elsewhere, 1);
    }

    #[test]
    fn links_that_do_not_name_each_other_are_unsettled_never_blamed() {
        let sessions = [backend(101, 41000), backend(102, 41001)];
        let console = console(
            vec![
                // Its client left between the two looks, and a newcomer got the same ptr.
                server("0xs1", 41000, 101, Some("0xc1")),
                // Unlinked in SHOW SERVERS, taken by a client by the time of SHOW CLIENTS.
                server("0xs2", 41001, 102, None),
            ],
            vec![
                client("0xc1", "10.244.1.99", None),
                client("0xc2", "10.244.1.18", Some("0xs2")),
            ],
        );
        let join = one(&sessions, &console);
        for pid in [101, 102] {
            assert!(
                matches!(join.behind(pid), Some(Behind::Unsettled { .. })),
                "{pid}: {:?}",
                join.behind(pid)
            );
        }
        assert_eq!(join.tallies[0].unsettled, 2);
    }

    /// A server connection over a Unix socket: known by its pid only.
    fn unix_server(ptr: &str, pid: i32, link: Option<&str>) -> ServerRow {
        ServerRow {
            local_addr: None,
            local_port: None,
            ..server(ptr, 0, pid, link)
        }
    }

    #[test]
    fn each_pooler_counts_its_own_and_a_backend_claimed_twice_is_unsettled() {
        let mut natted = backend(103, 6000);
        natted.client_addr = Some(ip("192.168.0.9"));
        let sessions = [backend(101, 41000), backend(102, 41001), natted];
        let first = console(
            vec![
                server("0xs1", 41000, 101, Some("0xc1")),
                server("0xs2", 41001, 102, None),
            ],
            vec![client("0xc1", "10.244.1.17", Some("0xs1"))],
        );
        let second = console(
            vec![
                unix_server("0xt3", 103, Some("0xd3")),
                // Weaker than the first pooler's match by address and port: ignored.
                unix_server("0xt1", 101, None),
            ],
            vec![client("0xd3", "10.244.1.19", Some("0xt3"))],
        );
        let third = console(vec![unix_server("0xu3", 103, None)], vec![]);
        let join = join(
            &sessions,
            &[
                Pooler {
                    name: "first",
                    console: &first,
                },
                Pooler {
                    name: "second",
                    console: &second,
                },
                Pooler {
                    name: "third",
                    console: &third,
                },
            ],
        );
        assert_eq!(client_addr(&join, 101), Some(ip("10.244.1.17")));
        assert!(matches!(
            join.behind(102),
            Some(Behind::HeldByPooler { pooler }) if pooler == "first"
        ));
        // Two poolers claim 103 by pid alone: neither wins.
        assert!(matches!(join.behind(103), Some(Behind::Unsettled { .. })));
        let counts: Vec<(u32, u32, u32)> = join
            .tallies
            .iter()
            .map(|t| (t.linked, t.held_by_pooler, t.unsettled))
            .collect();
        assert_eq!(counts[0], (1, 1, 0));
        assert_eq!(counts[1].2 + counts[2].2, 1);
        assert_eq!(counts[1].0 + counts[1].1 + counts[2].0 + counts[2].1, 0);
    }

    #[test]
    fn backends_from_anywhere_else_are_left_out() {
        let direct = Session {
            client_addr: Some(ip("10.244.1.50")),
            ..backend(200, 50000)
        };
        let mut background = backend(201, 41000);
        background.backend_type = "autovacuum worker".into();
        let console = console(vec![server("0xs1", 41000, 201, None)], vec![]);
        let join = one(&[direct, background], &console);
        assert!(join.by_pid.is_empty());
        assert_eq!(join.tallies[0].elsewhere, 1);
    }
}
