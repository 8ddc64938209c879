//! `poolwarden demo --engine mysql`: the same story on a throwaway MariaDB. Seed 001 ran on MySQL:
//! a pool pinned at 25 threads in `Sleep` with open transactions, next to a pool inherited across
//! `fork()` and a healthy application. `check`, then an `Enforce` run that kills the leaked
//! threads one at a time (each re-read first) and leaves the healthy ones; it cleans up after
//! itself.

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

use poolwarden_sandbox::{MariaDb, MariaDbOptions, MySqlSession, MySqlSessionSpec, SandboxError};

use super::script::{self, Script, Stage};
use super::{DemoError, Group, Survivors};

/// The demo's policy: the PostgreSQL part's, with MySQL's console excluded instead of psql.
const POLICY: &str = "\
mode: Enforce
interval: 2s
scope:
  databases: [orders]
  excludeApplications: [mysql]    # a DBA's console is never touched
idle:
  idleTimeout: 4s                 # seconds, for the demo; think 30m in production
  idleInTransactionTimeout: 3s
  maxTerminationsPerCycle: 40     # a brake: never a mass kill
budgets:
  maxConnectionsPerPod: 25        # pool_size + max_overflow
leakDetection:                    # ages in seconds for the demo; the defaults take minutes
  window: 3s
  strandedIdleAge: 5s
  idleInTransactionAge: 3s
  idleThreshold: 5                # the forked workers' pool is found even with no busy parent
";

/// Runs the MySQL demo, narrating to `out`.
pub async fn run(out: &mut (impl Write + Send)) -> Result<(), DemoError> {
    writeln!(
        out,
        "Starting a throwaway MariaDB (max_connections 60, performance_schema on, recording each \
         thread's last statement)..."
    )?;
    let db = MariaDb::start(MariaDbOptions {
        max_connections: 60,
        performance_schema: true,
        statements_consumer: true,
        ..MariaDbOptions::default()
    })
    .await?;
    let result = play(&db, out).await;
    db.stop();
    writeln!(out, "\nThe throwaway MariaDB is stopped and removed.")?;
    result
}

async fn play(db: &MariaDb, out: &mut (impl Write + Send)) -> Result<(), DemoError> {
    db.create_database("orders").await?;
    db.create_user("shop", "shop", &["ALL ON orders.*"]).await?;
    db.create_user(
        "poolwarden",
        "monitor",
        &[
            "PROCESS, CONNECTION ADMIN ON *.*",
            "SELECT ON performance_schema.*",
        ],
    )
    .await?;
    writeln!(
        out,
        "Listening on 127.0.0.1:{}; monitoring user poolwarden (PROCESS, CONNECTION ADMIN).\n",
        db.port()
    )?;
    let groups = open_sessions(db, out).await?;
    let script = Script {
        engine: "mysql",
        policy: POLICY,
        policy_heading: "The policy:",
        url: db.url("poolwarden", "monitor", "") + "?ssl-mode=DISABLED",
        poolers: Vec::new(),
        all_ended: "all killed",
        success: "Every leaked thread was killed; every healthy one was left alone.",
    };
    script::play(&MySql { groups }, script, out).await
}

/// The MySQL demo's threads.
struct MySql {
    groups: Vec<Group<MySqlSession>>,
}

impl Stage for MySql {
    async fn keep_busy(&self) {
        let pooled = self
            .groups
            .iter()
            .find(|g| g.label.contains("pooled"))
            .and_then(|g| g.sessions.first());
        keep_busy(pooled).await
    }

    async fn survivors(&self) -> Result<Vec<Survivors>, DemoError> {
        let mut survivors = Vec::new();
        for group in &self.groups {
            survivors.push(group.survivors().await);
        }
        Ok(survivors)
    }
}

async fn open_many(
    db: &MariaDb,
    program: &str,
    host: u8,
    n: usize,
) -> Result<Vec<MySqlSession>, SandboxError> {
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(
            db.open_session(
                &MySqlSessionSpec::new("shop", "shop", "orders")
                    .program(program)
                    .from_addr(Ipv4Addr::new(127, 0, 0, host)),
            )
            .await?,
        );
    }
    Ok(sessions)
}

async fn open_sessions(
    db: &MariaDb,
    out: &mut impl Write,
) -> Result<Vec<Group<MySqlSession>>, DemoError> {
    writeln!(
        out,
        "Opening threads that reproduce the post-mortems (addresses stand in for pods):"
    )?;
    writeln!(
        out,
        "  reports-api  127.0.0.22  25 Sleep in a transaction: pool_size 10 + max_overflow 15,"
    )?;
    writeln!(
        out,
        "                           pinned by a session handed to BackgroundTasks (seed 001, pymysql)"
    )?;
    let pinned = open_many(db, "reports-api", 22, 25).await?;
    for s in &pinned {
        s.begin_idle_in_transaction().await?;
    }
    writeln!(
        out,
        "  obslog-api   127.0.0.21  6 Sleep: a pool inherited by fork()ed workers (seed 000)"
    )?;
    let inherited = open_many(db, "obslog-api", 21, 6).await?;
    writeln!(
        out,
        "  storefront   127.0.0.24  healthy: 2 running queries, 1 pooled thread in use every second"
    )?;
    let running = open_many(db, "storefront", 24, 2).await?;
    for s in &running {
        s.start_active(120.0);
    }
    let pooled = open_many(db, "storefront", 24, 1).await?;
    writeln!(
        out,
        "  mysql        127.0.0.1   a DBA's idle console (excluded by the policy)"
    )?;
    let console = open_many(db, "mysql", 1, 1).await?;
    let group = |label, sessions, leaking| Group {
        label,
        sessions,
        leaking,
    };
    Ok(vec![
        group(
            "reports-api: 25 pinned threads idle in a transaction",
            pinned,
            true,
        ),
        group(
            "obslog-api: 6 idle threads inherited across fork()",
            inherited,
            true,
        ),
        group("storefront: 2 running queries", running, false),
        group(
            "storefront: 1 pooled thread, busy every second",
            pooled,
            false,
        ),
        group("mysql: a DBA's idle console (excluded)", console, false),
    ])
}

/// A healthy pool reuses its connections: use the pooled one every second, forever.
async fn keep_busy(session: Option<&MySqlSession>) {
    loop {
        if let Some(s) = session {
            let _ = s.touch().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
