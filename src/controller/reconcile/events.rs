//! The reasons of the Events poolwarden raises, as the condition reasons are kept in
//! [`status::reasons`](super::status::reasons): people filter on them (`kubectl get events
//! --field-selector reason=ConnectionLeak`), so they are part of the interface and never change.

/// Warning, on a workload: a confirmed leak, with the finding, its last statements and cause.
pub const CONNECTION_LEAK: &str = "ConnectionLeak";
/// Normal, on each workload whose sessions were ended, and on the policy with all of them.
pub const SESSIONS_TERMINATED: &str = "SessionsTerminated";
/// Warning, on a workload: one of its pods was evicted to recover a pinned pool.
pub const POD_EVICTED: &str = "PodEvicted";
/// Warning, on a workload: the eviction was refused (a PodDisruptionBudget); asked again later.
pub const EVICTION_BLOCKED: &str = "EvictionBlocked";
