//! The pods seen during the window (what `Overbooked` counts a workload's pods by): the
//! previous look's, merged with the pods seen now.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::SignedDuration;

use super::*;
use crate::decide::attribution::Source;
use crate::decide::memory::SeenSources;

fn workload(name: &str) -> Source {
    Source::Workload(WorkloadRef {
        namespace: "shop".into(),
        kind: "Deployment".into(),
        name: name.into(),
    })
}

#[test]
fn the_pods_seen_now_join_those_seen_within_the_window_and_older_ones_are_forgotten() {
    let now = t0();
    let ago = |minutes: i64| now - SignedDuration::from_mins(minutes);
    let pods = |list: &[(&str, jiff::Timestamp)]| -> BTreeMap<Name, jiff::Timestamp> {
        list.iter()
            .map(|(pod, at)| (Name::from(*pod), *at))
            .collect()
    };
    let (a, b, c, d, e, f) = (
        workload("a"),
        workload("b"),
        workload("c"),
        workload("d"),
        workload("e"),
        workload("f"),
    );
    let mut memory = Memory::default();
    memory.seen = SeenSources::from([
        (a.clone(), pods(&[("a-1", ago(5)), ("a-2", ago(20))])),
        (c.clone(), pods(&[("c-1", ago(1)), ("c-3", ago(9))])),
        (e.clone(), pods(&[("e-1", ago(30))])),
        (f.clone(), pods(&[("f-1", ago(2))])),
    ]);
    let (b1, c0, c1, c2, d1) = (
        Name::from("b-1"),
        Name::from("c-0"),
        Name::from("c-1"),
        Name::from("c-2"),
        Name::from("d-1"),
    );
    let current = vec![(&b, vec![&b1]), (&c, vec![&c0, &c1, &c2]), (&d, vec![&d1])];
    let seen = memory.seen_until(current, now, Duration::from_secs(600));
    assert_eq!(
        seen,
        SeenSources::from([
            // Not seen now, one pod still within the window.
            (a, pods(&[("a-1", ago(5))])),
            (b, pods(&[("b-1", now)])),
            // Seen now and before: the pods of both, each once, the latest sighting kept.
            (
                c,
                pods(&[("c-0", now), ("c-1", now), ("c-2", now), ("c-3", ago(9))])
            ),
            (d, pods(&[("d-1", now)])),
            // e: gone for longer than the window; f, after every source seen now, within it.
            (f, pods(&[("f-1", ago(2))])),
        ])
    );
}
