//! The sans-IO link emulator: one direction of a link as a pipeline of small stages,
//! loss -> tail-drop queue and rate -> delay and jitter, each seeded. Time is an argument;
//! nothing here sleeps or reads a clock. The caller delivers at the instant returned.

use crate::scenario::{LinkParams, Loss};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What happens to a datagram offered to the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered to the far end at this instant.
    Deliver(Instant),
    /// Lost by the loss model.
    Lost,
    /// Dropped because the queue in front of the rate limiter was full.
    Dropped,
}

/// Counters of one link direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    pub datagrams: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub lost: u64,
    pub dropped: u64,
}

/// One direction of an emulated link.
#[derive(Debug)]
pub struct Link {
    params: LinkParams,
    rng: ChaCha8Rng,
    /// When the rate limiter finishes serializing what it has accepted.
    busy_until: Option<Instant>,
    /// The latest delivery scheduled so far: deliveries keep FIFO order.
    last_delivery: Option<Instant>,
    /// Gilbert-Elliott state: in the bad state.
    bad: bool,
    stats: LinkStats,
}

impl Link {
    pub fn new(params: LinkParams, seed: u64) -> Self {
        Link {
            params,
            rng: ChaCha8Rng::seed_from_u64(seed),
            busy_until: None,
            last_delivery: None,
            bad: false,
            stats: LinkStats::default(),
        }
    }

    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Offers a datagram of `len` bytes at `now`.
    pub fn offer(&mut self, now: Instant, len: usize) -> Verdict {
        self.stats.datagrams += 1;
        self.stats.bytes += len as u64;
        if self.lose() {
            self.stats.lost += 1;
            return Verdict::Lost;
        }
        let departure = match self.params.bandwidth {
            Some(bps) => {
                let start = self.busy_until.map_or(now, |b| b.max(now));
                // Bytes still waiting to be serialized, including the one on the wire.
                let backlog = (start - now).as_secs_f64() * bps / 8.0;
                if backlog + len as f64 > self.params.queue as f64 {
                    self.stats.dropped += 1;
                    return Verdict::Dropped;
                }
                let done = start + Duration::from_secs_f64(len as f64 * 8.0 / bps);
                self.busy_until = Some(done);
                done
            }
            None => now,
        };
        let mut at = departure + self.delay();
        if let Some(last) = self.last_delivery {
            at = at.max(last);
        }
        self.last_delivery = Some(at);
        self.stats.delivered += 1;
        Verdict::Deliver(at)
    }

    fn lose(&mut self) -> bool {
        match self.params.loss {
            Loss::None => false,
            Loss::Bernoulli { p } => p > 0.0 && self.rng.random::<f64>() < p,
            Loss::GilbertElliott {
                p,
                r,
                loss_good,
                loss_bad,
            } => {
                // Transition, then lose with the new state's probability.
                let flip: f64 = self.rng.random();
                if self.bad {
                    if flip < r {
                        self.bad = false;
                    }
                } else if flip < p {
                    self.bad = true;
                }
                let loss = if self.bad { loss_bad } else { loss_good };
                loss > 0.0 && self.rng.random::<f64>() < loss
            }
        }
    }

    /// One-way delay: uniform in [delay - jitter, delay + jitter].
    fn delay(&mut self) -> Duration {
        let d = self.params.delay;
        let j = self.params.jitter;
        if j.is_zero() {
            return d;
        }
        let lo = d.saturating_sub(j).as_nanos() as u64;
        let hi = (d + j).as_nanos() as u64;
        Duration::from_nanos(self.rng.random_range(lo..=hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::DEFAULT_QUEUE_BYTES;

    fn params() -> LinkParams {
        LinkParams {
            delay: Duration::from_millis(20),
            jitter: Duration::ZERO,
            bandwidth: None,
            loss: Loss::None,
            queue: DEFAULT_QUEUE_BYTES,
        }
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
    fn rate_serializes_back_to_back_datagrams() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                bandwidth: Some(8e6),
                ..params()
            },
            1,
        );
        // 1000 bytes at 8 Mbit/s = 1 ms each.
        let at: Vec<Verdict> = (0..3).map(|_| l.offer(t0, 1000)).collect();
        let ms = |n| Verdict::Deliver(t0 + Duration::from_millis(n));
        assert_eq!(at, vec![ms(21), ms(22), ms(23)]);
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                bandwidth: Some(8e6),
                queue: 3000,
                ..params()
            },
            1,
        );
        let v: Vec<Verdict> = (0..5).map(|_| l.offer(t0, 1000)).collect();
        assert_eq!(v.iter().filter(|v| **v == Verdict::Dropped).count(), 2);
        assert_eq!(l.stats().dropped, 2);
        // Once the queue drains, it accepts again.
        assert!(matches!(
            l.offer(t0 + Duration::from_millis(10), 1000),
            Verdict::Deliver(_)
        ));
    }

    #[test]
    fn bernoulli_loss_rate_within_binomial_bound() {
        let t0 = Instant::now();
        let mut l = Link::new(
            LinkParams {
                loss: Loss::Bernoulli { p: 0.01 },
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
    fn jitter_stays_in_range_and_keeps_fifo_order() {
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
            assert!(at - now >= Duration::from_millis(15));
            assert!(
                at >= now + Duration::from_millis(15)
                    && at <= now.max(last) + Duration::from_millis(25)
            );
            last = at;
        }
    }
}
