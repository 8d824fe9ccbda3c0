//! Injecting the scenario's `[[fault]]`s into a built topology, and the account of what
//! they did: faults injected, failovers, tokens replayed, requests lost (docs/faults.md).
//!
//! A fault acts on the in-memory network's link directions through their gates
//! (`net::fault::Gate`: everything dropped for a crash or a partition, a fraction for a loss
//! burst); a crash also stops the node ([`Node::crash`]). Times are from the start of the
//! measured phase, like `[[link.change]]`. Faults act on the topology run only.

use super::keyed_seed;
use super::node::Node;
use crate::clock::Clock;
use crate::format::format_duration;
use crate::net::socket::Network;
pub use crate::record::FaultCounts;
use crate::scenario::Scenario;
use crate::scenario::fault::{Fault, FaultKind};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// When each fault began and ended in this run, and the counters.
pub struct FaultLog {
    faults: Vec<Fault>,
    /// The nodes each fault touches.
    touches: Vec<Vec<usize>>,
    windows: Mutex<Vec<(Option<Instant>, Option<Instant>)>>,
    /// How long a connection can outlive a fault unnoticed: a request that fails this long
    /// after a fault ended still counts as lost to it (QUIC's idle timeout).
    slack: Duration,
    injected: AtomicU64,
    failovers: AtomicU64,
    replayed: AtomicU64,
    lost: AtomicU64,
}

impl FaultLog {
    pub fn new(faults: &[Fault], slack: Duration) -> Self {
        FaultLog {
            touches: faults.iter().map(Fault::nodes).collect(),
            windows: Mutex::new(vec![(None, None); faults.len()]),
            faults: faults.to_vec(),
            slack,
            injected: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// A request moved to another server, sending `replayed` tokens again.
    pub fn failover(&self, replayed: u64) {
        self.failovers.fetch_add(1, Ordering::Relaxed);
        self.replayed.fetch_add(replayed, Ordering::Relaxed);
    }

    /// Zeroes the failover counters (at the start of the measured phase).
    pub fn reset(&self) {
        self.failovers.store(0, Ordering::Relaxed);
        self.replayed.store(0, Ordering::Relaxed);
        self.lost.store(0, Ordering::Relaxed);
    }

    /// The fault that a request on `nodes`, sent at `sent` and failed at `now`, was lost to:
    /// one that touches one of its nodes and was on while the request ran (or ended at most
    /// the slack before it was sent). Counts the request lost when there is one.
    pub fn blame(&self, sent: Instant, now: Instant, nodes: &[usize]) -> Option<String> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let (i, _) = windows.iter().enumerate().find(|(i, (began, ended))| {
            began.is_some_and(|b| b <= now)
                && ended.is_none_or(|e| e + self.slack >= sent)
                && self.touches[*i].iter().any(|n| nodes.contains(n))
        })?;
        self.lost.fetch_add(1, Ordering::Relaxed);
        let f = &self.faults[i];
        Some(format!(
            "lost to fault {} at {}",
            f.name,
            format_duration(f.at)
        ))
    }

    pub fn counts(&self, dropped_datagrams: u64) -> FaultCounts {
        FaultCounts {
            injected: self.injected.load(Ordering::Relaxed),
            failovers: self.failovers.load(Ordering::Relaxed),
            replayed_tokens: self.replayed.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            dropped_datagrams,
        }
    }
}

/// What injecting needs of a built topology.
pub struct Injector {
    pub log: Arc<FaultLog>,
    pub net: Network,
    /// The running nodes but the clients, by scenario index.
    pub nodes: HashMap<usize, Arc<Node>>,
    pub addrs: Vec<SocketAddr>,
    /// Each fault's link directions.
    pub directions: Vec<Vec<(usize, usize)>>,
    pub names: Arc<Vec<String>>,
    pub seed: u64,
    pub clock: Clock,
    /// Stops the faults' timers at teardown.
    pub cancel: CancellationToken,
}

impl Injector {
    pub fn new(
        scenario: &Scenario,
        log: Arc<FaultLog>,
        net: Network,
        nodes: HashMap<usize, Arc<Node>>,
        addrs: Vec<SocketAddr>,
        clock: Clock,
        cancel: CancellationToken,
    ) -> Self {
        Injector {
            directions: scenario
                .faults
                .iter()
                .map(|f| f.directions(&scenario.links))
                .collect(),
            names: Arc::new(scenario.nodes.iter().map(|n| n.name.clone()).collect()),
            seed: scenario.seed,
            log,
            net,
            nodes,
            addrs,
            clock,
            cancel,
        }
    }

    /// Starts every fault's timer from `epoch`, the start of the measured phase.
    pub fn start(&self, epoch: Instant) {
        self.log.reset();
        for (i, fault) in self.log.faults.iter().enumerate() {
            let (net, clock, cancel, log) = (
                self.net.clone(),
                self.clock.clone(),
                self.cancel.clone(),
                self.log.clone(),
            );
            let dirs: Vec<(SocketAddr, SocketAddr, u64)> = self.directions[i]
                .iter()
                .map(|&(a, b)| {
                    let seed = keyed_seed(
                        self.seed,
                        &["fault", &i.to_string(), &self.names[a], &self.names[b]],
                    );
                    (self.addrs[a], self.addrs[b], seed)
                })
                .collect();
            let crashed = match fault.kind {
                FaultKind::Crash { node } => self.nodes.get(&node).cloned(),
                _ => None,
            };
            let (fraction, at, lasts) = (fault.drop_fraction(), fault.at, fault.lasts);
            tokio::spawn(async move {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = clock.sleep_until(epoch + at) => {}
                }
                for &(a, b, seed) in &dirs {
                    net.fault_begin(a, b, i, fraction, seed);
                }
                if let Some(node) = &crashed {
                    node.crash();
                }
                log.injected.fetch_add(1, Ordering::Relaxed);
                log.windows.lock().unwrap_or_else(|e| e.into_inner())[i].0 = Some(clock.now());
                let Some(lasts) = lasts else { return };
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = clock.sleep_until(epoch + at + lasts) => {}
                }
                // A crashed node restarts empty: it kept no connection and no session.
                for &(a, b, _) in &dirs {
                    net.fault_end(a, b, i);
                }
                log.windows.lock().unwrap_or_else(|e| e.into_inner())[i].1 = Some(clock.now());
            });
        }
    }
}
