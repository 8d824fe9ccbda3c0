//! What a run will cost before it starts: simulated time, wall time and memory, from the
//! plan alone. `inferlat run` refuses a run whose estimate passes `--max-wall` or
//! `--max-memory`, and prints the estimate, so an absurd but valid scenario (a device
//! that takes a year per token, ten million requests) fails in the first second instead of
//! running for ever or exhausting memory.
//!
//! The estimate is a lower bound of the likely cost, not a promise: each phase lasts its
//! extent plus the floor of its longest request (a backlog can make it last up to the
//! drain timeout longer); the virtual clock's wall time counts the harness's events (a
//! datagram per token and hop, an executor step per token and node, the keep-alive
//! datagrams of idle connections) at a per-event cost measured on this harness.

use super::Plan;
use crate::clock::ClockKind;
use crate::scenario::{Arrival, Extent, Scenario};
use std::time::Duration;

/// Wall time of one harness event on the virtual clock (a datagram through quinn and the
/// in-memory network, or an executor step): the quickstart's 6,300 events take about 0.5 s
/// in a debug build (80 us each, rounded up); a release build is several times faster, taken
/// here as 20 us.
const EVENT_COST: Duration = if cfg!(debug_assertions) {
    Duration::from_micros(80)
} else {
    Duration::from_micros(20)
};

/// Setup and teardown of a run (endpoints, TLS, handshakes), added to its wall time: on
/// the real clock the handshakes take their round trips; on the virtual one, only CPU.
const SETUP_REAL: Duration = Duration::from_secs(1);
const SETUP_VIRTUAL: Duration = Duration::from_millis(100);

/// Memory a measured request keeps until its phase ends: its sample, breakdown and
/// interval values (bytes).
const BYTES_PER_REQUEST: f64 = 512.0;
/// Memory per measured output token: its arrival time in the sample and its inter-token
/// gap in the interval log (bytes).
const BYTES_PER_TOKEN: f64 = 32.0;

/// The default `--max-wall`.
pub const DEFAULT_MAX_WALL: Duration = Duration::from_secs(4 * 3600);
/// The default `--max-memory`, in bytes (8 GiB).
pub const DEFAULT_MAX_MEMORY: u64 = 8 << 30;

/// What a run is expected to cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Simulated time of every phase of the topology and the baseline (on the real clock,
    /// the wall time of the phases).
    pub simulated: Duration,
    /// Wall time, setup included.
    pub wall: Duration,
    /// Requests sent, warm-up and baseline included.
    pub requests: f64,
    /// Peak memory the measured results take, in bytes.
    pub memory: f64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One phase of one run: (simulated seconds, requests).
fn phase(s: &Scenario, extent: Extent, typical_e2e: f64, longest_e2e: f64) -> (f64, f64) {
    let (time, requests) = match (extent, &s.workload.arrival) {
        (Extent::Duration(d), Arrival::Closed { concurrency }) => {
            // Each of `concurrency` loops sends one request per typical e2e (at most a
            // million a second, where the floor is zero).
            let per = typical_e2e.max(1e-6);
            (secs(d), *concurrency as f64 * secs(d) / per)
        }
        (Extent::Requests(n), Arrival::Closed { concurrency }) => {
            (n as f64 * typical_e2e / *concurrency as f64, n as f64)
        }
        (Extent::Duration(d), a) => (secs(d), rate(a) * secs(d)),
        (Extent::Requests(n), a) => (n as f64 / rate(a), n as f64),
    };
    if requests == 0.0 {
        return (0.0, 0.0);
    }
    (time + longest_e2e, requests)
}

fn rate(a: &Arrival) -> f64 {
    match *a {
        Arrival::Constant { rate } | Arrival::Poisson { rate } | Arrival::Gamma { rate, .. } => {
            rate
        }
        Arrival::Closed { .. } => 0.0,
    }
}

fn to_duration(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
}

/// The estimate of running `s` (its topology, its co-located twin, then its baseline) on
/// `clock`.
pub fn estimate(s: &Scenario, plan: &Plan, clock: ClockKind) -> Estimate {
    let w = &s.workload;
    let longest = super::schedule::Shape {
        prompt: w.prompt_tokens.high(),
        output: w.output_tokens.high(),
    };
    let typical = plan.typical;
    let mut runs = vec![(
        secs(plan.floor(typical).e2e),
        secs(plan.floor(longest).e2e),
        plan.hops.len().max(1) as f64,
        plan.nodes.len().max(1) as f64,
        plan.connections.len() as f64,
    )];
    // The co-located run: the same nodes and connections over ideal links.
    let colocated = plan.colocated();
    runs.push((
        secs(colocated.floor(typical).e2e),
        secs(colocated.floor(longest).e2e),
        plan.hops.len().max(1) as f64,
        plan.nodes.len().max(1) as f64,
        plan.connections.len() as f64,
    ));
    if let (Some(t), Some(l)) = (plan.baseline_floor(typical), plan.baseline_floor(longest)) {
        runs.push((secs(t.e2e), secs(l.e2e), 0.0, 1.0, 0.0));
    }
    let keep_alive = secs(
        s.quic
            .keep_alive
            .unwrap_or(Duration::from_millis(5_000))
            .max(Duration::from_millis(1)),
    );
    let tokens_per_request = typical.output.max(1) as f64;
    let (mut simulated, mut wall, mut requests, mut memory) = (0.0, 0.0, 0.0, 0.0f64);
    for (typ, long, hops, nodes, conns) in runs {
        let mut run_time = 0.0;
        let mut run_requests = 0.0;
        for (extent, measured) in [(w.warmup, false), (w.measure, true)] {
            let (t, n) = phase(s, extent, typ, long);
            run_time += t;
            run_requests += n;
            if measured {
                memory = memory.max(n * (BYTES_PER_REQUEST + BYTES_PER_TOKEN * tokens_per_request));
            }
        }
        simulated += run_time;
        requests += run_requests;
        wall += match clock {
            ClockKind::Real => secs(SETUP_REAL) + run_time,
            ClockKind::Virtual => {
                let events = run_requests * tokens_per_request * (hops + nodes)
                    + run_time / keep_alive * conns * 2.0;
                secs(SETUP_VIRTUAL) + events * secs(EVENT_COST)
            }
        };
    }
    Estimate {
        simulated: to_duration(simulated),
        wall: to_duration(wall),
        requests,
        memory,
    }
}

/// A long duration as a person reads it: "45 s", "2.5 h", "11.6 days", "3.2e9 years".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 3.0 * 86400.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s < 365.0 * 86400.0 {
        format!("{:.1} days", s / 86400.0)
    } else {
        let y = s / (365.25 * 86400.0);
        if y < 1e4 {
            format!("{y:.0} years")
        } else {
            format!("{y:.1e} years")
        }
    }
}

/// Bytes as a person reads them: "12 MiB", "46 GiB".
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b.max(0.0);
    for unit in UNITS {
        if v < 1024.0 || unit == "PiB" {
            return format!("{v:.0} {unit}");
        }
        v /= 1024.0;
    }
    unreachable!("the loop returns at PiB")
}

impl Estimate {
    /// One line: "68 s simulated, about 70 s of wall time, 99 requests, 45 KiB of results".
    pub fn describe(&self, clock: ClockKind) -> String {
        let clock = match clock {
            ClockKind::Real => "real clock",
            ClockKind::Virtual => "virtual clock",
        };
        format!(
            "{} simulated, about {} of wall time ({clock}), {:.0} requests, {} of results in memory",
            human_duration(self.simulated),
            human_duration(self.wall),
            self.requests,
            human_bytes(self.memory)
        )
    }

    /// Why the run is refused under these limits, or `None` when it fits them.
    pub fn refusal(&self, max_wall: Duration, max_memory: u64) -> Option<String> {
        let mut why = Vec::new();
        if self.wall > max_wall {
            why.push(format!(
                "its wall time passes --max-wall {}",
                human_duration(max_wall)
            ));
        }
        if self.memory > max_memory as f64 {
            why.push(format!(
                "its results pass --max-memory {}",
                human_bytes(max_memory as f64)
            ));
        }
        (!why.is_empty()).then(|| why.join(" and "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ProfileLibrary;
    use std::path::Path;

    fn quickstart_with(from: &str, to: &str) -> Scenario {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/quickstart.toml");
        let text = std::fs::read_to_string(&path).unwrap().replace(from, to);
        crate::scenario::parse(&path, &text, &ProfileLibrary::for_scenario(&path)).unwrap()
    }

    fn quickstart() -> Scenario {
        quickstart_with("", "")
    }

    #[test]
    fn the_quickstart_costs_what_it_runs() {
        let s = quickstart();
        let p = crate::plan::plan(&s).unwrap();
        let e = estimate(&s, &p, ClockKind::Real);
        // 20 s measured and 3 warm-up requests, on the topology, the co-located run and
        // the baseline.
        let sim = e.simulated.as_secs_f64();
        assert!((60.0..75.0).contains(&sim), "{e:?}");
        assert!(e.wall >= e.simulated, "{e:?}");
        assert!(e.refusal(DEFAULT_MAX_WALL, DEFAULT_MAX_MEMORY).is_none());
        let v = estimate(&s, &p, ClockKind::Virtual);
        assert_eq!(v.simulated, e.simulated);
        assert!(v.wall < e.wall, "{v:?}");
    }

    #[test]
    fn a_device_a_year_per_token_is_refused_before_it_runs() {
        // Valid figures, absurdly slow: one FLOP and one byte a second.
        let s = quickstart_with(
            "device = \"a100-80g\"",
            "device = { name = \"slow\", memory = \"80GB\", flops = \"1FLOP/s\", mem_bandwidth = \"1B/s\", efficiency = { compute = 1.0, memory = 1.0 } }",
        );
        let p = crate::plan::plan(&s).unwrap();
        for clock in [ClockKind::Real, ClockKind::Virtual] {
            let e = estimate(&s, &p, clock);
            let why = e.refusal(DEFAULT_MAX_WALL, DEFAULT_MAX_MEMORY);
            assert!(why.is_some_and(|w| w.contains("--max-wall")), "{e:?}");
            assert!(e.describe(clock).contains("years"), "{}", e.describe(clock));
        }
    }

    #[test]
    fn ten_million_requests_are_refused_for_memory() {
        let mut s = quickstart();
        s.workload.measure = Extent::Requests(crate::scenario::limits::MAX_REQUESTS);
        s.workload.arrival = Arrival::Constant { rate: 1e6 };
        let p = crate::plan::plan(&s).unwrap();
        let e = estimate(&s, &p, ClockKind::Real);
        let why = e.refusal(Duration::MAX, DEFAULT_MAX_MEMORY).unwrap();
        assert!(why.contains("--max-memory"), "{why}");
        assert!(e.refusal(Duration::MAX, u64::MAX).is_none());
    }

    #[test]
    fn people_read_long_times_and_big_sizes() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45 s");
        assert_eq!(human_duration(Duration::from_secs(1_000_000)), "11.6 days");
        assert_eq!(human_bytes(46e9), "43 GiB");
        assert_eq!(human_bytes(100.0), "100 B");
    }
}
