//! What keeps the controller running: one controller runtime per watched [`scope`], the
//! [`leader`] election that lets one replica act, the API [`client`], the HTTP endpoints
//! ([`http`]: [`metrics`], [`liveness`], readiness) and a [`shutdown`] within a bound.

pub(super) mod capacity_metrics;
pub(super) mod client;
pub(super) mod http;
pub(super) mod leader;
pub(super) mod liveness;
pub(super) mod metrics;
pub(super) mod scope;
pub(super) mod shutdown;
