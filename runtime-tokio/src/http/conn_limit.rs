//! Per-client connection limit (`limits.http_max_conns_per_client`): open connections counted per remote
//! IP. Each accepted connection's task holds a guard that gives its slot back when the connection ends.
//! A connection beyond the limit gets Consul's answer, a bare 429, and is closed without reaching the router.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Open connections per client IP, shared by every listener of one server.
#[derive(Clone)]
pub(crate) struct PerClientLimit {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerClientLimit {
    pub(crate) fn new(max: usize) -> Self {
        PerClientLimit {
            max,
            open: Arc::default(),
        }
    }

    /// Take a slot for `ip`, or `None` if it already has `max` connections open.
    pub(crate) fn acquire(&self, ip: IpAddr) -> Option<SlotGuard> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if self.max != 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SlotGuard {
            limit: self.clone(),
            ip,
        })
    }
}

pub(crate) struct SlotGuard {
    limit: PerClientLimit,
    ip: IpAddr,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 60\r\nX-Consul-Default-ACL-Policy: allow\r\nConnection: close\r\n\r\nToo many open connections from this client (http_max_conns)\n";

pub(crate) async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(TOO_MANY).await?;
        stream.shutdown().await
    })
    .await;
}

/// As axum's own listener: per-connection errors are skipped, anything else (e.g. EMFILE) is logged and
/// waited out so the accept loop does not spin.
pub(crate) async fn handle_accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("HTTP accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_response_has_the_right_length() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body.len(), 60);
    }

    #[test]
    fn slots_are_counted_per_ip_and_released_on_drop() {
        let limit = PerClientLimit::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = limit.acquire(a).unwrap();
        let _s2 = limit.acquire(a).unwrap();
        assert!(limit.acquire(a).is_none());
        assert!(limit.acquire(b).is_some());
        drop(s1);
        assert!(limit.acquire(a).is_some());
        assert!(PerClientLimit::new(0).acquire(a).is_some(), "0 means unlimited");
    }
}
