//! `direct`: a client and one worker holding the whole model, over one link.

use super::{Ctx, Kind, LayoutError, Leg, Part, PathCheck, Route, Step, relay};
use super::{Hops, Role};

pub struct Direct;

impl Kind for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn expected_path(&self) -> &'static str {
        "[client, worker]"
    }

    /// A client and one worker.
    fn check(&self, pc: &mut PathCheck) -> Option<()> {
        if pc.len() != 2 || pc.role(1) != Role::Worker {
            return pc.shape_error();
        }
        pc.need(0, 1);
        Some(())
    }

    fn path_implied(&self) -> bool {
        true
    }

    fn layout(
        &self,
        path: &[usize],
        roles: &[Role],
        _hops: Hops,
    ) -> Result<(Route, Vec<(usize, Part)>), LayoutError> {
        Ok(relay::serve_whole(path, roles))
    }

    fn request_legs(&self, c: &Ctx, client: usize, prompt: u32, _primary: usize) -> Vec<Leg> {
        super::serve_request_legs(c, client, prompt)
    }

    fn token_legs(&self, c: &Ctx, client: usize, _primary: usize) -> Vec<Leg> {
        super::serve_token_legs(c, client)
    }

    fn step_legs(&self, c: &Ctx, step: Step) -> Vec<Leg> {
        relay::producer_step(c, step)
    }
}
