//! Token accounting of one streamed response (pure): which chunks carry generated output, how
//! many tokens each carries, and whether the response is complete. The rules, and why:
//!
//! - **TTFT** is the first chunk that carries generated output: a chunk with text (or chat
//!   content, or reasoning content), or one that usage says carried a token. Not the role-only
//!   first chunk of a chat stream (vLLM issue #3768 counted it), not a keep-alive comment, not
//!   the first byte.
//! - **Tokens per chunk.** With `usage = "continuous"` (vLLM's `continuous_usage_stats`) each
//!   chunk says how many tokens have been generated so far, so a chunk carrying k tokens
//!   yields k tokens, and a chunk with empty text (a partial UTF-8 byte token) yields its
//!   token too. Otherwise a chunk with output yields one token, and the final usage
//!   (`stream_options.include_usage`) corrects the count at its arrival: tokens the chunks
//!   did not show (empty byte tokens, tokens merged into one chunk) are added then, and the
//!   mismatch is recorded.
//! - **A chunk of k tokens shares its gap.** Token j of k (1-based) is stamped (k - j) / k of
//!   the gap since the previous output chunk before the chunk's arrival ([`leads`]), so the
//!   last one is at the arrival and the ITL shows k gaps of gap / k, not one gap and k - 1
//!   zeros. The first output chunk has no gap: all its tokens are at its arrival (TTFT).
//!   TPOT ((e2e - ttft) / (n - 1)) and e2e do not depend on the split. The lead travels in
//!   the token frame to the client (`wire::Frame::Token`), the same rule serves the baseline
//!   and the run behind the links, so the network tax compares like with like, and the run
//!   records how many chunks carried more than one token.
//! - **Complete** means the stream ended with `data: [DONE]` and carried as many tokens as
//!   were asked for; anything else is a failure with that reason.

use super::Api;
use serde_json::Value;
use std::time::{Duration, Instant};

/// What one `data:` payload of the stream says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    /// The chunk has a choice (a delta or a text), as opposed to a usage-only or error chunk.
    pub has_choice: bool,
    /// Bytes of generated text it carries (chat content, reasoning content or completion text).
    pub text_bytes: usize,
    /// `usage.completion_tokens`, when the chunk has usage.
    pub completion_tokens: Option<u64>,
    /// `usage.prompt_tokens`, when the chunk has usage.
    pub prompt_tokens: Option<u64>,
    pub finish_reason: Option<String>,
    /// An error the server sent inside the stream.
    pub error: Option<String>,
}

/// Reads one `data:` payload (not `[DONE]`).
pub fn parse_chunk(api: Api, data: &str) -> Result<Chunk, String> {
    let v: Value =
        serde_json::from_str(data).map_err(|e| format!("a stream chunk that is not JSON ({e})"))?;
    let mut c = Chunk::default();
    if let Some(err) = v.get("error") {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string());
        c.error = Some(msg);
        return Ok(c);
    }
    if let Some(choice) = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        c.has_choice = true;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map_or(0, str::len);
        c.text_bytes = match api {
            Api::Completions => text(choice.get("text")),
            Api::Chat => {
                let d = choice.get("delta");
                let field = |k: &str| text(d.and_then(|d| d.get(k)));
                field("content") + field("reasoning_content") + field("reasoning")
            }
        };
        c.finish_reason = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
        c.completion_tokens = u.get("completion_tokens").and_then(Value::as_u64);
        c.prompt_tokens = u.get("prompt_tokens").and_then(Value::as_u64);
    }
    Ok(c)
}

/// How long before `now` each of the `k` tokens of a chunk that arrived `at` was ready: the
/// gap since the `previous` output chunk split evenly over the k, so token j of k (1-based)
/// leads the chunk's arrival by (k - j) / k of the gap and the last one by nothing. The
/// first output chunk has no gap to split: all its tokens are at its arrival (TTFT is the
/// first chunk that carries output). `now - at` (the time since the bytes arrived) is added
/// to each, so the receiver's stamp is relative to the arrival.
pub fn leads(k: u64, previous: Option<Instant>, at: Instant, now: Instant) -> Vec<Duration> {
    let since = now.saturating_duration_since(at);
    let gap = previous.map_or(Duration::ZERO, |p| at.saturating_duration_since(p));
    (1..=k)
        .map(|j| since + gap.mul_f64((k - j) as f64 / k as f64))
        .collect()
}

/// Where a response's token count came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountSource {
    /// The server's usage (continuous, or the final usage chunk).
    Usage,
    /// Chunks carrying output, one token each (the server reported no usage).
    Chunks,
}

/// The running account of one response.
#[derive(Debug)]
pub struct Tally {
    continuous: bool,
    /// Tokens yielded so far.
    pub tokens: u64,
    /// Chunks that carried output.
    pub output_chunks: u64,
    /// Chunks with a choice that carried text.
    pub text_chunks: u64,
    /// Chunks that yielded more than one token.
    pub multi_token_chunks: u64,
    /// The last cumulative completion count (continuous usage).
    cumulative: u64,
    /// The final usage's completion tokens, when it came.
    pub usage_completion: Option<u64>,
    pub usage_prompt: Option<u64>,
    pub done: bool,
}

impl Tally {
    pub fn new(continuous: bool) -> Self {
        Tally {
            continuous,
            tokens: 0,
            output_chunks: 0,
            text_chunks: 0,
            multi_token_chunks: 0,
            cumulative: 0,
            usage_completion: None,
            usage_prompt: None,
            done: false,
        }
    }

    /// The tokens this chunk yields.
    pub fn on_chunk(&mut self, c: &Chunk) -> u64 {
        if c.prompt_tokens.is_some() {
            self.usage_prompt = c.prompt_tokens;
        }
        let k = match (self.continuous && c.has_choice, c.completion_tokens) {
            // Continuous usage: the chunk carried what the count grew by.
            (true, Some(cum)) => {
                let k = cum.saturating_sub(self.cumulative);
                self.cumulative = self.cumulative.max(cum);
                self.usage_completion = Some(self.cumulative);
                k
            }
            _ => {
                let mut k = u64::from(c.has_choice && c.text_bytes > 0);
                // A final usage (on a chunk of its own, or on the last choice): the tokens
                // the chunks did not show arrive with it.
                if let Some(total) = c.completion_tokens {
                    self.usage_completion = Some(total);
                    k = k.max(total.saturating_sub(self.tokens));
                }
                k
            }
        };
        if k > 0 {
            self.output_chunks += 1;
        }
        if c.has_choice && c.text_bytes > 0 {
            self.text_chunks += 1;
        }
        if k > 1 {
            self.multi_token_chunks += 1;
        }
        self.tokens += k;
        k
    }

    /// Where the count came from.
    pub fn source(&self) -> CountSource {
        match self.usage_completion {
            Some(_) => CountSource::Usage,
            None => CountSource::Chunks,
        }
    }

    /// Whether the server's usage and the chunks carrying text disagree (more than one
    /// token in a chunk, or chunks without text that carried a token).
    pub fn mismatch(&self) -> bool {
        self.usage_completion.is_some_and(|u| u != self.text_chunks)
    }

    /// Why the response is a failure, if it is one, once the body has ended.
    pub fn verdict(&self, asked: u64) -> Result<(), String> {
        if !self.done {
            return Err("the stream ended without [DONE]".into());
        }
        if self.tokens < asked {
            return Err(format!(
                "short output: fewer tokens than asked (max_tokens = {asked}); set ignore_eos or the server's equivalent"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut Tally, api: Api, data: &str) -> u64 {
        t.on_chunk(&parse_chunk(api, data).unwrap())
    }

    #[test]
    fn a_role_only_chat_chunk_carries_no_token() {
        let mut t = Tally::new(false);
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}"#;
        assert_eq!(feed(&mut t, Api::Chat, role), 0);
        let tok = r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        assert_eq!(feed(&mut t, Api::Chat, tok), 1);
        assert_eq!(t.source(), CountSource::Chunks);
    }

    #[test]
    fn final_usage_adds_the_tokens_the_chunks_did_not_show() {
        let mut t = Tally::new(false);
        for text in ["a", "", "b"] {
            let c = format!(r#"{{"choices":[{{"text":"{text}","finish_reason":null}}]}}"#);
            feed(&mut t, Api::Completions, &c);
        }
        assert_eq!(t.tokens, 2);
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#;
        assert_eq!(feed(&mut t, Api::Completions, usage), 1);
        assert_eq!(t.tokens, 3);
        assert_eq!(t.source(), CountSource::Usage);
        assert!(t.mismatch());
        assert_eq!(t.usage_prompt, Some(5));
    }

    #[test]
    fn usage_on_the_last_choice_is_a_total_not_a_delta() {
        let mut t = Tally::new(false);
        feed(&mut t, Api::Completions, r#"{"choices":[{"text":"a"}]}"#);
        let last = r#"{"choices":[{"text":"b","finish_reason":"length"}],"usage":{"completion_tokens":2}}"#;
        assert_eq!(feed(&mut t, Api::Completions, last), 1);
        assert_eq!(t.tokens, 2);
        assert!(!t.mismatch());
    }

    #[test]
    fn continuous_usage_gives_k_tokens_to_a_chunk_of_k() {
        let mut t = Tally::new(true);
        let c = |text: &str, cum: u64| {
            format!(r#"{{"choices":[{{"text":"{text}"}}],"usage":{{"completion_tokens":{cum}}}}}"#)
        };
        assert_eq!(feed(&mut t, Api::Completions, &c("ab", 2)), 2);
        // An empty chunk that usage says carried a token counts.
        assert_eq!(feed(&mut t, Api::Completions, &c("", 3)), 1);
        assert_eq!(feed(&mut t, Api::Completions, &c("c", 4)), 1);
        // The final usage-only chunk repeats the total: nothing more.
        let fin = r#"{"choices":[],"usage":{"completion_tokens":4}}"#;
        assert_eq!(feed(&mut t, Api::Completions, fin), 0);
        assert_eq!((t.tokens, t.multi_token_chunks, t.output_chunks), (4, 1, 3));
    }

    #[test]
    fn a_chunk_of_k_tokens_splits_the_gap_since_the_previous_chunk() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // The first chunk: no gap to split, every token at its arrival.
        assert_eq!(leads(3, None, t0, t0), vec![ms(0); 3]);
        // 4 tokens 40 ms after the previous chunk: 30, 20, 10 and 0 ms before the arrival,
        // so the client sees four gaps of 10 ms, not one of 40 and three of zero.
        assert_eq!(
            leads(4, Some(t0), t0 + ms(40), t0 + ms(40)),
            vec![ms(30), ms(20), ms(10), ms(0)]
        );
        // Handled 1 ms after the bytes arrived: each lead is 1 ms longer.
        assert_eq!(leads(1, Some(t0), t0 + ms(40), t0 + ms(41)), vec![ms(1)]);
        assert!(leads(0, Some(t0), t0, t0).is_empty());
    }

    #[test]
    fn an_incomplete_stream_is_a_failure_with_its_reason() {
        let mut t = Tally::new(false);
        feed(&mut t, Api::Completions, r#"{"choices":[{"text":"a"}]}"#);
        assert!(t.verdict(1).unwrap_err().contains("without [DONE]"));
        t.done = true;
        assert!(t.verdict(2).unwrap_err().contains("short output"));
        assert_eq!(t.verdict(1), Ok(()));
    }

    #[test]
    fn an_error_chunk_is_read_as_an_error() {
        let c = parse_chunk(Api::Chat, r#"{"error":{"message":"out of memory"}}"#).unwrap();
        assert_eq!(c.error.as_deref(), Some("out of memory"));
        assert!(parse_chunk(Api::Chat, "not json").is_err());
    }
}
