//! The kinds of finding, their names, and what usually causes each and what to do.

use serde::Serialize;

/// The kinds of leak (and of risk) poolwarden recognises.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub enum FindingKind {
    IdleAccumulation,
    IdleInTransaction,
    PoolSaturation,
    ConnectionChurn,
    Orphaned,
    Overbooked,
    LongTransaction,
    ServerSaturation,
    /// A PgBouncer pool whose clients wait for a server connection.
    PoolerSaturation,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdleAccumulation => "IdleAccumulation",
            Self::IdleInTransaction => "IdleInTransaction",
            Self::PoolSaturation => "PoolSaturation",
            Self::ConnectionChurn => "ConnectionChurn",
            Self::Orphaned => "Orphaned",
            Self::Overbooked => "Overbooked",
            Self::LongTransaction => "LongTransaction",
            Self::ServerSaturation => "ServerSaturation",
            Self::PoolerSaturation => "PoolerSaturation",
        }
    }

    /// What usually causes it, pointing at the patterns poolwarden was born from. A detector may
    /// say something more precise for what it saw (see [`Sighting::cause`]).
    pub fn likely_cause(self) -> &'static str {
        match self {
            Self::IdleAccumulation => {
                "sessions stranded idle while the same pod keeps working: typically a pool \
                 inherited across fork() by long-lived worker processes; create the engine after \
                 the fork, or call engine.dispose() in the child"
            }
            Self::IdleInTransaction => {
                "a transaction left open: a session handed to a background task after the request \
                 closed it, a missing commit/rollback, or a service holding one session forever"
            }
            Self::PoolSaturation => {
                "the pool is pinned at pool_size + max_overflow: sessions are checked out and never \
                 returned (often a request-scoped session reused by a background task)"
            }
            Self::ConnectionChurn => {
                "sessions are opened and closed at a high rate: NullPool or an engine per request; \
                 keep one pool per process"
            }
            Self::Orphaned => {
                "sessions left behind by a pod that no longer exists: killed mid-transaction, or its \
                 node was lost"
            }
            Self::Overbooked => {
                "the pools' maximum (max replicas x per-pod pool) exceeds the server's usable \
                 connections: 'too many clients already' is waiting to happen; shrink the pools or \
                 put a pooler in front"
            }
            Self::LongTransaction => {
                "a service holding one transaction open and touching it now and then (a session \
                 created once and kept forever, e.g. in a singleton's constructor): vacuum cannot \
                 clean past its snapshot and its locks stay held; open a session per unit of work"
            }
            Self::ServerSaturation => {
                "the server is at its connection limit: new connections fail with 'too many \
                 clients already'; look at the top holders below"
            }
            Self::PoolerSaturation => {
                "the pooler's server pool is full and clients wait for a connection: clients \
                 holding transactions open behind it (see IdleInTransaction and LongTransaction on \
                 the holders named), or a default_pool_size too small for the load"
            }
        }
    }
}

/// What the owners of connections seen only at a pooler must know.
pub const POOLER_CLIENTS_NOTE: &str = "the connections listed as clients of a pooler hold no \
     server session now (they wait between transactions behind it): poolwarden cannot end them, \
     since ending a client's connection at PgBouncer needs its admin_users, which poolwarden never \
     asks for; restart (or fix) the workload to release them";

/// What a pinned pool's owners must know once poolwarden ends its sessions.
pub const CHECKED_OUT_NOTE: &str = "ending these sessions frees the server, not the application: \
     its pool still counts them as checked out, so restart (or fix) the workload to recover";
