//! The normalizer's table of cases: what the server gives, and the fingerprint.

use super::*;

const PG: Dialect = Dialect::POSTGRESQL;
const MY: Dialect = Dialect::MYSQL;
/// `standard_conforming_strings = off`; MySQL with `NO_BACKSLASH_ESCAPES`.
const PG_OLD: Dialect = Dialect::PostgreSql {
    standard_strings: false,
};
const MY_NO_BACKSLASH: Dialect = Dialect::MySql {
    backslash_escapes: false,
};

/// (dialect, what the server gives, the fingerprint).
#[rustfmt::skip]
const CASES: &[(Dialect, &str, &str)] = &[
    // Numbers of every form; names with digits are names.
    (PG, "SELECT users.id, users.name FROM users WHERE users.id = 42", "SELECT users.id, users.name FROM users WHERE users.id = ?"),
    (PG, "SELECT * FROM t1 WHERE a = -5 AND b=-0.5 AND c > 1.5e-3 AND d < .25 AND e = 0x1F AND f = 1_000", "SELECT * FROM t1 WHERE a = ? AND b=? AND c > ? AND d < ? AND e = ? AND f = ?"),
    (PG, "SELECT a - 1, a-1, (a)-2, col2 FROM t", "SELECT a - ?, a-?, (a)-?, col2 FROM t"),
    (PG, "SELECT -1, x BETWEEN -10 AND -2 FROM t LIMIT 10 OFFSET 20", "SELECT ?, x BETWEEN ? AND ? FROM t LIMIT ? OFFSET ?"),
    (PG, "SELECT 1e10, 2E+5, 3.", "SELECT ?, ?, ?"),
    // Strings: doubled quotes, E'' with backslash escapes, prefixes, a cast.
    (PG, "UPDATE users SET name = 'O''Brien; DROP' WHERE email = 'a@b.c'", "UPDATE users SET name = ? WHERE email = ?"),
    // Without E, a backslash is a character: the string ends at the quote after it.
    (PG, r"SELECT E'it\'s a \\ secret', e'x', 'plain \' AND 1=1", "SELECT ?, ?, ? AND ?=?"),
    (PG, "SELECT B'1010', X'1F', N'nchar', U&'d\\0061t', '2024-01-01'::date", "SELECT ?, ?, ?, ?, ?::date"),
    (PG, "SELECT 'a' 'continued'", "SELECT ? ?"),
    // Names are kept, quoted or not.
    (PG, r#"SELECT "Weird ""Name""", "where" FROM "Orders""#, r#"SELECT "Weird ""Name""", "where" FROM "Orders""#),
    // Parameters stay; lists of them collapse.
    (PG, "SELECT * FROM users WHERE id = $1 AND org = $12", "SELECT * FROM users WHERE id = $1 AND org = $12"),
    (PG, "SELECT * FROM t WHERE id IN ($1, $2, $3) AND k NOT IN (1,2,3) AND s IN ('a')", "SELECT * FROM t WHERE id IN (...) AND k NOT IN (...) AND s IN (...)"),
    (PG, "SELECT * FROM t WHERE id = ANY(ARRAY[1, 2, 3])", "SELECT * FROM t WHERE id = ANY(ARRAY[...])"),
    (PG, "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE v = 3)", "SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE v = ?)"),
    (PG, "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, now()) RETURNING id", "INSERT INTO t (a, b) VALUES (?, ?), ... RETURNING id"),
    (PG, "INSERT INTO t VALUES ($1, $2)", "INSERT INTO t VALUES ($1, $2)"),
    // Dollar quoting, with and without a tag; a name holding a dollar.
    (PG, "SELECT $$it's $1 and 'quoted'$$, $fn$ body $$ inside $fn$, a$b FROM t", "SELECT ?, ?, a$b FROM t"),
    (PG, "DO $x$ BEGIN PERFORM 'secret'; END $x$", "DO ?"),
    // Comments, nested in PostgreSQL; line breaks and tabs collapse.
    (PG, "SELECT a -- the secret 'x'\nFROM t /* app='billing', id=7 /* nested */ still */ WHERE b = 1", "SELECT a FROM t WHERE b = ?"),
    (PG, "\n  SELECT users.id,\n\t users.name\n  FROM users\n  WHERE users.id = 42\n", "SELECT users.id, users.name FROM users WHERE users.id = ?"),
    (PG, "BEGIN; SELECT 1", "BEGIN; SELECT ?"),
    // Cut by the server: an open string or comment still ends cleanly.
    (PG, "SELECT * FROM t WHERE token = 'abc", "SELECT * FROM t WHERE token = ?"),
    (PG, "SELECT * FROM t /* unterminated 'x'", "SELECT * FROM t"),
    (PG, "SELECT $tag$ never closed 42", "SELECT ?"),
    // Non-ASCII names and strings.
    (PG, "SELECT 名前 FROM 表 WHERE 名前 = 'ひみつ'", "SELECT 名前 FROM 表 WHERE 名前 = ?"),
    // Nothing left.
    (PG, "  /* only a comment */ ", ""),
    (PG, "", ""),
    // MySQL: backslash escapes, "double-quoted strings", # and -- comments, introducers.
    (MY, r#"SELECT * FROM users WHERE name = 'O\'Brien' AND note = "say \"hi\"" AND x = 'a''b'"#, "SELECT * FROM users WHERE name = ? AND note = ? AND x = ?"),
    (MY, "SELECT `order`.`id` FROM `order` WHERE `order`.id IN (1, 2, 3) # trailing 'x'\n AND a = _utf8mb4'secret' COLLATE utf8mb4_bin", "SELECT `order`.`id` FROM `order` WHERE `order`.id IN (...) AND a = ? COLLATE utf8mb4_bin"),
    (MY, "SELECT a--1 FROM t -- comment 'x'\nWHERE b = X'FF' AND c = 0b101", "SELECT a-? FROM t WHERE b = ? AND c = ?"),
    (MY, "SELECT * FROM t WHERE id = ? AND k IN (?, ?, ?)", "SELECT * FROM t WHERE id = ? AND k IN (...)"),
    (MY, "INSERT INTO t (a) VALUES (1),(2),(3)", "INSERT INTO t (a) VALUES (?), ..."),
    (MY, "SELECT @v, @@session.sql_mode /* a */ /*!40101 'hint' */", "SELECT @v, @@session.sql_mode"),
    (MY, r"SELECT 'ends in a backslash \", "SELECT ?"),
    // The server's own rule for backslashes decides where a string ends.
    (PG_OLD, r"SELECT 'it\'s secret' AS a", "SELECT ? AS a"),
    (MY_NO_BACKSLASH, r"SELECT 'C:\' AS path, 'secret'", "SELECT ? AS path, ?"),
];

#[test]
fn every_literal_is_removed_and_names_are_kept() {
    for (dialect, text, want) in CASES {
        let got = fingerprint(text, *dialect, None).unwrap_or_default();
        assert_eq!(got, *want, "{dialect:?}: {text:?}");
    }
}

#[test]
fn no_literal_survives() {
    let secrets = [
        "secret",
        "O'Brien",
        "Brien",
        "DROP",
        "a@b.c",
        "42",
        "0.5",
        "1010",
        "ひみつ",
        "hint",
        "billing",
        "nested",
        "2024",
    ];
    for (dialect, text, _) in CASES {
        let got = fingerprint(text, *dialect, None).unwrap_or_default();
        for s in secrets {
            assert!(!got.contains(s), "{s:?} in {got:?} from {text:?}");
        }
    }
}

#[test]
fn a_cut_statement_says_so_and_a_long_one_is_capped_at_a_character() {
    assert_eq!(
        fingerprint("SELECT * FROM t WHERE a = 'x", PG, Some(30)).as_deref(),
        Some("SELECT * FROM t WHERE a = ?…")
    );
    // Shorter than the server keeps by more than a character: whole.
    assert_eq!(
        fingerprint("SELECT * FROM t WHERE a = 'x'", PG, Some(40)).as_deref(),
        Some("SELECT * FROM t WHERE a = ?")
    );
    let columns: Vec<String> = (0..200).map(|i| format!("tbl.列{i}")).collect();
    let long = format!("SELECT {} FROM tbl", columns.join(", "));
    let got = fingerprint(&long, PG, None).unwrap();
    assert!(got.ends_with(CUT), "{got}");
    assert!(
        got.len() <= MAX_FINGERPRINT_BYTES + CUT.len_utf8(),
        "{}",
        got.len()
    );
    assert!(got.starts_with("SELECT tbl.列0, tbl.列1"));
    let short = short(&got, 20);
    assert!(short.chars().count() <= 20, "{short}");
    assert!(short.ends_with(CUT));
    assert_eq!(super::short("SELECT ?", 20), "SELECT ?");
}

#[test]
fn the_same_code_with_other_values_is_the_same_fingerprint() {
    let a = fingerprint(
        "SELECT * FROM t WHERE id IN (1, 2, 3) AND x = 'a'",
        PG,
        None,
    );
    let b = fingerprint("SELECT * FROM t WHERE id IN (7) AND x = 'zz'", PG, None);
    assert_eq!(a, b);
    let a = fingerprint("INSERT INTO t VALUES (1, 'a')", MY, None);
    let b = fingerprint("INSERT INTO t VALUES (2, 'b'), (3, 'c')", MY, None);
    assert_ne!(a, b, "one row and several are different code paths");
}
