//! The functions a template can call: Go's builtins (`len`, `index`, `printf`, comparisons, …) and
//! consul-template's (`service`, `key`, `tree`, `toJSON`, `split`, math, …), with consul-template's
//! argument orders (the piped value is the last argument: `{{ key "x" | split "," }}`).

use super::dep::{self, Dependency};
use super::exec::Exec;
use super::format::{escape_html, escape_js, escape_query, sprintf, timestamp};
use super::value::Value;
use base64::Engine as _;
use std::cmp::Ordering;

/// Every function name the parser accepts.
pub(crate) const NAMES: &[&str] = &[
    // Go builtins
    "and",
    "or",
    "not",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "js",
    "urlquery",
    // consul-template: Consul data
    "service",
    "services",
    "key",
    "keyOrDefault",
    "keyExists",
    "ls",
    "safeLs",
    "tree",
    "safeTree",
    "node",
    "nodes",
    "datacenters",
    "env",
    "envOrDefault",
    "mustEnv",
    "file",
    // consul-template: helpers
    "byTag",
    "byKey",
    "toJSON",
    "toJSONPretty",
    "parseJSON",
    "split",
    "join",
    "contains",
    "containsAll",
    "containsAny",
    "containsNone",
    "containsNotAll",
    "in",
    "replaceAll",
    "toLower",
    "toUpper",
    "toTitle",
    "trimSpace",
    "trim",
    "trimPrefix",
    "trimSuffix",
    "timestamp",
    "parseInt",
    "parseUint",
    "parseFloat",
    "parseBool",
    "add",
    "subtract",
    "multiply",
    "divide",
    "modulo",
    "minimum",
    "maximum",
    "loop",
    "indent",
    "base64Encode",
    "base64Decode",
    "base64URLEncode",
    "base64URLDecode",
];

/// Longest list `loop` may build.
const MAX_LOOP: i64 = 1_000_000;

pub(crate) fn is_defined(name: &str) -> bool {
    NAMES.contains(&name)
}

fn arity(name: &str, args: &[Value], min: usize, max: usize) -> Result<(), String> {
    if args.len() < min || args.len() > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        ));
    }
    Ok(())
}

fn string_arg<'v>(name: &str, v: &'v Value) -> Result<&'v str, String> {
    v.as_str()
        .ok_or_else(|| format!("{name}: expected string; found {}", v.to_text()))
}

/// A value used as a string: strings as they are, numbers and bools printed.
fn text(v: &Value) -> String {
    v.to_text()
}

/// Call the function `name` (the parser has checked that it exists).
pub(crate) fn call(ex: &mut Exec<'_>, name: &str, args: Vec<Value>) -> Result<Value, String> {
    let a = args.as_slice();
    if let Some(v) = go_builtin(name, a)? {
        return Ok(v);
    }
    if let Some(v) = consul_data(ex, name, a)? {
        return Ok(v);
    }
    if let Some(v) = text_helper(name, a)? {
        return Ok(v);
    }
    match value_helper(name, a)? {
        Some(v) => Ok(v),
        None => Err(format!("function {name:?} not defined")),
    }
}

/// Go's builtin functions.
fn go_builtin(name: &str, a: &[Value]) -> Result<Option<Value>, String> {
    Ok(Some(match name {
        "not" => {
            arity(name, a, 1, 1)?;
            Value::Bool(!a[0].truthy())
        }
        "len" => {
            arity(name, a, 1, 1)?;
            Value::Int(match &a[0] {
                Value::Str(s) => s.len() as i64,
                Value::List(l) => l.len() as i64,
                Value::Map(m) => m.len() as i64,
                other => return Err(format!("len of type {}", other.kind())),
            })
        }
        "index" => index(a)?,
        "slice" => slice(a)?,
        "print" => Value::Str(sprint(a)),
        "println" => {
            let parts: Vec<String> = a.iter().map(text).collect();
            Value::Str(parts.join(" ") + "\n")
        }
        "printf" => {
            arity(name, a, 1, usize::MAX)?;
            Value::Str(sprintf(string_arg(name, &a[0])?, &a[1..]))
        }
        "eq" => {
            arity(name, a, 2, usize::MAX)?;
            let mut any = false;
            for other in &a[1..] {
                if equal(&a[0], other)? {
                    any = true;
                }
            }
            Value::Bool(any)
        }
        "ne" => {
            arity(name, a, 2, 2)?;
            Value::Bool(!equal(&a[0], &a[1])?)
        }
        "lt" | "le" | "gt" | "ge" => {
            arity(name, a, 2, 2)?;
            let ord = compare(&a[0], &a[1])?;
            Value::Bool(match name {
                "lt" => ord == Ordering::Less,
                "le" => ord != Ordering::Greater,
                "gt" => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            })
        }
        "html" => Value::Str(escape_html(&sprint(a))),
        "js" => Value::Str(escape_js(&sprint(a))),
        "urlquery" => Value::Str(escape_query(&sprint(a))),
        _ => return Ok(None),
    }))
}

/// consul-template's functions that read Consul (or the environment, files and the clock).
fn consul_data(ex: &mut Exec<'_>, name: &str, a: &[Value]) -> Result<Option<Value>, String> {
    Ok(Some(match name {
        "service" => {
            arity(name, a, 1, 2)?;
            let filter = a.get(1).map(|f| string_arg(name, f)).transpose()?;
            let d = dep::parse_service(string_arg(name, &a[0])?, filter)?;
            ex.dependency(d).unwrap_or_else(|| Value::list(Vec::new()))
        }
        "services" => {
            arity(name, a, 0, 1)?;
            let q = a.first().map(|q| string_arg(name, q)).transpose()?.unwrap_or("");
            let (_, dc, _) = dep::parse_catalog(q);
            ex.dependency(Dependency::CatalogServices { dc })
                .unwrap_or_else(|| Value::list(Vec::new()))
        }
        "node" => {
            arity(name, a, 0, 1)?;
            let q = a.first().map(|q| string_arg(name, q)).transpose()?.unwrap_or("");
            let (node, dc, _) = dep::parse_catalog(q);
            let name = Some(node).filter(|n| !n.is_empty());
            ex.dependency(Dependency::CatalogNode { name, dc }).unwrap_or_default()
        }
        "nodes" => {
            arity(name, a, 0, 1)?;
            let q = a.first().map(|q| string_arg(name, q)).transpose()?.unwrap_or("");
            let (_, dc, near) = dep::parse_catalog(q);
            ex.dependency(Dependency::CatalogNodes { dc, near })
                .unwrap_or_else(|| Value::list(Vec::new()))
        }
        "datacenters" => {
            arity(name, a, 0, 1)?;
            ex.dependency(Dependency::CatalogDatacenters)
                .unwrap_or_else(|| Value::list(Vec::new()))
        }
        "key" | "keyExists" | "keyOrDefault" => {
            arity(
                name,
                a,
                if name == "keyOrDefault" { 2 } else { 1 },
                if name == "keyOrDefault" { 2 } else { 1 },
            )?;
            let d = dep::parse_kv(string_arg(name, &a[0])?)?;
            let got = ex.dependency(d.clone());
            match (name, got) {
                ("key", Some(Value::Str(s))) => Value::Str(s),
                ("key", _) => {
                    // A key that does not exist (yet) holds the render back, as in consul-template.
                    ex.block_on(d);
                    Value::Str(String::new())
                }
                ("keyExists", got) => Value::Bool(matches!(got, Some(Value::Str(_)))),
                (_, Some(Value::Str(s))) => Value::Str(s),
                (_, _) => Value::Str(text(&a[1])),
            }
        }
        "ls" | "safeLs" | "tree" | "safeTree" => {
            arity(name, a, 1, 1)?;
            let d = dep::parse_kv_list(string_arg(name, &a[0])?);
            let pairs = ex.dependency(d.clone());
            let top_only = name.ends_with("Ls") || name == "ls";
            let list: Vec<Value> = match &pairs {
                Some(Value::List(l)) => l
                    .iter()
                    .filter(|p| {
                        let key = p.field("Key").ok().map(|k| k.to_text()).unwrap_or_default();
                        if top_only {
                            !key.is_empty() && !key.contains('/')
                        } else {
                            !key.ends_with('/') && !key.is_empty()
                        }
                    })
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            if name.starts_with("safe") && pairs.is_some() && list.is_empty() {
                ex.block_on(d);
            }
            Value::list(list)
        }
        "env" | "mustEnv" => {
            arity(name, a, 1, 1)?;
            let var = string_arg(name, &a[0])?;
            match (ex.ctx.env)(var) {
                Some(v) => Value::Str(v),
                None if name == "mustEnv" => return Err(format!("environment variable {var} not set")),
                None => Value::Str(String::new()),
            }
        }
        "envOrDefault" => {
            arity(name, a, 2, 2)?;
            let var = string_arg(name, &a[0])?;
            Value::Str((ex.ctx.env)(var).unwrap_or_else(|| text(&a[1])))
        }
        "file" => {
            arity(name, a, 1, 1)?;
            let path = string_arg(name, &a[0])?.to_string();
            ex.dependency(Dependency::File { path }).unwrap_or_default()
        }
        "timestamp" => {
            arity(name, a, 0, 1)?;
            let layout = a.first().map(|l| string_arg(name, l)).transpose()?;
            Value::Str(timestamp(
                ex.ctx.now_unix,
                layout.unwrap_or("2006-01-02T15:04:05Z07:00"),
            ))
        }
        _ => return Ok(None),
    }))
}

/// consul-template's helpers over strings, lists and JSON.
fn text_helper(name: &str, a: &[Value]) -> Result<Option<Value>, String> {
    Ok(Some(match name {
        "byTag" => {
            arity(name, a, 1, 1)?;
            dep::by_tag(&a[0])?
        }
        "byKey" => {
            arity(name, a, 1, 1)?;
            dep::by_key(&a[0])?
        }
        "toJSON" | "toJSONPretty" => {
            arity(name, a, 1, 1)?;
            let json = a[0].to_json();
            let s = if name == "toJSON" {
                serde_json::to_string(&json)
            } else {
                serde_json::to_string_pretty(&json)
            };
            Value::Str(s.map_err(|e| e.to_string())?)
        }
        "parseJSON" => {
            arity(name, a, 1, 1)?;
            let s = string_arg(name, &a[0])?;
            if s.trim().is_empty() {
                return Ok(Some(Value::map(Vec::<(String, Value)>::new())));
            }
            let json: serde_json::Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
            Value::from_json(&json)
        }
        "split" => {
            arity(name, a, 2, 2)?;
            let (sep, s) = (string_arg(name, &a[0])?, string_arg(name, &a[1])?);
            if s.is_empty() {
                Value::list(Vec::new())
            } else if sep.is_empty() {
                Value::list(s.chars().map(|c| Value::Str(c.to_string())).collect())
            } else {
                Value::list(s.split(sep).map(Value::str).collect())
            }
        }
        "join" => {
            arity(name, a, 2, 2)?;
            let sep = string_arg(name, &a[0])?;
            let Value::List(items) = &a[1] else {
                return Err(format!("join: expected a list; found {}", a[1].kind()));
            };
            let parts: Vec<String> = items.iter().map(text).collect();
            Value::Str(parts.join(sep))
        }
        "contains" => {
            arity(name, a, 2, 2)?;
            Value::Bool(contains(&a[1], &a[0])?)
        }
        "in" => {
            arity(name, a, 2, 2)?;
            Value::Bool(contains(&a[0], &a[1])?)
        }
        "containsAll" | "containsAny" | "containsNone" | "containsNotAll" => {
            arity(name, a, 2, 2)?;
            let Value::List(wanted) = &a[0] else {
                return Err(format!("{name}: expected a list; found {}", a[0].kind()));
            };
            let mut hits = 0;
            for w in wanted.iter() {
                if contains(&a[1], w)? {
                    hits += 1;
                }
            }
            Value::Bool(match name {
                "containsAll" => hits == wanted.len(),
                "containsAny" => hits > 0,
                "containsNone" => hits == 0,
                _ => hits < wanted.len(),
            })
        }
        "replaceAll" => {
            arity(name, a, 3, 3)?;
            let (from, to, s) = (
                string_arg(name, &a[0])?,
                string_arg(name, &a[1])?,
                string_arg(name, &a[2])?,
            );
            Value::Str(if from.is_empty() {
                s.to_string()
            } else {
                s.replace(from, to)
            })
        }
        "toLower" | "toUpper" | "toTitle" | "trimSpace" => {
            arity(name, a, 1, 1)?;
            let s = string_arg(name, &a[0])?;
            Value::Str(match name {
                "toLower" => s.to_lowercase(),
                "toUpper" => s.to_uppercase(),
                "trimSpace" => s.trim().to_string(),
                _ => title(s),
            })
        }
        "trim" | "trimPrefix" | "trimSuffix" => {
            arity(name, a, 2, 2)?;
            let (cut, s) = (string_arg(name, &a[0])?, string_arg(name, &a[1])?);
            Value::str(match name {
                "trim" => s.trim_matches(|c| cut.contains(c)),
                "trimPrefix" => s.strip_prefix(cut).unwrap_or(s),
                _ => s.strip_suffix(cut).unwrap_or(s),
            })
        }
        _ => return Ok(None),
    }))
}

/// consul-template's parsing, math and encoding helpers.
fn value_helper(name: &str, a: &[Value]) -> Result<Option<Value>, String> {
    Ok(Some(match name {
        "parseInt" | "parseUint" => {
            arity(name, a, 1, 1)?;
            let s = string_arg(name, &a[0])?;
            let n: i64 = s
                .parse()
                .map_err(|_| format!("strconv.ParseInt: parsing {s:?}: invalid syntax"))?;
            if name == "parseUint" && n < 0 {
                return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
            }
            Value::Int(n)
        }
        "parseFloat" => {
            arity(name, a, 1, 1)?;
            let s = string_arg(name, &a[0])?;
            Value::Float(
                s.parse()
                    .map_err(|_| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax"))?,
            )
        }
        "parseBool" => {
            arity(name, a, 1, 1)?;
            let s = string_arg(name, &a[0])?;
            Value::Bool(match s {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                _ => return Err(format!("strconv.ParseBool: parsing {s:?}: invalid syntax")),
            })
        }
        "add" | "subtract" | "multiply" | "divide" | "modulo" | "minimum" | "maximum" => {
            arity(name, a, 2, 2)?;
            math(name, &a[1], &a[0])?
        }
        "loop" => {
            arity(name, a, 1, 2)?;
            let int = |v: &Value| match v {
                Value::Int(i) => Ok(*i),
                other => Err(format!("loop: expected an integer; found {}", other.to_text())),
            };
            let (start, end) = if a.len() == 1 {
                (0, int(&a[0])?)
            } else {
                (int(&a[0])?, int(&a[1])?)
            };
            if end.saturating_sub(start) > MAX_LOOP {
                return Err(format!("loop: more than {MAX_LOOP} iterations"));
            }
            Value::list((start..end).map(Value::Int).collect())
        }
        "indent" => {
            arity(name, a, 2, 2)?;
            let n = match &a[0] {
                Value::Int(n) if (0..=1024).contains(n) => *n as usize,
                other => return Err(format!("indent: invalid spaces {}", other.to_text())),
            };
            let pad = " ".repeat(n);
            let s = string_arg(name, &a[1])?;
            let lines: Vec<String> = s.split('\n').map(|l| format!("{pad}{l}")).collect();
            Value::Str(lines.join("\n"))
        }
        "base64Encode" | "base64URLEncode" => {
            arity(name, a, 1, 1)?;
            let s = string_arg(name, &a[0])?;
            Value::Str(engine(name).encode(s))
        }
        "base64Decode" | "base64URLDecode" => {
            arity(name, a, 1, 1)?;
            let s = string_arg(name, &a[0])?;
            let bytes = engine(name).decode(s).map_err(|e| e.to_string())?;
            Value::Str(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => return Ok(None),
    }))
}

fn engine(name: &str) -> base64::engine::GeneralPurpose {
    if name.contains("URL") {
        base64::engine::general_purpose::URL_SAFE
    } else {
        base64::engine::general_purpose::STANDARD
    }
}

/// Go's `fmt.Sprint`: spaces between operands when neither is a string.
fn sprint(a: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in a.iter().enumerate() {
        if i > 0 && !matches!(v, Value::Str(_)) && !matches!(a[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        v.write_text(&mut out, false);
    }
    out
}

fn index(a: &[Value]) -> Result<Value, String> {
    arity("index", a, 1, usize::MAX)?;
    let mut v = a[0].clone();
    for key in &a[1..] {
        v = match (&v, key) {
            (Value::List(l), Value::Int(i)) => match usize::try_from(*i).ok().and_then(|i| l.get(i)) {
                Some(e) => e.clone(),
                None => return Err(format!("error calling index: index out of range: {i}")),
            },
            (Value::Str(s), Value::Int(i)) => match usize::try_from(*i).ok().and_then(|i| s.as_bytes().get(i)) {
                Some(b) => Value::Int(i64::from(*b)),
                None => return Err(format!("error calling index: index out of range: {i}")),
            },
            (Value::Map(m), k) => m.get(&text(k)).cloned().unwrap_or_default(),
            (Value::Null, _) => return Err("index of untyped nil".into()),
            (other, k) => return Err(format!("can't index item of type {} with {}", other.kind(), k.kind())),
        };
    }
    Ok(v)
}

fn slice(a: &[Value]) -> Result<Value, String> {
    arity("slice", a, 1, 3)?;
    let bound = |i: usize, len: usize, default: usize| -> Result<usize, String> {
        match a.get(i) {
            None => Ok(default),
            Some(Value::Int(n)) if *n >= 0 && (*n as u64) <= len as u64 => Ok(*n as usize),
            Some(other) => Err(format!("index out of range: {}", other.to_text())),
        }
    };
    match &a[0] {
        Value::Str(s) => {
            let (lo, hi) = (bound(1, s.len(), 0)?, bound(2, s.len(), s.len())?);
            match s.get(lo..hi) {
                Some(sub) if lo <= hi => Ok(Value::str(sub)),
                _ => Err(format!("invalid slice index: {lo} > {hi}")),
            }
        }
        Value::List(l) => {
            let (lo, hi) = (bound(1, l.len(), 0)?, bound(2, l.len(), l.len())?);
            if lo > hi {
                return Err(format!("invalid slice index: {lo} > {hi}"));
            }
            Ok(Value::list(l[lo..hi].to_vec()))
        }
        other => Err(format!("can't slice item of type {}", other.kind())),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn equal(x: &Value, y: &Value) -> Result<bool, String> {
    Ok(match (x, y) {
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => number(x) == number(y),
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::List(_) | Value::Map(_), _) | (_, Value::List(_) | Value::Map(_)) => {
            return Err(format!(
                "non-comparable type {}",
                if matches!(x, Value::List(_) | Value::Map(_)) {
                    x.kind()
                } else {
                    y.kind()
                }
            ))
        }
        _ => return Err("incompatible types for comparison".into()),
    })
}

fn compare(x: &Value, y: &Value) -> Result<Ordering, String> {
    match (x, y) {
        (Value::Int(a), Value::Int(b)) => Ok(a.cmp(b)),
        (Value::Str(a), Value::Str(b)) => Ok(a.cmp(b)),
        _ => match (number(x), number(y)) {
            (Some(a), Some(b)) => a.partial_cmp(&b).ok_or_else(|| "invalid comparison of NaN".to_string()),
            _ if std::mem::discriminant(x) != std::mem::discriminant(y) => {
                Err("incompatible types for comparison".into())
            }
            _ => Err(format!("invalid type for comparison: {}", x.kind())),
        },
    }
}

/// consul-template's `in(l, v)`: membership in a list, substring of a string.
fn contains(haystack: &Value, needle: &Value) -> Result<bool, String> {
    match haystack {
        Value::List(items) => Ok(items.iter().any(|i| equal(i, needle).unwrap_or(false))),
        Value::Str(s) => Ok(s.contains(&text(needle))),
        Value::Null => Ok(false),
        other => Err(format!("cannot search in type {}", other.kind())),
    }
}

/// consul-template's math helpers: `{{ 5 | subtract 2 }}` is `subtract(2, 5)` = 5 - 2. Integers stay
/// integers unless a float takes part.
fn math(name: &str, a: &Value, b: &Value) -> Result<Value, String> {
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.parse::<i64>().ok(),
        _ => None,
    };
    let float = |v: &Value| match v {
        Value::Float(f) => Some(*f),
        Value::Str(s) => s.parse::<f64>().ok(),
        other => number(other),
    };
    if let (Some(x), Some(y)) = (int(a), int(b)) {
        let r = match name {
            "add" => x.checked_add(y),
            "subtract" => x.checked_sub(y),
            "multiply" => x.checked_mul(y),
            "divide" if y == 0 => return Err("division by zero".into()),
            "divide" => x.checked_div(y),
            "modulo" if y == 0 => return Err("division by zero".into()),
            "modulo" => x.checked_rem(y),
            "minimum" => Some(x.min(y)),
            _ => Some(x.max(y)),
        };
        return r.map(Value::Int).ok_or_else(|| "integer overflow".to_string());
    }
    let (Some(x), Some(y)) = (float(a), float(b)) else {
        return Err(format!("unknown type for {:?} ({})", a.to_text(), a.kind()));
    };
    Ok(Value::Float(match name {
        "add" => x + y,
        "subtract" => x - y,
        "multiply" => x * y,
        "divide" if y == 0.0 => return Err("division by zero".into()),
        "divide" => x / y,
        "modulo" => return Err("modulo of a float".into()),
        "minimum" => x.min(y),
        _ => x.max(y),
    }))
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphanumeric() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}
