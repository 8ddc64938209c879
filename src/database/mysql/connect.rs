//! From a `mysql://` (or `mariadb://`) URL to an open monitoring connection.
//!
//! The connection announces itself with the connection attribute `program_name=poolwarden`
//! (visible to other poolwardens through `performance_schema`), bounds every statement with the
//! server's statement timeout (`max_statement_time` on MariaDB, `max_execution_time` on MySQL),
//! keeps TCP alive, and always speaks TCP: `mysql_async` would otherwise move a loopback
//! connection onto the server's Unix socket.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use super::tls::{self, MySqlSslMode, TlsSettings};
use crate::database::ConnectOptions;
use crate::database::connection::percent_decode;
use crate::database::error::caused_by_tls;
use crate::database::{DatabaseError, Flavour};

/// poolwarden's own `program_name`; sessions carrying it are never terminated.
pub const PROGRAM_NAME: &str = crate::database::connection::APPLICATION_NAME;

/// Where the thread list is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Processlist {
    /// `performance_schema.threads` on MySQL when it is on and readable (no global mutex), else
    /// `information_schema.PROCESSLIST` (MariaDB, whose copy has millisecond `TIME_MS`).
    Auto,
    InformationSchema,
    PerformanceSchema,
}

/// A parsed URL, ready to connect again and again.
#[derive(Clone)]
pub struct MySqlTarget {
    opts: Opts,
    tls: TlsSettings,
    processlist: Processlist,
    options: ConnectOptions,
    display: String,
}

impl std::fmt::Debug for MySqlTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlTarget")
            .field("target", &self.display)
            .field("ssl_mode", &self.tls.mode)
            .finish()
    }
}

/// Whether `url` names a MySQL-family server.
pub fn is_mysql_url(url: &str) -> bool {
    url.starts_with("mysql://") || url.starts_with("mariadb://")
}

impl MySqlTarget {
    /// Parses `mysql://user:password@host:3306/dbname?ssl-mode=VERIFY_CA&ssl-ca=/path/ca.pem`.
    pub fn parse(url: &str, options: ConnectOptions) -> Result<Self, DatabaseError> {
        let Some(rest) = url
            .strip_prefix("mysql://")
            .or_else(|| url.strip_prefix("mariadb://"))
        else {
            return Err(DatabaseError::InvalidUrl(
                "expected a URL of the form mysql://user:password@host:3306/dbname".into(),
            ));
        };
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut ssl_mode = MySqlSslMode::Preferred;
        let mut ca = None;
        let mut processlist = Processlist::Auto;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "ssl-mode" | "ssl_mode" | "sslMode" => ssl_mode = MySqlSslMode::parse(value)?,
                "ssl-ca" | "ssl_ca" => ca = Some(percent_decode(value)),
                "processlist" => {
                    processlist = match value {
                        "auto" => Processlist::Auto,
                        "information_schema" => Processlist::InformationSchema,
                        "performance_schema" => Processlist::PerformanceSchema,
                        other => {
                            return Err(DatabaseError::InvalidUrl(format!(
                                "processlist={other}: use auto, information_schema or \
                                 performance_schema"
                            )));
                        }
                    }
                }
                "ssl-cert" | "ssl-key" => {
                    return Err(DatabaseError::InvalidUrl(format!(
                        "{key}: client certificates are not supported; use password authentication"
                    )));
                }
                other => {
                    return Err(DatabaseError::InvalidUrl(format!(
                        "unknown URL parameter {other:?}: poolwarden understands ssl-mode, ssl-ca \
                         and processlist"
                    )));
                }
            }
        }
        let opts = Opts::from_url(&format!("mysql://{base}"))
            .map_err(|e| DatabaseError::InvalidUrl(e.to_string()))?;
        if opts.ip_or_hostname().is_empty() {
            return Err(DatabaseError::InvalidUrl("the URL names no host".into()));
        }
        let display = format!(
            "{}:{}/{}",
            opts.ip_or_hostname(),
            opts.tcp_port(),
            opts.db_name().unwrap_or("")
        );
        let tls = TlsSettings::new(ssl_mode, ca.as_deref().map(std::path::Path::new))?;
        Ok(Self {
            opts,
            tls,
            processlist,
            options,
            display,
        })
    }

    /// `host:port/dbname`.
    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn ssl_mode(&self) -> MySqlSslMode {
        self.tls.mode
    }

    pub fn processlist(&self) -> Processlist {
        self.processlist
    }

    fn builder(&self) -> OptsBuilder {
        OptsBuilder::from_opts(self.opts.clone())
            .prefer_socket(false)
            .tcp_keepalive(Some(self.options.keepalive_idle))
            .tcp_nodelay(true)
            // Statements are sent as text: nothing to prepare, nothing to cache.
            .stmt_cache_size(0)
            .connect_attribute("program_name", PROGRAM_NAME)
    }

    /// Opens the connection and bounds its statements; returns it with the server's flavour.
    pub async fn connect(&self) -> Result<(Conn, Flavour), DatabaseError> {
        let mut conn = match self.tls.ssl_opts(&self.peer()).await? {
            None => self.open(self.builder()).await?,
            Some(ssl) => {
                let secure = self.open(self.builder().ssl_opts(ssl)).await;
                match secure {
                    // PREFERRED: plain text when the server offers no TLS at all.
                    Err(DatabaseError::TlsNotOffered { .. })
                        if self.tls.mode == MySqlSslMode::Preferred =>
                    {
                        self.open(self.builder()).await?
                    }
                    other => other?,
                }
            }
        };
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(classify_query_error)?;
        let flavour = if version.unwrap_or_default().contains("MariaDB") {
            Flavour::MariaDb
        } else {
            Flavour::MySql
        };
        let timeout = self.options.statement_timeout;
        let bound = match flavour {
            Flavour::MariaDb => format!(
                "SET SESSION max_statement_time = {:.3}",
                timeout.as_secs_f64()
            ),
            // MySQL bounds SELECTs only; they are all poolwarden runs besides KILL.
            _ => format!("SET SESSION max_execution_time = {}", timeout.as_millis()),
        };
        conn.query_drop(bound).await.map_err(classify_query_error)?;
        Ok((conn, flavour))
    }

    async fn open(&self, builder: OptsBuilder) -> Result<Conn, DatabaseError> {
        let timeout = self.options.connect_timeout;
        match tokio::time::timeout(timeout, Conn::new(builder)).await {
            Ok(result) => result.map_err(|e| classify_connect_error(e, &self.display)),
            Err(_) => Err(DatabaseError::Unreachable {
                target: self.display.clone(),
                detail: self.silence(timeout).await,
            }),
        }
    }

    /// Why a login got no answer: a MySQL server greets first, so a port that accepts the
    /// connection and stays silent (PostgreSQL's, for one) is not a MySQL server's, or it hangs.
    async fn silence(&self, waited: Duration) -> String {
        let probe = tokio::net::TcpStream::connect((self.host(), self.port()));
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(_)) => format!(
                "it accepted the connection but sent no MySQL greeting within {}: the server \
                 there is not MySQL or MariaDB (a MySQL server speaks first), or it hangs",
                human_secs(waited)
            ),
            _ => format!("no answer within {}", human_secs(waited)),
        }
    }

    /// Where the server is, for the TLS probe.
    fn peer(&self) -> tls::Peer {
        tls::Peer {
            host: self.host().to_owned(),
            port: self.port(),
            timeout: self.connect_timeout(),
        }
    }

    /// The host as the URL names it, for TLS.
    pub(super) fn host(&self) -> &str {
        self.opts.ip_or_hostname()
    }

    pub(super) fn port(&self) -> u16 {
        self.opts.tcp_port()
    }

    pub(super) fn connect_timeout(&self) -> Duration {
        self.options.connect_timeout
    }
}

/// How long the connection that tells a silent server from an unreachable one may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn human_secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

/// MySQL's error codes that poolwarden tells apart.
pub(super) mod code {
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    pub const DB_ACCESS_DENIED: u16 = 1044;
    pub const ACCESS_DENIED: u16 = 1045;
    pub const BAD_DB: u16 = 1049;
    pub const NO_SUCH_THREAD: u16 = 1094;
    pub const KILL_DENIED: u16 = 1095;
    pub const TABLE_ACCESS_DENIED: u16 = 1142;
    pub const TOO_MANY_USER_CONNECTIONS: u16 = 1203;
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    pub const HOST_NOT_PRIVILEGED: u16 = 1130;
}

/// Sorts a failed connection attempt into what a person must do about it.
fn classify_connect_error(e: mysql_async::Error, target: &str) -> DatabaseError {
    use mysql_async::{DriverError, Error, IoError};
    let detail = error_detail(&e);
    match &e {
        Error::Server(s) => match s.code {
            code::ACCESS_DENIED | code::DB_ACCESS_DENIED | code::HOST_NOT_PRIVILEGED => {
                DatabaseError::AuthFailed {
                    target: target.to_owned(),
                    detail,
                }
            }
            code::TOO_MANY_CONNECTIONS => DatabaseError::ServerFull {
                detail,
                advice: "MySQL and MariaDB admit one connection beyond max_connections for a user \
                         with CONNECTION ADMIN (MySQL 8: CONNECTION_ADMIN) or SUPER: grant it to \
                         the monitoring user, and keep poolwarden connected before an incident \
                         (it keeps its connection and retries); MariaDB also offers extra_port",
            },
            code::TOO_MANY_USER_CONNECTIONS => DatabaseError::ServerFull {
                detail,
                advice: "the monitoring user is at its connection limit (max_user_connections): \
                         give it one of its own (ALTER USER ... WITH MAX_USER_CONNECTIONS 5)",
            },
            code::BAD_DB => DatabaseError::Unreachable {
                target: target.to_owned(),
                detail,
            },
            _ => DatabaseError::Unreachable {
                target: target.to_owned(),
                detail,
            },
        },
        Error::Io(IoError::Tls(_)) => DatabaseError::Tls(detail),
        Error::Driver(DriverError::NoClientSslFlagFromServer) => DatabaseError::TlsNotOffered {
            target: target.to_owned(),
        },
        Error::Url(_) => DatabaseError::InvalidUrl(detail),
        _ if caused_by_tls(&e) => DatabaseError::Tls(detail),
        _ if not_mysql(&e) => DatabaseError::Unreachable {
            target: target.to_owned(),
            // The driver's words ("Packet is larger than max_allowed_packet") would send a
            // person to the server's settings; what they mean is that this is no MySQL server.
            detail: "the server there did not answer as MySQL or MariaDB does (its first bytes \
                     are no MySQL greeting): is the URL's port that of a MySQL server?"
                .into(),
        },
        _ => DatabaseError::Unreachable {
            target: target.to_owned(),
            detail,
        },
    }
}

/// Whether a failed login got an answer that is no MySQL protocol: a first packet whose length
/// makes no sense (`Packet is larger than max_allowed_packet` from an SSH or SMTP banner), packets
/// out of order, or a greeting that does not parse.
fn not_mysql(e: &mysql_async::Error) -> bool {
    use mysql_async::{DriverError, Error, IoError};
    use mysql_common::proto::codec::error::PacketCodecError;
    match e {
        Error::Driver(
            DriverError::PacketOutOfOrder
            | DriverError::UnexpectedPacket { .. }
            | DriverError::PacketTooLarge,
        ) => true,
        // Only the codec's own complaint: TLS failures are I/O errors of kind InvalidData too.
        Error::Io(IoError::Io(io)) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<PacketCodecError>())
            .is_some_and(|codec| !matches!(codec, PacketCodecError::Io(_))),
        _ => false,
    }
}

/// Sorts a failed statement.
pub fn classify_query_error(e: mysql_async::Error) -> DatabaseError {
    use mysql_async::{DriverError, Error};
    let detail = error_detail(&e);
    match &e {
        Error::Server(s) => match s.code {
            code::SPECIFIC_ACCESS_DENIED | code::KILL_DENIED | code::TABLE_ACCESS_DENIED => {
                DatabaseError::PermissionDenied(detail)
            }
            _ => DatabaseError::Query(detail),
        },
        Error::Io(_) | Error::Driver(DriverError::ConnectionClosed) => {
            DatabaseError::ConnectionLost(detail)
        }
        _ => DatabaseError::Query(detail),
    }
}

/// The server's message with its code, else the driver's message with its causes.
fn error_detail(e: &mysql_async::Error) -> String {
    if let mysql_async::Error::Server(s) = e {
        return format!("{} (MySQL error {})", s.message, s.code);
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    // The driver's wrappers repeat their kind ("Input/output error: Input/output error: …").
    let mut parts: Vec<&str> = text.split(": ").collect();
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<MySqlTarget, DatabaseError> {
        MySqlTarget::parse(url, ConnectOptions::default())
    }

    #[test]
    fn accepts_both_schemes_and_every_ssl_mode() {
        for mode in ["DISABLED", "PREFERRED", "REQUIRED", "disabled", "required"] {
            let t = parse(&format!("mysql://u:p@db.example:3307/shop?ssl-mode={mode}")).unwrap();
            assert_eq!(t.display(), "db.example:3307/shop");
        }
        let t = parse("mariadb://u@db/shop").unwrap();
        assert_eq!(t.display(), "db:3306/shop");
        assert_eq!(t.ssl_mode(), MySqlSslMode::Preferred);
        assert_eq!(t.processlist(), Processlist::Auto);
        let t = parse("mysql://u@db/shop?processlist=performance_schema").unwrap();
        assert_eq!(t.processlist(), Processlist::PerformanceSchema);
    }

    #[test]
    fn refuses_what_it_cannot_honour_with_a_reason() {
        let err = |url: &str| parse(url).unwrap_err().to_string();
        assert!(err("postgres://u@h/d").contains("mysql://"));
        assert!(err("mysql://u@h/d?ssl-mode=ALLOW").contains("ssl-mode=ALLOW"));
        assert!(err("mysql://u@h/d?ssl-mode=VERIFY_CA").contains("ssl-ca"));
        assert!(err("mysql://u@h/d?ssl-cert=/x").contains("client certificates"));
        assert!(err("mysql://u@h/d?compress=true").contains("\"compress\""));
        assert!(err("mysql://u@h/d?processlist=x").contains("processlist=x"));
        assert!(
            err("mysql://u@h/d?ssl-mode=VERIFY_CA&ssl-ca=/nonexistent.pem")
                .contains("/nonexistent.pem")
        );
    }

    #[test]
    fn never_shows_the_password() {
        let t = parse("mysql://app:s3cret@h:3306/d").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(!t.display().contains("s3cret"));
    }
}
