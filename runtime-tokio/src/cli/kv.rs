//! `concord kv get|put|delete|export|import`, with the flags, messages and output of Consul's
//! `command/kv/*`.

use super::client::{server_flags, Client};
use super::flags::FlagSet;
use super::{group_usage, parse_flags, Io};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

const USAGE: &str = "Usage: concord kv <subcommand> [options] [args]

  This command has subcommands for interacting with the key-value store.

Subcommands:
    delete    Removes data from the KV store
    export    Exports a tree from the KV store as JSON
    get       Retrieves or lists data from the KV store
    import    Imports a tree stored as JSON to the KV store
    put       Sets or updates data in the KV store";

pub(crate) fn run(args: &[String], io: &mut Io<'_>) -> i32 {
    match args.split_first() {
        Some((cmd, rest)) => match cmd.as_str() {
            "get" => get(rest, io),
            "put" => put(rest, io),
            "delete" => delete(rest, io),
            "export" => export(rest, io),
            "import" => import(rest, io),
            _ => group_usage(io, args, USAGE),
        },
        None => group_usage(io, args, USAGE),
    }
}

/// A KV entry as the API returns it (Consul's `api.KVPair`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair {
    key: String,
    #[serde(default)]
    create_index: u64,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    flags: u64,
    /// Base64, or null for an empty value.
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    session: Option<String>,
}

impl KvPair {
    fn value(&self) -> Vec<u8> {
        self.value
            .as_deref()
            .and_then(|v| B64.decode(v).ok())
            .unwrap_or_default()
    }
}

fn parse_pairs(body: &[u8]) -> Result<Vec<KvPair>, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid response from the agent: {e}"))
}

fn strip_slash(key: &str) -> &str {
    key.strip_prefix('/').unwrap_or(key)
}

/// Consul's `prettyKVPair`: a tabwriter with padding 6, so labels take 17 columns.
fn pretty_pair(pair: &KvPair, base64: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut row = |label: &str, value: &[u8], last: bool| {
        out.extend_from_slice(format!("{label:<17}").as_bytes());
        out.extend_from_slice(value);
        if !last {
            out.push(b'\n');
        }
    };
    row("CreateIndex", pair.create_index.to_string().as_bytes(), false);
    row("Flags", pair.flags.to_string().as_bytes(), false);
    row("Key", pair.key.as_bytes(), false);
    row("LockIndex", pair.lock_index.to_string().as_bytes(), false);
    row("ModifyIndex", pair.modify_index.to_string().as_bytes(), false);
    row(
        "Session",
        pair.session
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("-")
            .as_bytes(),
        false,
    );
    let value = if base64 {
        B64.encode(pair.value()).into_bytes()
    } else {
        pair.value()
    };
    row("Value", &value, true);
    out
}

const GET_HELP: &str = "Usage: concord kv get [options] [KEY_OR_PREFIX]

  Retrieves the value from the key-value store at the given key name. If no key exists with that name,
  an error is returned. If a key exists with that name but has no data, nothing is returned.";

fn get(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = server_flags(
        FlagSet::new()
            .bool("base64", "Base64 encode the value. The default value is false.")
            .bool(
                "detailed",
                "Provide additional metadata about the key in addition to the value.",
            )
            .bool(
                "keys",
                "List keys which start with the given prefix, but not their values.",
            )
            .bool("recurse", "Recursively look at all keys prefixed with the given path.")
            .string(
                "separator",
                "/",
                "String to use as a separator between keys (with -keys).",
            ),
    );
    if let Err(code) = parse_flags(&mut fs, args, GET_HELP, io) {
        return code;
    }
    let key = match fs.args() {
        [] => "",
        [key] => strip_slash(key),
        more => return io.error(format!("Too many arguments (expected 1, got {})", more.len())),
    };
    let (keys, recurse, detailed, base64) = (
        fs.get_bool("keys"),
        fs.get_bool("recurse"),
        fs.get_bool("detailed"),
        fs.get_bool("base64"),
    );
    if key.is_empty() && !(recurse || keys) {
        return io.error("Error! Missing KEY argument");
    }
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error connecting to Consul agent: {e}")),
    };
    let stale: &[(&str, &str)] = if client.stale() { &[("stale", "")] } else { &[] };
    let path = format!("/v1/kv/{key}");
    let mut query: Vec<(&str, &str)> = stale.to_vec();
    if keys {
        query.push(("keys", ""));
        let sep = fs.get_str("separator");
        if !sep.is_empty() {
            query.push(("separator", sep));
        }
    } else if recurse {
        query.push(("recurse", ""));
    }
    let reply = match client.request("GET", &path, &query, None) {
        Ok(r) => r,
        Err(e) => return io.error(format!("Error querying Consul agent: {e}")),
    };
    let found = reply.status != 404;
    if keys {
        let list: Vec<String> = if found {
            match serde_json::from_slice(&reply.body) {
                Ok(l) => l,
                Err(e) => return io.error(format!("Error querying Consul agent: invalid response: {e}")),
            }
        } else {
            Vec::new()
        };
        for k in list {
            io.info(k);
        }
        return 0;
    }
    let pairs = if found {
        match parse_pairs(&reply.body) {
            Ok(p) => p,
            Err(e) => return io.error(format!("Error querying Consul agent: {e}")),
        }
    } else {
        Vec::new()
    };
    if recurse {
        for (i, pair) in pairs.iter().enumerate() {
            if detailed {
                io.info(pretty_pair(pair, base64));
                if i + 1 < pairs.len() {
                    io.info("");
                }
            } else {
                let mut line = format!("{}:", pair.key).into_bytes();
                if base64 {
                    line.extend_from_slice(B64.encode(pair.value()).as_bytes());
                } else {
                    line.extend_from_slice(&pair.value());
                }
                io.info(line);
            }
        }
        return 0;
    }
    let Some(pair) = pairs.first() else {
        return io.error(format!("Error! No key exists at: {key}"));
    };
    if detailed {
        io.info(pretty_pair(pair, base64));
    } else {
        io.info(pair.value());
    }
    0
}

const PUT_HELP: &str = "Usage: concord kv put [options] KEY [DATA]

  Writes the data to the given path in the key-value store. DATA may be @file to read a file, or - to
  read stdin. With -cas, -modify-index gives the ModifyIndex the key must still have.";

/// Consul's `dataFromArgs` for `kv put`: a literal, `@file`, or `-` for stdin.
fn data_arg(data: &str, io: &mut Io<'_>) -> Result<Vec<u8>, String> {
    match data.as_bytes().first() {
        None => Ok(Vec::new()),
        Some(b'@') => std::fs::read(&data[1..]).map_err(|e| format!("Failed to read file: {e}")),
        Some(b'-') if data.len() == 1 => {
            let mut buf = Vec::new();
            io.stdin
                .read_to_end(&mut buf)
                .map_err(|e| format!("Failed to read stdin: {e}"))?;
            Ok(buf)
        }
        Some(_) => Ok(data.as_bytes().to_vec()),
    }
}

fn put(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = server_flags(
        FlagSet::new()
            .bool(
                "cas",
                "Perform a Check-And-Set operation. Requires the -modify-index flag.",
            )
            .u64("flags", "Unsigned integer value to assign to this key-value pair.")
            .bool("base64", "Treat the data as base 64 encoded.")
            .u64(
                "modify-index",
                "Unsigned integer representing the ModifyIndex of the key (with -cas).",
            )
            .string("session", "", "User-defined identifier for this session as a string.")
            .bool("acquire", "Obtain a lock on the key (requires -session).")
            .bool("release", "Forfeit the lock on the key (requires -session)."),
    );
    if let Err(code) = parse_flags(&mut fs, args, PUT_HELP, io) {
        return code;
    }
    let (key, data) = match fs.args() {
        [] => return io.error("Error! Missing KEY argument"),
        [key] => (key.clone(), Vec::new()),
        [key, data] => match data_arg(data, io) {
            Ok(d) => (key.clone(), d),
            Err(e) => return io.error(format!("Error! {e}")),
        },
        more => {
            return io.error(format!(
                "Error! Too many arguments (expected 1 or 2, got {})",
                more.len()
            ))
        }
    };
    let data = if fs.get_bool("base64") {
        match B64.decode(&data) {
            Ok(d) => d,
            Err(e) => return io.error(format!("Error! Cannot base 64 decode data: {e}")),
        }
    } else {
        data
    };
    let (cas, acquire, release) = (fs.get_bool("cas"), fs.get_bool("acquire"), fs.get_bool("release"));
    let session = fs.get_str("session");
    if (acquire || release) && session.is_empty() {
        return io.error("Error! Missing -session (required with -acquire and -release)");
    }
    let modify_index = fs.get_u64("modify-index");
    if cas && modify_index == 0 {
        return io.error("Must specify -modify-index with -cas!");
    }
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error connecting to Consul agent: {e}")),
    };
    if key.starts_with('/') {
        return io.error(format!(
            "Error! Failed writing data: Invalid key. Key must not begin with a '/': {key}"
        ));
    }
    let flags = fs.get_u64("flags").to_string();
    let index = modify_index.to_string();
    let mut query: Vec<(&str, &str)> = Vec::new();
    if flags != "0" {
        query.push(("flags", &flags));
    }
    if cas {
        query.push(("cas", &index));
    } else if acquire {
        query.push(("acquire", session));
    } else if release {
        query.push(("release", session));
    }
    let result = client.request_ok("PUT", &format!("/v1/kv/{key}"), &query, Some(&data));
    let written = result.map(|body| body.trim_ascii() == b"true");
    match (cas, acquire, release, written) {
        (true, _, _, Err(e)) => io.error(format!("Error! Did not write to {key}: {e}")),
        (true, _, _, Ok(false)) => io.error(format!("Error! Did not write to {key}: CAS failed")),
        (_, true, _, Ok(false)) => io.error("Error! Did not acquire lock"),
        (_, true, _, Ok(true)) => {
            io.info(format!("Success! Lock acquired on: {key}"));
            0
        }
        (_, _, true, Ok(false)) => io.error("Error! Did not release lock"),
        (_, _, true, Ok(true)) => {
            io.info(format!("Success! Lock released on: {key}"));
            0
        }
        (_, _, _, Err(e)) => io.error(format!("Error! Failed writing data: {e}")),
        (_, _, _, Ok(_)) => {
            io.info(format!("Success! Data written to: {key}"));
            0
        }
    }
}

const DELETE_HELP: &str = "Usage: concord kv delete [options] KEY_OR_PREFIX

  Removes the value from the key-value store at the given path. If no key exists at the path, no action
  is taken. With -recurse, every key starting with the prefix is removed.";

fn delete(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = server_flags(
        FlagSet::new()
            .bool(
                "cas",
                "Perform a Check-And-Set operation. Requires the -modify-index flag.",
            )
            .u64(
                "modify-index",
                "Unsigned integer representing the ModifyIndex of the key (with -cas).",
            )
            .bool("recurse", "Recursively delete all keys with the path."),
    );
    if let Err(code) = parse_flags(&mut fs, args, DELETE_HELP, io) {
        return code;
    }
    let key = match fs.args() {
        [] => "",
        [key] => strip_slash(key),
        more => return io.error(format!("Too many arguments (expected 1, got {})", more.len())),
    };
    let (cas, recurse, modify_index) = (fs.get_bool("cas"), fs.get_bool("recurse"), fs.get_u64("modify-index"));
    if key.is_empty() && !recurse {
        return io.error("Error! Missing KEY argument");
    }
    if cas && modify_index == 0 {
        return io.error("Cannot delete a key that does not exist. Provide a -modify-index greater than than 0.");
    }
    if modify_index != 0 && !cas {
        return io.error("Cannot specify -modify-index without -cas!");
    }
    if recurse && cas {
        return io.error("Cannot specify both -cas and -recurse!");
    }
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error connecting to Consul agent: {e}")),
    };
    let path = format!("/v1/kv/{key}");
    if recurse {
        return match client.request_ok("DELETE", &path, &[("recurse", "")], None) {
            Ok(_) => {
                io.info(format!("Success! Deleted keys with prefix: {key}"));
                0
            }
            Err(e) => io.error(format!("Error! Did not delete prefix {key}: {e}")),
        };
    }
    if cas {
        let index = modify_index.to_string();
        return match client.request_ok("DELETE", &path, &[("cas", &index)], None) {
            Ok(body) if body.trim_ascii() == b"true" => {
                io.info(format!("Success! Deleted key: {key}"));
                0
            }
            Ok(_) => io.error(format!("Error! Did not delete key {key}: CAS failed")),
            Err(e) => io.error(format!("Error! Did not delete key {key}: {e}")),
        };
    }
    match client.request_ok("DELETE", &path, &[], None) {
        Ok(_) => {
            io.info(format!("Success! Deleted key: {key}"));
            0
        }
        Err(e) => io.error(format!("Error deleting key {key}: {e}")),
    }
}

/// `kv export`/`kv import`'s entry (Consul's `impexp.Entry`, lowercase keys). Import accepts any casing
/// of the names, as Go's `encoding/json` does for the common spellings.
#[derive(Serialize, Deserialize)]
struct Entry {
    #[serde(alias = "Key", alias = "KEY")]
    key: String,
    #[serde(alias = "Flags", alias = "FLAGS", default)]
    flags: u64,
    #[serde(alias = "Value", alias = "VALUE", default)]
    value: String,
}

const EXPORT_HELP: &str = "Usage: concord kv export [KEY_OR_PREFIX]

  Retrieves key-value pairs for the given prefix from the key-value store, and writes a JSON
  representation to stdout. This can be used with the command \"concord kv import\" to move entire
  trees between clusters.";

fn export(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = server_flags(FlagSet::new());
    if let Err(code) = parse_flags(&mut fs, args, EXPORT_HELP, io) {
        return code;
    }
    let key = match fs.args() {
        [] => "",
        [key] => strip_slash(key),
        more => return io.error(format!("Too many arguments (expected 1, got {})", more.len())),
    };
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error connecting to Consul agent: {e}")),
    };
    let mut query = vec![("recurse", "")];
    if client.stale() {
        query.push(("stale", ""));
    }
    let reply = match client.request("GET", &format!("/v1/kv/{key}"), &query, None) {
        Ok(r) => r,
        Err(e) => return io.error(format!("Error querying Consul agent: {e}")),
    };
    let pairs = if reply.status == 404 {
        Vec::new()
    } else {
        match parse_pairs(&reply.body) {
            Ok(p) => p,
            Err(e) => return io.error(format!("Error querying Consul agent: {e}")),
        }
    };
    let entries: Vec<Entry> = pairs
        .iter()
        .map(|p| Entry {
            key: p.key.clone(),
            flags: p.flags,
            value: B64.encode(p.value()),
        })
        .collect();
    // Go's json.MarshalIndent(…, "", "\t").
    let buf = crate::http::reply::go_json(&entries, Some(b"\t"));
    io.info(buf);
    0
}

const IMPORT_HELP: &str = "Usage: concord kv import [DATA]

  Imports key-value pairs to the key-value store from the JSON representation generated by the
  \"concord kv export\" command. DATA may be @file to read a file, or - to read stdin.";

fn import(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = server_flags(FlagSet::new());
    if let Err(code) = parse_flags(&mut fs, args, IMPORT_HELP, io) {
        return code;
    }
    let data = match fs.args() {
        [] => return io.error("Error! Missing DATA argument"),
        [data] if data.is_empty() => return io.error("Error! Empty DATA argument"),
        [data] => match data_arg(data, io) {
            Ok(d) => d,
            Err(e) => return io.error(format!("Error! {e}")),
        },
        more => return io.error(format!("Error! Too many arguments (expected 1, got {})", more.len())),
    };
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error connecting to Consul agent: {e}")),
    };
    let entries: Vec<Entry> = match serde_json::from_slice(&data) {
        Ok(e) => e,
        Err(e) => return io.error(format!("Cannot unmarshal data: {e}")),
    };
    for entry in entries {
        let value = match B64.decode(&entry.value) {
            Ok(v) => v,
            Err(e) => return io.error(format!("Error base 64 decoding value for key {}: {e}", entry.key)),
        };
        let flags = entry.flags.to_string();
        let query: Vec<(&str, &str)> = if entry.flags != 0 {
            vec![("flags", &flags)]
        } else {
            Vec::new()
        };
        if let Err(e) = client.request_ok("PUT", &format!("/v1/kv/{}", entry.key), &query, Some(&value)) {
            return io.error(format!("Error! Failed writing data for key {}: {e}", entry.key));
        }
        io.info(format!("Imported: {}", entry.key));
    }
    0
}
