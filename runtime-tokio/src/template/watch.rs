//! One watch per distinct dependency (`CT:watch/view.go`): a thread running Consul's blocking-query
//! loop and reporting each new value to the runner.
//!
//! Client rules, as Consul's Go API client and consul-template apply them: the first query has no
//! index; each next one sends the last `X-Consul-Index` with `wait=` and `stale` (when stale reads are
//! allowed); the same index means nothing changed; an index that went backwards resets to 0. Errors
//! retry with exponential backoff (consul-template's `retry`: 250 ms doubling to 1 min, and after 12
//! failures in a row the watch gives up, which stops the runner); successive queries are at least
//! 100 ms apart so a flapping key cannot make us hammer the agent.
//!
//! A watch stops when its [`Watch`] is dropped: the thread notices after its in-flight query returns.

use concord_core::template::{Dependency, HttpRequest, Value};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc::UnboundedSender;

const MIN_QUERY_INTERVAL: Duration = Duration::from_millis(100);
/// consul-template polls non-blocking endpoints (`datacenters`) this often.
const POLL_INTERVAL: Duration = Duration::from_secs(15);
const FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a watch tells the runner. Errors are logged and retried here (the runner keeps rendering with
/// the data it has) until the retry budget is spent.
#[derive(Debug)]
pub(crate) enum Update {
    /// New data for a dependency.
    Data(Dependency, Value),
    /// The watch ran out of retries and stopped; the message says why.
    GaveUp(String),
}

/// consul-template's `consul { retry { … } }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retry {
    /// Whether to retry at all; when off, the first error gives up.
    pub(crate) enabled: bool,
    /// Consecutive failures before giving up; 0 retries forever.
    pub(crate) attempts: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            enabled: true,
            attempts: 12,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Failures in a row of one watch.
struct Failures {
    retry: Retry,
    count: u32,
    backoff: Duration,
}

impl Failures {
    fn new(retry: Retry) -> Self {
        Failures {
            retry,
            count: 0,
            backoff: retry.backoff,
        }
    }

    fn reset(&mut self) {
        self.count = 0;
        self.backoff = self.retry.backoff;
    }

    /// Log, back off, and say whether to try again (false when stopped or out of attempts).
    fn fail(&mut self, dep: &Dependency, e: String, tx: &UnboundedSender<Update>, stop: &AtomicBool) -> bool {
        self.count += 1;
        if !self.retry.enabled || (self.retry.attempts > 0 && self.count > self.retry.attempts) {
            let msg = format!("{dep}: {e} (giving up after {} attempts)", self.count);
            let _ = tx.send(Update::GaveUp(msg));
            return false;
        }
        tracing::warn!(target: "template.watch", "{dep}: {e} (retry attempt {} in {:?})", self.count, self.backoff);
        let go_on = pause(stop, self.backoff);
        self.backoff = (self.backoff * 2).min(self.retry.max_backoff);
        go_on
    }
}

/// How to reach Consul.
pub(crate) struct Consul {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    stale: bool,
    block_wait: Duration,
    retry: Retry,
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) index: Option<u64>,
}

impl Consul {
    pub(crate) fn new(
        addr: &str,
        token: Option<String>,
        stale: bool,
        block_wait: Duration,
        retry: Retry,
    ) -> Result<Self, String> {
        let base = crate::cli::client::base_url(addr)?;
        // A blocking query may legitimately last `wait` plus Consul's jitter (wait/16).
        let read_timeout = block_wait + block_wait / 16 + Duration::from_secs(10);
        let agent = ureq::AgentBuilder::new()
            .redirects(0)
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(read_timeout)
            .user_agent(concat!("concord-template/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Consul {
            agent,
            base,
            token,
            stale,
            block_wait,
            retry,
        })
    }

    fn get(&self, req: &HttpRequest, index: u64) -> Result<Answer, String> {
        let url = format!("{}{}", self.base, crate::cli::client::escape_path(&req.path));
        let mut r = self.agent.get(&url);
        for (k, v) in &req.query {
            r = r.query(k, v);
        }
        if req.blocking {
            if self.stale {
                r = r.query("stale", "");
            }
            if index > 0 {
                r = r
                    .query("index", &index.to_string())
                    .query("wait", &format!("{}ms", self.block_wait.as_millis()));
            }
        }
        if let Some(token) = &self.token {
            r = r.set("X-Consul-Token", token);
        }
        let resp = match r.call() {
            Ok(resp) => resp,
            Err(ureq::Error::Status(404, resp)) => resp,
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                return Err(format!("GET {url}: Unexpected response code: {code} ({})", body.trim()));
            }
            Err(ureq::Error::Transport(t)) => return Err(format!("GET {url}: {t}")),
        };
        let status = resp.status();
        let index = resp.header("X-Consul-Index").and_then(|i| i.parse().ok());
        let mut body = Vec::new();
        resp.into_reader()
            .read_to_end(&mut body)
            .map_err(|e| format!("GET {url}: reading the response: {e}"))?;
        Ok(Answer { status, body, index })
    }

    /// The local agent's node name, for `node` without an argument.
    fn local_node(&self) -> Result<String, String> {
        let req = HttpRequest {
            path: "/v1/agent/self".into(),
            query: Vec::new(),
            blocking: false,
        };
        let answer = self.get(&req, 0)?;
        let json: serde_json::Value =
            serde_json::from_slice(&answer.body).map_err(|e| format!("/v1/agent/self: {e}"))?;
        json.pointer("/Config/NodeName")
            .and_then(|n| n.as_str())
            .map(str::to_string)
            .ok_or_else(|| "/v1/agent/self: no Config.NodeName".to_string())
    }
}

/// A running watch; dropping it stops the watch.
pub(crate) struct Watch {
    stop: Arc<AtomicBool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub(crate) fn spawn(dep: Dependency, consul: Arc<Consul>, tx: UnboundedSender<Update>) -> Watch {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let name = format!("watch {dep}");
    let spawned = std::thread::Builder::new().name(name).spawn(move || match &dep {
        Dependency::File { path } => watch_file(&dep, path.clone(), &tx, &flag),
        _ => watch_consul(&dep, &consul, &tx, &flag),
    });
    if let Err(e) = spawned {
        tracing::error!(target: "template.watch", "cannot start a watch thread: {e}");
    }
    Watch { stop }
}

/// Sleep, waking early when the watch is stopped. Returns whether to go on.
fn pause(stop: &AtomicBool, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
    false
}

fn watch_consul(dep: &Dependency, consul: &Consul, tx: &UnboundedSender<Update>, stop: &AtomicBool) {
    let mut failures = Failures::new(consul.retry);
    let local_node = loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match dep {
            Dependency::CatalogNode { name: None, .. } => match consul.local_node() {
                Ok(n) => break n,
                Err(e) => {
                    if !failures.fail(dep, e, tx, stop) {
                        return;
                    }
                }
            },
            _ => break String::new(),
        }
    };
    let Some(req) = dep.request(&local_node) else { return };
    let mut index = 0u64;
    let mut last: Option<Value> = None;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let answer = match consul.get(&req, index) {
            Ok(a) => a,
            Err(e) => {
                if !failures.fail(dep, e, tx, stop) {
                    return;
                }
                continue;
            }
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let fresh = match (req.blocking, answer.index) {
            (true, Some(new)) if new == index && last.is_some() => false,
            (true, Some(new)) => {
                index = if new < index { 0 } else { new };
                true
            }
            _ => true,
        };
        if fresh {
            let decoded = match answer_body(dep, &answer) {
                Ok(body) => dep.decode(body),
                Err(e) => Err(e),
            };
            match decoded {
                Ok(value) if last.as_ref() != Some(&value) => {
                    failures.reset();
                    tracing::debug!(target: "template.watch", "{dep}: new data (index {index})");
                    last = Some(value.clone());
                    if tx.send(Update::Data(dep.clone(), value)).is_err() {
                        return;
                    }
                }
                Ok(_) => failures.reset(),
                Err(e) => {
                    if !failures.fail(dep, e, tx, stop) {
                        return;
                    }
                    continue;
                }
            }
        }
        let interval = if req.blocking {
            MIN_QUERY_INTERVAL
        } else {
            POLL_INTERVAL
        };
        if !pause(stop, interval.saturating_sub(started.elapsed())) {
            return;
        }
    }
}

/// The body to decode: `None` for a KV 404 (no such key, or nothing under the prefix). Any other
/// endpoint never answers 404 in Consul, so a 404 there means the agent lacks the endpoint: an error,
/// not an empty result.
pub(crate) fn answer_body<'a>(dep: &Dependency, answer: &'a Answer) -> Result<Option<&'a [u8]>, String> {
    match (answer.status, dep) {
        (404, Dependency::Kv { .. } | Dependency::KvList { .. }) => Ok(None),
        (404, _) => {
            let body = String::from_utf8_lossy(&answer.body);
            Err(format!("Unexpected response code: 404 ({})", body.trim()))
        }
        _ => Ok(Some(&answer.body)),
    }
}

fn watch_file(dep: &Dependency, path: String, tx: &UnboundedSender<Update>, stop: &AtomicBool) {
    let mut seen: Option<(Option<SystemTime>, u64)> = None;
    let mut reported_missing = false;
    while !stop.load(Ordering::Relaxed) {
        match std::fs::metadata(&path) {
            Ok(meta) => {
                reported_missing = false;
                let stamp = (meta.modified().ok(), meta.len());
                if seen != Some(stamp) {
                    match std::fs::read(&path) {
                        Ok(bytes) => {
                            seen = Some(stamp);
                            if let Ok(value) = dep.decode(Some(&bytes)) {
                                if tx.send(Update::Data(dep.clone(), value)).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) => tracing::warn!(target: "template.watch", "{dep}: {e}"),
                    }
                }
            }
            Err(e) if !reported_missing => {
                reported_missing = true;
                tracing::warn!(target: "template.watch", "{dep}: {e}");
            }
            Err(_) => {}
        }
        if !pause(stop, FILE_POLL_INTERVAL) {
            return;
        }
    }
}
