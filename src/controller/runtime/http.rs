//! `/metrics`, `/healthz` (the loops the controller lives on still run: see [`Liveness`]) and
//! `/readyz` (every watch has listed once: pods, owners, PoolPolicies and Secrets; so attribution
//! can be trusted).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use super::liveness::Liveness;
use crate::controller::cluster::readiness::{Readiness, Waiting};

#[derive(Clone)]
pub struct Health {
    pub registry: Arc<Registry>,
    pub readiness: Arc<Readiness>,
    pub liveness: Arc<Liveness>,
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &h.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        ),
    }
}

async fn healthz(State(h): State<Health>) -> (StatusCode, String) {
    let ended = h.liveness.ended();
    if ended.is_empty() {
        (StatusCode::OK, "ok".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("ended while running: {}", ended.join(", ")),
        )
    }
}

async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    if h.readiness.is_ready() {
        (StatusCode::OK, "ready".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            unready(&h.readiness.waiting_for()),
        )
    }
}

/// `waiting for the first list of: pods (last failure: …), secrets`: which watches, and why.
fn unready(waiting: &[Waiting]) -> String {
    let each: Vec<String> = waiting
        .iter()
        .map(|w| match &w.last_failure {
            Some(failure) => format!("{} (last failure: {failure})", w.watch),
            None => w.watch.clone(),
        })
        .collect();
    format!("waiting for the first list of: {}", each.join(", "))
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}
