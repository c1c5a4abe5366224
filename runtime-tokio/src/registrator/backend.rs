//! Where registrator puts services: a Consul (or concord) agent over HTTP, on TCP or a unix socket, either
//! as agent services (`consul://`, `consul-unix://`) or as KV entries `<prefix>/<name>/<id> = "ip:port"`
//! (`consulkv://`, `consulkv-unix://`). The calls are registrator's: `GET /v1/status/leader` to ping,
//! `PUT /v1/agent/service/register`, `PUT /v1/agent/service/deregister/<id>`, `GET /v1/agent/services`.

use super::bridge::{Check, Service};
use crate::cli::client::escape_path;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long one call to the agent may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the agent (a `/v1/agent/services` with many thousands of services fits).
const MAX_ANSWER: usize = 64 << 20;

/// A parsed backend URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BackendUri {
    pub(crate) target: Target,
    /// `Some(prefix)` for the KV backends.
    pub(crate) kv_prefix: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `host:port`
    Tcp(String),
    /// `host:port`, over HTTPS (`consul-tls://`).
    Tls(String),
    Unix(PathBuf),
}

impl Target {
    /// The base URL of a TCP target (`http://host:port`, `https://host:port`).
    pub(crate) fn base_url(&self) -> Option<String> {
        match self {
            Target::Tcp(a) => Some(format!("http://{a}")),
            Target::Tls(a) => Some(format!("https://{a}")),
            Target::Unix(_) => None,
        }
    }
}

/// `consul://host:port` (default `127.0.0.1:8500`), `consul-tls://host:port` (the same over HTTPS),
/// `consul-unix:///path.sock`, `consulkv://host:port/prefix`, `consulkv-unix:///path.sock:/prefix`.
pub(crate) fn parse_uri(uri: &str) -> Result<BackendUri, String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!("bad adapter uri: {uri:?} (want e.g. consul://127.0.0.1:8500)"));
    };
    let tcp = |authority: &str| -> Result<Target, String> {
        match authority {
            "" => Ok(Target::Tcp("127.0.0.1:8500".into())),
            a if a.contains(['/', '?', '#', '@']) => Err(format!("bad adapter uri: {uri:?}")),
            a if a.contains(':') => Ok(Target::Tcp(a.to_string())),
            a => Ok(Target::Tcp(format!("{a}:8500"))),
        }
    };
    let unix = |path: &str| -> Result<Target, String> {
        if path.is_empty() {
            return Err(format!("bad adapter uri: {uri:?}: no socket path"));
        }
        Ok(Target::Unix(PathBuf::from(path)))
    };
    let prefix = |p: &str| -> Result<String, String> {
        let p = p.trim_matches('/');
        if p.is_empty() {
            return Err(format!("bad adapter uri: {uri:?}: the KV backend needs a key prefix"));
        }
        Ok(p.to_string())
    };
    match scheme {
        "consul" => Ok(BackendUri {
            target: tcp(rest.trim_end_matches('/'))?,
            kv_prefix: None,
        }),
        "consul-unix" => Ok(BackendUri {
            target: unix(rest)?,
            kv_prefix: None,
        }),
        "consulkv" => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            Ok(BackendUri {
                target: tcp(authority)?,
                kv_prefix: Some(prefix(path)?),
            })
        }
        "consulkv-unix" => {
            let (path, kv) = rest
                .split_once(":/")
                .ok_or_else(|| format!("bad adapter uri: {uri:?} (want consulkv-unix:///path.sock:/prefix)"))?;
            Ok(BackendUri {
                target: unix(path)?,
                kv_prefix: Some(prefix(kv)?),
            })
        }
        "consul-tls" => {
            let Target::Tcp(authority) = tcp(rest.trim_end_matches('/'))? else {
                unreachable!("tcp() gives a TCP target")
            };
            Ok(BackendUri {
                target: Target::Tls(authority),
                kv_prefix: None,
            })
        }
        _ => Err(format!(
            "unrecognized adapter: {uri:?} (concord supports consul://, consul-tls://, consul-unix://, consulkv://, \
             consulkv-unix://)"
        )),
    }
}

/// A service as the backend holds it (for comparison and `-cleanup`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Registered {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) port: u16,
    pub(crate) tags: Vec<String>,
    pub(crate) meta: BTreeMap<String, String>,
}

enum Transport {
    Tcp(Client<HttpConnector, Full<Bytes>>, String),
    /// One connection per call (registrator's calls are few): TCP, the TLS handshake, then HTTP/1.1.
    Tls(Arc<rustls::ClientConfig>, String),
    Unix(Client<hyperlocal::UnixConnector, Full<Bytes>>, PathBuf),
}

pub(crate) struct Backend {
    transport: Transport,
    /// `http://host:port` or `https://host:port`; empty for a unix socket.
    base_url: String,
    kv_prefix: Option<String>,
    token: Option<String>,
}

impl Backend {
    /// `tls`: the client configuration of a `consul-tls://` target (see [`tls_config`]); without one the
    /// system's roots are trusted.
    pub(crate) fn new(uri: &BackendUri, token: Option<String>, tls: Option<Arc<rustls::ClientConfig>>) -> Backend {
        let transport = match &uri.target {
            Target::Tcp(authority) => {
                let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
                Transport::Tcp(client, authority.clone())
            }
            Target::Tls(authority) => {
                let config = tls.unwrap_or_else(|| {
                    tls_config(&TlsFiles::default()).expect("the system roots need no files, so cannot fail")
                });
                Transport::Tls(config, authority.clone())
            }
            Target::Unix(path) => {
                let client = Client::builder(TokioExecutor::new()).build(hyperlocal::UnixConnector);
                Transport::Unix(client, path.clone())
            }
        };
        Backend {
            transport,
            base_url: uri.target.base_url().unwrap_or_default(),
            kv_prefix: uri.kv_prefix.clone(),
            token,
        }
    }

    /// Where the backend is, for log lines.
    pub(crate) fn describe(&self) -> String {
        let at = match &self.transport {
            Transport::Tcp(_, a) => a.clone(),
            Transport::Tls(..) => self.base_url.clone(),
            Transport::Unix(_, p) => format!("unix:{}", p.display()),
        };
        match &self.kv_prefix {
            Some(p) => format!("{at} (KV under {p}/)"),
            None => at,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Vec<u8>, String> {
        self.call_query(method, path, "", body).await
    }

    /// One request; `query` is appended as given (already escaped).
    async fn call_query(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        let mut path = escape_path(path);
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        let (uri, what): (hyper::Uri, String) = match &self.transport {
            Transport::Tcp(..) => {
                let u = format!("{}{path}", self.base_url);
                (u.parse().map_err(|e| format!("bad URL {u}: {e}"))?, u)
            }
            // HTTP/1.1 over a connection of our own: the request line carries only the path.
            Transport::Tls(..) => {
                let u = format!("{}{path}", self.base_url);
                (path.parse().map_err(|e| format!("bad URL {u}: {e}"))?, u)
            }
            Transport::Unix(_, socket) => (
                hyperlocal::Uri::new(socket, &path).into(),
                format!("unix:{}{path}", socket.display()),
            ),
        };
        let mut req = hyper::Request::builder().method(method).uri(uri);
        if let Some(token) = &self.token {
            req = req.header("X-Consul-Token", token);
        }
        if let Transport::Tls(_, authority) = &self.transport {
            req = req.header(hyper::header::HOST, authority);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("{method} {what}: {e}"))?;
        let call = async {
            let resp = match &self.transport {
                Transport::Tcp(c, _) => c.request(req).await.map_err(|e| error_chain(&e)),
                Transport::Tls(config, authority) => tls_request(config, authority, req).await,
                Transport::Unix(c, _) => c.request(req).await.map_err(|e| error_chain(&e)),
            }
            .map_err(|e| format!("{method} {what}: {e}"))?;
            let status = resp.status().as_u16();
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER);
            let body = limited
                .collect()
                .await
                .map_err(|e| format!("{method} {what}: reading the answer: {e}"))?
                .to_bytes();
            if !(200..300).contains(&status) {
                let text = String::from_utf8_lossy(&body);
                return Err(format!(
                    "{method} {what}: Unexpected response code: {status} ({})",
                    text.trim()
                ));
            }
            Ok(body.to_vec())
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(format!("{method} {what}: no answer within {CALL_TIMEOUT:?}")))
    }

    /// `GET /v1/status/leader`; the leader's address.
    pub(crate) async fn ping(&self) -> Result<String, String> {
        let body = self.call("GET", "/v1/status/leader", None).await?;
        let leader: String = serde_json::from_slice(&body).unwrap_or_default();
        if leader.is_empty() {
            return Err("the agent knows no cluster leader yet".into());
        }
        Ok(leader)
    }

    pub(crate) async fn register(&self, s: &Service) -> Result<(), String> {
        match &self.kv_prefix {
            None => {
                let body = serde_json::to_vec(&registration(s)).expect("JSON of a service");
                self.call("PUT", "/v1/agent/service/register", Some(body)).await?;
            }
            Some(prefix) => {
                let body = format!("{}:{}", s.address, s.port).into_bytes();
                self.call("PUT", &kv_key(prefix, &s.name, &s.id), Some(body)).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn deregister(&self, id: &str, name: &str) -> Result<(), String> {
        match &self.kv_prefix {
            None => {
                self.call("PUT", &format!("/v1/agent/service/deregister/{id}"), None)
                    .await
            }
            Some(prefix) => self.call("DELETE", &kv_key(prefix, name, id), None).await,
        }
        .map(drop)
    }

    /// Everything the backend holds: the agent's services, or the entries under the KV prefix.
    pub(crate) async fn registered(&self) -> Result<Vec<Registered>, String> {
        match &self.kv_prefix {
            None => {
                let body = self.call("GET", "/v1/agent/services", None).await?;
                parse_agent_services(&body)
            }
            Some(prefix) => {
                let path = format!("/v1/kv/{prefix}/");
                let body = match self.call_query("GET", &path, "recurse=true", None).await {
                    Err(e) if e.contains("Unexpected response code: 404") => return Ok(Vec::new()),
                    other => other?,
                };
                parse_kv_entries(prefix, &body)
            }
        }
    }
}

/// One request over a fresh TLS connection to `authority` (`host:port`), the certificate checked against
/// the host.
async fn tls_request(
    config: &Arc<rustls::ClientConfig>,
    authority: &str,
    req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("bad TLS server name {host:?}: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| error_chain(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("registrator: TLS connection to the agent: {e}");
        }
    });
    sender.send_request(req).await.map_err(|e| error_chain(&e))
}

/// The files of Consul's TLS environment: `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) ca_cert: Option<PathBuf>,
    pub(crate) client_cert: Option<PathBuf>,
    pub(crate) client_key: Option<PathBuf>,
}

/// The client configuration of `consul-tls://`: trusts the PEM certificates of `CONSUL_CACERT` when set
/// (only those, as Consul's Go client does), else the Mozilla roots and the system bundle (`SSL_CERT_FILE`,
/// else `/etc/ssl/certs/ca-certificates.crt`); presents `CONSUL_CLIENT_CERT`/`CONSUL_CLIENT_KEY` when both are
/// set. `Err` is one line naming the file at fault.
pub(crate) fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = |path: &PathBuf, what: &str| -> Result<Vec<CertificateDer<'static>>, String> {
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{what} {}: no PEM certificate in it", path.display()));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca_cert {
        Some(path) => {
            let (_, rejected) = roots.add_parsable_certificates(certs(path, "CONSUL_CACERT")?);
            if roots.is_empty() {
                return Err(format!(
                    "CONSUL_CACERT {}: {rejected} certificate(s), none usable as a CA",
                    path.display()
                ));
            }
        }
        None => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let bundle = std::env::var_os("SSL_CERT_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
            if let Ok(found) = CertificateDer::pem_file_iter(&bundle) {
                roots.add_parsable_certificates(found.flatten());
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let config = match (&files.client_cert, &files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert, "CONSUL_CLIENT_CERT")?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("CONSUL_CLIENT_KEY {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("CONSUL_CLIENT_CERT/CONSUL_CLIENT_KEY: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together".into()),
    };
    Ok(Arc::new(config))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn kv_key(prefix: &str, name: &str, id: &str) -> String {
    format!("/v1/kv/{prefix}/{name}/{id}")
}

/// The `/v1/agent/service/register` body for `s` (`AgentServiceRegistration`).
pub(crate) fn registration(s: &Service) -> Value {
    let mut body = json!({
        "ID": s.id,
        "Name": s.name,
        "Tags": s.tags,
        "Port": s.port,
        "Address": s.address,
        "Meta": s.meta,
    });
    if let Some(check) = &s.check {
        body["Check"] = check_json(check);
    }
    body
}

fn check_json(c: &Check) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            m.insert(k.into(), Value::String(v.into()));
        }
    };
    put("HTTP", &c.http);
    put("Method", &c.method);
    put("TCP", &c.tcp);
    put("GRPC", &c.grpc);
    put("TTL", &c.ttl);
    put("Interval", &c.interval);
    put("Timeout", &c.timeout);
    put("Status", &c.status);
    put("DeregisterCriticalServiceAfter", &c.deregister_after);
    if !c.args.is_empty() {
        m.insert("Args".into(), json!(c.args));
    }
    if c.tls_skip_verify {
        m.insert("TLSSkipVerify".into(), Value::Bool(true));
    }
    if c.grpc_use_tls {
        m.insert("GRPCUseTLS".into(), Value::Bool(true));
    }
    Value::Object(m)
}

/// `GET /v1/agent/services`: `{"<id>": {"ID", "Service", "Tags", "Address", "Port", "Meta"}}`.
pub(crate) fn parse_agent_services(body: &[u8]) -> Result<Vec<Registered>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("/v1/agent/services: not JSON: {e}"))?;
    let map = v.as_object().ok_or("/v1/agent/services: the answer is not an object")?;
    let text = |x: &Value| x.as_str().unwrap_or_default().to_string();
    Ok(map
        .iter()
        .map(|(id, s)| Registered {
            id: id.clone(),
            name: text(&s["Service"]),
            address: text(&s["Address"]),
            port: s["Port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
            tags: s["Tags"]
                .as_array()
                .map(|t| t.iter().map(text).collect())
                .unwrap_or_default(),
            meta: s["Meta"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default(),
        })
        .collect())
}

/// `GET /v1/kv/<prefix>/?recurse`: entries `<prefix>/<name>/<id>` = `ip:port`; other keys are skipped.
pub(crate) fn parse_kv_entries(prefix: &str, body: &[u8]) -> Result<Vec<Registered>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("KV listing: not JSON: {e}"))?;
    let entries = v.as_array().ok_or("KV listing: the answer is not an array")?;
    let mut out = Vec::new();
    for e in entries {
        let Some(rest) = e["Key"]
            .as_str()
            .and_then(|k| k.strip_prefix(prefix))
            .and_then(|k| k.strip_prefix('/'))
        else {
            continue;
        };
        let Some((name, id)) = rest.split_once('/') else {
            continue;
        };
        let value = e["Value"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default();
        let value = String::from_utf8_lossy(&value);
        let (address, port) = value.rsplit_once(':').unwrap_or((&value, ""));
        out.push(Registered {
            id: id.to_string(),
            name: name.to_string(),
            address: address.to_string(),
            port: port.parse().unwrap_or(0),
            ..Registered::default()
        });
    }
    Ok(out)
}

/// Whether the backend already holds `s` as registrator would write it (so re-registering would change
/// nothing and wake no watcher). The KV backend stores only the name and `ip:port`.
pub(crate) fn same(s: &Service, r: &Registered, kv: bool) -> bool {
    let basic = s.id == r.id && s.name == r.name && s.address == r.address && s.port == r.port;
    basic && (kv || (s.tags == r.tags && s.meta == r.meta))
}
