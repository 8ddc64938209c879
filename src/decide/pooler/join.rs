//! The join itself: which backend is which pooler's server connection, and who is linked to it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use super::{Behind, PoolKey, PooledClient, Pooler, PoolerJoin, PoolerLook, PoolerTally};
use crate::database::Session;
use crate::database::pgbouncer::{ClientRow, ServerRow};

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
