//! `crds/poolpolicy.yaml` is generated from the Rust types: it must never drift from them.

#[test]
fn the_committed_crd_matches_the_rust_types() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/poolpolicy.yaml"))
            .expect("crds/poolpolicy.yaml exists");
    let generated = poolwarden::api::crd_yaml();
    assert!(
        committed == generated,
        "crds/poolpolicy.yaml is out of date: run `cargo run -- crd > crds/poolpolicy.yaml`"
    );
}

#[test]
fn the_crd_rejects_what_it_can_at_apply_time() {
    let crd = poolwarden::api::crd_yaml();
    for needle in [
        "x-kubernetes-validations",
        "duration(self) >= duration('1s')",
        "maxConnectionsPerPod cannot exceed maxConnections",
        "pattern:",
        "- DryRun",
        "- Enforce",
        "required:\n            - database",
    ] {
        assert!(crd.contains(needle), "the CRD lacks {needle:?}");
    }
}

/// Every `format` in the CRD is one the API server recognises, so that `kubectl apply -f crds/`
/// prints no `unrecognized format "uint32"` warning.
#[test]
fn the_crd_uses_only_formats_the_api_server_recognises() {
    let crd = serde_json::to_value(poolwarden::api::crd()).unwrap();
    let mut seen = Vec::new();
    formats_in(&crd, &mut seen);
    assert!(!seen.is_empty(), "the walk found no formats at all");
    for (schema_type, format) in &seen {
        assert!(
            poolwarden::api::formats::is_recognised(schema_type.as_deref(), format),
            "format {format:?} on a {schema_type:?} is not one the API server recognises"
        );
    }
}

fn formats_in(value: &serde_json::Value, seen: &mut Vec<(Option<String>, String)>) {
    match value {
        serde_json::Value::Object(object) => {
            if let Some(format) = object.get("format").and_then(|f| f.as_str()) {
                let schema_type = object.get("type").and_then(|t| t.as_str());
                seen.push((schema_type.map(str::to_owned), format.to_owned()));
            }
            object.values().for_each(|v| formats_in(v, seen));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| formats_in(v, seen)),
        _ => {}
    }
}

/// `interval: 99999999999h` matched the old pattern and then failed CEL's conversion with `type
/// conversion error from 'string' to 'google.protobuf.Duration'`. Now: every duration field's
/// rule guards the conversion with a pattern that admits nothing beyond Go's duration range, and
/// its message names the field's bounds.
#[test]
fn every_duration_is_bounded_with_a_message_and_never_overflows_cel() {
    use poolwarden::api::bounds;

    let crd = serde_json::to_value(poolwarden::api::crd()).unwrap();
    let mut rules = Vec::new();
    rules_in(&crd, &mut rules);
    for bound in bounds::ALL {
        let rule = bound.rule();
        assert!(
            rules.contains(&(rule.rule.clone(), bound.message())),
            "the CRD lacks the rule of {}",
            bound.path
        );
        assert!(
            rule.rule.starts_with("self != '' && self.matches('"),
            "{}: {}",
            bound.path,
            rule.rule
        );
    }
    // No duration is converted anywhere without that guard.
    for (rule, _) in &rules {
        if rule.contains("duration(self)") {
            assert!(rule.starts_with("self != '' && self.matches('"), "{rule}");
        }
    }

    // The API server's regular expressions are RE2 (Go); the regex crate is of the same family.
    let pattern = regex::Regex::new(poolwarden::api::DURATION_PATTERN).unwrap();
    for accepted in [
        "30s", "5m", "1h30m", "500ms", "1.5h", "720h", "1h0m1s", "90s",
    ] {
        assert!(pattern.is_match(accepted), "{accepted}");
        assert!(
            accepted.parse::<poolwarden::api::Duration>().is_ok(),
            "{accepted}"
        );
    }
    for refused in ["99999999999h", "2562048h", "30m1h", "1h1h", "5us", "-5m"] {
        assert!(!pattern.is_match(refused), "{refused}");
    }
    // The largest string the pattern admits (longer than the schema's maxLength, which only
    // makes the bound tighter) is within Go's duration (int64 nanoseconds), so
    // `duration(self)` behind `self.matches(…)` always converts.
    let largest = "999999.999999999h9999999.999999999m999999999.999999999s999999999999.999999999ms";
    assert!(pattern.is_match(largest));
    let nanos = largest
        .parse::<poolwarden::api::Duration>()
        .unwrap()
        .as_std()
        .as_nanos();
    assert!(nanos < i64::MAX as u128, "{nanos} ns overflows Go");
    // And one digit more in any place is refused.
    for longer in [
        "9999999h",
        "99999999m",
        "9999999999s",
        "9999999999999ms",
        "1.1234567890h",
    ] {
        assert!(!pattern.is_match(longer), "{longer}");
    }
}

fn rules_in(value: &serde_json::Value, found: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(object) => {
            if let Some(serde_json::Value::Array(rules)) = object.get("x-kubernetes-validations") {
                for rule in rules {
                    found.push((
                        rule["rule"].as_str().unwrap_or_default().to_owned(),
                        rule["message"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
            object.values().for_each(|v| rules_in(v, found));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| rules_in(v, found)),
        _ => {}
    }
}
