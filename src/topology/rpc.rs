//! A star's protocol pattern: the calls its host makes to each remote stage per step
//! (llama.cpp RPC's `SET_TENSOR`, `GRAPH_COMPUTE`, `GET_TENSOR`), the bytes each request
//! and reply carries, and which calls wait for their reply.
//!
//! `[topology] pattern` on a star names a preset ([`PRESETS`]). The plan's legs (the floor
//! and the bytes per link that `validate` prints) and the harness's star host and remote
//! stages resolve the same calls ([`StarPattern::calls`]) for the step's positions, its
//! KV length and the remote's layers, so what runs is what the plan counts.

use crate::compute::model::Model;

/// What a request or a reply carries besides its fixed bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Data {
    Nothing,
    /// The hidden state of each position of the step (or of its last position only), at
    /// `element_bytes` per value; `None`: the model's `activation_bytes`, the hidden
    /// state rounded to whole bytes per position as every other kind sends it.
    Hidden {
        element_bytes: Option<f64>,
        last_position_only: bool,
    },
    /// A fixed number of bytes per position of the step (32-bit positions).
    PerPosition(u64),
    /// A fixed number of bytes per output position (the last position only: 32-bit
    /// output ids).
    PerOutput(u64),
    /// llama.cpp's KQ mask: `element_bytes` × n_kv × n_tokens, n_kv the step's KV length
    /// padded to `kv_pad` (at least `kv_pad`), n_tokens its positions padded to
    /// `token_pad`.
    KqMask {
        element_bytes: u64,
        kv_pad: u32,
        token_pad: u32,
    },
    /// ggml's serialized graph of the remote's layers: n_nodes × 8 + n_tensors × 296
    /// bytes (ggml-rpc's `rpc_tensor`), with n_nodes = `nodes_per_layer` × layers +
    /// `extra_nodes` and n_tensors likewise.
    Graph {
        nodes_per_layer: u32,
        extra_nodes: u32,
        tensors_per_layer: u32,
        extra_tensors: u32,
    },
}

/// Bytes of ggml-rpc's `rpc_tensor` (ggml/src/ggml-rpc: id 8, type 4, buffer 8, ne 4 × 4,
/// nb 4 × 4, op 4, op_params 64, flags 4, src 10 × 8, view_src 8, view_offs 8, data 8,
/// name 64, 4 bytes of padding or alignment).
pub const RPC_TENSOR: u64 = 296;
/// An RPC request's header: the command (1 byte) and the request's size (8 bytes).
pub const REQUEST_HEADER: u64 = 1 + 8;
/// An RPC reply's header: its size (8 bytes).
pub const REPLY_HEADER: u64 = 8;

/// A message's size: fixed bytes and its data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Size {
    pub fixed: u64,
    pub data: Data,
}

/// One call of the host to a remote stage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Call {
    /// Its name in the source (`SET_TENSOR inp_pos`, `GRAPH_COMPUTE`, ...).
    pub name: &'static str,
    pub request: Size,
    /// The reply the host waits for before its next call; `None`: it sends the next at
    /// once and the remote answers nothing.
    pub reply: Option<Size>,
    /// Whether the remote computes its layers' step on this request (before its reply).
    pub computes: bool,
}

/// A call resolved for a step: the bytes of its request and of its reply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resolved {
    pub name: &'static str,
    pub request: u64,
    pub reply: Option<u64>,
    pub computes: bool,
}

/// A star's pattern: the calls to each remote stage in one step.
#[derive(Clone, Debug, PartialEq)]
pub struct StarPattern {
    pub name: &'static str,
    /// Where the pattern comes from.
    pub source: &'static str,
    pub calls: &'static [Call],
}

impl Size {
    /// Bytes for a step of `tokens` positions at KV length `kv`, on a remote of `layers`.
    pub fn bytes(&self, model: &Model, tokens: u32, kv: u32, layers: u32) -> u64 {
        let t = tokens as u64;
        let data = match self.data {
            Data::Nothing => 0,
            Data::Hidden {
                element_bytes: None,
                last_position_only,
            } => {
                let positions = if last_position_only { 1 } else { t };
                positions * model.hidden_state_bytes().round() as u64
            }
            Data::Hidden {
                element_bytes: Some(b),
                last_position_only,
            } => {
                let positions = if last_position_only { 1 } else { t };
                (positions as f64 * model.hidden as f64 * b).ceil() as u64
            }
            Data::PerPosition(b) => b * t,
            Data::PerOutput(b) => b,
            Data::KqMask {
                element_bytes,
                kv_pad,
                token_pad,
            } => {
                let n_kv = (kv.max(1) as u64).div_ceil(kv_pad as u64) * kv_pad as u64;
                let n_tokens = t.div_ceil(token_pad as u64) * token_pad as u64;
                element_bytes * n_kv * n_tokens
            }
            Data::Graph {
                nodes_per_layer,
                extra_nodes,
                tensors_per_layer,
                extra_tensors,
            } => {
                let l = layers as u64;
                let nodes = nodes_per_layer as u64 * l + extra_nodes as u64;
                let tensors = tensors_per_layer as u64 * l + extra_tensors as u64;
                // | n_nodes (4) | nodes (n_nodes × 8) | n_tensors (4) | tensors |
                4 + nodes * 8 + 4 + tensors * RPC_TENSOR
            }
        };
        self.fixed + data
    }
}

const fn size(fixed: u64, data: Data) -> Size {
    Size { fixed, data }
}

/// A `SET_TENSOR` request: | rpc_tensor | offset (8 bytes) | data |.
const fn set_tensor(data: Data) -> Size {
    size(REQUEST_HEADER + RPC_TENSOR + 8, data)
}

/// The empty reply `SET_TENSOR` sent before PR #12943.
const EMPTY_REPLY: Size = size(REPLY_HEADER, Data::Nothing);

/// llama.cpp's hidden states between backends are 32-bit floats.
const F32: Option<f64> = Some(4.0);

/// The four inputs of a Llama decode step that the main host sets on the remote
/// (src/llama.cpp of May 2024, `llm_build_llama` and `llama_set_inputs`): the embeddings
/// (the CPU's `get_rows` output copied to the remote's split), the 32-bit positions, the
/// 32-bit KQ mask (n_kv × GGML_PAD(n_tokens, GGML_KQ_MASK_PAD = 32), n_kv = the cells
/// used padded to 32, at least 32) and the 32-bit ids of the output positions (one: the
/// logits of the last position).
const INPUTS: [(&str, Data); 4] = [
    (
        "SET_TENSOR inp_embd",
        Data::Hidden {
            element_bytes: F32,
            last_position_only: false,
        },
    ),
    ("SET_TENSOR inp_pos", Data::PerPosition(4)),
    (
        "SET_TENSOR KQ_mask",
        Data::KqMask {
            element_bytes: 4,
            kv_pad: 32,
            token_pad: 32,
        },
    ),
    ("SET_TENSOR inp_out_ids", Data::PerOutput(4)),
];

/// The serialized graph of a Llama layer span: an estimate from `llm_build_llama`'s
/// structure (May 2024), not a count read from a run. Per layer 33 nodes: attention norm
/// (rms_norm, mul), the Q, K and V projections (3 mul_mat), reshape and rope of Q and K
/// (4), the KV store (a view and a cpy for K; reshape, transpose, view and cpy for V: 6),
/// attention (permute, view, mul_mat, soft_max_ext, view, mul_mat, permute, cont, the
/// output projection: 9), the residual add, the ffn norm (2), the gated ffn (up, gate,
/// silu, mul, down: 5) and the residual add; plus the last layer's two `get_rows` of the
/// output positions. Tensors: those 33 nodes and 11 leaves per layer (9 weights, the K
/// and V caches), plus the 4 inputs and the 2 `get_rows`.
const LLAMA_GRAPH: Data = Data::Graph {
    nodes_per_layer: 33,
    extra_nodes: 2,
    tensors_per_layer: 44,
    extra_tensors: 6,
};

/// `GRAPH_COMPUTE`: the serialized graph; its reply the 1-byte status.
const GRAPH_COMPUTE: Call = Call {
    name: "GRAPH_COMPUTE",
    request: size(REQUEST_HEADER, LLAMA_GRAPH),
    reply: Some(size(REPLY_HEADER + 1, Data::Nothing)),
    computes: true,
};

/// `GET_TENSOR` of the remote's output: | rpc_tensor | offset | size | out; the hidden
/// state of the output position (32-bit) back.
const GET_TENSOR: Call = Call {
    name: "GET_TENSOR l_out",
    request: size(REQUEST_HEADER + RPC_TENSOR + 8 + 8, Data::Nothing),
    reply: Some(size(
        REPLY_HEADER,
        Data::Hidden {
            element_bytes: F32,
            last_position_only: true,
        },
    )),
    computes: false,
};

const fn input(i: usize, waits: bool) -> Call {
    Call {
        name: INPUTS[i].0,
        request: set_tensor(INPUTS[i].1),
        reply: if waits { Some(EMPTY_REPLY) } else { None },
        computes: false,
    }
}

/// A `SET_TENSOR` request of ggml-rpc at commit 004d67ed: | rpc_tensor | cache_flag
/// (1 byte) | offset (8 bytes) | data | (`serialize_set_tensor`), sent without a reply.
const fn set_tensor_flagged(i: usize) -> Call {
    Call {
        name: INPUTS[i].0,
        request: size(REQUEST_HEADER + RPC_TENSOR + 1 + 8, INPUTS[i].1),
        reply: None,
        computes: false,
    }
}

/// `GRAPH_RECOMPUTE` (PR #15405): the remote recomputes the graph it stored at the last
/// `GRAPH_COMPUTE`; the request is `rpc_msg_graph_recompute_req` (the 4-byte device) and
/// there is no reply.
const GRAPH_RECOMPUTE: Call = Call {
    name: "GRAPH_RECOMPUTE",
    request: size(REQUEST_HEADER + 4, Data::Nothing),
    reply: None,
    computes: true,
};

/// Every preset, by name. The first is the default.
pub static PRESETS: &[StarPattern] = &[
    StarPattern {
        name: "activations",
        source: "inferlat's generic star: one frame of the step's hidden states (the model's activation_bytes) to each remote stage, and its output back",
        calls: &[Call {
            name: "activations",
            request: size(
                0,
                Data::Hidden {
                    element_bytes: None,
                    last_position_only: false,
                },
            ),
            reply: Some(size(
                0,
                Data::Hidden {
                    element_bytes: None,
                    last_position_only: false,
                },
            )),
            computes: true,
        }],
    },
    StarPattern {
        name: "llamacpp-rpc-2024",
        source: "llama.cpp's RPC backend as merged by PR #6829 (May 2024; ggml-rpc.cpp send_rpc_cmd, ggml_backend_rpc_buffer_set_tensor, ggml_backend_rpc_graph_compute, serialize_graph, ggml_backend_rpc_buffer_get_tensor; github.com/ggml-org/llama.cpp): every command waits for its reply; per token per remote four SET_TENSOR of the decode step's inputs (embeddings, positions, KQ mask, output ids: src/llama.cpp llm_build_llama), GRAPH_COMPUTE with the serialized graph (n_nodes·8 + n_tensors·296 bytes; the counts per layer an estimate from the graph's structure), GET_TENSOR of the output hidden state; 32-bit activations",
        calls: &[
            input(0, true),
            input(1, true),
            input(2, true),
            input(3, true),
            GRAPH_COMPUTE,
            GET_TENSOR,
        ],
    },
    StarPattern {
        name: "llamacpp-rpc-12943",
        source: "llama.cpp PR #12943 (April 2025, \"rpc : do not wait for response when sending RPC_CMD_SET_TENSOR\"): as llamacpp-rpc-2024, but the four SET_TENSOR go without a reply and the host sends the next command at once; GRAPH_COMPUTE and GET_TENSOR still wait",
        calls: &[
            input(0, false),
            input(1, false),
            input(2, false),
            input(3, false),
            GRAPH_COMPUTE,
            GET_TENSOR,
        ],
    },
    StarPattern {
        name: "llamacpp-rpc-recompute",
        source: "a what-if, llama.cpp RPC with graph reuse after PR #15405, one round trip per token (\"rpc : reuse compute graphs\", RPC_CMD_GRAPH_RECOMPUTE): ggml-rpc.cpp's commands as at commit 004d67ed of ggml/src/ggml-rpc/ggml-rpc.cpp (github.com/ggml-org/llama.cpp; after PR #22701, which compares the graph's uid): when a step's graph has the uid of the last one computed on the device, ggml_backend_rpc_graph_compute sends GRAPH_RECOMPUTE (the 4-byte device, no reply) instead of the serialized graph; SET_TENSOR (rpc_tensor, a 1-byte cache flag, the offset, the data) and GRAPH_(RE)COMPUTE go through send_async without a reply, and only GET_TENSOR waits: one round trip per remote and token. Every step is taken to reuse the stored graph (steady decode; a new graph, as at the prefill or when the KV length's padded size changes, resends it in full, which this preset does not model), and the four inputs are those of the 2024 graph (llm_build_llama), not re-derived for today's llama.cpp",
        calls: &[
            set_tensor_flagged(0),
            set_tensor_flagged(1),
            set_tensor_flagged(2),
            set_tensor_flagged(3),
            GRAPH_RECOMPUTE,
            GET_TENSOR,
        ],
    },
];

impl Default for StarPattern {
    fn default() -> Self {
        PRESETS[0].clone()
    }
}

impl StarPattern {
    /// The preset of a given name.
    pub fn by_name(name: &str) -> Option<StarPattern> {
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

    pub fn is_default(&self) -> bool {
        self.name == PRESETS[0].name
    }

    /// The calls of one step of `tokens` positions at KV length `kv` (the context once the
    /// step's positions are in) to a remote holding `layers` layers.
    pub fn calls(&self, model: &Model, tokens: u32, kv: u32, layers: u32) -> Vec<Resolved> {
        self.calls
            .iter()
            .map(|c| Resolved {
                name: c.name,
                request: c.request.bytes(model, tokens, kv, layers),
                reply: c.reply.map(|r| r.bytes(model, tokens, kv, layers)),
                computes: c.computes,
            })
            .collect()
    }

    /// The round trips per remote stage and step: the calls whose reply the host waits for.
    pub fn round_trips(&self) -> usize {
        self.calls.iter().filter(|c| c.reply.is_some()).count()
    }
}

/// The KV length of a step: its positions for a prefill, the context for a decode step.
pub fn kv_len(work: crate::compute::Pass) -> u32 {
    match work {
        crate::compute::Pass::Prefill { tokens } => tokens,
        crate::compute::Pass::Decode { context } => context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::model::Preset;

    #[test]
    fn every_preset_computes_once_and_the_default_is_one_frame_each_way() {
        for p in PRESETS {
            assert_eq!(
                p.calls.iter().filter(|c| c.computes).count(),
                1,
                "{}",
                p.name
            );
            assert!(!p.source.is_empty());
        }
        let d = StarPattern::default();
        assert!(d.is_default());
        assert_eq!(d.round_trips(), 1);
        assert_eq!(
            StarPattern::by_name("llamacpp-rpc-2024")
                .unwrap()
                .round_trips(),
            6
        );
        assert_eq!(
            StarPattern::by_name("llamacpp-rpc-12943")
                .unwrap()
                .round_trips(),
            2
        );
        assert_eq!(
            StarPattern::by_name("llamacpp-rpc-recompute")
                .unwrap()
                .round_trips(),
            1
        );
        assert!(StarPattern::by_name("llamacpp").is_none());
    }

    /// The message sizes of ggml-rpc's serialization formats, worked by hand for
    /// TinyLlama (hidden 2,048, 22 layers) at one decode position with 40 cells in use.
    #[test]
    fn the_2024_calls_carry_ggml_rpcs_serialized_sizes() {
        let m = Preset::find("tinyllama-1.1b").unwrap().model();
        let p = StarPattern::by_name("llamacpp-rpc-2024").unwrap();
        let c = p.calls(&m, 1, 40, 22);
        let set = 9 + 296 + 8;
        assert_eq!(c[0].request, set + 2048 * 4);
        assert_eq!(c[1].request, set + 4);
        // n_kv: 40 padded to 64; one position padded to 32; 4-byte floats.
        assert_eq!(c[2].request, set + 64 * 32 * 4);
        assert_eq!(c[3].request, set + 4);
        assert!(c[..4].iter().all(|c| c.reply == Some(8)));
        // 33·22 + 2 nodes, 44·22 + 6 tensors.
        assert_eq!(c[4].request, 9 + 4 + 728 * 8 + 4 + 974 * 296);
        assert_eq!(c[4].reply, Some(9));
        assert_eq!(
            (c[5].request, c[5].reply),
            (9 + 296 + 16, Some(8 + 2048 * 4))
        );
        // A prefill of 6 positions: the mask is 32 × 32, the output one position.
        let c = p.calls(&m, 6, 6, 22);
        assert_eq!(c[0].request, set + 6 * 2048 * 4);
        assert_eq!(c[2].request, set + 32 * 32 * 4);
        assert_eq!(c[5].reply, Some(8 + 2048 * 4));
    }

    /// With the graph stored on the remote, a token carries the four inputs, a 13-byte
    /// GRAPH_RECOMPUTE instead of the 294 kB graph, and GET_TENSOR: for TinyLlama's 22
    /// layers at one decode position with 40 cells in use, the host sends 1 + 1 + 1 + 1
    /// bytes of cache flags more and 294,132 bytes less than in 2024, and waits once.
    #[test]
    fn recompute_replaces_the_graph_with_a_four_byte_request() {
        let m = Preset::find("tinyllama-1.1b").unwrap().model();
        let p = StarPattern::by_name("llamacpp-rpc-recompute").unwrap();
        let c = p.calls(&m, 1, 40, 22);
        let set = 9 + 296 + 1 + 8;
        assert_eq!(c[0].request, set + 2048 * 4);
        assert_eq!(c[1].request, set + 4);
        assert_eq!(c[2].request, set + 64 * 32 * 4);
        assert_eq!(c[3].request, set + 4);
        assert!(c[..5].iter().all(|c| c.reply.is_none()));
        assert_eq!(
            (c[4].name, c[4].request, c[4].computes),
            ("GRAPH_RECOMPUTE", 13, true)
        );
        assert_eq!(
            (c[5].request, c[5].reply),
            (9 + 296 + 16, Some(8 + 2048 * 4))
        );
        let sent =
            |p: &StarPattern| -> u64 { p.calls(&m, 1, 40, 22).iter().map(|c| c.request).sum() };
        let old = StarPattern::by_name("llamacpp-rpc-2024").unwrap();
        let graph = 9 + 4 + 728 * 8 + 4 + 974 * 296;
        assert_eq!(sent(&old) + 4 - (graph - 13), sent(&p));
        // The layers no longer change what a token sends.
        assert_eq!(
            sent(&p),
            p.calls(&m, 1, 40, 2).iter().map(|c| c.request).sum::<u64>()
        );
    }
}
