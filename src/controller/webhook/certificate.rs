//! Where a self-made webhook certificate lives, so that every replica serves the same one: a
//! `kubernetes.io/tls` Secret in poolwarden's namespace (`tls.crt`, `tls.key`, `ca.crt`, and
//! when it runs out in the annotation `poolwarden.io/not-after`). The first replica to find it
//! missing (or due for renewal) makes one; a replica that loses that race (409) reads the
//! winner's. Then the CA goes into the `caBundle` of every webhook of poolwarden's
//! ValidatingWebhookConfiguration, by name, whenever it differs: kept current, also when an
//! upgrade of the chart has emptied it.

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use super::tls::{self, Pems, RENEW_BEFORE};

/// The annotation saying when the serving certificate of the Secret runs out.
pub const NOT_AFTER: &str = "poolwarden.io/not-after";

/// What a self-made certificate needs to know of where it lives.
#[derive(Clone, Debug)]
pub struct Placement {
    /// poolwarden's namespace: the Secret's and the Service's.
    pub namespace: String,
    pub secret: String,
    pub service: String,
    /// The ValidatingWebhookConfiguration whose `caBundle` to keep current.
    pub configuration: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("the webhook's Secret {0}: {1}")]
    Secret(String, kube::Error),
    #[error("the ValidatingWebhookConfiguration {0}: {1}")]
    Configuration(String, kube::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("the webhook's Secret {0} keeps changing under poolwarden (another writer?)")]
    Contended(String),
}

fn pems_of(secret: &Secret, now: Timestamp) -> Option<Pems> {
    let due = secret
        .annotations()
        .get(NOT_AFTER)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_none_or(|end| {
            let renew = jiff::SignedDuration::try_from(RENEW_BEFORE).unwrap_or_default();
            end.checked_sub(renew).is_ok_and(|at| at <= now)
        });
    let data = secret.data.as_ref()?;
    let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
    let pems = Pems {
        ca: text("ca.crt")?,
        cert: text("tls.crt")?,
        key: text("tls.key")?,
    };
    (!due).then_some(pems)
}

fn secret_of(placement: &Placement, pems: &Pems, not_after: Timestamp) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(placement.secret.clone()),
            namespace: Some(placement.namespace.clone()),
            annotations: Some([(NOT_AFTER.to_owned(), not_after.to_string())].into()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "poolwarden".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [
                ("ca.crt".to_owned(), bytes(&pems.ca)),
                ("tls.crt".to_owned(), bytes(&pems.cert)),
                ("tls.key".to_owned(), bytes(&pems.key)),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

/// The certificate every replica serves: the Secret's, or a new one made and stored there.
pub async fn shared(client: &Client, placement: &Placement) -> Result<Pems, CertificateError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &placement.namespace);
    let failed = |e| CertificateError::Secret(placement.secret.clone(), e);
    for _ in 0..3 {
        let now = Timestamp::now();
        let existing = api.get_opt(&placement.secret).await.map_err(failed)?;
        if let Some(pems) = existing.as_ref().and_then(|s| pems_of(s, now)) {
            return Ok(pems);
        }
        let names = tls::service_names(&placement.service, &placement.namespace);
        let (pems, not_after) = tls::generate(&names, now)?;
        let mut secret = secret_of(placement, &pems, not_after);
        let written = match existing {
            None => api.create(&PostParams::default(), &secret).await,
            Some(old) => {
                secret.metadata.resource_version = old.resource_version();
                api.replace(&placement.secret, &PostParams::default(), &secret)
                    .await
            }
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = %placement.secret, %not_after, "made the webhook's certificate");
                return Ok(pems);
            }
            // Another replica was first: read what it wrote.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(failed(e)),
        }
    }
    Err(CertificateError::Contended(placement.secret.clone()))
}

/// Sets `ca` as the `caBundle` of every webhook of the configuration, where it differs.
/// Whether it wrote.
pub async fn keep_ca_bundle(
    client: &Client,
    placement: &Placement,
    ca: &str,
) -> Result<bool, CertificateError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let failed = |e| CertificateError::Configuration(placement.configuration.clone(), e);
    let mut config = api.get(&placement.configuration).await.map_err(failed)?;
    let bundle = ByteString(ca.as_bytes().to_vec());
    let mut changed = false;
    for webhook in config.webhooks.iter_mut().flatten() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
            webhook.client_config.ca_bundle = Some(bundle.clone());
            changed = true;
        }
    }
    if changed {
        api.replace(&placement.configuration, &PostParams::default(), &config)
            .await
            .map_err(failed)?;
        tracing::info!(
            configuration = %placement.configuration,
            "the webhook configuration trusts poolwarden's CA now"
        );
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement {
        Placement {
            namespace: "poolwarden".into(),
            secret: "poolwarden-webhook-tls".into(),
            service: "poolwarden".into(),
            configuration: "poolwarden".into(),
        }
    }

    #[test]
    fn a_stored_certificate_is_used_until_it_is_due_for_renewal() {
        let made: Timestamp = "2026-01-05T10:00:00Z".parse().unwrap();
        let names = tls::service_names("poolwarden", "poolwarden");
        let (pems, not_after) = tls::generate(&names, made).unwrap();
        let secret = secret_of(&placement(), &pems, not_after);
        assert_eq!(pems_of(&secret, made), Some(pems.clone()));
        let month_before: Timestamp = not_after - jiff::SignedDuration::from_hours(31 * 24);
        assert!(pems_of(&secret, month_before).is_some());
        let due: Timestamp = not_after - jiff::SignedDuration::from_hours(29 * 24);
        assert_eq!(
            pems_of(&secret, due),
            None,
            "renewed within 30 days of its end"
        );
        let mut unannotated = secret.clone();
        unannotated.metadata.annotations = None;
        assert_eq!(pems_of(&unannotated, made), None);
    }
}
