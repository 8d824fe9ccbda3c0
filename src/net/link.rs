//! The sans-IO link emulator: one direction of a link as a pipeline of small stages, each
//! seeded, in netem's order:
//!
//! MTU (oversize datagrams dropped) -> duplication -> loss (Bernoulli, correlated, or
//! Gilbert-Elliott) -> tail-drop queue and rate (fixed, or a mahimahi trace) -> delay with
//! jitter (uniform, normal, pareto, paretonormal; correlated), FIFO or reordering.
//!
//! Time is an argument; nothing here sleeps or reads a clock. The caller delivers at the
//! instants returned. `docs/links.md` describes the model next to netem's.

use crate::net::params::{
    JitterDist, LinkChange, LinkParams, Loss, Queue, RateTrace, WIRE_OVERHEAD,
};
use crate::net::port::SharedPort;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What happens to a datagram offered to the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered to the far end at this instant.
    Deliver(Instant),
    /// Duplicated, and both copies delivered, at these instants.
    Twice(Instant, Instant),
    /// Lost by the loss model.
    Lost,
    /// Dropped because the queue in front of the rate limiter was full.
    Dropped,
    /// Dropped because it is larger than the link's MTU.
    Oversize,
}

impl Verdict {
    /// The delivery instants, none, one or two.
    pub fn deliveries(self) -> impl Iterator<Item = Instant> {
        let (a, b) = match self {
            Verdict::Deliver(a) => (Some(a), None),
            Verdict::Twice(a, b) => (Some(a), Some(b)),
            _ => (None, None),
        };
        a.into_iter().chain(b)
    }
}

/// Counters of one link direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Datagrams offered to the link.
    pub datagrams: u64,
    /// UDP payload bytes offered.
    pub bytes: u64,
    /// Copies delivered (duplicates included).
    pub delivered: u64,
    /// Copies lost by the loss model.
    pub lost: u64,
    /// Copies dropped by the full queue.
    pub dropped: u64,
    /// Datagrams duplicated.
    pub duplicated: u64,
    /// Datagrams larger than the MTU.
    pub oversize: u64,
    /// Copies sent ahead of the delay by explicit reordering.
    pub reordered: u64,
    /// Link changes applied.
    pub changes_applied: u64,
}

/// A Bernoulli event with lag-1 correlation ρ: a two-state Markov chain whose long-run rate
/// is still `p` (netem's correlated generator shifts the rate; this one does not).
fn correlated(rng: &mut ChaCha8Rng, p: f64, rho: f64, last: &mut bool) -> bool {
    if p <= 0.0 {
        *last = false;
        return false;
    }
    let q = if *last {
        p + rho * (1.0 - p)
    } else {
        p * (1.0 - rho)
    };
    *last = rng.random::<f64>() < q;
    *last
}

/// The standard normal CDF, from erfc (Numerical Recipes' Chebyshev fit, error < 1.2e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = -z / std::f64::consts::SQRT_2;
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -a * a - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

/// netem's pareto table (shape 3, scale 1: mean 1.5, variance 3/4), standardized, at the
/// quantile of the standard normal `z`. The upper tail comes from Φ(-z) directly, which
/// keeps its precision where Φ(z) rounds to 1.
fn pareto(z: f64) -> f64 {
    let x = normal_cdf(-z).max(1e-300).powf(-1.0 / 3.0);
    (x - 1.5) / 0.75f64.sqrt()
}

/// The standard deviation of netem's paretonormal mix (1/4 normal + 3/4 pareto, taken at
/// the same quantile as its table does), so the mix can be scaled to unit deviation.
fn paretonormal_sd() -> f64 {
    static SD: OnceLock<f64> = OnceLock::new();
    *SD.get_or_init(|| {
        // E[(z/4 + 3/4 pareto(Φ(z)))²] by the midpoint rule over the normal density.
        let (lo, hi, n) = (-9.0f64, 9.0f64, 36_000);
        let h = (hi - lo) / n as f64;
        let mut sum = 0.0;
        for i in 0..n {
            let z = lo + (i as f64 + 0.5) * h;
            let v = 0.25 * z + 0.75 * pareto(z);
            sum += v * v * (-z * z / 2.0).exp() * h;
        }
        (sum / (2.0 * std::f64::consts::PI).sqrt()).sqrt()
    })
}

/// One direction of an emulated link.
#[derive(Debug)]
pub struct Link {
    params: LinkParams,
    base: LinkParams,
    changes: Vec<LinkChange>,
    next_change: usize,
    epoch: Option<Instant>,
    rng: ChaCha8Rng,
    /// Accepted datagrams not yet serialized: (departure, wire bytes).
    queue: VecDeque<(Instant, u32)>,
    queued_bytes: u64,
    /// When the fixed-rate limiter finishes what it has accepted.
    busy_until: Option<Instant>,
    trace: TraceCursor,
    /// The latest delivery scheduled so far, for FIFO order.
    last_delivery: Option<Instant>,
    /// The AR(1) state of the delay's underlying normal.
    jitter_z: f64,
    ge_bad: bool,
    loss_last: bool,
    reorder_last: bool,
    reorder_counter: u32,
    stats: LinkStats,
    /// The port this direction shares with other links, if any.
    port: Option<SharedPort>,
}

/// Where a trace-driven rate is: the next opportunity with room, and the room left in it.
#[derive(Debug, Default)]
struct TraceCursor {
    trace: Option<Arc<RateTrace>>,
    epoch: Option<Instant>,
    next: u64,
    left: u32,
}

impl TraceCursor {
    fn time(&self, t: &RateTrace, j: u64) -> Instant {
        let n = t.opportunities.len() as u64;
        let ms = (j / n) * t.period_ms + t.opportunities[(j % n) as usize];
        self.epoch.expect("set before use") + Duration::from_millis(ms)
    }

    /// Serves `wire` bytes that join the queue at `now`; returns when the last byte leaves.
    fn serve(&mut self, trace: &Arc<RateTrace>, now: Instant, wire: u32) -> Instant {
        if !self.trace.as_ref().is_some_and(|t| Arc::ptr_eq(t, trace)) {
            *self = TraceCursor {
                trace: Some(trace.clone()),
                epoch: Some(now),
                next: 0,
                left: RateTrace::OPPORTUNITY_BYTES,
            };
        }
        // Opportunities before `now` passed unused: mahimahi does not bank them.
        if self.time(trace, self.next) < now {
            let since = now - self.epoch.expect("set");
            let target = since.as_nanos().div_ceil(1_000_000) as u64;
            let n = trace.opportunities.len() as u64;
            // `within` in (0, period]: an opportunity at a period's last millisecond
            // belongs to that period, not to the next one's start.
            let cycle = target.max(1).saturating_sub(1) / trace.period_ms;
            let within = target - cycle * trace.period_ms;
            let i = trace.opportunities.partition_point(|&o| o < within) as u64;
            let j = cycle * n + i;
            if j > self.next {
                self.next = j;
                self.left = RateTrace::OPPORTUNITY_BYTES;
            }
        }
        let mut rem = wire;
        loop {
            let take = rem.min(self.left);
            rem -= take;
            self.left -= take;
            let at = self.time(trace, self.next);
            if self.left == 0 {
                self.next += 1;
                self.left = RateTrace::OPPORTUNITY_BYTES;
            }
            if rem == 0 {
                return at;
            }
        }
    }
}

impl Link {
    pub fn new(params: LinkParams, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // The delay's AR(1) process starts in its stationary distribution, so even the
        // first delays of a run have the configured spread.
        let jitter_z = rng.sample(StandardNormal);
        Link {
            base: params.clone(),
            params,
            changes: Vec::new(),
            next_change: 0,
            epoch: None,
            rng,
            queue: VecDeque::new(),
            queued_bytes: 0,
            busy_until: None,
            trace: TraceCursor::default(),
            last_delivery: None,
            jitter_z,
            ge_bad: false,
            loss_last: false,
            reorder_last: false,
            reorder_counter: 0,
            stats: LinkStats::default(),
            port: None,
        }
    }

    /// Puts the link on a port it shares with other links: its datagrams queue there, after
    /// its own queue and rate and before its delay, behind every other link's.
    pub fn with_port(mut self, port: SharedPort) -> Self {
        self.port = Some(port);
        self
    }

    /// Parameter changes during the run, applied from [`Link::start_changes`] on.
    pub fn with_changes(mut self, changes: Vec<LinkChange>) -> Self {
        self.changes = changes;
        self
    }

    /// Starts the clock of the link's changes: each applies at `epoch + at`.
    pub fn start_changes(&mut self, epoch: Instant) {
        self.epoch = Some(epoch);
        self.next_change = 0;
        self.params = self.base.clone();
    }

    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    fn apply_changes(&mut self, now: Instant) {
        let Some(epoch) = self.epoch else { return };
        while let Some(c) = self.changes.get(self.next_change) {
            if epoch + c.at > now {
                break;
            }
            self.params = c.params.clone();
            self.next_change += 1;
            self.stats.changes_applied += 1;
        }
    }

    /// Offers a datagram of `len` bytes of UDP payload at `now`.
    pub fn offer(&mut self, now: Instant, len: usize) -> Verdict {
        self.apply_changes(now);
        self.stats.datagrams += 1;
        self.stats.bytes += len as u64;
        let wire = u32::try_from(len)
            .unwrap_or(u32::MAX)
            .saturating_add(WIRE_OVERHEAD);
        if self.params.mtu.is_some_and(|m| wire > m) {
            self.stats.oversize += 1;
            return Verdict::Oversize;
        }
        let twice = self.params.duplicate > 0.0 && self.rng.random::<f64>() < self.params.duplicate;
        if twice {
            self.stats.duplicated += 1;
        }
        let first = self.one_copy(now, wire);
        if !twice {
            return first;
        }
        match (first, self.one_copy(now, wire)) {
            (Verdict::Deliver(a), Verdict::Deliver(b)) => Verdict::Twice(a, b),
            (Verdict::Deliver(a), _) => Verdict::Deliver(a),
            (_, Verdict::Deliver(b)) => Verdict::Deliver(b),
            (first, _) => first,
        }
    }

    fn one_copy(&mut self, now: Instant, wire: u32) -> Verdict {
        if self.lose() {
            self.stats.lost += 1;
            return Verdict::Lost;
        }
        let Some(departure) = self
            .enqueue(now, wire)
            .and_then(|d| self.through_port(d, wire))
        else {
            self.stats.dropped += 1;
            return Verdict::Dropped;
        };
        self.stats.delivered += 1;
        Verdict::Deliver(self.delay_stage(departure))
    }

    fn lose(&mut self) -> bool {
        match self.params.loss {
            Loss::None => false,
            Loss::Bernoulli { p, correlation } => {
                correlated(&mut self.rng, p, correlation, &mut self.loss_last)
            }
            Loss::GilbertElliott {
                p,
                r,
                loss_good,
                loss_bad,
            } => {
                // Transition, then lose with the new state's probability.
                let flip: f64 = self.rng.random();
                if self.ge_bad {
                    if flip < r {
                        self.ge_bad = false;
                    }
                } else if flip < p {
                    self.ge_bad = true;
                }
                let loss = if self.ge_bad { loss_bad } else { loss_good };
                loss > 0.0 && self.rng.random::<f64>() < loss
            }
        }
    }

    /// The tail-drop queue and the rate: when the datagram's last byte leaves, or `None`
    /// when the queue is full.
    fn enqueue(&mut self, now: Instant, wire: u32) -> Option<Instant> {
        if !self.params.rate_limited() {
            return Some(now);
        }
        while self.queue.front().is_some_and(|&(d, _)| d <= now) {
            let (_, b) = self.queue.pop_front().expect("peeked");
            self.queued_bytes -= b as u64;
        }
        let full = match self.params.queue {
            Queue::Bytes(limit) => self.queued_bytes + wire as u64 > limit,
            Queue::Packets(limit) => self.queue.len() >= limit as usize,
        };
        if full {
            return None;
        }
        let done = match (&self.params.trace, self.params.bandwidth) {
            (Some(trace), _) => {
                let trace = trace.clone();
                self.trace.serve(&trace, now, wire)
            }
            (None, Some(bps)) => {
                let start = self.busy_until.map_or(now, |b| b.max(now));
                let done = start + Duration::from_secs_f64(wire as f64 * 8.0 / bps);
                self.busy_until = Some(done);
                done
            }
            (None, None) => now,
        };
        self.queue.push_back((done, wire));
        self.queued_bytes += wire as u64;
        Some(done)
    }

    /// The shared port: when a datagram that left the link's own rate limiter at
    /// `departure` leaves the port, or `None` when the port's queue is full.
    fn through_port(&mut self, departure: Instant, wire: u32) -> Option<Instant> {
        match &self.port {
            None => Some(departure),
            Some(p) => p
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .enqueue(departure, wire),
        }
    }

    /// Delay, jitter and order: when a datagram that left the rate limiter at `departure`
    /// reaches the far end.
    fn delay_stage(&mut self, departure: Instant) -> Instant {
        if let Some(r) = self.params.reorder
            && r.p > 0.0
        {
            if self.reorder_counter + 1 >= r.gap.max(1)
                && correlated(&mut self.rng, r.p, r.correlation, &mut self.reorder_last)
            {
                // Sent at once, ahead of what waits in the delay line (netem's reorder).
                self.reorder_counter = 0;
                self.stats.reordered += 1;
                return departure;
            }
            self.reorder_counter += 1;
        }
        let mut at = departure + self.sample_delay();
        if self.params.fifo
            && let Some(last) = self.last_delivery
        {
            at = at.max(last);
        }
        self.last_delivery = Some(self.last_delivery.map_or(at, |l| l.max(at)));
        at
    }

    /// One delay: `delay + jitter × t`, t from the distribution at a correlated quantile.
    fn sample_delay(&mut self) -> Duration {
        let p = &self.params;
        if p.jitter.is_zero() {
            return p.delay;
        }
        let rho = p.jitter_correlation;
        let fresh: f64 = self.rng.sample(StandardNormal);
        let z = rho * self.jitter_z + (1.0 - rho * rho).sqrt() * fresh;
        self.jitter_z = z;
        let t = match p.jitter_distribution {
            JitterDist::Uniform => 2.0 * normal_cdf(z) - 1.0,
            JitterDist::Normal => z,
            JitterDist::Pareto => pareto(z),
            JitterDist::ParetoNormal => (0.25 * z + 0.75 * pareto(z)) / paretonormal_sd(),
        };
        let secs = p.delay.as_secs_f64() + p.jitter.as_secs_f64() * t;
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::params::{DEFAULT_QUEUE_BYTES, Reorder};

    fn params() -> LinkParams {
        LinkParams {
            delay: Duration::from_millis(20),
            ..LinkParams::ideal()
        }
    }

    /// Payload bytes that make `wire` bytes on the link.
    fn payload(wire: usize) -> usize {
        wire - WIRE_OVERHEAD as usize
    }

    #[test]
    fn plain_delay() {
        let t0 = Instant::now();
        let mut l = Link::new(params(), 1);
        assert_eq!(
            l.offer(t0, 1200),
            Verdict::Deliver(t0 + Duration::from_millis(20))
        );
    }

    #[test]
    fn rate_serializes_back_to_back_datagrams_with_their_headers() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                bandwidth: Some(8e6),
                ..params()
            },
            1,
        );
        // 1000 bytes on the wire at 8 Mbit/s = 1 ms each.
        let at: Vec<Verdict> = (0..3).map(|_| l.offer(t0, payload(1000))).collect();
        let ms = |n| Verdict::Deliver(t0 + Duration::from_millis(n));
        assert_eq!(at, vec![ms(21), ms(22), ms(23)]);
    }

    #[test]
    fn links_on_one_port_queue_behind_each_other() {
        use crate::net::port::{Port, PortDef};
        let t0 = Instant::now();
        let def = Arc::new(PortDef {
            name: "switch".into(),
            rate: 8e6,
            queue: Queue::Packets(100),
        });
        let port = Port::shared(def.clone());
        let on_port = || LinkParams {
            port: Some(def.clone()),
            ..params()
        };
        let mut a = Link::new(on_port(), 1).with_port(port.clone());
        let mut b = Link::new(on_port(), 2).with_port(port.clone());
        // 1000 wire bytes at the port's 8 Mbit/s = 1 ms each, then 20 ms of delay: b's
        // datagram waits for a's, though b's own link is idle.
        let ms = |n| Verdict::Deliver(t0 + Duration::from_millis(n));
        assert_eq!(a.offer(t0, payload(1000)), ms(21));
        assert_eq!(b.offer(t0, payload(1000)), ms(22));
        assert_eq!(a.offer(t0, payload(1000)), ms(23));
        // Without the port, b's link alone would have sent it at once.
        let mut c = Link::new(params(), 3);
        assert_eq!(c.offer(t0, payload(1000)), ms(20));
        assert_eq!(port.lock().unwrap().stats().datagrams, 3);
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                bandwidth: Some(8e6),
                queue: Queue::Bytes(3000),
                ..params()
            },
            1,
        );
        let v: Vec<Verdict> = (0..5).map(|_| l.offer(t0, payload(1000))).collect();
        assert_eq!(v.iter().filter(|v| **v == Verdict::Dropped).count(), 2);
        assert_eq!(l.stats().dropped, 2);
        // Once the queue drains, it accepts again.
        assert!(matches!(
            l.offer(t0 + Duration::from_millis(10), 1000),
            Verdict::Deliver(_)
        ));
    }

    #[test]
    fn queue_in_packets() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                bandwidth: Some(1e6),
                queue: Queue::Packets(25),
                ..params()
            },
            1,
        );
        let v: Vec<Verdict> = (0..40).map(|_| l.offer(t0, 100)).collect();
        assert_eq!(v.iter().filter(|v| **v == Verdict::Dropped).count(), 15);
    }

    #[test]
    fn mtu_drops_oversize_datagrams() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                mtu: Some(1280),
                ..params()
            },
            1,
        );
        assert!(matches!(l.offer(t0, 1252), Verdict::Deliver(_)));
        assert_eq!(l.offer(t0, 1253), Verdict::Oversize);
        assert_eq!(l.stats().oversize, 1);
    }

    #[test]
    fn duplication_rate_and_copies() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                duplicate: 0.05,
                ..params()
            },
            9,
        );
        let n = 100_000u64;
        let mut copies = 0;
        for i in 0..n {
            copies += l
                .offer(t0 + Duration::from_micros(i), 100)
                .deliveries()
                .count() as u64;
        }
        let dup = l.stats().duplicated as f64;
        let sd = (n as f64 * 0.05 * 0.95).sqrt();
        assert!((dup - 5000.0).abs() < 3.29 * sd, "duplicated {dup}");
        assert_eq!(copies, n + l.stats().duplicated);
        assert_eq!(l.stats().delivered, copies);
    }

    #[test]
    fn bernoulli_loss_rate_within_binomial_bound() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                loss: Loss::Bernoulli {
                    p: 0.01,
                    correlation: 0.0,
                },
                ..params()
            },
            42,
        );
        let n = 100_000;
        for _ in 0..n {
            l.offer(t0, 100);
        }
        // 99.9 % bound: 3.29 standard deviations of Binomial(n, p).
        let sd = (n as f64 * 0.01 * 0.99).sqrt();
        let lost = l.stats().lost as f64;
        assert!((lost - 1000.0).abs() < 3.29 * sd, "lost {lost}");
    }

    #[test]
    fn correlated_loss_keeps_its_rate_and_lengthens_bursts() {
        let t0 = Instant::now();
        let (p, rho) = (0.02, 0.5);
        let mut l = Link::new(
            LinkParams {
                loss: Loss::Bernoulli {
                    p,
                    correlation: rho,
                },
                ..params()
            },
            5,
        );
        let n = 400_000;
        let (mut bursts, mut lost, mut prev) = (0u64, 0u64, false);
        for _ in 0..n {
            let gone = l.offer(t0, 100) == Verdict::Lost;
            lost += gone as u64;
            if gone && !prev {
                bursts += 1;
            }
            prev = gone;
        }
        let rate = lost as f64 / n as f64;
        assert!((rate - p).abs() < 0.1 * p, "rate {rate}");
        // Mean burst: 1 / (1 - P(loss | loss)) = 1 / ((1 - p)(1 - ρ)) ≈ 2.04.
        let burst = lost as f64 / bursts as f64;
        let want = 1.0 / ((1.0 - p) * (1.0 - rho));
        assert!(
            (burst - want).abs() < 0.1 * want,
            "burst {burst} want {want}"
        );
    }

    #[test]
    fn uniform_jitter_stays_in_range_and_keeps_fifo_order() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                jitter: Duration::from_millis(5),
                ..params()
            },
            3,
        );
        let mut last = t0;
        for i in 0..1000 {
            let now = t0 + Duration::from_micros(i * 100);
            let Verdict::Deliver(at) = l.offer(now, 100) else {
                panic!()
            };
            assert!(at >= last, "reordered");
            assert!(
                at >= now + Duration::from_millis(15)
                    && at <= now.max(last) + Duration::from_millis(25)
            );
            last = at;
        }
    }

    fn delays(dist: JitterDist, rho: f64, n: usize) -> Vec<f64> {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                delay: Duration::from_millis(50),
                jitter: Duration::from_millis(5),
                jitter_distribution: dist,
                jitter_correlation: rho,
                fifo: false,
                ..LinkParams::ideal()
            },
            11,
        );
        (0..n)
            .map(|i| {
                let now = t0 + Duration::from_millis(i as u64);
                let Verdict::Deliver(at) = l.offer(now, 100) else {
                    panic!()
                };
                (at - now).as_secs_f64() * 1e3
            })
            .collect()
    }

    fn mean_sd(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var.sqrt())
    }

    #[test]
    fn delay_mean_and_deviation_as_configured() {
        for (dist, sd) in [
            (JitterDist::Uniform, 5.0 / 3f64.sqrt()),
            (JitterDist::Normal, 5.0),
            (JitterDist::Pareto, 5.0),
            (JitterDist::ParetoNormal, 5.0),
        ] {
            let v = delays(dist, 0.0, 200_000);
            let (m, s) = mean_sd(&v);
            assert!((m - 50.0).abs() < 0.1, "{dist:?}: mean {m}");
            // Pareto's sample deviation converges slowly (its fourth moment is infinite).
            let tol = if dist == JitterDist::Uniform || dist == JitterDist::Normal {
                0.02
            } else {
                0.1
            };
            assert!((s - sd).abs() < tol * sd, "{dist:?}: sd {s}, want {sd}");
        }
    }

    #[test]
    fn jitter_correlation_correlates_consecutive_delays() {
        let v = delays(JitterDist::Normal, 0.75, 100_000);
        let (m, s) = mean_sd(&v);
        let lag1 = v.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>()
            / ((v.len() - 1) as f64 * s * s);
        assert!((lag1 - 0.75).abs() < 0.02, "lag-1 correlation {lag1}");
        assert!((s - 5.0).abs() < 0.25, "sd {s}");
    }

    #[test]
    fn reorder_off_is_fifo_and_jitter_without_fifo_reorders() {
        let count_reordered = |fifo: bool| {
            let t0 = Instant::now();
            let mut l = Link::new(
                LinkParams {
                    jitter: Duration::from_millis(5),
                    fifo,
                    ..params()
                },
                4,
            );
            let mut last = t0;
            let mut out_of_order = 0;
            for i in 0..5000 {
                let Verdict::Deliver(at) = l.offer(t0 + Duration::from_micros(i * 200), 100) else {
                    panic!()
                };
                out_of_order += (at < last) as u32;
                last = last.max(at);
            }
            out_of_order
        };
        assert_eq!(count_reordered(true), 0);
        assert!(count_reordered(false) > 100);
    }

    #[test]
    fn explicit_reorder_sends_some_ahead() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                reorder: Some(Reorder {
                    p: 0.25,
                    correlation: 0.0,
                    gap: 5,
                }),
                ..params()
            },
            8,
        );
        let n = 10_000;
        let mut early = 0;
        for i in 0..n {
            let now = t0 + Duration::from_millis(i);
            let Verdict::Deliver(at) = l.offer(now, 100) else {
                panic!()
            };
            early += (at == now) as u64;
        }
        assert_eq!(early, l.stats().reordered);
        // After a reordered datagram, four go in order; from the fifth on each is a
        // candidate taken with 25 % (four tries on average): one in 4 + 4 = 8.
        let rate = early as f64 / n as f64;
        assert!((rate - 0.125).abs() < 0.01, "rate {rate}");
    }

    #[test]
    fn gilbert_elliott_bursts_and_loss_as_configured() {
        let t0 = Instant::now();
        let (p, r) = (0.01, 0.25);
        let mut l = Link::new(
            LinkParams {
                loss: Loss::GilbertElliott {
                    p,
                    r,
                    loss_good: 0.0,
                    loss_bad: 1.0,
                },
                ..params()
            },
            6,
        );
        let n = 500_000;
        let (mut bursts, mut lost, mut prev) = (0u64, 0u64, false);
        for _ in 0..n {
            let gone = l.offer(t0, 100) == Verdict::Lost;
            lost += gone as u64;
            bursts += (gone && !prev) as u64;
            prev = gone;
        }
        let rate = lost as f64 / n as f64;
        let want = p / (p + r);
        assert!((rate - want).abs() < 0.1 * want, "loss {rate} want {want}");
        let burst = lost as f64 / bursts as f64;
        assert!((burst - 1.0 / r).abs() < 0.1 / r, "burst {burst}");
    }

    #[test]
    fn trace_driven_rate_follows_the_opportunities() {
        // One opportunity every 2 ms: 1500 B / 2 ms = 6 Mbit/s.
        let text: String = (1..=50).map(|i| format!("{}\n", 2 * i)).collect();
        let trace = Arc::new(RateTrace::parse("t", &text).unwrap());
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                delay: Duration::ZERO,
                trace: Some(trace),
                ..LinkParams::ideal()
            },
            1,
        );
        // Three full-size datagrams queued at once leave at the 2, 4 and 6 ms opportunities.
        let v: Vec<Verdict> = (0..3).map(|_| l.offer(t0, payload(1500))).collect();
        let ms = |n| Verdict::Deliver(t0 + Duration::from_millis(n));
        assert_eq!(v, vec![ms(2), ms(4), ms(6)]);
        // Two half-size ones share an opportunity; ones missed while idle are not banked.
        let later = t0 + Duration::from_millis(101);
        let w: Vec<Verdict> = (0..2).map(|_| l.offer(later, payload(750))).collect();
        let at = |n| Verdict::Deliver(t0 + Duration::from_millis(n));
        assert_eq!(w, vec![at(102), at(102)]);
    }

    #[test]
    fn trace_opportunity_at_the_end_of_a_period_is_not_skipped() {
        // Opportunities at 5 and 10 ms, period 10 ms: after idling until 9.5 ms, the next
        // datagram leaves at 10 ms, the first period's last opportunity, not at 15 ms.
        let trace = Arc::new(RateTrace::parse("t", "5\n10\n").unwrap());
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                trace: Some(trace),
                ..LinkParams::ideal()
            },
            1,
        );
        assert_eq!(
            l.offer(t0, 100),
            Verdict::Deliver(t0 + Duration::from_millis(5))
        );
        let later = t0 + Duration::from_micros(9500);
        assert_eq!(
            l.offer(later, 100),
            Verdict::Deliver(t0 + Duration::from_millis(10))
        );
    }

    #[test]
    fn changes_apply_at_their_time() {
        let t0 = Instant::now();
        let slow = LinkParams {
            delay: Duration::from_millis(100),
            ..params()
        };
        let mut l = Link::new(params(), 1).with_changes(vec![
            LinkChange {
                at: Duration::from_secs(1),
                params: slow,
            },
            LinkChange {
                at: Duration::from_secs(2),
                params: params(),
            },
        ]);
        l.start_changes(t0);
        let d = |l: &mut Link, s: u64| {
            let now = t0 + Duration::from_millis(s);
            match l.offer(now, 100) {
                Verdict::Deliver(at) => (at - now).as_millis(),
                v => panic!("{v:?}"),
            }
        };
        assert_eq!(d(&mut l, 500), 20);
        assert_eq!(d(&mut l, 1500), 100);
        // FIFO: a datagram sent after the change back waits for the slow one before it.
        assert_eq!(d(&mut l, 2500), 20);
        assert_eq!(l.stats().changes_applied, 2);
        let _ = DEFAULT_QUEUE_BYTES;
    }

    #[test]
    fn normal_cdf_is_accurate() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975_002).abs() < 1e-6);
        assert!((normal_cdf(-3.0) - 0.001_349_9).abs() < 1e-6);
    }
}
