//! `ssl-mode` as MySQL's clients mean it, on `mysql_async`'s rustls (ring), with `ssl-ca` for a
//! private CA.
//!
//! | ssl-mode | encrypted | chain checked against | host name checked |
//! |---|---|---|---|
//! | DISABLED | no | – | – |
//! | PREFERRED (default) | if the server offers it | no | no |
//! | REQUIRED | yes | no (`ssl-ca` when given, as with PostgreSQL's `sslmode=require`) | no |
//! | VERIFY_CA | yes | `ssl-ca` (required) | no |
//! | VERIFY_IDENTITY | yes | `ssl-ca`, else the web PKI roots | yes |
//!
//! `mysql_async` 0.37 cannot check a chain without the name (its "skip domain validation"
//! looks for a word rustls no longer prints), so for a chain-only check poolwarden first opens a
//! short probe connection: it asks for TLS as a client would, checks the server's chain against
//! `ssl-ca` with rustls itself, and learns a name the certificate is valid for. The real
//! connection then checks the chain *and* that name, which is the same promise: a certificate the
//! CA signed. The probe costs one extra TLS handshake per (re)connect, never per cycle.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mysql_async::SslOpts;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use crate::database::DatabaseError;

/// Where the server is, as the TLS probe needs it: the host as the URL names it, the port, and
/// how long a connection may take.
#[derive(Clone, Debug)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub timeout: std::time::Duration,
}

/// MySQL's `--ssl-mode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MySqlSslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl MySqlSslMode {
    pub fn parse(value: &str) -> Result<Self, DatabaseError> {
        Ok(match value.to_ascii_uppercase().as_str() {
            "DISABLED" => Self::Disabled,
            "PREFERRED" => Self::Preferred,
            "REQUIRED" => Self::Required,
            "VERIFY_CA" => Self::VerifyCa,
            "VERIFY_IDENTITY" => Self::VerifyIdentity,
            _ => {
                return Err(DatabaseError::InvalidUrl(format!(
                    "ssl-mode={value} is not supported; use DISABLED, PREFERRED, REQUIRED, \
                     VERIFY_CA or VERIFY_IDENTITY"
                )));
            }
        })
    }
}

/// The mode and the CA, checked when the URL is parsed.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub mode: MySqlSslMode,
    ca: Option<PathBuf>,
}

impl TlsSettings {
    pub fn new(mode: MySqlSslMode, ca: Option<&Path>) -> Result<Self, DatabaseError> {
        if mode == MySqlSslMode::VerifyCa && ca.is_none() {
            return Err(DatabaseError::InvalidUrl(
                "ssl-mode=VERIFY_CA needs ssl-ca=/path/to/ca.pem, the CA that signed the server's \
                 certificate"
                    .into(),
            ));
        }
        if let Some(path) = ca {
            read_roots(path)?;
        }
        Ok(Self {
            mode,
            ca: ca.map(Path::to_owned),
        })
    }

    /// `mysql_async`'s options for a connection to `peer`, or `None` for plain text.
    pub async fn ssl_opts(&self, peer: &Peer) -> Result<Option<SslOpts>, DatabaseError> {
        let trust_any = SslOpts::default()
            .with_danger_accept_invalid_certs(true)
            .with_danger_skip_domain_validation(true);
        let with_ca = |ca: &Path| {
            SslOpts::default()
                .with_root_certs(vec![ca.to_owned().into()])
                .with_disable_built_in_roots(true)
        };
        Ok(Some(match (self.mode, &self.ca) {
            (MySqlSslMode::Disabled, _) => return Ok(None),
            (MySqlSslMode::Preferred, _) | (MySqlSslMode::Required, None) => trust_any,
            (MySqlSslMode::Required | MySqlSslMode::VerifyCa, Some(ca)) => {
                let name = certified_name(peer, ca).await?;
                let opts = with_ca(ca);
                match name {
                    Some(name) => opts.with_danger_tls_hostname_override(Some(name)),
                    None => opts,
                }
            }
            (MySqlSslMode::VerifyIdentity, Some(ca)) => with_ca(ca),
            (MySqlSslMode::VerifyIdentity, None) => SslOpts::default(),
            (MySqlSslMode::VerifyCa, None) => unreachable!("refused by TlsSettings::new"),
        }))
    }
}

fn read_roots(path: &Path) -> Result<RootCertStore, DatabaseError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| DatabaseError::Tls(format!("cannot read ssl-ca {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(DatabaseError::Tls(format!(
            "ssl-ca {} holds no PEM certificate",
            path.display()
        )));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| {
            DatabaseError::Tls(format!("bad certificate in {}: {e}", path.display()))
        })?;
    }
    Ok(roots)
}

/// After a probe handshake whose chain `ssl-ca` vouches for: `None` when the certificate is valid
/// for the host the URL names, else a name it is valid for.
async fn certified_name(peer: &Peer, ca: &Path) -> Result<Option<String>, DatabaseError> {
    let Peer {
        host,
        port,
        timeout,
    } = peer.clone();
    let roots = read_roots(ca)?;
    let target = format!("{host}:{port}");
    let probing = tokio::task::spawn_blocking(move || probe(&host, port, timeout, roots));
    // The probe's every step has its own timeout; this bounds them together (and the name
    // lookup, which has none), so a blackholed server costs one connect timeout, not the OS's.
    match tokio::time::timeout(timeout, probing).await {
        Ok(done) => done.map_err(|e| DatabaseError::Tls(format!("the TLS probe failed: {e}")))?,
        Err(_) => Err(DatabaseError::Unreachable {
            target,
            detail: format!(
                "no TLS handshake within {} s (the probe that checks ssl-ca)",
                timeout.as_secs_f64()
            ),
        }),
    }
}

/// A TCP connection to the first of the host's addresses that answers, each tried for at most
/// `timeout` (`TcpStream::connect` alone waits as long as the OS does: minutes, when blackholed).
fn connect_within(
    host: &str,
    port: u16,
    timeout: std::time::Duration,
) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for address in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} has no address"),
        )
    }))
}

/// What the probe's verifier learned.
#[derive(Debug, Default)]
struct Learned {
    chain_ok: bool,
    /// Names the certificate is valid for, when the host is not one of them.
    other_names: Option<Vec<String>>,
}

fn probe(
    host: &str,
    port: u16,
    timeout: std::time::Duration,
    roots: RootCertStore,
) -> Result<Option<String>, DatabaseError> {
    let io = |e: std::io::Error| DatabaseError::Unreachable {
        target: format!("{host}:{port}"),
        detail: e.to_string(),
    };
    let mut stream = connect_within(host, port, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    request_tls(&mut stream).map_err(|e| match e {
        ProbeError::Io(e) => io(e),
        ProbeError::Refused(detail) => DatabaseError::Unreachable {
            target: format!("{host}:{port}"),
            detail,
        },
        ProbeError::NoTls => DatabaseError::TlsNotOffered {
            target: format!("{host}:{port}"),
        },
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| DatabaseError::Tls(e.to_string()))?;
    let learned = Arc::new(Mutex::new(Learned::default()));
    let verifier = Arc::new(Recorder {
        inner,
        learned: learned.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DatabaseError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| DatabaseError::Tls(format!("{host} is not a valid TLS name: {e}")))?;
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| DatabaseError::Tls(e.to_string()))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut stream)
            .map_err(|e| DatabaseError::Tls(format!("TLS handshake with {host}:{port}: {e}")))?;
    }
    // Say goodbye politely; the server counts an aborted connection either way.
    tls.send_close_notify();
    let _ = tls.complete_io(&mut stream);
    let learned = learned
        .lock()
        .map_err(|_| DatabaseError::Tls("the TLS probe's verifier panicked".into()))?;
    if !learned.chain_ok {
        return Err(DatabaseError::Tls(format!(
            "the certificate of {host}:{port} is not signed by ssl-ca"
        )));
    }
    match &learned.other_names {
        None => Ok(None),
        Some(names) => names.first().cloned().map(Some).ok_or_else(|| {
            DatabaseError::Tls(format!(
                "the certificate of {host}:{port} names no host (subjectAltName), which \
                 ssl-mode=VERIFY_CA needs here; use VERIFY_IDENTITY with a certificate for the host"
            ))
        }),
    }
}

enum ProbeError {
    Io(std::io::Error),
    Refused(String),
    NoTls,
}

impl From<std::io::Error> for ProbeError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Reads the server's greeting and answers with an `SSLRequest`, as every MySQL client does
/// before its TLS handshake.
fn request_tls(stream: &mut TcpStream) -> Result<(), ProbeError> {
    const CLIENT_LONG_PASSWORD: u32 = 1;
    const CLIENT_PROTOCOL_41: u32 = 0x200;
    const CLIENT_SSL: u32 = 0x800;
    const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut greeting = vec![0u8; len];
    stream.read_exact(&mut greeting)?;
    if greeting.first() == Some(&0xff) {
        // An error packet: code (2 bytes), then the message (after a SQL state on 4.1+).
        let text = String::from_utf8_lossy(greeting.get(3..).unwrap_or_default()).into_owned();
        let message = match text.strip_prefix('#') {
            Some(rest) => rest.get(5..).unwrap_or_default().to_owned(),
            None => text,
        };
        return Err(ProbeError::Refused(message));
    }
    // protocol version, server version (NUL-terminated), thread id (4), auth data (8), filler (1),
    // then the lower two bytes of the capabilities.
    let version_end = greeting
        .iter()
        .skip(1)
        .position(|b| *b == 0)
        .map(|p| p + 1)
        .ok_or(ProbeError::NoTls)?;
    let caps_at = version_end + 1 + 4 + 8 + 1;
    let caps = greeting
        .get(caps_at..caps_at + 2)
        .map(|b| u32::from(b[0]) | u32::from(b[1]) << 8)
        .ok_or(ProbeError::NoTls)?;
    if caps & CLIENT_SSL == 0 {
        return Err(ProbeError::NoTls);
    }
    let flags = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION;
    let mut packet = vec![32, 0, 0, 1];
    packet.extend_from_slice(&flags.to_le_bytes());
    packet.extend_from_slice(&(16u32 << 20).to_le_bytes());
    packet.push(45); // utf8mb4_general_ci
    packet.extend_from_slice(&[0u8; 23]);
    stream.write_all(&packet)?;
    Ok(())
}

/// Checks the chain with webpki and remembers whether it held and which names the certificate
/// is valid for when the host is not among them; the probe's handshake goes on either way.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    learned: Arc<Mutex<Learned>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let outcome = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let mut learned = self
            .learned
            .lock()
            .map_err(|_| Error::General("poisoned".into()))?;
        match outcome {
            Ok(verified) => {
                learned.chain_ok = true;
                Ok(verified)
            }
            // webpki checks the name only once the chain holds.
            Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            })) => {
                learned.chain_ok = true;
                learned.other_names = Some(presented);
                Ok(ServerCertVerified::assertion())
            }
            Err(Error::InvalidCertificate(CertificateError::NotValidForName)) => {
                learned.chain_ok = true;
                learned.other_names = Some(Vec::new());
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
