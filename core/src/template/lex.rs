//! The lexer: template source → tokens, as Go's `text/template/parse` lexes it. Text between actions is
//! one token; `{{- ` and ` -}}` trim the whitespace of the neighbouring text; comments vanish.

use super::ParseError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Text(String),
    Left,
    Right,
    Space,
    Ident(String),
    /// `.Name` (without the dot).
    Field(String),
    /// `$name` (with the dollar; `$` alone is the root).
    Var(String),
    Dot,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Pipe,
    LParen,
    RParen,
    Comma,
    Declare,
    Assign,
    /// A character that has no meaning inside an action; the parser reports it where it finds it.
    Char(char),
    Eof,
}

/// A token and the byte offset where it starts.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) pos: usize,
}

pub(crate) struct Lexer<'a> {
    src: &'a str,
    left: &'a str,
    right: &'a str,
    pos: usize,
    out: Vec<Token>,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

pub(crate) fn lex(src: &str, left: &str, right: &str) -> Result<Vec<Token>, ParseError> {
    let left = if left.is_empty() { "{{" } else { left };
    let right = if right.is_empty() { "}}" } else { right };
    let mut lx = Lexer {
        src,
        left,
        right,
        pos: 0,
        out: Vec::new(),
    };
    lx.run()?;
    Ok(lx.out)
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn err(&self, pos: usize, msg: impl Into<String>) -> ParseError {
        ParseError::at(self.src, pos, msg)
    }

    fn push(&mut self, tok: Tok, pos: usize) {
        self.out.push(Token { tok, pos });
    }

    fn run(&mut self) -> Result<(), ParseError> {
        let mut trim_next_text = false;
        loop {
            let start = self.pos;
            let end = match self.rest().find(self.left) {
                Some(i) => self.pos + i,
                None => self.src.len(),
            };
            let mut text = &self.src[start..end];
            if trim_next_text {
                text = text.trim_start_matches(is_space);
            }
            let after_left = end + self.left.len();
            let trims_left = end < self.src.len()
                && self.src[after_left..].starts_with('-')
                && self.src[after_left + 1..].starts_with(is_space);
            if trims_left {
                text = text.trim_end_matches(is_space);
            }
            if !text.is_empty() {
                self.push(Tok::Text(text.to_string()), start);
            }
            if end == self.src.len() {
                self.push(Tok::Eof, end);
                return Ok(());
            }
            self.pos = if trims_left { after_left + 2 } else { after_left };
            trim_next_text = self.action(end)?;
        }
    }

    /// Does a right delimiter (optionally with its trim marker) start here? Returns (trims, length).
    fn at_right(&self) -> Option<(bool, usize)> {
        let rest = self.rest();
        if rest.starts_with(self.right) {
            return Some((false, self.right.len()));
        }
        let mut chars = rest.chars();
        if chars.next().is_some_and(is_space) {
            let after_space = &rest[1..];
            if after_space.starts_with('-') && after_space[1..].starts_with(self.right) {
                return Some((true, 2 + self.right.len()));
            }
        }
        None
    }

    /// Lex one action after its left delimiter; returns whether it trims the text that follows.
    fn action(&mut self, left_pos: usize) -> Result<bool, ParseError> {
        // A comment fills the whole action: `{{/* … */}}`, with optional trim markers.
        if self.rest().starts_with("/*") {
            let Some(close) = self.rest().find("*/") else {
                return Err(self.err(left_pos, "unclosed comment"));
            };
            self.pos += close + 2;
            return match self.at_right() {
                Some((trims, len)) => {
                    self.pos += len;
                    Ok(trims)
                }
                None => Err(self.err(self.pos, "comment ends before closing delimiter")),
            };
        }
        self.push(Tok::Left, left_pos);
        loop {
            if let Some((trims, len)) = self.at_right() {
                self.push(Tok::Right, self.pos);
                self.pos += len;
                return Ok(trims);
            }
            let start = self.pos;
            let Some(c) = self.rest().chars().next() else {
                return Err(self.err(left_pos, "unclosed action"));
            };
            match c {
                c if is_space(c) => {
                    // Stop before a space that begins a trimming right delimiter.
                    while let Some(c) = self.rest().chars().next() {
                        if !is_space(c) || self.at_right().is_some() {
                            break;
                        }
                        self.pos += 1;
                    }
                    self.push(Tok::Space, start);
                }
                '|' => self.single(Tok::Pipe),
                '(' => self.single(Tok::LParen),
                ')' => self.single(Tok::RParen),
                ',' => self.single(Tok::Comma),
                '=' => self.single(Tok::Assign),
                ':' if self.rest().starts_with(":=") => {
                    self.pos += 2;
                    self.push(Tok::Declare, start);
                }
                '"' => self.quoted()?,
                '`' => self.raw_string()?,
                '\'' => self.char_constant()?,
                '$' => {
                    self.pos += 1;
                    let name = self.ident_run();
                    self.push(Tok::Var(format!("${name}")), start);
                }
                '.' => {
                    let next = self.rest()[1..].chars().next();
                    if next.is_some_and(|c| c.is_ascii_digit()) {
                        self.number()?;
                    } else if next.is_some_and(is_ident_char) {
                        self.pos += 1;
                        let name = self.ident_run();
                        self.push(Tok::Field(name.to_string()), start);
                    } else {
                        self.single(Tok::Dot);
                    }
                }
                '0'..='9' => self.number()?,
                '-' | '+' if self.rest()[1..].starts_with(|c: char| c.is_ascii_digit() || c == '.') => self.number()?,
                c if is_ident_char(c) => {
                    let word = self.ident_run();
                    let tok = match word {
                        "true" => Tok::Bool(true),
                        "false" => Tok::Bool(false),
                        "nil" => Tok::Nil,
                        w => Tok::Ident(w.to_string()),
                    };
                    self.push(tok, start);
                }
                other => {
                    self.pos += other.len_utf8();
                    self.push(Tok::Char(other), start);
                }
            }
        }
    }

    fn single(&mut self, tok: Tok) {
        let start = self.pos;
        self.pos += 1;
        self.push(tok, start);
    }

    fn ident_run(&mut self) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c: char| !is_ident_char(c)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    fn number(&mut self) -> Result<(), ParseError> {
        let start = self.pos;
        let rest = self.rest();
        let mut len = 0;
        for (i, c) in rest.char_indices() {
            let ok = c.is_ascii_alphanumeric()
                || c == '.'
                || c == '_'
                || (i == 0 && (c == '-' || c == '+'))
                || ((c == '-' || c == '+') && matches!(rest[..i].chars().last(), Some('e' | 'E' | 'p' | 'P')));
            if !ok {
                break;
            }
            len = i + c.len_utf8();
        }
        let text = &rest[..len];
        self.pos += len;
        let tok = parse_number(text).ok_or_else(|| self.err(start, format!("bad number syntax: {text:?}")))?;
        self.push(tok, start);
        Ok(())
    }

    fn quoted(&mut self) -> Result<(), ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut value = String::new();
        loop {
            let Some(c) = self.rest().chars().next() else {
                return Err(self.err(start, "unterminated quoted string"));
            };
            self.pos += c.len_utf8();
            match c {
                '"' => break,
                '\n' => return Err(self.err(start, "unterminated quoted string")),
                '\\' => value.push(self.escape(start, '"')?),
                c => value.push(c),
            }
        }
        self.push(Tok::Str(value), start);
        Ok(())
    }

    fn escape(&mut self, start: usize, quote: char) -> Result<char, ParseError> {
        let Some(c) = self.rest().chars().next() else {
            return Err(self.err(start, "unterminated quoted string"));
        };
        self.pos += c.len_utf8();
        let hex = |lx: &mut Self, n: usize| -> Result<char, ParseError> {
            let digits = lx.rest().get(..n).unwrap_or("");
            let code = u32::from_str_radix(digits, 16).ok().and_then(char::from_u32);
            lx.pos += digits.len();
            code.ok_or_else(|| lx.err(start, "invalid syntax in quoted string"))
        };
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'v' => '\x0b',
            '\\' => '\\',
            'x' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            c if c == quote => c,
            _ => return Err(self.err(start, "invalid syntax in quoted string")),
        })
    }

    fn raw_string(&mut self) -> Result<(), ParseError> {
        let start = self.pos;
        let Some(len) = self.rest()[1..].find('`') else {
            return Err(self.err(start, "unterminated raw quoted string"));
        };
        let value = self.rest()[1..1 + len].replace('\r', "");
        self.pos += len + 2;
        self.push(Tok::Str(value), start);
        Ok(())
    }

    fn char_constant(&mut self) -> Result<(), ParseError> {
        let start = self.pos;
        self.pos += 1;
        let c = match self.rest().chars().next() {
            Some('\\') => {
                self.pos += 1;
                self.escape(start, '\'')?
            }
            Some(c) if c != '\'' && c != '\n' => {
                self.pos += c.len_utf8();
                c
            }
            _ => return Err(self.err(start, "unterminated character constant")),
        };
        if !self.rest().starts_with('\'') {
            return Err(self.err(start, "unterminated character constant"));
        }
        self.pos += 1;
        self.push(Tok::Int(c as i64), start);
        Ok(())
    }
}

/// A Go number literal: decimal, `0x`/`0o`/`0b` integers, `_` separators, floats with exponents.
fn parse_number(text: &str) -> Option<Tok> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let clean: String = body.chars().filter(|&c| c != '_').collect();
    let lower = clean.to_ascii_lowercase();
    let radix = |p: &str, r: u32| lower.strip_prefix(p).and_then(|d| i64::from_str_radix(d, r).ok());
    let int = radix("0x", 16)
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
        .or_else(|| {
            if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit()) {
                i64::from_str_radix(&lower[1..], 8).ok()
            } else {
                lower.parse::<i64>().ok()
            }
        });
    if let Some(i) = int {
        return Some(Tok::Int(if neg { i.checked_neg()? } else { i }));
    }
    if lower.starts_with("0x") || lower.contains(|c: char| c.is_ascii_alphabetic() && c != 'e') {
        return None;
    }
    let f: f64 = lower.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    Some(Tok::Float(if neg { -f } else { f }))
}
