//! Black-box test harness: starts real `concord` processes on loopback addresses and talks to them over
//! HTTP, exactly as a user would.
//!
//! Isolation: every server gets its own loopback address `127.A.B.N` (A from the process id, B from a
//! per-process counter, N = 1..=n), so clusters of tests running in parallel threads (and other test
//! processes) never share an address. The HTTP port is discovered free by binding port 0 on that address;
//! the RPC port is Consul's default 8300 (passed explicitly), so a bare `-retry-join <ip>` reaches a peer
//! whichever default port the agent assumes for it. Ports the harness does not set (gossip, DNS) keep their
//! defaults too; none can collide because the address is unique. (`-dev` agents share 127.0.0.1, so they get
//! free gossip and DNS ports.)
//!
//! Every wait is a poll with a deadline ([`poll`]); nothing here sleeps and hopes. Processes are killed
//! (SIGKILL) when the [`Cluster`]/[`Agent`] is dropped; if the test is panicking, their stdout/stderr are
//! printed first so a failure shows what the agents said.
#![forbid(unsafe_code)]

use base64::Engine as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Raft election timeout the harness configures (`performance.raft_multiplier = 1`, written into each
/// server's config file): hashicorp/raft's 1 s election timeout × the multiplier, which is also concord's
/// `RaftConfig::default().election_timeout`. Tests that bound failover time derive their bound from this.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);

/// The `performance.raft_multiplier` the harness writes into every server's config file.
pub const RAFT_MULTIPLIER: u32 = 1;

/// Consul's default server RPC port, used by every cluster server on its own address.
pub const DEFAULT_SERVER_PORT: u16 = 8300;

/// How long one ordinary HTTP call may take before the harness gives up on it.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------------------

/// Path of the `concord` binary, built once per test process with `$CARGO build -p concord --bin concord`
/// (`--release` when the tests themselves are built without debug assertions).
pub fn concord_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "concord", "--bin", "concord"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let status = cmd.status().expect("cannot run cargo to build concord");
        assert!(
            status.success(),
            "`cargo build -p concord --bin concord` failed: {status}"
        );
        let exe = std::env::current_exe().expect("current test executable");
        // <target>/<profile>/deps/<test exe> → <target>/<profile>/concord
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in <target>/<profile>/deps")
            .join(format!("concord{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "built concord not found at {}", bin.display());
        bin
    })
}

/// Runs `concord <args>` to completion with `CONSUL_HTTP_ADDR` pointing at `http_addr` (if given).
pub fn run_concord(http_addr: Option<&str>, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(concord_bin());
    cmd.args(args)
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_ADDR")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(addr) = http_addr {
        cmd.env("CONSUL_HTTP_ADDR", addr);
    }
    let mut child = cmd.spawn().expect("spawn concord");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // A command that exits without reading its input closes the pipe; its exit is what tests check.
        let _ = pipe.write_all(input);
    }
    // A CLI command against a live cluster finishes in well under this; a hang is a bug worth a clear error.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("wait concord").is_some() {
            return child.wait_with_output().expect("collect concord output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect concord output");
            panic!(
                "`concord {}` did not finish within 30 s\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------------------

/// Calls `attempt` every 20 ms until it returns `Ok`, and returns that value. Panics with `what` and the
/// last error if `timeout` passes first.
pub fn poll<T>(timeout: Duration, what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    poll_until(Instant::now() + timeout, what, &mut attempt)
}

/// [`poll`] with an absolute deadline.
pub fn poll_until<T>(deadline: Instant, what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        let last = match attempt() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!(
                "timed out after {:?} waiting for {what}; last error: {last}",
                start.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------------------

/// An HTTP response: status, headers (lower-cased names) and body.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("body is not JSON ({e}): {}", self.text()))
    }

    /// `X-Consul-Index` as a number.
    pub fn index(&self) -> Result<u64, String> {
        let v = self.header("X-Consul-Index").ok_or("no X-Consul-Index header")?;
        v.parse().map_err(|_| format!("X-Consul-Index is not a number: {v:?}"))
    }

    /// Errors unless the status is `want`.
    pub fn expect_status(self, want: u16) -> Result<Resp, String> {
        if self.status == want {
            Ok(self)
        } else {
            Err(format!("status {} (want {want}): {}", self.status, self.text()))
        }
    }

    /// The decoded `Value` of a single-entry `GET /v1/kv/<key>` answer.
    pub fn kv_value(&self) -> Result<Vec<u8>, String> {
        let json = self.json()?;
        let entries = json
            .as_array()
            .ok_or_else(|| format!("KV answer is not an array: {json}"))?;
        let [entry] = entries.as_slice() else {
            return Err(format!("KV answer has {} entries, want 1: {json}", entries.len()));
        };
        match &entry["Value"] {
            serde_json::Value::Null => Ok(Vec::new()),
            serde_json::Value::String(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("Value is not base64 ({e}): {b64}")),
            other => Err(format!("Value is neither a string nor null: {other}")),
        }
    }
}

/// One HTTP request. `Err` only for transport failures (refused, reset, timed out); any status is `Ok`.
pub fn http(method: &str, url: &str, body: Option<&[u8]>, timeout: Duration) -> Result<Resp, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .max_idle_connections(0)
        .build();
    let req = agent.request(method, url);
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{method} {url}: {e}")),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| resp.header(&n).map(|v| (n.to_ascii_lowercase(), v.to_string())))
        .collect();
    let mut body = Vec::new();
    resp.into_reader()
        .take(64 << 20)
        .read_to_end(&mut body)
        .map_err(|e| format!("{method} {url}: reading body: {e}"))?;
    Ok(Resp { status, headers, body })
}

pub fn http_get(url: &str) -> Result<Resp, String> {
    http("GET", url, None, HTTP_TIMEOUT)
}

pub fn http_put(url: &str, body: &[u8]) -> Result<Resp, String> {
    http("PUT", url, Some(body), HTTP_TIMEOUT)
}

pub fn http_delete(url: &str) -> Result<Resp, String> {
    http("DELETE", url, None, HTTP_TIMEOUT)
}

/// Picks a free TCP port on `ip` by binding port 0. The port is released again; nothing else on this
/// unique address races for it.
fn free_port(ip: Ipv4Addr) -> u16 {
    let l = TcpListener::bind(SocketAddrV4::new(ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind {ip}:0 (is 127.0.0.0/8 routed to lo?): {e}"));
    l.local_addr().expect("local addr").port()
}

/// Picks a free UDP port on `ip` (the DNS server binds TCP on the same port), released again.
fn free_udp_port(ip: Ipv4Addr) -> u16 {
    let s =
        std::net::UdpSocket::bind(SocketAddrV4::new(ip, 0)).unwrap_or_else(|e| panic!("cannot bind udp {ip}:0: {e}"));
    s.local_addr().expect("local addr").port()
}

/// A fresh /24 of loopback addresses: `127.A.B.0` with A from the process id and B from a counter.
fn fresh_subnet() -> (u8, u8) {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    // Second octet 100..=227: away from 127.0.x (the -dev default), 127.0.1.x/127.0.2.x (the benchmark).
    let a = 100 + (std::process::id() % 128) as u8;
    let b = NEXT.fetch_add(1, Ordering::Relaxed);
    (a, b)
}

// ---------------------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------------------

/// One `concord agent` process with its arguments, logs and data dir; restartable.
pub struct Server {
    pub name: String,
    pub ip: Ipv4Addr,
    pub http_port: u16,
    pub server_port: u16,
    /// DNS (UDP and TCP): Consul's 8600 on the server's own address, a free port for a dev agent.
    pub dns_port: u16,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    starts: u32,
}

impl Server {
    /// `127.x.y.z:<http port>`, the form `CONSUL_HTTP_ADDR` takes.
    pub fn http_addr(&self) -> String {
        format!("{}:{}", self.ip, self.http_port)
    }

    /// `http://127.x.y.z:<http port>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr())
    }

    /// The server's Raft/RPC address as `/v1/status/leader` and `/v1/status/peers` report it.
    pub fn rpc_addr(&self) -> String {
        format!("{}:{}", self.ip, self.server_port)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        let open = |name: &str| -> File {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_dir.join(name))
                .expect("open log file");
            writeln!(f, "===== start #{} of {} =====", self.starts, self.name).expect("write log");
            f
        };
        let child = Command::new(concord_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(open("stdout.log"))
            .stderr(open("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL (like `kill -9`): no graceful shutdown, unsynced writes are the agent's problem.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.log_dir.join(n)).unwrap_or_default();
        format!(
            "----- {} ({}, http {}) stdout -----\n{}----- {} stderr -----\n{}",
            self.name,
            self.rpc_addr(),
            self.http_addr(),
            read("stdout.log"),
            self.name,
            read("stderr.log")
        )
    }
}

/// `n` concord servers, `s1..sn` on `127.A.B.1..n`, started with `-bootstrap-expect n` and `-retry-join`
/// to each other.
pub struct Cluster {
    pub servers: Vec<Server>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` servers (does not wait for a leader; see [`Cluster::wait_leader`]).
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, "")
    }

    /// [`Cluster::start`] with more top-level keys in every server's JSON config file (`extra_config`,
    /// e.g. `"raft_snapshot_threshold": 20`, without surrounding braces).
    pub fn start_with(n: usize, extra_config: &str) -> Cluster {
        assert!((1..=250).contains(&n));
        let dir = tempfile::Builder::new()
            .prefix("concord-cluster-")
            .tempdir()
            .expect("tempdir");
        let (a, b) = fresh_subnet();
        let ips: Vec<Ipv4Addr> = (1..=n as u8).map(|i| Ipv4Addr::new(127, a, b, i)).collect();
        let mut servers = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let name = format!("s{}", i + 1);
            let home = dir.path().join(&name);
            let data_dir = home.join("data");
            std::fs::create_dir_all(&data_dir).expect("create data dir");
            let config = home.join("config.json");
            std::fs::write(
                &config,
                format!(
                    "{{\"performance\": {{\"raft_multiplier\": {RAFT_MULTIPLIER}}}{}{extra_config}}}\n",
                    if extra_config.is_empty() { "" } else { ", " }
                ),
            )
            .expect("write config");
            let http_port = free_port(*ip);
            let server_port = DEFAULT_SERVER_PORT;
            drop(
                TcpListener::bind(SocketAddrV4::new(*ip, server_port)).unwrap_or_else(|e| {
                    panic!("{ip}:{server_port} is taken (a wildcard listener on {server_port}?): {e}")
                }),
            );
            let mut args: Vec<String> = [
                "agent",
                "-server",
                "-bootstrap-expect",
                &n.to_string(),
                "-data-dir",
                &data_dir.display().to_string(),
                "-config-file",
                &config.display().to_string(),
                "-node",
                &name,
                "-bind",
                &ip.to_string(),
                "-client",
                &ip.to_string(),
                "-http-port",
                &http_port.to_string(),
                "-server-port",
                &server_port.to_string(),
                "-retry-interval",
                "1s",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            for other in ips.iter().filter(|o| *o != ip) {
                args.push("-retry-join".into());
                args.push(other.to_string());
            }
            servers.push(Server {
                name,
                ip: *ip,
                http_port,
                server_port,
                dns_port: 8600,
                data_dir,
                log_dir: home,
                args,
                child: None,
                starts: 0,
            });
        }
        for s in &mut servers {
            s.start();
        }
        Cluster { servers, _dir: dir }
    }

    /// Starts a client agent (no `-server`) named `name` on the next address of the cluster's subnet,
    /// `-retry-join`ing every server; it is appended to `servers` (so `url`, `kill`, … take its index).
    pub fn add_client(&mut self, name: &str) -> usize {
        let first = self.servers[0].ip.octets();
        let ip = Ipv4Addr::new(127, first[1], first[2], self.servers.len() as u8 + 1);
        let mut home = self._dir.path().join(name);
        if home.exists() {
            // Another agent under a name already used: its own data dir (so its own node ID).
            home = self._dir.path().join(format!("{name}.{}", self.servers.len()));
        }
        let data_dir = home.join("data");
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let http_port = free_port(ip);
        let mut args: Vec<String> = [
            "agent",
            "-data-dir",
            &data_dir.display().to_string(),
            "-node",
            name,
            "-bind",
            &ip.to_string(),
            "-client",
            &ip.to_string(),
            "-http-port",
            &http_port.to_string(),
            "-retry-interval",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for s in self.servers.iter().filter(|s| s.args.iter().any(|a| a == "-server")) {
            args.push("-retry-join".into());
            args.push(s.ip.to_string());
        }
        let mut client = Server {
            name: name.to_string(),
            ip,
            http_port,
            server_port: DEFAULT_SERVER_PORT,
            dns_port: 8600,
            data_dir,
            log_dir: home,
            args,
            child: None,
            starts: 0,
        };
        client.start();
        self.servers.push(client);
        self.servers.len() - 1
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// `http://<server i>` + `path`.
    pub fn url(&self, i: usize, path: &str) -> String {
        self.servers[i].url(path)
    }

    pub fn get(&self, i: usize, path: &str) -> Result<Resp, String> {
        http_get(&self.url(i, path))
    }

    pub fn put(&self, i: usize, path: &str, body: &[u8]) -> Result<Resp, String> {
        http_put(&self.url(i, path), body)
    }

    pub fn delete(&self, i: usize, path: &str) -> Result<Resp, String> {
        http_delete(&self.url(i, path))
    }

    /// Indices of the servers whose process is running.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.servers.len())
            .filter(|&i| self.servers[i].is_running())
            .collect()
    }

    /// SIGKILLs server `i`.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Starts server `i` again with the same arguments, data dir and ports.
    pub fn restart(&mut self, i: usize) {
        self.servers[i].kill();
        self.servers[i].start();
    }

    /// Polls until every running server reports the same non-empty `/v1/status/leader`, and that leader
    /// is one of the running servers; returns its index.
    pub fn wait_leader(&mut self, timeout: Duration) -> usize {
        let running = self.running();
        assert!(!running.is_empty(), "no server is running");
        let this = &*self;
        poll(timeout, "every running server to agree on a leader", || {
            let mut seen = Vec::new();
            for &i in &running {
                let resp = this
                    .get(i, "/v1/status/leader")?
                    .expect_status(200)
                    .map_err(|e| format!("{}: {e}", this.servers[i].name))?;
                let leader: String = serde_json::from_slice(&resp.body).map_err(|e| {
                    format!(
                        "{}: leader is not a JSON string ({e}): {}",
                        this.servers[i].name,
                        resp.text()
                    )
                })?;
                seen.push(leader);
            }
            let first = &seen[0];
            if first.is_empty() || seen.iter().any(|l| l != first) {
                return Err(format!("leaders seen by {running:?}: {seen:?}"));
            }
            running
                .iter()
                .copied()
                .find(|&i| this.servers[i].rpc_addr() == *first)
                .ok_or_else(|| format!("agreed leader {first} is not a running server"))
        })
    }

    /// Stdout/stderr of every server, for failure reports.
    pub fn logs(&self) -> String {
        self.servers.iter().map(Server::logs).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// A single `concord agent -dev` process (in-memory server, HTTP on 127.0.0.1).
pub struct Agent {
    server: Server,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// `concord agent -dev -bind IP -client IP -http-port P -server-port Q -dns-port D` on a loopback address
    /// of its own, with every port free there. (The RPC port is set so that parallel test processes do not
    /// fight over 8300.)
    pub fn dev() -> Agent {
        Agent::dev_with(&[])
    }

    /// [`Agent::dev`] with more flags (`-recursor …`, `-config-file …`) after the harness's own.
    pub fn dev_with(extra: &[&str]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("concord-dev-")
            .tempdir()
            .expect("tempdir");
        // An address of its own (not 127.0.0.1): ports picked free here cannot then be taken by another
        // test's agent binding ephemeral ports on the same address before this one starts.
        let (a, b) = fresh_subnet();
        let ip = Ipv4Addr::new(127, a, b, 1);
        let http_port = free_port(ip);
        let server_port = free_port(ip);
        let dns_port = free_udp_port(ip);
        let mut args = vec![
            "agent".to_string(),
            "-dev".into(),
            "-http-port".into(),
            http_port.to_string(),
            "-server-port".into(),
            server_port.to_string(),
            // Gossip on any free ports: parallel dev agents share 127.0.0.1.
            "-serf-lan-port".into(),
            "0".into(),
            "-serf-wan-port".into(),
            "0".into(),
            "-dns-port".into(),
            dns_port.to_string(),
            "-bind".into(),
            ip.to_string(),
            "-client".into(),
            ip.to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut server = Server {
            name: "dev".into(),
            ip,
            http_port,
            server_port,
            dns_port,
            data_dir: dir.path().join("unused"),
            log_dir: dir.path().to_path_buf(),
            args,
            child: None,
            starts: 0,
        };
        server.start();
        Agent { server, _dir: dir }
    }

    pub fn server(&mut self) -> &mut Server {
        &mut self.server
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// `<agent ip>:<dns port>`
    pub fn dns_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.server.ip, self.server.dns_port))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.server.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.server.logs());
        }
    }
}
