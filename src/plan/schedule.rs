//! The seeded workload: request sizes and open-loop arrival times, drawn in advance so
//! the topology and the baseline see the same requests at the same offsets.

use crate::scenario::{Arrival, Extent, MAX_TOKENS, TokenCount, Workload};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Gamma, LogNormal};
use std::time::Duration;

/// Sizes of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub prompt: u32,
    pub output: u32,
}

/// One open-loop request: when it is due, as an offset from the phase start, and its shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Planned {
    pub at: Duration,
    pub shape: Shape,
}

/// Which phase a stream of requests belongs to; each has its own random streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    Measure,
}

/// Seeded request sizes, independent of the arrival stream.
pub struct Shapes {
    rng: ChaCha8Rng,
    prompt: TokenCount,
    output: TokenCount,
}

fn stream_seed(seed: u64, phase: Phase, stream: u64) -> u64 {
    let p = match phase {
        Phase::Warmup => 1,
        Phase::Measure => 2,
    };
    // SplitMix64 of the combined key.
    let mut z = seed ^ (p << 56) ^ (stream << 48) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn draw(rng: &mut ChaCha8Rng, count: &TokenCount) -> u32 {
    match *count {
        TokenCount::Fixed { value } => value,
        TokenCount::Uniform { min, max } => rng.random_range(min..=max),
        TokenCount::Lognormal { median, sigma } => {
            let Ok(d) = LogNormal::new(median.ln(), sigma) else {
                return (median.round() as u64).clamp(1, MAX_TOKENS as u64) as u32;
            };
            (d.sample(rng).round() as u64).clamp(1, MAX_TOKENS as u64) as u32
        }
    }
}

impl Shapes {
    pub fn new(workload: &Workload, seed: u64, phase: Phase) -> Self {
        Shapes {
            rng: ChaCha8Rng::seed_from_u64(stream_seed(seed, phase, 1)),
            prompt: workload.prompt_tokens.clone(),
            output: workload.output_tokens.clone(),
        }
    }

    pub fn next_shape(&mut self) -> Shape {
        let prompt = draw(&mut self.rng, &self.prompt);
        let output = draw(&mut self.rng, &self.output);
        Shape { prompt, output }
    }
}

/// The gaps between open-loop arrivals.
pub struct Gaps {
    rng: ChaCha8Rng,
    arrival: Arrival,
}

impl Gaps {
    pub fn new(workload: &Workload, seed: u64, phase: Phase) -> Self {
        Gaps {
            rng: ChaCha8Rng::seed_from_u64(stream_seed(seed, phase, 2)),
            arrival: workload.arrival.clone(),
        }
    }

    /// The next gap, or `None` for a closed loop. A gap too long for a `Duration` (a rate
    /// near its lower limit and an unlucky draw) is cut to [`MAX_GAP`]: never a panic.
    pub fn next_gap(&mut self) -> Option<Duration> {
        let secs = match self.arrival {
            Arrival::Constant { rate } => 1.0 / rate,
            Arrival::Poisson { rate } => match Exp::new(rate) {
                Ok(d) => d.sample(&mut self.rng),
                Err(_) => f64::INFINITY,
            },
            Arrival::Gamma { rate, burstiness } => {
                match Gamma::new(burstiness, 1.0 / (rate * burstiness)) {
                    Ok(d) => d.sample(&mut self.rng),
                    Err(_) => f64::INFINITY,
                }
            }
            Arrival::Closed { .. } => return None,
        };
        Some(gap(secs))
    }
}

/// The longest gap between two arrivals: past the longest phase, so a gap cut to it ends
/// any phase's schedule.
pub const MAX_GAP: Duration = Duration::from_secs(2 * crate::scenario::limits::MAX_PHASE.as_secs());

fn gap(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).map_or(MAX_GAP, |d| d.min(MAX_GAP))
    }
}

/// The open-loop schedule of a phase, generated as it is consumed (never held whole, so a
/// long phase costs no memory up front): the first request at offset zero, then one per
/// gap, until the extent is reached. Empty for a closed loop.
pub struct Schedule {
    gaps: Gaps,
    shapes: Shapes,
    extent: Extent,
    at: Duration,
    issued: u64,
    closed: bool,
}

impl Iterator for Schedule {
    type Item = Planned;

    fn next(&mut self) -> Option<Planned> {
        if self.closed {
            return None;
        }
        match self.extent {
            Extent::Duration(d) if self.at >= d => return None,
            Extent::Requests(n) if self.issued >= n => return None,
            _ => {}
        }
        // An offset past the longest phase ends the schedule whatever the extent says.
        if self.at >= MAX_GAP {
            return None;
        }
        let planned = Planned {
            at: self.at,
            shape: self.shapes.next_shape(),
        };
        self.issued += 1;
        self.at = self
            .at
            .saturating_add(self.gaps.next_gap().unwrap_or(MAX_GAP));
        Some(planned)
    }
}

/// The open-loop schedule of a phase, as an iterator (see [`Schedule`]).
pub fn open_loop(workload: &Workload, extent: Extent, seed: u64, phase: Phase) -> Schedule {
    Schedule {
        gaps: Gaps::new(workload, seed, phase),
        shapes: Shapes::new(workload, seed, phase),
        extent,
        at: Duration::ZERO,
        issued: 0,
        closed: matches!(workload.arrival, Arrival::Closed { .. }),
    }
}

/// The end of a phase's measured window, from its start: the extent's duration, or for
/// `requests = N` in an open loop, the instant request N + 1 would have been scheduled (N
/// requests over N gaps, so a run that keeps up shows the offered rate). `None` for a
/// closed loop with a number of requests: it has no schedule, and its window ends with
/// its last request.
pub fn window(workload: &Workload, extent: Extent, seed: u64, phase: Phase) -> Option<Duration> {
    match (extent, &workload.arrival) {
        (Extent::Duration(d), _) => Some(d),
        (Extent::Requests(_), Arrival::Closed { .. }) => None,
        (Extent::Requests(n), _) => {
            let mut gaps = Gaps::new(workload, seed, phase);
            let mut at = Duration::ZERO;
            for _ in 0..n {
                at = at.saturating_add(gaps.next_gap()?);
                if at >= MAX_GAP {
                    break;
                }
            }
            Some(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(arrival: Arrival) -> Workload {
        Workload {
            prompt_tokens: TokenCount::Uniform { min: 10, max: 20 },
            output_tokens: TokenCount::Lognormal {
                median: 50.0,
                sigma: 0.5,
            },
            arrival,
            measure: Extent::Duration(Duration::from_secs(100)),
            warmup: Extent::Requests(0),
            max_failed: crate::scenario::DEFAULT_MAX_FAILED,
        }
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        let w = workload(Arrival::Poisson { rate: 5.0 });
        let a: Vec<_> = open_loop(&w, w.measure, 7, Phase::Measure).collect();
        let b: Vec<_> = open_loop(&w, w.measure, 7, Phase::Measure).collect();
        let c: Vec<_> = open_loop(&w, w.measure, 8, Phase::Measure).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let warm: Vec<_> = open_loop(&w, w.measure, 7, Phase::Warmup).collect();
        assert_ne!(a, warm);
    }

    #[test]
    fn poisson_rate_is_respected() {
        let w = workload(Arrival::Poisson { rate: 5.0 });
        let s: Vec<_> = open_loop(
            &w,
            Extent::Duration(Duration::from_secs(2000)),
            1,
            Phase::Measure,
        )
        .collect();
        // 10,000 expected; the count of a Poisson process has sd 100.
        assert!((9_600..=10_400).contains(&s.len()), "{}", s.len());
    }

    #[test]
    fn gamma_burstiness_changes_the_spread_not_the_rate() {
        let cv = |b: f64| {
            let w = workload(Arrival::Gamma {
                rate: 10.0,
                burstiness: b,
            });
            let s: Vec<_> = open_loop(&w, Extent::Requests(20_000), 3, Phase::Measure).collect();
            let gaps: Vec<f64> = s
                .windows(2)
                .map(|p| (p[1].at - p[0].at).as_secs_f64())
                .collect();
            let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
            (mean, var.sqrt() / mean)
        };
        let (m_bursty, cv_bursty) = cv(0.25);
        let (m_regular, cv_regular) = cv(4.0);
        assert!((m_bursty - 0.1).abs() < 0.01 && (m_regular - 0.1).abs() < 0.01);
        // CV of gamma gaps = 1/sqrt(shape): 2.0 and 0.5.
        assert!((cv_bursty - 2.0).abs() < 0.15, "{cv_bursty}");
        assert!((cv_regular - 0.5).abs() < 0.05, "{cv_regular}");
    }

    #[test]
    fn constant_arrivals_are_evenly_spaced_and_count_requests() {
        let w = workload(Arrival::Constant { rate: 4.0 });
        let s: Vec<_> = open_loop(&w, Extent::Requests(5), 0, Phase::Measure).collect();
        let at: Vec<u128> = s.iter().map(|p| p.at.as_millis()).collect();
        assert_eq!(at, vec![0, 250, 500, 750, 1000]);
        for p in &s {
            assert!((10..=20).contains(&p.shape.prompt));
            assert!(p.shape.output >= 1);
        }
    }

    #[test]
    fn closed_loop_has_no_schedule() {
        let w = workload(Arrival::Closed { concurrency: 4 });
        assert!(open_loop(&w, w.measure, 0, Phase::Measure).next().is_none());
    }

    #[test]
    fn the_window_of_n_requests_ends_where_request_n_plus_1_would_start() {
        let w = workload(Arrival::Constant { rate: 2.0 });
        let e = Extent::Requests(5);
        assert_eq!(
            window(&w, e, 0, Phase::Measure),
            Some(Duration::from_millis(2500))
        );
        let p = workload(Arrival::Poisson { rate: 3.0 });
        let plan: Vec<_> = open_loop(&p, e, 9, Phase::Measure).collect();
        let end = window(&p, e, 9, Phase::Measure).unwrap();
        assert!(end > plan.last().unwrap().at, "{end:?} {plan:?}");
        let d = Extent::Duration(Duration::from_secs(7));
        assert_eq!(
            window(&p, d, 9, Phase::Measure),
            Some(Duration::from_secs(7))
        );
        let closed = workload(Arrival::Closed { concurrency: 2 });
        assert_eq!(window(&closed, e, 9, Phase::Measure), None);
    }

    #[test]
    fn a_huge_phase_costs_nothing_until_it_is_consumed() {
        // 1e12 requests or a phase of the longest length: the schedule is an iterator, so
        // taking its first requests is instant and holds nothing else.
        let w = workload(Arrival::Poisson { rate: 1e6 });
        let first: Vec<_> = open_loop(&w, Extent::Requests(1_000_000_000_000), 0, Phase::Measure)
            .take(3)
            .collect();
        assert_eq!(first.len(), 3);
        let long = Extent::Duration(crate::scenario::limits::MAX_PHASE);
        assert_eq!(open_loop(&w, long, 0, Phase::Measure).take(5).count(), 5);
    }

    #[test]
    fn rates_at_and_past_their_limits_never_panic() {
        for rate in [
            1e-300,
            1e-19,
            crate::scenario::limits::MIN_RATE,
            f64::MIN_POSITIVE,
        ] {
            for arrival in [
                Arrival::Constant { rate },
                Arrival::Poisson { rate },
                Arrival::Gamma {
                    rate,
                    burstiness: 1e-3,
                },
                Arrival::Gamma {
                    rate,
                    burstiness: 1e-300,
                },
            ] {
                let w = workload(arrival.clone());
                let s: Vec<_> = open_loop(&w, Extent::Requests(3), 0, Phase::Measure).collect();
                assert!(!s.is_empty() && s.len() <= 3, "{arrival:?}: {s:?}");
                let end = window(&w, Extent::Requests(3), 0, Phase::Measure).unwrap();
                assert!(end <= MAX_GAP.saturating_mul(2), "{arrival:?}: {end:?}");
            }
        }
    }
}
