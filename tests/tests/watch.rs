//! `concord watch` against a real dev agent (reference: consul-compat.md §4.3, Consul's `watch` command):
//! without a handler it prints the view as indented JSON and exits; with a handler it runs it at once and
//! again on every change of the watched view only, with the data on stdin and `CONSUL_INDEX` set.

use concord_tests::{concord_bin, http_get, http_put, poll, run_concord, Agent};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(20);

fn dev() -> Agent {
    let agent = Agent::dev();
    poll(SETTLE, "the dev agent to elect itself", || {
        let r = http_get(&agent.url("/v1/status/leader"))?.expect_status(200)?;
        (r.text().len() > 2).then_some(()).ok_or(r.text())
    });
    // As in Consul, the leader registers the agent's node (and the `consul` service) a moment after it is
    // elected; the `nodes` and `services` views below expect them.
    poll(SETTLE, "the dev agent's node and consul service in the catalog", || {
        let r = http_get(&agent.url("/v1/catalog/services"))?.expect_status(200)?;
        r.json()?.get("consul").map(|_| ()).ok_or(r.text())
    });
    agent
}

fn addr(agent: &Agent) -> String {
    agent.url("").trim_start_matches("http://").to_string()
}

fn stdout_of(agent: &Agent, args: &[&str]) -> String {
    let out = run_concord(Some(&addr(agent)), args, None);
    assert!(
        out.status.success(),
        "`concord {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn without_a_handler_the_view_is_printed_once() {
    let agent = dev();
    assert_eq!(stdout_of(&agent, &["watch", "-type=key", "-key=cfg/a"]), "null\n");
    http_put(&agent.url("/v1/kv/cfg/a"), b"v1")
        .unwrap()
        .expect_status(200)
        .unwrap();
    let text = stdout_of(&agent, &["watch", "-type=key", "-key=cfg/a"]);
    assert!(text.starts_with("{\n    \""), "Go's 4-space indentation: {text}");
    let entry: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (entry["Key"].as_str(), entry["Value"].as_str()),
        (Some("cfg/a"), Some("djE="))
    );

    let text = stdout_of(&agent, &["watch", "-type=keyprefix", "-prefix=cfg/"]);
    let entries: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(entries.as_array().map(Vec::len), Some(1), "{text}");
    let nodes: serde_json::Value = serde_json::from_str(&stdout_of(&agent, &["watch", "-type=nodes"])).unwrap();
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{nodes}");
    let services: serde_json::Value = serde_json::from_str(&stdout_of(&agent, &["watch", "-type=services"])).unwrap();
    assert!(services.get("consul").is_some(), "{services}");

    let out = run_concord(Some(&addr(&agent)), &["watch", "-type=key"], None);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Failed to create watch: Required parameter 'key' missing"
    );
    let out = run_concord(Some("127.0.0.1:1"), &["watch", "-type=nodes"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Error querying Consul agent:") && err.lines().count() == 1,
        "{err}"
    );
}

struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The handler's invocations so far: (CONSUL_INDEX, the JSON it read on stdin).
fn invocations(file: &std::path::Path) -> Vec<(u64, serde_json::Value)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = Vec::new();
    let mut json = String::new();
    for line in text.lines() {
        match line.strip_prefix("== ") {
            Some(index) => {
                let value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("handler input {json:?}: {e}"));
                out.push((index.parse().unwrap(), value));
                json.clear();
            }
            None => json.push_str(line),
        }
    }
    out
}

#[test]
fn a_handler_runs_at_once_and_on_each_change_of_its_service_only() {
    let agent = dev();
    // The agent's own first anti-entropy round (its node, the consul service) is done before watching.
    poll(SETTLE, "the dev agent's node in the catalog", || {
        let v = http_get(&agent.url("/v1/catalog/service/consul"))?.json()?;
        (v.as_array().map(Vec::len) == Some(1))
            .then_some(())
            .ok_or(format!("{v}"))
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("calls");
    let handler = format!("cat >> {0}; echo \"== $CONSUL_INDEX\" >> {0}", file.display());
    let child = Command::new(concord_bin())
        .args([
            "watch",
            "-http-addr",
            &addr(&agent),
            "-type=service",
            "-service=web",
            &handler,
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _watch = Watch(child);
    let calls = |n: usize| {
        poll(SETTLE, &format!("{n} handler invocations"), || {
            let calls = invocations(&file);
            (calls.len() >= n).then_some(calls.clone()).ok_or(format!("{calls:?}"))
        })
    };
    let first = calls(1);
    assert_eq!(
        first[0].1,
        serde_json::json!([]),
        "the first run is immediate, with no instances"
    );

    let register = |name: &str, tag: &str| {
        let body = format!(r#"{{"Name":"{name}","Tags":["{tag}"],"Port":80}}"#);
        http_put(&agent.url("/v1/agent/service/register"), body.as_bytes())
            .unwrap()
            .expect_status(200)
            .unwrap();
    };
    register("web", "v1");
    let second = calls(2);
    assert_eq!(second[1].1[0]["Service"]["Tags"][0], "v1", "{:?}", second[1]);
    assert!(second[1].0 > second[0].0, "CONSUL_INDEX moves forward: {second:?}");

    // Another service changing (on another node, straight into the catalog) does not run the handler;
    // the next run is web's own change.
    http_put(
        &agent.url("/v1/catalog/register"),
        br#"{"Node":"elsewhere","Address":"10.9.9.9","Service":{"Service":"other","Port":1}}"#,
    )
    .unwrap()
    .expect_status(200)
    .unwrap();
    poll(SETTLE, "other in the catalog", || {
        let v = http_get(&agent.url("/v1/catalog/service/other"))?.json()?;
        (v.as_array().map(Vec::len) == Some(1))
            .then_some(())
            .ok_or(format!("{v}"))
    });
    register("web", "v2");
    let third = calls(3);
    assert_eq!(third[2].1[0]["Service"]["Tags"][0], "v2", "{:?}", third[2]);
    assert_eq!(invocations(&file).len(), 3, "no run for the other service's change");
}
