//! Step 1 of a reconcile: the policy's spec alone, with no client. Its rules compile, its pod
//! selector parses, and it names a Secret; anything else is [`InvalidPolicy`], which waits for
//! the spec to change.

use kube::core::Selector;

use crate::api::{PoolPolicy, SecretKeyRef};
use crate::decide::{InvalidSpec, Rules};

/// What a valid policy gives the next steps.
pub struct Valid<'a> {
    pub rules: Rules,
    pub selector: Option<Selector>,
    pub secret: &'a SecretKeyRef,
    /// For each of `spec.poolers`, its pod selector when it is given by `pods`.
    pub pooler_selectors: Vec<Option<Selector>>,
}

/// Why the spec cannot be applied as it is.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPolicy {
    #[error(transparent)]
    Rules(#[from] InvalidSpec),
    #[error("spec.database.connectionSecretRef is required")]
    NoDatabase,
    #[error("spec.workloads.podSelector: {0}")]
    Selector(#[source] kube::core::ParseExpressionError),
    #[error("spec.poolers[{0}]: give exactly one of consoleSecretRef or pods")]
    PoolerForm(usize),
    #[error("spec.poolers[{0}]: a pooler given by pods needs a name")]
    PoolerName(usize),
    #[error("spec.poolers[{0}].pods.selector: {1}")]
    PoolerSelector(usize, #[source] kube::core::ParseExpressionError),
}

pub fn policy(policy: &PoolPolicy) -> Result<Valid<'_>, InvalidPolicy> {
    let spec = &policy.spec;
    let rules = Rules::compile(spec)?;
    let database = spec.database.as_ref().ok_or(InvalidPolicy::NoDatabase)?;
    let selector = spec
        .workloads
        .pod_selector
        .clone()
        .map(Selector::try_from)
        .transpose()
        .map_err(InvalidPolicy::Selector)?;
    let pooler_selectors = spec
        .poolers
        .iter()
        .enumerate()
        .map(
            |(i, pooler)| match (&pooler.console_secret_ref, &pooler.pods) {
                (Some(_), None) => Ok(None),
                (None, Some(_)) if pooler.name.is_none() => Err(InvalidPolicy::PoolerName(i)),
                (None, Some(pods)) => Selector::try_from(pods.selector.clone())
                    .map(Some)
                    .map_err(|e| InvalidPolicy::PoolerSelector(i, e)),
                _ => Err(InvalidPolicy::PoolerForm(i)),
            },
        )
        .collect::<Result<_, _>>()?;
    Ok(Valid {
        rules,
        selector,
        secret: &database.connection_secret_ref,
        pooler_selectors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_spec(spec: serde_json::Value) -> PoolPolicy {
        serde_json::from_value(json!({
            "apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
            "metadata": {"name": "orders-db", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_policy_needs_rules_that_compile_a_selector_that_parses_and_a_secret() {
        let ok = with_spec(json!({"database": {"connectionSecretRef": {"name": "db"}}}));
        let valid = policy(&ok).unwrap();
        assert_eq!(
            (valid.secret.name.as_str(), valid.secret.key.as_str()),
            ("db", "uri")
        );
        assert!(valid.selector.is_none());

        let messages: Vec<String> = [
            json!({}),
            json!({"database": {"connectionSecretRef": {"name": "db"}},
                   "workloads": {"podSelector": {"matchExpressions": [
                       {"key": "app", "operator": "Sometimes"}]}}}),
            json!({"database": {"connectionSecretRef": {"name": "db"}},
                   "scope": {"excludeApplications": ["["]}}),
        ]
        .into_iter()
        .map(|spec| policy(&with_spec(spec)).err().unwrap().to_string())
        .collect();
        assert_eq!(messages[0], "spec.database.connectionSecretRef is required");
        assert!(
            messages[1].starts_with("spec.workloads.podSelector: "),
            "{}",
            messages[1]
        );
        assert!(
            messages[2].contains("spec.scope.excludeApplications"),
            "{}",
            messages[2]
        );
    }

    #[test]
    fn a_pooler_takes_one_form_and_a_pod_selector_needs_a_name() {
        let db = json!({"connectionSecretRef": {"name": "db"}});
        let pods = json!({"selector": {"matchLabels": {"app": "pgbouncer"}}, "port": 6432,
                          "consoleSecretRef": {"name": "pgbouncer-stats"}});
        let with = |poolers: serde_json::Value| {
            policy(&with_spec(json!({"database": db, "poolers": poolers})))
                .map(|v| {
                    v.pooler_selectors
                        .iter()
                        .map(Option::is_some)
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            with(json!([{"consoleSecretRef": {"name": "edge"}},
                        {"name": "fleet", "pods": pods}])),
            Ok(vec![false, true])
        );
        assert_eq!(
            with(json!([{"name": "x"}])),
            Err("spec.poolers[0]: give exactly one of consoleSecretRef or pods".into())
        );
        assert_eq!(
            with(json!([{"consoleSecretRef": {"name": "edge"}}, {"pods": pods}])),
            Err("spec.poolers[1]: a pooler given by pods needs a name".into())
        );
    }
}
