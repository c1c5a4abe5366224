//! The check kinds that need a peer, each against a real server started here: HTTPS (a TLS server with a
//! certificate from a test CA), gRPC health (a hyper HTTP/2 server speaking grpc.health.v1, plain and over
//! TLS), alias checks of the local node, and Docker exec checks (a container built here from Debian's
//! static busybox, since nothing can be pulled).

use super::*;
use bytes::Bytes;
use concord_core::agent::{CheckDef, CheckKind};
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(5);

/// A test CA and a server certificate it signed for `check.test` (only).
struct Pki {
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "concord test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["check.test".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca: ca.der().clone(),
        cert: cert.der().clone(),
        key: key.serialize_der(),
    }
}

fn acceptor(pki: &Pki, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An HTTPS server answering every request with `code`; returns its `127.0.0.1:port`.
async fn https_target(pki: &Pki, code: u16) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let acceptor = acceptor(pki, &[]);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let resp = format!("HTTP/1.1 {code} X\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure");
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

async fn https_check(
    url: String,
    skip: bool,
    name: &str,
    roots: Vec<CertificateDer<'static>>,
) -> (CheckStatus, String) {
    let tls = tls::client_config(skip, name, &[], &roots).unwrap();
    tokio::task::spawn_blocking(move || probe::http(&url, "GET", &BTreeMap::new(), "", T, Some(tls)))
        .await
        .unwrap()
}

#[tokio::test]
async fn https_checks_verify_skip_verify_and_use_the_server_name() {
    let pki = pki();
    let addr = https_target(&pki, 200).await;
    let url = format!("https://{addr}/health");
    let ca = vec![pki.ca.clone()];

    // Trusted CA, but the certificate is for check.test, not 127.0.0.1.
    let (status, out) = https_check(url.clone(), false, "", ca.clone()).await;
    assert_eq!(status, CheckStatus::Critical, "{out}");
    // TLSServerName makes the same certificate verify.
    let (status, out) = https_check(url.clone(), false, "check.test", ca.clone()).await;
    assert_eq!(status, CheckStatus::Passing, "{out}");
    assert!(out.contains("200") && out.contains("secure"), "{out}");
    // A wrong server name does not.
    let (status, _) = https_check(url.clone(), false, "other.test", ca).await;
    assert_eq!(status, CheckStatus::Critical);
    // Unknown CA: critical, unless TLSSkipVerify.
    let (status, _) = https_check(url.clone(), false, "check.test", vec![]).await;
    assert_eq!(status, CheckStatus::Critical);
    let (status, out) = https_check(url.clone(), true, "", vec![]).await;
    assert_eq!(status, CheckStatus::Passing, "{out}");

    // The agent's own path (system roots): a self-signed target passes only with TLSSkipVerify.
    let kind = |skip| CheckKind::Http {
        url: url.clone(),
        method: String::new(),
        header: BTreeMap::new(),
        body: String::new(),
        tls_skip_verify: skip,
        tls_server_name: String::new(),
    };
    assert_eq!(probe::run(&kind(true), T).await.0, CheckStatus::Passing);
    let (status, out) = probe::run(&kind(false), T).await;
    assert_eq!(status, CheckStatus::Critical);
    assert!(
        out.contains("UnknownIssuer") || out.contains("invalid peer certificate"),
        "{out}"
    );

    let warning = https_target(&pki, 429).await;
    let (status, _) = https_check(format!("https://{warning}/"), true, "", vec![]).await;
    assert_eq!(status, CheckStatus::Warning);
}

/// Serving statuses by service name; a name not in the map answers gRPC NOT_FOUND (5).
type Statuses = Arc<StdMutex<BTreeMap<String, u64>>>;

async fn grpc_answer(
    statuses: Statuses,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<
    hyper::Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>,
    std::convert::Infallible,
> {
    let path_ok = req.uri().path() == grpc::HEALTH_CHECK_PATH;
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let service = grpc::unframe(&body)
        .and_then(|m| match m {
            [] => Some(String::new()),
            [0x0a, len, rest @ ..] if rest.len() == usize::from(*len) => String::from_utf8(rest.to_vec()).ok(),
            _ => None,
        })
        .filter(|_| path_ok);
    let status = service.and_then(|s| statuses.lock().unwrap().get(&s).copied());
    let mut trailers = hyper::HeaderMap::new();
    let resp = hyper::Response::builder().header("content-type", "application/grpc");
    let body = match status {
        Some(status) => {
            trailers.insert("grpc-status", "0".parse().unwrap());
            Full::new(grpc::frame(&[0x08, status as u8]))
        }
        None => {
            trailers.insert("grpc-status", "5".parse().unwrap());
            trailers.insert("grpc-message", "unknown service".parse().unwrap());
            Full::new(Bytes::new())
        }
    };
    let body = body.with_trailers(async move { Some(Ok(trailers)) }).boxed();
    Ok(resp.body(body).unwrap())
}

/// A gRPC health server (HTTP/2, over TLS when `pki` is given); returns its `127.0.0.1:port`.
async fn grpc_target(statuses: Statuses, pki: Option<&Pki>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let acceptor = pki.map(|p| acceptor(p, &[b"h2"]));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (statuses, acceptor) = (statuses.clone(), acceptor.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| grpc_answer(statuses.clone(), req));
                let builder = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = match acceptor {
                    Some(a) => match a.accept(tcp).await {
                        Ok(tls) => {
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                                .await
                        }
                        Err(_) => return,
                    },
                    None => {
                        builder
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                            .await
                    }
                };
            });
        }
    });
    addr
}

#[tokio::test]
async fn grpc_checks_speak_the_health_protocol_in_plain_and_over_tls() {
    let statuses: Statuses = Arc::new(StdMutex::new(BTreeMap::from([
        (String::new(), 1),
        ("db".to_string(), 2),
    ])));
    let addr = grpc_target(statuses.clone(), None).await;
    assert_eq!(
        grpc::check(&addr, None, T).await,
        (CheckStatus::Passing, format!("gRPC check {addr}: success"))
    );
    let (status, out) = grpc::check(&format!("{addr}/db"), None, T).await;
    assert_eq!(status, CheckStatus::Critical);
    assert!(out.contains("NOT_SERVING"), "{out}");
    let (status, out) = grpc::check(&format!("{addr}/nope"), None, T).await;
    assert_eq!(status, CheckStatus::Critical);
    assert!(out.contains("code = 5") && out.contains("unknown service"), "{out}");
    statuses.lock().unwrap().insert("db".into(), 1);
    assert_eq!(
        grpc::check(&format!("{addr}/db"), None, T).await.0,
        CheckStatus::Passing
    );

    // Through the agent's probe, as a registered check runs.
    let kind = |target: String, use_tls, skip| CheckKind::Grpc {
        target,
        use_tls,
        tls_skip_verify: skip,
        tls_server_name: String::new(),
    };
    assert_eq!(
        probe::run(&kind(format!("{addr}/db"), false, false), T).await.0,
        CheckStatus::Passing
    );

    // Over TLS: verified against the test CA with the server name, or with TLSSkipVerify.
    let pki = pki();
    let tls_addr = grpc_target(statuses.clone(), Some(&pki)).await;
    let config = tls::client_config(false, "check.test", &[b"h2"], std::slice::from_ref(&pki.ca));
    let (status, out) = grpc::check(&format!("{tls_addr}/db"), Some(config), T).await;
    assert_eq!(status, CheckStatus::Passing, "{out}");
    assert_eq!(
        probe::run(&kind(tls_addr.clone(), true, true), T).await.0,
        CheckStatus::Passing
    );
    let (status, out) = probe::run(&kind(tls_addr.clone(), true, false), T).await;
    assert_eq!(status, CheckStatus::Critical, "unknown CA: {out}");
    // Plain HTTP/2 against the TLS port fails rather than hangs.
    assert_eq!(grpc::check(&tls_addr, None, T).await.0, CheckStatus::Critical);

    // Nobody listening.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    assert_eq!(grpc::check(&gone, None, T).await.0, CheckStatus::Critical);
}

#[test]
fn grpc_messages_encode_and_decode() {
    assert_eq!(grpc::encode_request(""), Vec::<u8>::new());
    assert_eq!(grpc::encode_request("db"), vec![0x0a, 2, b'd', b'b']);
    assert_eq!(grpc::decode_status(&[]), Some(0));
    assert_eq!(grpc::decode_status(&[0x08, 1]), Some(1));
    // Unknown fields are skipped; truncated input is refused.
    assert_eq!(grpc::decode_status(&[0x12, 1, b'x', 0x08, 2]), Some(2));
    assert_eq!(grpc::decode_status(&[0x12, 5, b'x']), None);
    assert_eq!(grpc::decode_status(&[0x08]), None);
    let framed = grpc::frame(&[0x08, 1]);
    assert_eq!(&framed[..], &[0, 0, 0, 0, 2, 0x08, 1]);
    assert_eq!(grpc::unframe(&framed), Some(&[0x08, 1][..]));
    assert_eq!(grpc::unframe(&framed[..6]), None);
}

fn node() -> NodeIdentity {
    NodeIdentity {
        name: "n1".into(),
        id: "11111111-2222-3333-4444-555555555555".into(),
        address: "127.0.0.1".into(),
        datacenter: "dc1".into(),
        ..NodeIdentity::default()
    }
}

fn check_def(id: &str, service_id: &str, kind: CheckKind) -> CheckDef {
    CheckDef {
        id: id.into(),
        name: id.into(),
        notes: String::new(),
        service_id: service_id.into(),
        kind,
        interval: Duration::from_millis(200),
        timeout: T,
        deregister_critical_service_after: None,
        success_before_passing: 0,
        failures_before_critical: 0,
        initial_status: CheckStatus::Critical,
    }
}

/// Wait for check `id` to have status `want` with a result (an output; the initial status has none).
async fn wait_status(agent: &LocalAgentHandle, id: &str, want: CheckStatus) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let check = agent.checks().into_iter().find(|c| c.check_id == id);
        if let Some(c) = &check {
            if c.status == want && !c.output.is_empty() {
                return c.output.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never became {want:?}: {check:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn local_alias_checks_mirror_a_service_and_the_node() {
    let agent = LocalAgentHandle::new(node(), None, false);
    let db = ServiceInstance {
        id: "db".into(),
        service: "db".into(),
        ..ServiceInstance::default()
    };
    let ttl = CheckKind::Ttl {
        ttl: Duration::from_secs(60),
    };
    agent
        .add_service(db, vec![check_def("db-ttl", "", ttl.clone())], true)
        .unwrap();
    let web = ServiceInstance {
        id: "web".into(),
        service: "web".into(),
        ..ServiceInstance::default()
    };
    agent.add_service(web, Vec::new(), true).unwrap();
    let alias = |target: &str| CheckKind::Alias {
        node: String::new(),
        service_id: target.into(),
    };
    agent
        .add_check(check_def("web-follows-db", "web", alias("db")))
        .unwrap();
    // The db check starts critical: so does its alias.
    let out = wait_status(&agent, "web-follows-db", CheckStatus::Critical).await;
    assert!(out.contains("db-ttl"), "{out}");

    agent.update_ttl("db-ttl", CheckStatus::Passing, "fine").unwrap();
    assert_eq!(
        wait_status(&agent, "web-follows-db", CheckStatus::Passing).await,
        "All checks passing."
    );
    // A node check counts for a service alias too.
    agent.add_check(check_def("mem", "", ttl)).unwrap();
    agent.update_ttl("mem", CheckStatus::Warning, "87% used").unwrap();
    wait_status(&agent, "web-follows-db", CheckStatus::Warning).await;
    agent.update_ttl("mem", CheckStatus::Passing, "").unwrap();
    wait_status(&agent, "web-follows-db", CheckStatus::Passing).await;

    // The aliased service going away is critical.
    agent.remove_service("db");
    let out = wait_status(&agent, "web-follows-db", CheckStatus::Critical).await;
    assert_eq!(out, "Service db could not be found on node n1");
}

/// `docker <args>`, its stdout; panics with docker's own words when it fails.
fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("this test needs the docker CLI and a running daemon (apt install docker.io): {e}"));
    assert!(
        out.status.success(),
        "docker {} failed (is the daemon running and reachable?): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running container with a static busybox as `/bin/sh`, built from Debian's `busybox-static` (no
/// registry needed); removed on drop.
struct BusyboxContainer(String);

impl BusyboxContainer {
    fn start() -> Self {
        let busybox = std::path::Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "this test needs a static busybox at /bin/busybox (apt install busybox-static)"
        );
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(busybox, bin.join("busybox")).unwrap();
        for applet in ["sh", "hostname", "head", "tr", "sleep", "true"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let tar = dir.path().join("rootfs.tar");
        let status = std::process::Command::new("tar")
            .args(["-C", &dir.path().join("rootfs").display().to_string(), "-cf"])
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success(), "tar failed");
        let image = "concord-test-busybox:latest";
        docker(&["import", &tar.display().to_string(), image]);
        let id = docker(&["run", "-d", "--rm", image, "/bin/busybox", "sleep", "600"]);
        BusyboxContainer(id)
    }
}

impl Drop for BusyboxContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

#[tokio::test]
async fn docker_checks_run_in_the_container_and_map_exit_codes() {
    let container = BusyboxContainer::start();
    let sh = |script: &str| vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()];
    let run = |args: Vec<String>| {
        let id = container.0.clone();
        async move { docker::check(&id, &args, T).await }
    };
    // The command really runs inside: the container's hostname is its short ID.
    let (status, out) = run(sh("echo in $(hostname)")).await;
    assert_eq!(status, CheckStatus::Passing, "{out}");
    assert!(out.starts_with(&format!("in {}", &container.0[..12])), "{out}");
    assert_eq!(
        run(sh("echo careful >&2; exit 1")).await,
        (CheckStatus::Warning, "careful\n".into())
    );
    assert_eq!(run(sh("exit 3")).await.0, CheckStatus::Critical);
    let (status, out) = run(sh("head -c 100000 /dev/zero | tr '\\0' x")).await;
    assert_eq!(
        (status, out.len()),
        (CheckStatus::Passing, concord_core::agent::MAX_OUTPUT)
    );
    let (status, out) = docker::check(&container.0, &sh("sleep 30"), Duration::from_millis(300)).await;
    assert_eq!(status, CheckStatus::Critical);
    assert!(out.starts_with("Timed out"), "{out}");
    let (status, out) = docker::check("no-such-container-here", &sh("true"), T).await;
    assert_eq!(status, CheckStatus::Critical);
    assert!(out.contains("no-such-container-here"), "{out}");

    // As a registered check of the agent.
    let agent = LocalAgentHandle::new(node(), None, true);
    let kind = CheckKind::Docker {
        container_id: container.0.clone(),
        shell: String::new(),
        args: sh("test -x /bin/busybox && echo ok"),
    };
    agent.add_check(check_def("in-container", "", kind)).unwrap();
    wait_status(&agent, "in-container", CheckStatus::Passing).await;
}
