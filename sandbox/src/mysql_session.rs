//! MySQL client sessions put into the states poolwarden looks for, from chosen source addresses.
//!
//! `mysql_async` cannot bind a connection's local address, so each session goes through a
//! one-connection relay: the relay's socket to the server is bound to `spec.source` (any
//! 127.x.y.z is loopback on Linux), and the driver talks to the relay on 127.0.0.1. The server
//! sees the chosen address in its processlist; when the server ends the connection, the relay
//! ends the driver's side too, so the session notices at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Mutex;

use crate::SandboxError;

/// How long [`MySqlSession::is_alive`] waits behind a running [`MySqlSession::start_active`]
/// statement before it answers from the connection's state alone.
const BUSY_GRACE: Duration = Duration::from_millis(250);

/// Who a session logs in as, what it calls itself and where it appears to come from.
#[derive(Debug, Clone)]
pub struct MySqlSessionSpec {
    pub user: String,
    pub password: String,
    pub database: String,
    /// The `program_name` connection attribute (MySQL's `application_name`), if any.
    pub program_name: Option<String>,
    /// The local address of the session's connection: any 127.x.y.z.
    pub source: Ipv4Addr,
}

impl MySqlSessionSpec {
    pub fn new(user: &str, password: &str, database: &str) -> Self {
        Self {
            user: user.to_owned(),
            password: password.to_owned(),
            database: database.to_owned(),
            program_name: None,
            source: Ipv4Addr::LOCALHOST,
        }
    }

    pub fn program(mut self, name: &str) -> Self {
        self.program_name = Some(name.to_owned());
        self
    }

    pub fn from_addr(mut self, source: Ipv4Addr) -> Self {
        self.source = source;
        self
    }
}

/// One open session (a server thread).
pub struct MySqlSession {
    conn: Arc<Mutex<Option<Conn>>>,
    id: i64,
}

impl std::fmt::Debug for MySqlSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlSession")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl MySqlSession {
    pub(crate) async fn open(port: u16, spec: &MySqlSessionSpec) -> Result<Self, SandboxError> {
        let context = || {
            format!(
                "opening a MySQL session as {:?} on {:?} from {}",
                spec.user, spec.database, spec.source
            )
        };
        let relay_port = relay(port, spec.source)
            .await
            .map_err(|e| SandboxError::io(context(), e))?;
        let mut opts = OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(relay_port)
            .user(Some(&spec.user))
            .pass(Some(&spec.password))
            .db_name((!spec.database.is_empty()).then_some(&spec.database))
            // Otherwise the driver would switch to the server's Unix socket, bypassing the relay.
            .prefer_socket(false);
        if let Some(name) = &spec.program_name {
            opts = opts.connect_attribute("program_name", name);
        }
        let conn = Conn::new(opts)
            .await
            .map_err(|e| SandboxError::mysql(context(), e))?;
        let id = i64::from(conn.id());
        Ok(Self {
            conn: Arc::new(Mutex::new(Some(conn))),
            id,
        })
    }

    /// The server thread's id (`CONNECTION_ID()`), the processlist's `ID`.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Runs `sql` and discards its results.
    pub async fn execute(&self, sql: &str) -> Result<(), SandboxError> {
        let mut guard = self.conn.lock().await;
        let conn = guard
            .as_mut()
            .ok_or_else(|| SandboxError::Unexpected(format!("session {} is closed", self.id)))?;
        conn.query_drop(sql)
            .await
            .map_err(|e| SandboxError::mysql(format!("session {}: {sql}", self.id), e))
    }

    /// Reads a row in a transaction and leaves it open, as SQLAlchemy does after a query with
    /// autocommit off: `Sleep` with an InnoDB transaction.
    pub async fn begin_idle_in_transaction(&self) -> Result<(), SandboxError> {
        self.execute("START TRANSACTION; SELECT * FROM items WHERE id = 1")
            .await
    }

    /// Runs `SELECT 1`: the thread's time in its state starts again; an open transaction stays.
    pub async fn touch(&self) -> Result<(), SandboxError> {
        self.execute("SELECT 1").await
    }

    /// Starts `SELECT SLEEP(seconds)` in the background: command `Query` until it ends. Other
    /// statements on this session wait behind it. Use
    /// [`MariaDb::wait_for_command`](crate::MariaDb::wait_for_command) to be sure it runs.
    pub fn start_active(&self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        let sql = format!("SELECT SLEEP({seconds})");
        let conn = Arc::clone(&self.conn);
        // Take the lock before returning, so that the statement goes ahead of what comes next.
        let Ok(mut guard) = conn.clone().try_lock_owned() else {
            return;
        };
        tokio::spawn(async move {
            if let Some(c) = guard.as_mut() {
                let _ = c.query_drop(sql).await;
            }
        });
    }

    /// Whether the server still answers on this session. While a [`MySqlSession::start_active`]
    /// statement runs, waits a quarter second for it (a killed thread fails it at once), then
    /// answers that it is alive if the statement still runs.
    pub async fn is_alive(&self) -> bool {
        let Ok(mut guard) = tokio::time::timeout(BUSY_GRACE, self.conn.lock()).await else {
            return true;
        };
        match guard.as_mut() {
            Some(conn) => conn.ping().await.is_ok(),
            None => false,
        }
    }
}

/// Listens on 127.0.0.1 for one connection and relays it to the server at `port` from a socket
/// bound to `source`; returns the port to connect to.
async fn relay(port: u16, source: Ipv4Addr) -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let relay_port = listener.local_addr()?.port();
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let mut upstream = socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await?;
    upstream.set_nodelay(true)?;
    tokio::spawn(async move {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        drop(listener);
        let _ = inbound.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
    });
    Ok(relay_port)
}
