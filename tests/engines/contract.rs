//! The contract every engine keeps, written once and run against a real PostgreSQL and a real
//! MariaDB: what is ended and why, what never is (active sessions, excluded users and
//! applications, poolwarden's own sessions and another poolwarden's), the per-cycle cap, and the
//! race between the look and the kill. What an engine does its own way (PostgreSQL's conditional
//! `pg_terminate_backend`, MySQL's re-read before each `KILL`, grants, churn, statements) is tested
//! in its own module.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use poolwarden::cycle::{Cycle, Pass};
use poolwarden::database::mysql::MySql;
use poolwarden::database::postgres::Postgres;
use poolwarden::database::{ConnectOptions, Engine, SessionState};
use poolwarden::decide::{self, ClusterView, Exclusion, Inputs, Memory, Reason};
use poolwarden_sandbox::{
    ClientSession, MariaDb, MariaDbOptions, MySqlSession, MySqlSessionSpec, Sandbox, SessionSpec,
};

use crate::support::{self, APP_DB, pause, rules};

const QUICK_IDLE: &str = "
mode: Enforce
idle: {idleTimeout: 300ms, idleInTransactionTimeout: 300ms}
";

/// A throwaway server of one engine, with users `app` and `batch` and a monitoring user that
/// may see and end every session.
trait Server: Sized {
    type Client: Client;
    type Engine: Engine;

    async fn start() -> Self;
    /// A session of user `app` calling itself `application`, from `127.0.0.<host>`.
    async fn open(&self, application: &str, host: u8) -> Self::Client;
    /// A session of user `batch` calling itself `application`.
    async fn open_batch(&self, application: &str) -> Self::Client;
    /// poolwarden's monitoring connection.
    async fn monitor(&self) -> Self::Engine;
    /// Waits until the server shows `client` running its statement.
    async fn wait_active(&self, client: &Self::Client);
    /// Whether the server shows session `pid`, asked over another connection: a statement on
    /// the session itself would be activity and reset its idle clock.
    async fn shows(&self, pid: i64) -> bool;
    /// Waits until the server no longer shows session `pid`; whether it went.
    async fn gone(&self, pid: i64) -> bool;
}

/// One application session, as the tests drive it.
trait Client {
    fn pid(&self) -> i64;
    async fn is_alive(&self) -> bool;
    async fn begin_idle_in_transaction(&self);
    /// Runs a trivial statement: activity.
    async fn touch(&self);
    /// Runs a statement for `seconds` in the background.
    fn start_active(&self, seconds: f64);
}

struct Pg(Sandbox);

impl Server for Pg {
    type Client = ClientSession;
    type Engine = Postgres;

    async fn start() -> Self {
        Pg(support::sandbox().await)
    }

    async fn open(&self, application: &str, host: u8) -> ClientSession {
        support::open(&self.0, application, host).await
    }

    async fn open_batch(&self, application: &str) -> ClientSession {
        let spec = SessionSpec::new("batch", "batch", APP_DB).application(application);
        self.0.open_session(&spec).await.expect("session opens")
    }

    async fn monitor(&self) -> Postgres {
        support::connect(&support::monitor_url(&self.0)).await
    }

    async fn wait_active(&self, client: &ClientSession) {
        let pid = client.pid();
        self.0
            .wait_for_state(pid, "active", Duration::from_secs(5))
            .await
            .unwrap();
    }

    async fn shows(&self, pid: i64) -> bool {
        support::alive(&self.0, pid).await
    }

    async fn gone(&self, pid: i64) -> bool {
        support::gone(&self.0, pid).await
    }
}

impl Client for ClientSession {
    fn pid(&self) -> i64 {
        ClientSession::pid(self)
    }
    async fn is_alive(&self) -> bool {
        ClientSession::is_alive(self).await
    }
    async fn begin_idle_in_transaction(&self) {
        ClientSession::begin_idle_in_transaction(self)
            .await
            .unwrap();
    }
    async fn touch(&self) {
        ClientSession::touch(self).await.unwrap();
    }
    fn start_active(&self, seconds: f64) {
        ClientSession::start_active(self, seconds);
    }
}

/// MariaDB with `performance_schema` on: without it no application name is visible, which the
/// MySQL module tests on its own.
struct Maria(MariaDb);

impl Server for Maria {
    type Client = MySqlSession;
    type Engine = MySql;

    async fn start() -> Self {
        Maria(
            support::mariadb::server_with(MariaDbOptions {
                performance_schema: true,
                ..Default::default()
            })
            .await,
        )
    }

    async fn open(&self, application: &str, host: u8) -> MySqlSession {
        let spec = MySqlSessionSpec::new("app", "app", APP_DB)
            .program(application)
            .from_addr(Ipv4Addr::new(127, 0, 0, host));
        self.0.open_session(&spec).await.expect("session opens")
    }

    async fn open_batch(&self, application: &str) -> MySqlSession {
        let spec = MySqlSessionSpec::new("batch", "batch", APP_DB).program(application);
        self.0.open_session(&spec).await.expect("session opens")
    }

    async fn monitor(&self) -> MySql {
        let url = support::mariadb::monitor_url(&self.0);
        MySql::connect(&url, ConnectOptions::default())
            .await
            .expect("monitoring connection")
    }

    async fn wait_active(&self, client: &MySqlSession) {
        self.0
            .wait_for_command(client.id(), "Query", Duration::from_secs(5))
            .await
            .unwrap();
    }

    async fn shows(&self, pid: i64) -> bool {
        support::mariadb::alive(&self.0, pid).await
    }

    async fn gone(&self, pid: i64) -> bool {
        support::mariadb::gone(&self.0, pid).await
    }
}

impl Client for MySqlSession {
    fn pid(&self) -> i64 {
        self.id()
    }
    async fn is_alive(&self) -> bool {
        MySqlSession::is_alive(self).await
    }
    async fn begin_idle_in_transaction(&self) {
        MySqlSession::begin_idle_in_transaction(self).await.unwrap();
    }
    async fn touch(&self) {
        MySqlSession::touch(self).await.unwrap();
    }
    fn start_active(&self, seconds: f64) {
        MySqlSession::start_active(self, seconds);
    }
}

async fn run_cycle(engine: &mut impl Engine, policy: &str) -> Cycle {
    Pass::new(&rules(policy), &ClusterView::default(), &Memory::default())
        .run(engine)
        .await
        .expect("cycle runs")
}

fn pids(list: &[decide::Termination]) -> Vec<i64> {
    list.iter().map(|t| t.identity.pid).collect()
}

async fn an_idle_session_past_its_timeout_is_only_listed_in_dry_run_and_ended_in_enforce<
    S: Server,
>() {
    let db = S::start().await;
    let leaked = db.open("worker", 11).await;
    pause(600).await;

    let mut engine = db.monitor().await;
    let dry = run_cycle(&mut engine, &QUICK_IDLE.replace("Enforce", "DryRun")).await;
    assert_eq!(pids(&dry.decision.dry_run), vec![leaked.pid()]);
    assert!(dry.outcome.terminated.is_empty());
    pause(200).await;
    assert!(db.shows(leaked.pid()).await);

    let c = run_cycle(&mut engine, QUICK_IDLE).await;
    assert_eq!(pids(&c.outcome.terminated), vec![leaked.pid()]);
    assert_eq!(c.outcome.terminated[0].reason, Reason::IdleTimeout);
    assert!(db.gone(leaked.pid()).await);
    assert!(!leaked.is_alive().await);
}

async fn a_session_idle_in_a_transaction_is_ended<S: Server>() {
    let db = S::start().await;
    let in_tx = db.open("api", 12).await;
    in_tx.begin_idle_in_transaction().await;
    pause(600).await;

    let mut engine = db.monitor().await;
    let c = run_cycle(&mut engine, QUICK_IDLE).await;

    let seen = c
        .snapshot
        .sessions
        .iter()
        .find(|s| s.pid == in_tx.pid())
        .expect("visible");
    assert_eq!(seen.state, SessionState::IdleInTransaction);
    assert!(seen.xact_start.is_some());
    assert_eq!(pids(&c.outcome.terminated), vec![in_tx.pid()]);
    assert_eq!(
        c.outcome.terminated[0].reason,
        Reason::IdleInTransactionTimeout
    );
    assert!(db.gone(in_tx.pid()).await);
}

async fn an_active_session_is_never_ended_however_long_it_runs<S: Server>() {
    let db = S::start().await;
    let busy = db.open("report", 13).await;
    busy.start_active(5.0);
    db.wait_active(&busy).await;
    pause(600).await;

    let mut engine = db.monitor().await;
    let c = run_cycle(&mut engine, QUICK_IDLE).await;

    let seen = c
        .snapshot
        .sessions
        .iter()
        .find(|s| s.pid == busy.pid())
        .expect("visible");
    assert_eq!(seen.state, SessionState::Active);
    assert!(c.outcome.terminated.is_empty());
    assert!(c.decision.deferred.is_empty() && c.decision.protected.is_empty());
    assert!(busy.is_alive().await);
}

async fn excluded_users_and_applications_are_never_ended<S: Server>() {
    let db = S::start().await;
    let console = db.open("console", 14).await;
    let dump = db.open("dump 15", 14).await;
    let batch = db.open_batch("nightly").await;
    let leaked = db.open("worker", 11).await;
    pause(600).await;

    let policy = format!(
        "{QUICK_IDLE}scope: {{excludeUsers: [batch], excludeApplications: [console, 'dump*']}}\n"
    );
    let mut engine = db.monitor().await;
    let c = run_cycle(&mut engine, &policy).await;

    assert_eq!(pids(&c.outcome.terminated), vec![leaked.pid()]);
    for s in [&console, &dump, &batch] {
        assert!(s.is_alive().await);
    }
    assert_eq!(c.decision.out_of_scope[&Exclusion::ExcludedApplication], 2);
    assert_eq!(c.decision.out_of_scope[&Exclusion::ExcludedUser], 1);
}

async fn poolwarden_never_ends_its_own_session_or_another_poolwardens<S: Server>() {
    let db = S::start().await;
    // Another poolwarden's monitoring connection, idle between its cycles.
    let other = db.open("poolwarden", 15).await;
    let leaked = db.open("worker", 16).await;
    pause(600).await;

    let mut engine = db.monitor().await;
    let first = run_cycle(&mut engine, QUICK_IDLE).await;
    pause(600).await;
    // Our own connection is idle between cycles now, for longer than the timeout.
    let second = run_cycle(&mut engine, QUICK_IDLE).await;

    assert_eq!(pids(&first.outcome.terminated), vec![leaked.pid()]);
    assert!(second.outcome.terminated.is_empty());
    assert!(first.outcome.error.is_none() && second.outcome.error.is_none());
    assert!(other.is_alive().await);
    assert_eq!(second.decision.out_of_scope[&Exclusion::OwnSession], 1);
    assert_eq!(
        second.decision.out_of_scope[&Exclusion::PoolwardenSession],
        1
    );
}

async fn the_cap_ends_only_the_oldest_offenders_each_cycle<S: Server>() {
    let db = S::start().await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(db.open("worker", 11).await);
        pause(60).await;
    }
    pause(600).await;

    let policy = "mode: Enforce\nidle: {idleTimeout: 300ms, maxTerminationsPerCycle: 2}\n";
    let mut engine = db.monitor().await;
    let c = run_cycle(&mut engine, policy).await;

    assert_eq!(
        pids(&c.outcome.terminated),
        vec![sessions[0].pid(), sessions[1].pid()],
        "the two idle longest, oldest first"
    );
    assert_eq!(c.decision.deferred.len(), 3);
    for s in &sessions[2..] {
        assert!(s.is_alive().await);
    }
}

async fn a_session_that_works_between_the_look_and_the_kill_survives<S: Server>() {
    let db = S::start().await;
    let woke = db.open("worker", 11).await;
    let still = db.open("worker", 11).await;
    woke.begin_idle_in_transaction().await;
    pause(600).await;

    let mut engine = db.monitor().await;
    let snapshot = engine.observe().await.unwrap();
    // The race: one session runs a statement after the look and before the kill.
    woke.touch().await;
    let rules = rules(QUICK_IDLE);
    let decision = decide::decide(Inputs {
        snapshot: &snapshot,
        rules: &rules,
        cluster: &ClusterView::default(),
        poolers: &[],
        memory: &Memory::default(),
    });
    let condemned: BTreeSet<i64> = pids(&decision.terminate).into_iter().collect();
    assert_eq!(
        condemned,
        BTreeSet::from([woke.pid(), still.pid()]),
        "both condemned on the snapshot"
    );
    let outcome = poolwarden::act::terminate(&mut engine, &decision).await;

    assert_eq!(pids(&outcome.terminated), vec![still.pid()]);
    assert_eq!(pids(&outcome.changed), vec![woke.pid()]);
    assert!(woke.is_alive().await);
    assert!(db.gone(still.pid()).await);
}

/// Each contract test, once per engine: `postgres::name` and `mariadb::name`.
macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test::<super::Pg>().await
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test::<super::Maria>().await
                }
            )*
        }
    };
}

contract!(
    an_idle_session_past_its_timeout_is_only_listed_in_dry_run_and_ended_in_enforce,
    a_session_idle_in_a_transaction_is_ended,
    an_active_session_is_never_ended_however_long_it_runs,
    excluded_users_and_applications_are_never_ended,
    poolwarden_never_ends_its_own_session_or_another_poolwardens,
    the_cap_ends_only_the_oldest_offenders_each_cycle,
    a_session_that_works_between_the_look_and_the_kill_survives,
);
