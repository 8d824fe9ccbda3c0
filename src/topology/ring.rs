//! `ring`: exo's ring is parsed and validated but not run: it is a server-to-server
//! pipeline whose last stage returns to the first node.

use super::{Ctx, Kind, LayoutError, Leg, Part, Route, Step};
use crate::scenario::{Hops, Role};

pub struct Ring;

impl Kind for Ring {
    fn name(&self) -> &'static str {
        "ring"
    }

    fn layout(
        &self,
        _path: &[usize],
        _roles: &[Role],
        _hops: Hops,
    ) -> Result<(Route, Vec<(usize, Part)>), LayoutError> {
        Err(LayoutError::Unsupported(
            "ring",
            "exo's ring is a server-to-server pipeline: kind = \"pipeline\", hops = \"server-to-server\"",
        ))
    }

    fn request_legs(&self, _c: &Ctx, _client: usize, _prompt: u32, _primary: usize) -> Vec<Leg> {
        Vec::new()
    }

    fn token_legs(&self, _c: &Ctx, _client: usize, _primary: usize) -> Vec<Leg> {
        Vec::new()
    }

    fn step_legs(&self, _c: &Ctx, _step: Step) -> Vec<Leg> {
        Vec::new()
    }
}
