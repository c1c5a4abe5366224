//! kvbench: one closed-loop KV load generator for concord and etcd, so both are measured the same way.
//!
//! ```text
//! kvbench --target concord|etcd --endpoints host:port,host:port,… --op put|get[,…] --clients 1,16,64
//!         [--duration 10s] [--warmup 1s] [--value-size 100] [--keys 10000] [--read-mode MODE]
//! ```
//!
//! Each client is a thread with its own HTTP/1.1 keep-alive connection, pinned to endpoint
//! `client % endpoints` (so writes also reach followers, which forward to the leader on both systems). A
//! client sends one request, waits for the answer, and sends the next (closed loop) on a uniformly random
//! key `bench/<0..keys>`; every answer must be a success or it counts as an error.
//!
//! * concord: `PUT /v1/kv/bench/<k>` (acknowledged after Raft commit + apply) and
//!   `GET /v1/kv/bench/<k>` with `--read-mode default` (Consul's default: leader lease, the default),
//!   `consistent` (`?consistent`, a quorum round per read batch) or `stale` (`?stale`, any server).
//! * etcd 3.4 JSON gateway: `POST /v3/kv/put` and `POST /v3/kv/range` (base64 keys and values) with
//!   `--read-mode linearizable` (etcd's default: ReadIndex) or `serializable` (`"serializable": true`,
//!   local read).
//!
//! `get` first writes every key once so reads hit existing keys. Output: a markdown table with ops/s and
//! p50/p99/p99.9 latency per op and concurrency level. The warm-up (new connections, caches) is excluded.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Concord,
    Etcd,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Put,
    Get,
}

#[derive(Clone, Debug)]
struct Args {
    target: Target,
    endpoints: Vec<String>,
    ops: Vec<Op>,
    clients: Vec<usize>,
    duration: Duration,
    warmup: Duration,
    value_size: usize,
    keys: u64,
    read_mode: String,
}

const USAGE: &str = "usage: kvbench --target concord|etcd --endpoints host:port[,…] --op put|get[,…] \
--clients 1,16,64 [--duration 10s] [--warmup 1s] [--value-size 100] [--keys 10000] \
[--read-mode default|consistent|stale (concord) | linearizable|serializable (etcd)]";

fn main() {
    let args = match parse_args(std::env::args().skip(1).collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kvbench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("kvbench: {e}");
        std::process::exit(1);
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_args(argv: Vec<String>) -> Result<Args, String> {
    let mut a = Args {
        target: Target::Concord,
        endpoints: Vec::new(),
        ops: vec![Op::Put],
        clients: vec![1, 16, 64],
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        value_size: 100,
        keys: 10_000,
        read_mode: String::new(),
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.clone(), None),
        };
        let name = name.trim_start_matches('-');
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{flag} needs a value"))
        };
        match name {
            "target" => {
                a.target = match value()?.as_str() {
                    "concord" => Target::Concord,
                    "etcd" => Target::Etcd,
                    t => return Err(format!("unknown target {t:?}")),
                }
            }
            "endpoints" => {
                a.endpoints = value()?
                    .split(',')
                    .map(|e| e.trim_start_matches("http://").to_string())
                    .collect()
            }
            "op" => {
                a.ops = value()?
                    .split(',')
                    .map(|o| match o {
                        "put" => Ok(Op::Put),
                        "get" => Ok(Op::Get),
                        _ => Err(format!("unknown op {o:?}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "clients" => {
                a.clients = value()?
                    .split(',')
                    .map(|c| c.parse().map_err(|_| format!("bad client count {c:?}")))
                    .collect::<Result<_, _>>()?
            }
            "duration" => a.duration = parse_duration(&value()?)?,
            "warmup" => a.warmup = parse_duration(&value()?)?,
            "value-size" => a.value_size = value()?.parse().map_err(|_| "bad --value-size".to_string())?,
            "keys" => a.keys = value()?.parse().map_err(|_| "bad --keys".to_string())?,
            "read-mode" => a.read_mode = value()?,
            "h" | "help" => return Err("help".into()),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.endpoints.is_empty() || a.endpoints.iter().any(String::is_empty) {
        return Err("--endpoints is required".into());
    }
    if a.clients.contains(&0) || a.keys == 0 {
        return Err("--clients and --keys must be positive".into());
    }
    let modes: &[&str] = match a.target {
        Target::Concord => &["default", "consistent", "stale"],
        Target::Etcd => &["linearizable", "serializable"],
    };
    if a.read_mode.is_empty() {
        a.read_mode = modes[0].to_string();
    } else if !modes.contains(&a.read_mode.as_str()) {
        return Err(format!("--read-mode for {:?} is one of {modes:?}", a.target));
    }
    Ok(a)
}

/// One client's view of the system: builds and checks requests on its own keep-alive connection.
///
/// The HTTP/1.1 client is hand-written on a blocking `TcpStream` (TCP_NODELAY) so that the generator costs
/// the machine it shares with the servers as little CPU as possible: the request is built in a reused buffer
/// from prebuilt parts and sent with one `write`, and the answer is parsed in place from a reused buffer.
struct Client {
    endpoint: String,
    conn: Option<TcpStream>,
    target: Target,
    /// Request bytes before the key (`PUT /v1/kv/bench/` …), and the fixed headers after the request line.
    req: Vec<u8>,
    /// The read buffer: `rbuf[..filled]` holds received bytes not yet consumed.
    rbuf: Vec<u8>,
    filled: usize,
    /// The answer's body (decoded if chunked).
    body: Vec<u8>,
    get_query: &'static str,
    etcd_serializable: bool,
    value: Vec<u8>,
    value_b64: String,
}

/// A complete answer at the front of the read buffer.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    /// Bytes of the buffer the answer took (head and body).
    consumed: usize,
    /// The server will close the connection after this answer.
    close: bool,
}

const MAX_RESPONSE: usize = (1 << 20) + (64 << 10);

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one HTTP/1.x answer at the front of `buf`, appending its body to `body` (which it clears first).
/// `Ok(None)`: more bytes are needed. `eof`: the peer has closed, so a body without a length ends here.
fn parse_response(buf: &[u8], eof: bool, body: &mut Vec<u8>) -> Result<Option<Response>, String> {
    let bad = |what: &str| {
        format!(
            "bad HTTP answer ({what}): {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        )
    };
    let Some(head_len) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_RESPONSE || eof {
            Err(bad("no complete head"))
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let (version, rest) = status_line.split_once(' ').ok_or_else(|| bad("status line"))?;
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(bad("version")),
    };
    let status: u16 = rest
        .get(..3)
        .and_then(|c| c.parse().ok())
        .filter(|c| (100..1000).contains(c))
        .ok_or_else(|| bad("status code"))?;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut close = http10;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| bad("header line"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse().map_err(|_| bad("Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    let mut pos = head_len + 4;
    body.clear();
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Some(Response {
            status,
            consumed: pos,
            close,
        }));
    }
    if chunked {
        loop {
            let Some(line_len) = find(&buf[pos..], b"\r\n") else {
                return if eof {
                    Err(bad("truncated chunk size"))
                } else {
                    Ok(None)
                };
            };
            let line = std::str::from_utf8(&buf[pos..pos + line_len]).map_err(|_| bad("chunk size"))?;
            let size_hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("chunk size"))?;
            if size > MAX_RESPONSE || body.len() + size > MAX_RESPONSE {
                return Err(bad("body too large"));
            }
            pos += line_len + 2;
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    let Some(l) = find(&buf[pos..], b"\r\n") else {
                        return if eof { Err(bad("truncated trailers")) } else { Ok(None) };
                    };
                    pos += l + 2;
                    if l == 0 {
                        return Ok(Some(Response {
                            status,
                            consumed: pos,
                            close,
                        }));
                    }
                }
            }
            if buf.len() < pos + size + 2 {
                return if eof { Err(bad("truncated chunk")) } else { Ok(None) };
            }
            if &buf[pos + size..pos + size + 2] != b"\r\n" {
                return Err(bad("chunk not followed by CRLF"));
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    }
    if let Some(len) = content_length {
        if len > MAX_RESPONSE {
            return Err(bad("body too large"));
        }
        if buf.len() < pos + len {
            return if eof { Err(bad("truncated body")) } else { Ok(None) };
        }
        body.extend_from_slice(&buf[pos..pos + len]);
        return Ok(Some(Response {
            status,
            consumed: pos + len,
            close,
        }));
    }
    // No length: the body runs to the end of the connection.
    if !eof {
        return if buf.len() > MAX_RESPONSE {
            Err(bad("body too large"))
        } else {
            Ok(None)
        };
    }
    body.extend_from_slice(&buf[pos..]);
    Ok(Some(Response {
        status,
        consumed: buf.len(),
        close: true,
    }))
}

impl Client {
    fn new(args: &Args, endpoint: &str) -> Client {
        let value: Vec<u8> = (0..args.value_size).map(|i| b'a' + (i % 26) as u8).collect();
        Client {
            endpoint: endpoint.to_string(),
            conn: None,
            target: args.target,
            req: Vec::with_capacity(512 + 2 * args.value_size),
            rbuf: vec![0; 64 << 10],
            filled: 0,
            body: Vec::with_capacity(4096),
            get_query: match args.read_mode.as_str() {
                "consistent" => "?consistent",
                "stale" => "?stale",
                _ => "",
            },
            etcd_serializable: args.read_mode == "serializable",
            value_b64: B64.encode(&value),
            value,
        }
    }

    /// Writes the request for `op` on `key` into `self.req`.
    fn build(&mut self, op: Op, key: u64) {
        let r = &mut self.req;
        r.clear();
        let host = &self.endpoint;
        // Writing into a Vec cannot fail.
        match (self.target, op) {
            (Target::Concord, Op::Put) => {
                let _ = write!(
                    r,
                    "PUT /v1/kv/bench/{key} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
                    self.value.len()
                );
                r.extend_from_slice(&self.value);
            }
            (Target::Concord, Op::Get) => {
                let _ = write!(
                    r,
                    "GET /v1/kv/bench/{key}{} HTTP/1.1\r\nHost: {host}\r\n\r\n",
                    self.get_query
                );
            }
            (Target::Etcd, _) => {
                let mut plain = [0u8; 32];
                let mut cur = &mut plain[..];
                let _ = write!(cur, "bench/{key}");
                let plain_len = 32 - cur.len();
                let mut key_b64 = [0u8; 48];
                let n = B64
                    .encode_slice(&plain[..plain_len], &mut key_b64)
                    .expect("a 32-byte key fits in 48 base64 bytes");
                let key_b64 = std::str::from_utf8(&key_b64[..n]).expect("base64 is ASCII");
                let (path, len) = if op == Op::Put {
                    ("put", r#"{"key":"","value":""}"#.len() + n + self.value_b64.len())
                } else {
                    let s = if self.etcd_serializable {
                        r#","serializable":true"#.len()
                    } else {
                        0
                    };
                    ("range", r#"{"key":""}"#.len() + n + s)
                };
                let _ = write!(
                    r,
                    "POST /v3/kv/{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                     Content-Length: {len}\r\n\r\n{{\"key\":\"{key_b64}\""
                );
                if op == Op::Put {
                    let _ = write!(r, ",\"value\":\"{}\"}}", self.value_b64);
                } else if self.etcd_serializable {
                    r.extend_from_slice(br#","serializable":true}"#);
                } else {
                    r.push(b'}');
                }
            }
        }
    }

    fn connect(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.endpoint).map_err(|e| format!("connect {}: {e}", self.endpoint))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            self.filled = 0;
            self.conn = Some(s);
        }
        Ok(())
    }

    /// Sends `self.req` and reads one answer into `self.body`. `Err((error, retryable))`: retryable when a
    /// reused connection failed before any byte of an answer arrived (the server closed it while idle).
    fn exchange(&mut self) -> Result<u16, (String, bool)> {
        let reused = self.conn.is_some();
        self.connect().map_err(|e| (e, false))?;
        let stream = self.conn.as_mut().expect("connected");
        if let Err(e) = stream.write_all(&self.req) {
            return Err((format!("send: {e}"), reused));
        }
        let mut received_any = self.filled > 0;
        loop {
            let mut eof = false;
            if self.filled > 0 || received_any {
                match parse_response(&self.rbuf[..self.filled], false, &mut self.body) {
                    Ok(Some(resp)) => return Ok(self.finish(resp)),
                    Ok(None) => {}
                    Err(e) => return Err((e, false)),
                }
            }
            if self.filled == self.rbuf.len() {
                if self.rbuf.len() >= MAX_RESPONSE {
                    return Err(("answer too large".into(), false));
                }
                self.rbuf.resize(self.rbuf.len() * 2, 0);
            }
            let stream = self.conn.as_mut().expect("connected");
            match stream.read(&mut self.rbuf[self.filled..]) {
                Ok(0) => eof = true,
                Ok(n) => {
                    self.filled += n;
                    received_any = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err((format!("receive: {e}"), reused && !received_any)),
            }
            if eof {
                if !received_any {
                    return Err(("connection closed before an answer".into(), reused));
                }
                return match parse_response(&self.rbuf[..self.filled], true, &mut self.body) {
                    Ok(Some(resp)) => Ok(self.finish(resp)),
                    Ok(None) => unreachable!("parse_response at EOF is complete or an error"),
                    Err(e) => Err((e, false)),
                };
            }
        }
    }

    /// Consumes a parsed answer from the read buffer; drops the connection if the server closes it.
    fn finish(&mut self, resp: Response) -> u16 {
        self.rbuf.copy_within(resp.consumed..self.filled, 0);
        self.filled -= resp.consumed;
        if resp.close {
            self.conn = None;
            self.filled = 0;
        }
        resp.status
    }

    fn request(&mut self, op: Op, key: u64) -> Result<(), String> {
        self.build(op, key);
        let status = match self.exchange() {
            Ok(s) => s,
            Err((e, retryable)) => {
                self.conn = None;
                self.filled = 0;
                // Like ureq, the previous client: only a bodiless idempotent request (concord's GET) is
                // sent again. In a closed loop a connection is never idle long enough for this to happen.
                if !(retryable && self.target == Target::Concord && op == Op::Get) {
                    return Err(e);
                }
                self.exchange().map_err(|(e, _)| {
                    self.conn = None;
                    e
                })?
            }
        };
        if !(200..300).contains(&status) {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&self.body)));
        }
        // Check the answer is a real success.
        let ok = match (self.target, op) {
            (Target::Concord, Op::Put) => self.body.starts_with(b"true"),
            (Target::Concord, Op::Get) => self.body.starts_with(b"[{"),
            (Target::Etcd, Op::Put) => self.body.windows(8).any(|w| w == b"\"header\""),
            (Target::Etcd, Op::Get) => self.body.windows(5).any(|w| w == b"\"kvs\""),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("unexpected answer: {}", String::from_utf8_lossy(&self.body)))
        }
    }
}

/// xorshift64*: a tiny seeded RNG for key choice (no dependency, no shared state between clients).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

struct Level {
    op: Op,
    clients: usize,
    ok: u64,
    errors: u64,
    elapsed: Duration,
    /// Sorted latencies in microseconds.
    lat_us: Vec<u32>,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn run_level(args: &Args, op: Op, clients: usize, first_error: &Arc<std::sync::Mutex<Option<String>>>) -> Level {
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let errors = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let args = args.clone();
            let errors = errors.clone();
            let first_error = first_error.clone();
            std::thread::spawn(move || {
                let mut client = Client::new(&args, &args.endpoints[c % args.endpoints.len()]);
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((c as u64 + 1) * 0x1000_0000_01b3));
                let mut lat = Vec::with_capacity(1 << 16);
                let mut measured_first: Option<Instant> = None;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let key = rng.below(args.keys);
                    let r = client.request(op, key);
                    let t1 = Instant::now();
                    if t0 < measure_from {
                        continue;
                    }
                    measured_first.get_or_insert(t0);
                    match r {
                        Ok(()) => lat.push((t1 - t0).as_micros().min(u32::MAX as u128) as u32),
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert(e);
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat_us: Vec<u32> = Vec::new();
    for t in threads {
        lat_us.extend(t.join().expect("client thread panicked"));
    }
    // Requests in flight at `end` finish after it; count the window as ending when the last one did.
    let elapsed = Instant::now()
        .saturating_duration_since(measure_from)
        .max(args.duration);
    lat_us.sort_unstable();
    Level {
        op,
        clients,
        ok: lat_us.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        lat_us,
    }
}

/// Writes every key once (16 clients) so `get` reads existing keys.
fn prefill(args: &Args) -> Result<(), String> {
    let workers = 16.min(args.keys as usize);
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let args = args.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let mut client = Client::new(&args, &args.endpoints[w % args.endpoints.len()]);
                let mut k = w as u64;
                while k < args.keys {
                    client
                        .request(Op::Put, k)
                        .map_err(|e| format!("prefill of key {k}: {e}"))?;
                    k += workers as u64;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("prefill thread panicked")?;
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    let target = match args.target {
        Target::Concord => "concord",
        Target::Etcd => "etcd",
    };
    if args.ops.contains(&Op::Get) {
        eprintln!("kvbench: {target}: writing {} keys before reads", args.keys);
        prefill(args)?;
    }
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let mut levels = Vec::new();
    for &op in &args.ops {
        for &clients in &args.clients {
            eprintln!(
                "kvbench: {target}: {op:?} with {clients} clients for {:?}",
                args.duration
            );
            levels.push(run_level(args, op, clients, &first_error));
        }
    }
    println!(
        "{target}, {} endpoints, {}-byte values, {} keys, {:?} per level, reads: {}\n",
        args.endpoints.len(),
        args.value_size,
        args.keys,
        args.duration,
        args.read_mode
    );
    println!("| system | op | clients | ops/s | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for l in &levels {
        let op = match l.op {
            Op::Put => "put",
            Op::Get => "get",
        };
        println!(
            "| {target} | {op} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            l.clients,
            l.ok as f64 / l.elapsed.as_secs_f64(),
            percentile(&l.lat_us, 0.50),
            percentile(&l.lat_us, 0.99),
            percentile(&l.lat_us, 0.999),
            l.errors
        );
    }
    if let Some(e) = first_error.lock().unwrap().take() {
        eprintln!("kvbench: {target}: first error: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_command_line() {
        let argv = "--target etcd --endpoints 127.0.1.1:2379,http://127.0.1.2:2379 --op put,get \
                    --clients 1,16,64 --duration 10s --value-size 100 --keys 10000";
        let a = parse_args(argv.split_whitespace().map(String::from).collect()).unwrap();
        assert_eq!(a.target, Target::Etcd);
        assert_eq!(a.endpoints, ["127.0.1.1:2379", "127.0.1.2:2379"]);
        assert_eq!(a.ops, [Op::Put, Op::Get]);
        assert_eq!(a.clients, [1, 16, 64]);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.read_mode, "linearizable");
        assert!(
            parse_args(vec!["--target".into(), "etcd".into()]).is_err(),
            "endpoints are required"
        );
        let bad_mode = "--target concord --endpoints a:1 --read-mode serializable";
        assert!(parse_args(bad_mode.split_whitespace().map(String::from).collect()).is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile(&v, 0.5), 500.0);
        assert_eq!(percentile(&v, 0.99), 990.0);
        assert_eq!(percentile(&v, 0.999), 999.0);
        assert_eq!(percentile(&[7000], 0.999), 7.0);
    }

    fn parse_all(bytes: &[u8], eof: bool) -> Result<Option<(Response, Vec<u8>)>, String> {
        let mut body = Vec::new();
        Ok(parse_response(bytes, eof, &mut body)?.map(|r| (r, body)))
    }

    #[test]
    fn parses_a_content_length_answer_and_keeps_what_follows() {
        let a = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nX-Consul-Index: 7\r\n\r\ntrueHTTP/1.1";
        let (r, body) = parse_all(a, false).unwrap().unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                consumed: a.len() - 8,
                close: false
            }
        );
        assert_eq!(body, b"true");
    }

    #[test]
    fn parses_a_chunked_answer_with_extensions_and_trailers() {
        let a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\n[{\r\n3\r\n}]\n\r\n0\r\nT: 1\r\n\r\n";
        let (r, body) = parse_all(a, false).unwrap().unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                consumed: a.len(),
                close: false
            }
        );
        assert_eq!(body, b"[{}]\n");
    }

    #[test]
    fn an_answer_split_across_reads_needs_every_byte() {
        for a in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[{ }]"[..],
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[{ }]\r\n0\r\n\r\n"[..],
        ] {
            for cut in 0..a.len() {
                assert_eq!(parse_all(&a[..cut], false).unwrap(), None, "cut at {cut}");
            }
            let (r, body) = parse_all(a, false).unwrap().unwrap();
            assert_eq!((r.status, r.consumed, body.as_slice()), (200, a.len(), &b"[{ }]"[..]));
        }
    }

    #[test]
    fn connection_close_and_bodies_that_end_at_close() {
        let a = b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno";
        let (r, body) = parse_all(a, false).unwrap().unwrap();
        assert_eq!((r.status, r.close, body.as_slice()), (500, true, &b"no"[..]));
        // No length: the body is whatever arrives before the server closes.
        let a = b"HTTP/1.0 200 OK\r\n\r\ntrue";
        assert_eq!(parse_all(a, false).unwrap(), None);
        let (r, body) = parse_all(a, true).unwrap().unwrap();
        assert_eq!((r.status, r.close, body.as_slice()), (200, true, &b"true"[..]));
        // A close in the middle of an answer is an error, not a short success.
        assert!(parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntr", true).is_err());
        assert!(parse_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ntr", true).is_err());
        assert!(parse_all(b"HTTP/1.1 200 O", true).is_err());
        assert!(parse_all(b"SSH-2.0-x\r\n\r\n", false).is_err());
    }

    #[test]
    fn requests_are_the_documented_ones() {
        let args = |t: &str, mode: &str| {
            let argv = format!("--target {t} --endpoints h:1 --value-size 3 --read-mode {mode}");
            parse_args(argv.split_whitespace().map(String::from).collect()).unwrap()
        };
        let req = |a: &Args, op| {
            let mut c = Client::new(a, "h:1");
            c.build(op, 42);
            String::from_utf8(c.req).unwrap()
        };
        let concord = args("concord", "stale");
        assert_eq!(
            req(&concord, Op::Put),
            "PUT /v1/kv/bench/42 HTTP/1.1\r\nHost: h:1\r\nContent-Length: 3\r\n\r\nabc"
        );
        assert_eq!(
            req(&concord, Op::Get),
            "GET /v1/kv/bench/42?stale HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
        let etcd = args("etcd", "serializable");
        let key = B64.encode("bench/42");
        for (op, path, body) in [
            (
                Op::Put,
                "put",
                format!(r#"{{"key":"{key}","value":"{}"}}"#, B64.encode("abc")),
            ),
            (Op::Get, "range", format!(r#"{{"key":"{key}","serializable":true}}"#)),
        ] {
            let want = format!(
                "POST /v3/kv/{path} HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            assert_eq!(req(&etcd, op), want);
        }
    }

    /// The parser reads what a server sends: every one-byte change and every cut of sample answers parses or
    /// errs without a panic, and never claims more bytes (or a longer body) than it was given.
    #[test]
    fn damaged_answers_never_panic_or_overrun() {
        let samples: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: keep-alive\r\n\r\ntrue",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\r\n[{\r\n1\r\n}\r\n0\r\nX: y\r\n\r\n",
            b"HTTP/1.0 404 Not Found\r\n\r\nnope",
        ];
        let mut body = Vec::new();
        for sample in samples {
            for pos in 0..sample.len() {
                for byte in [0, b'\r', b'\n', b'0', b'f', b'9', b':', b' ', b';', 0xff] {
                    let mut a = sample.to_vec();
                    a[pos] = byte;
                    for bytes in [&a[..], &a[..pos]] {
                        for eof in [false, true] {
                            if let Ok(Some(r)) = parse_response(bytes, eof, &mut body) {
                                assert!(r.consumed <= bytes.len() && body.len() <= bytes.len());
                            }
                        }
                    }
                }
            }
        }
    }

    /// Against a scripted server: a `Connection: close` answer makes the next request reconnect, a GET on a
    /// keep-alive connection the server dropped while idle is retried once on a new one, and a 500 is an error.
    #[test]
    fn the_client_reconnects_after_close_and_reports_errors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let answers: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 9\r\n\r\n[{\"a\":1}]",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[{}]\r\n0\r\n\r\n",
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom",
        ];
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while find(&req, b"\r\n\r\n").is_none() {
                    let n = s.read(&mut b).unwrap();
                    assert!(n > 0, "the client closed before a whole request");
                    req.extend_from_slice(&b[..n]);
                }
                requests.push(String::from_utf8(req).unwrap());
                s.write_all(answer).unwrap();
                // Each connection serves one answer, then the server closes it.
            }
            requests
        });
        let argv = format!("--target concord --endpoints {endpoint}");
        let args = parse_args(argv.split_whitespace().map(String::from).collect()).unwrap();
        let mut c = Client::new(&args, &endpoint);
        assert_eq!(c.request(Op::Get, 1), Ok(()));
        assert_eq!(c.request(Op::Get, 2), Ok(()));
        assert_eq!(c.request(Op::Get, 3), Err("500: boom".to_string()));
        let requests = server.join().unwrap();
        let lines: Vec<_> = requests.iter().map(|r| r.lines().next().unwrap()).collect();
        assert_eq!(
            lines,
            [
                "GET /v1/kv/bench/1 HTTP/1.1",
                "GET /v1/kv/bench/2 HTTP/1.1",
                "GET /v1/kv/bench/3 HTTP/1.1"
            ]
        );
    }
}
