//! `poolwarden demo`: a throwaway PostgreSQL, sessions that reproduce the leaks poolwarden was
//! born from, then `check` and an `Enforce` run that finds and ends them, and the proof that the
//! healthy sessions were left alone. It cleans up after itself. [`mysql`] tells the same story on
//! a throwaway MariaDB (`poolwarden demo --engine mysql`).
//!
//! Where the machine has `pgbouncer` (scripts/setup installs it), a throwaway PgBouncer in
//! transaction pooling stands in front of the same server ([`pooler`]): one pod leaves a
//! transaction idle behind it, which `check --pooler` names by the pod's address and `run` ends,
//! while the server connections the pooler holds for reuse are left alone however idle. Without
//! `pgbouncer` the demo says so in one line and goes on without that part.

pub mod mysql;
mod pooler;
mod script;

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::standalone::StandaloneError;
use poolwarden_sandbox::{ClientSession, Sandbox, SandboxError, SandboxOptions, SessionSpec};
use script::{Script, Stage};

/// The demo's policy, printed for the reader and usable as a starting point: `kubectl apply`
/// accepts it as it is (with a Secret `orders-db-monitor` holding the URL); `check` and `run`
/// ignore `database` and take `--database-url`.
pub const DEMO_POLICY: &str = "\
apiVersion: poolwarden.io/v1alpha1
kind: PoolPolicy
metadata:
  name: orders-db
  namespace: shop
spec:
  database:
    connectionSecretRef: {name: orders-db-monitor, key: uri}
  mode: Enforce
  interval: 2s
  scope:
    databases: [orders]
    excludeApplications: [psql]     # a DBA's console is never touched
  idle:                             # what Enforce ends; seconds for the demo, think 30m/5m
    idleTimeout: 4s
    idleInTransactionTimeout: 3s
    maxTerminationsPerCycle: 20     # a brake: never a mass kill
  budgets:
    maxConnectionsPerPod: 25        # pool_size + max_overflow
  leakDetection:
    # Ages in seconds so that the demo need not wait: the defaults (strandedIdleAge 30m,
    # idleInTransactionAge 2m, window 10m) take real minutes. Churn and a full server are found
    # with the defaults as they are.
    window: 3s
    strandedIdleAge: 5s
    idleInTransactionAge: 3s
";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo's throwaway server: {0}")]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Standalone(#[from] StandaloneError),
    #[error("cannot write the demo policy: {0}")]
    Io(#[from] std::io::Error),
}

/// The demo's sessions, in groups that share a fate.
struct Group<S> {
    label: &'static str,
    sessions: Vec<S>,
    leaking: bool,
}

/// A demo's session, PostgreSQL's or MySQL's, as the closing table counts it.
trait DemoSession {
    async fn is_alive(&self) -> bool;
}

impl DemoSession for ClientSession {
    async fn is_alive(&self) -> bool {
        ClientSession::is_alive(self).await
    }
}

impl DemoSession for poolwarden_sandbox::MySqlSession {
    async fn is_alive(&self) -> bool {
        poolwarden_sandbox::MySqlSession::is_alive(self).await
    }
}

impl<S: DemoSession> Group<S> {
    /// What became of this group after the run.
    async fn survivors(&self) -> Survivors {
        let mut alive = 0;
        for session in &self.sessions {
            alive += usize::from(session.is_alive().await);
        }
        Survivors::of(self.label, self.leaking, alive, self.sessions.len())
    }
}

/// What became of one group of a demo's sessions, counted after the run: both engines' demos end
/// with the same table.
struct Survivors {
    label: &'static str,
    leaking: bool,
    alive: usize,
    total: usize,
}

impl Survivors {
    fn of(label: &'static str, leaking: bool, alive: usize, total: usize) -> Self {
        Self {
            label,
            leaking,
            alive,
            total,
        }
    }
}

/// Runs the whole demo, narrating to `out`.
pub async fn run(out: &mut (impl Write + Send)) -> Result<(), DemoError> {
    writeln!(
        out,
        "Starting a throwaway PostgreSQL (max_connections 50)..."
    )?;
    let sandbox = Sandbox::start(SandboxOptions {
        max_connections: 50,
        ..SandboxOptions::default()
    })
    .await?;
    let result = play(&sandbox, out).await;
    sandbox.stop();
    writeln!(out, "\nThe throwaway PostgreSQL is stopped and removed.")?;
    result
}

async fn play(sandbox: &Sandbox, out: &mut (impl Write + Send)) -> Result<(), DemoError> {
    sandbox.create_database("orders").await?;
    sandbox.create_role("shop", "shop", &[]).await?;
    sandbox
        .create_role(
            "poolwarden_monitor",
            "monitor",
            &["pg_monitor", "pg_signal_backend"],
        )
        .await?;
    writeln!(
        out,
        "Listening on 127.0.0.1:{}; monitoring role poolwarden_monitor (pg_monitor, pg_signal_backend).\n",
        sandbox.port()
    )?;

    let groups = open_sessions(sandbox, out).await?;
    let behind = pooler::BehindThePooler::open(sandbox, out).await?;
    let stage = Postgres {
        sandbox,
        groups,
        behind,
    };
    let script = Script {
        engine: "postgresql",
        policy: DEMO_POLICY,
        policy_heading: "The policy (the same YAML works with kubectl apply):",
        url: sandbox.url("poolwarden_monitor", "monitor", "orders"),
        poolers: stage.behind.iter().map(|b| b.pooler_arg()).collect(),
        all_ended: "all terminated",
        success: "Every leaked session was ended; every healthy one was left alone.",
    };
    script::play(&stage, script, out).await?;
    if let Some(b) = stage.behind {
        b.stop();
        writeln!(out, "The throwaway PgBouncer is stopped and removed.")?;
    }
    Ok(())
}

/// The PostgreSQL demo's sessions, and the PgBouncer in front when there is one.
struct Postgres<'a> {
    sandbox: &'a Sandbox,
    groups: Vec<Group<ClientSession>>,
    behind: Option<pooler::BehindThePooler>,
}

impl Stage for Postgres<'_> {
    async fn keep_busy(&self) {
        let busy: Vec<&ClientSession> = self
            .groups
            .iter()
            .filter(|g| g.label.contains("busy every second"))
            .flat_map(|g| &g.sessions)
            .collect();
        match &self.behind {
            Some(b) => tokio::join!(keep_busy(&busy), b.keep_busy()).0,
            None => keep_busy(&busy).await,
        }
    }

    async fn churn(&self) {
        churn(self.sandbox).await
    }

    async fn survivors(&self) -> Result<Vec<Survivors>, DemoError> {
        let mut survivors = Vec::new();
        for group in &self.groups {
            survivors.push(group.survivors().await);
        }
        if let Some(b) = &self.behind {
            survivors.extend(b.survivors(self.sandbox).await?);
        }
        Ok(survivors)
    }
}

async fn open(sandbox: &Sandbox, app: &str, addr: Ipv4Addr) -> Result<ClientSession, SandboxError> {
    sandbox
        .open_session(
            &SessionSpec::new("shop", "shop", "orders")
                .application(app)
                .from_addr(addr),
        )
        .await
}

async fn open_many(
    sandbox: &Sandbox,
    app: &str,
    addr: Ipv4Addr,
    n: usize,
) -> Result<Vec<ClientSession>, SandboxError> {
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(open(sandbox, app, addr).await?);
    }
    Ok(sessions)
}

async fn open_sessions(
    sandbox: &Sandbox,
    out: &mut impl Write,
) -> Result<Vec<Group<ClientSession>>, DemoError> {
    writeln!(
        out,
        "Opening sessions that reproduce the post-mortems (addresses stand in for pods):"
    )?;
    writeln!(
        out,
        "  obslog-api        127.0.0.21  6 idle: a pool inherited by fork()ed workers (seed 000),"
    )?;
    writeln!(
        out,
        "                                while the parent's own session is busy every second"
    )?;
    let inherited = open_many(sandbox, "obslog-api", Ipv4Addr::new(127, 0, 0, 21), 6).await?;
    let parent = open_many(sandbox, "obslog-api", Ipv4Addr::new(127, 0, 0, 21), 1).await?;

    writeln!(
        out,
        "  reports-api       127.0.0.22  25 idle in transaction: pool_size 10 + max_overflow 15,"
    )?;
    writeln!(
        out,
        "                                pinned by a session handed to BackgroundTasks (seed 001)"
    )?;
    let pinned = open_many(sandbox, "reports-api", Ipv4Addr::new(127, 0, 0, 22), 25).await?;
    for s in &pinned {
        s.begin_idle_in_transaction().await?;
    }

    writeln!(
        out,
        "  vabhub-scheduler  127.0.0.23  1 aborted transaction a singleton service holds (seed 003)"
    )?;
    let held = open_many(sandbox, "vabhub-scheduler", Ipv4Addr::new(127, 0, 0, 23), 1).await?;
    held[0].abort_transaction().await?;

    writeln!(
        out,
        "  storefront        127.0.0.24  healthy: 2 running queries, 1 pooled session in use every second"
    )?;
    let running = open_many(sandbox, "storefront", Ipv4Addr::new(127, 0, 0, 24), 2).await?;
    for s in &running {
        s.start_active(120.0);
    }
    let pooled = open_many(sandbox, "storefront", Ipv4Addr::new(127, 0, 0, 24), 1).await?;

    writeln!(
        out,
        "  celery-worker     127.0.0.25  NullPool: ~20 sessions a second of a few ms (seed 002)"
    )?;
    writeln!(
        out,
        "  psql              127.0.0.1   a DBA's idle console (excluded by the policy)"
    )?;
    let console = vec![
        sandbox
            .open_session(&SessionSpec::new("shop", "shop", "orders").application("psql"))
            .await?,
    ];

    let group = |label, sessions, leaking| Group {
        label,
        sessions,
        leaking,
    };
    Ok(vec![
        group(
            "obslog-api: 6 idle sessions inherited across fork()",
            inherited,
            true,
        ),
        group(
            "obslog-api: the parent's own session, busy every second",
            parent,
            false,
        ),
        group(
            "reports-api: 25 pinned sessions idle in transaction",
            pinned,
            true,
        ),
        group(
            "vabhub-scheduler: 1 aborted transaction held open",
            held,
            true,
        ),
        group("storefront: 2 running queries", running, false),
        group(
            "storefront: 1 pooled session, busy every second",
            pooled,
            false,
        ),
        group("psql: a DBA's idle console (excluded)", console, false),
    ])
}

/// A healthy pool reuses its sessions: use these every second, forever.
async fn keep_busy(sessions: &[&ClientSession]) {
    loop {
        for s in sessions {
            let _ = s.touch().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Seed 002's NullPool worker: a session opened, used once and closed, twenty times a second.
async fn churn(sandbox: &Sandbox) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let _ = open(sandbox, "celery-worker", Ipv4Addr::new(127, 0, 0, 25)).await;
    }
}
