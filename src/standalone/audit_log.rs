//! Where `run`'s audit records go: the log, and the `--audit-log` file if one was given, one JSON
//! object a line, written whole and flushed before the next cycle (see [`crate::report::audit`]
//! for the records themselves).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use crate::cycle::Cycle;
use crate::report::audit::{log, records};

/// Where a run's records go: the log, and the `--audit-log` file if one was given.
pub struct AuditTrail {
    policy: String,
    file: Option<(PathBuf, File)>,
}

/// The `--audit-log` file could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditLogError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl AuditTrail {
    /// Records to the log only.
    pub fn log_only(policy: &str) -> Self {
        Self {
            policy: policy.to_owned(),
            file: None,
        }
    }

    /// Records to the log and appends them to `path` (created if missing), one JSON object a line.
    pub fn with_file(policy: &str, path: &Path) -> Result<Self, AuditLogError> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditLogError {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            policy: policy.to_owned(),
            file: Some((path.to_owned(), file)),
        })
    }

    /// Records what `cycle` did; the file's lines are written whole and flushed before returning.
    pub fn record(&mut self, cycle: &Cycle) -> Result<(), AuditLogError> {
        let records = records(&self.policy, cycle, Timestamp::now());
        log(&records);
        let Some((path, file)) = &mut self.file else {
            return Ok(());
        };
        if records.is_empty() {
            return Ok(());
        }
        let mut lines = String::new();
        let written = records
            .iter()
            .try_for_each(|r| {
                lines.push_str(&serde_json::to_string(r)?);
                lines.push('\n');
                Ok::<(), serde_json::Error>(())
            })
            .map_err(io::Error::other)
            .and_then(|()| file.write_all(lines.as_bytes()))
            .and_then(|()| file.flush());
        written.map_err(|source| AuditLogError {
            path: path.clone(),
            source,
        })
    }
}
