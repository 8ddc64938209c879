//! Reading a policy file for `check` and `run`: the same YAML as a PoolPolicy in a cluster (the
//! whole manifest, or just its `spec`), checked strictly so a typo is an error, not a silent
//! default.

use std::path::{Path, PathBuf};

use crate::api::PoolPolicySpec;
use crate::decide::{InvalidSpec, Rules};

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy file {path} is not valid YAML: {detail}")]
    Yaml { path: PathBuf, detail: String },
    #[error("policy file {path}: {detail}")]
    Shape { path: PathBuf, detail: String },
    #[error("policy file {path}: {source}")]
    Invalid { path: PathBuf, source: InvalidSpec },
}

/// A policy ready to apply, and the spec it came from.
pub struct PolicyFile {
    /// What the audit trail calls the policy: the manifest's `namespace/name` (or `name`), else
    /// the file's name without `.yaml`.
    pub name: String,
    pub spec: PoolPolicySpec,
    pub rules: Rules,
}

/// Loads and checks `path`.
pub fn load(path: &Path) -> Result<PolicyFile, PolicyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (spec, name) = parse(&text).map_err(|e| match e {
        ParseError::Yaml(detail) => PolicyFileError::Yaml {
            path: path.to_owned(),
            detail,
        },
        ParseError::Shape(detail) => PolicyFileError::Shape {
            path: path.to_owned(),
            detail,
        },
    })?;
    let rules = Rules::compile(&spec).map_err(|source| PolicyFileError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    let name = name.unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(PolicyFile { name, spec, rules })
}

#[derive(Debug)]
enum ParseError {
    Yaml(String),
    Shape(String),
}

/// The spec, and the manifest's `namespace/name` when it has one.
fn parse(text: &str) -> Result<(PoolPolicySpec, Option<String>), ParseError> {
    let doc: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
        // The parser's first line says where and what; the rest is a source excerpt.
        let full = e.to_string();
        let first = full.lines().next().unwrap_or_default();
        ParseError::Yaml(first.trim_start_matches("error: ").to_owned())
    })?;
    let metadata = |key: &str| {
        doc.get("metadata")
            .and_then(|m| m.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let name = match (metadata("namespace"), metadata("name")) {
        (Some(namespace), Some(name)) => Some(format!("{namespace}/{name}")),
        (None, name) => name,
        (Some(_), None) => None,
    };
    let (spec, prefix) = match doc.get("kind") {
        Some(kind) => {
            if kind != "PoolPolicy" {
                return Err(ParseError::Shape(format!(
                    "kind is {kind}, expected PoolPolicy"
                )));
            }
            match doc.get("apiVersion").and_then(|v| v.as_str()) {
                Some("poolwarden.io/v1alpha1") => {}
                other => {
                    return Err(ParseError::Shape(format!(
                        "apiVersion is {other:?}, expected poolwarden.io/v1alpha1"
                    )));
                }
            }
            let spec = doc
                .get("spec")
                .cloned()
                .ok_or_else(|| ParseError::Shape("the PoolPolicy has no spec".into()))?;
            (spec, "spec.")
        }
        None if doc.is_object() => (doc, ""),
        None => {
            return Err(ParseError::Shape(
                "expected a PoolPolicy manifest or its spec (a YAML mapping)".into(),
            ));
        }
    };
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(format!("{prefix}{path}"));
    let ignoring = serde_ignored::Deserializer::new(spec, &mut record);
    let parsed: PoolPolicySpec = serde_path_to_error::deserialize(ignoring)
        .map_err(|e| ParseError::Shape(format!("{prefix}{}: {}", e.path(), e.inner())))?;
    if !unknown.is_empty() {
        return Err(ParseError::Shape(format!(
            "unknown field(s): {} (check the spelling against `poolwarden crd`)",
            unknown.join(", ")
        )));
    }
    // The CRD's rule, for a file no API server checks.
    if let Some(i) = parsed
        .poolers
        .iter()
        .position(|p| p.console_secret_ref.is_some() == p.pods.is_some())
    {
        return Err(ParseError::Shape(format!(
            "{prefix}poolers[{i}]: give exactly one of consoleSecretRef or pods"
        )));
    }
    Ok((parsed, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Mode;

    #[test]
    fn accepts_a_whole_manifest_or_just_the_spec() {
        let manifest = "apiVersion: poolwarden.io/v1alpha1\nkind: PoolPolicy\nmetadata: {name: x}\nspec:\n  mode: Enforce\n  idle: {idleTimeout: 5m}\n";
        let (parsed, name) = parse(manifest).unwrap();
        assert_eq!(parsed.mode, Mode::Enforce);
        assert_eq!(name.as_deref(), Some("x"));
        let namespaced = manifest.replace("{name: x}", "{name: x, namespace: shop}");
        assert_eq!(parse(&namespaced).unwrap().1.as_deref(), Some("shop/x"));
        let spec = "mode: DryRun\nidle:\n  idleInTransactionTimeout: 30s\n";
        let (parsed, name) = parse(spec).unwrap();
        assert_eq!(
            name, None,
            "a bare spec names no policy: the file's name is used"
        );
        assert_eq!(
            parsed.idle.idle_in_transaction_timeout,
            Some(crate::api::Duration::from_secs(30))
        );
    }

    #[test]
    fn a_typo_is_an_error_naming_the_field() {
        let err = parse("idle:\n  idleTimout: 5m\n").unwrap_err();
        assert!(format!("{err:?}").contains("idle.idleTimout"), "{err:?}");
    }

    #[test]
    fn a_bad_value_names_its_path() {
        let err = parse("spec: 1\n").unwrap_err();
        assert!(format!("{err:?}").contains("spec"), "{err:?}");
        let err = parse("mode: Enforced\n").unwrap_err();
        assert!(format!("{err:?}").contains("mode"), "{err:?}");
        let err = parse("idle: {idleTimeout: soon}\n").unwrap_err();
        assert!(format!("{err:?}").contains("idle.idleTimeout"), "{err:?}");
    }

    #[test]
    fn a_duration_out_of_bounds_gets_the_crds_own_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, "interval: 99999999999h\nidle: {idleTimeout: 721h}\n").unwrap();
        let err = load(&path).err().expect("refused").to_string();
        for bound in [
            crate::api::bounds::INTERVAL,
            crate::api::bounds::IDLE_TIMEOUT,
        ] {
            assert!(err.contains(&bound.message()), "{err}");
        }
    }

    #[test]
    fn poolers_name_their_console_secrets_and_a_typo_is_an_error() {
        let parsed =
            parse("poolers:\n  - name: edge\n    consoleSecretRef: {name: edge-console}\n")
                .unwrap();
        assert_eq!(parsed.0.poolers[0].name.as_deref(), Some("edge"));
        assert_eq!(parsed.0.poolers[0].secret().unwrap().key, "uri");
        let parsed = parse(
            "poolers:\n  - name: fleet\n    pods: {selector: {matchLabels: {app: pgbouncer}}, \
             port: 6432, consoleSecretRef: {name: stats}}\n",
        )
        .unwrap();
        assert_eq!(parsed.0.poolers[0].pods.as_ref().unwrap().port, 6432);
        let err =
            parse("poolers: [{consoleSecretRef: {name: x}, url: postgres://p}]\n").unwrap_err();
        assert!(format!("{err:?}").contains("poolers.0.url"), "{err:?}");
        let err = parse("poolers: [{name: edge}]\n").unwrap_err();
        assert!(
            format!("{err:?}").contains("poolers[0]: give exactly one of consoleSecretRef or pods"),
            "{err:?}"
        );
    }

    #[test]
    fn another_kind_is_refused() {
        let err = parse("apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert!(
            format!("{err:?}").contains("expected PoolPolicy"),
            "{err:?}"
        );
        assert!(matches!(parse("- a\n- b\n"), Err(ParseError::Shape(_))));
        assert!(matches!(
            parse("idle: [unclosed\n"),
            Err(ParseError::Yaml(_))
        ));
    }
}
