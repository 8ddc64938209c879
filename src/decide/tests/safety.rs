//! Safety (DESIGN.md §4): what is never terminated, and how a spec is refused.

use super::*;

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
                state: "idle",
                state_change: ago(HOUR),
                xact_start: None,
            },
            &SessionIdentity {
                pid: 130,
                backend_start: started,
                state: "idle in transaction",
                state_change: changed,
                xact_start: None,
            },
            &SessionIdentity {
                pid: 131,
                backend_start: started,
                state: "idle in transaction (aborted)",
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
