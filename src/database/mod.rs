//! The database seam: observe a snapshot, terminate a verified list.
//!
//! Everything above this module speaks [`Snapshot`] and [`SessionIdentity`]; only the engines
//! know SQL: [`postgres`] (`pg_stat_activity`, `pg_terminate_backend`) and [`mysql`] (MySQL and
//! MariaDB: the processlist and `KILL CONNECTION`). Each implements [`Engine`] and is a variant of
//! [`AnyEngine`], chosen by the URL's scheme, so the deciding, reporting and controller code never
//! names one.

mod any;
mod error;
mod model;
pub mod mysql;
pub mod postgres;

pub use any::AnyEngine;
pub use error::{DatabaseError, server_full_advice};
pub use model::{
    CLIENT_BACKEND, ChurnSample, Flavour, MonitorRole, Protection, ServerFacts, Session,
    SessionIdentity, SessionState, Snapshot, elapsed,
};

/// A database server poolwarden can watch and act on.
pub trait Engine {
    /// Takes one consistent look at the server.
    fn observe(&mut self) -> impl Future<Output = Result<Snapshot, DatabaseError>> + Send;

    /// Terminates the sessions that still match their identity exactly, without waiting for them to
    /// exit, and returns the pids actually signalled. A session that changed since the snapshot is
    /// silently left alone: it is not an error, it is the race the check exists for.
    fn terminate(
        &mut self,
        sessions: &[SessionIdentity],
    ) -> impl Future<Output = Result<Vec<i64>, DatabaseError>> + Send;
}
