//! `sslmode` against a real PostgreSQL with TLS on, its certificate signed by a throwaway CA.

use crate::support::*;
use poolwarden::database::ConnectOptions;
use poolwarden::database::DatabaseError;
use poolwarden::database::postgres::Postgres;
use poolwarden_sandbox::SandboxOptions;

async fn ssl_in_use(pg: &mut Postgres) -> bool {
    let client = pg.client().await.unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn every_sslmode_connects_as_libpq_would() {
    let sb = sandbox_with(SandboxOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    let ca = sb.ca_cert_path().unwrap().display().to_string();
    let base = sb.url("monitor", "monitor", APP_DB);
    // The certificate names 127.0.0.1 and localhost.
    let localhost = base.replace("127.0.0.1", "localhost");

    let cases = [
        (format!("{base}?sslmode=disable"), false),
        (format!("{base}?sslmode=prefer"), true),
        (format!("{base}?sslmode=require"), true),
        (format!("{base}?sslmode=verify-ca&sslrootcert={ca}"), true),
        (format!("{base}?sslmode=verify-full&sslrootcert={ca}"), true),
        (
            format!("{localhost}?sslmode=verify-full&sslrootcert={ca}"),
            true,
        ),
    ];
    for (url, encrypted) in cases {
        let mut pg = Postgres::connect(&url, ConnectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(ssl_in_use(&mut pg).await, encrypted, "{url}");
    }
}

#[tokio::test]
async fn verification_fails_against_the_wrong_authority() {
    let sb = sandbox_with(SandboxOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    // Another sandbox's CA did not sign this server's certificate.
    let other = sandbox_with(SandboxOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    let wrong_ca = other.ca_cert_path().unwrap().display().to_string();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={wrong_ca}",
        sb.url("monitor", "monitor", APP_DB)
    );
    let err = Postgres::connect(&url, ConnectOptions::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, DatabaseError::Tls(_)), "{err:?}");
    // verify-ca checks the chain too.
    let err = Postgres::connect(
        &url.replace("verify-full", "verify-ca"),
        ConnectOptions::default(),
    )
    .await
    .err()
    .expect("refused");
    assert!(matches!(err, DatabaseError::Tls(_)), "{err:?}");
}

#[tokio::test]
async fn require_fails_against_a_server_without_tls() {
    let sb = sandbox().await;
    let url = format!("{}?sslmode=require", sb.url("monitor", "monitor", APP_DB));
    let err = Postgres::connect(&url, ConnectOptions::default())
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, DatabaseError::TlsNotOffered { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not offer TLS"), "{err}");
    // Only a change of the URL or the server helps: `run` stops, the controller waits.
    assert!(!err.is_transient());
}
