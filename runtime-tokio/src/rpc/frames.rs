//! Reading and writing frames on a byte stream.

use concord_core::wire::{decode_frame, encode_frame, frame_len, Frame, FrameError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Most bytes gathered into one write syscall by a connection's writer.
pub(crate) const MAX_WRITE_BATCH: usize = 256 * 1024;
/// How long a dialer or listener waits for the other side's hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out")]
    Timeout,
    #[error("connection closed")]
    Closed,
}

impl RpcError {
    /// A fault of the peer's bytes (as opposed to the network): counted as a bad frame.
    pub(crate) fn is_bad_input(&self) -> bool {
        matches!(self, RpcError::Frame(_) | RpcError::Protocol(_))
    }
}

/// Read one frame. `Ok(None)` on a clean end of stream between frames. `buf` is reused across calls and
/// never grows past `max_frame`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max_frame: usize,
) -> Result<Option<Frame>, RpcError> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = frame_len(prefix, max_frame)?;
    // Grow the buffer as bytes arrive rather than trusting the prefix: a peer that claims a large frame
    // and sends nothing costs nothing.
    buf.clear();
    let read = (&mut *r).take(len as u64).read_to_end(buf).await?;
    if read < len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(Some(decode_frame(buf)?))
}

/// Read one frame, giving up after `timeout`; end of stream is an error here.
pub(crate) async fn read_frame_within<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max_frame: usize,
    timeout: Duration,
) -> Result<Frame, RpcError> {
    match tokio::time::timeout(timeout, read_frame(r, buf, max_frame)).await {
        Ok(Ok(Some(frame))) => Ok(frame),
        Ok(Ok(None)) => Err(RpcError::Closed),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(RpcError::Timeout),
    }
}

pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> Result<(), RpcError> {
    w.write_all(&encode_frame(frame)).await?;
    w.flush().await?;
    Ok(())
}

/// Encode `first` and whatever else is queued (up to [`MAX_WRITE_BATCH`] bytes) into `buf`, so many
/// frames leave in one write syscall.
pub(crate) fn encode_batch(first: &Frame, rx: &mut mpsc::Receiver<Frame>, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&encode_frame(first));
    while buf.len() < MAX_WRITE_BATCH {
        match rx.try_recv() {
            Ok(frame) => buf.extend_from_slice(&encode_frame(&frame)),
            Err(_) => break,
        }
    }
}

/// Write every frame from `rx` to `w`, batched, until `rx` closes or a write fails.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Frame>) {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        encode_batch(&first, &mut rx, &mut buf);
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}
