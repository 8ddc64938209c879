//! One monitoring connection per database target, shared by every policy that names it.
//!
//! The controller never names an engine: a [`Connector`] turns a URL into one (the binary passes
//! the engine the URL's scheme names; tests pass a scripted one). Keyed by the URL itself (it
//! never leaves memory). A policy whose URL changes moves to another entry; entries no policy
//! uses any more are dropped, closing their connection: poolwarden must never be a leak itself.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::Mutex as AsyncMutex;

use crate::database::ConnectOptions;
use crate::database::{AnyEngine, DatabaseError, Engine};

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

pub type SharedEngine<E> = Arc<AsyncMutex<E>>;

pub struct Engines<C: Connector> {
    connector: C,
    inner: Mutex<State<C::Engine>>,
}

struct State<E> {
    by_url: HashMap<String, SharedEngine<E>>,
    /// policy uid → URL it uses
    users: HashMap<String, String>,
}

impl<C: Connector> Engines<C> {
    pub fn new(connector: C) -> Self {
        Self {
            connector,
            inner: Mutex::new(State {
                by_url: HashMap::new(),
                users: HashMap::new(),
            }),
        }
    }

    /// The engine for `url`, shared; the policy `uid` is recorded as its user.
    pub fn for_policy(
        &self,
        uid: &str,
        url: &str,
    ) -> Result<SharedEngine<C::Engine>, DatabaseError> {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let engine = match state.by_url.get(url) {
            Some(engine) => engine.clone(),
            None => {
                let engine = Arc::new(AsyncMutex::new(self.connector.engine_for(url)?));
                state.by_url.insert(url.to_owned(), engine.clone());
                engine
            }
        };
        state.users.insert(uid.to_owned(), url.to_owned());
        state.gc();
        Ok(engine)
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
        state.by_url.clear();
    }

    /// Targets with a monitoring connection open now. One that a cycle is using at this moment
    /// is open.
    pub fn open_targets(&self) -> usize {
        let state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state
            .by_url
            .values()
            .filter(|engine| engine.try_lock().map_or(true, |e| e.is_connected()))
            .count()
    }
}

impl<E> State<E> {
    fn gc(&mut self) {
        let used: HashSet<&String> = self.users.values().collect();
        self.by_url.retain(|url, _| used.contains(url));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::database::{SessionIdentity, Snapshot, Verdict};

    const A: &str = "postgres://m:p@db-a:5432/orders?sslmode=disable";
    const B: &str = "postgres://m:p@db-b:5432/orders?sslmode=disable";

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
