//! The deciding function's rules (DESIGN.md §4–§6), pinned one test each.
//!
//! No database and no cluster: every input is built here. Every session age is relative to the
//! snapshot's `observed_at` (the database's clock), which is fixed at [`t0`] unless a test moves it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::scale::ScaleSpec;
use super::*;
use crate::api::PoolPolicySpec;
use crate::database::pgbouncer::{ClientRow, ConsoleSnapshot, PoolRow, ServerRow};
use crate::database::{
    CLIENT_BACKEND, ChurnSample, MonitorRole, ServerFacts, Session, SessionIdentity, SessionState,
};

mod annotations;
mod attribution;
mod capacity;
mod ended;
mod findings;
mod long_transactions;
mod numbers;
mod pooler;
mod safety;
mod seen;
mod statements;

// Shared between sections.
use annotations::{annotated_cluster, applied};
use findings::{STUCK_TX, churn_between, nullpool, stuck_since};
use long_transactions::long_transaction;
use pooler::POOLER_IP;

// ------------------------------------------------------------------------------------------------
// Time

const MIN: i64 = 60;
const HOUR: i64 = 3600;

/// When every snapshot is taken unless a test says otherwise.
fn t0() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().unwrap()
}

/// `secs` seconds before [`t0`].
fn ago(secs: i64) -> Timestamp {
    t0() - SignedDuration::from_secs(secs)
}

/// `secs` seconds after [`t0`].
fn later(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap())
}

// ------------------------------------------------------------------------------------------------
// Snapshots and sessions

const OWN_PID: i64 = 1;
const MONITOR: &str = "pw_monitor";

/// A moment relative to the snapshot the session appears in, or a fixed one.
#[derive(Clone, Copy)]
enum When {
    Ago(i64),
    At(Timestamp),
    Never,
}

impl When {
    fn resolve(self, observed_at: Timestamp) -> Option<Timestamp> {
        match self {
            When::Ago(secs) => Some(observed_at - SignedDuration::from_secs(secs)),
            When::At(at) => Some(at),
            When::Never => None,
        }
    }
}

/// A client backend of role `app` on database `orders`, from a local socket, idle since just now
/// and connected for two hours (or a minute longer than it has been in its state).
#[derive(Clone)]
struct SessionBuilder {
    session: Session,
    state_change: When,
    backend_start: Option<When>,
}

fn session(pid: i64) -> SessionBuilder {
    SessionBuilder {
        session: Session {
            pid,
            backend_type: CLIENT_BACKEND.to_owned(),
            database: Some("orders".to_owned()),
            user: Some("app".to_owned()),
            user_is_superuser: false,
            application_name: "app".to_owned(),
            client_addr: None,
            client_port: None,
            backend_start: t0(), // resolved in `build`
            xact_start: None,
            state: SessionState::Idle,
            state_change: None, // resolved in `build`
            backend_xmin: None,
            xmin_age: None,
            blocked_by: Vec::new(),
            last_statement: None,
        },
        state_change: When::Ago(0),
        backend_start: None,
    }
}

impl SessionBuilder {
    fn state(mut self, state: SessionState) -> Self {
        self.session.state = state;
        self
    }

    fn idle(self, secs: i64) -> Self {
        self.state(SessionState::Idle).in_state_for(secs)
    }

    fn idle_in_transaction(self, secs: i64) -> Self {
        self.state(SessionState::IdleInTransaction)
            .in_state_for(secs)
    }

    fn active(self, secs: i64) -> Self {
        self.state(SessionState::Active).in_state_for(secs)
    }

    /// `state_change = observed_at - secs`.
    fn in_state_for(mut self, secs: i64) -> Self {
        self.state_change = When::Ago(secs);
        self
    }

    fn in_state_since(mut self, at: Timestamp) -> Self {
        self.state_change = When::At(at);
        self
    }

    fn without_state_change(mut self) -> Self {
        self.state_change = When::Never;
        self
    }

    fn started_ago(mut self, secs: i64) -> Self {
        self.backend_start = Some(When::Ago(secs));
        self
    }

    fn started_at(mut self, at: Timestamp) -> Self {
        self.backend_start = Some(When::At(at));
        self
    }

    fn user(mut self, user: &str) -> Self {
        self.session.user = Some(user.to_owned());
        self
    }

    fn database(mut self, database: &str) -> Self {
        self.session.database = Some(database.to_owned());
        self
    }

    fn application_name(mut self, name: &str) -> Self {
        self.session.application_name = name.to_owned();
        self
    }

    fn client_addr(mut self, addr: &str) -> Self {
        self.session.client_addr = Some(ip(addr));
        self
    }

    /// A server session of the pooler at [`POOLER_IP`], from its local port `port`.
    fn through_pooler(mut self, port: u16) -> Self {
        self.session.client_addr = Some(ip(POOLER_IP));
        self.session.client_port = Some(port);
        self
    }

    fn backend_type(mut self, backend_type: &str) -> Self {
        self.session.backend_type = backend_type.to_owned();
        self
    }

    fn superuser(mut self) -> Self {
        self.session.user_is_superuser = true;
        self
    }

    fn build(&self, observed_at: Timestamp) -> Session {
        let mut session = self.session.clone();
        session.state_change = self.state_change.resolve(observed_at);
        session.backend_start = match self.backend_start {
            Some(when) => when
                .resolve(observed_at)
                .expect("a session always has a start"),
            None => {
                let two_hours_ago = observed_at - SignedDuration::from_secs(2 * HOUR);
                let before_its_state =
                    session.state_change.unwrap_or(observed_at) - SignedDuration::from_secs(MIN);
                two_hours_ago.min(before_its_state)
            }
        };
        session
    }
}

/// A snapshot at [`t0`] of a server with `max_connections = 100` and 3 superuser-reserved slots,
/// seen by a monitoring role with `pg_monitor` and `pg_signal_backend` that is not a superuser.
struct SnapshotBuilder {
    observed_at: Timestamp,
    server: ServerFacts,
    monitor: MonitorRole,
    sessions: Vec<SessionBuilder>,
    sessions_opened_total: Option<i64>,
    churn: Option<crate::database::ChurnSample>,
}

fn snapshot() -> SnapshotBuilder {
    SnapshotBuilder {
        observed_at: t0(),
        server: ServerFacts {
            version: "17.2".to_owned(),
            version_num: 170_002,
            max_connections: 100,
            superuser_reserved_connections: 3,
            reserved_connections: 0,
            ..ServerFacts::default()
        },
        monitor: MonitorRole {
            name: MONITOR.to_owned(),
            is_superuser: false,
            can_signal_backends: true,
            can_read_all_stats: true,
        },
        sessions: Vec::new(),
        sessions_opened_total: None,
        churn: None,
    }
}

impl SnapshotBuilder {
    fn at(mut self, observed_at: Timestamp) -> Self {
        self.observed_at = observed_at;
        self
    }

    fn with(mut self, session: SessionBuilder) -> Self {
        self.sessions.push(session);
        self
    }

    fn with_all(mut self, sessions: impl IntoIterator<Item = SessionBuilder>) -> Self {
        self.sessions.extend(sessions);
        self
    }

    fn monitor_is_superuser(mut self) -> Self {
        self.monitor.is_superuser = true;
        self
    }

    fn monitor_without_pg_signal_backend(mut self) -> Self {
        self.monitor.can_signal_backends = false;
        self
    }

    fn monitor_without_pg_read_all_stats(mut self) -> Self {
        self.monitor.can_read_all_stats = false;
        self
    }

    fn reserved_connections(mut self, n: u32) -> Self {
        self.server.reserved_connections = n;
        self
    }

    fn sessions_opened(mut self, total: i64) -> Self {
        self.sessions_opened_total = Some(total);
        self
    }

    fn build(&self) -> Snapshot {
        Snapshot {
            observed_at: self.observed_at,
            own_pid: OWN_PID,
            server: self.server.clone(),
            monitor: self.monitor.clone(),
            sessions: self
                .sessions
                .iter()
                .map(|s| s.build(self.observed_at))
                .collect(),
            sessions_opened_total: self.sessions_opened_total,
            churn: self.churn.clone(),
            application_names_known: true,
            last_statements: crate::database::LastStatements::Read,
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Policies

/// Parses a PoolPolicy spec from YAML and compiles it.
fn rules(yaml: &str) -> Rules {
    let spec: PoolPolicySpec =
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("bad test YAML: {e}\n{yaml}"));
    Rules::compile(&spec).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// The message `Rules::compile` rejects a spec with.
fn rejection(yaml: &str) -> String {
    let spec: PoolPolicySpec =
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("bad test YAML: {e}\n{yaml}"));
    Rules::compile(&spec)
        .expect_err("the spec should be rejected")
        .to_string()
}

const ENFORCE: &str = "
mode: Enforce
idle: {idleTimeout: 30m, idleInTransactionTimeout: 5m}
leakDetection: {window: 10m}
";

const DRY_RUN: &str = "
mode: DryRun
idle: {idleTimeout: 30m, idleInTransactionTimeout: 5m}
leakDetection: {window: 10m}
";

// ------------------------------------------------------------------------------------------------
// The cluster: Deployment shop/orders-api, pod n at 10.0.0.n, running for a day.

const POLICY_NAME: &str = "shop/orders-db";

fn ip(addr: &str) -> IpAddr {
    addr.parse().unwrap()
}

fn orders_api() -> WorkloadRef {
    WorkloadRef {
        namespace: "shop".into(),
        kind: "Deployment".into(),
        name: "orders-api".into(),
    }
}

fn deployment() -> Source {
    Source::Workload(orders_api())
}

fn about(source: Source) -> Subject {
    Subject::Source { source }
}

fn client(application: &str, address: Option<&str>) -> Source {
    Source::Client {
        application: application.to_owned(),
        address: address.map(ip),
    }
}

fn pod_name(n: u8) -> String {
    format!("orders-api-7c9d8f6b5-{n}")
}

fn pod_ip(n: u8) -> String {
    format!("10.0.0.{n}")
}

fn pod(n: u8) -> PodInfo {
    PodInfo {
        name: pod_name(n).into(),
        ips: vec![ip(&pod_ip(n))],
        started_at: Some(ago(24 * HOUR)),
        workload: orders_api(),
        ready: true,
    }
}

/// Pod `n` of orders-api, gone at `departed_at` after two days of running.
fn departed(n: u8, departed_at: Timestamp) -> DepartedPod {
    DepartedPod {
        name: pod_name(n).into(),
        ips: vec![ip(&pod_ip(n))],
        started_at: Some(ago(48 * HOUR)),
        departed_at,
        workload: orders_api(),
    }
}

/// orders-api, declaring `max_replicas` (`poolwarden.io/max-replicas`) and `pool_max`.
fn workload(max_replicas: u32, pool_max: Option<u32>) -> WorkloadInfo {
    WorkloadInfo {
        workload: orders_api(),
        scale: ScaleSpec {
            running: 3,
            declared: Some(max_replicas),
            ..ScaleSpec::default()
        },
        pool_max,
        annotations: BTreeMap::new(),
    }
}

/// Pods 1, 2 and 3 of orders-api; no workload facts, no policy name.
fn cluster() -> ClusterView {
    ClusterView {
        pods: vec![pod(1), pod(2), pod(3)],
        ..ClusterView::default()
    }
}

// ------------------------------------------------------------------------------------------------
// Deciding and reading the decision

fn decide_standalone(snapshot: &Snapshot, rules: &Rules) -> Decision {
    decide_with(snapshot, rules, &ClusterView::default(), &Memory::default())
}

fn decide_with(
    snapshot: &Snapshot,
    rules: &Rules,
    cluster: &ClusterView,
    memory: &Memory,
) -> Decision {
    decide(Inputs {
        snapshot,
        rules,
        cluster,
        poolers: &[],
        memory,
    })
}

fn pids(terminations: &[Termination]) -> Vec<i64> {
    terminations.iter().map(|t| t.identity.pid).collect()
}

fn reasons(terminations: &[Termination]) -> Vec<Reason> {
    terminations.iter().map(|t| t.reason).collect()
}

fn findings(decision: &Decision, kind: FindingKind) -> Vec<&Finding> {
    decision
        .findings
        .iter()
        .filter(|f| f.shown.kind == kind)
        .collect()
}

/// The one finding of `kind`; panics if there is none or more than one.
fn the_finding(decision: &Decision, kind: FindingKind) -> &Finding {
    let found = findings(decision, kind);
    assert_eq!(
        found.len(),
        1,
        "expected one {kind:?} finding, got {found:#?}"
    );
    found[0]
}

fn group<'d>(decision: &'d Decision, source: &Source) -> &'d Group {
    decision
        .groups
        .iter()
        .find(|g| &g.source == source)
        .unwrap_or_else(|| panic!("no group for {source}: {:#?}", decision.groups))
}

fn sorted(mut pids: Vec<i64>) -> Vec<i64> {
    pids.sort_unstable();
    pids
}
