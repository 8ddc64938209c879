//! What every reconcile shares: the API client, the cluster index and whether its watches have
//! listed, the database connections, the pooler consoles, the Secrets' versions, the memory of earlier cycles, metrics,
//! the event recorder and whether this replica leads.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;

use crate::controller::cluster::index::ClusterIndex;
use crate::controller::cluster::readiness::Readiness;
use crate::controller::connections::engines::{Connector, Engines};
use crate::controller::connections::poolers::Poolers;
use crate::controller::connections::secret::Secrets;
use crate::controller::reconcile::schedule::Schedule;
use crate::controller::runtime::leader::Leader;
use crate::controller::runtime::metrics::Metrics;
use crate::controller::runtime::shutdown::InFlight;
use crate::decide::{Eviction, EvictionOutcome, Memory};

pub struct Context<C: Connector> {
    pub client: Client,
    /// The same cluster, without kube's own retries: for evictions (see [`crate::controller::runtime::client`]).
    pub eviction_client: Client,
    pub index: Arc<RwLock<ClusterIndex>>,
    /// Whether every watch has listed once: attribution is not trusted before.
    pub readiness: Arc<Readiness>,
    pub engines: Engines<C>,
    /// Each policy's pooler consoles, kept across cycles.
    pub poolers: Poolers,
    pub secrets: Arc<Secrets>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Whether this replica holds the lease, its renew deadline not passed.
    pub leader: Leader,
    /// The reconciles running now: a shutdown waits for them, within a bound.
    pub in_flight: InFlight,
    /// When each policy's next cycle is due.
    pub schedule: Schedule,
    memories: Mutex<HashMap<String, Memory>>,
    failures: Mutex<HashMap<String, u32>>,
    jitter: std::hash::RandomState,
}

/// The parts of a [`Context`] made elsewhere (the watches, the HTTP server, the election).
pub struct Parts<C: Connector> {
    pub client: Client,
    pub eviction_client: Client,
    pub index: Arc<RwLock<ClusterIndex>>,
    pub readiness: Arc<Readiness>,
    pub connector: C,
    pub secrets: Arc<Secrets>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub leader: Leader,
}

impl<C: Connector> Context<C> {
    pub fn new(parts: Parts<C>) -> Self {
        Self {
            client: parts.client,
            eviction_client: parts.eviction_client,
            index: parts.index,
            readiness: parts.readiness,
            engines: Engines::new(parts.connector)
                .counting_looks(parts.metrics.server_looks.clone()),
            poolers: Poolers::default(),
            secrets: parts.secrets,
            metrics: parts.metrics,
            recorder: parts.recorder,
            leader: parts.leader,
            in_flight: InFlight::default(),
            schedule: Schedule::default(),
            memories: Mutex::default(),
            failures: Mutex::default(),
            jitter: std::hash::RandomState::new(),
        }
    }

    /// Whether this replica may act now; asked right before every termination and every write.
    pub fn may_act(&self) -> bool {
        self.leader.may_act()
    }

    pub fn memory(&self, uid: &str) -> Memory {
        self.memories
            .lock()
            .map(|m| m.get(uid).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Sessions terminated for the policy since this replica started acting for it.
    pub fn terminations_total(&self, uid: &str) -> u64 {
        self.memories
            .lock()
            .map(|m| m.get(uid).map_or(0, |m| m.terminations_total))
            .unwrap_or(0)
    }

    /// Keeps a cycle's memory; the policy's database is well again, so its backoff starts over.
    pub fn remember(&self, uid: &str, memory: Memory) {
        if let Ok(mut m) = self.memories.lock() {
            m.insert(uid.to_owned(), memory);
        }
        if let Ok(mut f) = self.failures.lock() {
            f.remove(uid);
        }
    }

    /// Adds what became of a cycle's evictions to the policy's memory, at `at` (the cycle's
    /// look, by the database's clock, as every time the decision compares).
    pub fn record_evictions(
        &self,
        uid: &str,
        results: &[(Eviction, EvictionOutcome)],
        at: jiff::Timestamp,
    ) {
        if results.is_empty() {
            return;
        }
        if let Ok(mut m) = self.memories.lock()
            && let Some(memory) = m.get_mut(uid)
        {
            memory.evictions.record(results, at);
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
        self.schedule.forget(uid);
        self.engines.release(uid);
        self.poolers.release(uid);
        self.count_connections();
    }

    /// Sets `poolwarden_monitoring_connections` from the connections open now.
    pub fn count_connections(&self) {
        self.metrics
            .monitoring_connections
            .set(self.engines.open_targets() as i64);
    }

    /// One more failure in a row for the policy `uid`: how many so far.
    pub fn failed(&self, uid: &str) -> u32 {
        self.failures
            .lock()
            .map(|mut f| {
                let n = f.entry(uid.to_owned()).or_default();
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1)
    }

    /// A spread in `0.0..=0.4` that differs between policies and between their failures, so
    /// that policies on one server do not retry in lockstep.
    pub fn jitter(&self, uid: &str, failures: u32) -> f64 {
        (self.jitter.hash_one((uid, failures)) % 401) as f64 / 1000.0
    }
}

/// How long to wait for the watches to list before a reconcile acts.
pub const WAIT_FOR_WATCHES: Duration = Duration::from_secs(1);
