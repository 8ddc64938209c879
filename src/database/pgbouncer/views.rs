//! From the console's text answers to [`ConsoleSnapshot`] rows.
//!
//! The columns of `SHOW SERVERS`, `SHOW CLIENTS` and `SHOW POOLS` change across PgBouncer
//! versions (`wait_us` and `tls` came in 1.8, `close_needed` in 1.9, `application_name` in
//! 1.18, `prepared_statements` in 1.21, an `id` column later; `SHOW POOLS` split its cancel
//! counters in 1.18), so every column is found by name, and only those the join cannot do
//! without are required: a row's `ptr` and `link`, a server's `local_addr`/`local_port` or
//! `remote_pid`, a client's `addr`. Everything else is read when it is there.
//!
//! PgBouncer prints times in its own time zone, to the second (`2026-12-02 00:20:36 UTC`), and has
//! no "now". Every `SHOW CLIENTS` lists the console client that asked, with the time of that very
//! request, so the latest `request_time` among the clients is the pooler's "now", and ages are
//! differences of the pooler's own times.

use std::net::IpAddr;
use std::time::Duration;

use jiff::civil::DateTime;
use tokio_postgres::SimpleQueryMessage;

use super::model::{ClientRow, ConsoleSnapshot, PoolRow, ServerRow};

/// A column the join needs is missing: this is not a PgBouncer console poolwarden can read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("SHOW {view} has no column {column:?}")]
pub struct MissingColumn {
    pub view: &'static str,
    pub column: &'static str,
}

/// One console answer: column names and the text of each cell (`None` for NULL).
#[derive(Debug, Default)]
pub struct Table {
    view: &'static str,
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn new(view: &'static str, columns: &[&str], rows: Vec<Vec<Option<String>>>) -> Self {
        Self {
            view,
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows,
        }
    }

    /// The answer to `SHOW {view}` as the simple query protocol delivers it.
    pub fn from_messages(view: &'static str, messages: &[SimpleQueryMessage]) -> Self {
        let mut table = Self {
            view,
            ..Self::default()
        };
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(columns) => {
                    table.columns = columns.iter().map(|c| c.name().to_owned()).collect();
                }
                SimpleQueryMessage::Row(row) => {
                    if table.columns.is_empty() {
                        table.columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
                    }
                    table.rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    );
                }
                _ => {}
            }
        }
        table
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    fn require(&self, column: &'static str) -> Result<usize, MissingColumn> {
        self.column(column).ok_or(MissingColumn {
            view: self.view,
            column,
        })
    }
}

/// A cell's text, with PgBouncer's empty strings read as absent.
fn cell(row: &[Option<String>], at: Option<usize>) -> Option<&str> {
    at.and_then(|i| row.get(i)?.as_deref())
        .filter(|text| !text.is_empty())
}

fn text(row: &[Option<String>], at: Option<usize>) -> String {
    cell(row, at).unwrap_or_default().to_owned()
}

fn number<T: std::str::FromStr>(row: &[Option<String>], at: Option<usize>) -> Option<T> {
    cell(row, at)?.parse().ok()
}

/// `unix` (a Unix-socket client) and anything else that is not an address read as `None`.
fn address(row: &[Option<String>], at: Option<usize>) -> Option<IpAddr> {
    cell(row, at)?.parse().ok()
}

/// `2026-12-02 00:20:36 UTC`: the date and time in the pooler's zone; the zone is the same for
/// every time of one look, so it is left aside.
fn time(row: &[Option<String>], at: Option<usize>) -> Option<DateTime> {
    let text = cell(row, at)?;
    let civil = text.get(..19)?;
    DateTime::strptime("%Y-%m-%d %H:%M:%S", civil).ok()
}

/// Seconds plus microseconds, as PgBouncer splits `wait`/`wait_us` and `maxwait`/`maxwait_us`.
fn seconds_and_micros(
    row: &[Option<String>],
    seconds: Option<usize>,
    micros: Option<usize>,
) -> Option<Duration> {
    let whole: u64 = number(row, seconds)?;
    let micros: u64 = number(row, micros).unwrap_or(0);
    Some(Duration::from_secs(whole) + Duration::from_micros(micros))
}

/// `now - then` by the pooler's clock, never negative.
fn age(now: Option<DateTime>, then: Option<DateTime>) -> Option<Duration> {
    let span = now?.duration_since(then?);
    Some(Duration::try_from(span).unwrap_or(Duration::ZERO))
}

/// Reads the three answers of one look.
pub fn read(
    servers: &Table,
    clients: &Table,
    pools: &Table,
) -> Result<ConsoleSnapshot, MissingColumn> {
    let now = pooler_now(clients);
    Ok(ConsoleSnapshot {
        servers: read_servers(servers, now)?,
        clients: read_clients(clients, now)?,
        pools: read_pools(pools)?,
    })
}

/// The latest request among the clients: the console's own `SHOW CLIENTS`, that is, now.
fn pooler_now(clients: &Table) -> Option<DateTime> {
    let at = clients.column("request_time");
    clients.rows.iter().filter_map(|row| time(row, at)).max()
}

fn read_servers(table: &Table, now: Option<DateTime>) -> Result<Vec<ServerRow>, MissingColumn> {
    let ptr = table.require("ptr")?;
    let link = table.require("link")?;
    let (local_addr, local_port) = (table.column("local_addr"), table.column("local_port"));
    let remote_pid = table.column("remote_pid");
    if remote_pid.is_none() && (local_addr.is_none() || local_port.is_none()) {
        // Without one or the other a server connection cannot be matched to a backend.
        table.require("remote_pid")?;
    }
    let (user, database, state) = (
        table.column("user"),
        table.column("database"),
        table.column("state"),
    );
    let (connect_time, request_time) = (table.column("connect_time"), table.column("request_time"));
    Ok(table
        .rows
        .iter()
        .map(|row| ServerRow {
            ptr: text(row, Some(ptr)),
            link: cell(row, Some(link)).map(str::to_owned),
            user: text(row, user),
            database: text(row, database),
            state: text(row, state),
            local_addr: address(row, local_addr),
            local_port: number(row, local_port),
            // 0 until the server has told PgBouncer its pid.
            remote_pid: number(row, remote_pid).filter(|pid| *pid != 0),
            connected_for: age(now, time(row, connect_time)),
            since_request: age(now, time(row, request_time)),
        })
        .collect())
}

fn read_clients(table: &Table, now: Option<DateTime>) -> Result<Vec<ClientRow>, MissingColumn> {
    let ptr = table.require("ptr")?;
    let link = table.require("link")?;
    let addr = table.require("addr")?;
    let port = table.column("port");
    let (user, database, state) = (
        table.column("user"),
        table.column("database"),
        table.column("state"),
    );
    let application_name = table.column("application_name");
    let (connect_time, request_time) = (table.column("connect_time"), table.column("request_time"));
    let (wait, wait_us) = (table.column("wait"), table.column("wait_us"));
    Ok(table
        .rows
        .iter()
        .map(|row| {
            let state = text(row, state);
            // `wait` counts only while the client waits; otherwise it is stale or zero.
            let waiting_for = state
                .starts_with("waiting")
                .then(|| seconds_and_micros(row, wait, wait_us))
                .flatten();
            ClientRow {
                ptr: text(row, Some(ptr)),
                link: cell(row, Some(link)).map(str::to_owned),
                user: text(row, user),
                database: text(row, database),
                addr: address(row, Some(addr)),
                port: number(row, port),
                application_name: cell(row, application_name).map(str::to_owned),
                connected_for: age(now, time(row, connect_time)),
                since_request: age(now, time(row, request_time)),
                waiting_for,
                state,
            }
        })
        .collect())
}

fn read_pools(table: &Table) -> Result<Vec<PoolRow>, MissingColumn> {
    let database = table.require("database")?;
    let user = table.require("user")?;
    let count = |row: &[Option<String>], name: &str| -> u32 {
        number(row, table.column(name)).unwrap_or(0)
    };
    let (maxwait, maxwait_us) = (table.column("maxwait"), table.column("maxwait_us"));
    let pool_mode = table.column("pool_mode");
    Ok(table
        .rows
        .iter()
        .map(|row| PoolRow {
            database: text(row, Some(database)),
            user: text(row, Some(user)),
            clients_active: count(row, "cl_active"),
            clients_waiting: count(row, "cl_waiting"),
            servers_active: count(row, "sv_active"),
            servers_idle: count(row, "sv_idle"),
            servers_used: count(row, "sv_used"),
            servers_tested: count(row, "sv_tested"),
            servers_login: count(row, "sv_login"),
            max_wait: seconds_and_micros(row, maxwait, maxwait_us).unwrap_or_default(),
            pool_mode: cell(row, pool_mode).map(str::to_owned),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A console answer written as psql prints it: a header and rows of `|`-separated cells.
    fn table(view: &'static str, header: &str, rows: &[&str]) -> Table {
        let split = |line: &str| -> Vec<String> {
            line.split('|').map(|cell| cell.trim().to_owned()).collect()
        };
        let columns = split(header);
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let rows = rows
            .iter()
            .map(|line| split(line).into_iter().map(Some).collect())
            .collect();
        Table::new(view, &columns, rows)
    }

    /// SHOW SERVERS and SHOW CLIENTS in PgBouncer 1.18, as Debian 12 ships it.
    const SOCKETS_1_18: &str = "type | user | database | state | addr | port | local_addr | \
        local_port | connect_time | request_time | wait | wait_us | close_needed | ptr | link | \
        remote_pid | tls | application_name";

    /// The console client that asks, at 00:20:00 by the pooler's clock.
    const CONSOLE_CLIENT: &str = "C | poolstats | pgbouncer | active | 127.0.0.1 | 50000 | \
        127.0.0.1 | 6432 | 2026-12-02 00:20:00 UTC | 2026-12-02 00:20:00 UTC | 0 | 0 | 0 | \
        0x55cc01 | | 0 | | poolwarden";

    #[test]
    fn linked_and_held_servers_are_read_with_their_local_end_and_pid() {
        let servers = table(
            "SERVERS",
            SOCKETS_1_18,
            &[
                "S | app | shop_tx | active | 127.0.0.1 | 5432 | 127.0.0.1 | 41000 | \
                 2026-12-02 00:10:00 UTC | 2026-12-02 00:19:30 UTC | 0 | 0 | 0 | 0x55aa01 | \
                 0x55bb01 | 4242 | |",
                "S | app | shop_tx | idle | 127.0.0.1 | 5432 | 127.0.0.1 | 41001 | \
                 2026-12-02 00:10:00 UTC | 2026-12-02 00:15:00 UTC | 0 | 0 | 0 | 0x55aa02 | | \
                 4243 | |",
            ],
        );
        let clients = table("CLIENTS", SOCKETS_1_18, &[CONSOLE_CLIENT]);
        let pools = table("POOLS", "database | user", &[]);
        let snapshot = read(&servers, &clients, &pools).unwrap();
        let [linked, held] = &snapshot.servers[..] else {
            panic!("two servers: {:?}", snapshot.servers)
        };
        assert_eq!(linked.link.as_deref(), Some("0x55bb01"));
        assert_eq!(linked.local_addr, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(linked.local_port, Some(41000));
        assert_eq!(linked.remote_pid, Some(4242));
        // Ages by the pooler's clock: its "now" is the console's own request at 00:20:00.
        assert_eq!(linked.connected_for, Some(Duration::from_secs(600)));
        assert_eq!(linked.since_request, Some(Duration::from_secs(30)));
        assert!(!held.is_linked());
        assert_eq!(held.state, "idle");
        assert!(snapshot.clients[0].is_console());
    }

    #[test]
    fn clients_from_pods_unix_sockets_and_waiting_ones() {
        let clients = table(
            "CLIENTS",
            SOCKETS_1_18,
            &[
                "C | app | shop_tx | active | 10.244.1.17 | 38000 | 10.244.0.5 | 6432 | \
                 2026-12-02 00:00:00 UTC | 2026-12-02 00:19:00 UTC | 3 | 0 | 0 | 0x1 | 0x9 | 0 | \
                 | orders-api",
                "C | app | shop_tx | waiting | unix | 777 | unix | 6432 | 2026-12-02 00:19:50 UTC | \
                 2026-12-02 00:19:55 UTC | 4 | 250000 | 0 | 0x2 | | 0 | |",
                CONSOLE_CLIENT,
            ],
        );
        let clients = read_clients(&clients, pooler_now(&clients)).unwrap();
        let pod = &clients[0];
        assert_eq!(pod.addr, Some("10.244.1.17".parse().unwrap()));
        assert_eq!(pod.port, Some(38000));
        assert_eq!(pod.link.as_deref(), Some("0x9"));
        assert_eq!(pod.application_name.as_deref(), Some("orders-api"));
        assert_eq!(pod.connected_for, Some(Duration::from_secs(1200)));
        assert_eq!(pod.since_request, Some(Duration::from_secs(60)));
        // `wait` is stale for a client that does not wait.
        assert_eq!(pod.waiting_for, None);
        let local = &clients[1];
        assert_eq!(local.addr, None, "a Unix-socket client has no address");
        assert_eq!(local.waiting_for, Some(Duration::from_millis(4250)));
        assert_eq!(local.application_name, None);
    }

    #[test]
    fn older_and_newer_column_sets_are_read_by_name() {
        // PgBouncer 1.7: no wait_us, close_needed, tls or application_name.
        let old = table(
            "SERVERS",
            "type | user | database | state | addr | port | local_addr | local_port | \
             connect_time | request_time | ptr | link | remote_pid",
            &[
                "S | app | db | active | 10.0.0.9 | 5432 | 10.0.0.5 | 40001 | \
               2026-12-02 00:00:00 CET | 2026-12-02 00:00:00 CET | 0xa | 0xb | 99",
            ],
        );
        let servers = read_servers(&old, None).unwrap();
        assert_eq!(servers[0].remote_pid, Some(99));
        assert_eq!(servers[0].local_port, Some(40001));
        assert_eq!(
            servers[0].connected_for, None,
            "no clock without SHOW CLIENTS"
        );
        // A newer one: columns in other places, an `id` and `prepared_statements`.
        let new = table(
            "CLIENTS",
            "type | user | database | replication | state | addr | port | local_addr | \
             local_port | connect_time | request_time | wait | wait_us | close_needed | ptr | \
             link | remote_pid | tls | application_name | prepared_statements | id",
            &[
                "C | app | db | none | active | 10.0.0.7 | 1234 | 10.0.0.5 | 6432 | \
               2026-12-02 00:00:00 UTC | 2026-12-02 00:00:05 UTC | 0 | 0 | 0 | 0xc | | 0 | | \
               api | 0 | 17",
            ],
        );
        let clients = read_clients(&new, pooler_now(&new)).unwrap();
        assert_eq!(clients[0].addr, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(clients[0].application_name.as_deref(), Some("api"));
        assert_eq!(clients[0].connected_for, Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_view_without_what_the_join_needs_is_refused() {
        let no_link = table("SERVERS", "ptr | local_addr | local_port", &[]);
        assert_eq!(
            read_servers(&no_link, None).unwrap_err(),
            MissingColumn {
                view: "SERVERS",
                column: "link"
            }
        );
        let no_way_to_match = table("SERVERS", "ptr | link | local_addr", &[]);
        assert_eq!(
            read_servers(&no_way_to_match, None).unwrap_err().column,
            "remote_pid"
        );
        let pid_only = table("SERVERS", "ptr | link | remote_pid", &[]);
        assert!(read_servers(&pid_only, None).is_ok());
        let no_addr = table("CLIENTS", "ptr | link", &[]);
        assert_eq!(read_clients(&no_addr, None).unwrap_err().column, "addr");
        // What PostgreSQL answers to SHOW is one setting, nothing like a console view.
        let postgres = table("POOLS", "pools", &[]);
        assert!(read_pools(&postgres).is_err());
    }

    #[test]
    fn pools_count_waiting_clients_and_their_longest_wait() {
        let pools = table(
            "POOLS",
            "database | user | cl_active | cl_waiting | cl_active_cancel_req | \
             cl_waiting_cancel_req | sv_active | sv_active_cancel | sv_being_canceled | sv_idle | \
             sv_used | sv_tested | sv_login | maxwait | maxwait_us | pool_mode",
            &[
                "shop_tx | app | 2 | 3 | 0 | 0 | 2 | 0 | 0 | 0 | 1 | 0 | 0 | 7 | 500000 | transaction",
            ],
        );
        let pool = &read_pools(&pools).unwrap()[0];
        assert_eq!((pool.clients_active, pool.clients_waiting), (2, 3));
        assert_eq!((pool.servers_active, pool.servers_used), (2, 1));
        assert_eq!(pool.max_wait, Duration::from_millis(7500));
        assert_eq!(pool.pool_mode.as_deref(), Some("transaction"));
    }
}
