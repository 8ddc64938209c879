//! What a finding's sessions last ran (DESIGN.md §6): grouped with counts over all of them,
//! carried by what Enforce ends, said in the annotation, and gone everywhere with
//! `leakDetection.lastStatements: Off`.

use super::*;
use crate::database::{LastStatements, Statement};
use crate::decide::findings::statements::said as statements_said;

const READ_USER: &str = "SELECT users.id, users.name FROM users WHERE users.id = ?";
const TOUCH_JOB: &str = "UPDATE jobs SET touched = now() WHERE id = ?";

impl SessionBuilder {
    fn ran(mut self, fingerprint: &str, query_id: Option<i64>) -> Self {
        self.session.last_statement = Some(Statement {
            fingerprint: fingerprint.to_owned(),
            query_id,
        });
        self
    }
}

/// Pod 1 with 60 sessions idle in a transaction for three minutes: 45 last read a user (all
/// with query_id 7), 15 touched a job (under two query_ids), and a superuser's session of the
/// same pod that read a user too.
fn pinned_pool_that_ran_statements() -> Snapshot {
    snapshot()
        .with_all((0..60).map(|i| {
            let s = session(600 + i)
                .client_addr(&pod_ip(1))
                .idle_in_transaction(3 * MIN);
            if i < 45 {
                s.ran(READ_USER, Some(7))
            } else {
                s.ran(TOUCH_JOB, Some(100 + i % 2))
            }
        }))
        .with(
            session(700)
                .client_addr(&pod_ip(1))
                .superuser()
                .idle_in_transaction(3 * MIN)
                .ran(READ_USER, Some(7)),
        )
        .build()
}

const ENDS_AT_ONCE: &str = "
mode: Enforce
idle: {idleInTransactionTimeout: 1m, maxTerminationsPerCycle: 100}
";

#[test]
fn a_finding_groups_what_all_its_sessions_last_ran_most_common_first() {
    let d = decide_with(
        &pinned_pool_that_ran_statements(),
        &rules("{}"),
        &cluster(),
        &Memory::default(),
    );
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.shown.sessions, 61);
    assert_eq!(f.shown.pids.len(), 50, "a handful named");
    assert_eq!(
        f.shown.last_statements,
        [
            StatementGroup {
                fingerprint: READ_USER.to_owned(),
                query_id: Some(7),
                sessions: 46,
            },
            // Two query_ids for one fingerprint: none is shown.
            StatementGroup {
                fingerprint: TOUCH_JOB.to_owned(),
                query_id: None,
                sessions: 15,
            },
        ]
    );
    assert_eq!(
        statements_said(&f.shown.last_statements, true, 120).as_deref(),
        Some(
            "last statements `SELECT users.id, users.name FROM users WHERE users.id = ?` (46), \
             `UPDATE jobs SET touched = now() WHERE id = ?` (15)"
        )
    );
}

#[test]
fn what_enforce_ends_carries_what_the_ended_sessions_last_ran() {
    let d = decide_with(
        &pinned_pool_that_ran_statements(),
        &rules(ENDS_AT_ONCE),
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    assert_eq!(d.terminate.len(), 60);
    let touched: Vec<&Termination> = d
        .terminate
        .iter()
        .filter(|t| t.identity.pid >= 645)
        .collect();
    assert_eq!(touched.len(), 15);
    for t in &touched {
        let statement = t.last_statement.as_ref().expect("a statement");
        assert_eq!(statement.fingerprint, TOUCH_JOB);
    }
    // The superuser's session is protected, and says what it ran all the same.
    assert_eq!(d.protected.len(), 1);
    assert_eq!(
        d.protected[0].last_statement.as_ref().map(|s| s.query_id),
        Some(Some(7))
    );
    // The detector's finding and the one made of what was ended are one: every session once.
    let f = the_finding(&d, FindingKind::IdleInTransaction);
    assert_eq!(f.ended, 60);
    let counted: u32 = f.shown.last_statements.iter().map(|g| g.sessions).sum();
    assert_eq!(counted, 61, "{:#?}", f.shown.last_statements);
    // The annotation says the most common statement, without a count that would move.
    let detail = d.annotations[0].annotations[LEAK_DETAIL]
        .as_deref()
        .unwrap();
    assert!(
        detail.contains(&format!("; last statement `{READ_USER}`; likely cause: ")),
        "{detail}"
    );
}

#[test]
fn off_removes_the_statements_from_everything_the_decision_says() {
    let on = decide_with(
        &pinned_pool_that_ran_statements(),
        &rules(ENDS_AT_ONCE),
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    let off = decide_with(
        &pinned_pool_that_ran_statements(),
        &rules(&format!(
            "{ENDS_AT_ONCE}leakDetection: {{lastStatements: \"Off\"}}\n"
        )),
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    let said = |d: &Decision| serde_json::to_string(d).unwrap();
    for statement in [READ_USER, TOUCH_JOB] {
        assert!(said(&on).contains(statement), "the test can see it");
        assert!(!said(&off).contains(statement), "{}", said(&off));
    }
    assert!(!said(&off).contains("lastStatement"), "{}", said(&off));
    assert!(!said(&off).contains("queryId"), "{}", said(&off));
    assert_eq!(off.terminate.len(), on.terminate.len());
    let detail = off.annotations[0].annotations[LEAK_DETAIL]
        .as_deref()
        .unwrap();
    assert!(!detail.contains("last statement `"), "{detail}");
}

#[test]
fn turned_off_a_confirmed_finding_still_clearing_says_nothing_of_what_was_seen_before() {
    let on = rules(ENDS_AT_ONCE);
    let d1 = decide_with(
        &pinned_pool_that_ran_statements(),
        &on,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    let seen = the_finding(&d1, FindingKind::IdleInTransaction);
    assert!(seen.confirmed && !seen.shown.last_statements.is_empty());
    let annotated = annotated_cluster(&applied(&d1.annotations[0]));
    // The sessions are gone; the policy now says Off.
    let off = rules(&format!(
        "{ENDS_AT_ONCE}leakDetection: {{lastStatements: \"Off\"}}\n"
    ));
    let d2 = decide_with(
        &snapshot().at(later(30)).build(),
        &off,
        &annotated,
        &d1.memory,
    );
    let clearing = the_finding(&d2, FindingKind::IdleInTransaction);
    assert!(clearing.confirmed && !clearing.present, "{clearing:#?}");
    assert!(clearing.shown.last_statements.is_empty(), "{clearing:#?}");
    // The annotation loses the statement at once.
    let detail = d2.annotations[0].annotations[LEAK_DETAIL]
        .as_deref()
        .unwrap();
    assert!(!detail.contains("last statement `"), "{detail}");
}

#[test]
fn a_server_that_does_not_show_statements_is_said_plainly_unless_they_are_off() {
    let why = "MariaDB does not show what its threads last ran: performance_schema is off";
    let mut unseen = pinned_pool_that_ran_statements();
    unseen.last_statements = LastStatements::Unavailable(why.to_owned());
    let d = decide_standalone(&unseen, &rules("{}"));
    assert!(
        d.warnings.iter().any(|w| w.starts_with(why)
            && w.contains("findings cannot say what their sessions last ran")),
        "{:#?}",
        d.warnings
    );
    let off = decide_standalone(&unseen, &rules("leakDetection: {lastStatements: \"Off\"}"));
    assert!(
        off.warnings.iter().all(|w| !w.contains("last ran")),
        "{:#?}",
        off.warnings
    );
}

#[test]
fn churn_names_what_its_short_lived_sessions_ran() {
    let (_, d) = churn_between(
        5_000,
        6_000,
        &[
            nullpool(501).ran("SELECT * FROM items WHERE sku = ?", None),
            nullpool(502).ran("SELECT * FROM items WHERE sku = ?", None),
            // The snapshot shows a session with the same pid (a pool's, which ran nothing):
            // the short-lived one's statement counts.
            nullpool(510).ran("SELECT * FROM items WHERE sku = ?", None),
        ],
    );
    let f = the_finding(&d, FindingKind::ConnectionChurn);
    assert_eq!(
        f.shown.last_statements,
        [StatementGroup {
            fingerprint: "SELECT * FROM items WHERE sku = ?".to_owned(),
            query_id: None,
            sessions: 3,
        }]
    );
}

#[test]
fn a_long_statement_is_shortened_in_one_line_places_only() {
    let long = format!("SELECT {} FROM t", vec!["a_column"; 30].join(", "));
    let groups = [StatementGroup {
        fingerprint: long.clone(),
        query_id: None,
        sessions: 3,
    }];
    let line = statements_said(&groups, true, 40).unwrap();
    assert_eq!(
        line,
        "last statement `SELECT a_column, a_column, a_column, a_…` (3)"
    );
    assert_eq!(groups[0].fingerprint, long);
    assert_eq!(statements_said(&[], true, 40), None);
}
