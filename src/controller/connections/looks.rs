//! One monitoring connection per database server, and one look at it shared by its policies.
//!
//! `pg_stat_activity` shows every database of its server: policies on one server (the same
//! host, port, credentials and TLS settings, [`server_key`](crate::database::server_key)) each
//! govern their part of one list, and need not each read it. A [`Server`] holds the monitoring
//! connection and the last look taken over it. A policy's cycle takes that look when it began
//! at most [`share_window`] (one interval) before the cycle was first tried, and is newer than
//! the look the policy's previous cycle decided on; otherwise it takes a new one, which the next
//! policies share. What the servers spend on poolwarden then grows with the number of servers,
//! not of policies: about one look per interval per server, however many policies it holds (a
//! window of a tenth of the interval let ten looks an interval through, measured at 8 times
//! what ten policies a server cost: docs/benchmarks.md, "Scale"). The price is freshness: a
//! cycle may decide on a look up to an interval old, so a session may be ended, or a leak
//! confirmed, up to an interval later than a look of its own would have shown; each policy
//! still decides on every look once, and never on one older than an interval.
//!
//! No cycle waits long on a server, its own or another's. A new look runs as a task of its own;
//! the cycle that started it waits for it [`PATIENCE`] at most (a healthy server answers in
//! milliseconds) and otherwise comes back shortly ([`Looked::Pending`]) to take it once it is
//! done. While a look is in flight, the other policies on that server take the last failure if
//! the server failed, and otherwise come back shortly too (or take the last look, if it is recent
//! enough for them). So a slow or dead server costs the controller's workers [`PATIENCE`] per look at most,
//! never a login timeout per policy, and is tried by one look at a time.
//!
//! Safety is unchanged. A shared look began at most the window before its cycle was first tried
//! (or, on a slow server, while the cycle waited for it); its ages are the database's at the time of
//! the look, so a little short, never long; and every termination is still verified against the
//! live backend, over this connection, immediately before its own signal. A policy with poolers
//! in front waits for a look of its own ([`Want::own`]), read at the same time as their consoles.
//!
//! The connection logs in with the URL of the policy that needed it opened: the database a URL
//! names is only where the connection logs in. When it is closed and a policy with another URL
//! asks, it is opened with that policy's URL, so that one policy's misspelt database does not
//! keep its neighbours blind for longer than one failed login.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Mutex as AsyncMutex;

use super::engines::Connector;
use crate::database::{DatabaseError, Engine, SessionIdentity, Snapshot, Verdict};

/// How long a cycle waits for the look it started before it comes back for it later.
pub const PATIENCE: Duration = Duration::from_secs(2);

/// How long before a cycle was first tried a look may have begun for the cycle to take it: one
/// interval, so that a server is looked at about once an interval, however many policies it
/// holds.
pub fn share_window(interval: Duration) -> Duration {
    interval
}

/// A database server: its monitoring connection and the last look taken over it.
pub struct Server<E> {
    connection: Arc<AsyncMutex<Connection<E>>>,
    last: Arc<Mutex<Option<Last>>>,
    /// Every look taken (`poolwarden_server_looks_total`).
    looks: LookCounters,
}

/// Looks taken, by whether the server answered: shared by every server and the metrics.
#[derive(Clone, Debug, Default)]
pub struct LookCounters {
    pub answered: Counter,
    pub failed: Counter,
}

struct Connection<E> {
    /// The URL the engine logs in with.
    url: String,
    engine: E,
}

/// The outcome of the last look.
struct Last {
    began: Instant,
    /// Whether it read what each session last ran.
    statements: bool,
    result: Result<Arc<Snapshot>, DatabaseError>,
}

/// What a policy's cycle asks of its server.
#[derive(Clone, Debug)]
pub struct Want {
    /// The policy's own URL: the connection is opened with it if it is closed.
    pub url: String,
    /// When the look its previous cycle decided on was taken (the database's clock): a shared
    /// look must be newer.
    pub after: Option<Timestamp>,
    /// The earliest a shared look may have begun; `None`: a look of its own, waited for.
    pub not_before: Option<Instant>,
    /// Whether the look reads what each session last ran (`leakDetection.lastStatements`). A
    /// look is shared only among policies that agree: one that turned them off never has their
    /// text read for it, one that wants them never gets a look without them.
    pub statements: bool,
}

impl Want {
    /// A look of its own, begun after it asked and waited for (a policy with poolers in front
    /// reads their consoles at the same time as the look).
    pub fn own(url: String) -> Self {
        Self {
            url,
            after: None,
            not_before: None,
            statements: true,
        }
    }
}

/// What a policy's cycle gets.
#[derive(Debug)]
pub enum Looked {
    Taken(Arc<Snapshot>),
    Failed(DatabaseError),
    /// A look is in flight and nothing usable is known yet: come back shortly.
    Pending,
}

impl<E: Engine + Send + 'static> Server<E> {
    pub fn new(url: &str, engine: E) -> Self {
        Self {
            connection: Arc::new(AsyncMutex::new(Connection {
                url: url.to_owned(),
                engine,
            })),
            last: Arc::new(Mutex::new(None)),
            looks: LookCounters::default(),
        }
    }

    /// Counts its looks in `looks` (shared with the other servers and the metrics).
    pub fn counting_looks(self, looks: LookCounters) -> Self {
        Self { looks, ..self }
    }

    /// A look for `want`: a recent one, or a new one (waited for [`PATIENCE`] at most), or
    /// while another is in flight the last one, its failure or [`Looked::Pending`].
    pub async fn look<C: Connector<Engine = E>>(&self, want: &Want, connector: &C) -> Looked {
        let Some(not_before) = want.not_before else {
            let connection = self.connection.clone().lock_owned().await;
            return self.take_new(connection, want, connector).await;
        };
        if let Some(recent) = self.recent(want, not_before) {
            return recent;
        }
        let Ok(connection) = self.connection.clone().try_lock_owned() else {
            return self.meanwhile(want, not_before);
        };
        // A look may have ended while this one asked for the lock.
        if let Some(recent) = self.recent(want, not_before) {
            return recent;
        }
        let look = tokio::spawn(self.take_new(connection, want, connector));
        match tokio::time::timeout(PATIENCE, look).await {
            Ok(Ok(looked)) => looked,
            // Still looking (or the task was lost): the cycle comes back for the result.
            Ok(Err(_)) | Err(_) => Looked::Pending,
        }
    }

    /// Takes a look over `connection` and keeps it as the last one (a task of its own).
    fn take_new<C: Connector<Engine = E>>(
        &self,
        mut connection: tokio::sync::OwnedMutexGuard<Connection<E>>,
        want: &Want,
        connector: &C,
    ) -> impl Future<Output = Looked> + Send + 'static {
        if !connection.engine.is_connected()
            && connection.url != want.url
            && let Ok(engine) = connector.engine_for(&want.url)
        {
            *connection = Connection {
                url: want.url.clone(),
                engine,
            };
        }
        let last = self.last.clone();
        let looks = self.looks.clone();
        let statements = want.statements;
        async move {
            connection.engine.read_statements(statements);
            let began = Instant::now();
            let result = connection.engine.observe().await.map(Arc::new);
            match &result {
                Ok(_) => looks.answered.inc(),
                Err(_) => looks.failed.inc(),
            };
            let looked = match &result {
                Ok(snapshot) => Looked::Taken(snapshot.clone()),
                Err(e) => Looked::Failed(e.clone()),
            };
            *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Last {
                began,
                statements,
                result,
            });
            looked
        }
    }

    /// Terminates over the server's connection (after any look in flight on it).
    pub async fn terminate(
        &self,
        sessions: &[SessionIdentity],
    ) -> Result<Vec<Verdict>, DatabaseError> {
        self.connection
            .lock()
            .await
            .engine
            .terminate(sessions)
            .await
    }

    /// Whether the monitoring connection is open (one in use right now is).
    pub fn is_connected(&self) -> bool {
        self.connection
            .try_lock()
            .map_or(true, |c| c.engine.is_connected())
    }

    /// The last look, if it succeeded, began no earlier than `not_before` and is newer than the
    /// policy's previous one. A failure is not kept for later: the next policy tries again (one
    /// at a time, see [`Server::meanwhile`]), so that a server that answers again, or a fixed
    /// Secret, is seen at once.
    fn recent(&self, want: &Want, not_before: Instant) -> Option<Looked> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.as_ref()? {
            Last {
                began,
                statements,
                result: Ok(snapshot),
            } if *began >= not_before
                && *statements == want.statements
                && newer(snapshot, want.after) =>
            {
                Some(Looked::Taken(snapshot.clone()))
            }
            _ => None,
        }
    }

    /// While another look is in flight: the last failure (the server is being tried again), or
    /// a look recent enough (one that ended while this cycle asked), or nothing yet.
    fn meanwhile(&self, want: &Want, not_before: Instant) -> Looked {
        if let Some(recent) = self.recent(want, not_before) {
            return recent;
        }
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.as_ref().map(|l| &l.result) {
            Some(Err(e)) => Looked::Failed(e.clone()),
            _ => Looked::Pending,
        }
    }
}

fn newer(snapshot: &Snapshot, after: Option<Timestamp>) -> bool {
    after.is_none_or(|after| snapshot.observed_at > after)
}

/// One policy's cycle on its server, as the [`Engine`] the cycle runs on: its look is the
/// server's shared look, its terminations go over the server's connection.
pub struct PolicyEngine<'a, C: Connector> {
    pub server: Arc<Server<C::Engine>>,
    pub connector: &'a C,
    pub want: Want,
    /// Set when the look was [`Looked::Pending`]: the cycle's error is not the database's.
    pub pending: bool,
}

impl<C: Connector> Engine for PolicyEngine<'_, C> {
    async fn observe(&mut self) -> Result<Snapshot, DatabaseError> {
        match self.server.look(&self.want, self.connector).await {
            Looked::Taken(snapshot) => Ok(Snapshot::clone(&snapshot)),
            Looked::Failed(e) => Err(e),
            Looked::Pending => {
                self.pending = true;
                Err(DatabaseError::Query(
                    "the look at this server is still in flight".into(),
                ))
            }
        }
    }

    async fn terminate(
        &mut self,
        sessions: &[SessionIdentity],
    ) -> Result<Vec<Verdict>, DatabaseError> {
        self.server.terminate(sessions).await
    }

    fn is_connected(&self) -> bool {
        self.server.is_connected()
    }

    fn read_statements(&mut self, read: bool) {
        self.want.statements = read;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Semaphore;

    use super::*;
    use crate::database::{LastStatements, MonitorRole, ServerFacts};

    const ORDERS: &str = "postgres://m:p@db-a:5432/orders";
    const BILLING: &str = "postgres://m:p@db-a:5432/billing";

    /// A server that answers each look with the next second of its clock, or fails; a look
    /// waits for a permit of `gate` when it is given one.
    #[derive(Clone, Default)]
    struct Script {
        looks: Arc<AtomicUsize>,
        failing: Arc<Mutex<bool>>,
        gate: Option<Arc<Semaphore>>,
        /// The URLs engines were made for.
        made_for: Arc<Mutex<Vec<String>>>,
    }

    struct Scripted {
        script: Script,
        connected: bool,
        statements: bool,
    }

    impl Engine for Scripted {
        async fn observe(&mut self) -> Result<Snapshot, DatabaseError> {
            if let Some(gate) = &self.script.gate {
                gate.acquire().await.unwrap().forget();
            }
            let n = self.script.looks.fetch_add(1, Ordering::SeqCst) + 1;
            self.connected = !*self.script.failing.lock().unwrap();
            if !self.connected {
                return Err(DatabaseError::Unreachable {
                    target: "db-a:5432".into(),
                    detail: format!("look {n} timed out"),
                });
            }
            Ok(Snapshot {
                observed_at: Timestamp::from_second(1_700_000_000 + n as i64).unwrap(),
                own_pid: 1,
                server: ServerFacts::default(),
                monitor: MonitorRole::default(),
                sessions: Vec::new(),
                sessions_opened_total: None,
                churn: None,
                application_names_known: true,
                last_statements: if self.statements {
                    LastStatements::Read
                } else {
                    LastStatements::NotRead
                },
            })
        }
        async fn terminate(
            &mut self,
            _: &[SessionIdentity],
        ) -> Result<Vec<Verdict>, DatabaseError> {
            Ok(Vec::new())
        }
        fn is_connected(&self) -> bool {
            self.connected
        }
        fn read_statements(&mut self, read: bool) {
            self.statements = read;
        }
    }

    impl Script {
        fn gated() -> (Self, Arc<Semaphore>) {
            let gate = Arc::new(Semaphore::new(0));
            let script = Self {
                gate: Some(gate.clone()),
                ..Self::default()
            };
            (script, gate)
        }
        fn looks(&self) -> usize {
            self.looks.load(Ordering::SeqCst)
        }
        fn connector(&self) -> impl Connector<Engine = Scripted> + use<> {
            let script = self.clone();
            move |url: &str| {
                script.made_for.lock().unwrap().push(url.to_owned());
                Ok(Scripted {
                    script: script.clone(),
                    connected: false,
                    statements: true,
                })
            }
        }
        fn server(&self) -> Arc<Server<Scripted>> {
            let engine = self.connector().engine_for(ORDERS).unwrap();
            Arc::new(Server::new(ORDERS, engine))
        }
    }

    /// A cycle first tried now, with a window of 3 s, after a look taken at `after`.
    fn shared(after: Option<Timestamp>) -> Want {
        Want {
            url: ORDERS.into(),
            after,
            not_before: Some(Instant::now() - Duration::from_secs(3)),
            statements: true,
        }
    }

    /// A cycle that takes no look begun before now.
    fn from_now(after: Option<Timestamp>) -> Want {
        Want {
            not_before: Some(Instant::now()),
            ..shared(after)
        }
    }

    fn taken(looked: Looked) -> Arc<Snapshot> {
        match looked {
            Looked::Taken(snapshot) => snapshot,
            other => panic!("not a look: {other:?}"),
        }
    }

    /// Asks, and insists on an answer within a second: nothing here waits for a look in flight.
    async fn at_once(
        server: &Server<Scripted>,
        want: Want,
        connector: &impl Connector<Engine = Scripted>,
    ) -> Looked {
        tokio::time::timeout(Duration::from_secs(1), server.look(&want, connector))
            .await
            .expect("an answer at once")
    }

    #[tokio::test]
    async fn policies_within_the_window_share_one_look() {
        let script = Script::default();
        let (server, connector) = (script.server(), script.connector());
        let first = taken(server.look(&shared(None), &connector).await);
        let second = taken(server.look(&shared(None), &connector).await);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(script.looks(), 1);
        // A policy whose previous cycle decided on that very look takes a new one.
        let newer = taken(
            server
                .look(&shared(Some(first.observed_at)), &connector)
                .await,
        );
        assert!(newer.observed_at > first.observed_at);
        assert_eq!(script.looks(), 2);
        // Nor is a look shared that began before the cycle's window.
        taken(server.look(&from_now(None), &connector).await);
        assert_eq!(script.looks(), 3);
        // A policy with poolers in front always looks for itself.
        taken(server.look(&Want::own(ORDERS.into()), &connector).await);
        assert_eq!(script.looks(), 4);
        // The metric counts the looks taken, not the policies that took them.
        assert_eq!(server.looks.answered.get(), 4);
        assert_eq!(server.looks.failed.get(), 0);
    }

    #[tokio::test]
    async fn a_look_is_shared_only_among_policies_that_read_the_same_statements() {
        let script = Script::default();
        let (server, connector) = (script.server(), script.connector());
        let with = taken(server.look(&shared(None), &connector).await);
        assert_eq!(with.last_statements, LastStatements::Read);
        let off = Want {
            statements: false,
            ..shared(None)
        };
        // A policy that turned them off has a look of its own taken without them.
        let without = taken(server.look(&off, &connector).await);
        assert_eq!(without.last_statements, LastStatements::NotRead);
        assert_eq!(script.looks(), 2);
        // The next policy that wants them takes a new look with them, then it is shared again.
        let again = taken(server.look(&shared(None), &connector).await);
        assert_eq!(again.last_statements, LastStatements::Read);
        assert!(Arc::ptr_eq(
            &again,
            &taken(server.look(&shared(None), &connector).await)
        ));
        assert_eq!(script.looks(), 3);
    }

    #[tokio::test]
    async fn while_a_look_is_in_flight_the_others_do_not_wait_for_it() {
        let (script, gate) = Script::gated();
        let (server, connector) = (script.server(), script.connector());
        let looking = tokio::spawn({
            let (server, connector) = (server.clone(), script.connector());
            async move { taken(server.look(&shared(None), &connector).await) }
        });
        tokio::task::yield_now().await;
        // Nothing known yet: come back shortly.
        assert!(matches!(
            at_once(&server, shared(None), &connector).await,
            Looked::Pending
        ));
        gate.add_permits(1);
        let first = looking.await.unwrap();
        let first_at = first.observed_at;
        // Once it is done, it is theirs.
        assert!(Arc::ptr_eq(
            &taken(at_once(&server, shared(None), &connector).await),
            &first
        ));

        // A cycle whose window the last look misses, while the next one is in flight: back
        // shortly, then it takes the new look.
        let want = from_now(Some(first_at));
        let refreshing = tokio::spawn({
            let (server, connector) = (server.clone(), script.connector());
            async move { server.look(&from_now(Some(first_at)), &connector).await }
        });
        tokio::task::yield_now().await;
        assert!(matches!(
            at_once(&server, want.clone(), &connector).await,
            Looked::Pending
        ));
        gate.add_permits(1);
        let second = taken(refreshing.await.unwrap());
        assert!(Arc::ptr_eq(
            &taken(at_once(&server, want, &connector).await),
            &second
        ));
        assert_eq!(script.looks(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_look_that_takes_longer_than_the_patience_is_come_back_for() {
        let (script, gate) = Script::gated();
        let (server, connector) = (script.server(), script.connector());
        let want = shared(None);
        // The look outlasts the cycle's patience: the cycle comes back, the look goes on.
        assert!(matches!(
            server.look(&want, &connector).await,
            Looked::Pending
        ));
        gate.add_permits(1);
        tokio::task::yield_now().await;
        let mut answered = server.look(&want, &connector).await;
        while matches!(answered, Looked::Pending) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            answered = server.look(&want, &connector).await;
        }
        taken(answered);
        assert_eq!(script.looks(), 1);
    }

    #[tokio::test]
    async fn a_failing_server_is_tried_by_one_policy_at_a_time() {
        let (script, gate) = Script::gated();
        *script.failing.lock().unwrap() = true;
        let (server, connector) = (script.server(), script.connector());
        gate.add_permits(1);
        assert!(matches!(
            server.look(&shared(None), &connector).await,
            Looked::Failed(DatabaseError::Unreachable { .. })
        ));
        assert_eq!(script.looks(), 1);
        // While it is tried again (a login that runs out its timeout), the others are told the
        // last failure at once instead of waiting for it, or trying too.
        let trying = tokio::spawn({
            let (server, connector) = (server.clone(), script.connector());
            async move { server.look(&shared(None), &connector).await }
        });
        tokio::task::yield_now().await;
        for _ in 0..3 {
            let told = at_once(&server, shared(None), &connector).await;
            assert!(matches!(told, Looked::Failed(_)));
        }
        *script.failing.lock().unwrap() = false;
        gate.add_permits(1);
        taken(trying.await.unwrap());
        assert_eq!(script.looks(), 2);
        // A failure is not kept for later: with no look in flight, the next policy asks.
        *script.failing.lock().unwrap() = true;
        gate.add_permits(2);
        let want = Want::own(ORDERS.into());
        assert!(matches!(
            server.look(&want, &connector).await,
            Looked::Failed(_)
        ));
        assert!(matches!(
            server.look(&shared(None), &connector).await,
            Looked::Failed(_)
        ));
        assert_eq!(script.looks(), 4);
    }

    #[tokio::test]
    async fn a_closed_connection_is_opened_with_the_url_of_the_policy_that_asks() {
        let script = Script::default();
        *script.failing.lock().unwrap() = true;
        let (server, connector) = (script.server(), script.connector());
        let billing = Want::own(BILLING.into());
        assert!(matches!(
            server.look(&billing, &connector).await,
            Looked::Failed(_)
        ));
        assert_eq!(*script.made_for.lock().unwrap(), [ORDERS, BILLING]);
        // Open, it stays with the URL it logged in with.
        *script.failing.lock().unwrap() = false;
        taken(server.look(&billing, &connector).await);
        taken(server.look(&Want::own(ORDERS.into()), &connector).await);
        assert_eq!(*script.made_for.lock().unwrap(), [ORDERS, BILLING]);
    }
}
