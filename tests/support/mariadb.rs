//! A throwaway MariaDB for the tests that need one (tests/engines/, tests/shapes.rs): database
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

/// Whether the server still shows thread `id`, asked as root: a statement on the session itself
/// would be activity.
pub async fn alive(db: &MariaDb, id: i64) -> bool {
    use mysql_async::prelude::Queryable;
    let mut admin = db.admin().await.unwrap();
    let n: Option<i64> = admin
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?",
            (id,),
        )
        .await
        .unwrap();
    n == Some(1)
}

/// Waits until the server no longer shows thread `id` (a killed thread leaves a moment later).
pub async fn gone(db: &MariaDb, id: i64) -> bool {
    for _ in 0..100 {
        if !alive(db, id).await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}
