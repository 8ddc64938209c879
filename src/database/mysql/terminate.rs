//! Ending threads one at a time, each re-verified immediately before its own `KILL CONNECTION`.
//!
//! MySQL has no conditional kill: nothing like PostgreSQL's `pg_terminate_backend` inside a
//! statement that checks the session first. So for each thread, over the monitoring connection:
//! one statement reads that thread afresh (the same row the snapshot read: id, command, the moment
//! its state began, its InnoDB transaction, its `program_name`), and only if it is still exactly
//! as judged does the next statement kill it. The window in which a thread can start a statement
//! and still be killed is that one round trip: [`Terminations::windows`] measures it per kill.
//!
//! "Exactly as judged": the same thread id (MySQL never reuses one while the server runs), still
//! `Sleep`, with or without a transaction as before and the same transaction start, and its idle
//! state begun at the same moment, to the server's resolution (`TIME_MS` on MariaDB's
//! `information_schema`, whole seconds elsewhere). A thread idle for less than twice that
//! resolution is too young to tell a statement run since the snapshot apart, and is left alone.

use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::connect::{classify_query_error, code};
use super::snapshot::Remembered;
use super::sql::Queries;
use super::thread::Thread;
use crate::database::{CLIENT_BACKEND, DatabaseError, SessionIdentity, Verdict, elapsed};

/// How far two reads of the same unchanged thread may disagree about when its state began,
/// beyond the server's resolution: the rows are timed as they are produced, so a busy server
/// skews them a little.
const SKEW: Duration = Duration::from_millis(50);

/// The fates of one call, in the order asked, and the measured windows of the kills.
#[derive(Debug, Default)]
pub struct Terminations {
    pub fates: Vec<Verdict>,
    /// For each kill: from sending the verification to the server's answer to `KILL`, an upper
    /// bound of the time in which the thread could have started a statement unseen.
    pub windows: Vec<Duration>,
}

/// Verifies and kills each of `sessions` in turn.
pub async fn verified(
    conn: &mut Conn,
    queries: &Queries,
    own_id: i64,
    may_kill_others: bool,
    memory: &mut Remembered,
    sessions: &[SessionIdentity],
) -> Result<Terminations, DatabaseError> {
    let mut done = Terminations::default();
    let tolerance = queries.resolution + SKEW;
    for identity in sessions {
        let began = Instant::now();
        let rows: Vec<mysql_async::Row> = conn
            .query(queries.verify(identity.pid))
            .await
            .map_err(classify_query_error)?;
        let Some(row) = rows.first() else {
            done.fates.push(Verdict::Gone);
            continue;
        };
        let thread = Thread::from_row(row)?;
        // Without connection attributes another poolwarden is known only by the monitoring user.
        let spared = !queries.attributes && memory.monitor_user.as_deref() == Some(&thread.user);
        if spared || !still_as_judged(&thread, identity, own_id, tolerance) {
            done.fates.push(Verdict::Changed);
            continue;
        }
        match conn
            .query_drop(format!("KILL CONNECTION {}", identity.pid))
            .await
        {
            Ok(()) => {
                done.windows.push(began.elapsed());
                done.fates.push(Verdict::Signalled);
            }
            Err(mysql_async::Error::Server(e)) if e.code == code::NO_SUCH_THREAD => {
                done.fates.push(Verdict::Gone);
            }
            Err(mysql_async::Error::Server(e)) if e.code == code::KILL_DENIED => {
                if !may_kill_others {
                    return Err(DatabaseError::PermissionDenied(format!(
                        "{} (MySQL error {}): GRANT CONNECTION ADMIN ON *.* to the monitoring \
                         user (MySQL 8: CONNECTION_ADMIN)",
                        e.message, e.code
                    )));
                }
                // The monitor may end others' threads but not this user's (MySQL 8: the user
                // holds SYSTEM_USER): say so from the next snapshot on instead of trying again.
                memory.refused_users.insert(thread.user.clone());
                done.fates.push(Verdict::Refused(e.message));
            }
            Err(e) => return Err(classify_query_error(e)),
        }
    }
    Ok(done)
}

/// Whether `thread`, read afresh, is still the one the snapshot judged.
fn still_as_judged(
    thread: &Thread,
    identity: &SessionIdentity,
    own_id: i64,
    tolerance: Duration,
) -> bool {
    let near =
        |a: jiff::Timestamp, b: jiff::Timestamp| elapsed(a, b).max(elapsed(b, a)) <= tolerance;
    let same_transaction = match (thread.xact_start(), identity.xact_start) {
        (None, None) => true,
        (Some(now), Some(then)) => near(now, then),
        _ => false,
    };
    thread.kind() == CLIENT_BACKEND
        && thread.id == identity.pid
        && thread.id != own_id
        && !thread.is_poolwarden()
        && thread.state().as_pg_str() == Some(identity.state)
        && same_transaction
        && near(thread.state_change, identity.state_change)
        // Too young to tell a statement run since the snapshot from the clock's resolution.
        && elapsed(identity.state_change, thread.now) > tolerance * 2
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(ms).unwrap()
    }

    fn idle_thread(state_change: i64, now: i64) -> Thread {
        Thread {
            id: 42,
            user: "app".into(),
            host: Some("127.0.0.12:5000".into()),
            db: Some("shop".into()),
            command: "Sleep".into(),
            state_change: at(state_change),
            thread_type: None,
            trx_started: None,
            program_name: None,
            now: at(now),
        }
    }

    fn identity(state: &'static str, state_change: i64) -> SessionIdentity {
        SessionIdentity {
            pid: 42,
            backend_start: at(0),
            state,
            state_change: at(state_change),
            xact_start: None,
        }
    }

    const TOLERANCE: Duration = Duration::from_millis(51);

    #[test]
    fn an_unchanged_idle_thread_passes() {
        let t = idle_thread(10_003, 20_000);
        assert!(still_as_judged(&t, &identity("idle", 10_000), 1, TOLERANCE));
    }

    #[test]
    fn a_thread_that_ran_a_statement_is_changed() {
        // Its idle state began again after the snapshot.
        let t = idle_thread(19_990, 20_000);
        assert!(!still_as_judged(
            &t,
            &identity("idle", 10_000),
            1,
            TOLERANCE
        ));
        let mut busy = idle_thread(10_000, 20_000);
        busy.command = "Query".into();
        assert!(!still_as_judged(
            &busy,
            &identity("idle", 10_000),
            1,
            TOLERANCE
        ));
    }

    #[test]
    fn a_new_transaction_or_none_is_changed() {
        let mut t = idle_thread(10_000, 20_000);
        t.trx_started = Some(Timestamp::from_second(9).unwrap());
        assert!(!still_as_judged(
            &t,
            &identity("idle", 10_000),
            1,
            TOLERANCE
        ));
        let mut judged = identity("idle in transaction", 10_000);
        judged.xact_start = t.xact_start();
        assert!(still_as_judged(&t, &judged, 1, TOLERANCE));
        t.trx_started = Some(Timestamp::from_second(5).unwrap());
        assert!(!still_as_judged(&t, &judged, 1, TOLERANCE));
    }

    #[test]
    fn never_its_own_thread_another_poolwarden_or_a_young_one() {
        let t = idle_thread(10_000, 20_000);
        assert!(!still_as_judged(
            &t,
            &identity("idle", 10_000),
            42,
            TOLERANCE
        ));
        let mut other = idle_thread(10_000, 20_000);
        other.program_name = Some("poolwarden".into());
        assert!(!still_as_judged(
            &other,
            &identity("idle", 10_000),
            1,
            TOLERANCE
        ));
        let young = idle_thread(10_000, 10_080);
        assert!(!still_as_judged(
            &young,
            &identity("idle", 10_000),
            1,
            TOLERANCE
        ));
    }
}
