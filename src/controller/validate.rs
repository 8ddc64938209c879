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
    Ok(Valid {
        rules,
        selector,
        secret: &database.connection_secret_ref,
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
}
