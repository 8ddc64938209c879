//! The Kubernetes stand-in of the end-to-end tests (`tests/kube/standin.py`) answers kube-rs the
//! way an API server does: lists and watches (also metadata-only), create, replace, patches of
//! every kind, the status subresource, finalizers, Events and Leases.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::support::kube::KubeStandin;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::watcher::{self, Event as Seen};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

fn pool_policies() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("poolwarden.io", "v1alpha1", "PoolPolicy"),
        "poolpolicies",
    )
}

fn pool_policy(name: &str, finalizers: &[&str]) -> DynamicObject {
    let mut policy = DynamicObject::new(name, &pool_policies()).data(json!({
        "spec": {
            "database": {"connectionSecretRef": {"name": "db", "key": "uri"}},
            "mode": "DryRun",
        }
    }));
    if !finalizers.is_empty() {
        policy.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
    }
    policy
}

fn object<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("the test's object deserialises")
}

fn deployment() -> Deployment {
    object(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]}
            }
        }
    }))
}

fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
        "controller": true, "blockOwnerDeletion": true
    })
}

fn pod(name: &str, ip: &str, rs: &ReplicaSet) -> Pod {
    object(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": "web", "pod-template-hash": "5d8f7"},
            "ownerReferences": [owner("apps/v1", "ReplicaSet", &rs.name_any(), &rs.uid().unwrap())]
        },
        "spec": {"containers": [{"name": "web", "image": "web:1"}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": "2026-01-02T03:04:05Z"
        }
    }))
}

/// kube's metadata-only watcher (deprecated in kube 5, which the controller may still use).
#[allow(deprecated)]
fn metadata_watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Seen<PartialObjectMeta<K>>, watcher::Error>> + Unpin + Send
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    kube::runtime::metadata_watcher(api, config).boxed()
}

fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Seen<K>, watcher::Error>> + Unpin + Send
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, config).boxed()
}

/// Pulls events from a watcher until one satisfies `want`.
async fn until<K, S>(stream: &mut S, what: &str, mut want: impl FnMut(&Seen<K>) -> bool) -> Seen<K>
where
    S: Stream<Item = Result<Seen<K>, watcher::Error>> + Unpin,
{
    let wait = async {
        loop {
            match stream.next().await {
                Some(Ok(event)) if want(&event) => return event,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("the watch failed while waiting for {what}: {e}"),
                None => panic!("the watch ended while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

fn applied<K: ResourceExt>(name: &str) -> impl Fn(&Seen<K>) -> bool {
    move |event| matches!(event, Seen::Apply(o) | Seen::InitApply(o) if o.name_any() == name)
}

fn deleted<K: ResourceExt>(name: &str) -> impl Fn(&Seen<K>) -> bool {
    move |event| matches!(event, Seen::Delete(o) if o.name_any() == name)
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn watchers_see_workloads_and_policies_arrive_change_and_go() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let policies: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &pool_policies());

    // Watchers started before anything exists: they see the objects arrive as they are made.
    let mut pod_events = watch(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let mut policy_meta = metadata_watcher(
        Api::<DynamicObject>::all_with(client.clone(), &pool_policies()),
        watcher::Config::default(),
    );
    // kube 5's successor of metadata_watcher: an Api of PartialObjectMeta asks for metadata only.
    let mut pod_meta = watch(
        Api::<PartialObjectMeta<Pod>>::all(client.clone()),
        watcher::Config::default(),
    );
    until(&mut pod_events, "the pods' initial list", |e| {
        matches!(e, Seen::InitDone)
    })
    .await;
    until(&mut policy_meta, "the policies' initial list", |e| {
        matches!(e, Seen::InitDone)
    })
    .await;
    until(&mut pod_meta, "the pods' initial metadata list", |e| {
        matches!(e, Seen::InitDone)
    })
    .await;

    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let dep = deployments
        .create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    assert_eq!(dep.namespace().as_deref(), Some("default"));
    assert!(dep.uid().is_some_and(|uid| !uid.is_empty()));
    assert!(dep.creation_timestamp().is_some());
    let rs: ReplicaSet = object(json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "web-5d8f7",
            "labels": {"app": "web", "pod-template-hash": "5d8f7"},
            "ownerReferences": [owner("apps/v1", "Deployment", "web", &dep.uid().unwrap())]
        },
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]}
            }
        }
    }));
    let rs = Api::<ReplicaSet>::default_namespaced(client.clone())
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let rv_rs: u64 = rs.resource_version().unwrap().parse().unwrap();
    let rv_dep: u64 = dep.resource_version().unwrap().parse().unwrap();
    assert!(rv_rs > rv_dep, "resourceVersions increase");

    let first = pods
        .create(
            &PostParams::default(),
            &pod("web-5d8f7-a", "10.1.0.11", &rs),
        )
        .await
        .unwrap();
    let status = first
        .status
        .as_ref()
        .expect("a pod keeps the status it is created with");
    assert_eq!(status.pod_ip.as_deref(), Some("10.1.0.11"));
    assert!(status.start_time.is_some());
    pods.create(
        &PostParams::default(),
        &pod("web-5d8f7-b", "10.1.0.12", &rs),
    )
    .await
    .unwrap();
    let secret: Secret = object(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db"},
        "stringData": {"uri": "postgresql://monitor@db/app"}
    }));
    Api::<Secret>::default_namespaced(client.clone())
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    policies
        .create(&PostParams::default(), &pool_policy("main", &[]))
        .await
        .unwrap();

    let Seen::Apply(seen) = until(&mut pod_events, "pod a", applied("web-5d8f7-a")).await else {
        unreachable!()
    };
    let owners = seen.metadata.owner_references.unwrap();
    assert_eq!(owners[0].kind, "ReplicaSet");
    assert_eq!(owners[0].uid, rs.uid().unwrap());
    let ips = seen.status.unwrap().pod_ips.unwrap();
    assert_eq!(ips[0].ip, "10.1.0.11");
    until(&mut pod_events, "pod b", applied("web-5d8f7-b")).await;
    let Seen::Apply(meta) = until(&mut policy_meta, "the policy's metadata", applied("main")).await
    else {
        unreachable!()
    };
    assert_eq!(meta.metadata.namespace.as_deref(), Some("default"));
    let Seen::Apply(meta) = until(&mut pod_meta, "pod a's metadata", applied("web-5d8f7-a")).await
    else {
        unreachable!()
    };
    assert_eq!(meta.labels()["app"], "web");
    assert!(meta.metadata.owner_references.is_some());

    // A change and a deletion reach the running watchers.
    pods.patch(
        "web-5d8f7-a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"leaking": "yes"}}})),
    )
    .await
    .unwrap();
    until(
        &mut pod_events,
        "the changed pod",
        |e| matches!(e, Seen::Apply(p) if p.labels().get("leaking").is_some_and(|v| v == "yes")),
    )
    .await;
    pods.delete("web-5d8f7-b", &DeleteParams::default())
        .await
        .unwrap();
    until(
        &mut pod_events,
        "the pod's deletion",
        deleted("web-5d8f7-b"),
    )
    .await;
    policies
        .delete("main", &DeleteParams::default())
        .await
        .unwrap();
    until(&mut policy_meta, "the policy's deletion", deleted("main")).await;

    // A watcher started later lists what exists, and honours label and field selectors.
    let config = watcher::Config::default()
        .labels("app=web,leaking in (yes)")
        .fields("metadata.name=web-5d8f7-a");
    let mut selected = watch(Api::<Pod>::all(client.clone()), config).boxed();
    until(&mut selected, "the listed pod", applied("web-5d8f7-a")).await;
    until(&mut selected, "the end of the list", |e| {
        matches!(e, Seen::InitDone)
    })
    .await;
    let listed = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version.is_some());
    let none = pods
        .list(&ListParams::default().labels("app!=web"))
        .await
        .unwrap();
    assert!(none.items.is_empty());

    // The Secret's stringData became data, as the API server does it.
    let secret = Api::<Secret>::default_namespaced(client.clone())
        .get("db")
        .await
        .unwrap();
    assert_eq!(
        secret.data.unwrap()["uri"].0,
        b"postgresql://monitor@db/app".to_vec()
    );
    assert!(secret.string_data.is_none());

    // Cluster-wide lists of every kind the controller watches answer.
    let rss = Api::<ReplicaSet>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(rss.items.len(), 1);
    let metas = Api::<Pod>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(metas.items.len(), 1);
    assert_eq!(metas.items[0].name_any(), "web-5d8f7-a");
}

#[tokio::test]
async fn status_takes_server_side_apply_and_annotations_take_merge_patches() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let policies: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &pool_policies());
    let created = policies
        .create(&PostParams::default(), &pool_policy("main", &[]))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({
        "apiVersion": "poolwarden.io/v1alpha1",
        "kind": "PoolPolicy",
        "status": {
            "observedGeneration": 1,
            "connections": "3/100",
            "leakingWorkloads": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Checked",
                            "message": "ok", "lastTransitionTime": "2026-01-02T03:04:05Z"}]
        }
    });
    let applied = policies
        .patch_status(
            "main",
            &PatchParams::apply("poolwarden").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["status"]["connections"], "3/100");
    let read = policies.get("main").await.unwrap();
    assert_eq!(read.data["status"]["leakingWorkloads"], 1);
    assert_eq!(read.data["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(read.data["spec"]["mode"], "DryRun", "the spec is untouched");
    assert_eq!(
        read.metadata.generation,
        Some(1),
        "a status write is no new generation"
    );

    // Writes to the main resource leave the status alone, and a spec change is a new generation.
    let patched = policies
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "Enforce"}, "status": {"connections": "0/0"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["mode"], "Enforce");
    assert_eq!(patched.data["status"]["connections"], "3/100");
    assert_eq!(patched.metadata.generation, Some(2));

    // The status subresource also takes merge patches and replaces, and only changes the status.
    let merged = policies
        .patch_status(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": "DryRun"}, "status": {"connections": "4/100"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data["status"]["connections"], "4/100");
    assert_eq!(merged.data["status"]["leakingWorkloads"], 1);
    assert_eq!(merged.data["spec"]["mode"], "Enforce");

    // Server-side apply creates a missing object.
    let ssa = PatchParams::apply("poolwarden").force();
    let other = policies
        .patch(
            "other",
            &ssa,
            &Patch::Apply(json!({
                "apiVersion": "poolwarden.io/v1alpha1",
                "kind": "PoolPolicy",
                "metadata": {"name": "other"},
                "spec": {"mode": "DryRun"}
            })),
        )
        .await
        .unwrap();
    assert!(other.uid().is_some());

    // Annotations: set with a merge patch, then removed with null.
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    deployments
        .create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let annotated = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "poolwarden.io/leaking": "true", "keep": "me"
            }}})),
        )
        .await
        .unwrap();
    assert_eq!(annotated.annotations()["poolwarden.io/leaking"], "true");
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"poolwarden.io/leaking": null}}})),
        )
        .await
        .unwrap();
    let read = deployments.get("web").await.unwrap();
    assert!(!read.annotations().contains_key("poolwarden.io/leaking"));
    assert_eq!(read.annotations()["keep"], "me");
    assert_eq!(
        read.spec.unwrap().replicas,
        Some(2),
        "a merge patch keeps the rest"
    );

    // A JSON patch, with a failing test that changes nothing.
    let json_patch = Patch::Json::<()>(
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/annotations/keep", "value": "me"},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/metadata/labels/tier", "value": "front"},
            {"op": "remove", "path": "/metadata/annotations/keep"}
        ]))
        .unwrap(),
    );
    let patched = deployments
        .patch("web", &PatchParams::default(), &json_patch)
        .await
        .unwrap();
    assert_eq!(patched.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(patched.labels()["tier"], "front");
    assert!(!patched.annotations().contains_key("keep"));
    let failing = Patch::Json::<()>(
        serde_json::from_value(json!([
            {"op": "test", "path": "/spec/replicas", "value": 7},
            {"op": "replace", "path": "/spec/replicas", "value": 9}
        ]))
        .unwrap(),
    );
    let status = api_error(
        deployments
            .patch("web", &PatchParams::default(), &failing)
            .await,
    );
    assert_eq!(status.code, 422);
    let read = deployments.get("web").await.unwrap();
    assert_eq!(read.spec.unwrap().replicas, Some(3));
}

#[tokio::test]
async fn a_finalizer_holds_a_deleted_policy_until_it_is_removed() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let policies: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &pool_policies());
    policies
        .create(
            &PostParams::default(),
            &pool_policy("held", &["poolwarden.io/cleanup"]),
        )
        .await
        .unwrap();
    let mut events = watch(
        Api::<DynamicObject>::all_with(client.clone(), &pool_policies()),
        watcher::Config::default(),
    );
    until(&mut events, "the listed policy", applied("held")).await;

    let answer = policies
        .delete("held", &DeleteParams::default())
        .await
        .unwrap();
    let marked = answer
        .left()
        .expect("the held object comes back, not a Status");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let read = policies.get("held").await.unwrap();
    assert!(read.metadata.deletion_timestamp.is_some());
    until(
        &mut events,
        "the deletion mark",
        |e| matches!(e, Seen::Apply(o) if o.metadata.deletion_timestamp.is_some()),
    )
    .await;

    policies
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    until(&mut events, "the deletion", deleted("held")).await;
    let status = api_error(policies.get("held").await);
    assert_eq!(status.code, 404);
    assert_eq!(status.reason, "NotFound");
    assert!(status.is_not_found());

    // kube's finalizer helper: its JSON patches add the finalizer, then remove it after cleanup.
    const FINALIZER: &str = "poolwarden.io/cleanup";
    let policy = policies
        .create(&PostParams::default(), &pool_policy("helped", &[]))
        .await
        .unwrap();
    let reconcile = |event: finalizer::Event<DynamicObject>| async move {
        match event {
            finalizer::Event::Apply(_) => Ok::<_, Infallible>(Action::await_change()),
            finalizer::Event::Cleanup(_) => Ok(Action::await_change()),
        }
    };
    finalizer(&policies, FINALIZER, Arc::new(policy), reconcile)
        .await
        .unwrap();
    let policy = policies.get("helped").await.unwrap();
    assert_eq!(policy.finalizers(), [FINALIZER]);
    finalizer(&policies, FINALIZER, Arc::new(policy), reconcile)
        .await
        .unwrap();
    policies
        .delete("helped", &DeleteParams::default())
        .await
        .unwrap();
    let deleting = policies.get("helped").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    finalizer(&policies, FINALIZER, Arc::new(deleting), reconcile)
        .await
        .unwrap();
    until(
        &mut events,
        "the helped policy's deletion",
        deleted("helped"),
    )
    .await;
    assert!(policies.get_opt("helped").await.unwrap().is_none());
}

#[tokio::test]
async fn events_are_recorded_and_leases_are_replaced_optimistically() {
    let kube = KubeStandin::start();
    let client = kube.client().await;

    // Events through kube's Recorder (events.k8s.io/v1); the same event again is a series.
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "poolwarden".into(),
            instance: Some("poolwarden-0".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("poolwarden.io/v1alpha1".into()),
        kind: Some("PoolPolicy".into()),
        name: Some("main".into()),
        namespace: Some("default".into()),
        uid: Some("0f0e0d0c-0000-4000-8000-000000000001".into()),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "LeakDetected".into(),
        note: Some("web leaks idle sessions".into()),
        action: "Terminate".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<K8sEvent> = Api::default_namespaced(client.clone());
    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let recorded = &listed.items[0];
    assert_eq!(recorded.reason.as_deref(), Some("LeakDetected"));
    assert_eq!(recorded.type_.as_deref(), Some("Warning"));
    assert_eq!(
        recorded.regarding.as_ref().unwrap().name.as_deref(),
        Some("main")
    );
    assert_eq!(recorded.series.as_ref().map(|s| s.count), Some(2));

    // Leases: create, replace, and a replace from a stale resourceVersion is a conflict.
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let lease: Lease = object(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "poolwarden-leader"},
        "spec": {"holderIdentity": "poolwarden-0", "leaseDurationSeconds": 15,
                 "renewTime": "2026-01-02T03:04:05.123456Z"}
    }));
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().lease_duration_seconds = Some(30);
    let replaced = leases
        .replace("poolwarden-leader", &PostParams::default(), &renewed)
        .await
        .unwrap();
    assert_eq!(
        replaced.spec.as_ref().unwrap().lease_duration_seconds,
        Some(30)
    );
    assert_ne!(replaced.resource_version(), created.resource_version());
    let mut stale = created.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some("poolwarden-1".into());
    let status = api_error(
        leases
            .replace("poolwarden-leader", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!(status.code, 409);
    assert!(status.is_conflict());
    let read = leases.get("poolwarden-leader").await.unwrap();
    assert_eq!(
        read.spec.unwrap().holder_identity.as_deref(),
        Some("poolwarden-0")
    );

    // A duplicate create is AlreadyExists.
    let status = api_error(leases.create(&PostParams::default(), &lease).await);
    assert_eq!(status.code, 409);
    assert!(status.is_already_exists());
}

#[tokio::test]
async fn server_side_apply_tracks_the_fields_of_each_manager() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    deployments
        .create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let annotations = |values: Value| {
        Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": values}
        }))
    };
    let poolwarden = PatchParams::apply("poolwarden");
    let other = PatchParams::apply("other");

    deployments
        .patch(
            "web",
            &poolwarden,
            &annotations(json!({"a": "1", "b": "2"})),
        )
        .await
        .unwrap();
    deployments
        .patch("web", &other, &annotations(json!({"c": "3", "b": "2"})))
        .await
        .unwrap();
    // poolwarden no longer applies `a` and `b`: `a` goes, `b` stays since `other` applies it too.
    let read = deployments
        .patch("web", &poolwarden, &annotations(json!({"d": "4"})))
        .await
        .unwrap();
    let keys: Vec<&String> = read.annotations().keys().collect();
    assert_eq!(keys, ["b", "c", "d"]);
    assert_eq!(
        read.spec.as_ref().unwrap().replicas,
        Some(2),
        "the rest stays"
    );
    let managers: Vec<String> = read
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|entry| entry.manager)
        .collect();
    assert_eq!(managers, ["other", "poolwarden"]);

    // Changing a field another manager applied is a conflict, unless forced.
    let status = api_error(
        deployments
            .patch("web", &poolwarden, &annotations(json!({"c": "changed"})))
            .await,
    );
    assert_eq!(status.code, 409);
    assert!(status.message.contains("other"), "{}", status.message);
    let forced = deployments
        .patch(
            "web",
            &PatchParams::apply("poolwarden").force(),
            &annotations(json!({"c": "changed"})),
        )
        .await
        .unwrap();
    assert_eq!(forced.annotations()["c"], "changed");
    assert!(!forced.annotations().contains_key("d"));
}

/// The controller's election watches its Lease by `metadata.name` (src/controller/runtime/leader/):
/// the watch lists and hears of that Lease only, as a real API server's field selector does.
#[tokio::test]
async fn a_lease_watched_by_name_is_the_only_lease_heard_of() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let leases: Api<Lease> = Api::default_namespaced(client);
    let lease = |name: &str, holder: &str| -> Lease {
        object(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
        }))
    };
    leases
        .create(&PostParams::default(), &lease("other", "x"))
        .await
        .unwrap();
    leases
        .create(&PostParams::default(), &lease("poolwarden-leader", "a"))
        .await
        .unwrap();
    let mut events = watch(
        leases.clone(),
        watcher::Config::default().fields("metadata.name=poolwarden-leader"),
    );
    let mut listed = Vec::new();
    until(&mut events, "the initial list", |e| {
        if let Seen::InitApply(l) = e {
            listed.push(l.name_any());
        }
        matches!(e, Seen::InitDone)
    })
    .await;
    assert_eq!(listed, ["poolwarden-leader"]);
    // A change to the other Lease, then the release of ours: only the release is heard.
    for (name, holder) in [("other", "y"), ("poolwarden-leader", "")] {
        let mut changed = leases.get(name).await.unwrap();
        changed.spec.as_mut().unwrap().holder_identity = Some(holder.into());
        leases
            .replace(name, &PostParams::default(), &changed)
            .await
            .unwrap();
    }
    let Seen::Apply(heard) = until(&mut events, "a change", |e| matches!(e, Seen::Apply(_))).await
    else {
        unreachable!()
    };
    assert_eq!(heard.name_any(), "poolwarden-leader");
    assert_eq!(heard.spec.unwrap().holder_identity.as_deref(), Some(""));
}

#[tokio::test]
async fn watches_resume_where_they_timed_out() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    // The server ends each watch after a second; the watcher resumes from the last bookmark.
    let mut events = watch(secrets.clone(), watcher::Config::default().timeout(1));
    until(&mut events, "the initial list", |e| {
        matches!(e, Seen::InitDone)
    })
    .await;
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let name = format!("s{i}");
        let secret: Secret = object(json!({"metadata": {"name": name}, "data": {}}));
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        until(&mut events, &name, applied(&name)).await;
    }
    let watches = kube.log_text().matches("watch=true").count();
    assert!(watches >= 3, "{watches} watch requests");
}

#[tokio::test]
async fn the_kubeconfig_points_a_client_at_the_standin() {
    let kube = KubeStandin::start();
    let dir = tempfile::tempdir().unwrap();
    let path = kube.kubeconfig(dir.path());
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = Client::try_from(config).unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client);
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let status = api_error(pods.get("missing").await);
    assert_eq!(status.reason, "NotFound");
    assert_eq!(status.code, 404);
    assert!(kube.url().starts_with("http://127.0.0.1:"));
}

#[tokio::test]
async fn api_discovery_finds_the_policies_and_the_builtins() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let gvk = GroupVersionKind::gvk("poolwarden.io", "v1alpha1", "PoolPolicy");
    let (resource, capabilities) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
    assert_eq!(resource.plural, "poolpolicies");
    assert_eq!(capabilities.scope, kube::discovery::Scope::Namespaced);
    let subresources: Vec<&str> = capabilities
        .subresources
        .iter()
        .map(|(r, _)| r.plural.as_str())
        .collect();
    assert_eq!(subresources, ["status"]);
    let discovery = kube::Discovery::new(client).run().await.unwrap();
    for (group, kind) in [
        ("apps", "ReplicaSet"),
        ("", "Pod"),
        ("coordination.k8s.io", "Lease"),
    ] {
        assert!(
            discovery.groups().any(|g| g.name() == group
                && g.recommended_resources()
                    .iter()
                    .any(|(r, _)| r.kind == kind)),
            "{group}/{kind} is discovered"
        );
    }
}

/// A ReplicaSet of `deployment`, with the controller reference the Deployment controller writes.
fn replicaset_of(deployment: &Deployment, name: &str) -> ReplicaSet {
    object(json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "labels": {"app": "web"},
            "ownerReferences": [owner("apps/v1", "Deployment", &deployment.name_any(), &deployment.uid().unwrap())]
        },
        "spec": {"selector": {"matchLabels": {"app": "web"}}}
    }))
}

#[tokio::test]
async fn a_deployments_annotations_are_copied_onto_its_replicasets_and_never_taken_back() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let mut annotated = deployment();
    annotated.metadata.annotations = Some(
        [
            ("team".to_owned(), "orders".to_owned()),
            (
                "deployment.kubernetes.io/revision".to_owned(),
                "3".to_owned(),
            ),
        ]
        .into(),
    );
    let dep = deployments
        .create(&PostParams::default(), &annotated)
        .await
        .unwrap();
    // A ReplicaSet made for it gets its annotations (but the Deployment controller's own).
    let rs = replicasets
        .create(&PostParams::default(), &replicaset_of(&dep, "web-5d8f7"))
        .await
        .unwrap();
    let read = replicasets.get("web-5d8f7").await.unwrap();
    assert_eq!(
        read.annotations().clone(),
        [("team".to_owned(), "orders".to_owned())].into()
    );
    assert_ne!(
        read.resource_version(),
        rs.resource_version(),
        "a write of its own"
    );

    // An annotation set on the Deployment appears on the ReplicaSet.
    let mut rs_events = watch(replicasets.clone(), watcher::Config::default());
    until(&mut rs_events, "the ReplicaSets' list", |e| {
        matches!(e, Seen::InitDone)
    })
    .await;
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"poolwarden.io/leak": "IdleAccumulation"}}}),
            ),
        )
        .await
        .unwrap();
    until(
        &mut rs_events,
        "the copied annotation",
        |e| matches!(e, Seen::Apply(rs) if rs.annotations().get("poolwarden.io/leak").is_some_and(|v| v == "IdleAccumulation")),
    )
    .await;

    // Taken off the ReplicaSet, it comes back at once; taken off the Deployment, it stays there.
    replicasets
        .patch(
            "web-5d8f7",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"poolwarden.io/leak": null}}})),
        )
        .await
        .unwrap();
    let read = replicasets.get("web-5d8f7").await.unwrap();
    assert_eq!(read.annotations()["poolwarden.io/leak"], "IdleAccumulation");
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"poolwarden.io/leak": null}}})),
        )
        .await
        .unwrap();
    let read = replicasets.get("web-5d8f7").await.unwrap();
    assert_eq!(read.annotations()["poolwarden.io/leak"], "IdleAccumulation");
    assert!(
        !deployments
            .get("web")
            .await
            .unwrap()
            .annotations()
            .contains_key("poolwarden.io/leak")
    );
}

fn secret(name: &str) -> Secret {
    object(json!({"metadata": {"name": name}, "data": {}}))
}

#[tokio::test]
async fn lists_come_in_consistent_pages_whose_tokens_expire() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    for i in 0..7 {
        secrets
            .create(&PostParams::default(), &secret(&format!("s{i}")))
            .await
            .unwrap();
    }
    let first = secrets.list(&ListParams::default().limit(3)).await.unwrap();
    let names = |list: &kube::core::ObjectList<Secret>| -> Vec<String> {
        list.items.iter().map(|s| s.name_any()).collect()
    };
    assert_eq!(names(&first), ["s0", "s1", "s2"]);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    let token = first.metadata.continue_.clone().expect("a continue token");

    // The pages after the first come from the same snapshot: what changed since is not in them.
    secrets
        .create(&PostParams::default(), &secret("s7"))
        .await
        .unwrap();
    secrets
        .delete("s4", &DeleteParams::default())
        .await
        .unwrap();
    let second = secrets
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["s3", "s4", "s5"]);
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let last = secrets
        .list(
            &ListParams::default()
                .limit(3)
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&last), ["s6"]);
    assert!(last.metadata.continue_.is_none());
    assert_eq!(last.metadata.remaining_item_count, None);

    // kube's watcher pages its initial list and sees everything there is now.
    let mut events = watch(secrets.clone(), watcher::Config::default().page_size(3));
    let mut listed = Vec::new();
    until(&mut events, "the paged list", |e| {
        if let Seen::InitApply(s) = e {
            listed.push(s.name_any());
        }
        matches!(e, Seen::InitDone)
    })
    .await;
    assert_eq!(listed, ["s0", "s1", "s2", "s3", "s5", "s6", "s7"]);
    let pages = kube
        .log_text()
        .lines()
        .filter(|l| l.contains("/secrets?") && l.contains("limit=3") && !l.contains("watch"))
        .count();
    assert_eq!(pages, 3 + 3, "three pages by hand, three by the watcher");

    // After compaction, a token from before is 410 Gone.
    let unfinished = secrets.list(&ListParams::default().limit(2)).await.unwrap();
    kube.expire();
    let status = api_error(
        secrets
            .list(
                &ListParams::default()
                    .limit(2)
                    .continue_token(unfinished.metadata.continue_.as_deref().unwrap()),
            )
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn after_compaction_a_stale_watch_is_gone_and_the_watcher_relists() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(&PostParams::default(), &secret("before"))
        .await
        .unwrap();
    let mut events = watch(secrets.clone(), watcher::Config::default());
    until(&mut events, "the initial list", |e| {
        matches!(e, Seen::InitDone)
    })
    .await;
    let stale = secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    // What happens while the watch holds back is lost with the compaction: only a relist tells.
    kube.pause_watches();
    secrets
        .create(&PostParams::default(), &secret("during"))
        .await
        .unwrap();
    secrets
        .delete("before", &DeleteParams::default())
        .await
        .unwrap();
    kube.expire();

    // The watcher is told 410 Gone, then lists afresh.
    let wait = async {
        let mut gone = false;
        let mut listed = Vec::new();
        loop {
            match events.next().await.expect("the watch goes on") {
                Err(watcher::Error::WatchError(status)) => {
                    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
                    gone = true;
                }
                Err(e) => panic!("unexpected watch error: {e}"),
                Ok(Seen::Init) => listed.clear(),
                Ok(Seen::InitApply(s)) => listed.push(s.name_any()),
                Ok(Seen::InitDone) => return (gone, listed),
                Ok(other) => panic!("only a relist can tell: {other:?}"),
            }
        }
    };
    let (gone, listed) = tokio::time::timeout(WAIT, wait).await.expect("a relist");
    assert!(gone, "the watcher was told its resourceVersion is too old");
    assert_eq!(listed, ["during"]);

    // A raw watch from before the compaction: one ERROR event, 410.
    let mut raw = secrets
        .watch(&kube::api::WatchParams::default(), &stale)
        .await
        .unwrap()
        .boxed();
    match raw.next().await {
        Some(Ok(kube::api::WatchEvent::Error(status))) => assert_eq!(status.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn streaming_lists_are_served_unless_the_server_lacks_them_or_fails_them() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    secrets
        .create(&PostParams::default(), &secret("one"))
        .await
        .unwrap();
    let mut events = watch(
        secrets.clone(),
        watcher::Config::default().streaming_lists(),
    );
    until(&mut events, "the streamed object", applied("one")).await;
    until(&mut events, "the end of the streamed list", |e| {
        matches!(e, Seen::InitDone)
    })
    .await;
    assert!(kube.log_text().contains("sendInitialEvents=true"));

    let without = KubeStandin::start_with(&["--no-streaming-lists"]);
    let secrets: Api<Secret> = Api::default_namespaced(without.client().await);
    let mut events = watch(secrets, watcher::Config::default().streaming_lists());
    match tokio::time::timeout(WAIT, events.next()).await.unwrap() {
        Some(Err(watcher::Error::WatchStartFailed(kube::Error::Api(status)))) => {
            assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
            assert!(status.message.contains("WatchList"), "{}", status.message);
        }
        other => panic!("expected the streaming list to be refused, got {other:?}"),
    }

    // Storage that cannot request watch progress: accepted, then failed inside the stream, as
    // kube-apiserver's cacher does it; an ordinary (paged) list still works.
    let no_progress = KubeStandin::start_with(&["--no-watch-progress"]);
    let secrets: Api<Secret> = Api::default_namespaced(no_progress.client().await);
    secrets
        .create(&PostParams::default(), &secret("one"))
        .await
        .unwrap();
    let mut events = watch(
        secrets.clone(),
        watcher::Config::default().streaming_lists(),
    );
    let first = tokio::time::timeout(WAIT, events.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(Seen::Init))), "accepted: {first:?}");
    match tokio::time::timeout(WAIT, events.next()).await.unwrap() {
        Some(Err(watcher::Error::WatchError(status))) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (500, "InternalError")
            );
            assert_eq!(
                status.message,
                "a watch stream was requested by the client but the required storage feature \
                 RequestWatchProgress is disabled"
            );
        }
        other => panic!("expected the stream to fail, got {other:?}"),
    }
    let mut events = watch(secrets, watcher::Config::default().page_size(10));
    until(&mut events, "the listed object", applied("one")).await;
}

#[tokio::test]
async fn events_k8s_io_events_are_found_the_way_kubectl_describe_looks() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let dep = Api::<Deployment>::default_namespaced(client.clone())
        .create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "poolwarden".into(),
            instance: Some("poolwarden-0".into()),
        },
    );
    let event = Event {
        type_: EventType::Warning,
        reason: "ConnectionLeak".into(),
        note: Some("IdleAccumulation: 4 sessions idle".into()),
        action: "Detected".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &kube::Resource::object_ref(&dep, &()))
        .await
        .unwrap();

    // `kubectl describe deployment web` lists v1 Events with these fields.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client.clone());
    let describe = |uid: &str| {
        ListParams::default().fields(&format!(
            "involvedObject.name=web,involvedObject.namespace=default,involvedObject.kind=Deployment,involvedObject.uid={uid}"
        ))
    };
    let found = core.list(&describe(&dep.uid().unwrap())).await.unwrap();
    assert_eq!(found.items.len(), 1);
    let shown = &found.items[0];
    assert_eq!(shown.reason.as_deref(), Some("ConnectionLeak"));
    assert_eq!(
        shown.message.as_deref(),
        Some("IdleAccumulation: 4 sessions idle")
    );
    assert_eq!(shown.type_.as_deref(), Some("Warning"));
    assert_eq!(shown.reporting_component.as_deref(), Some("poolwarden"));
    let other = core.list(&describe("another-uid")).await.unwrap();
    assert!(other.items.is_empty(), "the uid must match too");
}

#[tokio::test]
async fn rbac_can_answer_403_for_a_while() {
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    kube.forbid(2);
    let status = api_error(secrets.list(&ListParams::default()).await);
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// A Running, Ready pod of ReplicaSet `web-7d9f`, labelled `app: web`.
fn ready_pod(name: &str, ip: &str, rs: &ReplicaSet) -> Pod {
    let mut p = pod(name, ip, rs);
    p.status.as_mut().unwrap().conditions = Some(vec![object(json!({
        "type": "Ready", "status": "True"
    }))]);
    p
}

#[tokio::test]
async fn evictions_honour_disruption_budgets_and_the_replicaset_replaces_the_pod() {
    let kube = KubeStandin::start();
    // A budget's 429 is an answer here, not something to retry.
    let client = kube.client_without_retries().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = deployments
        .create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs = replicasets
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": "web-7d9f", "labels": {"app": "web"},
                             "ownerReferences": [owner("apps/v1", "Deployment", "web", d.metadata.uid.as_deref().unwrap())]},
                "spec": {"selector": {"matchLabels": {"app": "web"}}}
            })),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, ip) in [("web-7d9f-a", "10.0.0.1"), ("web-7d9f-b", "10.0.0.2")] {
        pods.create(&PostParams::default(), &ready_pod(name, ip, &rs))
            .await
            .unwrap();
    }
    let budgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("policy", "v1", "PodDisruptionBudget"),
            "poddisruptionbudgets",
        ),
    );
    let budget = |name: &str, spec: Value| -> DynamicObject {
        object(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name}, "spec": spec,
        }))
    };

    // Both pods must stay: 429, the pod stays.
    budgets
        .create(
            &PostParams::default(),
            &budget(
                "web",
                json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
            ),
        )
        .await
        .unwrap();
    let refused = pods
        .evict("web-7d9f-a", &Default::default())
        .await
        .expect_err("the budget refuses");
    let kube::Error::Api(status) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (429, "TooManyRequests")
    );
    assert_eq!(
        status.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert!(pods.get_opt("web-7d9f-a").await.unwrap().is_some());

    // One may go: evicted, and its ReplicaSet makes another, Ready a moment later.
    budgets
        .replace("web", &PostParams::default(), &{
            let mut b = budgets.get("web").await.unwrap();
            b.data["spec"] =
                json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}});
            b
        })
        .await
        .unwrap();
    pods.evict("web-7d9f-a", &Default::default())
        .await
        .expect("evicted");
    assert!(pods.get_opt("web-7d9f-a").await.unwrap().is_none());
    let deadline = std::time::Instant::now() + WAIT;
    let replacement = loop {
        let list = pods.list(&ListParams::default()).await.unwrap();
        let names: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
        let new: Vec<&Pod> = list
            .items
            .iter()
            .filter(|p| !["web-7d9f-a", "web-7d9f-b"].contains(&p.name_any().as_str()))
            .collect();
        if let [p] = new.as_slice() {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if ready {
                break (*p).clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Ready replacement: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(replacement.name_any().starts_with("web-7d9f-"));
    assert_eq!(
        replacement.metadata.owner_references.as_ref().unwrap()[0].name,
        "web-7d9f"
    );
    assert_eq!(replacement.labels()["app"], "web");

    // A pod under two budgets: the API server will not choose.
    budgets
        .create(
            &PostParams::default(),
            &budget("web-too", json!({"maxUnavailable": 1, "selector": {}})),
        )
        .await
        .unwrap();
    let two = pods
        .evict("web-7d9f-b", &Default::default())
        .await
        .expect_err("two budgets");
    assert!(
        matches!(two, kube::Error::Api(ref s) if s.code == 500),
        "{two:?}"
    );
}

#[tokio::test]
async fn the_scale_subresource_reads_and_writes_replicas_and_autoscalers_are_served() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let kube = KubeStandin::start();
    let client = kube.client().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let created = deployments
        .create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let mut seen = watch(deployments.clone(), watcher::Config::default());
    until(&mut seen, "the Deployment listed", applied("web")).await;

    let scale = deployments.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(
        scale.status.as_ref().unwrap().selector.as_deref(),
        Some("app=web")
    );
    assert_eq!(scale.metadata.uid, created.metadata.uid);

    // `kubectl scale --replicas=30`: a merge patch of the Scale.
    let patched = deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 30}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().replicas, Some(30));
    let d = deployments.get("web").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(30));
    until(
        &mut seen,
        "the scaled Deployment",
        |e| matches!(e, Seen::Apply(d) if d.spec.as_ref().and_then(|s| s.replicas) == Some(30)),
    )
    .await;

    // A stale resourceVersion is a conflict; a negative count is invalid.
    let mut stale = scale.clone();
    stale.spec.as_mut().unwrap().replicas = Some(3);
    let conflict = api_error(
        deployments
            .replace_scale("web", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!(conflict.code, 409);
    let negative = api_error(
        deployments
            .patch_scale(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": -1}})),
            )
            .await,
    );
    assert_eq!(negative.code, 422);

    // HorizontalPodAutoscalers, autoscaling/v2.
    let hpas: Api<HorizontalPodAutoscaler> = Api::default_namespaced(client.clone());
    hpas.create(
        &PostParams::default(),
        &object(json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 2, "maxReplicas": 20},
        })),
    )
    .await
    .unwrap();
    let listed = hpas.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].spec.as_ref().unwrap().max_replicas, 20);
    // Pods have no scale subresource.
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    assert_eq!(api_error(pods.get_scale("web").await).code, 404);
}
