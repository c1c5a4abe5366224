use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::*;

fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

fn parse(line: &str) -> Result<AgentConfig, ConfigError> {
    parse_agent_args(&args(line))
}

fn ok(line: &str) -> AgentConfig {
    parse(line).unwrap_or_else(|e| panic!("{line:?} should parse: {e}"))
}

fn err(line: &str) -> ConfigError {
    match parse(line) {
        Ok(c) => panic!("{line:?} should fail, got {c:?}"),
        Err(e) => e,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn defaults_are_consuls() {
    let c = ok("-data-dir /tmp/d");
    assert!(!c.server && !c.bootstrap && !c.dev && !c.ui);
    assert_eq!(c.datacenter, "dc1");
    assert_eq!(c.bind_addr, ip("0.0.0.0"));
    assert_eq!(c.client_addr, vec![ip("127.0.0.1")]);
    assert_eq!(
        c.ports,
        Ports {
            http: 8500,
            dns: 8600,
            server: 8300,
            serf_lan: 8301,
            serf_wan: 8302,
            grpc: -1,
            https: -1
        }
    );
    assert_eq!(c.domain, "consul.");
    assert_eq!(c.log_level, "info");
    assert_eq!(c.default_query_time, Duration::from_secs(300));
    assert_eq!(c.max_query_time, Duration::from_secs(600));
    assert_eq!(c.retry_interval, Duration::from_secs(30));
    assert_eq!(c.raft_multiplier, 1);
    assert_eq!(
        (
            c.raft_snapshot_threshold,
            c.raft_snapshot_interval,
            c.raft_trailing_logs
        ),
        (16384, Duration::from_secs(30), 10240)
    );
    assert_eq!(
        (
            c.kv_max_value_size,
            c.txn_max_req_len,
            c.http_max_conns_per_client,
            c.http_max_body_size
        ),
        (524288, 524288, 200, 1 << 20)
    );
    assert_eq!(c.raft_protocol, 3);
    assert!(c.disable_host_node_id);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string());
    assert_eq!(c.node_name, host.unwrap_or_else(|_| "localhost".into()));
    // A client leaves on terminate; a server does not.
    assert!(c.leave_on_terminate && !c.skip_leave_on_interrupt);
    let s = ok("-server -data-dir /tmp/d");
    assert!(!s.leave_on_terminate && s.skip_leave_on_interrupt);
}

#[test]
fn value_flag_forms_are_equivalent() {
    for line in [
        "-node n1 -data-dir /d",
        "-node=n1 -data-dir=/d",
        "--node n1 --data-dir /d",
        "--node=n1 -data-dir /d",
    ] {
        let c = ok(line);
        assert_eq!(c.node_name, "n1", "{line}");
        assert_eq!(c.data_dir.as_deref(), Some(Path::new("/d")), "{line}");
    }
    let c = ok("-data-dir /d -http-port=9500 --dns-port -1 -server-port 1 -serf-lan-port=2 -serf-wan-port 3");
    assert_eq!(
        (
            c.ports.http,
            c.ports.dns,
            c.ports.server,
            c.ports.serf_lan,
            c.ports.serf_wan
        ),
        (9500, -1, 1, 2, 3)
    );
}

#[test]
fn bool_flag_does_not_consume_next_argument() {
    let c = ok("-server -data-dir /d -ui -bootstrap");
    assert!(c.server && c.ui && c.bootstrap);
    assert_eq!(c.data_dir.as_deref(), Some(Path::new("/d")));
    // `-ui false` is `-ui` followed by a positional argument, as in Go.
    assert!(matches!(err("-data-dir /d -ui false"), ConfigError::UnexpectedArgument(a) if a == "false"));
    assert!(!ok("-data-dir /d -ui=false").ui);
    assert!(ok("-data-dir /d --ui=true").ui);
    assert!(matches!(err("-data-dir /d -ui=maybe"), ConfigError::BadFlagValue { flag, .. } if flag == "ui"));
}

#[test]
fn repeatable_flags_accumulate() {
    let c = ok(
        "-data-dir /d -retry-join a -join b --retry-join=c -recursor 8.8.8.8 -recursor 1.1.1.1:53 \
                -node-meta rack:r1 -node-meta zone:z:1 -node-meta bare",
    );
    assert_eq!(c.retry_join, ["a", "b", "c"]);
    assert_eq!(c.recursors, ["8.8.8.8", "1.1.1.1:53"]);
    let meta: Vec<_> = c.node_meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(meta, [("bare", ""), ("rack", "r1"), ("zone", "z:1")]);
    // A scalar flag given twice: the last one wins, as in Go.
    assert_eq!(ok("-data-dir /d -node a -node b").node_name, "b");
}

#[test]
fn every_other_flag_parses() {
    let key = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
    let c = ok(&format!(
        "-data-dir /d -server -bootstrap-expect 3 -advertise 10.1.1.1 -node-id 0b6c5b1e-0d4a-4a6e-9b8c-2f1d3c4e5a6b \
         -datacenter DC2 -retry-interval 5s -config-format json -log-level WARN -enable-script-checks \
         -enable-local-script-checks -domain Example -alt-domain alt.test. -encrypt {key} -rejoin -pid-file /p \
         -raft-protocol 3 -default-query-time 1m -max-query-time 2m -disable-host-node-id=false -client 127.0.0.1 \
         -bind ::1 -grpc-port 8502 -https-port 8501"
    ));
    assert_eq!(c.bootstrap_expect, Some(3));
    assert_eq!(c.advertise_addr, Some(ip("10.1.1.1")));
    assert_eq!(c.node_id.as_deref(), Some("0b6c5b1e-0d4a-4a6e-9b8c-2f1d3c4e5a6b"));
    assert_eq!(c.datacenter, "dc2");
    assert_eq!(c.retry_interval, Duration::from_secs(5));
    assert_eq!(c.log_level, "warn");
    assert!(c.enable_script_checks && c.enable_local_script_checks && c.rejoin_after_leave);
    assert_eq!(
        (c.domain.as_str(), c.alt_domain.as_deref()),
        ("example.", Some("alt.test."))
    );
    assert_eq!(c.encrypt.as_deref(), Some(key));
    assert_eq!(c.pid_file.as_deref(), Some(Path::new("/p")));
    assert_eq!(
        (c.default_query_time, c.max_query_time),
        (Duration::from_secs(60), Duration::from_secs(120))
    );
    assert!(!c.disable_host_node_id);
    assert_eq!(c.bind_addr, ip("::1"));
    assert_eq!((c.ports.grpc, c.ports.https), (8502, 8501));
    assert!(matches!(err("-data-dir /d -client"), ConfigError::MissingValue(f) if f == "client"));
}

#[test]
fn client_is_space_separated() {
    let c = parse_agent_args(&[
        "-data-dir".into(),
        "/d".into(),
        "-client".into(),
        "127.0.0.1 ::1".into(),
    ])
    .unwrap();
    assert_eq!(c.client_addr, vec![ip("127.0.0.1"), ip("::1")]);
}

#[test]
fn flag_errors_name_the_flag() {
    let e = err("-data-dir /d -bogus 1");
    assert!(matches!(&e, ConfigError::UnknownFlag(f) if f == "bogus"));
    assert!(e.to_string().contains("-bogus"), "{e}");
    assert!(matches!(err("--nope"), ConfigError::UnknownFlag(f) if f == "nope"));
    assert!(matches!(err("-data-dir"), ConfigError::MissingValue(f) if f == "data-dir"));
    assert!(matches!(err("---x"), ConfigError::BadFlagSyntax(_)));
    assert!(matches!(err("-=x"), ConfigError::BadFlagSyntax(_)));
    assert!(matches!(err("-data-dir /d extra"), ConfigError::UnexpectedArgument(a) if a == "extra"));
    assert!(matches!(err("-data-dir /d -- -server"), ConfigError::UnexpectedArgument(a) if a == "-server"));
    assert!(ok("-data-dir /d --").data_dir.is_some());
    for (line, flag) in [
        ("-data-dir /d -http-port x", "http-port"),
        ("-data-dir /d -bind nowhere", "bind"),
        ("-data-dir /d -client 1.2.3.4 -client bad", "client"),
        ("-data-dir /d -retry-interval 5", "retry-interval"),
        ("-data-dir /d -bootstrap-expect three", "bootstrap-expect"),
    ] {
        assert!(
            matches!(err(line), ConfigError::BadFlagValue { flag: f, .. } if f == flag),
            "{line}"
        );
    }
    assert!(matches!(
        err("-data-dir /d -config-format yaml"),
        ConfigError::BadConfigFormat(_)
    ));
    assert!(matches!(err("-h"), ConfigError::Help(u) if u.contains("-retry-join <value>")));
}

#[test]
fn seed_tutorial_command_lines_parse() {
    let c = ok("-server -bootstrap -ui -data-dir /tmp/consul -bind 10.0.0.1 -client 0.0.0.0 -node consul-server01");
    assert!(c.server && c.bootstrap && c.ui);
    assert_eq!(c.data_dir.as_deref(), Some(Path::new("/tmp/consul")));
    assert_eq!(
        (c.bind_addr, c.client_addr.clone()),
        (ip("10.0.0.1"), vec![ip("0.0.0.0")])
    );
    assert_eq!(c.node_name, "consul-server01");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let c = ok(
        "-server -data-dir /tmp/c2 -node consul-server02 -bind 10.0.0.2 -join 10.0.0.1 -datacenter dc1 \
                -enable-script-checks",
    );
    assert!(c.server && !c.bootstrap && c.enable_script_checks);
    assert_eq!(c.retry_join, ["10.0.0.1"]);
    assert_eq!(
        (c.node_name.as_str(), c.datacenter.as_str()),
        ("consul-server02", "dc1")
    );
}

#[test]
fn dev_mode() {
    let c = ok("-dev");
    assert!(c.dev && c.server && c.bootstrap && c.ui);
    assert_eq!(c.data_dir, None);
    assert_eq!(
        (c.bind_addr, c.client_addr.clone()),
        (ip("127.0.0.1"), vec![ip("127.0.0.1")])
    );
    assert_eq!(c.log_level, "debug");
    // Flags still override the dev overlay.
    let c = ok("-dev -client 0.0.0.0 -log-level info");
    assert_eq!((c.client_addr[0], c.log_level.as_str()), (ip("0.0.0.0"), "info"));
}

const JSON: &str = r#"{
  "server": true,
  "bootstrap_expect": 3,
  "data_dir": "/var/lib/consul",
  "bind_addr": "10.0.0.5",
  "client_addr": "127.0.0.1 10.0.0.5",
  "node_name": "n5",
  "datacenter": "east",
  "retry_join": ["10.0.0.1", "10.0.0.2"],
  "start_join": ["10.0.0.3"],
  "retry_interval": "15s",
  "ports": {"http": 18500, "dns": 18600, "grpc": 8502},
  "log_level": "debug",
  "ui_config": {"enabled": true},
  "enable_script_checks": true,
  "domain": "corp",
  "recursors": ["8.8.8.8"],
  "performance": {"raft_multiplier": 5},
  "limits": {"http_max_conns_per_client": 500, "kv_max_value_size": 1024, "txn_max_req_len": 2048, "http_max_body_size": 4096},
  "default_query_time": "10s",
  "max_query_time": "20s",
  "raft_snapshot_interval": "5s",
  "raft_snapshot_threshold": 100,
  "node_meta": {"rack": "r1"},
  "dns_config": {"node_ttl": "10s", "service_ttl": {"*": "5s"}},
  "service": {"name": "web", "port": 80},
  "checks": [{"id": "c1", "ttl": "30s"}],
  "leave_on_terminate": true,
  "acl": {"enabled": false}
}"#;

const HCL: &str = r#"
server = true
bootstrap_expect = 3
data_dir = "/var/lib/consul"
bind_addr = "10.0.0.5"
client_addr = "127.0.0.1 10.0.0.5"
node_name = "n5"
datacenter = "east"
retry_join = ["10.0.0.1", "10.0.0.2"]
start_join = ["10.0.0.3"]
retry_interval = "15s"
ports {
  http = 18500
  dns = 18600
  grpc = 8502
}
log_level = "debug"
ui_config {
  enabled = true
}
enable_script_checks = true
domain = "corp"
recursors = ["8.8.8.8"]
performance {
  raft_multiplier = 5
}
limits {
  http_max_conns_per_client = 500
  kv_max_value_size = 1024
  txn_max_req_len = 2048
  http_max_body_size = 4096
}
default_query_time = "10s"
max_query_time = "20s"
raft_snapshot_interval = "5s"
raft_snapshot_threshold = 100
node_meta {
  rack = "r1"
}
dns_config {
  node_ttl = "10s"
  service_ttl = { "*" = "5s" }
}
service {
  name = "web"
  port = 80
}
checks = [{ id = "c1", ttl = "30s" }]
leave_on_terminate = true
acl {
  enabled = false
}
"#;

#[test]
fn json_and_hcl_files_give_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    let json = write(dir.path(), "agent.json", JSON);
    let hcl = write(dir.path(), "agent.hcl", HCL);
    let mut from_json = ok(&format!("-config-file {json}"));
    let mut from_hcl = ok(&format!("-config-file={hcl}"));
    assert_eq!(from_json.config_files, [Path::new(&json)]);
    from_json.config_files.clear();
    from_hcl.config_files.clear();
    assert_eq!(from_json, from_hcl);

    let c = from_json;
    assert!(c.server && c.ui && c.enable_script_checks && c.leave_on_terminate);
    assert_eq!(c.bootstrap_expect, Some(3));
    assert_eq!(c.client_addr, vec![ip("127.0.0.1"), ip("10.0.0.5")]);
    assert_eq!(c.retry_join, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    assert_eq!(
        (c.ports.http, c.ports.dns, c.ports.grpc, c.ports.server),
        (18500, 18600, 8502, 8300)
    );
    assert_eq!((c.domain.as_str(), c.raft_multiplier), ("corp.", 5));
    assert_eq!(
        (c.raft_snapshot_interval, c.raft_snapshot_threshold),
        (Duration::from_secs(5), 100)
    );
    assert_eq!(
        (
            c.http_max_conns_per_client,
            c.kv_max_value_size,
            c.txn_max_req_len,
            c.http_max_body_size
        ),
        (500, 1024, 2048, 4096)
    );
    assert_eq!(
        c.dns_config,
        Some(json!({"node_ttl": "10s", "service_ttl": {"*": "5s"}}))
    );
    assert_eq!(c.services, vec![json!({"name": "web", "port": 80})]);
    assert_eq!(c.checks, vec![json!({"id": "c1", "ttl": "30s"})]);
    assert_eq!(c.acl, Some(json!({"enabled": false})));
}

#[test]
fn config_dir_is_alphabetical_lists_append_scalars_replace() {
    let dir = tempfile::tempdir().unwrap();
    // Written out of order on purpose; read as a.json, b.hcl, c.json.
    write(
        dir.path(),
        "c.json",
        r#"{"node_name": "from-c", "retry_join": ["c"], "node_meta": {"z": "3"}}"#,
    );
    write(
        dir.path(),
        "a.json",
        r#"{"node_name": "from-a", "retry_join": ["a"], "data_dir": "/a",
        "node_meta": {"x": "1"}, "ports": {"http": 1}, "service": {"name": "s1"}}"#,
    );
    write(
        dir.path(),
        "b.hcl",
        "retry_join = [\"b\"]\nnode_meta { x = \"2\" }\nports { dns = 2 }\nservice { name = \"s2\" }\n",
    );
    write(dir.path(), "ignored.yaml", "not: read");
    std::fs::create_dir(dir.path().join("sub.json")).unwrap();
    let c = ok(&format!("-config-dir {}", dir.path().display()));
    let names: Vec<_> = c
        .config_files
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(names, ["a.json", "b.hcl", "c.json"]);
    assert_eq!(c.node_name, "from-c");
    assert_eq!(c.retry_join, ["a", "b", "c"]);
    let meta: Vec<_> = c.node_meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(meta, [("x", "2"), ("z", "3")]);
    assert_eq!((c.ports.http, c.ports.dns, c.ports.server), (1, 2, 8300));
    assert_eq!(c.services, vec![json!({"name": "s1"}), json!({"name": "s2"})]);
}

#[test]
fn flags_override_files_and_files_merge_in_command_line_order() {
    let dir = tempfile::tempdir().unwrap();
    let one = write(
        dir.path(),
        "z1.json",
        r#"{"node_name": "one", "data_dir": "/one", "retry_join": ["f1"], "ui": true}"#,
    );
    let two = write(dir.path(), "a2.hcl", "node_name = \"two\"\nretry_join = [\"f2\"]\n");
    let c = ok(&format!("-config-file {one} -config-file {two} -retry-join flag"));
    assert_eq!(c.node_name, "two");
    assert_eq!(c.retry_join, ["f1", "f2", "flag"]);
    let c = ok(&format!("-node cli -ui=false -config-file {one} -data-dir /cli"));
    assert_eq!((c.node_name.as_str(), c.ui), ("cli", false));
    assert_eq!(c.data_dir.as_deref(), Some(Path::new("/cli")));
    // -config-format reads a file regardless of its extension.
    let conf = write(dir.path(), "agent.conf", "data_dir = \"/conf\"\n");
    assert_eq!(
        ok(&format!("-config-format hcl -config-file {conf}"))
            .data_dir
            .as_deref(),
        Some(Path::new("/conf"))
    );
    assert!(matches!(
        err(&format!("-config-file {conf}")),
        ConfigError::UnknownFormat { .. }
    ));
}

#[test]
fn file_errors_name_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: &str, want: &[&str]| {
        let path = write(dir.path(), name, text);
        let e = err(&format!("-data-dir /d -config-file {path}"));
        let line = e.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
        for w in want.iter().chain([&name]) {
            assert!(line.contains(w), "{line:?} should mention {w:?}");
        }
        e
    };
    let e = check("unknown.json", r#"{"data_dri": "/x"}"#, &["data_dri"]);
    assert!(matches!(e, ConfigError::UnknownKey { .. }));
    let e = check("nested.hcl", "ports {\n  htp = 1\n}\n", &["ports.htp"]);
    assert!(matches!(e, ConfigError::UnknownKey { .. }));
    let e = check("type.json", r#"{"server": "yes"}"#, &["server", "true or false"]);
    assert!(matches!(e, ConfigError::BadType { .. }));
    let e = check("port.json", r#"{"ports": {"http": 70000}}"#, &["ports.http", "70000"]);
    assert!(matches!(e, ConfigError::BadValue { .. }));
    check("dur.hcl", "retry_interval = 30\n", &["retry_interval", "duration"]);
    check("dur2.json", r#"{"max_query_time": "ten"}"#, &["max_query_time"]);
    check("ip.json", r#"{"bind_addr": "{{ GetPrivateIP }}"}"#, &["bind_addr"]);
    check(
        "meta.json",
        r#"{"node_meta": {"consul-x": "1"}}"#,
        &["node_meta.consul-x", "reserved"],
    );
    check(
        "mult.json",
        r#"{"performance": {"raft_multiplier": 11}}"#,
        &["performance.raft_multiplier"],
    );
    check("dc.json", r#"{"datacenter": "dc 1"}"#, &["datacenter"]);
    check("level.json", r#"{"log_level": "loud"}"#, &["log_level"]);
    check("proto.json", r#"{"raft_protocol": 2}"#, &["raft_protocol"]);
    let e = check("broken.json", "{\"server\": ", &[]);
    assert!(matches!(e, ConfigError::Parse { format: "JSON", .. }));
    let e = check("broken.hcl", "server = = true\n", &[]);
    assert!(matches!(e, ConfigError::Parse { format: "HCL", .. }));
    let e = check("list.json", "[1]", &["top level"]);
    assert!(matches!(e, ConfigError::Parse { .. }));
    let missing = dir.path().join("missing.json");
    let e = err(&format!("-config-file {}", missing.display()));
    assert!(
        matches!(e, ConfigError::Read { .. }) && e.to_string().contains("missing.json"),
        "{e}"
    );
}

/// Consul's internal `consul { coordinate { … } }` block (`TestAgent_sendCoordinate` sets it) tunes the
/// leader's coordinate batching, in HCL (nested blocks) and JSON alike.
#[test]
fn consul_coordinate_block_sets_the_batching() {
    let c = ok("-data-dir /d");
    assert_eq!(
        (
            c.coordinate_update_period,
            c.coordinate_update_batch_size,
            c.coordinate_update_max_batches
        ),
        (Duration::from_secs(5), 128, 5),
        "Consul's defaults"
    );
    let dir = tempfile::tempdir().unwrap();
    let hcl = write(
        dir.path(),
        "c.hcl",
        "consul {\n  coordinate {\n    update_period = \"100ms\"\n    update_batch_size = 10\n    update_max_batches = 1\n  }\n  raft {\n    election_timeout = \"1s\"\n  }\n}\n",
    );
    let c = ok(&format!("-data-dir /d -config-file {hcl}"));
    assert_eq!(
        (
            c.coordinate_update_period,
            c.coordinate_update_batch_size,
            c.coordinate_update_max_batches
        ),
        (Duration::from_millis(100), 10, 1)
    );
    assert_eq!(
        c.warnings.len(),
        1,
        "consul.raft is accepted and ignored: {:?}",
        c.warnings
    );
    let json = write(
        dir.path(),
        "c.json",
        r#"{"consul": {"coordinate": {"update_batch_size": 64}}}"#,
    );
    let c = ok(&format!("-data-dir /d -config-file {json}"));
    assert_eq!(
        (c.coordinate_update_batch_size, c.coordinate_update_max_batches),
        (64, 5)
    );
    for (text, key) in [
        (
            r#"{"consul": {"coordinate": {"update_period": "0s"}}}"#,
            "consul.coordinate.update_period",
        ),
        (
            r#"{"consul": {"coordinate": {"update_batch_size": 0}}}"#,
            "consul.coordinate.update_batch_size",
        ),
        (
            r#"{"consul": {"coordinate": {"update_size": 1}}}"#,
            "consul.coordinate.update_size",
        ),
        (r#"{"consul": {"coordinates": {}}}"#, "consul.coordinates"),
    ] {
        let path = write(dir.path(), "bad.json", text);
        let e = err(&format!("-data-dir /d -config-file {path}")).to_string();
        assert!(e.contains(key), "{e:?} should name {key}");
    }
}

/// Consul's top-level `sync_coordinate_rate_target` and `sync_coordinate_interval_min` (the agents'
/// coordinate sending interval, `lib.RateScaledInterval`).
#[test]
fn sync_coordinate_keys_set_the_sending_interval() {
    let c = ok("-data-dir /d");
    assert_eq!(
        (c.sync_coordinate_rate_target, c.sync_coordinate_interval_min),
        (64.0, Duration::from_secs(15)),
        "Consul's defaults"
    );
    let dir = tempfile::tempdir().unwrap();
    let hcl = write(
        dir.path(),
        "c.hcl",
        "sync_coordinate_rate_target = 0.5\nsync_coordinate_interval_min = \"2s\"\n",
    );
    let c = ok(&format!("-data-dir /d -config-file {hcl}"));
    assert_eq!(
        (c.sync_coordinate_rate_target, c.sync_coordinate_interval_min),
        (0.5, Duration::from_secs(2))
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let json = write(dir.path(), "c.json", r#"{"sync_coordinate_rate_target": 100}"#);
    let c = ok(&format!("-data-dir /d -config-file {json}"));
    assert_eq!(c.sync_coordinate_rate_target, 100.0);
    for (text, key) in [
        (
            r#"{"sync_coordinate_rate_target": "fast"}"#,
            "sync_coordinate_rate_target",
        ),
        (
            r#"{"sync_coordinate_interval_min": "0s"}"#,
            "sync_coordinate_interval_min",
        ),
        (
            r#"{"sync_coordinate_interval_min": 15}"#,
            "sync_coordinate_interval_min",
        ),
    ] {
        let path = write(dir.path(), "bad.json", text);
        let e = err(&format!("-data-dir /d -config-file {path}")).to_string();
        assert!(e.contains(key), "{e:?} should name {key}");
    }
}

#[test]
fn consul_keys_concord_ignores_are_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.json",
        r#"{"telemetry": {"statsd_address": "x"}, "limits": {"rpc_rate": 5}}"#,
    );
    let c = ok(&format!("-data-dir /d -config-file {path}"));
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c.warnings.iter().any(|w| w.contains("telemetry")));
}

#[test]
fn validation_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "plain", "x");
    type Expect = fn(&ConfigError) -> bool;
    let cases: Vec<(String, Expect)> = vec![
        ("-server".into(), |e| matches!(e, ConfigError::DataDirRequired)),
        (format!("-data-dir {file}"), |e| {
            matches!(e, ConfigError::DataDirNotDirectory(_))
        }),
        ("-data-dir /d -server -bootstrap -bootstrap-expect 3".into(), |e| {
            matches!(e, ConfigError::BootstrapWithExpect)
        }),
        ("-data-dir /d -bootstrap-expect 3".into(), |e| {
            matches!(e, ConfigError::BootstrapExpectWithoutServer)
        }),
        ("-data-dir /d -server -bootstrap-expect 0".into(), |e| {
            matches!(e, ConfigError::BootstrapExpectZero)
        }),
        ("-data-dir /d -bootstrap".into(), |e| {
            matches!(e, ConfigError::BootstrapWithoutServer)
        }),
        ("-dev -bootstrap-expect 3".into(), |e| {
            matches!(e, ConfigError::DevWithBootstrapExpect)
        }),
        ("-data-dir /d -node=".into(), |e| {
            matches!(e, ConfigError::EmptyNodeName)
        }),
        ("-data-dir /d -node-id 1234".into(), |e| {
            matches!(e, ConfigError::BadNodeId(_))
        }),
        (
            "-data-dir /d -node-id 0b6c5b1e-0d4a-4a6e-9b8c-2f1d3c4e5a6x".into(),
            |e| matches!(e, ConfigError::BadNodeId(_)),
        ),
        (
            "-data-dir /d -http-port 65536".into(),
            |e| matches!(e, ConfigError::BadValue { key, .. } if key == "ports.http"),
        ),
        (
            "-data-dir /d -server-port -1".into(),
            |e| matches!(e, ConfigError::BadValue { key, .. } if key == "ports.server"),
        ),
        (
            "-data-dir /d -dns-port -2".into(),
            |e| matches!(e, ConfigError::BadValue { key, .. } if key == "ports.dns"),
        ),
        ("-data-dir /d -encrypt notbase64!".into(), |e| {
            matches!(e, ConfigError::BadEncryptKey(_))
        }),
        ("-data-dir /d -encrypt c2hvcnQ=".into(), |e| {
            matches!(e, ConfigError::BadEncryptKey(_))
        }),
        (
            "-data-dir /d -raft-protocol 2".into(),
            |e| matches!(e, ConfigError::BadValue { key, .. } if key == "raft_protocol"),
        ),
        ("-data-dir /d -node-meta consul-x:1".into(), |e| {
            matches!(e, ConfigError::BadValue { .. })
        }),
    ];
    for (line, is_expected) in cases {
        let e = err(&line);
        assert!(is_expected(&e), "{line:?} gave {e:?}");
        let text = e.to_string();
        assert!(!text.is_empty() && !text.contains('\n'), "{line:?}: {text:?}");
    }
    // Command-line value errors name the command line as their origin.
    assert!(err("-data-dir /d -http-port 65536")
        .to_string()
        .starts_with("command line"));
}

#[test]
fn bootstrap_expect_one_means_bootstrap() {
    let c = ok("-data-dir /d -server -bootstrap-expect 1");
    assert!(c.bootstrap && c.bootstrap_expect.is_none());
    assert_eq!(c.warnings.len(), 1);
}

#[test]
fn node_names_dns_cannot_serve_are_warnings() {
    let c = ok("-data-dir /d -node my_node");
    assert!(c.warnings.iter().any(|w| w.contains("my_node")), "{:?}", c.warnings);
    let long = "a".repeat(64);
    assert!(ok(&format!("-data-dir /d -node {long}"))
        .warnings
        .iter()
        .any(|w| w.contains("63")));
}

#[test]
fn one_config_text_parses_as_a_file_would() {
    let c = crate::config::parse_config_text(r#"{"server": true, "bootstrap": true, "data_dir": "/tmp/x"}"#, "json")
        .expect("valid JSON config");
    assert!(c.server && c.bootstrap);
    let c = crate::config::parse_config_text("server = true\ndata_dir = \"/tmp/x\"\n", "hcl").expect("valid HCL");
    assert!(c.server);
    let e = crate::config::parse_config_text("server = = true", "hcl")
        .unwrap_err()
        .to_string();
    assert!(e.contains("HCL") && !e.contains('\n'), "{e}");
    assert!(crate::config::parse_config_text("{}", "yaml").is_err());
}

#[test]
fn http_config_sets_the_slow_client_timeouts() {
    let c = crate::config::parse_config_text(
        "data_dir = \"/tmp/x\"\nhttp_config {\n  read_header_timeout = \"2s\"\n  write_timeout = \"1m\"\n  use_cache = false\n}\n",
        "hcl",
    )
    .expect("valid HCL");
    assert_eq!(
        (c.http_read_header_timeout, c.http_write_timeout),
        (Duration::from_secs(2), Duration::from_secs(60))
    );
    assert!(
        c.warnings.iter().any(|w| w.contains("http_config.use_cache")),
        "{:?}",
        c.warnings
    );
    let defaults = crate::config::parse_config_text(r#"{"data_dir": "/tmp/x"}"#, "json").unwrap();
    assert_eq!(defaults.http_max_header_bytes, 1 << 20, "Go's DefaultMaxHeaderBytes");
    let sized = |v: &str| {
        crate::config::parse_config_text(
            &format!(r#"{{"data_dir": "/tmp/x", "http_config": {{"max_header_bytes": {v}}}}}"#),
            "json",
        )
        .map(|c| c.http_max_header_bytes)
    };
    assert_eq!(sized("8192").unwrap(), 8192);
    assert_eq!(sized("0").unwrap(), 1 << 20, "0 means Go's default, as in Consul");
    assert!(sized("-1").is_err());
    assert_eq!(
        (defaults.http_read_header_timeout, defaults.http_write_timeout),
        (
            crate::http::DEFAULT_READ_HEADER_TIMEOUT,
            crate::http::DEFAULT_WRITE_TIMEOUT
        )
    );
    let zero = crate::config::parse_config_text(
        r#"{"data_dir": "/tmp/x", "http_config": {"write_timeout": "0s"}}"#,
        "json",
    );
    assert!(zero.unwrap_err().to_string().contains("http_config.write_timeout"));
    let unknown = crate::config::parse_config_text(r#"{"data_dir": "/tmp/x", "http_config": {"nope": 1}}"#, "json");
    assert!(unknown.is_err());
}
