//! Service discovery end to end on in-process agents, over real HTTP: services registered through the
//! agent API reach the catalog by anti-entropy, real HTTP and TCP check targets started by the test flip
//! health, TTL checks expire (and keep their status across a restart), and blocking health queries wake
//! for their own service only.

use super::Agent;
use crate::config::parse_agent_args;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(20);

async fn dev_agent(extra: &[&str]) -> Agent {
    let mut args: Vec<String> = [
        "-dev",
        "-node",
        "n1",
        "-bind",
        "127.0.0.1",
        "-client",
        "127.0.0.1",
        "-http-port",
        "0",
        "-server-port",
        "0",
        "-dns-port",
        "0",
        "-serf-lan-port",
        "0",
        "-serf-wan-port",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Agent::start(parse_agent_args(&args).unwrap()).await.unwrap()
}

struct Reply {
    status: u16,
    index: u64,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 exchange with a body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut raw))
        .await
        .expect("the agent answers")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let index = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("x-consul-index: ")
                .or_else(|| l.strip_prefix("X-Consul-Index: "))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        index,
        body: body.to_string(),
    }
}

/// Poll until `f` holds, failing at the deadline; returns how long it took.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn passing_count(addr: SocketAddr, service: &str) -> usize {
    let r = http(addr, "GET", &format!("/v1/health/service/{service}?passing"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().as_array().unwrap().len()
}

/// An HTTP server answering every request with the status in `code` (changeable while it runs).
async fn http_target(code: Arc<AtomicU16>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let code = code.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_http_check_leaves_passing_within_an_interval_and_comes_back() {
    let agent = dev_agent(&[]).await;
    let api = agent.http_addrs[0];
    let code = Arc::new(AtomicU16::new(200));
    let target = http_target(code.clone()).await;
    let body = format!(
        r#"{{"name":"x","port":{},"check":{{"http":"http://{target}/health","interval":"1s","timeout":"500ms"}}}}"#,
        target.port()
    );
    let r = http(api, "PUT", "/v1/agent/service/register", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    until("x passing", || async { passing_count(api, "x").await == 1 }).await;

    code.store(500, Ordering::SeqCst);
    let took = until("x to leave ?passing", || async { passing_count(api, "x").await == 0 }).await;
    eprintln!("x left ?passing {took:?} after its target failed (interval 1s)");
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} with a 1s interval (one probe, one write)"
    );
    let all = http(api, "GET", "/v1/health/service/x", "").await.json();
    let check = &all[0]["Checks"][1];
    assert_eq!(check["Status"], "critical");
    assert!(check["Output"].as_str().unwrap().contains("500"), "{check}");

    code.store(429, Ordering::SeqCst);
    until("a warning on 429", || async {
        http(api, "GET", "/v1/agent/health/service/id/x", "").await.status == 429
    })
    .await;
    code.store(200, Ordering::SeqCst);
    until("x passing again", || async { passing_count(api, "x").await == 1 }).await;
    assert_eq!(
        http(api, "GET", "/v1/agent/health/service/name/x", "").await.status,
        200
    );
    agent.run_until(async {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_and_ttl_checks_and_deregistration_reach_the_catalog() {
    let agent = dev_agent(&[]).await;
    let api = agent.http_addrs[0];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = format!(
        r#"{{"Name":"db","Port":{port},"Checks":[{{"TCP":"127.0.0.1:{port}","Interval":"500ms"}},{{"TTL":"1s","CheckID":"db-ttl"}}]}}"#
    );
    assert_eq!(http(api, "PUT", "/v1/agent/service/register", &body).await.status, 200);
    let status = |id: &'static str| async move {
        let checks = http(api, "GET", "/v1/health/checks/db", "").await.json();
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["CheckID"] == id)
            .map(|c| c["Status"].as_str().unwrap().to_string())
    };
    until("the TCP check passing", || async {
        status("service:db:1").await.as_deref() == Some("passing")
    })
    .await;
    assert_eq!(
        status("db-ttl").await.as_deref(),
        Some("critical"),
        "a TTL check starts critical"
    );
    assert_eq!(
        http(api, "PUT", "/v1/agent/check/pass/db-ttl?note=fine", "")
            .await
            .status,
        200
    );
    until("the TTL check passing", || async {
        status("db-ttl").await.as_deref() == Some("passing")
    })
    .await;
    let took = until("the TTL to expire", || async {
        status("db-ttl").await.as_deref() == Some("critical")
    })
    .await;
    eprintln!("a 1s TTL expired {took:?} after the pass was visible");
    assert!(took < Duration::from_secs(3), "a 1s TTL expired after {took:?}");
    let checks = http(api, "GET", "/v1/agent/checks", "").await.json();
    assert_eq!(checks["db-ttl"]["Output"], "TTL expired");

    drop(listener);
    until("the TCP check failing", || async {
        status("service:db:1").await.as_deref() == Some("critical")
    })
    .await;

    assert_eq!(
        http(api, "PUT", "/v1/agent/service/deregister/db", "").await.status,
        200
    );
    until("db gone from the catalog", || async {
        http(api, "GET", "/v1/catalog/services", "")
            .await
            .json()
            .get("db")
            .is_none()
    })
    .await;
    assert_eq!(
        http(api, "PUT", "/v1/agent/service/deregister/db", "").await.status,
        404
    );
    agent.run_until(async {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocking_health_query_wakes_for_its_service_only() {
    let agent = dev_agent(&[]).await;
    let api = agent.http_addrs[0];
    let register = |name: &'static str, tag: &'static str| async move {
        let body = format!(r#"{{"Name":"{name}","Tags":["{tag}"],"Port":1}}"#);
        assert_eq!(http(api, "PUT", "/v1/agent/service/register", &body).await.status, 200);
    };
    register("x", "v1").await;
    until("x in the catalog", || async { passing_count(api, "x").await == 1 }).await;
    let first = http(api, "GET", "/v1/health/service/x", "").await;
    assert!(first.index > 0);

    let path = format!("/v1/health/service/x?index={}&wait=30s", first.index);
    let waiting = tokio::spawn(async move { http(api, "GET", &path, "").await });
    register("y", "v1").await;
    until("y in the catalog", || async { passing_count(api, "y").await == 1 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a change to y must not wake a query on x");

    register("x", "v2").await;
    let woken = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("woken by x")
        .unwrap();
    assert_eq!(woken.status, 200);
    assert!(woken.index > first.index);
    assert_eq!(woken.json()[0]["Service"]["Tags"][0], "v2");
    agent.run_until(async {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_checks_and_ttl_status_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        config_dir.path().join("svc.json"),
        r#"{"service": {"name": "from-file", "check": {"id": "file-ttl", "ttl": "10m"}}}"#,
    )
    .unwrap();
    let args = |dir: &std::path::Path, config_dir: &std::path::Path| -> Vec<String> {
        [
            "-server",
            "-bootstrap",
            "-node",
            "n1",
            "-data-dir",
            dir.to_str().unwrap(),
            "-config-dir",
            config_dir.to_str().unwrap(),
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
            "-http-port",
            "0",
            "-server-port",
            "0",
            "-dns-port",
            "0",
            "-serf-lan-port",
            "0",
            "-serf-wan-port",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let start = || async {
        Agent::start(parse_agent_args(&args(dir.path(), config_dir.path())).unwrap())
            .await
            .unwrap()
    };
    let agent = start().await;
    let api = agent.http_addrs[0];
    let body = r#"{"Name":"web","Check":{"TTL":"10m","CheckID":"web-ttl"}}"#;
    assert_eq!(http(api, "PUT", "/v1/agent/service/register", body).await.status, 200);
    assert_eq!(
        http(api, "PUT", "/v1/agent/check/warn/web-ttl?note=slow", "")
            .await
            .status,
        200
    );
    assert_eq!(http(api, "PUT", "/v1/agent/check/pass/file-ttl", "").await.status, 200);
    agent.run_until(async {}).await.unwrap();

    // Same files: API registrations come back, and every TTL status with them.
    let agent = start().await;
    let api = agent.http_addrs[0];
    let checks = http(api, "GET", "/v1/agent/checks", "").await.json();
    assert_eq!(checks["web-ttl"]["Status"], "warning");
    assert_eq!(checks["web-ttl"]["Output"], "slow");
    assert_eq!(checks["file-ttl"]["Status"], "passing");
    assert!(http(api, "GET", "/v1/agent/services", "")
        .await
        .json()
        .get("web")
        .is_some());
    agent.run_until(async {}).await.unwrap();

    // The service is taken out of the files: it does not come back from the saved state.
    std::fs::remove_file(config_dir.path().join("svc.json")).unwrap();
    let agent = start().await;
    let api = agent.http_addrs[0];
    let services = http(api, "GET", "/v1/agent/services", "").await.json();
    assert!(services.get("from-file").is_none(), "{services}");
    assert!(services.get("web").is_some(), "{services}");
    agent.run_until(async {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_and_checks_from_the_config_dir_run_and_sync() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.json"),
        r#"{"service": {"name": "cfg-web", "port": 80, "tags": ["from-file"],
                        "check": {"args": ["sh", "-c", "echo fine"], "interval": "500ms"}},
            "checks": [{"id": "disk", "name": "disk", "ttl": "30s", "status": "warning"}]}"#,
    )
    .unwrap();
    let config_dir = dir.path().to_str().unwrap().to_string();
    let agent = dev_agent(&["-config-dir", &config_dir, "-enable-local-script-checks"]).await;
    let api = agent.http_addrs[0];
    until("the script check passing in the catalog", || async {
        let v = http(api, "GET", "/v1/health/checks/cfg-web", "").await.json();
        v[0]["Status"] == "passing"
    })
    .await;
    let v = http(api, "GET", "/v1/health/service/cfg-web?passing", "").await.json();
    assert_eq!(
        v,
        serde_json::json!([]),
        "the node's warning TTL check keeps it out of ?passing"
    );
    let v = http(api, "GET", "/v1/health/checks/cfg-web", "").await.json();
    assert_eq!(
        (v[0]["Type"].as_str(), v[0]["Output"].as_str()),
        (Some("script"), Some("fine\n"))
    );
    let node = http(api, "GET", "/v1/health/node/n1", "").await.json();
    let disk = node
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "disk")
        .expect("node check synced");
    assert_eq!(disk["Status"], "warning");
    // Scripts through the API need -enable-script-checks, which this agent does not have.
    let body = r#"{"Name":"s","Check":{"Args":["true"],"Interval":"1s"}}"#;
    let r = http(api, "PUT", "/v1/agent/service/register", body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("enable_script_checks"), "{}", r.body);
    agent.run_until(async {}).await.unwrap();
}
