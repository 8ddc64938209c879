//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::Duration;
use crate::controller::InitialList;
use crate::standalone::Output;
use crate::telemetry::LogFormat;

/// poolwarden finds the PostgreSQL sessions applications leak, names the workload that leaked
/// them, and ends the ones a PoolPolicy condemns.
#[derive(Parser, Debug)]
#[command(name = "poolwarden", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "POOLWARDEN_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the PoolPolicy CustomResourceDefinition (YAML), as committed in crds/.
    Crd,
    /// Look at a database once and report sessions, leaks and what would be terminated.
    /// Never terminates anything.
    Check(Standalone),
    /// Watch a database on the policy's interval; in Enforce mode, terminate what it condemns.
    Run {
        #[command(flatten)]
        standalone: Standalone,
        /// Override the policy's interval, e.g. 5s.
        #[arg(long)]
        interval: Option<Duration>,
        /// Stop after this many cycles (default: until Ctrl-C).
        #[arg(long)]
        cycles: Option<u64>,
        /// Append an audit record (one JSON object a line) for every session `Enforce` sets out
        /// to end: terminated, or left alone and why. The records are logged too (target
        /// `poolwarden::audit`).
        #[arg(long, value_name = "FILE")]
        audit_log: Option<PathBuf>,
    },
    /// Reconcile PoolPolicies in a Kubernetes cluster (the container's default command).
    Controller(ControllerArgs),
    /// A guided demo on a throwaway local PostgreSQL: leaking sessions that reproduce real
    /// post-mortems, then poolwarden finding and ending them. Cleans up after itself.
    /// (Not in the operator's image: built with the `demo` feature, which `cargo run` has.)
    #[cfg(feature = "demo")]
    Demo {
        /// Which server the demo runs on: PostgreSQL, or MariaDB for the MySQL engine.
        #[arg(long, value_enum, default_value_t = DemoEngine::Postgres)]
        engine: DemoEngine,
    },
}

/// The servers `poolwarden demo` can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DemoEngine {
    Postgres,
    Mysql,
}

/// Where and what to check, outside Kubernetes.
#[derive(clap::Args, Debug)]
pub struct Standalone {
    /// postgres://user:password@host:5432/dbname?sslmode=verify-full&sslrootcert=/path/ca.pem
    #[arg(long, env = "POOLWARDEN_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// A PoolPolicy manifest (or just its spec) in YAML; `spec.database` and `spec.poolers` are
    /// ignored (they name Secrets).
    #[arg(long)]
    pub policy: PathBuf,
    /// A PgBouncer in front of the server: its admin console's URL,
    /// postgres://stats:password@pgbouncer:6432/pgbouncer (a `stats_users` user is enough),
    /// optionally named NAME=URL. Repeat the flag for several poolers.
    #[arg(
        long = "pooler",
        value_name = "[NAME=]URL",
        env = "POOLWARDEN_POOLER_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub poolers: Vec<String>,
    /// How to print the report.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `poolwarden controller`.
#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Watch only these namespaces (repeat the flag); all namespaces when none is given.
    #[arg(
        long = "namespace",
        value_name = "NAMESPACE",
        env = "POOLWARDEN_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http_addr: std::net::SocketAddr,
    /// Elect a leader on a Lease so that exactly one replica acts; turn off only for one replica.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "poolwarden")]
    pub lease_name: String,
    /// Namespace of the Lease (defaults to the pod's own, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Seconds a leader's claim lasts without renewal. The leader renews every 2/15 of it and
    /// stops acting when it could not renew for 2/3 of it (its renew deadline: 10 s of 15 s).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_duration: u64,
    /// This replica's name in the election (defaults to POD_NAME, else host name and pid).
    #[arg(long)]
    pub identity: Option<String>,
    /// Watch Secrets (metadata only) so that a rotated credential takes effect at once; without
    /// it, poolwarden only needs `get` on Secrets and picks changes up on the next cycle.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub watch_secrets: bool,
    /// How many policies are reconciled at once, at most (shared among the namespaces when
    /// `--namespace` names several). A reconcile mostly waits on its database and the API
    /// server, and never on another policy's server (see docs/benchmarks.md, "Scale"): the
    /// default holds 1,000 policies at a 30 s interval. Raise it when
    /// `poolwarden_reconcile_lateness_seconds` shows cycles starting late.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// How the watches get their first list: `auto` streams it where the API server serves
    /// streaming lists (the WatchList feature) and, once one is refused or fails (some storage
    /// backends accept it and then fail it), pages every list from then on, saying so once;
    /// `streaming` or `paged` force one way.
    #[arg(long, value_enum, default_value_t = InitialList::Auto)]
    pub initial_list: InitialList,
    /// Serve the admission webhook (HTTPS, `POST /validate`) on this address, e.g.
    /// `0.0.0.0:8443`: warnings at `kubectl apply` and `kubectl scale` when a workload's largest
    /// scale would overbook a governed database. Off when not given.
    #[arg(long)]
    pub webhook_addr: Option<std::net::SocketAddr>,
    /// A folder holding the webhook's `tls.crt` and `tls.key` (cert-manager's Secret, mounted;
    /// re-read as it renews them). Without it poolwarden makes its own certificate, keeps it in
    /// `--webhook-secret` and its CA in `--webhook-configuration`.
    #[arg(long)]
    pub webhook_cert_dir: Option<std::path::PathBuf>,
    /// The Secret, in the pod's own namespace (POD_NAMESPACE), that holds the certificate
    /// poolwarden makes for its webhook.
    #[arg(long, default_value = "poolwarden-webhook-tls")]
    pub webhook_secret: String,
    /// The Service (in the pod's own namespace) through which the API server calls the webhook:
    /// the certificate names it.
    #[arg(long, default_value = "poolwarden")]
    pub webhook_service: String,
    /// The ValidatingWebhookConfiguration whose `caBundle` poolwarden keeps current.
    #[arg(long, default_value = "poolwarden")]
    pub webhook_configuration: String,
}
