//! The webhook's TLS: a certificate authority and a serving certificate poolwarden makes itself
//! (for the Service's DNS names), or the PEM files cert-manager writes; and the rustls server
//! configuration made from either. No IO but reading the files (see [`super::certificate`] for
//! where a self-made certificate is kept).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long a self-made serving certificate lasts; its CA lasts twice as long.
pub const VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A self-made certificate is made again this long before it runs out.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the webhook's certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the webhook's certificate or key is not usable PEM: {0}")]
    Pem(String),
    #[error("the webhook's certificate does not go with its key: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// A certificate, its key and the CA that signed it, in PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pems {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// The names the API server calls a Service by: `name.namespace.svc` (what it checks) and the
/// longer and shorter forms.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_owned(),
    ]
}

fn later(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// A new CA, and a serving certificate for `names` that it signed, valid from the day before
/// `now` until [`VALIDITY`] after it (to the day). Returns them and when the certificate ends.
pub fn generate(names: &[String], now: Timestamp) -> Result<(Pems, Timestamp), TlsError> {
    // Whole days (rcgen takes dates), from the day before, for clocks that lag.
    let day = |t: Timestamp| {
        let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
        rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    let start = now - jiff::SignedDuration::from_hours(24);
    let not_after = later(now, VALIDITY);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "poolwarden admission webhook CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = day(start);
    ca.not_after = day(later(not_after, VALIDITY));
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.not_before = day(start);
    leaf.not_after = day(not_after);
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((
        Pems {
            ca: ca_cert.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        },
        not_after,
    ))
}

/// The rustls configuration serving `cert` (a PEM chain) with `key`, HTTP/1.1 only.
pub fn server_config(cert: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Pem("no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `tls.crt` and `tls.key` of `dir` (cert-manager's Secret, mounted), as they are now.
pub fn read_dir(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    Ok((read("tls.crt")?, read("tls.key")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_certificate_serves_and_names_the_service() {
        let now: Timestamp = "2026-01-05T10:00:00Z".parse().unwrap();
        let names = service_names("poolwarden", "poolwarden");
        let (pems, not_after) = generate(&names, now).unwrap();
        assert_eq!(not_after, later(now, VALIDITY));
        assert!(pems.ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pems.key.contains("PRIVATE KEY"));
        server_config(pems.cert.as_bytes(), pems.key.as_bytes()).unwrap();
        assert_eq!(names[0], "poolwarden.poolwarden.svc");
        // Another certificate's key does not go with it.
        let (other, _) = generate(&names, now).unwrap();
        assert!(server_config(pems.cert.as_bytes(), other.key.as_bytes()).is_err());
        assert!(matches!(
            server_config(b"not pem", pems.key.as_bytes()),
            Err(TlsError::Pem(_))
        ));
    }
}
