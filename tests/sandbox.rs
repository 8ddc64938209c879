//! The throwaway PostgreSQL server really produces the sessions poolwarden hunts, and really
//! goes away afterwards.

use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use poolwarden_sandbox::{Sandbox, SandboxError, SandboxOptions, SessionSpec};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
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
    assert!(
        port_is_closed(port),
        "port {port} still accepts connections"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!session.is_alive().await);

    // drop
    let sandbox = Sandbox::start(SandboxOptions::default()).await.unwrap();
    let (port, dir) = (sandbox.port(), sandbox.dir().to_path_buf());
    drop(sandbox);
    assert!(
        port_is_closed(port),
        "port {port} still accepts connections"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());

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
    assert!(
        port_is_closed(port),
        "port {port} still accepts connections"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
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
