//! The demo's pod behind a PgBouncer: a throwaway PgBouncer in transaction pooling in front of
//! the demo's PostgreSQL, one pod (checkout-api, 127.0.0.26) leaving a transaction idle behind
//! it, and a healthy pod (search-api, 127.0.0.27) querying every second through it. Two server
//! connections the pooler holds for reuse sit idle longer than the policy's `idleTimeout`: only
//! the pooler's word (`--pooler`) keeps poolwarden from ending them.
//!
//! Without `pgbouncer` on the machine (or when it will not start) the demo says so in one line
//! and goes on without this part: it never fails for it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

use poolwarden_sandbox::{
    PgBouncer, PgBouncerOptions, PoolMode, PooledClient, Sandbox, SandboxError, SessionSpec,
};

use super::{DemoError, Survivors};

/// PgBouncer's name of the demo's database: the clients connect to it, PostgreSQL sees `orders`.
const POOLED_DATABASE: &str = "orders";

/// The pooler and the pods behind it.
pub struct BehindThePooler {
    pooler: PgBouncer,
    leaking: PooledClient,
    healthy: PooledClient,
    /// The server connections the pooler holds for reuse (their backend pids), idle.
    held: Vec<i64>,
}

impl BehindThePooler {
    /// Starts the pooler and opens the pods' connections through it; `None` (said in one line)
    /// when PgBouncer is not there or does not start.
    pub async fn open(sandbox: &Sandbox, out: &mut impl Write) -> Result<Option<Self>, DemoError> {
        let started = sandbox
            .start_pgbouncer(
                PgBouncerOptions::default()
                    .database(POOLED_DATABASE, "orders", PoolMode::Transaction, 4)
                    .user("shop", "shop"),
            )
            .await;
        let pooler = match started {
            Ok(pooler) => pooler,
            Err(SandboxError::NoPgBouncer) => {
                writeln!(
                    out,
                    "  (pgbouncer is not installed, so the pod behind a PgBouncer is left out; \
                     scripts/setup or `apt-get install pgbouncer` adds it)"
                )?;
                return Ok(None);
            }
            Err(e) => {
                let first_line = e.to_string().lines().next().unwrap_or_default().to_owned();
                writeln!(
                    out,
                    "  (PgBouncer did not start, so the pod behind it is left out: {first_line})"
                )?;
                return Ok(None);
            }
        };
        writeln!(
            out,
            "  checkout-api      127.0.0.26  through a PgBouncer (transaction pooling, 127.0.0.1:{}):",
            pooler.port()
        )?;
        writeln!(
            out,
            "                                1 transaction left idle; PostgreSQL sees only the pooler's address"
        )?;
        writeln!(
            out,
            "  search-api        127.0.0.27  healthy, through the same PgBouncer: a query every second;"
        )?;
        writeln!(
            out,
            "                                the pooler keeps 2 more server connections idle for reuse"
        )?;
        let leaking = open(&pooler, "checkout-api", 26).await?;
        let healthy = open(&pooler, "search-api", 27).await?;
        let other = open(&pooler, "search-api", 27).await?;
        // The leak holds one server connection; two transactions beside it make the pooler
        // open two more, which it keeps once they commit, linked to nobody.
        leaking.begin_idle_in_transaction().await?;
        let held = vec![
            healthy.begin_idle_in_transaction().await?,
            other.begin_idle_in_transaction().await?,
        ];
        healthy.commit().await?;
        other.commit().await?;
        // `other` closes here; the server connection it used stays with the pooler.
        Ok(Some(Self {
            pooler,
            leaking,
            healthy,
            held,
        }))
    }

    /// `--pooler`'s argument: the console as its stats user, which is all poolwarden needs.
    pub fn pooler_arg(&self) -> String {
        format!("pgbouncer={}?sslmode=disable", self.pooler.stats_url())
    }

    /// The healthy pod's query every second, for ever.
    pub async fn keep_busy(&self) {
        loop {
            let _ = self.healthy.touch().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The closing table's rows for what is behind the pooler.
    pub async fn survivors(&self, sandbox: &Sandbox) -> Result<Vec<Survivors>, DemoError> {
        let admin = sandbox.admin().await?;
        let pids: Vec<i32> = self
            .held
            .iter()
            .filter_map(|p| i32::try_from(*p).ok())
            .collect();
        let held_alive: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                &[&pids],
            )
            .await
            .map_err(|e| SandboxError::Unexpected(format!("counting the held connections: {e}")))?
            .get(0);
        Ok(vec![
            Survivors::of(
                "checkout-api via PgBouncer: 1 transaction left idle",
                true,
                usize::from(self.leaking.is_alive().await),
                1,
            ),
            Survivors::of(
                "search-api via PgBouncer: a query every second",
                false,
                usize::from(self.healthy.is_alive().await),
                1,
            ),
            Survivors::of(
                "PgBouncer's own server connections, idle, held for reuse",
                false,
                held_alive as usize,
                self.held.len(),
            ),
        ])
    }

    /// Stops the pooler and removes its files.
    pub fn stop(self) {
        self.pooler.stop();
    }
}

async fn open(pooler: &PgBouncer, app: &str, host: u8) -> Result<PooledClient, SandboxError> {
    pooler
        .open_client(
            &SessionSpec::new("shop", "shop", POOLED_DATABASE)
                .application(app)
                .from_addr(Ipv4Addr::new(127, 0, 0, host)),
        )
        .await
}
