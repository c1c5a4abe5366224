//! The RPC listener: accepts connections from other servers, reads their hello, then feeds `Peer` frames
//! to the driver and answers `Call` frames through a [`CallHandler`] (the driver handle in production).

use super::frames::{read_frame, read_frame_within, write_frames, RpcError, HELLO_TIMEOUT};
use super::AddressBook;
use crate::driver::DriverHandle;
use concord_core::api::{Request, Response};
use concord_core::wire::Frame;
use concord_core::{NodeId, PeerMessage};
use std::future::Future;
use std::sync::Arc;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// Most inbound connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 1024;
/// Calls in flight on one connection before the listener stops reading from it.
const MAX_CALLS_PER_CONNECTION: usize = 64;

/// Answers `Call` frames.
pub trait CallHandler: Clone + Send + Sync + 'static {
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send;
}

impl CallHandler for DriverHandle {
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send {
        DriverHandle::call(self, req)
    }
}

/// Serve `listener` until `shutdown` resolves; then every connection is closed.
pub async fn serve<H: CallHandler>(
    listener: TcpListener,
    book: Arc<AddressBook>,
    peer_tx: mpsc::Sender<(NodeId, PeerMessage)>,
    calls: H,
    max_frame: usize,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically EMFILE; the listener itself is fine.
                tracing::warn!(target: "agent.server.rpc", "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(target: "agent.server.rpc", "too many RPC connections; closing the one from {remote}");
            continue;
        };
        let (book, peer_tx, calls) = (book.clone(), peer_tx.clone(), calls.clone());
        conns.spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_connection(stream, &book, peer_tx, calls, max_frame).await {
                if e.is_bad_input() {
                    book.count_bad_frame();
                    tracing::warn!(target: "agent.server.rpc", "closing RPC connection from {remote}: {e}");
                } else {
                    tracing::debug!(target: "agent.server.rpc", "RPC connection from {remote} ended: {e}");
                }
            }
        });
    }
}

async fn serve_connection<H: CallHandler>(
    stream: TcpStream,
    book: &AddressBook,
    peer_tx: mpsc::Sender<(NodeId, PeerMessage)>,
    calls: H,
    max_frame: usize,
) -> Result<(), RpcError> {
    stream.set_nodelay(true)?;
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut buf = Vec::new();
    let from = match read_frame_within(&mut rd, &mut buf, max_frame, HELLO_TIMEOUT).await? {
        Frame::Hello {
            id,
            name,
            address,
            datacenter,
            servers,
        } => {
            if datacenter != book.me().datacenter {
                return Err(RpcError::Protocol(format!(
                    "server {name} is in datacenter {datacenter:?}, this one in {:?}",
                    book.me().datacenter
                )));
            }
            book.learn_hello(id, &name, &address, &servers);
            id
        }
        _ => return Err(RpcError::Protocol("the first frame must be a hello".into())),
    };
    let (out_tx, out_rx) = mpsc::channel(MAX_CALLS_PER_CONNECTION + 1);
    let writer = tokio::spawn(write_frames(wr, out_rx));
    let _ = out_tx.send(book.hello()).await;
    // Calls in flight are aborted when the connection ends, which cancels them inside the node.
    let mut in_flight = JoinSet::new();
    let result = loop {
        while in_flight.try_join_next().is_some() {}
        if in_flight.len() >= MAX_CALLS_PER_CONNECTION {
            in_flight.join_next().await;
        }
        match read_frame(&mut rd, &mut buf, max_frame).await {
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
            Ok(Some(Frame::Peer(msg))) => {
                if peer_tx.send((from, msg)).await.is_err() {
                    break Ok(()); // The driver stopped.
                }
            }
            Ok(Some(Frame::Call { id, req })) => {
                let (calls, out_tx) = (calls.clone(), out_tx.clone());
                in_flight.spawn(async move {
                    let resp = calls.call(req).await;
                    let _ = out_tx.send(Frame::Reply { id, resp }).await;
                });
            }
            Ok(Some(Frame::Hello {
                id,
                name,
                address,
                servers,
                ..
            })) if id == from => {
                book.learn_hello(id, &name, &address, &servers);
                let _ = out_tx.send(book.hello()).await;
            }
            Ok(Some(_)) => break Err(RpcError::Protocol("unexpected frame from a dialer".into())),
        }
    };
    // Let answered calls go out before the writer closes.
    if result.is_ok() {
        while in_flight.join_next().await.is_some() {}
    }
    drop(in_flight);
    drop(out_tx);
    let _ = writer.await;
    result
}
