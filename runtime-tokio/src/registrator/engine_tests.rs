//! The registrator daemon against a fake Docker engine (a unix-socket HTTP server answering the few
//! Engine API calls registrator makes, with an event stream the test feeds and cuts) and a real in-process
//! dev agent: registration on start, removal on die, and what registrator itself cannot do — surviving a
//! dropped event stream by reconnecting and reconciling what changed meanwhile.

use super::backend::BackendUri;
use super::bridge::Settings;
use super::daemon::{self, Options};
use crate::template::tests::DevAgent;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Engine {
    /// Container ID → (running, host port of 80/tcp, exit code).
    containers: BTreeMap<String, (bool, u16, i64)>,
    /// How many times the registrator listed the containers (one per reconciliation).
    listings: u32,
    /// Container ID → its `Config.Env`.
    env: BTreeMap<String, Vec<String>>,
    /// The open event stream, if any; dropping it ends the stream.
    events: Option<UnboundedSender<Bytes>>,
    /// How many times the registrator opened the event stream.
    subscriptions: u32,
    /// Restarting: every call fails.
    down: bool,
}

type Shared = Arc<Mutex<Engine>>;

fn inspect(id: &str, running: bool, port: u16, exit_code: i64, env: &[String]) -> Value {
    json!({
        "Id": id, "Name": format!("/{id}"),
        "State": {"Status": if running { "running" } else { "exited" }, "Running": running, "ExitCode": exit_code},
        "Config": {"Hostname": id, "ExposedPorts": {"80/tcp": {}}, "Env": env, "Image": "nginx:latest", "Labels": {}},
        "HostConfig": {"NetworkMode": "default"},
        "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": port.to_string()}]},
                            "Networks": {"bridge": {"IPAddress": "172.17.0.9"}}}
    })
}

async fn engine_api(State(engine): State<Shared>, uri: Uri) -> Response {
    // Paths arrive as /v1.41/…; the version does not matter here.
    let mut path = uri.path().trim_start_matches('/');
    if path.starts_with('v') && path[1..].starts_with(|c: char| c.is_ascii_digit()) {
        path = path.split_once('/').map_or("", |(_, rest)| rest);
    }
    let mut e = engine.lock().unwrap();
    if e.down {
        return (StatusCode::SERVICE_UNAVAILABLE, "restarting").into_response();
    }
    let json_reply = |status: StatusCode, v: Value| {
        let mut r = Response::new(Body::from(v.to_string()));
        *r.status_mut() = status;
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    };
    let ok = |v: Value| json_reply(StatusCode::OK, v);
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["version"] => ok(json!({"ApiVersion": "1.41", "Version": "20.10.24"})),
        ["containers", "json"] => {
            e.listings += 1;
            ok(Value::Array(
                e.containers
                    .iter()
                    .filter(|(_, (running, _, _))| *running)
                    .map(|(id, _)| json!({"Id": id}))
                    .collect(),
            ))
        }
        ["containers", id, "json"] => match e.containers.get(*id) {
            Some(&(running, port, exit_code)) => {
                let env = e.env.get(*id).cloned().unwrap_or_default();
                ok(inspect(id, running, port, exit_code, &env))
            }
            None => json_reply(StatusCode::NOT_FOUND, json!({"message": "No such container"})),
        },
        ["events"] => {
            let (tx, rx) = unbounded_channel::<Bytes>();
            e.events = Some(tx);
            e.subscriptions += 1;
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
            });
            Response::new(Body::from_stream(stream))
        }
        _ => (StatusCode::NOT_FOUND, "no such endpoint").into_response(),
    }
}

/// The fake engine and the registrator daemon on their own runtime; stopped on drop.
struct Harness {
    engine: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start(agent: &DevAgent, kv_prefix: Option<&str>, cleanup: bool) -> Harness {
        let target = super::backend::Target::Tcp(agent.addr.to_string());
        Harness::with(target, |o| {
            o.backend.kv_prefix = kv_prefix.map(String::from);
            o.cleanup = cleanup;
        })
    }

    /// The daemon against `target`, with options adjusted by `tweak`.
    fn with(target: super::backend::Target, tweak: impl FnOnce(&mut Options)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let socket: PathBuf = dir.path().join("docker.sock");
        let engine: Shared = Arc::default();
        let mut opts = Options {
            backend: BackendUri {
                target,
                kv_prefix: None,
            },
            token: None,
            tls: None,
            settings: Settings {
                hostname: "docker1".into(),
                ..Settings::default()
            },
            resync: None,
            cleanup: false,
            deregister_on_success: false,
            retry_attempts: -1,
            retry_interval: Duration::from_millis(100),
            docker_socket: socket.clone(),
        };
        tweak(&mut opts);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = engine.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::bind(&socket).unwrap();
                let app = axum::Router::new().fallback(engine_api).with_state(shared);
                tokio::spawn(async move { axum::serve(listener, app).await });
                daemon::run(opts, async {
                    let _ = stop_rx.await;
                })
                .await
            })
        });
        Harness {
            engine,
            stop: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// Sets a container's state and, if the stream is open, sends its event.
    fn container(&self, id: &str, running: bool, port: u16, event: Option<&str>) {
        self.container_exit(id, running, port, 0, event);
    }

    fn container_exit(&self, id: &str, running: bool, port: u16, exit_code: i64, event: Option<&str>) {
        let mut e = self.engine.lock().unwrap();
        e.containers.insert(id.into(), (running, port, exit_code));
        if let (Some(action), Some(tx)) = (event, &e.events) {
            let msg = json!({"Type": "container", "Action": action, "Actor": {"ID": id, "Attributes": {}},
                             "time": 0, "timeNano": 0});
            let _ = tx.send(Bytes::from(format!("{msg}\n")));
        }
    }

    /// The engine goes down (its event stream ends, calls fail) or comes back.
    fn set_down(&self, down: bool) {
        let mut e = self.engine.lock().unwrap();
        e.down = down;
        e.events = None;
    }

    fn subscriptions(&self) -> u32 {
        self.engine.lock().unwrap().subscriptions
    }

    fn set_env(&self, id: &str, env: &[&str]) {
        let env = env.iter().map(|e| e.to_string()).collect();
        self.engine.lock().unwrap().env.insert(id.into(), env);
    }

    fn listings(&self) -> u32 {
        self.engine.lock().unwrap().listings
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let result = t.join();
            if !std::thread::panicking() {
                assert!(matches!(result, Ok(Ok(()))), "daemon ended with {result:?}");
            }
        }
    }
}

fn eventually(what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let last = match f() {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {last}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ID → Port` of the agent's services, without the agent's own `consul` service.
fn agent_services(agent: &DevAgent) -> Result<BTreeMap<String, u64>, String> {
    let text = ureq::get(&agent.url("/v1/agent/services"))
        .call()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|e| e.to_string())?;
    let body: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(body
        .as_object()
        .ok_or("not an object")?
        .iter()
        .filter(|(id, _)| *id != "consul")
        .map(|(id, s)| (id.clone(), s["Port"].as_u64().unwrap_or(0)))
        .collect())
}

fn expect_services(agent: &DevAgent, want: &[(&str, u64)], what: &str) {
    let want: BTreeMap<String, u64> = want.iter().map(|(id, p)| (id.to_string(), *p)).collect();
    eventually(what, || {
        let got = agent_services(agent)?;
        (got == want).then_some(()).ok_or(format!("agent has {got:?}"))
    });
}

#[test]
fn follows_events_and_reconciles_after_the_event_stream_drops() {
    let agent = DevAgent::start();
    let h = Harness::start(&agent, None, false);
    h.container("web1", true, 32768, None);
    expect_services(&agent, &[("docker1:web1:80", 32768)], "the initial sync");
    eventually("the event stream", || {
        (h.subscriptions() == 1).then_some(()).ok_or("not yet".into())
    });

    h.container("web2", true, 32769, Some("start"));
    expect_services(
        &agent,
        &[("docker1:web1:80", 32768), ("docker1:web2:80", 32769)],
        "the start event",
    );
    h.container("web1", false, 32768, Some("die"));
    expect_services(&agent, &[("docker1:web2:80", 32769)], "the die event");

    // The engine restarts: the stream drops (registrator would exit here), and while it is down web2 stops
    // and web3 starts, with no events anyone could see.
    h.set_down(true);
    h.container("web2", false, 32769, None);
    h.container("web3", true, 32770, None);
    h.set_down(false);
    expect_services(
        &agent,
        &[("docker1:web3:80", 32770)],
        "the reconciliation after reconnecting",
    );

    // And the new stream works.
    eventually("the second event stream", || {
        (h.subscriptions() >= 2).then_some(()).ok_or("not yet".into())
    });
    h.container("web4", true, 32771, Some("start"));
    expect_services(
        &agent,
        &[("docker1:web3:80", 32770), ("docker1:web4:80", 32771)],
        "a start event on the new stream",
    );
}

#[test]
fn cleanup_removes_only_this_hosts_dangling_services() {
    let agent = DevAgent::start();
    let register = |id: &str, port: u16| {
        let body = json!({"ID": id, "Name": "nginx", "Port": port, "Address": "127.0.0.1"}).to_string();
        ureq::put(&agent.url("/v1/agent/service/register"))
            .send_string(&body)
            .unwrap();
    };
    // Left behind by an earlier registrator on this host, on another host, and by hand.
    register("docker1:gone:80", 1000);
    register("docker2:web9:80", 1001);
    register("redis", 6379);
    let h = Harness::start(&agent, None, true);
    h.container("web1", true, 32768, None);
    expect_services(
        &agent,
        &[("docker1:web1:80", 32768), ("docker2:web9:80", 1001), ("redis", 6379)],
        "the cleanup at start-up",
    );
}

#[test]
fn kv_backend_writes_name_and_address_under_the_prefix() {
    let agent = DevAgent::start();
    let h = Harness::start(&agent, Some("services"), false);
    h.container("web1", true, 32768, None);
    let key = agent.url("/v1/kv/services/nginx/docker1:web1:80?raw");
    eventually("the KV entry", || {
        let body = ureq::get(&key)
            .call()
            .map_err(|e| e.to_string())?
            .into_string()
            .unwrap();
        (body == "127.0.0.1:32768").then_some(()).ok_or(body)
    });
    eventually("the event stream", || {
        (h.subscriptions() == 1).then_some(()).ok_or("not yet".into())
    });
    h.container("web1", false, 32768, Some("die"));
    eventually("the KV entry to go", || match ureq::get(&key).call() {
        Err(ureq::Error::Status(404, _)) => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

#[test]
fn on_success_keeps_the_services_of_failed_containers() {
    let agent = DevAgent::start();
    let target = super::backend::Target::Tcp(agent.addr.to_string());
    let h = Harness::with(target, |o| o.deregister_on_success = true);
    for (i, id) in ["failed", "clean", "killed"].into_iter().enumerate() {
        h.container(id, true, 32768 + i as u16, None);
    }
    let all = [
        ("docker1:clean:80", 32769),
        ("docker1:failed:80", 32768),
        ("docker1:killed:80", 32770),
    ];
    expect_services(&agent, &all, "the initial sync");
    eventually("the event stream", || {
        (h.subscriptions() == 1).then_some(()).ok_or("not yet".into())
    });
    h.container_exit("failed", false, 32768, 1, Some("die"));
    h.container_exit("clean", false, 32769, 0, Some("die"));
    h.container_exit("killed", false, 32770, 137, Some("die"));
    // Events are handled in order, so once `killed` is gone the `failed` one has been decided too.
    expect_services(
        &agent,
        &[("docker1:failed:80", 32768)],
        "exit 0 and death by signal to deregister, exit 1 to stay",
    );
}

/// A fake agent on a unix socket: what was registered, how many writes, and the tokens it saw.
#[derive(Default)]
struct FakeAgent {
    services: BTreeMap<String, Value>,
    writes: u32,
    tokens: Vec<Option<String>>,
}

async fn agent_api(
    State(agent): State<Arc<Mutex<FakeAgent>>>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let mut a = agent.lock().unwrap();
    let token = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    a.tokens.push(token);
    let reply = |v: Value| Response::new(Body::from(v.to_string()));
    match (method.as_str(), uri.path()) {
        ("GET", "/v1/status/leader") => reply(json!("127.0.0.1:8300")),
        ("GET", "/v1/agent/services") => reply(Value::Object(
            a.services
                .iter()
                .map(|(id, r)| {
                    let s = json!({"ID": id, "Service": r["Name"], "Tags": r["Tags"], "Address": r["Address"],
                                   "Port": r["Port"], "Meta": r["Meta"]});
                    (id.clone(), s)
                })
                .collect(),
        )),
        ("PUT", "/v1/agent/service/register") => {
            let r: Value = serde_json::from_slice(&body).unwrap();
            a.writes += 1;
            a.services.insert(r["ID"].as_str().unwrap().to_string(), r);
            reply(Value::Null)
        }
        _ => {
            let mut r = Response::new(Body::from("unexpected"));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
    }
}

#[test]
fn unix_socket_agent_with_token_and_resync_that_writes_only_what_drifted() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let fake: Arc<Mutex<FakeAgent>> = Arc::default();
    let (shared, path) = (fake.clone(), sock.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            ready_tx.send(()).unwrap();
            let app = axum::Router::new().fallback(agent_api).with_state(shared);
            let _ = axum::serve(listener, app).await;
        });
    });
    ready_rx.recv_timeout(DEADLINE).unwrap();
    let h = Harness::with(super::backend::Target::Unix(sock), |o| {
        o.token = Some("secret".into());
        o.resync = Some(Duration::from_millis(50));
    });
    h.container("web1", true, 32768, None);
    let writes = || fake.lock().unwrap().writes;
    eventually("the registration", || {
        (writes() == 1).then_some(()).ok_or(format!("{} writes", writes()))
    });
    let body = fake.lock().unwrap().services["docker1:web1:80"].clone();
    assert_eq!(
        body,
        json!({"ID": "docker1:web1:80", "Name": "nginx", "Tags": [], "Port": 32768, "Address": "127.0.0.1",
               "Meta": {}})
    );
    // Several resyncs later nothing was written again: watchers of the service are not woken.
    let seen = h.listings();
    eventually("three more reconciliations", || {
        (h.listings() >= seen + 3).then_some(()).ok_or("not yet".into())
    });
    assert_eq!(writes(), 1, "a resync with nothing changed must not re-register");
    // The agent loses the service (say, its state was wiped): the next resync puts it back.
    fake.lock().unwrap().services.clear();
    eventually("the resync to repair the agent", || {
        (writes() == 2).then_some(()).ok_or(format!("{} writes", writes()))
    });
    assert!(
        fake.lock()
            .unwrap()
            .tokens
            .iter()
            .all(|t| t.as_deref() == Some("secret")),
        "every call carries X-Consul-Token"
    );
}

#[test]
fn service_settings_and_checks_reach_a_real_agent() {
    let agent = DevAgent::start();
    let h = Harness::start(&agent, None, false);
    h.set_env(
        "web1",
        &[
            "SERVICE_NAME=frontend",
            "SERVICE_TAGS=prod,v2",
            "SERVICE_REGION=eu",
            "SERVICE_CHECK_HTTP=/health",
            "SERVICE_CHECK_INTERVAL=5s",
        ],
    );
    h.container("web1", true, 32768, None);
    let url = agent.url("/v1/agent/services");
    eventually("the registration", || {
        let body: Value = serde_json::from_str(
            &ureq::get(&url)
                .call()
                .map_err(|e| e.to_string())?
                .into_string()
                .unwrap(),
        )
        .unwrap();
        let s = &body["docker1:web1:80"];
        let want = json!({"Service": "frontend", "Tags": ["prod", "v2"], "Meta": {"region": "eu"}, "Port": 32768});
        let got = json!({"Service": s["Service"], "Tags": s["Tags"], "Meta": s["Meta"], "Port": s["Port"]});
        (got == want).then_some(()).ok_or(format!("{body}"))
    });
    let checks: Value = serde_json::from_str(
        &ureq::get(&agent.url("/v1/agent/checks"))
            .call()
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap();
    let check = checks
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["ServiceID"] == "docker1:web1:80")
        .unwrap_or_else(|| panic!("no check for the service: {checks}"));
    assert_eq!(check["Type"], "http", "{check}");
}
