//! Lists of values collapsed, so that the same code with lists of other lengths makes the same
//! fingerprint: `IN (?, ?)` → `IN (...)`, `ARRAY[?, ?]` → `ARRAY[...]`, and the rows of `VALUES`
//! after the first → `...`.

use super::lexer::{Kind, Token};

/// `IN (?, ?)` → `IN (...)`, `ARRAY[?, ?]` → `ARRAY[...]`, `VALUES (…), (…)` → `VALUES (…), ...`.
pub(super) fn collapse(tokens: &mut Vec<Token<'_>>) {
    let mut out: Vec<Token<'_>> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        out.push(token);
        i += 1;
        let (open, close) = if token.is(Kind::Word, "IN") {
            ("(", ")")
        } else if token.is(Kind::Word, "ARRAY") {
            ("[", "]")
        } else if token.is(Kind::Word, "VALUES") {
            i = collapse_rows(tokens, i, &mut out);
            continue;
        } else {
            continue;
        };
        if let Some(end) = values_list(tokens, i, open, close) {
            out.push(tokens[i]);
            out.push(Token {
                kind: Kind::Ellipsis,
                text: "",
                space_before: tokens[i + 1].space_before,
            });
            out.push(tokens[end]);
            i = end + 1;
        }
    }
    *tokens = out;
}

/// Where the list opened at `from` by `open` closes, if it holds only values (`?`, `$1`,
/// literals) separated by commas.
fn values_list(tokens: &[Token<'_>], from: usize, open: &str, close: &str) -> Option<usize> {
    if !tokens.get(from)?.is(Kind::Punct, open) {
        return None;
    }
    let mut i = from + 1;
    loop {
        if !tokens.get(i)?.is_value() {
            return None;
        }
        i += 1;
        let next = tokens.get(i)?;
        if next.is(Kind::Punct, close) {
            return Some(i);
        }
        if !next.is(Kind::Punct, ",") {
            return None;
        }
        i += 1;
    }
}

/// After `VALUES`: the first row as it is, then `, ...` for the rows after it. Returns where to
/// go on.
fn collapse_rows<'a>(tokens: &[Token<'a>], from: usize, out: &mut Vec<Token<'a>>) -> usize {
    let Some(first_end) = balanced(tokens, from) else {
        return from;
    };
    out.extend_from_slice(&tokens[from..=first_end]);
    let mut i = first_end + 1;
    let mut more = false;
    while tokens.get(i).is_some_and(|t| t.is(Kind::Punct, ","))
        && let Some(end) = balanced(tokens, i + 1)
    {
        more = true;
        i = end + 1;
    }
    if more {
        out.push(tokens[first_end + 1]);
        out.push(Token {
            kind: Kind::Ellipsis,
            text: "",
            space_before: true,
        });
    }
    i
}

/// Where the parenthesis opened at `from` closes.
fn balanced(tokens: &[Token<'_>], from: usize) -> Option<usize> {
    if !tokens.get(from)?.is(Kind::Punct, "(") {
        return None;
    }
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(from) {
        if t.is(Kind::Punct, "(") {
            depth += 1;
        } else if t.is(Kind::Punct, ")") {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}
