//! The tutorial end to end on the machine's real Docker engine: three `concord` servers, `concord
//! registrator` watching the engine, backend containers with published ports, and `concord template`
//! rendering the tutorial's nginx upstream and reloading a real nginx. Traffic through nginx must reach
//! every backend; stopping a backend takes it out of the upstream within seconds, starting one adds it,
//! and a registrator restarted with `-cleanup` removes the services of containers that stopped while it
//! was down.
//!
//! Nothing is pulled (there may be no registry): the backend image is imported from a rootfs holding only
//! the static busybox of Debian's `busybox-static` (`busybox httpd` serves a page naming the backend).
//! Every container and image is named with a prefix unique to this run and removed at the end, on failure
//! too. Needs `docker` (a reachable engine), `nginx` and `busybox-static`; without them the test fails
//! and says which is missing.

use concord_tests::{concord_bin, http_get, poll, Cluster};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Leader election among three fresh servers on a loaded machine.
const CLUSTER_UP: Duration = Duration::from_secs(30);
/// A change in Docker reaching nginx: event → registration → blocking query → render → reload. Measured
/// well under a second on an idle machine; the bound is for a loaded CI box.
const PROPAGATION: Duration = Duration::from_secs(15);
/// The tutorial's template, byte for byte.
const NGINX_CTMPL: &str =
    "upstream http_backend {\n  {{range service \"nginx\"}}\n  server {{.Address}}:{{.Port}};\n  {{end}}\n}\n";

/// Runs a command to completion; panics with its output when it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// Fails the test with what to install when a tool is missing.
fn require_tools() {
    let ok = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        ok(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"])),
        "this test needs a reachable Docker engine: `docker version` failed (install docker.io and start dockerd, \
         or set DOCKER_HOST)"
    );
    assert!(
        ok(Command::new("nginx").arg("-v")),
        "this test needs nginx on PATH (apt-get install nginx)"
    );
    assert!(
        Path::new("/bin/busybox").exists(),
        "this test needs a static busybox at /bin/busybox (apt-get install busybox-static)"
    );
}

/// Removes every container and the image this run created, however the test ends.
struct DockerGuard {
    prefix: String,
    image: String,
}

impl Drop for DockerGuard {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name=^{}", self.prefix)])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).output();
            }
        }
        let _ = Command::new("docker").args(["rmi", "-f", &self.image]).output();
    }
}

/// A child process, in its own process group, with its log file; stopped on drop (the whole group, so
/// nginx's workers go with their master), log printed if the test is failing.
struct Proc {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let file = File::create(&log).expect("log file");
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name,
            child: Some(child),
            log,
        }
    }

    /// SIGTERM to the group, then SIGKILL if it has not exited within a few seconds.
    fn kill(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let group = format!("-{}", c.id());
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Only while the leader is unreaped does the group id surely still name our processes.
        if matches!(c.try_wait(), Ok(None)) {
            signal("-KILL");
        }
        let _ = c.wait();
    }

    fn assert_running(&mut self) {
        let status = self.child.as_mut().map(|c| c.try_wait().expect("wait"));
        if let Some(Some(status)) = status {
            panic!(
                "{} exited ({status}):\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- {} -----\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Imports `<prefix>/nginx:test`: busybox and a web root, exposing port 80.
fn build_backend_image(dir: &Path, image: &str) {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let tarball = dir.join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg("."));
    run(Command::new("docker")
        .args(["import", "--change", "EXPOSE 80"])
        .arg(&tarball)
        .arg(image));
}

/// Starts backend `name` (`busybox httpd` answering `backend <name>`) publishing port 80 on a free
/// 127.0.0.1 port; returns that port.
fn start_backend(prefix: &str, image: &str, name: &str) -> u16 {
    let container = format!("{prefix}-{name}");
    let script = format!("echo 'backend {name}' > /www/index.html && exec /bin/busybox httpd -f -p 80 -h /www");
    docker(&[
        "run",
        "-d",
        "--init",
        "--name",
        &container,
        "-p",
        "127.0.0.1::80",
        image,
        "/bin/busybox",
        "sh",
        "-c",
        &script,
    ]);
    let port = docker(&["port", &container, "80/tcp"]);
    port.lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the published port of {container}: {port:?}"))
}

/// The `server` lines of the rendered upstream, as ports on 127.0.0.1 (sorted).
fn upstream_ports(path: &Path) -> Result<Vec<u16>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ports = Vec::new();
    for line in text.lines() {
        if let Some(addr) = line.trim().strip_prefix("server ").and_then(|l| l.strip_suffix(';')) {
            let port = addr
                .strip_prefix("127.0.0.1:")
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("unexpected upstream server {addr:?} in\n{text}"))?;
            ports.push(port);
        }
    }
    ports.sort_unstable();
    Ok(ports)
}

/// Polls until the upstream lists exactly `want`; returns when it was seen to.
fn wait_upstream(path: &Path, want: &[u16], what: &str) -> SystemTime {
    let mut want = want.to_vec();
    want.sort_unstable();
    poll(PROPAGATION, what, || {
        let got = upstream_ports(path)?;
        (got == want)
            .then(SystemTime::now)
            .ok_or(format!("upstream has {got:?}, want {want:?}"))
    })
}

/// When the engine says container `name` started or finished (`StartedAt`/`FinishedAt`), on the same
/// host clock as ours: the start of the propagation the test measures.
fn engine_time(name: &str, field: &str) -> SystemTime {
    let text = docker(&["inspect", "-f", &format!("{{{{.State.{field}}}}}"), name]);
    parse_rfc3339_utc(&text).unwrap_or_else(|| panic!("cannot parse {field} of {name}: {text:?}"))
}

/// `2026-11-26T15:33:01.123456789Z` → a `SystemTime`.
fn parse_rfc3339_utc(s: &str) -> Option<SystemTime> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

fn since(seen: SystemTime, event: SystemTime) -> String {
    match seen.duration_since(event) {
        Ok(d) => secs(d),
        Err(_) => "0.00 s (clock skew)".into(),
    }
}

/// Sends requests through nginx until every backend in `want` answered; fails if one not in `want` does.
fn reaches_exactly(nginx: &str, want: &[&str]) {
    let mut seen = std::collections::BTreeSet::new();
    poll(PROPAGATION, &format!("nginx to reach {want:?}"), || {
        let resp = http_get(nginx)?.expect_status(200)?;
        let body = resp.text();
        let name = body.trim().strip_prefix("backend ").unwrap_or(body.trim()).to_string();
        assert!(
            want.contains(&name.as_str()),
            "nginx routed to {name:?}, want only {want:?}"
        );
        seen.insert(name);
        (seen.len() == want.len())
            .then_some(())
            .ok_or(format!("reached {seen:?} so far"))
    });
}

fn free_port() -> u16 {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[test]
fn tutorial_registrator_template_nginx_on_real_docker() {
    require_tools();
    let dir = tempfile::Builder::new().prefix("concord-docker-").tempdir().unwrap();
    let t = dir.path();
    let prefix = format!("concord-e2e-{}", std::process::id());
    // The image's basename is `nginx`, so the services are named `nginx` as in the tutorial.
    let image = format!("{prefix}/nginx:test");
    let _cleanup = DockerGuard {
        prefix: prefix.clone(),
        image: image.clone(),
    };
    build_backend_image(t, &image);

    let mut cluster = Cluster::start(3);
    cluster.wait_leader(CLUSTER_UP);
    let registrator_args = |cleanup: bool| {
        let mut args = vec!["registrator".to_string()];
        if cleanup {
            args.push("-cleanup".into());
        }
        args.extend(["-retry-attempts", "-1", "-retry-interval", "200"].map(String::from));
        args.push(format!("consul://{}", cluster.servers[0].http_addr()));
        args
    };
    let mut registrator = Proc::spawn(
        "registrator",
        Command::new(concord_bin()).args(registrator_args(true)),
        t.join("registrator.log"),
    );

    let mut ports = std::collections::BTreeMap::new();
    for name in ["web1", "web2", "web3"] {
        ports.insert(name, start_backend(&prefix, &image, name));
    }

    // concord template against another server than the registrator's, with the tutorial's template.
    let upstream = t.join("upstream.conf");
    let nginx_port = free_port();
    let nginx_args = format!("-p {0} -c {0}/nginx.conf -e {0}/error.log", t.display());
    std::fs::write(t.join("nginx.ctmpl"), NGINX_CTMPL).unwrap();
    std::fs::write(
        t.join("nginx.conf"),
        format!(
            "worker_processes 1;\ndaemon off;\npid {0}/nginx.pid;\nerror_log {0}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {0}/tmp-body;\n  proxy_temp_path {0}/tmp-proxy;\n  \
             fastcgi_temp_path {0}/tmp-fastcgi;\n  uwsgi_temp_path {0}/tmp-uwsgi;\n  scgi_temp_path {0}/tmp-scgi;\n  \
             include {0}/upstream.conf;\n  \
             server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://http_backend; }} }}\n}}\n",
            t.display()
        ),
    )
    .unwrap();
    let template_spec = format!(
        "{}:{}:nginx {nginx_args} -s reload",
        t.join("nginx.ctmpl").display(),
        upstream.display()
    );
    let mut template = Proc::spawn(
        "template",
        Command::new(concord_bin()).args([
            "template",
            "-consul-addr",
            &cluster.servers[1].http_addr(),
            "-template",
            &template_spec,
        ]),
        t.join("template.log"),
    );
    let all: Vec<u16> = ports.values().copied().collect();
    wait_upstream(&upstream, &all, "the three backends in the rendered upstream");

    // nginx starts on the rendered upstream; the template's reloads from now on reach it.
    let mut nginx = Proc::spawn(
        "nginx",
        Command::new("nginx").args(nginx_args.split(' ')),
        t.join("nginx.log"),
    );
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/");
    poll(Duration::from_secs(10), "nginx to listen", || {
        nginx.assert_running();
        http_get(&nginx_url).map(drop)
    });
    reaches_exactly(&nginx_url, &["web1", "web2", "web3"]);

    // Stopping a backend takes it out of the upstream and out of nginx's rotation.
    // Stopping a backend takes it out of the upstream and out of nginx's rotation. `docker stop` runs in
    // the background so the upstream is watched while it works; the figure is from the container's exit.
    let web2 = format!("{prefix}-web2");
    let mut stop = Command::new("docker")
        .args(["stop", "-t", "5", &web2])
        .stdout(Stdio::null())
        .spawn()
        .expect("docker stop");
    let seen = wait_upstream(&upstream, &[ports["web1"], ports["web3"]], "web2 to leave the upstream");
    assert!(stop.wait().expect("docker stop").success(), "docker stop {web2} failed");
    reaches_exactly(&nginx_url, &["web1", "web3"]);
    eprintln!(
        "web2 left the rendered upstream {} after its container exited",
        since(seen, engine_time(&web2, "FinishedAt"))
    );

    // Starting one adds it.
    ports.insert("web4", start_backend(&prefix, &image, "web4"));
    let seen = wait_upstream(
        &upstream,
        &[ports["web1"], ports["web3"], ports["web4"]],
        "web4 to join the upstream",
    );
    eprintln!(
        "web4 joined the rendered upstream {} after its container started",
        since(seen, engine_time(&format!("{prefix}-web4"), "StartedAt"))
    );
    reaches_exactly(&nginx_url, &["web1", "web3", "web4"]);

    // The registrator goes down; web1 stops unobserved; a restarted registrator with -cleanup removes it.
    registrator.kill();
    docker(&["stop", "-t", "5", &format!("{prefix}-web1")]);
    let restart = Instant::now();
    let mut registrator = Proc::spawn(
        "registrator (restarted)",
        Command::new(concord_bin()).args(registrator_args(true)),
        t.join("registrator2.log"),
    );
    wait_upstream(
        &upstream,
        &[ports["web3"], ports["web4"]],
        "the restarted registrator to clean up web1",
    );
    eprintln!(
        "restarted registrator removed the dangling web1 after {}",
        secs(restart.elapsed())
    );
    reaches_exactly(&nginx_url, &["web3", "web4"]);

    registrator.assert_running();
    template.assert_running();
    nginx.assert_running();
}

#[test]
fn engine_timestamps_parse() {
    let at = |s| parse_rfc3339_utc(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap());
    assert_eq!(at("1970-01-01T00:00:01.5Z"), Some(Duration::from_millis(1500)));
    assert_eq!(at("2000-02-29T00:00:00Z"), Some(Duration::from_secs(951_782_400)));
    assert_eq!(
        at("2026-11-26T15:33:01.123456789Z"),
        Some(Duration::new(1_795_707_181, 123_456_789))
    );
    assert_eq!(
        at("0001-01-01T00:00:00Z"),
        None,
        "Docker's zero time is before the epoch"
    );
}
