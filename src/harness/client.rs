//! A client node: sends one request along the plan's route and times its tokens on its
//! own clock. For a pipeline it is the Petals client: it holds the embeddings and the LM
//! head, computes them on its own device, and drives every step through the stages.

use super::node::{broken, open_stream, read_activations};
use crate::clock::Clock;
use crate::compute::{Engine, Pass, SessionGuard, Stage};
use crate::net::framed::read_frame;
use crate::net::sender::Sender;
use crate::net::wire::{Done, Frame, Mode, Request};
use crate::plan::Route;
use crate::plan::schedule::Shape;
use crate::scenario::HedgeAfter;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What one request saw, on the client's clock.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Arrival of each output token.
    pub tokens: Vec<Instant>,
    /// Each node's account of its queue and compute time for the request, on its own clock.
    pub nodes: Vec<Done>,
    /// Queue and compute on the request's critical path (the nodes it waited on in turn).
    pub queue: Duration,
    pub compute: Duration,
    /// Per-message software time on the request's path (the nodes' `send_cost` and
    /// `recv_cost`, as each reported it).
    pub software: Duration,
    /// Copies of the request sent beyond the first (hedging).
    pub extra_copies: u32,
    /// Whether a copy other than the first answered first.
    pub hedge_won: bool,
    /// The client node that sent it (none for the baseline).
    pub client: Option<String>,
}

/// Recent times to first token, for hedging after a percentile of them.
#[derive(Debug, Default)]
pub struct Recent {
    window: VecDeque<Duration>,
}

impl Recent {
    /// How many recent requests a percentile looks at.
    const WINDOW: usize = 100;
    /// Fewer than this and no percentile is trusted: no hedging yet.
    const MIN: usize = 20;

    fn push(&mut self, d: Duration) {
        if self.window.len() == Self::WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(d);
    }

    fn percentile(&self, q: f64) -> Option<Duration> {
        if self.window.len() < Self::MIN {
            return None;
        }
        let mut v: Vec<Duration> = self.window.iter().copied().collect();
        v.sort();
        let i = ((q / 100.0) * v.len() as f64).ceil() as usize;
        Some(v[i.clamp(1, v.len()) - 1])
    }
}

/// A client node of a built topology.
pub struct Client {
    pub name: String,
    /// Its scenario node index.
    pub index: usize,
    /// The scenario's faults: a failed request that one touched is lost to it, and
    /// recoveries are counted there.
    pub faults: Arc<super::fault::FaultLog>,
    pub route: Route,
    /// Connections this client opened, by scenario node index; a lost one is replaced
    /// when the dialer can dial again.
    pub conns: Mutex<HashMap<usize, quinn::Connection>>,
    /// How to dial a node again after its connection was lost (an outage past the idle
    /// timeout closes it for good): a real client reconnects, and so does this one.
    pub dialer: Option<Dialer>,
    /// Scenario node names by index.
    pub names: Arc<Vec<String>>,
    /// The embeddings and LM head of a pipeline client, on its own device.
    pub head: Option<(Arc<dyn Engine>, Arc<Stage>)>,
    pub hedge_after: Option<HedgeAfter>,
    pub recent: Mutex<Recent>,
    pub hidden_bytes: usize,
    pub max_frame: u32,
    /// A client-relayed pipeline's standby servers: (a stage's node, a worker off the path
    /// holding its span), where a failed stage's session moves first.
    pub standby: Vec<(usize, usize)>,
}

type Io = (Sender, quinn::RecvStream);

/// What a client needs to open a connection again: its endpoint and every node's address.
pub struct Dialer {
    pub endpoint: quinn::Endpoint,
    pub addrs: Vec<std::net::SocketAddr>,
    /// One dial at a time, so requests that find the connection lost together share the
    /// new one.
    pub dialing: tokio::sync::Mutex<()>,
}

impl Client {
    fn names(&self, nodes: &[usize]) -> Vec<String> {
        nodes.iter().map(|&i| self.names[i].clone()).collect()
    }

    fn current(&self, node: usize) -> Option<quinn::Connection> {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .cloned()
    }

    /// The connection to `node`, dialled again if it was lost.
    async fn conn(&self, node: usize) -> Result<quinn::Connection, String> {
        let missing = || format!("{} has no connection to {}", self.name, self.names[node]);
        let conn = self.current(node).ok_or_else(missing)?;
        let Some(d) = &self.dialer else {
            return Ok(conn);
        };
        if conn.close_reason().is_none() {
            return Ok(conn);
        }
        let _one = d.dialing.lock().await;
        let conn = self.current(node).ok_or_else(missing)?;
        if conn.close_reason().is_none() {
            return Ok(conn);
        }
        let fresh = d
            .endpoint
            .connect(d.addrs[node], crate::net::endpoint::SERVER_NAME)
            .map_err(|e| format!("reconnecting to {}: {e}", self.names[node]))?
            .await
            .map_err(|e| format!("reconnecting to {}: {e}", self.names[node]))?;
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, fresh.clone());
        Ok(fresh)
    }

    async fn open(&self, nodes: &[usize], request: &Request) -> Result<Io, String> {
        let conn = self.conn(nodes[0]).await?;
        open_stream(&conn, &self.names(&nodes[..1]), request).await
    }

    fn request(&self, id: u64, shape: Shape, mode: Mode, route: Vec<String>) -> Request {
        Request {
            id,
            output_tokens: shape.output,
            mode,
            route,
            prompt: if mode == Mode::Serve {
                (0..shape.prompt)
                    .map(|i| i.wrapping_mul(7919) % 32_000)
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The nodes a request of this client uses: itself and its route's.
    pub fn route_nodes(&self) -> Vec<usize> {
        let mut v = vec![self.index];
        match &self.route {
            Route::Serve { via, members, .. } => v.extend(via.iter().chain(members)),
            Route::Hedged { replicas } => v.extend(replicas),
            Route::Pipeline { chains, .. } => v.extend(chains.iter().flatten()),
        }
        v
    }

    /// A failed request's error, naming the fault it was lost to when one touched it.
    pub fn blame(&self, sent: Instant, now: Instant, error: String) -> String {
        match self.faults.blame(sent, now, &self.route_nodes()) {
            Some(f) => format!("{f}: {error}"),
            None => error,
        }
    }

    /// Sends one request and waits for its last token.
    pub async fn call(&self, id: u64, shape: Shape, clock: &Clock) -> Result<Timeline, String> {
        let mut t = self.route_call(id, shape, clock).await?;
        t.client = Some(self.name.clone());
        Ok(t)
    }

    async fn route_call(&self, id: u64, shape: Shape, clock: &Clock) -> Result<Timeline, String> {
        match &self.route {
            Route::Serve {
                via,
                members,
                parallel,
            } => {
                let mut route = self.names(&via[1..]);
                route.extend(self.names(members));
                let request = self.request(id, shape, Mode::Serve, route);
                let (mut send, mut recv) = self.open(via, &request).await?;
                send.finish()
                    .map_err(|e| format!("finishing the request stream: {e}"))?;
                let mut t = Timeline::default();
                read_tokens(&mut recv, shape, clock, self.max_frame, &mut t).await?;
                // The producing node waited on the others in turn, except a tensor group's
                // members, which compute while the root does.
                let producer = &self.names[via[via.len() - 1]];
                for d in &t.nodes {
                    if !*parallel || &d.node == producer {
                        t.queue += Duration::from_nanos(d.queue_ns);
                        t.compute += Duration::from_nanos(d.compute_ns);
                        t.software += Duration::from_nanos(d.software_ns);
                    }
                }
                Ok(t)
            }
            Route::Hedged { replicas } => self.hedged(replicas, id, shape, clock).await,
            Route::Pipeline {
                chains,
                server_to_server,
            } => {
                self.pipeline(chains, *server_to_server, id, shape, clock)
                    .await
            }
        }
    }

    /// The Petals client: each step's hidden states go through every stage (through the
    /// client after each one, or from stage to stage), then the client's LM head.
    async fn pipeline(
        &self,
        chains: &[Vec<usize>],
        server_to_server: bool,
        id: u64,
        shape: Shape,
        clock: &Clock,
    ) -> Result<Timeline, String> {
        let mut streams: Vec<Io> = Vec::new();
        let mut ret: Option<quinn::RecvStream> = None;
        if server_to_server {
            let all: Vec<usize> = chains.iter().flatten().copied().collect();
            let request = self.request(id, shape, Mode::Chain, self.names(&all[1..]));
            streams.push(self.open(&all, &request).await?);
            let last = &chains[chains.len() - 1];
            let request = self.request(id, shape, Mode::Return, self.names(&last[1..]));
            let (mut send, recv) = self.open(last, &request).await?;
            send.finish()
                .map_err(|e| format!("finishing the return stream: {e}"))?;
            ret = Some(recv);
        } else {
            for ch in chains {
                let request = self.request(id, shape, Mode::Stage, self.names(&ch[1..]));
                streams.push(self.open(ch, &request).await?);
            }
        }
        let _guard = self.head.as_ref().map(|(engine, _)| SessionGuard {
            engine: &**engine,
            session: id,
        });
        let mut t = Timeline::default();
        let mut replays = 0u32;
        let (mut head_queue, mut head_compute) = (Duration::ZERO, Duration::ZERO);
        for k in 0..shape.output.max(1) {
            let (tokens, pass) = Pass::of_step(k, shape.prompt);
            let bytes = tokens as usize * self.hidden_bytes;
            if server_to_server {
                let recv = ret.as_mut().expect("server-to-server has a return stream");
                if let Err(e) =
                    chain_step(&mut streams[0], recv, id, tokens, bytes, self.max_frame).await
                {
                    // The chain broke somewhere: build it again and replay the tokens so
                    // far through every stage (see `replay_chain`).
                    let (chain, back) = self
                        .replay_chain(chains, id, shape, k, e, &mut replays, clock)
                        .await?;
                    streams[0] = chain;
                    ret = Some(back);
                }
            } else {
                for (i, io) in streams.iter_mut().enumerate() {
                    if let Err(e) = stage_step(io, id, tokens, bytes, self.max_frame).await {
                        // Petals: the session moves to a server holding the stage's span
                        // and the tokens so far are replayed there to rebuild its cache.
                        self.replay(io, &chains[i], id, shape, k, e, &mut replays, clock)
                            .await?;
                    }
                }
            }
            if let Some((engine, stage)) = &self.head {
                let last = k + 1 == shape.output.max(1);
                let d = engine
                    .step(clock.now(), id, stage, pass, 1.0, last)
                    .await
                    .map_err(|e| e.to_string())?;
                head_queue += d.queue;
                head_compute += d.compute;
            }
            t.tokens.push(clock.now());
        }
        // The stages' accounts follow their last results.
        if server_to_server {
            let _ = streams[0].0.finish();
            let recv = ret.as_mut().expect("server-to-server has a return stream");
            collect_dones(recv, self.max_frame, &mut t.nodes).await?;
        } else {
            for (send, recv) in streams.iter_mut() {
                let _ = send.finish();
                collect_dones(recv, self.max_frame, &mut t.nodes).await?;
            }
        }
        for d in &t.nodes {
            t.queue += Duration::from_nanos(d.queue_ns);
            t.compute += Duration::from_nanos(d.compute_ns);
            t.software += Duration::from_nanos(d.software_ns);
        }
        if self.head.is_some() {
            t.nodes.push(Done {
                node: self.name.clone(),
                queue_ns: head_queue.as_nanos() as u64,
                compute_ns: head_compute.as_nanos() as u64,
                software_ns: 0,
            });
            t.queue += head_queue;
            t.compute += head_compute;
        }
        Ok(t)
    }

    /// A client-relayed stage failed at step `k`: open its session again on the server
    /// that holds the span (through its chain, dialling again if the connection was lost)
    /// and replay the prompt and the `k` tokens generated so far as one prefill, which
    /// rebuilds the server's KV cache and yields step `k`'s hidden states. While no server
    /// answers, it tries again every [`REPLAY_RETRY`], at most [`MAX_REPLAYS`] times; the
    /// request's own timeout bounds the wait.
    #[allow(clippy::too_many_arguments)]
    async fn replay(
        &self,
        io: &mut Io,
        chain: &[usize],
        id: u64,
        shape: Shape,
        k: u32,
        mut error: String,
        replays: &mut u32,
        clock: &Clock,
    ) -> Result<(), String> {
        let tokens = shape.prompt + k;
        // Where the span is held: the standby servers first (Petals' client picks another
        // server for the failed span), then the stage's own server (once it is back).
        let stage = chain[chain.len() - 1];
        let mut servers: Vec<Vec<usize>> = self
            .standby
            .iter()
            .filter(|&&(s, _)| s == stage)
            .map(|&(_, r)| vec![r])
            .collect();
        servers.push(chain.to_vec());
        let mut attempt = 0usize;
        loop {
            if *replays >= MAX_REPLAYS {
                return Err(format!("{error} (after {MAX_REPLAYS} replays)"));
            }
            *replays += 1;
            let chain = &servers[attempt % servers.len()];
            attempt += 1;
            // A session of its own: the old one may still hold its place on a server that
            // did not crash (a partition), until that server notices.
            let session = id | (*replays as u64) << 48;
            let request = Request {
                id: session,
                output_tokens: shape.output.max(1) - k,
                mode: Mode::Stage,
                route: self.names(&chain[1..]),
                prompt: Vec::new(),
            };
            match self.open(chain, &request).await {
                Ok(mut fresh) => {
                    self.faults.failover(tokens as u64);
                    let bytes = tokens as usize * self.hidden_bytes;
                    match stage_step(&mut fresh, session, tokens, bytes, self.max_frame).await {
                        Ok(()) => {
                            *io = fresh;
                            return Ok(());
                        }
                        Err(e) => error = e,
                    }
                }
                Err(e) => error = e,
            }
            clock.sleep(REPLAY_RETRY).await;
        }
    }

    /// A server-to-server chain broke at step `k`: open the chain and the return stream
    /// again (dialling again where a connection was lost) and replay the prompt and the `k`
    /// tokens so far through it as one prefill. Every stage of the new chain rebuilds its
    /// cache, the healthy ones too: Petals 2 replaces only the failed server's session,
    /// from inputs the client kept, so this costs more than Petals does (docs/faults.md).
    /// Retries as [`Client::replay`] does.
    #[allow(clippy::too_many_arguments)]
    async fn replay_chain(
        &self,
        chains: &[Vec<usize>],
        id: u64,
        shape: Shape,
        k: u32,
        mut error: String,
        replays: &mut u32,
        clock: &Clock,
    ) -> Result<(Io, quinn::RecvStream), String> {
        let tokens = shape.prompt + k;
        let all: Vec<usize> = chains.iter().flatten().copied().collect();
        let last = &chains[chains.len() - 1];
        loop {
            if *replays >= MAX_REPLAYS {
                return Err(format!("{error} (after {MAX_REPLAYS} replays)"));
            }
            *replays += 1;
            let session = id | (*replays as u64) << 48;
            let request = |mode, route| Request {
                id: session,
                output_tokens: shape.output.max(1) - k,
                mode,
                route,
                prompt: Vec::new(),
            };
            let opened = async {
                let chain = self
                    .open(&all, &request(Mode::Chain, self.names(&all[1..])))
                    .await?;
                let (mut send, back) = self
                    .open(last, &request(Mode::Return, self.names(&last[1..])))
                    .await?;
                send.finish()
                    .map_err(|e| format!("finishing the return stream: {e}"))?;
                Ok::<_, String>((chain, back))
            };
            match opened.await {
                Ok((mut chain, mut back)) => {
                    self.faults.failover(tokens as u64);
                    let bytes = tokens as usize * self.hidden_bytes;
                    match chain_step(
                        &mut chain,
                        &mut back,
                        session,
                        tokens,
                        bytes,
                        self.max_frame,
                    )
                    .await
                    {
                        Ok(()) => return Ok((chain, back)),
                        Err(e) => error = e,
                    }
                }
                Err(e) => error = e,
            }
            clock.sleep(REPLAY_RETRY).await;
        }
    }

    /// Hedged replicas: the first copy goes to one replica (in turn by request id); while no
    /// first token has come, a further copy goes to the next replica after the hedge delay.
    /// The first replica to answer wins; the others' streams are reset, which cancels their
    /// work.
    async fn hedged(
        &self,
        replicas: &[usize],
        id: u64,
        shape: Shape,
        clock: &Clock,
    ) -> Result<Timeline, String> {
        let k = replicas.len();
        let order: Vec<usize> = (0..k).map(|i| replicas[(id as usize + i) % k]).collect();
        let delay = match self.hedge_after {
            Some(HedgeAfter::Delay(d)) => Some(d),
            Some(HedgeAfter::Percentile(q)) => self
                .recent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .percentile(q),
            None => None,
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, CopyEvent)>();
        let mut cancels: Vec<CancellationToken> = Vec::new();
        let start = clock.now();
        // A copy sent after a failure carries the tokens generated so far after the prompt,
        // and its tokens are numbered from there.
        let mut offsets: Vec<u32> = Vec::new();
        let launch = |i: usize, cancels: &mut Vec<CancellationToken>, got: u32| {
            let cancel = CancellationToken::new();
            cancels.push(cancel.clone());
            let shape = Shape {
                prompt: shape.prompt + got,
                output: shape.output.max(1) - got,
            };
            let copy = Copy {
                index: i,
                request: self.request(id, shape, Mode::Serve, Vec::new()),
                conn: self.current(order[i]),
                name: self.names[order[i]].clone(),
                max_frame: self.max_frame,
            };
            tokio::spawn(copy.run(tx.clone(), cancel))
        };
        launch(0, &mut cancels, 0);
        offsets.push(0);
        let mut next_at = delay.map(|d| start + d);
        let mut winner: Option<usize> = None;
        let mut failed = vec![false; k];
        let mut t = Timeline::default();
        let cancel_all = |cancels: &[CancellationToken]| cancels.iter().for_each(|c| c.cancel());
        loop {
            let hedge = winner.is_none() && cancels.len() < k && next_at.is_some();
            let event = tokio::select! {
                biased;
                e = rx.recv() => e,
                _ = clock.sleep_until(next_at.unwrap_or(start)), if hedge => {
                    launch(cancels.len(), &mut cancels, 0);
                    offsets.push(0);
                    next_at = delay.map(|d| clock.now() + d);
                    continue;
                }
            };
            let Some((i, frame)) = event else {
                cancel_all(&cancels);
                return Err("every replica stopped".into());
            };
            if winner.is_some_and(|w| w != i) {
                continue;
            }
            // A copy that answers with an error fails over like one whose stream broke.
            let frame = match frame {
                CopyEvent::Frame(Frame::Error { code, message }) => {
                    CopyEvent::Failed(format!("worker error {code}: {message}"))
                }
                f => f,
            };
            match frame {
                CopyEvent::Frame(Frame::Token { index, lead_us }) => {
                    if winner.is_none() {
                        winner = Some(i);
                        for (j, c) in cancels.iter().enumerate() {
                            if j != i {
                                c.cancel();
                            }
                        }
                        self.recent
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(clock.now().saturating_duration_since(start));
                    }
                    let index = index + offsets[i];
                    if index as usize != t.tokens.len() {
                        cancel_all(&cancels);
                        return Err(format!(
                            "token {index} arrived when {} was expected",
                            t.tokens.len()
                        ));
                    }
                    t.tokens.push(stamp(&t.tokens, clock.now(), lead(lead_us)));
                }
                CopyEvent::Frame(Frame::Done(d)) => {
                    t.queue += Duration::from_nanos(d.queue_ns);
                    t.compute += Duration::from_nanos(d.compute_ns);
                    t.software += Duration::from_nanos(d.software_ns);
                    t.nodes.push(d);
                }
                CopyEvent::Frame(other) => {
                    cancel_all(&cancels);
                    return Err(format!("unexpected {:?} frame", other.kind()));
                }
                CopyEvent::Failed(e) if winner == Some(i) => {
                    // The replica that was answering failed: the request fails over to the
                    // next replica, which gets the prompt and the tokens so far as its
                    // prompt (a prefill rebuilds the KV cache there) and generates the rest.
                    let got = t.tokens.len() as u32;
                    if cancels.len() >= k || got >= shape.output.max(1) {
                        cancel_all(&cancels);
                        return Err(e);
                    }
                    self.faults.failover((shape.prompt + got) as u64);
                    let next = cancels.len();
                    launch(next, &mut cancels, got);
                    offsets.push(got);
                    winner = Some(next);
                }
                CopyEvent::Closed if winner == Some(i) => {
                    cancel_all(&cancels);
                    if t.tokens.len() != shape.output.max(1) as usize {
                        return Err(format!(
                            "the replica finished after {} of {} tokens",
                            t.tokens.len(),
                            shape.output
                        ));
                    }
                    t.extra_copies = cancels.len() as u32 - 1;
                    t.hedge_won = i != 0;
                    return Ok(t);
                }
                ended => {
                    failed[i] = true;
                    if cancels.len() < k {
                        // Fails over before the first token: the next replica gets the
                        // request.
                        self.faults.failover(shape.prompt as u64);
                        launch(cancels.len(), &mut cancels, 0);
                        offsets.push(0);
                    } else if failed.iter().take(cancels.len()).all(|&f| f) {
                        return Err(match ended {
                            CopyEvent::Failed(e) => e,
                            _ => "every replica closed its stream without an answer".into(),
                        });
                    }
                }
            }
        }
    }
}

/// How often a pipeline client tries again to reach a stage's server after a failure.
pub const REPLAY_RETRY: Duration = Duration::from_secs(1);
/// How many times one request may replay its history before it fails.
pub const MAX_REPLAYS: u32 = 8;

/// One step of a client-relayed stage: its hidden states there and back.
async fn stage_step(
    io: &mut Io,
    id: u64,
    tokens: u32,
    bytes: usize,
    max: u32,
) -> Result<(), String> {
    io.0.write_activations(id, tokens, bytes)
        .await
        .map_err(|e| e.to_string())?;
    read_activations(&mut io.1, max)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// One step of a server-to-server chain: the hidden states into the first stage, the
/// last stage's back on the return stream.
async fn chain_step(
    chain: &mut Io,
    back: &mut quinn::RecvStream,
    id: u64,
    tokens: u32,
    bytes: usize,
    max: u32,
) -> Result<(), String> {
    chain
        .0
        .write_activations(id, tokens, bytes)
        .await
        .map_err(|e| e.to_string())?;
    // The first stage answers on the chain stream only when something broke.
    tokio::select! {
        biased;
        r = read_activations(back, max) => r.map(|_| ()).map_err(|e| e.to_string()),
        f = read_frame(&mut chain.1, max) => Err(broken("the first stage", f)),
    }
}

/// One copy of a hedged request, sent to one replica by a task of its own.
struct Copy {
    index: usize,
    request: Request,
    conn: Option<quinn::Connection>,
    name: String,
    max_frame: u32,
}

impl Copy {
    /// Sends the copy and passes on what comes back until the stream ends or the copy is
    /// cancelled (it lost, or the request ended).
    async fn run(self, tx: mpsc::UnboundedSender<(usize, CopyEvent)>, cancel: CancellationToken) {
        let i = self.index;
        let Some(conn) = self.conn else {
            let _ = tx.send((
                i,
                CopyEvent::Failed(format!("no connection to {}", self.name)),
            ));
            return;
        };
        let (mut send, mut recv) =
            match open_stream(&conn, std::slice::from_ref(&self.name), &self.request).await {
                Ok(io) => io,
                Err(e) => {
                    let _ = tx.send((i, CopyEvent::Failed(e)));
                    return;
                }
            };
        let _ = send.finish();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let _ = recv.stop(0u32.into());
                    return;
                }
                f = read_frame(&mut recv, self.max_frame) => match f {
                    Ok(Some(frame)) => {
                        if tx.send((i, CopyEvent::Frame(frame))).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send((i, CopyEvent::Closed));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send((i, CopyEvent::Failed(e.to_string())));
                        return;
                    }
                },
            }
        }
    }
}

/// What a hedged copy's stream task reports.
enum CopyEvent {
    Frame(Frame),
    /// The stream ended cleanly.
    Closed,
    /// The stream or its opening failed.
    Failed(String),
}

/// Reads token frames and then the nodes' `Done` frames until the stream ends.
async fn read_tokens(
    recv: &mut quinn::RecvStream,
    shape: Shape,
    clock: &Clock,
    max_frame: u32,
    t: &mut Timeline,
) -> Result<(), String> {
    loop {
        match read_frame(recv, max_frame)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(Frame::Token { index, lead_us }) => {
                if index as usize != t.tokens.len() {
                    return Err(format!(
                        "token {index} arrived when {} was expected",
                        t.tokens.len()
                    ));
                }
                t.tokens.push(stamp(&t.tokens, clock.now(), lead(lead_us)));
            }
            Some(Frame::Done(d)) => t.nodes.push(d),
            Some(Frame::Error { code, message }) => {
                return Err(format!("worker error {code}: {message}"));
            }
            Some(other) => {
                return Err(format!(
                    "unexpected {:?} frame from the worker",
                    other.kind()
                ));
            }
            None => break,
        }
    }
    if t.tokens.len() != shape.output.max(1) as usize {
        return Err(format!(
            "the worker finished after {} of {} tokens",
            t.tokens.len(),
            shape.output
        ));
    }
    if t.nodes.is_empty() {
        return Err("the worker closed the stream before the request was done".into());
    }
    Ok(())
}

async fn collect_dones(
    recv: &mut quinn::RecvStream,
    max_frame: u32,
    out: &mut Vec<Done>,
) -> Result<(), String> {
    loop {
        match read_frame(recv, max_frame)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(Frame::Done(d)) => out.push(d),
            Some(Frame::Error { code, message }) => {
                return Err(format!("stage error {code}: {message}"));
            }
            Some(_) => {}
            None => return Ok(()),
        }
    }
}

/// A token frame's lead as a duration.
fn lead(lead_us: u32) -> Duration {
    Duration::from_micros(u64::from(lead_us))
}

/// When a token that arrives `now` and was ready `lead` before it is stamped: `now - lead`,
/// never before the token before it (the tokens of a chunk that carried several share the
/// gap since the previous chunk; docs/engines.md, "Timing rules"). A lead of zero stamps the
/// arrival.
pub fn stamp(tokens: &[Instant], now: Instant, lead: Duration) -> Instant {
    let at = now.checked_sub(lead).unwrap_or(now);
    tokens.last().map_or(at, |&prev| at.max(prev)).min(now)
}

#[cfg(test)]
mod stamp_tests {
    use super::*;

    #[test]
    fn a_lead_moves_a_token_back_but_never_before_the_one_before_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // No lead: the arrival.
        assert_eq!(stamp(&[], t0 + ms(10), Duration::ZERO), t0 + ms(10));
        // A lead of 4 ms from an arrival at 30 ms: 26 ms.
        assert_eq!(stamp(&[t0 + ms(10)], t0 + ms(30), ms(4)), t0 + ms(26));
        // A lead past the previous token stops at it.
        assert_eq!(stamp(&[t0 + ms(10)], t0 + ms(30), ms(25)), t0 + ms(10));
    }
}
