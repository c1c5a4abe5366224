//! The CLI's HTTP client: the agent address from `-http-addr` or `CONSUL_HTTP_ADDR` (`host:port` or
//! `http://host:port`, default `127.0.0.1:8500`), the ACL token from `-token`, `-token-file`,
//! `CONSUL_HTTP_TOKEN` or `CONSUL_HTTP_TOKEN_FILE` (sent as `X-Consul-Token`), `-datacenter` as `?dc=`.
//! Error texts follow Consul's Go API client (`Unexpected response code: 500 (No cluster leader)`).

use super::flags::FlagSet;
use super::Env;
use std::fmt;
use std::io::Read;
use std::time::Duration;

/// The flags every HTTP command takes (Consul's `ClientFlags`).
pub(crate) fn client_flags(fs: FlagSet) -> FlagSet {
    fs.string(
        "http-addr",
        "",
        "The `address` and port of the Consul HTTP agent. The value can be an IP address or DNS address, \
         but it must also include the port. This can also be specified via the CONSUL_HTTP_ADDR environment \
         variable. The default value is http://127.0.0.1:8500.",
    )
    .string(
        "token",
        "",
        "ACL token to use in the request. This can also be specified via the CONSUL_HTTP_TOKEN environment \
         variable.",
    )
    .string(
        "token-file",
        "",
        "File containing the ACL token to use in the request (CONSUL_HTTP_TOKEN_FILE).",
    )
}

/// Client flags plus Consul's `ServerFlags` (`-datacenter`, `-stale`).
pub(crate) fn server_flags(fs: FlagSet) -> FlagSet {
    client_flags(fs)
        .string("datacenter", "", "Name of the datacenter to query. If unspecified, this will default to the datacenter of the queried agent.")
        .bool(
            "stale",
            "Permit any Consul server (non-leader) to respond to this request. This allows for lower latency and \
             higher throughput, but can result in stale data.",
        )
}

#[derive(Debug)]
pub(crate) enum ClientError {
    /// The agent answered with a non-2xx status.
    Status { code: u16, body: String },
    /// Could not talk to the agent at all.
    Transport(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Status { code, body } => {
                write!(f, "Unexpected response code: {code} ({body})")
            }
            ClientError::Transport(msg) => f.write_str(msg),
        }
    }
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    /// `X-Consul-Index` (0 when absent).
    pub(crate) index: u64,
}

pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    datacenter: Option<String>,
    stale: bool,
}

impl Client {
    /// Build a client from the parsed flags (those of [`client_flags`], optionally [`server_flags`]).
    pub(crate) fn new(fs: &FlagSet, env: &Env<'_>) -> Result<Client, String> {
        let addr = match fs.get_str("http-addr") {
            "" => env("CONSUL_HTTP_ADDR")
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| "127.0.0.1:8500".into()),
            a => a.to_string(),
        };
        let base = base_url(&addr)?;
        let token = match (fs.get_str("token"), fs.get_str("token-file")) {
            ("", "") => match env("CONSUL_HTTP_TOKEN").filter(|t| !t.is_empty()) {
                Some(t) => Some(t),
                None => env("CONSUL_HTTP_TOKEN_FILE")
                    .filter(|f| !f.is_empty())
                    .map(|f| read_token(&f))
                    .transpose()?,
            },
            ("", file) => Some(read_token(file)?),
            (token, _) => Some(token.to_string()),
        };
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(Duration::from_secs(10))
            .user_agent(concat!("concord/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent,
            base,
            token,
            datacenter: Some(fs.get_str("datacenter").to_string()).filter(|d| !d.is_empty()),
            stale: fs.get_bool("stale"),
        })
    }

    /// Whether `-stale` was given (only for commands with server flags).
    pub(crate) fn stale(&self) -> bool {
        self.stale
    }

    /// Send one request. Non-2xx answers other than 404 become [`ClientError::Status`]; 404 is returned
    /// so KV reads can tell "no such key" apart.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, ClientError> {
        let mut url = format!("{}{}", self.base, escape_path(path));
        let dc = self.datacenter.as_deref().map(|dc| ("dc", dc));
        for (i, (k, v)) in dc.iter().copied().chain(query.iter().copied()).enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&escape_query(k));
            url.push('=');
            url.push_str(&escape_query(v));
        }
        let mut req = self.agent.request(method, &url);
        if let Some(token) = &self.token {
            req = req.set("X-Consul-Token", token);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None if method == "PUT" || method == "POST" => req.send_bytes(&[]),
            None => req.call(),
        };
        let resp = match result {
            Ok(resp) => resp,
            Err(ureq::Error::Status(_, resp)) => resp,
            Err(ureq::Error::Transport(t)) => {
                let reason = match std::error::Error::source(&t) {
                    Some(source) => source.to_string(),
                    None => t.to_string(),
                };
                return Err(ClientError::Transport(format!("{method} \"{url}\": {reason}")));
            }
        };
        let status = resp.status();
        let index = resp.header("X-Consul-Index").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = Vec::new();
        resp.into_reader()
            .read_to_end(&mut body)
            .map_err(|e| ClientError::Transport(format!("{method} \"{url}\": reading the response: {e}")))?;
        if status == 404 || (200..300).contains(&status) {
            Ok(Reply { status, body, index })
        } else {
            Err(ClientError::Status {
                code: status,
                body: String::from_utf8_lossy(&body).trim_end().to_string(),
            })
        }
    }

    /// A request whose 404 is an error too.
    pub(crate) fn request_ok(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let reply = self.request(method, path, query, body)?;
        if reply.status == 404 {
            return Err(ClientError::Status {
                code: 404,
                body: String::from_utf8_lossy(&reply.body).to_string(),
            });
        }
        Ok(reply.body)
    }
}

fn read_token(file: &str) -> Result<String, String> {
    std::fs::read_to_string(file)
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("Error loading token file {file}: {e}"))
}

/// `host:port`, `http://host:port` → `http://host:port`. TLS and unix sockets are not supported yet.
pub(crate) fn base_url(addr: &str) -> Result<String, String> {
    let rest = match addr.split_once("://") {
        None => addr,
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "unsupported address scheme {scheme:?} in {addr:?}: concord's CLI speaks plain http"
            ))
        }
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(format!("invalid HTTP address {addr:?}: want host:port"));
    }
    Ok(format!("http://{rest}"))
}

/// Go's `url.URL.EscapedPath`: escape everything but unreserved characters and `$&+,/:;=@`.
pub(crate) fn escape_path(path: &str) -> String {
    escape(
        path,
        |b| b.is_ascii_alphanumeric() || b"-._~$&+,/:;=@".contains(&b),
        false,
    )
}

/// Go's `url.QueryEscape`: spaces become `+`.
fn escape_query(v: &str) -> String {
    escape(v, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b), true)
}

fn escape(s: &str, keep: impl Fn(u8) -> bool, plus_for_space: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else if b == b' ' && plus_for_space {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(base_url("127.0.0.1:8500").unwrap(), "http://127.0.0.1:8500");
        assert_eq!(base_url("http://10.0.0.1:8500/").unwrap(), "http://10.0.0.1:8500");
        assert!(base_url("https://10.0.0.1:8501").is_err());
        assert!(base_url("unix:///tmp/consul.sock").is_err());
    }

    #[test]
    fn escaping_matches_go() {
        assert_eq!(escape_path("/v1/kv/a b/c?d#e%"), "/v1/kv/a%20b/c%3Fd%23e%25");
        assert_eq!(escape_path("/v1/kv/x:y@z"), "/v1/kv/x:y@z");
        assert_eq!(escape_query("a b/c&d"), "a+b%2Fc%26d");
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    fn flags(args: &[&str]) -> FlagSet {
        let mut fs = server_flags(FlagSet::new());
        fs.parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        fs
    }

    #[test]
    fn address_and_token_come_from_flags_then_environment() {
        let env = env_of(&[
            ("CONSUL_HTTP_ADDR", "http://10.1.1.1:8500"),
            ("CONSUL_HTTP_TOKEN", "envtok"),
        ]);
        let c = Client::new(&flags(&[]), &env).unwrap();
        assert_eq!(
            (c.base.as_str(), c.token.as_deref()),
            ("http://10.1.1.1:8500", Some("envtok"))
        );
        let c = Client::new(&flags(&["-http-addr=127.0.0.2:9500", "-token", "flagtok"]), &env).unwrap();
        assert_eq!(
            (c.base.as_str(), c.token.as_deref()),
            ("http://127.0.0.2:9500", Some("flagtok"))
        );
        let c = Client::new(&flags(&[]), &env_of(&[])).unwrap();
        assert_eq!((c.base.as_str(), c.token.as_deref()), ("http://127.0.0.1:8500", None));
    }
}
