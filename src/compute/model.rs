//! Model shapes: the presets of `shared/REFERENCE.md` and explicit shapes.
//!
//! Sources: the models' published configs (Hugging Face `config.json` of
//! TinyLlama/TinyLlama-1.1B, meta-llama/Llama-2-{7,13,70}b-hf, meta-llama/Meta-Llama-3-{8,70}B,
//! bigscience/bloom, tiiuae/falcon-180B), as tabulated in REFERENCE.md "Model shapes".

use serde::Serialize;

/// The shape of a transformer, as the compute model and the wire need it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Model {
    /// The preset name, or "custom".
    pub name: String,
    pub layers: u32,
    pub hidden: u32,
    /// Total parameters, embeddings included.
    pub params: f64,
    /// Width of K (and of V) per layer: hidden × kv_heads / heads.
    pub kv_dim: u32,
    /// Width of the queries per layer (heads × head width): `hidden` for every preset; a
    /// tensor member's slice holds 1/N of the heads, and a member that leaves attention to
    /// its root none.
    pub q_dim: u32,
    /// Width of the feed-forward block's inner layer (REFERENCE.md's `ffn`); for an
    /// explicit shape, estimated from the layer's parameters ([`Model::estimated_ffn`]).
    pub ffn: u32,
    pub vocab: u32,
    /// Bytes per weight (bf16 = 2, int8 = 1, q4 = 0.5).
    pub weight_bytes: f64,
    /// Bytes per activation and KV-cache element (fp16 = 2).
    pub activation_bytes: f64,
    /// Whether the input embedding and the LM head share one matrix.
    pub tied_embeddings: bool,
}

impl Model {
    /// Parameters of the embedding table and the LM head.
    pub fn embedding_params(&self) -> f64 {
        let table = self.vocab as f64 * self.hidden as f64;
        if self.tied_embeddings {
            table
        } else {
            2.0 * table
        }
    }

    /// Parameters of one transformer layer: (params − embeddings) / layers.
    pub fn layer_params(&self) -> f64 {
        ((self.params - self.embedding_params()) / self.layers as f64).max(0.0)
    }

    /// Parameters of the LM head (the vocab × hidden projection).
    pub fn head_params(&self) -> f64 {
        self.vocab as f64 * self.hidden as f64
    }

    /// Bytes of all weights.
    pub fn total_weight_bytes(&self) -> f64 {
        self.params * self.weight_bytes
    }

    /// One member's share of a tensor-parallel group of `ways`: a 1/ways slice of every
    /// layer's weights (and of its query and KV heads) and of the LM head; the hidden state
    /// stays whole.
    pub fn sliced(&self, ways: u32) -> Model {
        let w = ways.max(1);
        Model {
            params: self.params / w as f64,
            kv_dim: self.kv_dim.div_ceil(w),
            q_dim: self.q_dim.div_ceil(w),
            vocab: self.vocab.div_ceil(w),
            ..self.clone()
        }
    }

    /// The same weights without attention over the context (no query heads, no KV cache):
    /// a tensor member whose root runs all of attention.
    pub fn without_attention(&self) -> Model {
        Model {
            kv_dim: 0,
            q_dim: 0,
            ..self.clone()
        }
    }

    /// The feed-forward width a gated MLP (3·hidden·ffn weights) would have beside the
    /// attention's projections (2·hidden·q_dim + 2·hidden·kv_dim) in one layer's
    /// parameters; at least 1.
    pub fn estimated_ffn(&self) -> u32 {
        let h = self.hidden.max(1) as f64;
        let attention = 2.0 * h * (self.q_dim as f64 + self.kv_dim as f64);
        let ffn = ((self.layer_params() - attention) / (3.0 * h)).round();
        if ffn.is_finite() && ffn >= 1.0 {
            ffn.min(u32::MAX as f64) as u32
        } else {
            1
        }
    }

    /// Bytes of the hidden state of one token crossing a pipeline hop.
    pub fn hidden_state_bytes(&self) -> f64 {
        self.hidden as f64 * self.activation_bytes
    }
}

/// A named shape from REFERENCE.md.
pub struct Preset {
    pub name: &'static str,
    pub layers: u32,
    pub hidden: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub ffn: u32,
    pub vocab: u32,
    pub params: f64,
    pub tied_embeddings: bool,
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "tinyllama-1.1b",
        layers: 22,
        hidden: 2048,
        heads: 32,
        kv_heads: 4,
        ffn: 5632,
        vocab: 32000,
        params: 1.1e9,
        tied_embeddings: false,
    },
    Preset {
        name: "llama-2-7b",
        layers: 32,
        hidden: 4096,
        heads: 32,
        kv_heads: 32,
        ffn: 11008,
        vocab: 32000,
        params: 6.7e9,
        tied_embeddings: false,
    },
    Preset {
        name: "llama-2-13b",
        layers: 40,
        hidden: 5120,
        heads: 40,
        kv_heads: 40,
        ffn: 13824,
        vocab: 32000,
        params: 13.0e9,
        tied_embeddings: false,
    },
    Preset {
        name: "llama-2-70b",
        layers: 80,
        hidden: 8192,
        heads: 64,
        kv_heads: 8,
        ffn: 28672,
        vocab: 32000,
        params: 69e9,
        tied_embeddings: false,
    },
    Preset {
        name: "llama-3-8b",
        layers: 32,
        hidden: 4096,
        heads: 32,
        kv_heads: 8,
        ffn: 14336,
        vocab: 128256,
        params: 8.0e9,
        tied_embeddings: false,
    },
    Preset {
        name: "llama-3-70b",
        layers: 80,
        hidden: 8192,
        heads: 64,
        kv_heads: 8,
        ffn: 28672,
        vocab: 128256,
        params: 70.6e9,
        tied_embeddings: false,
    },
    Preset {
        name: "bloom-176b",
        layers: 70,
        hidden: 14336,
        heads: 112,
        kv_heads: 112,
        ffn: 57344,
        vocab: 250880,
        params: 176e9,
        tied_embeddings: true,
    },
    Preset {
        name: "falcon-180b",
        layers: 80,
        hidden: 14848,
        heads: 232,
        kv_heads: 8,
        ffn: 59392,
        vocab: 65024,
        params: 180e9,
        tied_embeddings: false,
    },
];

impl Preset {
    pub fn find(name: &str) -> Option<&'static Preset> {
        PRESETS.iter().find(|p| p.name == name)
    }

    pub fn names() -> Vec<&'static str> {
        PRESETS.iter().map(|p| p.name).collect()
    }

    /// The preset in bf16 weights and fp16 activations.
    pub fn model(&self) -> Model {
        Model {
            name: self.name.to_string(),
            layers: self.layers,
            hidden: self.hidden,
            params: self.params,
            kv_dim: self.hidden * self.kv_heads / self.heads,
            q_dim: self.hidden,
            ffn: self.ffn,
            vocab: self.vocab,
            weight_bytes: 2.0,
            activation_bytes: 2.0,
            tied_embeddings: self.tied_embeddings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_state_bytes_match_reference() {
        // REFERENCE.md: BLOOM-176B in fp16: 28,672 B; Llama 2 70B: 16,384 B.
        assert_eq!(
            Preset::find("bloom-176b")
                .unwrap()
                .model()
                .hidden_state_bytes(),
            28_672.0
        );
        assert_eq!(
            Preset::find("llama-2-70b")
                .unwrap()
                .model()
                .hidden_state_bytes(),
            16_384.0
        );
    }

    #[test]
    fn kv_width_follows_grouped_query_attention() {
        assert_eq!(Preset::find("llama-2-70b").unwrap().model().kv_dim, 1024);
        assert_eq!(Preset::find("llama-2-7b").unwrap().model().kv_dim, 4096);
        assert_eq!(Preset::find("tinyllama-1.1b").unwrap().model().kv_dim, 256);
    }

    #[test]
    fn layer_params_are_close_to_the_architecture() {
        // Llama 2 7B layer: 4·h² (attention) + 3·h·ffn (gated MLP) = 202.4 M.
        let m = Preset::find("llama-2-7b").unwrap().model();
        let arch = 4.0 * 4096f64 * 4096.0 + 3.0 * 4096.0 * 11008.0;
        assert!(
            (m.layer_params() - arch).abs() / arch < 0.02,
            "{} vs {arch}",
            m.layer_params()
        );
    }
}
