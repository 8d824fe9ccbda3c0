//! A server-sent events parser over the raw bytes of an HTTP body (the WHATWG `text/event-stream`
//! rules that OpenAI-compatible servers use): lines end in `\n`, `\r\n` or `\r`; `data:` lines
//! accumulate; a blank line dispatches the event; lines that start with `:` are comments
//! (keep-alives) and carry nothing. Pure and sans-IO: the caller feeds each piece of the body
//! with the instant its bytes arrived, and every event is stamped with the arrival of the bytes
//! that completed it, so a timestamp never waits for a later piece and never comes from a
//! client library's own buffering.

use std::time::Instant;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (OpenAI-compatible servers send none).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// When the bytes that completed the event arrived.
    pub at: Instant,
}

/// The parser's state between pieces of the body.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
    event: Option<String>,
    /// The last byte seen was a `\r`: a `\n` right after it ends no further line.
    after_cr: bool,
    /// Comment lines seen (keep-alives).
    pub comments: u64,
    /// Bytes seen.
    pub bytes: u64,
}

/// The most one line may hold (a line longer than this is a protocol error, not an allocation).
pub const MAX_LINE: usize = 16 << 20;

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next piece of the body, which arrived at `at`; returns the events it completed.
    pub fn feed(&mut self, bytes: &[u8], at: Instant) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        self.bytes += bytes.len() as u64;
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, at, &mut out);
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= MAX_LINE {
                        return Err(format!("an event-stream line longer than {MAX_LINE} bytes"));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    /// Whether bytes of an unfinished event are still held (the body ended mid-event).
    pub fn pending(&self) -> bool {
        !self.line.is_empty() || self.data.is_some()
    }

    fn line_done(&mut self, line: &[u8], at: Instant, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: self.event.take(),
                    data,
                    at,
                });
            }
            self.event = None;
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            b"event" => self.event = Some(value.into_owned()),
            // `id` and `retry` steer reconnection, which a measurement never does.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn all(p: &mut SseParser, pieces: &[&[u8]]) -> Vec<(String, Duration)> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let at = t0 + Duration::from_millis(i as u64);
            for e in p.feed(piece, at).unwrap() {
                out.push((e.data, e.at - t0));
            }
        }
        out
    }

    #[test]
    fn events_are_stamped_with_the_piece_that_completed_them() {
        let mut p = SseParser::new();
        let got = all(&mut p, &[b"data: {\"a\"", b":1}\n", b"\ndata: [DONE]\n\n"]);
        assert_eq!(
            got,
            vec![
                ("{\"a\":1}".to_string(), Duration::from_millis(2)),
                ("[DONE]".to_string(), Duration::from_millis(2)),
            ]
        );
        assert!(!p.pending());
    }

    #[test]
    fn every_line_ending_works_even_split_between_pieces() {
        let mut p = SseParser::new();
        let got = all(&mut p, &[b"data: a\r", b"\n\r", b"\ndata: b\r\rdata:c\n\n"]);
        let data: Vec<&str> = got.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(data, ["a", "b", "c"]);
    }

    #[test]
    fn comments_are_keepalives_and_dispatch_nothing() {
        let mut p = SseParser::new();
        let got = all(&mut p, &[b": ping\n\n: ping\n\n", b"data: x\n\n"]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, Duration::from_millis(1));
        assert_eq!(p.comments, 2);
    }

    #[test]
    fn multi_line_data_joins_with_newlines_and_event_names_are_kept() {
        let mut p = SseParser::new();
        let t = Instant::now();
        let e = p.feed(b"event: error\ndata: one\ndata:two\n\n", t).unwrap();
        assert_eq!(e[0].event.as_deref(), Some("error"));
        assert_eq!(e[0].data, "one\ntwo");
    }

    #[test]
    fn a_body_cut_mid_event_is_pending() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: {\"half", Instant::now()).unwrap().is_empty());
        assert!(p.pending());
        let mut p = SseParser::new();
        assert!(p.feed(b"data: x\n", Instant::now()).unwrap().is_empty());
        assert!(p.pending());
    }

    #[test]
    fn utf8_split_between_pieces_survives() {
        let mut p = SseParser::new();
        let s = "data: é\n\n".as_bytes();
        let got = all(&mut p, &[&s[..7], &s[7..]]);
        assert_eq!(got[0].0, "é");
    }
}
