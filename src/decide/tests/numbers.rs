//! Numbering: one number per source and per (source, pod), whoever shows them.

use super::*;
use crate::decide::attribution::{Attribution, Source, Via};
use crate::decide::groups::Governed;
use crate::decide::numbers::{Numbered, Numbers};

fn workload(name: &str) -> Source {
    Source::Workload(WorkloadRef {
        namespace: "shop".into(),
        kind: "Deployment".into(),
        name: name.into(),
    })
}

fn by(source: &Source, pod: &str) -> Attribution {
    Attribution {
        source: source.clone(),
        pod: pod.into(),
        via: Via::PodIp,
        pooler: None,
    }
}

#[test]
fn equal_sources_and_pods_get_one_number_however_they_were_built() {
    let session = session(1).build(t0());
    // Two `Source`s equal in text but built apart, as a live and a departed pod's workload are.
    let (orders, orders_again, reports) =
        (workload("orders"), workload("orders"), workload("reports"));
    let governed: Vec<Governed<'_>> = [
        by(&orders, "orders-1"),
        by(&reports, "orders-1"), // the same pod name under another source is another pod
        by(&orders_again, "orders-1"),
        by(&orders, "orders-2"),
    ]
    .into_iter()
    .map(|attribution| Governed {
        session: &session,
        attribution,
    })
    .collect();
    let numbers = Numbers::new(&governed, &[]);
    let n = |source, pod| Numbered { source, pod };
    assert_eq!(numbers.governed, vec![n(0, 0), n(1, 1), n(0, 0), n(0, 2)]);
    assert_eq!(numbers.sources, vec![&orders, &reports]);
    assert_eq!(numbers.governed_pods, 3);
    let by_source: Vec<(&Source, Vec<&str>)> = numbers
        .governed_pods_by_source()
        .map(|(s, pods)| (s, pods.into_iter().map(|p| p.as_str()).collect()))
        .collect();
    assert_eq!(
        by_source,
        vec![
            (&orders, vec!["orders-1", "orders-2"]),
            (&reports, vec!["orders-1"])
        ]
    );
}
