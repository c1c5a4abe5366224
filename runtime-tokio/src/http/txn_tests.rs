//! `/v1/txn` over real HTTP against the fake backend: Consul's response shapes, status codes and limits.
use super::tests::{call, TestServer};
use super::txn::{parse_ops, Rejected};
use super::HttpSettings;
use axum::http::StatusCode;
use serde_json::Value;

fn txn(s: &TestServer, body: &str) -> (u16, String) {
    let r = call("PUT", &s.url("/v1/txn"), Some(body.as_bytes()));
    (r.status, r.text().to_string())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_committed_transaction_answers_results_and_null_errors() {
    let s = TestServer::start(HttpSettings::default());
    // "aGVsbG8=" is "hello"; field names match case-insensitively, as Go's decoder does.
    let (status, body) = txn(
        &s,
        r#"[{"KV":{"Verb":"set","Key":"t/a","Value":"aGVsbG8=","Flags":7}},
            {"kv":{"verb":"get","key":"t/a"}},
            {"KV":{"Verb":"delete","Key":"t/none"}}]"#,
    );
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["Errors"], Value::Null);
    let results = v["Results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "delete verbs give no result: {body}");
    assert_eq!(results[0]["KV"]["Key"], "t/a");
    assert_eq!(results[0]["KV"]["Flags"], 7);
    assert_eq!(results[0]["KV"]["Value"], Value::Null, "set results carry no value");
    assert_eq!(results[1]["KV"]["Value"], "aGVsbG8=");
    assert_eq!(results[0]["KV"]["ModifyIndex"], results[1]["KV"]["ModifyIndex"]);
}

#[test]
fn a_rolled_back_transaction_is_409_with_every_error() {
    let s = TestServer::start(HttpSettings::default());
    let (status, body) = txn(
        &s,
        r#"[{"KV":{"Verb":"set","Key":"r/a","Value":"eA=="}},
            {"KV":{"Verb":"cas","Key":"r/b","Value":"eA==","Index":5}},
            {"KV":{"Verb":"check-not-exists","Key":"r/a"}}]"#,
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        json(&body),
        serde_json::json!({"Results": null, "Errors": [
            {"OpIndex": 1, "What": "failed to set key \"r/b\", index is stale"},
            {"OpIndex": 2, "What": "key \"r/a\" exists"},
        ]})
    );
    let (status, body) = txn(&s, r#"[{"KV":{"Verb":"get","Key":"r/a"}}]"#);
    assert_eq!(status, 409, "the set of the failed transaction did not stay: {body}");
    // Checks Consul's servers make before applying: 409 too, with the op's index.
    let (status, body) = txn(
        &s,
        r#"[{"KV":{"Verb":"get","Key":"x"}}, {"KV":{"Verb":"frob","Key":"x"}}, {"KV":{"Verb":"set"}}]"#,
    );
    assert_eq!(status, 409);
    assert_eq!(
        json(&body)["Errors"],
        serde_json::json!([{"OpIndex": 1, "What": "unknown KV verb \"frob\""}, {"OpIndex": 2, "What": "Must provide key"}])
    );
}

#[test]
fn limits_and_bad_bodies_answer_as_consul() {
    let s = TestServer::start(HttpSettings {
        kv_max_value_size: 8,
        txn_max_req_len: 2048,
        ..HttpSettings::default()
    });
    let op = r#"{"KV":{"Verb":"get","Key":"k"}}"#;
    let ops = |n: usize| format!("[{}]", vec![op; n].join(","));
    let (status, body) = txn(&s, &ops(129));
    assert_eq!((status, body.as_str()), (413, "Request body(4129 bytes) too large, max size: 2048 bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#txn_max_req_len."));
    let s = TestServer::start(HttpSettings {
        kv_max_value_size: 8,
        ..HttpSettings::default()
    });
    let (status, body) = txn(&s, &ops(129));
    assert_eq!(
        (status, body.as_str()),
        (413, "Transaction contains too many operations (129 > 128)")
    );
    assert_eq!(
        txn(&s, &ops(128)).0,
        409,
        "128 ops are allowed (each get fails: no such key)"
    );
    let (status, body) = txn(&s, r#"[{"KV":{"Verb":"set","Key":"big","Value":"MDEyMzQ1Njc4OQ=="}}]"#);
    assert_eq!(
        (status, body.as_str()),
        (413, "Value for key \"big\" is too large (10 > 8 bytes)")
    );
    for bad in [
        "{",
        r#"{"KV":{}}"#,
        r#"[{"KV":{"Verb":"set","Key":"k","Value":"!!"}}]"#,
        r#"[{"KV":{"Key":5}}]"#,
        "[1]",
    ] {
        let (status, body) = txn(&s, bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.starts_with("Failed to parse body: "), "{bad}: {body}");
    }
    let (status, body) = txn(&s, r#"[{"Node":{"Verb":"get","Node":{"Node":"n1"}}}]"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not supported"), "{body}");
    assert_eq!(call("GET", &s.url("/v1/txn"), None).status, 405);
}

#[test]
fn parse_never_lets_an_op_through_without_a_key_or_verb() {
    assert_eq!(parse_ops(b"null", 10), Ok(Vec::new()));
    assert!(matches!(parse_ops(b"[null]", 10), Err(Rejected::Conflict(e)) if e[0].what == "no operation specified"));
    assert!(matches!(parse_ops(b"[{\"KV\":{\"Verb\":\"delete-tree\"}}]", 10), Ok(ops) if ops.len() == 1));
    assert!(matches!(
        parse_ops(b"[{\"KV\":{\"Verb\":\"set\",\"Key\":\"k\",\"Flags\":-1}}]", 10),
        Err(Rejected::Status(StatusCode::BAD_REQUEST, _))
    ));
}

#[test]
fn json_bodies_of_catalog_and_agent_endpoints_are_capped() {
    let s = TestServer::start(HttpSettings {
        http_max_body_size: 256,
        ..HttpSettings::default()
    });
    let padding = "x".repeat(300);
    let big = format!(r#"{{"Node":"n1","Address":"10.0.0.1","NodeMeta":{{"pad":"{padding}"}}}}"#);
    for path in ["/v1/catalog/register", "/v1/agent/service/register"] {
        let r = call("PUT", &s.url(path), Some(big.as_bytes()));
        assert_eq!(
            (r.status, r.text()),
            (
                413,
                "Request body too large, max size: 256 bytes (limits.http_max_body_size)"
            ),
            "{path}"
        );
    }
    let small = r#"{"Node":"n1","Address":"10.0.0.1"}"#;
    let r = call("PUT", &s.url("/v1/catalog/register"), Some(small.as_bytes()));
    assert_eq!((r.status, r.text()), (200, "true"));
}
