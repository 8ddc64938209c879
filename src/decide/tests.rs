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

mod capacity;
use crate::api::PoolPolicySpec;
use crate::database::pgbouncer::{ClientRow, ConsoleSnapshot, PoolRow, ServerRow};
mod statements;

use crate::database::{
    CLIENT_BACKEND, ChurnSample, MonitorRole, ServerFacts, Session, SessionIdentity, SessionState,
};

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
        namespace: "shop".to_owned(),
        kind: "Deployment".to_owned(),
        name: "orders-api".to_owned(),
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
        name: pod_name(n),
        ips: vec![ip(&pod_ip(n))],
        started_at: Some(ago(24 * HOUR)),
        workload: orders_api(),
        ready: true,
    }
}

/// Pod `n` of orders-api, gone at `departed_at` after two days of running.
fn departed(n: u8, departed_at: Timestamp) -> DepartedPod {
    DepartedPod {
        name: pod_name(n),
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
        .filter(|f| f.kind == kind)
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

// ================================================================================================
// Safety (DESIGN.md §4)
// ================================================================================================

#[test]
fn only_client_backends_are_ever_candidates() {
    let snap = snapshot()
        .with(session(10).backend_type("walsender").idle(10 * HOUR))
        .with(
            session(11)
                .backend_type("autovacuum worker")
                .idle(10 * HOUR),
        )
        .with(
            session(12)
                .backend_type("background worker")
                .idle_in_transaction(10 * HOUR),
        )
        .with(session(13).idle(10 * HOUR))
        .build();
    let d = decide_standalone(&snap, &rules(ENFORCE));
    assert_eq!(pids(&d.terminate), [13]);
    assert!(d.deferred.is_empty() && d.protected.is_empty());
    assert_eq!(d.in_scope.total, 1);
    // Background processes are not connections anyone opened: not even counted as out of scope.
    assert!(d.out_of_scope.is_empty(), "{:?}", d.out_of_scope);

    // Not even when it comes from a departed pod's address, where orphans skip the timeouts.
    let departed_cluster = ClusterView {
        departed: vec![departed(4, ago(MIN))],
        ..cluster()
    };
    let snap = snapshot()
        .with(
            session(14)
                .backend_type("walsender")
                .client_addr(&pod_ip(4))
                .idle(10),
        )
        .build();
    let d = decide_with(
        &snap,
        &rules(ENFORCE),
        &departed_cluster,
        &Memory::default(),
    );
    assert!(d.terminate.is_empty(), "{:#?}", d.terminate);
}

#[test]
fn poolwardens_own_session_and_other_poolwardens_are_never_terminated() {
    let snap = snapshot()
        .with(
            session(OWN_PID)
                .application_name("monitoring")
                .idle(10 * HOUR),
        )
        .with(session(20).application_name("poolwarden").idle(10 * HOUR))
        .with(session(21).idle(10 * HOUR))
        .build();
    let d = decide_standalone(&snap, &rules(ENFORCE));
    assert_eq!(pids(&d.terminate), [21]);
    assert_eq!(d.out_of_scope.get(&Exclusion::OwnSession), Some(&1));
    assert_eq!(d.out_of_scope.get(&Exclusion::PoolwardenSession), Some(&1));
}

#[test]
fn excluded_users_and_applications_are_never_terminated() {
    let policy = rules(
        r#"
mode: Enforce
scope: {excludeUsers: [postgres], excludeApplications: [psql, "pg_dump*"]}
idle: {idleTimeout: 30m}
"#,
    );
    let snap = snapshot()
        .with(session(30).user("postgres").idle(HOUR))
        .with(session(31).application_name("pg_dump").idle(HOUR))
        .with(session(32).application_name("pg_dumpall").idle(HOUR))
        .with(session(33).application_name("psql").idle(HOUR))
        // A glob without a wildcard matches the whole name only.
        .with(session(34).application_name("psql-nightly").idle(HOUR))
        .with(session(35).idle(HOUR))
        .build();
    let d = decide_standalone(&snap, &policy);
    assert_eq!(pids(&d.terminate), [34, 35]);
    assert_eq!(d.out_of_scope.get(&Exclusion::ExcludedUser), Some(&1));
    assert_eq!(
        d.out_of_scope.get(&Exclusion::ExcludedApplication),
        Some(&3)
    );
}

#[test]
fn sessions_outside_the_scopes_databases_and_users_are_never_terminated_only_counted() {
    let policy = rules(
        "
mode: Enforce
scope: {databases: [orders], users: [app]}
idle: {idleTimeout: 30m}
",
    );
    let snap = snapshot()
        .with(session(40).database("billing").idle(HOUR))
        .with(session(41).user("reporting").idle(HOUR))
        .with(session(42).database("billing").user("reporting").idle(HOUR))
        .with(session(43).idle(HOUR))
        .build();
    let d = decide_standalone(&snap, &policy);
    assert_eq!(pids(&d.terminate), [43]);
    assert_eq!(d.out_of_scope.get(&Exclusion::OtherDatabase), Some(&2));
    assert_eq!(d.out_of_scope.get(&Exclusion::OtherUser), Some(&1));
    assert_eq!(d.in_scope.total, 1);
    assert_eq!(d.capacity.scope_sessions, 1);
    assert_eq!(d.capacity.client_sessions, 4);
}

#[test]
fn active_fastpath_disabled_and_unknown_sessions_are_never_terminated_however_old() {
    let three_days = 3 * 24 * HOUR;
    let snap = snapshot()
        .with(session(50).active(three_days))
        .with(
            session(51)
                .state(SessionState::FastpathFunctionCall)
                .in_state_for(three_days),
        )
        .with(
            session(52)
                .state(SessionState::Disabled)
                .in_state_for(three_days),
        )
        .with(
            session(53)
                .state(SessionState::Unknown)
                .in_state_for(three_days),
        )
        .with(session(54).idle(31 * MIN))
        .build();
    for policy in [ENFORCE, DRY_RUN] {
        let d = decide_standalone(&snap, &rules(policy));
        let condemned: Vec<i64> = [&d.terminate, &d.dry_run, &d.deferred]
            .into_iter()
            .flat_map(|list| pids(list))
            .collect();
        assert_eq!(condemned, [54]);
        assert!(d.protected.is_empty());
    }
}

#[test]
fn sessions_without_a_state_change_are_never_terminated() {
    let departed_cluster = ClusterView {
        departed: vec![departed(4, ago(5 * MIN))],
        ..cluster()
    };
    let snap = snapshot()
        .with(session(60).state(SessionState::Idle).without_state_change())
        .with(
            session(61)
                .state(SessionState::IdleInTransaction)
                .without_state_change(),
        )
        // An orphan skips the timeouts, but there is still nothing to re-verify it against.
        .with(
            session(62)
                .state(SessionState::Idle)
                .without_state_change()
                .client_addr(&pod_ip(4))
                .started_ago(HOUR),
        )
        .with(session(63).idle(31 * MIN))
        .build();
    let d = decide_with(
        &snap,
        &rules(ENFORCE),
        &departed_cluster,
        &Memory::default(),
    );
    assert_eq!(pids(&d.terminate), [63]);
    assert!(d.deferred.is_empty());
    assert!(d.protected.is_empty());
}

#[test]
fn dry_run_never_terminates_and_reports_what_enforce_would() {
    let snap = snapshot()
        .with(session(70).idle(HOUR))
        .with(session(71).idle_in_transaction(10 * MIN))
        .with(session(72).idle(MIN))
        .build();

    let dry = decide_standalone(&snap, &rules(DRY_RUN));
    assert_eq!(dry.mode, Mode::DryRun);
    assert!(dry.terminate.is_empty());
    assert_eq!(pids(&dry.dry_run), [70, 71]);

    let enforce = decide_standalone(&snap, &rules(ENFORCE));
    assert_eq!(enforce.mode, Mode::Enforce);
    assert!(enforce.dry_run.is_empty());
    assert_eq!(enforce.terminate, dry.dry_run);

    // A policy that does not say is a dry run.
    let unspecified = decide_standalone(&snap, &rules("idle: {idleTimeout: 30m}"));
    assert!(unspecified.terminate.is_empty());
    assert_eq!(pids(&unspecified.dry_run), [70]);
}

#[test]
fn max_terminations_per_cycle_caps_the_list_longest_idle_first() {
    let yaml = "
idle: {idleTimeout: 30m, idleInTransactionTimeout: 5m, maxTerminationsPerCycle: 3}
";
    let snap = snapshot()
        .with(session(80).idle(40 * MIN))
        .with(session(81).idle(2 * HOUR))
        .with(session(82).idle(31 * MIN))
        .with(session(83).idle(5 * HOUR))
        .with(session(84).idle(HOUR))
        .with(session(85).idle_in_transaction(6 * MIN))
        .with(session(86).idle(2 * HOUR))
        .with(session(87).idle(10 * MIN)) // not past any timeout
        .build();

    let d = decide_standalone(&snap, &rules(&format!("mode: Enforce\n{yaml}")));
    assert_eq!(pids(&d.terminate), [83, 81, 86]);
    assert_eq!(pids(&d.deferred), [84, 80, 82, 85]);

    let d = decide_standalone(&snap, &rules(&format!("mode: DryRun\n{yaml}")));
    assert_eq!(pids(&d.dry_run), [83, 81, 86]);
    assert_eq!(pids(&d.deferred), [84, 80, 82, 85]);
}

#[test]
fn a_superusers_sessions_are_protected_unless_the_monitor_is_a_superuser() {
    let sessions = [
        session(90).user("postgres").superuser().idle(HOUR),
        session(91).idle(HOUR),
    ];

    let snap = snapshot().with_all(sessions.clone()).build();
    let d = decide_standalone(&snap, &rules(ENFORCE));
    assert_eq!(pids(&d.terminate), [91]);
    assert_eq!(d.protected.len(), 1);
    assert_eq!(d.protected[0].pid, 90);
    assert_eq!(d.protected[0].protection, Protection::SuperuserSession);
    assert_eq!(d.protected[0].reason, Reason::IdleTimeout);
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("superuser") && w.contains("non-superuser role")),
        "{:#?}",
        d.warnings
    );

    let snap = snapshot().monitor_is_superuser().with_all(sessions).build();
    let d = decide_standalone(&snap, &rules(ENFORCE));
    assert_eq!(pids(&d.terminate), [90, 91]);
    assert!(d.protected.is_empty());
    // Nothing is protected from a superuser's connection: that itself is worth a warning.
    assert_eq!(d.warnings.len(), 1, "{:#?}", d.warnings);
    assert!(
        d.warnings[0].contains("monitoring URL logs in as pw_monitor, a superuser"),
        "{}",
        d.warnings[0]
    );
}

#[test]
fn a_session_poolwarden_may_not_end_is_put_on_record_once_while_it_stays_so() {
    // Started `started` seconds before t0, idle since t0 - 1h.
    let refused = |pid: i64, started: i64| {
        session(pid)
            .user("postgres")
            .superuser()
            .started_at(ago(started))
            .in_state_since(ago(HOUR))
    };
    let look = |at: i64, sessions: Vec<SessionBuilder>| {
        snapshot().at(later(at)).with_all(sessions).build()
    };
    let d1 = decide_with(
        &look(0, vec![refused(102, 2 * HOUR)]),
        &rules(ENFORCE),
        &cluster(),
        &Memory::default(),
    );
    assert_eq!(d1.newly_refused, BTreeSet::from([102]));
    // Still refused: on record already.
    let d2 = decide_with(
        &look(30, vec![refused(102, 2 * HOUR)]),
        &rules(ENFORCE),
        &cluster(),
        &d1.memory,
    );
    assert!(d2.newly_refused.is_empty());
    // Pid 102 reused by a newer backend: another session, on record anew.
    let d3 = decide_with(
        &look(60, vec![refused(102, 2 * HOUR - 61)]),
        &rules(ENFORCE),
        &cluster(),
        &d2.memory,
    );
    assert_eq!(d3.newly_refused, BTreeSet::from([102]));
    // Gone for a cycle, then refused again: on record again.
    let d4 = decide_with(&look(90, vec![]), &rules(ENFORCE), &cluster(), &d3.memory);
    let d5 = decide_with(
        &look(120, vec![refused(102, 2 * HOUR - 61)]),
        &rules(ENFORCE),
        &cluster(),
        &d4.memory,
    );
    assert_eq!(d5.newly_refused, BTreeSet::from([102]));
    // Nothing is refused in DryRun: nothing is ended.
    let dry = decide_with(
        &look(0, vec![refused(102, 2 * HOUR)]),
        &rules(DRY_RUN),
        &cluster(),
        &Memory::default(),
    );
    assert_eq!(dry.protected.len(), 1);
    assert!(dry.newly_refused.is_empty());
}

#[test]
fn without_pg_signal_backend_only_the_monitors_own_roles_sessions_are_terminable() {
    let snap = snapshot()
        .monitor_without_pg_signal_backend()
        .with(session(100).user("app").idle(3 * HOUR))
        .with(session(101).user(MONITOR).idle(2 * HOUR))
        .with(session(102).user("postgres").superuser().idle(HOUR))
        .build();
    let d = decide_standalone(&snap, &rules(ENFORCE));
    assert_eq!(pids(&d.terminate), [101]);
    let protected: Vec<(i64, Protection)> =
        d.protected.iter().map(|p| (p.pid, p.protection)).collect();
    assert_eq!(
        protected,
        [
            (100, Protection::MissingSignalPrivilege),
            (102, Protection::SuperuserSession)
        ]
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("GRANT pg_signal_backend")),
        "{:#?}",
        d.warnings
    );
    assert!(
        d.warnings.iter().any(|w| w.contains("superuser")),
        "{:#?}",
        d.warnings
    );
}

#[test]
fn a_monitor_that_cannot_read_all_stats_is_told_to_get_pg_monitor() {
    let snap = snapshot().monitor_without_pg_read_all_stats().build();
    let d = decide_standalone(&snap, &rules(ENFORCE));
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("GRANT pg_monitor TO pw_monitor")),
        "{:#?}",
        d.warnings
    );
}

#[test]
fn timeouts_are_strict_a_session_idle_for_exactly_the_timeout_is_spared() {
    let snap = snapshot()
        .with(session(110).idle(30 * MIN))
        .with(session(111).idle(30 * MIN + 1))
        .with(session(112).idle_in_transaction(5 * MIN))
        .with(session(113).idle_in_transaction(5 * MIN + 1))
        .with(
            session(114)
                .state(SessionState::IdleInTransactionAborted)
                .in_state_for(5 * MIN + 1),
        )
        .build();
    let d = decide_standalone(&snap, &rules(ENFORCE));
    assert_eq!(pids(&d.terminate), [111, 113, 114]);
    assert_eq!(
        reasons(&d.terminate),
        [
            Reason::IdleTimeout,
            Reason::IdleInTransactionTimeout,
            Reason::IdleInTransactionTimeout
        ]
    );
}

#[test]
fn ages_are_measured_by_the_database_clock_not_the_wall_clock() {
    // Decades before the wall clock: by the wall clock this session has been idle for years.
    let past: Timestamp = "2001-01-01T00:00:00Z".parse().unwrap();
    let snap = snapshot().at(past).with(session(120).idle(1)).build();
    let d = decide_standalone(&snap, &rules(ENFORCE));
    assert!(d.terminate.is_empty(), "{:#?}", d.terminate);

    // Decades after it: by the wall clock this session has not even begun to idle.
    let future: Timestamp = "2100-01-01T00:00:00Z".parse().unwrap();
    let snap = snapshot()
        .at(future)
        .with(session(121).idle(31 * MIN))
        .build();
    let d = decide_standalone(&snap, &rules(ENFORCE));
    assert_eq!(pids(&d.terminate), [121]);
    assert_eq!(d.terminate[0].in_state_for, secs(31 * MIN));
    assert_eq!(d.observed_at, future);
}

#[test]
fn a_termination_carries_the_sessions_identity_exactly_as_observed() {
    let started: Timestamp = "2026-01-01T09:15:30.123456Z".parse().unwrap();
    let changed: Timestamp = "2026-01-01T11:40:00.5Z".parse().unwrap();
    let snap = snapshot()
        .with(
            session(130)
                .user("orders")
                .application_name("orders-worker")
                .started_at(started)
                .state(SessionState::IdleInTransaction)
                .in_state_since(changed),
        )
        .with(
            session(131)
                .started_at(started)
                .state(SessionState::IdleInTransactionAborted)
                .in_state_since(changed),
        )
        .with(
            session(132)
                .started_at(started)
                .state(SessionState::Idle)
                .in_state_since(ago(HOUR)),
        )
        .build();
    let d = decide_standalone(&snap, &rules(ENFORCE));
    assert_eq!(pids(&d.terminate), [132, 130, 131]);

    let identities: Vec<&SessionIdentity> = d.terminate.iter().map(|t| &t.identity).collect();
    assert_eq!(
        identities,
        [
            &SessionIdentity {
                pid: 132,
                backend_start: started,
                state: "idle".to_owned(),
                state_change: ago(HOUR),
                xact_start: None,
            },
            &SessionIdentity {
                pid: 130,
                backend_start: started,
                state: "idle in transaction".to_owned(),
                state_change: changed,
                xact_start: None,
            },
            &SessionIdentity {
                pid: 131,
                backend_start: started,
                state: "idle in transaction (aborted)".to_owned(),
                state_change: changed,
                xact_start: None,
            },
        ]
    );
    let t = &d.terminate[1];
    assert_eq!(t.reason, Reason::IdleInTransactionTimeout);
    assert_eq!(t.user, "orders");
    assert_eq!(t.database, "orders");
    assert_eq!(t.application_name, "orders-worker");
    assert_eq!(t.source, client("orders-worker", None));
    assert_eq!(t.in_state_for, Duration::from_millis(19 * 60_000 + 59_500));
}

#[test]
fn a_zero_idle_timeout_is_rejected_naming_the_field() {
    let message = rejection("idle: {idleTimeout: 0s}");
    assert!(message.contains("spec.idle.idleTimeout"), "{message}");
    let message = rejection("idle: {idleInTransactionTimeout: 0s}");
    assert!(
        message.contains("spec.idle.idleInTransactionTimeout"),
        "{message}"
    );
}

#[test]
fn a_bad_glob_is_rejected_naming_the_field_and_the_glob() {
    let message = rejection(r#"scope: {excludeApplications: ["["]}"#);
    assert!(
        message.contains("spec.scope.excludeApplications"),
        "{message}"
    );
    assert!(message.contains(r#""[""#), "{message}");
}

#[test]
fn a_per_pod_budget_above_the_total_budget_is_rejected_naming_the_field() {
    let message = rejection("budgets: {maxConnections: 10, maxConnectionsPerPod: 11}");
    assert!(
        message.contains("spec.budgets.maxConnectionsPerPod"),
        "{message}"
    );
    // Equal is fine.
    rules("budgets: {maxConnections: 10, maxConnectionsPerPod: 10}");
}

#[test]
fn a_zero_termination_cap_is_rejected_naming_the_field() {
    let message = rejection("idle: {maxTerminationsPerCycle: 0}");
    assert!(
        message.contains("spec.idle.maxTerminationsPerCycle"),
        "{message}"
    );
}

#[test]
fn a_zero_per_pod_budget_is_rejected_naming_the_field() {
    // A policy file for `poolwarden check` never meets the CRD schema's `minimum: 1`.
    let message = rejection("budgets: {maxConnectionsPerPod: 0}");
    assert!(
        message.contains("spec.budgets.maxConnectionsPerPod"),
        "{message}"
    );
}

#[test]
fn every_problem_of_a_spec_is_reported_at_once() {
    let message = rejection(
        r#"
idle: {idleTimeout: 0s}
scope: {excludeApplications: ["["]}
"#,
    );
    assert!(message.contains("spec.idle.idleTimeout"), "{message}");
    assert!(
        message.contains("spec.scope.excludeApplications"),
        "{message}"
    );
}

// ================================================================================================
// Attribution (DESIGN.md §5)
// ================================================================================================

#[test]
fn a_session_from_a_pod_ip_that_started_after_the_pod_belongs_to_its_deployment() {
    let snap = snapshot()
        .with(session(200).client_addr(&pod_ip(1)).idle(HOUR))
        .build();
    let d = decide_with(&snap, &rules(ENFORCE), &cluster(), &Memory::default());
    let g = group(&d, &deployment());
    assert_eq!(g.via, Via::PodIp);
    assert_eq!(g.pods, BTreeSet::from([pod_name(1)]));
    assert_eq!(d.terminate[0].source, deployment());
    assert_eq!(d.terminate[0].pod, pod_name(1));
}

#[test]
fn a_session_older_than_the_pod_on_its_ip_is_not_that_pods() {
    // Pod 1 was restarted ten minutes ago and got an address that was in use before.
    let restarted = ClusterView {
        pods: vec![PodInfo {
            started_at: Some(ago(10 * MIN)),
            ..pod(1)
        }],
        ..ClusterView::default()
    };
    let snap = snapshot()
        .with(
            session(210)
                .client_addr(&pod_ip(1))
                .started_ago(HOUR)
                .idle(MIN),
        )
        .with(
            session(211)
                .client_addr(&pod_ip(1))
                .started_ago(5 * MIN)
                .idle(MIN),
        )
        .build();
    let d = decide_with(&snap, &rules(ENFORCE), &restarted, &Memory::default());

    let old = group(&d, &client("app", Some(&pod_ip(1))));
    assert_eq!(old.via, Via::Unattributed);
    assert_eq!(old.counts.total, 1);
    let new = group(&d, &deployment());
    assert_eq!(new.via, Via::PodIp);
    assert_eq!(new.counts.total, 1);
}

#[test]
fn an_application_name_equal_to_a_pod_name_attributes_the_session_to_that_pod() {
    let restarted = ClusterView {
        pods: vec![PodInfo {
            started_at: Some(ago(10 * MIN)),
            ..pod(2)
        }],
        ..ClusterView::default()
    };
    let snap = snapshot()
        // Through a NAT: the address is the node's, the name is the pod's.
        .with(
            session(220)
                .application_name(&pod_name(2))
                .client_addr("192.168.7.7")
                .started_ago(MIN),
        )
        .with(session(221).application_name(&pod_name(2)).started_ago(MIN))
        // Same name, but older than the pod: a previous pod of that name.
        .with(
            session(222)
                .application_name(&pod_name(2))
                .client_addr("192.168.7.8")
                .started_ago(HOUR),
        )
        .build();
    let d = decide_with(&snap, &rules(DRY_RUN), &restarted, &Memory::default());

    let g = group(&d, &deployment());
    assert_eq!(g.via, Via::ApplicationName);
    assert_eq!(g.counts.total, 2);
    assert_eq!(g.pods, BTreeSet::from([pod_name(2)]));
    let stale = group(&d, &client(&pod_name(2), Some("192.168.7.8")));
    assert_eq!(stale.via, Via::Unattributed);
}

#[test]
fn a_groups_via_is_its_least_trusted_attribution_whatever_the_session_order() {
    let by_ip = session(225).client_addr(&pod_ip(1));
    let by_name = session(226)
        .application_name(&pod_name(2))
        .client_addr("192.168.7.7");
    for sessions in [
        [by_ip.clone(), by_name.clone()],
        [by_name.clone(), by_ip.clone()],
    ] {
        let snap = snapshot().with_all(sessions).build();
        let d = decide_with(&snap, &rules(DRY_RUN), &cluster(), &Memory::default());
        let g = group(&d, &deployment());
        assert_eq!(g.counts.total, 2);
        assert_eq!(
            g.via,
            Via::ApplicationName,
            "pids in order {:?}",
            snap.sessions.iter().map(|s| s.pid).collect::<Vec<_>>()
        );
    }
}

#[test]
fn an_idle_orphan_is_terminated_at_once_but_an_active_one_is_not() {
    let with_departed = ClusterView {
        departed: vec![departed(4, ago(2 * MIN))],
        ..cluster()
    };
    let snap = snapshot()
        // A healthy sibling on a running pod of the same Deployment.
        .with(session(229).client_addr(&pod_ip(1)).idle(30))
        .with(
            session(230)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .idle(5 * MIN),
        )
        .with(
            session(231)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .active(HOUR),
        )
        // Opened after the pod left: someone else's.
        .with(
            session(232)
                .client_addr(&pod_ip(4))
                .started_ago(MIN)
                .idle(30),
        )
        .with(
            session(233)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .idle_in_transaction(5 * MIN),
        )
        // Old enough, but it did something after the pod left: a live owner (a reused IP, or
        // clocks that disagree), never an orphan.
        .with(
            session(234)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .idle(30),
        )
        .build();
    let d = decide_with(&snap, &rules(ENFORCE), &with_departed, &Memory::default());

    assert_eq!(pids(&d.terminate), [230, 233]);
    assert_eq!(reasons(&d.terminate), [Reason::Orphaned, Reason::Orphaned]);
    assert!(d.terminate.iter().all(|t| t.pod == pod_name(4)));
    assert!(d.terminate.iter().all(|t| t.source == deployment()));

    // Orphans show in their Deployment's group even when a healthy session came first.
    let orphans = group(&d, &deployment());
    assert_eq!(orphans.via, Via::Orphaned);
    assert_eq!(orphans.counts.total, 4);
    assert_eq!(orphans.pods, BTreeSet::from([pod_name(1), pod_name(4)]));
    let stranger = group(&d, &client("app", Some(&pod_ip(4))));
    assert_eq!(stranger.via, Via::Unattributed);
    assert_eq!(stranger.counts.total, 2, "232 and 234");
}

#[test]
fn sessions_matching_no_pod_are_grouped_by_application_and_address() {
    let snap = snapshot()
        .with(
            session(240)
                .application_name("billing-cron")
                .client_addr("192.168.1.10"),
        )
        .with(
            session(241)
                .application_name("billing-cron")
                .client_addr("192.168.1.10"),
        )
        .with(
            session(242)
                .application_name("billing-cron")
                .client_addr("192.168.1.11"),
        )
        .with(session(243).application_name(""))
        .build();
    let d = decide_with(&snap, &rules(DRY_RUN), &cluster(), &Memory::default());

    let sources: Vec<(&Source, u32, Via)> = d
        .groups
        .iter()
        .map(|g| (&g.source, g.counts.total, g.via))
        .collect();
    assert_eq!(
        sources,
        [
            (
                &client("billing-cron", Some("192.168.1.10")),
                2,
                Via::Unattributed
            ),
            (&client("", None), 1, Via::Unattributed),
            (
                &client("billing-cron", Some("192.168.1.11")),
                1,
                Via::Unattributed
            ),
        ]
    );
}

// ================================================================================================
// Findings (DESIGN.md §6) and the window
// ================================================================================================

const LEAKS: &str = "
leakDetection: {window: 10m, newSessionsPerSecond: 20}
";

/// Sessions `range` on pod `n`, each idle for `idle` seconds.
fn idle_on_pod(n: u8, range: std::ops::Range<i64>, idle: i64) -> Vec<SessionBuilder> {
    range
        .map(|pid| session(pid).client_addr(&pod_ip(n)).idle(idle))
        .collect()
}

/// The fork leak of seed 000 on pod 1: four forked workers' sessions idle for `stranded`
/// seconds, the parent's session busy a moment ago.
fn forked_workers(stranded: i64) -> Vec<SessionBuilder> {
    let mut sessions = idle_on_pod(1, 300..304, stranded);
    sessions.push(session(305).client_addr(&pod_ip(1)).idle(1));
    sessions
}

#[test]
fn sessions_stranded_idle_while_their_pod_keeps_working_are_idle_accumulation_by_default() {
    let d = decide_with(
        &snapshot().with_all(forked_workers(31 * MIN)).build(),
        &rules("{}"),
        &cluster(),
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::IdleAccumulation);
    assert_eq!(f.subject, about(deployment()));
    assert_eq!(sorted(f.pids.clone()), [300, 301, 302, 303]);
    assert_eq!(f.sessions, 4);
    assert!(
        f.evidence.starts_with(&format!(
            "4 sessions stranded idle for more than 30m00s on {}, which keeps using 1 other session",
            pod_name(1)
        )),
        "{}",
        f.evidence
    );
    // Stranded since the second oldest passed the age: a minute ago. Suspected, not confirmed.
    assert_eq!(f.held_for, secs(MIN));
    assert_eq!(f.confirms_in, Some(secs(9 * MIN)));
    assert!(f.present && !f.confirmed);
    assert!(
        d.terminate.is_empty() && d.dry_run.is_empty(),
        "no timeout, no termination"
    );

    // Two hours on, it has held far longer than the window.
    let d = decide_with(
        &snapshot().with_all(forked_workers(2 * HOUR)).build(),
        &rules("{}"),
        &cluster(),
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::IdleAccumulation);
    assert!(f.confirmed && f.started);
}

#[test]
fn a_lifo_pool_whose_spares_are_replaced_within_their_lifetime_is_no_leak() {
    // HikariCP-like: 10 connections, 2 busy, 8 spares idle until maxLifetime (30m) replaces them.
    let lifo = |spares_idle: i64| {
        let mut sessions: Vec<SessionBuilder> = (0..8)
            .map(|i| {
                session(310 + i)
                    .client_addr(&pod_ip(1))
                    .started_ago(spares_idle + 1)
                    .idle(spares_idle)
            })
            .collect();
        sessions.push(session(318).client_addr(&pod_ip(1)).active(0));
        sessions.push(session(319).client_addr(&pod_ip(1)).idle(0));
        snapshot().with_all(sessions).build()
    };
    for idle in [11 * MIN, 20 * MIN, 29 * MIN + 30] {
        let d = decide_with(&lifo(idle), &rules("{}"), &cluster(), &Memory::default());
        assert!(d.findings.is_empty(), "idle {idle}s: {:#?}", d.findings);
    }
}

#[test]
fn an_application_idle_as_a_whole_or_a_recycling_pool_is_no_leak() {
    // Every session idle for hours, none in use: the pool waits for traffic.
    let idle_app = snapshot()
        .with_all(idle_on_pod(1, 320..325, 3 * HOUR))
        .build();
    let d = decide_with(&idle_app, &rules("{}"), &cluster(), &Memory::default());
    assert!(d.findings.is_empty(), "{:#?}", d.findings);

    // A pool that recycles its connections every 10 minutes: never stranded.
    let mut recycling: Vec<SessionBuilder> = (0..4)
        .map(|i| {
            session(330 + i)
                .client_addr(&pod_ip(1))
                .started_ago(10 * MIN - i * MIN)
                .idle(10 * MIN - i * MIN - 1)
        })
        .collect();
    recycling.push(session(334).client_addr(&pod_ip(1)).active(0));
    let d = decide_with(
        &snapshot().with_all(recycling).build(),
        &rules("{}"),
        &cluster(),
        &Memory::default(),
    );
    assert!(d.findings.is_empty(), "{:#?}", d.findings);
}

#[test]
fn idle_accumulation_needs_two_stranded_sessions_on_one_pod() {
    let decide_for = |sessions: Vec<SessionBuilder>| {
        let snap = snapshot().with_all(sessions).build();
        decide_with(&snap, &rules("{}"), &cluster(), &Memory::default())
    };
    let busy_on = |n: u8, pid: i64| session(pid).client_addr(&pod_ip(n)).active(0);

    let one = decide_for(vec![
        session(340).client_addr(&pod_ip(1)).idle(HOUR),
        busy_on(1, 341),
    ]);
    assert!(findings(&one, FindingKind::IdleAccumulation).is_empty());

    // Spread over two pods, one stranded each.
    let spread = decide_for(vec![
        session(342).client_addr(&pod_ip(1)).idle(HOUR),
        session(343).client_addr(&pod_ip(2)).idle(HOUR),
        busy_on(1, 344),
        busy_on(2, 345),
    ]);
    assert!(findings(&spread, FindingKind::IdleAccumulation).is_empty());

    // Idle for exactly the age: not yet stranded.
    let young = decide_for([idle_on_pod(1, 346..348, 30 * MIN), vec![busy_on(1, 348)]].concat());
    assert!(findings(&young, FindingKind::IdleAccumulation).is_empty());
}

#[test]
fn with_an_idle_threshold_that_many_stranded_sessions_are_idle_accumulation_even_at_rest() {
    let policy = rules("leakDetection: {strandedIdleAge: 10m, idleThreshold: 5}");
    let decide_for = |sessions: Vec<SessionBuilder>| {
        let snap = snapshot().with_all(sessions).build();
        decide_with(&snap, &policy, &cluster(), &Memory::default())
    };
    let four = decide_for(idle_on_pod(1, 350..354, HOUR));
    assert!(findings(&four, FindingKind::IdleAccumulation).is_empty());

    // Idle for 2h, 1h50m, … 1h10m: held since the fifth oldest (1h20m) passed 10m.
    let six = decide_for(
        (0..6)
            .map(|i| {
                session(360 + i)
                    .client_addr(&pod_ip(1))
                    .idle(2 * HOUR - i * 10 * MIN)
            })
            .collect(),
    );
    let f = the_finding(&six, FindingKind::IdleAccumulation);
    assert_eq!(f.pids, [360, 361, 362, 363, 364, 365]);
    assert!(
        f.evidence
            .starts_with("6 sessions idle for more than 10m00s"),
        "{}",
        f.evidence
    );
    assert_eq!(f.held_for, secs(HOUR + 10 * MIN));
    assert!(f.confirmed && f.started);
}

#[test]
fn idle_in_transaction_is_found_past_its_detection_age_whatever_the_timeouts() {
    // The termination timeout is 30m; detection has its own age.
    let policy = rules(
        "
idle: {idleInTransactionTimeout: 30m}
leakDetection: {window: 10m, idleInTransactionAge: 5m}
",
    );
    let snap = snapshot()
        .with(
            session(320)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(6 * MIN),
        )
        .with(
            session(321)
                .client_addr(&pod_ip(2))
                .idle_in_transaction(4 * MIN),
        )
        .build();
    let d = decide_with(&snap, &policy, &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.subject, about(deployment()));
    assert_eq!(f.pids, [320]);
    assert_eq!(f.sessions, 1);
    assert_eq!(f.held_for, secs(MIN));
    assert_eq!(f.confirms_in, Some(secs(9 * MIN)));
    assert!(f.present && !f.confirmed);
    assert!(d.dry_run.is_empty(), "detecting is not condemning");

    let snap = snapshot()
        .with(
            session(321)
                .client_addr(&pod_ip(2))
                .idle_in_transaction(5 * MIN),
        )
        .build();
    let d = decide_with(&snap, &policy, &cluster(), &Memory::default());
    assert!(findings(&d, FindingKind::IdleInTransaction).is_empty());
}

#[test]
fn a_policy_of_nothing_reports_idle_in_transaction_after_two_minutes() {
    let policy = rules("{}");
    let snap = snapshot()
        .with(session(322).idle_in_transaction(2 * MIN + 1))
        .with(session(323).idle_in_transaction(2 * MIN))
        .build();
    let d = decide_standalone(&snap, &policy);
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.subject, about(client("app", None)));
    assert_eq!(f.pids, [322]);
    assert!(d.dry_run.is_empty() && d.terminate.is_empty());
}

#[test]
fn a_pod_whose_every_session_is_idle_in_transaction_is_called_a_pinned_pool() {
    let pinned = (0..25).map(|i| {
        session(330 + i)
            .client_addr(&pod_ip(1))
            .idle_in_transaction(10 * MIN)
    });
    let snap = snapshot().with_all(pinned).build();
    let d = decide_with(&snap, &rules("{}"), &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.sessions, 25);
    assert_eq!(f.pids.len(), 25, "a pinned pool is named in full");
    assert!(
        f.evidence.contains(
            "every one of the 25 sessions of orders-api-7c9d8f6b5-1 is idle in a transaction"
        ),
        "{}",
        f.evidence
    );
    assert!(f.cause.contains("pool pinned"), "{}", f.cause);
    assert!(f.cause.contains(CHECKED_OUT_NOTE), "{}", f.cause);
}

/// `count` sessions on pod `n`, the oldest started `oldest_start` before `t0`, one more each
/// minute after; all idle in a transaction for a minute but the youngest, which is running a
/// statement (so that the pool is not pinned: see [`pinned_pool`]).
fn pool_on_pod(n: u8, count: i64, oldest_start: i64) -> Vec<SessionBuilder> {
    (0..count)
        .map(|i| {
            let s = session(400 + i)
                .client_addr(&pod_ip(n))
                .started_at(ago(oldest_start - i * MIN));
            if i == count - 1 {
                s.active(1)
            } else {
                s.state(SessionState::IdleInTransaction)
                    .in_state_since(ago(MIN))
            }
        })
        .collect()
}

#[test]
fn pool_saturation_holds_since_the_budget_th_oldest_session_started() {
    let policy = rules(
        "
budgets: {maxConnectionsPerPod: 25}
leakDetection: {window: 10m}
",
    );
    // 30 sessions started 60, 59, … 31 minutes ago: the 25th oldest 36 minutes ago.
    let snap = snapshot().with_all(pool_on_pod(1, 30, 60 * MIN)).build();
    let d = decide_with(&snap, &policy, &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::PoolSaturation);
    assert_eq!(f.subject, about(deployment()));
    assert_eq!(f.held_for, secs(36 * MIN));
    assert!(f.confirmed);
    assert!(
        f.evidence
            .contains("holds 30 sessions, over its budget of 25"),
        "{}",
        f.evidence
    );
    assert!(
        f.cause.contains("several worker processes") && f.cause.contains(POOL_MAX),
        "over budget is not a pinned pool: {}",
        f.cause
    );
    assert!(!f.cause.contains("pinned"), "{}", f.cause);

    // Exactly at the budget, most of it idle in a transaction: pinned, and ending them does not
    // give the application its pool back.
    let at = snapshot().with_all(pool_on_pod(1, 25, 60 * MIN)).build();
    let d = decide_with(&at, &policy, &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::PoolSaturation);
    assert!(
        f.evidence.contains("holds 25 sessions, its budget is 25"),
        "{}",
        f.evidence
    );
    assert!(
        f.cause.contains("pinned at pool_size + max_overflow"),
        "{}",
        f.cause
    );
    assert!(f.cause.contains(CHECKED_OUT_NOTE), "{}", f.cause);

    let below = snapshot().with_all(pool_on_pod(1, 24, 60 * MIN)).build();
    let d = decide_with(&below, &policy, &cluster(), &Memory::default());
    assert!(findings(&d, FindingKind::PoolSaturation).is_empty());
}

#[test]
fn pool_saturation_is_confirmed_only_once_it_has_held_for_the_window() {
    let policy = rules(
        "
budgets: {maxConnectionsPerPod: 25}
leakDetection: {window: 10m}
",
    );
    // 25 sessions, the last of them started 5 minutes ago.
    let pool = pool_on_pod(1, 25, 29 * MIN);
    let first = snapshot().with_all(pool.clone()).build();
    let d1 = decide_with(&first, &policy, &cluster(), &Memory::default());
    let f = the_finding(&d1, FindingKind::PoolSaturation);
    assert_eq!(f.held_for, secs(5 * MIN));
    assert!(f.present && !f.confirmed && !f.started);

    let second = snapshot().at(later(6 * MIN)).with_all(pool).build();
    let d2 = decide_with(&second, &policy, &cluster(), &d1.memory);
    let f = the_finding(&d2, FindingKind::PoolSaturation);
    assert_eq!(f.held_for, secs(11 * MIN));
    assert!(f.present && f.confirmed && f.started);
}

#[test]
fn a_workloads_pool_max_overrides_the_policys_per_pod_budget() {
    let with_pool_max = |pool_max| ClusterView {
        workloads: vec![workload(2, Some(pool_max))],
        ..cluster()
    };
    let snap = snapshot().with_all(pool_on_pod(1, 25, 60 * MIN)).build();

    // The policy allows 50 per pod, the application declares 25: saturated.
    let generous = rules("budgets: {maxConnectionsPerPod: 50}");
    let d = decide_with(&snap, &generous, &with_pool_max(25), &Memory::default());
    let f = the_finding(&d, FindingKind::PoolSaturation);
    assert!(f.evidence.contains("its budget is 25"), "{}", f.evidence);

    // The policy allows 25 per pod, the application declares 30: not saturated.
    let strict = rules("budgets: {maxConnectionsPerPod: 25}");
    let d = decide_with(&snap, &strict, &with_pool_max(30), &Memory::default());
    assert!(findings(&d, FindingKind::PoolSaturation).is_empty());

    // Without the declaration, the policy's budget applies.
    let d = decide_with(&snap, &strict, &cluster(), &Memory::default());
    assert_eq!(findings(&d, FindingKind::PoolSaturation).len(), 1);
}

#[test]
fn a_zero_pool_max_on_a_workload_does_not_crash_the_decision() {
    // `poolwarden.io/pool-max: "0"` is written by application owners, not checked by any schema.
    let declared_zero = ClusterView {
        workloads: vec![workload(2, Some(0))],
        ..cluster()
    };
    let snap = snapshot()
        .with(session(450).client_addr(&pod_ip(1)).idle(HOUR))
        .build();
    let d = decide_with(&snap, &rules(ENFORCE), &declared_zero, &Memory::default());
    assert_eq!(pids(&d.terminate), [450]);
}

/// A long-lived client outside the cluster, connected long before either snapshot.
fn reporting_client() -> SessionBuilder {
    session(500)
        .application_name("reporting")
        .client_addr("192.168.1.10")
        .started_at(ago(5 * HOUR))
        .idle(MIN)
}

/// A churn sample from `at` to half a second later: `short_lived` appeared and vanished.
fn churn_sample(at: Timestamp, opened: (i64, i64), short_lived: &[SessionBuilder]) -> ChurnSample {
    ChurnSample {
        started_at: at,
        ended_at: at + SignedDuration::from_millis(500),
        looks: 50,
        opened_at_start: Some(opened.0),
        opened_at_end: Some(opened.1),
        short_lived: short_lived.iter().map(|s| s.build(at)).collect(),
        persisted: 0,
    }
}

/// A NullPool worker's session on pod 1, seen a moment after it opened.
fn nullpool(pid: i64) -> SessionBuilder {
    session(pid)
        .client_addr(&pod_ip(1))
        .started_ago(0)
        .active(0)
}

/// Two decisions ten seconds apart; the second snapshot's sample shows `short_lived`, and a
/// reconnecting pool on pod 2 whose new sessions persist (they are in the snapshot, not the
/// sample's short-lived list).
fn churn_between(
    opened_before: i64,
    opened_after: i64,
    short_lived: &[SessionBuilder],
) -> (Decision, Decision) {
    let policy = rules("{}");
    let first = snapshot()
        .sessions_opened(opened_before)
        .with(reporting_client())
        .build();
    let d1 = decide_with(&first, &policy, &cluster(), &Memory::default());
    let mut second = snapshot()
        .at(later(10))
        .sessions_opened(opened_after)
        .with(reporting_client())
        .with_all((0..5).map(|i| {
            session(510 + i)
                .client_addr(&pod_ip(2))
                .started_ago(2)
                .idle(1)
        }));
    second.churn = Some(churn_sample(
        later(10),
        (opened_after, opened_after),
        short_lived,
    ));
    let d2 = decide_with(&second.build(), &policy, &cluster(), &d1.memory);
    (d1, d2)
}

#[test]
fn connection_churn_is_blamed_on_whoever_opens_sessions_that_vanish_not_on_a_refilling_pool() {
    let (d1, d2) = churn_between(5_000, 6_000, &[nullpool(501), nullpool(502), nullpool(503)]);
    assert!(findings(&d1, FindingKind::ConnectionChurn).is_empty());
    assert_eq!(d1.capacity.new_sessions_per_second, None);

    assert_eq!(d2.capacity.new_sessions_per_second, Some(100.0));
    let f = the_finding(&d2, FindingKind::ConnectionChurn);
    assert_eq!(f.subject, about(deployment()));
    assert_eq!(sorted(f.pids.clone()), [501, 502, 503]);
    assert!(
        f.evidence.contains("100.0 new sessions/s"),
        "{}",
        f.evidence
    );
}

#[test]
fn connection_churn_keeps_its_subject_from_cycle_to_cycle_and_confirms() {
    let policy = rules("{}");
    let pods = || ClusterView {
        pods: vec![
            pod(1),
            pod(2),
            PodInfo {
                name: "celery-0".to_owned(),
                ips: vec![ip("10.0.9.9")],
                started_at: Some(ago(24 * HOUR)),
                workload: WorkloadRef {
                    namespace: "shop".to_owned(),
                    kind: "Deployment".to_owned(),
                    name: "celery".to_owned(),
                },
                ready: true,
            },
        ],
        ..ClusterView::default()
    };
    let celery = |pid: i64| {
        session(pid)
            .client_addr("10.0.9.9")
            .started_ago(0)
            .active(0)
    };
    let mut memory = Memory::default();
    let mut subjects = Vec::new();
    // 20 new sessions a second for eleven minutes, a cycle every 30 s. Some cycles' looks catch
    // nothing, one catches a session of the reconnecting API pool: the subject stays.
    for cycle in 0..23i64 {
        let at = later(cycle * 30);
        let opened = 10_000 + cycle * 600;
        let caught: Vec<SessionBuilder> = match cycle % 4 {
            0 => vec![celery(600), celery(601), celery(602)],
            1 => vec![],
            2 => vec![
                celery(603),
                celery(604),
                session(605).client_addr(&pod_ip(2)).started_ago(0).idle(0),
            ],
            _ => vec![celery(606), celery(607)],
        };
        let mut snap = snapshot().at(at).sessions_opened(opened);
        snap.churn = Some(churn_sample(at, (opened, opened + 10), &caught));
        let d = decide_with(&snap.build(), &policy, &pods(), &memory);
        if cycle > 0 {
            let found = findings(&d, FindingKind::ConnectionChurn);
            subjects.push(
                found
                    .iter()
                    .map(|f| f.subject.to_string())
                    .collect::<Vec<_>>(),
            );
            if cycle == 22 {
                assert!(found.iter().all(|f| f.confirmed), "{found:#?}");
            }
        }
        memory = d.memory;
    }
    assert!(
        subjects.iter().all(|s| s == &["Deployment/celery"]),
        "{subjects:?}"
    );
}

#[test]
fn every_churner_over_the_threshold_is_named_whatever_its_share() {
    // Three NullPool workers: 12 new sessions a second, 30, and 3; a look every 30 s for eleven
    // minutes. Each look's half second catches a few of their sessions, in proportion on
    // average but not in any one look: the 12/s worker is caught three times in the first look,
    // beside ten of the other's (23%), and not at all in some.
    let worker = |n: u8| PodInfo {
        name: format!("celery-{n}"),
        ips: vec![ip(&format!("10.0.9.{n}"))],
        started_at: Some(ago(24 * HOUR)),
        workload: WorkloadRef {
            namespace: "shop".to_owned(),
            kind: "Deployment".to_owned(),
            name: format!("celery-{n}"),
        },
        ready: true,
    };
    let pods = ClusterView {
        pods: vec![worker(1), worker(2), worker(3)],
        ..ClusterView::default()
    };
    let caught_12 = [3, 2, 5, 3, 0, 6, 3, 4, 2, 5, 3, 0];
    let caught_30 = [10, 8, 7, 9, 11, 6, 9, 8, 10, 7, 9, 9];
    let caught_3 = [0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    let policy = rules("{}");
    let mut memory = Memory::default();
    let mut pid = 10_000;
    for look in 0..23usize {
        let at = later(look as i64 * 30);
        let opened = 100_000 + look as i64 * 45 * 30;
        let mut caught = Vec::new();
        for (n, counts) in [(1, caught_12), (2, caught_30), (3, caught_3)] {
            for _ in 0..counts[look % counts.len()] {
                pid += 1;
                caught.push(
                    session(pid)
                        .client_addr(&format!("10.0.9.{n}"))
                        .started_ago(0)
                        .active(0),
                );
            }
        }
        let mut snap = snapshot().at(at).sessions_opened(opened);
        snap.churn = Some(churn_sample(at, (opened, opened + 22), &caught));
        let d = decide_with(&snap.build(), &policy, &pods, &memory);
        let churners: Vec<(String, bool)> = findings(&d, FindingKind::ConnectionChurn)
            .iter()
            .map(|f| (f.subject.to_string(), f.confirmed))
            .collect();
        // Both from the first look, and confirmed a window later (within window + 2 intervals).
        let confirmed = look >= 20;
        assert_eq!(
            churners,
            [
                ("Deployment/celery-1".to_owned(), confirmed),
                ("Deployment/celery-2".to_owned(), confirmed)
            ],
            "look {look}"
        );
        memory = d.memory;
    }
}

#[test]
fn a_source_caught_once_or_twice_beside_a_churner_is_not_named() {
    // 80 new sessions a second: a worker on pod 1 opens them; pod 2 made one short-lived
    // connection (a health check), and was caught. Its share is small and one session says
    // nothing of its rate.
    let policy = rules("{}");
    let mut snap = snapshot().sessions_opened(1_000);
    let caught: Vec<SessionBuilder> = (0..12)
        .map(nullpool)
        .chain([session(99).client_addr(&pod_ip(2)).started_ago(0).active(0)])
        .collect();
    snap.churn = Some(churn_sample(t0(), (1_000, 1_040), &caught));
    let d = decide_standalone(&snap.build(), &policy);
    let named: Vec<String> = findings(&d, FindingKind::ConnectionChurn)
        .iter()
        .map(|f| f.subject.to_string())
        .collect();
    assert_eq!(named, ["app@10.0.0.1"]);
}

#[test]
fn churn_seen_by_nobody_is_the_servers_and_a_single_look_measures_its_own_rate() {
    // `poolwarden check`: no previous decision, the sample's own counter gives the rate.
    let mut snap = snapshot().sessions_opened(1_000);
    snap.churn = Some(churn_sample(t0(), (1_000, 1_010), &[]));
    let d = decide_standalone(&snap.build(), &rules("{}"));
    assert_eq!(d.capacity.new_sessions_per_second, Some(20.0));
    let f = the_finding(&d, FindingKind::ConnectionChurn);
    assert_eq!(f.subject, Subject::Server);
    assert!(f.evidence.contains("nobody can be named"), "{}", f.evidence);
}

#[test]
fn connection_churn_at_or_below_the_threshold_is_not_a_finding() {
    let (_, d) = churn_between(5_000, 5_050, &[nullpool(501)]);
    assert_eq!(d.capacity.new_sessions_per_second, Some(5.0));
    assert!(findings(&d, FindingKind::ConnectionChurn).is_empty());

    let (_, d) = churn_between(5_000, 5_100, &[nullpool(501)]);
    assert_eq!(d.capacity.new_sessions_per_second, Some(10.0));
    assert!(findings(&d, FindingKind::ConnectionChurn).is_empty());
}

#[test]
fn connection_churn_needs_a_previous_sample_or_a_churn_sample() {
    let snap = snapshot()
        .sessions_opened(1_000_000)
        .with(session(501).client_addr(&pod_ip(1)).started_ago(1))
        .build();
    let d = decide_with(&snap, &rules(LEAKS), &cluster(), &Memory::default());
    assert_eq!(d.capacity.new_sessions_per_second, None);
    assert!(findings(&d, FindingKind::ConnectionChurn).is_empty());
}

#[test]
fn sessions_of_a_departed_pod_are_an_orphaned_finding() {
    let gone_at = ago(2 * MIN);
    let with_departed = ClusterView {
        departed: vec![departed(4, gone_at)],
        ..cluster()
    };
    let snap = snapshot()
        .with(
            session(600)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .idle(5 * MIN),
        )
        .with(
            session(601)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .active(5 * MIN),
        )
        .with(session(602).client_addr(&pod_ip(1)).idle(5 * MIN))
        .build();
    let d = decide_with(&snap, &rules(DRY_RUN), &with_departed, &Memory::default());
    let f = the_finding(&d, FindingKind::Orphaned);
    assert_eq!(f.subject, about(deployment()));
    assert_eq!(sorted(f.pids.clone()), [600, 601]);
    assert!(f.evidence.contains(&pod_name(4)), "{}", f.evidence);
    assert_eq!(f.held_for, secs(2 * MIN));
    assert!(!f.confirmed);
}

#[test]
fn overbooked_when_max_replicas_times_pool_max_exceeds_the_usable_connections() {
    let overbooked = ClusterView {
        workloads: vec![workload(8, Some(15))],
        ..cluster()
    };
    let d = decide_with(
        &snapshot().build(),
        &rules(LEAKS),
        &overbooked,
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::Overbooked);
    assert_eq!(f.subject, Subject::Server);
    assert!(f.evidence.contains("120"), "{}", f.evidence);
    assert!(f.evidence.contains("97"), "{}", f.evidence);
    assert!(
        f.evidence.contains(
            "Deployment/orders-api: 8 replicas (poolwarden.io/max-replicas) x 15 per pod \
             (declared) = 120"
        ),
        "{}",
        f.evidence
    );
    assert!(
        !f.confirmed,
        "it holds for the window, as every finding does"
    );
    assert_eq!(d.capacity.booked_connections, Some(120));

    let fits = ClusterView {
        workloads: vec![workload(6, Some(15))],
        ..cluster()
    };
    let d = decide_with(
        &snapshot().build(),
        &rules(LEAKS),
        &fits,
        &Memory::default(),
    );
    assert!(findings(&d, FindingKind::Overbooked).is_empty());
    assert_eq!(d.capacity.booked_connections, Some(90));
}

#[test]
fn overbooked_outside_kubernetes_counts_every_client_at_the_policys_per_pod_budget() {
    let policy = rules("budgets: {maxConnectionsPerPod: 25}");
    let clients = |n: u8| {
        (1..=n)
            .map(|i| session(700 + i64::from(i)).client_addr(&format!("192.168.1.{i}")))
            .collect::<Vec<_>>()
    };

    let d = decide_standalone(&snapshot().with_all(clients(4)).build(), &policy);
    let f = the_finding(&d, FindingKind::Overbooked);
    assert!(f.evidence.contains("100"), "{}", f.evidence);
    assert!(f.evidence.contains("97"), "{}", f.evidence);
    assert_eq!(d.capacity.booked_connections, Some(100));

    let d = decide_standalone(&snapshot().with_all(clients(3)).build(), &policy);
    assert!(findings(&d, FindingKind::Overbooked).is_empty());
    assert_eq!(d.capacity.booked_connections, Some(75));
}

#[test]
fn overbooked_when_the_policys_own_budget_exceeds_the_usable_connections() {
    let d = decide_standalone(
        &snapshot().build(),
        &rules("budgets: {maxConnections: 120}"),
    );
    let f = the_finding(&d, FindingKind::Overbooked);
    assert!(f.evidence.contains("120"), "{}", f.evidence);
    assert!(f.evidence.contains("97"), "{}", f.evidence);

    let d = decide_standalone(&snapshot().build(), &rules("budgets: {maxConnections: 97}"));
    assert!(findings(&d, FindingKind::Overbooked).is_empty());
}

const STUCK_TX: &str = "
leakDetection: {window: 10m, idleInTransactionAge: 5m}
";

/// A session of pod 1 idle in a transaction since `since`.
fn stuck_since(pid: i64, since: Timestamp) -> SessionBuilder {
    session(pid)
        .client_addr(&pod_ip(1))
        .state(SessionState::IdleInTransaction)
        .in_state_since(since)
}

/// Looks every 30 s from `t0` to `t0 + until` (seconds), each snapshot made by `look(at)`;
/// returns each decision with its time.
fn looks_every_30s(
    until: i64,
    policy: &Rules,
    cluster: &ClusterView,
    look: impl Fn(i64) -> Snapshot,
) -> Vec<(i64, Decision)> {
    let mut memory = Memory::default();
    let mut decisions = Vec::new();
    for at in (0..=until).step_by(30) {
        let d = decide_with(&look(at), policy, cluster, &memory);
        memory = d.memory.clone();
        decisions.push((at, d));
    }
    decisions
}

#[test]
fn an_unconfirmed_finding_whose_source_recovered_starts_its_window_again() {
    let policy = rules(STUCK_TX);
    // Until t0 + 30s pod 1 holds a session idle in a transaction since t0 - 6m (1m past the
    // age); it commits, and the pod is healthy until another session sits idle in a transaction
    // from t0 + 4m, past the age at t0 + 9m.
    let decisions = looks_every_30s(10 * MIN, &policy, &cluster(), |at| {
        let snap = snapshot().at(later(at));
        if at <= 30 {
            snap.with(stuck_since(800, ago(6 * MIN)))
        } else if at >= 4 * MIN {
            snap.with(stuck_since(801, later(4 * MIN)))
        } else {
            snap.with(session(800).client_addr(&pod_ip(1)).idle(1))
        }
        .build()
    });
    let held: Vec<(i64, Duration)> = decisions
        .iter()
        .filter_map(|(at, d)| {
            let f = findings(d, FindingKind::IdleInTransaction);
            f.first().map(|f| (*at, f.held_for))
        })
        .collect();
    assert_eq!(held[..2], [(0, secs(MIN)), (30, secs(MIN + 30))]);
    // The new session's shape began 3.5 minutes after the finding was last seen: more than
    // three looks. A recovery: the window starts again, from when it crossed the age.
    assert_eq!(held[2..], [(9 * MIN + 30, secs(30)), (10 * MIN, secs(MIN))]);
    assert!(
        decisions
            .iter()
            .all(|(_, d)| d.findings.iter().all(|f| !f.confirmed))
    );
}

#[test]
fn a_finding_whose_sessions_were_replaced_keeps_its_window() {
    let policy = rules(STUCK_TX);
    // Pod 1's session idle in a transaction since t0 - 6m ends at t0 + 1m; its replacement sits
    // idle in a transaction from t0 + 1m05s, past the age at t0 + 6m05s. Nothing shows the
    // finding for five minutes, yet the pod was in its shape all along.
    let decisions = looks_every_30s(10 * MIN, &policy, &cluster(), |at| {
        let snap = snapshot().at(later(at));
        if at <= MIN {
            snap.with(stuck_since(800, ago(6 * MIN)))
        } else {
            snap.with(stuck_since(801, later(MIN + 5)))
        }
        .build()
    });
    let shown: Vec<(i64, Duration, bool)> = decisions
        .iter()
        .filter_map(|(at, d)| {
            let f = findings(d, FindingKind::IdleInTransaction);
            f.first().map(|f| (*at, f.held_for, f.confirmed))
        })
        .collect();
    assert_eq!(shown.len(), 3 + 8, "{shown:?}");
    assert_eq!(shown[3], (6 * MIN + 30, secs(7 * MIN + 30), false));
    // Since t0 - 1m, as if never interrupted: confirmed at t0 + 9m.
    assert_eq!(shown[8], (9 * MIN, secs(10 * MIN), true));
}

/// Seed 001 as it really runs, in 30 s looks with the default policy: pod 1's pool of 25 sessions
/// sits idle in a transaction from `t0`; every 8 minutes (at 8m05s, 16m05s) a garbage collection
/// returns them all and the pool replaces them with 25 new sessions (new pids), idle in a
/// transaction a second later. Beside it, outside any cluster:
/// - storefront (10.1.0.2): 10 sessions, 2 running statements, 3 between the statements of a
///   transaction (idle in it for under a second), 5 idle;
/// - reports (10.1.0.3): 2 workers, each inside a transaction waiting a few seconds for an HTTP
///   call at every look.
fn seed_001_look(at: i64) -> Snapshot {
    let generation = (at - 5).max(0) / (8 * MIN);
    let replaced = generation * 8 * MIN + if generation == 0 { 0 } else { 5 };
    let settled = replaced + if generation == 0 { 0 } else { 1 };
    let pinned = (0..25).map(|i| {
        session(1000 * (generation + 1) + i)
            .application_name("orders-api")
            .client_addr("10.1.0.1")
            .started_at(later(replaced))
            .state(SessionState::IdleInTransaction)
            .in_state_since(later(settled))
    });
    let storefront = (0..10).map(|i| {
        let s = session(100 + i)
            .application_name("storefront")
            .client_addr("10.1.0.2")
            .started_ago(HOUR);
        match i {
            0 | 1 => s.active(0),
            2..=4 => s.idle_in_transaction(0),
            _ => s.idle(3),
        }
    });
    let reports = (0..2).map(|i| {
        session(200 + i)
            .application_name("reports")
            .client_addr("10.1.0.3")
            .started_ago(HOUR)
            .idle_in_transaction(3 + i)
    });
    snapshot()
        .at(later(at))
        .with_all(pinned)
        .with_all(storefront)
        .with_all(reports)
        .build()
}

#[test]
fn a_pinned_pool_whose_sessions_a_garbage_collection_replaces_is_confirmed_and_stays_so() {
    let decisions = looks_every_30s(
        20 * MIN,
        &rules("{}"),
        &ClusterView::default(),
        seed_001_look,
    );
    let leaky = about(client("orders-api", Some("10.1.0.1")));
    let confirmed_at = |kind: FindingKind| {
        decisions
            .iter()
            .find(|(_, d)| {
                d.findings
                    .iter()
                    .any(|f| f.subject == leaky && f.kind == kind && f.confirmed)
            })
            .map(|(at, _)| *at)
    };
    // Pinned from t0, every session settled 10 s later: seen at the first look after that.
    let pinned = confirmed_at(FindingKind::PoolSaturation).expect("PoolSaturation confirms");
    assert!(pinned <= 10 * MIN + 2 * 30, "confirmed at {pinned}s");
    // Within window + idleInTransactionAge + 2 intervals, through the replacement at 8m05s.
    let idle_in_tx =
        confirmed_at(FindingKind::IdleInTransaction).expect("IdleInTransaction confirms");
    assert!(
        idle_in_tx <= 10 * MIN + 2 * MIN + 2 * 30,
        "confirmed at {idle_in_tx}s"
    );

    for (at, d) in &decisions {
        for (kind, since) in [
            (FindingKind::PoolSaturation, pinned),
            (FindingKind::IdleInTransaction, idle_in_tx),
        ] {
            let found: Vec<&Finding> = d
                .findings
                .iter()
                .filter(|f| f.subject == leaky && f.kind == kind)
                .collect();
            if *at >= since {
                // Through the replacement at 16m05s: still confirmed, started only once.
                assert!(
                    found.len() == 1 && found[0].confirmed,
                    "{kind:?} at {at}s: {found:#?}"
                );
                assert_eq!(found[0].started, *at == since, "{kind:?} at {at}s");
            }
        }
        let named: Vec<String> = d
            .findings
            .iter()
            .filter(|f| f.subject != leaky)
            .map(|f| format!("{:?} on {}", f.kind, f.subject))
            .collect();
        assert!(
            named.is_empty(),
            "healthy neighbours named at {at}s: {named:?}"
        );
    }
    let f = the_finding(&decisions.last().unwrap().1, FindingKind::PoolSaturation);
    assert_eq!(
        f.summary,
        "10.1.0.1 holds 25 sessions, every one idle in a transaction: its pool is pinned"
    );
    assert!(f.cause.contains(CHECKED_OUT_NOTE), "{}", f.cause);
}

#[test]
fn a_pinned_pool_is_pool_saturation_without_a_budget_and_below_one() {
    let pinned = |secs_in_tx: i64| {
        snapshot()
            .with_all((0..25).map(|i| {
                session(330 + i)
                    .client_addr(&pod_ip(1))
                    .idle_in_transaction(secs_in_tx)
            }))
            .build()
    };
    for policy in ["{}", "budgets: {maxConnectionsPerPod: 50}"] {
        let d = decide_with(
            &pinned(3 * MIN),
            &rules(policy),
            &cluster(),
            &Memory::default(),
        );
        let f = the_finding(&d, FindingKind::PoolSaturation);
        assert_eq!(f.subject, about(deployment()));
        assert_eq!(f.sessions, 25);
        assert_eq!(f.held_for, secs(3 * MIN));
        assert!(!f.confirmed);
        assert_eq!(
            f.evidence,
            "orders-api-7c9d8f6b5-1 holds 25 sessions, every one idle in a transaction: its pool \
             is pinned (for at least 3m00s)"
        );
    }
    // At the budget, the budget's words.
    let d = decide_with(
        &pinned(3 * MIN),
        &rules("budgets: {maxConnectionsPerPod: 25}"),
        &cluster(),
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::PoolSaturation);
    assert!(
        f.summary.ends_with("holds 25 sessions, its budget is 25"),
        "{}",
        f.summary
    );

    // Not yet settled: idle in a transaction for less than 10 s is a transaction between its
    // statements.
    let d = decide_with(&pinned(9), &rules("{}"), &cluster(), &Memory::default());
    assert!(
        findings(&d, FindingKind::PoolSaturation).is_empty(),
        "{:#?}",
        d.findings
    );
    // One session idle in a transaction is IdleInTransaction's alone; one in use unpins a pod.
    let one = snapshot()
        .with(
            session(330)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(HOUR),
        )
        .build();
    let d = decide_with(&one, &rules("{}"), &cluster(), &Memory::default());
    assert!(
        findings(&d, FindingKind::PoolSaturation).is_empty(),
        "{:#?}",
        d.findings
    );
    let in_use = snapshot()
        .with_all((0..24).map(|i| {
            session(330 + i)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(HOUR)
        }))
        .with(session(360).client_addr(&pod_ip(1)).idle(HOUR))
        .build();
    let d = decide_with(&in_use, &rules("{}"), &cluster(), &Memory::default());
    assert!(
        findings(&d, FindingKind::PoolSaturation).is_empty(),
        "{:#?}",
        d.findings
    );
}

#[test]
fn a_pinned_pool_whose_count_changes_starts_its_window_again() {
    // Pod 1 pins 10 sessions from t0; at t0 + 5m a second worker process pins 10 more.
    let decisions = looks_every_30s(12 * MIN, &rules("{}"), &cluster(), |at| {
        let workers = if at < 5 * MIN { 1 } else { 2 };
        snapshot()
            .at(later(at))
            .with_all((0..10 * workers).map(|i| {
                session(330 + i)
                    .client_addr(&pod_ip(1))
                    .state(SessionState::IdleInTransaction)
                    .in_state_since(if i < 10 { t0() } else { later(5 * MIN) })
            }))
            .build()
    });
    let held = |at: i64| {
        let (_, d) = decisions.iter().find(|(t, _)| *t == at).unwrap();
        let f = the_finding(d, FindingKind::PoolSaturation);
        (f.sessions, f.held_for, f.confirmed)
    };
    assert_eq!(held(4 * MIN + 30), (10, secs(4 * MIN + 30), false));
    // The new sessions settle at 5m10s: 20 sessions pinned since 5m.
    assert_eq!(held(5 * MIN + 30), (20, secs(30), false));
    assert_eq!(held(12 * MIN), (20, secs(7 * MIN), false));
}

#[test]
fn a_finding_is_started_only_in_the_cycle_it_is_first_confirmed() {
    let policy = rules(STUCK_TX);
    let stuck = stuck_since(810, ago(6 * MIN));
    let mut memory = Memory::default();
    let mut seen = Vec::new();
    for at in [0, 5 * MIN, 9 * MIN, 10 * MIN] {
        let snap = snapshot().at(later(at)).with(stuck.clone()).build();
        let d = decide_with(&snap, &policy, &cluster(), &memory);
        let f = the_finding(&d, FindingKind::IdleInTransaction);
        seen.push((f.held_for, f.confirmed, f.started));
        memory = d.memory;
    }
    assert_eq!(
        seen,
        [
            (secs(MIN), false, false),
            (secs(6 * MIN), false, false),
            (secs(10 * MIN), true, true),
            (secs(11 * MIN), true, false),
        ]
    );
}

#[test]
fn a_confirmed_finding_stays_until_it_has_been_gone_for_a_full_window() {
    let policy = rules(STUCK_TX);
    let stuck = stuck_since(820, ago(20 * MIN));

    let d1 = decide_with(
        &snapshot().with(stuck.clone()).build(),
        &policy,
        &cluster(),
        &Memory::default(),
    );
    let f = the_finding(&d1, FindingKind::IdleInTransaction);
    assert!(f.present && f.confirmed && f.started);

    // Last seen at t0 + 30s.
    let d2 = decide_with(
        &snapshot().at(later(30)).with(stuck).build(),
        &policy,
        &cluster(),
        &d1.memory,
    );
    let f = the_finding(&d2, FindingKind::IdleInTransaction);
    assert!(f.present && f.confirmed && !f.started);

    let d3 = decide_with(
        &snapshot().at(later(60)).build(),
        &policy,
        &cluster(),
        &d2.memory,
    );
    let f = the_finding(&d3, FindingKind::IdleInTransaction);
    assert!(!f.present && f.confirmed && !f.started);
    assert_eq!(f.pids, [820]);

    let d4 = decide_with(
        &snapshot().at(later(30 + 10 * MIN - 1)).build(),
        &policy,
        &cluster(),
        &d3.memory,
    );
    let f = the_finding(&d4, FindingKind::IdleInTransaction);
    assert!(!f.present && f.confirmed);

    let d5 = decide_with(
        &snapshot().at(later(30 + 10 * MIN)).build(),
        &policy,
        &cluster(),
        &d4.memory,
    );
    assert!(d5.findings.is_empty(), "{:#?}", d5.findings);
}

// ================================================================================================
// Annotations (DESIGN.md §7)
// ================================================================================================

/// orders-api with 3 replicas, under policy shop/orders-db, carrying `annotations`.
fn annotated_cluster(annotations: &[(&str, &str)]) -> ClusterView {
    ClusterView {
        policy: Some(POLICY_NAME.to_owned()),
        workloads: vec![WorkloadInfo {
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..workload(3, None)
        }],
        ..cluster()
    }
}

/// A snapshot at `t0` whose pod 1 has been idle in a transaction for 20 minutes: confirmed.
fn leaking() -> Snapshot {
    snapshot().with(stuck_since(900, ago(20 * MIN))).build()
}

fn applied(change: &AnnotationChange) -> Vec<(&str, &str)> {
    change
        .annotations
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_str(), v)))
        .collect()
}

#[test]
fn a_confirmed_finding_annotates_its_deployment_once() {
    let policy = rules(STUCK_TX);
    let d = decide_with(
        &leaking(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    assert_eq!(d.annotations.len(), 1, "{:#?}", d.annotations);
    let change = &d.annotations[0];
    assert_eq!(change.workload, orders_api());
    assert_eq!(
        change
            .annotations
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        [LEAK, LEAK_DETAIL, POLICY]
    );
    assert_eq!(
        change.annotations[LEAK].as_deref(),
        Some("IdleInTransaction")
    );
    assert_eq!(change.annotations[POLICY].as_deref(), Some(POLICY_NAME));
    let detail = change.annotations[LEAK_DETAIL].as_deref().unwrap();
    assert!(detail.starts_with("IdleInTransaction: "), "{detail}");
    assert!(detail.contains("likely cause"), "{detail}");

    // The same decision again, once the workload carries them: nothing to change.
    let already = annotated_cluster(&applied(change));
    let again = decide_with(&leaking(), &policy, &already, &Memory::default());
    assert!(again.annotations.is_empty(), "{:#?}", again.annotations);
}

#[test]
fn annotations_are_not_rewritten_when_only_the_ages_have_changed() {
    let policy = rules(STUCK_TX);
    let d1 = decide_with(
        &leaking(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    let annotated = annotated_cluster(&applied(&d1.annotations[0]));

    // Thirty seconds later the same session is thirty seconds older; nothing else changed.
    let next = snapshot()
        .at(later(30))
        .with(stuck_since(900, ago(20 * MIN)))
        .build();
    let d2 = decide_with(&next, &policy, &annotated, &d1.memory);
    assert!(the_finding(&d2, FindingKind::IdleInTransaction).present);
    assert!(d2.annotations.is_empty(), "{:#?}", d2.annotations);
}

#[test]
fn an_unconfirmed_finding_is_not_annotated() {
    let snap = snapshot().with(stuck_since(901, ago(6 * MIN))).build();
    let d = decide_with(
        &snap,
        &rules(STUCK_TX),
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    assert_eq!(findings(&d, FindingKind::IdleInTransaction).len(), 1);
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);
}

#[test]
fn annotations_are_removed_once_the_finding_has_cleared_for_a_window() {
    let policy = rules(STUCK_TX);
    let d1 = decide_with(
        &leaking(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    let annotated = annotated_cluster(&applied(&d1.annotations[0]));

    // A minute after the leak is gone, the finding is still held: the annotations stay.
    let quiet = snapshot().at(later(MIN)).build();
    let d2 = decide_with(&quiet, &policy, &annotated, &d1.memory);
    assert!(d2.annotations.is_empty(), "{:#?}", d2.annotations);

    // A window after it was last seen, they go.
    let cleared = snapshot().at(later(10 * MIN)).build();
    let d3 = decide_with(&cleared, &policy, &annotated, &d2.memory);
    assert_eq!(
        d3.annotations,
        [AnnotationChange {
            workload: orders_api(),
            annotations: OWNED.iter().map(|k| ((*k).to_owned(), None)).collect(),
        }]
    );
    assert!(d3.annotations[0].is_removal());
}

#[test]
fn a_workload_annotated_by_another_policy_is_left_alone() {
    let policy = rules(STUCK_TX);
    let theirs = annotated_cluster(&[(POLICY, "other/db"), (LEAK, "Orphaned")]);
    let d = decide_with(&leaking(), &policy, &theirs, &Memory::default());
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);
    let d = decide_with(&snapshot().build(), &policy, &theirs, &Memory::default());
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);
}

#[test]
fn with_annotate_false_annotations_are_only_ever_removed() {
    let policy = rules(&format!("{STUCK_TX}workloads: {{annotate: false}}\n"));
    let d = decide_with(
        &leaking(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    assert!(d.findings.iter().any(|f| f.confirmed));
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);

    let ours = annotated_cluster(&[
        (LEAK, "IdleInTransaction"),
        (LEAK_DETAIL, "an old line"),
        (POLICY, POLICY_NAME),
    ]);
    let d = decide_with(&leaking(), &policy, &ours, &Memory::default());
    assert_eq!(d.annotations.len(), 1, "{:#?}", d.annotations);
    assert!(d.annotations[0].is_removal());
    assert_eq!(d.annotations[0].annotations.len(), 3);
}

// ================================================================================================
// What Enforce ends is a finding on its workload (DESIGN.md §6)
// ================================================================================================

/// Enforce ending sessions idle in a transaction after a minute and idle ones after three:
/// shorter than the two minutes (and thirty) detection waits, so no detector sees what it ends.
const QUICK_ENFORCE: &str = "
mode: Enforce
idle: {idleTimeout: 3m, idleInTransactionTimeout: 1m}
";

/// Pod 1's pool of 25 sessions, idle in a transaction for 65 s, and a client outside the
/// cluster at work.
fn pinned_a_minute_ago() -> Snapshot {
    snapshot()
        .with_all((0..25).map(|i| {
            session(600 + i)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(65)
        }))
        .with(
            session(700)
                .application_name("storefront")
                .client_addr("10.1.0.2")
                .idle(5),
        )
        .build()
}

#[test]
fn sessions_enforce_ends_idle_in_a_transaction_are_a_confirmed_finding_at_once() {
    let policy = rules(QUICK_ENFORCE);
    let d1 = decide_with(
        &pinned_a_minute_ago(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    // The brake: 20 this cycle, the other 5 the next.
    assert_eq!(d1.terminate.len(), 20);
    let f = the_finding(&d1, FindingKind::IdleInTransaction);
    assert_eq!(f.subject, about(deployment()));
    assert!(f.confirmed && f.started && f.present, "{f:#?}");
    assert_eq!(f.ended, 20);
    assert_eq!(f.sessions, 20);
    assert_eq!(
        f.summary,
        "20 sessions ended, idle in a transaction for more than 1m00s (idleInTransactionTimeout)"
    );
    assert!(f.cause.contains(CHECKED_OUT_NOTE), "{}", f.cause);
    // The workload is annotated in the cycle that ends its sessions; nobody else is.
    assert_eq!(d1.annotations.len(), 1, "{:#?}", d1.annotations);
    let change = &d1.annotations[0];
    assert_eq!(change.workload, orders_api());
    assert_eq!(
        change.annotations[LEAK].as_deref(),
        Some("IdleInTransaction")
    );
    let detail = change.annotations[LEAK_DETAIL].as_deref().unwrap();
    assert!(
        detail.contains("20 sessions ended, idle in a transaction"),
        "{detail}"
    );
    assert!(d1.findings.iter().all(|f| f.subject == about(deployment())));
    let annotated = annotated_cluster(&applied(change));

    // The other 5: the same finding, still confirmed, not started again.
    let rest = snapshot()
        .at(later(30))
        .with_all((20..25).map(|i| {
            session(600 + i)
                .client_addr(&pod_ip(1))
                .state(SessionState::IdleInTransaction)
                .in_state_since(ago(65))
        }))
        .build();
    let d2 = decide_with(&rest, &policy, &annotated, &d1.memory);
    assert_eq!(d2.terminate.len(), 5);
    let f = the_finding(&d2, FindingKind::IdleInTransaction);
    assert!(f.confirmed && !f.started && f.ended == 5, "{f:#?}");
    // The detail says what was ended last.
    assert_eq!(d2.annotations.len(), 1, "{:#?}", d2.annotations);
    assert_eq!(
        d2.annotations[0].annotations.keys().collect::<Vec<_>>(),
        [LEAK_DETAIL]
    );
    let annotated = annotated_cluster(&[
        applied(change)[0],
        (LEAK_DETAIL, applied(&d2.annotations[0])[0].1),
        applied(change)[2],
    ]);

    // Nothing more ended, nothing more seen: it clears a window after the last, and only then.
    let quiet = |at: i64| snapshot().at(later(at)).build();
    let d3 = decide_with(&quiet(60), &policy, &annotated, &d2.memory);
    let f = the_finding(&d3, FindingKind::IdleInTransaction);
    assert!(f.confirmed && !f.present && f.ended == 0, "{f:#?}");
    assert!(d3.annotations.is_empty(), "{:#?}", d3.annotations);
    let d4 = decide_with(&quiet(30 + 10 * MIN), &policy, &annotated, &d3.memory);
    assert!(d4.findings.is_empty(), "{:#?}", d4.findings);
    assert!(d4.annotations[0].is_removal(), "{:#?}", d4.annotations);
}

#[test]
fn a_pinned_pool_enforce_ends_is_named_for_recovery_and_its_pod_evicted_when_asked() {
    // Pod 1's pool pinned; pod 2 holds two sessions idle in a transaction beside one at work: not
    // a pinned pool, though both of them are ended.
    let snap = snapshot()
        .with_all((0..5).map(|i| {
            session(600 + i)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(65)
        }))
        .with_all((0..2).map(|i| {
            session(610 + i)
                .client_addr(&pod_ip(2))
                .idle_in_transaction(65)
        }))
        .with(session(612).client_addr(&pod_ip(2)).active(1))
        .build();
    let off = decide_with(&snap, &rules(QUICK_ENFORCE), &cluster(), &Memory::default());
    assert_eq!(off.terminate.len(), 7);
    assert_eq!(
        off.recovery.pinned,
        [PinnedPool {
            source: deployment(),
            pod: pod_name(1),
            sessions: 5,
        }]
    );
    assert!(
        off.recovery.evict.is_empty(),
        "remediation is off by default"
    );

    let on = rules(&format!(
        "{QUICK_ENFORCE}remediation: {{pinnedPools: Evict}}\n"
    ));
    let d = decide_with(&snap, &on, &cluster(), &Memory::default());
    assert_eq!(
        d.recovery.evict,
        [Eviction {
            pod: pod_name(1),
            workload: orders_api(),
            sessions: 5,
        }]
    );
}

#[test]
fn what_dry_run_would_end_is_no_finding_before_its_detection_age() {
    let mut policy = rules(QUICK_ENFORCE);
    policy.mode = Mode::DryRun;
    let d = decide_with(
        &pinned_a_minute_ago(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    assert_eq!(d.dry_run.len(), 20);
    assert!(findings(&d, FindingKind::IdleInTransaction).is_empty());
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);
}

#[test]
fn sessions_enforce_ends_for_plain_idleness_are_no_finding() {
    // Seed 000's forked workers, idle for four minutes while the parent works.
    let snap = snapshot()
        .with(session(800).client_addr(&pod_ip(1)).active(0))
        .with_all((0..4).map(|i| session(801 + i).client_addr(&pod_ip(1)).idle(4 * MIN)))
        .build();
    let d = decide_with(
        &snap,
        &rules(QUICK_ENFORCE),
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    assert_eq!(reasons(&d.terminate), [Reason::IdleTimeout; 4]);
    assert!(d.findings.is_empty(), "{:#?}", d.findings);
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);
}

#[test]
fn orphans_and_transactions_too_old_that_enforce_ends_are_confirmed_at_once() {
    let with_departed = ClusterView {
        departed: vec![departed(4, ago(2 * MIN))],
        ..annotated_cluster(&[])
    };
    let orphans = snapshot()
        .with_all((0..2).map(|i| {
            session(230 + i)
                .client_addr(&pod_ip(4))
                .started_ago(HOUR)
                .idle(5 * MIN)
        }))
        .build();
    let d = decide_with(
        &orphans,
        &rules(ENFORCE),
        &with_departed,
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::Orphaned);
    assert!(f.confirmed && f.started && f.ended == 2, "{f:#?}");
    assert!(
        f.summary.ends_with(&format!(
            "2 sessions ended, left behind by pods that no longer exist ({})",
            pod_name(4)
        )),
        "{}",
        f.summary
    );
    // The same in DryRun: two minutes of the window.
    let d = decide_with(
        &orphans,
        &rules(DRY_RUN),
        &with_departed,
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::Orphaned);
    assert!(!f.confirmed && f.ended == 0, "{f:#?}");

    // Transactions of 6 minutes, ended at 5: younger than the 10 minutes of detection.
    let policy = rules("mode: Enforce\nidle: {maxTransactionAge: 5m}");
    let snap = snapshot()
        .with(long_transaction(910, 6 * MIN, 20, 10))
        .with(long_transaction(911, 6 * MIN, 30, 10))
        .build();
    let d = decide_with(&snap, &policy, &annotated_cluster(&[]), &Memory::default());
    assert_eq!(reasons(&d.terminate), [Reason::TransactionTooOld; 2]);
    let f = the_finding(&d, FindingKind::LongTransaction);
    assert!(f.confirmed && f.started && f.ended == 2, "{f:#?}");
    assert_eq!(
        f.summary,
        "2 sessions ended, idle in a transaction open for more than 5m00s (maxTransactionAge)"
    );
    assert_eq!(
        d.annotations[0].annotations[LEAK].as_deref(),
        Some("LongTransaction")
    );
}

#[test]
fn what_enforce_ends_of_a_leak_a_detector_sees_adds_to_that_finding() {
    // Idle in a transaction for three minutes: past the detection age too.
    let snap = snapshot()
        .with_all((0..3).map(|i| {
            session(600 + i)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(3 * MIN)
        }))
        .build();
    let d = decide_with(&snap, &rules(QUICK_ENFORCE), &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert!(f.confirmed && f.started && f.ended == 3, "{f:#?}");
    assert_eq!(
        f.summary,
        "3 sessions idle in transaction for more than 2m00s; 3 sessions ended, idle in a \
         transaction for more than 1m00s (idleInTransactionTimeout)"
    );
}

// ================================================================================================
// Capacity
// ================================================================================================

#[test]
fn capacity_counts_client_sessions_against_the_usable_connections() {
    // 96 application sessions, poolwarden's own, and two background processes.
    let snap = snapshot()
        .with_all((100..196).map(session))
        .with(session(OWN_PID).application_name("poolwarden").active(0))
        .with(session(2).backend_type("walsender").active(HOUR))
        .with(session(3).backend_type("autovacuum launcher"))
        .build();
    let d = decide_standalone(&snap, &rules("budgets: {maxConnections: 90}"));
    let c = &d.capacity;
    assert_eq!(c.max_connections, 100);
    assert_eq!(c.reserved_connections, 3);
    assert_eq!(c.usable_connections, 97);
    assert_eq!(c.client_sessions, 97);
    assert_eq!(c.utilization_percent, 100);
    assert_eq!(c.scope_sessions, 96);
    assert_eq!(c.scope_budget, Some(90));

    let half = snapshot().with_all((100..148).map(session)).build();
    let d = decide_standalone(&half, &rules("{}"));
    assert_eq!(d.capacity.client_sessions, 48);
    assert!(
        (49..=50).contains(&d.capacity.utilization_percent),
        "{}",
        d.capacity.utilization_percent
    );
}

#[test]
fn reserved_connections_of_postgres_16_are_not_usable_by_applications() {
    let snap = snapshot().reserved_connections(2).build();
    let d = decide_standalone(&snap, &rules("{}"));
    assert_eq!(d.capacity.reserved_connections, 5);
    assert_eq!(d.capacity.usable_connections, 95);
}

// ================================================================================================
// Long transactions, a full server, a stable Overbooked
// ================================================================================================

/// A session of pod 1 whose transaction began `open` seconds ago and which last ran a statement
/// `touched` seconds ago, holding `backend_xmin` from `xmin_age` transactions back.
fn long_transaction(pid: i64, open: i64, touched: i64, xmin_age: u32) -> SessionBuilder {
    let mut s = session(pid)
        .client_addr(&pod_ip(1))
        .idle_in_transaction(touched);
    s.session.xact_start = Some(ago(open));
    s.session.backend_xmin = Some(5_000 + xmin_age);
    s.session.xmin_age = Some(xmin_age);
    s
}

/// A session waiting on a lock held by `blocker`.
fn waiting_for(pid: i64, blocker: i64) -> SessionBuilder {
    let mut s = session(pid).client_addr(&pod_ip(2)).active(30);
    s.session.blocked_by = vec![blocker];
    s
}

#[test]
fn a_transaction_touched_every_few_seconds_is_a_long_transaction_by_its_age() {
    let snap = snapshot()
        // Seed 003: one transaction open for 14 minutes, its session busy two seconds ago.
        .with(long_transaction(900, 14 * MIN, 2, 1_234))
        .with(long_transaction(901, 11 * MIN, 4, 700))
        .with(long_transaction(902, 9 * MIN, 1, 600))
        .with(waiting_for(903, 900))
        .with(waiting_for(904, 900))
        .build();
    let d = decide_with(&snap, &rules("{}"), &cluster(), &Memory::default());
    let f = the_finding(&d, FindingKind::LongTransaction);
    assert_eq!(f.subject, about(deployment()));
    assert_eq!(f.pids, [900, 901]);
    assert_eq!(f.sessions, 2);
    assert_eq!(f.held_for, secs(4 * MIN));
    for needle in [
        "2 transactions open for more than 10m00s (oldest 14m00s, pid 900, idle in transaction, last statement 2s ago)",
        "oldest xmin held: 6234, 1234 transactions ago (vacuum cannot clean past it)",
        "2 sessions waiting on their locks",
    ] {
        assert!(
            f.evidence.contains(needle),
            "{needle:?} not in {}",
            f.evidence
        );
    }
    // IdleInTransaction measures state_change: a touched session is not idle for long.
    assert!(findings(&d, FindingKind::IdleInTransaction).is_empty());
    assert!(
        d.dry_run.is_empty(),
        "nothing ends without maxTransactionAge"
    );
}

#[test]
fn max_transaction_age_ends_only_sessions_idle_in_that_transaction_blockers_first() {
    let policy = rules("mode: Enforce\nidle: {maxTransactionAge: 10m, maxTerminationsPerCycle: 1}");
    let mut active = session(913).client_addr(&pod_ip(1)).active(5);
    active.session.xact_start = Some(ago(HOUR));
    let snap = snapshot()
        .with(long_transaction(910, 40 * MIN, 3, 10))
        .with(long_transaction(911, 12 * MIN, 2, 10))
        .with(waiting_for(912, 911))
        // A long statement in a long transaction: never ended.
        .with(active)
        .with(long_transaction(914, 9 * MIN, 2, 10))
        .build();
    let d = decide_with(&snap, &policy, &cluster(), &Memory::default());
    // 911 blocks a session: it goes first, within the brake of one.
    assert_eq!(pids(&d.terminate), [911]);
    assert_eq!(d.terminate[0].reason, Reason::TransactionTooOld);
    assert_eq!(d.terminate[0].blocks, 1);
    assert!(d.terminate[0].checked_out);
    assert_eq!(pids(&d.deferred), [910]);
}

#[test]
fn a_server_at_its_usable_connections_is_server_saturation_naming_the_top_holders() {
    let mut sessions: Vec<SessionBuilder> = (0..60)
        .map(|i| {
            session(1000 + i)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(30)
        })
        .collect();
    sessions.extend((0..30).map(|i| session(1100 + i).client_addr(&pod_ip(2)).idle(30)));
    sessions.extend((0..7).map(|i| {
        session(1200 + i)
            .application_name("reporting")
            .client_addr("192.168.1.10")
            .active(1)
    }));
    let d = decide_with(
        &snapshot().with_all(sessions).build(),
        &rules("{}"),
        &cluster(),
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::ServerSaturation);
    assert_eq!(f.subject, Subject::Server);
    assert_eq!(f.sessions, 97);
    assert_eq!(
        f.evidence,
        "97 of the 97 connections the server accepts from applications are in use (100%); top \
         holders: Deployment/orders-api 90 (30 idle, 60 idle in transaction); \
         reporting@192.168.1.10 7 (7 active)"
    );

    let below = snapshot()
        .with_all((0..87).map(|i| session(1300 + i)))
        .build();
    let d = decide_standalone(&below, &rules("{}"));
    assert!(findings(&d, FindingKind::ServerSaturation).is_empty());
    let at = snapshot()
        .with_all((0..88).map(|i| session(1300 + i)))
        .build();
    let d = decide_standalone(&at, &rules("{}"));
    assert_eq!(findings(&d, FindingKind::ServerSaturation).len(), 1);
}

#[test]
fn overbooked_counts_the_clients_seen_over_the_window_ranked_by_what_they_hold() {
    let policy = rules("budgets: {maxConnectionsPerPod: 25}");
    let client_on = |app: &str, host: u8, pid: i64| {
        session(pid)
            .application_name(app)
            .client_addr(&format!("192.168.1.{host}"))
    };
    // Cycle 1: api from three hosts, a healthy "aaa" batch from one (sorted first by name).
    let first = snapshot()
        .with_all((0..3).map(|h| client_on("api", 10 + h, 800 + i64::from(h))))
        .with_all((0..5).map(|i| client_on("api", 10, 810 + i)))
        .with(client_on("aaa-batch", 20, 820))
        .build();
    let d1 = decide_standalone(&first, &policy);
    let f = the_finding(&d1, FindingKind::Overbooked);
    assert_eq!(d1.capacity.booked_connections, Some(100));
    let ranked = f.evidence.find("api@").unwrap() < f.evidence.find("aaa-batch@").unwrap();
    assert!(ranked, "the biggest holder first: {}", f.evidence);

    // Thirty seconds later two api hosts are between connections: still booked, still found.
    let second = snapshot()
        .at(later(30))
        .with(client_on("api", 10, 800))
        .with(client_on("aaa-batch", 20, 820))
        .build();
    let d2 = decide_with(&second, &policy, &ClusterView::default(), &d1.memory);
    assert_eq!(d2.capacity.booked_connections, Some(100));
    assert_eq!(findings(&d2, FindingKind::Overbooked).len(), 1);

    // A window after they were last seen, they no longer count.
    let later_on = snapshot()
        .at(later(10 * MIN + 1))
        .with(client_on("api", 10, 800))
        .with(client_on("aaa-batch", 20, 820))
        .build();
    let d3 = decide_with(&later_on, &policy, &ClusterView::default(), &d2.memory);
    assert_eq!(d3.capacity.booked_connections, Some(50));
}

#[test]
fn durations_in_the_decisions_json_are_seconds() {
    let snap = snapshot().with(session(1400).idle(31 * MIN)).build();
    let d = decide_standalone(&snap, &rules(DRY_RUN));
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["dryRun"][0]["inStateForSeconds"], 1860.0);
    assert_eq!(json["groups"][0]["oldestIdleSeconds"], 1860.0);
    assert!(json.to_string().find("secs").is_none(), "{json:#}");
}

// ================================================================================================
// Behind a pooler (DESIGN.md §10)
// ================================================================================================

const POOLER_IP: &str = "10.0.9.9";
const POOLER: &str = "pgbouncer";

/// The pooler's server connection from local port `port` to backend `pid`, linked to `client`.
fn pooled_server(port: u16, pid: i32, client: Option<&str>) -> ServerRow {
    ServerRow {
        ptr: format!("s{port}"),
        link: client.map(|c| format!("c-{c}")),
        user: "app".to_owned(),
        database: "orders".to_owned(),
        state: if client.is_some() { "active" } else { "idle" }.to_owned(),
        local_addr: Some(ip(POOLER_IP)),
        local_port: Some(port),
        remote_pid: Some(pid),
        connected_for: None,
        since_request: None,
    }
}

/// The pooler's client from `addr`, linked to the server from local port `server`.
fn pooled_client(addr: &str, server: Option<u16>) -> ClientRow {
    ClientRow {
        ptr: format!("c-{addr}"),
        link: server.map(|port| format!("s{port}")),
        user: "app".to_owned(),
        database: "orders".to_owned(),
        state: "active".to_owned(),
        addr: Some(ip(addr)),
        port: Some(40_000),
        application_name: None,
        connected_for: None,
        since_request: None,
        waiting_for: None,
    }
}

fn pool(waiting: u32, max_wait_secs: u64) -> PoolRow {
    PoolRow {
        database: "orders".to_owned(),
        user: "app".to_owned(),
        clients_active: 2,
        clients_waiting: waiting,
        servers_active: 2,
        servers_idle: 0,
        servers_used: 0,
        servers_tested: 0,
        servers_login: 0,
        max_wait: Duration::from_secs(max_wait_secs),
        pool_mode: Some("transaction".to_owned()),
    }
}

/// Behind the pooler: pid 301 (port 5001) is linked to pod 1 and idle in a transaction for 10
/// minutes; pid 302 (port 5002) is held by the pooler, idle for 5 hours; pid 303 (port 5003) is
/// linked to pod 2 and active.
fn behind_the_pooler() -> (Snapshot, ConsoleSnapshot) {
    let snap = snapshot()
        .with(
            session(301)
                .through_pooler(5001)
                .idle_in_transaction(10 * MIN),
        )
        .with(session(302).through_pooler(5002).idle(5 * HOUR))
        .with(session(303).through_pooler(5003).active(1))
        .build();
    let console = ConsoleSnapshot {
        servers: vec![
            pooled_server(5001, 301, Some(&pod_ip(1))),
            pooled_server(5002, 302, None),
            pooled_server(5003, 303, Some(&pod_ip(2))),
        ],
        clients: vec![
            pooled_client(&pod_ip(1), Some(5001)),
            pooled_client(&pod_ip(2), Some(5003)),
            pooled_client(&pod_ip(3), None),
        ],
        pools: vec![pool(0, 0)],
    };
    (snap, console)
}

fn decide_behind(
    snapshot: &Snapshot,
    looks: &[PoolerLook],
    rules: &Rules,
    cluster: &ClusterView,
) -> Decision {
    decide(Inputs {
        snapshot,
        rules,
        cluster,
        poolers: looks,
        memory: &Memory::default(),
    })
}

fn look(console: ConsoleSnapshot) -> Vec<PoolerLook> {
    vec![PoolerLook {
        name: POOLER.to_owned(),
        console: Ok(console),
    }]
}

fn held() -> Source {
    Source::Pooler {
        pooler: POOLER.to_owned(),
    }
}

#[test]
fn behind_a_pooler_an_idle_transaction_is_named_on_the_pod_holding_it_and_ended() {
    let (snap, console) = behind_the_pooler();
    let rules = rules("mode: Enforce\nidle: {idleInTransactionTimeout: 5m}\n");
    let d = decide_behind(&snap, &look(console), &rules, &cluster());

    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.subject, about(deployment()));
    assert_eq!(f.pids, vec![301]);
    assert_eq!(pids(&d.terminate), vec![301]);
    let t = &d.terminate[0];
    assert_eq!(t.pod, pod_name(1));
    assert_eq!(t.pooler.as_deref(), Some(POOLER));
    let g = group(&d, &deployment());
    assert_eq!(g.via, Via::Pooler);
    assert_eq!(g.pods, BTreeSet::from([pod_name(1), pod_name(2)]));
    assert_eq!(g.poolers, BTreeSet::from([POOLER.to_owned()]));
    let report = &d.poolers[0];
    assert_eq!(
        (
            report.tally.linked,
            report.tally.held_by_pooler,
            report.clients
        ),
        (2, 1, 3)
    );
}

#[test]
fn a_connection_the_pooler_holds_is_counted_on_the_pooler_and_never_ended_however_idle() {
    let (snap, console) = behind_the_pooler();
    // Every rule that could condemn an idle session, as tight as they go.
    let rules = rules(
        "mode: Enforce\nidle: {idleTimeout: 1s, idleInTransactionTimeout: 1s, maxTransactionAge: 1s}\n\
         leakDetection: {strandedIdleAge: 1s, idleThreshold: 1}\n",
    );
    for cluster in [cluster(), ClusterView::default()] {
        let d = decide_behind(&snap, &look(console.clone()), &rules, &cluster);
        assert!(!pids(&d.terminate).contains(&302), "{:#?}", d.terminate);
        assert!(!pids(&d.deferred).contains(&302));
        let g = group(&d, &held());
        assert_eq!((g.counts.total, g.via), (1, Via::HeldByPooler));
        assert_eq!(g.pods, BTreeSet::from([POOLER.to_owned()]));
        assert!(
            d.findings.iter().all(|f| f.subject != about(held())),
            "{:#?}",
            d.findings
        );
    }
}

#[test]
fn outside_a_cluster_the_pooled_client_is_named_by_its_address() {
    let (snap, console) = behind_the_pooler();
    let d = decide_behind(&snap, &look(console), &rules("{}"), &ClusterView::default());
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.subject, about(client("app", Some(&pod_ip(1)))));
    assert_eq!(
        pids(&d.dry_run),
        Vec::<i64>::new(),
        "the default ends nothing"
    );
    assert_eq!(group(&d, &client("app", Some(&pod_ip(2)))).via, Via::Pooler);
}

#[test]
fn a_link_the_two_views_disagree_about_is_nobodys_and_never_ended() {
    let (snap, mut console) = behind_the_pooler();
    // The server still names pod 1's client, which now names another server.
    console.clients[0].link = Some("s9999".to_owned());
    let rules = rules("mode: Enforce\nidle: {idleInTransactionTimeout: 5m}\n");
    let d = decide_behind(&snap, &look(console), &rules, &cluster());
    assert!(d.terminate.is_empty(), "{:#?}", d.terminate);
    assert_eq!(group(&d, &held()).via, Via::PoolerUnsettled);
    assert!(findings(&d, FindingKind::IdleInTransaction).is_empty());
    assert_eq!(d.poolers[0].tally.unsettled, 1);
}

#[test]
fn an_unreadable_pooler_is_a_warning_and_its_sessions_count_on_its_address() {
    let (snap, _) = behind_the_pooler();
    let looks = vec![PoolerLook {
        name: POOLER.to_owned(),
        console: Err(ConsoleUnread {
            reason: "Unreachable",
            message: "cannot reach 10.0.9.9:6432: connection refused".to_owned(),
        }),
    }];
    let rules = rules("mode: Enforce\nidle: {idleTimeout: 1m, idleInTransactionTimeout: 5m}\n");
    let d = decide_behind(&snap, &looks, &rules, &cluster());
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("pooler pgbouncer") && w.contains("connection refused")),
        "{:?}",
        d.warnings
    );
    assert_eq!(
        d.poolers[0].error.as_deref(),
        looks[0].console.as_ref().err().map(|e| e.message.as_str())
    );
    // As without a pooler: the pooler's address, unattributed. The idle transaction is a
    // client's whoever it is, and ended; the 5-hour idle one may be the pooler's own: kept.
    let g = group(&d, &client("app", Some(POOLER_IP)));
    assert_eq!((g.counts.total, g.via), (3, Via::Unattributed));
    assert_eq!(pids(&d.terminate), vec![301]);
}

#[test]
fn a_pool_with_clients_waiting_is_a_finding_on_the_pooler_naming_who_holds_it() {
    let (snap, mut console) = behind_the_pooler();
    console.pools = vec![pool(4, 7)];
    let d = decide_behind(&snap, &look(console.clone()), &rules("{}"), &cluster());
    let f = the_finding(&d, FindingKind::PoolerSaturation);
    assert_eq!(f.subject, about(held()));
    assert_eq!(f.sessions, 4);
    assert!(f.evidence.contains("4 clients waiting"), "{}", f.evidence);
    assert!(
        f.evidence.contains(&format!("{} 1", pod_ip(1))),
        "{}",
        f.evidence
    );
    assert_eq!(d.poolers[0].clients_waiting, 4);

    // A wait under a second is a burst the pool absorbs.
    console.pools = vec![pool(4, 0)];
    let d = decide_behind(&snap, &look(console), &rules("{}"), &cluster());
    assert!(findings(&d, FindingKind::PoolerSaturation).is_empty());
}

// Pooler clients in the per-pod findings: a pod's pool connections that hold no server session.

/// A client of the pooler from `addr:port`, holding no server session, quiet for `idle_secs`.
fn quiet_client(addr: &str, port: u16, idle_secs: u64) -> ClientRow {
    ClientRow {
        ptr: format!("c-{addr}-{port}"),
        port: Some(port),
        connected_for: Some(Duration::from_secs(idle_secs + 60)),
        since_request: Some(Duration::from_secs(idle_secs)),
        ..pooled_client(addr, None)
    }
}

/// The fork leak behind a transaction pooler: pod 1's parent queries every second (its server
/// connection is the pooler's between queries), and its four forked workers' connections are
/// the pooler's clients, quiet for 40 minutes, with no server session at all.
fn fork_leak_behind_the_pooler() -> (Snapshot, ConsoleSnapshot) {
    let snap = snapshot()
        .with(session(401).through_pooler(5001).idle(1))
        .build();
    let mut clients = vec![quiet_client(&pod_ip(1), 41_000, 1)];
    clients.extend((1..=4).map(|n| quiet_client(&pod_ip(1), 41_000 + n, 40 * 60)));
    let console = ConsoleSnapshot {
        servers: vec![pooled_server(5001, 401, None)],
        clients,
        pools: vec![pool(0, 0)],
    };
    (snap, console)
}

#[test]
fn stranded_pooler_clients_of_a_working_pod_are_idle_accumulation_and_never_ended() {
    let (snap, console) = fork_leak_behind_the_pooler();
    let strict = rules(
        "mode: Enforce\nidle: {idleTimeout: 1s, idleInTransactionTimeout: 1s, maxTransactionAge: 1s}\n",
    );
    for rules in [rules("{}"), strict] {
        let d = decide_behind(&snap, &look(console.clone()), &rules, &cluster());
        let f = the_finding(&d, FindingKind::IdleAccumulation);
        assert_eq!(f.subject, about(deployment()));
        assert_eq!(f.sessions, 4);
        assert!(f.pids.is_empty(), "no server session: {:?}", f.pids);
        let mut ports: Vec<Option<u16>> = f.pooler_clients.iter().map(|c| c.port).collect();
        ports.sort_unstable();
        assert_eq!(ports, [41_001, 41_002, 41_003, 41_004].map(Some).to_vec());
        assert!(
            f.pooler_clients
                .iter()
                .all(|c| c.pooler == POOLER && c.address == Some(ip(&pod_ip(1))))
        );
        assert!(
            f.evidence.starts_with(&format!(
                "4 connections stranded idle for more than 30m00s on {}, which keeps using 1 other connection",
                pod_name(1)
            )),
            "{}",
            f.evidence
        );
        assert!(
            f.evidence
                .contains("4 client connections to pooler pgbouncer that hold no server session"),
            "{}",
            f.evidence
        );
        assert!(f.cause.contains(POOLER_CLIENTS_NOTE), "{}", f.cause);
        // Nothing of the kind is ever a termination: the held server connection neither.
        assert!(d.terminate.is_empty() && d.dry_run.is_empty(), "{d:#?}");
    }
}

#[test]
fn stranded_pooler_clients_outside_a_cluster_are_named_by_their_address() {
    let (snap, console) = fork_leak_behind_the_pooler();
    let d = decide_behind(&snap, &look(console), &rules("{}"), &ClusterView::default());
    let f = the_finding(&d, FindingKind::IdleAccumulation);
    assert_eq!(f.subject, about(client("", Some(&pod_ip(1)))));
    assert_eq!(f.sessions, 4);
}

#[test]
fn a_pool_pinned_behind_the_pooler_counts_each_client_once() {
    // Pod 1 holds five connections through the pooler: two inside a transaction (each linked
    // to its server session, which is counted), three quiet between transactions (no session).
    let snap = snapshot()
        .with(session(501).through_pooler(5001).idle_in_transaction(30))
        .with(session(502).through_pooler(5002).idle_in_transaction(30))
        .build();
    let linked = |port: u16, server: u16| ClientRow {
        ptr: format!("c-{port}"),
        port: Some(port),
        connected_for: Some(Duration::from_secs(600)),
        since_request: Some(Duration::from_secs(30)),
        ..pooled_client(&pod_ip(1), Some(server))
    };
    let mut servers = vec![
        pooled_server(5001, 501, None),
        pooled_server(5002, 502, None),
    ];
    servers[0].link = Some("c-42001".to_owned());
    servers[1].link = Some("c-42002".to_owned());
    let mut clients = vec![linked(42_001, 5001), linked(42_002, 5002)];
    clients.extend((3..=5).map(|n| quiet_client(&pod_ip(1), 42_000 + n, 5)));
    let console = ConsoleSnapshot {
        servers,
        clients,
        pools: vec![pool(0, 0)],
    };

    let d = decide_behind(
        &snap,
        &look(console.clone()),
        &rules("budgets: {maxConnectionsPerPod: 5}"),
        &cluster(),
    );
    let f = the_finding(&d, FindingKind::PoolSaturation);
    assert_eq!(f.subject, about(deployment()));
    assert_eq!(
        f.sessions, 5,
        "not 7: a linked client counts by its session only"
    );
    assert_eq!(sorted(f.pids.clone()), [501, 502]);
    assert_eq!(f.pooler_clients.len(), 3);
    assert!(
        f.evidence.starts_with(&format!(
            "{} holds 5 connections, its budget is 5 (2 idle in transaction; 3 client connections to pooler pgbouncer",
            pod_name(1)
        )),
        "{}",
        f.evidence
    );
    assert!(f.cause.contains(POOLER_CLIENTS_NOTE), "{}", f.cause);

    // One budget higher, and nothing: the count is exact.
    let d = decide_behind(
        &snap,
        &look(console),
        &rules("budgets: {maxConnectionsPerPod: 6}"),
        &cluster(),
    );
    assert!(findings(&d, FindingKind::PoolSaturation).is_empty());
}

#[test]
fn pooler_clients_count_only_in_pools_of_governed_sessions_and_in_scope() {
    let (snap, mut console) = fork_leak_behind_the_pooler();
    // Another database's pool of the same pooler: its quiet clients are not this policy's.
    console.clients.extend((1..=4).map(|n| ClientRow {
        database: "reports".to_owned(),
        ..quiet_client(&pod_ip(2), 43_000 + n, 40 * 60)
    }));
    // poolwarden's own console connection is nobody's pool connection.
    console.clients.push(ClientRow {
        database: "pgbouncer".to_owned(),
        ..quiet_client(&pod_ip(3), 44_000, 40 * 60)
    });
    let d = decide_behind(&snap, &look(console.clone()), &rules("{}"), &cluster());
    assert_eq!(
        findings(&d, FindingKind::IdleAccumulation).len(),
        1,
        "{:#?}",
        d.findings
    );
    assert_eq!(the_finding(&d, FindingKind::IdleAccumulation).sessions, 4);

    // Excluded users' clients are out of scope, as their sessions would be.
    let d = decide_behind(
        &snap,
        &look(console.clone()),
        &rules("scope: {excludeUsers: [app]}"),
        &cluster(),
    );
    assert!(findings(&d, FindingKind::IdleAccumulation).is_empty());

    // Without a governed server connection of the pool nothing says the pool is this
    // server's: its clients are not counted.
    let alone = snapshot().build();
    let d = decide_behind(&alone, &look(console), &rules("{}"), &cluster());
    assert!(findings(&d, FindingKind::IdleAccumulation).is_empty());
}

#[test]
fn healthy_pooler_clients_beside_the_parent_are_named_by_nothing() {
    // A pool busy every second: every client quiet for a second or two, none stranded.
    let snap = snapshot()
        .with(session(601).through_pooler(5001).idle(1))
        .build();
    let console = ConsoleSnapshot {
        servers: vec![pooled_server(5001, 601, None)],
        clients: (0..10)
            .map(|n| quiet_client(&pod_ip(2), 45_000 + n, u64::from(n % 3)))
            .collect(),
        pools: vec![pool(0, 0)],
    };
    let d = decide_behind(&snap, &look(console), &rules("{}"), &cluster());
    assert!(d.findings.is_empty(), "{:#?}", d.findings);
}

#[test]
fn a_pooler_client_waiting_for_a_server_is_in_use() {
    // The parent waits for a server (the pool is busy); its stranded workers are still found
    // beside it, and the waiting client is counted as the connection in use.
    let (snap, mut console) = fork_leak_behind_the_pooler();
    console.clients[0].state = "waiting".to_owned();
    console.clients[0].since_request = Some(Duration::from_secs(40 * 60));
    console.clients[0].waiting_for = Some(Duration::from_millis(300));
    let d = decide_behind(&snap, &look(console), &rules("{}"), &cluster());
    let f = the_finding(&d, FindingKind::IdleAccumulation);
    assert_eq!(f.sessions, 4);
    assert!(
        f.evidence.contains("which keeps using 1 other connection"),
        "{}",
        f.evidence
    );
}
