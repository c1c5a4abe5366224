//! `concord catalog datacenters|nodes|services`, `concord services register|deregister` and
//! `concord maint`, with Consul's output (columns as `ryanuber/columnize`: two spaces between columns,
//! the last column unpadded).

use super::client::{client_flags, server_flags, Client};
use super::flags::FlagSet;
use super::{group_usage, parse_flags, Io};
use serde_json::{json, Value};

fn client(fs: &FlagSet, io: &mut Io<'_>) -> Result<Client, i32> {
    Client::new(fs, io.env).map_err(|e| io.error(format!("Error connecting to Consul agent: {e}")))
}

/// GET `path` as JSON, `?stale` when asked.
fn get_json(client: &Client, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
    let mut query = query.to_vec();
    if client.stale() {
        query.push(("stale", ""));
    }
    let body = client
        .request_ok("GET", path, &query, None)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("invalid response: {e}"))
}

/// `columnize.SimpleFormat`: columns separated by two spaces, padded to the widest cell.
fn columnize(rows: &[Vec<String>]) -> Vec<String> {
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
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
                }
            }
            line
        })
        .collect()
}

const CATALOG_USAGE: &str = "Usage: concord catalog <subcommand> [options] [args]

  Interact with the service catalog.

Subcommands:
    datacenters    Lists all known datacenters
    nodes          Lists all nodes in the given datacenter
    services       Lists all registered services in a datacenter";

pub(crate) fn catalog(args: &[String], io: &mut Io<'_>) -> i32 {
    match args.first().map(String::as_str) {
        Some("datacenters") => datacenters(&args[1..], io),
        Some("nodes") => nodes(&args[1..], io),
        Some("services") => services(&args[1..], io),
        _ => group_usage(io, args, CATALOG_USAGE),
    }
}

fn datacenters(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new());
    if let Err(code) = parse_flags(&mut fs, args, "Usage: concord catalog datacenters [options]", io) {
        return code;
    }
    let client = match client(&fs, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match get_json(&client, "/v1/catalog/datacenters", &[]) {
        Ok(Value::Array(dcs)) if !dcs.is_empty() => {
            for dc in dcs {
                io.info(dc.as_str().unwrap_or_default());
            }
            0
        }
        Ok(_) => io.error("No datacenters found"),
        Err(e) => io.error(format!("Error listing datacenters: {e}")),
    }
}

fn nodes(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = server_flags(FlagSet::new())
        .bool(
            "detailed",
            "Output detailed information about the nodes including their addresses and metadata.",
        )
        .string(
            "service",
            "",
            "Service `id or name` to filter nodes. Only nodes which are providing the given service will be returned.",
        )
        .string("filter", "", "Filter to use with the request")
        .string(
            "near",
            "",
            "Node name to sort the node list in ascending order based on estimated round-trip time from that \
             node. Passing \"_agent\" will use this agent's node for sorting.",
        );
    if let Err(code) = parse_flags(&mut fs, args, "Usage: concord catalog nodes [options]", io) {
        return code;
    }
    let client = match client(&fs, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let filter = fs.get_str("filter");
    let mut query: Vec<(&str, &str)> = if filter.is_empty() {
        vec![]
    } else {
        vec![("filter", filter)]
    };
    let near = fs.get_str("near");
    if !near.is_empty() {
        query.push(("near", near));
    }
    let service = fs.get_str("service");
    let path = if service.is_empty() {
        "/v1/catalog/nodes".to_string()
    } else {
        format!("/v1/catalog/service/{service}")
    };
    let nodes = match get_json(&client, &path, &query) {
        Ok(Value::Array(n)) => n,
        Ok(_) => Vec::new(),
        Err(e) => return io.error(format!("Error listing nodes: {e}")),
    };
    if nodes.is_empty() {
        return io.error("No nodes match the given query - try expanding your search.");
    }
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let detailed = fs.get_bool("detailed");
    let mut rows = vec![if detailed {
        vec!["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"]
    } else {
        vec!["Node", "ID", "Address", "DC"]
    }
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>()];
    for n in &nodes {
        let id = s(n, "ID");
        let short = if detailed { id } else { id.chars().take(8).collect() };
        let dc = s(n, "Datacenter");
        let mut row = vec![s(n, "Node"), short, s(n, "Address"), dc];
        if detailed {
            let kv = |m: &Value| {
                m.as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            row.push(kv(&n["TaggedAddresses"]));
            row.push(kv(if n.get("Meta").is_some() {
                &n["Meta"]
            } else {
                &n["NodeMeta"]
            }));
        }
        rows.push(row);
    }
    for line in columnize(&rows) {
        io.info(line);
    }
    0
}

fn services(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = server_flags(FlagSet::new())
        .bool(
            "tags",
            "Display each service's tags as a comma-separated list beside each service entry.",
        )
        .string("node", "", "`Node` `id or name` for which to list services.");
    if let Err(code) = parse_flags(&mut fs, args, "Usage: concord catalog services [options]", io) {
        return code;
    }
    let client = match client(&fs, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let node = fs.get_str("node");
    let services: Vec<(String, Vec<String>)> = if node.is_empty() {
        match get_json(&client, "/v1/catalog/services", &[]) {
            Ok(Value::Object(m)) => m
                .into_iter()
                .map(|(k, v)| {
                    let tags = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect();
                    (k, tags)
                })
                .collect(),
            Ok(_) => Vec::new(),
            Err(e) => return io.error(format!("Error listing services: {e}")),
        }
    } else {
        match get_json(&client, &format!("/v1/catalog/node/{node}"), &[]) {
            Ok(Value::Object(n)) => {
                let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
                for svc in n
                    .get("Services")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(_, v)| v)
                {
                    let tags = by_name
                        .entry(svc["Service"].as_str().unwrap_or_default().to_string())
                        .or_default();
                    for t in svc["Tags"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                        if !tags.iter().any(|x| x == t) {
                            tags.push(t.to_string());
                        }
                    }
                }
                by_name.into_iter().collect()
            }
            Ok(_) => return io.error(format!("No node found with name or id {node:?}")),
            Err(e) => return io.error(format!("Error listing services for node: {e}")),
        }
    };
    if services.is_empty() {
        return io.error("No services match the given query - try expanding your search.");
    }
    if fs.get_bool("tags") {
        let rows: Vec<Vec<String>> = services
            .into_iter()
            .map(|(name, tags)| vec![name, tags.join(",")])
            .collect();
        for line in columnize(&rows) {
            io.info(line.trim_end());
        }
    } else {
        for (name, _) in services {
            io.info(name);
        }
    }
    0
}

const SERVICES_USAGE: &str = "Usage: concord services <subcommand> [options] [args]

  Register and deregister services on the local agent.

Subcommands:
    deregister    Deregister services with the local agent
    register      Register services with the local agent";

pub(crate) fn services_cmd(args: &[String], io: &mut Io<'_>) -> i32 {
    match args.first().map(String::as_str) {
        Some("register") => register(&args[1..], io),
        Some("deregister") => deregister(&args[1..], io),
        _ => group_usage(io, args, SERVICES_USAGE),
    }
}

/// The service definitions of a JSON file: `{"service": {…}}` or `{"services": […]}`.
fn definitions_from_file(path: &str) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("Error reading {path}: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("Error parsing {path}: {e}"))?;
    let mut out = Vec::new();
    for (k, val) in v.as_object().into_iter().flatten() {
        match (k.to_ascii_lowercase().as_str(), val) {
            ("service", Value::Object(_)) => out.push(val.clone()),
            ("services", Value::Array(items)) => out.extend(items.iter().cloned()),
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(format!(
            "Error: {path} holds no service definitions (expected \"service\" or \"services\")"
        ));
    }
    Ok(out)
}

fn register(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new())
        .string("name", "", "Name of the service to register.")
        .string("id", "", "ID of the service to register. Defaults to the name.")
        .string("address", "", "Address of the service to register.")
        .u64("port", "Port of the service to register.")
        .list(
            "tag",
            "Tag to add to the service. This flag can be specified multiple times.",
        )
        .list(
            "meta",
            "Metadata to set on the service, formatted as key=value. This flag can be specified multiple times.",
        );
    let help = "Usage: concord services register [options] [FILE...]\n\n  Register one or more services using the local agent API.";
    if let Err(code) = parse_flags(&mut fs, args, help, io) {
        return code;
    }
    let defs: Vec<Value> = if fs.args().is_empty() {
        let name = fs.get_str("name");
        if name.is_empty() {
            return io.error("Service name must be specified via the -name flag or a file");
        }
        let mut meta = serde_json::Map::new();
        for kv in fs.get_list("meta") {
            match kv.split_once('=') {
                Some((k, v)) => meta.insert(k.to_string(), Value::String(v.to_string())),
                None => return io.error(format!("Invalid meta {kv:?}: expected key=value")),
            };
        }
        vec![json!({
            "Name": name,
            "ID": fs.get_str("id"),
            "Address": fs.get_str("address"),
            "Port": fs.get_u64("port"),
            "Tags": fs.get_list("tag"),
            "Meta": meta,
        })]
    } else {
        let mut all = Vec::new();
        for path in fs.args() {
            match definitions_from_file(path) {
                Ok(d) => all.extend(d),
                Err(e) => return io.error(e),
            }
        }
        all
    };
    let client = match client(&fs, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for def in defs {
        let name = def
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("name")))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or_default()
            .to_string();
        let body = serde_json::to_vec(&def).expect("JSON encodes");
        if let Err(e) = client.request_ok("PUT", "/v1/agent/service/register", &[], Some(&body)) {
            return io.error(format!("Error registering service {name:?}: {e}"));
        }
        io.info(format!("Registered service: {name}"));
    }
    0
}

fn deregister(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new()).string(
        "id",
        "",
        "ID to deregister. This must not be set if arguments are given.",
    );
    let help = "Usage: concord services deregister [options] [FILE...]\n\n  Deregister one or more services that were previously registered with the local agent.";
    if let Err(code) = parse_flags(&mut fs, args, help, io) {
        return code;
    }
    let id = fs.get_str("id");
    let ids: Vec<String> = match (id.is_empty(), fs.args().is_empty()) {
        (false, true) => vec![id.to_string()],
        (true, false) => {
            let mut ids = Vec::new();
            for path in fs.args() {
                match definitions_from_file(path) {
                    Ok(defs) => {
                        for d in defs {
                            let field = |name: &str| {
                                d.as_object()
                                    .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                                    .and_then(|(_, v)| v.as_str())
                                    .unwrap_or_default()
                                    .to_string()
                            };
                            let id = field("id");
                            ids.push(if id.is_empty() { field("name") } else { id });
                        }
                    }
                    Err(e) => return io.error(e),
                }
            }
            ids
        }
        (false, false) => return io.error("Only one of -id or a file may be given"),
        (true, true) => return io.error("Either -id or a file must be given"),
    };
    let client = match client(&fs, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for id in ids {
        if let Err(e) = client.request_ok("PUT", &format!("/v1/agent/service/deregister/{id}"), &[], None) {
            return io.error(format!("Error deregistering service {id:?}: {e}"));
        }
        io.info(format!("Deregistered service: {id}"));
    }
    0
}

const MAINT_HELP: &str = "Usage: concord maint [options]

  Places a node or service into maintenance mode. During maintenance mode, the node or service will be
  excluded from all queries through the DNS or API interfaces, effectively taking it out of the pool of
  available nodes. This is done by registering an additional critical health check.

  With no options, lists the node and services currently in maintenance mode.";

pub(crate) fn maint(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new())
        .bool("enable", "Enable maintenance mode.")
        .bool("disable", "Disable maintenance mode.")
        .string("reason", "", "Text describing the maintenance reason.")
        .string("service", "", "Control maintenance mode for a specific service ID.");
    if let Err(code) = parse_flags(&mut fs, args, MAINT_HELP, io) {
        return code;
    }
    let (enable, disable) = (fs.get_bool("enable"), fs.get_bool("disable"));
    if enable && disable {
        return io.error("Only one of -enable or -disable may be provided");
    }
    let (reason, service) = (fs.get_str("reason").to_string(), fs.get_str("service").to_string());
    if !enable && !disable && (!reason.is_empty() || !service.is_empty()) {
        return io.error("Reason and service only apply with -enable or -disable");
    }
    let client = match client(&fs, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !enable && !disable {
        return list_maintenance(&client, io);
    }
    let on = if enable { "true" } else { "false" };
    let (path, what) = if service.is_empty() {
        ("/v1/agent/maintenance".to_string(), "Node".to_string())
    } else {
        (
            format!("/v1/agent/service/maintenance/{service}"),
            "Service".to_string(),
        )
    };
    let query = [("enable", on), ("reason", reason.as_str())];
    if let Err(e) = client.request_ok("PUT", &path, &query, None) {
        return io.error(format!(
            "Error {} maintenance mode: {e}",
            if enable { "enabling" } else { "disabling" }
        ));
    }
    match (enable, service.is_empty()) {
        (true, true) => io.info(format!("{what} entered maintenance mode")),
        (false, true) => io.info(format!("{what} left maintenance mode")),
        (true, false) => io.info(format!("{what} entered maintenance mode: {service}")),
        (false, false) => io.info(format!("{what} left maintenance mode: {service}")),
    }
    0
}

fn list_maintenance(client: &Client, io: &mut Io<'_>) -> i32 {
    let checks = match get_json(client, "/v1/agent/checks", &[]) {
        Ok(Value::Object(c)) => c,
        Ok(_) => Default::default(),
        Err(e) => return io.error(format!("Error getting checks: {e}")),
    };
    for (id, c) in &checks {
        let notes = c["Notes"].as_str().unwrap_or_default();
        if id == concord_core::agent::NODE_MAINTENANCE_CHECK {
            io.info("Node:");
            io.info(format!("  Name:   {}", c["Node"].as_str().unwrap_or_default()));
            io.info(format!("  Reason: {notes}"));
            io.info("");
        } else if let Some(service) = id.strip_prefix(concord_core::agent::SERVICE_MAINTENANCE_PREFIX) {
            io.info("Service:");
            io.info(format!("  ID:     {service}"));
            io.info(format!("  Reason: {notes}"));
            io.info("");
        }
    }
    0
}
