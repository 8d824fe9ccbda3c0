//! `star`: llama.cpp RPC. The host holds the embeddings, its own span and the LM head; per
//! step it sends the hidden states to each remote stage in turn and waits for them back.

use super::{At, Ctx, Holding, Kind, LayoutError, Leg, Part, PathCheck, Route, Step};
use super::{Hops, Role};
use crate::net::wire;

pub struct Star;

impl Kind for Star {
    fn name(&self) -> &'static str {
        "star"
    }

    fn expected_path(&self) -> &'static str {
        "[client, worker, worker, ...]: the host, then the remotes"
    }

    /// A host that the client talks to and that fans out to remotes holding the layers.
    fn check(&self, pc: &mut PathCheck) -> Option<()> {
        let n = pc.len();
        if n < 2 || !pc.all_workers() {
            return pc.shape_error();
        }
        pc.consecutive(&(1..n).collect::<Vec<_>>());
        pc.need(0, 1);
        pc.need_from(1, 2..n);
        Some(())
    }

    /// The host runs the LM head and may hold no layers; the remotes never hold the head.
    fn holding(&self, position: Option<usize>, _len: usize) -> Holding {
        let host = position == Some(1);
        Holding {
            head: Some(host),
            may_hold_no_layers: host,
            ..Holding::default()
        }
    }

    fn layout(
        &self,
        path: &[usize],
        _roles: &[Role],
        _hops: Hops,
    ) -> Result<(Route, Vec<(usize, Part)>), LayoutError> {
        let rest = &path[1..];
        let mut parts = vec![(rest[0], Part::StarHost)];
        parts.extend(rest[1..].iter().map(|&i| (i, Part::Stage)));
        let route = Route::Serve {
            via: vec![rest[0]],
            members: rest[1..].to_vec(),
            parallel: false,
        };
        Ok((route, parts))
    }

    fn request_legs(&self, c: &Ctx, client: usize, prompt: u32, _primary: usize) -> Vec<Leg> {
        super::serve_request_legs(c, client, prompt)
    }

    fn token_legs(&self, c: &Ctx, client: usize, _primary: usize) -> Vec<Leg> {
        super::serve_token_legs(c, client)
    }

    fn takes_star_pattern(&self) -> bool {
        true
    }

    /// Per remote stage, the pattern's calls in turn: requests the host sends one after
    /// another with no reply between them travel together (one delay, their bytes
    /// serialized back to back); a call that computes runs the remote's span; a reply the
    /// host waits for comes back before the next call. A last request that nothing waits
    /// for counts only as bytes.
    fn step_legs(&self, c: &Ctx, step: Step) -> Vec<Leg> {
        let Some(host) = super::producer(c.route) else {
            return Vec::new();
        };
        let work = step.work();
        let kv = super::rpc::kv_len(work);
        let mut legs = vec![Ctx::compute(host, work, 1.0)];
        for stage in c.with_part(Part::Stage) {
            let Some(st) = c
                .nodes
                .iter()
                .find(|n| n.index == stage)
                .and_then(|n| n.stage.as_ref())
            else {
                continue;
            };
            let mut pending = 0u64;
            for call in c.star.calls(&st.model, step.tokens, kv, st.layers) {
                pending += wire::activations_frame_len(call.request as usize) as u64;
                if call.computes || call.reply.is_some() {
                    legs.push(Leg::Send {
                        from: host,
                        to: stage,
                        bytes: std::mem::take(&mut pending),
                    });
                }
                if call.computes {
                    legs.push(Ctx::compute(stage, work, 1.0));
                }
                if let Some(reply) = call.reply {
                    legs.push(Leg::Send {
                        from: stage,
                        to: host,
                        bytes: wire::activations_frame_len(reply as usize) as u64,
                    });
                }
            }
            if pending > 0 {
                legs.push(Leg::Bytes {
                    from: host,
                    to: stage,
                    bytes: pending,
                });
            }
        }
        legs.push(Leg::Compute {
            at: At::Head(host),
            work,
            scale: 1.0,
        });
        legs
    }
}
