//! A policy's database URL, from a Secret in the policy's own namespace, read only when it changed.
//!
//! With Secrets watched (metadata only, `--watch-secrets`, the default), the watch keeps each
//! Secret's resourceVersion here, and a URL read once is reused for as long as its Secret's
//! resourceVersion stays the one it was read at: one GET per change of the Secret, not one per
//! cycle. Without the watch, the Secret is read on every cycle (only `get` is needed). The URL is
//! the one the policy's monitoring connection already holds in memory (see `engines`).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::api::{PoolPolicy, SecretKeyRef};
use crate::controller::cluster::index::Listed;
use crate::controller::cluster::trimmed::TrimmedMeta;
use crate::controller::reconcile::status::reasons;

/// Why the URL could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key:?} (or its value is not UTF-8)")]
    KeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("reading Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

impl SecretError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => reasons::SECRET_NOT_FOUND,
            Self::KeyMissing { .. } => reasons::SECRET_KEY_MISSING,
            Self::Api { .. } => reasons::SECRET_UNREADABLE,
        }
    }
}

/// `(namespace, name)` of a Secret.
type SecretKey = (String, String);
/// `(namespace, name, key)`: one value of a Secret.
type ValueKey = (String, String, String);

/// A URL, and the resourceVersion of the Secret it was read at.
#[derive(Debug)]
struct Read {
    at: String,
    url: String,
}

/// The Secrets' resourceVersions (from the watch) and the URLs read from them.
#[derive(Debug, Default)]
pub struct Secrets {
    watched: bool,
    versions: RwLock<HashMap<SecretKey, String>>,
    read: Mutex<HashMap<ValueKey, Read>>,
}

impl Secrets {
    /// `watched`: a watch keeps the resourceVersions current, so a URL may be reused until its
    /// Secret changes. Otherwise every read is a GET.
    pub fn new(watched: bool) -> Self {
        Self {
            watched,
            ..Self::default()
        }
    }

    /// The watch saw a Secret (added, changed, or listed).
    pub fn seen(&self, namespace: &str, name: &str, resource_version: &str) {
        let mut versions = self.versions.write().unwrap_or_else(|e| e.into_inner());
        versions.insert(
            (namespace.to_owned(), name.to_owned()),
            resource_version.to_owned(),
        );
    }

    /// The watch saw a Secret deleted: it is forgotten, with what was read from it.
    pub fn gone(&self, namespace: &str, name: &str) {
        let mut versions = self.versions.write().unwrap_or_else(|e| e.into_inner());
        versions.remove(&(namespace.to_owned(), name.to_owned()));
        self.forget_unwatched(&versions);
    }

    /// A full (re)list of `scope`'s Secrets arrived: those it did not bring are gone.
    pub fn retain(&self, scope: Option<&str>, listed: &Listed) {
        let mut versions = self.versions.write().unwrap_or_else(|e| e.into_inner());
        versions.retain(|key, _| scope.is_some_and(|s| s != key.0) || listed.contains(key));
        self.forget_unwatched(&versions);
    }

    /// Drops the URLs read from Secrets that no longer exist.
    fn forget_unwatched(&self, versions: &HashMap<SecretKey, String>) {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        read.retain(|(ns, name, _), _| versions.contains_key(&(ns.clone(), name.clone())));
    }

    /// The URL under `reference.key` of the Secret `reference.name`. Tenancy: only ever in
    /// `namespace`, the policy's own.
    pub async fn database_url(
        &self,
        client: &Client,
        namespace: &str,
        reference: &SecretKeyRef,
    ) -> Result<String, SecretError> {
        let key = (
            namespace.to_owned(),
            reference.name.clone(),
            reference.key.clone(),
        );
        if let Some(url) = self.unchanged(&key) {
            return Ok(url);
        }
        let (version, url) = read(client, namespace, reference).await?;
        if self.watched
            && let Some(version) = version
        {
            let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
            read.insert(
                key,
                Read {
                    at: version,
                    url: url.clone(),
                },
            );
        }
        Ok(url)
    }

    /// The URL read before, if the watch says its Secret has not changed since.
    fn unchanged(&self, key: &ValueKey) -> Option<String> {
        if !self.watched {
            return None;
        }
        let versions = self.versions.read().unwrap_or_else(|e| e.into_inner());
        let now = versions.get(&(key.0.clone(), key.1.clone()))?;
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        read.get(key)
            .filter(|read| &read.at == now)
            .map(|read| read.url.clone())
    }
}

/// Reads the URL and the Secret's resourceVersion.
async fn read(
    client: &Client,
    namespace: &str,
    reference: &SecretKeyRef,
) -> Result<(Option<String>, String), SecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(&reference.name)
        .await
        .map_err(|source| SecretError::Api {
            namespace: namespace.to_owned(),
            name: reference.name.clone(),
            source,
        })?;
    let secret = secret.ok_or_else(|| SecretError::NotFound {
        namespace: namespace.to_owned(),
        name: reference.name.clone(),
    })?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&reference.key))
                .map(|s| s.clone().into_bytes())
        });
    let url = value
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SecretError::KeyMissing {
            namespace: namespace.to_owned(),
            name: reference.name.clone(),
            key: reference.key.clone(),
        })?;
    Ok((secret.metadata.resource_version, url))
}

/// The policies of `policies` that read `secret` (their database URL or a pooler's console URL):
/// a changed Secret reconciles them at once.
pub fn policies_using(
    policies: &Store<PoolPolicy>,
    secret: &TrimmedMeta,
) -> Vec<ObjectRef<PoolPolicy>> {
    let (ns, name) = (secret.namespace(), secret.name_any());
    policies
        .state()
        .into_iter()
        .filter(|p| p.namespace() == ns && p.spec.refers_to_secret(&name))
        .map(|p| ObjectRef::from_obj(&*p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ValueKey {
        ("shop".into(), "db".into(), "uri".into())
    }

    fn secrets(watched: bool) -> Secrets {
        let secrets = Secrets::new(watched);
        secrets.seen("shop", "db", "5");
        secrets.read.lock().unwrap().insert(
            key(),
            Read {
                at: "5".into(),
                url: "postgres://db".into(),
            },
        );
        secrets
    }

    #[test]
    fn a_url_is_reused_while_its_secret_keeps_its_version() {
        let watched = secrets(true);
        assert_eq!(watched.unchanged(&key()).as_deref(), Some("postgres://db"));
        watched.seen("shop", "db", "6");
        assert_eq!(watched.unchanged(&key()), None, "changed: read again");
        // Without the watch nothing tells a change: every cycle reads.
        assert_eq!(secrets(false).unchanged(&key()), None);
    }

    #[test]
    fn a_deleted_secret_is_forgotten_with_what_was_read_from_it() {
        let deleted = secrets(true);
        deleted.gone("shop", "db");
        assert_eq!(deleted.unchanged(&key()), None);
        assert!(deleted.read.lock().unwrap().is_empty());

        let relisted = secrets(true);
        relisted.seen("other", "db", "1");
        relisted.retain(Some("shop"), &Listed::new());
        assert!(relisted.read.lock().unwrap().is_empty());
        let versions = relisted.versions.read().unwrap();
        assert_eq!(versions.len(), 1, "another namespace's Secret stays");
    }

    #[test]
    fn a_secret_reconciles_the_policies_of_its_namespace_that_read_it_and_no_other() {
        use kube::runtime::watcher::Event;
        let policy = |namespace: &str, name: &str, secret: &str| -> PoolPolicy {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "poolwarden.io/v1alpha1", "kind": "PoolPolicy",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"database": {"connectionSecretRef": {"name": secret}}},
            }))
            .unwrap()
        };
        let (reader, mut writer) = kube::runtime::reflector::store();
        for p in [
            policy("shop", "orders-db", "db"),
            policy("shop", "billing-db", "billing"),
            policy("other", "orders-db", "db"),
        ] {
            writer.apply_watcher_event(&Event::Apply(p));
        }
        let mut secret = TrimmedMeta::default();
        secret.metadata.namespace = Some("shop".into());
        secret.metadata.name = Some("db".into());

        let names: Vec<_> = policies_using(&reader, &secret)
            .into_iter()
            .map(|r| (r.namespace.unwrap_or_default(), r.name))
            .collect();
        assert_eq!(names, [("shop".to_owned(), "orders-db".to_owned())]);
    }
}
