//! A node of the topology other than a client: one QUIC endpoint that serves every request
//! stream reaching it, by the request's mode (DESIGN §7) and the node's part in the topology.
//! Every node measures its own queue and compute time for a request on its own clock and
//! sends them back in-band (`Done` frames), so the breakdown never compares two hosts' clocks.

use crate::clock::Clock;
use crate::compute::Pass as Work;
use crate::compute::Stage;
use crate::compute::{Engine, Event, Job, SessionGuard, StepDone};
use crate::net::congestion::NagleState;
use crate::net::framed::{FrameIoError, read_frame};
use crate::net::sender::Sender;
use crate::net::wire::{self, Done, Frame, Mode, Request};
use crate::scenario::SoftwareCost;
use crate::topology::Part;
use crate::topology::pattern::{Direction, Op};
use crate::topology::rpc::{StarPattern, kv_len};
use futures_util::future::try_join_all;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Sizes of what crosses the links, from the model.
#[derive(Clone, Debug)]
pub struct Payloads {
    /// Hidden state of one token: hidden × activation_bytes.
    pub hidden: usize,
    /// One tensor member's slice of the logits of one position: vocab / ways × 4 bytes (fp32).
    pub logits_slice: usize,
    /// A tensor group's step: its pattern's computes and synchronisations, in order.
    pub tensor: Arc<[Op]>,
    /// A star's calls to each remote stage per step.
    pub star: StarPattern,
    /// The layers each of a star's remote stages holds, by name (the size of its graph).
    pub remote_layers: Arc<HashMap<String, u32>>,
}

/// Counters of a node's server.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub streams: AtomicU64,
    pub malformed: AtomicU64,
}

enum Rendezvous {
    Waiting(oneshot::Sender<Sender>),
    Ready(Sender),
}

/// A running node.
pub struct Node {
    pub name: String,
    pub part: Part,
    /// The layers it computes (its span; a tensor member's slice of every layer).
    pub stage: Option<Arc<Stage>>,
    /// A star host's embeddings and LM head.
    pub head: Option<Arc<Stage>>,
    /// What computes its work.
    pub engine: Option<Arc<dyn Engine>>,
    pub clock: Clock,
    pub max_frame: u32,
    pub payloads: Payloads,
    /// Its `send_cost` and `recv_cost`: spent serving a whole request ([`Node::whole`]),
    /// and on every message a stage, a star host or a tensor group's node sends or
    /// receives ([`Node::spend`]).
    pub software: SoftwareCost,
    /// The node's one dispatch thread: the software time of every message it handles, for
    /// every request, is spent holding it, one message at a time.
    dispatch: tokio::sync::Mutex<()>,
    /// Connections this node opened to the nodes after it, by name.
    pub peers: Mutex<HashMap<String, quinn::Connection>>,
    /// Its endpoint and every node's address, to dial a peer again after its connection
    /// was lost (an outage past the idle timeout); one dial at a time.
    dialer: Mutex<Option<(quinn::Endpoint, Addresses)>>,
    dialing: tokio::sync::Mutex<()>,
    returns: Mutex<HashMap<u64, Rendezvous>>,
    pub stats: Arc<ServerStats>,
    /// Cancelled when the node crashes (`[[fault]] kind = "crash"`): every stream it was
    /// serving stops, and a fresh token serves what comes after the restart.
    epoch: Mutex<CancellationToken>,
    /// The connections it accepted in this epoch, closed by a crash.
    accepted: Mutex<Vec<quinn::Connection>>,
}

type Io = (Sender, quinn::RecvStream);

/// Every node's in-memory address, by name.
pub type Addresses = Arc<HashMap<String, std::net::SocketAddr>>;

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        part: Part,
        stage: Option<Arc<Stage>>,
        head: Option<Arc<Stage>>,
        engine: Option<Arc<dyn Engine>>,
        clock: Clock,
        max_frame: u32,
        payloads: Payloads,
        software: SoftwareCost,
    ) -> Arc<Self> {
        Arc::new(Node {
            name,
            part,
            stage,
            head,
            engine,
            clock,
            max_frame,
            payloads,
            software,
            dispatch: tokio::sync::Mutex::new(()),
            peers: Mutex::new(HashMap::new()),
            dialer: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            returns: Mutex::new(HashMap::new()),
            stats: Arc::new(ServerStats::default()),
            epoch: Mutex::new(CancellationToken::new()),
            accepted: Mutex::new(Vec::new()),
        })
    }

    fn peer(&self, name: &str) -> Result<quinn::Connection, String> {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| format!("{} has no connection to {name}", self.name))
    }

    /// Spends `d` of software time on the node's dispatch thread (a sleep on its clock,
    /// after the messages of other requests ahead of it) and adds what the message waited
    /// for it to `software`. The caller waits: on a stage, a star host or a tensor group's
    /// node a message's software time serialises with the request's compute, as on a
    /// single-threaded runtime (docs/topologies.md).
    async fn spend(&self, d: Duration, software: &mut Duration) {
        if d.is_zero() {
            return;
        }
        let start = self.clock.now();
        let _thread = self.dispatch.lock().await;
        self.clock.sleep(d).await;
        *software += self.clock.now().saturating_duration_since(start);
    }

    /// Sends hidden states (or a synchronisation, an RPC call or reply) of `len` bytes
    /// after their send cost.
    async fn send_activations(
        &self,
        send: &mut Sender,
        id: u64,
        tokens: u32,
        len: usize,
        software: &mut Duration,
    ) -> Result<(), FrameIoError> {
        let bytes = wire::activations_frame_len(len) as u64;
        self.spend(self.software.send.of(bytes), software).await;
        send.write_activations(id, tokens, len).await
    }

    /// Reads the next message, which must be hidden states, then spends its receive cost;
    /// returns their number of tokens.
    async fn recv_activations(
        &self,
        recv: &mut quinn::RecvStream,
        software: &mut Duration,
    ) -> Result<u32, FrameIoError> {
        let (tokens, bytes) = read_message(recv, self.max_frame).await?;
        self.spend(self.software.recv.of(bytes), software).await;
        Ok(tokens)
    }

    /// The receive cost of the request frame that started a stream serving `request`
    /// (a star host's, a tensor root's: the client's request, prompt included).
    fn request_cost(&self, request: &Request) -> Duration {
        let bytes = wire::HEADER_LEN
            + wire::request_payload_len(request.prompt.len() as u32, &request.route);
        self.software.recv.of(bytes as u64)
    }

    /// Sends token `index`'s frame after its send cost.
    async fn send_token(
        &self,
        send: &mut Sender,
        index: u32,
        software: &mut Duration,
        buf: &mut Vec<u8>,
    ) -> Result<(), FrameIoError> {
        self.spend(
            self.software.send.of(wire::TOKEN_FRAME_LEN as u64),
            software,
        )
        .await;
        send.write_frame(&token_frame(index, Duration::ZERO), buf)
            .await
    }

    fn epoch(&self) -> CancellationToken {
        self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The node crashes: every stream it serves stops where it is (its engine drops those
    /// sessions and jobs: the KV cache is gone), and every connection it holds is closed on
    /// its side, so it comes back with no connection state. Its close frames never arrive
    /// (the fault drops its links); a peer learns of the crash when its connection times
    /// out, or when the restarted node answers the old connection with a reset.
    pub fn crash(&self) {
        let old = std::mem::replace(
            &mut *self.epoch.lock().unwrap_or_else(|e| e.into_inner()),
            CancellationToken::new(),
        );
        old.cancel();
        let accepted =
            std::mem::take(&mut *self.accepted.lock().unwrap_or_else(|e| e.into_inner()));
        for c in accepted {
            c.close(0x20u32.into(), b"crashed");
        }
        for c in self
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            c.close(0x20u32.into(), b"crashed");
        }
        self.returns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Lets the node dial its peers again when a connection was lost.
    pub fn set_dialer(&self, endpoint: quinn::Endpoint, addrs: Addresses) {
        *self.dialer.lock().unwrap_or_else(|e| e.into_inner()) = Some((endpoint, addrs));
    }

    /// The connection to `name`, dialled again if it was lost (a relay reconnects).
    async fn live_peer(&self, name: &str) -> Result<quinn::Connection, String> {
        let conn = self.peer(name)?;
        if conn.close_reason().is_none() {
            return Ok(conn);
        }
        let dialer = self
            .dialer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some((endpoint, addrs)) = dialer else {
            return Ok(conn);
        };
        let Some(&addr) = addrs.get(name) else {
            return Ok(conn);
        };
        let _one = self.dialing.lock().await;
        let conn = self.peer(name)?;
        if conn.close_reason().is_none() {
            return Ok(conn);
        }
        let fresh = endpoint
            .connect(addr, crate::net::endpoint::SERVER_NAME)
            .map_err(|e| format!("reconnecting to {name}: {e}"))?
            .await
            .map_err(|e| format!("reconnecting to {name}: {e}"))?;
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), fresh.clone());
        Ok(fresh)
    }

    /// Opens a stream to the first node of `route` and sends it the request for the rest.
    async fn open(&self, route: &[String], request: &Request) -> Result<Io, String> {
        open_stream(&self.live_peer(&route[0]).await?, route, request).await
    }

    /// Opens a session stream (no prompt, no route) to each node of the request's route: a
    /// star's remote stages, a tensor group's members.
    async fn open_sessions(&self, request: &Request, mode: Mode) -> Result<Vec<Io>, Failure> {
        let session = Request {
            mode,
            route: Vec::new(),
            prompt: Vec::new(),
            ..request.clone()
        };
        let mut streams = Vec::with_capacity(request.route.len());
        for name in &request.route {
            streams.push(
                self.open(std::slice::from_ref(name), &session)
                    .await
                    .map_err(Failure::Peer)?,
            );
        }
        Ok(streams)
    }

    /// Ends the sessions this node opened: passes their `Done` frames to the client, then
    /// its own, and finishes the client's stream.
    async fn close_sessions(
        &self,
        sessions: &mut [Io],
        send: &mut Sender,
        acc: StepDone,
        software: Duration,
        buf: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        for (s, r) in sessions.iter_mut() {
            let _ = s.finish();
            forward_dones(r, send, self.max_frame, buf).await?;
        }
        let own = Frame::Done(done(&self.name, acc.queue, acc.compute, software));
        send.write_frame(&own, buf).await?;
        let _ = send.finish();
        Ok(())
    }

    fn engine(&self) -> Result<(&dyn Engine, &Arc<Stage>), String> {
        match (&self.engine, &self.stage) {
            (Some(e), Some(s)) => Ok((&**e, s)),
            _ => Err(format!("{} computes nothing", self.name)),
        }
    }

    /// Runs one step of a session on this node's engine and adds its account to `acc`.
    async fn step(
        &self,
        session: u64,
        stage: &Arc<Stage>,
        work: Work,
        scale: f64,
        last: bool,
        acc: &mut StepDone,
    ) -> Result<(), Failure> {
        let (engine, _) = self.engine().map_err(Failure::Refused)?;
        let d = engine
            .step(self.clock.now(), session, stage, work, scale, last)
            .await
            .map_err(|e| Failure::Refused(e.to_string()))?;
        acc.add(d);
        Ok(())
    }

    /// Serves the streams arriving on `endpoint` until cancelled.
    /// A connection from an address in `configs` is accepted with that server
    /// configuration (its direction's transport settings), any other with the endpoint's.
    pub fn serve(
        self: &Arc<Self>,
        endpoint: quinn::Endpoint,
        configs: HashMap<SocketAddr, Arc<quinn::ServerConfig>>,
        cancel: CancellationToken,
    ) {
        let configs = Arc::new(configs);
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                let incoming = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    i = endpoint.accept() => match i { Some(i) => i, None => break },
                };
                let (node, cancel) = (node.clone(), cancel.clone());
                let accepting = match configs.get(&incoming.remote_address()) {
                    Some(c) => incoming.accept_with(c.clone()),
                    None => incoming.accept(),
                };
                tokio::spawn(async move {
                    let Ok(connecting) = accepting else { return };
                    let Ok(conn) = connecting.await else { return };
                    let epoch = node.epoch();
                    if epoch.is_cancelled() {
                        return;
                    }
                    node.accepted
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(conn.clone());
                    // Whether this connection's streams write under Nagle's algorithm.
                    let nagle = NagleState::of(&conn);
                    loop {
                        let (send, recv) = tokio::select! {
                            biased;
                            _ = cancel.cancelled() => return,
                            _ = epoch.cancelled() => return,
                            s = conn.accept_bi() => match s { Ok(s) => s, Err(_) => return },
                        };
                        node.stats.streams.fetch_add(1, Ordering::Relaxed);
                        let send = Sender::new(send, nagle.clone());
                        let (node, epoch) = (node.clone(), epoch.clone());
                        tokio::spawn(async move {
                            let r = tokio::select! {
                                biased;
                                // A crash: the work in flight is lost, nothing is answered.
                                _ = epoch.cancelled() => return,
                                r = node.handle(send, recv) => r,
                            };
                            if let Err(Failure::Malformed | Failure::Frame(FrameIoError::Wire(_))) =
                                r
                            {
                                node.stats.malformed.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                });
            }
        });
    }

    async fn handle(
        self: &Arc<Self>,
        mut send: Sender,
        mut recv: quinn::RecvStream,
    ) -> Result<(), Failure> {
        let mut buf = Vec::new();
        let request = match read_frame(&mut recv, self.max_frame).await {
            Ok(Some(Frame::Request(r))) => r,
            Ok(other) => {
                let message = match other {
                    None => "the stream ended before a request".to_string(),
                    Some(f) => format!("expected a Request frame, got {:?}", f.kind()),
                };
                let _ = send
                    .write_frame(&Frame::Error { code: 1, message }, &mut buf)
                    .await;
                let _ = send.finish();
                return Err(Failure::Malformed);
            }
            Err(e) => {
                let code = match &e {
                    FrameIoError::Wire(w) => w.code(),
                    _ => 0x12,
                };
                let _ = send.reset(code.into());
                let _ = recv.stop(code.into());
                return Err(match e {
                    FrameIoError::Wire(_) | FrameIoError::Truncated => Failure::Malformed,
                    e => Failure::Frame(e),
                });
            }
        };
        match (&self.part, request.mode) {
            (Part::Relay, _) => {}
            (_, Mode::Return) => {
                self.put_return(request.id, send);
                // The client finished its side after the request.
                while let Ok(Some(_)) = read_frame(&mut recv, self.max_frame).await {}
                return Ok(());
            }
            _ => {}
        }
        let result = match (&self.part, request.mode) {
            (Part::Relay, _) => self.relay(&mut send, &mut recv, request.clone()).await,
            (Part::Whole, Mode::Serve) => self.whole(&mut send, &request).await,
            (Part::StarHost, Mode::Serve) => match self.head.clone() {
                Some(head) => self.star(&mut send, &request, &head).await,
                None => Err(Failure::Refused(format!("{} has no LM head", self.name))),
            },
            (Part::TensorRoot, Mode::Serve) => self.tensor_root(&mut send, &request).await,
            (Part::Stage, Mode::Stage | Mode::Chain) => {
                self.stage(&mut send, &mut recv, &request).await
            }
            (Part::TensorMember, Mode::Tensor) => {
                self.tensor_member(&mut send, &mut recv, &request).await
            }
            (part, mode) => Err(Failure::Refused(format!(
                "{} ({part:?}) cannot take a {mode:?} request",
                self.name
            ))),
        };
        let result = result.map_err(|e| match e {
            Failure::Frame(FrameIoError::Peer(m)) => Failure::Peer(m),
            e => e,
        });
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Failure::Refused(message) | Failure::Peer(message) = &e {
                    let frame = Frame::Error {
                        code: 2,
                        message: message.clone(),
                    };
                    let _ = send.write_frame(&frame, &mut buf).await;
                    let _ = send.finish();
                }
                Err(e)
            }
        }
    }

    fn put_return(&self, id: u64, send: Sender) {
        let mut map = self.returns.lock().unwrap_or_else(|e| e.into_inner());
        match map.remove(&id) {
            Some(Rendezvous::Waiting(tx)) => {
                let _ = tx.send(send);
            }
            _ => {
                map.insert(id, Rendezvous::Ready(send));
            }
        }
    }

    async fn take_return(&self, id: u64) -> Result<Sender, String> {
        let rx = {
            let mut map = self.returns.lock().unwrap_or_else(|e| e.into_inner());
            match map.remove(&id) {
                Some(Rendezvous::Ready(s)) => return Ok(s),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    map.insert(id, Rendezvous::Waiting(tx));
                    rx
                }
            }
        };
        rx.await
            .map_err(|_| "the client's return stream never came".to_string())
    }

    /// Forwards the stream to the next node of the route, byte for byte, both ways.
    async fn relay(
        &self,
        send: &mut Sender,
        recv: &mut quinn::RecvStream,
        request: Request,
    ) -> Result<(), Failure> {
        if request.route.is_empty() {
            return Err(Failure::Refused(format!(
                "relay {} got a request with nowhere to go",
                self.name
            )));
        }
        let forward = Request {
            route: request.route[1..].to_vec(),
            ..request.clone()
        };
        let (mut s2, mut r2) = self
            .open(&request.route, &forward)
            .await
            .map_err(Failure::Peer)?;
        // A copy that fails resets the other side, so a broken hop never looks like a
        // clean end of the stream.
        let up = async {
            let r = s2.copy_from(recv).await;
            match &r {
                Ok(_) => {
                    let _ = s2.finish();
                }
                Err(_) => {
                    let _ = s2.reset(0x13u32.into());
                }
            }
            r
        };
        let down = async {
            let r = send.copy_from(&mut r2).await;
            if r.is_ok() {
                let _ = send.finish();
            }
            r
        };
        let (a, b) = tokio::join!(up, down);
        a.and(b)
            .map(|_| ())
            .map_err(|e| Failure::Peer(format!("relay {}: {e}", self.name)))
    }

    /// Serves a whole request: prefill and decode on this node, tokens streamed back.
    async fn whole(&self, send: &mut Sender, request: &Request) -> Result<(), Failure> {
        // A whole request needs only the engine (a real server's worker has no stage).
        let engine = self
            .engine
            .as_deref()
            .ok_or_else(|| Failure::Refused(format!("{} computes nothing", self.name)))?;
        if !self.software.is_zero() {
            return self.whole_with_software(send, request, engine).await;
        }
        let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
        engine
            .submit(Job {
                prompt: request.prompt.len() as u32,
                output: request.output_tokens.max(1),
                arrived: self.clock.now(),
                events,
            })
            .map_err(|e| Failure::Refused(e.to_string()))?;
        let mut buf = Vec::new();
        // A client that stops reading (a hedge that lost) cancels the request at once: the
        // engine drops a job whose events nobody receives, queued or running.
        let stopped = send.stopped();
        tokio::pin!(stopped);
        loop {
            let event = tokio::select! {
                biased;
                e = rx.recv() => match e { Some(e) => e, None => break },
                _ = &mut stopped => return Ok(()),
            };
            let frame = match event {
                Event::Token { index, lead } => token_frame(index, lead),
                Event::Done { queue, compute } => {
                    Frame::Done(done(&self.name, queue, compute, Duration::ZERO))
                }
                Event::Failed { reason } => return Err(Failure::Refused(reason)),
            };
            send.write_frame(&frame, &mut buf).await?;
        }
        let _ = send.finish();
        Ok(())
    }

    /// [`Self::whole`] on a node with software costs (`send_cost`, `recv_cost`): the
    /// request's receive cost is spent before the job is submitted, and each frame's send
    /// cost before the frame is written, on the node's clock (simulated time on the virtual
    /// clock, a sleep on the real one). Frames are sent one after another, so a token ready
    /// while an earlier one is still being sent waits for it: token sends overlap the
    /// engine's next steps, which go on meanwhile.
    ///
    /// Its `Done` reports as software time what of it lies on the request's path: the
    /// receive cost, and how long the last token waited from when the engine had it to
    /// when it was written (its own send cost and any backlog of earlier sends). The
    /// `Done` frame's own send cost comes after the last token, off the path of every
    /// metric, and is spent but not reported.
    async fn whole_with_software(
        &self,
        send: &mut Sender,
        request: &Request,
        engine: &dyn Engine,
    ) -> Result<(), Failure> {
        let cost = self.software;
        let received = (wire::HEADER_LEN
            + wire::request_payload_len(request.prompt.len() as u32, &request.route))
            as u64;
        let recv = cost.recv.of(received);
        if !recv.is_zero() {
            self.clock.sleep(recv).await;
        }
        let (events, mut raw) = tokio::sync::mpsc::unbounded_channel();
        let output = request.output_tokens.max(1);
        engine
            .submit(Job {
                prompt: request.prompt.len() as u32,
                output,
                arrived: self.clock.now(),
                events,
            })
            .map_err(|e| Failure::Refused(e.to_string()))?;
        // Each event stamped with when the engine sent it, while this task may be busy
        // sending an earlier frame. (On the virtual clock the stamp is exact: no time passes
        // while a task is ready to run.) The stamper ends when this request's task does.
        let (stamped, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let clock = self.clock.clone();
        tokio::spawn(async move {
            while let Some(e) = raw.recv().await {
                if stamped.send((clock.now(), e)).is_err() {
                    break;
                }
            }
        });
        let mut buf = Vec::new();
        let mut last_wait = Duration::ZERO;
        let stopped = send.stopped();
        tokio::pin!(stopped);
        loop {
            let (ready, event) = tokio::select! {
                biased;
                e = rx.recv() => match e { Some(e) => e, None => break },
                _ = &mut stopped => return Ok(()),
            };
            let (frame, bytes) = match event {
                Event::Token { index, lead } => {
                    (token_frame(index, lead), wire::TOKEN_FRAME_LEN as u64)
                }
                Event::Done { queue, compute } => {
                    let software = recv + last_wait;
                    let d = done(&self.name, queue, compute, software);
                    let bytes = wire::done_frame_len(&self.name) as u64
                        + if d.software_ns != 0 { 8 } else { 0 };
                    (Frame::Done(d), bytes)
                }
                Event::Failed { reason } => return Err(Failure::Refused(reason)),
            };
            let c = cost.send.of(bytes);
            if !c.is_zero() {
                tokio::select! {
                    biased;
                    _ = self.clock.sleep(c) => {}
                    _ = &mut stopped => return Ok(()),
                }
            }
            if let Frame::Token { index, .. } = frame
                && index + 1 == output
            {
                last_wait = self.clock.now().saturating_duration_since(ready);
            }
            send.write_frame(&frame, &mut buf).await?;
        }
        let _ = send.finish();
        Ok(())
    }

    /// A pipeline stage: for each step, read the hidden states, compute this span, pass them
    /// on (client-relayed: back on this stream; server-to-server: down the route, the last
    /// stage to the client's return stream).
    async fn stage(
        &self,
        send: &mut Sender,
        recv: &mut quinn::RecvStream,
        request: &Request,
    ) -> Result<(), Failure> {
        let (engine, stage) = self.engine().map_err(Failure::Refused)?;
        let chain = request.mode == Mode::Chain;
        if !chain && !self.payloads.star.is_default() {
            return self.rpc_stage(send, recv, request).await;
        }
        let mut next: Option<Io> = None;
        let mut ret: Option<Sender> = None;
        if chain && !request.route.is_empty() {
            let forward = Request {
                route: request.route[1..].to_vec(),
                ..request.clone()
            };
            next = Some(
                self.open(&request.route, &forward)
                    .await
                    .map_err(Failure::Peer)?,
            );
        } else if chain {
            ret = Some(self.take_return(request.id).await.map_err(Failure::Peer)?);
        }
        let _guard = SessionGuard {
            engine,
            session: request.id,
        };
        let mut acc = StepDone::default();
        let mut software = Duration::ZERO;
        let mut context = 0u32;
        let output = request.output_tokens.max(1);
        let mut buf = Vec::new();
        for k in 0..output {
            // Downstream sends nothing back until the end: an error frame or a closed stream
            // from there fails the session now, and travels upstream to the client.
            let (tokens, bytes) = match &mut next {
                Some((_, down)) => tokio::select! {
                    biased;
                    t = read_message(recv, self.max_frame) => t?,
                    f = read_frame(down, self.max_frame) => {
                        return Err(Failure::Peer(broken("the next stage", f)));
                    }
                },
                None => read_message(recv, self.max_frame).await?,
            };
            self.spend(self.software.recv.of(bytes), &mut software)
                .await;
            let work = Work::received(k == 0, tokens, &mut context);
            self.step(request.id, stage, work, 1.0, k + 1 == output, &mut acc)
                .await?;
            // The client needs only the last position's hidden state for the LM head; a
            // client-relayed stage returns them all, as Petals 1.x does.
            let (out, n) = match (&mut next, &mut ret) {
                (Some((s, _)), _) => (s, tokens),
                (None, Some(s)) => (s, 1),
                (None, None) => (&mut *send, tokens),
            };
            let len = n as usize * self.payloads.hidden;
            self.send_activations(out, request.id, n, len, &mut software)
                .await?;
        }
        let own = Frame::Done(done(&self.name, acc.queue, acc.compute, software));
        match (next, ret) {
            (None, None) => {
                send.write_frame(&own, &mut buf).await?;
            }
            (next, ret) => {
                // Pass the earlier stages' accounts on with this one's.
                let mut out = match (next, ret) {
                    (Some((s, _)), _) => s,
                    (None, Some(s)) => s,
                    (None, None) => unreachable!("matched above"),
                };
                while let Some(frame) = read_frame(recv, self.max_frame).await? {
                    if let Frame::Done(_) = frame {
                        out.write_frame(&frame, &mut buf).await?;
                    }
                }
                out.write_frame(&own, &mut buf).await?;
                let _ = out.finish();
            }
        }
        let _ = send.finish();
        Ok(())
    }

    /// A star's remote stage under a pattern of several calls per step (llama.cpp RPC):
    /// the first request of a step says how many positions it has; on the call that
    /// computes, this span's step runs; each call the host waits on gets its reply.
    async fn rpc_stage(
        &self,
        send: &mut Sender,
        recv: &mut quinn::RecvStream,
        request: &Request,
    ) -> Result<(), Failure> {
        let (engine, stage) = self.engine().map_err(Failure::Refused)?;
        let _guard = SessionGuard {
            engine,
            session: request.id,
        };
        let mut acc = StepDone::default();
        let mut software = Duration::ZERO;
        let mut context = 0u32;
        let output = request.output_tokens.max(1);
        let mut buf = Vec::new();
        for k in 0..output {
            let tokens = self.recv_activations(recv, &mut software).await?;
            let work = Work::received(k == 0, tokens, &mut context);
            let calls = self
                .payloads
                .star
                .calls(&stage.model, tokens, kv_len(work), stage.layers);
            for (i, call) in calls.iter().enumerate() {
                if i > 0 {
                    self.recv_activations(recv, &mut software).await?;
                }
                if call.computes {
                    self.step(request.id, stage, work, 1.0, k + 1 == output, &mut acc)
                        .await?;
                }
                if let Some(reply) = call.reply {
                    self.send_activations(send, request.id, tokens, reply as usize, &mut software)
                        .await?;
                }
            }
        }
        let own = Frame::Done(done(&self.name, acc.queue, acc.compute, software));
        send.write_frame(&own, &mut buf).await?;
        let _ = send.finish();
        Ok(())
    }

    /// A star's host: its own layers, each remote stage's in turn (the activations go out
    /// and back through this host), then the LM head; tokens to the client.
    async fn star(
        &self,
        send: &mut Sender,
        request: &Request,
        head: &Arc<Stage>,
    ) -> Result<(), Failure> {
        let (engine, stage) = self.engine().map_err(Failure::Refused)?;
        let mut software = Duration::ZERO;
        self.spend(self.request_cost(request), &mut software).await;
        let mut remotes = self.open_sessions(request, Mode::Stage).await?;
        let _guard = SessionGuard {
            engine,
            session: request.id,
        };
        let mut acc = StepDone::default();
        let output = request.output_tokens.max(1);
        let prompt = request.prompt.len() as u32;
        let mut buf = Vec::new();
        for k in 0..output {
            let (tokens, work) = Work::of_step(k, prompt);
            let last = k + 1 == output;
            if stage.layers > 0 {
                self.step(request.id, stage, work, 1.0, false, &mut acc)
                    .await?;
            }
            // Each remote's calls in turn (`[topology] pattern`): a request, and the reply
            // where the host waits for one.
            for ((s, r), name) in remotes.iter_mut().zip(&request.route) {
                let layers = self.payloads.remote_layers.get(name).copied().unwrap_or(0);
                let calls = self
                    .payloads
                    .star
                    .calls(&stage.model, tokens, kv_len(work), layers);
                for call in calls {
                    let len = call.request as usize;
                    self.send_activations(s, request.id, tokens, len, &mut software)
                        .await?;
                    if call.reply.is_some() {
                        self.recv_activations(r, &mut software).await?;
                    }
                }
            }
            self.step(request.id, head, work, 1.0, last, &mut acc)
                .await?;
            self.send_token(send, k, &mut software, &mut buf).await?;
        }
        self.close_sessions(&mut remotes, send, acc, software, &mut buf)
            .await
    }

    /// The stage an op of the tensor pattern computes on this node (none: the LM head
    /// stays on the root).
    fn tensor_stage<'a>(&'a self, stage: &'a Arc<Stage>, head: bool) -> Option<&'a Arc<Stage>> {
        if head {
            self.head.as_ref()
        } else {
            Some(stage)
        }
    }

    /// The index of the last op of a step that computes on this node.
    fn last_tensor_compute(&self, ops: &[Op]) -> Option<usize> {
        ops.iter().rposition(|o| match *o {
            Op::Compute { head, .. } => !head || self.head.is_some(),
            Op::Sync(_) => false,
        })
    }

    /// A tensor group's root: per step, walk the pattern's ops (`Plan::tensor`): compute
    /// its share, broadcast to the members, gather from them, or both at once (an
    /// exchange); then the token to the client.
    async fn tensor_root(&self, send: &mut Sender, request: &Request) -> Result<(), Failure> {
        let (engine, stage) = self.engine().map_err(Failure::Refused)?;
        let mut software = Duration::ZERO;
        self.spend(self.request_cost(request), &mut software).await;
        let mut members = self.open_sessions(request, Mode::Tensor).await?;
        let _guard = SessionGuard {
            engine,
            session: request.id,
        };
        let ops = self.payloads.tensor.clone();
        let last_compute = self.last_tensor_compute(&ops);
        let mut acc = StepDone::default();
        // Take this request's place in the root's batch before the members start on it: the
        // root decides which requests the group serves (members follow it, unlimited), so
        // no two nodes can each hold a request the other waits for.
        // (Its compute is nothing: a step of no tokens, at scale 0.)
        self.step(
            request.id,
            stage,
            Work::Prefill { tokens: 0 },
            0.0,
            false,
            &mut acc,
        )
        .await?;
        let output = request.output_tokens.max(1);
        let prompt = request.prompt.len() as u32;
        let mut buf = Vec::new();
        let max_frame = self.max_frame;
        for k in 0..output {
            let (tokens, work) = Work::of_step(k, prompt);
            for (i, op) in ops.iter().enumerate() {
                match *op {
                    Op::Compute { share, head } => {
                        let Some(st) = self.tensor_stage(stage, head) else {
                            continue;
                        };
                        let last = k + 1 == output && Some(i) == last_compute;
                        self.step(request.id, st, work, share, last, &mut acc)
                            .await?;
                    }
                    Op::Sync(msg) => {
                        let bytes = msg.bytes(tokens) as usize;
                        // Without software costs the messages go out and come in all at
                        // once; with them the root's one thread sends to each member in
                        // turn, then reads each member's in turn.
                        let serial = !self.software.is_zero();
                        if msg.direction != Direction::ToRoot {
                            if serial {
                                for (s, _) in members.iter_mut() {
                                    self.send_activations(
                                        s,
                                        request.id,
                                        tokens,
                                        bytes,
                                        &mut software,
                                    )
                                    .await?;
                                }
                            } else {
                                try_join_all(
                                    members.iter_mut().map(|(s, _)| {
                                        s.write_activations(request.id, tokens, bytes)
                                    }),
                                )
                                .await?;
                            }
                        }
                        if msg.direction != Direction::FromRoot {
                            if serial {
                                for (_, r) in members.iter_mut() {
                                    self.recv_activations(r, &mut software).await?;
                                }
                            } else {
                                try_join_all(
                                    members
                                        .iter_mut()
                                        .map(|(_, r)| read_activations(r, max_frame)),
                                )
                                .await?;
                            }
                        }
                    }
                }
            }
            self.send_token(send, k, &mut software, &mut buf).await?;
        }
        self.close_sessions(&mut members, send, acc, software, &mut buf)
            .await
    }

    /// A tensor group's member: per step, the same ops as its root; the first message
    /// from the root starts the step and says how many positions it has.
    async fn tensor_member(
        &self,
        send: &mut Sender,
        recv: &mut quinn::RecvStream,
        request: &Request,
    ) -> Result<(), Failure> {
        let (engine, stage) = self.engine().map_err(Failure::Refused)?;
        let _guard = SessionGuard {
            engine,
            session: request.id,
        };
        let ops = self.payloads.tensor.clone();
        let last_compute = self.last_tensor_compute(&ops);
        let mut acc = StepDone::default();
        let mut software = Duration::ZERO;
        let output = request.output_tokens.max(1);
        let mut context = 0u32;
        let mut buf = Vec::new();
        for k in 0..output {
            let mut step: Option<(u32, Work)> = None;
            for (i, op) in ops.iter().enumerate() {
                match *op {
                    Op::Compute { share, head } => {
                        let Some(st) = self.tensor_stage(stage, head) else {
                            continue;
                        };
                        let Some((_, work)) = step else {
                            return Err(Failure::Refused(
                                "the tensor pattern computes before the root starts the step"
                                    .into(),
                            ));
                        };
                        let last = k + 1 == output && Some(i) == last_compute;
                        self.step(request.id, st, work, share, last, &mut acc)
                            .await?;
                    }
                    Op::Sync(msg) => {
                        if msg.direction != Direction::FromRoot {
                            let Some((tokens, _)) = step else {
                                return Err(Failure::Refused(
                                    "the tensor pattern sends to the root before the root starts the step"
                                        .into(),
                                ));
                            };
                            let bytes = msg.bytes(tokens) as usize;
                            self.send_activations(send, request.id, tokens, bytes, &mut software)
                                .await?;
                        }
                        if msg.direction != Direction::ToRoot {
                            let tokens = self.recv_activations(recv, &mut software).await?;
                            if step.is_none() {
                                step = Some((tokens, Work::received(k == 0, tokens, &mut context)));
                            }
                        }
                    }
                }
            }
        }
        send.write_frame(
            &Frame::Done(done(&self.name, acc.queue, acc.compute, software)),
            &mut buf,
        )
        .await?;
        let _ = send.finish();
        Ok(())
    }
}

/// Why a node could not serve a stream.
#[derive(Debug)]
pub enum Failure {
    /// The stream did not start with a well-formed request.
    Malformed,
    Frame(FrameIoError),
    /// This node cannot do what was asked.
    Refused(String),
    /// A node after this one failed.
    Peer(String),
}

impl From<FrameIoError> for Failure {
    fn from(e: FrameIoError) -> Self {
        Failure::Frame(e)
    }
}

fn done(node: &str, queue: Duration, compute: Duration, software: Duration) -> Done {
    Done {
        node: node.to_string(),
        queue_ns: queue.as_nanos() as u64,
        compute_ns: compute.as_nanos() as u64,
        software_ns: software.as_nanos() as u64,
    }
}

/// Why a stream that should have stayed silent until the end spoke or ended early.
pub fn broken(whom: &str, frame: Result<Option<Frame>, FrameIoError>) -> String {
    match frame {
        Ok(Some(Frame::Error { message, .. })) => message,
        Ok(Some(other)) => format!("{whom} sent an unexpected {:?} frame", other.kind()),
        Ok(None) => format!("{whom} closed the session before its end"),
        Err(e) => format!("{whom}: {e}"),
    }
}

/// Token `index`'s frame, `lead` before now (see [`Frame::Token`]).
pub fn token_frame(index: u32, lead: Duration) -> Frame {
    Frame::Token {
        index,
        lead_us: u32::try_from(lead.as_micros()).unwrap_or(u32::MAX),
    }
}

/// Opens a stream on `conn` (to `route[0]`) and sends `request`.
pub async fn open_stream(
    conn: &quinn::Connection,
    route: &[String],
    request: &Request,
) -> Result<Io, String> {
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| format!("opening a stream to {}: {e}", route[0]))?;
    let mut send = Sender::on(conn, send);
    let mut buf = Vec::new();
    send.write_frame(&Frame::Request(request.clone()), &mut buf)
        .await
        .map_err(|e| format!("sending the request to {}: {e}", route[0]))?;
    Ok((send, recv))
}

/// Reads the next frame, which must be hidden states; returns their number of tokens.
pub async fn read_activations(recv: &mut quinn::RecvStream, max: u32) -> Result<u32, FrameIoError> {
    read_message(recv, max).await.map(|(tokens, _)| tokens)
}

/// Reads the next frame, which must be hidden states; returns their number of tokens and
/// the frame's bytes on the wire (header included), what its receive cost is charged on.
pub async fn read_message(
    recv: &mut quinn::RecvStream,
    max: u32,
) -> Result<(u32, u64), FrameIoError> {
    match read_frame(recv, max).await? {
        Some(Frame::Activations { tokens, data, .. }) => {
            Ok((tokens, wire::activations_frame_len(data.len()) as u64))
        }
        Some(Frame::Error { message, .. }) => Err(FrameIoError::Peer(message)),
        Some(other) => Err(FrameIoError::Peer(format!(
            "expected hidden states, got a {:?} frame",
            other.kind()
        ))),
        None => Err(FrameIoError::Truncated),
    }
}

/// Copies the `Done` frames of a finished stream to `send`.
async fn forward_dones(
    recv: &mut quinn::RecvStream,
    send: &mut Sender,
    max: u32,
    buf: &mut Vec<u8>,
) -> Result<(), FrameIoError> {
    while let Some(frame) = read_frame(recv, max).await? {
        if let Frame::Done(_) = frame {
            send.write_frame(&frame, buf).await?;
        }
    }
    Ok(())
}
