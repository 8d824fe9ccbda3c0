//! The `openai` engine: a worker (or the baseline) backed by a real OpenAI-compatible server
//! (vLLM, SGLang, TGI, llama.cpp's server, Ollama, mistral.rs, ...). The node receives the
//! request over QUIC across the emulated links as for any engine, this engine sends it to the
//! server as a streaming completion, and each token goes back through the topology as its
//! bytes arrive. Whole requests only: a server cannot run a span of layers, so it refuses a
//! session's steps ([`EngineError::NoSteps`]), and it needs the real clock.
//!
//! Measuring the server without hiding anything of our own:
//!
//! - HTTP/1.1 with `reqwest` (no retries, no proxy, HTTP/2 not built in), one connection per
//!   request in flight, at most [`Config::connections`] of them: the time a request waits for
//!   one is its `queue` in the breakdown, so the client never hides a queue of its own;
//! - `compute` is from the request sent to the stream's end: what the server took, its own
//!   queueing included (a server does not tell its queue apart);
//! - the body is read piece by piece and parsed by our own SSE parser ([`sse`]), each event
//!   stamped when its bytes arrived; [`tally`] says which chunks carry tokens and how many.

pub mod sse;
pub mod tally;

use crate::clock::Clock;
use crate::compute::{
    Engine, EngineAccount, EngineError, EngineSpec, Event, Job, Pass, RequestCompute,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sse::SseParser;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally::{CountSource, Tally};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Which endpoint requests go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST {url}/completions` with a text prompt.
    Completions,
    /// `POST {url}/chat/completions` with one user message.
    Chat,
}

/// How the server reports the tokens it generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageMode {
    /// `stream_options.include_usage`: one usage chunk at the end.
    Final,
    /// Also vLLM's `continuous_usage_stats`: usage on every chunk.
    Continuous,
    /// Ask for none; count chunks that carry output.
    None,
}

/// An `openai` engine as the scenario gives it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    /// The API's base URL, without a trailing slash (`http://127.0.0.1:8000/v1`).
    pub url: String,
    pub model: String,
    pub api: Api,
    /// The environment variable that holds the API key (sent as `Authorization: Bearer`).
    pub api_key_env: Option<String>,
    /// Ask for outputs of exactly the requested length: `min_tokens` = `max_tokens` and
    /// `ignore_eos` (vLLM, SGLang, llama.cpp's server); off for servers that reject them.
    pub ignore_eos: bool,
    pub usage: UsageMode,
    /// Connections (requests in flight) at most; `None`: the workload's concurrency for a
    /// closed loop, else [`DEFAULT_CONNECTIONS`].
    pub connections: Option<u32>,
    /// How long the server may stay silent (connecting, or between two pieces of a body).
    pub timeout: Duration,
    /// Further fields merged into every request body as given.
    pub body: Map<String, Value>,
}

/// Connections of an open-loop run when the scenario sets none.
pub const DEFAULT_CONNECTIONS: u32 = 256;

/// The default of [`Config::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl Config {
    fn endpoint(&self) -> String {
        match self.api {
            Api::Completions => format!("{}/completions", self.url),
            Api::Chat => format!("{}/chat/completions", self.url),
        }
    }

    fn key(&self) -> Result<Option<String>, String> {
        match &self.api_key_env {
            None => Ok(None),
            Some(var) => std::env::var(var).map(Some).map_err(|_| {
                format!("api_key_env names {var}, which is not set in the environment")
            }),
        }
    }

    /// The request body for a prompt of `prompt` words and `output` tokens.
    pub fn body(&self, prompt: &str, output: u32) -> Value {
        let mut b = Map::new();
        b.insert("model".into(), json!(self.model));
        match self.api {
            Api::Completions => b.insert("prompt".into(), json!(prompt)),
            Api::Chat => b.insert(
                "messages".into(),
                json!([{ "role": "user", "content": prompt }]),
            ),
        };
        b.insert("max_tokens".into(), json!(output));
        b.insert("stream".into(), json!(true));
        match self.usage {
            UsageMode::Final => {
                b.insert("stream_options".into(), json!({ "include_usage": true }));
            }
            UsageMode::Continuous => {
                b.insert(
                    "stream_options".into(),
                    json!({ "include_usage": true, "continuous_usage_stats": true }),
                );
            }
            UsageMode::None => {}
        }
        if self.ignore_eos {
            b.insert("min_tokens".into(), json!(output));
            b.insert("ignore_eos".into(), json!(true));
        }
        for (k, v) in &self.body {
            b.insert(k.clone(), v.clone());
        }
        Value::Object(b)
    }
}

/// Words that are one token each in common tokenizers; prompts are made of them.
const WORDS: [&str; 16] = [
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "on", "with", "be",
    "at", "by",
];

/// A prompt of `n` words, different for each `seed` from its first word on, so that no
/// server's prefix cache serves one request from another's.
pub fn prompt_text(n: u32, seed: u64) -> String {
    let mut s = String::with_capacity(n as usize * 4);
    let mut z = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in 0..n {
        // xorshift64: cheap and different for every seed.
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[(z >> 60) as usize]);
    }
    s
}

/// A running `openai` engine.
pub struct OpenAi {
    config: Arc<Config>,
    http: reqwest::Client,
    key: Option<String>,
    pool: Arc<Semaphore>,
    clock: Clock,
    next: AtomicU64,
    stats: Arc<Mutex<EngineAccount>>,
    cancel: CancellationToken,
}

impl OpenAi {
    /// An engine with `connections` requests in flight at most.
    pub fn new(
        config: Config,
        connections: u32,
        clock: Clock,
        cancel: CancellationToken,
    ) -> Result<Self, String> {
        let key = config.key()?;
        let http = client(&config, connections as usize)?;
        let stats = EngineAccount {
            kind: "openai".into(),
            url: config.url.clone(),
            model: config.model.clone(),
            ..EngineAccount::default()
        };
        Ok(OpenAi {
            config: Arc::new(config),
            http,
            key,
            pool: Arc::new(Semaphore::new(connections.max(1) as usize)),
            clock,
            next: AtomicU64::new(0),
            stats: Arc::new(Mutex::new(stats)),
            cancel,
        })
    }

    pub fn stats(&self) -> EngineAccount {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The HTTP client: no proxy (it would add its own latency), no retries, HTTP/1.1.
fn client(config: &Config, connections: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(connections)
        .connect_timeout(config.timeout)
        .read_timeout(config.timeout)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

impl EngineSpec for OpenAi {
    fn name(&self) -> &str {
        "openai"
    }

    fn needs_real_clock(&self) -> bool {
        true
    }

    /// A real server's times are what it measures: nothing to predict.
    fn floor(&self, _: Pass) -> Option<Duration> {
        None
    }

    fn request_floor(&self, _: u32, _: u32) -> Option<RequestCompute> {
        None
    }
}

impl Engine for OpenAi {
    fn submit(&self, job: Job) -> Result<(), EngineError> {
        if self.cancel.is_cancelled() {
            return Err(EngineError::Stopped(self.name().into()));
        }
        let seed = self.next.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            config: self.config.clone(),
            http: self.http.clone(),
            key: self.key.clone(),
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            stats: self.stats.clone(),
            seed,
        };
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            let events = job.events.clone();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {}
                // The requester went away (a hedge that lost): the request is dropped,
                // which closes its connection and so cancels it at the server.
                _ = events.closed() => {}
                _ = request.run(job) => {}
            }
        });
        Ok(())
    }

    fn account(&self) -> Option<EngineAccount> {
        Some(self.stats())
    }
}

/// One request's share of the engine.
struct Request {
    config: Arc<Config>,
    http: reqwest::Client,
    key: Option<String>,
    pool: Arc<Semaphore>,
    clock: Clock,
    stats: Arc<Mutex<EngineAccount>>,
    seed: u64,
}

impl Request {
    async fn run(self, job: Job) {
        let events = job.events.clone();
        let outcome = self.stream(&job).await;
        let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        st.responses += 1;
        match outcome {
            Ok((queue, compute, tally)) => {
                match tally.source() {
                    CountSource::Usage => st.counted_by_usage += 1,
                    CountSource::Chunks => st.counted_by_chunks += 1,
                }
                st.count_mismatches += u64::from(tally.mismatch());
                st.multi_token_chunks += tally.multi_token_chunks;
                // A server may count a BOS token it added.
                st.prompt_mismatches += u64::from(
                    tally
                        .usage_prompt
                        .is_some_and(|p| p.abs_diff(u64::from(job.prompt)) > 1),
                );
                let wait = queue.as_secs_f64() * 1e3;
                st.max_connection_wait_ms = st.max_connection_wait_ms.max(wait);
                drop(st);
                let _ = events.send(Event::Done { queue, compute });
            }
            Err(reason) => {
                *st.failures.entry(reason.clone()).or_default() += 1;
                drop(st);
                let _ = events.send(Event::Failed { reason });
            }
        }
    }

    /// Sends the request and streams its tokens to the requester; returns the time it
    /// waited for a connection, the time the server took to its last token, and the account of its tokens.
    async fn stream(&self, job: &Job) -> Result<(Duration, Duration, Tally), String> {
        let _permit = self
            .pool
            .acquire()
            .await
            .map_err(|_| "engine: stopped".to_string())?;
        let sent = self.clock.now();
        let queue = sent.saturating_duration_since(job.arrived);
        let prompt = prompt_text(job.prompt, self.seed);
        let mut req = self
            .http
            .post(self.config.endpoint())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.config.body(&prompt, job.output).to_string());
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| reason(&e, self.config.timeout))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!(
                "engine: HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_string());
        }
        let mut parser = SseParser::new();
        let mut tally = Tally::new(self.config.usage == UsageMode::Continuous);
        let mut index = 0u32;
        let mut last = sent;
        // The arrival of the previous chunk that carried output: a chunk of k tokens shares
        // the gap since it among its k.
        let mut previous: Option<Instant> = None;
        while let Some(bytes) = resp
            .chunk()
            .await
            .map_err(|e| reason(&e, self.config.timeout))?
        {
            let now = self.clock.now();
            for event in parser.feed(bytes.as_ref(), now)? {
                if event.data.trim() == "[DONE]" {
                    tally.done = true;
                    continue;
                }
                let chunk = tally::parse_chunk(self.config.api, &event.data)
                    .map_err(|e| format!("engine: {e}"))?;
                if let Some(e) = chunk.error {
                    return Err(format!("engine: the server sent an error: {e}"));
                }
                let k = tally.on_chunk(&chunk);
                if k > 0 {
                    // The server's work ends with its last token: the usage chunk and
                    // [DONE] after it overlap that token's way back.
                    last = event.at;
                }
                let leads = tally::leads(k, previous, event.at, self.clock.now());
                if k > 0 {
                    previous = Some(event.at);
                }
                for lead in leads {
                    // More tokens than asked for are not the request's.
                    if index < job.output {
                        let _ = job.events.send(Event::Token { index, lead });
                        index += 1;
                    }
                }
            }
        }
        tally.verdict(u64::from(job.output))?;
        Ok((queue, last.saturating_duration_since(sent), tally))
    }
}

/// A failure's reason in a few stable words: failures are counted by reason.
fn reason(e: &reqwest::Error, timeout: Duration) -> String {
    use std::error::Error;
    use std::io::ErrorKind;
    if e.is_timeout() {
        return format!(
            "engine: timeout (the server was silent for {})",
            crate::format::format_duration(timeout)
        );
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::ConnectionRefused => return "engine: connection refused".into(),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => {
                    return "engine: connection reset".into();
                }
                ErrorKind::TimedOut => {
                    return format!(
                        "engine: timeout (the server was silent for {})",
                        crate::format::format_duration(timeout)
                    );
                }
                _ => {}
            }
        }
        source = s.source();
    }
    if e.is_connect() {
        "engine: could not connect".into()
    } else if e.is_body() || e.is_decode() {
        "engine: the stream broke before [DONE]".into()
    } else if e.is_request() {
        "engine: the request failed (connection closed before a response)".into()
    } else {
        "engine: the request failed".into()
    }
}

/// Checks before a run that the server answers at `{url}/models` and serves the model:
/// a wrong URL or a stopped server is a clear error before anything is measured.
pub async fn probe(config: &Config) -> Result<(), String> {
    let key = config.key()?;
    let http = client(config, 1)?;
    let url = format!("{}/models", config.url);
    let mut req = http.get(&url);
    if let Some(key) = &key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.map_err(|e| {
        let why = reason(&e, config.timeout);
        let why = why.strip_prefix("engine: ").unwrap_or(&why).to_string();
        format!("cannot reach the openai engine at {url}: {why}; is the server running, and is `url` its API's base (like http://127.0.0.1:8000/v1)?")
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!(
            "the openai engine at {url} answered HTTP {status}; check `url` (the API's base, like http://127.0.0.1:8000/v1) and `api_key_env`"
        ));
    }
    let body: Value = resp
        .bytes()
        .await
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| {
            format!("the openai engine at {url} answered something other than a model list: {e}")
        })?;
    let served: Vec<String> = body
        .get("data")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !served.is_empty() && !served.iter().any(|m| m == &config.model) {
        return Err(format!(
            "the openai engine at {} serves no model \"{}\"; it serves: {}",
            config.url,
            config.model,
            served.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(api: Api) -> Config {
        Config {
            url: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            api,
            api_key_env: None,
            ignore_eos: true,
            usage: UsageMode::Final,
            connections: None,
            timeout: DEFAULT_TIMEOUT,
            body: Map::new(),
        }
    }

    #[test]
    fn the_body_asks_for_exactly_the_requested_length_and_for_usage() {
        let b = config(Api::Completions).body("the of", 7);
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["min_tokens"], 7);
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["prompt"], "the of");
        let mut c = config(Api::Chat);
        c.ignore_eos = false;
        c.usage = UsageMode::Continuous;
        c.body.insert("temperature".into(), json!(0));
        let b = c.body("x", 3);
        assert_eq!(b["messages"][0]["content"], "x");
        assert!(b.get("min_tokens").is_none());
        assert_eq!(b["stream_options"]["continuous_usage_stats"], true);
        assert_eq!(b["temperature"], 0);
        assert_eq!(c.endpoint(), "http://127.0.0.1:1/v1/chat/completions");
    }

    #[test]
    fn prompts_have_the_asked_words_and_differ_from_the_first_word() {
        let a = prompt_text(50, 1);
        assert_eq!(a.split(' ').count(), 50);
        let firsts: std::collections::HashSet<String> = (0..64)
            .map(|s| prompt_text(3, s).split(' ').next().unwrap().to_string())
            .collect();
        assert!(firsts.len() > 8, "{firsts:?}");
        assert_eq!(prompt_text(0, 3), "");
    }

    #[test]
    fn a_missing_api_key_variable_is_named() {
        let mut c = config(Api::Chat);
        c.api_key_env = Some("INFERLAT_TEST_SURELY_UNSET_KEY".into());
        assert!(
            c.key()
                .unwrap_err()
                .contains("INFERLAT_TEST_SURELY_UNSET_KEY")
        );
    }
}
