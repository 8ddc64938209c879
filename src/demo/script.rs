//! The story both demos tell, written once: the leaks age, the policy is shown, `check` names
//! them, an `Enforce` `run` of three cycles ends them, and the closing table shows who is still
//! connected. Each engine's demo brings its server, its sessions and what keeps them looking
//! real (a [`Stage`]).

use std::io::Write;
use std::time::Duration;

use super::{DemoError, Survivors};
use crate::standalone::{self, AuditTrail, Output, RunOptions, StandaloneError};

/// What an engine's demo brings to the script.
pub(super) trait Stage {
    /// Keeps busy the sessions a healthy application uses every second, for ever (the script
    /// stops it).
    async fn keep_busy(&self);

    /// Opens and closes sessions at a high rate while poolwarden looks, for ever; none by
    /// default.
    async fn churn(&self) {
        std::future::pending::<()>().await
    }

    /// What became of each group of sessions, counted after the run.
    async fn survivors(&self) -> Result<Vec<Survivors>, DemoError>;
}

/// What an engine's demo says in the script.
pub(super) struct Script<'a> {
    /// Names the policy's temporary file.
    pub engine: &'a str,
    pub policy: &'a str,
    /// The line before the policy.
    pub policy_heading: &'a str,
    pub url: String,
    /// `--pooler` arguments.
    pub poolers: Vec<String>,
    /// What a leaking group whose sessions were all ended is told.
    pub all_ended: &'a str,
    /// The last line, when every leak was ended and every healthy session spared.
    pub success: &'a str,
}

/// Plays the script on `stage`, narrating to `out`.
pub(super) async fn play(
    stage: &impl Stage,
    script: Script<'_>,
    out: &mut (impl Write + Send),
) -> Result<(), DemoError> {
    writeln!(out, "\nLetting the leaks age for 7 seconds...")?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(7)) => {}
        _ = stage.keep_busy() => {}
    }

    let policy_path = std::env::temp_dir().join(format!(
        "poolwarden-demo-{}-{}.yaml",
        script.engine,
        std::process::id()
    ));
    std::fs::write(&policy_path, script.policy)?;
    let policy = standalone::load(&policy_path);
    let _ = std::fs::remove_file(&policy_path);
    let policy = policy.map_err(StandaloneError::from)?;
    writeln!(out, "\n{}\n{}", script.policy_heading, script.policy)?;

    let url = &script.url;
    let pooler_flags: String = script
        .poolers
        .iter()
        .map(|p| format!(" --pooler {p}"))
        .collect();
    writeln!(
        out,
        "$ poolwarden check --database-url {url}{pooler_flags} --policy orders-db.yaml\n"
    )?;
    tokio::select! {
        result = standalone::check(url, &script.poolers, &policy, Output::Table, out) => { result?; }
        _ = stage.keep_busy() => {}
        _ = stage.churn() => {}
    }

    writeln!(
        out,
        "$ poolwarden run --database-url {url}{pooler_flags} --policy orders-db.yaml --cycles 3\n"
    )?;
    let options = RunOptions {
        interval: Duration::from_secs(2),
        cycles: Some(3),
        output: Output::Table,
    };
    let mut audit = AuditTrail::log_only("demo");
    tokio::select! {
        result = standalone::run(url, &script.poolers, &policy.rules, options, &mut audit, out) => { result?; }
        _ = stage.keep_busy() => {}
        _ = stage.churn() => {}
    }

    report_survivors(
        out,
        &stage.survivors().await?,
        script.all_ended,
        script.success,
    )
}

/// "Who is still connected": each group's fate, then `success` when every leaking group was
/// ended whole (`all_ended`) and every healthy one left untouched, else a warning.
fn report_survivors(
    out: &mut impl Write,
    survivors: &[Survivors],
    all_ended: &str,
    success: &str,
) -> Result<(), DemoError> {
    writeln!(out, "\nWho is still connected:")?;
    let mut as_expected = true;
    for group in survivors {
        let verdict = match (group.leaking, group.alive) {
            (true, 0) => all_ended.to_owned(),
            (false, a) if a == group.total => "untouched".to_owned(),
            (_, a) => {
                as_expected = false;
                format!("{a} of {} still open (unexpected!)", group.total)
            }
        };
        writeln!(out, "  {:<62} {verdict}", group.label)?;
    }
    writeln!(
        out,
        "\n{}",
        if as_expected {
            success
        } else {
            "Something unexpected happened: see above."
        }
    )?;
    Ok(())
}
