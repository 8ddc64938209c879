//! PgBouncer's admin console: the views that say which client holds which server connection.
//!
//! Behind a pooler every server session's `client_addr` is the pooler's. PgBouncer knows the
//! rest: `SHOW SERVERS` lists its connections to PostgreSQL with their local address and port
//! (PostgreSQL's `client_addr`/`client_port`) and backend pid, each `link`ed to the client it
//! serves right now; `SHOW CLIENTS` lists the clients, whose `addr` is the pod. `SHOW POOLS` adds
//! the clients waiting for a server. [`PoolerConsole::observe`] reads the three back to back over
//! one long-lived console connection; joining them to `pg_stat_activity` is
//! [`crate::decide::pooler`]'s pure work.
//!
//! What it needs: a user in PgBouncer's `stats_users` (read-only `SHOW` access; `admin_users`
//! works too but can do far more) and a URL naming the console database, `pgbouncer`:
//! `postgres://poolwarden:…@pgbouncer.shop:6432/pgbouncer?sslmode=…`. `sslmode` and `sslrootcert`
//! mean what they mean for PostgreSQL (PgBouncer's `client_tls_*` settings decide what it
//! offers). The console speaks only the simple query protocol and knows no
//! `statement_timeout`, so every look is bounded here instead.

mod error;
mod model;
mod views;

pub use error::PoolerError;
pub use model::{CONSOLE_DATABASE, ClientRow, ConsoleSnapshot, PoolRow, ServerRow};
pub use views::{MissingColumn, Table};

use tokio_postgres::Client;

use super::ConnectOptions;
use super::pg_client::PgTarget;

/// A PgBouncer and poolwarden's connection to its admin console, reopened when it drops.
pub struct PoolerConsole {
    /// How reports name it: the policy's name for it, else its `host:port`.
    name: String,
    target: PgTarget,
    options: ConnectOptions,
    client: Option<Client>,
}

impl std::fmt::Debug for PoolerConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolerConsole")
            .field("target", &self.target.display())
            .field("connected", &self.client.is_some())
            .finish()
    }
}

impl PoolerConsole {
    /// Parses `url`; nothing is connected until the first look. A URL without a database names
    /// the console; one that names another database is refused.
    pub fn new(url: &str, options: ConnectOptions) -> Result<Self, PoolerError> {
        let target = PgTarget::parse_without_server_options(&with_console_database(url), options)
            .map_err(error::from_parse)?;
        if target.dbname() != Some(CONSOLE_DATABASE) {
            return Err(PoolerError::InvalidUrl(format!(
                "a pooler URL names PgBouncer's admin console, database {CONSOLE_DATABASE:?}: \
                 postgres://user:password@host:6432/{CONSOLE_DATABASE}"
            )));
        }
        let name = target
            .display()
            .trim_end_matches(&format!("/{CONSOLE_DATABASE}"))
            .to_owned();
        Ok(Self {
            name,
            target,
            options,
            client: None,
        })
    }

    /// The same console, named `name` in reports (a policy's name for the pooler).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The policy's name for the pooler, else its console's `host:port`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses `url` and connects once, so that a bad URL, password or address fails right here.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self, PoolerError> {
        let mut console = Self::new(url, options)?;
        console.client().await?;
        Ok(console)
    }

    /// `host:port/pgbouncer`, never the password.
    pub fn display(&self) -> &str {
        self.target.display()
    }

    /// Reads `SHOW SERVERS`, `SHOW CLIENTS` and `SHOW POOLS`, sent together (one round trip).
    /// A login (when the connection must be opened) is bounded by the options' connect timeout,
    /// the three views by their statement timeout.
    pub async fn observe(&mut self) -> Result<ConsoleSnapshot, PoolerError> {
        let result = self.read().await;
        if let Err(e) = &result
            && e.spoils_connection()
        {
            // A late answer would arrive in the middle of the next look.
            self.client = None;
        }
        result
    }

    async fn read(&mut self) -> Result<ConsoleSnapshot, PoolerError> {
        let waited = self.options.statement_timeout;
        let target = self.target.display().to_owned();
        let client = self.client().await?;
        let queries = async {
            tokio::try_join!(
                client.simple_query("SHOW SERVERS"),
                client.simple_query("SHOW CLIENTS"),
                client.simple_query("SHOW POOLS"),
            )
        };
        let (servers, clients, pools) = tokio::time::timeout(waited, queries)
            .await
            .map_err(|_| PoolerError::Timeout {
                target: target.clone(),
                waited,
            })?
            .map_err(|e| error::classify_query(&e, &target))?;
        views::read(
            &Table::from_messages("SERVERS", &servers),
            &Table::from_messages("CLIENTS", &clients),
            &Table::from_messages("POOLS", &pools),
        )
        .map_err(|missing| PoolerError::missing_column(&target, missing))
    }

    /// The open console connection, reopened if it was lost.
    async fn client(&mut self) -> Result<&Client, PoolerError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            // The driver's connect timeout covers the TCP connect only; a pooler that accepts
            // and then says nothing would hold the login forever.
            let waited = self.options.connect_timeout;
            let client = tokio::time::timeout(waited, self.target.open())
                .await
                .map_err(|_| PoolerError::Timeout {
                    target: self.target.display().to_owned(),
                    waited,
                })?
                .map_err(|e| error::classify_connect(&e, self.target.display()))?;
            tracing::info!(
                pooler = self.target.display(),
                "pooler console connection open"
            );
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| PoolerError::ConnectionLost {
                target: self.target.display().to_owned(),
                detail: "no connection".into(),
            })
    }
}

/// `url` with the console database filled in when it names none: `…:6432` and `…:6432/` become
/// `…:6432/pgbouncer`, so that the driver does not fall back to the user's name.
fn with_console_database(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let path = base[after_scheme..].find('/').map(|i| after_scheme + i);
    let base = match path {
        Some(slash) if slash + 1 < base.len() => base.to_owned(),
        Some(slash) => format!("{}/{CONSOLE_DATABASE}", &base[..slash]),
        None => format!("{base}/{CONSOLE_DATABASE}"),
    };
    match query {
        Some(query) => format!("{base}?{query}"),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(url: &str) -> Result<PoolerConsole, PoolerError> {
        PoolerConsole::new(url, ConnectOptions::default())
    }

    #[test]
    fn a_url_without_a_database_names_the_console() {
        for url in [
            "postgres://stats:pw@pooler:6432",
            "postgres://stats:pw@pooler:6432/",
            "postgresql://stats:pw@pooler:6432/pgbouncer",
            "postgres://stats:pw@pooler:6432?sslmode=require",
        ] {
            let console = new(url).unwrap();
            assert_eq!(console.display(), "pooler:6432/pgbouncer", "{url}");
            assert_eq!(console.name(), "pooler:6432", "{url}");
        }
    }

    #[test]
    fn another_database_or_scheme_is_refused_with_the_form_to_use() {
        let err = new("postgres://stats:pw@pooler:6432/shop").unwrap_err();
        assert!(matches!(err, PoolerError::InvalidUrl(_)), "{err}");
        assert!(err.to_string().contains("/pgbouncer"), "{err}");
        let err = new("mysql://stats:pw@pooler:6432").unwrap_err();
        assert!(matches!(err, PoolerError::InvalidUrl(_)), "{err}");
        let err = new("postgres://s@p/pgbouncer?sslmode=verify-full&sslrootcert=/nonexistent.pem")
            .unwrap_err();
        assert!(matches!(err, PoolerError::Tls(_)), "{err}");
    }

    #[test]
    fn never_shows_the_password() {
        let console = new("postgres://stats:s3cret@pooler:6432/pgbouncer").unwrap();
        assert!(!format!("{console:?}").contains("s3cret"));
        assert!(!console.display().contains("s3cret"));
    }
}
