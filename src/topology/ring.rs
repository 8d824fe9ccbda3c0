//! `ring`: exo's ring is parsed and validated but not run: it is a server-to-server
//! pipeline whose last stage returns to the first node.

use super::{Ctx, Kind, LayoutError, Leg, Part, PathCheck, Route, Step};
use super::{Hops, Role};

pub struct Ring;

impl Kind for Ring {
    fn name(&self) -> &'static str {
        "ring"
    }

    fn expected_path(&self) -> &'static str {
        "[client, worker, worker, ...]"
    }

    /// Workers holding consecutive spans, each reached from the client.
    fn check(&self, pc: &mut PathCheck) -> Option<()> {
        let n = pc.len();
        if n < 2 || !pc.all_workers() {
            return pc.shape_error();
        }
        pc.consecutive(&(1..n).collect::<Vec<_>>());
        pc.need_from(0, 1..n);
        Some(())
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
