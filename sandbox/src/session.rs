//! Client sessions put into the states poolwarden looks for.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::SandboxError;

/// How long [`ClientSession::is_alive`] waits for a running [`ClientSession::start_active`] query to end.
/// A terminated backend fails its query within milliseconds; a healthy one keeps sleeping.
const BUSY_GRACE: Duration = Duration::from_millis(250);

/// Who a session logs in as and where it appears to come from.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub user: String,
    pub password: String,
    pub database: String,
    pub application_name: String,
    /// The local address the session's socket is bound to: any 127.x.y.z.
    pub source: Ipv4Addr,
}

impl SessionSpec {
    /// A session with no application name, from 127.0.0.1.
    pub fn new(user: &str, password: &str, database: &str) -> Self {
        SessionSpec {
            user: user.to_string(),
            password: password.to_string(),
            database: database.to_string(),
            application_name: String::new(),
            source: Ipv4Addr::LOCALHOST,
        }
    }

    /// Sets `application_name`.
    pub fn application(mut self, name: &str) -> Self {
        self.application_name = name.to_string();
        self
    }

    /// Binds the session's socket to `source`, which becomes its `client_addr`.
    pub fn from_addr(mut self, source: Ipv4Addr) -> Self {
        self.source = source;
        self
    }
}

/// One open session. Its connection task runs until the session is dropped (or, after
/// [`ClientSession::start_active`], until that query ends) or the server closes it.
pub struct ClientSession {
    // Shared with the task of start_active, which must outlive the call.
    client: Arc<Client>,
    pid: i32,
    local_addr: SocketAddr,
    /// How many start_active queries are running, so that is_alive need not queue behind them.
    busy: Arc<watch::Sender<usize>>,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    pub(super) async fn open(port: u16, spec: &SessionSpec) -> Result<ClientSession, SandboxError> {
        let context = || {
            format!(
                "opening a session as {:?} on database {:?} from {}",
                spec.user, spec.database, spec.source
            )
        };
        let (client, local_addr) =
            connect_from(spec.source, (Ipv4Addr::LOCALHOST, port), &spec.config())
                .await
                .map_err(|e| e.within(&context()))?;
        let row = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(|e| SandboxError::postgres(format!("{}: reading its pid", context()), e))?;
        let pid = row
            .try_get(0)
            .map_err(|e| SandboxError::postgres(format!("{}: reading its pid", context()), e))?;
        Ok(ClientSession {
            client: Arc::new(client),
            pid,
            local_addr,
            busy: Arc::new(watch::Sender::new(0)),
        })
    }

    /// The server process of this session, from `pg_backend_pid()` at open (as wide as
    /// poolwarden's session ids, which also hold MySQL thread ids).
    pub fn pid(&self) -> i64 {
        i64::from(self.pid)
    }

    /// The session's end of the TCP connection: `pg_stat_activity`'s `client_addr` and
    /// `client_port`.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens a transaction and leaves it open: `idle in transaction`.
    pub async fn begin_idle_in_transaction(&self) -> Result<(), SandboxError> {
        self.client
            .batch_execute("BEGIN; SELECT 1")
            .await
            .map_err(|e| self.error("opening a transaction", e))
    }

    /// Opens a transaction and makes a statement in it fail:
    /// `idle in transaction (aborted)`.
    pub async fn abort_transaction(&self) -> Result<(), SandboxError> {
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| self.error("opening a transaction", e))?;
        match self.client.batch_execute("SELECT 1/0").await {
            Err(e) if e.code() == Some(&SqlState::DIVISION_BY_ZERO) => Ok(()),
            Err(e) => Err(self.error("failing a statement on purpose", e)),
            Ok(()) => Err(SandboxError::Unexpected(format!(
                "session {}: SELECT 1/0 succeeded, so the transaction is not aborted",
                self.pid
            ))),
        }
    }

    /// Starts `SELECT pg_sleep(seconds)` in the background: `active` until it ends. Its result
    /// is ignored. Other queries on this session (`touch` included) wait behind it.
    ///
    /// The query reaches the server a moment after this returns; use
    /// [`Sandbox::wait_for_state`](super::Sandbox::wait_for_state) to be sure it is running.
    /// Must be called within a tokio runtime.
    pub fn start_active(&self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        // f64's Display never uses an exponent, so this is always valid SQL.
        let sql = format!("SELECT pg_sleep({seconds})");
        let client = Arc::clone(&self.client);
        let busy = Arc::clone(&self.busy);
        busy.send_modify(|running| *running += 1);
        let mut query = Box::pin(async move {
            let _ = client.simple_query(&sql).await;
            busy.send_modify(|running| *running -= 1);
        });
        // tokio-postgres queues a simple query to the connection on the first poll; doing that
        // here, rather than whenever the spawned task first runs, keeps the query ahead of
        // anything the caller sends next and shortens the wait for 'active'.
        let mut context = Context::from_waker(Waker::noop());
        if query.as_mut().poll(&mut context).is_pending() {
            tokio::spawn(query);
        }
    }

    /// Runs `SELECT 1`, which moves `state_change` without leaving the current transaction
    /// state; in an aborted transaction the statement fails as expected, and that counts.
    pub async fn touch(&self) -> Result<(), SandboxError> {
        match self.client.batch_execute("SELECT 1").await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => Ok(()),
            Err(e) => Err(self.error("running SELECT 1", e)),
        }
    }

    /// Whether the server still answers `SELECT 1` on this session (an aborted transaction's
    /// refusal is an answer).
    ///
    /// While a [`ClientSession::start_active`] query runs, `SELECT 1` would wait behind it; instead
    /// this waits a quarter second for that query to end (a terminated backend fails it at
    /// once) and, if it still runs, answers whether the connection is open.
    pub async fn is_alive(&self) -> bool {
        if self.client.is_closed() {
            return false;
        }
        let mut running = self.busy.subscribe();
        let finished = tokio::time::timeout(BUSY_GRACE, running.wait_for(|n| *n == 0)).await;
        if finished.is_err() {
            return !self.client.is_closed();
        }
        match self.client.batch_execute("SELECT 1").await {
            Ok(()) => true,
            Err(e) => e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
        }
    }

    fn error(&self, what: &str, source: tokio_postgres::Error) -> SandboxError {
        SandboxError::postgres(format!("session {}: {what}", self.pid), source)
    }
}

/// Connects to `host:port` from a socket bound to `source` and logs in with `config`; the
/// connection task is spawned on tokio. Returns the client and its socket's local address.
pub(super) async fn connect_from(
    source: Ipv4Addr,
    (host, port): (Ipv4Addr, u16),
    config: &tokio_postgres::Config,
) -> Result<(Client, SocketAddr), SandboxError> {
    let socket = TcpSocket::new_v4().map_err(|e| SandboxError::io("opening a socket", e))?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|e| SandboxError::io(format!("binding {source}"), e))?;
    let stream = socket
        .connect(SocketAddr::from((host, port)))
        .await
        .map_err(|e| SandboxError::io(format!("connecting to {host}:{port}"), e))?;
    // Nagle's algorithm would hold back the small messages of the handshake.
    stream
        .set_nodelay(true)
        .map_err(|e| SandboxError::io("setting TCP_NODELAY", e))?;
    let local_addr = stream
        .local_addr()
        .map_err(|e| SandboxError::io("reading the socket's address", e))?;
    let (client, connection) = config
        .connect_raw(stream, NoTls)
        .await
        .map_err(|e| SandboxError::postgres("logging in", e))?;
    spawn_connection(connection, "sandbox session");
    Ok((client, local_addr))
}

/// Runs a connection's driver on tokio until its client is dropped or the server hangs up.
pub(super) fn spawn_connection<S, T>(
    connection: tokio_postgres::Connection<S, T>,
    what: &'static str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "{what} connection ended");
        }
    });
}

impl SessionSpec {
    /// The login of this spec: user, password, database and application name.
    pub(super) fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.database)
            .application_name(&self.application_name);
        config
    }
}
