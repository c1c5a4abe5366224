//! `concord template` end to end: KV functions against a real in-process dev agent, service functions
//! against a fake HTTP server that answers with Consul's JSON, plus the pieces (flags, config files,
//! atomic writes, commands) on their own.

use super::config::{self, Config, TemplateSpec};
use super::runner::{self, Env};
use super::{output, run_cli};
use crate::cli::Io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

/// Poll `f` until it returns Some, failing at the deadline.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A real `concord agent -dev` in this process, on its own runtime; stopped on drop. (Also used by the
/// registrator's tests.)
pub(crate) struct DevAgent {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DevAgent {
    pub(crate) fn start() -> DevAgent {
        // Every port on 0: tests run several dev agents on 127.0.0.1 at once.
        let args: Vec<String> = [
            "-dev",
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
            "-dns-port",
            "-1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let config = crate::config::parse_agent_args(&args).expect("dev agent flags");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let agent = crate::agent::Agent::start(config).await.expect("dev agent starts");
                addr_tx.send(agent.http_addrs[0]).unwrap();
                let _ = agent
                    .run_until(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv_timeout(DEADLINE).expect("dev agent address");
        let agent = DevAgent {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        eventually("the dev agent to accept writes", || {
            agent.try_put("_ready", "1").then_some(())
        });
        agent
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn try_put(&self, key: &str, value: &str) -> bool {
        ureq::put(&self.url(&format!("/v1/kv/{key}")))
            .send_string(value)
            .is_ok_and(|r| r.into_string().is_ok_and(|b| b.trim() == "true"))
    }

    fn put(&self, key: &str, value: &str) {
        assert!(self.try_put(key, value), "PUT {key}");
    }
}

impl Drop for DevAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Cli {
    code: i32,
    out: String,
    err: String,
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> Cli {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut stdin: &[u8] = b"";
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        stdin: &mut stdin,
        env: &lookup,
    };
    let code = run_cli(&args, &mut io);
    Cli {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// A runner on its own thread and runtime, with `-dry` output captured; stopped on drop.
struct Daemon {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<i32, String>>>,
    stdout: Arc<Mutex<Vec<u8>>>,
}

#[derive(Clone)]
struct SharedOut(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Daemon {
    fn start(config: Config) -> Daemon {
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let out = SharedOut(stdout.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let env = Env {
                vars: Box::new(|k: &str| (k == "GREETING").then(|| "hi".to_string())),
                stdout: Box::new(out),
            };
            rt.block_on(runner::run(config, env, async {
                let _ = stop_rx.await;
            }))
        });
        Daemon {
            stop: Some(stop_tx),
            thread: Some(thread),
            stdout,
        }
    }

    fn finish(mut self) -> Result<i32, String> {
        let t = self.thread.take().unwrap();
        let deadline = Instant::now() + DEADLINE;
        while !t.is_finished() {
            assert!(Instant::now() < deadline, "runner did not finish");
            std::thread::sleep(Duration::from_millis(10));
        }
        t.join().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn spec(source: &Path, dest: &Path, command: Option<String>) -> TemplateSpec {
    let mut s = config::parse_template_flag(&format!("{}:{}", source.display(), dest.display())).unwrap();
    s.command = command;
    s
}

fn config_for(addr: SocketAddr, templates: Vec<TemplateSpec>) -> Config {
    Config {
        consul_addr: addr.to_string(),
        templates,
        ..Config::default()
    }
}

// ---- against a real dev agent ----

#[test]
fn once_renders_kv_data_from_a_real_dev_agent() {
    let agent = DevAgent::start();
    agent.put("app/name", "web");
    agent.put("app/port", "8080");
    agent.put("app/sub/deep", "x");
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("in.ctmpl"), dir.path().join("out/app.conf"));
    write(
        &src,
        "name={{ key \"app/name\" }} port={{ key \"app/port\" }} missing={{ keyOrDefault \"app/nope\" \"dflt\" }}\n\
         {{- range ls \"app\" }}\nls {{ .Key }}={{ .Value }}{{ end }}\n\
         {{- range tree \"app\" }}\ntree {{ .Key }}{{ end }}\n",
    );
    let template = format!("{}:{}", src.display(), dest.display());
    let r = cli(
        &["-once", "-template", &template],
        &[("CONSUL_HTTP_ADDR", &agent.addr.to_string())],
    );
    assert_eq!((r.code, r.err.as_str(), r.out.as_str()), (0, "", ""));
    assert_eq!(
        read(&dest).unwrap(),
        "name=web port=8080 missing=dflt\nls name=web\nls port=8080\ntree name\ntree port\ntree sub/deep\n"
    );
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o644);
}

#[test]
fn once_waits_for_a_missing_key() {
    let agent = DevAgent::start();
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("in.ctmpl"), dir.path().join("out.txt"));
    write(&src, "v={{ key \"late/key\" }}");
    let mut config = config_for(agent.addr, vec![spec(&src, &dest, None)]);
    config.once = true;
    let daemon = Daemon::start(config);
    assert!(read(&dest).is_none(), "rendered before the key existed");
    agent.put("late/key", "now");
    assert_eq!(daemon.finish(), Ok(0));
    assert_eq!(read(&dest).unwrap(), "v=now");
}

#[test]
fn a_running_renderer_follows_its_keys_and_ignores_others() {
    let agent = DevAgent::start();
    agent.put("cfg/a", "1");
    agent.put("other/x", "1");
    let dir = tempfile::tempdir().unwrap();
    let (src_a, dest_a) = (dir.path().join("a.ctmpl"), dir.path().join("a.conf"));
    let (src_x, dest_x) = (dir.path().join("x.ctmpl"), dir.path().join("x.conf"));
    let runs = dir.path().join("runs.log");
    write(&src_a, "a={{ key \"cfg/a\" }}\n");
    write(&src_x, "x={{ key \"other/x\" }}\n");
    let command = format!("echo ran >> {}", runs.display());
    let config = config_for(
        agent.addr,
        vec![spec(&src_a, &dest_a, Some(command)), spec(&src_x, &dest_x, None)],
    );
    let daemon = Daemon::start(config);
    let count_runs = || read(&runs).map_or(0, |s| s.lines().count());
    eventually("the first render and command", || {
        (read(&dest_a).as_deref() == Some("a=1\n") && read(&dest_x).is_some() && count_runs() == 1).then_some(())
    });
    let first = mtime(&dest_a);

    // An unrelated key changes (x.conf re-renders, proving the runner saw it) and cfg/a is rewritten
    // with the same value: a.conf is not rewritten and its command does not run.
    agent.put("cfg/a", "1");
    agent.put("other/x", "2");
    eventually("x.conf to follow other/x", || {
        (read(&dest_x).as_deref() == Some("x=2\n")).then_some(())
    });
    assert_eq!(mtime(&dest_a), first, "a.conf was rewritten for an unrelated change");
    assert_eq!(count_runs(), 1, "the command ran for an unrelated change");

    // A watched key changes: re-rendered quickly, command run once more.
    let changed_at = Instant::now();
    agent.put("cfg/a", "2");
    eventually("a.conf to follow cfg/a", || {
        (read(&dest_a).as_deref() == Some("a=2\n")).then_some(())
    });
    let latency = changed_at.elapsed();
    assert!(latency < Duration::from_secs(2), "re-render took {latency:?}");
    eventually("the command to run again", || (count_runs() == 2).then_some(()));
    drop(daemon);
}

// ---- against a fake Consul serving /v1/health/service ----

/// Consul's `/v1/health/service/:name` with blocking queries, over a list the test changes.
#[derive(Clone, Default)]
struct FakeConsul {
    state: Arc<Mutex<(u64, String)>>,
    changed: Arc<tokio::sync::Notify>,
    queries: Arc<Mutex<Vec<String>>>,
}

impl FakeConsul {
    fn set(&self, body: String) {
        let mut s = self.state.lock().unwrap();
        s.0 += 1;
        s.1 = body;
        drop(s);
        self.changed.notify_waiters();
    }
}

async fn health_service(
    axum::extract::State(fake): axum::extract::State<FakeConsul>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> impl axum::response::IntoResponse {
    let query = query.unwrap_or_default();
    fake.queries.lock().unwrap().push(format!("{name}?{query}"));
    let wanted: u64 = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("index="))
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    let notified = fake.changed.notified();
    let current = fake.state.lock().unwrap().0;
    if wanted >= current {
        let _ = tokio::time::timeout(Duration::from_secs(5), notified).await;
    }
    let (index, body) = fake.state.lock().unwrap().clone();
    (
        [
            ("X-Consul-Index", index.to_string()),
            ("Content-Type", "application/json".into()),
        ],
        body,
    )
}

fn start_fake(fake: FakeConsul) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route("/v1/health/service/{name}", axum::routing::get(health_service))
                .with_state(fake);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv_timeout(DEADLINE).unwrap()
}

fn entry(node: &str, addr: &str, id: &str, port: u16, status: &str) -> String {
    format!(
        r#"{{"Node":{{"ID":"{node}-id","Node":"{node}","Address":"{addr}","Datacenter":"dc1","TaggedAddresses":{{}},"Meta":{{}}}},"Service":{{"ID":"{id}","Service":"nginx","Tags":[],"Address":"","Meta":{{}},"Port":{port},"Weights":{{"Passing":1,"Warning":1}}}},"Checks":[{{"Node":"{node}","CheckID":"serfHealth","Name":"Serf Health Status","Status":"{status}","ServiceID":""}}]}}"#
    )
}

const TUTORIAL: &str =
    "upstream http_backend {\n  {{range service \"nginx\"}}\n  server {{.Address}}:{{.Port}};\n  {{end}}\n}\n";

#[test]
fn the_tutorial_template_follows_nginx_instances() {
    let fake = FakeConsul::default();
    fake.set(format!("[{}]", entry("host2", "10.0.0.2", "nginx-1", 32768, "passing")));
    let addr = start_fake(fake.clone());
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("nginx.ctmpl"), dir.path().join("vhost/test.conf"));
    write(&src, TUTORIAL);
    // A second template using the same service shares its watch.
    let (src2, dest2) = (dir.path().join("count.ctmpl"), dir.path().join("count.txt"));
    write(&src2, "{{ len (service \"nginx\") }}");
    let daemon = Daemon::start(config_for(
        addr,
        vec![spec(&src, &dest, None), spec(&src2, &dest2, None)],
    ));
    eventually("the first render", || {
        (read(&dest).as_deref() == Some("upstream http_backend {\n  \n  server 10.0.0.2:32768;\n  \n}\n")).then_some(())
    });
    fake.set(format!(
        "[{},{}]",
        entry("host3", "10.0.0.3", "nginx-2", 32769, "passing"),
        entry("host2", "10.0.0.2", "nginx-1", 32768, "passing")
    ));
    eventually("the second instance", || {
        (read(&dest).as_deref()
            == Some("upstream http_backend {\n  \n  server 10.0.0.2:32768;\n  \n  server 10.0.0.3:32769;\n  \n}\n"))
        .then_some(())
    });
    eventually("the count", || (read(&dest2).as_deref() == Some("2")).then_some(()));
    drop(daemon);
    let queries = fake.queries.lock().unwrap().clone();
    assert_eq!(
        queries.iter().filter(|q| !q.contains("index=")).count(),
        1,
        "one watch for both templates: {queries:?}"
    );
    assert!(
        queries[0].starts_with("nginx?") && queries[0].contains("passing=1"),
        "{queries:?}"
    );
    let blocking = queries.iter().find(|q| q.contains("index=")).expect("a blocking query");
    assert!(
        blocking.contains("wait=60000ms") && blocking.contains("stale") && blocking.contains("passing=1"),
        "{blocking}"
    );
}

#[test]
fn dry_prints_instead_of_writing() {
    let fake = FakeConsul::default();
    fake.set("[]".into());
    let addr = start_fake(fake);
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("nginx.ctmpl"), dir.path().join("out.conf"));
    write(
        &src,
        "{{ range service \"nginx\" }}x{{ else }}none {{ env \"GREETING\" }}{{ end }}\n",
    );
    let mut config = config_for(addr, vec![spec(&src, &dest, None)]);
    config.dry = true;
    config.once = true;
    let daemon = Daemon::start(config);
    let stdout = daemon.stdout.clone();
    assert_eq!(daemon.finish(), Ok(0));
    assert_eq!(
        String::from_utf8(stdout.lock().unwrap().clone()).unwrap(),
        format!("> {}\nnone hi\n", dest.display())
    );
    assert!(read(&dest).is_none());
}

// ---- pieces ----

#[test]
fn template_flag_splits_like_consul_template() {
    let t = |s: &str| {
        let spec = config::parse_template_flag(s).unwrap();
        (
            spec.source.unwrap().display().to_string(),
            spec.destination.display().to_string(),
            spec.command,
        )
    };
    assert_eq!(t("in.ctmpl:out.conf"), ("in.ctmpl".into(), "out.conf".into(), None));
    assert_eq!(
        t("nginx.ctmpl:vhost/test.conf:nginx -s reload"),
        (
            "nginx.ctmpl".into(),
            "vhost/test.conf".into(),
            Some("nginx -s reload".into())
        )
    );
    // Colons in the command survive (rejoined), and a drive letter stays with its path.
    assert_eq!(
        t("in:out:echo a:b:c"),
        ("in".into(), "out".into(), Some("echo a:b:c".into()))
    );
    assert_eq!(t("C:\\in.tpl:D:\\out"), ("C:\\in.tpl".into(), "D:\\out".into(), None));
    assert!(config::parse_template_flag("  ").is_err());
    // As consul-template's regexp reads it, a one-letter source is a drive letter.
    assert_eq!(t("a:b"), ("a:b".into(), "".into(), None));
}

#[test]
fn wait_defaults_max_to_four_times_min() {
    let w = config::parse_wait("5s").unwrap();
    assert_eq!((w.min, w.max), (Duration::from_secs(5), Duration::from_secs(20)));
    let w = config::parse_wait("1s:3s").unwrap();
    assert_eq!((w.min, w.max), (Duration::from_secs(1), Duration::from_secs(3)));
    assert!(config::parse_wait("3s:1s").is_err());
    assert!(config::parse_wait("soon").is_err());
}

#[test]
fn flags_and_config_files_merge_with_flags_winning() {
    let dir = tempfile::tempdir().unwrap();
    let hcl = dir.path().join("a.hcl");
    write(
        &hcl,
        r#"
consul {
  address = "10.0.0.1:8500"
  retry {
    attempts = 3
    backoff = "1s"
  }
}
wait { min = "2s" }
log_level = "info"
template {
  source = "a.ctmpl"
  destination = "a.out"
  command = "touch a"
  command_timeout = "5s"
  perms = 0600
  backup = true
  left_delimiter = "[["
  right_delimiter = "]]"
}
template {
  contents = "{{ key \"x\" }}"
  destination = "b.out"
  wait = "1s:2s"
}
"#,
    );
    let json = dir.path().join("b.json");
    write(
        &json,
        r#"{"consul": {"address": "10.0.0.2:8500"}, "template": {"source": "c.ctmpl", "destination": "c.out"}}"#,
    );
    let mut cfg = Config::default();
    config::load_file(&mut cfg, &hcl.display().to_string()).unwrap();
    config::load_file(&mut cfg, &json.display().to_string()).unwrap();
    assert_eq!(cfg.consul_addr, "10.0.0.2:8500", "later files win");
    assert_eq!(cfg.wait.unwrap().max, Duration::from_secs(8));
    assert_eq!((cfg.retry.attempts, cfg.retry.backoff), (3, Duration::from_secs(1)));
    assert_eq!(cfg.templates.len(), 3);
    let a = &cfg.templates[0];
    assert_eq!(
        (
            a.perms,
            a.backup,
            a.command.as_deref(),
            a.command_timeout,
            a.left_delimiter.as_str()
        ),
        (Some(0o600), true, Some("touch a"), Duration::from_secs(5), "[[")
    );
    assert_eq!(cfg.templates[1].contents.as_deref(), Some("{{ key \"x\" }}"));
    assert_eq!(cfg.templates[1].wait.unwrap().max, Duration::from_secs(2));
}

#[test]
fn cli_reports_parse_errors_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("nginx.ctmpl");
    write(&src, "upstream {\n  x\n  {{ .Address } }}\n");
    let template = format!("{}:{}", src.display(), dir.path().join("out").display());
    let r = cli(&["-parse-only", "-template", &template], &[]);
    assert_eq!(r.code, 1);
    assert_eq!(r.err, format!("{}:3:15: unexpected \"}}\" in operand\n", src.display()));
    let r = cli(&[], &[]);
    assert_eq!(r.code, 1);
    assert!(r.err.starts_with("At least one -template"), "{}", r.err);
    let r = cli(&["-bogus"], &[]);
    assert!(r.err.starts_with("flag provided but not defined: -bogus"), "{}", r.err);
}

#[test]
fn atomic_write_keeps_permissions_and_skips_unchanged_output() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.conf");
    write(&dest, "old");
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut s = spec(Path::new("in"), &dest, None);
    s.backup = true;
    assert_eq!(output::write_if_changed(&s, b"new"), Ok(true));
    assert_eq!(read(&dest).unwrap(), "new");
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o600);
    assert_eq!(read(&dir.path().join("out.conf.bak")).unwrap(), "old");
    let before = mtime(&dest);
    assert_eq!(output::write_if_changed(&s, b"new"), Ok(false));
    assert_eq!(mtime(&dest), before);
    s.perms = Some(0o640);
    assert_eq!(output::write_if_changed(&s, b"newer"), Ok(true));
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o640);
    assert_eq!(read(&dir.path().join("out.conf.old.bak")).unwrap(), "old");
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "no temporary files left behind: {names:?}");
}

#[tokio::test]
async fn commands_run_under_sh_with_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("m");
    let ok = output::run_command(
        &format!("echo a | tr a b > {}", marker.display()),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(ok, Ok(()));
    assert_eq!(read(&marker).unwrap(), "b\n");
    assert!(output::run_command("exit 3", Duration::from_secs(10))
        .await
        .unwrap_err()
        .contains("exit status: 3"));
    let started = Instant::now();
    let err = output::run_command("sleep 30", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        err.contains("killed") && started.elapsed() < Duration::from_secs(10),
        "{err}"
    );
}

#[test]
fn a_404_is_missing_data_for_kv_and_an_error_elsewhere() {
    use super::watch::{answer_body, Answer};
    use concord_core::template::Dependency;
    let not_found = Answer {
        status: 404,
        body: b"404 page not found".to_vec(),
        index: None,
    };
    let kv = Dependency::Kv {
        key: "a".into(),
        dc: None,
    };
    assert_eq!(answer_body(&kv, &not_found), Ok(None));
    let health = Dependency::CatalogServices { dc: None };
    assert_eq!(
        answer_body(&health, &not_found),
        Err("Unexpected response code: 404 (404 page not found)".to_string())
    );
}

#[test]
fn quiescence_holds_a_render_for_the_minimum_wait() {
    let agent = DevAgent::start();
    agent.put("q/a", "1");
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("q.ctmpl"), dir.path().join("q.conf"));
    write(&src, "{{ key \"q/a\" }}");
    let mut config = config_for(agent.addr, vec![spec(&src, &dest, None)]);
    config.wait = Some(config::parse_wait("600ms:3s").unwrap());
    let daemon = Daemon::start(config);
    eventually("the first render", || {
        (read(&dest).as_deref() == Some("1")).then_some(())
    });
    let put_at = Instant::now();
    agent.put("q/a", "2");
    eventually("the quiet render", || {
        (read(&dest).as_deref() == Some("2")).then_some(())
    });
    let took = put_at.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "rendered {took:?} after the change, before the quiet period"
    );
    drop(daemon);
}

#[test]
fn exec_child_starts_after_the_first_render_and_gets_the_reload_signal() {
    let agent = DevAgent::start();
    agent.put("e/a", "1");
    let dir = tempfile::tempdir().unwrap();
    let (src, dest, log) = (
        dir.path().join("e.ctmpl"),
        dir.path().join("e.conf"),
        dir.path().join("child.log"),
    );
    write(&src, "{{ key \"e/a\" }}");
    let mut config = config_for(agent.addr, vec![spec(&src, &dest, None)]);
    let log_path = log.display().to_string();
    config.exec = Some(config::ExecSpec {
        // The child records what it saw of the rendered file at start and on each SIGHUP.
        command: format!(
            "trap 'echo hup $(cat {d}) >> {log_path}' HUP; echo start $(cat {d}) >> {log_path}; while true; do sleep 0.05; done",
            d = dest.display()
        ),
        reload_signal: Some("SIGHUP".into()),
        kill_signal: "SIGTERM".into(),
        kill_timeout: Duration::from_secs(5),
    });
    let daemon = Daemon::start(config);
    eventually("the child to start", || {
        (read(&log).as_deref() == Some("start 1\n")).then_some(())
    });
    agent.put("e/a", "2");
    eventually("the reload signal", || {
        (read(&log).as_deref() == Some("start 1\nhup 2\n")).then_some(())
    });
    drop(daemon);
}

#[test]
fn the_runner_exits_with_the_exec_childs_status() {
    let agent = DevAgent::start();
    agent.put("x/a", "1");
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("x.ctmpl"), dir.path().join("x.conf"));
    write(&src, "{{ key \"x/a\" }}");
    let template = format!("{}:{}", src.display(), dest.display());
    // Exit 7 only if the file was rendered before the child started.
    let child = format!("test \"$(cat {})\" = 1 && exit 7; exit 9", dest.display());
    let r = cli(
        &[
            "-consul-addr",
            &agent.addr.to_string(),
            "-template",
            &template,
            "-exec",
            &child,
        ],
        &[],
    );
    assert_eq!((r.code, r.err.as_str()), (7, ""));
    assert_eq!(read(&dest).as_deref(), Some("1"));
}

#[test]
fn an_unreachable_agent_gives_up_after_the_retry_attempts() {
    // A port nothing listens on: bind, note the port, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("k.ctmpl"), dir.path().join("k.conf"));
    write(&src, "{{ key \"a\" }}");
    let mut config = config_for(addr, vec![spec(&src, &dest, None)]);
    config.once = true;
    config.retry.attempts = 2;
    config.retry.backoff = Duration::from_millis(10);
    let err = Daemon::start(config).finish().unwrap_err();
    assert!(err.starts_with("kv.block(a): GET http://127.0.0.1:"), "{err}");
    assert!(err.ends_with("(giving up after 3 attempts)"), "{err}");
}

#[test]
fn command_line_flags_win_over_environment_and_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.hcl");
    write(
        &file,
        "consul { address = \"10.9.9.9:8500\" }\nwait = \"9s\"\ntemplate {\n  source = \"f.ctmpl\"\n  destination = \"f.out\"\n}\n",
    );
    let parse = |args: &[&str], env: &[(&str, &str)]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut stdin: &[u8] = b"";
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            stdin: &mut stdin,
            env: &lookup,
        };
        super::parse_args(&args, &mut io).map_err(|code| (code, String::from_utf8(err).unwrap()))
    };
    let cfg = parse(
        &["-template", "in:out"],
        &[("CONSUL_HTTP_ADDR", "10.1.1.1:8500"), ("CONSUL_HTTP_TOKEN", "t")],
    )
    .unwrap();
    assert_eq!(
        (cfg.consul_addr.as_str(), cfg.token.as_deref()),
        ("10.1.1.1:8500", Some("t"))
    );
    assert_eq!(cfg.retry.attempts, 12);
    let config_arg = format!("-config={}", file.display());
    let cfg = parse(
        &[
            &config_arg,
            "-template",
            "in:out:c d",
            "-wait",
            "1s",
            "-consul-retry-attempts",
            "0",
            "-once",
            "-exec",
            "my app",
        ],
        &[("CONSUL_HTTP_ADDR", "10.1.1.1:8500")],
    )
    .unwrap();
    assert_eq!(cfg.consul_addr, "10.9.9.9:8500", "a config file beats the environment");
    assert_eq!(cfg.wait.unwrap().min, Duration::from_secs(1), "flags beat config files");
    assert_eq!((cfg.retry.attempts, cfg.once), (0, true));
    assert_eq!(cfg.templates.len(), 2, "templates from files and flags all run");
    assert_eq!(cfg.templates[1].command.as_deref(), Some("c d"));
    assert_eq!(cfg.exec.unwrap().command, "my app");
    let cfg = parse(&["-consul-addr", "127.0.0.9:1", &config_arg], &[]).unwrap();
    assert_eq!(cfg.consul_addr, "127.0.0.9:1");
    let (code, err) = parse(&["-template", "in.ctmpl"], &[]).unwrap_err();
    assert_eq!(
        (code, err.as_str()),
        (1, "template in.ctmpl: a destination is required\n")
    );
    let (code, err) = parse(&["-wait", "x", "-template", "in:out"], &[]).unwrap_err();
    assert!(code == 1 && err.starts_with("invalid wait \"x\""), "{err}");
}

#[test]
fn templates_sharing_a_command_run_it_once_and_exec_restarts_without_a_reload_signal() {
    let agent = DevAgent::start();
    agent.put("s/a", "1");
    let dir = tempfile::tempdir().unwrap();
    let (src, runs, log) = (
        dir.path().join("s.ctmpl"),
        dir.path().join("runs"),
        dir.path().join("child.log"),
    );
    write(&src, "{{ key \"s/a\" }}");
    let (dest1, dest2) = (dir.path().join("one"), dir.path().join("two"));
    let command = format!("echo ran >> {}", runs.display());
    let mut config = config_for(
        agent.addr,
        vec![
            spec(&src, &dest1, Some(command.clone())),
            spec(&src, &dest2, Some(command)),
        ],
    );
    config.exec = Some(config::ExecSpec {
        command: format!(
            "echo start $(cat {}) >> {}; while true; do sleep 0.05; done",
            dest1.display(),
            log.display()
        ),
        reload_signal: None,
        kill_signal: "SIGTERM".into(),
        kill_timeout: Duration::from_secs(5),
    });
    let daemon = Daemon::start(config);
    eventually("the child", || {
        (read(&log).as_deref() == Some("start 1\n")).then_some(())
    });
    assert_eq!(read(&runs).as_deref(), Some("ran\n"));
    agent.put("s/a", "2");
    eventually("the restarted child", || {
        (read(&log).as_deref() == Some("start 1\nstart 2\n")).then_some(())
    });
    assert_eq!(read(&runs).as_deref(), Some("ran\nran\n"));
    drop(daemon);
}

impl DevAgent {
    fn register(&self, id: &str, address: &str, port: u16, tags: &[&str]) {
        let body = serde_json::json!({"Name": "nginx", "ID": id, "Address": address, "Port": port, "Tags": tags});
        let r = ureq::put(&self.url("/v1/agent/service/register")).send_string(&body.to_string());
        assert!(r.is_ok(), "register {id}: {r:?}");
    }

    fn maintenance(&self, id: &str, enable: bool) {
        let path = format!("/v1/agent/service/maintenance/{id}?enable={enable}&reason=test");
        assert!(ureq::put(&self.url(&path)).call().is_ok(), "maintenance {id}");
    }
}

#[test]
fn service_functions_against_a_real_dev_agent() {
    let agent = DevAgent::start();
    agent.register("nginx-1", "172.17.0.3", 32768, &["web", "v1"]);
    agent.register("nginx-2", "172.17.0.4", 32769, &["web"]);
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("nginx.ctmpl"), dir.path().join("vhost/test.conf"));
    write(&src, TUTORIAL);
    let (src2, dest2) = (dir.path().join("catalog.ctmpl"), dir.path().join("catalog.txt"));
    write(
        &src2,
        "{{ range services }}{{ .Name }}{{ .Tags }} {{ end }}\
         |{{ range service \"v1.nginx\" }}{{ .ID }}{{ end }}\
         |{{ range $tag, $s := service \"nginx\" | byTag }}{{ $tag }}={{ len $s }} {{ end }}\
         |{{ datacenters }}\
         |{{ range nodes }}{{ .Node }}{{ end }}={{ with node }}{{ .Node.Node }}{{ end }}",
    );
    let daemon = Daemon::start(config_for(
        agent.addr,
        vec![spec(&src, &dest, None), spec(&src2, &dest2, None)],
    ));
    eventually("both instances", || {
        (read(&dest).as_deref()
            == Some("upstream http_backend {\n  \n  server 172.17.0.3:32768;\n  \n  server 172.17.0.4:32769;\n  \n}\n"))
        .then_some(())
    });
    // Each dependency converges on its own (the catalog fills in as anti-entropy syncs the agent);
    // `nodes` lists the dev agent's node, which `node` without a name finds through /v1/agent/self.
    eventually("the catalog template", || {
        let text = read(&dest2)?;
        let (head, nodes) = text.rsplit_once('|')?;
        let (listed, local) = nodes.split_once('=')?;
        (head == "consul[] nginx[v1 web] |nginx-1|v1=1 web=2 |[dc1]" && !local.is_empty() && listed == local)
            .then_some(())
    });

    // Maintenance makes nginx-1 critical: it leaves the (passing-only) upstream.
    agent.maintenance("nginx-1", true);
    eventually("nginx-1 to leave", || {
        (read(&dest).as_deref() == Some("upstream http_backend {\n  \n  server 172.17.0.4:32769;\n  \n}\n"))
            .then_some(())
    });
    agent.maintenance("nginx-1", false);
    eventually("nginx-1 to come back", || {
        read(&dest)
            .is_some_and(|s| s.contains("172.17.0.3:32768"))
            .then_some(())
    });
    drop(daemon);
}
