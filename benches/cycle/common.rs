//! What every section shares: statistics, tables, sessions over the Unix socket, a wire-counting
//! proxy, and readings from /proc.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::{StreamExt, TryStreamExt};
use poolwarden_sandbox::{Sandbox, SandboxOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::{Client, NoTls};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T> = Result<T, Error>;

/// How big, and how many times.
#[derive(Clone, Debug)]
pub struct Config {
    pub tiny: bool,
    /// Seconds of the controller's measured steady-state window.
    pub controller_window: u64,
    /// Seconds of each scale row's measured window.
    pub scale_window: u64,
    /// The scale section's rows (numbers of policies), instead of its own.
    pub scale_policies: Option<Vec<usize>>,
    /// The `poolwarden` binary the controller section runs (default: this build's).
    pub controller_binary: std::path::PathBuf,
}

// ---------------------------------------------------------------------------------------------
// Statistics and tables

/// Median, min and max of a set of samples.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Stats {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Stats {
            n,
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }

    /// `12.3 (11.9–13.0)`: the median, then min–max.
    pub fn show(&self, decimals: usize) -> String {
        if self.n == 1 {
            return format!("{:.decimals$}", self.median);
        }
        format!(
            "{:.decimals$} ({:.decimals$}–{:.decimals$})",
            self.median, self.min, self.max
        )
    }
}

/// Milliseconds since `start`.
pub fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// A result table, printed as Markdown.
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Table {
        Table {
            title: title.to_owned(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let width = |i: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(i))
                .chain(std::iter::once(&self.headers[i]))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                let pad = w.saturating_sub(cell.chars().count());
                let _ = write!(s, " {cell}{} |", " ".repeat(pad));
            }
            s
        };
        let mut out = format!("### {}\n\n{}\n|", self.title, line(&self.headers));
        for w in &widths {
            let _ = write!(out, "{}|", "-".repeat(w + 2));
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        for note in &self.notes {
            let _ = write!(out, "\n{note}\n");
        }
        out
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// The sandbox server's `server_version`, for the summary line.
pub static SERVER_VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A sandbox with database `app`, role `app` (the sessions) and role `monitor` (poolwarden).
pub async fn sandbox(max_connections: u32) -> Res<Sandbox> {
    let sb = Sandbox::start(SandboxOptions {
        max_connections,
        ..SandboxOptions::default()
    })
    .await?;
    sb.create_database("app").await?;
    sb.create_role("app", "app", &[]).await?;
    sb.create_role("monitor", "monitor", &["pg_monitor", "pg_signal_backend"])
        .await?;
    if SERVER_VERSION.get().is_none() {
        let version: String = sb
            .admin()
            .await?
            .query_one("SHOW server_version", &[])
            .await?
            .get(0);
        let _ = SERVER_VERSION.set(version);
    }
    Ok(sb)
}

/// poolwarden's URL for the sandbox, at `port` (the server's, or a proxy's).
pub fn monitor_url(port: u16) -> String {
    format!("postgres://monitor:monitor@127.0.0.1:{port}/app?sslmode=disable")
}

/// What a session is left doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    IdleInTransaction,
    Aborted,
    Active,
}

impl State {
    /// The mix of the benchmarks' sessions: 92% idle, 4% idle in transaction, 2% aborted,
    /// 2% running a long `pg_sleep`.
    pub fn mixed(i: usize) -> State {
        match i % 50 {
            0 | 1 => State::IdleInTransaction,
            2 => State::Aborted,
            3 => State::Active,
            _ => State::Idle,
        }
    }
}

/// A session of role `app` over the Unix socket (trust: no SCRAM), so thousands open quickly.
pub struct Local {
    pub client: Arc<Client>,
    pub pid: i64,
    /// Resolves with the moment the server closed the connection (or the client was dropped).
    pub ended: tokio::task::JoinHandle<SystemTime>,
}

pub async fn open_local(sb: &Sandbox, application: &str, state: State) -> Res<Local> {
    open_local_in(sb, "app", application, state).await
}

/// [`open_local`], in `database`.
pub async fn open_local_in(
    sb: &Sandbox,
    database: &str,
    application: &str,
    state: State,
) -> Res<Local> {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(sb.dir())
        .port(sb.port())
        .user("app")
        .dbname(database)
        .application_name(application)
        .connect(NoTls)
        .await?;
    let ended = tokio::spawn(async move {
        let _ = connection.await;
        SystemTime::now()
    });
    // `query_typed_one`: an unnamed statement, so no Close follows later on its own, which
    // would move the session's `state_change` after it was observed.
    let pid: i64 = client
        .query_typed_one("SELECT pg_backend_pid()::int8", &[])
        .await?
        .get(0);
    let client = Arc::new(client);
    match state {
        State::Idle => {}
        State::IdleInTransaction => client.batch_execute("BEGIN; SELECT 1").await?,
        State::Aborted => {
            client.batch_execute("BEGIN").await?;
            // Fails on purpose: the transaction is now aborted.
            let _ = client.batch_execute("SELECT 1/0").await;
        }
        State::Active => {
            let c = client.clone();
            tokio::spawn(async move {
                let _ = c.simple_query("SELECT pg_sleep(86400)").await;
            });
        }
    }
    Ok(Local { client, pid, ended })
}

/// Opens `count` sessions, 16 at a time; session `i` is named `app-{i % 50}` and is left in
/// `State::mixed(i)` (or idle when `mixed` is false).
pub async fn open_many(sb: &Sandbox, first: usize, count: usize, mixed: bool) -> Res<Vec<Local>> {
    futures::stream::iter(first..first + count)
        .map(|i| {
            let state = if mixed { State::mixed(i) } else { State::Idle };
            async move { open_local(sb, &format!("app-{}", i % 50), state).await }
        })
        .buffer_unordered(16)
        .try_collect()
        .await
}

/// Waits until the server shows no backend of role `app` (terminated backends exit
/// asynchronously); returns how long that took.
pub async fn wait_no_app_sessions(admin: &Client, timeout: Duration) -> Res<Duration> {
    let start = Instant::now();
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
                &[],
            )
            .await?
            .get(0);
        if n == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(format!("{n} sessions of role app still there after {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A proxy that counts what crosses the wire, and can make the network slow

/// Bytes each way; and a delay added to everything the server sends, to count round trips the
/// way a slow network does: a call that waits `n` times for the server takes `n × delay` longer.
#[derive(Default)]
pub struct Wire {
    up: AtomicU64,
    down: AtomicU64,
    delay_us: AtomicU64,
}

/// Bytes to and from the server.
#[derive(Clone, Copy, Debug, Default)]
pub struct WireCount {
    pub up: u64,
    pub down: u64,
}

impl Wire {
    pub fn count(&self) -> WireCount {
        WireCount {
            up: self.up.load(Ordering::SeqCst),
            down: self.down.load(Ordering::SeqCst),
        }
    }

    /// Delays what the server sends by `delay` from now on (a one-way latency).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::SeqCst);
    }
}

impl std::ops::Sub for WireCount {
    type Output = WireCount;
    fn sub(self, before: WireCount) -> WireCount {
        WireCount {
            up: self.up - before.up,
            down: self.down - before.down,
        }
    }
}

/// Listens on a free loopback port and forwards every connection to `127.0.0.1:target`.
pub async fn wire_proxy(target: u16) -> Res<(u16, Arc<Wire>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let wire = Arc::new(Wire::default());
    let counted = wire.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = server.into_split();
            let up = counted.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                    up.up.fetch_add(n as u64, Ordering::SeqCst);
                    if server_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            // Server → client: each chunk is held until `delay` after it arrived, in order.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
            let down = counted.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
                    down.down.fetch_add(n as u64, Ordering::SeqCst);
                    let due = Instant::now()
                        + Duration::from_micros(down.delay_us.load(Ordering::SeqCst));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some((due, chunk)) = rx.recv().await {
                    tokio::time::sleep_until(due.into()).await;
                    if client_tx.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok((port, wire))
}

/// The delay used to count round trips: large against the noise of a call.
pub const ROUND_TRIP_PROBE: Duration = Duration::from_millis(50);

/// How many times a call waits for the server: its wall time with the server's answers delayed
/// by [`ROUND_TRIP_PROBE`] (`slow`, ms), less its wall time without (`fast`), over that delay.
pub fn round_trips(fast: &[f64], slow: &[f64]) -> f64 {
    (Stats::of(slow).median - Stats::of(fast).median) / (ROUND_TRIP_PROBE.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------------------------
// /proc

/// Nanoseconds process (or thread) `pid` has run on a CPU (`/proc/PID/schedstat`).
pub fn cpu_ns(pid: i64) -> Res<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    Ok(text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or("unreadable schedstat")?)
}

/// CPU nanoseconds the calling thread has run (`/proc/thread-self/schedstat`): what a step
/// cost whatever else the machine was doing, where its wall time counts the waits for a core.
pub fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) this process has used, all threads.
pub fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// CPU seconds (user + system, all threads) of process `pid`, from `/proc/PID/stat`.
pub fn process_cpu_seconds(pid: u32) -> Res<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = text.rsplit_once(')').ok_or("unreadable stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// `(VmRSS, VmHWM)` of `pid` in MiB.
pub fn memory_mib(pid: u32) -> Res<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Ok((
        field("VmRSS:").ok_or("no VmRSS")?,
        field("VmHWM:").ok_or("no VmHWM")?,
    ))
}

/// Lets the process hold as many open files as it may (thousands of sessions).
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// The first line of `path` that starts with `key`, after the key (e.g. `/proc/meminfo`).
pub fn proc_field(path: &Path, key: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
}

/// The first load average figure.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A superuser client of database `app`, over the Unix socket.
pub async fn app_admin(sb: &Sandbox) -> Res<Client> {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(sb.dir())
        .port(sb.port())
        .user("postgres")
        .dbname("app")
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}
