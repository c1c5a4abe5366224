//! Forwarding names outside the domain to `-recursor`s, in the order given (as Consul does): the first
//! reply that carries the request's ID is relayed unchanged; after every recursor failed or timed out the
//! client gets SERVFAIL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub(super) struct Forwarder {
    recursors: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    pub(super) fn new(recursors: Vec<SocketAddr>, timeout: Duration) -> Self {
        Forwarder { recursors, timeout }
    }

    /// The upstream reply over UDP, or SERVFAIL; None only for a request too short to answer.
    pub(super) async fn udp(&self, request: &[u8]) -> Option<Vec<u8>> {
        for upstream in &self.recursors {
            match tokio::time::timeout(self.timeout, exchange_udp(*upstream, request)).await {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(e)) => tracing::warn!(target: "agent.dns", "recurse failed: {upstream}: {e}"),
                Err(_) => tracing::warn!(target: "agent.dns", "recurse failed: {upstream}: timed out"),
            }
        }
        servfail(request)
    }

    /// The upstream reply over TCP, or SERVFAIL.
    pub(super) async fn tcp(&self, request: &[u8]) -> Option<Vec<u8>> {
        for upstream in &self.recursors {
            match tokio::time::timeout(self.timeout, exchange_tcp(*upstream, request)).await {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(e)) => tracing::warn!(target: "agent.dns", "recurse failed: {upstream}: {e}"),
                Err(_) => tracing::warn!(target: "agent.dns", "recurse failed: {upstream}: timed out"),
            }
        }
        servfail(request)
    }
}

fn servfail(request: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    concord_core::dns::servfail(request, &mut out).then_some(out)
}

fn same_id(request: &[u8], reply: &[u8]) -> bool {
    reply.len() >= 12 && request.len() >= 2 && reply[..2] == request[..2]
}

async fn exchange_udp(upstream: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let any: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    socket.connect(upstream).await?;
    socket.send(request).await?;
    let mut buf = vec![0u8; 65_535];
    // Bounded by the caller's timeout: datagrams that are not the reply (wrong ID) are skipped.
    loop {
        let n = socket.recv(&mut buf).await?;
        if same_id(request, &buf[..n]) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(request.len()).map_err(|_| std::io::Error::other("request too long"))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await?;
    if !same_id(request, &reply) {
        return Err(std::io::Error::other("reply with another ID"));
    }
    Ok(reply)
}
