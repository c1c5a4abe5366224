//! One-shot RPC exchanges used by the agent: a hello exchange for `-bootstrap-expect` discovery, and a
//! call (a joining server's `AddServer`).

use super::frames::{read_frame_within, write_frame, RpcError, HELLO_TIMEOUT};
use super::{AddressBook, ServerEntry};
use concord_core::api::{Request, Response};
use concord_core::wire::Frame;
use std::time::Duration;
use tokio::net::TcpStream;

async fn dial(address: &str, book: &AddressBook, max_frame: usize) -> Result<(TcpStream, ServerEntry), RpcError> {
    let mut stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address))
        .await
        .map_err(|_| RpcError::Timeout)??;
    stream.set_nodelay(true)?;
    write_frame(&mut stream, &book.hello()).await?;
    let mut buf = Vec::new();
    match read_frame_within(&mut stream, &mut buf, max_frame, HELLO_TIMEOUT).await? {
        Frame::Hello {
            id,
            name,
            address,
            servers,
            ..
        } => {
            book.learn_hello(id, &name, &address, &servers);
            Ok((stream, (id, name, address)))
        }
        _ => Err(RpcError::Protocol("expected a hello".into())),
    }
}

/// Exchange hellos with the server at `address`; returns who answered. Both sides learn every server the
/// other knows of.
pub async fn exchange_hello(address: &str, book: &AddressBook, max_frame: usize) -> Result<ServerEntry, RpcError> {
    dial(address, book, max_frame).await.map(|(_, who)| who)
}

/// Send `req` to the server at `address` and wait up to `timeout` for its answer.
pub async fn call(
    address: &str,
    book: &AddressBook,
    req: Request,
    max_frame: usize,
    timeout: Duration,
) -> Result<Response, RpcError> {
    call_after_dial(address, book, req, max_frame, timeout)
        .await
        .map_err(|e| match e {
            CallError::Dial(e) | CallError::Call(e) => e,
        })
}

/// Where a call failed: before the request left (`Dial`: safe to try another server) or after.
#[derive(Debug)]
pub enum CallError {
    Dial(RpcError),
    Call(RpcError),
}

/// [`call`], telling a failure to reach the server apart from a failure after the request was sent.
pub async fn call_after_dial(
    address: &str,
    book: &AddressBook,
    req: Request,
    max_frame: usize,
    timeout: Duration,
) -> Result<Response, CallError> {
    let (mut stream, _) = dial(address, book, max_frame).await.map_err(CallError::Dial)?;
    call_on(&mut stream, req, max_frame, timeout)
        .await
        .map_err(CallError::Call)
}

async fn call_on(
    stream: &mut TcpStream,
    req: Request,
    max_frame: usize,
    timeout: Duration,
) -> Result<Response, RpcError> {
    write_frame(stream, &Frame::Call { id: 1, req }).await?;
    let mut buf = Vec::new();
    loop {
        match read_frame_within(stream, &mut buf, max_frame, timeout).await? {
            Frame::Reply { id: 1, resp } => return Ok(resp),
            Frame::Hello { .. } => continue,
            _ => return Err(RpcError::Protocol("unexpected frame while waiting for a reply".into())),
        }
    }
}
