//! Frames over quinn streams: the I/O half of the wire codec, and a writer that applies
//! Nagle's algorithm ([`write_nagle`]) on a connection whose transport states `nagle`.

use super::congestion::NagleState;
use super::wire::{self, Frame, HEADER_LEN, WireError};
use quinn::{RecvStream, SendStream};

/// Chunk size for reading a payload: memory grows with bytes received, not with the
/// length a peer claims.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

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

/// Writes to one stream as a TCP socket with Nagle's algorithm on sends (RFC 896, RFC 1122
/// §4.2.3.4, in Linux's form with Minshall's change): whole segments of
/// [`NagleState::mss`] bytes leave at once, and so does a partial last one unless a small
/// segment sent earlier on the connection is unacknowledged; then it stays here, and the
/// next write's bytes join it, as later writes join the last partial segment of a socket's
/// send queue, so that they too leave as whole segments. [`NagleWriter::flush`] waits for
/// the acknowledgement and sends what is held (a message's end, before its writer reads).
pub struct NagleWriter<'a> {
    send: &'a mut SendStream,
    nagle: &'a NagleState,
    held: Vec<u8>,
    /// What is held has been counted ([`NagleState::held`]).
    counted: bool,
}

impl<'a> NagleWriter<'a> {
    pub fn new(send: &'a mut SendStream, nagle: &'a NagleState) -> Self {
        NagleWriter {
            send,
            nagle,
            held: Vec::new(),
            counted: false,
        }
    }

    /// Sends what Nagle's algorithm lets go of `bytes` (after what is held) and holds the rest.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), quinn::WriteError> {
        self.held.extend_from_slice(bytes);
        let mss = self.nagle.mss();
        let whole = self.held.len() / mss * mss;
        if whole > 0 {
            self.send.write_all(&self.held[..whole]).await?;
            self.held.drain(..whole);
        }
        if self.held.is_empty() {
            self.counted = false;
            return Ok(());
        }
        if self.nagle.try_send_small() {
            self.send.write_all(&self.held).await?;
            self.held.clear();
            self.counted = false;
        } else if !self.counted {
            self.nagle.count_held();
            self.counted = true;
        }
        Ok(())
    }

    /// Whether a partial segment is held for an acknowledgement.
    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// The stream it writes to.
    pub fn stream(&mut self) -> &mut SendStream {
        self.send
    }

    /// Sends what is held, once the caller has waited for [`NagleState::send_held`] (which
    /// marked it as the unacknowledged small segment).
    pub(crate) async fn release(&mut self) -> Result<(), quinn::WriteError> {
        let r = self.send.write_all(&self.held).await;
        self.held.clear();
        self.counted = false;
        r
    }

    /// Sends what is held once no small segment is unacknowledged. A stream the peer
    /// stopped, or a connection that is lost, will never see that acknowledgement: the
    /// write then fails instead of waiting forever.
    pub async fn flush(&mut self) -> Result<(), quinn::WriteError> {
        if self.held.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            () = self.nagle.send_held() => {}
            _ = self.send.stopped() => {}
        }
        self.send.write_all(&self.held).await?;
        self.held.clear();
        self.counted = false;
        Ok(())
    }
}

/// Writes `bytes` as one write to a TCP socket with Nagle's algorithm on ([`NagleWriter`])
/// and waits for what it holds to leave. Without a `nagle` state (`TCP_NODELAY`) every
/// byte leaves at once.
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
    let mut w = NagleWriter::new(send, nagle);
    w.write(bytes).await?;
    w.flush().await
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

/// The header of an activations frame of `len` bytes of hidden states.
pub(crate) fn activations_head(id: u64, tokens: u32, len: usize) -> Result<Vec<u8>, WireError> {
    let payload = u32::try_from(12 + len).map_err(|_| WireError::TooLarge {
        len: u32::MAX,
        max: u32::MAX,
    })?;
    let mut head = Vec::with_capacity(HEADER_LEN + 12);
    head.push(wire::Kind::Activations as u8);
    head.extend_from_slice(&payload.to_be_bytes());
    head.extend_from_slice(&id.to_be_bytes());
    head.extend_from_slice(&tokens.to_be_bytes());
    Ok(head)
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
    let head = activations_head(id, tokens, len)?;
    send.write_all(&head).await?;
    let mut left = len;
    while left > 0 {
        let n = left.min(READ_CHUNK);
        send.write_all(&ZEROS[..n]).await?;
        left -= n;
    }
    Ok(())
}

/// [`write_activations`] through a [`NagleWriter`]: its header and payload as the separate
/// writes `write_activations` makes, so the header's small segment and each partial
/// segment meet Nagle's algorithm as a socket's would.
pub async fn write_activations_nagle(
    send: &mut SendStream,
    nagle: Option<&NagleState>,
    id: u64,
    tokens: u32,
    len: usize,
) -> Result<(), FrameIoError> {
    let Some(nagle) = nagle else {
        return write_activations(send, id, tokens, len).await;
    };
    static ZEROS: [u8; READ_CHUNK] = [0; READ_CHUNK];
    let head = activations_head(id, tokens, len)?;
    let mut w = NagleWriter::new(send, nagle);
    w.write(&head).await?;
    let mut left = len;
    while left > 0 {
        let n = left.min(READ_CHUNK);
        w.write(&ZEROS[..n]).await?;
        left -= n;
    }
    w.flush().await?;
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
