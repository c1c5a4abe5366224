//! `TcpTransport`: the driver's outgoing side. One task per peer owns one outbound connection and a
//! bounded queue. The task connects lazily (on the first message), with exponential backoff after a
//! failure; while it backs off, messages for that peer are dropped rather than queued, so a dead peer
//! costs no memory and a revived one gets fresh messages, not a backlog of stale heartbeats.

use super::frames::{encode_batch, read_frame_within, write_frame, RpcError, HELLO_TIMEOUT};
use super::AddressBook;
use crate::driver::Transport;
use concord_core::raft::Membership;
use concord_core::wire::Frame;
use concord_core::{NodeId, PeerMessage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct TcpTransport {
    book: Arc<AddressBook>,
    max_frame: usize,
    links: HashMap<NodeId, mpsc::Sender<Frame>>,
    undelivered_tx: mpsc::UnboundedSender<(NodeId, PeerMessage)>,
    undelivered_rx: mpsc::UnboundedReceiver<(NodeId, PeerMessage)>,
}

/// Report a frame that was never handed to its peer, if the node can act on it (a forwarded request or
/// a read-index request can be re-routed; Raft messages are simply retried by Raft).
fn report_undelivered(tx: &mpsc::UnboundedSender<(NodeId, PeerMessage)>, to: NodeId, frame: Frame) {
    if let Frame::Peer(msg @ (PeerMessage::Forward { .. } | PeerMessage::ReadIndex { .. })) = frame {
        let _ = tx.send((to, msg));
    }
}

impl TcpTransport {
    /// Must be created inside a tokio runtime: peer tasks are spawned on first use.
    pub fn new(book: Arc<AddressBook>, max_frame: usize) -> Self {
        let (undelivered_tx, undelivered_rx) = mpsc::unbounded_channel();
        TcpTransport {
            book,
            max_frame,
            links: HashMap::new(),
            undelivered_tx,
            undelivered_rx,
        }
    }

    pub fn address_book(&self) -> &Arc<AddressBook> {
        &self.book
    }

    /// Make sure a link to `to` exists (spawning its task), if its address is known.
    fn ensure_link(&mut self, to: NodeId) -> bool {
        if self.links.get(&to).is_some_and(|tx| !tx.is_closed()) {
            return true;
        }
        if self.book.address(to).is_none() {
            return false;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        tokio::spawn(run_link(
            to,
            self.book.clone(),
            rx,
            self.max_frame,
            self.undelivered_tx.clone(),
        ));
        self.links.insert(to, tx);
        true
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, to: NodeId, msg: PeerMessage) {
        if to == self.book.me().id {
            return;
        }
        if !self.ensure_link(to) {
            tracing::debug!(target: "agent.server.rpc", "no address for server {to}; message dropped");
            self.book.count_dropped();
            report_undelivered(&self.undelivered_tx, to, Frame::Peer(msg));
            return;
        }
        if let Err(e) = self.links[&to].try_send(Frame::Peer(msg)) {
            self.book.count_dropped();
            let frame = match e {
                mpsc::error::TrySendError::Full(f) | mpsc::error::TrySendError::Closed(f) => f,
            };
            report_undelivered(&self.undelivered_tx, to, frame);
        }
    }

    async fn undelivered(&mut self) -> (NodeId, PeerMessage) {
        match self.undelivered_rx.recv().await {
            Some(m) => m,
            // We hold a sender ourselves, so this never happens; never yield rather than spin.
            None => std::future::pending().await,
        }
    }

    fn set_membership(&mut self, membership: &Membership) {
        for (id, server) in &membership.servers {
            self.book.learn(*id, &server.name, &server.address);
        }
    }
}

/// Dial `to` at its current address, introduce ourselves, and check the other side is who we expect.
/// A connection: the write half, and a flag the reader sets when the peer closed it (so the next message
/// reconnects instead of vanishing into a dead socket's buffer).
type Conn = (OwnedWriteHalf, Arc<std::sync::atomic::AtomicBool>);

async fn connect(to: NodeId, book: &AddressBook, max_frame: usize) -> Result<Conn, RpcError> {
    let address = book
        .address(to)
        .ok_or_else(|| RpcError::Protocol(format!("no address for {to}")))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address))
        .await
        .map_err(|_| RpcError::Timeout)??;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    write_frame(&mut wr, &book.hello()).await?;
    let mut buf = Vec::new();
    match read_frame_within(&mut rd, &mut buf, max_frame, HELLO_TIMEOUT).await? {
        Frame::Hello {
            id,
            name,
            address: their_address,
            servers,
            ..
        } => {
            if id != to {
                return Err(RpcError::Protocol(format!("{address} is server {id}, not {to}")));
            }
            book.learn_hello(id, &name, &their_address, &servers);
        }
        _ => return Err(RpcError::Protocol("expected a hello".into())),
    }
    // Nothing else comes back on a transport connection; keep reading only to notice it closing.
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = closed.clone();
    tokio::spawn(async move {
        let mut sink = [0u8; 512];
        use tokio::io::AsyncReadExt;
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
        flag.store(true, std::sync::atomic::Ordering::Release);
    });
    Ok((wr, closed))
}

async fn run_link(
    to: NodeId,
    book: Arc<AddressBook>,
    mut rx: mpsc::Receiver<Frame>,
    max_frame: usize,
    undelivered: mpsc::UnboundedSender<(NodeId, PeerMessage)>,
) {
    let mut conn: Option<Conn> = None;
    let mut retry_at = Instant::now();
    let mut backoff = MIN_BACKOFF;
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        if conn
            .as_ref()
            .is_some_and(|(_, closed)| closed.load(std::sync::atomic::Ordering::Acquire))
        {
            tracing::debug!(target: "agent.server.rpc", "server {to} closed the connection");
            conn = None;
        }
        if conn.is_none() {
            if Instant::now() < retry_at {
                book.count_dropped();
                report_undelivered(&undelivered, to, first);
                continue;
            }
            match connect(to, &book, max_frame).await {
                Ok(c) => {
                    tracing::debug!(target: "agent.server.rpc", "connected to server {to}");
                    conn = Some(c);
                    backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    tracing::debug!(target: "agent.server.rpc", "cannot reach server {to}: {e}; retrying in {backoff:?}");
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    book.count_dropped();
                    report_undelivered(&undelivered, to, first);
                    while let Ok(frame) = rx.try_recv() {
                        book.count_dropped();
                        report_undelivered(&undelivered, to, frame);
                    }
                    continue;
                }
            }
        }
        let Some((wr, _)) = conn.as_mut() else { continue };
        encode_batch(&first, &mut rx, &mut buf);
        if let Err(e) = wr.write_all(&buf).await {
            tracing::debug!(target: "agent.server.rpc", "connection to server {to} lost: {e}");
            conn = None;
            book.count_dropped();
        }
    }
}
