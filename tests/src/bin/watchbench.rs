//! watchbench: many concurrent blocking queries on one server, one change, how fast they all wake and what
//! each parked query costs the server.
//!
//! ```text
//! watchbench --concord target/release/concord [--watchers 10000] [--rounds 3] [--ip 127.0.3.1]
//! ```
//!
//! It starts `concord agent -dev` on `--ip` (HTTP port 8500; `limits.http_max_conns_per_client` raised
//! so one client address may hold every watcher), registers service `x` (and `y`) with
//! `PUT /v1/catalog/register`, and reads `X-Consul-Index` N of `/v1/health/service/x`. Then, per round:
//!
//! 1. every watcher (one TCP connection each, HTTP/1.1 keep-alive, all driven by one current-thread tokio
//!    runtime) sends `GET /v1/health/service/x?index=N&wait=5m`;
//! 2. once the server's RSS has stopped growing (all queries parked), `y` changes: no watcher may wake;
//! 3. `x` changes (one catalog write, its tag); each watcher's wake-up latency is the time from sending
//!    that write to having read its whole answer (so it includes the write's Raft commit and apply);
//! 4. every answer must carry an index above N; N becomes the new index for the next round.
//!
//! Memory per watcher = (server RSS with every query parked − RSS before the watchers connected) /
//! watchers, from `/proc/<pid>/status` (round 1; later rounds show it stays flat). Output: a markdown table.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

struct Args {
    concord: String,
    watchers: usize,
    rounds: usize,
    ip: String,
}

const USAGE: &str = "usage: watchbench --concord PATH [--watchers 10000] [--rounds 3] [--ip 127.0.3.1]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        concord: String::new(),
        watchers: 10_000,
        rounds: 3,
        ip: "127.0.3.1".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--concord" => args.concord = value()?,
            "--watchers" => args.watchers = value()?.parse().map_err(|_| "bad --watchers")?,
            "--rounds" => args.rounds = value()?.parse().map_err(|_| "bad --rounds")?,
            "--ip" => args.ip = value()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.concord.is_empty() {
        return Err("--concord is required".into());
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("watchbench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Err(e) = rt.block_on(run(&args)) {
        eprintln!("watchbench: {e}");
        std::process::exit(1);
    }
}

struct Agent {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(args: &Args) -> Result<Agent, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = dir.path().join("limits.json");
    let limit = args.watchers * 2 + 100;
    std::fs::write(
        &config,
        format!(r#"{{"limits": {{"http_max_conns_per_client": {limit}}}}}"#),
    )
    .map_err(|e| e.to_string())?;
    let child = Command::new(&args.concord)
        .args([
            "agent",
            "-dev",
            "-bind",
            &args.ip,
            "-client",
            &args.ip,
            "-http-port",
            "8500",
        ])
        .args(["-serf-lan-port", "0", "-serf-wan-port", "0", "-config-file"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout.log")).map_err(|e| e.to_string())?)
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.concord))?;
    Ok(Agent { child, _dir: dir })
}

/// A blocking HTTP call for setup (not measured).
fn call(method: &str, url: &str, body: Option<&str>) -> Result<(u64, String), String> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let req = agent.request(method, url);
    let resp = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    }
    .map_err(|e| format!("{method} {url}: {e}"))?;
    let index = resp.header("X-Consul-Index").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut text = String::new();
    resp.into_reader()
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok((index, text))
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat` (`self` for this process).
fn cpu_time(pid: &str) -> Result<Duration, String> {
    Ok(cpu_times(pid)?.iter().sum())
}

/// CPU time a process has used in user and in system (kernel) mode, from `/proc/<pid>/stat`.
fn cpu_times(pid: &str) -> Result<[Duration; 2], String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("bad stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).ok_or("short stat");
    // USER_HZ is 100 on Linux.
    Ok([ticks(11)?, ticks(12)?].map(|t| Duration::from_millis(t * 10)))
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS".into())
}

/// Wait until the RSS has not grown for `quiet`, at most `limit`; returns it.
async fn settled_rss(pid: u32, quiet: Duration, limit: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + limit;
    let mut last = rss_kib(pid)?;
    let mut since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss_kib(pid)?;
        if now > last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    Ok(last)
}

fn register(base: &str, service: &str, tag: &str) -> Result<(), String> {
    let body = format!(
        r#"{{"Node":"bench","Address":"10.0.0.1","Service":{{"Service":"{service}","ID":"{service}1","Port":80,"Tags":["{tag}"]}}}}"#
    );
    call("PUT", &format!("{base}/v1/catalog/register"), Some(&body)).map(|_| ())
}

/// What a watcher reports per round: (index of the answer, when it was complete) or an error.
type Woke = Result<(u64, Instant), String>;

/// One watcher: per round, send the blocking query for the round's index and report the answer.
async fn watcher(addr: String, mut round: watch::Receiver<u64>, done: mpsc::UnboundedSender<Woke>) {
    let mut conn = match TcpStream::connect(&addr).await {
        Ok(c) => c,
        Err(e) => {
            let _ = done.send(Err(format!("connect: {e}")));
            return;
        }
    };
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    loop {
        let index = *round.borrow_and_update();
        if index == 0 {
            return;
        }
        let req = format!("GET /v1/health/service/x?index={index}&wait=5m HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let result = match conn.write_all(req.as_bytes()).await {
            Ok(()) => read_response(&mut conn, &mut buf).await,
            Err(e) => Err(format!("write: {e}")),
        };
        let failed = result.is_err();
        let _ = done.send(result.map(|i| (i, Instant::now())));
        if failed || round.changed().await.is_err() {
            return;
        }
    }
}

/// Read one HTTP/1.1 response (Content-Length framed); returns its `X-Consul-Index`.
async fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u64, String> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(head.lines().next().unwrap_or_default().to_string());
            }
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            let len = header("content-length:").ok_or("no content-length")? as usize;
            let index = header("x-consul-index:").ok_or("no x-consul-index")?;
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed mid-body".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(index);
        }
        let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn run(args: &Args) -> Result<(), String> {
    let agent = start_agent(args)?;
    let pid = agent.child.id();
    let base = format!("http://{}:8500", args.ip);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call("GET", &format!("{base}/v1/status/leader"), None) {
            Ok((_, leader)) if leader.len() > 2 => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => return Err(format!("the agent did not come up: {other:?}")),
        }
    }
    register(&base, "x", "t0")?;
    register(&base, "y", "t0")?;
    let (mut index, _) = call("GET", &format!("{base}/v1/health/service/x"), None)?;
    let rss_before = settled_rss(pid, Duration::from_secs(1), Duration::from_secs(10)).await?;

    let (round_tx, round_rx) = watch::channel(index);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let addr = format!("{}:8500", args.ip);
    let connect_start = Instant::now();
    for i in 0..args.watchers {
        tokio::spawn(watcher(addr.clone(), round_rx.clone(), done_tx.clone()));
        // Pace the connects a little so the listen backlog never overflows.
        if i % 256 == 255 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    drop(done_tx);
    println!(
        "| round | watchers | server RSS before → parked (MiB) | per watcher (bytes) | woken by `y` | write (ms) | wake p50 (ms) | p99 (ms) | max (ms) | server CPU (ms) | of which system (ms) | bench CPU (ms) | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut per_watcher = Vec::new();
    for round in 1..=args.rounds {
        let rss_parked = settled_rss(pid, Duration::from_secs(2), Duration::from_secs(120)).await?;
        if round == 1 {
            eprintln!(
                "watchbench: {} watchers connected in {:?}",
                args.watchers,
                connect_start.elapsed()
            );
        }
        // An unrelated service changes: nothing may wake.
        register(&base, "y", &format!("r{round}"))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut early = 0usize;
        let mut errors = 0usize;
        let mut latencies = Vec::with_capacity(args.watchers);
        while let Ok(woke) = done_rx.try_recv() {
            match woke {
                Ok(_) => early += 1,
                Err(e) => {
                    errors += 1;
                    if errors == 1 {
                        eprintln!("watchbench: first error: {e}");
                    }
                }
            }
        }
        let (server_cpu0, bench_cpu0) = (cpu_times(&pid.to_string())?, cpu_time("self")?);
        let t0 = Instant::now();
        register(&base, "x", &format!("r{round}"))?;
        let write = t0.elapsed();
        let mut next_index = index;
        let collect_until = Instant::now() + Duration::from_secs(60);
        while latencies.len() + errors + early < args.watchers {
            let left = collect_until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, done_rx.recv()).await {
                Ok(Some(Ok((i, at)))) => {
                    if i <= index {
                        errors += 1;
                    }
                    next_index = next_index.max(i);
                    latencies.push(at - t0);
                }
                Ok(Some(Err(e))) => {
                    errors += 1;
                    if errors == 1 {
                        eprintln!("watchbench: first error: {e}");
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        // CPU both processes spent from the write to the last answer (10 ms resolution).
        let server_cpu1 = cpu_times(&pid.to_string())?;
        let server_sys = server_cpu1[1].saturating_sub(server_cpu0[1]);
        let server_cpu = (server_cpu1[0] + server_cpu1[1]).saturating_sub(server_cpu0[0] + server_cpu0[1]);
        let bench_cpu = cpu_time("self")?.saturating_sub(bench_cpu0);
        let missing = args.watchers - latencies.len() - errors - early;
        latencies.sort();
        let bytes = (rss_parked.saturating_sub(rss_before) * 1024) as f64 / args.watchers as f64;
        per_watcher.push(bytes);
        println!(
            "| {round} | {} | {:.1} → {:.1} | {:.0} | {early} | {} | {} | {} | {} | {} | {} | {} | {} |",
            latencies.len(),
            rss_before as f64 / 1024.0,
            rss_parked as f64 / 1024.0,
            bytes,
            ms(write),
            ms(percentile(&latencies, 50.0)),
            ms(percentile(&latencies, 99.0)),
            ms(percentile(&latencies, 100.0)),
            server_cpu.as_millis(),
            server_sys.as_millis(),
            bench_cpu.as_millis(),
            errors + missing,
        );
        index = next_index;
        if round < args.rounds {
            round_tx.send_replace(index);
        }
    }
    round_tx.send_replace(0);
    drop(agent);
    Ok(())
}
