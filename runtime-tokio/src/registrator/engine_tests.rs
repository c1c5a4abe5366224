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
    /// Container ID → (running, host port of 80/tcp).
    containers: BTreeMap<String, (bool, u16)>,
    /// The open event stream, if any; dropping it ends the stream.
    events: Option<UnboundedSender<Bytes>>,
    /// How many times the registrator opened the event stream.
    subscriptions: u32,
    /// Restarting: every call fails.
    down: bool,
}

type Shared = Arc<Mutex<Engine>>;

fn inspect(id: &str, running: bool, port: u16) -> Value {
    json!({
        "Id": id, "Name": format!("/{id}"),
        "State": {"Status": if running { "running" } else { "exited" }, "Running": running, "ExitCode": 0},
        "Config": {"Hostname": id, "ExposedPorts": {"80/tcp": {}}, "Env": [], "Image": "nginx:latest", "Labels": {}},
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
        ["containers", "json"] => ok(Value::Array(
            e.containers
                .iter()
                .filter(|(_, (running, _))| *running)
                .map(|(id, _)| json!({"Id": id}))
                .collect(),
        )),
        ["containers", id, "json"] => match e.containers.get(*id) {
            Some(&(running, port)) => ok(inspect(id, running, port)),
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
        let dir = tempfile::tempdir().unwrap();
        let socket: PathBuf = dir.path().join("docker.sock");
        let engine: Shared = Arc::default();
        let opts = Options {
            backend: BackendUri {
                target: super::backend::Target::Tcp(agent.addr.to_string()),
                kv_prefix: kv_prefix.map(String::from),
            },
            token: None,
            settings: Settings {
                hostname: "docker1".into(),
                ..Settings::default()
            },
            resync: None,
            cleanup,
            deregister_on_success: false,
            retry_attempts: -1,
            retry_interval: Duration::from_millis(100),
            docker_socket: socket.clone(),
        };
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
        let mut e = self.engine.lock().unwrap();
        e.containers.insert(id.into(), (running, port));
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
