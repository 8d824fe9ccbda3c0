//! quinn's socket traits, implemented by the two drivers of emulated links.
//!
//! This is the one module that touches quinn's `AsyncUdpSocket` / `UdpPoller` traits
//! (quinn 0.12 changes them).
//!
//! - [`Network`] / [`MemSocket`]: an in-memory network. Every datagram a quinn endpoint
//!   sends goes through the sans-IO [`Link`] of its (source, destination) pair, which
//!   returns its delivery instants; the clock then puts it in the destination's inbox.
//! - [`UdpLinkSocket`]: a real UDP socket with the same link stages in front of it, on its
//!   egress (as netem sits on an interface's egress), so a run across real hosts can add
//!   distance on top of the real network.
//!
//! Both split quinn's GSO batches so each datagram meets the link on its own, and both
//! record how late the clock delivered each datagram (the emulator's own lateness).

use super::fault::Gate;
use super::link::{Link, LinkStats};
use crate::clock::Clock;
use hdrhistogram::Histogram;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Datagrams an inbox holds before it drops (like a socket's receive buffer).
const INBOX_LIMIT: usize = 8192;
/// Datagrams quinn may hand over in one GSO batch.
const GSO_SEGMENTS: usize = 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Datagram {
    from: SocketAddr,
    data: Vec<u8>,
}

#[derive(Default)]
struct InboxState {
    queue: VecDeque<Datagram>,
    waker: Option<Waker>,
    overflow: u64,
}

#[derive(Default)]
struct Inbox {
    state: Mutex<InboxState>,
}

impl Inbox {
    fn push(&self, d: Datagram) {
        let waker = {
            let mut st = lock(&self.state);
            if st.queue.len() >= INBOX_LIMIT {
                st.overflow += 1;
                return;
            }
            st.queue.push_back(d);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// How late the clock delivered datagrams (actual minus scheduled), in nanoseconds.
#[derive(Clone)]
pub struct Lateness {
    hist: Arc<Mutex<Histogram<u64>>>,
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness {
            hist: Arc::new(Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds"),
            )),
        }
    }
}

impl Lateness {
    fn record(&self, late: std::time::Duration) {
        let ns = (late.as_nanos() as u64).min(3_600_000_000_000);
        let _ = lock(&self.hist).record(ns);
    }

    /// A copy of the histogram so far.
    pub fn histogram(&self) -> Histogram<u64> {
        lock(&self.hist).clone()
    }
}

/// The network's tables, behind one lock: a datagram takes it once on its way out.
#[derive(Default)]
struct Routes {
    hosts: HashMap<SocketAddr, Arc<Inbox>>,
    links: HashMap<(SocketAddr, SocketAddr), Link>,
    unroutable: u64,
    /// Faults acting on link directions (`[[fault]]`), checked before the link.
    gates: HashMap<(SocketAddr, SocketAddr), Gate>,
}

struct Inner {
    clock: Clock,
    routes: Mutex<Routes>,
    lateness: Lateness,
}

/// An in-memory network: hosts by address and a link for each direction that exists.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

impl Network {
    pub fn new(clock: Clock) -> Self {
        Network {
            inner: Arc::new(Inner {
                clock,
                routes: Mutex::new(Routes::default()),
                lateness: Lateness::default(),
            }),
        }
    }

    /// Adds the link that carries datagrams from `from` to `to`. Without one, they are lost.
    pub fn add_link(&self, from: SocketAddr, to: SocketAddr, link: Link) {
        lock(&self.inner.routes).links.insert((from, to), link);
    }

    /// Binds a socket at `addr`.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<Arc<MemSocket>> {
        let hosts = &mut lock(&self.inner.routes).hosts;
        if hosts.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already bound"),
            ));
        }
        let inbox = Arc::new(Inbox::default());
        hosts.insert(addr, inbox.clone());
        Ok(Arc::new(MemSocket {
            addr,
            net: self.inner.clone(),
            inbox,
        }))
    }

    /// Counters of the link from `from` to `to`.
    pub fn link_stats(&self, from: SocketAddr, to: SocketAddr) -> Option<LinkStats> {
        lock(&self.inner.routes)
            .links
            .get(&(from, to))
            .map(|l| l.stats())
    }

    /// Datagrams sent where no link exists.
    pub fn unroutable(&self) -> u64 {
        lock(&self.inner.routes).unroutable
    }

    /// Datagrams dropped because a receiver's inbox (its socket buffer) was full.
    pub fn inbox_overflow(&self) -> u64 {
        lock(&self.inner.routes)
            .hosts
            .values()
            .map(|inbox| lock(&inbox.state).overflow)
            .sum()
    }

    /// Starts every link's changes, timed from `epoch` (the start of the measured phase).
    pub fn start_changes(&self, epoch: std::time::Instant) {
        for link in lock(&self.inner.routes).links.values_mut() {
            link.start_changes(epoch);
        }
    }

    /// How late the clock delivered datagrams so far.
    pub fn lateness(&self) -> Lateness {
        self.inner.lateness.clone()
    }

    /// Fault `id` begins on the direction `from` -> `to`, dropping `fraction` of its
    /// datagrams; the direction's gate draws from `seed`.
    pub fn fault_begin(
        &self,
        from: SocketAddr,
        to: SocketAddr,
        id: usize,
        fraction: f64,
        seed: u64,
    ) {
        lock(&self.inner.routes)
            .gates
            .entry((from, to))
            .or_insert_with(|| Gate::new(seed))
            .begin(id, fraction);
    }

    /// Fault `id` ends on the direction `from` -> `to`.
    pub fn fault_end(&self, from: SocketAddr, to: SocketAddr, id: usize) {
        if let Some(g) = lock(&self.inner.routes).gates.get_mut(&(from, to)) {
            g.end(id);
        }
    }

    /// Datagrams faults dropped, on every direction.
    pub fn fault_dropped(&self) -> u64 {
        lock(&self.inner.routes)
            .gates
            .values()
            .map(|g| g.dropped)
            .sum()
    }
}

/// A socket on the in-memory network.
pub struct MemSocket {
    addr: SocketAddr,
    net: Arc<Inner>,
    inbox: Arc<Inbox>,
}

impl fmt::Debug for MemSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemSocket")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MemSocket {
    fn send_one(&self, to: SocketAddr, data: &[u8]) {
        let now = self.net.clock.now();
        let key = (self.addr, to);
        // One lock for the gate, the link and the destination's inbox.
        let (verdict, inbox) = {
            let mut routes = lock(&self.net.routes);
            let routes = &mut *routes;
            if !routes.gates.is_empty()
                && let Some(g) = routes.gates.get_mut(&key)
                && !g.pass()
            {
                return;
            }
            let Some(verdict) = routes.links.get_mut(&key).map(|l| l.offer(now, data.len())) else {
                routes.unroutable += 1;
                return;
            };
            if verdict.deliveries().next().is_none() {
                return;
            }
            let Some(inbox) = routes.hosts.get(&to).cloned() else {
                routes.unroutable += 1;
                return;
            };
            (verdict, inbox)
        };
        let deliveries = verdict.deliveries();
        for at in deliveries {
            let d = Datagram {
                from: self.addr,
                data: data.to_vec(),
            };
            if at <= now {
                inbox.push(d);
            } else {
                let (inbox, clock, lateness) = (
                    inbox.clone(),
                    self.net.clock.clone(),
                    self.net.lateness.clone(),
                );
                self.net.clock.run_at(at, move || {
                    lateness.record(clock.now().saturating_duration_since(at));
                    inbox.push(d);
                });
            }
        }
    }
}

/// Splits a GSO batch into its datagrams.
fn segments<'a>(transmit: &Transmit<'a>) -> std::slice::Chunks<'a, u8> {
    let size = transmit
        .segment_size
        .unwrap_or(transmit.contents.len())
        .max(1);
    transmit.contents.chunks(size)
}

impl AsyncUdpSocket for MemSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // Split GSO batches so each datagram meets the link on its own.
        for segment in segments(transmit) {
            self.send_one(transmit.destination, segment);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut st = lock(&self.inbox.state);
        if st.queue.is_empty() {
            st.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some(d) = st.queue.pop_front() else { break };
            let len = d.data.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&d.data[..len]);
            meta[n] = RecvMeta {
                addr: d.from,
                len,
                stride: len,
                ecn: None,
                dst_ip: Some(self.addr.ip()),
            };
            n += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn max_transmit_segments(&self) -> usize {
        GSO_SEGMENTS
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

impl Drop for MemSocket {
    fn drop(&mut self) {
        lock(&self.net.routes).hosts.remove(&self.addr);
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A real UDP socket whose egress goes through emulated links, one per destination (or a
/// default link for every destination). Datagrams leave the socket at their delivery
/// instants, sent from the clock's timing thread; receiving is the socket's own.
pub struct UdpLinkSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    tx: Arc<std::net::UdpSocket>,
    clock: Clock,
    links: Mutex<HashMap<SocketAddr, Link>>,
    default: Mutex<Option<Link>>,
    lateness: Lateness,
    /// Datagrams the kernel refused (its send buffer was full).
    refused: Arc<Mutex<u64>>,
}

impl fmt::Debug for UdpLinkSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpLinkSocket")
            .field("addr", &self.inner.local_addr().ok())
            .finish()
    }
}

impl UdpLinkSocket {
    /// Wraps a bound socket. `default` applies to destinations without a link of their own.
    pub fn new(
        socket: std::net::UdpSocket,
        clock: Clock,
        default: Option<Link>,
    ) -> io::Result<Arc<Self>> {
        use quinn::Runtime as _;
        let tx = Arc::new(socket.try_clone()?);
        let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
        Ok(Arc::new(UdpLinkSocket {
            inner,
            tx,
            clock,
            links: Mutex::new(HashMap::new()),
            default: Mutex::new(default),
            lateness: Lateness::default(),
            refused: Arc::new(Mutex::new(0)),
        }))
    }

    /// Puts `link` on the way to `to`.
    pub fn add_link(&self, to: SocketAddr, link: Link) {
        lock(&self.links).insert(to, link);
    }

    /// Counters of the link to `to` (or of the default link with `None`).
    pub fn link_stats(&self, to: Option<SocketAddr>) -> Option<LinkStats> {
        match to {
            Some(to) => lock(&self.links).get(&to).map(|l| l.stats()),
            None => lock(&self.default).as_ref().map(|l| l.stats()),
        }
    }

    /// How late the clock sent datagrams so far.
    pub fn lateness(&self) -> Lateness {
        self.lateness.clone()
    }

    /// Datagrams the kernel refused.
    pub fn refused(&self) -> u64 {
        *lock(&self.refused)
    }

    fn send_one(&self, to: SocketAddr, data: &[u8]) {
        let now = self.clock.now();
        let verdict = {
            let mut links = lock(&self.links);
            match links.get_mut(&to) {
                Some(l) => Some(l.offer(now, data.len())),
                None => lock(&self.default)
                    .as_mut()
                    .map(|l| l.offer(now, data.len())),
            }
        };
        let deliveries: Vec<std::time::Instant> = match verdict {
            Some(v) => v.deliveries().collect(),
            None => vec![now],
        };
        for at in deliveries {
            let (tx, refused) = (self.tx.clone(), self.refused.clone());
            let send = move |data: &[u8]| {
                if tx.send_to(data, to).is_err() {
                    *lock(&refused) += 1;
                }
            };
            if at <= now {
                send(data);
            } else {
                let data = data.to_vec();
                let (clock, lateness) = (self.clock.clone(), self.lateness.clone());
                self.clock.run_at(at, move || {
                    lateness.record(clock.now().saturating_duration_since(at));
                    send(&data);
                });
            }
        }
    }
}

impl AsyncUdpSocket for UdpLinkSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        // Datagrams wait in the links, not in the socket: always writable.
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        for segment in segments(transmit) {
            self.send_one(transmit.destination, segment);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        GSO_SEGMENTS
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        false
    }
}
