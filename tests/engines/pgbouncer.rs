//! The pooler reader and the join against a real PgBouncer in front of a real PostgreSQL, both
//! started by the test: clients come through the pooler from chosen 127.x addresses (the pods),
//! and the server sessions PostgreSQL shows are traced back to them. Then whole cycles: the
//! default policy names the client behind an idle transaction (`check --pooler`, JSON), and
//! `Enforce` ends it through the verified termination while never ending the connections the
//! pooler holds, whatever the idle rules say, with its console read or not.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::support::*;
use poolwarden::cycle::{Cycle, Pass};
use poolwarden::database::ConnectOptions;
use poolwarden::database::pgbouncer::{ConsoleSnapshot, PoolerConsole, PoolerError};
use poolwarden::database::postgres::Postgres;
use poolwarden::database::{Engine, SessionState, Snapshot};
use poolwarden::decide::pooler::{self, Behind, Pooler, PoolerJoin};
use poolwarden::decide::{self, ClusterView, Inputs, Memory, Rules, Source, Via};
use poolwarden::standalone::{self, Output, PolicyFile};
use poolwarden_sandbox::{
    PgBouncer, PgBouncerOptions, PoolMode, PooledClient, Sandbox, SessionSpec,
};

const WAIT: Duration = Duration::from_secs(20);

/// A sandbox (see `crate::support::sandbox`) with a PgBouncer in front: `app` in session pooling,
/// `app_tx` in transaction pooling with two servers, `app_one` in transaction pooling with one.
async fn pooled(tls: bool) -> (Sandbox, PgBouncer) {
    let sb = sandbox().await;
    let pooler = sb
        .start_pgbouncer(PgBouncerOptions {
            tls,
            ..PgBouncerOptions::default()
                .database("app", APP_DB, PoolMode::Session, 5)
                .database("app_tx", APP_DB, PoolMode::Transaction, 2)
                .database("app_one", APP_DB, PoolMode::Transaction, 1)
                .user("app", "app")
        })
        .await
        .expect("PgBouncer starts");
    (sb, pooler)
}

/// A client of role `app` through the pooler's database `database`, from `127.0.0.<host>`.
async fn client(pooler: &PgBouncer, database: &str, host: u8) -> PooledClient {
    pooler
        .open_client(
            &SessionSpec::new("app", "app", database).from_addr(Ipv4Addr::new(127, 0, 0, host)),
        )
        .await
        .expect("client opens through the pooler")
}

fn console_url(pooler: &PgBouncer) -> String {
    pooler.stats_url() + "?sslmode=disable"
}

async fn console(url: &str) -> PoolerConsole {
    PoolerConsole::connect(url, ConnectOptions::default())
        .await
        .expect("console connection")
}

/// One look at each, and the join.
async fn look(
    pg: &mut Postgres,
    console: &mut PoolerConsole,
) -> (Snapshot, ConsoleSnapshot, PoolerJoin) {
    let snapshot = pg.observe().await.unwrap();
    let shown = console.observe().await.unwrap();
    let join = pooler::join(
        &snapshot.sessions,
        &[Pooler {
            name: "pgbouncer",
            console: &shown,
        }],
    );
    (snapshot, shown, join)
}

/// The client address the join names for backend `pid`.
fn pod_of(join: &PoolerJoin, pid: i64) -> SocketAddr {
    match join.behind(pid) {
        Some(Behind::Client(client)) => SocketAddr::new(
            client.addr.expect("a TCP client"),
            client.port.expect("a TCP client"),
        ),
        other => panic!("backend {pid} is not linked to a client: {other:?}"),
    }
}

fn is_held(join: &PoolerJoin, pid: i64) -> bool {
    matches!(join.behind(pid), Some(Behind::HeldByPooler { .. }))
}

/// The backends PostgreSQL shows coming from the pooler (over TCP from 127.0.0.1).
fn pooler_backends(snapshot: &Snapshot) -> Vec<i64> {
    snapshot
        .sessions
        .iter()
        .filter(|s| {
            s.user.as_deref() == Some("app")
                && s.client_addr == Some(IpAddr::from(Ipv4Addr::LOCALHOST))
        })
        .map(|s| s.pid)
        .collect()
}

#[tokio::test]
async fn session_pooled_server_sessions_are_named_by_their_clients_addresses() {
    let (sb, pooler) = pooled(false).await;
    let orders = client(&pooler, "app", 31).await;
    let billing = client(&pooler, "app", 32).await;
    let orders_pid = orders.backend_pid().await.unwrap();
    let billing_pid = billing.backend_pid().await.unwrap();
    // One of them idles in a transaction: in session pooling its server is its own either way.
    billing.begin_idle_in_transaction().await.unwrap();

    let mut pg = connect(&monitor_url(&sb)).await;
    let mut console = console(&console_url(&pooler)).await;
    let (snapshot, _, join) = look(&mut pg, &mut console).await;

    assert_eq!(pod_of(&join, orders_pid), orders.local_addr());
    assert_eq!(pod_of(&join, billing_pid), billing.local_addr());
    let billing_seen = snapshot
        .sessions
        .iter()
        .find(|s| s.pid == billing_pid)
        .unwrap();
    assert_eq!(billing_seen.state, SessionState::IdleInTransaction);
    // PostgreSQL itself only sees the pooler's address.
    assert_eq!(
        billing_seen.client_addr,
        Some(IpAddr::from(Ipv4Addr::LOCALHOST))
    );
    assert_eq!(join.tallies[0].linked, 2);
    assert_eq!(join.tallies[0].held_by_pooler, 0);
    // The monitoring connection and the sandbox's own admin connection are not the pooler's.
    assert_eq!(join.by_pid.len(), 2);
}

#[tokio::test]
async fn transaction_pooled_sessions_are_linked_while_a_transaction_is_open_and_held_after() {
    let (sb, pooler) = pooled(false).await;
    let leaking = client(&pooler, "app_tx", 41).await;
    let healthy = client(&pooler, "app_tx", 42).await;
    let leaked_pid = leaking.begin_idle_in_transaction().await.unwrap();
    // The healthy client's statement takes the other server and gives it back at once.
    let healthy_pid = healthy.backend_pid().await.unwrap();
    assert_ne!(healthy_pid, leaked_pid);

    let mut pg = connect(&monitor_url(&sb)).await;
    let mut console = console(&console_url(&pooler)).await;
    let (snapshot, shown, join) = look(&mut pg, &mut console).await;

    assert_eq!(pod_of(&join, leaked_pid), leaking.local_addr());
    let leaked = snapshot
        .sessions
        .iter()
        .find(|s| s.pid == leaked_pid)
        .unwrap();
    assert_eq!(leaked.state, SessionState::IdleInTransaction);
    // The other server session belongs to the pooler, not to the healthy client that used it.
    assert!(
        is_held(&join, healthy_pid),
        "{:?}",
        join.behind(healthy_pid)
    );
    assert_eq!(join.tallies[0].linked, 1);
    assert_eq!(join.tallies[0].held_by_pooler, 1);
    // Every server session PostgreSQL shows from the pooler is accounted for.
    let mut from_pooler = pooler_backends(&snapshot);
    from_pooler.sort();
    let mut joined: Vec<i64> = join.by_pid.keys().copied().collect();
    joined.sort();
    assert_eq!(from_pooler, joined);
    // The healthy client is connected but holds no server.
    let healthy_row = shown
        .clients
        .iter()
        .find(|c| c.port == Some(healthy.local_addr().port()))
        .unwrap();
    assert_eq!(
        healthy_row.addr,
        Some(IpAddr::from(Ipv4Addr::new(127, 0, 0, 42)))
    );
    assert_eq!(healthy_row.link, None);

    // After the commit the server goes back to the pool: nobody's any more.
    leaking.commit().await.unwrap();
    let (_, _, join) = look(&mut pg, &mut console).await;
    assert!(is_held(&join, leaked_pid), "{:?}", join.behind(leaked_pid));
    assert_eq!(join.tallies[0].linked, 0);
    assert_eq!(join.tallies[0].held_by_pooler, 2);
}

#[tokio::test]
async fn the_stats_user_reads_pools_clients_and_the_clients_waiting_for_a_full_pool() {
    let (_sb, pooler) = pooled(false).await;
    let holder = client(&pooler, "app_one", 51).await;
    holder.begin_idle_in_transaction().await.unwrap();
    // The pool has one server, held by that transaction: the next statement waits for it.
    let waiter = client(&pooler, "app_one", 52).await;
    let waiting = tokio::spawn(async move {
        waiter.touch().await.unwrap();
        waiter
    });

    let mut console = console(&console_url(&pooler)).await;
    let began = std::time::Instant::now();
    let shown = loop {
        let shown = console.observe().await.unwrap();
        let pool = shown
            .pools
            .iter()
            .find(|p| p.database == "app_one")
            .unwrap();
        if pool.clients_waiting == 1 {
            break shown;
        }
        assert!(began.elapsed() < WAIT, "no client waits: {pool:?}");
        pause(20).await;
    };
    let pool = shown
        .pools
        .iter()
        .find(|p| p.database == "app_one")
        .unwrap();
    assert_eq!(pool.user, "app");
    assert_eq!(pool.servers_active, 1);
    assert_eq!(pool.pool_mode.as_deref(), Some("transaction"));
    let waiter_row = shown
        .clients
        .iter()
        .find(|c| c.addr == Some(IpAddr::from(Ipv4Addr::new(127, 0, 0, 52))))
        .unwrap();
    assert!(waiter_row.state.starts_with("waiting"), "{waiter_row:?}");
    assert!(waiter_row.waiting_for.is_some());
    assert_eq!(waiter_row.link, None);
    // Times are read, by the pooler's clock: the console's own row is among the clients.
    assert!(shown.clients.iter().any(|c| c.is_console()));
    assert!(
        shown
            .clients
            .iter()
            .all(|c| c.connected_for.is_some() && c.since_request.is_some())
    );
    assert!(shown.servers.iter().all(|s| s.connected_for.is_some()));

    // Once the holder commits, the waiter gets the server.
    holder.commit().await.unwrap();
    let waiter = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(waiter.is_alive().await);
}

#[tokio::test]
async fn the_console_over_tls_is_verified_like_postgresql() {
    let (sb, pooler) = pooled(true).await;
    let verified = |ca: &std::path::Path| {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            pooler.stats_url(),
            ca.display()
        )
    };
    let mut tls_console = console(&verified(pooler.ca_cert_path().unwrap())).await;
    assert!(!tls_console.observe().await.unwrap().clients.is_empty());

    // Another throwaway CA did not sign this pooler's certificate: refused, as a TLS failure.
    let other = sb
        .start_pgbouncer(PgBouncerOptions {
            tls: true,
            ..PgBouncerOptions::default()
        })
        .await
        .unwrap();
    let err = PoolerConsole::connect(
        &verified(other.ca_cert_path().unwrap()),
        ConnectOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PoolerError::Tls(_)), "{err}");
}

#[tokio::test]
async fn a_pooler_without_tls_refuses_sslmode_require() {
    let (_sb, pooler) = pooled(false).await;
    let err = PoolerConsole::connect(
        &format!("{}?sslmode=require", pooler.stats_url()),
        ConnectOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PoolerError::Tls(_)), "{err}");
}

#[tokio::test]
async fn console_failures_are_typed_errors() {
    let (sb, pooler) = pooled(false).await;

    // Not allowed into the console: an application user.
    let app = pooler.url("app", "app", "pgbouncer") + "?sslmode=disable";
    let err = PoolerConsole::connect(&app, ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PoolerError::NotPermitted { .. }), "{err}");
    assert!(err.to_string().contains("stats_users"), "{err}");
    assert!(!err.is_transient());

    // A wrong password.
    let wrong =
        pooler.url(poolwarden_sandbox::STATS_USER, "wrong", "pgbouncer") + "?sslmode=disable";
    let err = PoolerConsole::connect(&wrong, ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PoolerError::AuthFailed { .. }), "{err}");
    assert_eq!(err.category(), "AuthFailed");

    // PostgreSQL itself named as the pooler.
    let postgres = sb.url("monitor", "monitor", "pgbouncer") + "?sslmode=disable";
    let err = PoolerConsole::connect(&postgres, ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PoolerError::NotAConsole { .. }), "{err}");

    // A port where nothing listens.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let nothing =
        format!("postgres://poolstats:poolstats@127.0.0.1:{port}/pgbouncer?sslmode=disable");
    let err = PoolerConsole::connect(&nothing, ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PoolerError::Unreachable { .. }), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_console_that_never_answers_times_out() {
    // Accepts the connection and then says nothing, like a hung pooler.
    let (port, holder) = silent_listener().await;
    let options = ConnectOptions {
        connect_timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_millis(500),
        ..ConnectOptions::default()
    };
    let url = format!("postgres://poolstats:poolstats@127.0.0.1:{port}/pgbouncer?sslmode=disable");
    let err = PoolerConsole::connect(&url, options).await.unwrap_err();
    assert!(matches!(err, PoolerError::Timeout { .. }), "{err}");
    assert!(err.is_transient());
    holder.abort();
}

#[tokio::test]
async fn a_pooler_that_goes_away_is_a_typed_error_and_attribution_falls_back() {
    let (sb, pooler) = pooled(false).await;
    let leaking = client(&pooler, "app_tx", 61).await;
    let leaked_pid = leaking.begin_idle_in_transaction().await.unwrap();
    let mut pg = connect(&monitor_url(&sb)).await;
    let mut console = console(&console_url(&pooler)).await;
    let (_, _, join) = look(&mut pg, &mut console).await;
    assert_eq!(pod_of(&join, leaked_pid), leaking.local_addr());

    pooler.stop();
    let err = console.observe().await.unwrap_err();
    assert!(
        matches!(
            err,
            PoolerError::ConnectionLost { .. } | PoolerError::Unreachable { .. }
        ),
        "{err}"
    );
    assert!(err.is_transient());
    // And again: the console is reopened, and still unreachable.
    let err = console.observe().await.unwrap_err();
    assert!(matches!(err, PoolerError::Unreachable { .. }), "{err}");
    // Without the pooler's view the join names nobody: attribution falls back to what
    // PostgreSQL alone shows.
    let snapshot = pg.observe().await.unwrap();
    let join = pooler::join(&snapshot.sessions, &[]);
    assert!(join.by_pid.is_empty());
}

/// Waits until PostgreSQL shows backend `pid` in its state for longer than `age`, by its clock.
async fn in_state_longer_than(pg: &mut Postgres, pid: i64, age: Duration) {
    let deadline = std::time::Instant::now() + age + WAIT;
    loop {
        let snapshot = pg.observe().await.unwrap();
        let seen = snapshot.sessions.iter().find(|s| s.pid == pid);
        if seen.is_some_and(|s| s.in_state_for(snapshot.observed_at) > age) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{pid}: {seen:?}");
        pause(250).await;
    }
}

/// A client that runs a statement every second, as a healthy pod does, until dropped.
struct Busy(tokio::task::JoinHandle<()>);

impl Busy {
    fn start(client: PooledClient) -> Self {
        Self(tokio::spawn(async move {
            loop {
                client.touch().await.unwrap();
                pause(1000).await;
            }
        }))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn check_with_the_default_policy_names_the_client_of_an_idle_transaction_behind_the_pooler() {
    let (sb, pooler) = pooled(false).await;
    // Transaction pooling, two servers: one pod leaves a transaction open, another queries
    // every second through the other server.
    let leaking = client(&pooler, "app_tx", 71).await;
    let leaked_pid = leaking.begin_idle_in_transaction().await.unwrap();
    let healthy = client(&pooler, "app_tx", 72).await;
    let healthy_pid = healthy.backend_pid().await.unwrap();
    let _busy = Busy::start(healthy);
    let mut pg = connect(&monitor_url(&sb)).await;
    // The default's idleInTransactionAge is 2m: the leak as it really looks, by the server's clock.
    in_state_longer_than(&mut pg, leaked_pid, Duration::from_secs(125)).await;

    // The policy a user writes: only the database and the pooler (whose URL check takes as a flag).
    let spec = serde_saphyr::from_str(
        "database: {connectionSecretRef: {name: orders-db}}\n\
         poolers: [{name: pgbouncer, consoleSecretRef: {name: orders-pgbouncer}}]\n",
    )
    .unwrap();
    let policy = PolicyFile {
        name: "orders-db".to_owned(),
        rules: Rules::compile(&spec).unwrap(),
        spec,
    };
    let mut out = Vec::new();
    standalone::check(
        &monitor_url(&sb),
        &[format!("pgbouncer={}", console_url(&pooler))],
        &policy,
        Output::Json,
        &mut out,
    )
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();

    let idle_tx: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "IdleInTransaction")
        .collect();
    assert_eq!(idle_tx.len(), 1, "{report:#}");
    let finding = idle_tx[0];
    assert_eq!(
        finding["subject"]["source"]["type"], "client",
        "{finding:#}"
    );
    assert_eq!(
        finding["subject"]["source"]["address"], "127.0.0.71",
        "{finding:#}"
    );
    assert_eq!(
        finding["pids"],
        serde_json::json!([leaked_pid]),
        "{finding:#}"
    );
    // Nothing about the healthy pod, nor about the server connection the pooler holds.
    let subjects: Vec<String> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["subject"].to_string())
        .collect();
    assert!(
        subjects
            .iter()
            .all(|s| !s.contains("127.0.0.72") && !s.contains("pooler")),
        "{subjects:?}"
    );
    let groups = report["groups"].as_array().unwrap();
    let leaker = groups
        .iter()
        .find(|g| g["source"]["address"] == "127.0.0.71")
        .expect("a group for the leaking client");
    assert_eq!(leaker["via"], "pooler");
    assert_eq!(leaker["poolers"], serde_json::json!(["pgbouncer"]));
    let held = groups
        .iter()
        .find(|g| g["source"]["type"] == "pooler")
        .expect("a group for the pooler's own connections");
    assert_eq!(held["via"], "heldByPooler");
    let pooler_report = &report["poolers"][0];
    assert_eq!(pooler_report["pooler"], "pgbouncer", "{pooler_report:#}");
    assert_eq!(pooler_report["linked"], 1, "{pooler_report:#}");
    assert_eq!(pooler_report["heldByPooler"], 1, "{pooler_report:#}");
    // The default ends nothing; the report does not warn about the pooler.
    assert_eq!(report["dryRun"], serde_json::json!([]), "{report:#}");
    let warnings = report["warnings"].to_string();
    assert!(!warnings.contains("pooler"), "{warnings}");
    assert!(alive(&sb, leaked_pid).await && alive(&sb, healthy_pid).await);

    // The human report says the same.
    let mut out = Vec::new();
    standalone::check(
        &monitor_url(&sb),
        &[format!("pgbouncer={}", console_url(&pooler))],
        &policy,
        Output::Table,
        &mut out,
    )
    .await
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("@127.0.0.71 via pooler pgbouncer"), "{text}");
    assert!(
        text.contains("pooler pgbouncer (held, no client)"),
        "{text}"
    );
    assert!(text.contains("Poolers"), "{text}");
    assert!(!text.contains("warning"), "{text}");
}

/// One Enforce cycle with the given consoles in front.
async fn enforce(pg: &mut Postgres, consoles: &mut [PoolerConsole], rules: &Rules) -> Cycle {
    Pass::new(rules, &ClusterView::default(), &Memory::default())
        .behind(consoles)
        .run(pg)
        .await
        .expect("cycle runs")
}

#[tokio::test]
async fn enforce_ends_the_linked_idle_transaction_and_never_a_connection_the_pooler_holds() {
    let (sb, pooler) = pooled(false).await;
    let leaking = client(&pooler, "app_tx", 81).await;
    let leaked_pid = leaking.begin_idle_in_transaction().await.unwrap();
    let healthy = client(&pooler, "app_tx", 82).await;
    // Its statement took the other server and gave it back: the pooler holds it, idle.
    let held_pid = healthy.backend_pid().await.unwrap();
    let mut pg = connect(&monitor_url(&sb)).await;
    // Every idle rule as tight as it goes: only the pooler's word protects the held one.
    let rules = rules(
        "mode: Enforce\nscope: {users: [app]}\n\
         idle: {idleTimeout: 1s, idleInTransactionTimeout: 2s}\n",
    );
    in_state_longer_than(&mut pg, leaked_pid, Duration::from_secs(3)).await;
    in_state_longer_than(&mut pg, held_pid, Duration::from_secs(2)).await;

    let mut consoles = vec![
        PoolerConsole::new(&console_url(&pooler), ConnectOptions::default())
            .unwrap()
            .named("pgbouncer"),
    ];
    let cycle = enforce(&mut pg, &mut consoles, &rules).await;
    let ended: Vec<i64> = cycle
        .outcome
        .terminated
        .iter()
        .map(|t| t.identity.pid)
        .collect();
    assert_eq!(ended, vec![leaked_pid], "{:#?}", cycle.decision.terminate);
    let t = &cycle.outcome.terminated[0];
    assert_eq!(t.reason.as_str(), "IdleInTransactionTimeout");
    assert_eq!(t.pooler.as_deref(), Some("pgbouncer"));
    assert!(
        matches!(&t.source, Source::Client { address, .. }
            if *address == Some(IpAddr::from(Ipv4Addr::new(127, 0, 0, 81)))),
        "{t:#?}"
    );
    assert!(gone(&sb, leaked_pid).await);
    assert!(alive(&sb, held_pid).await);
    // Its transaction gone, PgBouncer closes the leaking client's connection with an error.
    assert!(leaking.touch().await.is_err());
    // Not for lack of a reason: without the pooler's word the same snapshot condemns it.
    let blind = decide::decide(Inputs {
        snapshot: &cycle.snapshot,
        rules: &rules,
        cluster: &ClusterView::default(),
        poolers: &[],
        memory: &Memory::default(),
    });
    assert!(
        blind.terminate.iter().any(|t| t.identity.pid == held_pid),
        "{:#?}",
        blind.terminate
    );
    let held = cycle
        .decision
        .groups
        .iter()
        .find(|g| g.via == Via::HeldByPooler)
        .expect("the held connection is counted on the pooler");
    assert_eq!(held.counts.idle, 1);

    // Cycle after cycle, the held connection stays, and the healthy pod keeps working.
    for _ in 0..2 {
        pause(1200).await;
        let cycle = enforce(&mut pg, &mut consoles, &rules).await;
        assert!(
            cycle
                .decision
                .terminate
                .iter()
                .all(|t| t.identity.pid != held_pid),
            "{:#?}",
            cycle.decision.terminate
        );
        assert!(alive(&sb, held_pid).await);
    }
    healthy.touch().await.unwrap();

    // A console that cannot be read: a warning, attribution by address, and still no session is
    // ended for being idle (the held one cannot be told from a client's any more).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut unreadable = vec![
        PoolerConsole::new(
            &format!("postgres://poolstats:x@127.0.0.1:{closed_port}/pgbouncer?sslmode=disable"),
            ConnectOptions::default(),
        )
        .unwrap(),
    ];
    in_state_longer_than(&mut pg, held_pid, Duration::from_secs(2)).await;
    let cycle = enforce(&mut pg, &mut unreadable, &rules).await;
    assert!(
        cycle.decision.terminate.is_empty(),
        "{:#?}",
        cycle.decision.terminate
    );
    assert!(
        cycle
            .decision
            .warnings
            .iter()
            .any(|w| w.contains(&format!("127.0.0.1:{closed_port}"))),
        "{:?}",
        cycle.decision.warnings
    );
    assert!(cycle.decision.poolers[0].error.is_some());
    assert!(alive(&sb, held_pid).await);
}

// ------------------------------------------------------------------------------------------------
// A pod's pool connections through a transaction pooler: between transactions they are only the
// pooler's clients, with no server session PostgreSQL could show. `SHOW CLIENTS` counts them.

/// A sandbox with a PgBouncer whose `app_tx` pools transactions over six servers.
async fn transaction_pooled() -> (Sandbox, PgBouncer) {
    let sb = sandbox().await;
    let pooler = transaction_pooler(&sb, 6).await;
    (sb, pooler)
}

/// `check --output json --pooler pgbouncer=URL` with a policy of the database, the pooler, and
/// `extra` (a line of YAML, or nothing).
async fn check_behind(sb: &Sandbox, pooler: &PgBouncer, extra: &str, output: Output) -> Vec<u8> {
    let spec = serde_saphyr::from_str(&format!(
        "database: {{connectionSecretRef: {{name: orders-db}}}}\n\
         poolers: [{{name: pgbouncer, consoleSecretRef: {{name: orders-pgbouncer}}}}]\n{extra}"
    ))
    .unwrap();
    let policy = PolicyFile {
        name: "orders-db".to_owned(),
        rules: Rules::compile(&spec).unwrap(),
        spec,
    };
    let mut out = Vec::new();
    standalone::check(
        &monitor_url(sb),
        &[format!("pgbouncer={}", console_url(pooler))],
        &policy,
        output,
        &mut out,
    )
    .await
    .unwrap();
    out
}

/// Waits until the pooler's own clock shows each of `clients` quiet for longer than `age`.
async fn quiet_longer_than(pooler: &PgBouncer, clients: &[&PooledClient], age: Duration) {
    let mut console = console(&console_url(pooler)).await;
    let deadline = std::time::Instant::now() + age + WAIT;
    loop {
        let shown = console.observe().await.unwrap();
        let quiet = clients.iter().all(|c| {
            shown.clients.iter().any(|row| {
                row.port == Some(c.local_addr().port())
                    && row.since_request.is_some_and(|quiet| quiet > age)
            })
        });
        if quiet {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{:#?}", shown.clients);
        pause(500).await;
    }
}

fn findings_of(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["findings"].as_array().expect("findings")
}

/// The client ports a finding names among the pooler's clients, sorted.
fn client_ports(finding: &serde_json::Value) -> Vec<u64> {
    let mut ports: Vec<u64> = finding["poolerClients"]
        .as_array()
        .unwrap_or_else(|| panic!("poolerClients: {finding:#}"))
        .iter()
        .map(|c| {
            assert_eq!(c["pooler"], "pgbouncer", "{c:#}");
            c["port"].as_u64().unwrap()
        })
        .collect();
    ports.sort_unstable();
    ports
}

fn ports_of(clients: &[PooledClient]) -> Vec<u64> {
    let mut ports: Vec<u64> = clients
        .iter()
        .map(|c| u64::from(c.local_addr().port()))
        .collect();
    ports.sort_unstable();
    ports
}

/// A LIFO pool (HikariCP-like) of `size` connections from `127.0.0.<host>`: one busy every
/// second with short transactions, the spares idle until `lifetime` (less a variance) replaces
/// them. Aborted on drop.
struct LifoPool(Vec<tokio::task::JoinHandle<()>>);

impl LifoPool {
    fn start(pooler: &std::sync::Arc<PgBouncer>, host: u8, size: u64, lifetime: Duration) -> Self {
        Self(
            (0..size)
                .map(|slot| {
                    let pooler = pooler.clone();
                    tokio::spawn(async move {
                        let mut round = 0u64;
                        loop {
                            let client = through_pooler(&pooler, "orders-hikari", host).await;
                            let variance =
                                Duration::from_millis((slot * 7919 + round * 104_729) % 1500);
                            let retire = std::time::Instant::now() + lifetime - variance;
                            while std::time::Instant::now() < retire {
                                if slot == 0 {
                                    client
                                        .client()
                                        .batch_execute("BEGIN; SELECT 1; COMMIT")
                                        .await
                                        .expect("the busy slot works");
                                }
                                pause(1000).await;
                            }
                            round += 1;
                        }
                    })
                })
                .collect(),
        )
    }
}

impl Drop for LifoPool {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Seed 000 through a transaction pooler, with the stranded age scaled down to seconds (the
/// 30-minute default runs in tests/shapes.rs's long shapes) and the window with it: the parent queries every second,
/// its four forked workers' connections sit idle as the pooler's clients, and their age comes
/// from the pooler's own clock. Beside it, a LIFO pool through the same pooler whose spares are
/// replaced before they reach that age is named by nothing.
#[tokio::test]
async fn stranded_client_connections_of_a_working_pod_are_idle_accumulation_through_the_pooler() {
    const STRANDED: Duration = Duration::from_secs(20);
    let (sb, pooler) = transaction_pooled().await;
    let pooler = std::sync::Arc::new(pooler);
    let parent = through_pooler(&pooler, "obslog-api", 91).await;
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(through_pooler(&pooler, "obslog-api", 91).await);
    }
    for w in &workers {
        // Each worker ran one statement before it went quiet.
        w.touch().await.unwrap();
    }
    let _parent = Busy::start(parent);
    let _lifo = LifoPool::start(&pooler, 92, 4, STRANDED - Duration::from_secs(5));

    let waiting: Vec<&PooledClient> = workers.iter().collect();
    quiet_longer_than(&pooler, &waiting, STRANDED + Duration::from_secs(1)).await;
    // The window scales with it: a connection idle within the window counts as in use.
    let extra = format!(
        "leakDetection: {{strandedIdleAge: {}s, window: 10s}}\n",
        STRANDED.as_secs()
    );
    let out = check_behind(&sb, &pooler, &extra, Output::Json).await;
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();

    let all = findings_of(&report);
    assert_eq!(all.len(), 1, "{report:#}");
    let f = &all[0];
    assert_eq!(f["kind"], "IdleAccumulation", "{f:#}");
    assert_eq!(
        f["subject"]["source"],
        serde_json::json!({"type": "client", "application": "obslog-api", "address": "127.0.0.91"}),
        "{f:#}"
    );
    assert_eq!(f["sessions"], 4, "{f:#}");
    assert_eq!(f["pids"], serde_json::json!([]), "no server session: {f:#}");
    assert_eq!(client_ports(f), ports_of(&workers), "{f:#}");
    let evidence = f["evidence"].as_str().unwrap();
    assert!(
        evidence.starts_with(
            "4 connections stranded idle for more than 20s on 127.0.0.91, which keeps using 1 other connection"
        ),
        "{evidence}"
    );
    assert!(
        evidence.contains("4 client connections to pooler pgbouncer that hold no server session"),
        "{evidence}"
    );
    assert!(
        f["cause"]
            .as_str()
            .unwrap()
            .contains("poolwarden cannot end them"),
        "{f:#}"
    );
    assert_eq!(report["dryRun"], serde_json::json!([]), "{report:#}");

    let text = String::from_utf8(check_behind(&sb, &pooler, &extra, Output::Table).await).unwrap();
    assert!(
        text.contains("clients of pooler pgbouncer (no server session, not ended): 127.0.0.91:"),
        "{text}"
    );
    for w in &workers {
        assert!(w.is_alive().await, "nothing ends a client's connection");
    }
}

/// Seed 001 through a transaction pooler, with the default policy and a budget of five: the pod
/// holds five connections, two inside a transaction (each holding a server session) and three
/// quiet between transactions (only the pooler's clients). `PoolSaturation` counts five, each
/// client once. A healthy pod querying every second through the same pooler is named by nothing.
#[tokio::test]
async fn a_client_pool_pinned_at_its_budget_through_the_pooler_is_pool_saturation() {
    let (sb, pooler) = transaction_pooled().await;
    let mut pinned = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..2 {
        let c = through_pooler(&pooler, "billing", 93).await;
        pids.push(c.begin_idle_in_transaction().await.unwrap());
        pinned.push(c);
    }
    let mut quiet = Vec::new();
    for _ in 0..3 {
        let c = through_pooler(&pooler, "billing", 93).await;
        c.touch().await.unwrap();
        quiet.push(c);
    }
    let _healthy = [
        Busy::start(through_pooler(&pooler, "orders", 94).await),
        Busy::start(through_pooler(&pooler, "orders", 94).await),
    ];
    pids.sort_unstable();

    let out = check_behind(
        &sb,
        &pooler,
        "budgets: {maxConnectionsPerPod: 5}\n",
        Output::Json,
    )
    .await;
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let saturated: Vec<&serde_json::Value> = findings_of(&report)
        .iter()
        .filter(|f| f["kind"] == "PoolSaturation")
        .collect();
    assert_eq!(saturated.len(), 1, "{report:#}");
    let f = saturated[0];
    assert_eq!(
        f["subject"]["source"],
        serde_json::json!({"type": "client", "application": "billing", "address": "127.0.0.93"}),
        "{f:#}"
    );
    assert_eq!(f["sessions"], 5, "each client once, not 7: {f:#}");
    let mut named: Vec<i64> = f["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    named.sort_unstable();
    assert_eq!(named, pids, "{f:#}");
    assert_eq!(client_ports(f), ports_of(&quiet), "{f:#}");
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.93 holds 5 connections, its budget is 5 (2 idle in transaction; 3 client connections to pooler pgbouncer"),
        "{f:#}"
    );
    // Nothing about the healthy pod.
    assert!(
        findings_of(&report)
            .iter()
            .all(|f| f["subject"]["source"]["address"] != "127.0.0.94"),
        "{report:#}"
    );
    assert_eq!(report["dryRun"], serde_json::json!([]), "{report:#}");
}
