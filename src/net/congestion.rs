//! A congestion controller that behaves like TCP where quinn's differ: it wraps one of
//! quinn's controllers (CUBIC, NewReno, BBR) and, when asked, restarts from the initial
//! window after an idle period, as TCP does (RFC 5681 §4.1, Linux's default
//! `net.ipv4.tcp_slow_start_after_idle = 1`).
//!
//! The controller only sees what quinn tells it: bytes sent (`on_sent`, for every packet,
//! acknowledgement-only packets included), bytes acknowledged and what is still in flight
//! (`on_end_acks`). Once an acknowledgement leaves nothing in flight, the pipe counts as
//! idle from the moment its last data was sent (the newest acknowledged packet's send
//! time, Linux's `lsndtime`); the first packet sent more than one retransmission timeout
//! after that (Linux's RTO with a steady RTT: smoothed RTT + 200 ms) replaces the inner
//! controller with a fresh one at the restart window, so the data after the idle period
//! starts in slow start.
//!
//! Where RFC 5681 sets the window to min(restart window, window) and Linux halves it once
//! per RTO of idle time down to that, this restarts to the restart window at once, and the
//! slow-start threshold starts again from infinity (Linux keeps at least 3/4 of the old
//! window as its threshold). Both differences only matter after short idle periods or
//! once the window reaches the threshold again. `docs/links.md` has the measurements.

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;
use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Linux's lowest retransmission timeout (`TCP_RTO_MIN`): with a steady RTT its RTO is the
/// smoothed RTT plus this.
pub const RTO_MIN: Duration = Duration::from_millis(200);

/// A factory of any of quinn's controllers.
pub type Factory = Arc<dyn ControllerFactory + Send + Sync + 'static>;

/// Builds [`Restart`] controllers: `start` makes the first one (its initial window is the
/// connection's starting window), `restart` the fresh ones after each idle period.
pub struct RestartFactory {
    pub start: Factory,
    pub restart: Factory,
}

impl ControllerFactory for RestartFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Restart {
            inner: self.start.clone().build(now, current_mtu),
            restart: self.restart.clone(),
            mtu: current_mtu,
            srtt: None,
            last_acked_sent: None,
            idle_since: None,
            restarts: 0,
        })
    }
}

/// A controller that restarts from the restart window after an idle period.
pub struct Restart {
    inner: Box<dyn Controller>,
    restart: Factory,
    mtu: u16,
    srtt: Option<Duration>,
    /// When the newest packet acknowledged so far was sent.
    last_acked_sent: Option<Instant>,
    /// While the pipe is empty: when its last data was sent (Linux's `lsndtime`).
    idle_since: Option<Instant>,
    /// Times the window restarted (for tests and diagnostics).
    restarts: u64,
}

impl Restart {
    /// The retransmission timeout the idle period is compared with.
    fn rto(&self) -> Duration {
        self.srtt.unwrap_or(Duration::ZERO) + RTO_MIN
    }

    /// Times the window has restarted.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
}

impl Controller for Restart {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        // An acknowledgement-only packet leaves the pipe idle (it is never acknowledged,
        // so `on_end_acks` would not say so again): only a restart or the next
        // acknowledgement of data ends the idle period.
        if let Some(idle) = self.idle_since
            && now.saturating_duration_since(idle) > self.rto()
        {
            self.inner = self.restart.clone().build(now, self.mtu);
            self.idle_since = None;
            self.restarts += 1;
        }
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.srtt = Some(rtt.get());
        self.last_acked_sent = self.last_acked_sent.max(Some(sent));
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.idle_since = match in_flight {
            0 => self.last_acked_sent.or(Some(now)),
            _ => None,
        };
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.idle_since = None;
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = new_mtu;
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Restart {
            inner: self.inner.clone_box(),
            restart: self.restart.clone(),
            mtu: self.mtu,
            srtt: self.srtt,
            last_acked_sent: self.last_acked_sent,
            idle_since: self.idle_since,
            restarts: self.restarts,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// Bytes of a 1-RTT QUIC packet that are not stream data, at most: a short header with
/// quinn's 8-byte connection IDs and a 4-byte packet number (13), the AEAD tag (16), and a
/// STREAM frame's type, stream ID, offset and length (1 + 4 + 8 + 2). A Nagle segment of
/// the path's MTU less this always fits one packet.
pub const PACKET_OVERHEAD: u16 = 13 + 16 + 15;

/// What a connection's Nagle writer (`net::framed::write_nagle`) and its congestion
/// controller ([`NagleController`]) share: whether a small segment (less than a full
/// packet of stream data) is still unacknowledged, the condition under which Linux's
/// Nagle holds the next partial segment (Minshall's variant, `tcp_minshall_check`).
///
/// The writer marks a small segment before it writes it; the controller takes the first
/// packet quinn sends after the mark that is not full-sized as the one carrying it, and
/// clears the mark once an acknowledgement covers that packet number or leaves nothing
/// in flight after a packet has left since the mark (the backstop, should the packet
/// taken be an acknowledgement-only one, or the segment have left in full-sized ones).
#[derive(Debug)]
pub struct NagleState {
    inner: std::sync::Mutex<NagleInner>,
    notify: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct NagleInner {
    /// A small segment was written and is not known to be acknowledged.
    small_unacked: bool,
    /// The packet number taken as the small segment's, once sent.
    packet: Option<u64>,
    /// A packet was sent since the mark: the small segment has left (in it, or in a
    /// full-sized one), so nothing in flight means it is acknowledged.
    sent: bool,
    /// The path's UDP payload size (quinn's current MTU).
    mtu: u16,
    /// Small segments the writer held back for an acknowledgement (for tests).
    held: u64,
}

impl NagleState {
    fn new(mtu: u16) -> Self {
        NagleState {
            inner: std::sync::Mutex::new(NagleInner {
                mtu,
                ..NagleInner::default()
            }),
            notify: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NagleInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state of `conn`'s controller, if it is a [`NagleController`]'s.
    pub fn of(conn: &quinn::Connection) -> Option<Arc<NagleState>> {
        conn.congestion_state()
            .into_any()
            .downcast::<NagleController>()
            .ok()
            .map(|c| c.state.clone())
    }

    /// The largest segment of stream data one packet carries on the path now (TCP's MSS).
    pub fn mss(&self) -> usize {
        usize::from(self.lock().mtu.saturating_sub(PACKET_OVERHEAD).max(1))
    }

    /// Whether a small segment is unacknowledged.
    pub fn small_unacked(&self) -> bool {
        self.lock().small_unacked
    }

    /// Small segments that waited for an acknowledgement.
    pub fn held(&self) -> u64 {
        self.lock().held
    }

    /// Marks the small segment about to be written as unacknowledged if none is; false if
    /// one is (the caller holds its segment and counts it with [`count_held`](Self::count_held)).
    pub fn try_send_small(&self) -> bool {
        let mut s = self.lock();
        if s.small_unacked {
            return false;
        }
        s.small_unacked = true;
        s.packet = None;
        s.sent = false;
        true
    }

    /// Waits until no small segment is unacknowledged, then marks the one about to be
    /// written as unacknowledged.
    pub async fn send_small(&self) {
        self.wait_and_mark(false).await
    }

    /// Counts a segment held for an acknowledgement.
    pub fn count_held(&self) {
        self.lock().held += 1;
    }

    /// [`send_small`](Self::send_small) for a segment already counted as held.
    pub async fn send_held(&self) {
        self.wait_and_mark(true).await
    }

    async fn wait_and_mark(&self, mut counted: bool) {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if !s.small_unacked {
                    s.small_unacked = true;
                    s.packet = None;
                    s.sent = false;
                    return;
                }
                if !counted {
                    s.held += 1;
                    counted = true;
                }
            }
            notified.await;
        }
    }

    fn on_sent(&self, bytes: u64, packet: u64) {
        let mut s = self.lock();
        if s.small_unacked && s.packet.is_none() && bytes < u64::from(s.mtu) {
            s.packet = Some(packet);
        }
        s.sent = true;
    }

    fn on_end_acks(&self, in_flight: u64, largest_acked: Option<u64>) {
        let mut s = self.lock();
        let covered = matches!((s.packet, largest_acked), (Some(p), Some(l)) if l >= p);
        // Nothing in flight before the segment's packet has left (an acknowledgement of
        // earlier packets, processed between the mark and the send) says nothing of it.
        if s.small_unacked && ((in_flight == 0 && s.sent) || covered) {
            s.small_unacked = false;
            s.packet = None;
            drop(s);
            self.notify.notify_waiters();
        }
    }

    fn on_mtu_update(&self, mtu: u16) {
        self.lock().mtu = mtu;
    }
}

/// Builds [`NagleController`]s around another factory's controllers.
pub struct NagleFactory {
    pub inner: Factory,
}

impl ControllerFactory for NagleFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(NagleController {
            inner: self.inner.clone().build(now, current_mtu),
            state: Arc::new(NagleState::new(current_mtu)),
        })
    }
}

/// A controller that leaves the window to the one it wraps and tells its connection's
/// Nagle writer when small segments are acknowledged ([`NagleState`]). Clones (what
/// `Connection::congestion_state` returns) share the state.
pub struct NagleController {
    inner: Box<dyn Controller>,
    state: Arc<NagleState>,
}

impl Controller for NagleController {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.state.on_sent(bytes, last_packet_number);
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.state.on_end_acks(in_flight, largest_packet_num_acked);
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.state.on_mtu_update(new_mtu);
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(NagleController {
            inner: self.inner.clone_box(),
            state: self.state.clone(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Waker};

    /// Polls `send_small` once: whether it went through without waiting.
    fn sends_at_once(s: &NagleState) -> bool {
        let mut f = std::pin::pin!(s.send_small());
        f.as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    }

    #[test]
    fn a_small_segment_waits_until_an_ack_covers_the_last_small_packet() {
        let s = NagleState::new(1452);
        assert_eq!(s.mss(), 1452 - 44);
        // Nothing unacknowledged: the first small segment goes and is marked.
        assert!(sends_at_once(&s));
        assert!(s.small_unacked());
        // A full-sized packet is not the small segment's; the next smaller one is.
        s.on_sent(1452, 7);
        s.on_sent(300, 8);
        s.on_sent(40, 9);
        assert!(
            !sends_at_once(&s),
            "held while the small segment is unacknowledged"
        );
        assert_eq!(s.held(), 1);
        // An acknowledgement of packets before it changes nothing.
        s.on_end_acks(1000, Some(7));
        assert!(s.small_unacked());
        // One that covers packet 8 clears it.
        s.on_end_acks(500, Some(8));
        assert!(!s.small_unacked());
        assert!(sends_at_once(&s));
        // Nothing in flight clears it too, whichever packet was taken.
        s.on_sent(60, 10);
        s.on_end_acks(0, Some(3));
        assert!(!s.small_unacked());
        // But not before a packet has left since the mark: an acknowledgement of earlier
        // packets processed between the mark and the segment's send leaves it marked.
        assert!(sends_at_once(&s));
        s.on_end_acks(0, Some(10));
        assert!(s.small_unacked(), "cleared before the segment left");
        s.on_sent(1452, 11);
        s.on_end_acks(0, Some(11));
        assert!(
            !s.small_unacked(),
            "left in a full-sized packet, all acknowledged"
        );
    }

    #[test]
    fn the_segment_size_follows_the_path_mtu() {
        let s = NagleState::new(1200);
        assert_eq!(s.mss(), 1156);
        s.on_mtu_update(1452);
        assert_eq!(s.mss(), 1408);
    }
}
