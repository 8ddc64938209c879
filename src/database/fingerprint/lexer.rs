//! The lexer: the text cut into names, literals, parameters and punctuation, with whether
//! whitespace (or a comment) came before each. It never fails: what is left open at the end of
//! a cut statement (a string, a comment, a dollar quote) ends with the text.

use super::Dialect;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A name or keyword, quoted names included.
    Word,
    /// A string, number or dollar-quoted body: shown as `?`.
    Literal,
    /// A parameter the client bound (`$1`, `?`): kept.
    Parameter,
    /// An operator or punctuation, one character at a time.
    Punct,
    /// Values collapsed: shown as `...`.
    Ellipsis,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Token<'a> {
    pub(super) kind: Kind,
    pub(super) text: &'a str,
    /// Whitespace or a comment came before it in the text.
    pub(super) space_before: bool,
}

impl Token<'_> {
    pub(super) fn is(&self, kind: Kind, text: &str) -> bool {
        self.kind == kind && self.text.eq_ignore_ascii_case(text)
    }

    pub(super) fn is_value(&self) -> bool {
        matches!(self.kind, Kind::Literal | Kind::Parameter)
    }
}

/// Words after which a minus sign can only be a number's sign.
const BEFORE_A_SIGN: &[&str] = &[
    "SELECT", "WHERE", "AND", "OR", "NOT", "BETWEEN", "VALUES", "SET", "THEN", "ELSE", "WHEN",
    "LIMIT", "OFFSET", "IN", "IS", "LIKE", "RETURN", "BY", "AS", "CASE", "ON", "HAVING", "ANY",
    "DEFAULT",
];

/// Prefixes that belong to the string right after them (`E'…'`, `X'…'`, `N'…'`).
const STRING_PREFIXES: &[&str] = &["E", "B", "X", "N"];

pub(super) struct Lexer<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    dialect: Dialect,
    tokens: Vec<Token<'a>>,
    space: bool,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(text: &'a str, dialect: Dialect) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            at: 0,
            dialect,
            tokens: Vec::with_capacity(text.len() / 4),
            space: false,
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.at + ahead).copied()
    }

    fn push(&mut self, kind: Kind, start: usize) {
        self.tokens.push(Token {
            kind,
            text: &self.text[start..self.at],
            space_before: self.space,
        });
        self.space = false;
    }

    pub(super) fn tokens(mut self) -> Vec<Token<'a>> {
        let mysql = self.dialect.is_mysql();
        let backslashes = self.dialect.backslashes();
        while let Some(b) = self.peek(0) {
            let start = self.at;
            match b {
                b if b.is_ascii_whitespace() => {
                    self.at += 1;
                    self.space = true;
                }
                b'-' if self.peek(1) == Some(b'-') && (!mysql || self.dash_comment_in_mysql()) => {
                    self.line_comment()
                }
                b'#' if mysql => self.line_comment(),
                b'/' if self.peek(1) == Some(b'*') => self.block_comment(),
                b'\'' => {
                    self.string(b'\'', backslashes);
                    self.push(Kind::Literal, start);
                }
                b'"' if mysql => {
                    self.string(b'"', backslashes);
                    self.push(Kind::Literal, start);
                }
                b'"' | b'`' => {
                    self.quoted_name(b);
                    self.push(Kind::Word, start);
                }
                b'$' if !mysql => self.dollar(),
                b'?' => {
                    self.at += 1;
                    self.push(Kind::Parameter, start);
                }
                b'0'..=b'9' => {
                    self.number();
                    self.push(Kind::Literal, start);
                }
                b'.' if self.peek(1).is_some_and(|c| c.is_ascii_digit()) => {
                    self.number();
                    self.push(Kind::Literal, start);
                }
                b'-' if self.starts_a_signed_number() => {
                    self.at += 1;
                    self.number();
                    self.push(Kind::Literal, start);
                }
                b if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => self.word(),
                _ => {
                    // One character, whatever its width.
                    let width = self.text[self.at..]
                        .chars()
                        .next()
                        .map_or(1, char::len_utf8);
                    self.at += width;
                    self.push(Kind::Punct, start);
                }
            }
        }
        self.tokens
    }

    /// MySQL starts a comment with `--` only when a space or control character follows.
    fn dash_comment_in_mysql(&self) -> bool {
        self.peek(2)
            .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    }

    fn line_comment(&mut self) {
        while let Some(b) = self.peek(0) {
            if b == b'\n' {
                break;
            }
            self.at += 1;
        }
        self.space = true;
    }

    fn block_comment(&mut self) {
        let nests = !self.dialect.is_mysql();
        self.at += 2;
        let mut depth = 1;
        while let Some(b) = self.peek(0) {
            if b == b'*' && self.peek(1) == Some(b'/') {
                self.at += 2;
                depth -= 1;
                if depth == 0 {
                    break;
                }
            } else if nests && b == b'/' && self.peek(1) == Some(b'*') {
                self.at += 2;
                depth += 1;
            } else {
                self.at += 1;
            }
        }
        self.space = true;
    }

    /// A string from its opening `quote` to its end (or the end of the text): a doubled quote
    /// goes on, and so does an escaped one where `backslashes` escape.
    fn string(&mut self, quote: u8, backslashes: bool) {
        self.at += 1;
        while let Some(b) = self.peek(0) {
            if backslashes && b == b'\\' {
                self.at = (self.at + 2).min(self.bytes.len());
            } else if b == quote {
                self.at += 1;
                if self.peek(0) != Some(quote) {
                    return;
                }
                self.at += 1;
            } else {
                self.at += 1;
            }
        }
    }

    /// A quoted name, `"…"` or `` `…` ``, with its doubled quotes.
    fn quoted_name(&mut self, quote: u8) {
        self.string(quote, false);
    }

    /// `$1` (a parameter), `$$…$$` or `$tag$…$tag$` (a literal), or a lone `$`.
    fn dollar(&mut self) {
        let start = self.at;
        if self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
            while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
            }
            self.push(Kind::Parameter, start);
            return;
        }
        let tag_start = self.at + 1;
        let mut end = tag_start;
        while let Some(&c) = self.bytes.get(end) {
            let first = end == tag_start;
            let fits =
                c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 || (!first && c.is_ascii_digit());
            if !fits {
                break;
            }
            end += 1;
        }
        if self.bytes.get(end) != Some(&b'$') {
            self.at += 1;
            self.push(Kind::Punct, start);
            return;
        }
        let delimiter = &self.text[start..=end];
        let body = end + 1;
        self.at = match self.text[body..].find(delimiter) {
            Some(offset) => body + offset + delimiter.len(),
            None => self.bytes.len(),
        };
        self.push(Kind::Literal, start);
    }

    /// A number from here: digits with `_`, a fraction, an exponent, or `0x`/`0b`/`0o` digits.
    /// Letters right after it (`1abc`) go with it: no name starts with a digit in PostgreSQL,
    /// and such a MySQL name is better lost than a number kept.
    fn number(&mut self) {
        let radix = match (self.peek(0), self.peek(1)) {
            (Some(b'0'), Some(b'x' | b'X' | b'b' | b'B' | b'o' | b'O')) => {
                self.at += 2;
                true
            }
            _ => false,
        };
        let mut seen_exponent = false;
        while let Some(b) = self.peek(0) {
            let more = match b {
                b'0'..=b'9' | b'_' => true,
                b'.' => !radix && !seen_exponent,
                b'e' | b'E' if !radix && !seen_exponent => {
                    seen_exponent = true;
                    if matches!(self.peek(1), Some(b'+' | b'-')) {
                        self.at += 1;
                    }
                    true
                }
                b if b.is_ascii_alphanumeric() || b >= 0x80 => true,
                _ => false,
            };
            if !more {
                break;
            }
            self.at += 1;
        }
    }

    /// A minus sign that can only be a sign: before a digit, after nothing, an operator, an
    /// opening bracket, a comma or one of [`BEFORE_A_SIGN`].
    fn starts_a_signed_number(&self) -> bool {
        let digit_follows = match (self.peek(1), self.peek(2)) {
            (Some(c), _) if c.is_ascii_digit() => true,
            (Some(b'.'), Some(c)) => c.is_ascii_digit(),
            _ => false,
        };
        digit_follows
            && self.tokens.last().is_none_or(|t| match t.kind {
                Kind::Punct => !matches!(t.text, ")" | "]"),
                Kind::Word => BEFORE_A_SIGN.iter().any(|w| t.text.eq_ignore_ascii_case(w)),
                Kind::Literal | Kind::Parameter | Kind::Ellipsis => false,
            })
    }

    /// A name or keyword; a string prefix or a MySQL charset introducer goes with its string.
    fn word(&mut self) {
        let start = self.at;
        while let Some(b) = self.peek(0) {
            let fits = b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
            if !fits {
                break;
            }
            self.at += 1;
        }
        let word = &self.text[start..self.at];
        let mysql = self.dialect.is_mysql();
        let prefix = STRING_PREFIXES.iter().any(|p| word.eq_ignore_ascii_case(p))
            || (mysql && word.starts_with('_'));
        if prefix && self.peek(0) == Some(b'\'') {
            let escapes = self.dialect.backslashes() || word.eq_ignore_ascii_case("E");
            self.string(b'\'', escapes);
            self.push(Kind::Literal, start);
            return;
        }
        if !mysql
            && word.eq_ignore_ascii_case("U")
            && self.peek(0) == Some(b'&')
            && self.peek(1) == Some(b'\'')
        {
            self.at += 1;
            self.string(b'\'', false);
            self.push(Kind::Literal, start);
            return;
        }
        self.push(Kind::Word, start);
    }
}
