//! Request bodies the way Go's `encoding/json` reads them into Consul's structs: field names match
//! case-insensitively (`Name`, `name`, `NAME`), and the agent endpoints also take snake_case
//! (`enable_tag_override`), so a field is found by its name with case and underscores ignored. Map fields
//! (`Meta`, `TaggedAddresses`, `Header`) keep their user-defined keys untouched. Durations are Go duration
//! strings or integer nanoseconds.

use concord_core::api::parse_go_duration;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// A JSON object read with Go's field matching. Errors are the one-line text of a 400.
#[derive(Clone, Copy)]
pub(crate) struct Obj<'a>(&'a Map<String, Value>);

fn fold(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Parse a request body as a JSON object (an empty body is an empty object, as Go's decoder leaves the
/// struct zero... except that Go rejects it; Consul's handlers treat EOF as "nothing given").
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(body).map_err(|e| format!("Request decode failed: {e}"))
}

impl<'a> Obj<'a> {
    pub(crate) fn new(value: &'a Value) -> Result<Self, String> {
        match value {
            Value::Object(map) => Ok(Obj(map)),
            _ => Err("Request decode failed: expected a JSON object".into()),
        }
    }

    /// The value of the first of `names` present (each compared with case and `_` ignored); JSON `null`
    /// counts as absent.
    pub(crate) fn get(&self, names: &[&str]) -> Option<&'a Value> {
        let wanted: Vec<String> = names.iter().map(|n| fold(n)).collect();
        self.0
            .iter()
            .find(|(k, v)| !v.is_null() && wanted.contains(&fold(k)))
            .map(|(_, v)| v)
    }

    /// The object's own entries, keys as sent (for maps of objects, e.g. `TaggedAddresses`).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.0.iter()
    }

    fn bad(name: &str, want: &str) -> String {
        format!("Request decode failed: {name}: expected {want}")
    }

    pub(crate) fn str(&self, name: &str) -> Result<String, String> {
        self.str_any(&[name])
    }

    pub(crate) fn str_any(&self, names: &[&str]) -> Result<String, String> {
        match self.get(names) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Self::bad(names[0], "a string")),
        }
    }

    pub(crate) fn bool(&self, name: &str) -> Result<bool, String> {
        match self.get(&[name]) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(Self::bad(name, "true or false")),
        }
    }

    pub(crate) fn u32(&self, name: &str) -> Result<u32, String> {
        match self.get(&[name]) {
            None => Ok(0),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| Self::bad(name, "a non-negative integer")),
            Some(_) => Err(Self::bad(name, "a number")),
        }
    }

    pub(crate) fn strings(&self, name: &str) -> Result<Vec<String>, String> {
        match self.get(&[name]) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| Self::bad(name, "strings")))
                .collect(),
            Some(_) => Err(Self::bad(name, "an array of strings")),
        }
    }

    /// A string → string map; keys exactly as sent.
    pub(crate) fn string_map(&self, name: &str) -> Result<BTreeMap<String, String>, String> {
        match self.get(&[name]) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(Self::bad(name, "string values")),
                })
                .collect(),
            Some(_) => Err(Self::bad(name, "an object")),
        }
    }

    pub(crate) fn obj(&self, name: &str) -> Result<Option<Obj<'a>>, String> {
        match self.get(&[name]) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Obj::new(v).map(Some),
            Some(_) => Err(Self::bad(name, "an object")),
        }
    }

    pub(crate) fn objs(&self, name: &str) -> Result<Vec<Obj<'a>>, String> {
        match self.get(&[name]) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(Obj::new).collect(),
            Some(_) => Err(Self::bad(name, "an array of objects")),
        }
    }

    /// A Go duration string (`"10s"`) or integer nanoseconds; absent is zero.
    pub(crate) fn duration(&self, name: &str) -> Result<Duration, String> {
        match self.get(&[name]) {
            None => Ok(Duration::ZERO),
            Some(Value::String(s)) if s.is_empty() => Ok(Duration::ZERO),
            Some(Value::String(s)) => parse_go_duration(s).map_err(|e| format!("Request decode failed: {name}: {e}")),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Duration::from_nanos)
                .ok_or_else(|| Self::bad(name, "a duration")),
            Some(_) => Err(Self::bad(name, "a duration")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_match_without_case_or_underscores_and_maps_keep_their_keys() {
        let v = json!({"NAME": "web", "enable_tag_override": true, "meta": {"Key_A": "x"}, "Port": 80,
                       "interval": "10s", "timeout": 1_000_000_000u64, "Tags": null});
        let o = Obj::new(&v).unwrap();
        assert_eq!(o.str("Name").unwrap(), "web");
        assert!(o.bool("EnableTagOverride").unwrap());
        assert_eq!(o.string_map("Meta").unwrap()["Key_A"], "x");
        assert_eq!(o.u32("port").unwrap(), 80);
        assert_eq!(o.duration("Interval").unwrap(), Duration::from_secs(10));
        assert_eq!(o.duration("Timeout").unwrap(), Duration::from_secs(1));
        assert!(o.strings("Tags").unwrap().is_empty(), "null is absent");
        assert!(o.str("Port").is_err());
    }
}
