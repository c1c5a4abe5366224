use super::backend::{self, BackendUri, Registered, Target};
use super::bridge::{self, Binding, Container, Service, Settings};
use super::daemon::plan;
use super::docker;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `docker inspect` of `docker run -d --name regprobe-web -p 127.0.0.1:8081:80 -p 127.0.0.1:5353:53/udp
/// -e SERVICE_TAGS=a,b -l SERVICE_80_NAME=www regprobe/nginx:1.25` on Docker 20.10 (trimmed to the fields
/// registrator reads).
const INSPECT: &str = r#"{"Id": "2d7241906a9aeeec198d675e7c1e137176c5d59c772dcfb16001ae39d4e8dbc4", "Name": "/regprobe-web",
 "State": {"Status": "running", "Running": true, "ExitCode": 0},
 "Config": {"Hostname": "2d7241906a9a", "ExposedPorts": {"53/udp": {}, "80/tcp": {}}, "Env": ["SERVICE_TAGS=a,b"],
            "Image": "regprobe/nginx:1.25", "Labels": {"SERVICE_80_NAME": "www"}},
 "HostConfig": {"NetworkMode": "default"},
 "NetworkSettings": {"Ports": {"53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
                               "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8081"}]},
                     "IPAddress": "172.17.0.2",
                     "Networks": {"bridge": {"IPAddress": "172.17.0.2", "Gateway": "172.17.0.1"}}}}"#;

fn settings() -> Settings {
    Settings {
        hostname: "docker1".into(),
        hostname_ip: Some("10.0.0.5".into()),
        ..Settings::default()
    }
}

/// A running `nginx` container named `web1` on the default bridge at 172.17.0.3.
fn nginx() -> Container {
    Container {
        id: "0123456789abcdef".into(),
        name: "web1".into(),
        image: "nginx".into(),
        network_mode: "default".into(),
        networks: BTreeMap::from([("bridge".into(), "172.17.0.3".into())]),
        exposed: vec!["80/tcp".into()],
        ports: BTreeMap::from([(
            "80/tcp".into(),
            vec![Binding {
                host_ip: "0.0.0.0".into(),
                host_port: "32768".into(),
            }],
        )]),
        running: true,
        ..Container::default()
    }
}

fn one(c: &Container, s: &Settings) -> Service {
    let mut all = bridge::services(c, s);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[test]
fn real_inspect_answer_maps_to_one_service_per_published_port() {
    let r: bollard::models::ContainerInspectResponse = serde_json::from_str(INSPECT).unwrap();
    let c = docker::container(r);
    assert_eq!(
        (c.name.as_str(), c.image.as_str()),
        ("regprobe-web", "regprobe/nginx:1.25")
    );
    assert_eq!(c.exposed, ["53/udp", "80/tcp"]);
    let services = bridge::services(&c, &settings());
    let summary: Vec<_> = services
        .iter()
        .map(|s| {
            (
                s.id.as_str(),
                s.name.as_str(),
                s.address.as_str(),
                s.port,
                s.tags.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "docker1:regprobe-web:53:udp",
                "nginx-53",
                "127.0.0.1",
                5353,
                vec!["a".to_string(), "b".into(), "udp".into()]
            ),
            // SERVICE_80_NAME is port-specific, so no -80 suffix.
            (
                "docker1:regprobe-web:80",
                "www",
                "127.0.0.1",
                8081,
                vec!["a".to_string(), "b".into()]
            ),
        ]
    );
    let internal = Settings {
        internal: true,
        ..settings()
    };
    let addrs: Vec<_> = bridge::services(&c, &internal)
        .iter()
        .map(|s| (s.address.clone(), s.port))
        .collect();
    assert_eq!(addrs, [("172.17.0.2".to_string(), 53), ("172.17.0.2".to_string(), 80)]);
}

#[test]
fn tutorial_container_gets_the_image_name_and_the_host_address() {
    let s = one(&nginx(), &settings());
    assert_eq!(
        (s.id.as_str(), s.name.as_str(), s.address.as_str(), s.port),
        ("docker1:web1:80", "nginx", "10.0.0.5", 32768),
        "a 0.0.0.0 binding takes the host name's address"
    );
    assert!(s.tags.is_empty() && s.meta.is_empty() && s.check.is_none());
    let forced = Settings {
        ip: Some("192.168.1.9".into()),
        ..settings()
    };
    assert_eq!(one(&nginx(), &forced).address, "192.168.1.9", "-ip wins");
    let unresolved = Settings {
        hostname_ip: None,
        ..settings()
    };
    assert_eq!(one(&nginx(), &unresolved).address, "0.0.0.0");
}

#[test]
fn image_names_lose_registry_path_tag_and_digest() {
    for (image, name) in [
        ("nginx", "nginx"),
        ("nginx:1.25", "nginx"),
        ("gliderlabs/foobar:1", "foobar"),
        ("registry.local:5000/team/app:v2", "app"),
        ("app@sha256:0123", "app"),
    ] {
        assert_eq!(bridge::image_name(image), name, "{image}");
    }
}

#[test]
fn unpublished_ports_count_only_with_internal() {
    let mut c = nginx();
    c.exposed.push("443/tcp".into());
    c.ports.insert("443/tcp".into(), vec![]);
    let names: Vec<_> = bridge::services(&c, &settings()).into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["nginx"],
        "only the published port; a single port gets no suffix"
    );
    let internal = Settings {
        internal: true,
        ..settings()
    };
    let got: Vec<_> = bridge::services(&c, &internal)
        .into_iter()
        .map(|s| (s.name, s.address, s.port))
        .collect();
    assert_eq!(
        got,
        [
            ("nginx-443".to_string(), "172.17.0.3".to_string(), 443),
            ("nginx-80".to_string(), "172.17.0.3".to_string(), 80)
        ]
    );
}

#[test]
fn host_network_exposed_ports_count_as_published_on_the_same_port() {
    let mut c = nginx();
    c.network_mode = "host".into();
    c.ports.clear();
    c.networks = BTreeMap::from([("host".into(), String::new())]);
    let s = one(&c, &settings());
    assert_eq!((s.address.as_str(), s.port), ("10.0.0.5", 80));
}

#[test]
fn a_container_without_ports_or_ignored_gives_nothing() {
    let mut c = nginx();
    c.exposed.clear();
    c.ports.clear();
    assert!(bridge::services(&c, &settings()).is_empty());
    let mut c = nginx();
    c.env.push("SERVICE_IGNORE=true".into());
    assert!(bridge::services(&c, &settings()).is_empty());
    let mut c = nginx();
    c.env.push("SERVICE_80_IGNORE=1".into());
    assert!(bridge::services(&c, &settings()).is_empty(), "per-port ignore");
}

#[test]
fn explicit_needs_a_service_name() {
    let explicit = Settings {
        explicit: true,
        ..settings()
    };
    assert!(bridge::services(&nginx(), &explicit).is_empty());
    let mut c = nginx();
    c.labels.insert("SERVICE_NAME".into(), "web".into());
    assert_eq!(one(&c, &explicit).name, "web");
}

#[test]
fn labels_override_env_and_port_keys_override_general_ones() {
    let mut c = nginx();
    c.env = vec![
        "PATH=/usr/bin".into(),
        "SERVICE_NAME=from-env".into(),
        "SERVICE_80_TAGS=port".into(),
        "SERVICE_TAGS=general".into(),
        "SERVICE_REGION=eu".into(),
        "SERVICE_8080_NAME=other-port".into(),
    ];
    c.labels = BTreeMap::from([
        ("SERVICE_NAME".into(), "from-label".into()),
        ("SERVICE_ID".into(), "custom-id".into()),
        ("SERVICE_Version".into(), "2".into()),
    ]);
    let s = one(&c, &settings());
    assert_eq!(s.name, "from-label");
    assert_eq!(s.tags, ["port"]);
    assert_eq!(s.id, "custom-id");
    assert_eq!(
        s.meta,
        BTreeMap::from([("region".into(), "eu".into()), ("version".into(), "2".into())]),
        "other SERVICE_* keys become Meta, lowercased; NAME/ID/TAGS do not"
    );
}

#[test]
fn tags_split_on_unescaped_commas_and_forced_tags_follow() {
    assert_eq!(bridge::split_tags("a,b\\,c,,d"), ["a", "b,c", "d"]);
    assert!(bridge::split_tags("").is_empty());
    let mut c = nginx();
    c.env.push("SERVICE_TAGS=web,prod".into());
    let s = Settings {
        tags: "dc1,docker".into(),
        ..settings()
    };
    assert_eq!(one(&c, &s).tags, ["web", "prod", "dc1", "docker"]);
}

#[test]
fn checks_from_service_check_keys() {
    let check = |env: &[&str]| {
        let mut c = nginx();
        c.env = env.iter().map(|e| e.to_string()).collect();
        one(&c, &settings())
    };
    let s = check(&[
        "SERVICE_CHECK_HTTP=/health",
        "SERVICE_CHECK_INTERVAL=5s",
        "SERVICE_CHECK_TIMEOUT=1s",
    ]);
    let c = s.check.clone().unwrap();
    assert_eq!(
        (c.http.as_str(), c.interval.as_str(), c.timeout.as_str()),
        ("http://10.0.0.5:32768/health", "5s", "1s")
    );
    assert!(s.meta.is_empty(), "check keys stay out of Meta: {:?}", s.meta);
    let c = check(&["SERVICE_CHECK_TCP=true"]).check.unwrap();
    assert_eq!((c.tcp.as_str(), c.interval.as_str()), ("10.0.0.5:32768", "10s"));
    let c = check(&["SERVICE_CHECK_TTL=30s"]).check.unwrap();
    assert_eq!((c.ttl.as_str(), c.interval.as_str()), ("30s", ""));
    let c = check(&["SERVICE_CHECK_SCRIPT=nc -z $SERVICE_IP $SERVICE_PORT"])
        .check
        .unwrap();
    assert_eq!(c.args, ["/bin/sh", "-c", "nc -z 10.0.0.5 32768"]);
    let c = check(&["SERVICE_CHECK_TCP=true", "SERVICE_CHECK_HTTP=/"])
        .check
        .unwrap();
    assert!(c.http.ends_with(":32768/") && c.tcp.is_empty(), "HTTP takes precedence");
    let body = backend::registration(&check(&[
        "SERVICE_CHECK_HTTP=/h",
        "SERVICE_CHECK_INITIAL_STATUS=passing",
    ]));
    assert_eq!(
        body,
        serde_json::json!({"ID": "docker1:web1:80", "Name": "nginx", "Tags": [], "Port": 32768,
            "Address": "10.0.0.5", "Meta": {},
            "Check": {"HTTP": "http://10.0.0.5:32768/h", "Interval": "10s", "Status": "passing"}})
    );
}

#[test]
fn address_overrides_label_and_user_networks() {
    let mut c = nginx();
    c.labels.insert("ip".into(), "10.9.8.7/24".into());
    let s = Settings {
        ip_label: Some("ip".into()),
        ..settings()
    };
    assert_eq!(one(&c, &s).address, "10.9.8.7");
    let mut c = nginx();
    c.network_mode = "backend".into();
    c.networks = BTreeMap::from([("backend".into(), "10.1.0.4".into())]);
    assert_eq!(one(&c, &settings()).address, "10.1.0.4", "a user network's address");
}

#[test]
fn invalid_meta_keys_are_dropped_not_fatal() {
    let mut c = nginx();
    c.env = vec!["SERVICE_A.B=x".into(), "SERVICE_OK=y".into()];
    assert_eq!(one(&c, &settings()).meta, BTreeMap::from([("ok".into(), "y".into())]));
}

#[test]
fn cleanup_recognises_only_this_hosts_registrator_ids() {
    assert!(bridge::is_ours("docker1:web1:80", "docker1"));
    assert!(bridge::is_ours("docker1:web.1_x-y:53:udp", "docker1"));
    assert!(!bridge::is_ours("docker2:web1:80", "docker1"));
    assert!(!bridge::is_ours("docker1:web1:http", "docker1"));
    assert!(!bridge::is_ours("docker1:-web:80", "docker1"));
    assert!(!bridge::is_ours("web", "docker1"));
    assert!(!bridge::is_ours("docker1:a:b:80", "docker1"));
}

fn registered(s: &Service) -> Registered {
    Registered {
        id: s.id.clone(),
        name: s.name.clone(),
        address: s.address.clone(),
        port: s.port,
        tags: s.tags.clone(),
        meta: s.meta.clone(),
    }
}

#[test]
fn reconciliation_writes_only_differences() {
    let web = one(&nginx(), &settings());
    let mut moved = web.clone();
    moved.port = 40000;
    // Identical: nothing to write (a resync wakes no watcher).
    let p = plan(
        std::slice::from_ref(&web),
        &[],
        Some(&[registered(&web)]),
        false,
        "docker1",
        false,
    );
    assert!(p.register.is_empty() && p.deregister.is_empty(), "{p:?}");
    // Unknown backend state: register everything.
    assert_eq!(
        plan(std::slice::from_ref(&web), &[], None, false, "docker1", false).register,
        std::slice::from_ref(&web)
    );
    // A changed port is re-registered.
    assert_eq!(
        plan(
            &[moved.clone()],
            &[],
            Some(&[registered(&web)]),
            false,
            "docker1",
            false
        )
        .register,
        [moved]
    );
    // A tracked service whose container went away is removed, cleanup or not, if the backend has it.
    let p = plan(
        &[],
        std::slice::from_ref(&web),
        Some(&[registered(&web)]),
        false,
        "docker1",
        false,
    );
    assert_eq!(p.deregister, [(web.id.clone(), web.name.clone())]);
    let p = plan(&[], std::slice::from_ref(&web), Some(&[]), false, "docker1", false);
    assert!(p.deregister.is_empty(), "nothing to remove");
}

#[test]
fn cleanup_removes_dangling_services_of_this_host_only() {
    let web = one(&nginx(), &settings());
    let dangling = Registered {
        id: "docker1:old:80".into(),
        name: "nginx".into(),
        ..Registered::default()
    };
    let foreign = Registered {
        id: "docker2:old:80".into(),
        ..dangling.clone()
    };
    let manual = Registered {
        id: "redis".into(),
        ..dangling.clone()
    };
    let held = [registered(&web), dangling.clone(), foreign.clone(), manual.clone()];
    let p = plan(std::slice::from_ref(&web), &[], Some(&held), true, "docker1", false);
    assert!(p.register.is_empty());
    assert_eq!(p.deregister, [("docker1:old:80".to_string(), "nginx".to_string())]);
    let p = plan(&[web], &[], Some(&held), false, "docker1", false);
    assert!(p.deregister.is_empty(), "no -cleanup, no removal of unknown services");
}

#[test]
fn backend_uris() {
    let tcp = |a: &str| Target::Tcp(a.into());
    assert_eq!(
        backend::parse_uri("consul://10.0.0.1:8500").unwrap(),
        BackendUri {
            target: tcp("10.0.0.1:8500"),
            kv_prefix: None
        }
    );
    assert_eq!(backend::parse_uri("consul://").unwrap().target, tcp("127.0.0.1:8500"));
    assert_eq!(
        backend::parse_uri("consul://consul").unwrap().target,
        tcp("consul:8500")
    );
    assert_eq!(
        backend::parse_uri("consul-unix:///tmp/consul.sock").unwrap().target,
        Target::Unix(PathBuf::from("/tmp/consul.sock"))
    );
    assert_eq!(
        backend::parse_uri("consulkv://127.0.0.1:8500/services/docker").unwrap(),
        BackendUri {
            target: tcp("127.0.0.1:8500"),
            kv_prefix: Some("services/docker".into())
        }
    );
    assert_eq!(
        backend::parse_uri("consulkv-unix:///tmp/c.sock:/svc").unwrap(),
        BackendUri {
            target: Target::Unix(PathBuf::from("/tmp/c.sock")),
            kv_prefix: Some("svc".into())
        }
    );
    for bad in [
        "consulkv://127.0.0.1:8500",
        "etcd://x:4001",
        "consul-tls://x:8501/path",
        "localhost:8500",
        "consul-unix://",
    ] {
        let e = backend::parse_uri(bad).unwrap_err();
        assert!(!e.contains('\n') && e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn consul_tls_uris_are_https() {
    let uri = backend::parse_uri("consul-tls://consul.example:8501").unwrap();
    assert_eq!(uri.target, Target::Tls("consul.example:8501".into()));
    assert_eq!(uri.target.base_url().as_deref(), Some("https://consul.example:8501"));
    assert_eq!(
        backend::parse_uri("consul-tls://consul")
            .unwrap()
            .target
            .base_url()
            .as_deref(),
        Some("https://consul:8500")
    );
    assert_eq!(
        backend::parse_uri("consul://consul:8500")
            .unwrap()
            .target
            .base_url()
            .as_deref(),
        Some("http://consul:8500")
    );
    let e = backend::parse_uri("consul-https://x:8501").unwrap_err();
    assert!(!e.contains('\n') && e.contains("consul-tls://"), "{e}");
}

#[test]
fn agent_and_kv_listings_parse() {
    let body = br#"{"docker1:web1:80": {"ID": "docker1:web1:80", "Service": "nginx", "Tags": ["a"],
        "Address": "10.0.0.5", "Port": 32768, "Meta": {"k": "v"}}, "consul": {"ID": "consul", "Service": "consul",
        "Tags": null, "Address": "", "Port": 8300, "Meta": null}}"#;
    let got = backend::parse_agent_services(body).unwrap();
    assert_eq!(got.len(), 2);
    let web = got.iter().find(|r| r.id == "docker1:web1:80").unwrap();
    assert_eq!(
        (web.name.as_str(), web.port, web.tags.as_slice()),
        ("nginx", 32768, &["a".to_string()][..])
    );
    assert_eq!(web.meta, BTreeMap::from([("k".into(), "v".into())]));
    // "10.0.0.5:32768" in base64.
    let kv = br#"[{"Key": "svc/nginx/docker1:web1:80", "Value": "MTAuMC4wLjU6MzI3Njg="}, {"Key": "svc/stray", "Value": null}]"#;
    let got = backend::parse_kv_entries("svc", kv).unwrap();
    assert_eq!(
        got,
        [Registered {
            id: "docker1:web1:80".into(),
            name: "nginx".into(),
            address: "10.0.0.5".into(),
            port: 32768,
            ..Registered::default()
        }]
    );
}

#[test]
fn docker_socket_from_docker_host_or_the_usual_places() {
    let none = |_: &str| false;
    assert_eq!(
        docker::socket(Some("unix:///run/user/docker.sock"), none).unwrap(),
        PathBuf::from("/run/user/docker.sock")
    );
    assert_eq!(
        docker::socket(None, none).unwrap(),
        PathBuf::from("/var/run/docker.sock")
    );
    assert_eq!(
        docker::socket(None, |p: &str| p == "/tmp/docker.sock").unwrap(),
        PathBuf::from("/tmp/docker.sock"),
        "where the tutorial mounts it"
    );
    assert!(docker::socket(Some("tcp://10.0.0.1:2375"), none).is_err());
}

fn parse_args(args: &[&str]) -> Result<super::daemon::Options, String> {
    let mut fs = super::flag_set();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    fs.parse(&args).map_err(|e| format!("{e:?}"))?;
    let env = |k: &str| (k == "CONSUL_HTTP_TOKEN").then(|| "tok".to_string());
    super::parse(&fs, &env, "docker1".into())
}

#[test]
fn consul_tls_reads_consul_cacert_at_start_up() {
    let mut fs = super::flag_set();
    fs.parse(&["consul-tls://127.0.0.1:8501".to_string()]).unwrap();
    let env = |k: &str| (k == "CONSUL_CACERT").then(|| "/nonexistent/ca.pem".to_string());
    let e = super::parse(&fs, &env, "docker1".into()).unwrap_err();
    assert!(
        e.starts_with("CONSUL_CACERT /nonexistent/ca.pem") && !e.contains('\n'),
        "{e}"
    );
    let o = super::parse(&fs, &|_: &str| None, "docker1".into()).unwrap();
    assert!(o.tls.is_some(), "system roots when CONSUL_CACERT is unset");
    assert!(parse_args(&["consul://127.0.0.1:8500"]).unwrap().tls.is_none());
}

#[test]
fn command_line_options() {
    let o = parse_args(&[
        "-ip=10.0.0.5",
        "-internal",
        "-explicit",
        "-tags",
        "a,b",
        "-resync",
        "30",
        "-cleanup",
        "-deregister",
        "on-success",
        "-retry-attempts",
        "-1",
        "-retry-interval",
        "500",
        "-useIpFromLabel",
        "ip",
        "consul://127.0.0.1:8500",
    ])
    .unwrap();
    assert_eq!(o.settings.ip.as_deref(), Some("10.0.0.5"));
    assert!(o.settings.internal && o.settings.explicit && o.cleanup && o.deregister_on_success);
    assert_eq!(o.settings.tags, "a,b");
    assert_eq!(o.settings.ip_label.as_deref(), Some("ip"));
    assert_eq!(o.resync, Some(std::time::Duration::from_secs(30)));
    assert_eq!((o.retry_attempts, o.retry_interval.as_millis()), (-1, 500));
    assert_eq!(o.token.as_deref(), Some("tok"));
    let d = parse_args(&["consul://"]).unwrap();
    assert!(!d.cleanup && !d.deregister_on_success && d.resync.is_none());
    assert_eq!((d.retry_attempts, d.retry_interval.as_millis()), (0, 2000));
}

#[test]
fn bad_command_lines_give_one_readable_line() {
    for (args, want) in [
        (&[][..], "Missing required argument for registry URI"),
        (&["consul://", "extra"][..], "Extra unknown arguments"),
        (&["-deregister", "never", "consul://"][..], "-deregister must be"),
        (&["-retry-attempts", "-2", "consul://"][..], "-retry-attempts must be"),
        (&["-retry-interval", "0", "consul://"][..], "-retry-interval must be"),
        (&["-ttl", "10", "consul://"][..], "-ttl and -ttl-refresh"),
        (
            &["-ttl", "5", "-ttl-refresh", "10", "consul://"][..],
            "-ttl must be greater",
        ),
        (&["-ip", "not-an-ip", "consul://"][..], "is not an IP address"),
        (&["etcd://127.0.0.1:2379"][..], "unrecognized adapter"),
    ] {
        let e = parse_args(args).unwrap_err();
        assert!(e.contains(want) && !e.contains('\n'), "{args:?}: {e}");
    }
}

#[test]
fn cli_reports_bad_flags_on_one_line() {
    let run = |args: &[&str]| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let env = |k: &str| (k == "DOCKER_HOST").then(|| "unix:///nonexistent/docker.sock".to_string());
        let mut io = crate::cli::Io {
            out: &mut out,
            err: &mut err,
            stdin: &mut std::io::empty(),
            env: &env,
        };
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let code = crate::cli::run_with(&args, &mut io);
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    };
    let (code, _, err) = run(&["registrator", "-bogus", "consul://"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("-bogus"), "{err}");
    let (code, _, err) = run(&["registrator", "-deregister=sometimes", "consul://"]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    let (code, _, err) = run(&["registrator", "consul://127.0.0.1:1"]);
    assert_eq!((code, err.trim()), (1, "no Docker engine socket at /nonexistent/docker.sock (set DOCKER_HOST=unix:///path/to/docker.sock, or mount the socket there)"));
    let (code, out, _) = run(&["registrator", "-help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("consul-unix://") && out.contains("-useIpFromLabel"),
        "{out}"
    );
}

/// The container of [`INSPECT`] with a `team` label, as the daemon builds it.
fn inspected() -> Container {
    let mut r: bollard::models::ContainerInspectResponse = serde_json::from_str(INSPECT).unwrap();
    if let Some(labels) = r.config.as_mut().and_then(|c| c.labels.as_mut()) {
        labels.insert("team".into(), "payments".into());
    }
    docker::container(r)
}

#[test]
fn force_tags_render_go_templates_over_the_container() {
    let c = inspected();
    assert_eq!(bridge::force_tags("{{.Config.Hostname}},x", &c), ["2d7241906a9a", "x"]);
    assert_eq!(
        bridge::force_tags(
            r#"team-{{index .Config.Labels "team"}},{{.NetworkSettings.IPAddress}}"#,
            &c
        ),
        ["team-payments", "172.17.0.2"]
    );
    assert_eq!(
        bridge::force_tags("{{.Name}},{{.Config.Image}},{{printf \"%.12s\" .ID}}", &c),
        ["/regprobe-web", "regprobe/nginx:1.25", "2d7241906a9a"]
    );
    // The rendered tags reach every service, after the container's own SERVICE_TAGS.
    let s = Settings {
        tags: "{{.Config.Hostname}},x".into(),
        ..settings()
    };
    let web = bridge::services(&c, &s).into_iter().find(|s| s.port == 8081).unwrap();
    assert_eq!(web.tags, ["a", "b", "2d7241906a9a", "x"]);
}

#[test]
fn force_tags_that_fail_to_parse_or_render_are_kept_as_written() {
    let c = inspected();
    // Unclosed action: a parse error.
    assert_eq!(
        bridge::force_tags("{{.Config.Hostname,ok", &c),
        ["{{.Config.Hostname", "ok"]
    );
    // A field of a string: a render error.
    assert_eq!(bridge::force_tags("{{.Name.Nope}}", &c), ["{{.Name.Nope}}"]);
    // Consul data has no place in a tag.
    assert_eq!(bridge::force_tags("{{service \"web\"}}", &c), ["{{service \"web\"}}"]);
    // Plain tags are untouched, even with no inspect data at all.
    assert_eq!(bridge::force_tags("a,b", &nginx()), ["a", "b"]);
}

/// DER as PEM (rcgen is built without its `pem` feature).
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A test CA (PEM) and a TLS acceptor for `127.0.0.1` with a certificate it signed; `client_ca`: require
/// client certificates signed by that CA.
fn tls_server(client_ca: bool) -> (String, tokio_rustls::TlsAcceptor, rcgen::Certificate, rcgen::KeyPair) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::sync::Arc;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "registrator test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_ca {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (
        pem("CERTIFICATE", ca.der()),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca,
        ca_key,
    )
}

/// Serves one HTTPS request with a leader answer; returns the request head it read.
async fn serve_leader(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
    let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
        let n = tls.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = "\"127.0.0.1:8300\"";
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(answer.as_bytes()).await.map_err(|e| e.to_string())?;
    tls.shutdown().await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[tokio::test]
async fn consul_tls_talks_https_trusting_consul_cacert() {
    let (ca_pem, acceptor, _, _) = tls_server(false);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = backend::parse_uri(&format!("consul-tls://{}", listener.local_addr().unwrap())).unwrap();
    let server = tokio::spawn(serve_leader(listener, acceptor.clone()));
    let files = backend::TlsFiles {
        ca_cert: Some(ca_file.clone()),
        ..Default::default()
    };
    let b = backend::Backend::new(&uri, Some("tok".into()), Some(backend::tls_config(&files).unwrap()));
    assert_eq!(b.ping().await.unwrap(), "127.0.0.1:8300");
    let head = server.await.unwrap().unwrap();
    assert!(head.starts_with("GET /v1/status/leader HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("x-consul-token: tok"), "{head}");

    // Without CONSUL_CACERT the test CA is unknown: the handshake fails, as one line.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = backend::parse_uri(&format!("consul-tls://{}", listener.local_addr().unwrap())).unwrap();
    let server = tokio::spawn(serve_leader(listener, acceptor));
    let b = backend::Backend::new(&uri, None, None);
    let e = b.ping().await.unwrap_err();
    assert!(
        e.contains("https://") && e.contains("TLS handshake") && !e.contains('\n'),
        "{e}"
    );
    assert!(server.await.unwrap().is_err(), "the server saw no request");

    // Bad files are one-line start-up errors.
    let missing = backend::TlsFiles {
        ca_cert: Some(dir.path().join("nope.pem")),
        ..Default::default()
    };
    let e = backend::tls_config(&missing).unwrap_err();
    assert!(e.starts_with("CONSUL_CACERT ") && !e.contains('\n'), "{e}");
    let half = backend::TlsFiles {
        ca_cert: Some(ca_file),
        client_cert: Some(dir.path().join("c.pem")),
        client_key: None,
    };
    assert!(backend::tls_config(&half).unwrap_err().contains("together"));
}

#[tokio::test]
async fn consul_tls_presents_the_client_certificate() {
    let (ca_pem, acceptor, ca, ca_key) = tls_server(true);
    let key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["registrator".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    std::fs::write(path("ca.pem"), ca_pem).unwrap();
    std::fs::write(path("client.pem"), pem("CERTIFICATE", client.der())).unwrap();
    std::fs::write(path("client.key"), pem("PRIVATE KEY", &key.serialize_der())).unwrap();
    let with_client = backend::TlsFiles {
        ca_cert: Some(path("ca.pem")),
        client_cert: Some(path("client.pem")),
        client_key: Some(path("client.key")),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = backend::parse_uri(&format!("consul-tls://{}", listener.local_addr().unwrap())).unwrap();
    let server = tokio::spawn(serve_leader(listener, acceptor.clone()));
    let b = backend::Backend::new(&uri, None, Some(backend::tls_config(&with_client).unwrap()));
    assert_eq!(b.ping().await.unwrap(), "127.0.0.1:8300");
    server.await.unwrap().unwrap();

    // The same server turns away a client without a certificate.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = backend::parse_uri(&format!("consul-tls://{}", listener.local_addr().unwrap())).unwrap();
    let server = tokio::spawn(serve_leader(listener, acceptor));
    let without = backend::TlsFiles {
        ca_cert: Some(path("ca.pem")),
        ..Default::default()
    };
    let b = backend::Backend::new(&uri, None, Some(backend::tls_config(&without).unwrap()));
    assert!(b.ping().await.is_err());
    assert!(
        server.await.unwrap().is_err(),
        "the server refused the anonymous client"
    );
}
