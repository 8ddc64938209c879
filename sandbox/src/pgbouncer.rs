//! A throwaway PgBouncer in front of the sandbox's PostgreSQL.
//!
//! [`Sandbox::start_pgbouncer`](super::Sandbox::start_pgbouncer) writes a `pgbouncer.ini` and a
//! user list into a temporary directory and runs the machine's `pgbouncer` in the foreground on a
//! free loopback port, in front of the sandbox server. Dropping the [`PgBouncer`] (or
//! [`PgBouncer::stop`]) kills it and deletes the directory, so a test that panics leaves nothing
//! behind.
//!
//! Each [`PooledDatabase`] is a pool with its own pool mode (session or transaction) and size.
//! Two console users exist: [`ADMIN_USER`] (`admin_users`) and [`STATS_USER`] (`stats_users`, the
//! read-only access poolwarden needs). Clients log in with SCRAM, and PgBouncer logs in to
//! PostgreSQL over TCP from 127.0.0.1 with the same user and password, so that
//! `pg_stat_activity` shows the pooler's connections with a `client_addr` and `client_port`, as it
//! does in a cluster. [`PgBouncer::open_client`] connects from a chosen 127.x address, which
//! `SHOW CLIENTS` shows as the client's `addr`: a pod behind the pooler, without any network set-up.
//!
//! PgBouncer refuses to run as root, like PostgreSQL; when we are root it runs as the `postgres`
//! OS user. The binary is `$POOLWARDEN_PGBOUNCER`, else `/usr/sbin/pgbouncer` (Debian's
//! `pgbouncer` package), else the first `pgbouncer` on `PATH`.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::server::{self, read_tail, server_user};
use super::session::{connect_from, spawn_connection};
use super::tls::TlsFiles;
use super::{SandboxError, SessionSpec, free_port, loopback_url};

/// The console user with `admin_users` rights (may also PAUSE, KILL, RELOAD...).
pub const ADMIN_USER: &str = "pooladmin";
pub const ADMIN_PASSWORD: &str = "pooladmin";
/// The console user with `stats_users` rights: `SHOW` commands only.
pub const STATS_USER: &str = "poolstats";
pub const STATS_PASSWORD: &str = "poolstats";

/// How long PgBouncer may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times to pick a new port when another process took ours before PgBouncer bound it.
const START_ATTEMPTS: u32 = 5;
/// How much of the log goes into a start-up error.
const LOG_TAIL_LINES: usize = 40;

/// PgBouncer's `pool_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection belongs to one client from login to logout.
    Session,
    /// A server connection belongs to a client for one transaction, then goes back to the pool.
    Transaction,
}

impl PoolMode {
    fn as_ini(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// One pool: the PgBouncer database `name`, served by the sandbox database `dbname`.
#[derive(Debug, Clone)]
pub struct PooledDatabase {
    pub name: String,
    pub dbname: String,
    pub pool_mode: PoolMode,
    /// Server connections per user (`pool_size`).
    pub pool_size: u32,
}

/// How the sandbox PgBouncer is configured.
#[derive(Debug, Clone, Default)]
pub struct PgBouncerOptions {
    pub databases: Vec<PooledDatabase>,
    /// The roles clients log in as, with their passwords; they must exist in the sandbox
    /// ([`Sandbox::create_role`](super::Sandbox::create_role)), since PgBouncer logs in to
    /// PostgreSQL as them.
    pub users: Vec<(String, String)>,
    /// Serve TLS to clients (`client_tls_sslmode = allow`) with a certificate for `127.0.0.1`
    /// and `localhost` signed by a throwaway CA ([`PgBouncer::ca_cert_path`]).
    pub tls: bool,
    /// Extra `[pgbouncer]` settings, as (name, value). They come last, so they win.
    pub settings: Vec<(String, String)>,
    /// Listen at this loopback address and port instead of 127.0.0.1 on a free port, e.g. as
    /// one of several replicas at one port, each at its own 127.x address. Not retried if taken.
    pub listen: Option<SocketAddrV4>,
}

impl PgBouncerOptions {
    /// Adds a pool named `name` over the sandbox database `dbname`.
    pub fn database(mut self, name: &str, dbname: &str, pool_mode: PoolMode, size: u32) -> Self {
        self.databases.push(PooledDatabase {
            name: name.to_string(),
            dbname: dbname.to_string(),
            pool_mode,
            pool_size: size,
        });
        self
    }

    /// Lets `user` in with `password` (and logs in to PostgreSQL with them).
    pub fn user(mut self, user: &str, password: &str) -> Self {
        self.users.push((user.to_string(), password.to_string()));
        self
    }

    /// Sets a `[pgbouncer]` setting, e.g. `("server_idle_timeout", "5")`.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }
}

/// A running throwaway PgBouncer. Dropping it kills the process and deletes its files.
pub struct PgBouncer {
    // Fields drop in order: the process is reaped before its directory goes.
    process: Process,
    host: Ipv4Addr,
    port: u16,
    tls: Option<TlsFiles>,
    dir: TempDir,
}

impl std::fmt::Debug for PgBouncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBouncer")
            .field("port", &self.port)
            .field("pid", &self.process.0.id())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl PgBouncer {
    pub(super) fn start_blocking(
        postgres_port: u16,
        options: &PgBouncerOptions,
    ) -> Result<PgBouncer, SandboxError> {
        let began = Instant::now();
        let binary = find_binary()?;
        let user = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("poolwarden-pgbouncer-")
            .tempdir()
            .map_err(|e| SandboxError::io("creating the PgBouncer's temporary directory", e))?;
        let tls = if options.tls {
            Some(TlsFiles::generate(&dir.path().join("tls"))?)
        } else {
            None
        };
        let users_path = dir.path().join("userlist.txt");
        write(&users_path, &render_users(&options.users)?)?;
        let ini_path = dir.path().join("pgbouncer.ini");
        let log_path = dir.path().join("pgbouncer.log");

        let mut attempt = 1;
        let mut listening = options.clone();
        if let Some(at) = options.listen {
            listening
                .settings
                .push(("listen_addr".into(), at.ip().to_string()));
        }
        let host = options.listen.map_or(Ipv4Addr::LOCALHOST, |at| *at.ip());
        loop {
            let port = match options.listen {
                Some(at) => at.port(),
                None => free_port()?,
            };
            let ini = render_ini(postgres_port, port, &users_path, tls.as_ref(), &listening)?;
            write(&ini_path, &ini)?;
            if let Some(user) = &user {
                user.chown_tree(dir.path())?;
            }
            let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
            // Without `logfile`, PgBouncer logs to stderr: that way even a configuration it cannot
            // parse ends up in the log.
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| SandboxError::io(format!("opening {}", log_path.display()), e))?;
            let stdout = log
                .try_clone()
                .map_err(|e| SandboxError::io("duplicating the log's file handle", e))?;
            let mut command = Command::new(&binary);
            command
                .arg(&ini_path)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::from(stdout))
                .stderr(Stdio::from(log));
            if let Some(user) = &user {
                user.apply(&mut command);
            }
            let child = command
                .spawn()
                .map_err(|e| SandboxError::io(format!("starting {}", binary.display()), e))?;
            let mut process = Process(child);
            if process.wait_until_listening(SocketAddr::from((host, port))) {
                tracing::debug!(port, elapsed = ?began.elapsed(), "sandbox PgBouncer started");
                return Ok(PgBouncer {
                    process,
                    host,
                    port,
                    tls,
                    dir,
                });
            }
            drop(process);
            let log_tail = read_tail(&log_path, log_start, LOG_TAIL_LINES);
            if log_tail.contains("Address already in use")
                && attempt < START_ATTEMPTS
                && options.listen.is_none()
            {
                tracing::debug!(port, attempt, "PgBouncer's port was taken; trying another");
                attempt += 1;
                continue;
            }
            return Err(SandboxError::PgBouncerStart { log_tail });
        }
    }

    /// The TCP port PgBouncer listens on, at [`PgBouncer::host`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address PgBouncer listens at: 127.0.0.1 unless [`PgBouncerOptions::listen`] said.
    pub fn host(&self) -> Ipv4Addr {
        self.host
    }

    /// `postgres://user:password@HOST:PORT/database`, without any `sslmode`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        loopback_url(self.port, user, password, database).replacen(
            "@127.0.0.1:",
            &format!("@{}:", self.host),
            1,
        )
    }

    /// The admin console (database `pgbouncer`) as [`ADMIN_USER`].
    pub fn admin_url(&self) -> String {
        self.url(ADMIN_USER, ADMIN_PASSWORD, "pgbouncer")
    }

    /// The admin console as [`STATS_USER`], who may only run `SHOW` commands.
    pub fn stats_url(&self) -> String {
        self.url(STATS_USER, STATS_PASSWORD, "pgbouncer")
    }

    /// The PEM certificate of the CA that signed PgBouncer's certificate, when TLS is on.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.ca_cert.as_path())
    }

    /// The temporary directory holding the configuration, the user list and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PgBouncer's log (its stderr), handy when a test fails.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("pgbouncer.log")
    }

    /// A new client of the admin console as [`ADMIN_USER`], without TLS. The console speaks only
    /// the simple query protocol: use `simple_query`.
    pub async fn console(&self) -> Result<Client, SandboxError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.host.to_string())
            .port(self.port)
            .user(ADMIN_USER)
            .password(ADMIN_PASSWORD)
            .dbname("pgbouncer")
            .application_name("poolwarden-sandbox-console");
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| SandboxError::postgres("connecting to PgBouncer's admin console", e))?;
        spawn_connection(connection, "sandbox PgBouncer console");
        Ok(client)
    }

    /// Opens one client connection through the pooler, its socket bound to `spec.source`, so that
    /// `SHOW CLIENTS` shows that address.
    pub async fn open_client(&self, spec: &SessionSpec) -> Result<PooledClient, SandboxError> {
        let (client, local_addr) =
            connect_from(spec.source, (self.host, self.port), &spec.config())
                .await
                .map_err(|e| {
                    e.within(&format!(
                        "opening a client of PgBouncer as {:?} on {:?} from {}",
                        spec.user, spec.database, spec.source
                    ))
                })?;
        Ok(PooledClient { client, local_addr })
    }

    /// Kills PgBouncer and deletes its directory.
    pub fn stop(self) {
        // Drop does the work, so that a panicking test cleans up the same way.
        drop(self);
    }
}

/// The PgBouncer process; dropping it kills and reaps it.
struct Process(Child);

impl Process {
    /// Whether PgBouncer accepts connections at `address` before it exits or the time is up.
    fn wait_until_listening(&mut self, address: SocketAddr) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return false;
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The data is thrown away, so there is nothing to shut down gracefully for; the kernel
        // closes its connections and PostgreSQL ends their backends.
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// One client connection through the pooler.
///
/// Everything it sends goes by the simple query protocol: in transaction pooling a client gets a
/// server only for the length of a transaction, so the extended protocol's prepared statements
/// (prepare in one round trip, execute in the next) could land on two different servers.
pub struct PooledClient {
    client: Client,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for PooledClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledClient")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl PooledClient {
    /// The client's end of the connection: `SHOW CLIENTS`' `addr` and `port`.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The PostgreSQL backend serving this client right now. In transaction pooling that is
    /// only meaningful inside a transaction.
    pub async fn backend_pid(&self) -> Result<i64, SandboxError> {
        self.pid_of("SELECT pg_backend_pid()").await
    }

    /// Opens a transaction and leaves it open (`idle in transaction`), returning the backend that
    /// holds it: in transaction pooling the client keeps that server until it commits.
    pub async fn begin_idle_in_transaction(&self) -> Result<i64, SandboxError> {
        self.pid_of("BEGIN; SELECT pg_backend_pid()").await
    }

    /// Ends the open transaction, giving the server back to the pool in transaction pooling.
    pub async fn commit(&self) -> Result<(), SandboxError> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| SandboxError::postgres("committing through PgBouncer", e))
    }

    /// Runs `SELECT 1`.
    pub async fn touch(&self) -> Result<(), SandboxError> {
        self.client
            .batch_execute("SELECT 1")
            .await
            .map_err(|e| SandboxError::postgres("running SELECT 1 through PgBouncer", e))
    }

    /// Whether the pooler and a server still answer `SELECT 1` for this client.
    pub async fn is_alive(&self) -> bool {
        !self.client.is_closed() && self.client.batch_execute("SELECT 1").await.is_ok()
    }

    async fn pid_of(&self, sql: &str) -> Result<i64, SandboxError> {
        let context = || format!("running {sql:?} through PgBouncer");
        let messages = self
            .client
            .simple_query(sql)
            .await
            .map_err(|e| SandboxError::postgres(context(), e))?;
        messages
            .iter()
            .find_map(|message| match message {
                SimpleQueryMessage::Row(row) => row.get(0),
                _ => None,
            })
            .and_then(|pid| pid.parse().ok())
            .ok_or_else(|| SandboxError::Unexpected(format!("{}: no pid in the answer", context())))
    }
}

/// `$POOLWARDEN_PGBOUNCER`, else Debian's `/usr/sbin/pgbouncer`, else `pgbouncer` on `PATH`.
fn find_binary() -> Result<PathBuf, SandboxError> {
    if let Some(path) = std::env::var_os("POOLWARDEN_PGBOUNCER") {
        let path = PathBuf::from(path);
        // An explicit choice that is wrong should say so, not quietly use something else.
        if !server::is_executable(&path) {
            return Err(SandboxError::BadPgBouncer { path });
        }
        return Ok(path);
    }
    let debian = PathBuf::from("/usr/sbin/pgbouncer");
    if server::is_executable(&debian) {
        return Ok(debian);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("pgbouncer"))
                .find(|candidate| server::is_executable(candidate))
        })
        .ok_or(SandboxError::NoPgBouncer)
}

fn write(path: &Path, text: &str) -> Result<(), SandboxError> {
    fs::write(path, text).map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))
}

/// `pgbouncer.ini`: the pools, SCRAM for everyone, the two console users, no Unix socket (two
/// sandboxes would fight over /tmp's), and quick retries of a failed server login (the default
/// waits 15 s).
fn render_ini(
    postgres_port: u16,
    port: u16,
    users_path: &Path,
    tls: Option<&TlsFiles>,
    options: &PgBouncerOptions,
) -> Result<String, SandboxError> {
    let mut ini = String::from("[databases]\n");
    for db in &options.databases {
        if let Some(bad) = [&db.name, &db.dbname]
            .into_iter()
            .find(|n| !is_plain_word(n))
        {
            return Err(SandboxError::InvalidSetting {
                name: bad.clone(),
                reason: "a pooled database's names have only letters, digits and '_'",
            });
        }
        ini.push_str(&format!(
            "{} = host=127.0.0.1 port={postgres_port} dbname={} pool_mode={} pool_size={}\n",
            db.name,
            db.dbname,
            db.pool_mode.as_ini(),
            db.pool_size
        ));
    }
    ini.push_str(&format!(
        "\n[pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = {}\n\
         admin_users = {ADMIN_USER}\n\
         stats_users = {STATS_USER}\n\
         pool_mode = session\n\
         max_client_conn = 500\n\
         default_pool_size = 10\n\
         server_login_retry = 1\n",
        users_path.display()
    ));
    if let Some(tls) = tls {
        ini.push_str(&format!(
            "client_tls_sslmode = allow\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\n",
            tls.server_cert.display(),
            tls.server_key.display()
        ));
    }
    for (name, value) in &options.settings {
        if !is_plain_word(name) {
            return Err(SandboxError::InvalidSetting {
                name: name.clone(),
                reason: "a PgBouncer setting name has only letters, digits and '_'",
            });
        }
        if value.contains(['\n', '\r']) {
            return Err(SandboxError::InvalidSetting {
                name: name.clone(),
                reason: "a value cannot span lines",
            });
        }
        ini.push_str(&format!("{name} = {value}\n"));
    }
    Ok(ini)
}

/// The `auth_file`: `"user" "password"` a line, quotes doubled. Plain-text passwords, because
/// PgBouncer needs them to log in to PostgreSQL with SCRAM on the client's behalf.
fn render_users(users: &[(String, String)]) -> Result<String, SandboxError> {
    let quote = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    let mut out = String::new();
    let console = [(ADMIN_USER, ADMIN_PASSWORD), (STATS_USER, STATS_PASSWORD)];
    let all = console
        .into_iter()
        .chain(users.iter().map(|(u, p)| (u.as_str(), p.as_str())));
    for (user, password) in all {
        if user.contains(['\n', '\r']) || password.contains(['\n', '\r']) {
            return Err(SandboxError::InvalidSetting {
                name: user.to_string(),
                reason: "a PgBouncer user or password cannot span lines",
            });
        }
        out.push_str(&format!("{} {}\n", quote(user), quote(password)));
    }
    Ok(out)
}

fn is_plain_word(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ini_names_each_pool_with_its_mode_and_size() {
        let options = PgBouncerOptions::default()
            .database("app_tx", "app", PoolMode::Transaction, 3)
            .database("app", "app", PoolMode::Session, 5)
            .setting("server_idle_timeout", "7");
        let ini = render_ini(5432, 6432, Path::new("/x/users"), None, &options).unwrap();
        assert!(ini.starts_with(
            "[databases]\n\
             app_tx = host=127.0.0.1 port=5432 dbname=app pool_mode=transaction pool_size=3\n\
             app = host=127.0.0.1 port=5432 dbname=app pool_mode=session pool_size=5\n"
        ));
        assert!(ini.contains("listen_port = 6432\n"));
        assert!(ini.contains("auth_file = /x/users\n"));
        assert!(ini.contains("stats_users = poolstats\n"));
        assert!(ini.ends_with("server_idle_timeout = 7\n"), "{ini}");
        assert!(!ini.contains("client_tls"));
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        let bad_db = PgBouncerOptions::default().database("a b", "app", PoolMode::Session, 1);
        assert!(render_ini(1, 2, Path::new("/u"), None, &bad_db).is_err());
        let bad_value = PgBouncerOptions::default().setting("x", "1\nadmin_users = me");
        assert!(render_ini(1, 2, Path::new("/u"), None, &bad_value).is_err());
        assert!(render_users(&[("u".into(), "p\nq".into())]).is_err());
    }

    #[test]
    fn the_user_list_doubles_quotes_and_has_the_console_users() {
        let users = render_users(&[("app".into(), r#"pa"ss"#.into())]).unwrap();
        assert_eq!(
            users,
            "\"pooladmin\" \"pooladmin\"\n\"poolstats\" \"poolstats\"\n\"app\" \"pa\"\"ss\"\n"
        );
    }
}
