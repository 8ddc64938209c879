//! The statements of one look and of one verification, for the thread list the server offers.
//!
//! Where the list comes from is settled once per connection ([`Queries::discover`]):
//! `performance_schema.threads` on MySQL when it is on and readable (it takes no global mutex,
//! unlike `information_schema.PROCESSLIST`), else `information_schema.PROCESSLIST`, which on
//! MariaDB has the time in the current state in milliseconds (`TIME_MS`). Connection attributes
//! (`program_name`) come from `performance_schema.session_connect_attrs` when it is readable.
//!
//! Every row carries the moment its thread entered its current state, computed by the server as
//! `SYSDATE(6) − time in state`: `SYSDATE` is read as the row is produced, after the list was
//! filled, so the moment can only come out a little late and ages a little short, never long.
//! `INNODB_TRX` is a copy InnoDB refreshes at most every 0.1 s and is not consistent with the
//! thread list even within one statement; a thread idle for longer than that has not touched its
//! transaction since, so for the threads poolwarden may end the two agree.
//!
//! What each thread last ran comes from `performance_schema.events_statements_current`, joined to
//! the thread list by `threads.PROCESSLIST_ID`: for a thread at rest it holds the last statement
//! it ran. Read only when asked for, and only where `performance_schema` is on and readable; the
//! look also reads the consumers that fill the table (`setup_consumers`), which can be turned
//! off at any time, and the statements are used only while they are all on.

use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::connect::{Processlist, classify_query_error};
use crate::database::{DatabaseError, Flavour};

/// The statements for one connection.
#[derive(Clone, Debug)]
pub struct Queries {
    /// One look: threads, their transactions, facts, status counters, grants (and, on MySQL, who
    /// holds SYSTEM_USER),
    /// sent together as one multi-statement query: one round trip.
    pub snapshot: String,
    /// The verification of one thread, with `{id}` to replace.
    verify: String,
    /// The threads newer than `{id}` (churn sampling), with `{id}` to replace.
    newer: String,
    /// Whether threads' `program_name` can be seen.
    pub attributes: bool,
    /// Whether the list comes from `performance_schema.threads` (hosts without ports).
    pub performance_schema: bool,
    /// How finely the server measures the time in a state (`TIME_MS`: 1 ms; `TIME`: 1 s).
    pub resolution: Duration,
    pub flavour: Flavour,
    /// Whether the threads' last statements can be read, and if not, why.
    pub statements: Result<(), String>,
    /// [`Queries::snapshot`], followed by the statements' consumers, the settings that say how
    /// to read their text, and the statements themselves ([`STATEMENTS`]).
    pub snapshot_with_statements: String,
}

/// The consumers that must be on for `events_statements_current` to be filled.
pub const STATEMENT_CONSUMERS: [&str; 3] = [
    "global_instrumentation",
    "thread_instrumentation",
    "events_statements_current",
];

/// The last statement of each thread, outer statements before the ones a stored program runs:
/// (processlist id, event id, text). The text is read as bytes: a statement need not be UTF-8.
pub const STATEMENTS: &str = "SELECT t.PROCESSLIST_ID, s.EVENT_ID, s.SQL_TEXT \
     FROM performance_schema.threads t \
     JOIN performance_schema.events_statements_current s ON s.THREAD_ID = t.THREAD_ID \
     WHERE t.PROCESSLIST_ID IS NOT NULL AND s.SQL_TEXT IS NOT NULL";

/// The open InnoDB transactions of the snapshot: (thread id, start in seconds since the epoch).
pub const TRANSACTIONS: &str = "SELECT trx_mysql_thread_id, UNIX_TIMESTAMP(trx_started) \
     FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id > 0";

/// [`TRANSACTIONS`] for a user who may not read `INNODB_TRX` (no `PROCESS`): no rows.
pub const NO_TRANSACTIONS: &str = "SELECT 0, 0 FROM DUAL WHERE FALSE";

/// Column positions of the thread rows, shared by the snapshot and the verification.
pub mod col {
    pub const ID: usize = 0;
    pub const USER: usize = 1;
    pub const HOST: usize = 2;
    pub const DB: usize = 3;
    pub const COMMAND: usize = 4;
    pub const STATE_CHANGE_US: usize = 5;
    pub const THREAD_TYPE: usize = 6;
    pub const TRX_STARTED: usize = 7;
    pub const PROGRAM_NAME: usize = 8;
    /// The server's clock as the row was produced.
    pub const NOW_US: usize = 9;
}

impl Queries {
    /// Finds out what the server offers the monitoring user and builds the statements.
    pub async fn discover(
        conn: &mut Conn,
        flavour: Flavour,
        wanted: Processlist,
    ) -> Result<Self, DatabaseError> {
        let ps_on: Option<i64> = conn
            .query_first("SELECT @@performance_schema")
            .await
            .map_err(classify_query_error)?;
        let ps_on = ps_on == Some(1);
        let attributes = ps_on && readable(conn, "performance_schema.session_connect_attrs").await;
        let statements = if !ps_on {
            Err(format!(
                "{} does not show what its threads last ran: performance_schema is off (start the \
                 server with performance_schema=ON{})",
                flavour.name(),
                if flavour == Flavour::MariaDb {
                    "; MariaDB's default is OFF"
                } else {
                    ""
                }
            ))
        } else if !readable(conn, "performance_schema.events_statements_current").await
            || !readable(conn, "performance_schema.setup_consumers").await
        {
            Err(
                "the monitoring user may not read what threads last ran: GRANT SELECT ON \
                 performance_schema.* TO it"
                    .to_owned(),
            )
        } else {
            Ok(())
        };
        let threads_readable = ps_on && readable(conn, "performance_schema.threads").await;
        // Without PROCESS, INNODB_TRX is refused and PROCESSLIST shows the user's own threads:
        // the look goes on without transactions, and the decision says what to grant. (Asked
        // with COUNT: with `LIMIT 0` the server neither fills the table nor checks.)
        let transactions = conn
            .query_drop("SELECT COUNT(*) FROM information_schema.INNODB_TRX")
            .await
            .is_ok();
        let performance_schema = match wanted {
            Processlist::Auto => flavour == Flavour::MySql && threads_readable,
            Processlist::InformationSchema => false,
            Processlist::PerformanceSchema if threads_readable => true,
            Processlist::PerformanceSchema => {
                return Err(DatabaseError::PermissionDenied(
                    "processlist=performance_schema, but performance_schema.threads is off or \
                     not readable: turn performance_schema on, GRANT SELECT ON \
                     performance_schema.* to the monitoring user, or use processlist=auto"
                        .into(),
                ));
            }
        };
        Ok(Self::build(
            flavour,
            performance_schema,
            attributes,
            transactions,
            statements,
        ))
    }

    fn build(
        flavour: Flavour,
        performance_schema: bool,
        attributes: bool,
        transactions: bool,
        statements: Result<(), String>,
    ) -> Self {
        let (time_us, resolution) = match (performance_schema, flavour) {
            (false, Flavour::MariaDb) => ("p.TIME_MS * 1000", Duration::from_millis(1)),
            _ => ("p.TIME * 1000000", Duration::from_secs(1)),
        };
        let (id, from) = if performance_schema {
            (
                "p.ID",
                "(SELECT PROCESSLIST_ID AS ID, PROCESSLIST_USER AS USER, PROCESSLIST_HOST AS HOST, \
                 PROCESSLIST_DB AS DB, PROCESSLIST_COMMAND AS COMMAND, \
                 COALESCE(PROCESSLIST_TIME, 0) AS TIME, TYPE \
                 FROM performance_schema.threads WHERE PROCESSLIST_ID IS NOT NULL) p",
            )
        } else {
            (
                "p.ID",
                "(SELECT ID, USER, HOST, DB, COMMAND, TIME, TIME_MS, NULL AS TYPE \
                 FROM information_schema.PROCESSLIST) p",
            )
        };
        let (attr_column, attr_join) = if attributes {
            (
                "a.ATTR_VALUE",
                format!(
                    " LEFT JOIN performance_schema.session_connect_attrs a \
                     ON a.PROCESSLIST_ID = {id} AND a.ATTR_NAME = 'program_name'"
                ),
            )
        } else {
            ("NULL", String::new())
        };
        // MySQL's PROCESSLIST has no TIME_MS; the subquery above names it only on MariaDB.
        let from = if flavour == Flavour::MariaDb || performance_schema {
            from.to_owned()
        } else {
            from.replace(", TIME_MS", "")
        };
        let columns = |trx_started: &str| {
            format!(
                "SELECT {id}, p.USER, p.HOST, p.DB, p.COMMAND, \
                 CAST(UNIX_TIMESTAMP(SYSDATE(6)) * 1000000 - {time_us} AS SIGNED), p.TYPE, \
                 {trx_started}, {attr_column}, \
                 CAST(UNIX_TIMESTAMP(SYSDATE(6)) * 1000000 AS SIGNED) \
                 FROM {from}"
            )
        };
        // A few threads (a verification, a churn look) are joined with their transactions in
        // the statement itself.
        let threads = if transactions {
            format!(
                "{} LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = {id}{attr_join}",
                columns("UNIX_TIMESTAMP(t.trx_started)")
            )
        } else {
            format!("{}{attr_join}", columns("NULL"))
        };
        let transactions = if transactions {
            TRANSACTIONS
        } else {
            NO_TRANSACTIONS
        };
        // The whole list is not: MariaDB joins the two materialised information_schema tables
        // row by row (11.3 ms against 2.8 ms at 1,000 threads, the bare PROCESSLIST 3.2 ms), so
        // the transactions come as the next statement of the same round trip and are matched to
        // their threads by id ([`TRANSACTIONS`]).
        let all_threads = format!("{}{attr_join}", columns("NULL"));
        let facts = "SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED), CONNECTION_ID(), \
                     VERSION(), @@max_connections, @@max_user_connections, \
                     SUBSTRING_INDEX(CURRENT_USER(), '@', 1)";
        let status =
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('Threads_connected', 'Connections')";
        let mut snapshot = format!("{all_threads}; {transactions}; {facts}; {status}; SHOW GRANTS");
        if flavour == Flavour::MySql {
            // Visible for other users only to a monitor that may read the grant tables.
            snapshot.push_str(
                "; SELECT GRANTEE FROM information_schema.USER_PRIVILEGES \
                 WHERE PRIVILEGE_TYPE = 'SYSTEM_USER'",
            );
        }
        let verify = format!("{threads} WHERE {id} = {{id}}");
        let newer = format!("{threads} WHERE {id} > {{id}}");
        let consumers = STATEMENT_CONSUMERS.map(|c| format!("'{c}'")).join(", ");
        let snapshot_with_statements = format!(
            "{snapshot}; SELECT NAME FROM performance_schema.setup_consumers \
             WHERE ENABLED = 'YES' AND NAME IN ({consumers}); \
             SHOW GLOBAL VARIABLES WHERE Variable_name IN \
             ('sql_mode', 'performance_schema_max_sql_text_length'); {STATEMENTS}"
        );
        Self {
            snapshot,
            verify,
            newer,
            attributes,
            performance_schema,
            resolution,
            flavour,
            statements,
            snapshot_with_statements,
        }
    }

    /// The verification statement for thread `id`.
    pub fn verify(&self, id: i64) -> String {
        self.verify.replace("{id}", &id.to_string())
    }

    /// The threads with an id above `id`: those that connected after the thread `id` did.
    pub fn newer_than(&self, id: i64) -> String {
        self.newer.replace("{id}", &id.to_string())
    }

    /// The bare thread list the benchmarks compare against.
    #[cfg(feature = "bench")]
    pub fn bare(&self) -> &'static str {
        if self.performance_schema {
            "SELECT * FROM performance_schema.threads"
        } else {
            "SELECT * FROM information_schema.PROCESSLIST"
        }
    }
}

/// Whether the monitoring user may read `table` (`schema.table`).
async fn readable(conn: &mut Conn, table: &str) -> bool {
    conn.query_drop(format!("SELECT 1 FROM {table} LIMIT 0"))
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_list_reads_transactions_apart_and_one_thread_joins_them() {
        for (flavour, performance_schema) in [(Flavour::MariaDb, false), (Flavour::MySql, true)] {
            let q = Queries::build(flavour, performance_schema, false, true, Ok(()));
            let statements: Vec<&str> = q.snapshot.split("; ").collect();
            assert!(!statements[0].contains("INNODB_TRX"), "{}", statements[0]);
            assert_eq!(statements[1], TRANSACTIONS);
            assert!(
                q.verify(7)
                    .contains("LEFT JOIN information_schema.INNODB_TRX t")
            );
            assert!(q.verify(7).ends_with("= 7"));
            assert!(q.newer_than(7).contains("INNODB_TRX"));
        }
    }

    #[test]
    fn without_innodb_trx_the_look_goes_on_without_transactions() {
        let q = Queries::build(Flavour::MariaDb, false, false, false, Ok(()));
        assert!(!q.snapshot.contains("INNODB_TRX"), "{}", q.snapshot);
        assert_eq!(q.snapshot.split("; ").nth(1), Some(NO_TRANSACTIONS));
        assert!(!q.verify(7).contains("INNODB_TRX"), "{}", q.verify(7));
        assert!(!q.newer_than(7).contains("INNODB_TRX"));
    }

    #[test]
    fn mariadb_reads_milliseconds_and_mysql_seconds() {
        let maria = Queries::build(Flavour::MariaDb, false, false, true, Ok(()));
        assert!(maria.snapshot.contains("p.TIME_MS * 1000"));
        assert!(!maria.snapshot.contains("SYSTEM_USER"));
        assert_eq!(maria.resolution, Duration::from_millis(1));
        let mysql = Queries::build(Flavour::MySql, false, true, true, Ok(()));
        assert!(!mysql.snapshot.contains("TIME_MS"));
        assert!(mysql.snapshot.contains("session_connect_attrs"));
        assert!(mysql.snapshot.contains("SYSTEM_USER"));
        let ps = Queries::build(Flavour::MySql, true, true, true, Ok(()));
        assert!(ps.snapshot.contains("performance_schema.threads"));
        assert_eq!(ps.bare(), "SELECT * FROM performance_schema.threads");
        assert!(ps.verify(42).ends_with("WHERE p.ID = 42"));
        assert!(ps.newer_than(42).ends_with("WHERE p.ID > 42"));
    }
}
