//! From a PostgreSQL URL to an open monitoring connection.
//!
//! The connection identifies itself as `application_name=poolwarden` (other poolwarden instances
//! never terminate it), bounds every statement with a `statement_timeout`, and keeps TCP alive so
//! a vanished server is noticed.

use std::time::Duration;

use tokio_postgres::config::SslMode as WireSslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tls::{self, PgSslMode};
use crate::database::connection::{APPLICATION_NAME, percent_decode};
use crate::database::error::caused_by_tls;
use crate::database::{ConnectOptions, DatabaseError};

/// A parsed database URL, ready to connect again and again.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
    ssl_mode: PgSslMode,
    tls: Option<MakeRustlsConnect>,
    /// `host:port/dbname`, for messages (never the password).
    display: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("target", &self.display)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

impl PgTarget {
    /// Parses `postgres://user:password@host:port/dbname?sslmode=…&sslrootcert=…`.
    pub fn parse(url: &str, options: ConnectOptions) -> Result<Self, DatabaseError> {
        Self::parse_for(url, options, true)
    }

    /// Like [`PgTarget::parse`], for a server that refuses PostgreSQL's `options` startup parameter
    /// (PgBouncer's admin console: "unsupported startup parameter"), so without the
    /// `statement_timeout` it carries: the caller bounds its own statements.
    pub(crate) fn parse_without_server_options(
        url: &str,
        options: ConnectOptions,
    ) -> Result<Self, DatabaseError> {
        Self::parse_for(url, options, false)
    }

    fn parse_for(
        url: &str,
        options: ConnectOptions,
        server_options: bool,
    ) -> Result<Self, DatabaseError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(DatabaseError::InvalidUrl(
                "expected a URL of the form postgres://user:password@host:5432/dbname".into(),
            ));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut ssl_mode = PgSslMode::Prefer;
        let mut root_cert = None;
        let mut passed_on = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => ssl_mode = PgSslMode::parse(value)?,
                "sslrootcert" => root_cert = Some(tls::root_cert_path(&percent_decode(value))),
                "sslcert" | "sslkey" => {
                    return Err(DatabaseError::InvalidUrl(format!(
                        "{key}: client certificates are not supported; use password authentication"
                    )));
                }
                // poolwarden names its own session; a URL cannot rename it.
                "application_name" => {}
                _ => passed_on.push(pair),
            }
        }
        let rebuilt = if passed_on.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passed_on.join("&"))
        };
        let mut config: Config = rebuilt
            .parse()
            .map_err(|e: tokio_postgres::Error| DatabaseError::InvalidUrl(e.to_string()))?;
        if config.get_hosts().is_empty() {
            return Err(DatabaseError::InvalidUrl("the URL names no host".into()));
        }
        let display = describe(&config);
        if server_options {
            config.options(format!(
                "-c statement_timeout={}",
                options.statement_timeout.as_millis()
            ));
        }
        config
            .application_name(APPLICATION_NAME)
            .connect_timeout(options.connect_timeout)
            .keepalives(true)
            .keepalives_idle(options.keepalive_idle)
            .ssl_mode(match ssl_mode {
                PgSslMode::Disable => WireSslMode::Disable,
                PgSslMode::Prefer => WireSslMode::Prefer,
                _ => WireSslMode::Require,
            });
        let tls = tls::client_config(ssl_mode, root_cert.as_deref())?.map(MakeRustlsConnect::new);
        Ok(Self {
            config,
            ssl_mode,
            tls,
            display,
        })
    }

    /// `host:port/dbname`.
    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn ssl_mode(&self) -> PgSslMode {
        self.ssl_mode
    }

    /// Opens the connection; its driver task runs on the tokio runtime until the client is dropped.
    ///
    /// The whole login is bounded by the connect timeout: the driver's own timeout covers only the
    /// TCP connect, and a server (or a proxy, or a half-dead host) that accepts the connection and
    /// never answers would otherwise hold the caller forever.
    pub async fn connect(&self) -> Result<Client, DatabaseError> {
        let waited = self.login_timeout();
        match tokio::time::timeout(waited, self.open()).await {
            Ok(opened) => opened.map_err(|e| classify_connect_error(e, &self.display)),
            Err(_) => Err(DatabaseError::Unreachable {
                target: self.display.clone(),
                detail: format!(
                    "the server accepted the connection but did not answer the login within {} ms",
                    waited.as_millis()
                ),
            }),
        }
    }

    /// How long a whole login may take: the URL's or the options' connect timeout.
    pub(crate) fn login_timeout(&self) -> Duration {
        self.config
            .get_connect_timeout()
            .copied()
            .unwrap_or(ConnectOptions::default().connect_timeout)
    }

    /// [`PgTarget::connect`] with the driver's own error, for a caller that sorts failures its own
    /// way (PgBouncer's console answers with other codes than PostgreSQL).
    pub(crate) async fn open(&self) -> Result<Client, tokio_postgres::Error> {
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                spawn_driver(connection);
                Ok(client)
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                spawn_driver(connection);
                Ok(client)
            }
        }
    }

    /// The database the URL names (its user's name when it names none, as libpq does).
    pub(crate) fn dbname(&self) -> Option<&str> {
        self.config.get_dbname().or(self.config.get_user())
    }
}

fn spawn_driver<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "monitoring connection ended");
        }
    });
}

fn describe(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// Sorts a failed connection attempt into what a person must do about it.
fn classify_connect_error(e: tokio_postgres::Error, target: &str) -> DatabaseError {
    let detail = error_detail(&e);
    match e.code() {
        Some(c)
            if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            DatabaseError::AuthFailed {
                target: target.to_owned(),
                detail,
            }
        }
        Some(c) if *c == SqlState::TOO_MANY_CONNECTIONS => DatabaseError::ServerFull {
            advice: crate::database::server_full_advice(None, &detail),
            detail,
        },
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => DatabaseError::Unreachable {
            target: target.to_owned(),
            detail,
        },
        _ if refused_tls(&e) => DatabaseError::TlsNotOffered {
            target: target.to_owned(),
        },
        _ if caused_by_tls(&e) => DatabaseError::Tls(detail),
        _ => DatabaseError::Unreachable {
            target: target.to_owned(),
            detail,
        },
    }
}

/// Whether the server answered the client's request for TLS with "no": `tokio_postgres` raises
/// that failure itself, as an error kind it does not expose, with these words (the one place
/// poolwarden reads a driver's message to classify an error).
pub fn refused_tls(e: &tokio_postgres::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(inner) = cause {
        if inner.to_string() == "server does not support TLS" {
            return true;
        }
        cause = inner.source();
    }
    false
}

/// Sorts a failed statement.
pub fn classify_query_error(e: tokio_postgres::Error) -> DatabaseError {
    let detail = error_detail(&e);
    if e.is_closed() {
        return DatabaseError::ConnectionLost(detail);
    }
    match e.code() {
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            DatabaseError::PermissionDenied(detail)
        }
        Some(_) => DatabaseError::Query(detail),
        None => DatabaseError::ConnectionLost(detail),
    }
}

/// The server's message and detail when there is one, else the driver's (with its cause).
pub fn error_detail(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_owned(),
        };
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<PgTarget, DatabaseError> {
        PgTarget::parse(url, ConnectOptions::default())
    }

    #[test]
    fn accepts_every_libpq_sslmode_poolwarden_supports() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let t = parse(&format!(
                "postgres://u:p@db.example:5433/orders?sslmode={mode}"
            ))
            .unwrap();
            assert_eq!(t.display(), "db.example:5433/orders");
        }
        assert_eq!(
            parse("postgres://u@h/d").unwrap().ssl_mode(),
            PgSslMode::Prefer
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour_with_a_reason() {
        let err = parse("postgres://u@h/d?sslmode=allow")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslmode=allow"), "{err}");
        let err = parse("mysql://u@h/d").unwrap_err().to_string();
        assert!(err.contains("postgres://"), "{err}");
        let err = parse("postgres://u@h/d?sslcert=/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("client certificates"), "{err}");
        let err = parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=/nonexistent.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent.pem"), "{err}");
    }

    #[test]
    fn never_shows_the_password() {
        let t = parse("postgres://app:s3cret@h:5432/d").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(!t.display().contains("s3cret"));
    }

    #[test]
    fn decodes_percent_escapes_in_paths() {
        assert_eq!(percent_decode("%2Fetc%2Fca.pem"), "/etc/ca.pem");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("50%"), "50%");
    }
}
