//! PostgreSQL behind the [`Engine`](crate::database::Engine) seam: one long-lived monitoring
//! connection, reopened when it drops.
//!
//! The connection is kept open between cycles on purpose: when the server is full, new
//! connections are refused exactly when poolwarden is needed most, but an established one can
//! still observe and terminate.
//!
//! Each observation also samples churn ([`churn::sample_churn`], half a second of quick looks
//! at new backends) when sessions were opened at more than
//! [`CHURN_TRIGGER`](crate::database::churn::CHURN_TRIGGER) per second since the previous
//! observation, and on the first observation (when there is nothing to compare with): a quiet
//! server pays nothing for it. It connects through [`pg_client`](crate::database::pg_client).

mod churn;
mod snapshot;
mod terminate;

#[cfg(feature = "bench")]
pub use snapshot::BARE_QUERY;
pub use snapshot::Reading;

use tokio_postgres::Client;

use jiff::Timestamp;

use crate::database::churn::churn_sample_due;
use crate::database::pg_client::{PgTarget, classify_query_error};
use crate::database::{
    ChurnLooks, ConnectOptions, DatabaseError, Engine, SessionIdentity, Snapshot, Verdict,
    server_full_advice,
};

/// A PostgreSQL server and poolwarden's monitoring connection to it.
pub struct Postgres {
    target: PgTarget,
    client: Option<Client>,
    /// `server_version_num` as last seen, so that a refused reconnect gets advice for its version.
    version_num: Option<u32>,
    /// `(observed_at, sessions opened)` of the previous observation: whether to sample churn.
    last_count: Option<(Timestamp, i64)>,
    looks: ChurnLooks,
    /// What the next observation reads of each session's statement.
    reading: Reading,
}

impl Postgres {
    /// Prepares the target; nothing is connected until the first call.
    pub fn new(target: PgTarget) -> Self {
        Self {
            target,
            client: None,
            version_num: None,
            last_count: None,
            looks: ChurnLooks::default(),
            reading: Reading {
                statements: true,
                query_id: false,
            },
        }
    }

    /// Paces the churn sampling differently (the benchmarks measure what it costs).
    #[cfg(feature = "bench")]
    pub fn with_churn_looks(mut self, looks: ChurnLooks) -> Self {
        self.looks = looks;
        self
    }

    /// Parses `url` and connects once, so that a bad URL, password or address fails right here.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, DatabaseError> {
        let mut pg = Self::new(PgTarget::parse(url, options)?);
        pg.client().await?;
        Ok(pg)
    }

    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// The open monitoring connection, reopened if it was lost.
    pub async fn client(&mut self) -> Result<&Client, DatabaseError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let client = self.target.connect().await.map_err(|e| match e {
                DatabaseError::ServerFull { detail, .. } => DatabaseError::ServerFull {
                    advice: server_full_advice(self.version_num, &detail),
                    detail,
                },
                other => other,
            })?;
            tracing::info!(target = self.target.display(), "monitoring connection open");
            // `query_id` exists from PostgreSQL 14 on; asked once per connection, so that even
            // the first look reads it.
            let version: i32 = client
                .query_typed_one("SELECT current_setting('server_version_num')::int", &[])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(classify_query_error)?;
            self.reading.query_id = version >= 140_000;
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

    /// Observes and samples churn whatever the rate (for benchmarks: what a sampled cycle costs).
    #[cfg(feature = "bench")]
    pub async fn observe_with_churn_sample(&mut self) -> Result<Snapshot, DatabaseError> {
        let looks = self.looks;
        // Connected first: the connection says whether `query_id` can be read.
        self.client().await?;
        let reading = self.reading;
        let client = self.client().await?;
        let (mut snapshot, statements) = snapshot::take(client, reading).await?;
        snapshot.churn =
            Some(churn::sample_churn(client, &snapshot, looks, reading, &statements).await?);
        Ok(snapshot)
    }

    /// Runs the bare `SELECT * FROM pg_stat_activity` (for benchmarks), returning the row count.
    #[cfg(feature = "bench")]
    pub async fn bare_activity_query(&mut self) -> Result<usize, DatabaseError> {
        let client = self.client().await?;
        // Sent the way the snapshot's statements are, so that the two compare like for like.
        let rows = client
            .query_typed(BARE_QUERY, &[])
            .await
            .map_err(classify_query_error)?;
        Ok(rows.len())
    }
}

impl Postgres {
    async fn observe_and_sample(&mut self) -> Result<Snapshot, DatabaseError> {
        let looks = self.looks;
        let previous = self.last_count;
        let first = self.version_num.is_none();
        // Connected first: the connection says whether `query_id` can be read.
        self.client().await?;
        let reading = self.reading;
        let client = self.client().await?;
        let (mut snapshot, statements) = snapshot::take(client, reading).await?;
        if churn_sample_due(previous, &snapshot, first) {
            snapshot.churn =
                Some(churn::sample_churn(client, &snapshot, looks, reading, &statements).await?);
        }
        self.version_num = Some(snapshot.server.version_num);
        self.last_count = snapshot
            .sessions_opened_total
            .map(|n| (snapshot.observed_at, n));
        Ok(snapshot)
    }
}

impl Engine for Postgres {
    async fn observe(&mut self) -> Result<Snapshot, DatabaseError> {
        let result = self.observe_and_sample().await;
        if let Err(e) = &result {
            self.forget_if_lost(e);
        }
        result
    }

    async fn terminate(
        &mut self,
        sessions: &[SessionIdentity],
    ) -> Result<Vec<Verdict>, DatabaseError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let result = terminate::verified(self.client().await?, sessions).await;
        if let Err(e) = &result {
            self.forget_if_lost(e);
        }
        result
    }

    fn is_connected(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    fn read_statements(&mut self, read: bool) {
        self.reading.statements = read;
    }
}
