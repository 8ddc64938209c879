//! Leader election on a `Lease`: several replicas may run, exactly one acts.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// This replica's place in the election.
pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    task: Option<JoinHandle<kube_lease_manager::Result<LeaseManager>>>,
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
        let (is_leader, task) = manager.watch().await;
        Ok(Self {
            is_leader,
            task: Some(task),
            _always: None,
        })
    }

    /// No election: this replica always leads (one replica, or leader election turned off).
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Self {
            is_leader: rx,
            task: None,
            _always: Some(tx),
        }
    }

    /// Gives the lease up so another replica can take over at once.
    pub async fn release(mut self) {
        let Some(task) = self.task.take() else { return };
        // Closing every receiver tells the lease manager to release and stop.
        drop(self.is_leader);
        match task.await {
            Ok(Ok(_)) => tracing::info!("lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed"),
            Err(e) => tracing::warn!(error = %e, "lease task failed"),
        }
    }
}
