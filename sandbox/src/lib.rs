//! A throwaway PostgreSQL server for the demo, the integration tests and the benchmarks.
//!
//! [`Sandbox::start`] creates a brand-new cluster in a temporary directory with the machine's
//! PostgreSQL binaries, starts it on a free loopback port and hands back a [`Sandbox`]. Dropping
//! the sandbox (or calling [`Sandbox::stop`]) kills the server and deletes the directory, so a
//! test that panics leaves nothing behind.
//!
//! The point of the sandbox is to manufacture the sessions poolwarden hunts for: [`ClientSession`]s in
//! every state (`idle`, `idle in transaction`, `idle in transaction (aborted)`, `active`), each
//! with its own `application_name` and its own client address. Every address in 127.0.0.0/8 is
//! loopback on Linux, so binding a session's socket to, say, 127.0.0.12 makes
//! `pg_stat_activity.client_addr` show a distinct "pod" without any network set-up.
//! [`Sandbox::start_flipping`] runs the shape of the termination race (sessions flipping between
//! idle spells and short statements), and [`Sandbox::admin_terminations_since`] reads from the
//! server log which terminated backends were in the middle of a statement.
//!
//! The server is tuned for speed, not durability (`fsync=off` and friends): its data is thrown
//! away anyway. Password authentication is real (SCRAM), so wrong passwords fail as they would
//! in production, and with [`SandboxOptions::tls`] the server speaks TLS with a certificate
//! signed by a throwaway CA ([`Sandbox::ca_cert_path`]).
//!
//! [`MariaDb`] is the same for the MySQL family: a throwaway MariaDB and [`MySqlSession`]s from
//! chosen addresses.
//! [`Sandbox::start_pgbouncer`] puts a throwaway PgBouncer in front of the server (see
//! [`PgBouncer`]), so that sessions reach PostgreSQL through a pooler as they do in many clusters.
//!
//! Binaries are looked up in `$POOLWARDEN_PG_BIN`, then the newest `/usr/lib/postgresql/*/bin`,
//! then `pg_config --bindir`, then `PATH`. PostgreSQL refuses to run as root, so when we are root
//! the server runs as the `postgres` OS user.

mod error;
mod flipping;
mod mariadb;
mod mysql_session;
mod pgbouncer;
mod server;
mod server_log;
mod session;
mod tls;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

pub use error::SandboxError;
pub use flipping::{Flipping, FlippingCounts, FlippingSpec};
pub use mariadb::{MariaDb, MariaDbOptions, MySqlSession, MySqlSessionSpec};
pub use pgbouncer::{
    ADMIN_PASSWORD, ADMIN_USER, PgBouncer, PgBouncerOptions, PoolMode, PooledClient,
    PooledDatabase, STATS_PASSWORD, STATS_USER,
};
use server::{Binaries, Cluster, StartFailure};
pub use server_log::AdminTerminations;
pub use session::{ClientSession, SessionSpec};
use tls::TlsFiles;

/// Password of the bootstrap superuser `postgres`.
const SUPERUSER_PASSWORD: &str = "postgres";

/// How many times to pick a new port when another process grabbed ours between the probe and
/// the server's bind.
const START_ATTEMPTS: u32 = 5;

/// How the sandbox server is configured.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// `max_connections` of the server.
    pub max_connections: u32,
    /// Serve TLS (`ssl=on`) with a certificate for `127.0.0.1` and `localhost` signed by a
    /// throwaway CA. Plain connections keep working.
    pub tls: bool,
    /// Extra `postgresql.conf` settings, as (name, value). They come last, so they win.
    pub settings: Vec<(String, String)>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            max_connections: 100,
            tls: false,
            settings: Vec::new(),
        }
    }
}

/// A running throwaway PostgreSQL server. Dropping it stops the server and deletes its files.
pub struct Sandbox {
    cluster: Cluster,
    port: u16,
    tls: Option<TlsFiles>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("port", &self.port)
            .field("dir", &self.dir())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Sandbox {
    /// Creates a new cluster in a temporary directory and starts it on a free port.
    ///
    /// Takes about a second, most of it in `initdb`.
    pub async fn start(options: SandboxOptions) -> Result<Sandbox, SandboxError> {
        // initdb and pg_ctl are blocking programs; keep them off the async workers. If the caller
        // gives up waiting, the finished Sandbox is dropped on the blocking thread, which cleans up.
        tokio::task::spawn_blocking(move || Sandbox::start_blocking(&options))
            .await
            .map_err(|e| SandboxError::Unexpected(format!("sandbox start-up task failed: {e}")))?
    }

    fn start_blocking(options: &SandboxOptions) -> Result<Sandbox, SandboxError> {
        let began = Instant::now();
        let settings = server::render_settings(&options.settings)?;
        let binaries = Binaries::find()?;
        let mut cluster = Cluster::create(binaries)?;
        let tls = if options.tls {
            Some(TlsFiles::generate(&cluster.root().join("tls"))?)
        } else {
            None
        };
        cluster.initdb(SUPERUSER_PASSWORD)?;

        let mut conf = format!(
            "\n# poolwarden sandbox: throwaway data, so speed over durability\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = {}\n\
             max_connections = {}\n\
             shared_buffers = '16MB'\n\
             fsync = off\n\
             full_page_writes = off\n\
             synchronous_commit = off\n\
             # every log line names its backend; an error or FATAL logs its statement\n\
             log_line_prefix = '%m [%p] '\n\
             log_min_error_statement = error\n",
            server::quote_conf(&cluster.root().to_string_lossy()),
            options.max_connections,
        );
        if let Some(tls) = &tls {
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = {}\nssl_key_file = {}\n",
                server::quote_conf(&tls.server_cert.to_string_lossy()),
                server::quote_conf(&tls.server_key.to_string_lossy()),
            ));
        }
        conf.push_str(&settings);
        // `host` lines match TLS and plain TCP alike; the whole of 127/8 so that sessions bound
        // to 127.x.y.z sources get in, with SCRAM so that wrong passwords fail.
        let hba = "local all all trust\n\
                   host all all 127.0.0.0/8 scram-sha-256\n\
                   host all all ::1/128 scram-sha-256\n\
                   local replication all trust\n\
                   host replication all 127.0.0.0/8 scram-sha-256\n";
        cluster.configure(&conf, hba)?;

        let mut attempt = 1;
        let port = loop {
            let port = free_port()?;
            match cluster.start(port) {
                Ok(()) => break port,
                Err(StartFailure::PortTaken) if attempt < START_ATTEMPTS => {
                    tracing::debug!(port, attempt, "sandbox port was taken; trying another");
                    attempt += 1;
                }
                Err(StartFailure::PortTaken) => {
                    return Err(SandboxError::Unexpected(format!(
                        "PostgreSQL could not bind a free port in {START_ATTEMPTS} attempts"
                    )));
                }
                Err(StartFailure::Failed {
                    pg_ctl_output,
                    log_tail,
                }) => {
                    return Err(SandboxError::Start {
                        pg_ctl_output,
                        log_tail,
                    });
                }
                Err(StartFailure::Error(e)) => return Err(e),
            }
        };
        tracing::debug!(
            port,
            dir = %cluster.root().display(),
            elapsed = ?began.elapsed(),
            "sandbox PostgreSQL started"
        );
        Ok(Sandbox { cluster, port, tls })
    }

    /// The TCP port the server listens on, at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://user:password@127.0.0.1:PORT/database`, without any `sslmode`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        loopback_url(self.port, user, password, database)
    }

    /// URL of the bootstrap superuser `postgres` (password `postgres`) on database `postgres`.
    pub fn superuser_url(&self) -> String {
        self.url("postgres", SUPERUSER_PASSWORD, "postgres")
    }

    /// The PEM certificate of the CA that signed the server's certificate, when TLS is on.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.ca_cert.as_path())
    }

    /// The temporary directory holding the cluster, its log, its Unix socket and certificates.
    pub fn dir(&self) -> &Path {
        self.cluster.root()
    }

    /// The server's log file, handy when a test fails.
    pub fn log_path(&self) -> PathBuf {
        self.cluster.log_path()
    }

    /// A new superuser client, its connection task spawned on tokio.
    ///
    /// It comes through the Unix socket: no SCRAM round trips, and in `pg_stat_activity` it has
    /// a NULL `client_addr`, so it is never mistaken for a session opened with
    /// [`Sandbox::open_session`].
    pub async fn admin(&self) -> Result<Client, SandboxError> {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(self.cluster.root())
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .application_name("poolwarden-sandbox-admin")
            .connect(NoTls)
            .await
            .map_err(|e| SandboxError::postgres("connecting to the sandbox as superuser", e))?;
        session::spawn_connection(connection, "sandbox admin");
        Ok(client)
    }

    /// Opens one session whose TCP socket is bound to `spec.source`, so that
    /// `pg_stat_activity.client_addr` shows that address.
    pub async fn open_session(&self, spec: &SessionSpec) -> Result<ClientSession, SandboxError> {
        ClientSession::open(self.port, spec).await
    }

    /// Creates a login role; each of `grants` is what goes between `GRANT` and `TO`, e.g.
    /// `"pg_signal_backend"` or `"CONNECT ON DATABASE app"`.
    pub async fn create_role(
        &self,
        name: &str,
        password: &str,
        grants: &[&str],
    ) -> Result<(), SandboxError> {
        let admin = self.admin().await?;
        let role = quote_ident(name);
        let mut sql = format!(
            "CREATE ROLE {role} LOGIN PASSWORD {};",
            quote_literal(password)
        );
        for grant in grants {
            sql.push_str(&format!("GRANT {grant} TO {role};"));
        }
        admin
            .batch_execute(&sql)
            .await
            .map_err(|e| SandboxError::postgres(format!("creating role {name:?}"), e))
    }

    /// Creates a database, owned by `postgres`.
    pub async fn create_database(&self, name: &str) -> Result<(), SandboxError> {
        let admin = self.admin().await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await
            .map_err(|e| SandboxError::postgres(format!("creating database {name:?}"), e))
    }

    /// Waits until `pg_stat_activity` shows backend `pid` in `state` (e.g. `"active"` after
    /// [`ClientSession::start_active`], whose query reaches the server a moment later).
    pub async fn wait_for_state(
        &self,
        pid: i64,
        state: &str,
        timeout: Duration,
    ) -> Result<(), SandboxError> {
        let admin = self.admin().await?;
        let began = Instant::now();
        loop {
            let row = admin
                .query_opt(
                    "SELECT state FROM pg_stat_activity WHERE pid = $1::int8",
                    &[&pid],
                )
                .await
                .map_err(|e| SandboxError::postgres("reading pg_stat_activity", e))?;
            let seen: Option<String> = match &row {
                Some(row) => row
                    .try_get(0)
                    .map_err(|e| SandboxError::postgres("reading pg_stat_activity.state", e))?,
                None => None,
            };
            if seen.as_deref() == Some(state) {
                return Ok(());
            }
            if began.elapsed() >= timeout {
                let last_seen = match (row.is_some(), seen) {
                    (false, _) => "no such backend".to_string(),
                    (true, None) => "NULL".to_string(),
                    (true, Some(seen)) => format!("{seen:?}"),
                };
                return Err(SandboxError::StateTimeout {
                    pid,
                    state: state.to_string(),
                    waited: began.elapsed(),
                    last_seen,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a throwaway PgBouncer on a free loopback port in front of this server; see
    /// [`PgBouncer`]. The roles of `options.users` must exist here already.
    pub async fn start_pgbouncer(
        &self,
        options: PgBouncerOptions,
    ) -> Result<PgBouncer, SandboxError> {
        let port = self.port;
        tokio::task::spawn_blocking(move || PgBouncer::start_blocking(port, &options))
            .await
            .map_err(|e| SandboxError::Unexpected(format!("PgBouncer start-up task failed: {e}")))?
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`) and deletes its directory.
    pub fn stop(self) {
        // Drop does the work, so that a panicking test cleans up the same way.
        drop(self);
    }
}

/// A port nobody listens on right now. Another process may take it before the server binds it;
/// [`Sandbox::start`] then retries with another.
pub(crate) fn free_port() -> Result<u16, SandboxError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| SandboxError::io("looking for a free port on 127.0.0.1", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| SandboxError::io("looking for a free port on 127.0.0.1", e))?
        .port();
    Ok(port)
}

/// `postgres://user:password@127.0.0.1:PORT/database`, without any `sslmode`.
fn loopback_url(port: u16, user: &str, password: &str, database: &str) -> String {
    format!(
        "postgres://{}:{}@127.0.0.1:{port}/{}",
        percent_encode(user),
        percent_encode(password),
        percent_encode(database)
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for URL user info and path.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An SQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal, quoted (standard_conforming_strings is on).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(percent_encode("app_user-1.x~"), "app_user-1.x~");
        assert_eq!(percent_encode("p@ss:w/rd%"), "p%40ss%3Aw%2Frd%25");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn default_options() {
        let options = SandboxOptions::default();
        assert_eq!(options.max_connections, 100);
        assert!(!options.tls);
        assert!(options.settings.is_empty());
    }
}
