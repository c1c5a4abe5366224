//! `concord members`, `join`, `force-leave`, `keygen` and `keyring`, with Consul's output.

use super::client::{client_flags, Client};
use super::flags::FlagSet;
use super::{parse_flags, Io};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MemberJson {
    name: String,
    addr: String,
    port: u16,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    status: u8,
}

fn connect(fs: &FlagSet, io: &mut Io<'_>) -> Result<Client, i32> {
    Client::new(fs, io.env).map_err(|e| io.error(format!("Error connecting to Consul agent: {e}")))
}

/// Serf's status names.
pub(crate) fn status_name(status: u8) -> &'static str {
    match status {
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "none",
    }
}

/// Columns separated by two spaces, each as wide as its widest cell (Consul's `columnize`).
pub(crate) fn columnize(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if i + 1 == r.len() {
                        s.clone()
                    } else {
                        format!("{s:<w$}", w = widths[i])
                    }
                })
                .collect();
            cells.join("  ")
        })
        .collect()
}

const MEMBERS_HELP: &str = "Usage: concord members [options]

  Outputs the members of a running agent's gossip pool.";

pub(crate) fn members(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new())
        .bool("wan", "List the WAN pool instead of the LAN pool.")
        .bool("detailed", "Show all tags of each member.")
        .string(
            "status",
            "",
            "Only members whose status matches this (alive, left, failed...).",
        );
    if let Err(code) = parse_flags(&mut fs, args, MEMBERS_HELP, io) {
        return code;
    }
    let client = match connect(&fs, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let query: &[(&str, &str)] = if fs.get_bool("wan") { &[("wan", "1")] } else { &[] };
    let body = match client.request_ok("GET", "/v1/agent/members", query, None) {
        Ok(b) => b,
        Err(e) => return io.error(format!("Error retrieving members: {e}")),
    };
    let mut list: Vec<MemberJson> = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return io.error(format!("Error retrieving members: invalid response: {e}")),
    };
    let want = fs.get_str("status").to_string();
    list.retain(|m| want.is_empty() || want.split('|').any(|w| w == status_name(m.status)));
    // Consul lists servers first, then clients, each by name.
    list.sort_by(|a, b| (!is_server(a), &a.name).cmp(&(!is_server(b), &b.name)));
    if list.is_empty() {
        return 2;
    }
    let detailed = fs.get_bool("detailed");
    let mut rows = vec![if detailed {
        vec!["Node".into(), "Address".into(), "Status".into(), "Tags".into()]
    } else {
        [
            "Node",
            "Address",
            "Status",
            "Type",
            "Build",
            "Protocol",
            "DC",
            "Partition",
            "Segment",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }];
    for m in &list {
        let addr = format!("{}:{}", m.addr, m.port);
        let status = status_name(m.status).to_string();
        if detailed {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            rows.push(vec![m.name.clone(), addr, status, tags.join(",")]);
        } else {
            let tag = |k: &str| m.tags.get(k).cloned().unwrap_or_default();
            let build = tag("build").split(':').next().unwrap_or_default().to_string();
            let kind = if is_server(m) { "server" } else { "client" };
            let segment = if is_server(m) {
                "<all>".to_string()
            } else {
                "<default>".to_string()
            };
            rows.push(vec![
                m.name.clone(),
                addr,
                status,
                kind.into(),
                build,
                tag("vsn"),
                tag("dc"),
                "default".into(),
                segment,
            ]);
        }
    }
    for line in columnize(&rows) {
        io.info(line.trim_end());
    }
    0
}

fn is_server(m: &MemberJson) -> bool {
    m.tags.get("role").map(String::as_str) == Some("consul")
}

const JOIN_HELP: &str = "Usage: concord join [options] address ...

  Tells a running agent to join the cluster by specifying at least one existing member.";

pub(crate) fn join(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new()).bool("wan", "Joins a server to another server in the WAN pool.");
    if let Err(code) = parse_flags(&mut fs, args, JOIN_HELP, io) {
        return code;
    }
    let addrs = fs.args().to_vec();
    if addrs.is_empty() {
        return io.error(format!(
            "At least one address to join must be specified.\n\n{JOIN_HELP}"
        ));
    }
    let client = match connect(&fs, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let query: &[(&str, &str)] = if fs.get_bool("wan") { &[("wan", "1")] } else { &[] };
    let mut joined = 0;
    for addr in &addrs {
        match client.request_ok("PUT", &format!("/v1/agent/join/{addr}"), query, None) {
            Ok(_) => joined += 1,
            Err(e) => {
                io.error(format!("Error joining address '{addr}': {e}"));
            }
        }
    }
    if joined == 0 {
        return io.error("Failed to join any nodes.");
    }
    io.info(format!("Successfully joined cluster by contacting {joined} nodes."));
    0
}

const FORCE_LEAVE_HELP: &str = "Usage: concord force-leave [options] name

  Forces a member of the cluster to enter the \"left\" state.";

pub(crate) fn force_leave(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new())
        .bool("prune", "Remove the agent forcibly from the list of members.")
        .bool("wan", "Exclusively leave the agent from the WAN pool.");
    if let Err(code) = parse_flags(&mut fs, args, FORCE_LEAVE_HELP, io) {
        return code;
    }
    let [node] = fs.args() else {
        return io.error(format!(
            "A single node name must be specified to force leave.\n\n{FORCE_LEAVE_HELP}"
        ));
    };
    let node = node.clone();
    let client = match connect(&fs, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut query = Vec::new();
    if fs.get_bool("prune") {
        query.push(("prune", "1"));
    }
    if fs.get_bool("wan") {
        query.push(("wan", "1"));
    }
    match client.request_ok("PUT", &format!("/v1/agent/force-leave/{node}"), &query, None) {
        Ok(_) => 0,
        Err(e) => io.error(format!("Error force leaving: {e}")),
    }
}

pub(crate) fn keygen(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = FlagSet::new();
    if let Err(code) = parse_flags(
        &mut fs,
        args,
        "Usage: concord keygen\n\n  Generates a new encryption key.",
        io,
    ) {
        return code;
    }
    io.info(crate::gossip::generate_key());
    0
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyringJson {
    #[serde(rename = "WAN")]
    wan: bool,
    datacenter: String,
    keys: BTreeMap<String, usize>,
    num_nodes: usize,
}

const KEYRING_HELP: &str = "Usage: concord keyring [options]

  Manages encryption keys used for gossip messages.";

pub(crate) fn keyring(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new())
        .string("install", "", "Install a new encryption key.")
        .string("use", "", "Change the primary encryption key.")
        .string("remove", "", "Remove the given key from the cluster.")
        .bool("list", "List all keys currently in use within the cluster.");
    if let Err(code) = parse_flags(&mut fs, args, KEYRING_HELP, io) {
        return code;
    }
    let ops: Vec<(&str, &str, &str)> = [
        ("install", "POST", "Installing new gossip encryption key..."),
        ("use", "PUT", "Changing primary gossip encryption key..."),
        ("remove", "DELETE", "Removing gossip encryption key..."),
    ]
    .into_iter()
    .filter(|(flag, ..)| !fs.get_str(flag).is_empty())
    .collect();
    let list = fs.get_bool("list");
    if ops.len() + usize::from(list) != 1 {
        return io.error(format!("Only a single action is allowed\n\n{KEYRING_HELP}"));
    }
    let client = match connect(&fs, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some((flag, method, banner)) = ops.first() {
        io.info(format!("==> {banner}"));
        let body = serde_json::json!({ "Key": fs.get_str(flag) }).to_string();
        return match client.request_ok(method, "/v1/operator/keyring", &[], Some(body.as_bytes())) {
            Ok(_) => 0,
            Err(e) => io.error(format!("error: {e}")),
        };
    }
    io.info("==> Gathering installed encryption keys...");
    let body = match client.request_ok("GET", "/v1/operator/keyring", &[], None) {
        Ok(b) => b,
        Err(e) => return io.error(format!("error: {e}")),
    };
    let pools: Vec<KeyringJson> = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return io.error(format!("error: invalid response: {e}")),
    };
    for p in pools {
        io.info("");
        io.info(if p.wan {
            "WAN:".to_string()
        } else {
            format!("{} (LAN):", p.datacenter)
        });
        for (key, n) in &p.keys {
            io.info(format!("  {key} [{n}/{}]", p.num_nodes));
        }
    }
    0
}
