use super::identity::{node_id, random_node_id};
use super::*;
use std::net::Ipv4Addr;
use std::time::UNIX_EPOCH;

#[test]
fn join_addresses_get_the_server_port() {
    assert_eq!(join_address("127.0.0.2", 8300, 8301), "127.0.0.2:8300");
    assert_eq!(join_address("127.0.0.2:9000", 8300, 8301), "127.0.0.2:9000");
    // The Serf LAN port Consul users write maps to the RPC port (concord joins over RPC).
    assert_eq!(join_address("10.0.0.1:8301", 8300, 8301), "10.0.0.1:8300");
    assert_eq!(join_address("consul-server01", 8300, 8301), "consul-server01:8300");
    assert_eq!(join_address("consul-server01:8400", 8300, 8301), "consul-server01:8400");
    assert_eq!(join_address("::1", 8300, 8301), "[::1]:8300");
    assert_eq!(join_address("[fe80::1]", 8300, 8301), "[fe80::1]:8300");
}

#[test]
fn bind_any_needs_exactly_one_private_ipv4() {
    let ip = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let one = [ip(127, 0, 0, 1), ip(192, 168, 1, 5), ip(8, 8, 8, 8), "fe80::1".parse().unwrap()];
    assert_eq!(single_private_ipv4(&one).unwrap(), ip(192, 168, 1, 5));
    let two = [ip(10, 0, 0, 1), ip(172, 17, 0, 1)];
    let err = single_private_ipv4(&two).unwrap_err().to_string();
    assert!(err.starts_with("Multiple private IPv4 addresses found"), "{err}");
    assert!(err.contains("10.0.0.1") && err.contains("172.17.0.1"), "{err}");
    let err = single_private_ipv4(&[ip(127, 0, 0, 1), ip(8, 8, 8, 8)]).unwrap_err().to_string();
    assert!(err.starts_with("No private IPv4 address found"), "{err}");
    assert_eq!(single_private_ipv4(&[ip(100, 64, 3, 2)]).unwrap(), ip(100, 64, 3, 2));
}

#[test]
fn node_id_is_created_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let first = node_id(None, Some(dir.path())).unwrap();
    let stored = std::fs::read_to_string(dir.path().join("node-id")).unwrap();
    assert_eq!(stored, first.to_string());
    assert_eq!(stored.len(), 36);
    assert_eq!(node_id(None, Some(dir.path())).unwrap(), first);
    // The same ID given explicitly is fine; another one is refused with a clear message.
    assert_eq!(node_id(Some(&first.to_string()), Some(dir.path())).unwrap(), first);
    let other = random_node_id();
    let err = node_id(Some(&other.to_string()), Some(dir.path())).unwrap_err().to_string();
    assert!(err.contains("differs from the ID"), "{err}");
}

#[test]
fn node_ids_are_version_4_uuids_and_differ() {
    let a = random_node_id().to_string();
    let b = random_node_id().to_string();
    assert_ne!(a, b);
    assert_eq!(&a[14..15], "4");
    assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
}

#[test]
fn a_corrupt_node_id_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("node-id"), "not-a-uuid").unwrap();
    let err = node_id(None, Some(dir.path())).unwrap_err().to_string();
    assert!(err.contains("node-id") && err.contains("remove the file"), "{err}");
}

#[test]
fn timestamps_are_rfc3339_utc_with_millis() {
    let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
    assert_eq!(utc_timestamp(t), "2026-11-18T11:06:40.123Z");
    assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(utc_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
}

#[test]
fn log_levels_use_consul_names() {
    use tracing_subscriber::filter::LevelFilter;
    assert_eq!(logging::parse_level("err").unwrap(), LevelFilter::ERROR);
    assert_eq!(logging::parse_level("WARN").unwrap(), LevelFilter::WARN);
    assert_eq!(logging::parse_level("trace").unwrap(), LevelFilter::TRACE);
    assert!(logging::parse_level("loud").unwrap_err().to_string().contains("invalid log level"));
}

#[test]
fn raft_timings_scale_with_the_multiplier_and_dev_is_fast() {
    let mut config = crate::config::parse_agent_args(&["-dev".to_string()]).unwrap();
    let dev = raft_config(&config);
    assert_eq!(dev.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(dev.election_timeout, Duration::from_millis(300));
    assert_eq!(dev.lease_timeout, Duration::from_millis(150));
    config.dev = false;
    config.raft_multiplier = 5;
    let slow = raft_config(&config);
    assert_eq!(slow.election_timeout, RaftConfig::default().election_timeout * 5);
    assert_eq!(slow.heartbeat_interval, RaftConfig::default().heartbeat_interval * 5);
}
