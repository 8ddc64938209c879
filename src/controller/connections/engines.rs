//! One monitoring connection per database server, shared by every policy on that server.
//!
//! The controller never names an engine: a [`Connector`] turns a URL into one (the binary passes
//! the engine the URL's scheme names; tests pass a scripted one). Keyed by the server the URL
//! names ([`server_key`]: the URL without its database, which `pg_stat_activity` does not
//! depend on), so that a platform's policies, each on its own database, hold one connection per
//! server and share its looks ([`looks`](super::looks)). A policy whose URL changes moves to
//! another entry; entries no policy uses any more are dropped, closing their connection:
//! poolwarden must never be a leak itself.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::looks::{LookCounters, Server};
use crate::database::{AnyEngine, ConnectOptions, DatabaseError, Engine, server_key};

/// Makes the engine a database URL names, without connecting yet.
pub trait Connector: Send + Sync + 'static {
    type Engine: Engine + Send + 'static;

    fn engine_for(&self, url: &str) -> Result<Self::Engine, DatabaseError>;
}

impl<E, F> Connector for F
where
    E: Engine + Send + 'static,
    F: Fn(&str) -> Result<E, DatabaseError> + Send + Sync + 'static,
{
    type Engine = E;

    fn engine_for(&self, url: &str) -> Result<E, DatabaseError> {
        self(url)
    }
}

/// The connector of the binary: the engine a database URL's scheme names (PostgreSQL, MySQL,
/// MariaDB), with the default connect options, not yet connected.
pub fn any_engine(url: &str) -> Result<AnyEngine, DatabaseError> {
    AnyEngine::for_url(url, ConnectOptions::default())
}

pub type SharedServer<E> = Arc<Server<E>>;

pub struct Engines<C: Connector> {
    connector: C,
    inner: Mutex<State<C::Engine>>,
    /// Every server's looks, counted together.
    looks: LookCounters,
}

struct State<E> {
    by_server: HashMap<String, SharedServer<E>>,
    /// policy uid → the URL it uses, and the server that URL names (its key)
    users: HashMap<String, User>,
}

struct User {
    url: String,
    server: String,
}

impl<C: Connector> Engines<C> {
    pub fn new(connector: C) -> Self {
        Self {
            connector,
            inner: Mutex::new(State {
                by_server: HashMap::new(),
                users: HashMap::new(),
            }),
            looks: LookCounters::default(),
        }
    }

    /// Counts every server's looks in `looks` (`poolwarden_server_looks_total`).
    pub fn counting_looks(self, looks: LookCounters) -> Self {
        Self { looks, ..self }
    }

    /// The server `url` names, shared; the policy `uid` is recorded as its user.
    pub fn for_policy(
        &self,
        uid: &str,
        url: &str,
    ) -> Result<SharedServer<C::Engine>, DatabaseError> {
        {
            let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(user) = state.users.get(uid).filter(|user| user.url == url)
                && let Some(server) = state.by_server.get(&user.server)
            {
                return Ok(server.clone());
            }
        }
        // Each policy's URL is parsed, shared server or not: a bad URL is its own error, never
        // a neighbour's. Once: a TLS configuration is not made again every cycle.
        let engine = self.connector.engine_for(url)?;
        let key = server_key(url);
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let server = state
            .by_server
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Server::new(url, engine).counting_looks(self.looks.clone()))
            })
            .clone();
        state.users.insert(
            uid.to_owned(),
            User {
                url: url.to_owned(),
                server: key,
            },
        );
        state.gc();
        Ok(server)
    }

    /// The connector, to open a server's connection with another policy's URL.
    pub fn connector(&self) -> &C {
        &self.connector
    }

    /// The policy is gone: its connection closes unless another policy uses it.
    pub fn release(&self, uid: &str) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.users.remove(uid);
        state.gc();
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&self) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.users.clear();
        state.by_server.clear();
    }

    /// Servers with a monitoring connection open now. One that a cycle is using at this moment
    /// is open.
    pub fn open_targets(&self) -> usize {
        let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state
            .by_server
            .values()
            .filter(|server| server.is_connected())
            .count()
    }
}

impl<E> State<E> {
    fn gc(&mut self) {
        let used: HashSet<&String> = self.users.values().map(|user| &user.server).collect();
        self.by_server.retain(|key, _| used.contains(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::{SessionIdentity, Snapshot, Verdict};

    const A: &str = "postgres://m:p@db-a:5432/orders?sslmode=disable";
    const B: &str = "postgres://m:p@db-b:5432/orders?sslmode=disable";
    /// Another database of A's server.
    const A_BILLING: &str = "postgres://m:p@db-a:5432/billing?sslmode=disable";

    /// An engine that is never asked anything: these tests are about sharing.
    struct Idle;

    impl Engine for Idle {
        async fn observe(&mut self) -> Result<Snapshot, DatabaseError> {
            Err(DatabaseError::Query("not asked".into()))
        }
        async fn terminate(
            &mut self,
            _: &[SessionIdentity],
        ) -> Result<Vec<Verdict>, DatabaseError> {
            Ok(Vec::new())
        }
    }

    fn engines() -> Engines<impl Connector> {
        Engines::new(|url: &str| {
            if url.starts_with("postgres://") {
                Ok(Idle)
            } else {
                Err(DatabaseError::InvalidUrl(format!("unknown scheme: {url}")))
            }
        })
    }

    #[test]
    fn policies_on_the_same_target_share_one_connection() {
        let engines = engines();
        let one = engines.for_policy("uid-1", A).unwrap();
        let two = engines.for_policy("uid-2", A).unwrap();
        assert!(Arc::ptr_eq(&one, &two));
        assert_eq!(engines.open_targets(), 1);
    }

    #[test]
    fn policies_on_other_databases_of_one_server_share_its_connection() {
        let engines = engines();
        let orders = engines.for_policy("uid-1", A).unwrap();
        let billing = engines.for_policy("uid-2", A_BILLING).unwrap();
        assert!(Arc::ptr_eq(&orders, &billing));
        let elsewhere = engines.for_policy("uid-3", B).unwrap();
        assert!(!Arc::ptr_eq(&orders, &elsewhere));
        assert_eq!(engines.open_targets(), 2);
        // The server stays while one of its policies does.
        engines.release("uid-1");
        assert!(Arc::ptr_eq(
            &billing,
            &engines.for_policy("uid-2", A_BILLING).unwrap()
        ));
        assert_eq!(engines.open_targets(), 2);
    }

    #[test]
    fn a_target_nobody_uses_is_closed() {
        let engines = engines();
        engines.for_policy("uid-1", A).unwrap();
        engines.for_policy("uid-2", A).unwrap();
        // uid-1 moves to another server (its Secret changed).
        engines.for_policy("uid-1", B).unwrap();
        assert_eq!(engines.open_targets(), 2);
        engines.release("uid-2");
        assert_eq!(engines.open_targets(), 1);
        engines.release("uid-1");
        assert_eq!(engines.open_targets(), 0);
    }

    #[test]
    fn a_bad_url_is_an_error_not_an_entry() {
        let engines = engines();
        assert!(engines.for_policy("uid-1", "mysql://x").is_err());
        assert_eq!(engines.open_targets(), 0);
    }
}
