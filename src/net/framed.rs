//! Frames over quinn streams: the I/O half of the wire codec, and a writer that applies
//! Nagle's algorithm ([`write_nagle`]) on a connection whose transport states `nagle`.

use super::congestion::NagleState;
use super::wire::{self, Frame, HEADER_LEN, WireError};
use quinn::{RecvStream, SendStream};

/// Chunk size for reading a payload: memory grows with bytes received, not with the
/// length a peer claims.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameIoError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("reading: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("writing: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    #[error("{0}")]
    Peer(String),
}

/// Encodes and writes one frame; `buf` is scratch space reused between calls.
pub async fn write_frame(
    send: &mut SendStream,
    frame: &Frame,
    buf: &mut Vec<u8>,
) -> Result<(), FrameIoError> {
    buf.clear();
    wire::encode(frame, buf)?;
    send.write_all(buf).await?;
    Ok(())
}

/// Writes `bytes` as a TCP socket with Nagle's algorithm on would send them (RFC 896,
/// RFC 1122 §4.2.3.4, in Linux's form with Minshall's change): the whole segments of
/// [`NagleState::mss`] bytes leave at once, and so does the partial last one unless a
/// small segment sent earlier on the connection is unacknowledged; then it waits for that
/// acknowledgement. Without a `nagle` state (`TCP_NODELAY`) every byte leaves at once.
///
/// Unlike a socket's `write`, which returns once the kernel holds the bytes, this returns
/// when the held segment has been handed to quinn: a writer that would do other work
/// meanwhile waits too. Writes of several streams held at once leave together when the
/// acknowledgement comes, in as few packets as quinn packs them into, as TCP coalesces
/// small writes into one segment.
pub async fn write_nagle(
    send: &mut SendStream,
    nagle: Option<&NagleState>,
    bytes: &[u8],
) -> Result<(), quinn::WriteError> {
    let Some(nagle) = nagle else {
        return send.write_all(bytes).await;
    };
    let mss = nagle.mss();
    let whole = bytes.len() / mss * mss;
    if whole > 0 {
        send.write_all(&bytes[..whole]).await?;
    }
    let tail = &bytes[whole..];
    if !tail.is_empty() {
        // A stream the peer stopped, or a connection that is lost, will never see the
        // acknowledgement: the write below then fails instead of waiting forever.
        tokio::select! {
            biased;
            () = nagle.send_small() => {}
            _ = send.stopped() => {}
        }
        send.write_all(tail).await?;
    }
    Ok(())
}

/// [`write_frame`] through [`write_nagle`].
pub async fn write_frame_nagle(
    send: &mut SendStream,
    nagle: Option<&NagleState>,
    frame: &Frame,
    buf: &mut Vec<u8>,
) -> Result<(), FrameIoError> {
    buf.clear();
    wire::encode(frame, buf)?;
    write_nagle(send, nagle, buf).await?;
    Ok(())
}

/// Writes an activations frame of `len` bytes of hidden states without building it in
/// memory (the bytes are zeros: only their number matters to the network).
pub async fn write_activations(
    send: &mut SendStream,
    id: u64,
    tokens: u32,
    len: usize,
) -> Result<(), FrameIoError> {
    static ZEROS: [u8; READ_CHUNK] = [0; READ_CHUNK];
    let payload = 12 + len;
    let payload = u32::try_from(payload).map_err(|_| WireError::TooLarge {
        len: u32::MAX,
        max: u32::MAX,
    })?;
    let mut head = Vec::with_capacity(HEADER_LEN + 12);
    head.push(wire::Kind::Activations as u8);
    head.extend_from_slice(&payload.to_be_bytes());
    head.extend_from_slice(&id.to_be_bytes());
    head.extend_from_slice(&tokens.to_be_bytes());
    send.write_all(&head).await?;
    let mut left = len;
    while left > 0 {
        let n = left.min(READ_CHUNK);
        send.write_all(&ZEROS[..n]).await?;
        left -= n;
    }
    Ok(())
}

/// Reads one frame; `Ok(None)` when the peer finished the stream between frames.
pub async fn read_frame(recv: &mut RecvStream, max: u32) -> Result<Option<Frame>, FrameIoError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match recv.read(&mut header[filled..]).await? {
            Some(n) => filled += n,
            None if filled == 0 => return Ok(None),
            None => return Err(FrameIoError::Truncated),
        }
    }
    let (kind, len) = wire::parse_header(header, max)?;
    let len = len as usize;
    let mut payload = Vec::with_capacity(len.min(READ_CHUNK));
    while payload.len() < len {
        match recv
            .read_chunk((len - payload.len()).min(READ_CHUNK), true)
            .await?
        {
            Some(chunk) => payload.extend_from_slice(&chunk.bytes),
            None => return Err(FrameIoError::Truncated),
        }
    }
    Ok(Some(wire::parse_payload(kind, payload)?))
}
