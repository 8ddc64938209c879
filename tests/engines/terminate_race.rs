//! The termination race, against the real PostgreSQL and the real `poolwarden run`: hundreds of
//! sessions flip between idle spells just around the timeout and short statements, poolwarden
//! ends the ones past the timeout, and the server log tells whether any of them was ended in the
//! middle of a statement. None may be: each session is re-read immediately before its own signal.
//!
//! The sessions and poolwarden compete for the same CPUs as the server; nothing here depends on
//! timing beyond the workload's own shape, and the run lasts until enough sessions were ended.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use poolwarden_sandbox::{AdminTerminations, FlippingSpec, Sandbox, SandboxOptions};

/// At least 200 sessions, each idle for 0.5–1.5 × the timeout, then busy for 0–20 ms.
const SESSIONS: usize = 250;
const POLICY: &str = "\
mode: Enforce
scope: {users: [app]}
idle: {idleTimeout: 1000ms, maxTerminationsPerCycle: 10000}
";
/// Enough terminations for a race of 1% (today's one-read-per-cycle check) to show ten times
/// over, and one of 0.1% once.
const TERMINATIONS: usize = 1_000;
/// A generous bound on a loaded machine; about 40 s on a quiet one.
const PATIENCE: Duration = Duration::from_secs(300);

/// `poolwarden run`, interrupted (Ctrl-C) when dropped.
struct Run(Child);

impl Run {
    fn start(sb: &Sandbox) -> Run {
        let policy = sb.dir().join("race-policy.yaml");
        std::fs::write(&policy, POLICY).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_poolwarden"))
            .args(["run", "--database-url", &monitor_url(sb), "--policy"])
            .arg(&policy)
            .args(["--interval", "1s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("poolwarden run starts");
        Run(child)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Proves the detector can fail: a backend ended while it sleeps in a statement is seen as
/// ended mid-statement, and an idle one is not.
async fn the_log_tells_a_kill_mid_statement(sb: &Sandbox) -> u64 {
    let from = sb.log_len().unwrap();
    let busy = open(sb, "deliberate", 31).await;
    let idle = open(sb, "deliberate", 32).await;
    busy.start_active(60.0);
    sb.wait_for_state(busy.pid(), "active", Duration::from_secs(10))
        .await
        .unwrap();
    let admin = sb.admin().await.unwrap();
    for pid in [busy.pid(), idle.pid()] {
        admin
            .execute(
                "SELECT pg_terminate_backend($1::int4)",
                &[&i32::try_from(pid).unwrap()],
            )
            .await
            .unwrap();
        assert!(gone(sb, pid).await, "backend {pid} did not exit");
    }
    // The backends log as they exit; both have exited, so both reports are in.
    let (seen, next) = sb.admin_terminations_since(from).unwrap();
    assert_eq!(seen.total, 2, "{seen:?}");
    assert_eq!(
        seen.mid_statement,
        vec!["SELECT pg_sleep(60)".to_owned()],
        "the busy one, and only it, was ended mid-statement"
    );
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_is_ended_in_the_middle_of_a_statement() {
    let sb = sandbox_with(SandboxOptions {
        max_connections: SESSIONS as u32 + 30,
        ..SandboxOptions::default()
    })
    .await;
    let mut from = the_log_tells_a_kill_mid_statement(&sb).await;

    let flipping = sb
        .start_flipping(&FlippingSpec {
            sessions: SESSIONS,
            user: "app".into(),
            database: APP_DB.into(),
            application_name: "flipper".into(),
            idle: (Duration::from_millis(500), Duration::from_millis(1500)),
            busy: (Duration::ZERO, Duration::from_millis(20)),
        })
        .await
        .unwrap();
    let run = Run::start(&sb);
    let began = Instant::now();
    let mut seen = AdminTerminations::default();
    while seen.total < TERMINATIONS {
        assert!(
            began.elapsed() < PATIENCE,
            "only {} sessions ended in {PATIENCE:?} ({:?})",
            seen.total,
            flipping.counts()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (later, next) = sb.admin_terminations_since(from).unwrap();
        seen.add(later);
        from = next;
    }
    drop(run);
    let counts = flipping.stop().await;
    // Reports of backends that were still exiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (later, _) = sb.admin_terminations_since(from).unwrap();
    seen.add(later);

    eprintln!(
        "{} sessions ended in {:.0} s, {} of them mid-statement; the sessions ran {} statements",
        seen.total,
        began.elapsed().as_secs_f64(),
        seen.mid_statement.len(),
        counts.statements
    );
    assert!(counts.statements > 0 && counts.ended > 0, "{counts:?}");
    assert!(
        seen.mid_statement.is_empty(),
        "{} of {} sessions ended in the middle of a statement: {:?}",
        seen.mid_statement.len(),
        seen.total,
        seen.mid_statement
    );
}
