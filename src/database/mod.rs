//! The database seam: observe a snapshot, terminate a verified list.
//!
//! Everything above this module speaks [`Snapshot`] and [`SessionIdentity`]; only the engines
//! know SQL: [`postgres`] (`pg_stat_activity`, `pg_terminate_backend`) and [`mysql`] (MySQL and
//! MariaDB: the processlist and `KILL CONNECTION`). Each implements [`Engine`] and is a variant of
//! [`AnyEngine`], chosen by the URL's scheme, so the deciding, reporting and controller code never
//! names one.
//!
//! [`pgbouncer`] reads what a pooler in front of the server knows (which client holds which
//! server connection): not an engine, a second witness for attribution.

mod any;
pub mod churn;
pub mod connection;
mod error;
pub mod fingerprint;
mod model;
pub mod mysql;
pub mod pg_client;
pub mod pgbouncer;
pub mod postgres;
mod server;
mod verdict;

pub use any::AnyEngine;
pub use churn::{AfterLook, ChurnLooks, churning};
pub use connection::ConnectOptions;
pub use error::{DatabaseError, server_full_advice};
pub use fingerprint::Statement;
pub use model::{
    CLIENT_BACKEND, ChurnSample, Flavour, LastStatements, MonitorRole, Protection, ServerFacts,
    Session, SessionIdentity, SessionState, Snapshot, elapsed,
};
pub use server::server_key;
pub use verdict::Verdict;

/// A database server poolwarden can watch and act on.
pub trait Engine {
    /// Takes one consistent look at the server.
    fn observe(&mut self) -> impl Future<Output = Result<Snapshot, DatabaseError>> + Send;

    /// Terminates the sessions that still match their identity exactly, without waiting for them to
    /// exit, and returns one [`Verdict`] per session, in the order given.
    ///
    /// Each session is verified immediately before its own signal against what that one backend
    /// is doing at that moment, not only against a read shared by all the sessions of the call:
    /// such a read leaves every later session the whole call's time to start a statement and be
    /// ended in the middle of it. (PostgreSQL: the identity against the call's own read of the
    /// backends, then the backend's live wait event, in the same row as its signal.) The
    /// verification also repeats the safety rules that do not depend on the policy: client
    /// backends only, in an idle state, never the engine's own session nor another poolwarden's.
    /// A session that changed is not an error, it is the race the check exists for
    /// ([`Verdict::Changed`]); nor is a refusal for one session ([`Verdict::Refused`]).
    ///
    /// `Err` means the request as a whole failed (no connection, the connection lost part-way,
    /// a statement failed for a reason that is not the session's): which of the sessions were
    /// signalled is then unknown, and the next snapshot tells.
    fn terminate(
        &mut self,
        sessions: &[SessionIdentity],
    ) -> impl Future<Output = Result<Vec<Verdict>, DatabaseError>> + Send;

    /// Whether a monitoring connection is open right now (not merely configured): what the
    /// controller's `poolwarden_monitoring_connections` counts. An engine that cannot tell
    /// says yes.
    fn is_connected(&self) -> bool {
        true
    }

    /// Whether the next observations read what each session last ran (on by default). Off, the
    /// engine does not even ask the server for the statements' text. Set before each
    /// observation by the cycle, from its policy: policies sharing an engine may differ.
    fn read_statements(&mut self, _read: bool) {}
}
