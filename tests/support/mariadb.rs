//! A throwaway MariaDB for the tests that need one (tests/mysql.rs, tests/shapes.rs): database
//! `app`, application users `app` and `batch`, and monitoring users `monitor` (PROCESS,
//! CONNECTION ADMIN, performance_schema) and `watcher` (PROCESS only).

use std::net::Ipv4Addr;

use poolwarden_sandbox::{MariaDb, MariaDbOptions, MySqlSession, MySqlSessionSpec};

use super::APP_DB;

pub async fn server_with(options: MariaDbOptions) -> MariaDb {
    let db = MariaDb::start(options).await.expect("MariaDB starts");
    db.create_database(APP_DB).await.unwrap();
    for user in ["app", "batch"] {
        db.create_user(user, user, &["ALL ON app.*"]).await.unwrap();
    }
    db.create_user(
        "monitor",
        "monitor",
        &[
            "PROCESS, CONNECTION ADMIN ON *.*",
            "SELECT ON performance_schema.*",
        ],
    )
    .await
    .unwrap();
    db.create_user("watcher", "watcher", &["PROCESS ON *.*"])
        .await
        .unwrap();
    db
}

pub async fn server() -> MariaDb {
    server_with(MariaDbOptions::default()).await
}

/// The monitoring user needs no database of its own: its URL names none.
pub fn monitor_url(db: &MariaDb) -> String {
    db.url("monitor", "monitor", "") + "?ssl-mode=DISABLED"
}

/// A session of user `app` calling itself `program`, from `127.0.0.<host>`.
pub async fn open(db: &MariaDb, program: &str, host: u8) -> MySqlSession {
    db.open_session(
        &MySqlSessionSpec::new("app", "app", APP_DB)
            .program(program)
            .from_addr(Ipv4Addr::new(127, 0, 0, host)),
    )
    .await
    .expect("session opens")
}
