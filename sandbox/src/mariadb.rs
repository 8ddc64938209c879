//! A throwaway MariaDB server, the MySQL-family twin of [`Sandbox`](crate::Sandbox).
//!
//! [`MariaDb::start`] runs `mariadb-install-db` into a temporary directory, starts `mariadbd` on a
//! free port of 127.0.0.1 only (with `skip-name-resolve`, so that the processlist shows client
//! addresses, not names) and waits until it answers. Dropping the [`MariaDb`] (a panicking test
//! included) kills the server and deletes the directory. With [`MariaDbOptions::tls`] it serves
//! TLS with a certificate signed by a throwaway CA ([`MariaDb::ca_cert_path`]).
//!
//! Binaries come from `$POOLWARDEN_MARIADB_BIN` (one folder holding `mariadbd` and
//! `mariadb-install-db`), else from `/usr/sbin` and `/usr/bin` (Debian's `mariadb-server`), else
//! from `PATH`. `mariadbd` will not run as root, so as root it runs as the `mysql` OS user, which
//! the Debian package creates.
//!
//! Client sessions ([`MySqlSession`]) come from a chosen 127.x.y.z address, as on PostgreSQL.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use nix::unistd::{User, geteuid};
use tempfile::TempDir;

pub use crate::mysql_session::{MySqlSession, MySqlSessionSpec};
use crate::server::{is_executable, read_tail, run};
use crate::tls::TlsFiles;
use crate::{SandboxError, free_port};

const SERVER: &str = "mariadbd";
const INSTALL: &str = "mariadb-install-db";
/// How long a fresh server may take to answer; it usually takes a fraction of a second.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const START_ATTEMPTS: u32 = 5;
const LOG_TAIL_LINES: usize = 40;

/// How the server is configured.
#[derive(Debug, Clone)]
pub struct MariaDbOptions {
    pub max_connections: u32,
    /// Serve TLS with a certificate for `127.0.0.1` and `localhost` signed by a throwaway CA.
    /// Plain connections keep working.
    pub tls: bool,
    /// Turn `performance_schema` on (MariaDB's default is off): connection attributes such as
    /// `program_name` become visible.
    pub performance_schema: bool,
    /// With `performance_schema`, also turn on its consumer `events_statements_current`
    /// (MariaDB's default is off), which records each thread's last statement.
    pub statements_consumer: bool,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        Self {
            max_connections: 100,
            tls: false,
            performance_schema: false,
            statements_consumer: false,
        }
    }
}

/// A running throwaway MariaDB. Dropping it kills the server and deletes its files.
pub struct MariaDb {
    // Field order matters: the server dies before its directory goes.
    server: Server,
    root: TempDir,
    port: u16,
    tls: Option<TlsFiles>,
}

impl std::fmt::Debug for MariaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MariaDb")
            .field("port", &self.port)
            .field("dir", &self.root.path())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The `mariadbd` process; killed (it holds only throwaway data) and reaped on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl MariaDb {
    /// Creates a data directory and starts a server on a free port. About a second.
    pub async fn start(options: MariaDbOptions) -> Result<MariaDb, SandboxError> {
        let began = Instant::now();
        let (mut root, mut tls, binaries, user) =
            tokio::task::spawn_blocking(move || prepare(options.tls))
                .await
                .map_err(|e| {
                    SandboxError::Unexpected(format!("MariaDB set-up task failed: {e}"))
                })??;
        let mut attempt = 1;
        loop {
            let port = free_port()?;
            let conf = config(root.path(), port, &options, tls.as_ref());
            let conf_path = root.path().join("my.cnf");
            fs::write(&conf_path, conf)
                .map_err(|e| SandboxError::io(format!("writing {}", conf_path.display()), e))?;
            if attempt == 1 {
                install(&binaries, &conf_path, user.as_ref()).map_err(|e| {
                    let log = read_tail(&root.path().join("error.log"), 0, LOG_TAIL_LINES);
                    SandboxError::Unexpected(format!("{e}\nend of its log:\n{log}"))
                })?;
            }
            let log = root.path().join("error.log");
            let log_start = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let mut command = Command::new(&binaries.server);
            command
                .arg(format!("--defaults-file={}", conf_path.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            as_server_user(&mut command, user.as_ref());
            let child = command
                .spawn()
                .map_err(|e| SandboxError::io(format!("starting {SERVER}"), e))?;
            let mut sandbox = MariaDb {
                server: Server(child),
                root,
                port,
                tls,
            };
            match sandbox.wait_until_ready().await {
                Ok(()) => {
                    tracing::debug!(port, elapsed = ?began.elapsed(), "sandbox MariaDB started");
                    return Ok(sandbox);
                }
                Err(exited) => {
                    let tail = read_tail(&log, log_start, LOG_TAIL_LINES);
                    let taken = tail.contains("Address already in use");
                    if !(taken && attempt < START_ATTEMPTS) {
                        return Err(SandboxError::Unexpected(format!(
                            "MariaDB did not start ({exited}); end of its log:\n{tail}"
                        )));
                    }
                    attempt += 1;
                    // Keep the directory for the next attempt: take it back from the failed server.
                    let MariaDb {
                        server,
                        root: r,
                        tls: t,
                        ..
                    } = sandbox;
                    drop(server);
                    root = r;
                    tls = t;
                }
            }
        }
    }

    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let began = Instant::now();
        loop {
            if let Ok(Some(status)) = self.server.0.try_wait() {
                return Err(format!("{SERVER} exited: {status}"));
            }
            if let Ok(conn) = self.admin().await {
                let _ = conn.disconnect().await;
                return Ok(());
            }
            if began.elapsed() > READY_TIMEOUT {
                return Err(format!("no answer within {READY_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The TCP port the server listens on, at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://user:password@127.0.0.1:PORT/database`, without any `ssl-mode`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "mysql://{}:{}@127.0.0.1:{}/{}",
            crate::percent_encode(user),
            crate::percent_encode(password),
            self.port,
            crate::percent_encode(database)
        )
    }

    /// The PEM certificate of the CA that signed the server's certificate, when TLS is on.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.ca_cert.as_path())
    }

    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    /// The server's error log, handy when a test fails.
    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("error.log")
    }

    fn socket_path(&self) -> PathBuf {
        self.root.path().join("mariadb.sock")
    }

    /// A new connection as `root`, over the Unix socket: in the processlist it has no address, so
    /// it is never mistaken for a session opened with [`MariaDb::open_session`].
    pub async fn admin(&self) -> Result<Conn, SandboxError> {
        let opts = OptsBuilder::default()
            .socket(Some(self.socket_path().to_string_lossy().into_owned()))
            .user(Some("root"))
            .prefer_socket(false)
            .connect_attribute("program_name", "poolwarden-sandbox-admin");
        Conn::new(opts)
            .await
            .map_err(|e| SandboxError::mysql("connecting to the sandbox MariaDB as root", e))
    }

    /// Runs `sql` (one or more statements) as root.
    pub async fn execute(&self, sql: &str) -> Result<(), SandboxError> {
        let mut admin = self.admin().await?;
        admin
            .query_drop(sql)
            .await
            .map_err(|e| SandboxError::mysql(format!("running {sql:?}"), e))?;
        let _ = admin.disconnect().await;
        Ok(())
    }

    /// Creates user `name@'%'`; each of `grants` is what goes between `GRANT` and `TO`, e.g.
    /// `"PROCESS, CONNECTION ADMIN ON *.*"` or `"ALL ON app.*"`.
    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        grants: &[&str],
    ) -> Result<(), SandboxError> {
        let user = format!("{}@'%'", quote_string(name));
        let mut sql = format!(
            "CREATE USER {user} IDENTIFIED BY {};",
            quote_string(password)
        );
        for grant in grants {
            sql.push_str(&format!("GRANT {grant} TO {user};"));
        }
        self.execute(&sql).await
    }

    /// Creates a database with one InnoDB table, `items (id, name)`, holding two rows, so that
    /// sessions have something to read and lock.
    pub async fn create_database(&self, name: &str) -> Result<(), SandboxError> {
        let db = quote_ident(name);
        self.execute(&format!(
            "CREATE DATABASE {db}; \
             CREATE TABLE {db}.items (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB; \
             INSERT INTO {db}.items VALUES (1, 'one'), (2, 'two');"
        ))
        .await
    }

    /// Opens one session whose TCP connection comes from `spec.source`.
    pub async fn open_session(
        &self,
        spec: &MySqlSessionSpec,
    ) -> Result<MySqlSession, SandboxError> {
        MySqlSession::open(self.port, spec).await
    }

    /// Waits until the processlist shows thread `id` with `command` (e.g. `"Query"` after
    /// [`MySqlSession::start_active`], whose statement reaches the server a moment later).
    pub async fn wait_for_command(
        &self,
        id: i64,
        command: &str,
        timeout: Duration,
    ) -> Result<(), SandboxError> {
        let mut admin = self.admin().await?;
        let began = Instant::now();
        loop {
            let seen: Option<String> = admin
                .exec_first(
                    "SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = ?",
                    (id,),
                )
                .await
                .map_err(|e| SandboxError::mysql("reading the processlist", e))?;
            if seen.as_deref() == Some(command) {
                let _ = admin.disconnect().await;
                return Ok(());
            }
            if began.elapsed() >= timeout {
                return Err(SandboxError::StateTimeout {
                    pid: id,
                    state: command.to_owned(),
                    waited: began.elapsed(),
                    last_seen: seen.unwrap_or_else(|| "no such thread".into()),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server and deletes its directory.
    pub fn stop(self) {
        drop(self);
    }
}

/// The temporary directory (handed to the server's user), TLS files, binaries and that user.
fn prepare(
    tls: bool,
) -> Result<(TempDir, Option<TlsFiles>, Binaries, Option<ServerUser>), SandboxError> {
    let binaries = Binaries::find()?;
    let user = server_user()?;
    let root = tempfile::Builder::new()
        .prefix("poolwarden-mariadb-")
        .tempdir()
        .map_err(|e| SandboxError::io("creating the MariaDB sandbox's directory", e))?;
    fs::create_dir(root.path().join("data"))
        .map_err(|e| SandboxError::io("creating the MariaDB data directory", e))?;
    // Its own temporary directory: with the shared /tmp, concurrent installs were seen failing on
    // a temporary table ("Could not remove temporary table '/tmp/#sql-temptable-…'").
    fs::create_dir(root.path().join("tmp"))
        .map_err(|e| SandboxError::io("creating the MariaDB temporary directory", e))?;
    let tls = if tls {
        Some(TlsFiles::generate(&root.path().join("tls"))?)
    } else {
        None
    };
    if let Some(user) = &user {
        chown_tree(root.path(), user)?;
    }
    Ok((root, tls, binaries, user))
}

/// The server's configuration: throwaway data, so speed over durability.
fn config(dir: &Path, port: u16, options: &MariaDbOptions, tls: Option<&TlsFiles>) -> String {
    let path = |p: &Path| p.display().to_string();
    let mut conf = format!(
        "[mariadbd]\n\
         datadir={}\n\
         socket={}\n\
         pid-file={}\n\
         log-error={}\n\
         tmpdir={}\n\
         port={port}\n\
         bind-address=127.0.0.1\n\
         skip-name-resolve\n\
         max-connections={}\n\
         performance-schema={}\n\
         innodb-buffer-pool-size=32M\n\
         innodb-log-file-size=8M\n\
         innodb-flush-log-at-trx-commit=0\n\
         innodb-doublewrite=0\n\
         skip-log-bin\n\
         character-set-server=utf8mb4\n",
        path(&dir.join("data")),
        path(&dir.join("mariadb.sock")),
        path(&dir.join("mariadbd.pid")),
        path(&dir.join("error.log")),
        path(&dir.join("tmp")),
        options.max_connections,
        if options.performance_schema {
            "ON"
        } else {
            "OFF"
        },
    );
    if options.performance_schema && options.statements_consumer {
        conf.push_str("performance-schema-consumer-events-statements-current=ON\n");
    }
    if let Some(tls) = tls {
        conf.push_str(&format!(
            "ssl-ca={}\nssl-cert={}\nssl-key={}\n",
            path(&tls.ca_cert),
            path(&tls.server_cert),
            path(&tls.server_key)
        ));
    }
    conf
}

fn install(
    binaries: &Binaries,
    conf: &Path,
    user: Option<&ServerUser>,
) -> Result<(), SandboxError> {
    let mut command = Command::new(&binaries.install);
    command
        .arg(format!("--defaults-file={}", conf.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .stdin(Stdio::null());
    as_server_user(&mut command, user);
    run(command).map(drop)
}

/// The two programs a sandbox needs.
struct Binaries {
    server: PathBuf,
    install: PathBuf,
}

impl Binaries {
    /// `$POOLWARDEN_MARIADB_BIN`, else `/usr/sbin` and `/usr/bin` (Debian puts `mariadbd` in the
    /// first, `mariadb-install-db` in the second), else `PATH`.
    fn find() -> Result<Binaries, SandboxError> {
        if let Some(dir) = std::env::var_os("POOLWARDEN_MARIADB_BIN") {
            let dir = PathBuf::from(dir);
            // An explicit choice that is wrong should say so, not quietly use something else.
            if let Some(missing) = [SERVER, INSTALL]
                .iter()
                .find(|p| !is_executable(&dir.join(p)))
            {
                return Err(SandboxError::BadBinDir {
                    path: dir,
                    missing: (*missing).to_owned(),
                });
            }
            return Ok(Binaries {
                server: dir.join(SERVER),
                install: dir.join(INSTALL),
            });
        }
        let mut folders: Vec<PathBuf> = vec!["/usr/sbin".into(), "/usr/bin".into()];
        if let Some(path) = std::env::var_os("PATH") {
            folders.extend(std::env::split_paths(&path));
        }
        let find = |program: &str| {
            folders
                .iter()
                .map(|dir| dir.join(program))
                .find(|path| is_executable(path))
        };
        match (find(SERVER), find(INSTALL)) {
            (Some(server), Some(install)) => Ok(Binaries { server, install }),
            _ => Err(SandboxError::NoMariaDbBinaries),
        }
    }
}

/// The OS user the server runs as when we are root.
struct ServerUser {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

fn server_user() -> Result<Option<ServerUser>, SandboxError> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name("mysql") {
        Ok(Some(user)) => Ok(Some(ServerUser {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            home: user.dir,
        })),
        Ok(None) => Err(SandboxError::NoMariaDbUser),
        Err(e) => Err(SandboxError::io(
            "looking up the `mysql` OS user",
            std::io::Error::from(e),
        )),
    }
}

fn as_server_user(command: &mut Command, user: Option<&ServerUser>) {
    if let Some(user) = user {
        command
            .uid(user.uid)
            .gid(user.gid)
            .env("HOME", &user.home)
            .env("USER", "mysql")
            .env("LOGNAME", "mysql");
    }
}

fn chown_tree(path: &Path, user: &ServerUser) -> Result<(), SandboxError> {
    let context = || format!("handing {} to the mysql user", path.display());
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
        .map_err(|e| SandboxError::io(context(), e))?;
    if fs::symlink_metadata(path)
        .map_err(|e| SandboxError::io(context(), e))?
        .is_dir()
    {
        for entry in fs::read_dir(path).map_err(|e| SandboxError::io(context(), e))? {
            let entry = entry.map_err(|e| SandboxError::io(context(), e))?;
            chown_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}

/// A MySQL string literal (with `NO_BACKSLASH_ESCAPES` off, backslashes escape too).
pub(crate) fn quote_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// A MySQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote_string(r"it's a \ test"), r"'it''s a \\ test'");
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
    }
}
