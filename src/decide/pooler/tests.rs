use super::*;
use crate::database::pgbouncer::{ClientRow, ConsoleSnapshot, ServerRow};
use crate::database::{CLIENT_BACKEND, Session, SessionState};
use std::net::IpAddr;

const POOLER_IP: &str = "10.244.0.5";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A backend of user `app` whose client is the pooler at `POOLER_IP:port`.
fn backend(pid: i64, port: u16) -> Session {
    Session {
        pid,
        backend_type: CLIENT_BACKEND.to_owned(),
        database: Some("shop".to_owned()),
        user: Some("app".to_owned()),
        user_is_superuser: false,
        application_name: String::new(),
        client_addr: Some(ip(POOLER_IP)),
        client_port: Some(port),
        backend_start: jiff::Timestamp::UNIX_EPOCH,
        xact_start: None,
        state: SessionState::Idle,
        state_change: None,
        backend_xmin: None,
        xmin_age: None,
        blocked_by: Vec::new(),
        last_statement: None,
    }
}

/// A server connection from `POOLER_IP:port` to backend `pid`, linked to client `link`.
fn server(ptr: &str, port: u16, pid: i32, link: Option<&str>) -> ServerRow {
    ServerRow {
        ptr: ptr.to_owned(),
        link: link.map(str::to_owned),
        user: "app".to_owned(),
        database: "shop_tx".to_owned(),
        state: if link.is_some() { "active" } else { "idle" }.to_owned(),
        local_addr: Some(ip(POOLER_IP)),
        local_port: Some(port),
        remote_pid: Some(pid),
        connected_for: None,
        since_request: None,
    }
}

/// A client from `addr` linked to server `link`.
fn client(ptr: &str, addr: &str, link: Option<&str>) -> ClientRow {
    ClientRow {
        ptr: ptr.to_owned(),
        link: link.map(str::to_owned),
        user: "app".to_owned(),
        database: "shop_tx".to_owned(),
        state: "active".to_owned(),
        addr: addr.parse().ok(),
        port: Some(38000),
        application_name: None,
        connected_for: None,
        since_request: None,
        waiting_for: None,
    }
}

fn console(servers: Vec<ServerRow>, clients: Vec<ClientRow>) -> ConsoleSnapshot {
    ConsoleSnapshot {
        servers,
        clients,
        pools: Vec::new(),
    }
}

fn one(sessions: &[Session], console: &ConsoleSnapshot) -> PoolerJoin {
    join(
        sessions,
        &[Pooler {
            name: "pgbouncer:6432",
            console,
        }],
    )
}

fn client_addr(join: &PoolerJoin, pid: i64) -> Option<IpAddr> {
    match join.behind(pid) {
        Some(Behind::Client(client)) => client.addr,
        other => panic!("backend {pid} is not linked to a client: {other:?}"),
    }
}

#[test]
fn a_linked_server_session_belongs_to_the_client_address() {
    let sessions = [backend(101, 41000)];
    let console = console(
        vec![server("0xs1", 41000, 101, Some("0xc1"))],
        vec![client("0xc1", "10.244.1.17", Some("0xs1"))],
    );
    let join = one(&sessions, &console);
    assert_eq!(client_addr(&join, 101), Some(ip("10.244.1.17")));
    assert_eq!(join.tallies[0].linked, 1);
}

#[test]
fn an_unlinked_server_session_is_held_by_the_pooler_and_counted() {
    let sessions = [backend(101, 41000), backend(102, 41001)];
    let console = console(
        vec![
            server("0xs1", 41000, 101, None),
            server("0xs2", 41001, 102, None),
        ],
        vec![client("0xc1", "10.244.1.17", None)],
    );
    let join = one(&sessions, &console);
    for pid in [101, 102] {
        assert_eq!(
            join.behind(pid),
            Some(&Behind::HeldByPooler {
                pooler: "pgbouncer:6432".into()
            })
        );
    }
    assert_eq!(join.tallies[0].held_by_pooler, 2);
    assert_eq!(join.tallies[0].linked, 0);
}

#[test]
fn behind_nat_the_pid_and_the_user_decide() {
    // PostgreSQL sees the node's address, not the pooler's.
    let mut natted = backend(101, 5000);
    natted.client_addr = Some(ip("192.168.0.9"));
    let mut other_user = backend(102, 5001);
    other_user.client_addr = Some(ip("192.168.0.9"));
    other_user.user = Some("batch".into());
    let sessions = [natted, other_user];
    let console = console(
        vec![
            server("0xs1", 41000, 101, Some("0xc1")),
            server("0xs2", 41001, 102, Some("0xc2")),
        ],
        vec![
            client("0xc1", "10.244.1.17", Some("0xs1")),
            client("0xc2", "10.244.1.18", Some("0xs2")),
        ],
    );
    let join = one(&sessions, &console);
    assert_eq!(client_addr(&join, 101), Some(ip("10.244.1.17")));
    // Pid 102 of user batch here is not the pooler's pid 102 of user app (another server's).
    assert_eq!(join.behind(102), None);
    assert_eq!(join.tallies[0].elsewhere, 1);
}

#[test]
fn a_pooler_on_a_unix_socket_is_matched_by_pid() {
    let mut local = backend(101, 0);
    local.client_addr = None;
    local.client_port = None;
    let console = console(
        vec![unix_server("0xs1", 101, Some("0xc1"))],
        vec![client("0xc1", "10.244.1.17", Some("0xs1"))],
    );
    let join = one(&[local], &console);
    assert_eq!(client_addr(&join, 101), Some(ip("10.244.1.17")));
}

#[test]
fn the_same_local_port_towards_another_server_is_not_this_backend() {
    // The pooler fronts two servers; its connection to the other one reuses local port
    // 41000, and PgBouncer knows it as pid 9999.
    let sessions = [backend(101, 41000)];
    let console = console(
        vec![server("0xs9", 41000, 9999, Some("0xc1"))],
        vec![client("0xc1", "10.244.1.17", Some("0xs9"))],
    );
    let join = one(&sessions, &console);
    assert_eq!(join.behind(101), None);
    assert_eq!(join.tallies[0].elsewhere, 1);
}

#[test]
fn where_addresses_match_a_pid_alone_finds_only_strangers() {
    // The pooler's connections show up here with their addresses, so its connection to
    // another server (pid 102 there) is not the direct session that has pid 102 here.
    let direct = Session {
        client_addr: Some(ip("10.244.1.50")),
        ..backend(102, 50000)
    };
    let sessions = [backend(101, 41000), direct];
    let console = console(
        vec![
            server("0xs1", 41000, 101, None),
            server("0xs2", 43000, 102, Some("0xc2")),
        ],
        vec![client("0xc2", "10.244.1.18", Some("0xs2"))],
    );
    let join = one(&sessions, &console);
    assert!(matches!(
        join.behind(101),
        Some(Behind::HeldByPooler { .. })
    ));
    assert_eq!(join.behind(102), None);
    assert_eq!(join.tallies[0].elsewhere, 1);
}

#[test]
fn links_that_do_not_name_each_other_are_unsettled_never_blamed() {
    let sessions = [backend(101, 41000), backend(102, 41001)];
    let console = console(
        vec![
            // Its client left between the two looks, and a newcomer got the same ptr.
            server("0xs1", 41000, 101, Some("0xc1")),
            // Unlinked in SHOW SERVERS, taken by a client by the time of SHOW CLIENTS.
            server("0xs2", 41001, 102, None),
        ],
        vec![
            client("0xc1", "10.244.1.99", None),
            client("0xc2", "10.244.1.18", Some("0xs2")),
        ],
    );
    let join = one(&sessions, &console);
    for pid in [101, 102] {
        assert!(
            matches!(join.behind(pid), Some(Behind::Unsettled { .. })),
            "{pid}: {:?}",
            join.behind(pid)
        );
    }
    assert_eq!(join.tallies[0].unsettled, 2);
}

/// A server connection over a Unix socket: known by its pid only.
fn unix_server(ptr: &str, pid: i32, link: Option<&str>) -> ServerRow {
    ServerRow {
        local_addr: None,
        local_port: None,
        ..server(ptr, 0, pid, link)
    }
}

#[test]
fn each_pooler_counts_its_own_and_a_backend_claimed_twice_is_unsettled() {
    let mut natted = backend(103, 6000);
    natted.client_addr = Some(ip("192.168.0.9"));
    let sessions = [backend(101, 41000), backend(102, 41001), natted];
    let first = console(
        vec![
            server("0xs1", 41000, 101, Some("0xc1")),
            server("0xs2", 41001, 102, None),
        ],
        vec![client("0xc1", "10.244.1.17", Some("0xs1"))],
    );
    let second = console(
        vec![
            unix_server("0xt3", 103, Some("0xd3")),
            // Weaker than the first pooler's match by address and port: ignored.
            unix_server("0xt1", 101, None),
        ],
        vec![client("0xd3", "10.244.1.19", Some("0xt3"))],
    );
    let third = console(vec![unix_server("0xu3", 103, None)], vec![]);
    let join = join(
        &sessions,
        &[
            Pooler {
                name: "first",
                console: &first,
            },
            Pooler {
                name: "second",
                console: &second,
            },
            Pooler {
                name: "third",
                console: &third,
            },
        ],
    );
    assert_eq!(client_addr(&join, 101), Some(ip("10.244.1.17")));
    assert!(matches!(
        join.behind(102),
        Some(Behind::HeldByPooler { pooler }) if pooler == "first"
    ));
    // Two poolers claim 103 by pid alone: neither wins.
    assert!(matches!(join.behind(103), Some(Behind::Unsettled { .. })));
    let counts: Vec<(u32, u32, u32)> = join
        .tallies
        .iter()
        .map(|t| (t.linked, t.held_by_pooler, t.unsettled))
        .collect();
    assert_eq!(counts[0], (1, 1, 0));
    assert_eq!(counts[1].2 + counts[2].2, 1);
    assert_eq!(counts[1].0 + counts[1].1 + counts[2].0 + counts[2].1, 0);
}

#[test]
fn backends_from_anywhere_else_are_left_out() {
    let direct = Session {
        client_addr: Some(ip("10.244.1.50")),
        ..backend(200, 50000)
    };
    let mut background = backend(201, 41000);
    background.backend_type = "autovacuum worker".into();
    let console = console(vec![server("0xs1", 41000, 201, None)], vec![]);
    let join = one(&[direct, background], &console);
    assert!(join.by_pid.is_empty());
    assert_eq!(join.tallies[0].elsewhere, 1);
}
