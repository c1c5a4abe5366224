//! Running one HTTP(S), TCP, script, gRPC or Docker check, with Consul's result mapping and output text.
//!
//! - HTTP: 2xx passing, 429 warning, anything else (or no answer within the timeout) critical; redirects
//!   are not followed; the body read is capped at 4 KiB. Runs on ureq (already the CLI's client) in a
//!   blocking task; `https://` goes through rustls (see [`super::tls`] for trust, `TLSSkipVerify` and
//!   `TLSServerName`).
//! - TCP: a connection within the timeout is passing.
//! - Script: exit 0 passing, 1 warning, else critical; on timeout the whole process group is killed.
//! - gRPC: one `grpc.health.v1.Health/Check` call over HTTP/2 (TLS with `GRPCUseTLS`); `SERVING` is
//!   passing, every other answer or failure critical.
//! - Docker: the command runs in the container through the Engine API's exec endpoints (`DOCKER_HOST` or
//!   the local socket); its exit code maps as a script's.
use concord_core::agent::{CheckKind, MAX_OUTPUT};
use concord_core::state::CheckStatus;
use std::io::Read;
use std::time::Duration;

pub(crate) async fn run(kind: &CheckKind, timeout: Duration) -> (CheckStatus, String) {
    match kind {
        CheckKind::Http {
            url,
            method,
            header,
            body,
            tls_skip_verify,
            tls_server_name,
        } => {
            let tls = if url.starts_with("https://") {
                match super::tls::client_config(*tls_skip_verify, tls_server_name, &[], &[]) {
                    Ok(config) => Some(config),
                    Err(e) => return (CheckStatus::Critical, e),
                }
            } else {
                None
            };
            let (url, method, header, body) = (url.clone(), method.clone(), header.clone(), body.clone());
            tokio::task::spawn_blocking(move || http(&url, &method, &header, &body, timeout, tls))
                .await
                .unwrap_or_else(|e| (CheckStatus::Critical, format!("check panicked: {e}")))
        }
        CheckKind::Tcp { address } => tcp(address, timeout).await,
        CheckKind::Script { args } => script(args, timeout).await,
        CheckKind::Grpc {
            target,
            use_tls,
            tls_skip_verify,
            tls_server_name,
        } => {
            let tls = use_tls.then(|| super::tls::client_config(*tls_skip_verify, tls_server_name, &[b"h2"], &[]));
            super::grpc::check(target, tls, timeout).await
        }
        CheckKind::Docker { container_id, args, .. } => super::docker::check(container_id, args, timeout).await,
        CheckKind::Ttl { .. } | CheckKind::Alias { .. } | CheckKind::Maintenance => {
            (CheckStatus::Critical, "not a probed check".into())
        }
    }
}

pub(crate) fn http(
    url: &str,
    method: &str,
    header: &std::collections::BTreeMap<String, Vec<String>>,
    body: &str,
    timeout: Duration,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> (CheckStatus, String) {
    let method = if method.is_empty() { "GET" } else { method };
    let mut agent = ureq::AgentBuilder::new().redirects(0).timeout(timeout);
    if let Some(config) = tls {
        agent = agent.tls_config(config);
    }
    let agent = agent.build();
    let mut req = agent
        .request(method, url)
        .set("User-Agent", "Consul Health Check")
        .set("Accept", "text/plain, text/*, */*");
    for (k, values) in header {
        for v in values {
            req = req.set(k, v);
        }
    }
    let result = if body.is_empty() {
        req.call()
    } else {
        req.send_string(body)
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return (CheckStatus::Critical, format!("Get {url:?}: {e}")),
    };
    let code = resp.status();
    let status_text = resp.status_text().to_string();
    let mut out = String::new();
    let _ = resp.into_reader().take(MAX_OUTPUT as u64).read_to_string(&mut out);
    let status = match code {
        200..=299 => CheckStatus::Passing,
        429 => CheckStatus::Warning,
        _ => CheckStatus::Critical,
    };
    (
        status,
        format!("HTTP {method} {url}: {code} {status_text} Output: {out}"),
    )
}

async fn tcp(address: &str, timeout: Duration) -> (CheckStatus, String) {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => (CheckStatus::Passing, format!("TCP connect {address}: Success")),
        Ok(Err(e)) => (CheckStatus::Critical, format!("dial tcp {address}: {e}")),
        Err(_) => (CheckStatus::Critical, format!("dial tcp {address}: i/o timeout")),
    }
}

async fn script(args: &[String], timeout: Duration) -> (CheckStatus, String) {
    let Some((program, rest)) = args.split_first() else {
        return (CheckStatus::Critical, "no command".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (CheckStatus::Critical, format!("Failed to start {program:?}: {e}")),
    };
    let pid = child.id();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let run = async {
        // Both pipes are drained to the end (a child blocked on a full pipe would never exit), but only
        // the first MAX_OUTPUT bytes of each are kept.
        let (out, err) = tokio::join!(capped(stdout), capped(stderr));
        (child.wait().await, out, err)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok((Ok(exit), out, err)) => {
            let mut text = String::from_utf8_lossy(&out).into_owned();
            text.push_str(&String::from_utf8_lossy(&err));
            let status = match exit.code() {
                Some(0) => CheckStatus::Passing,
                Some(1) => CheckStatus::Warning,
                _ => CheckStatus::Critical,
            };
            (status, text)
        }
        Ok((Err(e), _, _)) => (CheckStatus::Critical, format!("{program:?}: {e}")),
        Err(_) => {
            // The child leads its own process group: kill the group so its children go too.
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
            (CheckStatus::Critical, format!("Timed out ({timeout:?}) running check"))
        }
    }
}

/// Read a pipe to its end, keeping at most [`MAX_OUTPUT`] bytes.
async fn capped(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scripts_map_exit_codes_and_time_out() {
        let sh = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        let t = Duration::from_secs(5);
        assert_eq!(script(&sh("echo hi"), t).await, (CheckStatus::Passing, "hi\n".into()));
        assert_eq!(script(&sh("exit 1"), t).await.0, CheckStatus::Warning);
        assert_eq!(script(&sh("exit 7"), t).await.0, CheckStatus::Critical);
        let (status, out) = script(&sh("head -c 100000 /dev/zero | tr '\\0' x"), t).await;
        assert_eq!(
            (status, out.len()),
            (CheckStatus::Passing, MAX_OUTPUT),
            "output is capped"
        );
        let started = std::time::Instant::now();
        let (status, out) = script(&sh("sleep 30 & sleep 30"), Duration::from_millis(200)).await;
        assert_eq!(status, CheckStatus::Critical);
        assert!(out.starts_with("Timed out"), "{out}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn tcp_connects_or_fails() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        assert_eq!(tcp(&addr, Duration::from_secs(2)).await.0, CheckStatus::Passing);
        drop(l);
        assert_eq!(tcp(&addr, Duration::from_secs(2)).await.0, CheckStatus::Critical);
    }
}
