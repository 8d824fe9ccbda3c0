//! `star`: llama.cpp RPC. The host holds the embeddings, its own span and the LM head; per
//! step it sends the hidden states to each remote stage in turn and waits for them back.

use super::{At, Ctx, Holding, Kind, LayoutError, Leg, Part, PathCheck, Route, Step};
use super::{Hops, Role};

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

    fn step_legs(&self, c: &Ctx, step: Step) -> Vec<Leg> {
        let Some(host) = super::producer(c.route) else {
            return Vec::new();
        };
        let work = step.work();
        let act = c.activations(step.tokens);
        let mut legs = vec![Ctx::compute(host, work, 1.0)];
        for stage in c.with_part(Part::Stage) {
            legs.push(Leg::Send {
                from: host,
                to: stage,
                bytes: act,
            });
            legs.push(Ctx::compute(stage, work, 1.0));
            legs.push(Leg::Send {
                from: stage,
                to: host,
                bytes: act,
            });
        }
        legs.push(Leg::Compute {
            at: At::Head(host),
            work,
            scale: 1.0,
        });
        legs
    }
}
