//! Database failures, sorted into the few kinds a person (or a condition) needs to tell apart.

/// Why talking to the database failed.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("cannot reach the database at {target}: {detail}")]
    Unreachable { target: String, detail: String },
    #[error("authentication failed for {target}: {detail}")]
    AuthFailed { target: String, detail: String },
    #[error(
        "the server is full and refused a new connection ({detail}); a monitoring role that may use \
         reserved slots (PostgreSQL 16: pg_use_reserved_connections) avoids this"
    )]
    ServerFull { detail: String },
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("the connection to the database was lost: {0}")]
    ConnectionLost(String),
    #[error("query failed: {0}")]
    Query(String),
}

impl DatabaseError {
    /// A short, bounded name: a condition reason, an Event reason, a metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "InvalidUrl",
            Self::Tls(_) => "TlsError",
            Self::Unreachable { .. } => "Unreachable",
            Self::AuthFailed { .. } => "AuthFailed",
            Self::ServerFull { .. } => "ServerFull",
            Self::PermissionDenied(_) => "PermissionDenied",
            Self::ConnectionLost(_) => "ConnectionLost",
            Self::Query(_) => "QueryFailed",
        }
    }

    /// Whether retrying without a change of configuration can help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::ServerFull { .. }
                | Self::ConnectionLost(_)
                | Self::Query(_)
        )
    }
}
