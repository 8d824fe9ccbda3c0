//! `[model]`: a preset or explicit fields, with overrides.

use super::Context;
use crate::scenario::diagnostic::FieldPath;
use crate::scenario::file::RawModel;
use crate::scenario::limits::{MAX_LAYERS, MAX_PARAMS, MAX_WIDTH};
use crate::scenario::model::{Model, Preset};

/// The model the table describes, or `None` when it names none.
pub(super) fn check(cx: &mut Context, m: &RawModel) -> Option<Model> {
    let mp = FieldPath::root().key("model");
    let mut model = base(cx, m, &mp)?;
    if let Some(v) = m.layers {
        model.layers = v;
    }
    if let Some(v) = m.hidden {
        model.hidden = v;
        model.q_dim = v;
        if m.preset.is_none() && m.kv_dim.is_none() {
            model.kv_dim = v;
        }
    }
    if let Some(v) = &m.params {
        model.params = v.0;
    }
    if let Some(v) = m.kv_dim {
        model.kv_dim = v;
    }
    if let Some(v) = m.vocab {
        model.vocab = v;
    }
    if let Some(v) = &m.weight_bytes {
        model.weight_bytes = v.0;
    }
    if let Some(v) = &m.activation_bytes {
        model.activation_bytes = v.0;
    }
    if let Some(v) = m.tied_embeddings {
        model.tied_embeddings = v;
    }
    for (field, value) in [
        ("layers", model.layers),
        ("hidden", model.hidden),
        ("kv_dim", model.kv_dim),
        ("vocab", model.vocab),
    ] {
        let (max, why) = if field == "layers" {
            (
                MAX_LAYERS,
                "layer spans, KV sizes and compute work are products of it",
            )
        } else {
            (
                MAX_WIDTH,
                "frame sizes, KV bytes and the LM head's work are products of it",
            )
        };
        if value == 0 {
            cx.err(mp.key(field), format!("{field} must be at least 1"));
        } else if value > max {
            cx.err(
                mp.key(field),
                format!("{field} may be at most {max}, got {value}: {why}"),
            );
        }
    }
    if !(model.params.is_finite() && model.params <= MAX_PARAMS) {
        cx.err(
            mp.key("params"),
            format!(
                "params may be at most {MAX_PARAMS:e}, got {:e}: a thousand times the largest published model; memory and compute are products of it",
                model.params
            ),
        );
    }
    for (field, value) in [
        ("weight_bytes", model.weight_bytes),
        ("activation_bytes", model.activation_bytes),
    ] {
        if !(value.is_finite() && value > 0.0 && value <= 64.0) {
            cx.err(
                mp.key(field),
                format!("{field} must be a number of bytes per value in (0, 64], got {value}"),
            );
        }
    }
    if model.layers > 0 && model.hidden > 0 && model.layer_params() <= 0.0 {
        cx.err(
            mp.key("params"),
            format!(
                "{:.3e} parameters leave nothing for the layers once the embeddings ({:.3e}) are counted",
                model.params,
                model.embedding_params()
            ),
        );
    }
    if m.preset.is_none() || m.hidden.is_some() || m.params.is_some() {
        model.ffn = model.estimated_ffn();
    }
    Some(model)
}

/// The preset's model, or an empty custom one when every required field is given.
fn base(cx: &mut Context, m: &RawModel, mp: &FieldPath) -> Option<Model> {
    if let Some(name) = &m.preset {
        let found = Preset::find(name).map(|p| p.model());
        if found.is_none() {
            cx.err(
                mp.key("preset"),
                format!(
                    "unknown model preset \"{name}\"; presets: {}",
                    Preset::names().join(", ")
                ),
            );
        }
        return found;
    }
    let missing: Vec<&str> = [
        ("layers", m.layers.is_none()),
        ("hidden", m.hidden.is_none()),
        ("params", m.params.is_none()),
        ("vocab", m.vocab.is_none()),
    ]
    .iter()
    .filter(|(_, missing)| *missing)
    .map(|(k, _)| *k)
    .collect();
    if !missing.is_empty() {
        cx.err(
            mp.clone(),
            format!(
                "the model needs a `preset` ({}) or explicit fields; missing: {}",
                Preset::names().join(", "),
                missing.join(", ")
            ),
        );
        return None;
    }
    Some(Model {
        name: "custom".into(),
        layers: 0,
        hidden: 0,
        params: 0.0,
        kv_dim: 0,
        q_dim: 0,
        ffn: 0,
        vocab: 0,
        weight_bytes: 2.0,
        activation_bytes: 2.0,
        tied_embeddings: false,
    })
}
