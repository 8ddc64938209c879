//! PostgreSQL behind the [`Engine`](crate::database::Engine) seam: one long-lived monitoring
//! connection, reopened when it drops.
//!
//! The connection is kept open between cycles on purpose: when the server is full, new
//! connections are refused exactly when poolwarden is needed most, but an established one can
//! still observe and terminate.

mod connect;
mod snapshot;
mod terminate;
mod tls;

pub use connect::{APPLICATION_NAME, ConnectOptions, Target};
pub use snapshot::BARE_QUERY;
pub use tls::SslMode;

use tokio_postgres::Client;

use crate::database::{DatabaseError, Engine, SessionIdentity, Snapshot};

/// A PostgreSQL server and poolwarden's monitoring connection to it.
pub struct Postgres {
    target: Target,
    client: Option<Client>,
}

impl Postgres {
    /// Prepares the target; nothing is connected until the first call.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            client: None,
        }
    }

    /// Parses `url` and connects once, so that a bad URL, password or address fails right here.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, DatabaseError> {
        let mut pg = Self::new(Target::parse(url, options)?);
        pg.client().await?;
        Ok(pg)
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The open monitoring connection, reopened if it was lost.
    pub async fn client(&mut self) -> Result<&Client, DatabaseError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let client = self.target.connect().await?;
            tracing::info!(target = self.target.display(), "monitoring connection open");
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| DatabaseError::ConnectionLost("no connection".into()))
    }

    /// Drops the connection after a failure that may have left it unusable.
    fn forget_if_lost(&mut self, error: &DatabaseError) {
        if matches!(error, DatabaseError::ConnectionLost(_)) {
            self.client = None;
        }
    }

    /// Runs the bare `SELECT * FROM pg_stat_activity` (for benchmarks), returning the row count.
    pub async fn bare_activity_query(&mut self) -> Result<usize, DatabaseError> {
        let client = self.client().await?;
        // Sent the way the snapshot's statements are, so that the two compare like for like.
        let rows = client
            .query_typed(BARE_QUERY, &[])
            .await
            .map_err(connect::classify_query_error)?;
        Ok(rows.len())
    }
}

impl Engine for Postgres {
    async fn observe(&mut self) -> Result<Snapshot, DatabaseError> {
        let result = snapshot::take(self.client().await?).await;
        if let Err(e) = &result {
            self.forget_if_lost(e);
        }
        result
    }

    async fn terminate(&mut self, sessions: &[SessionIdentity]) -> Result<Vec<i32>, DatabaseError> {
        let result = terminate::verified(self.client().await?, sessions).await;
        if let Err(e) = &result {
            self.forget_if_lost(e);
        }
        result
    }
}
