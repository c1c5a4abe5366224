//! `concord event -name=<name> [-node=] [-service=] [-tag=] [payload]`: fire a user event through the
//! local agent (`PUT /v1/event/fire/:name`), printing `Event ID: <id>` as Consul's `consul event` does.

use super::client::{client_flags, Client};
use super::flags::FlagSet;
use super::{parse_flags, Io};

const EVENT_HELP: &str = "Usage: concord event [options] [payload]

  Dispatches a custom user event across a datacenter. An event must provide a name, but a payload is
  optional. Events support filtering using regular expressions on node name, service, and service tags.";

pub(crate) fn event(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = client_flags(FlagSet::new())
        .string("name", "", "Name of the event.")
        .string("node", "", "Regular expression to filter on node names.")
        .string("service", "", "Regular expression to filter on service instances.")
        .string(
            "tag",
            "",
            "Regular expression to filter on service tags. Must be used with -service.",
        );
    if let Err(code) = parse_flags(&mut fs, args, EVENT_HELP, io) {
        return code;
    }
    let name = fs.get_str("name").to_string();
    if name.is_empty() {
        return io.error("Event name must be specified");
    }
    if !fs.get_str("tag").is_empty() && fs.get_str("service").is_empty() {
        return io.error("Cannot provide tag filter without service filter.");
    }
    let payload = match fs.args() {
        [] => Vec::new(),
        [payload] => payload.as_bytes().to_vec(),
        _ => return io.error(format!("Too many command line arguments.\n\n{EVENT_HELP}")),
    };
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error connecting to Consul agent: {e}")),
    };
    let filters: Vec<(&str, &str)> = ["node", "service", "tag"]
        .into_iter()
        .map(|f| (f, fs.get_str(f)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let body = match client.request_ok("PUT", &format!("/v1/event/fire/{name}"), &filters, Some(&payload)) {
        Ok(body) => body,
        Err(e) => return io.error(format!("Error firing event: {e}")),
    };
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => {
            io.info(format!("Event ID: {}", v["ID"].as_str().unwrap_or_default()));
            0
        }
        Err(e) => io.error(format!("Error firing event: unreadable answer: {e}")),
    }
}
