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
    let (keys, recurse) = (fs.get_bool("keys"), fs.get_bool("recurse"));
    if key.is_empty() && !(recurse || keys) {
        return io.error("Error! Missing KEY argument");
    }
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error connecting to Consul agent: {e}")),
    };
    let mut query: Vec<(&str, &str)> = if client.stale() {
        vec![("stale", "")]
    } else {
        Vec::new()
    };
    if keys {
        query.push(("keys", ""));
        let sep = fs.get_str("separator");
        if !sep.is_empty() {
            query.push(("separator", sep));
        }
    } else if recurse {
        query.push(("recurse", ""));
    }
    // 404 means "nothing there": an empty list, or the missing-key error for a single get.
    let body = match client.request("GET", &format!("/v1/kv/{key}"), &query, None) {
        Ok(reply) if reply.status == 404 => None,
        Ok(reply) => Some(reply.body),
        Err(e) => return io.error(format!("Error querying Consul agent: {e}")),
    };
    let (detailed, base64) = (fs.get_bool("detailed"), fs.get_bool("base64"));
    let printed = if keys {
        print_keys(body.as_deref(), io)
    } else if recurse {
        print_pairs(body.as_deref(), detailed, base64, io)
    } else {
        print_single(body.as_deref(), key, detailed, base64, io)
    };
    match printed {
        Ok(code) => code,
        Err(e) => io.error(format!("Error querying Consul agent: {e}")),
    }
}

fn print_keys(body: Option<&[u8]>, io: &mut Io<'_>) -> Result<i32, String> {
    let keys: Vec<String> = match body {
        Some(body) => serde_json::from_slice(body).map_err(|e| format!("invalid response from the agent: {e}"))?,
        None => Vec::new(),
    };
    for k in keys {
        io.info(k);
    }
    Ok(0)
}

/// `kv get -recurse`: `key:value` lines, or detailed blocks separated by blank lines.
fn print_pairs(body: Option<&[u8]>, detailed: bool, base64: bool, io: &mut Io<'_>) -> Result<i32, String> {
    let pairs = body.map(parse_pairs).transpose()?.unwrap_or_default();
    for (i, pair) in pairs.iter().enumerate() {
        if detailed {
            io.info(pretty_pair(pair, base64));
            if i + 1 < pairs.len() {
                io.info("");
            }
        } else {
            let mut line = format!("{}:", pair.key).into_bytes();
            match base64 {
                true => line.extend_from_slice(B64.encode(pair.value()).as_bytes()),
                false => line.extend_from_slice(&pair.value()),
            }
            io.info(line);
        }
    }
    Ok(0)
}

fn print_single(body: Option<&[u8]>, key: &str, detailed: bool, base64: bool, io: &mut Io<'_>) -> Result<i32, String> {
    let pairs = body.map(parse_pairs).transpose()?.unwrap_or_default();
    let Some(pair) = pairs.first() else {
        return Ok(io.error(format!("Error! No key exists at: {key}")));
    };
    match detailed {
        true => io.info(pretty_pair(pair, base64)),
        false => io.info(pair.value()),
    }
    Ok(0)
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
    let (key, data) = match put_args(&fs, io) {
        Ok(kd) => kd,
        Err(e) => return io.error(e),
    };
    let (cas, acquire, release) = (fs.get_bool("cas"), fs.get_bool("acquire"), fs.get_bool("release"));
    let session = fs.get_str("session");
    if (acquire || release) && session.is_empty() {
        return io.error("Error! Missing -session (required with -acquire and -release)");
    }
    let modify_index = fs.get_u64("modify-index").to_string();
    if cas && modify_index == "0" {
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
    let mut query: Vec<(&str, &str)> = if flags != "0" {
        vec![("flags", &flags)]
    } else {
        Vec::new()
    };
    match (cas, acquire, release) {
        (true, _, _) => query.push(("cas", &modify_index)),
        (_, true, _) => query.push(("acquire", session)),
        (_, _, true) => query.push(("release", session)),
        _ => {}
    }
    let written = client.request_ok("PUT", &format!("/v1/kv/{key}"), &query, Some(&data));
    match written.map(|body| body.trim_ascii() == b"true") {
        Err(e) if cas => io.error(format!("Error! Did not write to {key}: {e}")),
        Err(e) => io.error(format!("Error! Failed writing data: {e}")),
        Ok(false) if cas => io.error(format!("Error! Did not write to {key}: CAS failed")),
        Ok(false) if acquire => io.error("Error! Did not acquire lock"),
        Ok(false) if release => io.error("Error! Did not release lock"),
        // A plain PUT always succeeds once the agent accepted it.
        Ok(_) => {
            io.info(match (acquire, release) {
                (true, _) => format!("Success! Lock acquired on: {key}"),
                (_, true) => format!("Success! Lock released on: {key}"),
                _ => format!("Success! Data written to: {key}"),
            });
            0
        }
    }
}

/// `KEY [DATA]`, with DATA read from `@file` or stdin and base64-decoded under `-base64`.
fn put_args(fs: &FlagSet, io: &mut Io<'_>) -> Result<(String, Vec<u8>), String> {
    let (key, data) = match fs.args() {
        [] => return Err("Error! Missing KEY argument".into()),
        [key] => (key.clone(), Vec::new()),
        [key, data] => (key.clone(), data_arg(data, io).map_err(|e| format!("Error! {e}"))?),
        more => {
            return Err(format!(
                "Error! Too many arguments (expected 1 or 2, got {})",
                more.len()
            ))
        }
    };
    if !fs.get_bool("base64") {
        return Ok((key, data));
    }
    B64.decode(&data)
        .map(|d| (key, d))
        .map_err(|e| format!("Error! Cannot base 64 decode data: {e}"))
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
