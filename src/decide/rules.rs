//! A policy spec checked and compiled into the rules the deciding function applies.
//!
//! What the CRD schema cannot reject (a glob that does not compile, a zero timeout written into a
//! policy file) is rejected here with a message a person can act on; the controller turns it into
//! `Ready=False, reason=InvalidSpec`.

use std::time::Duration;

use crate::api::{Mode, PoolPolicySpec};

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
        let positive = |name: &str, d: Option<crate::api::Duration>, problems: &mut Vec<String>| {
            if d.is_some_and(|d| d.is_zero()) {
                problems.push(format!(
                    "{name} must be greater than 0 (leave it out to never end such sessions)"
                ));
            }
            d.map(Into::into)
        };
        let idle_timeout = positive(
            "spec.idle.idleTimeout",
            spec.idle.idle_timeout,
            &mut problems,
        );
        let idle_in_transaction_timeout = positive(
            "spec.idle.idleInTransactionTimeout",
            spec.idle.idle_in_transaction_timeout,
            &mut problems,
        );
        let max_transaction_age = positive(
            "spec.idle.maxTransactionAge",
            spec.idle.max_transaction_age,
            &mut problems,
        );
        let detection = &spec.leak_detection;
        for (name, age) in [
            (
                "spec.leakDetection.strandedIdleAge",
                detection.stranded_idle_age,
            ),
            (
                "spec.leakDetection.idleInTransactionAge",
                detection.idle_in_transaction_age,
            ),
            (
                "spec.leakDetection.transactionAge",
                detection.transaction_age,
            ),
        ] {
            if age.is_zero() {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
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
        if spec.interval.as_std() < Duration::from_secs(1) {
            problems.push("spec.interval must be at least 1s".into());
        }
        if spec.leak_detection.window.is_zero() {
            problems.push("spec.leakDetection.window must be greater than 0".into());
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
            }),
            _ => Err(InvalidSpec(problems)),
        }
    }
}
