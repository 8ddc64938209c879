//! A throwaway CA and a server certificate it signed, made with the `openssl` command.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use super::SandboxError;
use super::server::run;

/// Our own openssl configuration, so that the system's openssl.cnf cannot add or change
/// extensions. rustls (webpki) insists on a proper CA (basicConstraints CA:TRUE) and on the
/// server's address being in subjectAltName, not in the common name.
const OPENSSL_CONF: &str = "\
[req]
distinguished_name = dn
prompt = no
x509_extensions = ca_ext

[dn]
CN = poolwarden sandbox

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// The files of a TLS-enabled sandbox.
pub(crate) struct TlsFiles {
    pub(crate) ca_cert: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
}

impl TlsFiles {
    /// Writes a CA and a server certificate for `127.0.0.1` and `localhost` into `dir`.
    pub(crate) fn generate(dir: &Path) -> Result<TlsFiles, SandboxError> {
        fs::create_dir_all(dir)
            .map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
        let conf = dir.join("openssl.cnf");
        fs::write(&conf, OPENSSL_CONF)
            .map_err(|e| SandboxError::io(format!("writing {}", conf.display()), e))?;
        let files = TlsFiles {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        };
        let ca_key = dir.join("ca.key");
        let csr = dir.join("server.csr");

        // P-256 keys: generated in milliseconds, unlike RSA, and both rustls and OpenSSL take them.
        let mut ca = openssl(dir);
        ca.args(["req", "-x509", "-new", "-config"])
            .arg(&conf)
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-nodes", "-sha256", "-days", "30"])
            .args(["-subj", "/CN=poolwarden sandbox CA"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&files.ca_cert);
        run(ca)?;

        let mut request = openssl(dir);
        request
            .args(["req", "-new", "-config"])
            .arg(&conf)
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-nodes", "-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(&files.server_key)
            .arg("-out")
            .arg(&csr);
        run(request)?;

        let mut sign = openssl(dir);
        sign.args(["x509", "-req", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&files.ca_cert)
            .arg("-CAkey")
            .arg(&ca_key)
            .args(["-set_serial", &serial(), "-days", "30", "-sha256"])
            .arg("-extfile")
            .arg(&conf)
            .args(["-extensions", "server_ext", "-out"])
            .arg(&files.server_cert);
        run(sign)?;

        // PostgreSQL refuses a key that others can read.
        fs::set_permissions(&files.server_key, fs::Permissions::from_mode(0o600)).map_err(|e| {
            SandboxError::io(format!("restricting {}", files.server_key.display()), e)
        })?;
        Ok(files)
    }
}

fn openssl(dir: &Path) -> Command {
    let mut command = Command::new("openssl");
    // Keep openssl from reading or writing ~/.rnd and the like elsewhere.
    command.current_dir(dir).env("RANDFILE", dir.join(".rnd"));
    command
}

/// A serial number unlikely to repeat across sandboxes, which matters to clients that cache
/// certificates by issuer and serial.
fn serial() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("0x{:x}{:04x}", nanos, std::process::id() & 0xffff)
}
