//! `direct`: a client and one worker holding the whole model, over one link.

use super::{Ctx, Kind, LayoutError, Leg, Part, Route, Step, relay};
use crate::scenario::{Hops, Role};

pub struct Direct;

impl Kind for Direct {
    fn name(&self) -> &'static str {
        "direct"
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
