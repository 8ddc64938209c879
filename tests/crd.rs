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
