//! `/v1/txn` against a real 3-server cluster: a transaction sent to a follower commits as one log entry on
//! every server, a failing one leaves nothing anywhere, and oversized ones are 413.

use concord_tests::{http_put, poll, Cluster};
use serde_json::{json, Value};
use std::time::Duration;

fn txn(c: &Cluster, i: usize, body: &Value) -> (u16, Value) {
    let r = http_put(&c.url(i, "/v1/txn"), body.to_string().as_bytes()).expect("PUT /v1/txn");
    let text = r.text();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", r.status));
    (r.status, v)
}

#[test]
fn transactions_commit_whole_or_not_at_all_on_every_server() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(Duration::from_secs(60));
    let follower = (leader + 1) % 3;
    let r = http_put(&c.url(leader, "/v1/kv/acct/a"), b"100").expect("seed");
    assert_eq!(r.status, 200);
    let a_index = c.get(leader, "/v1/kv/acct/a").unwrap().json().unwrap()[0]["ModifyIndex"]
        .as_u64()
        .unwrap();

    // A transfer: CAS on a, create b, read both back, sent to a follower.
    let (status, v) = txn(
        &c,
        follower,
        &json!([
            {"KV": {"Verb": "cas", "Key": "acct/a", "Value": "NjA=", "Index": a_index}},
            {"KV": {"Verb": "set", "Key": "acct/b", "Value": "NDA="}},
            {"KV": {"Verb": "get-tree", "Key": "acct/"}},
        ]),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["Errors"], Value::Null);
    let results = v["Results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{v}");
    let index = results[0]["KV"]["ModifyIndex"].as_u64().unwrap();
    assert!(index > a_index);
    assert!(
        results.iter().all(|r| r["KV"]["ModifyIndex"] == index),
        "one log entry: {v}"
    );
    assert_eq!(results[2]["KV"]["Value"], "NjA=");
    assert_eq!(results[3]["KV"]["Value"], "NDA=");

    // The same CAS again is stale: 409, and its other op (delete b) did not happen.
    let (status, v) = txn(
        &c,
        follower,
        &json!([
            {"KV": {"Verb": "delete", "Key": "acct/b"}},
            {"KV": {"Verb": "cas", "Key": "acct/a", "Value": "MA==", "Index": a_index}},
        ]),
    );
    assert_eq!(status, 409, "{v}");
    assert_eq!(
        v,
        json!({"Results": null, "Errors": [{"OpIndex": 1, "What": "failed to set key \"acct/a\", index is stale"}]})
    );
    for i in 0..3 {
        poll(
            Duration::from_secs(20),
            "every server has the committed transaction",
            || {
                let b = c.get(i, "/v1/kv/acct/b?stale&raw").map_err(|e| e.to_string())?;
                let a = c.get(i, "/v1/kv/acct/a?stale&raw").map_err(|e| e.to_string())?;
                match (a.status, a.text().as_str(), b.status, b.text().as_str()) {
                    (200, "60", 200, "40") => Ok(()),
                    other => Err(format!("server {i}: {other:?}")),
                }
            },
        );
    }

    // Too many ops: 413 before anything is proposed; the agent stays up.
    let ops: Vec<Value> = (0..129)
        .map(|i| json!({"KV": {"Verb": "set", "Key": format!("many/{i}")}}))
        .collect();
    let r = http_put(&c.url(leader, "/v1/txn"), Value::Array(ops).to_string().as_bytes()).unwrap();
    assert_eq!(
        (r.status, r.text()),
        (413, "Transaction contains too many operations (129 > 128)".to_string())
    );
    let r = c.get(leader, "/v1/kv/many/?keys").unwrap();
    assert_eq!(r.status, 404, "nothing of the refused transaction was written");
    assert_eq!(c.running(), vec![0, 1, 2], "{}", c.logs());
}
