//! Shared set-up for the integration tests: a throwaway PostgreSQL with an application role, a
//! monitoring role, and helpers to open sessions and run poolwarden's cycle against them.
#![allow(dead_code)] // each test binary uses its own subset

pub mod controller;
pub mod kube;
pub mod mariadb;
pub mod proxy;

use std::net::Ipv4Addr;
use std::time::Duration;

use poolwarden::cycle::{Cycle, Pass};
use poolwarden::database::ConnectOptions;
use poolwarden::database::postgres::Postgres;
use poolwarden::decide::{ClusterView, Memory, Rules};
use poolwarden_sandbox::{
    ClientSession, PgBouncer, PgBouncerOptions, PoolMode, PooledClient, Sandbox, SandboxOptions,
    SessionSpec,
};

pub const APP_DB: &str = "app";

/// A sandbox with database `app`, application role `app` and roles for monitoring:
/// `monitor` (pg_monitor + pg_signal_backend) and `watcher` (pg_monitor only).
pub async fn sandbox() -> Sandbox {
    sandbox_with(SandboxOptions::default()).await
}

pub async fn sandbox_with(options: SandboxOptions) -> Sandbox {
    let sb = Sandbox::start(options).await.expect("sandbox starts");
    sb.create_database(APP_DB).await.unwrap();
    sb.create_role("app", "app", &[]).await.unwrap();
    sb.create_role("batch", "batch", &[]).await.unwrap();
    sb.create_role("monitor", "monitor", &["pg_monitor", "pg_signal_backend"])
        .await
        .unwrap();
    sb.create_role("watcher", "watcher", &["pg_monitor"])
        .await
        .unwrap();
    sb
}

pub fn monitor_url(sb: &Sandbox) -> String {
    sb.url("monitor", "monitor", APP_DB) + "?sslmode=disable"
}

/// A session of role `app` named `application`, from `127.0.0.<host>`.
pub async fn open(sb: &Sandbox, application: &str, host: u8) -> ClientSession {
    sb.open_session(
        &SessionSpec::new("app", "app", APP_DB)
            .application(application)
            .from_addr(Ipv4Addr::new(127, 0, 0, host)),
    )
    .await
    .expect("session opens")
}

/// The pooled database of [`transaction_pooler`].
pub const POOLED_DB: &str = "app_tx";

/// A PgBouncer in front of `sb` whose database `app_tx` pools `app`'s transactions over `size`
/// server connections.
pub async fn transaction_pooler(sb: &Sandbox, size: u32) -> PgBouncer {
    sb.start_pgbouncer(
        PgBouncerOptions::default()
            .database(POOLED_DB, APP_DB, PoolMode::Transaction, size)
            .user("app", "app"),
    )
    .await
    .expect("PgBouncer starts")
}

/// A client of role `app` through the pooler's `app_tx`, named `application`, from
/// `127.0.0.<host>`.
pub async fn through_pooler(pooler: &PgBouncer, application: &str, host: u8) -> PooledClient {
    pooler
        .open_client(
            &SessionSpec::new("app", "app", POOLED_DB)
                .application(application)
                .from_addr(Ipv4Addr::new(127, 0, 0, host)),
        )
        .await
        .expect("client opens through the pooler")
}

/// A superuser client of database `app`, over the Unix socket: for tables the sessions use.
pub async fn app_admin(sb: &Sandbox) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(sb.dir())
        .port(sb.port())
        .user("postgres")
        .dbname(APP_DB)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("superuser connection to app");
    tokio::spawn(connection);
    client
}

/// Compiles a policy spec written in YAML.
pub fn rules(yaml: &str) -> Rules {
    let spec = serde_saphyr::from_str(yaml).expect("policy YAML parses");
    Rules::compile(&spec).expect("policy compiles")
}

/// poolwarden's monitoring connection, as `url`'s role.
pub async fn connect(url: &str) -> Postgres {
    Postgres::connect(url, ConnectOptions::default())
        .await
        .expect("monitoring connection")
}

/// One observe → decide → act cycle with no cluster and no memory.
pub async fn cycle(pg: &mut Postgres, rules: &Rules) -> Cycle {
    Pass::new(rules, &ClusterView::default(), &Memory::default())
        .run(pg)
        .await
        .expect("cycle runs")
}

/// Whether the server still shows backend `pid`. Asked over the admin connection: a query on
/// the session itself would count as activity and reset its idle clock.
pub async fn alive(sb: &Sandbox, pid: i64) -> bool {
    let admin = sb.admin().await.unwrap();
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int8",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0);
    n == 1
}

/// Waits until the server no longer shows `pid` (a terminated backend exits asynchronously).
pub async fn gone(sb: &Sandbox, pid: i64) -> bool {
    for _ in 0..100 {
        if !alive(sb, pid).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

pub async fn pause(millis: u64) {
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

/// A listener on a free port of 127.0.0.1 that accepts connections and never says a word, like
/// a hung server: the port, and the task holding the connections (abort it when done).
pub async fn silent_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    (port, holder)
}
