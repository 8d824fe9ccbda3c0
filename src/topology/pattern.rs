//! A tensor group's protocol pattern: which synchronisations its nodes make per token, in
//! which direction each goes and what it carries, and which work runs on the root only.
//!
//! The pattern is a value: `[topology] pattern` names a preset ([`PRESETS`]), each taken
//! from the source code of the system it describes. The plan's legs (the floor and the
//! bytes per link that `validate` prints) and the harness's tensor root and members both
//! walk the same flattened list of [`Op`]s ([`Pattern::ops`]), so what runs is what the
//! plan counts.

use crate::compute::model::Model;
use serde::Deserialize;
use std::borrow::Cow;

/// Which way a synchronisation goes between the root and each member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Each member sends its part to the root (a gather); the root waits for all of them.
    ToRoot,
    /// The root sends to each member (a broadcast); each member waits for it.
    FromRoot,
    /// Both at once (distributed-llama's `SYNC_NODE_SLICES` in a mesh): each member sends
    /// its part to the root while the root sends its own to each member; each waits for
    /// what it is sent.
    Exchange,
}

impl Direction {
    /// Whether the nodes compute before it: a member sends to the root what it computed.
    pub fn follows_compute(self) -> bool {
        !matches!(self, Direction::FromRoot)
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::ToRoot => "to-root",
            Direction::FromRoot => "from-root",
            Direction::Exchange => "exchange",
        }
    }
}

/// A width of the model, the unit of a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dim {
    Hidden,
    Ffn,
    Vocab,
    /// The queries, keys and values of a layer together: q_dim + 2·kv_dim.
    Qkv,
    /// The keys (or the values) of a layer: kv_dim.
    Kv,
}

/// How much of a width one message carries, for a group of N nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Share {
    /// All of it.
    All,
    /// One node's slice: 1/N (rounded up).
    Slice,
    /// Every slice but the receiver's own: (N−1)/N.
    Rest,
}

/// What one message of a synchronisation carries, to or from one member.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Payload {
    /// `share` of a width of `element_bytes` per value (the model's `activation_bytes`
    /// when `None`), for each position of the step, or for its last position only (the
    /// logits of the token it yields).
    Values {
        dim: Dim,
        share: Share,
        element_bytes: Option<f64>,
        last_position_only: bool,
    },
    /// A fixed number of bytes per step (a position index).
    Bytes(u64),
}

impl Payload {
    /// Values of one position in one message, for a group of `ways` nodes.
    fn values(&self, model: &Model, ways: u32) -> u64 {
        match *self {
            Payload::Bytes(_) => 0,
            Payload::Values { dim, share, .. } => {
                let width = match dim {
                    Dim::Hidden => model.hidden,
                    Dim::Ffn => model.ffn,
                    Dim::Vocab => model.vocab,
                    Dim::Qkv => model.q_dim + 2 * model.kv_dim,
                    Dim::Kv => model.kv_dim,
                } as u64;
                let n = ways.max(1) as u64;
                match share {
                    Share::All => width,
                    Share::Slice => width.div_ceil(n),
                    Share::Rest => width.div_ceil(n) * (n - 1),
                }
            }
        }
    }

    fn element_bytes(&self, model: &Model) -> f64 {
        match *self {
            Payload::Values {
                element_bytes: Some(b),
                ..
            } => b,
            _ => model.activation_bytes,
        }
    }

    /// Bytes of one message for a step of `tokens` positions in a group of `ways` nodes.
    pub fn bytes(&self, model: &Model, ways: u32, tokens: u32) -> u64 {
        match *self {
            Payload::Bytes(b) => b,
            Payload::Values {
                last_position_only, ..
            } => {
                let positions = if last_position_only { 1 } else { tokens };
                let v = self.values(model, ways) as f64 * positions as f64;
                (v * self.element_bytes(model)).ceil() as u64
            }
        }
    }
}

/// One synchronisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sync {
    /// Its name in the source (`SYNC_NODE_SLICES`, `llamaSyncAtt`, ...).
    pub name: &'static str,
    pub direction: Direction,
    pub payload: Payload,
}

/// Work that runs on the root only instead of being split across the group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootOnly {
    /// Attention over the context (QK^T, AV, the KV cache); the projections stay split.
    pub attention: bool,
    /// The LM head (the vocab projection that yields the token).
    pub lm_head: bool,
}

/// A tensor group's pattern: the synchronisations of one step (one token, or a prefill's
/// positions), before the first layer, in every layer, and after the last.
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    /// The preset's name, or "custom" for a table written in the scenario.
    pub name: &'static str,
    /// Where the pattern comes from.
    pub source: &'static str,
    pub start: Cow<'static, [Sync]>,
    pub layer: Cow<'static, [Sync]>,
    pub end: Cow<'static, [Sync]>,
    pub root_only: RootOnly,
}

/// One thing a group does in a step, in order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// Every node computes `share` of its layers' pass (the root also its root-only
    /// attention); with `head`, the LM head instead (the root alone when it is root-only).
    Compute {
        share: f64,
        head: bool,
    },
    Sync(Message),
}

/// A synchronisation resolved for a model and a group size: its direction and the bytes
/// of each of its messages (to or from one member).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Message {
    pub name: &'static str,
    pub direction: Direction,
    /// Bytes whatever the step's positions.
    fixed: u64,
    /// Bytes per position of the step.
    per_position: f64,
}

impl Message {
    /// Bytes of one message for a step of `tokens` positions.
    pub fn bytes(&self, tokens: u32) -> u64 {
        self.fixed + (self.per_position * tokens as f64).ceil() as u64
    }
}

impl Sync {
    /// The synchronisation's messages for `model` in a group of `ways` nodes.
    pub fn resolve(&self, model: &Model, ways: u32) -> Message {
        let (fixed, per_position) = match self.payload {
            Payload::Bytes(b) => (b, 0.0),
            Payload::Values {
                last_position_only: true,
                ..
            } => (self.payload.bytes(model, ways, 1), 0.0),
            Payload::Values {
                dim,
                share,
                element_bytes,
                ..
            } => {
                let one = Payload::Values {
                    dim,
                    share,
                    element_bytes,
                    last_position_only: false,
                };
                (0, one.values(model, ways) as f64 * one.element_bytes(model))
            }
        };
        Message {
            name: self.name,
            direction: self.direction,
            fixed,
            per_position,
        }
    }
}

/// Q80, distributed-llama's quantized buffer type: blocks of 32 values in 34 bytes
/// (a 16-bit scale and 32 bytes), 1.0625 bytes per value.
const Q80: Option<f64> = Some(34.0 / 32.0);
/// 32-bit floats.
const F32: Option<f64> = Some(4.0);

const fn values(dim: Dim, share: Share, element_bytes: Option<f64>) -> Payload {
    Payload::Values {
        dim,
        share,
        element_bytes,
        last_position_only: false,
    }
}

const fn sync(name: &'static str, direction: Direction, payload: Payload) -> Sync {
    Sync {
        name,
        direction,
        payload,
    }
}

/// Every preset, by name. The first is the default.
pub static PRESETS: &[Pattern] = &[
    Pattern {
        name: "allreduce",
        source: "inferlat's generic tensor parallelism: two all-reduces per layer, each a gather of the partial sums to the root and a broadcast of their sum (exo's tensor mode, REFERENCE.md), in the model's activation_bytes; the input broadcast and a gather of 32-bit logits slices for the last position",
        start: Cow::Borrowed(&[sync(
            "input",
            Direction::FromRoot,
            values(Dim::Hidden, Share::All, None),
        )]),
        layer: Cow::Borrowed(&[
            sync(
                "attention partial sums",
                Direction::ToRoot,
                values(Dim::Hidden, Share::All, None),
            ),
            sync(
                "attention sum",
                Direction::FromRoot,
                values(Dim::Hidden, Share::All, None),
            ),
            sync(
                "ffn partial sums",
                Direction::ToRoot,
                values(Dim::Hidden, Share::All, None),
            ),
            sync(
                "ffn sum",
                Direction::FromRoot,
                values(Dim::Hidden, Share::All, None),
            ),
        ]),
        end: Cow::Borrowed(&[sync(
            "logits",
            Direction::ToRoot,
            Payload::Values {
                dim: Dim::Vocab,
                share: Share::Slice,
                element_bytes: F32,
                last_position_only: true,
            },
        )]),
        root_only: RootOnly {
            attention: false,
            lm_head: false,
        },
    },
    Pattern {
        name: "dllama-0.1",
        source: "distributed-llama v0.1.0 and v0.1.1, src/transformer-tasks.cpp inferenceTasks and workerTasks (github.com/b4rtaz/distributed-llama; the same task list as commit 25e6fd4 of 2024-01-12, whose README published the network transfer per token): per layer the root broadcasts the normed input (syncRmsAtt), gathers each worker's slices of Q, K and V (syncQkv: three buffers sent back to back, one message here), runs multi-head attention alone (multiheadAtt is in the root's task list only) and broadcasts its output (syncMultiheadAtt), gathers the output projection's slices (syncAtt), broadcasts the normed residual (syncRmfFfn), gathers the ffn slices (syncFfnA), sends each worker the slices it lacks (syncFfnB) and gathers the output slices (syncFfn2), all in the Q80 buffer type; finalize (the LM head) runs on the root only",
        start: Cow::Borrowed(&[]),
        layer: Cow::Borrowed(&[
            sync(
                "syncRmsAtt",
                Direction::FromRoot,
                values(Dim::Hidden, Share::All, Q80),
            ),
            sync(
                "syncQkv",
                Direction::ToRoot,
                values(Dim::Qkv, Share::Slice, Q80),
            ),
            sync(
                "syncMultiheadAtt",
                Direction::FromRoot,
                values(Dim::Hidden, Share::All, Q80),
            ),
            sync(
                "syncAtt",
                Direction::ToRoot,
                values(Dim::Hidden, Share::Slice, Q80),
            ),
            sync(
                "syncRmfFfn",
                Direction::FromRoot,
                values(Dim::Hidden, Share::All, Q80),
            ),
            sync(
                "syncFfnA",
                Direction::ToRoot,
                values(Dim::Ffn, Share::Slice, Q80),
            ),
            sync(
                "syncFfnB",
                Direction::FromRoot,
                values(Dim::Ffn, Share::Rest, Q80),
            ),
            sync(
                "syncFfn2",
                Direction::ToRoot,
                values(Dim::Hidden, Share::Slice, Q80),
            ),
        ]),
        end: Cow::Borrowed(&[]),
        root_only: RootOnly {
            attention: true,
            lm_head: true,
        },
    },
    Pattern {
        name: "dllama-0.3.1",
        source: "distributed-llama v0.3.1, src/llama2-tasks.cpp buildLlama2Arch, src/tasks.cpp and src/transformer.cpp TransformerBuffer (tag v0.3.1, commit 37fad6a of 2024-04-28; github.com/b4rtaz/distributed-llama; buildLlama2Arch is the arch of every LLAMA2 file, Llama 2 and Llama 3 alike, converter/convert-llama.py): sendPoke first sends each worker 1 byte; per layer the root broadcasts the normed input (llamaSyncRmsAtt, dim), gathers each worker's slice of Q (llamaSyncAttQ: TB_SLICED_Q holds dim values, a slice dim/N), of K and of V (llamaSyncAttK, llamaSyncAttV: kvDim/N each), each right after its own matmul, runs multi-head attention alone (llamaMultiheadAtt and its join are in the root's list only) and broadcasts its output (llamaSyncMultiheadAtt, dim), gathers the output projection's slices (llamaSyncAtt, dim/N), broadcasts the normed residual (llamaSyncRmfFfn, dim), gathers the ffn slices (llamaSyncFfnA, hiddenDim/N), sends each worker the slices it lacks (llamaSyncFfnB, N-1 slices) and gathers the output slices (llamaSyncFfn2, dim/N), all in the Q80 buffer type; llamaFinalize (the LM head) runs on the root only: 10·L + 1 synchronisations per token",
        start: Cow::Borrowed(&[sync("sendPoke", Direction::FromRoot, Payload::Bytes(1))]),
        layer: Cow::Borrowed(&[
            sync(
                "llamaSyncRmsAtt",
                Direction::FromRoot,
                values(Dim::Hidden, Share::All, Q80),
            ),
            // TB_SLICED_Q is sized by dim (spec->dim floats), not by the heads' width.
            sync(
                "llamaSyncAttQ",
                Direction::ToRoot,
                values(Dim::Hidden, Share::Slice, Q80),
            ),
            sync(
                "llamaSyncAttK",
                Direction::ToRoot,
                values(Dim::Kv, Share::Slice, Q80),
            ),
            sync(
                "llamaSyncAttV",
                Direction::ToRoot,
                values(Dim::Kv, Share::Slice, Q80),
            ),
            sync(
                "llamaSyncMultiheadAtt",
                Direction::FromRoot,
                values(Dim::Hidden, Share::All, Q80),
            ),
            sync(
                "llamaSyncAtt",
                Direction::ToRoot,
                values(Dim::Hidden, Share::Slice, Q80),
            ),
            sync(
                "llamaSyncRmfFfn",
                Direction::FromRoot,
                values(Dim::Hidden, Share::All, Q80),
            ),
            sync(
                "llamaSyncFfnA",
                Direction::ToRoot,
                values(Dim::Ffn, Share::Slice, Q80),
            ),
            sync(
                "llamaSyncFfnB",
                Direction::FromRoot,
                values(Dim::Ffn, Share::Rest, Q80),
            ),
            sync(
                "llamaSyncFfn2",
                Direction::ToRoot,
                values(Dim::Hidden, Share::Slice, Q80),
            ),
        ]),
        end: Cow::Borrowed(&[]),
        root_only: RootOnly {
            attention: true,
            lm_head: true,
        },
    },
    Pattern {
        name: "dllama-0.5",
        source: "distributed-llama v0.5.0 to v0.7.0, src/llama2-tasks.cpp buildLlama2Arch and src/tasks.cpp (github.com/b4rtaz/distributed-llama): per layer the root broadcasts the normed input (llamaSyncRmsAtt), gathers each worker's hidden-wide partial sum of the attention output (llamaSyncAtt; TB_SLICED_XBV holds dim × nSlices values), broadcasts the normed residual (llamaSyncRmfFfn), gathers the ffn slices (llamaSyncFfnA), sends each worker the slices it lacks (llamaSyncFfnB) and gathers the output slices (llamaSyncFfn2), all in the Q80 buffer type (--buffer-float-type q80); sendPos sends the 4-byte position first; llamaFinalize (the LM head) runs on the root only",
        start: Cow::Borrowed(&[sync("sendPos", Direction::FromRoot, Payload::Bytes(4))]),
        layer: Cow::Borrowed(&[
            sync(
                "llamaSyncRmsAtt",
                Direction::FromRoot,
                values(Dim::Hidden, Share::All, Q80),
            ),
            // TB_SLICED_XBV holds dim × nSlices values: each worker's slice is a whole
            // hidden-wide partial sum of the attention's output projection.
            sync(
                "llamaSyncAtt",
                Direction::ToRoot,
                values(Dim::Hidden, Share::All, Q80),
            ),
            sync(
                "llamaSyncRmfFfn",
                Direction::FromRoot,
                values(Dim::Hidden, Share::All, Q80),
            ),
            sync(
                "llamaSyncFfnA",
                Direction::ToRoot,
                values(Dim::Ffn, Share::Slice, Q80),
            ),
            sync(
                "llamaSyncFfnB",
                Direction::FromRoot,
                values(Dim::Ffn, Share::Rest, Q80),
            ),
            sync(
                "llamaSyncFfn2",
                Direction::ToRoot,
                values(Dim::Hidden, Share::Slice, Q80),
            ),
        ]),
        end: Cow::Borrowed(&[]),
        root_only: RootOnly {
            attention: false,
            lm_head: true,
        },
    },
    Pattern {
        name: "dllama-0.12",
        source: "distributed-llama v0.12.0 and later, src/llm.cpp buildLlmNet and src/nn/nn-network.cpp (github.com/b4rtaz/distributed-llama): SYNC_WITH_ROOT of the 32-bit input x, then per layer two SYNC_NODE_SLICES of the Q80 partial sums (each node sends its hidden-wide part to every other node of the mesh), then SYNC_NODE_SLICES_EXCEPT_ROOT of each worker's 32-bit logits slice to the root: 2·L + 2 synchronisations per token",
        start: Cow::Borrowed(&[sync(
            "SYNC_WITH_ROOT x",
            Direction::FromRoot,
            values(Dim::Hidden, Share::All, F32),
        )]),
        layer: Cow::Borrowed(&[
            sync(
                "SYNC_NODE_SLICES att",
                Direction::Exchange,
                values(Dim::Hidden, Share::All, Q80),
            ),
            sync(
                "SYNC_NODE_SLICES ff",
                Direction::Exchange,
                values(Dim::Hidden, Share::All, Q80),
            ),
        ]),
        end: Cow::Borrowed(&[sync(
            "SYNC_NODE_SLICES_EXCEPT_ROOT logits",
            Direction::ToRoot,
            values(Dim::Vocab, Share::Slice, F32),
        )]),
        root_only: RootOnly {
            attention: false,
            lm_head: false,
        },
    },
];

impl Default for Pattern {
    fn default() -> Self {
        PRESETS[0].clone()
    }
}

impl Pattern {
    /// The preset of a given name.
    pub fn by_name(name: &str) -> Option<Pattern> {
        PRESETS.iter().find(|p| p.name == name).cloned()
    }

    /// Every preset's name, for error messages.
    pub fn names() -> String {
        PRESETS
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One step's ops for `model` in a group of `ways` nodes: the start's
    /// synchronisations; in each layer, before each synchronisation that follows compute,
    /// an equal share of the layer's compute (the whole layer before its end when none
    /// does); then the LM head and the end's synchronisations.
    pub fn ops(&self, model: &Model, ways: u32) -> Vec<Op> {
        let msg = |s: &Sync| Op::Sync(s.resolve(model, ways));
        let mut ops: Vec<Op> = self.start.iter().map(msg).collect();
        let computing = self
            .layer
            .iter()
            .filter(|s| s.direction.follows_compute())
            .count();
        let layers = model.layers;
        let share = 1.0 / (layers.max(1) as f64 * computing.max(1) as f64);
        for _ in 0..layers {
            for s in self.layer.iter() {
                if s.direction.follows_compute() {
                    ops.push(Op::Compute { share, head: false });
                }
                ops.push(msg(s));
            }
            if computing == 0 {
                ops.push(Op::Compute { share, head: false });
            }
        }
        ops.push(Op::Compute {
            share: 1.0,
            head: true,
        });
        ops.extend(self.end.iter().map(msg));
        ops
    }

    /// Messages from the root to each member in one step, and from each member to the root.
    pub fn messages(&self, layers: u32) -> (u64, u64) {
        let count = |syncs: &[Sync], d: fn(Direction) -> bool| {
            syncs.iter().filter(|s| d(s.direction)).count() as u64
        };
        let down = |d: Direction| d != Direction::ToRoot;
        let up = |d: Direction| d != Direction::FromRoot;
        let l = layers as u64;
        (
            count(&self.start, down) + l * count(&self.layer, down) + count(&self.end, down),
            count(&self.start, up) + l * count(&self.layer, up) + count(&self.end, up),
        )
    }

    /// Why this pattern cannot run: a member learns that a step began from the first
    /// message the root sends it, so the step's first synchronisation must come from the
    /// root.
    pub fn problem(&self) -> Option<String> {
        let first = self
            .start
            .iter()
            .chain(self.layer.iter())
            .chain(self.end.iter())
            .next();
        match first {
            Some(s) if s.direction == Direction::FromRoot => None,
            Some(s) => Some(format!(
                "pattern \"{}\": a step's first synchronisation must go from the root to the members (they learn from it that a step began); \"{}\" is {}",
                self.name,
                s.name,
                s.direction.name()
            )),
            None => Some(format!("pattern \"{}\" has no synchronisation", self.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::model::Preset;

    #[test]
    fn every_preset_can_run_and_the_default_is_the_generic_all_reduce() {
        for p in PRESETS {
            assert_eq!(p.problem(), None, "{}", p.name);
            assert!(!p.source.is_empty());
        }
        assert_eq!(Pattern::default().name, "allreduce");
        assert!(Pattern::by_name("dllama-0.12").is_some());
        assert!(Pattern::by_name("dllama").is_none());
    }

    /// The arithmetic of distributed-llama's own figure (REFERENCE.md): with the v0.12
    /// pattern the root sends and receives 4·L·(N−1)·hidden·β bytes per token in its
    /// per-layer synchronisations (Llama 3 8B, Q80: 544 KiB with 2 nodes, 1,632 KiB with 4).
    /// This checks the preset's payloads against the published count, not the model
    /// against itself.
    #[test]
    fn dllama_012_moves_the_published_bytes_per_token() {
        let m = Preset::find("llama-3-8b").unwrap().model();
        let p = Pattern::by_name("dllama-0.12").unwrap();
        for (n, kib) in [(2u32, 544u64), (4, 1632)] {
            let per_layer: u64 = p
                .layer
                .iter()
                .map(|s| {
                    let b = s.payload.bytes(&m, n, 1);
                    // Both ways on each member's link.
                    2 * b * (n as u64 - 1)
                })
                .sum();
            assert_eq!(per_layer * m.layers as u64 / 1024, kib);
        }
        // 2·L + 2 synchronisations per token.
        assert_eq!(p.start.len() + p.layer.len() * 32 + p.end.len(), 2 * 32 + 2);
    }

    /// distributed-llama v0.3.1's bytes per token, from its own formulas rather than the
    /// preset's: a Q80 buffer of n values is getBatchBytes(Q80, n) = n / 32 · 34 bytes
    /// (src/quants.cpp), a slice of it that over nSlices (TransformerBuffer::getSlicedBytes),
    /// and per layer the root writes to each worker the units XB (dim) three times and
    /// N − 1 slices of HB (hiddenDim), and reads from each its slices of Q (dim), K and V
    /// (kvDim), XB2 (dim) twice and HB; plus the 1-byte poke per token.
    #[test]
    fn dllama_031_moves_its_task_lists_bytes_per_token() {
        let q80 = |n: u64| n / 32 * 34;
        let p = Pattern::by_name("dllama-0.3.1").unwrap();
        for preset in ["llama-2-7b", "llama-3-8b"] {
            let m = Preset::find(preset).unwrap().model();
            let (dim, kv, hid, l) = (
                m.hidden as u64,
                m.kv_dim as u64,
                m.ffn as u64,
                m.layers as u64,
            );
            for n in [2u32, 4] {
                let s = n as u64;
                let down = 1 + l * (3 * q80(dim) + (s - 1) * (q80(hid) / s));
                let up = l * (3 * (q80(dim) / s) + 2 * (q80(kv) / s) + q80(hid) / s);
                let (mut sent, mut got) = (0, 0);
                for op in p.ops(&m, n) {
                    if let Op::Sync(msg) = op {
                        match msg.direction {
                            Direction::FromRoot => sent += msg.bytes(1),
                            Direction::ToRoot => got += msg.bytes(1),
                            Direction::Exchange => unreachable!(),
                        }
                    }
                }
                assert_eq!((sent, got), (down, up), "{preset} on {n}");
            }
            // 10·L + 1 synchronisations per token: the poke and 4 broadcasts per layer down,
            // 6 gathers per layer up; v0.1 made the same broadcasts and 4 gathers.
            assert_eq!(p.messages(m.layers), (4 * l + 1, 6 * l));
            assert_eq!(
                Pattern::by_name("dllama-0.1").unwrap().messages(m.layers),
                (4 * l, 4 * l)
            );
        }
        // The same bytes as v0.1's one syncQkv, in three gathers.
        let m = Preset::find("llama-3-8b").unwrap().model();
        let v01 = Pattern::by_name("dllama-0.1").unwrap();
        let per_layer =
            |p: &Pattern| -> u64 { p.layer.iter().map(|s| s.payload.bytes(&m, 4, 1)).sum() };
        assert_eq!(per_layer(&p), per_layer(&v01));
        assert_eq!(p.root_only, v01.root_only);
        assert!(p.root_only.attention && p.root_only.lm_head);
        // Each layer's compute is split among the six gathers.
        let computes = p
            .ops(&m, 4)
            .iter()
            .filter(|o| matches!(o, Op::Compute { head: false, .. }))
            .count();
        assert_eq!(computes as u32, 6 * m.layers);
    }

    #[test]
    fn ops_split_each_layer_among_the_synchronisations_that_follow_compute() {
        let p = Pattern::by_name("dllama-0.5").unwrap();
        let m = Model {
            layers: 2,
            ..Preset::find("llama-2-7b").unwrap().model()
        };
        let ops = p.ops(&m, 4);
        let shares: f64 = ops
            .iter()
            .map(|o| match o {
                Op::Compute { share, head: false } => *share,
                _ => 0.0,
            })
            .sum();
        assert!((shares - 1.0).abs() < 1e-12, "{shares}");
        // sendPos, then 6 syncs and 3 computes per layer, then the head.
        assert_eq!(ops.len(), 1 + 2 * 9 + 1);
        assert_eq!(p.messages(2), (1 + 2 * 3, 2 * 3));
        assert!(p.root_only.lm_head);
    }

    #[test]
    fn payloads_follow_the_width_the_share_and_the_positions() {
        let m = Preset::find("llama-2-7b").unwrap().model();
        let q80 = |dim, share| values(dim, share, Q80).bytes(&m, 4, 3);
        assert_eq!(q80(Dim::Hidden, Share::All), 3 * 4352);
        assert_eq!(q80(Dim::Hidden, Share::Slice), 3 * 1088);
        assert_eq!(
            q80(Dim::Ffn, Share::Rest),
            (3.0 * 8256.0 * 1.0625_f64).ceil() as u64
        );
        let logits = Payload::Values {
            dim: Dim::Vocab,
            share: Share::Slice,
            element_bytes: F32,
            last_position_only: true,
        };
        assert_eq!(logits.bytes(&m, 4, 128), 8000 * 4);
        assert_eq!(Payload::Bytes(4).bytes(&m, 4, 128), 4);
        // Resolved messages carry the same bytes.
        let s = sync("x", Direction::ToRoot, values(Dim::Ffn, Share::Rest, Q80));
        assert_eq!(s.resolve(&m, 4).bytes(3), q80(Dim::Ffn, Share::Rest));
        let s = sync("lg", Direction::ToRoot, logits);
        assert_eq!(s.resolve(&m, 4).bytes(128), 8000 * 4);
        // The model's activation width by default.
        assert_eq!(
            values(Dim::Hidden, Share::All, None).bytes(&m, 2, 1),
            4096 * 2
        );
    }
}
