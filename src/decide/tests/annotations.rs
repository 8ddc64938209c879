//! Annotations (DESIGN.md §7): what is written on a workload, and when it is taken back.

use super::*;

/// orders-api with 3 replicas, under policy shop/orders-db, carrying `annotations`.
pub(super) fn annotated_cluster(annotations: &[(&str, &str)]) -> ClusterView {
    ClusterView {
        policy: Some(POLICY_NAME.to_owned()),
        workloads: vec![WorkloadInfo {
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..workload(3, None)
        }],
        ..cluster()
    }
}

/// A snapshot at `t0` whose pod 1 has been idle in a transaction for 20 minutes: confirmed.
fn leaking() -> Snapshot {
    snapshot().with(stuck_since(900, ago(20 * MIN))).build()
}

pub(super) fn applied(change: &AnnotationChange) -> Vec<(&str, &str)> {
    change
        .annotations
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_str(), v)))
        .collect()
}

#[test]
fn a_confirmed_finding_annotates_its_deployment_once() {
    let policy = rules(STUCK_TX);
    let d = decide_with(
        &leaking(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    assert_eq!(d.annotations.len(), 1, "{:#?}", d.annotations);
    let change = &d.annotations[0];
    assert_eq!(change.workload, orders_api());
    assert_eq!(
        change
            .annotations
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        [LEAK, LEAK_DETAIL, POLICY]
    );
    assert_eq!(
        change.annotations[LEAK].as_deref(),
        Some("IdleInTransaction")
    );
    assert_eq!(change.annotations[POLICY].as_deref(), Some(POLICY_NAME));
    let detail = change.annotations[LEAK_DETAIL].as_deref().unwrap();
    assert!(detail.starts_with("IdleInTransaction: "), "{detail}");
    assert!(detail.contains("likely cause"), "{detail}");

    // The same decision again, once the workload carries them: nothing to change.
    let already = annotated_cluster(&applied(change));
    let again = decide_with(&leaking(), &policy, &already, &Memory::default());
    assert!(again.annotations.is_empty(), "{:#?}", again.annotations);
}

#[test]
fn annotations_are_not_rewritten_when_only_the_ages_have_changed() {
    let policy = rules(STUCK_TX);
    let d1 = decide_with(
        &leaking(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    let annotated = annotated_cluster(&applied(&d1.annotations[0]));

    // Thirty seconds later the same session is thirty seconds older; nothing else changed.
    let next = snapshot()
        .at(later(30))
        .with(stuck_since(900, ago(20 * MIN)))
        .build();
    let d2 = decide_with(&next, &policy, &annotated, &d1.memory);
    assert!(the_finding(&d2, FindingKind::IdleInTransaction).present);
    assert!(d2.annotations.is_empty(), "{:#?}", d2.annotations);
}

#[test]
fn an_unconfirmed_finding_is_not_annotated() {
    let snap = snapshot().with(stuck_since(901, ago(6 * MIN))).build();
    let d = decide_with(
        &snap,
        &rules(STUCK_TX),
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    assert_eq!(findings(&d, FindingKind::IdleInTransaction).len(), 1);
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);
}

#[test]
fn annotations_are_removed_once_the_finding_has_cleared_for_a_window() {
    let policy = rules(STUCK_TX);
    let d1 = decide_with(
        &leaking(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    let annotated = annotated_cluster(&applied(&d1.annotations[0]));

    // A minute after the leak is gone, the finding is still held: the annotations stay.
    let quiet = snapshot().at(later(MIN)).build();
    let d2 = decide_with(&quiet, &policy, &annotated, &d1.memory);
    assert!(d2.annotations.is_empty(), "{:#?}", d2.annotations);

    // A window after it was last seen, they go.
    let cleared = snapshot().at(later(10 * MIN)).build();
    let d3 = decide_with(&cleared, &policy, &annotated, &d2.memory);
    assert_eq!(
        d3.annotations,
        [AnnotationChange {
            workload: orders_api(),
            annotations: OWNED.iter().map(|k| ((*k).to_owned(), None)).collect(),
        }]
    );
    assert!(d3.annotations[0].is_removal());
}

#[test]
fn a_workload_annotated_by_another_policy_is_left_alone() {
    let policy = rules(STUCK_TX);
    let theirs = annotated_cluster(&[(POLICY, "other/db"), (LEAK, "Orphaned")]);
    let d = decide_with(&leaking(), &policy, &theirs, &Memory::default());
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);
    let d = decide_with(&snapshot().build(), &policy, &theirs, &Memory::default());
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);
}

#[test]
fn with_annotate_false_annotations_are_only_ever_removed() {
    let policy = rules(&format!("{STUCK_TX}workloads: {{annotate: false}}\n"));
    let d = decide_with(
        &leaking(),
        &policy,
        &annotated_cluster(&[]),
        &Memory::default(),
    );
    assert!(d.findings.iter().any(|f| f.confirmed));
    assert!(d.annotations.is_empty(), "{:#?}", d.annotations);

    let ours = annotated_cluster(&[
        (LEAK, "IdleInTransaction"),
        (LEAK_DETAIL, "an old line"),
        (POLICY, POLICY_NAME),
    ]);
    let d = decide_with(&leaking(), &policy, &ours, &Memory::default());
    assert_eq!(d.annotations.len(), 1, "{:#?}", d.annotations);
    assert!(d.annotations[0].is_removal());
    assert_eq!(d.annotations[0].annotations.len(), 3);
}
