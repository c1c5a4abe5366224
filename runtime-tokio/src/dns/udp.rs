//! The UDP side of the DNS server: dedicated threads (`UDP_THREADS` per socket), blocked in `recvmmsg(2)`.
//!
//! Why not a tokio task: a query through tokio's `UdpSocket` cost a readiness wake-up (epoll, then a futex
//! to unpark a worker), a task poll, one `recvfrom` and one `sendto` — about 2,750 instructions and 2.2
//! system calls per query on top of the answer itself (BENCHMARKS.md). A thread blocked in the receive is
//! woken by the kernel directly when a datagram arrives, takes every datagram already queued (up to
//! [`BATCH`]) with one `recvmmsg`, answers them with the same sans-IO core path (`Responder::respond`) and
//! sends the replies with one `sendmmsg`. Under load a burst costs one wake-up and two system calls.
//!
//! Invariants: a datagram never stops the loop (malformed ones are answered FORMERR or dropped by the core,
//! one by one); the thread ends within [`STOP_POLL`] of the stop signal (or of the agent dropping the
//! sender); names outside the zones are forwarded on a tokio task, so a slow recursor never holds the loop.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use concord_core::dns::{Outcome, Responder, Transport};
use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, setsockopt, sockopt, MsgFlags, MultiHeaders, SockaddrStorage};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::watch;

use super::{answer_with, recursor, unix_time, Snapshot, ViewCache};

/// Datagrams taken per `recvmmsg` (and replies per `sendmmsg`).
pub(super) const BATCH: usize = 32;
/// Room for the largest UDP payload, so no request is ever cut (65,535 − 8 − 20).
const SLOT: usize = 65_507;
/// The receive buffer asked for (the kernel caps it at `net.core.rmem_max`): room for a few thousand
/// queued queries, so a burst that arrives while the thread is descheduled waits instead of being dropped
/// (the default, about 200 KiB, holds some 250 and a dropped query costs the client a retry seconds later).
const RECV_BUFFER: usize = 4 << 20;
/// How often a thread with nothing to receive looks at the stop signal.
pub(super) const STOP_POLL: Duration = Duration::from_millis(100);

/// What one serving thread needs.
pub(super) struct UdpServer {
    pub socket: Arc<UdpSocket>,
    pub responder: Arc<Responder>,
    pub views: watch::Receiver<Arc<Snapshot>>,
    pub forward: Arc<recursor::Forwarder>,
    /// Where recursion tasks run.
    pub runtime: tokio::runtime::Handle,
    /// `true` (or the sender gone) ends the thread.
    pub stop: watch::Receiver<bool>,
}

/// A received datagram: its length and where it came from.
#[derive(Clone, Copy)]
struct Datagram {
    len: usize,
    peer: Option<SockaddrStorage>,
}

/// Receive and send buffers, allocated once per thread.
struct Buffers {
    /// [`BATCH`] receive slots of [`SLOT`] bytes (pages are touched only as far as datagrams reach).
    recv: Vec<u8>,
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    got: [Datagram; BATCH],
    /// The peers of the replies being sent (kept to reuse its allocation).
    send_to: Vec<Option<SockaddrStorage>>,
    /// One reply buffer per slot; each keeps its capacity across batches.
    out: Vec<Vec<u8>>,
}

impl Buffers {
    fn new() -> Self {
        Buffers {
            recv: vec![0; BATCH * SLOT],
            recv_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            got: [Datagram { len: 0, peer: None }; BATCH],
            send_to: Vec::with_capacity(BATCH),
            out: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
        }
    }

    /// Block until at least one datagram is queued (or the read timeout passes: `WouldBlock`), then take
    /// every queued one up to [`BATCH`]. Returns how many were taken.
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let mut chunks = self.recv.chunks_mut(SLOT);
        let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().expect("BATCH slots of SLOT bytes"))]);
        let received = recvmmsg(
            socket.as_raw_fd(),
            &mut self.recv_headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        for msg in received {
            self.got[n] = Datagram {
                len: msg.bytes,
                peer: msg.address,
            };
            n += 1;
        }
        Ok(n)
    }

    fn request(&self, i: usize) -> &[u8] {
        &self.recv[i * SLOT..i * SLOT + self.got[i].len]
    }
}

/// Serve until the stop signal. Runs on its own (blocking) thread.
pub(super) fn serve(server: UdpServer) {
    let socket = server.socket.clone();
    if let Err(e) = socket.set_read_timeout(Some(STOP_POLL)) {
        tracing::error!(target: "agent.dns", "udp socket: cannot set a read timeout: {e}");
        return;
    }
    if let Err(e) = setsockopt(&*socket, sockopt::RcvBuf, &RECV_BUFFER) {
        tracing::debug!(target: "agent.dns", "udp socket: receive buffer stays at the default: {e}");
    }
    let mut views = ViewCache::new(server.views.clone());
    let mut rng = SmallRng::from_entropy();
    let mut bufs = Buffers::new();
    // Indices of the slots whose reply goes out in this batch.
    let mut replies = [0usize; BATCH];
    loop {
        let n = match bufs.receive(&socket) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => 0,
            Err(e) => {
                // ICMP errors from earlier sends can surface here; keep serving.
                tracing::debug!(target: "agent.dns", "udp receive: {e}");
                0
            }
        };
        if server.stop.has_changed().is_err() || *server.stop.borrow() {
            return;
        }
        let now = unix_time();
        let mut m = 0;
        for i in 0..n {
            let Some(peer) = bufs.got[i].peer else { continue };
            let mut out = std::mem::take(&mut bufs.out[i]);
            let outcome = answer_with(
                &server.responder,
                views.get(),
                now,
                bufs.request(i),
                Transport::Udp,
                &mut rng,
                &mut out,
            );
            bufs.out[i] = out;
            match outcome {
                Outcome::Reply => {
                    replies[m] = i;
                    m += 1;
                }
                Outcome::Recurse => recurse(&server, bufs.request(i), peer),
                Outcome::Drop => {}
            }
        }
        send_replies(&socket, &mut bufs, &replies[..m]);
    }
}

/// Send the replies of the given slots with one `sendmmsg`. A reply the kernel refuses outright (the first
/// of the call) is skipped and the call repeated for the rest. Linux reports a failure further into the
/// batch only as a short count, which nix exposes only through an iterator that reads address slots a
/// send never fills; so a reply failing mid-batch (local firewall policy, memory pressure) costs the replies
/// after it in that batch, and those clients retry, as for any lost datagram.
fn send_replies(socket: &UdpSocket, bufs: &mut Buffers, slots: &[usize]) {
    let mut rest = slots;
    while let Some((&first, after)) = rest.split_first() {
        let iovs: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|k| [IoSlice::new(rest.get(k).map_or(&[][..], |&i| &bufs.out[i]))]);
        bufs.send_to.clear();
        bufs.send_to.extend(rest.iter().map(|&i| bufs.got[i].peer));
        match sendmmsg(
            socket.as_raw_fd(),
            &mut bufs.send_headers,
            iovs[..rest.len()].iter(),
            &bufs.send_to,
            [],
            MsgFlags::empty(),
        ) {
            Ok(_) => return,
            Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::debug!(target: "agent.dns", "udp send to {:?}: {e}", bufs.got[first].peer.as_ref().and_then(socket_addr));
                rest = after;
            }
        }
    }
}

/// Forward a name outside the zones on a tokio task; the reply goes back through the same socket.
fn recurse(server: &UdpServer, request: &[u8], peer: SockaddrStorage) {
    let Some(peer) = socket_addr(&peer) else { return };
    let (socket, forward, request) = (server.socket.clone(), server.forward.clone(), request.to_vec());
    server.runtime.spawn(async move {
        if let Some(reply) = forward.udp(&request).await {
            // A UDP send on this (blocking) socket waits only while the send buffer is full.
            let _ = socket.send_to(&reply, peer);
        }
    });
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}
