//! `ssl-mode` against a real MariaDB with TLS on, its certificate signed by a throwaway CA, and
//! the `performance_schema.threads` path (MySQL 8's) against a MariaDB that has it on.

use mysql_async::prelude::Queryable;
use poolwarden::database::ConnectOptions;
use poolwarden::database::mysql::MySql;
use poolwarden::database::{DatabaseError, Engine, SessionState};
use poolwarden_sandbox::{MariaDb, MariaDbOptions, MySqlSessionSpec};

async fn server(tls: bool) -> MariaDb {
    crate::support::mariadb::server_with(MariaDbOptions {
        tls,
        performance_schema: true,
        ..Default::default()
    })
    .await
}

/// Whether the monitoring connection of `url` is encrypted, as the server sees it.
async fn encrypted(db: &MariaDb, url: &str) -> Result<bool, DatabaseError> {
    let mut my = MySql::connect(url, ConnectOptions::default()).await?;
    let own = my.observe().await?.own_pid;
    let mut admin = db.admin().await.unwrap();
    let kind: Option<String> = admin
        .exec_first(
            "SELECT CONNECTION_TYPE FROM performance_schema.threads WHERE PROCESSLIST_ID = ?",
            (own,),
        )
        .await
        .unwrap();
    Ok(kind.as_deref() == Some("SSL/TLS"))
}

#[tokio::test]
async fn every_ssl_mode_connects_as_mysql_clients_would() {
    let db = server(true).await;
    let ca = db.ca_cert_path().unwrap().display().to_string();
    let base = db.url("monitor", "monitor", "");
    // The certificate names 127.0.0.1 and localhost.
    let localhost = base.replace("127.0.0.1", "localhost");
    let cases = [
        (format!("{base}?ssl-mode=DISABLED"), false),
        (format!("{base}?ssl-mode=PREFERRED"), true),
        (format!("{base}?ssl-mode=REQUIRED"), true),
        (format!("{base}?ssl-mode=REQUIRED&ssl-ca={ca}"), true),
        (format!("{base}?ssl-mode=VERIFY_CA&ssl-ca={ca}"), true),
        (format!("{base}?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"), true),
        (format!("{localhost}?ssl-mode=VERIFY_CA&ssl-ca={ca}"), true),
        (
            format!("{localhost}?ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}"),
            true,
        ),
    ];
    for (url, want) in cases {
        let got = encrypted(&db, &url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(got, want, "{url}");
    }
}

#[tokio::test]
async fn verification_fails_against_the_wrong_authority() {
    let db = server(true).await;
    let other = server(true).await;
    let wrong_ca = other.ca_cert_path().unwrap().display().to_string();
    let base = db.url("monitor", "monitor", "");
    for mode in ["VERIFY_CA", "VERIFY_IDENTITY", "REQUIRED"] {
        let url = format!("{base}?ssl-mode={mode}&ssl-ca={wrong_ca}");
        let err = MySql::connect(&url, ConnectOptions::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("{mode} must refuse a certificate the CA did not sign"));
        assert!(matches!(err, DatabaseError::Tls(_)), "{mode}: {err:?}");
    }
}

#[tokio::test]
async fn required_fails_against_a_server_without_tls_and_preferred_falls_back() {
    let db = server(false).await;
    let base = db.url("monitor", "monitor", "");
    let err = MySql::connect(
        &format!("{base}?ssl-mode=REQUIRED"),
        ConnectOptions::default(),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        matches!(err, DatabaseError::TlsNotOffered { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not offer TLS"), "{err}");
    assert!(!err.is_transient());
    assert!(
        !encrypted(&db, &format!("{base}?ssl-mode=PREFERRED"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn the_performance_schema_thread_list_reads_what_the_processlist_does() {
    let db = server(false).await;
    let s = db
        .open_session(
            &MySqlSessionSpec::new("app", "app", "app")
                .program("orders-api-1")
                .from_addr("127.0.0.33".parse().unwrap()),
        )
        .await
        .unwrap();
    s.begin_idle_in_transaction().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let url =
        db.url("monitor", "monitor", "") + "?ssl-mode=DISABLED&processlist=performance_schema";
    let mut my = MySql::connect(&url, ConnectOptions::default())
        .await
        .unwrap();
    let snapshot = my.observe().await.unwrap();
    let seen = snapshot.sessions.iter().find(|x| x.pid == s.id()).unwrap();
    assert_eq!(seen.client_addr, Some("127.0.0.33".parse().unwrap()));
    assert_eq!(seen.application_name, "orders-api-1");
    assert_eq!(seen.state, SessionState::IdleInTransaction);
    assert!(seen.in_state_for(snapshot.observed_at) >= std::time::Duration::from_secs(1));
    assert!(snapshot.sessions.iter().any(|x| x.pid == snapshot.own_pid));
}

/// A server that never answers (its listen queue full, so the kernel drops the handshake) costs a
/// VERIFY_CA connection its connect timeout, not the operating system's minutes: the TLS probe that
/// checks `ssl-ca` runs inside the timeout too.
#[tokio::test]
async fn a_blackholed_server_costs_verify_ca_its_connect_timeout() {
    let db = server(true).await;
    let ca = db.ca_cert_path().unwrap().display().to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let blackhole = socket.listen(0).unwrap();
    let port = blackhole.local_addr().unwrap().port();
    // Fill the queue the listener never accepts from; later handshakes go unanswered.
    let mut held = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        {
            held.push(stream);
        }
    }
    let options = ConnectOptions {
        connect_timeout: std::time::Duration::from_secs(2),
        ..ConnectOptions::default()
    };
    let url = format!("mysql://monitor:monitor@127.0.0.1:{port}/?ssl-mode=VERIFY_CA&ssl-ca={ca}");
    // Generous: the OS alone would wait about two minutes (tcp_syn_retries).
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        MySql::connect(&url, options),
    )
    .await
    .expect("the connect timeout bounds the TLS probe")
    .err()
    .expect("nothing answers");
    assert!(matches!(err, DatabaseError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    drop(held);
}
