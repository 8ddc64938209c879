//! A session's last statement, fingerprinted: every literal replaced by `?`, comments dropped,
//! whitespace collapsed, lists of values collapsed, the length capped.
//!
//! Where it runs, and why here: the engines call [`fingerprint`] on the text the server gives
//! (`pg_stat_activity.query`, `performance_schema`'s `SQL_TEXT`) as they decode each row, and only
//! the fingerprint goes into the [`Session`](super::Session). The raw text never outlives the row
//! it came in, so nothing above the database seam (deciding, acting, reports, annotations,
//! Events, logs, metrics) can hold a literal: a property of the data, not a rule each report must
//! remember. That is why it lives on the observe side rather than with deciding or reporting,
//! though neither engine-specific nor IO: it is pure and engine-neutral (the engines say which
//! [`Dialect`] they speak), tested with a table of cases (`tests.rs`).
//!
//! Why a lexer of its own rather than a SQL parser's: the text is often cut (PostgreSQL keeps the
//! first `track_activity_query_size` bytes, 1 kB by default; `performance_schema` the first
//! `performance_schema_max_sql_text_length`), and a cut statement ends inside a string or a
//! comment. Parsers and their tokenizers reject that; this lexer never fails: an unterminated
//! string is a literal to the end, an unterminated comment is dropped. It knows only what decides
//! where a literal begins and ends:
//! - strings: `'…'` with `''`; backslash escapes in PostgreSQL's `E'…'` (in every string with
//!   `standard_conforming_strings` off) and in MySQL's strings (unless `NO_BACKSLASH_ESCAPES`);
//!   prefixes `E`, `B`, `X`, `N`, `U&` and MySQL's charset introducers (`_utf8mb4'…'`) go with the
//!   literal; MySQL's `"…"` is a string under its default `sql_mode` (PostgreSQL's is a name);
//! - PostgreSQL's dollar quoting, `$$…$$` and `$tag$…$tag$`; `$1` parameters stay as they are;
//! - numbers: integers, decimals, exponents, `0x…` hex, `0b…`, `1_000`; a minus sign where it can
//!   only be a sign (`= -5`, `(-1, -2)`) goes with the number;
//! - comments `-- …`, `/* … */` (nested in PostgreSQL), MySQL's `# …`;
//! - `IN (?, ?, ?)` and `ARRAY[?, ?]` become `IN (...)` and `ARRAY[...]`, and the rows of
//!   `VALUES (…), (…)` after the first become `...`: the same code with lists of other lengths
//!   makes the same fingerprint.
//!
//! Names (tables, columns, quoted identifiers) are kept: they are what points at the code. A team
//! that treats them as sensitive turns the whole feature off (`leakDetection.lastStatements:
//! "Off"`).

mod lexer;
mod lists;
#[cfg(test)]
mod tests;

use serde::Serialize;

use lexer::{Kind, Lexer};

/// Which server's lexical rules apply, and how its strings treat a backslash: a string read
/// with the wrong rule could end early and leave its tail as if it were names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `standard_strings`: `standard_conforming_strings` is on (the default since 9.1): a
    /// backslash escapes only in `E'…'`. Off, it escapes in every string.
    PostgreSql { standard_strings: bool },
    /// MySQL and MariaDB: `"…"` strings and `#` comments. `backslash_escapes` unless `sql_mode`
    /// has `NO_BACKSLASH_ESCAPES`.
    MySql { backslash_escapes: bool },
}

impl Dialect {
    /// PostgreSQL with its default settings.
    pub const POSTGRESQL: Self = Self::PostgreSql {
        standard_strings: true,
    };
    /// MySQL and MariaDB with their default `sql_mode`.
    pub const MYSQL: Self = Self::MySql {
        backslash_escapes: true,
    };

    fn is_mysql(self) -> bool {
        matches!(self, Self::MySql { .. })
    }

    /// Whether a backslash escapes in a plain `'…'` string.
    fn backslashes(self) -> bool {
        match self {
            Self::PostgreSql { standard_strings } => !standard_strings,
            Self::MySql { backslash_escapes } => backslash_escapes,
        }
    }
}

/// What a session last ran (or is running), as poolwarden shows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    /// The statement with every literal removed; ends with `…` when it was cut, by the server or
    /// at [`MAX_FINGERPRINT_BYTES`].
    pub fingerprint: String,
    /// PostgreSQL 14+'s `query_id` (with `compute_query_id` on): the server's own number for the
    /// statement, the key of `pg_stat_statements`. A number, never text from the statement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_id: Option<i64>,
}

/// The longest fingerprint kept, in bytes (cut at a character boundary, then `…`).
pub const MAX_FINGERPRINT_BYTES: usize = 400;

/// The longest fingerprint in one-line places (annotations, Events, the status), in characters.
pub const SHORT_FINGERPRINT_CHARS: usize = 120;

/// What marks a fingerprint that was cut.
pub const CUT: char = '…';

/// The fingerprint of `text`; `None` when nothing is left (an empty text, only comments).
/// `server_keeps`: the most bytes of a statement the server keeps, when it cuts them; a text
/// that long (to within a character, which the server does not split) is taken as cut, and its
/// fingerprint ends with [`CUT`].
pub fn fingerprint(text: &str, dialect: Dialect, server_keeps: Option<usize>) -> Option<String> {
    let cut_by_server = server_keeps.is_some_and(|keeps| text.len() + 3 >= keeps);
    let mut tokens = Lexer::new(text, dialect).tokens();
    lists::collapse(&mut tokens);
    let mut out = String::with_capacity(text.len().min(MAX_FINGERPRINT_BYTES + 4));
    for token in &tokens {
        if token.space_before && !out.is_empty() {
            out.push(' ');
        }
        match token.kind {
            Kind::Literal => out.push('?'),
            Kind::Ellipsis => out.push_str("..."),
            // A name may hold a line break (a quoted identifier): a fingerprint is one line.
            _ => out.extend(
                token
                    .text
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c }),
            ),
        }
        if out.len() > MAX_FINGERPRINT_BYTES {
            break;
        }
    }
    if out.is_empty() {
        return None;
    }
    let capped = out.len() > MAX_FINGERPRINT_BYTES;
    if capped {
        out.truncate(floor_char_boundary(&out, MAX_FINGERPRINT_BYTES));
    }
    if capped || cut_by_server {
        out.push(CUT);
    }
    Some(out)
}

/// `fingerprint` shortened to `max_chars` characters for one-line places, `…` marking the cut.
pub fn short(fingerprint: &str, max_chars: usize) -> String {
    if fingerprint.chars().count() <= max_chars {
        return fingerprint.to_owned();
    }
    let end = fingerprint
        .char_indices()
        .nth(max_chars.saturating_sub(1))
        .map_or(fingerprint.len(), |(at, _)| at);
    let kept = fingerprint[..end].trim_end_matches(CUT).trim_end();
    format!("{kept}{CUT}")
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}
