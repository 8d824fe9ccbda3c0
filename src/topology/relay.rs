//! `relay`: a client, relays (gateways, brokers) that forward streams byte for byte, and a
//! worker holding the whole model at the end.

use super::{Ctx, Kind, LayoutError, Leg, Part, PathCheck, Route, Step};
use super::{Hops, Role};

pub struct Relay;

/// Relays keep their part; every other node of the path serves whole requests.
pub(super) fn serve_whole(path: &[usize], roles: &[Role]) -> (Route, Vec<(usize, Part)>) {
    let rest = &path[1..];
    let parts = rest
        .iter()
        .map(|&i| match roles[i] {
            Role::Relay => (i, Part::Relay),
            _ => (i, Part::Whole),
        })
        .collect();
    let route = Route::Serve {
        via: rest.to_vec(),
        members: Vec::new(),
        parallel: false,
    };
    (route, parts)
}

/// The worker at the end of the route computes each step.
pub(super) fn producer_step(c: &Ctx, step: Step) -> Vec<Leg> {
    super::producer(c.route)
        .map(|p| vec![Ctx::compute(p, step.work(), 1.0)])
        .unwrap_or_default()
}

impl Kind for Relay {
    fn name(&self) -> &'static str {
        "relay"
    }

    fn expected_path(&self) -> &'static str {
        "[client, relay, ..., worker]"
    }

    /// A client, relays, and the worker they lead to.
    fn check(&self, pc: &mut PathCheck) -> Option<()> {
        let n = pc.len();
        if n < 3 || pc.role(n - 1) != Role::Worker || (1..n - 1).any(|i| pc.role(i) != Role::Relay)
        {
            return pc.shape_error();
        }
        for i in 1..n {
            pc.need(i - 1, i);
        }
        Some(())
    }

    fn layout(
        &self,
        path: &[usize],
        roles: &[Role],
        _hops: Hops,
    ) -> Result<(Route, Vec<(usize, Part)>), LayoutError> {
        Ok(serve_whole(path, roles))
    }

    fn request_legs(&self, c: &Ctx, client: usize, prompt: u32, _primary: usize) -> Vec<Leg> {
        super::serve_request_legs(c, client, prompt)
    }

    fn token_legs(&self, c: &Ctx, client: usize, _primary: usize) -> Vec<Leg> {
        super::serve_token_legs(c, client)
    }

    fn step_legs(&self, c: &Ctx, step: Step) -> Vec<Leg> {
        producer_step(c, step)
    }
}
