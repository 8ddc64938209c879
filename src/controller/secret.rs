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
use kube::{Api, Client};

use super::index::Listed;
use super::status::reasons;
use crate::api::SecretKeyRef;

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

    /// The watch saw a Secret deleted.
    pub fn gone(&self, namespace: &str, name: &str) {
        let mut versions = self.versions.write().unwrap_or_else(|e| e.into_inner());
        versions.remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// A full (re)list of `scope`'s Secrets arrived: those it did not bring are gone.
    pub fn retain(&self, scope: Option<&str>, listed: &Listed) {
        let mut versions = self.versions.write().unwrap_or_else(|e| e.into_inner());
        versions.retain(|key, _| scope.is_some_and(|s| s != key.0) || listed.contains(key));
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
