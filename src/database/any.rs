//! The engine a database URL names, chosen by its scheme.
//!
//! Everything that starts from a URL (`check`, `run`, the controller's Secret) goes through
//! [`AnyEngine`], so that adding an engine is one variant here and nothing above this module
//! changes: `postgres://` and `postgresql://` for PostgreSQL, `mysql://` and `mariadb://` for
//! MySQL and MariaDB.

use super::ConnectOptions;
use super::mysql::{self, MySql};
use super::pg_client::PgTarget;
use super::postgres::Postgres;
use super::{DatabaseError, Engine, SessionIdentity, Snapshot, Verdict};

/// One of the engines poolwarden speaks.
pub enum AnyEngine {
    Postgres(Postgres),
    MySql(MySql),
}

impl AnyEngine {
    /// Parses `url` and prepares the engine its scheme names; nothing is connected yet.
    pub fn for_url(url: &str, options: ConnectOptions) -> Result<Self, DatabaseError> {
        if mysql::is_mysql_url(url) {
            return Ok(Self::MySql(MySql::new(mysql::MySqlTarget::parse(
                url, options,
            )?)));
        }
        Ok(Self::Postgres(Postgres::new(PgTarget::parse(
            url, options,
        )?)))
    }

    /// Parses `url` and connects once, so that a bad URL, password or address fails right here.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, DatabaseError> {
        if mysql::is_mysql_url(url) {
            return Ok(Self::MySql(MySql::connect(url, options).await?));
        }
        Ok(Self::Postgres(Postgres::connect(url, options).await?))
    }

    /// The target without credentials, for people to read.
    pub fn display(&self) -> &str {
        match self {
            Self::Postgres(pg) => pg.target().display(),
            Self::MySql(my) => my.target().display(),
        }
    }

    /// A short, bounded engine name (a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::MySql(_) => "mysql",
        }
    }
}

impl Engine for AnyEngine {
    async fn observe(&mut self) -> Result<Snapshot, DatabaseError> {
        match self {
            Self::Postgres(pg) => pg.observe().await,
            Self::MySql(my) => my.observe().await,
        }
    }

    async fn terminate(
        &mut self,
        sessions: &[SessionIdentity],
    ) -> Result<Vec<Verdict>, DatabaseError> {
        match self {
            Self::Postgres(pg) => pg.terminate(sessions).await,
            Self::MySql(my) => my.terminate(sessions).await,
        }
    }

    fn is_connected(&self) -> bool {
        match self {
            Self::Postgres(pg) => pg.is_connected(),
            Self::MySql(my) => my.is_connected(),
        }
    }

    fn read_statements(&mut self, read: bool) {
        match self {
            Self::Postgres(pg) => pg.read_statements(read),
            Self::MySql(my) => my.read_statements(read),
        }
    }
}
