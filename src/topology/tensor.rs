//! `tensor`: tensor parallelism (distributed-llama, exo's tensor mode). Every node computes
//! a 1/N slice of every layer; the group synchronises as its pattern says
//! ([`super::pattern`]): by default per half-layer the root gathers the partial sums and
//! broadcasts the reduction (2·L + 2 synchronisations per token with the LM head's logits).

use super::pattern::{Direction, Op};
use super::{At, Ctx, Holding, Kind, LayoutError, Leg, Part, Pass, PathCheck, Route, Step};
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

    /// The client's request, then the root's receive cost of it.
    fn request_legs(&self, c: &Ctx, client: usize, prompt: u32, _primary: usize) -> Vec<Leg> {
        let mut legs = super::serve_request_legs(c, client, prompt);
        legs.extend(super::serve_request_cost(c, client, prompt));
        legs
    }

    fn token_legs(&self, c: &Ctx, client: usize, _primary: usize) -> Vec<Leg> {
        super::serve_token_legs(c, client)
    }

    fn takes_pattern(&self) -> bool {
        true
    }

    /// The pattern's ops in blocks, each ending where the root waits for the members (a
    /// synchronisation to the root, or an exchange): in a block the root computes while
    /// each member receives what the root sent it, computes, and sends back; an exchange
    /// also sends the root's part to each member. After the last block the members' sends
    /// only count as bytes: the root does not wait for them.
    fn step_legs(&self, c: &Ctx, step: Step) -> Vec<Leg> {
        let Some(root) = super::producer(c.route) else {
            return Vec::new();
        };
        let work = step.work();
        let members: Vec<usize> = c.with_part(Part::TensorMember).collect();
        if c.any_software(&[root]) || c.any_software(&members) {
            return costed_step_legs(c, step, root, &members);
        }
        let mut legs = Vec::new();
        let mut root_legs: Vec<Leg> = Vec::new();
        let mut member_legs: Vec<Vec<Leg>> = vec![Vec::new(); members.len()];
        for op in c.tensor {
            match *op {
                Op::Compute { share, head } => compute_legs(
                    &mut root_legs,
                    &mut member_legs,
                    root,
                    &members,
                    work,
                    share,
                    head,
                ),
                Op::Sync(msg) => {
                    let bytes = wire::activations_frame_len(msg.bytes(step.tokens) as usize) as u64;
                    let down = |m: usize| Leg::Send {
                        from: root,
                        to: m,
                        bytes,
                    };
                    match msg.direction {
                        Direction::FromRoot => {
                            // Messages the root sends one after another, with no compute
                            // between them, travel together: one delay, both serialized.
                            for (k, &m) in members.iter().enumerate() {
                                match member_legs[k].last_mut() {
                                    Some(Leg::Send { from, bytes: b, .. }) if *from == root => {
                                        *b += bytes
                                    }
                                    _ => member_legs[k].push(down(m)),
                                }
                            }
                        }
                        Direction::ToRoot | Direction::Exchange => {
                            let mut branches = Vec::new();
                            for (k, &m) in members.iter().enumerate() {
                                let mut b = std::mem::take(&mut member_legs[k]);
                                b.push(Leg::Send {
                                    from: m,
                                    to: root,
                                    bytes,
                                });
                                branches.push(b);
                                if msg.direction == Direction::Exchange {
                                    let mut b = root_legs.clone();
                                    b.push(down(m));
                                    branches.push(b);
                                }
                            }
                            branches.push(std::mem::take(&mut root_legs));
                            legs.push(Leg::Parallel(branches));
                        }
                    }
                }
            }
        }
        legs.extend(root_legs);
        for b in member_legs {
            legs.extend(b.into_iter().filter_map(|l| match l {
                Leg::Send { from, to, bytes } => Some(Leg::Bytes { from, to, bytes }),
                _ => None,
            }));
        }
        legs
    }
}

/// [`Tensor::step_legs`] where the root or a member has software costs (`send_cost`,
/// `recv_cost`), as the harness spends them: the root's one thread sends a message to each
/// member in turn (member k's leaves after k + 1 send costs) and reads the members' in
/// turn, each after its receive cost; a member pays its receive cost on what the root
/// sent it and its send cost on what it sends. At a synchronisation the root waits on
/// (to the root, an exchange) the root finishes reading member k's message when both it
/// has finished reading the one before and the message has arrived: the later of its
/// own end plus M receive costs and each member's arrival plus the receive costs of it
/// and of the members after it. The root's token frame costs its send before the next
/// step.
/// A compute op's legs: the root and each member compute their `share` of `work` (of the
/// head's or the layers').
fn compute_legs(
    root_legs: &mut Vec<Leg>,
    member_legs: &mut [Vec<Leg>],
    root: usize,
    members: &[usize],
    work: Pass,
    share: f64,
    head: bool,
) {
    let compute = |i| Leg::Compute {
        at: if head { At::Head(i) } else { At::Layers(i) },
        work,
        scale: share,
    };
    root_legs.push(compute(root));
    for (legs, &m) in member_legs.iter_mut().zip(members) {
        legs.push(compute(m));
    }
}

fn costed_step_legs(c: &Ctx, step: Step, root: usize, members: &[usize]) -> Vec<Leg> {
    let work = step.work();
    let n = members.len() as u32;
    let cost = c.software(root);
    let mut legs = Vec::new();
    let mut root_legs: Vec<Leg> = Vec::new();
    let mut member_legs: Vec<Vec<Leg>> = vec![Vec::new(); members.len()];
    // Member k's legs once it has received a message from the root: the later of its own
    // legs and the root's up to the message's send, then the message's link and the
    // member's receive cost.
    let received = |own: Vec<Leg>, root_legs: &[Leg], k: usize, m: usize, bytes: u64| {
        let mut arrives = root_legs.to_vec();
        arrives.extend(super::busy(root, cost.send.of(bytes) * (k as u32 + 1)));
        arrives.push(Leg::Send {
            from: root,
            to: m,
            bytes,
        });
        let mut legs = if own.is_empty() {
            arrives
        } else {
            vec![Leg::Parallel(vec![own, arrives])]
        };
        legs.extend(c.recv_busy(m, bytes));
        legs
    };
    for op in c.tensor {
        match *op {
            Op::Compute { share, head } => compute_legs(
                &mut root_legs,
                &mut member_legs,
                root,
                members,
                work,
                share,
                head,
            ),
            Op::Sync(msg) => {
                let bytes = wire::activations_frame_len(msg.bytes(step.tokens) as usize) as u64;
                let (send, recv) = (cost.send.of(bytes), cost.recv.of(bytes));
                if msg.direction == Direction::FromRoot {
                    for (k, &m) in members.iter().enumerate() {
                        let own = std::mem::take(&mut member_legs[k]);
                        member_legs[k] = received(own, &root_legs, k, m, bytes);
                    }
                    root_legs.extend(super::busy(root, send * n));
                    continue;
                }
                let mut branches = Vec::new();
                for (k, &m) in members.iter().enumerate() {
                    let mut own = std::mem::take(&mut member_legs[k]);
                    own.extend(c.send_busy(m, bytes));
                    if msg.direction == Direction::Exchange {
                        branches.push(received(own.clone(), &root_legs, k, m, bytes));
                    }
                    own.push(Leg::Send {
                        from: m,
                        to: root,
                        bytes,
                    });
                    own.extend(super::busy(root, recv * (n - k as u32)));
                    branches.push(own);
                }
                let mut own = std::mem::take(&mut root_legs);
                if msg.direction == Direction::Exchange {
                    own.extend(super::busy(root, send * n));
                }
                own.extend(super::busy(root, recv * n));
                branches.push(own);
                legs.push(Leg::Parallel(branches));
            }
        }
    }
    legs.extend(root_legs);
    for b in member_legs {
        super::flatten_sends(b, &mut legs);
    }
    legs.extend(super::serve_token_cost(c));
    legs
}
