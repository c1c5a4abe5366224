//! Writing one shared answer to many sockets on every core: when one change wakes thousands of blocking
//! queries, their connection tasks (on however few tokio workers the server runs: one on a 2-core machine)
//! hand the shared bytes to a few writer threads instead of making the `send` system calls themselves.
//! Each `send` on a loopback or LAN socket is most of a woken watcher's cost (the kernel's TCP transmit,
//! and on loopback the receive too), so spreading them over the cores is what shortens a large wake-up.
//!
//! Invariants:
//! - A job writes what the socket takes without blocking (a duplicate of the connection's descriptor,
//!   non-blocking like the original), never more than the answer, and reports how much it wrote; the
//!   connection task writes any rest itself, under its write timeout. Bytes are never written twice or out
//!   of order: the connection task waits for the report before it touches the socket again.
//! - A job whose report nobody waits for any more (the connection is gone) is still harmless: the duplicate
//!   keeps the socket open until the job ends, so the descriptor can never name another connection.
//! - The writer threads end when the last handle to the pool is dropped (after shutdown).
//!
//! `CONCORD_HTTP_FANOUT_WRITERS` sets the number of writer threads (0: none, every connection task writes
//! its own answer), as `TOKIO_WORKER_THREADS` sets the workers'; the default is one per core, at most
//! [`MAX_WRITERS`]. The threads cost CPU (a duplicated descriptor and a hand-off per answer, ≈ 2–3 µs) to
//! buy parallel `send`s: see BENCHMARKS.md, "Blocking queries".

use axum::body::Bytes;
use std::io::{self, Write};
use std::net::TcpStream as StdTcpStream;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Most writer threads, whatever the core count.
const MAX_WRITERS: usize = 4;

struct Job {
    socket: StdTcpStream,
    wire: Bytes,
    done: oneshot::Sender<usize>,
}

/// The writer threads.
pub(crate) struct FanOut {
    writers: Vec<mpsc::Sender<Job>>,
    next: AtomicUsize,
}

impl FanOut {
    /// One writer per core (at most [`MAX_WRITERS`]) or `CONCORD_HTTP_FANOUT_WRITERS`. `None` if there
    /// are none.
    pub(crate) fn start() -> Option<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let count = std::env::var("CONCORD_HTTP_FANOUT_WRITERS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(cores)
            .min(MAX_WRITERS);
        let mut writers = Vec::new();
        for i in 0..count {
            let (tx, rx) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name(format!("concord-http-fanout-{i}"))
                .spawn(move || {
                    for job in rx {
                        let written = write_some(&job.socket, &job.wire);
                        let _ = job.done.send(written);
                    }
                });
            if spawned.is_ok() {
                writers.push(tx);
            }
        }
        (!writers.is_empty()).then(|| FanOut {
            writers,
            next: AtomicUsize::new(0),
        })
    }

    /// Have a writer thread write as much of `wire` to `io` as it takes now; the receiver gets how many
    /// bytes that was. An error (the descriptor could not be duplicated) leaves the writing to the caller.
    pub(crate) fn write(&self, io: &TcpStream, wire: Bytes) -> io::Result<oneshot::Receiver<usize>> {
        let socket = StdTcpStream::from(io.as_fd().try_clone_to_owned()?);
        let (done, rx) = oneshot::channel();
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.writers.len();
        self.writers[at]
            .send(Job { socket, wire, done })
            .map_err(|_| io::Error::other("fan-out writer stopped"))?;
        Ok(rx)
    }
}

/// Write what the non-blocking `socket` takes of `wire` now.
fn write_some(mut socket: &StdTcpStream, wire: &[u8]) -> usize {
    let mut written = 0;
    while written < wire.len() {
        match socket.write(&wire[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_writer_thread_writes_the_bytes_to_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let pool = FanOut::start().expect("writer threads");
        let written = pool
            .write(&server, Bytes::from_static(b"hello"))
            .unwrap()
            .await
            .unwrap();
        assert_eq!(written, 5);
        let written = pool
            .write(&server, Bytes::from_static(b" world"))
            .unwrap()
            .await
            .unwrap();
        assert_eq!(written, 6);
        let mut got = [0u8; 11];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world", "in order, once");
    }
}
