//! HTTPS for the webhook: `POST /validate` only, HTTP/1.1, each connection's TLS handshake
//! bounded in time and done on its own task (a slow client holds up nobody). The certificate is
//! obtained before the port opens (until then the API server finds nothing listening, and goes
//! on), then looked at again every [`REFRESH`]: a self-made one is renewed when due and its CA
//! written back into the webhook configuration if anyone emptied it; cert-manager's files are
//! re-read (it renews them in place).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::certificate::{self, CertificateError};
use super::tls::{self, TlsError};
use super::{Certificate, Judge, WebhookConfig, review};

/// How often the certificate is looked at again.
const REFRESH: Duration = Duration::from_secs(600);
/// A connection that has not finished its TLS handshake by then is dropped.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// Retries of a certificate that cannot be had yet (RBAC, the API server): from this, doubling.
const FIRST_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
enum Trouble {
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The serving configuration as it should be now, and the CA (self-made only).
async fn current(
    config: &WebhookConfig,
    client: &kube::Client,
) -> Result<Arc<ServerConfig>, Trouble> {
    match &config.certificate {
        Certificate::SelfManaged(placement) => {
            let pems = certificate::shared(client, placement).await?;
            certificate::keep_ca_bundle(client, placement, &pems.ca).await?;
            Ok(tls::server_config(
                pems.cert.as_bytes(),
                pems.key.as_bytes(),
            )?)
        }
        Certificate::Files(dir) => {
            let (cert, key) = tls::read_dir(dir)?;
            Ok(tls::server_config(&cert, &key)?)
        }
    }
}

async fn validate(State(judge): State<Judge>, body: Bytes) -> Response {
    match review::answer(&body, |request| judge.warnings(request)) {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(bad) => {
            tracing::debug!(error = %bad, "the webhook was sent something it cannot answer");
            (StatusCode::BAD_REQUEST, bad.to_string()).into_response()
        }
    }
}

/// Obtains the certificate, opens the port, and serves until `stopped`.
pub async fn serve(
    config: WebhookConfig,
    client: kube::Client,
    judge: Judge,
    stopped: impl Future<Output = ()> + Send + 'static,
) {
    let mut stopped = std::pin::pin!(stopped);
    let mut retry = FIRST_RETRY;
    let first = loop {
        match current(&config, &client).await {
            Ok(tls) => break tls,
            Err(trouble) => {
                tracing::warn!(error = %trouble, retry_in = ?retry, "the webhook has no certificate yet: not serving");
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(REFRESH);
            }
        }
    };
    let tls = Arc::new(RwLock::new(first));
    let refreshing = tokio::spawn(refresh(config.clone(), client, tls.clone()));
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(addr = %config.addr, %error, "cannot serve the webhook");
            refreshing.abort();
            return;
        }
    };
    tracing::info!(addr = %config.addr, "serving the admission webhook (HTTPS, POST /validate)");
    let router = Router::new()
        .route("/validate", post(validate))
        .with_state(judge);
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let acceptor = TlsAcceptor::from(tls.read().unwrap_or_else(|e| e.into_inner()).clone());
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    refreshing.abort();
}

/// Every [`REFRESH`], the certificate as it should be now; a failure keeps the one in use.
async fn refresh(config: WebhookConfig, client: kube::Client, tls: Arc<RwLock<Arc<ServerConfig>>>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        match current(&config, &client).await {
            Ok(fresh) => *tls.write().unwrap_or_else(|e| e.into_inner()) = fresh,
            Err(trouble) => {
                tracing::warn!(error = %trouble, "the webhook's certificate could not be refreshed; serving the one it has")
            }
        }
    }
}
