//! `engine = { kind = "openai", ... }` on a worker or on `[baseline]`: a real server that
//! computes the node's work instead of its device's roofline model (docs/engines.md).

use super::Context;
use crate::compute::EngineConfig;
use crate::compute::openai::{self, Api, UsageMode};
use crate::scenario::TopologyKind;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::RawEngine;

/// The engine, each of its problems at its field.
pub(super) fn check(cx: &mut Context, e: &RawEngine, path: FieldPath) -> Option<EngineConfig> {
    if e.kind != "openai" {
        cx.err(
            path.key("kind"),
            format!(
                "unknown engine kind \"{}\"; valid: openai (an OpenAI-compatible server: vLLM, SGLang, TGI, llama.cpp, Ollama, ...)",
                e.kind
            ),
        );
        return None;
    }
    let before = cx.found();
    let url = match e.url.as_deref().map(str::trim) {
        None => {
            cx.err(
                path.clone(),
                "an openai engine needs `url`, the API's base, like \"http://127.0.0.1:8000/v1\""
                    .into(),
            );
            String::new()
        }
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 10 => {
            cx.err(
                path.key("url"),
                format!(
                    "invalid engine url \"{u}\": give the API's base with http:// or https://, like \"http://127.0.0.1:8000/v1\""
                ),
            );
            String::new()
        }
        Some(u) => u.trim_end_matches('/').to_string(),
    };
    let model = match e.model.as_deref() {
        Some(m) if !m.trim().is_empty() => m.to_string(),
        Some(_) => {
            cx.err(
                path.key("model"),
                "engine model is empty: give the model name the server serves (its /v1/models lists them)".into(),
            );
            String::new()
        }
        None => {
            cx.err(
                path.clone(),
                "an openai engine needs `model`, the name the server serves (its /v1/models lists them)".into(),
            );
            String::new()
        }
    };
    let api = match e.api.as_deref() {
        None | Some("completions") => Api::Completions,
        Some("chat") => Api::Chat,
        Some(other) => {
            cx.err(
                path.key("api"),
                format!("unknown engine api \"{other}\"; valid: completions, chat"),
            );
            Api::Completions
        }
    };
    let usage = match e.usage.as_deref() {
        None | Some("final") => UsageMode::Final,
        Some("continuous") => UsageMode::Continuous,
        Some("none") => UsageMode::None,
        Some(other) => {
            cx.err(
                path.key("usage"),
                format!(
                    "unknown engine usage \"{other}\"; valid: final (stream_options.include_usage), continuous (also vLLM's continuous_usage_stats), none"
                ),
            );
            UsageMode::Final
        }
    };
    if let Some(var) = &e.api_key_env
        && (var.is_empty()
            || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || var.starts_with(|c: char| c.is_ascii_digit()))
    {
        cx.err(
            path.key("api_key_env"),
            format!(
                "invalid api_key_env \"{var}\": give the name of an environment variable (letters, digits and _), like \"OPENAI_API_KEY\", not the key itself"
            ),
        );
    }
    if e.connections == Some(0) {
        cx.err(
            path.key("connections"),
            "engine connections must be at least 1".into(),
        );
    }
    let timeout = e.timeout.map_or(openai::DEFAULT_TIMEOUT, |d| d.get());
    if timeout.is_zero() {
        cx.err(
            path.key("timeout"),
            "engine timeout must be greater than zero, like \"60s\"".into(),
        );
    }
    let body = match &e.body {
        None => serde_json::Map::new(),
        Some(t) => match serde_json::to_value(t) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                cx.err(
                    path.key("body"),
                    "engine body must be a table of JSON-compatible values".into(),
                );
                serde_json::Map::new()
            }
        },
    };
    for reserved in ["model", "prompt", "messages", "stream", "max_tokens"] {
        if body.contains_key(reserved) {
            cx.err(
                path.key("body"),
                format!(
                    "engine body sets `{reserved}`, which inferlat sets from the scenario; remove it"
                ),
            );
        }
    }
    (cx.found() == before).then(|| {
        EngineConfig::Openai(openai::Config {
            url,
            model,
            api,
            api_key_env: e.api_key_env.clone(),
            ignore_eos: e.ignore_eos.unwrap_or(true),
            usage,
            connections: e.connections,
            timeout,
            body,
        })
    })
}

/// Whether a worker backed by a real engine may serve in a topology of this kind: a server
/// takes whole requests, so kinds that split a model across workers cannot use it.
pub(super) fn whole_model_kind(kind: TopologyKind) -> bool {
    matches!(kind.name(), "direct" | "relay" | "hedged")
}

/// The message for a real engine in a kind that splits the model.
pub(super) fn split_message(node: &str, kind: TopologyKind) -> String {
    format!(
        "worker \"{node}\" is backed by an openai engine, which serves whole requests; a {kind} topology splits the model across workers. \
Measure the server with `inferlat calibrate --engine URL --model NAME --preset MODEL --out profiles/NAME.toml` and give these workers `device = \"NAME\"` (docs/engines.md)"
    )
}
