//! One monitoring connection per database target, shared by every policy that names it.
//!
//! Keyed by the URL itself (it never leaves memory). A policy whose URL changes moves to another
//! entry; entries no policy uses any more are dropped, closing their connection: poolwarden must
//! never be a leak itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Mutex as AsyncMutex;

use crate::database::postgres::ConnectOptions;
use crate::database::{AnyEngine, DatabaseError};

pub type SharedEngine = Arc<AsyncMutex<AnyEngine>>;

#[derive(Default)]
pub struct Engines {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_url: HashMap<String, SharedEngine>,
    /// policy uid → URL it uses
    users: HashMap<String, String>,
}

impl Engines {
    /// The engine for `url`, shared; the policy `uid` is recorded as its user.
    pub fn for_policy(&self, uid: &str, url: &str) -> Result<SharedEngine, DatabaseError> {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(engine) = state.by_url.get(url).cloned() {
            state.users.insert(uid.to_owned(), url.to_owned());
            state.gc();
            return Ok(engine);
        }
        let engine = Arc::new(AsyncMutex::new(AnyEngine::for_url(
            url,
            ConnectOptions::default(),
        )?));
        state.by_url.insert(url.to_owned(), engine.clone());
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

    pub fn open_targets(&self) -> usize {
        self.inner.lock().map(|s| s.by_url.len()).unwrap_or(0)
    }
}

impl State {
    fn gc(&mut self) {
        let used: std::collections::HashSet<&String> = self.users.values().collect();
        self.by_url.retain(|url, _| used.contains(url));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "postgres://m:p@db-a:5432/orders?sslmode=disable";
    const B: &str = "postgres://m:p@db-b:5432/orders?sslmode=disable";

    #[test]
    fn policies_on_the_same_target_share_one_connection() {
        let engines = Engines::default();
        let one = engines.for_policy("uid-1", A).unwrap();
        let two = engines.for_policy("uid-2", A).unwrap();
        assert!(Arc::ptr_eq(&one, &two));
        assert_eq!(engines.open_targets(), 1);
    }

    #[test]
    fn a_target_nobody_uses_is_closed() {
        let engines = Engines::default();
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
        let engines = Engines::default();
        assert!(engines.for_policy("uid-1", "mysql://x").is_err());
        assert_eq!(engines.open_targets(), 0);
    }
}
