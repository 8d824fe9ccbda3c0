//! The roofline compute model of DESIGN §6: how long a device takes for a prefill or a
//! decode step of the layers it holds. Pure arithmetic; the harness does the waiting.

use super::device::DeviceProfile;
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

/// FLOPs and bytes of one step, before the device turns them into time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    pub flops: f64,
    pub bytes: f64,
}

impl Stage {
    /// Work of a prefill of `n` tokens (DESIGN §6):
    /// flops = 2·l·P·n + 2·l·n²·hidden; bytes = l·P·w + 2·l·n·kv·a.
    pub fn prefill_work(&self, n: u32) -> Work {
        let m = &self.model;
        let l = self.layers as f64;
        let n = n as f64;
        let p = m.layer_params();
        let mut w = Work {
            flops: 2.0 * l * p * n + 2.0 * l * n * n * m.hidden as f64,
            bytes: l * p * m.weight_bytes + 2.0 * l * n * m.kv_dim as f64 * m.activation_bytes,
        };
        if self.head {
            // Only the last prompt position goes through the LM head.
            w.flops += 2.0 * m.head_params();
            w.bytes += m.head_params() * m.weight_bytes;
        }
        w
    }

    /// Work of one decode step for a batch whose requests have the given contexts (DESIGN §6):
    /// bytes = l·P·w + Σ 2·l·c·kv·a; flops = 2·l·P·b + Σ 4·l·c·hidden.
    pub fn decode_work(&self, contexts: &[u32]) -> Work {
        let m = &self.model;
        let l = self.layers as f64;
        let b = contexts.len() as f64;
        let p = m.layer_params();
        let sum_c: f64 = contexts.iter().map(|&c| c as f64).sum();
        let mut w = Work {
            flops: 2.0 * l * p * b + 4.0 * l * sum_c * m.hidden as f64,
            bytes: l * p * m.weight_bytes + 2.0 * l * sum_c * m.kv_dim as f64 * m.activation_bytes,
        };
        if self.head {
            w.flops += 2.0 * m.head_params() * b;
            w.bytes += m.head_params() * m.weight_bytes;
        }
        w
    }

    /// time = max(flops / (F·eff.compute), bytes / (B·eff.memory)) + l·overhead_per_layer.
    pub fn time(&self, work: Work) -> Duration {
        let d = &self.device;
        if d.is_ideal() {
            return Duration::ZERO;
        }
        let compute = work.flops / (d.flops.get() * d.efficiency.compute);
        let memory = work.bytes / (d.mem_bandwidth.get() * d.efficiency.memory);
        let overhead = d.overhead_per_layer.get().as_secs_f64() * self.layers as f64;
        let secs = compute.max(memory) + overhead;
        if secs.is_finite() && secs >= 0.0 {
            Duration::from_secs_f64(secs)
        } else {
            Duration::ZERO
        }
    }

    /// Time of a prefill of `n` tokens, with the device's per-request overhead (none but
    /// in calibrated profiles).
    pub fn prefill(&self, n: u32) -> Duration {
        let t = self.time(self.prefill_work(n));
        if self.device.is_ideal() {
            return t;
        }
        t + self.device.overhead_per_request.get()
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
mod tests {
    use super::*;
    use crate::compute::device::Efficiency;
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
            efficiency: Efficiency {
                compute: ce,
                memory: me,
            },
            overhead_per_layer: Dur(Duration::from_micros(ovh_us)),
            overhead_per_request: Dur::default(),
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
