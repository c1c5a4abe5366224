//! `?filter=`: the common subset of hashicorp/go-bexpr, evaluated against each result as Consul's JSON
//! shows it (so selectors are the JSON field names: `ServiceTags`, `Service.Tags`, `Node.Meta.rack`,
//! `Meta["k"]`).
//!
//! Grammar: `expr := and ("or" and)*`, `and := unary ("and" unary)*`,
//! `unary := "not" unary | "(" expr ")" | match`, and a match is one of `sel == v`, `sel != v`,
//! `sel contains v`, `sel not contains v`, `v in sel`, `v not in sel`, `sel matches v`,
//! `sel not matches v` (regex-free: `matches` is a substring test here), `sel is empty`,
//! `sel is not empty`. Values are `"double"` or `` `backtick` `` quoted, or bare words.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    Or(Box<Filter>, Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Equal(Vec<String>, String),
    Contains(Vec<String>, String),
    Matches(Vec<String>, String),
    Empty(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Eq,
    Ne,
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            '=' | '!' => {
                chars.next();
                if chars.next() != Some('=') {
                    return Err(format!("unexpected {c:?}"));
                }
                out.push(if c == '=' { Token::Eq } else { Token::Ne });
            }
            '"' | '`' => {
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated string".into()),
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => v.extend(chars.next()),
                        Some(x) => v.push(x),
                    }
                }
                out.push(Token::Quoted(v));
            }
            _ => {
                let mut w = String::new();
                let mut in_index = false; // inside `Meta["key"]`, quotes and spaces belong to the selector
                while let Some(&x) = chars.peek() {
                    if !in_index && (x.is_whitespace() || matches!(x, '(' | ')' | '=' | '!' | '"' | '`')) {
                        break;
                    }
                    in_index = match x {
                        '[' => true,
                        ']' => false,
                        _ => in_index,
                    };
                    w.push(x);
                    chars.next();
                }
                out.push(Token::Word(w));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_word(&self, offset: usize) -> Option<&str> {
        match self.tokens.get(self.at + offset) {
            Some(Token::Word(w)) => Some(w.as_str()),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expr(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.peek_word(0) == Some("or") {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.peek_word(0) == Some("and") {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        if self.peek_word(0) == Some("not") {
            self.at += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            let inner = self.expr()?;
            if self.next() != Some(Token::Close) {
                return Err("missing )".into());
            }
            return Ok(inner);
        }
        self.matcher()
    }

    fn value(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w) | Token::Quoted(w)) => Ok(w),
            other => Err(format!("expected a value, found {other:?}")),
        }
    }

    fn matcher(&mut self) -> Result<Filter, String> {
        // `value in selector` / `value not in selector`
        let in_at = match (self.peek_word(1), self.peek_word(2)) {
            (Some("in"), _) => Some(false),
            (Some("not"), Some("in")) => Some(true),
            _ => None,
        };
        if let Some(negated) = in_at {
            let value = self.value()?;
            self.at += if negated { 2 } else { 1 };
            let sel = selector(&self.value()?)?;
            let f = Filter::Contains(sel, value);
            return Ok(if negated { Filter::Not(Box::new(f)) } else { f });
        }
        let sel = match self.next() {
            Some(Token::Word(w)) => selector(&w)?,
            other => return Err(format!("expected a selector, found {other:?}")),
        };
        let negate = |f: Filter, n: bool| if n { Filter::Not(Box::new(f)) } else { f };
        match self.next() {
            Some(Token::Eq) => Ok(Filter::Equal(sel, self.value()?)),
            Some(Token::Ne) => Ok(Filter::Not(Box::new(Filter::Equal(sel, self.value()?)))),
            Some(Token::Word(w)) => {
                let not = w == "not";
                let op = if not {
                    match self.next() {
                        Some(Token::Word(w)) => w,
                        other => return Err(format!("unexpected {other:?} after not")),
                    }
                } else {
                    w
                };
                match op.as_str() {
                    "contains" => Ok(negate(Filter::Contains(sel, self.value()?), not)),
                    "matches" => Ok(negate(Filter::Matches(sel, self.value()?), not)),
                    "is" if !not => {
                        let is_not = self.peek_word(0) == Some("not");
                        if is_not {
                            self.at += 1;
                        }
                        match self.next() {
                            Some(Token::Word(w)) if w == "empty" => Ok(negate(Filter::Empty(sel), is_not)),
                            other => Err(format!("expected empty, found {other:?}")),
                        }
                    }
                    other => Err(format!("unknown operator {other:?}")),
                }
            }
            other => Err(format!("expected an operator, found {other:?}")),
        }
    }
}

/// `Service.Meta.k` or `Service.Meta["k"]` → path segments.
fn selector(s: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    for dotted in s.split('.') {
        let mut rest = dotted;
        if let Some(at) = rest.find('[') {
            let (head, tail) = rest.split_at(at);
            if !head.is_empty() {
                parts.push(head.to_string());
            }
            rest = tail;
            while let Some(inner) = rest.strip_prefix('[') {
                let end = inner.find(']').ok_or("missing ]")?;
                parts.push(inner[..end].trim_matches(|c| c == '"' || c == '\'').to_string());
                rest = &inner[end + 1..];
            }
        } else {
            parts.push(rest.to_string());
        }
    }
    if parts.iter().any(String::is_empty) {
        return Err(format!("invalid selector {s:?}"));
    }
    Ok(parts)
}

impl Filter {
    pub(crate) fn parse(s: &str) -> Result<Filter, String> {
        let mut p = Parser {
            tokens: tokenize(s)?,
            at: 0,
        };
        let f = p.expr()?;
        if p.at != p.tokens.len() {
            return Err(format!("unexpected {:?}", p.tokens[p.at]));
        }
        Ok(f)
    }

    pub(crate) fn matches(&self, v: &Value) -> bool {
        match self {
            Filter::Or(a, b) => a.matches(v) || b.matches(v),
            Filter::And(a, b) => a.matches(v) && b.matches(v),
            Filter::Not(a) => !a.matches(v),
            Filter::Equal(sel, want) => resolve(v, sel).is_some_and(|x| scalar(x).as_deref() == Some(want)),
            Filter::Contains(sel, want) => match resolve(v, sel) {
                Some(Value::Array(items)) => items.iter().any(|x| scalar(x).as_deref() == Some(want)),
                Some(Value::Object(map)) => map.contains_key(want),
                Some(Value::String(s)) => s.contains(want.as_str()),
                _ => false,
            },
            Filter::Matches(sel, want) => resolve(v, sel)
                .and_then(scalar)
                .is_some_and(|s| s.contains(want.as_str())),
            Filter::Empty(sel) => match resolve(v, sel) {
                None | Some(Value::Null) => true,
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::Object(m)) => m.is_empty(),
                Some(Value::String(s)) => s.is_empty(),
                Some(_) => false,
            },
        }
    }
}

fn resolve<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, seg| v.as_object()?.get(seg))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn common_selectors() {
        let entry = json!({"Node": {"Node": "n1", "Meta": {"rack": "r1"}},
                           "Service": {"Service": "web", "Tags": ["prod", "v2"], "Port": 80}});
        let yes = [
            "Service.Tags contains prod",
            "\"v2\" in Service.Tags",
            "Node.Node == n1 and Service.Port == 80",
            "Node.Node != n2",
            "not (Service.Service == db) and (Node.Meta.rack == `r1` or Node.Node == x)",
            "Node.Meta[\"rack\"] == r1",
            "Service.Tags not contains dev",
            "Node.Meta is not empty",
            "Service.Missing is empty",
            "Service.Service matches we",
        ];
        for f in yes {
            assert!(Filter::parse(f).unwrap().matches(&entry), "{f}");
        }
        let no = [
            "Service.Tags contains dev",
            "Node.Node == n2 or Service.Port != 80",
            "prod not in Service.Tags",
        ];
        for f in no {
            assert!(!Filter::parse(f).unwrap().matches(&entry), "{f}");
        }
        for bad in ["Service.Tags", "a == ", "(a == b", "a ~ b", "a = b"] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}
