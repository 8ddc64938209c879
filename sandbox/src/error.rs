//! What went wrong in the sandbox, with what to do about it where the fix is the machine's (a
//! missing binary, a refusal to run as root).

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::error::{DbError, SqlState};

/// What went wrong in the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found: looked in \
         $POOLWARDEN_PG_BIN, /usr/lib/postgresql/*/bin, `pg_config --bindir` and PATH; \
         install them with `apt-get install postgresql` or point POOLWARDEN_PG_BIN at their folder"
    )]
    NoBinaries,

    #[error("the binaries folder {} has no {missing}", path.display())]
    BadBinDir { path: PathBuf, missing: String },

    #[error(
        "PostgreSQL refuses to run as root, and the `postgres` OS user to run it as does not \
         exist (`apt-get install postgresql` creates it)"
    )]
    NoServerUser,

    #[error(
        "no MariaDB server binaries (mariadbd, mariadb-install-db) found: looked in \
         $POOLWARDEN_MARIADB_BIN, /usr/sbin, /usr/bin and PATH; install them with \
         `apt-get install mariadb-server` or point POOLWARDEN_MARIADB_BIN at their folder"
    )]
    NoMariaDbBinaries,

    #[error(
        "MariaDB will not run as root, and the `mysql` OS user to run it as does not exist \
         (`apt-get install mariadb-server` creates it)"
    )]
    NoMariaDbUser,

    #[error("{context}: {detail}")]
    MySql {
        context: String,
        detail: String,
        #[source]
        source: mysql_async::Error,
    },

    #[error(
        "no pgbouncer binary found: looked at $POOLWARDEN_PGBOUNCER, /usr/sbin/pgbouncer and PATH; \
         install it with `apt-get install pgbouncer` (scripts/setup does) or point \
         POOLWARDEN_PGBOUNCER at it"
    )]
    NoPgBouncer,

    #[error("POOLWARDEN_PGBOUNCER is {}, which is not an executable file", path.display())]
    BadPgBouncer { path: PathBuf },

    /// The log lives in the pooler's directory, which is gone by the time this is returned.
    #[error("PgBouncer did not start; end of its log:\n{log_tail}")]
    PgBouncerStart { log_tail: String },

    #[error("invalid sandbox setting {name:?}: {reason}")]
    InvalidSetting { name: String, reason: &'static str },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },

    /// The log lives in the sandbox's directory, which is gone by the time this is returned,
    /// hence its tail here.
    #[error(
        "PostgreSQL did not start; pg_ctl said:\n{pg_ctl_output}\nend of the server log:\n{log_tail}"
    )]
    Start {
        pg_ctl_output: String,
        log_tail: String,
    },

    #[error("{context}: {detail}")]
    Postgres {
        context: String,
        /// The error with its causes, which `tokio_postgres::Error`'s own message leaves out.
        detail: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error(
        "backend {pid} did not reach state {state:?} within {waited:?} (last seen: {last_seen})"
    )]
    StateTimeout {
        pid: i64,
        state: String,
        waited: Duration,
        last_seen: String,
    },

    #[error("{0}")]
    Unexpected(String),
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn postgres(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        let mut detail = source.to_string();
        let mut cause = std::error::Error::source(&source);
        while let Some(inner) = cause {
            detail.push_str(": ");
            detail.push_str(&inner.to_string());
            cause = inner.source();
        }
        SandboxError::Postgres {
            context: context.into(),
            detail,
            source,
        }
    }

    pub(crate) fn mysql(context: impl Into<String>, source: mysql_async::Error) -> Self {
        let mut detail = source.to_string();
        let mut cause = std::error::Error::source(&source);
        while let Some(inner) = cause {
            detail.push_str(": ");
            detail.push_str(&inner.to_string());
            cause = inner.source();
        }
        SandboxError::MySql {
            context: context.into(),
            detail,
            source,
        }
    }

    /// The same error, its context prefixed with what the caller was doing.
    pub(crate) fn within(self, outer: &str) -> Self {
        match self {
            SandboxError::Io { context, source } => SandboxError::Io {
                context: format!("{outer}: {context}"),
                source,
            },
            SandboxError::Postgres {
                context,
                detail,
                source,
            } => SandboxError::Postgres {
                context: format!("{outer}: {context}"),
                detail,
                source,
            },
            other => other,
        }
    }

    /// The server's error report, when the server refused something (e.g. a wrong password).
    pub fn as_db_error(&self) -> Option<&DbError> {
        match self {
            SandboxError::Postgres { source, .. } => source.as_db_error(),
            _ => None,
        }
    }

    /// The SQLSTATE of the server's error, e.g. `SqlState::INVALID_PASSWORD`.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            SandboxError::Postgres { source, .. } => source.code(),
            _ => None,
        }
    }
}
