//! `concord rtt <node1> [node2]` (Consul's `command/rtt`): the estimated round trip between two nodes from
//! their network coordinates; the second node defaults to the agent's own. `-wan` uses the servers' WAN
//! coordinates (`<node>.<dc>` names) from `/v1/coordinate/datacenters`.

use super::client::{client_flags, Client};
use super::flags::FlagSet;
use super::{parse_flags, Io};
use concord_core::coordinate::Coordinate;
use serde::Deserialize;

const HELP: &str = "Usage: concord rtt [options] node1 [node2]

  Estimates the round trip time between two nodes using their network coordinates. If only one node
  is given, the other is the agent's own node. With -wan, the node names are server names in the form
  <node>.<datacenter>.";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CoordJson {
    #[serde(default)]
    vec: Vec<f64>,
    #[serde(default)]
    error: f64,
    #[serde(default)]
    adjustment: f64,
    #[serde(default)]
    height: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EntryJson {
    node: String,
    #[serde(default)]
    segment: String,
    coord: CoordJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DatacenterJson {
    #[serde(default)]
    coordinates: Vec<EntryJson>,
}

impl From<&CoordJson> for Coordinate {
    fn from(c: &CoordJson) -> Self {
        Coordinate {
            vec: c.vec.clone(),
            error: c.error,
            adjustment: c.adjustment,
            height: c.height,
        }
    }
}

/// Consul's output line: the distance as Go's `time.Duration` (whole nanoseconds) in milliseconds.
pub(crate) fn estimate_line(a: &str, b: &str, ca: &Coordinate, cb: &Coordinate, wan: bool) -> String {
    let ms = ca.distance_to(cb).as_secs_f64() * 1000.0;
    let source = if wan { "WAN" } else { "LAN" };
    format!("Estimated {a} <-> {b} rtt: {ms:.3} ms (using {source} coordinates)")
}

pub(crate) fn rtt(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new()).bool("wan", "Use WAN coordinates instead of LAN coordinates.");
    if let Err(code) = parse_flags(&mut fs, args, HELP, io) {
        return code;
    }
    let mut nodes: Vec<String> = fs.args().to_vec();
    if nodes.is_empty() || nodes.len() > 2 {
        return io.error("One or two node names must be specified");
    }
    let wan = fs.get_bool("wan");
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error connecting to Consul agent: {e}")),
    };
    if nodes.len() < 2 {
        if wan {
            return io.error("A node name must be specified for the WAN (two <node>.<datacenter> names)");
        }
        let me = match client
            .request_ok("GET", "/v1/agent/self", &[], None)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => v["Config"]["NodeName"].as_str().unwrap_or_default().to_string(),
            Err(e) => return io.error(format!("Unable to look up agent info: {e}")),
        };
        nodes.push(me);
    }
    let entries: Vec<EntryJson> = if wan {
        match client
            .request_ok("GET", "/v1/coordinate/datacenters", &[], None)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Vec<DatacenterJson>>(&b).map_err(|e| e.to_string()))
        {
            Ok(dcs) => dcs.into_iter().flat_map(|d| d.coordinates).collect(),
            Err(e) => return io.error(format!("Error getting coordinates: {e}")),
        }
    } else {
        match client
            .request_ok("GET", "/v1/coordinate/nodes", &[], None)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Vec<EntryJson>>(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => return io.error(format!("Error getting coordinates: {e}")),
        }
    };
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e.node == name && e.segment.is_empty())
            .map(|e| Coordinate::from(&e.coord))
    };
    let Some(c1) = find(&nodes[0]) else {
        return io.error(format!("Could not find a coordinate for node {:?}", nodes[0]));
    };
    let Some(c2) = find(&nodes[1]) else {
        return io.error(format!("Could not find a coordinate for node {:?}", nodes[1]));
    };
    if !c1.is_compatible_with(&c2) {
        return io.error("Coordinates are not compatible");
    }
    io.info(estimate_line(&nodes[0], &nodes[1], &c1, &c2, wan));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_consuls() {
        let a = Coordinate {
            vec: vec![0.0, 0.0],
            error: 1.5,
            adjustment: 0.0,
            height: 0.0001,
        };
        let mut b = a.clone();
        b.vec[0] = 0.0003;
        assert_eq!(
            estimate_line("n1", "n2", &a, &b, false),
            "Estimated n1 <-> n2 rtt: 0.500 ms (using LAN coordinates)"
        );
        assert!(estimate_line("a.dc1", "b.dc2", &a, &b, true).ends_with("(using WAN coordinates)"));
    }
}
