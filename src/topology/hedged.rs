//! `hedged`: replicas that each hold the whole model; a client sends a further copy of a
//! request to the next replica when the first has not answered in time ("The Tail at
//! Scale", Dean and Barroso, CACM 2013) and keeps the first answer.

use super::{Ctx, Kind, LayoutError, Leg, Part, PathCheck, Route, Step};
use super::{Hops, Role};
use crate::net::wire;

pub struct Hedged;

fn replica(c: &Ctx, primary: usize) -> Option<usize> {
    match c.route {
        Route::Hedged { replicas } => Some(replicas[primary % replicas.len()]),
        _ => None,
    }
}

impl Kind for Hedged {
    fn name(&self) -> &'static str {
        "hedged"
    }

    fn expected_path(&self) -> &'static str {
        "[client, worker, worker, ...]: at least two replicas"
    }

    /// Replicas of the whole model, each reached from the client.
    fn check(&self, pc: &mut PathCheck) -> Option<()> {
        pc.two_workers_or_more()?;
        pc.whole("in a hedged topology each replica");
        pc.need_from(0, 1..pc.len());
        Some(())
    }

    fn takes_hedge_after(&self) -> bool {
        true
    }

    fn layout(
        &self,
        path: &[usize],
        _roles: &[Role],
        _hops: Hops,
    ) -> Result<(Route, Vec<(usize, Part)>), LayoutError> {
        let rest = &path[1..];
        let parts = rest.iter().map(|&i| (i, Part::Whole)).collect();
        Ok((
            Route::Hedged {
                replicas: rest.to_vec(),
            },
            parts,
        ))
    }

    fn request_legs(&self, c: &Ctx, client: usize, prompt: u32, primary: usize) -> Vec<Leg> {
        replica(c, primary)
            .map(|to| Leg::Send {
                from: client,
                to,
                bytes: c.request_len(prompt, &[]),
            })
            .into_iter()
            .collect()
    }

    fn token_legs(&self, c: &Ctx, client: usize, primary: usize) -> Vec<Leg> {
        replica(c, primary)
            .map(|from| Leg::Send {
                from,
                to: client,
                bytes: wire::TOKEN_FRAME_LEN as u64,
            })
            .into_iter()
            .collect()
    }

    fn step_legs(&self, c: &Ctx, step: Step) -> Vec<Leg> {
        replica(c, step.primary)
            .map(|r| Ctx::compute(r, step.work(), 1.0))
            .into_iter()
            .collect()
    }
}
