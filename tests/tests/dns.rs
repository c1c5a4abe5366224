//! Black-box DNS tests (reference: consul-compat.md §3): a real `concord agent -dev`, services registered
//! over HTTP, and the real `dig` (Debian `dnsutils`) asking over UDP and TCP. A fake upstream DNS server
//! on 127.0.0.1 proves `-recursor` forwarding. If `dig` is missing the tests fail and say how to install it.

use concord_tests::{http_get, http_put, poll, Agent, Cluster};
use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(20);

/// What `dig` printed, split into the parts the tests look at.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answer: Vec<String>,
    additional: Vec<String>,
    authority: Vec<String>,
}

impl Dig {
    fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// The last field of every answer line (the address, target, …), sorted.
    fn data(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    }
}

fn dig(agent: &Agent, args: &[&str]) -> Dig {
    dig_at(agent.dns_addr(), args)
}

fn dig_at(addr: std::net::SocketAddr, args: &[&str]) -> Dig {
    try_dig_at(addr, args).unwrap_or_else(|e| panic!("{e}"))
}

/// [`dig_at`], with no reply (the server still starting) an error rather than a panic.
fn try_dig_at(addr: std::net::SocketAddr, args: &[&str]) -> Result<Dig, String> {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run dig ({e}): install it with `apt-get install dnsutils` (.ci/run does)"));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .ok_or_else(|| format!("no reply from dig {args:?}:\n{text}"))?
        .to_string();
    let flags = text
        .split(";; flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let section = |name: &str| -> Vec<String> {
        text.split(&format!(";; {name} SECTION:\n"))
            .nth(1)
            .map(|s| {
                s.lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Dig {
        status,
        flags,
        answer: section("ANSWER"),
        additional: section("ADDITIONAL"),
        authority: section("AUTHORITY"),
    })
}

/// Register through the catalog API, polling while the agent is still starting.
fn register(agent: &Agent, body: &str) {
    poll(SETTLE, "catalog register", || {
        http_put(&agent.url("/v1/catalog/register"), body.as_bytes()).and_then(|r| r.expect_status(200))
    });
}

/// web: n1 (passing, tag prod, meta), n2 (warning, own address 10.0.0.20, weights), n3 (critical).
fn seed(agent: &Agent) {
    register(
        agent,
        r#"{"Node":"n1","Address":"10.0.0.1","NodeMeta":{"rack":"r1"},
            "Service":{"ID":"web1","Service":"web","Port":80,"Tags":["prod"]},
            "Checks":[{"CheckID":"c1","Name":"c1","ServiceID":"web1","Status":"passing"}]}"#,
    );
    register(
        agent,
        r#"{"Node":"n2","Address":"10.0.0.2",
            "Service":{"ID":"web2","Service":"web","Address":"10.0.0.20","Port":8080,"Tags":["canary"],
                       "Weights":{"Passing":10,"Warning":3}},
            "Checks":[{"CheckID":"c2","Name":"c2","ServiceID":"web2","Status":"warning"}]}"#,
    );
    register(
        agent,
        r#"{"Node":"n3","Address":"10.0.0.3",
            "Service":{"ID":"web3","Service":"web","Port":80,"Tags":["prod"]},
            "Checks":[{"CheckID":"c3","Name":"c3","Status":"critical"}]}"#,
    );
    register(
        agent,
        r#"{"Node":"n6","Address":"fd00::6","Service":{"ID":"six","Service":"six","Port":6}}"#,
    );
    // Registered last: once n6 answers, the DNS view holds everything above.
    poll(SETTLE, "n6 answered over DNS", || {
        let d = dig(agent, &["n6.node.consul", "AAAA"]);
        (d.data().len() == 1).then_some(()).ok_or(format!("{d:?}"))
    });
}

#[test]
fn every_name_form_answers_over_udp_and_tcp() {
    let agent = Agent::dev();
    seed(&agent);
    for transport in [&[][..], &["+tcp"][..]] {
        let ask = |q: &[&str]| dig(&agent, &[transport, q].concat());
        let d = ask(&["web.service.consul"]);
        assert_eq!(d.status, "NOERROR");
        assert!(d.has_flag("aa"), "{d:?}");
        assert_eq!(d.data(), vec!["10.0.0.1", "10.0.0.20"], "critical n3 left out");
        assert_eq!(
            ask(&["WEB.Service.DC1.Consul"]).data().len(),
            2,
            "case-insensitive, with dc"
        );
        assert_eq!(ask(&["prod.web.service.consul"]).data(), vec!["10.0.0.1"]);
        assert_eq!(
            ask(&["_web._prod.service.consul", "SRV"]).data(),
            vec!["1 1 80 n1.node.dc1.consul."]
        );
        assert_eq!(
            ask(&["_web._canary.consul", "SRV"]).data(),
            vec!["1 3 8080 0a000014.addr.dc1.consul."]
        );
        let srv = ask(&["_web._tcp.service.dc1.consul", "SRV"]);
        assert_eq!(
            srv.data(),
            vec!["1 1 80 n1.node.dc1.consul.", "1 3 8080 0a000014.addr.dc1.consul."]
        );
        let extra = srv.additional.join("\n");
        assert!(
            extra.contains("n1.node.dc1.consul.") && extra.contains("10.0.0.1"),
            "{extra}"
        );
        assert!(
            extra.contains("0a000014.addr.dc1.consul.") && extra.contains("10.0.0.20"),
            "{extra}"
        );
        assert!(extra.contains("\"rack=r1\""), "node meta TXT in additional: {extra}");
        assert_eq!(ask(&["n1.node.consul"]).data(), vec!["10.0.0.1"]);
        assert_eq!(ask(&["n1.node.dc1.consul", "TXT"]).data(), vec!["\"rack=r1\""]);
        assert_eq!(ask(&["n6.node.consul", "AAAA"]).data(), vec!["fd00::6"]);
        assert_eq!(ask(&["six.service.consul", "AAAA"]).data(), vec!["fd00::6"]);
        assert_eq!(ask(&["0a000014.addr.dc1.consul"]).data(), vec!["10.0.0.20"]);
        assert_eq!(ask(&["-x", "10.0.0.1"]).data(), vec!["n1.node.dc1.consul."]);
        assert_eq!(ask(&["-x", "10.0.0.20"]).data(), vec!["web.service.dc1.consul."]);
        assert_eq!(ask(&["-x", "fd00::6"]).data(), vec!["n6.node.dc1.consul."]);
        let soa = ask(&["consul", "SOA"]);
        assert!(soa.data()[0].starts_with("ns.consul. hostmaster.consul. "), "{soa:?}");
        let ns = ask(&["consul", "NS"]);
        assert_eq!(ns.data().len(), 1, "the dev server: {ns:?}");
        assert!(ns.data()[0].ends_with(".node.dc1.consul."), "{ns:?}");
        // Prepared queries do not exist yet: every one is unknown, as Consul answers an unknown query.
        assert_eq!(ask(&["anything.query.consul"]).status, "NXDOMAIN");
    }
}

#[test]
fn nxdomain_and_nodata_are_told_apart() {
    let agent = Agent::dev();
    seed(&agent);
    for name in [
        "nope.service.consul",
        "nope.node.consul",
        "web.service.dc2.consul",
        "a.b.c.consul",
    ] {
        let d = dig(&agent, &[name]);
        assert_eq!(d.status, "NXDOMAIN", "{name}: {d:?}");
        assert!(
            d.authority.iter().any(|l| l.contains("SOA")),
            "{name}: SOA for negative caching"
        );
    }
    for (name, qtype) in [
        ("n1.node.consul", "AAAA"),
        ("web.service.consul", "AAAA"),
        ("consul", "A"),
    ] {
        let d = dig(&agent, &[name, qtype]);
        assert_eq!(
            (d.status.as_str(), d.answer.len()),
            ("NOERROR", 0),
            "{name} {qtype}: {d:?}"
        );
        assert!(d.authority.iter().any(|l| l.contains("SOA")), "{name}: {d:?}");
    }
    // Without recursors, names outside the domain are refused and RA is never set.
    let d = dig(&agent, &["example.com"]);
    assert_eq!(d.status, "REFUSED");
    assert!(!d.has_flag("ra"));
}

#[test]
fn udp_truncation_edns0_and_tcp() {
    let agent = Agent::dev();
    for i in 0..10 {
        register(
            &agent,
            &format!(
                r#"{{"Node":"api-{i}","Address":"10.1.0.{i}","Service":{{"ID":"api","Service":"api","Port":{}}}}}"#,
                9000 + i
            ),
        );
    }
    poll(SETTLE, "ten api instances over TCP", || {
        let d = dig(&agent, &["+tcp", "api.service.consul"]);
        (d.answer.len() == 10).then_some(()).ok_or(format!("{d:?}"))
    });
    // No EDNS0: udp_answer_limit (3) answers and TC set; `+ignore` keeps dig from retrying over TCP.
    let d = dig(&agent, &["+noedns", "+ignore", "api.service.consul"]);
    assert_eq!(d.answer.len(), 3, "{d:?}");
    assert!(d.has_flag("tc"), "{d:?}");
    // dig retries a truncated answer over TCP by itself and gets everything.
    assert_eq!(dig(&agent, &["+noedns", "api.service.consul"]).answer.len(), 10);
    // EDNS0 with room for all: no cut.
    let d = dig(&agent, &["+bufsize=4096", "+ignore", "api.service.consul", "SRV"]);
    assert_eq!(d.answer.len(), 10, "{d:?}");
    assert!(!d.has_flag("tc"));
    // EDNS0 at the smallest size: cut by bytes, with TC.
    let d = dig(&agent, &["+bufsize=512", "+ignore", "api.service.consul", "SRV"]);
    assert!(d.has_flag("tc") && !d.answer.is_empty() && d.answer.len() < 10, "{d:?}");
}

/// A DNS server on 127.0.0.1 answering every question with `A 192.0.2.7` (or never, if `silent`).
fn fake_upstream(silent: bool) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            if silent || n < 12 {
                continue;
            }
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80; // QR
            reply[3] = 0x80; // RA, NOERROR
            reply[6..8].copy_from_slice(&1u16.to_be_bytes()); // one answer
            reply[10..12].copy_from_slice(&0u16.to_be_bytes()); // drop the request's OPT
            let question_end = 12 + buf[12..n].iter().position(|&b| b == 0).unwrap() + 5;
            reply.truncate(question_end);
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
            let _ = socket.send_to(&reply, peer);
        }
    });
    addr
}

#[test]
fn other_names_go_to_the_recursors_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dns.json");
    std::fs::write(
        &config,
        r#"{"dns_config":{"recursor_timeout":"500ms","only_passing":true,"node_ttl":"10s","service_ttl":{"*":"5s"}}}"#,
    )
    .unwrap();
    let (silent, working) = (fake_upstream(true), fake_upstream(false));
    let agent = Agent::dev_with(&[
        "-recursor",
        &silent,
        "-recursor",
        &working,
        "-config-file",
        config.to_str().unwrap(),
    ]);
    seed(&agent);
    // The first recursor never answers; after its timeout the second one does.
    let d = dig(&agent, &["example.com"]);
    assert_eq!(
        (d.status.as_str(), d.data()),
        ("NOERROR", vec!["192.0.2.7".to_string()]),
        "{d:?}"
    );
    assert!(d.has_flag("ra"), "recursion available once recursors are set: {d:?}");
    // Our own names are still ours, with the dns_config from the file: only passing, TTLs.
    let d = dig(&agent, &["web.service.consul"]);
    assert_eq!(
        d.data(),
        vec!["10.0.0.1"],
        "only_passing leaves the warning instance out"
    );
    assert!(d.answer[0].split_whitespace().nth(1) == Some("5"), "service_ttl: {d:?}");
    let d = dig(&agent, &["n1.node.consul"]);
    assert!(d.answer[0].split_whitespace().nth(1) == Some("10"), "node_ttl: {d:?}");
    // Over TCP the upstream (UDP only here) cannot be reached: SERVFAIL after the timeouts.
    assert_eq!(dig(&agent, &["+tcp", "example.org"]).status, "SERVFAIL");
}

#[test]
fn malformed_packets_get_formerr_or_nothing_and_the_server_stays_up() {
    let agent = Agent::dev();
    seed(&agent);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    socket.connect(agent.dns_addr()).unwrap();
    let mut buf = [0u8; 512];
    // A header that promises a question the packet does not hold: FORMERR with our ID.
    let bad = [0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'x'];
    socket.send(&bad).unwrap();
    let n = socket.recv(&mut buf).expect("a FORMERR reply");
    assert_eq!(&buf[..2], &[0xbe, 0xef]);
    assert_eq!((buf[2] & 0x80, buf[3] & 0x0f), (0x80, 1), "QR set, rcode FORMERR");
    assert!(n >= 12);
    // Too short for a header, and a packet that is itself a response: no reply at all. Then the corpus of
    // the fuzz target, every file of it; the server answers a real query afterwards.
    for junk in [
        &[1u8, 2, 3][..],
        &[0u8; 11][..],
        &[0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0][..],
    ] {
        socket.send(junk).unwrap();
    }
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/dns_packet");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .expect("fuzz/corpus/dns_packet")
        .flatten()
        .collect();
    files.sort_by_key(|e| e.path());
    for f in files {
        socket.send(&std::fs::read(f.path()).unwrap()).unwrap();
    }
    assert_eq!(dig(&agent, &["web.service.consul"]).data().len(), 2);
}

/// Without a leader a server answers from the last catalog view it has when stale reads are allowed (the
/// default), and SERVFAIL when `dns_config.allow_stale` is false; once a leader is back, it answers again.
/// A 3-server cluster: s3 is left alone by killing s1 and s2, then restarted with `allow_stale = false`.
#[test]
fn without_a_leader_stale_views_are_served_unless_stale_reads_are_off() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_leader(SETTLE);
    let body = r#"{"Node":"far","Address":"10.9.9.9","Service":{"ID":"api","Service":"api","Port":90}}"#;
    poll(SETTLE, "catalog register", || {
        cluster
            .put(leader, "/v1/catalog/register", body.as_bytes())
            .and_then(|r| r.expect_status(200))
    });
    let s3 = std::net::SocketAddr::from((cluster.servers[2].ip, cluster.servers[2].dns_port));
    let answers_api = |what: &str| {
        poll(SETTLE, what, || {
            let d = try_dig_at(s3, &["api.service.consul"])?;
            (d.status == "NOERROR" && d.data() == ["10.9.9.9"])
                .then_some(())
                .ok_or(format!("{d:?}"))
        })
    };
    answers_api("s3 answers api.service.consul");

    cluster.kill(0);
    cluster.kill(1);
    let s3_url = cluster.url(2, "/v1/status/leader");
    poll(SETTLE, "s3 to lose its leader", || {
        let leader = http_get(&s3_url)?.text();
        (leader == "\"\"").then_some(()).ok_or(format!("leader still {leader}"))
    });
    let d = dig_at(s3, &["api.service.consul"]);
    assert_eq!(
        (d.status.as_str(), d.data()),
        ("NOERROR", vec!["10.9.9.9".to_string()]),
        "default allow_stale: the last view is served without a leader: {d:?}"
    );

    let config = cluster.servers[2]
        .data_dir
        .parent()
        .expect("the data dir sits in the server's home")
        .join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read config")).expect("config is JSON");
    json["dns_config"] = serde_json::json!({ "allow_stale": false });
    std::fs::write(&config, json.to_string()).expect("write config");
    cluster.restart(2);
    poll(
        SETTLE,
        "SERVFAIL from s3 with allow_stale = false and no leader",
        || {
            let d = try_dig_at(s3, &["api.service.consul"])?;
            (d.status == "SERVFAIL").then_some(()).ok_or(format!("{d:?}"))
        },
    );
    // Every name under the domain, not only services.
    assert_eq!(dig_at(s3, &["far.node.consul"]).status, "SERVFAIL");
    assert_eq!(dig_at(s3, &["_api._tcp.service.consul", "SRV"]).status, "SERVFAIL");

    cluster.restart(0);
    cluster.restart(1);
    cluster.wait_leader(SETTLE);
    answers_api("s3 answers again once there is a leader");
}

/// Node and service names are case-insensitive in the catalog (Consul's lower-cased indexes), so a check
/// registered under another case of its node's name still counts for that node's services in DNS.
#[test]
fn names_in_any_case_are_one_node_and_one_service() {
    let agent = Agent::dev();
    register(
        &agent,
        r#"{"Node":"Mixed","Address":"10.0.0.9","Service":{"ID":"m1","Service":"Mixed-Svc","Address":"10.0.0.91","Port":9}}"#,
    );
    register(
        &agent,
        r#"{"Node":"MIXED","Address":"10.0.0.9","SkipNodeUpdate":true,
            "Service":{"ID":"m2","Service":"mixed-svc","Address":"10.0.0.92","Port":9}}"#,
    );
    register(
        &agent,
        r#"{"Node":"mixed","Address":"10.0.0.9","SkipNodeUpdate":true,
            "Check":{"CheckID":"m1-down","Name":"m1 down","ServiceID":"m1","Status":"critical"}}"#,
    );
    poll(SETTLE, "only the passing instance answers", || {
        let d = dig(&agent, &["MIXED-svc.service.consul"]);
        (d.data() == ["10.0.0.92"]).then_some(()).ok_or(format!("{d:?}"))
    });
    assert_eq!(dig(&agent, &["mixed.node.consul"]).data(), ["10.0.0.9"]);
    assert_eq!(dig(&agent, &["MiXeD.node.consul"]).data(), ["10.0.0.9"]);
    let nodes = http_get(&agent.url("/v1/catalog/nodes")).unwrap().json().unwrap();
    let named: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["Node"].as_str())
        .filter(|n| n.eq_ignore_ascii_case("mixed"))
        .collect();
    assert_eq!(named, ["Mixed"], "one node, its name as first written: {nodes}");
}
