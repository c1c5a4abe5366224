//! `DriverHandle`: how the HTTP API, the RPC listener, the agent and the simulator's clients talk to the
//! driver task. Requests go through one bounded queue (a full queue is answered `Overloaded` at once, never
//! waited on); control messages (cancel, status, shutdown) through an unbounded one so a drop guard can
//! always send its cancel.

use concord_core::api::{ApiError, Request, Response};
use concord_core::node::NodeStatus;
use concord_core::raft::Membership;
use concord_core::{NodeId, ReqId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Most client requests queued for the driver before new ones are answered `Overloaded`.
pub const CLIENT_QUEUE: usize = 65_536;

/// The latest `Event::Applied` a node reported (for checkers and `/v1/agent/self`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub term: u64,
    pub digest: u64,
}

pub(crate) struct ClientCall {
    pub req_id: ReqId,
    pub req: Request,
    pub reply: oneshot::Sender<Response>,
}

pub(crate) enum Control {
    Cancel { req_id: ReqId },
    Status(oneshot::Sender<NodeStatus>),
    Shutdown,
}

/// The watch channels the loop publishes on.
pub(crate) struct Published {
    pub membership: watch::Sender<Membership>,
    pub leader: watch::Sender<Option<NodeId>>,
    pub applied: watch::Sender<Applied>,
}

#[derive(Clone)]
pub struct DriverHandle {
    client_tx: mpsc::Sender<ClientCall>,
    control_tx: mpsc::UnboundedSender<Control>,
    next_req_id: Arc<AtomicU64>,
    membership: watch::Receiver<Membership>,
    leader: watch::Receiver<Option<NodeId>>,
    applied: watch::Receiver<Applied>,
    id: NodeId,
}

fn stopped() -> Response {
    Response::Error(ApiError::Overloaded("this server is shutting down".into()))
}

/// Tells the driver a caller went away before its reply arrived (e.g. an HTTP client closed a blocking
/// query), so the node can drop the parked request.
struct CancelOnDrop<'a> {
    control_tx: &'a mpsc::UnboundedSender<Control>,
    req_id: ReqId,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            // The driver may be gone already; then there is nothing to cancel.
            let _ = self.control_tx.send(Control::Cancel { req_id: self.req_id });
        }
    }
}

/// The answer to one [`DriverHandle::call`].
pub struct Call<'a> {
    // Declared before the guard so it drops first: the driver, seeing the cancel, must also see the
    // receiver closed if the request is still queued behind it (see `accept`).
    rx: oneshot::Receiver<Response>,
    guard: CancelOnDrop<'a>,
    /// Answered without reaching the node (queue full, driver stopped).
    early: Option<Box<Response>>,
}

impl std::future::Future for Call<'_> {
    type Output = Response;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Response> {
        let this = &mut *self;
        if let Some(resp) = this.early.take() {
            return std::task::Poll::Ready(*resp);
        }
        std::pin::Pin::new(&mut this.rx).poll(cx).map(|resp| {
            this.guard.armed = false;
            resp.unwrap_or_else(|_| stopped())
        })
    }
}

impl DriverHandle {
    pub(crate) fn new(
        id: NodeId,
        client_tx: mpsc::Sender<ClientCall>,
        control_tx: mpsc::UnboundedSender<Control>,
        published: &Published,
    ) -> Self {
        DriverHandle {
            client_tx,
            control_tx,
            next_req_id: Arc::new(AtomicU64::new(1)),
            membership: published.membership.subscribe(),
            leader: published.leader.subscribe(),
            applied: published.applied.subscribe(),
            id,
        }
    }

    /// This node's ID.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Send `req` to the node and wait for its answer. A full request queue is answered
    /// `Overloaded` immediately; dropping the returned future cancels the request inside the node.
    ///
    /// The request is queued right here, not at the first poll, so the returned future holds only the
    /// reply channel and the cancel guard: a parked blocking query costs a few dozen bytes here rather than
    /// a copy of the whole `Request`.
    pub fn call(&self, req: Request) -> Call<'_> {
        let req_id = self.next_req_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let early = match self.client_tx.try_send(ClientCall { req_id, req, reply }) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(_)) => Some(Box::new(Response::Error(ApiError::Overloaded(format!(
                "more than {CLIENT_QUEUE} requests are waiting for this server"
            ))))),
            Err(mpsc::error::TrySendError::Closed(_)) => Some(Box::new(stopped())),
        };
        Call {
            rx,
            guard: CancelOnDrop {
                control_tx: &self.control_tx,
                req_id,
                armed: early.is_none(),
            },
            early,
        }
    }

    /// Raft's state as of now, or None once the driver stopped.
    pub async fn status(&self) -> Option<NodeStatus> {
        let (tx, rx) = oneshot::channel();
        self.control_tx.send(Control::Status(tx)).ok()?;
        rx.await.ok()
    }

    /// The configuration in force, as last reported by the node.
    pub fn membership(&self) -> Membership {
        self.membership.borrow().clone()
    }

    /// The leader this node believes in.
    pub fn leader(&self) -> Option<NodeId> {
        *self.leader.borrow()
    }

    pub fn subscribe_leader(&self) -> watch::Receiver<Option<NodeId>> {
        self.leader.clone()
    }

    pub fn subscribe_membership(&self) -> watch::Receiver<Membership> {
        self.membership.clone()
    }

    pub fn subscribe_applied(&self) -> watch::Receiver<Applied> {
        self.applied.clone()
    }

    /// Ask the driver to stop: it flushes pending storage writes and its future resolves `Shutdown`.
    pub fn shutdown(&self) {
        let _ = self.control_tx.send(Control::Shutdown);
    }

    /// True once the driver task has ended.
    pub fn is_stopped(&self) -> bool {
        self.client_tx.is_closed()
    }
}
