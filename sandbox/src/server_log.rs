//! What the server log says about backends ended by `pg_terminate_backend`.
//!
//! A terminated backend logs `FATAL:  terminating connection due to administrator command`.
//! If it was executing a statement at that moment, the same report goes on with a `STATEMENT:`
//! line (the sandbox sets `log_min_error_statement = error`): that is how a kill in the middle
//! of a statement shows, whoever signalled it. The sandbox's `log_line_prefix` names the pid of
//! every line, and a report is written in one piece, so its lines follow one another.

use std::io::{Read, Seek, SeekFrom};

use super::{Sandbox, SandboxError};

/// The message of a backend ended by `pg_terminate_backend`.
const TERMINATED: &str = "terminating connection due to administrator command";

/// The lines PostgreSQL may add to a report after its message.
const REPORT_PARTS: [&str; 6] = [
    "DETAIL",
    "HINT",
    "QUERY",
    "CONTEXT",
    "LOCATION",
    "STATEMENT",
];

/// Backends the log shows ended by an administrator command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminTerminations {
    /// Every such backend.
    pub total: usize,
    /// Those that were executing a statement: the statement of each, as logged.
    pub mid_statement: Vec<String>,
}

impl AdminTerminations {
    /// Adds what a later stretch of the log shows.
    pub fn add(&mut self, later: AdminTerminations) {
        self.total += later.total;
        self.mid_statement.extend(later.mid_statement);
    }
}

impl Sandbox {
    /// The server log's length in bytes now: where a later reading starts from.
    pub fn log_len(&self) -> Result<u64, SandboxError> {
        let path = self.log_path();
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| SandboxError::io(format!("reading {}", path.display()), e))
    }

    /// Reads the log from byte `from` up to its last complete line: the terminations in that
    /// stretch, and where the next reading starts.
    pub fn admin_terminations_since(
        &self,
        from: u64,
    ) -> Result<(AdminTerminations, u64), SandboxError> {
        let path = self.log_path();
        let context = || format!("reading {}", path.display());
        let mut file = std::fs::File::open(&path).map_err(|e| SandboxError::io(context(), e))?;
        file.seek(SeekFrom::Start(from))
            .map_err(|e| SandboxError::io(context(), e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| SandboxError::io(context(), e))?;
        // A report being written is left for the next reading.
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&bytes[..complete]);
        Ok((parse(&text), from + complete as u64))
    }
}

/// The pid and the level of a log line that starts a part of a report, and its text.
fn split(line: &str) -> Option<(&str, &str, &str)> {
    let open = line.find(" [")?;
    let close = open + line[open..].find("] ")?;
    let pid = &line[open + 2..close];
    let (level, text) = line[close + 2..].split_once(":  ")?;
    Some((pid, level, text))
}

fn parse(text: &str) -> AdminTerminations {
    let mut found = AdminTerminations::default();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some((pid, "FATAL", TERMINATED)) = split(line) else {
            continue;
        };
        found.total += 1;
        // The rest of this backend's report: its further parts, and their continuation lines
        // (which PostgreSQL indents with a tab).
        let statement = lines[i + 1..]
            .iter()
            .take_while(|next| {
                next.starts_with('\t')
                    || split(next)
                        .is_some_and(|(p, level, _)| p == pid && REPORT_PARTS.contains(&level))
            })
            .find_map(|next| match split(next) {
                Some((_, "STATEMENT", statement)) => Some(statement.to_owned()),
                _ => None,
            });
        found.mid_statement.extend(statement);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_mid_statement_is_told_from_a_kill_while_idle() {
        let log = "\
2025-01-01 10:00:00.001 UTC [101] FATAL:  terminating connection due to administrator command
2025-01-01 10:00:00.002 UTC [102] FATAL:  terminating connection due to administrator command
2025-01-01 10:00:00.002 UTC [102] STATEMENT:  SELECT pg_sleep(0.013)
2025-01-01 10:00:00.003 UTC [103] LOG:  checkpoint starting: time
2025-01-01 10:00:00.004 UTC [104] FATAL:  terminating connection due to administrator command
2025-01-01 10:00:00.004 UTC [105] STATEMENT:  SELECT 1
";
        let found = parse(log);
        assert_eq!(found.total, 3);
        assert_eq!(
            found.mid_statement,
            vec!["SELECT pg_sleep(0.013)".to_owned()]
        );
    }

    #[test]
    fn a_statement_after_other_parts_and_continuation_lines_still_counts() {
        let log = "\
2025-01-01 10:00:00.001 UTC [7] FATAL:  terminating connection due to administrator command
2025-01-01 10:00:00.001 UTC [7] CONTEXT:  SQL function \"f\"
\tline two of the context
2025-01-01 10:00:00.001 UTC [7] STATEMENT:  SELECT f()
2025-01-01 10:00:00.005 UTC [7] FATAL:  terminating connection due to administrator command
2025-01-01 10:00:00.006 UTC [8] LOG:  something else
2025-01-01 10:00:00.007 UTC [7] STATEMENT:  not this report's
";
        let found = parse(log);
        assert_eq!(found.total, 2);
        assert_eq!(found.mid_statement, vec!["SELECT f()".to_owned()]);
    }

    #[test]
    fn other_fatal_errors_are_not_terminations() {
        let log = "\
2025-01-01 10:00:00.001 UTC [9] FATAL:  password authentication failed for user \"x\"
2025-01-01 10:00:00.001 UTC [9] STATEMENT:  hmm
";
        assert_eq!(parse(log), AdminTerminations::default());
    }
}
