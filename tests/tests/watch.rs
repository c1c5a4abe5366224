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

/// Blocking queries issued from threads: each returns its whole answer (60 s transport timeout).
fn watch_all(agent: &Agent, paths: &[String]) -> Vec<std::thread::JoinHandle<concord_tests::Resp>> {
    paths
        .iter()
        .map(|path| {
            let url = agent.url(path);
            std::thread::spawn(move || concord_tests::http("GET", &url, None, Duration::from_secs(60)).unwrap())
        })
        .collect()
}

fn joined(watchers: Vec<std::thread::JoinHandle<concord_tests::Resp>>) -> Vec<concord_tests::Resp> {
    watchers.into_iter().map(|w| w.join().unwrap()).collect()
}

/// The headers of an answer that only the response's moment may change: all but `Date`.
fn headers_but_date(r: &concord_tests::Resp) -> Vec<(String, String)> {
    let mut h: Vec<_> = r.headers.iter().filter(|(k, _)| k != "date").cloned().collect();
    h.sort();
    h
}

/// Watchers of two services woken by changes to each in turn: each group wakes on its own service's change
/// only, with its own service's answer (woken watchers of one query share one read and one encoded answer,
/// which must never reach the other query's watchers), and the watchers of one query get the same answer.
#[test]
fn watchers_of_two_services_wake_independently_with_their_own_answers() {
    let agent = dev();
    let register = |service: &str, tag: &str| {
        let body = format!(
            r#"{{"Node":"n1","Address":"10.1.1.1","Service":{{"Service":"{service}","Port":80,"Tags":["{tag}"]}}}}"#
        );
        http_put(&agent.url("/v1/catalog/register"), body.as_bytes())
            .unwrap()
            .expect_status(200)
            .unwrap();
    };
    register("x", "v1");
    register("z", "v1");
    let index = |service: &str| {
        http_get(&agent.url(&format!("/v1/health/service/{service}")))
            .unwrap()
            .index()
            .unwrap()
    };
    let (x_index, z_index) = (index("x"), index("z"));
    let x_path = format!("/v1/health/service/x?index={x_index}&wait=30s");
    let z_path = format!("/v1/health/service/z?index={z_index}&wait=30s");
    let xs = watch_all(&agent, &[x_path.clone(), x_path.clone(), x_path]);
    let zs = watch_all(&agent, &[z_path.clone(), z_path.clone(), z_path]);

    register("x", "v2");
    let xs = joined(xs);
    for r in &xs {
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.index().unwrap() > x_index);
        let v = r.json().unwrap();
        assert_eq!(
            (v[0]["Service"]["Service"].as_str(), v[0]["Service"]["Tags"][0].as_str()),
            (Some("x"), Some("v2")),
            "{v}"
        );
        assert_eq!(r.body, xs[0].body, "one query, one change: one answer");
        assert_eq!(headers_but_date(r), headers_but_date(&xs[0]));
    }
    assert!(
        zs.iter().all(|w| !w.is_finished()),
        "a change to x must not wake a query on z"
    );

    register("z", "v2");
    let zs = joined(zs);
    for r in &zs {
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json().unwrap();
        assert_eq!(
            (v[0]["Service"]["Service"].as_str(), v[0]["Service"]["Tags"][0].as_str()),
            (Some("z"), Some("v2")),
            "{v}"
        );
        assert!(r.index().unwrap() > xs[0].index().unwrap(), "z changed after x");
        assert_eq!(r.body, zs[0].body);
    }
}

/// KV blocking queries of every shape on one key and its prefix, woken by one write: each gets its own
/// shape (JSON entry, bare `?raw` value, the prefix's entries, its keys) with the index Consul gives it,
/// and a query on another key of the prefix keeps waiting until that key changes.
#[test]
fn kv_watchers_of_every_shape_wake_on_their_key_with_their_own_answers() {
    let agent = dev();
    let put = |key: &str, value: &[u8]| -> u64 {
        http_put(&agent.url(&format!("/v1/kv/{key}")), value)
            .unwrap()
            .expect_status(200)
            .unwrap();
        http_get(&agent.url(&format!("/v1/kv/{key}"))).unwrap().index().unwrap()
    };
    put("w/a", b"a1");
    let b_index = put("w/b", b"b1");
    let index = http_get(&agent.url("/v1/kv/w/?recurse")).unwrap().index().unwrap();
    assert_eq!(index, b_index, "a prefix's index is its highest ModifyIndex");
    let q = |path: &str| format!("/v1/kv/{path}index={index}&wait=30s");
    let watchers = watch_all(
        &agent,
        &[
            q("w/a?"),
            q("w/a?"),
            q("w/a?raw&"),
            q("w/?recurse&"),
            q("w/?keys&"),
            q("w/?recurse&stale&"),
        ],
    );
    let other = watch_all(&agent, &[q("w/b?")]);

    let a_index = put("w/a", b"a2");
    let [get1, get2, raw, recurse, keys, stale] = <[_; 6]>::try_from(joined(watchers)).ok().unwrap();
    for r in [&get1, &get2, &raw, &recurse, &keys, &stale] {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.index().unwrap(),
            a_index,
            "X-Consul-Index is the key's (or prefix's) ModifyIndex"
        );
    }
    assert_eq!(get1.kv_value().unwrap(), b"a2");
    assert_eq!(
        (get1.body.clone(), headers_but_date(&get1)),
        (get2.body.clone(), headers_but_date(&get2))
    );
    assert_eq!(raw.body, b"a2", "?raw is the bare value");
    assert_eq!(raw.header("Content-Type"), Some("text/plain"));
    let entries = recurse.json().unwrap();
    let keys_of = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["Key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(keys_of(&entries), ["w/a", "w/b"]);
    assert_eq!(keys.json().unwrap(), serde_json::json!(["w/a", "w/b"]));
    assert_eq!(
        stale.body, recurse.body,
        "the same read in another mode: the same body…"
    );
    assert_eq!(
        stale.header("X-Consul-Effective-Consistency"),
        Some("stale"),
        "…its own headers"
    );
    assert_eq!(recurse.header("X-Consul-Effective-Consistency"), Some("leader"));
    assert!(!other[0].is_finished(), "a change to w/a must not wake a query on w/b");

    let b_index = put("w/b", b"b2");
    let [b] = <[_; 1]>::try_from(joined(other)).ok().unwrap();
    assert_eq!((b.kv_value().unwrap(), b.index().unwrap()), (b"b2".to_vec(), b_index));
}
