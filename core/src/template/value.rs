//! The dynamic values a template computes with: what Go's `text/template` sees through `reflect`,
//! reduced to the kinds consul-template's data actually has.
//!
//! Go structs (`HealthService`, `KeyPair`, …) are [`Value::Map`]s keyed by their Go field names, so
//! `.Address` is a map lookup. Maps iterate in key order, as Go's `range` over a map does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// A template value. Lists and maps are shared (`Arc`), so binding `.` in a `range` is cheap.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    /// Go's `nil` (and a missing map key); printed as `<no value>`.
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Arc<Vec<Value>>),
    Map(Arc<BTreeMap<String, Value>>),
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// A list value.
    pub fn list(items: Vec<Value>) -> Value {
        Value::List(Arc::new(items))
    }

    /// A map (or Go struct) value from `(field, value)` pairs.
    pub fn map<K: Into<String>>(fields: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(Arc::new(fields.into_iter().map(|(k, v)| (k.into(), v)).collect()))
    }

    /// Go's notion of truth (`if`, `and`, `or`, `not`): false, 0, nil and empty strings, lists and maps
    /// are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    /// The Go kind name, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "slice",
            Value::Map(_) => "map",
        }
    }

    /// `.Name` on this value. A key missing from a map of strings (`NodeMeta`, `ServiceMeta`) is `""`,
    /// as Go's zero value for `map[string]string`; missing from any other map it is nil.
    pub(crate) fn field(&self, name: &str) -> Result<Value, String> {
        match self {
            Value::Map(m) => Ok(match m.get(name) {
                Some(v) => v.clone(),
                None if m.values().all(|v| matches!(v, Value::Str(_))) => Value::Str(String::new()),
                None => Value::Null,
            }),
            Value::Null => Ok(Value::Null),
            other => Err(format!("can't evaluate field {name} in type {}", other.kind())),
        }
    }

    /// As a string argument, when it is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Printed as Go's `fmt.Sprint` would, which is what `{{ . }}` writes.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out, true);
        out
    }

    pub(crate) fn write_text(&self, out: &mut String, top: bool) {
        match self {
            Value::Null if top => out.push_str("<no value>"),
            Value::Null => out.push_str("<nil>"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&format_float_g(*f)),
            Value::Str(s) => out.push_str(s),
            Value::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    item.write_text(out, false);
                }
                out.push(']');
            }
            Value::Map(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.write_text(out, false);
                }
                out.push(']');
            }
        }
    }

    /// From a JSON value; numbers that fit an `i64` stay integers.
    pub fn from_json(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => Value::list(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::map(o.iter().map(|(k, v)| (k.clone(), Value::from_json(v)))),
        }
    }

    /// To a JSON value (`toJSON`). Non-finite floats become null.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
}

/// Go's `%v` for a float64 (`strconv.FormatFloat(f, 'g', -1, 64)` with Go's exponent thresholds).
pub(crate) fn format_float_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let exp = f.abs().log10().floor() as i32;
    if (-4..21).contains(&exp) {
        format!("{f}")
    } else {
        // Rust's `{:e}` gives `1e21`; Go writes `1e+21` and pads the exponent to two digits.
        let s = format!("{f:e}");
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match e.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', e),
        };
        format!("{mant}e{sign}{digits:0>2}")
    }
}
