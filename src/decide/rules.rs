//! A policy spec checked and compiled into the rules the deciding function applies.
//!
//! What the CRD schema cannot reject (a glob that does not compile, a zero timeout written into a
//! policy file) is rejected here with a message a person can act on; the controller turns it into
//! `Ready=False, reason=InvalidSpec`.

use std::time::Duration;

use crate::api::{LastStatementsMode, Mode, PoolPolicySpec, Remediation, bounds};

use super::scope::CompiledScope;

/// The policy, ready to apply.
#[derive(Clone, Debug)]
pub struct Rules {
    pub mode: Mode,
    pub scope: CompiledScope,
    pub idle_timeout: Option<Duration>,
    pub idle_in_transaction_timeout: Option<Duration>,
    pub max_transaction_age: Option<Duration>,
    pub max_terminations_per_cycle: usize,
    pub max_connections: Option<u32>,
    pub max_connections_per_pod: Option<u32>,
    pub window: Duration,
    pub detect: Detection,
    pub annotate: bool,
    pub remediation: Remediation,
    /// Read and show what sessions last ran (`leakDetection.lastStatements: Fingerprint`).
    pub last_statements: bool,
}

/// The ages and rates that make a finding: detection, apart from what `Enforce` ends.
#[derive(Clone, Debug)]
pub struct Detection {
    pub stranded_idle_age: Duration,
    pub idle_threshold: Option<u32>,
    pub idle_in_transaction_age: Duration,
    pub transaction_age: Duration,
    pub churn_per_second: f64,
    pub saturation_percent: u32,
}

/// Why a spec cannot be applied: one line per problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {}", .0.join("; "))]
pub struct InvalidSpec(pub Vec<String>);

impl Rules {
    pub fn compile(spec: &PoolPolicySpec) -> Result<Self, InvalidSpec> {
        let mut problems = Vec::new();
        let scope = CompiledScope::new(&spec.scope)
            .map_err(|e| problems.push(e))
            .ok();
        let detection = &spec.leak_detection;
        // The same limits and messages as the CRD's CEL rules, for what did not pass through the
        // API server (a policy file).
        let mut within = |bound: bounds::DurationBound, value: Option<crate::api::Duration>| {
            if let Some(Err(problem)) = value.map(|v| bound.check(v)) {
                problems.push(problem);
            }
            value.map(Into::into)
        };
        within(bounds::INTERVAL, Some(spec.interval));
        let idle_timeout = within(bounds::IDLE_TIMEOUT, spec.idle.idle_timeout);
        let idle_in_transaction_timeout = within(
            bounds::IDLE_IN_TRANSACTION_TIMEOUT,
            spec.idle.idle_in_transaction_timeout,
        );
        let max_transaction_age =
            within(bounds::MAX_TRANSACTION_AGE, spec.idle.max_transaction_age);
        within(bounds::WINDOW, Some(detection.window));
        within(bounds::STRANDED_IDLE_AGE, Some(detection.stranded_idle_age));
        within(
            bounds::IDLE_IN_TRANSACTION_AGE,
            Some(detection.idle_in_transaction_age),
        );
        within(bounds::TRANSACTION_AGE, Some(detection.transaction_age));
        if detection.idle_threshold == Some(0) {
            problems.push(
                "spec.leakDetection.idleThreshold must be at least 1 (leave it out to turn it off)"
                    .into(),
            );
        }
        if detection.new_sessions_per_second == 0 {
            problems.push("spec.leakDetection.newSessionsPerSecond must be at least 1".into());
        }
        if !(1..=100).contains(&detection.server_saturation_percent) {
            problems.push("spec.leakDetection.serverSaturationPercent must be 1 to 100".into());
        }
        if spec.idle.max_terminations_per_cycle == 0 {
            problems.push("spec.idle.maxTerminationsPerCycle must be at least 1 (use mode DryRun to never terminate)".into());
        }
        for (name, value) in [
            ("spec.budgets.maxConnections", spec.budgets.max_connections),
            (
                "spec.budgets.maxConnectionsPerPod",
                spec.budgets.max_connections_per_pod,
            ),
        ] {
            if value == Some(0) {
                problems.push(format!(
                    "{name} must be at least 1 (leave it out for no budget)"
                ));
            }
        }
        if let (Some(total), Some(per_pod)) = (
            spec.budgets.max_connections,
            spec.budgets.max_connections_per_pod,
        ) && per_pod > total
        {
            problems.push(format!(
                "spec.budgets.maxConnectionsPerPod ({per_pod}) cannot exceed spec.budgets.maxConnections ({total})"
            ));
        }
        match scope {
            Some(scope) if problems.is_empty() => Ok(Self {
                mode: spec.mode,
                scope,
                idle_timeout,
                idle_in_transaction_timeout,
                max_transaction_age,
                max_terminations_per_cycle: spec.idle.max_terminations_per_cycle as usize,
                max_connections: spec.budgets.max_connections,
                max_connections_per_pod: spec.budgets.max_connections_per_pod,
                window: detection.window.into(),
                detect: Detection {
                    stranded_idle_age: detection.stranded_idle_age.into(),
                    idle_threshold: detection.idle_threshold,
                    idle_in_transaction_age: detection.idle_in_transaction_age.into(),
                    transaction_age: detection.transaction_age.into(),
                    churn_per_second: f64::from(detection.new_sessions_per_second),
                    saturation_percent: detection.server_saturation_percent,
                },
                annotate: spec.workloads.annotate,
                remediation: spec.remediation.clone(),
                last_statements: detection.last_statements == LastStatementsMode::Fingerprint,
            }),
            _ => Err(InvalidSpec(problems)),
        }
    }
}
