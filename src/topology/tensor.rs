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
        let mut run: Option<Run> = None;
        for op in c.tensor {
            match *op {
                Op::Compute { share, head } => compute_op(
                    &mut run,
                    &mut root_legs,
                    &mut member_legs,
                    (root, &members),
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
                    if msg.direction == Direction::ToRoot {
                        // The root waits for every member's message; the members go on.
                        let r = run.get_or_insert_with(|| Run::start(&mut member_legs));
                        for (k, &m) in members.iter().enumerate() {
                            let send = Leg::Send {
                                from: m,
                                to: root,
                                bytes,
                            };
                            r.gather(k, Vec::new(), vec![send]);
                        }
                        continue;
                    }
                    if let Some(r) = run.take() {
                        legs.push(r.close(std::mem::take(&mut root_legs), &mut member_legs));
                    }
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
                        // A gather is part of the run above.
                        Direction::ToRoot => {}
                        Direction::Exchange => {
                            let mut branches = Vec::new();
                            for (k, &m) in members.iter().enumerate() {
                                let mut b = std::mem::take(&mut member_legs[k]);
                                b.push(Leg::Send {
                                    from: m,
                                    to: root,
                                    bytes,
                                });
                                branches.push(b);
                                let mut b = root_legs.clone();
                                b.push(down(m));
                                branches.push(b);
                            }
                            branches.push(std::mem::take(&mut root_legs));
                            legs.push(Leg::Parallel(branches));
                        }
                    }
                }
            }
        }
        if let Some(r) = run.take() {
            legs.push(r.close(std::mem::take(&mut root_legs), &mut member_legs));
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
/// Gathers with only compute between them (distributed-llama 0.3.1's Q, K and V): the
/// root waits for each, but a member goes on with its next compute once it has sent (and
/// paid its send cost), without waiting for the root. The root's time after the run is the
/// latest of its own legs and, for each member and each gather, the member's legs up to
/// that gather's arrival followed by the root's legs since that gather; every leg that
/// carries bytes appears once.
struct Run {
    /// Each member's legs before the run's first gather.
    prefix: Vec<Vec<Leg>>,
    /// Each member's legs since the run began.
    since: Vec<Vec<Leg>>,
    /// Where in `since` each member's last gather was sent.
    sent: Vec<usize>,
    /// Each member's alternatives, one per gather: its legs up to that gather's arrival
    /// (and the root's read of it), then the root's legs since.
    alts: Vec<Vec<Vec<Leg>>>,
}

impl Run {
    fn start(member_legs: &mut [Vec<Leg>]) -> Run {
        let n = member_legs.len();
        Run {
            prefix: member_legs.iter_mut().map(std::mem::take).collect(),
            since: vec![Vec::new(); n],
            sent: vec![0; n],
            alts: vec![Vec::new(); n],
        }
    }

    /// The root's and each member's next legs.
    fn extend(&mut self, root: &[Leg], members: &[Vec<Leg>]) {
        for (k, legs) in members.iter().enumerate() {
            self.since[k].extend(legs.iter().cloned());
            for alt in &mut self.alts[k] {
                alt.extend(root.iter().cloned());
            }
        }
    }

    /// A gather: member k's legs so far, `send` (its message, with its own send cost
    /// before it and the root's read after it), as one more alternative.
    fn gather(&mut self, k: usize, before: Vec<Leg>, send: Vec<Leg>) {
        self.since[k].extend(before);
        self.sent[k] = self.since[k].len();
        let mut alt = self.since[k].clone();
        alt.extend(send);
        self.alts[k].push(alt);
    }

    /// The run's legs, once the root has `root_legs` (its own since the last block); each
    /// member's legs since its last gather stay its own.
    fn close(self, root_legs: Vec<Leg>, member_legs: &mut [Vec<Leg>]) -> Leg {
        let mut branches = vec![root_legs];
        for (k, (mut prefix, mut alts)) in self.prefix.into_iter().zip(self.alts).enumerate() {
            if alts.len() == 1 {
                prefix.append(&mut alts[0]);
            } else {
                prefix.push(Leg::Parallel(alts));
            }
            branches.push(prefix);
            member_legs[k] = self.since[k][self.sent[k]..].to_vec();
        }
        Leg::Parallel(branches)
    }
}

/// A compute op: its legs go to the root and the members, or into the run of gathers
/// under way.
fn compute_op(
    run: &mut Option<Run>,
    root_legs: &mut Vec<Leg>,
    member_legs: &mut [Vec<Leg>],
    (root, members): (usize, &[usize]),
    work: Pass,
    share: f64,
    head: bool,
) {
    match run {
        Some(r) => {
            let (mut own, mut theirs) = (Vec::new(), vec![Vec::new(); members.len()]);
            compute_legs(&mut own, &mut theirs, root, members, work, share, head);
            r.extend(&own, &theirs);
            root_legs.extend(own);
        }
        None => compute_legs(root_legs, member_legs, root, members, work, share, head),
    }
}

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
    let mut run: Option<Run> = None;
    for op in c.tensor {
        match *op {
            Op::Compute { share, head } => compute_op(
                &mut run,
                &mut root_legs,
                &mut member_legs,
                (root, members),
                work,
                share,
                head,
            ),
            Op::Sync(msg) => {
                let bytes = wire::activations_frame_len(msg.bytes(step.tokens) as usize) as u64;
                let (send, recv) = (cost.send.of(bytes), cost.recv.of(bytes));
                if msg.direction == Direction::ToRoot {
                    // The root reads member k's message once it has read the one before
                    // and the message has arrived; a member goes on once it has paid its
                    // send cost.
                    let r = run.get_or_insert_with(|| Run::start(&mut member_legs));
                    let read: Vec<Leg> = super::busy(root, recv * n).into_iter().collect();
                    r.extend(&read, &vec![Vec::new(); members.len()]);
                    root_legs.extend(read);
                    for (k, &m) in members.iter().enumerate() {
                        let mut arrives = vec![Leg::Send {
                            from: m,
                            to: root,
                            bytes,
                        }];
                        arrives.extend(super::busy(root, recv * (n - k as u32)));
                        r.gather(k, c.send_busy(m, bytes).into_iter().collect(), arrives);
                    }
                    continue;
                }
                if let Some(r) = run.take() {
                    legs.push(r.close(std::mem::take(&mut root_legs), &mut member_legs));
                }
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
    if let Some(r) = run.take() {
        legs.push(r.close(std::mem::take(&mut root_legs), &mut member_legs));
    }
    legs.extend(root_legs);
    for b in member_legs {
        super::flatten_sends(b, &mut legs);
    }
    legs.extend(super::serve_token_cost(c));
    legs
}
