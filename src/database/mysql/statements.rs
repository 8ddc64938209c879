//! What each thread last ran, from the rows of one look ([`super::sql::STATEMENTS`]): used only
//! while every consumer that fills `events_statements_current` is on, fingerprinted at once with
//! the server's own rule for backslashes (`sql_mode`), and cut where the server cuts
//! (`performance_schema_max_sql_text_length`). The rows' text is dropped here.

use std::collections::HashMap;

use super::sql::STATEMENT_CONSUMERS;
use crate::database::fingerprint::{self, Dialect};
use crate::database::{Flavour, LastStatements, Statement};

/// One row of [`super::sql::STATEMENTS`]: processlist id, event id, text.
pub type StatementRow = (i64, i64, Option<Vec<u8>>);

/// The last statement of each thread (by processlist id), and whether they could be read.
pub fn last_statements(
    flavour: Flavour,
    enabled_consumers: &[String],
    variables: &[(String, String)],
    rows: Vec<StatementRow>,
) -> (HashMap<i64, Statement>, LastStatements) {
    let off: Vec<&str> = STATEMENT_CONSUMERS
        .into_iter()
        .filter(|c| !enabled_consumers.iter().any(|e| e.eq_ignore_ascii_case(c)))
        .collect();
    if !off.is_empty() {
        let quoted: Vec<String> = off.iter().map(|c| format!("'{c}'")).collect();
        return (
            HashMap::new(),
            LastStatements::Unavailable(format!(
                "{} does not record what its threads last ran: performance_schema's {} {} off \
                 (UPDATE performance_schema.setup_consumers SET ENABLED = 'YES' WHERE NAME IN \
                 ({}), or start the server with performance-schema-consumer-{}=ON)",
                flavour.name(),
                if off.len() == 1 {
                    "consumer"
                } else {
                    "consumers"
                },
                off.join(", ") + if off.len() == 1 { " is" } else { " are" },
                quoted.join(", "),
                off[0].replace('_', "-"),
            )),
        );
    }
    let variable = |name: &str| {
        variables
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let dialect = Dialect::MySql {
        backslash_escapes: !variable("sql_mode")
            .unwrap_or_default()
            .to_ascii_uppercase()
            .contains("NO_BACKSLASH_ESCAPES"),
    };
    let server_keeps = variable("performance_schema_max_sql_text_length")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0);
    // A thread inside a stored program has a row per level: the outermost (the lowest event
    // id) is what the application sent.
    let mut outermost: HashMap<i64, (i64, Vec<u8>)> = HashMap::with_capacity(rows.len());
    for (id, event, text) in rows {
        let Some(text) = text else { continue };
        match outermost.get(&id) {
            Some((seen, _)) if *seen <= event => {}
            _ => {
                outermost.insert(id, (event, text));
            }
        }
    }
    let statements = outermost
        .into_iter()
        .filter_map(|(id, (_, text))| {
            let text = String::from_utf8_lossy(&text);
            let fingerprint = fingerprint::fingerprint(&text, dialect, server_keeps)?;
            Some((
                id,
                Statement {
                    fingerprint,
                    query_id: None,
                },
            ))
        })
        .collect();
    (statements, LastStatements::Read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_on() -> Vec<String> {
        STATEMENT_CONSUMERS.map(str::to_owned).to_vec()
    }

    #[test]
    fn the_outermost_statement_of_each_thread_fingerprinted() {
        let rows = vec![
            (7, 12, Some(b"CALL refresh('x')".to_vec())),
            (7, 13, Some(b"UPDATE t SET a = 1".to_vec())),
            (8, 40, Some(b"SELECT * FROM users WHERE id = 42".to_vec())),
            (9, 41, None),
        ];
        let (by_thread, read) = last_statements(Flavour::MariaDb, &all_on(), &[], rows);
        assert_eq!(read, LastStatements::Read);
        assert_eq!(by_thread[&7].fingerprint, "CALL refresh(?)");
        assert_eq!(
            by_thread[&8].fingerprint,
            "SELECT * FROM users WHERE id = ?"
        );
        assert!(!by_thread.contains_key(&9));
    }

    #[test]
    fn the_servers_rules_for_backslashes_and_length_apply() {
        let variables = [
            (
                "sql_mode".to_owned(),
                "STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES".to_owned(),
            ),
            (
                "performance_schema_max_sql_text_length".to_owned(),
                "30".to_owned(),
            ),
        ];
        let rows = vec![(7, 1, Some(br"SELECT 'C:\' AS p, 'secret_text'".to_vec()))];
        let (by_thread, _) = last_statements(Flavour::MySql, &all_on(), &variables, rows);
        assert_eq!(by_thread[&7].fingerprint, "SELECT ? AS p, ?…");
    }

    #[test]
    fn a_consumer_off_is_said_plainly_and_nothing_is_used() {
        let enabled = vec!["global_instrumentation".to_owned()];
        let rows = vec![(8, 40, Some(b"SELECT 1".to_vec()))];
        let (by_thread, read) = last_statements(Flavour::MariaDb, &enabled, &[], rows);
        assert!(by_thread.is_empty());
        let LastStatements::Unavailable(why) = read else {
            panic!("{read:?}")
        };
        assert!(
            why.starts_with(
                "MariaDB does not record what its threads last ran: performance_schema's \
                 consumers thread_instrumentation, events_statements_current are off"
            ),
            "{why}"
        );
        assert!(why.contains("SET ENABLED = 'YES'"), "{why}");
    }
}
