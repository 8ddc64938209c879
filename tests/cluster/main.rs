//! poolwarden in a cluster, tier by tier (DESIGN.md §9), against the Kubernetes API stand-in: the
//! stand-in itself behaving as real API servers do ([`standin`]), then the real controller binary
//! reconciling policies end to end ([`controller`]), behind PgBouncer ([`pooler`]), at the
//! workloads' largest scale ([`capacity`]), electing a leader ([`leader_election`]) and serving its
//! dashboard's metrics ([`dashboard`]). One test binary for all of them: each links poolwarden,
//! kube and the sandbox once.

#[path = "../support/mod.rs"]
mod support;

mod capacity;
mod controller;
mod dashboard;
mod leader_election;
mod pooler;
mod standin;
