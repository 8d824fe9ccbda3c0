//! The roofline compute model of DESIGN §6: how long a device takes for a prefill or a
//! decode step of the layers it holds. Pure arithmetic; the harness does the waiting.

use super::device::{DeviceProfile, Pair, PassKind};
use super::model::Model;
use std::time::Duration;

/// What one node computes: a device, a model and the layers it holds.
#[derive(Clone, Debug)]
pub struct Stage {
    pub device: DeviceProfile,
    pub model: Model,
    /// Number of transformer layers held.
    pub layers: u32,
    /// Whether this stage also runs the LM head (the vocab projection that yields a token).
    pub head: bool,
}

/// What one step of a session computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pass {
    /// The prompt's `tokens` positions at once.
    Prefill { tokens: u32 },
    /// One new position at this context length.
    Decode { context: u32 },
}

impl Pass {
    /// Step `k` of a request with a `prompt`-token prompt: the tokens it adds and its pass
    /// (step 0 the prefill, each later one a decode at the context so far).
    pub fn of_step(k: u32, prompt: u32) -> (u32, Pass) {
        if k == 0 {
            (prompt, Pass::Prefill { tokens: prompt })
        } else {
            (
                1,
                Pass::Decode {
                    context: prompt.saturating_add(k),
                },
            )
        }
    }

    /// The pass of a step that brings `tokens` new positions to a session that has seen
    /// `context` so far (the first step is the prefill); advances `context`.
    pub fn received(first: bool, tokens: u32, context: &mut u32) -> Pass {
        *context = context.saturating_add(tokens);
        if first {
            Pass::Prefill { tokens }
        } else {
            Pass::Decode { context: *context }
        }
    }
}

/// FLOPs and bytes of some work.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub flops: f64,
    pub bytes: f64,
}

/// FLOPs and bytes of one step, before the device turns them into time: all of it
/// (`flops`, `bytes`), and the part that is attention over the context, which runs as its
/// own kernels at its own efficiency (compute-model.md, "Attention").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Work {
    pub flops: f64,
    pub bytes: f64,
    /// QK^T and AV (FLOPs) and the KV cache's reads or writes (bytes).
    pub attention: Cost,
    pub kind: PassKind,
}

impl Work {
    /// The dense part: everything but attention (the weights' matrix products, the LM head).
    pub fn dense(&self) -> Cost {
        Cost {
            flops: self.flops - self.attention.flops,
            bytes: self.bytes - self.attention.bytes,
        }
    }
}

impl Stage {
    /// Work of a prefill of `n` tokens (DESIGN §6):
    /// flops = 2·l·P·n + 2·l·n²·q_dim; bytes = l·P·w + 2·l·n·kv·a, where the second terms
    /// are attention's: causal QK^T and AV over the prompt (Σ_{i≤n} 4·q_dim·i ≈ 2·n²·q_dim
    /// per layer; PaLM, Chowdhery et al. 2022, appendix B counts 4·L·d_attn·T per token at
    /// context T) and the KV cache it writes.
    pub fn prefill_work(&self, n: u32) -> Work {
        let m = &self.model;
        let l = self.layers as f64;
        let n = n as f64;
        let p = m.layer_params();
        let attention = Cost {
            flops: 2.0 * l * n * n * m.q_dim as f64,
            bytes: 2.0 * l * n * m.kv_dim as f64 * m.activation_bytes,
        };
        let mut w = Work {
            flops: 2.0 * l * p * n + attention.flops,
            bytes: l * p * m.weight_bytes + attention.bytes,
            attention,
            kind: PassKind::Prefill,
        };
        if self.head {
            // Only the last prompt position goes through the LM head.
            w.flops += 2.0 * m.head_params();
            w.bytes += m.head_params() * m.weight_bytes;
        }
        w
    }

    /// Work of one decode step for a batch whose requests have the given contexts (DESIGN §6):
    /// bytes = l·P·w + Σ 2·l·c·kv·a; flops = 2·l·P·b + Σ 4·l·c·q_dim, where the second terms
    /// are attention's: the KV cache read and QK^T plus AV at context c (2·c·q_dim FLOPs
    /// each per layer; PaLM, Chowdhery et al. 2022, appendix B: 4·L·d_attn·T per token).
    pub fn decode_work(&self, contexts: &[u32]) -> Work {
        let m = &self.model;
        let l = self.layers as f64;
        let b = contexts.len() as f64;
        let p = m.layer_params();
        let sum_c: f64 = contexts.iter().map(|&c| c as f64).sum();
        let attention = Cost {
            flops: 4.0 * l * sum_c * m.q_dim as f64,
            bytes: 2.0 * l * sum_c * m.kv_dim as f64 * m.activation_bytes,
        };
        let mut w = Work {
            flops: 2.0 * l * p * b + attention.flops,
            bytes: l * p * m.weight_bytes + attention.bytes,
            attention,
            kind: PassKind::Decode,
        };
        if self.head {
            w.flops += 2.0 * m.head_params() * b;
            w.bytes += m.head_params() * m.weight_bytes;
        }
        w
    }

    /// Bytes of weights the stage holds: its layers, and the LM head if it runs it.
    pub fn weight_bytes(&self) -> f64 {
        let m = &self.model;
        let head = if self.head { m.head_params() } else { 0.0 };
        (m.layer_params() * self.layers as f64 + head) * m.weight_bytes
    }

    /// Bytes of KV cache one token of context takes on this stage: K and V of every layer
    /// it holds, 2·l·kv·a.
    pub fn kv_bytes_per_token(&self) -> f64 {
        let m = &self.model;
        2.0 * self.layers as f64 * m.kv_dim as f64 * m.activation_bytes
    }

    /// How many requests of `tokens` positions each can keep their KV caches in the
    /// device's memory beside `weights` bytes of weights (the stage's own and whatever
    /// else the device holds): at least 1, and `u32::MAX` where memory is unlimited or the
    /// stage keeps no cache. Nothing is paged or preempted (vLLM would preempt instead),
    /// so this caps the batch.
    pub fn kv_batch_limit(&self, tokens: u32, weights: f64) -> u32 {
        let per_request = self.kv_bytes_per_token() * tokens as f64;
        let free = self.device.memory.get() - weights;
        if !free.is_finite() || per_request <= 0.0 {
            return u32::MAX;
        }
        let n = (free / per_request).floor();
        if n >= u32::MAX as f64 {
            u32::MAX
        } else {
            (n as u32).max(1)
        }
    }

    /// time = max(dense flops / (F·e.compute), dense bytes / (B·e.memory))
    ///      + max(attention flops / (F·a.compute), attention bytes / (B·a.memory))
    ///      + l·overhead_per_layer,
    /// where `e` is the pass's dense pair (`efficiency.prefill` or `.decode`, else the
    /// device's) and `a` attention's (`efficiency.attention`, else `e`): the dense kernels
    /// and attention's run one after the other, each bound by its own roofline.
    pub fn time(&self, work: Work) -> Duration {
        let d = &self.device;
        if d.is_ideal() {
            return Duration::ZERO;
        }
        let roof = |c: Cost, e: Pair| {
            let compute = c.flops / (d.flops.get() * e.compute);
            let memory = c.bytes / (d.mem_bandwidth.get() * e.memory);
            compute.max(memory)
        };
        let dense = roof(work.dense(), d.efficiency.dense(work.kind));
        let attention = roof(work.attention, d.efficiency.attention(work.kind));
        let overhead = d.overhead_per_layer.get().as_secs_f64() * self.layers as f64;
        let secs = dense + attention + overhead;
        // Past MAX_STEP (absurd but valid figures) a step waits MAX_STEP: never a panic, and
        // `run`'s estimate refuses such a run before it starts.
        let max = crate::scenario::limits::MAX_STEP;
        if secs.is_nan() || secs < 0.0 {
            Duration::ZERO
        } else if secs >= max.as_secs_f64() {
            max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// Time of a prefill of `n` tokens, the device's fixed cost per request included.
    pub fn prefill(&self, n: u32) -> Duration {
        let fixed = match self.device.is_ideal() {
            true => Duration::ZERO,
            false => self.device.overhead_per_request.get(),
        };
        self.time(self.prefill_work(n)) + fixed
    }

    /// Time of one decode step at batch 1 with context `c`.
    pub fn decode(&self, context: u32) -> Duration {
        self.time(self.decode_work(&[context]))
    }

    /// Time of one pass at batch 1.
    pub fn pass(&self, pass: Pass) -> Duration {
        match pass {
            Pass::Prefill { tokens } => self.prefill(tokens),
            Pass::Decode { context } => self.decode(context),
        }
    }

    /// Time of one decode step for a batch.
    pub fn decode_batch(&self, contexts: &[u32]) -> Duration {
        self.time(self.decode_work(contexts))
    }

    /// Compute time of a whole request at batch 1, without queueing: the prefill (which
    /// yields the first token) and one decode step for each further token.
    pub fn request(&self, prompt: u32, output: u32) -> RequestCompute {
        let prefill = self.prefill(prompt);
        let decode: Vec<Duration> = (1..output)
            .map(|k| self.decode(prompt.saturating_add(k)))
            .collect();
        RequestCompute { prefill, decode }
    }
}

/// The compute timeline of one request at batch 1.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestCompute {
    pub prefill: Duration,
    /// Step k yields token k + 1 (the prefill yields token 0).
    pub decode: Vec<Duration>,
}

impl RequestCompute {
    pub fn total(&self) -> Duration {
        self.prefill + self.decode.iter().sum::<Duration>()
    }
}

#[cfg(test)]
mod kv_tests {
    use super::*;

    #[test]
    fn the_kv_cache_bounds_the_batch_by_the_memory_the_weights_leave() {
        // Llama 2 7B in bf16 on an 80 GB A100: 13.5 GB of weights leave about 66.5 GB;
        // a 4,096-token request keeps 2 x 32 layers x 4096 x 2 B = 512 KiB per token,
        // 2.1 GB in all: 31 such requests fit.
        let (a100, _) = crate::scenario::ProfileLibrary::built_in()
            .load("a100-80g")
            .unwrap();
        let stage = Stage {
            device: a100,
            model: crate::compute::model::Preset::find("llama-2-7b")
                .unwrap()
                .model(),
            layers: 32,
            head: true,
        };
        assert_eq!(stage.kv_bytes_per_token(), 524_288.0);
        let weights = stage.weight_bytes();
        assert!((13.0e9..14.0e9).contains(&weights), "{weights}");
        let n = stage.kv_batch_limit(4096, weights);
        let expect = ((80e9 - weights) / (524_288.0 * 4096.0)).floor() as u32;
        assert_eq!(n, expect);
        assert!((30..=32).contains(&n), "{n}");
        // Short requests fit many more; an ideal device has no bound.
        assert!(stage.kv_batch_limit(256, weights) > 400);
        let ideal = Stage {
            device: DeviceProfile::ideal(),
            ..stage
        };
        assert_eq!(ideal.kv_batch_limit(4096, 0.0), u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::device::{Efficiency, Pair};
    use crate::compute::model::Preset;
    use crate::scenario::ProfileLibrary;
    use crate::units::{ByteRate, Bytes, Dur, FlopRate};

    fn device(flops: f64, bw: f64, ce: f64, me: f64, ovh_us: u64) -> DeviceProfile {
        DeviceProfile {
            name: "test".into(),
            description: None,
            memory: Bytes::new(1e12),
            flops: FlopRate::new(flops),
            mem_bandwidth: ByteRate::new(bw),
            efficiency: Efficiency::new(ce, me),
            overhead_per_layer: Dur(Duration::from_micros(ovh_us)),
            overhead_per_request: Dur(Duration::ZERO),
            sources: Default::default(),
        }
    }

    /// A toy model whose numbers are easy to follow by hand.
    fn toy() -> Model {
        Model {
            name: "toy".into(),
            layers: 10,
            hidden: 1000,
            // embeddings: 2 × 100 × 1000 = 200,000; layers: 10 × 1,000,000.
            params: 10_200_000.0,
            kv_dim: 500,
            q_dim: 1000,
            ffn: 2000,
            vocab: 100,
            weight_bytes: 2.0,
            activation_bytes: 2.0,
            tied_embeddings: false,
        }
    }

    #[test]
    fn decode_step_by_hand() {
        let s = Stage {
            device: device(1e12, 1e9, 1.0, 1.0, 0),
            model: toy(),
            layers: 10,
            head: false,
        };
        // bytes = 10·1e6·2 + 2·10·100·500·2 = 20,000,000 + 2,000,000 = 22e6 → 22 ms at 1 GB/s.
        // flops = 2·10·1e6·1 + 4·10·100·1000 = 2e7 + 4e6 = 2.4e7 → 24 µs at 1 TFLOP/s.
        let w = s.decode_work(&[100]);
        assert_eq!(w.bytes, 22e6);
        assert_eq!(w.flops, 2.4e7);
        assert_eq!(s.decode(100), Duration::from_millis(22));
    }

    #[test]
    fn prefill_by_hand_is_compute_bound() {
        let s = Stage {
            device: device(1e12, 1e12, 0.5, 1.0, 100),
            model: toy(),
            layers: 10,
            head: false,
        };
        // flops = 2·10·1e6·1000 + 2·10·1000²·1000 = 2e10 + 2e10 = 4e10 → 80 ms at 0.5 TFLOP/s;
        // bytes = 2e7 + 2·10·1000·500·2 = 4e7 → 40 µs; plus 10 × 100 µs overhead.
        assert_eq!(s.prefill_work(1000).flops, 4e10);
        assert_eq!(s.prefill(1000), Duration::from_millis(81));
    }

    #[test]
    fn batch_shares_the_weight_read() {
        let s = Stage {
            device: device(1e15, 1e9, 1.0, 1.0, 0),
            model: toy(),
            layers: 10,
            head: false,
        };
        let one = s.decode_batch(&[100]);
        let four = s.decode_batch(&[100, 100, 100, 100]);
        // Weights (20 MB) are read once; only the KV reads (2 MB each) add up.
        assert_eq!(one, Duration::from_millis(22));
        assert_eq!(four, Duration::from_millis(28));
    }

    #[test]
    fn head_adds_the_vocab_projection() {
        let mut s = Stage {
            device: device(1e12, 1e9, 1.0, 1.0, 0),
            model: toy(),
            layers: 10,
            head: true,
        };
        let with = s.decode_work(&[100]);
        s.head = false;
        let without = s.decode_work(&[100]);
        assert_eq!(with.bytes - without.bytes, 100.0 * 1000.0 * 2.0);
        assert_eq!(with.flops - without.flops, 2.0 * 100.0 * 1000.0);
    }

    #[test]
    fn a_fixed_cost_per_request_adds_to_the_prefill_only() {
        let mut d = device(1e15, 1e12, 1.0, 1.0, 0);
        let plain = Stage {
            device: d.clone(),
            model: toy(),
            layers: 4,
            head: false,
        };
        d.overhead_per_request = Dur(Duration::from_millis(12));
        let fixed = Stage {
            device: d,
            ..plain.clone()
        };
        assert_eq!(
            fixed.prefill(128) - plain.prefill(128),
            Duration::from_millis(12)
        );
        assert_eq!(fixed.decode(200), plain.decode(200));
    }

    /// Equal to within the nanoseconds a conversion from seconds can round away.
    fn near(got: Duration, want: Duration) {
        let d = got.abs_diff(want);
        assert!(d <= Duration::from_nanos(2), "{got:?} is not {want:?}");
    }

    /// The toy stage on a device of 1 TFLOP/s and 1 TB/s at full efficiency, with the
    /// given efficiency table.
    fn toy_stage(efficiency: Efficiency) -> Stage {
        let mut d = device(1e12, 1e12, 1.0, 1.0, 0);
        d.efficiency = efficiency;
        Stage {
            device: d,
            model: toy(),
            layers: 10,
            head: false,
        }
    }

    /// The formula, not the model against itself: with attention bound by compute at its
    /// own efficiency, each further token of context costs 4·l·q FLOPs (QK^T and AV, 2·q
    /// each per layer; PaLM appendix B's 4·L·d_attn per token of context) at F·a_c.
    #[test]
    fn attention_flops_make_a_long_context_decode_slower_by_the_formula() {
        let mut e = Efficiency::new(1.0, 1.0);
        e.attention = Some(Pair {
            compute: 0.001,
            memory: 1.0,
        });
        let s = toy_stage(e);
        // Attention at context c: 4·10·c·1000 FLOPs at 1 GFLOP/s = 40 µs per token of
        // context; its KV bytes (2·10·c·500·2 = 20,000·c) at 1 TB/s are 20 ns per token:
        // bound by compute. The dense part (2e7 FLOPs at 1 TFLOP/s = 20 µs, 2e7 bytes at
        // 1 TB/s = 20 µs) does not change with the context.
        let short = s.decode(128);
        let long = s.decode(2048);
        near(long - short, Duration::from_micros(40 * (2048 - 128)));
        near(short, Duration::from_micros(20 + 40 * 128));
        let w = s.decode_work(&[2048]);
        assert_eq!(w.attention.flops, 4.0 * 10.0 * 2048.0 * 1000.0);
        assert_eq!(w.attention.bytes, 2.0 * 10.0 * 2048.0 * 500.0 * 2.0);
        // Without its own efficiency attention runs at the device's pair: 4e4 FLOPs per
        // token of context at 1 TFLOP/s, 40 ns (its 2e4 KV bytes take 20 ns at 1 TB/s).
        let plain = toy_stage(Efficiency::new(1.0, 1.0));
        near(
            plain.decode(2048) - plain.decode(128),
            Duration::from_nanos(40 * (2048 - 128)),
        );
    }

    #[test]
    fn attention_efficiency_changes_attention_and_nothing_else() {
        let mut e = Efficiency::new(0.5, 0.5);
        let plain = toy_stage(e);
        e.attention = Some(Pair {
            compute: 0.5,
            memory: 0.05,
        });
        let slow = toy_stage(e);
        // No context, no attention: the same step.
        assert_eq!(slow.decode(0), plain.decode(0));
        // Attention at context 100: 4e6 FLOPs take 8 µs at 0.5 TFLOP/s, its 2,000,000 KV
        // bytes 4 µs at 0.5 TB/s (bound by compute), 40 µs at 0.05 TB/s (bound by memory).
        near(
            slow.decode(100) - plain.decode(100),
            Duration::from_micros(32),
        );
    }

    /// A prefill's pair changes prefills only, a decode's pair decode steps only, each by
    /// its own roofline.
    #[test]
    fn prefill_and_decode_efficiencies_apply_to_their_kind_only() {
        let base = Efficiency::new(1.0, 1.0);
        let plain = toy_stage(base);
        let mut e = base;
        e.prefill = Some(Pair {
            compute: 0.5,
            memory: 1.0,
        });
        let pre = toy_stage(e);
        assert_eq!(pre.decode(100), plain.decode(100));
        // A 1,000-token prefill: dense 2e10 FLOPs (bound by compute) take 20 ms at full
        // efficiency, 40 ms at half; attention (2e10 FLOPs) keeps following the prefill's
        // dense pair, as `efficiency.attention` is unset: 20 ms → 40 ms too.
        near(plain.prefill(1000), Duration::from_millis(40));
        near(pre.prefill(1000), Duration::from_millis(80));
        let mut e = base;
        e.decode = Some(Pair {
            compute: 1.0,
            memory: 0.25,
        });
        let dec = toy_stage(e);
        assert_eq!(dec.prefill(1000), plain.prefill(1000));
        // Decode at context 100: dense 2e7 bytes and 2e7 FLOPs, 20 µs either way; attention
        // 4e6 FLOPs (4 µs) and 2e6 bytes (2 µs): 24 µs. At 0.25 TB/s the bytes take 80 µs
        // and 8 µs: 88 µs.
        near(plain.decode(100), Duration::from_micros(24));
        near(dec.decode(100), Duration::from_micros(88));
    }

    /// The model fix of splitting attention from the dense work: in a large decode batch
    /// the weights' products are bound by compute while the KV reads are bound by memory,
    /// and the two run one after the other, so the step pays both; one roofline over the
    /// totals hid the KV reads under the products.
    #[test]
    fn a_batch_bound_by_compute_still_pays_for_its_kv_reads() {
        let s = Stage {
            device: device(1e12, 1e11, 1.0, 1.0, 0),
            model: toy(),
            layers: 10,
            head: false,
        };
        let contexts = vec![100u32; 1000];
        let w = s.decode_work(&contexts);
        // Dense: 2·1e7 FLOPs × 1000 = 2e10 at 1 TFLOP/s = 20 ms; its 2e7 weight bytes at
        // 0.1 TB/s = 0.2 ms. Attention: 1000 × 2e6 KV bytes = 2e9 at 0.1 TB/s = 20 ms;
        // 1000 × 4e6 FLOPs = 4e9 at 1 TFLOP/s = 4 ms.
        assert_eq!(w.dense().flops, 2e10);
        assert_eq!(w.attention.bytes, 2e9);
        near(s.decode_batch(&contexts), Duration::from_millis(40));
        // One roofline over the totals would have said max(24 ms, 20.2 ms) = 24 ms.
        let total = (w.flops / 1e12).max(w.bytes / 1e11);
        assert!((total - 0.024).abs() < 1e-12, "{total}");
    }

    #[test]
    fn every_efficiency_is_checked_at_its_own_field() {
        let mut d = device(1e12, 1e12, 0.5, 0.5, 0);
        assert!(d.check().is_empty());
        d.efficiency.attention = Some(Pair {
            compute: 0.0,
            memory: 0.5,
        });
        d.efficiency.decode = Some(Pair {
            compute: 0.5,
            memory: 1.5,
        });
        let fields: Vec<&str> = d.check().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec!["efficiency.decode.memory", "efficiency.attention.compute"]
        );
    }

    #[test]
    fn ideal_device_takes_no_time() {
        let s = Stage {
            device: DeviceProfile::ideal(),
            model: toy(),
            layers: 10,
            head: true,
        };
        assert_eq!(s.prefill(4096), Duration::ZERO);
        assert_eq!(s.decode(4096), Duration::ZERO);
    }

    #[test]
    fn a100_llama_2_7b_matches_published_decode_latency() {
        // lmdeploy, A100 80G, Llama 2 7B fp16, batch 1: 9-11 ms per output token.
        let (a100, _) = ProfileLibrary::built_in().load("a100-80g").unwrap();
        let s = Stage {
            device: a100,
            model: Preset::find("llama-2-7b").unwrap().model(),
            layers: 32,
            head: true,
        };
        let t = s.decode(256).as_secs_f64() * 1e3;
        assert!((9.0..=11.0).contains(&t), "decode {t:.2} ms");
        // Decode can't beat weight bytes / peak bandwidth (REFERENCE.md roofline check: 6.6 ms).
        assert!(t > 6.6);
    }
}
