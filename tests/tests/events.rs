//! User events across real agents: fired on one server, listed on another through gossip, with Consul's
//! blocking list and size limit.

use concord_tests::{http, http_get, http_put, poll, run_concord, Cluster};
use std::time::{Duration, Instant};

#[test]
fn an_event_fired_on_one_agent_is_listed_on_another() {
    let mut c = Cluster::start(3);
    c.wait_leader(Duration::from_secs(60));
    let before = http_get(&c.url(2, "/v1/event/list?name=deploy")).unwrap();
    assert_eq!((before.status, before.header("X-Consul-Index")), (200, Some("1")));
    assert_eq!(before.json().unwrap(), serde_json::json!([]));

    // A blocking list on s3 at index 1 (nothing yet) answers once a matching event arrives.
    let url = c.url(2, "/v1/event/list?name=deploy&index=1&wait=30s");
    let blocked = std::thread::spawn(move || {
        let started = Instant::now();
        (http("GET", &url, None, Duration::from_secs(60)), started.elapsed())
    });
    let r = http_put(&c.url(0, "/v1/event/fire/deploy?service=web"), b"v2").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let fired = r.json().unwrap();
    assert_eq!(fired["Name"], "deploy");
    assert_eq!(fired["Payload"], "djI=");
    assert_eq!(fired["ServiceFilter"], "web");
    assert_eq!(fired["Version"], 1);
    let id = fired["ID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    // No agent runs a service named web: the filter drops it everywhere.
    let r = http_put(&c.url(0, "/v1/event/fire/deploy"), b"v3").unwrap();
    assert_eq!(r.status, 200);
    let id = r.json().unwrap()["ID"].as_str().unwrap().to_string();

    let (listed, waited) = blocked.join().unwrap();
    let listed = listed.unwrap();
    assert_eq!(listed.status, 200);
    assert_ne!(listed.header("X-Consul-Index"), Some("1"));
    assert!(waited < Duration::from_secs(25), "the blocking list woke on the event");
    poll(
        Duration::from_secs(20),
        "every agent lists the unfiltered event",
        || {
            for i in 0..3 {
                let events = http_get(&c.url(i, "/v1/event/list"))
                    .map_err(|e| e.to_string())?
                    .json()?;
                let ids: Vec<&str> = events
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|e| e["ID"].as_str())
                    .collect();
                if ids != [id.as_str()] {
                    return Err(format!("s{}: {events}", i + 1));
                }
                let e = &events[0];
                if e["Payload"] != "djM=" || e["LTime"].as_u64().is_none() {
                    return Err(format!("s{}: {e}", i + 1));
                }
            }
            Ok(())
        },
    );

    // serf's size limit: 500 with its text; bad filters: 500 with Consul's validation text.
    let r = http_put(&c.url(1, "/v1/event/fire/big"), &[b'x'; 600]).unwrap();
    assert_eq!(
        (r.status, r.text()),
        (
            500,
            "user event exceeds configured limit of 512 bytes before encoding".to_string()
        )
    );
    let r = http_put(&c.url(1, "/v1/event/fire/x?tag=v1"), b"").unwrap();
    assert_eq!(
        (r.status, r.text()),
        (500, "Cannot provide tag filter without service filter".to_string())
    );

    // The CLI fires through the local agent and prints the ID; one readable line on a bad flag.
    let out = run_concord(Some(&c.servers[1].http_addr()), &["event", "-name=cli", "hello"], None);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout
        .trim()
        .strip_prefix("Event ID: ")
        .expect("Event ID line")
        .to_string();
    poll(Duration::from_secs(20), "s1 lists the CLI's event", || {
        let events = http_get(&c.url(0, "/v1/event/list?name=cli"))
            .map_err(|e| e.to_string())?
            .json()?;
        match events[0]["ID"].as_str() == Some(id.as_str()) && events[0]["Payload"] == "aGVsbG8=" {
            true => Ok(()),
            false => Err(events.to_string()),
        }
    });
    // `watch -type=event` without a handler prints the current list (as Consul's, indented JSON).
    let out = run_concord(
        Some(&c.servers[0].http_addr()),
        &["watch", "-type=event", "-name=cli"],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let watched: serde_json::Value = serde_json::from_slice(&out.stdout).expect("watch prints JSON");
    assert_eq!(watched[0]["ID"].as_str(), Some(id.as_str()));
    let out = run_concord(Some(&c.servers[1].http_addr()), &["event", "-tag=v1", "-name=x"], None);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Cannot provide tag filter without service filter."
    );
    assert_eq!(c.running(), vec![0, 1, 2], "{}", c.logs());
}
