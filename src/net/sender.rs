//! A stream's sending half as its connection's transport sends: at once (`TCP_NODELAY`),
//! or through Nagle's algorithm as a socket's send queue does when the connection's
//! transport states `nagle` (its controller is a `NagleController`: [`NagleState::of`]).
//!
//! The harness writes every frame through a [`Sender`], chosen once where the stream is
//! opened or accepted, so no writer needs to know which transport runs. Without Nagle a
//! `Sender` is the `SendStream` itself and writes exactly as before. With it, a task of
//! the stream's own holds the queue ([`NagleWriter`]): a write returns once the queue has
//! taken its bytes, as a socket's `write` returns once the kernel has them, and a held
//! partial segment leaves when the acknowledgement comes, whatever the writer does
//! meanwhile (reads its peer, computes, waits for its engine); later writes join it, so a
//! stream of small frames (tokens) leaves in one segment per acknowledgement, as over TCP.
//! `finish` ends the stream after what is held.

use super::congestion::NagleState;
use super::framed::{self, FrameIoError, NagleWriter};
use super::wire::{self, Frame};
use quinn::{ClosedStream, RecvStream, SendStream, VarInt, WriteError};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The buffer a relay copies through: `tokio::io::copy`'s (8 KiB).
const COPY_CHUNK: usize = 8 * 1024;

/// A stream's sending half, as its connection's transport writes.
pub struct Sender(Inner);

enum Inner {
    /// Every byte leaves at once.
    Plain(SendStream),
    /// A queue under Nagle's algorithm, kept by the stream's own task.
    Nagle {
        queue: mpsc::UnboundedSender<Command>,
        /// Cancelled when the stream cannot send any more: the peer stopped it, the
        /// connection was lost, or a write failed.
        ended: CancellationToken,
    },
}

enum Command {
    Write(Vec<u8>, oneshot::Sender<Result<(), WriteError>>),
    Finish,
    Reset(VarInt),
}

/// The future [`Sender::stopped`] returns.
pub type Stopped = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

impl Sender {
    /// `send` written under `nagle` when there is one (the state of the stream's
    /// connection), else at once.
    pub fn new(send: SendStream, nagle: Option<Arc<NagleState>>) -> Self {
        let Some(nagle) = nagle else {
            return Sender(Inner::Plain(send));
        };
        let (queue, commands) = mpsc::unbounded_channel();
        let ended = CancellationToken::new();
        tokio::spawn(drive(send, nagle, commands, ended.clone()));
        Sender(Inner::Nagle { queue, ended })
    }

    /// `send`, a stream of `conn`, written as `conn`'s transport writes.
    pub fn on(conn: &quinn::Connection, send: SendStream) -> Self {
        Self::new(send, NagleState::of(conn))
    }

    /// Whether its writes follow Nagle's algorithm.
    pub fn nagle(&self) -> bool {
        matches!(self.0, Inner::Nagle { .. })
    }

    /// Writes `bytes` (one `write` to a socket): returns once they are sent, or held.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        match &mut self.0 {
            Inner::Plain(s) => s.write_all(bytes).await,
            Inner::Nagle { queue, .. } => {
                let (done, taken) = oneshot::channel();
                queue
                    .send(Command::Write(bytes.to_vec(), done))
                    .map_err(|_| WriteError::ClosedStream)?;
                taken.await.unwrap_or(Err(WriteError::ClosedStream))
            }
        }
    }

    /// Ends the stream after what it holds.
    pub fn finish(&mut self) -> Result<(), ClosedStream> {
        match &mut self.0 {
            Inner::Plain(s) => s.finish(),
            Inner::Nagle { queue, .. } => queue
                .send(Command::Finish)
                .map_err(|_| ClosedStream::default()),
        }
    }

    /// Abandons the stream (what it holds too) with `code`.
    pub fn reset(&mut self, code: VarInt) -> Result<(), ClosedStream> {
        match &mut self.0 {
            Inner::Plain(s) => s.reset(code),
            Inner::Nagle { queue, .. } => queue
                .send(Command::Reset(code))
                .map_err(|_| ClosedStream::default()),
        }
    }

    /// Completes when the stream can send no more: the peer stopped it, or its connection
    /// was lost (and, once finished, when the peer has everything:
    /// `SendStream::stopped`).
    pub fn stopped(&self) -> Stopped {
        match &self.0 {
            Inner::Plain(s) => {
                let f = s.stopped();
                Box::pin(async move {
                    let _ = f.await;
                })
            }
            Inner::Nagle { ended, .. } => Box::pin(ended.clone().cancelled_owned()),
        }
    }

    /// Encodes and writes one frame (one write); `buf` is scratch space.
    pub async fn write_frame(
        &mut self,
        frame: &Frame,
        buf: &mut Vec<u8>,
    ) -> Result<(), FrameIoError> {
        if let Inner::Plain(s) = &mut self.0 {
            return framed::write_frame(s, frame, buf).await;
        }
        buf.clear();
        wire::encode(frame, buf)?;
        self.write(buf).await?;
        Ok(())
    }

    /// Writes an activations frame of `len` bytes of hidden states as
    /// [`framed::write_activations`] does: its header, then its payload in chunks, each a
    /// write.
    pub async fn write_activations(
        &mut self,
        id: u64,
        tokens: u32,
        len: usize,
    ) -> Result<(), FrameIoError> {
        if let Inner::Plain(s) = &mut self.0 {
            return framed::write_activations(s, id, tokens, len).await;
        }
        static ZEROS: [u8; framed::READ_CHUNK] = [0; framed::READ_CHUNK];
        self.write(&framed::activations_head(id, tokens, len)?)
            .await?;
        let mut left = len;
        while left > 0 {
            let n = left.min(framed::READ_CHUNK);
            self.write(&ZEROS[..n]).await?;
            left -= n;
        }
        Ok(())
    }

    /// Copies what arrives on `recv` to this stream until `recv` ends (a relay's hop):
    /// `tokio::io::copy` without Nagle; with it, each chunk read is one write.
    pub async fn copy_from(&mut self, recv: &mut RecvStream) -> std::io::Result<u64> {
        if let Inner::Plain(s) = &mut self.0 {
            return tokio::io::copy(recv, s).await;
        }
        let mut buf = vec![0u8; COPY_CHUNK];
        let mut total = 0u64;
        while let Some(n) = recv.read(&mut buf).await? {
            self.write(&buf[..n]).await?;
            total += n as u64;
        }
        Ok(total)
    }
}

/// The stream's queue under Nagle's algorithm: takes each write as a socket's send queue
/// does ([`NagleWriter::write`]), sends what it holds when the acknowledgement comes, and
/// finishes the stream after it.
async fn drive(
    mut send: SendStream,
    nagle: Arc<NagleState>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    ended: CancellationToken,
) {
    let stopped = send.stopped();
    tokio::pin!(stopped);
    let mut w = NagleWriter::new(&mut send, &nagle);
    let mut finishing = false;
    enum Next {
        Acked,
        Command(Option<Command>),
        Stopped,
    }
    loop {
        let next = if w.holds() {
            tokio::select! {
                biased;
                () = nagle.send_held() => Next::Acked,
                c = commands.recv(), if !finishing => Next::Command(c),
                _ = &mut stopped => Next::Stopped,
            }
        } else if finishing {
            // As `SendStream::stopped` completes once the peer has everything.
            let _ = w.stream().finish();
            let _ = stopped.await;
            break;
        } else {
            tokio::select! {
                biased;
                c = commands.recv() => Next::Command(c),
                _ = &mut stopped => Next::Stopped,
            }
        };
        match next {
            Next::Acked => {
                if w.release().await.is_err() {
                    break;
                }
            }
            // The `Sender` was dropped: as a dropped `SendStream`, the stream finishes
            // (after what is held).
            Next::Command(None) | Next::Command(Some(Command::Finish)) => finishing = true,
            Next::Command(Some(Command::Write(bytes, done))) => {
                let r = w.write(&bytes).await;
                let failed = r.is_err();
                let _ = done.send(r);
                if failed {
                    break;
                }
            }
            Next::Command(Some(Command::Reset(code))) => {
                let _ = w.stream().reset(code);
                break;
            }
            Next::Stopped => break,
        }
    }
    ended.cancel();
}
