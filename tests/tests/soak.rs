//! Soak test (not in CI; ignored): a 3-server cluster under mixed load (writers and readers on every
//! server) for `SOAK_SECS` seconds (default 180) while one random server at a time is SIGKILLed and
//! restarted. Prints throughput per interval; at the end every write the cluster acknowledged must be
//! there, with its value, on every server. Run:
//!
//!     SOAK_SECS=300 cargo test --release -p concord-tests --test soak -- --ignored --nocapture

use concord_tests::{http, Cluster};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITERS: usize = 4;
const READERS: usize = 2;
/// Interval of the throughput report and of the kill/restart schedule.
const TICK: Duration = Duration::from_secs(10);
const CALL: Duration = Duration::from_secs(3);

/// xorshift64*: enough randomness for picking servers; the seed is printed for a replay.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    write_errors: AtomicU64,
    reads: AtomicU64,
    read_errors: AtomicU64,
}

#[test]
#[ignore = "soak test: minutes long; run by hand (see the module doc)"]
fn soak_three_servers_with_random_kills() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (t.as_nanos() as u64 ^ u64::from(std::process::id())) | 1
        });
    println!("soak: {secs} s, seed {seed} (SOAK_SEED={seed} to repeat the kill schedule)");
    let mut c = Cluster::start(3);
    c.wait_leader(Duration::from_secs(60));
    let urls: Vec<String> = (0..3).map(|i| c.url(i, "")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    // key → value of every acknowledged write (each key is written once).
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let (urls, stop, counters, acked) = (urls.clone(), stop.clone(), counters.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("soak/w{w}/{n:08}");
                let value = format!("{seed}-{w}-{n}");
                let url = format!("{}/v1/kv/{key}", urls[rng.below(urls.len())]);
                match http("PUT", &url, Some(value.as_bytes()), CALL) {
                    Ok(r) if r.status == 200 && r.body == b"true" => {
                        acked.lock().unwrap().insert(key, value);
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        counters.write_errors.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        }));
    }
    for r in 0..READERS {
        let (urls, stop, counters) = (urls.clone(), stop.clone(), counters.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(seed ^ (r as u64 + 101).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let modes = ["", "?stale", "?consistent"];
            while !stop.load(Ordering::Relaxed) {
                let url = format!(
                    "{}/v1/kv/soak/w0/{:08}{}",
                    urls[rng.below(urls.len())],
                    rng.below(1000) + 1,
                    modes[rng.below(modes.len())]
                );
                match http("GET", &url, None, CALL) {
                    Ok(r) if r.status == 200 || r.status == 404 => counters.reads.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        std::thread::sleep(Duration::from_millis(50));
                        counters.read_errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    let mut rng = Rng(seed);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut down: Option<usize> = None;
    let (mut last_acked, mut last_reads) = (0, 0);
    let mut kills = 0;
    println!("  t(s)  writes/s  reads/s  write-errors  read-errors  event");
    while Instant::now() < deadline {
        std::thread::sleep(TICK);
        let event = match down.take() {
            Some(i) => {
                c.restart(i);
                format!("restarted s{}", i + 1)
            }
            None => {
                let i = rng.below(3);
                c.kill(i);
                kills += 1;
                down = Some(i);
                format!("kill -9 s{}", i + 1)
            }
        };
        let (a, r) = (
            counters.acked.load(Ordering::Relaxed),
            counters.reads.load(Ordering::Relaxed),
        );
        println!(
            "{:6} {:9.0} {:8.0} {:13} {:12}  {event}",
            start.elapsed().as_secs(),
            (a - last_acked) as f64 / TICK.as_secs_f64(),
            (r - last_reads) as f64 / TICK.as_secs_f64(),
            counters.write_errors.load(Ordering::Relaxed),
            counters.read_errors.load(Ordering::Relaxed),
        );
        (last_acked, last_reads) = (a, r);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    if let Some(i) = down {
        c.restart(i);
    }
    c.wait_leader(Duration::from_secs(60));

    let acked = acked.lock().unwrap();
    println!(
        "soak: {} acknowledged writes ({:.0}/s), {} reads, {kills} kills; checking every acknowledged key on every server",
        acked.len(),
        acked.len() as f64 / secs as f64,
        counters.reads.load(Ordering::Relaxed)
    );
    for i in 0..3 {
        // Each server, read locally (?stale) once it has caught up: poll until it holds them all.
        let got = concord_tests::poll(
            Duration::from_secs(60),
            "every acknowledged write on every server",
            || {
                let r = http(
                    "GET",
                    &c.url(i, "/v1/kv/soak/?recurse&stale"),
                    None,
                    Duration::from_secs(30),
                )?
                .expect_status(200)?;
                let entries = r.json()?;
                let mut have = BTreeMap::new();
                for e in entries.as_array().ok_or("not an array")? {
                    let key = e["Key"].as_str().unwrap_or_default().to_string();
                    let value = e["Value"].as_str().unwrap_or_default();
                    use base64::Engine as _;
                    let value = base64::engine::general_purpose::STANDARD
                        .decode(value)
                        .unwrap_or_default();
                    have.insert(key, String::from_utf8_lossy(&value).into_owned());
                }
                let missing: Vec<&String> = acked.keys().filter(|k| !have.contains_key(*k)).take(5).collect();
                if missing.is_empty() {
                    Ok(have)
                } else {
                    Err(format!("s{} lacks acknowledged keys, e.g. {missing:?}", i + 1))
                }
            },
        );
        for (k, v) in acked.iter() {
            assert_eq!(got.get(k), Some(v), "s{}: wrong value for acknowledged {k}", i + 1);
        }
    }
    println!("soak: nothing acknowledged was lost");
}
