//! A real network partition (consul-compat.md §5): three servers, each in its own network namespace
//! (`ip netns`), joined by veth pairs to a bridge in the test's namespace. Cutting the leader's link
//! isolates it: the other two mark it failed, its `serfHealth` goes critical, and they elect a leader
//! between them; after the link comes back, gossip converges to three alive members everywhere
//! (serf's reconnect), `serfHealth` passes again, and all three agree on one leader.
//!
//! Needs root and iproute2's `ip` (installed by .ci/run). Without them the test fails and says so.

use concord_tests::{concord_bin, http_get, poll, ELECTION_TIMEOUT, RAFT_MULTIPLIER};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Election, joins and gossip convergence of three fresh processes on a loaded machine.
const FORMED: Duration = Duration::from_secs(60);
/// LAN defaults: probe (1 s) + suspicion (up to 6 × 4 s without confirmations for 3 members) +
/// dissemination, with slack for a loaded machine.
const DETECTED: Duration = Duration::from_secs(60);
/// After healing: serf's reconnect round (every 30 s) reaches the isolated server at the latest then.
const HEALED: Duration = Duration::from_secs(90);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces `cc<pid>n<i>` with one address each on `10.213.<b>.0/24`, linked by veths to a bridge that
/// lives in its own namespace `cc<pid>h` (so the host's firewall — Docker sets FORWARD to DROP, and
/// br_netfilter sends bridged frames through it — never sees the traffic). The test's namespace joins
/// the bridge too, as `.254`, to reach every agent. Everything is deleted on drop.
struct Net {
    tag: String,
    subnet: u8,
    n: usize,
}

impl Net {
    fn create(n: usize) -> Result<Net, String> {
        let tag = format!("cc{}", std::process::id() % 100_000);
        let used = Command::new("ip")
            .args(["-4", "-o", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let subnet = (0..=250u8)
            .map(|k| ((std::process::id() as usize + k as usize) % 250) as u8)
            .find(|b| !used.contains(&format!("10.213.{b}.")))
            .ok_or("no free 10.213.x.0/24 subnet")?;
        let mut net = Net { tag, subnet, n: 0 };
        let hub = net.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "add", "hubbr", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "hubbr", "up"])?;
        // Our own leg: `<tag>r` here, `root0` on the bridge.
        let root = format!("{}r", net.tag);
        ip(&[
            "link", "add", &root, "type", "veth", "peer", "name", "root0", "netns", &hub,
        ])?;
        ip(&["addr", "add", &format!("10.213.{subnet}.254/24"), "dev", &root])?;
        ip(&["link", "set", &root, "up"])?;
        ip(&["-n", &hub, "link", "set", "root0", "master", "hubbr", "up"])?;
        for i in 1..=n {
            let ns = net.ns(i);
            ip(&["netns", "add", &ns])?;
            net.n = i;
            let leg = net.leg(i);
            ip(&[
                "-n", &hub, "link", "add", &leg, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &leg, "master", "hubbr", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.addr(i)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn hub(&self) -> String {
        format!("{}h", self.tag)
    }
    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }
    /// Agent `i`'s port on the bridge.
    fn leg(&self, i: usize) -> String {
        format!("v{i}")
    }
    fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, i as u8)
    }

    /// Cut (`false`) or restore (`true`) agent `i`'s only link.
    fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.hub(), "link", "set", &self.leg(i), state]).unwrap();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and with them their peers.
        for i in 1..=self.n {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
        let _ = ip(&["link", "del", &format!("{}r", self.tag)]);
    }
}

/// The agents; killed on drop, with their logs printed if the test failed.
struct Agents {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for l in &self.logs {
                eprintln!(
                    "----- {} -----\n{}",
                    l.display(),
                    std::fs::read_to_string(l).unwrap_or_default()
                );
            }
        }
    }
}

fn start_servers(net: &Net, n: usize) -> Agents {
    let mut agents = Agents {
        children: Vec::new(),
        logs: Vec::new(),
        _dir: tempfile::Builder::new().prefix("concord-partition-").tempdir().unwrap(),
    };
    for i in 1..=n {
        let home = agents._dir.path().join(format!("s{i}"));
        std::fs::create_dir_all(home.join("data")).unwrap();
        let config = home.join("config.json");
        std::fs::write(
            &config,
            format!("{{\"performance\": {{\"raft_multiplier\": {RAFT_MULTIPLIER}}}}}"),
        )
        .unwrap();
        let me = net.addr(i).to_string();
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            net.ns(i),
            concord_bin().display().to_string(),
        ];
        for a in [
            "agent",
            "-server",
            "-bootstrap-expect",
            &n.to_string(),
            "-node",
            &format!("s{i}"),
            "-bind",
            &me,
            "-client",
            &me,
            "-retry-interval",
            "1s",
        ] {
            args.push(a.to_string());
        }
        args.extend(["-data-dir".into(), home.join("data").display().to_string()]);
        args.extend(["-config-file".into(), config.display().to_string()]);
        for j in (1..=n).filter(|&j| j != i) {
            args.extend(["-retry-join".into(), net.addr(j).to_string()]);
        }
        let log = home.join("agent.log");
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(File::create(home.join("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start s{i} in namespace {}: {e}", net.ns(i)));
        agents.children.push(child);
        agents.logs.push(log);
        agents.logs.push(home.join("stderr.log"));
    }
    agents
}

fn get_json(net: &Net, i: usize, path: &str) -> Result<serde_json::Value, String> {
    let url = format!("http://{}:8500{path}", net.addr(i));
    http_get(&url)?.expect_status(200)?.json()
}

fn leader_of(net: &Net, i: usize) -> Result<String, String> {
    let v = get_json(net, i, "/v1/status/leader")?;
    let l = v.as_str().unwrap_or_default().to_string();
    if l.is_empty() {
        Err(format!("s{i} knows no leader"))
    } else {
        Ok(l)
    }
}

/// The LAN status (1 alive, 4 failed) of `name` as agent `i` sees it.
fn status(net: &Net, i: usize, name: &str) -> Result<u64, String> {
    let v = get_json(net, i, "/v1/agent/members")?;
    v.as_array()
        .and_then(|l| l.iter().find(|m| m["Name"] == name))
        .and_then(|m| m["Status"].as_u64())
        .ok_or_else(|| format!("s{i} does not list {name}: {v}"))
}

fn serf_health(net: &Net, i: usize, node: &str) -> Result<String, String> {
    let v = get_json(net, i, &format!("/v1/health/node/{node}"))?;
    v.as_array()
        .and_then(|l| l.iter().find(|c| c["CheckID"] == "serfHealth"))
        .and_then(|c| c["Status"].as_str().map(String::from))
        .ok_or_else(|| format!("no serfHealth for {node} on s{i}: {v}"))
}

#[test]
fn an_isolated_leader_is_failed_then_rejoins_after_the_partition_heals() {
    let net = Net::create(3).unwrap_or_else(|e| {
        panic!("this test needs network namespaces (root and iproute2's `ip`), and creating them failed: {e}")
    });
    let _agents = start_servers(&net, 3);
    let all = [1, 2, 3];
    let leader = poll(
        FORMED,
        "three servers agree on a leader and see three alive members",
        || {
            let l = leader_of(&net, 1)?;
            for i in all {
                if leader_of(&net, i)? != l {
                    return Err(format!("s{i} disagrees on the leader"));
                }
                for j in all {
                    match status(&net, i, &format!("s{j}"))? {
                        1 => {}
                        s => return Err(format!("s{i} sees s{j} as {s}")),
                    }
                }
            }
            Ok(l)
        },
    );
    let isolated = all
        .into_iter()
        .find(|&i| leader.starts_with(&format!("{}:", net.addr(i))))
        .unwrap_or_else(|| panic!("leader {leader} is none of ours"));
    let others: Vec<usize> = all.into_iter().filter(|&i| i != isolated).collect();
    let name = format!("s{isolated}");
    poll(FORMED, "serfHealth passing for the leader", || {
        match serf_health(&net, others[0], &name)?.as_str() {
            "passing" => Ok(()),
            s => Err(s.to_string()),
        }
    });

    net.link(isolated, false);
    let new_leader = poll(
        DETECTED,
        "the majority fails the isolated leader and elects another",
        || {
            for &i in &others {
                match status(&net, i, &name)? {
                    4 => {}
                    s => return Err(format!("s{i} sees {name} as {s}")),
                }
            }
            let l = leader_of(&net, others[0])?;
            if leader_of(&net, others[1])? != l || l.starts_with(&format!("{}:", net.addr(isolated))) {
                return Err(format!("majority leader {l}"));
            }
            match serf_health(&net, others[0], &name)?.as_str() {
                "critical" => Ok(l),
                s => Err(format!("serfHealth of {name} is {s}")),
            }
        },
    );
    eprintln!("isolated {name}; new leader {new_leader} (election timeout {ELECTION_TIMEOUT:?})");

    net.link(isolated, true);
    poll(
        HEALED,
        "after healing: three alive everywhere, one leader, serfHealth passing",
        || {
            let l = leader_of(&net, 1)?;
            for i in all {
                if leader_of(&net, i)? != l {
                    return Err(format!("s{i} disagrees on the leader"));
                }
                for j in all {
                    match status(&net, i, &format!("s{j}"))? {
                        1 => {}
                        s => return Err(format!("s{i} sees s{j} as {s}")),
                    }
                }
            }
            match serf_health(&net, others[0], &name)?.as_str() {
                "passing" => Ok(()),
                s => Err(format!("serfHealth of {name} is {s}")),
            }
        },
    );
}
