//! Database failures, sorted into the few kinds a person (or a condition) needs to tell apart.

/// What avoids being locked out of a full PostgreSQL server, for its version (`server_version_num`)
/// when known, else for the version its refusal reveals.
///
/// PostgreSQL 16 added `reserved_connections` and the role `pg_use_reserved_connections`; before
/// that only superusers may use the reserved slots, so the cure is to be connected already, and
/// to leave room below `max_connections` with per-role connection limits.
pub fn server_full_advice(version_num: Option<u32>, refusal: &str) -> &'static str {
    const SIXTEEN: &str = "grant the monitoring role pg_use_reserved_connections (and set \
         reserved_connections) so that it may use the reserved slots; poolwarden keeps retrying";
    const FIFTEEN: &str = "before PostgreSQL 16 only superusers may use the reserved slots: keep \
         poolwarden connected before an incident (it keeps its connection and retries), and leave \
         headroom with ALTER ROLE <application role> CONNECTION LIMIT n";
    const UNKNOWN: &str = "on PostgreSQL 16+, grant the monitoring role \
         pg_use_reserved_connections; before 16, keep poolwarden connected before an incident and \
         leave headroom with ALTER ROLE <application role> CONNECTION LIMIT n";
    match version_num {
        Some(v) if v >= 160_000 => SIXTEEN,
        Some(_) => FIFTEEN,
        // PostgreSQL 16 names the new role (or the SUPERUSER attribute) in its refusal; 15 and
        // older speak of "non-replication superuser connections".
        None if refusal.contains("pg_use_reserved_connections")
            || refusal.contains("SUPERUSER attribute") =>
        {
            SIXTEEN
        }
        None if refusal.contains("non-replication superuser") => FIFTEEN,
        None => UNKNOWN,
    }
}

/// Why talking to the database failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The server answered without TLS where the URL asked for it (`sslmode=require` and up,
    /// MySQL's `ssl-mode=REQUIRED` and up). MySQL's `PREFERRED` falls back to plain text on it.
    #[error("TLS setup failed: the server at {target} does not offer TLS")]
    TlsNotOffered { target: String },
    #[error("cannot reach the database at {target}: {detail}")]
    Unreachable { target: String, detail: String },
    #[error("authentication failed for {target}: {detail}")]
    AuthFailed { target: String, detail: String },
    /// The server refused a new connection for want of a free slot. `advice` says what avoids it
    /// on this server (it depends on the engine and its version, see [`server_full_advice`]).
    #[error("the server is full and refused a new connection ({detail}); {advice}")]
    ServerFull {
        detail: String,
        advice: &'static str,
    },
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
            Self::Tls(_) | Self::TlsNotOffered { .. } => "TlsError",
            Self::Unreachable { .. } => "Unreachable",
            Self::AuthFailed { .. } => "AuthFailed",
            Self::ServerFull { .. } => "ServerFull",
            Self::PermissionDenied(_) => "PermissionDenied",
            Self::ConnectionLost(_) => "ConnectionLost",
            Self::Query(_) => "QueryFailed",
        }
    }

    /// Whether retrying without a change of configuration can help: `run` keeps trying, the
    /// controller backs off; otherwise `run` stops and the controller waits for a change (of the
    /// policy or its Secret, with a slow re-check). The one place that says which.
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

/// Whether TLS is what failed: a `rustls` error anywhere in `error`'s chain of causes (looking
/// inside the I/O errors that wrap one, whose `source` skips it). The drivers keep TLS errors as
/// causes; this is the one place that finds them, for every engine and the PgBouncer console.
pub fn caused_by_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(inner) = cause {
        let wrapped = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if inner.is::<rustls::Error>() || wrapped.is_some_and(|w| w.is::<rustls::Error>()) {
            return true;
        }
        cause = inner.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_failure_is_found_among_the_causes_even_inside_an_io_error() {
        let rustls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        assert!(caused_by_tls(&io));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!caused_by_tls(&plain));
        // Text that speaks of TLS is not a TLS failure.
        let words = std::io::Error::other("the TLS certificate of the other server");
        assert!(!caused_by_tls(&words));
    }

    #[test]
    fn what_needs_a_change_stops_run_and_waits_in_the_controller() {
        let tls = DatabaseError::Tls("unknown issuer".into());
        let auth = DatabaseError::AuthFailed {
            target: "db".into(),
            detail: "password".into(),
        };
        let down = DatabaseError::Unreachable {
            target: "db".into(),
            detail: "refused".into(),
        };
        assert!(!tls.is_transient() && !auth.is_transient());
        assert!(down.is_transient());
    }

    #[test]
    fn the_advice_for_a_full_server_fits_its_version() {
        let fifteen = server_full_advice(Some(150_008), "sorry, too many clients already");
        assert!(fifteen.contains("CONNECTION LIMIT"), "{fifteen}");
        assert!(!fifteen.contains("grant the monitoring role"), "{fifteen}");
        let sixteen = server_full_advice(Some(160_002), "sorry, too many clients already");
        assert!(sixteen.contains("pg_use_reserved_connections"), "{sixteen}");
        // Not connected yet: the refusal's own words tell the version.
        let refused_by_15 = "remaining connection slots are reserved for non-replication \
                             superuser connections";
        assert_eq!(server_full_advice(None, refused_by_15), fifteen);
        let refused_by_16 = "remaining connection slots are reserved for roles with privileges \
                             of the \"pg_use_reserved_connections\" role";
        assert_eq!(server_full_advice(None, refused_by_16), sixteen);
        let unknown = server_full_advice(None, "sorry, too many clients already");
        assert!(
            unknown.contains("16+") && unknown.contains("CONNECTION LIMIT"),
            "{unknown}"
        );
    }
}
