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

    /// The client's request, then the host's receive cost of it.
    fn request_legs(&self, c: &Ctx, client: usize, prompt: u32, _primary: usize) -> Vec<Leg> {
        let mut legs = super::serve_request_legs(c, client, prompt);
        legs.extend(super::serve_request_cost(c, client, prompt));
        legs
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
    /// for counts only as bytes, and so do requests that reach the remote while it computes
    /// on a call the host did not wait for (a lower bound: they left right after it).
    fn step_legs(&self, c: &Ctx, step: Step) -> Vec<Leg> {
        let Some(host) = super::producer(c.route) else {
            return Vec::new();
        };
        let stages: Vec<usize> = c.with_part(Part::Stage).collect();
        if c.any_software(&[host]) || c.any_software(&stages) {
            return costed_step_legs(c, step, host, &stages);
        }
        let work = step.work();
        let kv = super::rpc::kv_len(work);
        let mut legs = vec![Ctx::compute(host, work, 1.0)];
        for stage in c.with_part(Part::Stage) {
            let Some(st) = stage_of(c, stage) else {
                continue;
            };
            let mut pending = 0u64;
            // Whether the remote computes on a call the host did not wait for: the host's
            // next requests left with it and reach the remote while it computes, so they
            // count only as bytes (llamacpp-rpc-recompute's GET_TENSOR after
            // GRAPH_RECOMPUTE).
            let mut computing = false;
            for call in c.star.calls(&st.model, step.tokens, kv, st.layers) {
                pending += wire::activations_frame_len(call.request as usize) as u64;
                if call.computes || call.reply.is_some() {
                    let bytes = std::mem::take(&mut pending);
                    legs.push(if computing {
                        Leg::Bytes {
                            from: host,
                            to: stage,
                            bytes,
                        }
                    } else {
                        Leg::Send {
                            from: host,
                            to: stage,
                            bytes,
                        }
                    });
                }
                if call.computes {
                    legs.push(Ctx::compute(stage, work, 1.0));
                    computing = call.reply.is_none();
                }
                if let Some(reply) = call.reply {
                    computing = false;
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

/// [`Star::step_legs`] where the host or a remote stage has software costs
/// (`send_cost`, `recv_cost`): each call costs the host its send, the remote its receive;
/// a reply costs the remote its send and the host its receive; the host's token frame
/// costs its send before the next step. The host sends the calls it does not wait on one
/// after another (each after its own send cost), so a remote receives each when both it
/// has finished the one before and the call has arrived: the remote's time is the slower
/// of its own and the host's. A reply the host waits on joins the two again.
fn costed_step_legs(c: &Ctx, step: Step, host: usize, stages: &[usize]) -> Vec<Leg> {
    let work = step.work();
    let kv = super::rpc::kv_len(work);
    let mut legs = vec![Ctx::compute(host, work, 1.0)];
    for &stage in stages {
        let Some(st) = stage_of(c, stage) else {
            continue;
        };
        // The host's legs since the remote's last reply, and the remote's.
        let mut host_seg: Vec<Leg> = Vec::new();
        let mut remote: Vec<Leg> = Vec::new();
        for call in c.star.calls(&st.model, step.tokens, kv, st.layers) {
            let bytes = wire::activations_frame_len(call.request as usize) as u64;
            host_seg.extend(c.send_busy(host, bytes));
            let mut arrives = host_seg.clone();
            arrives.push(Leg::Send {
                from: host,
                to: stage,
                bytes,
            });
            remote = if remote.is_empty() {
                arrives
            } else {
                vec![Leg::Parallel(vec![remote, arrives])]
            };
            remote.extend(c.recv_busy(stage, bytes));
            if call.computes {
                remote.push(Ctx::compute(stage, work, 1.0));
            }
            if let Some(reply) = call.reply {
                let bytes = wire::activations_frame_len(reply as usize) as u64;
                remote.extend(c.send_busy(stage, bytes));
                remote.push(Leg::Send {
                    from: stage,
                    to: host,
                    bytes,
                });
                remote.extend(c.recv_busy(host, bytes));
                // The remote's legs hold the host's since the last reply: they are the path.
                legs.append(&mut remote);
                host_seg.clear();
            }
        }
        // Calls nothing waits on: the host's send costs lie on the path, their bytes
        // travel ahead, and the remote's receive costs do not delay the host.
        legs.extend(
            host_seg
                .into_iter()
                .filter(|l| matches!(l, Leg::Busy { .. })),
        );
        let mut trailing = Vec::new();
        super::flatten_sends(remote, &mut trailing);
        legs.extend(trailing);
    }
    legs.push(Leg::Compute {
        at: At::Head(host),
        work,
        scale: 1.0,
    });
    legs.extend(super::serve_token_cost(c));
    legs
}

/// The stage (layers and device) of the node with `index`, if it computes one.
fn stage_of<'a>(c: &'a Ctx, index: usize) -> Option<&'a crate::compute::Stage> {
    c.nodes
        .iter()
        .find(|n| n.index == index)
        .and_then(|n| n.stage.as_ref())
}
