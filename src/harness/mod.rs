//! The harness: builds the topology from quinn endpoints on emulated links, runs the
//! load through its phases (setup -> warmup -> measure -> drain -> teardown) against the
//! topology and then against the local baseline, and hands back what it measured.

pub mod client;
pub mod fault;
pub mod load;
pub mod node;
pub mod worker;

use crate::clock::{Clock, ClockKind};
use crate::compute::{EngineConfig, EngineError};
use crate::net::endpoint::{self, PathShape, TransportSettings};
use crate::net::link::{Link, LinkStats};
use crate::net::port::{Port, SharedPort};
use crate::net::socket::Network;
use crate::net::wire::DEFAULT_MAX_FRAME;
use crate::plan::Plan;
use crate::plan::schedule::Phase as LoadPhase;
use crate::record::RunRecord;
use crate::scenario::{Extent, Scenario};
use crate::scenario::{LinkChange, LinkParams};
use crate::topology::Part;
use anyhow::Context;
use client::Client;
use hdrhistogram::Histogram;
use load::{Driver, PhaseResult, Target};
use node::{Node, Payloads};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where a run is, for the progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Setup,
    Warmup,
    Measure,
    Drain,
    Teardown,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Warmup => "warmup",
            Phase::Measure => "measure",
            Phase::Drain => "drain",
            Phase::Teardown => "teardown",
        }
    }
}

#[derive(Clone, Debug)]
struct ProgressState {
    run: &'static str,
    phase: Phase,
    phase_started: Option<Instant>,
    extent: Option<Extent>,
    planned: u64,
}

/// Live counters a progress display reads.
#[derive(Debug)]
pub struct Progress {
    state: Mutex<ProgressState>,
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
}

/// A copy of the progress at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub run: &'static str,
    pub phase: Phase,
    pub elapsed: Duration,
    pub extent: Option<Extent>,
    pub planned: u64,
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            state: Mutex::new(ProgressState {
                run: "topology",
                phase: Phase::Setup,
                phase_started: None,
                extent: None,
                planned: 0,
            }),
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

impl Progress {
    fn state(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin_run(&self, run: &'static str) {
        let mut st = self.state();
        st.run = run;
        st.phase = Phase::Setup;
        st.phase_started = None;
        st.extent = None;
        st.planned = 0;
    }

    fn set_phase(&self, phase: Phase) {
        self.state().phase = phase;
    }

    pub(crate) fn enter(&self, phase: Phase, extent: Extent, started: Instant) {
        let mut st = self.state();
        if st.phase != phase && phase != Phase::Drain {
            self.started.store(0, Ordering::Relaxed);
            self.completed.store(0, Ordering::Relaxed);
            self.failed.store(0, Ordering::Relaxed);
            st.planned = 0;
        }
        st.phase = phase;
        st.phase_started = Some(started);
        st.extent = Some(extent);
    }

    pub(crate) fn planned(&self, n: u64) {
        self.state().planned = n;
    }

    pub(crate) fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, ok: bool) {
        if ok { &self.completed } else { &self.failed }.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn abandon(&self, n: u64) {
        self.failed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let st = self.state().clone();
        Snapshot {
            run: st.run,
            phase: st.phase,
            elapsed: st
                .phase_started
                .map(|s| now.saturating_duration_since(s))
                .unwrap_or_default(),
            extent: st.extent,
            planned: st.planned,
            started: self.started.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// One link direction for the summary: what it was set to and what it did.
#[derive(Clone, Debug, Serialize)]
pub struct LinkReport {
    pub from: String,
    pub to: String,
    /// The preset it started from, if any.
    pub preset: Option<&'static str>,
    /// Its parameters at the start of the run.
    pub params: LinkParams,
    /// How it changed during the measured phase.
    pub changes: Vec<LinkChange>,
    #[serde(flatten)]
    pub stats: LinkStats,
}

/// quinn's own statistics of a connection at the end of a run.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionReport {
    pub from: String,
    pub to: String,
    /// quinn's smoothed RTT estimate of the path.
    pub rtt_ms: f64,
    /// The least RTT quinn saw on the path.
    pub min_rtt_ms: f64,
    /// Congestion window in bytes.
    pub cwnd: u64,
    pub congestion_events: u64,
    pub sent_packets: u64,
    /// Packets quinn declared lost; their frames were retransmitted.
    pub lost_packets: u64,
    pub lost_bytes: u64,
    pub udp_datagrams_sent: u64,
    pub udp_datagrams_received: u64,
    /// The path MTU quinn settled on (UDP payload bytes).
    pub current_mtu: u16,
    pub black_holes_detected: u64,
    /// What `from` sent on it followed Nagle's algorithm (its controller was a
    /// `NagleController`).
    pub nagle: bool,
}

impl ConnectionReport {
    fn new(from: &str, to: &str, conn: &quinn::Connection) -> Self {
        let stats = conn.stats();
        let p = &stats.path;
        ConnectionReport {
            from: from.into(),
            to: to.into(),
            rtt_ms: p.rtt.as_secs_f64() * 1e3,
            min_rtt_ms: p.min_rtt.as_secs_f64() * 1e3,
            cwnd: p.cwnd,
            congestion_events: p.congestion_events,
            sent_packets: p.sent_packets,
            lost_packets: p.lost_packets,
            lost_bytes: p.lost_bytes,
            udp_datagrams_sent: stats.udp_tx.datagrams,
            udp_datagrams_received: stats.udp_rx.datagrams,
            current_mtu: p.current_mtu,
            black_holes_detected: p.black_holes_detected,
            nagle: crate::net::congestion::NagleState::of(conn).is_some(),
        }
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct RunOutput {
    pub record: RunRecord,
    /// Whether every phase ran to its end.
    pub complete: bool,
}

/// A real engine's account of one run, with whose engine it is.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineRun {
    /// "worker gpu-a", "the baseline".
    pub whose: String,
    /// `topology`, `colocated` or `baseline`.
    pub run: &'static str,
    pub account: crate::compute::EngineAccount,
}

impl EngineRun {
    /// The account in one line of the notes.
    pub fn line(&self) -> String {
        format!("{} ({} run): {}", self.whose, self.run, self.account.line())
    }
}

/// What a scenario's runs measured.
#[derive(Debug)]
pub struct Measured {
    pub topology: Option<RunOutput>,
    /// The same devices with no network between them (see [`Plan::colocated`]).
    pub colocated: Option<RunOutput>,
    pub baseline: Option<RunOutput>,
    pub links: Vec<LinkReport>,
    pub connections: Vec<ConnectionReport>,
    pub transport: TransportSettings,
    pub malformed_frames: u64,
    /// Datagrams sent where the topology has no link.
    pub unroutable: u64,
    /// Datagrams dropped because a receiver's socket buffer was full.
    pub inbox_overflow: u64,
    pub clock: ClockKind,
    /// How late the link emulator delivered datagrams (actual minus scheduled), in ns.
    pub emulator_lateness: Option<Histogram<u64>>,
    /// Process CPU time over the topology run, in core-seconds per second.
    pub cpu_load: Option<f64>,
    /// The clock's time from setup to the end of the last run.
    pub simulated: Duration,
    /// What each real engine recorded, per run (where its token counts came from, its
    /// failures by reason).
    pub engines: Vec<EngineRun>,
}

impl Measured {
    pub fn complete(&self, has_baseline: bool) -> bool {
        self.topology.as_ref().is_some_and(|r| r.complete)
            && self.colocated.as_ref().is_none_or(|r| r.complete)
            && (!has_baseline || self.baseline.as_ref().is_some_and(|r| r.complete))
    }
}

/// Options of a run that are not in the scenario.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long to wait for requests still running when a phase's schedule ends.
    pub drain: Duration,
    /// How long to wait for them after Ctrl-C.
    pub grace: Duration,
    pub max_frame: u32,
    pub transport: TransportSettings,
    /// Also run the same devices with no network between them, for the network tax.
    pub colocated: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            drain: Duration::from_secs(30),
            grace: Duration::from_millis(1000),
            max_frame: DEFAULT_MAX_FRAME,
            transport: TransportSettings::default(),
            colocated: true,
        }
    }
}

/// Node `index`'s in-memory address: 127.77.0.1 to 127.77.0.255 for the first 255 nodes,
/// then on through 127.77.1.1 and up; distinct for every index below 255 · 256 · 178, far
/// past `scenario::limits::MAX_NODES`. (The last byte is never 0.)
fn host_addr(index: usize) -> SocketAddr {
    // In-memory addresses only: no datagram ever reaches a real interface.
    let (high, low) = (index / 255, index % 255 + 1);
    SocketAddr::from((
        [
            127,
            77u8.saturating_add((high >> 8) as u8),
            high as u8,
            low as u8,
        ],
        4433,
    ))
}

/// A built topology: an endpoint per node on an in-memory network of emulated links, every
/// node serving, the connections opened.
pub struct Topology {
    pub net: Network,
    pub clients: Vec<Arc<Client>>,
    pub nodes: Vec<Arc<Node>>,
    /// Every node's endpoint, in scenario order (the order teardown waits on them).
    endpoints: Vec<quinn::Endpoint>,
    /// Handshake time of each client connection.
    pub connects: Vec<Duration>,
    /// Every connection, for quinn's statistics: (from, to, connection).
    pub connections: Vec<(String, String, quinn::Connection)>,
    /// Stops the nodes' servers and executors.
    pub cancel: CancellationToken,
    addrs: Vec<SocketAddr>,
    /// The scenario's faults: when they were on, what they did.
    pub faults: Arc<fault::FaultLog>,
    /// The running nodes by scenario index, for a crash.
    by_index: HashMap<usize, Arc<Node>>,
}

impl Topology {
    /// Builds the plan's network, starts every node and opens the plan's connections (the
    /// QUIC and TLS handshakes). Links are seeded from `seed`.
    pub async fn build(
        scenario: &Scenario,
        plan: &Plan,
        clock: &Clock,
        options: &Options,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        let seed = scenario.seed;
        let net = Network::new(clock.clone());
        let addrs: Vec<SocketAddr> = (0..scenario.nodes.len()).map(host_addr).collect();
        let mut ports: HashMap<String, SharedPort> = HashMap::new();
        for (a, b) in plan.connections.iter().flat_map(|&(a, b)| [(a, b), (b, a)]) {
            if net.link_stats(addrs[a], addrs[b]).is_some() {
                continue;
            }
            let hop = plan
                .hops
                .iter()
                .find(|h| h.from == scenario.nodes[a].name && h.to == scenario.nodes[b].name)
                .ok_or_else(|| anyhow::anyhow!("the plan has no hop {a} -> {b}"))?;
            // Seeded by the direction's node names: adding a node or a link elsewhere, or
            // reordering the file, leaves this direction's random stream as it was.
            let link_seed = keyed_seed(seed, &["link", &hop.from, &hop.to]);
            let mut link = Link::new(hop.link.clone(), link_seed).with_changes(hop.changes.clone());
            // Every direction on one `[[port]]` shares its queue and rate.
            if let Some(def) = &hop.link.port {
                let port = ports
                    .entry(def.name.clone())
                    .or_insert_with(|| Port::shared(def.clone()));
                link = link.with_port(port.clone());
            }
            net.add_link(addrs[a], addrs[b], link);
        }
        let tls = endpoint::tls(&options.transport)?;
        let names: Arc<Vec<String>> =
            Arc::new(scenario.nodes.iter().map(|n| n.name.clone()).collect());
        // Each direction of a connection gets the transport settings of the path it sends
        // on (a warm connection's window depends on the path: net::endpoint::PathShape).
        let link_of = |a: usize, b: usize| {
            plan.hops
                .iter()
                .find(|h| h.from == names[a] && h.to == names[b])
                .map(|h| &h.link)
        };
        let transport_for = |a: usize, b: usize| {
            let path = link_of(a, b).map(|out| PathShape::new(out, link_of(b, a)));
            // A link's `transport` sets the behaviour of what sends on it, else the
            // sending node's.
            options
                .transport
                .for_link(link_of(a, b), scenario.nodes[a].transport.as_deref())
                .config_for(path.as_ref())
        };
        let mut accept_configs: HashMap<usize, HashMap<SocketAddr, Arc<quinn::ServerConfig>>> =
            HashMap::new();
        for &(a, b) in &plan.connections {
            accept_configs
                .entry(b)
                .or_default()
                .insert(addrs[a], Arc::new(tls.server_with(transport_for(b, a)?)));
        }
        let payloads = Payloads {
            hidden: plan.hidden_bytes as usize,
            logits_slice: plan.logits_slice_bytes as usize,
            tensor: plan.tensor.clone().into(),
            star: plan.star.clone(),
            remote_layers: Arc::new(
                plan.nodes
                    .iter()
                    .filter(|n| n.part == Part::Stage)
                    .filter_map(|n| n.stage.as_ref().map(|st| (n.name.clone(), st.layers)))
                    .collect(),
            ),
        };
        let by_name: Arc<HashMap<String, SocketAddr>> =
            Arc::new(names.iter().cloned().zip(addrs.iter().copied()).collect());
        // The nodes on a link of jumbo frames (an `mtu` above Ethernet's), in either
        // direction: only their endpoints accept jumbo datagrams (net::endpoint).
        let jumbo: std::collections::HashSet<&str> = plan
            .hops
            .iter()
            .filter(|h| h.link.mtu.is_some_and(|m| m > endpoint::ETHERNET_MTU))
            .flat_map(|h| [h.from.as_str(), h.to.as_str()])
            .collect();
        // In scenario order, not a hash map's: teardown waits on them one by one (each up to
        // a bound), so their order sets the clock at the end of the run; a `HashMap`'s
        // order changed from run to run and moved the virtual clock's end with it.
        let mut endpoints: BTreeMap<usize, quinn::Endpoint> = BTreeMap::new();
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        for n in &plan.nodes {
            let mut ep = endpoint::endpoint_with(
                net.bind(addrs[n.index])?,
                Some(tls.server.clone()),
                keyed_seed(seed, &["endpoint", &n.name]),
                jumbo.contains(n.name.as_str()),
            )?;
            ep.set_default_client_config(tls.client.clone());
            let stage = n.stage.clone().map(Arc::new);
            // A tensor group's members batch whatever their root has admitted.
            let max_batch = match n.part {
                Part::TensorMember => 1 << 16,
                _ => n.max_batch,
            };
            let real = scenario.nodes[n.index]
                .engine
                .as_ref()
                .map(|e| (e, default_connections(scenario)));
            let engine = stage
                .as_ref()
                .map(|s| worker::start(clock, (**s).clone(), max_batch, real, cancel.clone()))
                .transpose()?;
            let node = Node::new(
                n.name.clone(),
                n.part,
                stage,
                n.head.clone().map(Arc::new),
                engine,
                clock.clone(),
                options.max_frame,
                payloads.clone(),
                scenario.nodes[n.index].software,
            );
            node.set_dialer(ep.clone(), by_name.clone());
            node.serve(
                ep.clone(),
                accept_configs.remove(&n.index).unwrap_or_default(),
                cancel.clone(),
            );
            endpoints.insert(n.index, ep);
            nodes.push(node);
        }
        for c in &plan.clients {
            let mut ep = endpoint::endpoint_with(
                net.bind(addrs[c.index])?,
                None,
                keyed_seed(seed, &["endpoint", &c.name]),
                jumbo.contains(c.name.as_str()),
            )?;
            ep.set_default_client_config(tls.client.clone());
            endpoints.insert(c.index, ep);
        }
        let faults = Arc::new(fault::FaultLog::new(
            &scenario.faults,
            Duration::from_millis(options.transport.max_idle_timeout_ms),
        ));
        // Open every connection: clients' first (their handshakes are the `connect` metric).
        let mut connects = Vec::new();
        let mut connections = Vec::new();
        let mut client_conns: HashMap<usize, HashMap<usize, quinn::Connection>> = HashMap::new();
        for &(a, b) in &plan.connections {
            let t0 = clock.now();
            let conn = endpoints[&a]
                .connect_with(
                    tls.client_with(transport_for(a, b)?),
                    addrs[b],
                    endpoint::SERVER_NAME,
                )?
                .await
                .with_context(|| format!("connecting {} to {}", names[a], names[b]))?;
            if plan.clients.iter().any(|c| c.index == a) {
                connects.push(clock.now() - t0);
                client_conns.entry(a).or_default().insert(b, conn.clone());
            } else if let Some(n) = nodes.iter().find(|n| n.name == names[a]) {
                n.peers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(names[b].clone(), conn.clone());
            }
            connections.push((names[a].clone(), names[b].clone(), conn));
        }
        let clients = plan
            .clients
            .iter()
            .map(|c| {
                let head = c
                    .head
                    .as_ref()
                    .map(|stage| worker::start_head(clock, stage, cancel.clone()))
                    .transpose()?;
                Ok::<_, EngineError>(Arc::new(Client {
                    name: c.name.clone(),
                    index: c.index,
                    faults: faults.clone(),
                    route: plan.route.clone(),
                    conns: Mutex::new(client_conns.remove(&c.index).unwrap_or_default()),
                    dialer: Some(client::Dialer {
                        endpoint: endpoints[&c.index].clone(),
                        addrs: addrs.clone(),
                        dialing: tokio::sync::Mutex::new(()),
                    }),
                    names: names.clone(),
                    head,
                    hedge_after: plan.hedge_after,
                    recent: Mutex::new(Default::default()),
                    hidden_bytes: plan.hidden_bytes as usize,
                    standby: plan.standby.clone(),
                    max_frame: options.max_frame,
                }))
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let by_index = plan
            .nodes
            .iter()
            .zip(&nodes)
            .map(|(p, n)| (p.index, n.clone()))
            .collect();
        Ok(Topology {
            faults,
            by_index,
            net,
            clients,
            nodes,
            endpoints: endpoints.into_values().collect(),
            connects,
            connections,
            cancel,
            addrs,
        })
    }

    /// Stops the nodes and closes every endpoint.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        for (_, _, c) in &self.connections {
            c.close(0u32.into(), b"run complete");
        }
        for ep in &self.endpoints {
            ep.close(0u32.into(), b"run complete");
        }
        for ep in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_millis(200), ep.wait_idle()).await;
        }
    }

    /// What injects the scenario's faults into this topology.
    fn injector(&self, scenario: &Scenario, clock: &Clock) -> fault::Injector {
        fault::Injector::new(
            scenario,
            self.faults.clone(),
            self.net.clone(),
            self.by_index.clone(),
            self.addrs.clone(),
            clock.clone(),
            self.cancel.clone(),
        )
    }

    /// The statistics of each link direction the plan uses.
    pub fn link_reports(&self, scenario: &Scenario, plan: &Plan) -> Vec<LinkReport> {
        let index = |name: &str| scenario.node_index(name);
        plan.hops
            .iter()
            .filter_map(|hop| {
                let (a, b) = (index(&hop.from)?, index(&hop.to)?);
                let stats = self.net.link_stats(self.addrs[a], self.addrs[b])?;
                Some(LinkReport {
                    from: hop.from.clone(),
                    to: hop.to.clone(),
                    preset: hop.preset,
                    params: hop.link.clone(),
                    changes: hop.changes.clone(),
                    stats,
                })
            })
            .collect()
    }
}

/// Runs the scenario's topology, then its baseline, and returns what they measured.
/// Cancelling `cancel` stops within the grace period and returns what was measured.
pub async fn run(
    scenario: &Scenario,
    plan: &Plan,
    options: &Options,
    clock: &Clock,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> anyhow::Result<Measured> {
    let mut transport = options.transport.clone().with(&scenario.quic);
    // A closed loop keeps `concurrency` requests in flight: give each its stream.
    if let crate::scenario::Arrival::Closed { concurrency } = scenario.workload.arrival {
        transport.max_concurrent_bidi_streams =
            transport.max_concurrent_bidi_streams.max(concurrency);
    }
    // A request far longer than the default drain (a 176B model on a slow swarm) still gets
    // time to finish: four times the floor of a request at the high end of
    // the workload's sizes.
    let longest = crate::plan::schedule::Shape {
        prompt: scenario.workload.prompt_tokens.high(),
        output: scenario.workload.output_tokens.high(),
    };
    let drain = options.drain.max(plan.floor(longest).e2e.saturating_mul(4));
    let options = &Options {
        transport,
        drain,
        ..options.clone()
    };
    let mut measured = Measured {
        topology: None,
        colocated: None,
        baseline: None,
        links: Vec::new(),
        connections: Vec::new(),
        transport: options.transport.clone(),
        malformed_frames: 0,
        unroutable: 0,
        inbox_overflow: 0,
        clock: clock.kind(),
        emulator_lateness: None,
        cpu_load: None,
        simulated: Duration::ZERO,
        engines: Vec::new(),
    };
    let clock = clock.clone();
    let run_start = clock.now();
    let cpu_start = (cpu_time(), clock.now());

    // Real engines answer before anything is measured: a wrong URL or a stopped server is
    // a clear error now, not a run of failures.
    for (whose, engine) in real_engines(scenario) {
        let EngineConfig::Openai(config) = engine;
        tokio::select! {
            biased;
            r = crate::compute::openai::probe(config) => {
                r.map_err(|e| anyhow::anyhow!("{whose}: {e}"))?;
            }
            _ = cancel.cancelled() => return Ok(measured),
        }
    }

    // Topology.
    let Some(topo) = run_topology(
        scenario, plan, "topology", &clock, options, &progress, &cancel,
    )
    .await?
    else {
        measured.topology = Some(RunOutput {
            record: RunRecord::new(),
            complete: false,
        });
        return Ok(measured);
    };
    if let (Some(cpu0), Some(cpu1)) = (cpu_start.0, cpu_time())
        && clock.kind() == ClockKind::Real
    {
        let wall = clock.now().saturating_duration_since(cpu_start.1);
        if !wall.is_zero() {
            measured.cpu_load = Some((cpu1 - cpu0).as_secs_f64() / wall.as_secs_f64());
        }
    }
    measured.connections = topo.connections;
    measured.links = topo.links;
    measured.emulator_lateness = Some(topo.lateness);
    measured.malformed_frames = topo.malformed_frames;
    measured.unroutable = topo.unroutable;
    measured.inbox_overflow = topo.inbox_overflow;
    measured.engines.extend(topo.engines);
    measured.topology = Some(topo.output);

    // Co-located: the same devices with no network between them (the network tax's
    // denominator).
    if options.colocated {
        let plan = plan.colocated();
        let run = match cancel.is_cancelled() {
            true => None,
            false => {
                run_topology(
                    scenario,
                    &plan,
                    "colocated",
                    &clock,
                    options,
                    &progress,
                    &cancel,
                )
                .await?
            }
        };
        // Interrupted before it ran: an incomplete run with nothing measured.
        measured.colocated = Some(run.map_or_else(
            || RunOutput {
                record: RunRecord::new(),
                complete: false,
            },
            |r| {
                measured.engines.extend(r.engines);
                r.output
            },
        ));
    }

    // Baseline: the same seeded workload on the local device, no network.
    if let Some(stage) = plan.baseline.clone()
        && !cancel.is_cancelled()
    {
        progress.begin_run("baseline");
        // Its own token (see the topology's): cancelled once the run is over.
        let run_cancel = CancellationToken::new();
        let real = scenario
            .baseline
            .as_ref()
            .and_then(|b| b.engine.as_ref())
            .map(|e| (e, default_connections(scenario)));
        let engine = worker::start(&clock, stage, plan.max_batch, real, run_cancel.clone())?;
        let mut record = RunRecord::new();
        let complete = drive(
            scenario,
            Target::Local {
                engine: engine.clone(),
            },
            &clock,
            options,
            &progress,
            &cancel,
            &mut record,
            None,
            None,
        )
        .await;
        run_cancel.cancel();
        if let Some(account) = engine.account() {
            measured.engines.push(EngineRun {
                whose: "the baseline".into(),
                run: "baseline",
                account,
            });
        }
        measured.baseline = Some(RunOutput { record, complete });
    }
    measured.simulated = clock.now().saturating_duration_since(run_start);
    Ok(measured)
}

/// What a run of a built topology measured, with its network's statistics.
struct TopologyRun {
    output: RunOutput,
    connections: Vec<ConnectionReport>,
    links: Vec<LinkReport>,
    lateness: Histogram<u64>,
    malformed_frames: u64,
    unroutable: u64,
    inbox_overflow: u64,
    /// What each real engine recorded (token counts' source, connection waits).
    engines: Vec<EngineRun>,
}

/// Builds `plan`'s topology, drives the workload through it and tears it down; `None` when
/// cancelled before it was built.
async fn run_topology(
    scenario: &Scenario,
    plan: &Plan,
    run: &'static str,
    clock: &Clock,
    options: &Options,
    progress: &Arc<Progress>,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<TopologyRun>> {
    progress.begin_run(run);
    let mut record = RunRecord::new();
    let topo = tokio::select! {
        biased;
        // The nodes have their own token, not a child of `cancel`: on an interruption they
        // keep serving the requests in flight through the grace period, and stop at
        // shutdown.
        t = Topology::build(scenario, plan, clock, options, CancellationToken::new()) => t?,
        _ = cancel.cancelled() => return Ok(None),
    };
    for &c in &topo.connects {
        record.record_connect(c);
    }
    let target = Target::Remote {
        clients: Arc::new(
            topo.clients
                .iter()
                .zip(&plan.clients)
                .map(|(c, p)| (c.clone(), p.share))
                .collect(),
        ),
    };
    // Faults act on the topology run only: the co-located run and the baseline are what
    // the same workload costs without them.
    let injector =
        (run == "topology" && !topo.faults.is_empty()).then(|| topo.injector(scenario, clock));
    let complete = drive(
        scenario,
        target,
        clock,
        options,
        progress,
        cancel,
        &mut record,
        Some(&topo.net),
        injector.as_ref(),
    )
    .await;
    if injector.is_some() {
        record.faults = topo.faults.counts(topo.net.fault_dropped());
    }
    progress.set_phase(Phase::Teardown);
    let engines = topo
        .nodes
        .iter()
        .filter_map(|n| {
            Some(EngineRun {
                whose: format!("worker {}", n.name),
                run,
                account: n.engine.as_ref()?.account()?,
            })
        })
        .collect();
    let connections = topo
        .connections
        .iter()
        .map(|(from, to, conn)| ConnectionReport::new(from, to, conn))
        .collect();
    topo.shutdown().await;
    Ok(Some(TopologyRun {
        output: RunOutput { record, complete },
        connections,
        links: topo.link_reports(scenario, plan),
        lateness: topo.net.lateness().histogram(),
        malformed_frames: topo
            .nodes
            .iter()
            .map(|n| n.stats.malformed.load(Ordering::Relaxed))
            .sum(),
        unroutable: topo.net.unroutable(),
        inbox_overflow: topo.net.inbox_overflow(),
        engines,
    }))
}

/// The real engines of a scenario, each with whose it is ("worker gpu-a", "the baseline").
pub fn real_engines(scenario: &Scenario) -> Vec<(String, &EngineConfig)> {
    let mut out: Vec<(String, &EngineConfig)> = scenario
        .nodes
        .iter()
        .filter_map(|n| Some((format!("worker {}", n.name), n.engine.as_ref()?)))
        .collect();
    if let Some(e) = scenario.baseline.as_ref().and_then(|b| b.engine.as_ref()) {
        out.push(("the baseline".into(), e));
    }
    out
}

/// Requests a real engine keeps in flight at most when it sets no `connections`: a closed
/// loop's concurrency, else a bound no open loop of this tool reaches in practice.
fn default_connections(scenario: &Scenario) -> u32 {
    match scenario.workload.arrival {
        crate::scenario::Arrival::Closed { concurrency } => concurrency,
        _ => crate::compute::openai::DEFAULT_CONNECTIONS,
    }
}

/// A seed for one part of a run, derived from the scenario's seed and stable names (node
/// names, a link's two ends), never from positions in the file: FNV-1a over the key's
/// parts, then SplitMix64's finalizer over it and the seed.
fn keyed_seed(seed: u64, key: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in key {
        for b in part.bytes().chain([0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let mut z = seed ^ h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Runs a scenario to its end on a fresh runtime of `kind`, with no progress display and no
/// cancellation: for tests, benches and tools. (The command line runs [`run`] itself, to
/// show progress and stop on Ctrl-C.)
pub fn run_to_end(
    scenario: &Scenario,
    plan: &Plan,
    options: &Options,
    kind: ClockKind,
) -> anyhow::Result<Measured> {
    let (rt, clock) = kind.runtime()?;
    let measured = rt.block_on(run(
        scenario,
        plan,
        options,
        &clock,
        Arc::new(Progress::default()),
        CancellationToken::new(),
    ));
    rt.shutdown_background();
    measured
}

/// Runs warmup (discarded) and the measured phase against a target; the network's link
/// changes are timed from the start of the measured phase.
#[allow(clippy::too_many_arguments)]
async fn drive(
    scenario: &Scenario,
    target: Target,
    clock: &Clock,
    options: &Options,
    progress: &Arc<Progress>,
    cancel: &CancellationToken,
    record: &mut RunRecord,
    net: Option<&Network>,
    faults: Option<&fault::Injector>,
) -> bool {
    let driver = Driver {
        target,
        clock: clock.clone(),
        workload: scenario.workload.clone(),
        seed: scenario.seed,
        progress: progress.clone(),
        cancel: cancel.clone(),
        drain: options.drain,
        grace: options.grace,
        next_id: Arc::new(AtomicU64::new(0)),
        inflight: Default::default(),
    };
    let w = &scenario.workload;
    if w.warmup != Extent::Requests(0) && w.warmup != Extent::Duration(Duration::ZERO) {
        let warm = driver.run_phase(LoadPhase::Warmup, w.warmup).await;
        if warm.interrupted {
            return false;
        }
    }
    if let Some(net) = net {
        net.start_changes(clock.now());
    }
    if let Some(f) = faults {
        f.start(clock.now());
    }
    let measured: PhaseResult = driver.run_phase(LoadPhase::Measure, w.measure).await;
    for s in &measured.samples {
        record.record(s, &scenario.slo);
    }
    for f in &measured.failures {
        record.record_failure(f.clone());
    }
    record.elapsed = measured
        .last_done
        .map(|d| d.saturating_duration_since(measured.started))
        .unwrap_or_default();
    record.window = measured.window;
    !measured.interrupted
}

/// This process's CPU time so far (user + system), where the platform tells it.
pub fn cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        // SAFETY: getrusage only writes the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return None;
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Some(tv(usage.ru_utime) + tv(usage.ru_stime))
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_addresses_are_distinct_past_255_and_65536_nodes() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..70_000 {
            assert!(
                seen.insert(super::host_addr(i)),
                "node {i} shares an address"
            );
        }
        assert_eq!(super::host_addr(0).to_string(), "127.77.0.1:4433");
        assert_eq!(super::host_addr(254).to_string(), "127.77.0.255:4433");
    }
}
