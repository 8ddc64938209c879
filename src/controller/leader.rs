//! Leader election on a `Lease`: several replicas may run, exactly one acts.
//!
//! The lease manager releases the Lease when the last receiver of its state channel goes away.
//! That receiver stays private here, copied into a channel of our own, so that `release` works
//! however many parts of the controller still watch the state.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// This replica's place in the election.
pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    forward: Option<JoinHandle<()>>,
    manager: Option<JoinHandle<kube_lease_manager::Result<LeaseManager>>>,
    _always: Option<watch::Sender<bool>>,
}

impl Leadership {
    /// Campaigns for `namespace/lease_name` as `identity`, renewing in the background.
    pub async fn campaign(
        client: Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
        duration_secs: u64,
    ) -> Result<Self, kube_lease_manager::LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, lease_name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_field_manager(format!("poolwarden-{identity}"))
            .with_duration(duration_secs)
            .with_grace(duration_secs.div_ceil(3).max(1))
            .build()
            .await?;
        let (mut lease_state, manager) = manager.watch().await;
        let (tx, is_leader) = watch::channel(*lease_state.borrow());
        let forward = tokio::spawn(async move {
            while lease_state.changed().await.is_ok() {
                let leading = *lease_state.borrow();
                if tx.send(leading).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            is_leader,
            forward: Some(forward),
            manager: Some(manager),
            _always: None,
        })
    }

    /// No election: this replica always leads (one replica, or leader election turned off).
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Self {
            is_leader: rx,
            forward: None,
            manager: None,
            _always: Some(tx),
        }
    }

    /// Gives the lease up so another replica can take over at once.
    pub async fn release(mut self) {
        if let Some(forward) = self.forward.take() {
            // Dropping the forwarder drops the lease manager's last receiver: it releases.
            forward.abort();
            let _ = forward.await;
        }
        let Some(manager) = self.manager.take() else {
            return;
        };
        match manager.await {
            Ok(Ok(_)) => tracing::info!("lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed"),
            Err(e) => tracing::warn!(error = %e, "lease task failed"),
        }
    }
}
