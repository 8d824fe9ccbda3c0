//! `tensor`: tensor parallelism (distributed-llama, exo's tensor mode). Every node computes
//! a 1/N slice of every layer; per half-layer the root gathers the partial sums and
//! broadcasts the reduction (2·L + 2 synchronisations per token with the LM head's logits).

use super::{Ctx, Holding, Kind, LayoutError, Leg, Part, PathCheck, Route, Step};
use super::{Hops, Role};
use crate::net::wire;

pub struct Tensor;

impl Kind for Tensor {
    fn name(&self) -> &'static str {
        "tensor"
    }

    fn expected_path(&self) -> &'static str {
        "[client, worker, worker, ...]: the root, then at least one more worker"
    }

    /// A root and its group, every one holding a slice of every layer.
    fn check(&self, pc: &mut PathCheck) -> Option<()> {
        pc.two_workers_or_more()?;
        pc.whole("in a tensor topology each worker");
        pc.need(0, 1);
        pc.need_from(1, 2..pc.len());
        Some(())
    }

    /// Each worker of the group holds 1/N of every layer.
    fn holding(&self, position: Option<usize>, len: usize) -> Holding {
        match position {
            Some(p) if p >= 1 && len > 2 => Holding {
                ways: len - 1,
                ..Holding::default()
            },
            _ => Holding::default(),
        }
    }

    fn layout(
        &self,
        path: &[usize],
        _roles: &[Role],
        _hops: Hops,
    ) -> Result<(Route, Vec<(usize, Part)>), LayoutError> {
        let rest = &path[1..];
        let mut parts = vec![(rest[0], Part::TensorRoot)];
        parts.extend(rest[1..].iter().map(|&i| (i, Part::TensorMember)));
        let route = Route::Serve {
            via: vec![rest[0]],
            members: rest[1..].to_vec(),
            parallel: true,
        };
        Ok((route, parts))
    }

    fn request_legs(&self, c: &Ctx, client: usize, prompt: u32, _primary: usize) -> Vec<Leg> {
        super::serve_request_legs(c, client, prompt)
    }

    fn token_legs(&self, c: &Ctx, client: usize, _primary: usize) -> Vec<Leg> {
        super::serve_token_legs(c, client)
    }

    /// Per segment the root computes its slice while each member receives its input (the
    /// broadcast, then the reduced sum), computes, and sends back its partial sum (after
    /// the LM head: its logits).
    fn step_legs(&self, c: &Ctx, step: Step) -> Vec<Leg> {
        let Some(root) = super::producer(c.route) else {
            return Vec::new();
        };
        let work = step.work();
        let act = c.activations(step.tokens);
        let members: Vec<usize> = c.with_part(Part::TensorMember).collect();
        let scale = 1.0 / c.segments as f64;
        let logits = wire::activations_frame_len(c.logits_slice_bytes as usize) as u64;
        let mut legs = Vec::new();
        for seg in 0..c.segments {
            let back = if seg + 1 < c.segments { act } else { logits };
            let mut branches = vec![vec![Ctx::compute(root, work, scale)]];
            for &m in &members {
                branches.push(vec![
                    Leg::Send {
                        from: root,
                        to: m,
                        bytes: act,
                    },
                    Ctx::compute(m, work, scale),
                    Leg::Send {
                        from: m,
                        to: root,
                        bytes: back,
                    },
                ]);
            }
            legs.push(Leg::Parallel(branches));
        }
        legs
    }
}
