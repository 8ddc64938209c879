//! What the rest of the controller does with leadership: say when this replica starts and stops
//! leading (in the log and `poolwarden_leader`), reconcile every policy at once on becoming the
//! leader, and the identity a replica campaigns under.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::watch as signal;

use crate::controller::runtime::metrics::Metrics;

/// Says, and shows in `poolwarden_leader`, when this replica starts and stops leading.
pub async fn follow_leadership(
    mut leader: signal::Receiver<bool>,
    metrics: Arc<Metrics>,
    identity: String,
) {
    let mut leading = false;
    loop {
        let now = *leader.borrow_and_update();
        metrics.leader.set(i64::from(now));
        match (leading, now) {
            (false, true) => tracing::info!(%identity, "leading: reconciling PoolPolicies"),
            (true, false) => tracing::warn!(%identity, "no longer leading: not acting"),
            (false, false) => tracing::info!(%identity, "waiting to lead"),
            (true, true) => {}
        }
        leading = now;
        if leader.changed().await.is_err() {
            return;
        }
    }
}

/// Fires each time this replica becomes the leader: every policy is reconciled at once then,
/// not at the end of the interval it was last put off by.
pub fn became_leader(leader: signal::Receiver<bool>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(leader, |mut leader| async move {
        loop {
            leader.changed().await.ok()?;
            if *leader.borrow_and_update() {
                return Some(((), leader));
            }
        }
    })
}

/// The default identity: the pod name (downward API), else the host name and pid.
pub fn default_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "poolwarden".into());
        format!("{host}-{}", std::process::id())
    })
}
