//! What every reconcile shares: the API client, the cluster index, the database connections, the
//! memory of earlier cycles, metrics, the event recorder and whether this replica leads.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;
use tokio::sync::watch;

use super::engines::Engines;
use super::index::ClusterIndex;
use super::metrics::Metrics;
use crate::decide::Memory;

pub struct Context {
    pub client: Client,
    pub index: Arc<RwLock<ClusterIndex>>,
    pub engines: Engines,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// `true` while this replica holds the lease.
    pub leader: watch::Receiver<bool>,
    memories: Mutex<HashMap<String, Memory>>,
    failures: Mutex<HashMap<String, u32>>,
    jitter: std::hash::RandomState,
}

/// The longest wait between retries of a failing database.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl Context {
    pub fn new(
        client: Client,
        index: Arc<RwLock<ClusterIndex>>,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        leader: watch::Receiver<bool>,
    ) -> Self {
        Self {
            client,
            index,
            engines: Engines::default(),
            metrics,
            recorder,
            leader,
            memories: Mutex::default(),
            failures: Mutex::default(),
            jitter: std::hash::RandomState::new(),
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    pub fn memory(&self, uid: &str) -> Memory {
        self.memories
            .lock()
            .map(|m| m.get(uid).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn remember(&self, uid: &str, memory: Memory) {
        if let Ok(mut m) = self.memories.lock() {
            m.insert(uid.to_owned(), memory);
        }
        if let Ok(mut f) = self.failures.lock() {
            f.remove(uid);
        }
    }

    /// Forgets a deleted policy.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.memories.lock() {
            m.remove(uid);
        }
        if let Ok(mut f) = self.failures.lock() {
            f.remove(uid);
        }
        self.engines.release(uid);
    }

    /// The wait before retrying a policy whose database failed: doubling from its interval up to
    /// [`MAX_BACKOFF`], with ±20% jitter so that policies on one server do not retry in lockstep.
    pub fn backoff(&self, uid: &str, interval: Duration) -> Duration {
        let failures = self
            .failures
            .lock()
            .map(|mut f| {
                let n = f.entry(uid.to_owned()).or_default();
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        let base = interval
            .saturating_mul(2u32.saturating_pow(failures.min(16) - 1))
            .min(MAX_BACKOFF);
        let spread = (self.jitter.hash_one((uid, failures)) % 401) as f64 / 1000.0; // 0.0..=0.4
        base.mul_f64(0.8 + spread)
    }
}
