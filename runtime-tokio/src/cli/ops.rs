//! `concord info`, `leave`, `version` and `operator raft list-peers|remove-peer|transfer-leader`, with
//! Consul's output.

use super::client::{client_flags, server_flags, Client};
use super::flags::FlagSet;
use super::{group_usage, parse_flags, Io};
use crate::http::CONSUL_COMPAT_VERSION;
use serde::Deserialize;
use serde_json::Value;

const INFO_HELP: &str = "Usage: concord info [options]

  Provides debugging information for operators";

pub(crate) fn info(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new());
    if let Err(code) = parse_flags(&mut fs, args, INFO_HELP, io) {
        return code;
    }
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error connecting to Consul agent: {e}")),
    };
    let body = match client.request_ok("GET", "/v1/agent/self", &[], None) {
        Ok(b) => b,
        Err(e) => return io.error(format!("Error querying agent: {e}")),
    };
    let me: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return io.error(format!("Error querying agent: invalid response: {e}")),
    };
    let Some(Value::Object(stats)) = me.get("Stats") else {
        return io.error("Agent response did not contain 'Stats' key");
    };
    // serde_json's map is sorted, as Consul sorts sections and keys.
    for (section, values) in stats {
        io.info(format!("{section}:"));
        let Value::Object(values) = values else {
            return io.error(format!("Got invalid subkey in stats: {values}"));
        };
        for (k, v) in values {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            io.info(format!("\t{k} = {v}"));
        }
    }
    0
}

const LEAVE_HELP: &str = "Usage: concord leave [options]

  Causes the agent to gracefully leave the cluster and shutdown.";

pub(crate) fn leave(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new());
    if let Err(code) = parse_flags(&mut fs, args, LEAVE_HELP, io) {
        return code;
    }
    if !fs.args().is_empty() {
        return io.error("Error! leave takes no arguments");
    }
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error connecting to Consul agent: {e}")),
    };
    match client.request_ok("PUT", "/v1/agent/leave", &[], None) {
        Ok(_) => {
            io.info("Graceful leave complete");
            0
        }
        Err(e) => io.error(format!("Error leaving: {e}")),
    }
}

/// Consul's `version` (pretty format), naming both the API version we match and our own.
pub(crate) fn version(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = FlagSet::new();
    if let Err(code) = parse_flags(&mut fs, args, "Usage: concord version", io) {
        return code;
    }
    io.info(format!(
        "Consul v{CONSUL_COMPAT_VERSION}-compatible concord {}",
        env!("CARGO_PKG_VERSION")
    ));
    io.info(
        "Protocol 2 spoken by default, understands 2 to 3 \
         (agent will automatically use protocol >2 when speaking to compatible agents)",
    );
    0
}

const OPERATOR_USAGE: &str = "Usage: concord operator <subcommand> [options]

  Provides cluster-level tools for operators.

Subcommands:
    raft    Provides cluster-level tools for Raft";

const RAFT_USAGE: &str = "Usage: concord operator raft <subcommand> [options]

  The Raft operator command is used to interact with the Raft configuration.

Subcommands:
    list-peers         Display the current Raft peer configuration
    remove-peer        Remove a server from the Raft configuration
    transfer-leader    Transfer raft leadership to another node";

pub(crate) fn operator(args: &[String], io: &mut Io<'_>) -> i32 {
    match args.split_first() {
        Some((sub, rest)) if sub == "raft" => match rest.split_first() {
            Some((cmd, rest)) => match cmd.as_str() {
                "list-peers" => list_peers(rest, io),
                "remove-peer" => remove_peer(rest, io),
                "transfer-leader" => transfer_leader(rest, io),
                _ => group_usage(io, rest, RAFT_USAGE),
            },
            None => group_usage(io, rest, RAFT_USAGE),
        },
        _ => group_usage(io, args, OPERATOR_USAGE),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RaftServer {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    leader: bool,
    voter: bool,
    #[serde(default)]
    protocol_version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RaftConfiguration {
    servers: Vec<RaftServer>,
}

/// `ryanuber/columnize` with Consul's settings: columns padded to their widest cell and glued with two
/// spaces; the last column is not padded.
pub(crate) fn columnize(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                }
            }
            line
        })
        .collect();
    lines.join("\n")
}

const LIST_PEERS_HELP: &str = "Usage: concord operator raft list-peers [options]

  Displays the current Raft peer configuration.";

fn list_peers(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = server_flags(FlagSet::new());
    if let Err(code) = parse_flags(&mut fs, args, LIST_PEERS_HELP, io) {
        return code;
    }
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error initializing client: {e}")),
    };
    let query: &[(&str, &str)] = if client.stale() { &[("stale", "")] } else { &[] };
    let config = client
        .request_ok("GET", "/v1/operator/raft/configuration", query, None)
        .map_err(|e| e.to_string())
        .and_then(|body| {
            serde_json::from_slice::<RaftConfiguration>(&body).map_err(|e| format!("invalid response: {e}"))
        });
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            return io.error(format!(
                "Error getting peers: Failed to retrieve raft configuration: {e}"
            ))
        }
    };
    let mut rows = vec![["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
        .map(String::from)
        .to_vec()];
    for s in config.servers {
        let state = if s.leader { "leader" } else { "follower" };
        let protocol = if s.protocol_version.is_empty() {
            "<=1".to_string()
        } else {
            s.protocol_version
        };
        rows.push(vec![
            s.node,
            s.id,
            s.address,
            state.to_string(),
            s.voter.to_string(),
            protocol,
        ]);
    }
    io.info(columnize(&rows));
    0
}

const REMOVE_PEER_HELP: &str = "Usage: concord operator raft remove-peer [options]

  Remove the server with given -address or -id from the Raft configuration.";

fn remove_peer(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = server_flags(
        FlagSet::new()
            .string("address", "", "The address to remove from the Raft configuration.")
            .string("id", "", "The ID to remove from the Raft configuration."),
    );
    if let Err(code) = parse_flags(&mut fs, args, REMOVE_PEER_HELP, io) {
        return code;
    }
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error initializing client: {e}")),
    };
    let (address, id) = (fs.get_str("address"), fs.get_str("id"));
    let query = match (address.is_empty(), id.is_empty()) {
        (true, true) => return io.error("Error removing peer: an address or id is required for the peer to remove"),
        (false, false) => return io.error("Error removing peer: cannot give both an address and id"),
        (false, true) => ("address", address),
        (true, false) => ("id", id),
    };
    if let Err(e) = client.request_ok("DELETE", "/v1/operator/raft/peer", &[query], None) {
        return io.error(format!("Error removing peer: {e}"));
    }
    if !address.is_empty() {
        io.info(format!("Removed peer with address {address:?}"));
    } else {
        io.info(format!("Removed peer with id {id:?}"));
    }
    0
}

const TRANSFER_HELP: &str = "Usage: concord operator raft transfer-leader [options]

  Transfer raft leadership to another node.";

fn transfer_leader(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = server_flags(FlagSet::new().string("id", "", "The ID of the node to transfer leadership to."));
    if let Err(code) = parse_flags(&mut fs, args, TRANSFER_HELP, io) {
        return code;
    }
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error initializing client: {e}")),
    };
    let id = fs.get_str("id");
    let query: Vec<(&str, &str)> = if id.is_empty() { Vec::new() } else { vec![("id", id)] };
    #[derive(Deserialize)]
    struct Reply {
        #[serde(rename = "Success", default)]
        success: bool,
    }
    let result = client
        .request_ok("POST", "/v1/operator/raft/transfer-leader", &query, None)
        .map_err(|e| format!("Failed to transfer leadership {e}"))
        .and_then(|body| {
            serde_json::from_slice::<Reply>(&body).map_err(|e| format!("Failed to transfer leadership {e}"))
        });
    match result {
        Ok(Reply { success: true }) => {
            io.info("Success");
            0
        }
        Ok(_) => io.error("Error transfering leadership: Failed to transfer leadership"),
        Err(e) => io.error(format!("Error transfering leadership: {e}")),
    }
}
