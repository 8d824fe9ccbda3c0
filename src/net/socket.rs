//! quinn's socket traits, implemented over an in-memory network of emulated links.
//!
//! This is the one module that touches quinn's `AsyncUdpSocket` / `UdpPoller` traits
//! (quinn 0.12 changes them). Every datagram a quinn endpoint sends goes through the
//! sans-IO [`Link`] of its (source, destination) pair, which returns a delivery instant;
//! the clock's precise timer then puts it in the destination's inbox.

use super::link::{Link, LinkStats, Verdict};
use crate::clock::Clock;
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

struct Inner {
    clock: Clock,
    hosts: Mutex<HashMap<SocketAddr, Arc<Inbox>>>,
    links: Mutex<HashMap<(SocketAddr, SocketAddr), Link>>,
    unroutable: Mutex<u64>,
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
                hosts: Mutex::new(HashMap::new()),
                links: Mutex::new(HashMap::new()),
                unroutable: Mutex::new(0),
            }),
        }
    }

    /// Adds the link that carries datagrams from `from` to `to`. Without one, they are lost.
    pub fn add_link(&self, from: SocketAddr, to: SocketAddr, link: Link) {
        lock(&self.inner.links).insert((from, to), link);
    }

    /// Binds a socket at `addr`.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<Arc<MemSocket>> {
        let mut hosts = lock(&self.inner.hosts);
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
        lock(&self.inner.links).get(&(from, to)).map(|l| l.stats())
    }

    /// Datagrams sent where no link exists.
    pub fn unroutable(&self) -> u64 {
        *lock(&self.inner.unroutable)
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
        let verdict = lock(&self.net.links)
            .get_mut(&(self.addr, to))
            .map(|l| l.offer(now, data.len()));
        let at = match verdict {
            Some(Verdict::Deliver(at)) => at,
            Some(Verdict::Lost | Verdict::Dropped) => return,
            None => {
                *lock(&self.net.unroutable) += 1;
                return;
            }
        };
        let Some(inbox) = lock(&self.net.hosts).get(&to).cloned() else {
            *lock(&self.net.unroutable) += 1;
            return;
        };
        let d = Datagram {
            from: self.addr,
            data: data.to_vec(),
        };
        if at <= now {
            inbox.push(d);
        } else {
            self.net.clock.run_at(at, move || inbox.push(d));
        }
    }
}

impl AsyncUdpSocket for MemSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        // Split GSO batches so each datagram meets the link on its own.
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for segment in transmit.contents.chunks(size) {
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
        lock(&self.net.hosts).remove(&self.addr);
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
