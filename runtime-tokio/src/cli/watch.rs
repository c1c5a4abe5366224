//! `concord watch -type=<type> [options] [handler…]`, as `consul watch`: a loop of blocking queries on one
//! view (`key`, `keyprefix`, `services`, `nodes`, `service`, `checks`, `event`).
//!
//! - Without a handler the current data is printed as indented JSON and the command exits.
//! - With a handler, it runs at once with the current data, then again each time the view's index moves
//!   (a blocking query woke with a new `X-Consul-Index`), with the data as JSON on stdin and
//!   `CONSUL_INDEX` in its environment. The handler is run through `$SHELL -c` (default `/bin/sh`) unless
//!   `-shell=false`, in which case its arguments are executed directly. A failing handler is reported and
//!   the watch goes on; a failed query is retried with a growing pause (up to 20 s).
//!
//! The data is what the HTTP API answers, field for field (`key`: the single entry, or `null`).

use super::client::{server_flags, Client, ClientError};
use super::flags::FlagSet;
use super::{parse_flags, Io};
use std::io::Write;
use std::time::Duration;

const HELP: &str = "Usage: concord watch [options] [child...]

  Watches for changes in a given data view from Consul. If a child process
  is specified, it will be invoked with the latest results on changes. Otherwise,
  the latest values are dumped to stdout and the watch terminates.

  Providing the watch type is required, and other parameters may be required
  or supported depending on the watch type.";

/// The longest pause between retries of a failed query.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// One view: the HTTP path and query, and how its answer becomes the handler's data.
struct View {
    path: String,
    query: Vec<(&'static str, String)>,
    /// `key`: the API answers a list of one entry; the watch hands over the entry itself.
    single: bool,
}

fn view(fs: &FlagSet) -> Result<View, String> {
    let required = |name: &str| -> Result<String, String> {
        match fs.get_str(name) {
            "" => Err(format!("Required parameter '{name}' missing")),
            v => Ok(v.to_string()),
        }
    };
    let kind = fs.get_str("type");
    let mut query = Vec::new();
    let view = match kind {
        "" => return Err("Watch type must be specified".into()),
        "key" => View {
            path: format!("/v1/kv/{}", required("key")?),
            query,
            single: true,
        },
        "keyprefix" => {
            query.push(("recurse", String::new()));
            View {
                path: format!("/v1/kv/{}", required("prefix")?),
                query,
                single: false,
            }
        }
        "services" => View {
            path: "/v1/catalog/services".into(),
            query,
            single: false,
        },
        "nodes" => View {
            path: "/v1/catalog/nodes".into(),
            query,
            single: false,
        },
        "service" => {
            for tag in fs.get_list("tag") {
                query.push(("tag", tag.clone()));
            }
            if fs.get_bool("passing") {
                query.push(("passing", String::new()));
            }
            View {
                path: format!("/v1/health/service/{}", required("service")?),
                query,
                single: false,
            }
        }
        "checks" => {
            let (service, state) = (fs.get_str("service"), fs.get_str("state"));
            let path = match (service, state) {
                ("", "") => "/v1/health/state/any".to_string(),
                ("", state) => format!("/v1/health/state/{state}"),
                (service, "") => format!("/v1/health/checks/{service}"),
                _ => return Err("Cannot specify service and state".into()),
            };
            View {
                path,
                query,
                single: false,
            }
        }
        "event" => {
            if !fs.get_str("name").is_empty() {
                query.push(("name", fs.get_str("name").to_string()));
            }
            View {
                path: "/v1/event/list".into(),
                query,
                single: false,
            }
        }
        other => return Err(format!("Unsupported watch type: {other}")),
    };
    // Parameters that belong to other types are refused, as Consul's watch parser does.
    let allowed: &[&str] = match kind {
        "key" => &["key"],
        "keyprefix" => &["prefix"],
        "service" => &["service", "tag", "passing"],
        "checks" => &["service", "state"],
        "event" => &["name"],
        _ => &[],
    };
    for name in ["key", "prefix", "service", "state", "name"] {
        if !fs.get_str(name).is_empty() && !allowed.contains(&name) {
            return Err(format!("Invalid parameters: [{name}]"));
        }
    }
    for (name, given) in [
        ("tag", !fs.get_list("tag").is_empty()),
        ("passing", fs.get_bool("passing")),
    ] {
        if given && !allowed.contains(&name) {
            return Err(format!("Invalid parameters: [{name}]"));
        }
    }
    Ok(view)
}

pub(crate) fn run(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = server_flags(FlagSet::new())
        .string(
            "type",
            "",
            "Specifies the watch type. One of key, keyprefix, services, nodes, service, checks, or event.",
        )
        .string("name", "", "Specifies an event name to watch. Only for 'event' type.")
        .string("key", "", "Specifies the key to watch. Only for 'key' type.")
        .string(
            "prefix",
            "",
            "Specifies the key prefix to watch. Only for 'keyprefix' type.",
        )
        .string(
            "service",
            "",
            "Specifies the service to watch. Required for 'service' type, optional for 'checks' type.",
        )
        .list(
            "tag",
            "Specifies the service tag(s) to filter on. Optional for 'service' type. May be specified multiple times.",
        )
        .bool(
            "passing",
            "Specifies if only hosts passing all checks are displayed. Optional for 'service' type.",
        )
        .string(
            "state",
            "",
            "Specifies the states to watch. Optional for 'checks' type.",
        )
        .bool_on(
            "shell",
            "Use a shell to run the command (can set a custom shell via the SHELL environment variable). The \
             default is true.",
        );
    if let Err(code) = parse_flags(&mut fs, args, HELP, io) {
        return code;
    }
    let view = match view(&fs) {
        Ok(v) => v,
        Err(e) => return io.error(format!("Failed to create watch: {e}")),
    };
    let client = match Client::new(&fs, io.env) {
        Ok(c) => c,
        Err(e) => return io.error(format!("Error connecting to Consul agent: {e}")),
    };
    let handler = fs.args().to_vec();
    if handler.is_empty() {
        return match fetch(&client, &view, 0) {
            Ok((_, data)) => {
                io.info(pretty(&data));
                0
            }
            Err(e) => io.error(format!("Error querying Consul agent: {e}")),
        };
    }
    let shell = fs.get_bool("shell");
    let env_shell = (io.env)("SHELL").filter(|s| !s.is_empty());
    // The first query must work: a wrong address is reported at once rather than retried forever.
    let (mut index, mut data) = match fetch(&client, &view, 0) {
        Ok(first) => first,
        Err(e) => return io.error(format!("Error querying Consul agent: {e}")),
    };
    let mut failures = 0u32;
    loop {
        if let Err(e) = run_handler(&handler, shell, env_shell.as_deref(), index, &data) {
            io.error(format!("Error executing handler: {e}"));
        }
        let _ = io.out.flush();
        // Block until the index moves past the one the handler just saw.
        loop {
            match fetch(&client, &view, index) {
                Ok((next, next_data)) => {
                    failures = 0;
                    if next == index {
                        continue; // the wait ran out with nothing new
                    }
                    // An index that went backwards (a restored snapshot) counts as a change and resets.
                    index = next;
                    data = next_data;
                    break;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let pause = (Duration::from_secs(1) * failures.min(20)).min(MAX_BACKOFF);
                    io.error(format!("Error querying Consul agent: {e} (retrying in {pause:?})"));
                    std::thread::sleep(pause);
                }
            }
        }
    }
}

/// One read of the view: (X-Consul-Index, JSON). `index > 0` blocks until the view's index passes it.
fn fetch(client: &Client, view: &View, index: u64) -> Result<(u64, Vec<u8>), ClientError> {
    let index_text = index.to_string();
    let mut query: Vec<(&str, &str)> = view.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if index > 0 {
        query.push(("index", &index_text));
    }
    if client.stale() {
        query.push(("stale", ""));
    }
    let reply = client.request("GET", &view.path, &query, None)?;
    let mut body = reply.body;
    if reply.status == 404 {
        body = b"null".to_vec();
    } else if view.single {
        body = only_entry(&body);
    }
    while body.last().is_some_and(u8::is_ascii_whitespace) {
        body.pop();
    }
    Ok((reply.index.max(1), body))
}

/// `[{…}]` → `{…}`: the API's compact one-entry list as the entry itself.
fn only_entry(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    match trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(inner) if !inner.trim().is_empty() => inner.trim().as_bytes().to_vec(),
        _ => b"null".to_vec(),
    }
}

/// Compact JSON → Go's `json.MarshalIndent(v, "", "    ")` (object keys keep the API's order).
fn pretty(compact: &[u8]) -> String {
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let text = String::from_utf8_lossy(compact);
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"    ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(c);
                    out.push(close);
                } else {
                    depth += 1;
                    out.push(c);
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// Run the handler once with `data` on stdin; an error if it could not start or did not exit 0.
fn run_handler(
    handler: &[String],
    shell: bool,
    env_shell: Option<&str>,
    index: u64,
    data: &[u8],
) -> Result<(), String> {
    let mut cmd = if shell {
        let mut cmd = std::process::Command::new(env_shell.unwrap_or("/bin/sh"));
        cmd.arg("-c").arg(handler.join(" "));
        cmd
    } else {
        let mut cmd = std::process::Command::new(&handler[0]);
        cmd.args(&handler[1..]);
        cmd
    };
    cmd.env("CONSUL_INDEX", index.to_string())
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("{}: {e}", handler.join(" ")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A handler that does not read its input closes the pipe early; that is not an error.
        let _ = stdin.write_all(data).and_then(|()| stdin.write_all(b"\n"));
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("handler {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_matches_gos_indentation() {
        let compact = br#"{"A":[1,{"B":"x,y:{z}\"q"}],"C":{},"D":[]}"#;
        let want = "{\n    \"A\": [\n        1,\n        {\n            \"B\": \"x,y:{z}\\\"q\"\n        }\n    ],\n    \"C\": {},\n    \"D\": []\n}";
        assert_eq!(pretty(compact), want);
        assert_eq!(pretty(b"null"), "null");
        assert_eq!(only_entry(br#"[{"Key":"a"}]"#), br#"{"Key":"a"}"#);
        assert_eq!(only_entry(b"[]"), b"null");
    }

    #[test]
    fn views_validate_their_parameters() {
        let parse = |args: &[&str]| {
            let mut fs = server_flags(FlagSet::new())
                .string("type", "", "")
                .string("key", "", "")
                .string("prefix", "", "")
                .string("service", "", "")
                .list("tag", "")
                .bool("passing", "")
                .string("state", "", "")
                .string("name", "", "");
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            fs.parse(&args).unwrap();
            view(&fs)
        };
        assert_eq!(parse(&[]).err().unwrap(), "Watch type must be specified");
        assert_eq!(parse(&["-type=key"]).err().unwrap(), "Required parameter 'key' missing");
        assert_eq!(parse(&["-type=nope"]).err().unwrap(), "Unsupported watch type: nope");
        assert_eq!(
            parse(&["-type=nodes", "-key=a"]).err().unwrap(),
            "Invalid parameters: [key]"
        );
        assert!(parse(&["-type=checks", "-service=a", "-state=passing"]).is_err());
        let v = parse(&["-type=service", "-service=web", "-tag=v1", "-passing"]).unwrap();
        assert_eq!(v.path, "/v1/health/service/web");
        assert_eq!(v.query, vec![("tag", "v1".to_string()), ("passing", String::new())]);
        assert_eq!(
            parse(&["-type=checks", "-state=critical"]).unwrap().path,
            "/v1/health/state/critical"
        );
        assert_eq!(parse(&["-type=checks"]).unwrap().path, "/v1/health/state/any");
        let v = parse(&["-type=event", "-name=deploy"]).unwrap();
        assert_eq!(
            (v.path.as_str(), v.query.clone()),
            ("/v1/event/list", vec![("name", "deploy".to_string())])
        );
        assert_eq!(
            parse(&["-type=key", "-key=a", "-name=x"]).err().unwrap(),
            "Invalid parameters: [name]"
        );
        let v = parse(&["-type=keyprefix", "-prefix=app/"]).unwrap();
        assert_eq!((v.path.as_str(), v.single), ("/v1/kv/app/", false));
    }
}
