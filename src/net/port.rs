//! A shared port: a switch's output port or a NIC whose rate and tail-drop queue several
//! link directions share, so N senders towards one receiver queue behind each other as on
//! a real switch (`[[port]]` in a scenario; a link joins one with `port = "name"`).
//!
//! A datagram meets the port after its own link's queue and rate and before the link's
//! delay: it waits for every datagram the port accepted before it, from any link, and is
//! dropped when the port's queue is full. Like [`crate::net::link`], this is sans-IO: time
//! is an argument. The port serves datagrams in the order the links hand them over, which
//! is their arrival order whenever the links in front of it have no rate of their own (the
//! common case of a switch port); `docs/links.md` has the model and its measurements.

use crate::format::format_si;
use crate::net::params::Queue;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a `[[port]]` states.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortDef {
    pub name: String,
    /// Bits per second, shared by every link direction on the port.
    pub rate: f64,
    /// The tail-drop buffer in front of the port's rate.
    pub queue: Queue,
}

impl PortDef {
    /// The least time the port takes to carry `bytes` (no other traffic).
    pub fn serialization(&self, bytes: f64) -> Duration {
        Duration::try_from_secs_f64(bytes * 8.0 / self.rate).unwrap_or(Duration::MAX)
    }

    /// One line for `validate` and the tables.
    pub fn describe(&self) -> String {
        format!(
            "port {} ({} shared, queue {})",
            self.name,
            format_si(self.rate, "bit/s"),
            self.queue
        )
    }
}

/// Counters of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortStats {
    /// Datagrams offered to the port (after their links' loss and queues).
    pub datagrams: u64,
    /// Wire bytes offered.
    pub bytes: u64,
    /// Datagrams dropped because the port's queue was full.
    pub dropped: u64,
}

/// A port's state: its queue and when its rate limiter is free.
#[derive(Debug)]
pub struct Port {
    def: Arc<PortDef>,
    /// Accepted datagrams not yet serialized: (departure, wire bytes).
    queue: VecDeque<(Instant, u32)>,
    queued_bytes: u64,
    busy_until: Option<Instant>,
    stats: PortStats,
}

/// A port several links hold.
pub type SharedPort = Arc<Mutex<Port>>;

impl Port {
    pub fn new(def: Arc<PortDef>) -> Self {
        Port {
            def,
            queue: VecDeque::new(),
            queued_bytes: 0,
            busy_until: None,
            stats: PortStats::default(),
        }
    }

    /// A port to share between links.
    pub fn shared(def: Arc<PortDef>) -> SharedPort {
        Arc::new(Mutex::new(Port::new(def)))
    }

    pub fn def(&self) -> &PortDef {
        &self.def
    }

    pub fn stats(&self) -> PortStats {
        self.stats
    }

    /// A datagram of `wire` bytes reaches the port at `at`: when its last byte leaves, or
    /// `None` when the port's queue is full.
    pub fn enqueue(&mut self, at: Instant, wire: u32) -> Option<Instant> {
        self.stats.datagrams += 1;
        self.stats.bytes += u64::from(wire);
        while self.queue.front().is_some_and(|&(d, _)| d <= at) {
            let (_, b) = self.queue.pop_front().expect("peeked");
            self.queued_bytes -= u64::from(b);
        }
        let full = match self.def.queue {
            Queue::Bytes(limit) => self.queued_bytes + u64::from(wire) > limit,
            Queue::Packets(limit) => self.queue.len() >= limit as usize,
        };
        if full {
            self.stats.dropped += 1;
            return None;
        }
        let start = self.busy_until.map_or(at, |b| b.max(at));
        let done = start + Duration::from_secs_f64(f64::from(wire) * 8.0 / self.def.rate);
        self.busy_until = Some(done);
        self.queue.push_back((done, wire));
        self.queued_bytes += u64::from(wire);
        Some(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(queue: Queue) -> Port {
        Port::new(Arc::new(PortDef {
            name: "switch".into(),
            rate: 8e6,
            queue,
        }))
    }

    #[test]
    fn datagrams_from_any_link_wait_for_each_other() {
        // 1000 wire bytes at 8 Mbit/s = 1 ms each, whoever sends them.
        let t0 = Instant::now();
        let mut p = port(Queue::Bytes(1_000_000));
        let at: Vec<_> = (0..3).map(|_| p.enqueue(t0, 1000).unwrap() - t0).collect();
        assert_eq!(at, [1, 2, 3].map(Duration::from_millis));
        // After the port drains, a datagram goes at once.
        let later = t0 + Duration::from_millis(10);
        assert_eq!(
            p.enqueue(later, 1000),
            Some(later + Duration::from_millis(1))
        );
    }

    #[test]
    fn a_full_port_queue_drops_and_counts() {
        let t0 = Instant::now();
        let mut p = port(Queue::Packets(2));
        let v: Vec<_> = (0..4).map(|_| p.enqueue(t0, 1000)).collect();
        assert_eq!(v.iter().filter(|v| v.is_none()).count(), 2);
        assert_eq!(p.stats().dropped, 2);
        assert_eq!(p.stats().datagrams, 4);
    }
}
