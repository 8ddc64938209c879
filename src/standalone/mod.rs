//! `poolwarden check` and `poolwarden run`: the same cycle against a database URL and a policy
//! file, with no cluster. Attribution is by `application_name` and client address only; behind a
//! PgBouncer given with `--pooler`, by the address of the pooler's client that holds each server
//! session (see [`crate::decide::pooler`]).

mod audit_log;
mod policy_file;

pub use audit_log::{AuditLogError, AuditTrail};
pub use policy_file::{PolicyFile, PolicyFileError, load};

use std::io::Write;
use std::time::Duration;

use crate::api::{Mode, count, human};
use crate::cycle::{Cycle, Pass};
use crate::database::ConnectOptions;
use crate::database::pgbouncer::{PoolerConsole, PoolerError};
use crate::database::{AnyEngine, DatabaseError};
use crate::decide::{ClusterView, Memory, Rules};
use crate::report;
use crate::signals;
use tokio::sync::watch;

/// How to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Why a standalone command stopped.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error(transparent)]
    Policy(#[from] PolicyFileError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    AuditLog(#[from] AuditLogError),
    #[error("--pooler {name}: {source}")]
    Pooler { name: String, source: PoolerError },
}

/// The consoles of `--pooler [NAME=]URL`, not yet connected: a console that cannot be read is a
/// warning of each cycle, never the end of the command. A URL that cannot be parsed is an error.
pub fn poolers(args: &[String]) -> Result<Vec<PoolerConsole>, StandaloneError> {
    args.iter()
        .map(|arg| {
            let (name, url) = split_name(arg);
            let console = PoolerConsole::new(url, ConnectOptions::default()).map_err(|source| {
                StandaloneError::Pooler {
                    name: name.unwrap_or("URL").to_owned(),
                    source,
                }
            })?;
            Ok(match name {
                Some(name) => console.named(name),
                None => console,
            })
        })
        .collect()
}

/// `NAME=URL` → (`NAME`, `URL`); a bare URL has no name (an `=` in its query string is not one).
fn split_name(arg: &str) -> (Option<&str>, &str) {
    match arg.split_once('=') {
        Some((name, url))
            if !name.is_empty() && !name.contains([':', '/', '?', '@']) && url.contains("://") =>
        {
            (Some(name), url)
        }
        _ => (None, arg),
    }
}

/// A policy file's `spec.poolers` name Secrets and select pods, which only the controller reads.
pub fn policy_poolers_note(policy: &PolicyFile, given: usize) -> Option<String> {
    let listed = policy.spec.poolers.len();
    let by_pods: Vec<&str> = policy
        .spec
        .poolers
        .iter()
        .filter(|p| p.pods.is_some())
        .filter_map(|p| p.name.as_deref())
        .collect();
    if given > 0 && by_pods.is_empty() {
        return None;
    }
    let mut notes = Vec::new();
    if listed > 0 && given == 0 {
        notes.push(format!(
            "the policy lists {} (spec.poolers) whose console URLs are in Secrets, which check and \
             run do not read: give each one with --pooler URL",
            count(listed, "pooler")
        ));
    }
    if !by_pods.is_empty() {
        notes.push(format!(
            "spec.poolers {} selected by pods ({}): check and run cannot find pods; give each \
             replica with --pooler NAME=postgres://…@POD_IP:PORT/pgbouncer",
            if by_pods.len() == 1 { "is" } else { "are" },
            by_pods.join(", ")
        ));
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// One look, reported. Never terminates: `check` shows what `run` would do.
/// `pooler_args` are `--pooler [NAME=]URL`s.
pub async fn check(
    url: &str,
    pooler_args: &[String],
    policy: &PolicyFile,
    output: Output,
    out: &mut impl Write,
) -> Result<Cycle, StandaloneError> {
    let mut rules = policy.rules.clone();
    let policy_mode = rules.mode;
    rules.mode = Mode::DryRun;
    let mut consoles = poolers(pooler_args)?;
    let mut engine = AnyEngine::connect(url, ConnectOptions::default()).await?;
    let (cluster, memory) = (ClusterView::default(), Memory::default());
    let mut cycle = Pass::new(&rules, &cluster, &memory)
        .behind(&mut consoles)
        .run(&mut engine)
        .await?;
    cycle
        .decision
        .warnings
        .extend(policy_poolers_note(policy, consoles.len()));
    let target = engine.display().to_owned();
    let text = match output {
        Output::Table => {
            let mut text = report::render(&target, &cycle);
            if policy_mode == Mode::Enforce && !cycle.decision.dry_run.is_empty() {
                text.push_str("The policy's mode is Enforce: `poolwarden run` terminates these.\n");
            }
            text
        }
        Output::Json => report::to_json(&target, &cycle) + "\n",
    };
    let _ = out.write_all(text.as_bytes());
    Ok(cycle)
}

/// How `run` loops.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    pub interval: Duration,
    /// Stop after this many cycles; `None` runs until Ctrl-C.
    pub cycles: Option<u64>,
    pub output: Output,
}

/// What `run` says besides its reports: on stdout with `--output table`; on stderr with
/// `--output json`, whose stdout carries the cycles' JSON documents and nothing else.
fn say(output: Output, out: &mut impl Write, line: std::fmt::Arguments<'_>) {
    let _ = match output {
        Output::Table => writeln!(out, "{line}").and_then(|()| out.flush()),
        Output::Json => writeln!(std::io::stderr(), "{line}"),
    };
}

/// How long a cycle under way may still take once `run` is told to stop (SIGTERM, Ctrl-C): it
/// finishes, so that what it ended is on record, unless its database does not answer.
pub const CYCLE_GRACE: Duration = Duration::from_secs(5);

/// Connects for `run`: a full server is waited out, with backoff (1s, 2s, 4s… up to the
/// interval), saying so each time; any other failure ends the run at once. `None` if told to
/// stop first.
async fn connect_waiting(
    url: &str,
    options: RunOptions,
    stop: &watch::Receiver<bool>,
    out: &mut (impl Write + Send),
) -> Result<Option<AnyEngine>, StandaloneError> {
    let interval = options.interval;
    let mut wait = Duration::from_secs(1).min(interval);
    let mut attempts = 0u32;
    loop {
        let connected = tokio::select! {
            connected = AnyEngine::connect(url, ConnectOptions::default()) => connected,
            () = signals::stopped(stop.clone()) => return Ok(None),
        };
        match connected {
            Ok(engine) => {
                if attempts > 0 {
                    say(
                        options.output,
                        out,
                        format_args!(
                            "connected after {}",
                            count(attempts as usize + 1, "attempt")
                        ),
                    );
                }
                return Ok(Some(engine));
            }
            Err(e @ DatabaseError::ServerFull { .. }) => {
                attempts += 1;
                say(
                    options.output,
                    out,
                    format_args!("attempt {attempts}: {e}; trying again in {}", human(wait)),
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = signals::stopped(stop.clone()) => return Ok(None),
                }
                wait = (wait * 2).min(interval.max(Duration::from_secs(1)));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Observes, decides and acts on every interval until SIGTERM or Ctrl-C (or `cycles`), saying
/// what it does; told to stop, it lets a cycle under way finish (within [`CYCLE_GRACE`]), says
/// `interrupted` and its closing summary, and returns the summary.
/// A full server at the start is waited out (see [`connect_waiting`]); any other failure to
/// connect at the start ends the run; later failures are reported and retried. Every session it
/// sets out to end goes to `audit`; a failure to write the audit file ends the run (nothing is
/// ended unrecorded twice). With `--output json`, `out` gets one JSON document a cycle and
/// nothing else (the rest goes to stderr).
/// `pooler_args` are `--pooler [NAME=]URL`s.
pub async fn run(
    url: &str,
    pooler_args: &[String],
    rules: &Rules,
    options: RunOptions,
    audit: &mut AuditTrail,
    out: &mut (impl Write + Send),
) -> Result<RunSummary, StandaloneError> {
    // Caught from the start: a signal while connecting or during a cycle is not lost.
    let stop = signals::stop_requested();
    let mut consoles = poolers(pooler_args)?;
    let mut summary = RunSummary::default();
    let Some(mut engine) = connect_waiting(url, options, &stop, out).await? else {
        say(options.output, out, format_args!("interrupted"));
        say_done(options.output, out, &summary);
        return Ok(summary);
    };
    let target = engine.display().to_owned();
    let mode = match rules.mode {
        Mode::Enforce => "Enforce: condemned sessions are terminated",
        Mode::DryRun => "DryRun: nothing is terminated",
    };
    if options.output == Output::Table {
        let _ = writeln!(
            out,
            "poolwarden run — {target}, every {}, {mode}. Ctrl-C (or SIGTERM) stops.",
            crate::api::Duration::from(options.interval)
        );
    }
    let cluster = ClusterView::default();
    let mut memory = Memory::default();
    let mut failures = 0u32;
    loop {
        let look = Pass::new(rules, &cluster, &memory)
            .behind(&mut consoles)
            .run(&mut engine);
        let result = tokio::select! {
            result = look => result,
            () = stopped_then(&stop, CYCLE_GRACE) => {
                say(
                    options.output,
                    out,
                    format_args!("interrupted: the cycle under way did not end within {}", human(CYCLE_GRACE)),
                );
                break;
            }
        };
        match result {
            Ok(cycle) => {
                failures = 0;
                summary.cycles += 1;
                summary.terminated += cycle.outcome.terminated.len() as u64;
                report_cycle(&target, &cycle, options.output, out);
                memory = cycle.next_memory();
                audit.record(&cycle)?;
            }
            Err(e) => {
                failures += 1;
                summary.failed_cycles += 1;
                if !e.is_transient() {
                    return Err(e.into());
                }
                say(
                    options.output,
                    out,
                    format_args!("cycle failed ({}), retrying: {e}", e.category()),
                );
            }
        }
        if options
            .cycles
            .is_some_and(|n| summary.cycles + u64::from(summary.failed_cycles) >= n)
        {
            break;
        }
        // Back off after failures, up to eight intervals.
        let wait = options.interval * 2u32.pow(failures.min(3));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = signals::stopped(stop.clone()) => {
                say(options.output, out, format_args!("interrupted"));
                break;
            }
        }
    }
    say_done(options.output, out, &summary);
    Ok(summary)
}

/// Resolves `grace` after `stop` turns `true`.
async fn stopped_then(stop: &watch::Receiver<bool>, grace: Duration) {
    signals::stopped(stop.clone()).await;
    tokio::time::sleep(grace).await;
}

/// The closing summary.
fn say_done(output: Output, out: &mut impl Write, summary: &RunSummary) {
    say(
        output,
        out,
        format_args!(
            "done: {}, {} terminated, {}",
            count(summary.cycles as usize, "cycle"),
            count(summary.terminated as usize, "session"),
            count(summary.failed_cycles as usize, "failed cycle")
        ),
    );
}

/// What a run did in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub cycles: u64,
    pub failed_cycles: u32,
    pub terminated: u64,
}

fn report_cycle(target: &str, cycle: &Cycle, output: Output, out: &mut impl Write) {
    if output == Output::Json {
        let line = report::to_json(target, cycle).replace('\n', "");
        let _ = writeln!(out, "{line}");
        return;
    }
    for line in report::run_lines(cycle) {
        let _ = writeln!(out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pooler_may_be_named_and_a_url_is_never_taken_for_a_name() {
        assert_eq!(
            split_name("edge=postgres://s:p@pgb:6432/pgbouncer"),
            (Some("edge"), "postgres://s:p@pgb:6432/pgbouncer")
        );
        for bare in [
            "postgres://s:p@pgb:6432/pgbouncer",
            "postgres://s:p@pgb:6432/pgbouncer?sslmode=require",
            "postgres://s:p=x@pgb:6432",
        ] {
            assert_eq!(split_name(bare), (None, bare));
        }
        let consoles = poolers(&[
            "postgres://s:p@pgb:6432".to_owned(),
            "edge=postgres://s:p@10.0.0.5:6432/pgbouncer".to_owned(),
        ])
        .unwrap();
        let names: Vec<&str> = consoles.iter().map(PoolerConsole::name).collect();
        assert_eq!(names, ["pgb:6432", "edge"]);
        let err = poolers(&["edge=postgres://s:p@pgb:6432/shop".to_owned()]).unwrap_err();
        assert!(err.to_string().starts_with("--pooler edge: "), "{err}");
    }

    #[test]
    fn a_policy_files_poolers_ask_for_the_flag_when_none_is_given() {
        let spec: crate::api::PoolPolicySpec =
            serde_saphyr::from_str("poolers: [{consoleSecretRef: {name: edge-console}}]\n")
                .unwrap();
        let policy = PolicyFile {
            name: "edge".to_owned(),
            rules: Rules::compile(&spec).unwrap(),
            spec,
        };
        let note = policy_poolers_note(&policy, 0).unwrap();
        assert!(note.contains("--pooler"), "{note}");
        assert_eq!(policy_poolers_note(&policy, 1), None);

        let spec: crate::api::PoolPolicySpec = serde_saphyr::from_str(
            "poolers: [{name: fleet, pods: {selector: {matchLabels: {app: pgbouncer}}, port: 6432, \
             consoleSecretRef: {name: stats}}}]\n",
        )
        .unwrap();
        let policy = PolicyFile {
            name: "fleet".to_owned(),
            rules: Rules::compile(&spec).unwrap(),
            spec,
        };
        // Even with --pooler given, the selector form is worth a word.
        let note = policy_poolers_note(&policy, 2).unwrap();
        assert!(note.contains("selected by pods (fleet)"), "{note}");
    }
}
