//! Why reading a pooler's admin console failed, sorted into what a person must do about it.
//!
//! PgBouncer answers most refusals with SQLSTATE `08P01` (protocol violation), whatever the
//! cause: a wrong password, a user that is neither in `admin_users` nor in `stats_users`, an
//! unsupported startup parameter. Its message is then the only thing that tells them apart, so
//! the few messages it has sent for years are recognised here, after the proper codes newer
//! versions send.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::views::MissingColumn;
use crate::database::DatabaseError;
use crate::database::error::caused_by_tls;
use crate::database::pg_client::{error_detail, refused_tls};

/// Why talking to a pooler's admin console failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolerError {
    #[error("invalid pooler URL: {0}")]
    InvalidUrl(String),
    #[error("TLS to the pooler failed: {0}")]
    Tls(String),
    #[error("cannot reach PgBouncer's admin console at {target}: {detail}")]
    Unreachable { target: String, detail: String },
    #[error("PgBouncer at {target} refused poolwarden's password: {detail}")]
    AuthFailed { target: String, detail: String },
    #[error(
        "PgBouncer at {target} does not let poolwarden's user into its admin console ({detail}); \
         list the user in stats_users (read-only SHOW access is all poolwarden needs)"
    )]
    NotPermitted { target: String, detail: String },
    #[error("{target} is not a PgBouncer admin console poolwarden can read: {detail}")]
    NotAConsole { target: String, detail: String },
    #[error("PgBouncer at {target} did not answer within {waited:?}")]
    Timeout { target: String, waited: Duration },
    #[error("the connection to PgBouncer at {target} was lost: {detail}")]
    ConnectionLost { target: String, detail: String },
}

impl PoolerError {
    /// A short, bounded name: a condition reason, an Event reason, a metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "InvalidUrl",
            Self::Tls(_) => "TlsError",
            Self::Unreachable { .. } => "Unreachable",
            Self::AuthFailed { .. } => "AuthFailed",
            Self::NotPermitted { .. } => "NotPermitted",
            Self::NotAConsole { .. } => "NotAConsole",
            Self::Timeout { .. } => "Timeout",
            Self::ConnectionLost { .. } => "ConnectionLost",
        }
    }

    /// Whether retrying without a change of configuration can help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::ConnectionLost { .. }
        )
    }

    /// Whether the console connection may be unusable after this, and must be reopened.
    pub(super) fn spoils_connection(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::ConnectionLost { .. })
    }

    pub(super) fn missing_column(target: &str, missing: MissingColumn) -> Self {
        Self::NotAConsole {
            target: target.to_owned(),
            detail: missing.to_string(),
        }
    }
}

/// From the URL parser, which speaks [`DatabaseError`].
pub(super) fn from_parse(error: DatabaseError) -> PoolerError {
    match error {
        DatabaseError::Tls(detail) => PoolerError::Tls(detail),
        other => PoolerError::InvalidUrl(match other {
            DatabaseError::InvalidUrl(detail) => detail,
            other => other.to_string(),
        }),
    }
}

/// Sorts a failed login.
pub(super) fn classify_connect(e: &tokio_postgres::Error, target: &str) -> PoolerError {
    let detail = error_detail(e);
    let target = target.to_owned();
    if let Some(db) = e.as_db_error() {
        let message = db.message();
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            || message.contains("authentication failed")
            || message.starts_with("no such user")
        {
            return PoolerError::AuthFailed { target, detail };
        }
        if message == "not allowed" || *code == SqlState::INSUFFICIENT_PRIVILEGE {
            return PoolerError::NotPermitted { target, detail };
        }
        // A PostgreSQL server has no database `pgbouncer`; PgBouncer has no other database for
        // a console user, or refuses what PostgreSQL would accept.
        return PoolerError::NotAConsole { target, detail };
    }
    if is_tls_failure(e) {
        return PoolerError::Tls(detail);
    }
    PoolerError::Unreachable { target, detail }
}

/// Sorts a failed `SHOW`.
pub(super) fn classify_query(e: &tokio_postgres::Error, target: &str) -> PoolerError {
    let detail = error_detail(e);
    let target = target.to_owned();
    match e.as_db_error() {
        // PostgreSQL's "unrecognized configuration parameter", or a console that does not know
        // the command.
        Some(_) => PoolerError::NotAConsole { target, detail },
        None => PoolerError::ConnectionLost { target, detail },
    }
}

/// A failure in the TLS layer: a rustls error somewhere in the causes, or the driver's own
/// refusal when the pooler does not offer TLS and the URL requires it.
fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
    caused_by_tls(e) || refused_tls(e)
}
