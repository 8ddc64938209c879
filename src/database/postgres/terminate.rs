//! Termination in one statement, each session checked live immediately before its own signal.
//!
//! PostgreSQL reads the shared backend-status array once per transaction and answers every
//! later question of that transaction from its copy. A statement that checked every session
//! against that copy and then signalled them one after another gave each later session the
//! whole statement's time to start a query, and be ended in the middle of it: measured under a
//! race, 1% of the sessions it ended.
//!
//! Re-reading the array before every signal (a statement per session, or
//! `pg_stat_clear_snapshot()` per row) closes that, but each read copies the status of *every*
//! backend: at 1,000 kills among 1,000 backends it costs many times the kills themselves
//! (`docs/benchmarks.md`). So the statement reads the array once, and checks each session twice:
//!
//! - against that read (taken when the statement starts, milliseconds after the snapshot): the
//!   same `backend_start`, `state` and `state_change`, an idle client backend, not our own
//!   session nor another poolwarden's;
//! - then, in the same row and immediately before its signal, against what that one backend is
//!   doing *now*: `pg_stat_get_activity(pid)` takes `wait_event` from the live process entry,
//!   not from the copy, and `Client`/`ClientRead` means the backend is blocked waiting for its
//!   client's next command. A backend that has begun a statement is not waiting there.
//!
//! What is left is one backend's check-and-signal: the few microseconds between reading its
//! wait event and `pg_terminate_backend`, whatever the number of kills. (A command already on
//! its way, sent but not yet read by the backend, is lost with the session, as it is with any
//! killer; the backend is still waiting on its socket and never starts it.)
//!
//! The evaluation order is forced. Each row reads its backend in a `LATERAL` function scan,
//! which a nested loop runs once per session, and the row is projected, its `CASE` evaluated
//! and its signal sent, before the next session is read. `pg_terminate_backend` sits in the
//! `THEN` of that `CASE`, which PostgreSQL evaluates only when its condition holds: in a `WHERE`
//! clause or a join condition a volatile call may be evaluated before, or regardless of, the
//! conditions next to it. There is no `ORDER BY`: PostgreSQL postpones volatile output columns
//! past a sort, which would read every session before signalling any; the ordinality column
//! maps the rows back instead.
//!
//! A refusal must not fail the statement (that would leave the other sessions' fates unknown),
//! so the statement applies the server's own rule first (`pg_signal_backend` in PostgreSQL):
//! only a superuser may end a superuser's session; otherwise the monitoring role needs the
//! privileges of the session's role or of `pg_signal_backend`. A session it may not end is
//! reported refused and never signalled. Should the server refuse anyway (a grant revoked
//! mid-statement), the statement fails as a whole and the next snapshot tells.

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::database::connection::APPLICATION_NAME;
use crate::database::pg_client::classify_query_error;
use crate::database::{DatabaseError, SessionIdentity, Verdict};

/// Why the server would refuse: the same words as [`crate::database::Protection`]'s cases.
const SUPERUSER_SESSION: &str = "only a superuser may end a superuser's session";
const NO_SIGNAL_PRIVILEGE: &str = "the monitoring role is not a member of pg_signal_backend \
                                   and lacks the privileges of the session's role";

const TERMINATE_VERIFIED: &str = "
WITH me AS MATERIALIZED (
    SELECT current_setting('is_superuser') = 'on' AS superuser,
           pg_has_role('pg_signal_backend', 'USAGE') AS signal_backend,
           ARRAY(SELECT oid FROM pg_roles WHERE rolsuper) AS superusers
),
judged AS (
    SELECT t.i,
           s.pid IS NOT NULL AS present,
           s.backend_start = t.backend_start AS same_session,
           (    s.backend_start = t.backend_start
            AND s.state = t.state
            AND s.state_change = t.state_change
            AND s.state IN ('idle', 'idle in transaction', 'idle in transaction (aborted)')
            AND s.backend_type = 'client backend'
            AND s.pid <> pg_backend_pid()
            AND s.application_name IS DISTINCT FROM $5
            AND s.wait_event_type = 'Client'
            AND s.wait_event = 'ClientRead') AS waiting,
           CASE WHEN s.usesysid = ANY (me.superusers) AND NOT me.superuser THEN $6
                WHEN NOT (me.signal_backend OR pg_has_role(s.usesysid, 'USAGE')) THEN $7
           END AS refusal,
           s.pid
    FROM me,
         unnest($1::int4[], $2::timestamptz[], $3::text[], $4::timestamptz[])
             WITH ORDINALITY AS t(pid, backend_start, state, state_change, i)
         LEFT JOIN LATERAL pg_stat_get_activity(t.pid) AS s ON true
)
SELECT i, present, same_session, waiting, refusal,
       CASE WHEN waiting AND refusal IS NULL THEN pg_terminate_backend(pid) END AS signalled
FROM judged";

/// Verifies and signals every session, each on its own; one verdict per session, in order.
pub async fn verified(
    client: &Client,
    sessions: &[SessionIdentity],
) -> Result<Vec<Verdict>, DatabaseError> {
    if sessions.is_empty() {
        return Ok(Vec::new());
    }
    // PostgreSQL's pids are int4: an id beyond that range cannot be one of its backends, so it
    // is asked as -1, which no backend has, and answered `Gone`.
    let pids: Vec<i32> = sessions
        .iter()
        .map(|s| i32::try_from(s.pid).unwrap_or(-1))
        .collect();
    let starts: Vec<jiff::Timestamp> = sessions.iter().map(|s| s.backend_start).collect();
    let states: Vec<&str> = sessions.iter().map(|s| s.state).collect();
    let changes: Vec<jiff::Timestamp> = sessions.iter().map(|s| s.state_change).collect();
    // `query_typed`: parse, bind and execute in one go, one round trip, one transaction.
    let rows = client
        .query_typed(
            TERMINATE_VERIFIED,
            &[
                (&pids, Type::INT4_ARRAY),
                (&starts, Type::TIMESTAMPTZ_ARRAY),
                (&states, Type::TEXT_ARRAY),
                (&changes, Type::TIMESTAMPTZ_ARRAY),
                (&APPLICATION_NAME, Type::TEXT),
                (&SUPERUSER_SESSION, Type::TEXT),
                (&NO_SIGNAL_PRIVILEGE, Type::TEXT),
            ],
        )
        .await
        .map_err(classify_query_error)?;
    let mut verdicts: Vec<Option<Verdict>> = vec![None; sessions.len()];
    for row in &rows {
        let i: i64 = row.try_get("i").map_err(classify_query_error)?;
        let answer = Answer {
            present: row.try_get("present").map_err(classify_query_error)?,
            same_session: row.try_get("same_session").map_err(classify_query_error)?,
            waiting: row.try_get("waiting").map_err(classify_query_error)?,
            refusal: row.try_get("refusal").map_err(classify_query_error)?,
            signalled: row.try_get("signalled").map_err(classify_query_error)?,
        };
        let slot = usize::try_from(i - 1)
            .ok()
            .and_then(|i| verdicts.get_mut(i))
            .ok_or_else(|| DatabaseError::Query(format!("row {i} of {}", sessions.len())))?;
        *slot = Some(answer.verdict());
    }
    verdicts
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.ok_or_else(|| {
                DatabaseError::Query(format!("no answer for session {} of the call", i + 1))
            })
        })
        .collect()
}

/// One row of [`TERMINATE_VERIFIED`].
struct Answer {
    present: bool,
    same_session: Option<bool>,
    waiting: Option<bool>,
    refusal: Option<String>,
    signalled: Option<bool>,
}

impl Answer {
    fn verdict(self) -> Verdict {
        match self {
            Answer { present: false, .. } => Verdict::Gone,
            // The pid now belongs to a newer session.
            Answer {
                same_session: Some(false),
                ..
            } => Verdict::Gone,
            Answer {
                signalled: Some(true),
                ..
            } => Verdict::Signalled,
            // The backend exited between its check and its signal (PostgreSQL warns, returns
            // false).
            Answer {
                signalled: Some(false),
                ..
            } => Verdict::Gone,
            Answer {
                waiting: Some(true),
                refusal: Some(reason),
                ..
            } => Verdict::Refused(reason),
            _ => Verdict::Changed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Answer {
        Answer {
            present: true,
            same_session: Some(true),
            waiting: Some(true),
            refusal: None,
            signalled: Some(true),
        }
    }

    #[test]
    fn each_row_reads_as_one_verdict() {
        assert_eq!(answer().verdict(), Verdict::Signalled);
        let gone = Answer {
            present: false,
            same_session: None,
            waiting: None,
            signalled: None,
            ..answer()
        };
        assert_eq!(gone.verdict(), Verdict::Gone);
        let reused = Answer {
            same_session: Some(false),
            waiting: Some(false),
            signalled: None,
            ..answer()
        };
        assert_eq!(reused.verdict(), Verdict::Gone);
        let exited = Answer {
            signalled: Some(false),
            ..answer()
        };
        assert_eq!(exited.verdict(), Verdict::Gone);
        let woke = Answer {
            waiting: Some(false),
            signalled: None,
            ..answer()
        };
        assert_eq!(woke.verdict(), Verdict::Changed);
    }

    #[test]
    fn a_refusal_counts_only_for_a_session_that_would_have_been_signalled() {
        let refused = Answer {
            refusal: Some(SUPERUSER_SESSION.into()),
            signalled: None,
            ..answer()
        };
        assert_eq!(
            refused.verdict(),
            Verdict::Refused(SUPERUSER_SESSION.into())
        );
        let woke = Answer {
            waiting: Some(false),
            refusal: Some(SUPERUSER_SESSION.into()),
            signalled: None,
            ..answer()
        };
        assert_eq!(woke.verdict(), Verdict::Changed);
    }
}
