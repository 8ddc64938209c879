//! One row of the thread list: what the server says of a thread, and the session it is to the
//! rest of poolwarden.

use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use mysql_async::Row;

use super::connect::PROGRAM_NAME;
use super::sql::{Queries, col};
use crate::database::{CLIENT_BACKEND, DatabaseError, Session, SessionState, Statement};

/// One thread row as the server sent it.
#[derive(Debug)]
pub struct Thread {
    pub id: i64,
    pub user: String,
    pub host: Option<String>,
    pub db: Option<String>,
    pub command: String,
    pub state_change: Timestamp,
    pub thread_type: Option<String>,
    pub trx_started: Option<Timestamp>,
    pub program_name: Option<String>,
    /// The server's clock as the row was produced.
    pub now: Timestamp,
}

impl Thread {
    pub fn from_row(row: &Row) -> Result<Self, DatabaseError> {
        let text = |i: usize| -> Result<Option<String>, DatabaseError> {
            row.get_opt::<Option<String>, usize>(i)
                .transpose()
                .map(Option::flatten)
                .map_err(|e| DatabaseError::Query(format!("thread column {i}: {e}")))
        };
        let number = |i: usize| -> Result<Option<i64>, DatabaseError> {
            row.get_opt::<Option<i64>, usize>(i)
                .transpose()
                .map(Option::flatten)
                .map_err(|e| DatabaseError::Query(format!("thread column {i}: {e}")))
        };
        let id =
            number(col::ID)?.ok_or_else(|| DatabaseError::Query("a thread without id".into()))?;
        let state_change = micros(number(col::STATE_CHANGE_US)?.unwrap_or(0))?;
        Ok(Self {
            id,
            user: text(col::USER)?.unwrap_or_default(),
            host: text(col::HOST)?,
            db: text(col::DB)?,
            command: text(col::COMMAND)?.unwrap_or_default(),
            state_change,
            thread_type: text(col::THREAD_TYPE)?,
            trx_started: number(col::TRX_STARTED)?
                .map(|s| Timestamp::from_second(s).map_err(|e| DatabaseError::Query(e.to_string())))
                .transpose()?,
            program_name: text(col::PROGRAM_NAME)?,
            now: micros(number(col::NOW_US)?.unwrap_or(0))?,
        })
    }

    /// What kind of thread this is: only `client backend`s are ever candidates.
    pub fn kind(&self) -> &'static str {
        let command = self.command.as_str();
        if self.thread_type.as_deref() == Some("BACKGROUND")
            || matches!(self.user.as_str(), "system user" | "event_scheduler")
            || command == "Daemon"
        {
            "system thread"
        } else if command.starts_with("Binlog Dump")
            || command.starts_with("Slave_")
            || command.starts_with("Replica")
            || command == "Register Slave"
        {
            "replication"
        } else if command == "Connect" || self.user == "unauthenticated user" {
            "connecting"
        } else {
            CLIENT_BACKEND
        }
    }

    /// `Sleep` is idle (in a transaction when InnoDB has one open for the thread); a thread
    /// being killed is unknown; every other command is at work.
    pub fn state(&self) -> SessionState {
        match (self.command.as_str(), self.trx_started) {
            ("Sleep", None) => SessionState::Idle,
            ("Sleep", Some(_)) => SessionState::IdleInTransaction,
            ("Killed", _) => SessionState::Unknown,
            _ => SessionState::Active,
        }
    }

    /// Whether this is a poolwarden's monitoring connection, by its `program_name`.
    pub fn is_poolwarden(&self) -> bool {
        self.program_name.as_deref() == Some(PROGRAM_NAME)
    }

    /// The transaction's start, made conservative: `INNODB_TRX` shows it to the second, rounded
    /// down, so it is taken as the end of that second (never before the truth), and never after
    /// the thread's idle state began (an idle thread started its transaction earlier).
    pub fn xact_start(&self) -> Option<Timestamp> {
        let started = self.trx_started?;
        let latest = started
            .checked_add(SignedDuration::from_micros(999_999))
            .unwrap_or(started);
        Some(if self.command == "Sleep" {
            latest.min(self.state_change)
        } else {
            latest
        })
    }

    /// The client's address: the processlist's `HOST` without its port (`performance_schema`
    /// shows none). `None` for the Unix socket (`localhost`) and for names.
    pub fn client_addr(&self, with_port: bool) -> Option<IpAddr> {
        let host = self.host.as_deref()?;
        if !with_port {
            return host.parse().ok();
        }
        let (address, port) = host.rsplit_once(':')?;
        port.parse::<u16>().ok()?;
        address.trim_matches(['[', ']']).parse().ok()
    }
}

pub(super) fn micros(us: i64) -> Result<Timestamp, DatabaseError> {
    Timestamp::from_microsecond(us).map_err(|e| DatabaseError::Query(e.to_string()))
}

/// The session a thread is; `backend_start` is the latest moment it can have connected.
pub(super) fn session(
    thread: &Thread,
    backend_start: Timestamp,
    protected: bool,
    queries: &Queries,
    last_statement: Option<Statement>,
) -> Session {
    Session {
        pid: thread.id,
        backend_type: thread.kind().to_owned(),
        database: thread.db.clone(),
        user: Some(thread.user.clone()),
        user_is_superuser: protected,
        application_name: thread.program_name.clone().unwrap_or_default(),
        client_addr: thread.client_addr(!queries.performance_schema),
        // The processlist's host has no port, so no pooler can be joined by address on MySQL.
        client_port: None,
        backend_start,
        xact_start: thread.xact_start(),
        state: thread.state(),
        state_change: Some(thread.state_change),
        // InnoDB has no snapshot horizon per session to read (its purge view is server-wide),
        // and lock waits are not read: LongTransaction goes by the transaction's age alone, and
        // no session is named as a blocker (docs/mysql.md).
        backend_xmin: None,
        xmin_age: None,
        blocked_by: Vec::new(),
        last_statement,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn thread(command: &str, host: &str) -> Thread {
        Thread {
            id: 7,
            user: "app".into(),
            host: Some(host.into()),
            db: Some("shop".into()),
            command: command.into(),
            state_change: Timestamp::from_second(1_000).unwrap(),
            thread_type: None,
            trx_started: None,
            program_name: None,
            now: Timestamp::from_second(1_010).unwrap(),
        }
    }
    #[test]
    fn commands_become_states_and_kinds() {
        let mut t = thread("Sleep", "127.0.0.12:5000");
        assert_eq!(t.state(), SessionState::Idle);
        assert_eq!(t.kind(), CLIENT_BACKEND);
        t.trx_started = Some(Timestamp::from_second(990).unwrap());
        assert_eq!(t.state(), SessionState::IdleInTransaction);
        assert_eq!(thread("Query", "h:1").state(), SessionState::Active);
        assert_eq!(thread("Execute", "h:1").state(), SessionState::Active);
        assert_eq!(thread("Killed", "h:1").state(), SessionState::Unknown);
        assert_eq!(thread("Binlog Dump GTID", "h:1").kind(), "replication");
        assert_eq!(thread("Daemon", "localhost").kind(), "system thread");
        let mut bg = thread("Sleep", "");
        bg.thread_type = Some("BACKGROUND".into());
        assert_eq!(bg.kind(), "system thread");
    }
    #[test]
    fn the_transaction_start_is_rounded_up_but_never_after_the_idle_state() {
        let mut t = thread("Sleep", "h:1");
        t.trx_started = Some(Timestamp::from_second(990).unwrap());
        assert_eq!(
            t.xact_start(),
            Some(Timestamp::from_microsecond(990_999_999).unwrap())
        );
        t.trx_started = Some(Timestamp::from_second(1_000).unwrap());
        assert_eq!(t.xact_start(), Some(t.state_change));
    }
    #[test]
    fn hosts_lose_their_port() {
        let ip = |h: &str, port: bool| thread("Sleep", h).client_addr(port);
        assert_eq!(
            ip("127.0.0.12:44631", true),
            Some("127.0.0.12".parse().unwrap())
        );
        assert_eq!(ip("[::1]:44631", true), Some("::1".parse().unwrap()));
        assert_eq!(ip("localhost", true), None);
        assert_eq!(ip("app-7.example:3000", true), None);
        assert_eq!(ip("10.1.2.3", false), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(ip("::1", false), Some("::1".parse().unwrap()));
    }
}
