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
use std::io::Read;
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
struct Client {
    agent: ureq::Agent,
    base: String,
    target: Target,
    read_mode: String,
    value: Vec<u8>,
    value_b64: String,
    buf: Vec<u8>,
}

impl Client {
    fn new(args: &Args, endpoint: &str) -> Client {
        let value: Vec<u8> = (0..args.value_size).map(|i| b'a' + (i % 26) as u8).collect();
        Client {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .max_idle_connections(1)
                .max_idle_connections_per_host(1)
                .no_delay(true)
                .build(),
            base: format!("http://{endpoint}"),
            target: args.target,
            read_mode: args.read_mode.clone(),
            value_b64: B64.encode(&value),
            value,
            buf: Vec::with_capacity(4096),
        }
    }

    fn request(&mut self, op: Op, key: u64) -> Result<(), String> {
        let result = match (self.target, op) {
            (Target::Concord, Op::Put) => self
                .agent
                .put(&format!("{}/v1/kv/bench/{key}", self.base))
                .send_bytes(&self.value),
            (Target::Concord, Op::Get) => {
                let q = match self.read_mode.as_str() {
                    "consistent" => "?consistent",
                    "stale" => "?stale",
                    _ => "",
                };
                self.agent.get(&format!("{}/v1/kv/bench/{key}{q}", self.base)).call()
            }
            (Target::Etcd, Op::Put) => {
                let body = format!(
                    r#"{{"key":"{}","value":"{}"}}"#,
                    B64.encode(format!("bench/{key}")),
                    self.value_b64
                );
                self.agent.post(&format!("{}/v3/kv/put", self.base)).send_string(&body)
            }
            (Target::Etcd, Op::Get) => {
                let serializable = if self.read_mode == "serializable" {
                    r#","serializable":true"#
                } else {
                    ""
                };
                let body = format!(r#"{{"key":"{}"{serializable}}}"#, B64.encode(format!("bench/{key}")));
                self.agent
                    .post(&format!("{}/v3/kv/range", self.base))
                    .send_string(&body)
            }
        };
        let resp = result.map_err(|e| match e {
            ureq::Error::Status(code, r) => {
                format!("{code}: {}", r.into_string().unwrap_or_default())
            }
            e => e.to_string(),
        })?;
        // Read the whole body so the connection is reused, and check it is a real success.
        self.buf.clear();
        resp.into_reader()
            .take(1 << 20)
            .read_to_end(&mut self.buf)
            .map_err(|e| e.to_string())?;
        let ok = match (self.target, op) {
            (Target::Concord, Op::Put) => self.buf.starts_with(b"true"),
            (Target::Concord, Op::Get) => self.buf.starts_with(b"[{"),
            (Target::Etcd, Op::Put) => self.buf.windows(8).any(|w| w == b"\"header\""),
            (Target::Etcd, Op::Get) => self.buf.windows(5).any(|w| w == b"\"kvs\""),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("unexpected answer: {}", String::from_utf8_lossy(&self.buf)))
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
}
