//! The frame codec of DESIGN §7: `[u8 kind][u32 length][payload]`, big-endian, with a
//! maximum frame length. Pure: encodes into and decodes from byte slices. A frame longer
//! than the maximum is an error before anything is allocated; a malformed frame is an
//! error, never a panic.

use std::fmt;

/// Default maximum payload length: 64 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 64 * 1024 * 1024;
/// Bytes of the frame header.
pub const HEADER_LEN: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Request = 1,
    Activations = 2,
    Token = 3,
    Done = 4,
    Error = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Activations,
            3 => Kind::Token,
            4 => Kind::Done,
            5 => Kind::Error,
            _ => return None,
        })
    }
}

/// What a node is asked to do with a request's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Produce the output tokens on this stream: compute them (a worker holding the whole
    /// model, a star's host, a tensor group's root) or forward the stream (a relay).
    Serve = 0,
    /// Be one stage of a pipeline session: for each step, read the hidden states, compute
    /// this node's layers and pass the result on (down `route`, or back on this stream).
    Stage = 1,
    /// The return stream of a server-to-server pipeline: the last stage writes the session's
    /// results here.
    Return = 2,
    /// Be one member of a tensor-parallel group: compute this node's slice of each segment
    /// the root sends and answer with the partial result.
    Tensor = 3,
    /// Be one stage of a server-to-server pipeline session: like `Stage`, but pass each
    /// result down `route` (the last stage: to the client's return stream).
    Chain = 4,
}

impl Mode {
    fn from_u8(b: u8) -> Option<Mode> {
        Some(match b {
            0 => Mode::Serve,
            1 => Mode::Stage,
            2 => Mode::Return,
            3 => Mode::Tensor,
            4 => Mode::Chain,
            _ => return None,
        })
    }
}

/// A request: what to compute and along which route. The prompt's token ids travel with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    pub output_tokens: u32,
    pub mode: Mode,
    /// Node names from the client to the last node.
    pub route: Vec<String>,
    pub prompt: Vec<u32>,
}

/// A node's account of one request, measured on its own clock.
///
/// `software_ns` (the node's per-message software time on the request's path, its
/// `send_cost` and `recv_cost`) is on the wire only when it is not zero: a node without
/// software costs sends the same 16-byte account as before it existed, so the bytes of
/// every scenario without them are unchanged. A payload that ends after `compute_ns`
/// decodes with `software_ns = 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub node: String,
    pub queue_ns: u64,
    pub compute_ns: u64,
    pub software_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Request(Request),
    /// Hidden states of `tokens` tokens: real bytes, so bandwidth matters.
    Activations {
        id: u64,
        tokens: u32,
        data: Vec<u8>,
    },
    /// Output token number `index` (0-based). Its second word stands where a real system
    /// sends the token's id: `lead_us`, how many microseconds before this frame was sent the
    /// token was ready (non-zero only for the tokens of a real server's chunk that carried
    /// several: the gap split over them, docs/engines.md). The receiver stamps the token
    /// that much before the frame's arrival.
    Token {
        index: u32,
        lead_us: u32,
    },
    Done(Done),
    Error {
        code: u16,
        message: String,
    },
}

impl Frame {
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Request(_) => Kind::Request,
            Frame::Activations { .. } => Kind::Activations,
            Frame::Token { .. } => Kind::Token,
            Frame::Done(_) => Kind::Done,
            Frame::Error { .. } => Kind::Error,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u32, max: u32 },
    #[error("malformed {kind:?} frame: {why}")]
    Malformed { kind: Kind, why: &'static str },
    #[error("a string field is longer than 255 bytes")]
    StringTooLong,
}

impl WireError {
    /// The QUIC application error code a stream is reset with for this error.
    pub fn code(&self) -> u32 {
        match self {
            WireError::UnknownKind(_) => 0x10,
            WireError::TooLarge { .. } => 0x11,
            WireError::Malformed { .. } | WireError::StringTooLong => 0x12,
        }
    }
}

/// Length of a request frame's payload for a prompt of `prompt` tokens over `route`.
pub fn request_payload_len(prompt: u32, route: &[impl AsRef<str>]) -> usize {
    8 + 4 + 1 + 1 + route.iter().map(|r| 1 + r.as_ref().len()).sum::<usize>() + 4 * prompt as usize
}

/// Bytes on the wire of an activations frame carrying `data` bytes.
pub const fn activations_frame_len(data: usize) -> usize {
    HEADER_LEN + 12 + data
}

/// Bytes on the wire of one token frame.
pub const TOKEN_FRAME_LEN: usize = HEADER_LEN + 8;

/// Bytes on the wire of a done frame from a node with this name, without software time
/// (8 bytes more with it).
pub fn done_frame_len(node: &str) -> usize {
    HEADER_LEN + 1 + node.len() + 16
}

/// Appends the encoded frame to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.push(frame.kind() as u8);
    out.extend_from_slice(&[0; 4]);
    match frame {
        Frame::Request(r) => {
            out.extend_from_slice(&r.id.to_be_bytes());
            out.extend_from_slice(&r.output_tokens.to_be_bytes());
            out.push(r.mode as u8);
            if r.route.len() > 255 {
                return Err(WireError::StringTooLong);
            }
            out.push(r.route.len() as u8);
            for name in &r.route {
                put_str(out, name)?;
            }
            out.reserve(4 * r.prompt.len());
            for t in &r.prompt {
                out.extend_from_slice(&t.to_be_bytes());
            }
        }
        Frame::Activations { id, tokens, data } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&tokens.to_be_bytes());
            out.extend_from_slice(data);
        }
        Frame::Token { index, lead_us } => {
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&lead_us.to_be_bytes());
        }
        Frame::Done(d) => {
            put_str(out, &d.node)?;
            out.extend_from_slice(&d.queue_ns.to_be_bytes());
            out.extend_from_slice(&d.compute_ns.to_be_bytes());
            if d.software_ns != 0 {
                out.extend_from_slice(&d.software_ns.to_be_bytes());
            }
        }
        Frame::Error { code, message } => {
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(message.as_bytes());
        }
    }
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 1..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), WireError> {
    if s.len() > 255 {
        return Err(WireError::StringTooLong);
    }
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Checks a frame header: the kind is known and the length within `max`.
pub fn parse_header(header: [u8; HEADER_LEN], max: u32) -> Result<(Kind, u32), WireError> {
    let kind = Kind::from_u8(header[0]).ok_or(WireError::UnknownKind(header[0]))?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    Ok((kind, len))
}

/// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the frame and the bytes it used.
pub fn decode(buf: &[u8], max: u32) -> Result<Option<(Frame, usize)>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().expect("length checked");
    let (kind, len) = parse_header(header, max)?;
    let end = HEADER_LEN + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let frame = parse_payload(kind, buf[HEADER_LEN..end].to_vec())?;
    Ok(Some((frame, end)))
}

/// A cursor over a payload that fails instead of panicking.
struct Reader<'a> {
    kind: Kind,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Malformed {
                kind: self.kind,
                why: "payload too short",
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> Result<String, WireError> {
        let n = self.u8()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Malformed {
            kind: self.kind,
            why: "string is not UTF-8",
        })
    }
}

/// Decodes a payload of a known kind.
pub fn parse_payload(kind: Kind, payload: Vec<u8>) -> Result<Frame, WireError> {
    let mut r = Reader {
        kind,
        buf: &payload,
    };
    let frame = match kind {
        Kind::Request => {
            let id = r.u64()?;
            let output_tokens = r.u32()?;
            let mode = Mode::from_u8(r.u8()?).ok_or(WireError::Malformed {
                kind,
                why: "unknown request mode",
            })?;
            let hops = r.u8()? as usize;
            let mut route = Vec::with_capacity(hops);
            for _ in 0..hops {
                route.push(r.string()?);
            }
            if r.buf.len() % 4 != 0 {
                return Err(WireError::Malformed {
                    kind,
                    why: "prompt is not a whole number of token ids",
                });
            }
            let prompt = r
                .buf
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
                .collect();
            r.buf = &[];
            Frame::Request(Request {
                id,
                output_tokens,
                mode,
                route,
                prompt,
            })
        }
        Kind::Activations => {
            let id = r.u64()?;
            let tokens = r.u32()?;
            let data = r.buf.to_vec();
            r.buf = &[];
            Frame::Activations { id, tokens, data }
        }
        Kind::Token => Frame::Token {
            index: r.u32()?,
            lead_us: r.u32()?,
        },
        Kind::Done => Frame::Done(Done {
            node: r.string()?,
            queue_ns: r.u64()?,
            compute_ns: r.u64()?,
            // Present only when not zero (see [`Done`]).
            software_ns: if r.buf.is_empty() { 0 } else { r.u64()? },
        }),
        Kind::Error => {
            let code = r.u16()?;
            let message = String::from_utf8_lossy(r.buf).into_owned();
            r.buf = &[];
            Frame::Error { code, message }
        }
    };
    if !r.buf.is_empty() {
        return Err(WireError::Malformed {
            kind,
            why: "trailing bytes after the payload",
        });
    }
    Ok(frame)
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let mut buf = Vec::new();
        encode(&f, &mut buf).unwrap();
        let (back, used) = decode(&buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(back, f);
        assert_eq!(used, buf.len());
        // Every strict prefix is incomplete, never an error.
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut], DEFAULT_MAX_FRAME),
                Ok(None),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Frame::Request(Request {
            id: 7,
            output_tokens: 64,
            mode: Mode::Stage,
            route: vec!["client".into(), "gpu-a".into()],
            prompt: (0..128).collect(),
        }));
        round_trip(Frame::Activations {
            id: 1,
            tokens: 2,
            data: vec![0; 16384],
        });
        round_trip(Frame::Token {
            index: 3,
            lead_us: 42,
        });
        round_trip(Frame::Done(Done {
            node: "gpu-a".into(),
            queue_ns: 5,
            compute_ns: 9,
            software_ns: 0,
        }));
        round_trip(Frame::Done(Done {
            node: "gpu-a".into(),
            queue_ns: 5,
            compute_ns: 9,
            software_ns: 3,
        }));
        round_trip(Frame::Error {
            code: 3,
            message: "overloaded".into(),
        });
    }

    #[test]
    fn sizes_match_the_length_helpers() {
        let route = ["client", "gpu-a"];
        let f = Frame::Request(Request {
            id: 1,
            output_tokens: 1,
            mode: Mode::Serve,
            route: route.iter().map(|s| s.to_string()).collect(),
            prompt: vec![0; 100],
        });
        let mut buf = Vec::new();
        encode(&f, &mut buf).unwrap();
        assert_eq!(buf.len(), HEADER_LEN + request_payload_len(100, &route));
        buf.clear();
        encode(
            &Frame::Token {
                index: 0,
                lead_us: 0,
            },
            &mut buf,
        )
        .unwrap();
        assert_eq!(buf.len(), TOKEN_FRAME_LEN);
        buf.clear();
        encode(
            &Frame::Done(Done {
                node: "gpu-a".into(),
                queue_ns: 0,
                compute_ns: 0,
                software_ns: 0,
            }),
            &mut buf,
        )
        .unwrap();
        assert_eq!(buf.len(), done_frame_len("gpu-a"));
        // Software time, when there is some, adds its 8 bytes.
        buf.clear();
        encode(
            &Frame::Done(Done {
                node: "gpu-a".into(),
                queue_ns: 0,
                compute_ns: 0,
                software_ns: 1,
            }),
            &mut buf,
        )
        .unwrap();
        assert_eq!(buf.len(), done_frame_len("gpu-a") + 8);
    }

    #[test]
    fn oversized_frame_is_rejected_from_the_header() {
        let header = [Kind::Activations as u8, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            decode(&header, 1024),
            Err(WireError::TooLarge {
                len: u32::MAX,
                max: 1024
            })
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert_eq!(
            decode(&[9, 0, 0, 0, 0], 1024),
            Err(WireError::UnknownKind(9))
        );
        // A token frame with 3 payload bytes.
        assert!(matches!(
            decode(&[3, 0, 0, 0, 3, 1, 2, 3], 1024),
            Err(WireError::Malformed { .. })
        ));
        // A request whose route claims a 200-byte name in a 20-byte payload.
        let mut bad = vec![1, 0, 0, 0, 15];
        bad.extend_from_slice(&[0; 13]);
        bad.extend_from_slice(&[1, 200]);
        assert!(matches!(
            decode(&bad, 1024),
            Err(WireError::Malformed { .. })
        ));
        // A done frame with a partial software word (4 of its 8 bytes) is malformed.
        let mut done = vec![4, 0, 0, 0, 1 + 1 + 16 + 4, 1, b'g'];
        done.extend_from_slice(&[0; 20]);
        assert!(matches!(
            decode(&done, 1024),
            Err(WireError::Malformed { .. })
        ));
        // Arbitrary bytes never panic.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let len = (x % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = decode(&bytes, 64);
        }
    }
}
