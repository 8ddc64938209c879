//! A policy's database URL, from a Secret in the policy's own namespace.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

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
            Self::Api { .. } => "SecretUnreadable",
        }
    }
}

/// Reads the URL. Tenancy: only ever in `namespace`, the policy's own.
pub async fn database_url(
    client: &Client,
    namespace: &str,
    reference: &SecretKeyRef,
) -> Result<String, SecretError> {
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
    value
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SecretError::KeyMissing {
            namespace: namespace.to_owned(),
            name: reference.name.clone(),
            key: reference.key.clone(),
        })
}
