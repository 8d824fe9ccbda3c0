//! `pipeline`: Petals. Servers each hold a contiguous span of layers; the client holds the
//! embeddings and the LM head. Client-relayed (Petals 1.x): every stage's output comes back
//! to the client, which sends it on. Server-to-server (Petals 2): each stage pushes to the
//! next and the last returns to the client.

use super::{At, Ctx, Holding, Kind, LayoutError, Leg, Part, PathCheck, Route, Step};
use super::{Hops, Role};

pub struct Pipeline;

fn chains<'a>(c: &Ctx<'a>) -> Option<(&'a [Vec<usize>], bool)> {
    match c.route {
        Route::Pipeline {
            chains,
            server_to_server,
        } => Some((chains, *server_to_server)),
        _ => None,
    }
}

impl Kind for Pipeline {
    fn name(&self) -> &'static str {
        "pipeline"
    }

    fn expected_path(&self) -> &'static str {
        "[client, worker, worker, ...]: the stages in order, each worker optionally preceded by the relays that lead to it"
    }

    /// Stages in layer order, each optionally behind relays; the client relays the
    /// activations (client-relayed) or each stage sends them to the next (server-to-server).
    fn check(&self, pc: &mut PathCheck) -> Option<()> {
        let n = pc.len();
        if n < 2 || (1..n).any(|i| pc.role(i) == Role::Client) {
            return pc.shape_error();
        }
        if pc.role(n - 1) != Role::Worker {
            let msg = format!(
                "a pipeline's path ends at a worker; relay \"{}\" leads to no stage (a relay stands just before the worker it leads to)",
                pc.name(n - 1)
            );
            pc.err_at(n - 1, msg);
            return None;
        }
        // Each stage's access chain: its relays, then its worker (path positions).
        let mut chains: Vec<Vec<usize>> = Vec::new();
        let mut chain = Vec::new();
        for i in 1..n {
            chain.push(i);
            if pc.role(i) == Role::Worker {
                chains.push(std::mem::take(&mut chain));
            }
        }
        let stages: Vec<usize> = chains.iter().filter_map(|c| c.last().copied()).collect();
        pc.consecutive(&stages);
        let server_to_server = pc.hops == Some(Hops::ServerToServer);
        let mut prev_stage = None;
        for ch in &chains {
            match prev_stage {
                Some(stage) if server_to_server => pc.need(stage, ch[0]),
                _ => pc.need(0, ch[0]),
            }
            for w in ch.windows(2) {
                pc.need(w[0], w[1]);
            }
            prev_stage = ch.last().copied();
        }
        if server_to_server && let Some(last) = chains.last() {
            // The client opens a stream to the last stage for the tokens.
            pc.need(0, last[0]);
        }
        Some(())
    }

    fn takes_hops(&self) -> bool {
        true
    }

    /// Relays stand in front of the stage that follows them: each stage is reached through
    /// its chain.
    fn layout(
        &self,
        path: &[usize],
        roles: &[Role],
        hops: Hops,
    ) -> Result<(Route, Vec<(usize, Part)>), LayoutError> {
        let mut chains: Vec<Vec<usize>> = Vec::new();
        let mut chain = Vec::new();
        let mut parts = Vec::new();
        for &i in &path[1..] {
            chain.push(i);
            if roles[i] == Role::Relay {
                parts.push((i, Part::Relay));
            } else {
                parts.push((i, Part::Stage));
                chains.push(std::mem::take(&mut chain));
            }
        }
        let route = Route::Pipeline {
            chains,
            server_to_server: hops == Hops::ServerToServer,
        };
        Ok((route, parts))
    }

    fn client_heads(&self) -> bool {
        true
    }

    /// The client runs the LM head ([`Kind::client_heads`]): no stage holds it, the last
    /// one included.
    fn holding(&self, _position: Option<usize>, _len: usize) -> Holding {
        Holding {
            head: Some(false),
            ..Holding::default()
        }
    }

    fn route_note(&self, route: &Route) -> &'static str {
        match route {
            Route::Pipeline {
                server_to_server: true,
                ..
            } => " (server-to-server)",
            _ => " (client-relayed)",
        }
    }

    /// Sessions open along every chain ahead of the hidden states.
    fn request_legs(&self, c: &Ctx, client: usize, _prompt: u32, _primary: usize) -> Vec<Leg> {
        let Some((chains, server_to_server)) = chains(c) else {
            return Vec::new();
        };
        let mut legs = Vec::new();
        if server_to_server {
            let mut all = vec![client];
            chains.iter().for_each(|ch| all.extend(ch));
            legs.extend(c.ahead(&all, |i| c.request_len(0, &all[i + 2..])));
            let mut ret = vec![client];
            ret.extend(&chains[chains.len() - 1]);
            legs.extend(c.ahead(&ret, |i| c.request_len(0, &ret[i + 2..])));
        } else {
            for ch in chains {
                let mut nodes = vec![client];
                nodes.extend(ch);
                legs.extend(c.ahead(&nodes, |i| c.request_len(0, &nodes[i + 2..])));
            }
        }
        legs
    }

    /// The client's own LM head makes the token: nothing crosses a link after the step.
    fn token_legs(&self, _c: &Ctx, _client: usize, _primary: usize) -> Vec<Leg> {
        Vec::new()
    }

    /// Each stage receives the hidden states, computes its span and sends them on; its
    /// `recv_cost` and `send_cost` lie between (its one thread does all three in turn).
    fn step_legs(&self, c: &Ctx, step: Step) -> Vec<Leg> {
        let Some((chains, server_to_server)) = chains(c) else {
            return Vec::new();
        };
        let work = step.work();
        let act = c.activations(step.tokens);
        let client = step.client;
        let mut legs = Vec::new();
        if server_to_server {
            let mut at = client;
            for ch in chains {
                let mut nodes = vec![at];
                nodes.extend(ch);
                legs.extend(c.along_costed(&nodes, act));
                let w = ch[ch.len() - 1];
                legs.push(Ctx::compute(w, work, 1.0));
                at = w;
            }
            // The last stage returns the last position's hidden state.
            let mut back: Vec<usize> = vec![client];
            back.extend(&chains[chains.len() - 1]);
            back.reverse();
            legs.extend(c.along_costed(&back, c.activations(1)));
        } else {
            for ch in chains {
                let mut nodes = vec![client];
                nodes.extend(ch);
                legs.extend(c.along_costed(&nodes, act));
                legs.push(Ctx::compute(ch[ch.len() - 1], work, 1.0));
                nodes.reverse();
                legs.extend(c.along_costed(&nodes, act));
            }
        }
        legs.push(Leg::Compute {
            at: At::Head(client),
            work,
            scale: 1.0,
        });
        legs
    }
}
