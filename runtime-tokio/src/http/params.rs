//! Consul's query parameters. As in Go's `url.Values`, a parameter that is present with an empty value
//! (`?stale=`, `?recurse`) counts as set, and `get` returns the first value.

use super::reply::HttpError;
use super::HttpSettings;
use axum::extract::Query;
use axum::http::Uri;
use concord_core::api::{parse_go_duration, Blocking, ReadMode};

/// The decoded query string, in order.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(uri: &Uri) -> Result<Self, HttpError> {
        Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|Query(pairs)| Params(pairs))
            .map_err(|e| HttpError::bad_request(format!("Invalid query string: {}", e.body_text())))
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter (`?tag=a&tag=b`), in order.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A non-empty value of `name`, or `None` if absent or empty.
    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// An unsigned integer parameter (`?cas=`, `?flags=`), `None` if absent.
    pub(crate) fn u64(&self, name: &str) -> Result<Option<u64>, HttpError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| HttpError::bad_request(format!("Invalid {name} value {v:?}: want an unsigned integer"))),
        }
    }

    pub(crate) fn pretty(&self) -> bool {
        self.has("pretty")
    }

    /// `?dc=`: only the local datacenter is reachable.
    pub(crate) fn check_dc(&self, settings: &HttpSettings) -> Result<(), HttpError> {
        match self.value("dc") {
            Some(dc) if dc != settings.datacenter => Err(HttpError::internal("No path to datacenter")),
            _ => Ok(()),
        }
    }

    /// `?stale` / `?consistent` (both is an error, as in Consul).
    pub(crate) fn read_mode(&self) -> Result<ReadMode, HttpError> {
        match (self.has("stale"), self.has("consistent")) {
            (true, true) => Err(HttpError::bad_request(
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            )),
            (true, false) => Ok(ReadMode::Stale),
            (false, true) => Ok(ReadMode::Consistent),
            (false, false) => Ok(ReadMode::Default),
        }
    }

    /// `?index=&wait=`. Blocking only happens with an index above 0 (as in Consul); `wait` defaults to
    /// `default_query_time` and is capped at `max_query_time` (the core adds the jitter).
    pub(crate) fn blocking(&self, settings: &HttpSettings) -> Result<Option<Blocking>, HttpError> {
        let wait = match self.value("wait") {
            None => None,
            Some(w) => {
                Some(parse_go_duration(w).map_err(|e| HttpError::bad_request(format!("Invalid wait time: {e}")))?)
            }
        };
        let index = match self.value("index") {
            None => 0,
            Some(i) => i.parse::<u64>().map_err(|_| {
                HttpError::bad_request(format!(
                    "Invalid index {i:?}: want an unsigned integer (X-Consul-Index)"
                ))
            })?,
        };
        if index == 0 {
            return Ok(None);
        }
        let wait = wait
            .filter(|w| !w.is_zero())
            .unwrap_or(settings.default_query_time)
            .min(settings.max_query_time);
        Ok(Some(Blocking { min_index: index, wait }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn p(q: &str) -> Params {
        Params::parse(&format!("/x?{q}").parse().unwrap()).unwrap()
    }

    #[test]
    fn flags_present_without_value_are_set() {
        let q = p("recurse&stale=&keys=1");
        assert!(q.has("recurse") && q.has("stale") && q.has("keys"));
        assert!(!q.has("raw"));
        assert_eq!(q.read_mode().unwrap(), ReadMode::Stale);
        assert_eq!(p("consistent").read_mode().unwrap(), ReadMode::Consistent);
        assert!(p("consistent&stale").read_mode().is_err());
    }

    #[test]
    fn blocking_defaults_and_caps() {
        let s = HttpSettings::default();
        assert_eq!(p("wait=5s").blocking(&s).unwrap(), None, "no index, no blocking");
        assert_eq!(p("index=0&wait=5s").blocking(&s).unwrap(), None);
        assert_eq!(
            p("index=7").blocking(&s).unwrap(),
            Some(Blocking {
                min_index: 7,
                wait: Duration::from_secs(300)
            })
        );
        assert_eq!(
            p("index=7&wait=60000ms").blocking(&s).unwrap(),
            Some(Blocking {
                min_index: 7,
                wait: Duration::from_secs(60)
            })
        );
        assert_eq!(
            p("index=7&wait=1h").blocking(&s).unwrap(),
            Some(Blocking {
                min_index: 7,
                wait: Duration::from_secs(600)
            })
        );
        assert!(p("index=-1").blocking(&s).is_err());
        assert!(p("index=1&wait=5x").blocking(&s).is_err());
    }

    #[test]
    fn percent_decoding_and_first_value_wins() {
        let q = p("separator=%2F&separator=x&dc=dc%201");
        assert_eq!(q.get("separator"), Some("/"));
        assert_eq!(q.get("dc"), Some("dc 1"));
    }
}
