//! Which sessions a policy may ever touch. The safety rules of DESIGN.md §4 start here: only
//! client backends in scope are candidates; never poolwarden's own session or another
//! poolwarden's (nor, where application names are invisible, any session of the monitoring user),
//! never background processes, never excluded users or applications.

use serde::Serialize;

use crate::api::Scope;
use crate::database::connection::APPLICATION_NAME;
use crate::database::{Session, Snapshot};

/// Why a session is outside the policy's reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Exclusion {
    /// Replication, autovacuum, background workers: not application sessions.
    NotAClientBackend,
    /// poolwarden's own monitoring connection.
    OwnSession,
    /// Another poolwarden instance's monitoring connection.
    PoolwardenSession,
    OtherDatabase,
    OtherUser,
    ExcludedUser,
    ExcludedApplication,
}

/// A policy's scope, with its globs compiled.
#[derive(Clone, Debug)]
pub struct CompiledScope {
    databases: Vec<String>,
    users: Vec<String>,
    exclude_users: Vec<String>,
    exclude_applications: Vec<glob::Pattern>,
}

impl CompiledScope {
    pub fn new(scope: &Scope) -> Result<Self, String> {
        let exclude_applications = scope
            .exclude_applications
            .iter()
            .map(|g| {
                glob::Pattern::new(g).map_err(|e| {
                    format!("spec.scope.excludeApplications: {g:?} is not a valid glob: {e}")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            databases: scope.databases.clone(),
            users: scope.users.clone(),
            exclude_users: scope.exclude_users.clone(),
            exclude_applications,
        })
    }

    /// `Ok(())` when the policy governs `session`.
    pub fn governs(&self, session: &Session, snapshot: &Snapshot) -> Result<(), Exclusion> {
        if !session.is_client_backend() {
            return Err(Exclusion::NotAClientBackend);
        }
        if session.pid == snapshot.own_pid {
            return Err(Exclusion::OwnSession);
        }
        let user = session.user.as_deref().unwrap_or_default();
        // Where names cannot be seen (MySQL without performance_schema), another poolwarden is
        // known only by its user: the monitoring user's sessions are spared whole.
        if session.application_name == APPLICATION_NAME
            || (!snapshot.application_names_known && user == snapshot.monitor.name)
        {
            return Err(Exclusion::PoolwardenSession);
        }
        self.excludes(user, &session.application_name)?;
        let database = session.database.as_deref().unwrap_or_default();
        if !self.databases.is_empty() && !self.databases.iter().any(|d| d == database) {
            return Err(Exclusion::OtherDatabase);
        }
        self.governs_user(user)
    }

    /// `Ok(())` when the policy governs a pooler's client of `user` named `application`. Which
    /// database it uses is the pooler's to say: its pool must have a server connection to a
    /// governed session (see `decide`).
    pub fn governs_client(&self, user: &str, application: &str) -> Result<(), Exclusion> {
        if application == APPLICATION_NAME {
            return Err(Exclusion::PoolwardenSession);
        }
        self.excludes(user, application)?;
        self.governs_user(user)
    }

    fn excludes(&self, user: &str, application: &str) -> Result<(), Exclusion> {
        if self.exclude_users.iter().any(|u| u == user) {
            return Err(Exclusion::ExcludedUser);
        }
        if self
            .exclude_applications
            .iter()
            .any(|p| p.matches(application))
        {
            return Err(Exclusion::ExcludedApplication);
        }
        Ok(())
    }

    fn governs_user(&self, user: &str) -> Result<(), Exclusion> {
        if !self.users.is_empty() && !self.users.iter().any(|u| u == user) {
            return Err(Exclusion::OtherUser);
        }
        Ok(())
    }
}
