//! The throwaway PostgreSQL server really produces the sessions poolwarden hunts, and really
//! goes away afterwards.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use poolwarden_sandbox::{
    PgBouncerOptions, PoolMode, Sandbox, SandboxError, SandboxOptions, SessionSpec,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

const WAIT: Duration = Duration::from_secs(10);

struct Seen {
    state: Option<String>,
    client_addr: Option<IpAddr>,
    application_name: String,
    usename: String,
    datname: String,
}

async fn seen(admin: &tokio_postgres::Client, pid: i64) -> Seen {
    let row = admin
        .query_one(
            "SELECT state, client_addr, application_name, usename::text, datname::text \
             FROM pg_stat_activity WHERE pid = $1::int8",
            &[&pid],
        )
        .await
        .unwrap();
    Seen {
        state: row.get(0),
        client_addr: row.get(1),
        application_name: row.get(2),
        usename: row.get(3),
        datname: row.get(4),
    }
}

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// Nothing accepts connections on the port any more.
fn port_is_closed(port: u16) -> bool {
    TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2)).is_err()
}

/// The server that listened on `port` with its files in `dir` is gone, files and all.
fn assert_gone(port: u16, dir: &std::path::Path) {
    assert!(
        port_is_closed(port),
        "port {port} still accepts connections"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn sessions_in_every_state_show_up_in_pg_stat_activity() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sandbox.create_database("shop").await.unwrap();
    sandbox
        .create_role("app", "s3cret:@/", &["CONNECT ON DATABASE shop"])
        .await
        .unwrap();
    let spec = SessionSpec::new("app", "s3cret:@/", "shop");

    let idle = sandbox
        .open_session(&spec.clone().application("pw-idle").from_addr(addr(11)))
        .await
        .unwrap();
    let in_transaction = sandbox
        .open_session(&spec.clone().application("pw-tx").from_addr(addr(12)))
        .await
        .unwrap();
    in_transaction.begin_idle_in_transaction().await.unwrap();
    let aborted = sandbox
        .open_session(&spec.clone().application("pw-aborted").from_addr(addr(13)))
        .await
        .unwrap();
    aborted.abort_transaction().await.unwrap();
    let active = sandbox
        .open_session(&spec.clone().application("pw-active").from_addr(addr(14)))
        .await
        .unwrap();
    active.start_active(60.0);
    sandbox
        .wait_for_state(active.pid(), "active", WAIT)
        .await
        .unwrap();

    let admin = sandbox.admin().await.unwrap();
    let expected = [
        (&idle, "idle", 11, "pw-idle"),
        (&in_transaction, "idle in transaction", 12, "pw-tx"),
        (&aborted, "idle in transaction (aborted)", 13, "pw-aborted"),
        (&active, "active", 14, "pw-active"),
    ];
    for (session, state, last, application) in expected {
        let row = seen(&admin, session.pid()).await;
        assert_eq!(row.state.as_deref(), Some(state), "state of {application}");
        assert_eq!(
            row.client_addr,
            Some(IpAddr::V4(addr(last))),
            "{application}"
        );
        assert_eq!(row.application_name, application);
        assert_eq!(row.usename, "app");
        assert_eq!(row.datname, "shop");
    }

    // touch moves state_change but keeps each session in its state.
    for (session, state) in [
        (&idle, "idle"),
        (&in_transaction, "idle in transaction"),
        (&aborted, "idle in transaction (aborted)"),
    ] {
        let before: jiff::Timestamp = admin
            .query_one(
                "SELECT state_change FROM pg_stat_activity WHERE pid = $1::int8",
                &[&session.pid()],
            )
            .await
            .unwrap()
            .get(0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        session.touch().await.unwrap();
        let row = admin
            .query_one(
                "SELECT state, state_change FROM pg_stat_activity WHERE pid = $1::int8",
                &[&session.pid()],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some(state));
        let after: jiff::Timestamp = row.get(1);
        assert!(
            after > before,
            "touch moved state_change of the {state} session"
        );
    }

    for session in [&idle, &in_transaction, &aborted] {
        assert!(session.is_alive().await);
    }
    // The sleeping session is alive too, and saying so does not wait for its query.
    let asked = std::time::Instant::now();
    assert!(active.is_alive().await);
    assert!(asked.elapsed() < Duration::from_secs(5));

    // The admin client comes through the Unix socket: no client address.
    let admin_addr: Option<IpAddr> = admin
        .query_one(
            "SELECT client_addr FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(admin_addr, None);

    // A terminated session is no longer alive; the others are untouched.
    let terminated: bool = admin
        .query_one(
            "SELECT pg_terminate_backend($1::int8::int4)",
            &[&in_transaction.pid()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(terminated);
    assert!(!in_transaction.is_alive().await);
    let terminated: bool = admin
        .query_one(
            "SELECT pg_terminate_backend($1::int8::int4)",
            &[&active.pid()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(terminated);
    assert!(!active.is_alive().await);
    assert!(idle.is_alive().await);
    // A terminated backend leaves pg_stat_activity a moment after its client hears of it.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let pids: Vec<i64> = admin
            .query(
                "SELECT pid::int8 FROM pg_stat_activity WHERE usename = 'app' ORDER BY pid",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut survivors = vec![idle.pid(), aborted.pid()];
        survivors.sort();
        if pids == survivors {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still there: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_are_refused() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sandbox.create_role("app", "right", &[]).await.unwrap();

    let ok = sandbox
        .open_session(&SessionSpec::new("app", "right", "postgres"))
        .await
        .unwrap();
    assert!(ok.is_alive().await);

    let error = sandbox
        .open_session(&SessionSpec::new("app", "wrong", "postgres").from_addr(addr(20)))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::INVALID_PASSWORD), "{error}");
    assert!(
        error.to_string().contains("password authentication failed"),
        "{error}"
    );

    for (user, password) in [("postgres", "not-postgres"), ("ghost", "boo")] {
        let error = sandbox
            .open_session(&SessionSpec::new(user, password, "postgres"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(&SqlState::INVALID_PASSWORD), "{error}");
    }

    // The superuser URL works as printed.
    let (client, connection) =
        tokio_postgres::connect(&sandbox.superuser_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "postgres");
}

fn rustls_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn tls_sandbox_serves_a_certificate_signed_by_its_ca() {
    let sandbox = Sandbox::start(SandboxOptions {
        tls: true,
        ..SandboxOptions::default()
    })
    .await
    .unwrap();
    let ca = sandbox.ca_cert_path().expect("a TLS sandbox has a CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }

    let mut config = tokio_postgres::Config::from_str(&sandbox.superuser_url()).unwrap();
    config.ssl_mode(SslMode::Require);
    let (client, connection) = config
        .connect(MakeRustlsConnect::new(rustls_config(roots)))
        .await
        .unwrap();
    tokio::spawn(connection);
    let pid: i64 = client
        .query_one("SELECT pg_backend_pid()::int8", &[])
        .await
        .unwrap()
        .get(0);

    let admin = sandbox.admin().await.unwrap();
    let ssl: bool = admin
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = $1::int8", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "pg_stat_ssl shows the rustls connection as TLS");

    // Plain connections still work on a TLS sandbox.
    let plain = sandbox
        .open_session(&SessionSpec::new("postgres", "postgres", "postgres").from_addr(addr(30)))
        .await
        .unwrap();
    let ssl: bool = admin
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = $1::int8",
            &[&plain.pid()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!ssl);

    // A client that does not trust the throwaway CA is turned away.
    let refused = config
        .connect(MakeRustlsConnect::new(rustls_config(
            rustls::RootCertStore::empty(),
        )))
        .await;
    assert!(refused.is_err(), "an untrusted certificate must fail");

    // Without TLS there is no CA.
    let plain_sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    assert!(plain_sandbox.ca_cert_path().is_none());
}

#[tokio::test]
async fn sandboxes_with_thousands_of_connections_start() {
    for max_connections in [2000, 6000] {
        let sandbox = Sandbox::start(SandboxOptions {
            max_connections,
            settings: vec![("work_mem".to_string(), "2MB".to_string())],
            ..SandboxOptions::default()
        })
        .await
        .unwrap();
        let admin = sandbox.admin().await.unwrap();
        let max_connections = max_connections.to_string();
        for (name, expected) in [
            ("max_connections", max_connections.as_str()),
            ("work_mem", "2MB"),
            ("fsync", "off"),
        ] {
            let value: String = admin
                .query_one("SELECT current_setting($1)", &[&name])
                .await
                .unwrap()
                .get(0);
            assert_eq!(value, expected, "{name}");
        }
    }
}

#[tokio::test]
async fn stop_and_drop_remove_the_server_and_its_directory() {
    // stop()
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let (port, dir) = (sandbox.port(), sandbox.dir().to_path_buf());
    let session = sandbox
        .open_session(&SessionSpec::new("postgres", "postgres", "postgres"))
        .await
        .unwrap();
    assert!(session.is_alive().await);
    assert!(dir.join("data").is_dir());
    sandbox.stop();
    assert_gone(port, &dir);
    assert!(!session.is_alive().await);

    // drop
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let (port, dir) = (sandbox.port(), sandbox.dir().to_path_buf());
    drop(sandbox);
    assert_gone(port, &dir);

    // A test that panics drops its sandbox while unwinding.
    let (sender, receiver) = tokio::sync::oneshot::channel::<(u16, PathBuf)>();
    let panicked = tokio::spawn(async move {
        let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
        sender
            .send((sandbox.port(), sandbox.dir().to_path_buf()))
            .unwrap();
        panic!("a failing test (on purpose)");
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    let (port, dir) = receiver.await.unwrap();
    assert_gone(port, &dir);
}

#[tokio::test]
async fn bad_settings_are_refused_before_anything_starts() {
    let error = Sandbox::start(SandboxOptions {
        settings: vec![("max_connections = 5\nssl".to_string(), "on".to_string())],
        ..SandboxOptions::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(error, SandboxError::InvalidSetting { .. }),
        "{error}"
    );

    // A setting PostgreSQL rejects shows up with the server's log in the error.
    let error = Sandbox::start(SandboxOptions {
        settings: vec![("shared_buffers".to_string(), "not-a-size".to_string())],
        ..SandboxOptions::default()
    })
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, SandboxError::Start { .. }), "{message}");
    assert!(message.contains("shared_buffers"), "{message}");
}

/// The rows of a console `SHOW` command, as column name -> value.
async fn show(
    console: &tokio_postgres::Client,
    what: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    console
        .simple_query(&format!("SHOW {what}"))
        .await
        .unwrap()
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), row.get(i).unwrap_or("").to_string()))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

async fn sandbox_with_pooler() -> (Sandbox, poolwarden_sandbox::PgBouncer) {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sandbox.create_database("shop").await.unwrap();
    sandbox.create_role("app", "s3cret", &[]).await.unwrap();
    // Started as root, this also shows that PgBouncer runs as another user: it refuses root.
    let pooler = sandbox
        .start_pgbouncer(
            PgBouncerOptions::default()
                .database("shop", "shop", PoolMode::Session, 2)
                .database("shop_tx", "shop", PoolMode::Transaction, 2)
                .user("app", "s3cret"),
        )
        .await
        .unwrap();
    (sandbox, pooler)
}

#[tokio::test]
async fn pgbouncer_shows_clients_from_chosen_addresses_linked_to_their_servers() {
    let (sandbox, pooler) = sandbox_with_pooler().await;
    let session_pooled = pooler
        .open_client(&SessionSpec::new("app", "s3cret", "shop").from_addr(addr(21)))
        .await
        .unwrap();
    let session_pid = session_pooled.backend_pid().await.unwrap();
    let tx_pooled = pooler
        .open_client(&SessionSpec::new("app", "s3cret", "shop_tx").from_addr(addr(22)))
        .await
        .unwrap();
    let tx_pid = tx_pooled.begin_idle_in_transaction().await.unwrap();

    let console = pooler.console().await.unwrap();
    let clients = show(&console, "CLIENTS").await;
    let servers = show(&console, "SERVERS").await;
    let client_of = |source: SocketAddr| {
        clients
            .iter()
            .find(|c| {
                c["addr"] == source.ip().to_string() && c["port"] == source.port().to_string()
            })
            .unwrap_or_else(|| panic!("no client {source} in {clients:?}"))
    };
    let admin = sandbox.admin().await.unwrap();
    for (client, pid, database) in [
        (&session_pooled, session_pid, "shop"),
        (&tx_pooled, tx_pid, "shop_tx"),
    ] {
        let row = client_of(client.local_addr());
        assert_eq!(row["database"], database);
        assert_eq!(row["user"], "app");
        // The server serving it links back to it, and PostgreSQL sees that server connection
        // coming from the pooler's local address and port.
        let server = servers
            .iter()
            .find(|s| s["remote_pid"] == pid.to_string())
            .unwrap_or_else(|| panic!("no server with pid {pid} in {servers:?}"));
        assert_eq!(server["link"], row["ptr"]);
        assert_eq!(row["link"], server["ptr"]);
        let seen = admin
            .query_one(
                "SELECT client_addr, client_port FROM pg_stat_activity WHERE pid = $1::int8",
                &[&pid],
            )
            .await
            .unwrap();
        let (client_addr, client_port): (Option<IpAddr>, Option<i32>) = (seen.get(0), seen.get(1));
        assert_eq!(
            client_addr.map(|a| a.to_string()),
            Some(server["local_addr"].clone())
        );
        assert_eq!(
            client_port.map(|p| p.to_string()),
            Some(server["local_port"].clone())
        );
    }
    assert_eq!(
        seen(&admin, tx_pid).await.state.as_deref(),
        Some("idle in transaction")
    );

    // After the commit the transaction-pooled server goes back to the pool, unlinked.
    tx_pooled.commit().await.unwrap();
    let servers = show(&console, "SERVERS").await;
    let server = servers
        .iter()
        .find(|s| s["remote_pid"] == tx_pid.to_string())
        .unwrap();
    assert_eq!(server["link"], "", "{server:?}");
    assert!(tx_pooled.is_alive().await);

    // The stats user may read the console but not change anything.
    let stats = tokio_postgres::connect(&pooler.stats_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(stats.1);
    assert!(!show(&stats.0, "POOLS").await.is_empty());
    assert!(stats.0.simple_query("PAUSE shop").await.is_err());
}

#[tokio::test]
async fn pgbouncer_goes_away_on_stop_drop_and_panic() {
    let (sandbox, pooler) = sandbox_with_pooler().await;
    let (port, dir) = (pooler.port(), pooler.dir().to_path_buf());
    let client = pooler
        .open_client(&SessionSpec::new("app", "s3cret", "shop").from_addr(addr(23)))
        .await
        .unwrap();
    assert!(client.is_alive().await);
    pooler.stop();
    assert_gone(port, &dir);
    assert!(!client.is_alive().await);

    let pooler = sandbox
        .start_pgbouncer(PgBouncerOptions::default())
        .await
        .unwrap();
    let (port, dir) = (pooler.port(), pooler.dir().to_path_buf());
    drop(pooler);
    assert_gone(port, &dir);

    let sandbox = std::sync::Arc::new(sandbox);
    let (sender, receiver) = tokio::sync::oneshot::channel::<(u16, PathBuf)>();
    let panicked = tokio::spawn({
        let sandbox = std::sync::Arc::clone(&sandbox);
        async move {
            let pooler = sandbox
                .start_pgbouncer(PgBouncerOptions::default())
                .await
                .unwrap();
            sender
                .send((pooler.port(), pooler.dir().to_path_buf()))
                .unwrap();
            panic!("a failing test (on purpose)");
        }
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    let (port, dir) = receiver.await.unwrap();
    assert_gone(port, &dir);
}

#[tokio::test]
async fn bad_pgbouncer_settings_are_refused_with_its_log() {
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let error = sandbox
        .start_pgbouncer(
            PgBouncerOptions::default().setting("pool_mode", "session\nadmin_users = x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, SandboxError::InvalidSetting { .. }),
        "{error}"
    );

    let error = sandbox
        .start_pgbouncer(PgBouncerOptions::default().setting("pool_mode", "sometimes"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, SandboxError::PgBouncerStart { .. }),
        "{message}"
    );
    assert!(message.contains("pool_mode"), "{message}");
}
