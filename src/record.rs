//! Per-request timelines -> HdrHistograms (nanoseconds, 3 significant figures), the
//! breakdown of where the time went, and the counters of a run. Pure.

use crate::scenario::Slo;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Significant figures of every histogram.
pub const SIGFIG: u8 = 3;

/// The length of one interval of a run's interval log (`<run>.hlog`).
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The latency metrics of DESIGN §4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Ttft,
    Tpot,
    Itl,
    E2e,
    Service,
    ScheduleLag,
    Connect,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::Ttft,
        Metric::Tpot,
        Metric::Itl,
        Metric::E2e,
        Metric::Service,
        Metric::ScheduleLag,
        Metric::Connect,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Ttft => "ttft",
            Metric::Tpot => "tpot",
            Metric::Itl => "itl",
            Metric::E2e => "e2e",
            Metric::Service => "service",
            Metric::ScheduleLag => "schedule_lag",
            Metric::Connect => "connect",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a request's service time went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Share {
    Queue,
    Compute,
    /// The nodes' per-message software time (`send_cost`, `recv_cost`) on the path.
    Software,
    Network,
}

impl Share {
    pub const ALL: [Share; 4] = [
        Share::Queue,
        Share::Compute,
        Share::Software,
        Share::Network,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Share::Queue => "queue",
            Share::Compute => "compute",
            Share::Software => "software",
            Share::Network => "network",
        }
    }
}

/// One completed request, as durations on the client's clock (and the node's account of
/// its own queue and compute time).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Scheduled start, measured from the start of the request's phase: with `tokens`, it
    /// places the request's tokens and its completion in the phase's 1-second intervals.
    pub scheduled_at: Duration,
    /// Actual send - scheduled start.
    pub schedule_lag: Duration,
    /// Arrival of each output token, measured from the scheduled start.
    pub tokens: Vec<Duration>,
    /// Time the request waited in the worker's queue, on the worker's clock.
    pub queue: Duration,
    /// Time the worker computed it, on the worker's clock.
    pub compute: Duration,
    /// The nodes' per-message software time on the request's path (`send_cost`,
    /// `recv_cost`), each on its own clock; zero where no node has one.
    pub software: Duration,
    /// Each node's queue, compute and software time for the request, on its own clock.
    pub nodes: Vec<(String, Duration, Duration, Duration)>,
    /// Copies sent beyond the first (hedging), and whether a later copy answered first.
    pub extra_copies: u32,
    pub hedge_won: bool,
    /// The client node that sent it, where the topology has several.
    pub client: Option<String>,
}

impl Sample {
    pub fn ttft(&self) -> Duration {
        self.tokens.first().copied().unwrap_or_default()
    }

    pub fn e2e(&self) -> Duration {
        self.tokens.last().copied().unwrap_or_default()
    }

    pub fn service(&self) -> Duration {
        self.e2e().saturating_sub(self.schedule_lag)
    }

    /// (e2e - ttft) / (output_tokens - 1); `None` for a single-token request.
    pub fn tpot(&self) -> Option<Duration> {
        let n = self.tokens.len();
        (n > 1).then(|| (self.e2e() - self.ttft()) / (n as u32 - 1))
    }

    pub fn itls(&self) -> impl Iterator<Item = Duration> + '_ {
        self.tokens.windows(2).map(|w| w[1].saturating_sub(w[0]))
    }

    /// Network time: the residual of the service time after the nodes' queue, compute and
    /// software time.
    pub fn network(&self) -> Duration {
        self.service()
            .saturating_sub(self.queue + self.compute + self.software)
    }

    /// Whether the request met every objective of the SLO.
    pub fn meets(&self, slo: &Slo) -> bool {
        slo.ttft.is_none_or(|t| self.ttft() <= t)
            && slo.e2e.is_none_or(|t| self.e2e() <= t)
            && slo.tpot.is_none_or(|t| self.tpot().is_none_or(|v| v <= t))
            && slo.itl.is_none_or(|t| self.itls().all(|v| v <= t))
    }
}

/// A percentile ladder in milliseconds. An empty one serializes its values as null.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ladder {
    pub unit: &'static str,
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Serialize for Ladder {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Ladder", 9)?;
        st.serialize_field("unit", self.unit)?;
        st.serialize_field("count", &self.count)?;
        let values = [
            ("min", self.min),
            ("mean", self.mean),
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p999", self.p999),
            ("max", self.max),
        ];
        for (name, v) in values {
            st.serialize_field(name, &(self.count > 0).then_some(v))?;
        }
        st.end()
    }
}

/// A fresh histogram of nanoseconds that grows as needed.
pub fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new(SIGFIG).expect("3 significant figures is valid");
    h.auto(true);
    h
}

/// Records a duration; the histogram grows to hold it.
pub fn add(h: &mut Histogram<u64>, d: Duration) {
    if h.record(ns(d)).is_err() {
        h.saturating_record(ns(d));
    }
}

fn ns(d: Duration) -> u64 {
    (d.as_nanos().min(u64::MAX as u128) as u64).max(1)
}

/// The ladder of a histogram of nanoseconds, in milliseconds.
pub fn ladder(h: &Histogram<u64>) -> Ladder {
    let ms = |v: u64| v as f64 / 1e6;
    if h.is_empty() {
        return Ladder {
            unit: "ms",
            ..Ladder::default()
        };
    }
    Ladder {
        unit: "ms",
        count: h.len(),
        min: ms(h.min()),
        mean: h.mean() / 1e6,
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// What a run's faults did, as summary.json writes it (`runs.<run>.faults`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FaultCounts {
    /// Faults that began during the run.
    pub injected: u64,
    /// Requests that moved to another server (a hedged replica, or a pipeline stage's
    /// session opened again on the server holding its span) after one failed.
    pub failovers: u64,
    /// Tokens the failovers sent again to rebuild a server's KV cache: the prompt and the
    /// tokens generated so far, each time.
    pub replayed_tokens: u64,
    /// Failed requests that a fault touched (their error names it).
    pub lost: u64,
    /// Datagrams the faults dropped on every link direction.
    pub dropped_datagrams: u64,
}

impl FaultCounts {
    /// Adds another run's counts (merging records).
    pub fn add(&mut self, o: &FaultCounts) {
        self.injected += o.injected;
        self.failovers += o.failovers;
        self.replayed_tokens += o.replayed_tokens;
        self.lost += o.lost;
        self.dropped_datagrams += o.dropped_datagrams;
    }
}

/// Everything measured in one run (the topology or the baseline).
#[derive(Clone, Debug)]
pub struct RunRecord {
    metrics: BTreeMap<Metric, Histogram<u64>>,
    breakdown: BTreeMap<Share, Histogram<u64>>,
    /// Per node: its queue and compute time per request, on its own clock.
    nodes: BTreeMap<String, [Histogram<u64>; 2]>,
    /// Per node that spent any: its software time per request (`send_cost`, `recv_cost`),
    /// on its own clock.
    node_software: BTreeMap<String, Histogram<u64>>,
    /// Per client node: its requests' ttft and e2e.
    clients: BTreeMap<String, [Histogram<u64>; 2]>,
    /// Hedging: copies sent beyond the first, and requests a later copy answered first.
    pub extra_copies: u64,
    pub hedge_wins: u64,
    /// What the scenario's `[[fault]]`s did in this run (zero where none was injected).
    pub faults: FaultCounts,
    pub completed: u64,
    pub failed: u64,
    pub output_tokens: u64,
    /// Completed requests that met every SLO objective.
    pub good: u64,
    /// Failure reasons and how often each happened.
    pub errors: BTreeMap<String, u64>,
    /// Measure phase start -> last completion of a measured request.
    pub elapsed: Duration,
    /// The measured window that throughput and goodput count over: the measured phase as
    /// scheduled, the same for the topology and the baseline (see
    /// `plan::schedule::window`). Failed requests are in it as much as completed ones.
    pub window: Duration,
    /// The values of each 1-second interval of the measured phase (its number since the
    /// phase's start) and metric, in nanoseconds. Kept as values, not histograms: a
    /// histogram of nanoseconds holds ~200 KB of counters however few values it has, so one
    /// per interval and metric would cost gigabytes over a long run; [`Self::intervals`]
    /// builds each interval's histogram when it is asked for.
    intervals: BTreeMap<u64, BTreeMap<Metric, Vec<u64>>>,
    /// Each completed request's service time and its own queue, compute and network, so
    /// the requests at a percentile can be decomposed ([`Self::request_at`]).
    parts: Vec<Parts>,
}

/// One request's service time and where it went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    pub service: Duration,
    pub queue: Duration,
    pub compute: Duration,
    pub software: Duration,
    pub network: Duration,
}

impl Parts {
    pub fn get(&self, share: Share) -> Duration {
        match share {
            Share::Queue => self.queue,
            Share::Compute => self.compute,
            Share::Software => self.software,
            Share::Network => self.network,
        }
    }
}

impl Default for RunRecord {
    fn default() -> Self {
        RunRecord {
            metrics: Metric::ALL.iter().map(|&m| (m, histogram())).collect(),
            breakdown: Share::ALL.iter().map(|&p| (p, histogram())).collect(),
            nodes: BTreeMap::new(),
            node_software: BTreeMap::new(),
            clients: BTreeMap::new(),
            extra_copies: 0,
            hedge_wins: 0,
            faults: FaultCounts::default(),
            completed: 0,
            failed: 0,
            output_tokens: 0,
            good: 0,
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
            window: Duration::ZERO,
            intervals: BTreeMap::new(),
            parts: Vec::new(),
        }
    }
}

impl RunRecord {
    pub fn new() -> Self {
        Self::default()
    }

    fn put(&mut self, m: Metric, d: Duration) {
        add(
            self.metrics
                .get_mut(&m)
                .expect("every metric has a histogram"),
            d,
        );
    }

    /// Adds a value to the interval `at` (from the phase's start) falls in.
    fn put_interval(&mut self, at: Duration, m: Metric, d: Duration) {
        let interval = (at.as_nanos() / INTERVAL.as_nanos()).min(u64::MAX as u128) as u64;
        self.intervals
            .entry(interval)
            .or_default()
            .entry(m)
            .or_default()
            .push(ns(d));
    }

    /// Records a completed request.
    ///
    /// In the interval log, a request's `ttft`, `tpot`, `e2e`, `service` and `schedule_lag`
    /// go into the interval in which it completed (its last token arrived), and each `itl`
    /// value into the interval in which the token that ends that gap arrived: a gap is
    /// observed when its token comes, so a long request's gaps spread over the seconds it
    /// streamed in (the counts still add up to the whole-run histogram's).
    pub fn record(&mut self, s: &Sample, slo: &Slo) {
        self.completed += 1;
        self.output_tokens += s.tokens.len() as u64;
        if s.meets(slo) {
            self.good += 1;
        }
        let done = s.scheduled_at + s.e2e();
        for (m, d) in [
            (Metric::Ttft, s.ttft()),
            (Metric::E2e, s.e2e()),
            (Metric::Service, s.service()),
            (Metric::ScheduleLag, s.schedule_lag),
        ] {
            self.put(m, d);
            self.put_interval(done, m, d);
        }
        if let Some(t) = s.tpot() {
            self.put(Metric::Tpot, t);
            self.put_interval(done, Metric::Tpot, t);
        }
        for (d, &token) in s.itls().zip(s.tokens.iter().skip(1)) {
            self.put(Metric::Itl, d);
            self.put_interval(s.scheduled_at + token, Metric::Itl, d);
        }
        for (part, d) in [
            (Share::Queue, s.queue),
            (Share::Compute, s.compute),
            (Share::Software, s.software),
            (Share::Network, s.network()),
        ] {
            add(
                self.breakdown
                    .get_mut(&part)
                    .expect("every part has a histogram"),
                d,
            );
        }
        self.parts.push(Parts {
            service: s.service(),
            queue: s.queue,
            compute: s.compute,
            software: s.software,
            network: s.network(),
        });
        for (name, queue, compute, software) in &s.nodes {
            let h = self
                .nodes
                .entry(name.clone())
                .or_insert_with(|| [histogram(), histogram()]);
            add(&mut h[0], *queue);
            add(&mut h[1], *compute);
            if !software.is_zero() {
                add(
                    self.node_software
                        .entry(name.clone())
                        .or_insert_with(histogram),
                    *software,
                );
            }
        }
        if let Some(c) = &s.client {
            let h = self
                .clients
                .entry(c.clone())
                .or_insert_with(|| [histogram(), histogram()]);
            add(&mut h[0], s.ttft());
            add(&mut h[1], s.e2e());
        }
        self.extra_copies += s.extra_copies as u64;
        self.hedge_wins += s.hedge_won as u64;
    }

    /// Each node's queue and compute histograms, by name.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &Histogram<u64>, &Histogram<u64>)> {
        self.nodes.iter().map(|(n, [q, c])| (n.as_str(), q, c))
    }

    /// A node's software time per request (`send_cost`, `recv_cost`), where it spent any.
    pub fn node_software(&self, name: &str) -> Option<&Histogram<u64>> {
        self.node_software.get(name)
    }

    /// Each client node's ttft and e2e histograms, by name.
    pub fn clients(&self) -> impl Iterator<Item = (&str, &Histogram<u64>, &Histogram<u64>)> {
        self.clients.iter().map(|(n, [t, e])| (n.as_str(), t, e))
    }

    /// Records a connection's handshake time.
    pub fn record_connect(&mut self, d: Duration) {
        self.put(Metric::Connect, d);
    }

    /// Records a failed request and why.
    pub fn record_failure(&mut self, reason: impl Into<String>) {
        self.failed += 1;
        *self.errors.entry(reason.into()).or_default() += 1;
    }

    pub fn histogram(&self, m: Metric) -> &Histogram<u64> {
        &self.metrics[&m]
    }

    pub fn part(&self, p: Share) -> &Histogram<u64> {
        &self.breakdown[&p]
    }

    pub fn ladder(&self, m: Metric) -> Ladder {
        ladder(self.histogram(m))
    }

    /// The interval log: for each 1-second interval of the measured phase that has values,
    /// in order, its start (from the phase's start) and the histogram of each metric with
    /// values in it, in [`Metric::ALL`] order. `connect`, measured during setup before the
    /// measured phase, has no intervals.
    pub fn intervals(&self) -> impl Iterator<Item = (Duration, Metric, Histogram<u64>)> + '_ {
        self.intervals.iter().flat_map(|(&i, metrics)| {
            let start = INTERVAL.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            metrics.iter().map(move |(&m, values)| {
                let mut h = histogram();
                for &v in values {
                    if h.record(v).is_err() {
                        h.saturating_record(v);
                    }
                }
                (start, m, h)
            })
        })
    }

    /// Completed requests per second of the measured window.
    pub fn requests_per_s(&self) -> f64 {
        per_s(self.completed, self.window)
    }

    /// Output tokens of completed requests per second of the measured window.
    pub fn output_tokens_per_s(&self) -> f64 {
        per_s(self.output_tokens, self.window)
    }

    /// Requests that completed and met every SLO objective, per second of the window.
    pub fn goodput_per_s(&self) -> f64 {
        per_s(self.good, self.window)
    }

    /// The completed request whose service time is at quantile `q` (nearest rank: the
    /// smallest time that at least `q` of the requests do not exceed), with its own queue,
    /// compute and network: one real request, whose parts add up to its service time.
    pub fn request_at(&self, q: f64) -> Option<Parts> {
        let mut sorted = self.parts.clone();
        sorted.sort_by_key(|p| (p.service, p.queue, p.compute));
        let n = sorted.len();
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as usize).clamp(1, n.max(1));
        sorted.get(rank - 1).copied()
    }

    /// Whether any completed request had software time (a node's `send_cost` or
    /// `recv_cost`). The part's histogram cannot say: it records a zero as 1 ns.
    pub fn has_software(&self) -> bool {
        self.parts.iter().any(|p| !p.software.is_zero())
    }

    /// Measured requests: completed and failed.
    pub fn requests(&self) -> u64 {
        self.completed + self.failed
    }

    /// The fraction of the measured requests that failed; 0 with none.
    pub fn failed_fraction(&self) -> f64 {
        match self.requests() {
            0 => 0.0,
            n => self.failed as f64 / n as f64,
        }
    }

    /// Adds another record's values (for merging runs or hosts).
    pub fn merge(&mut self, other: &RunRecord) {
        for (m, h) in &other.metrics {
            self.metrics
                .get_mut(m)
                .expect("same metrics")
                .add(h)
                .expect("auto-resizing histograms merge");
        }
        for (p, h) in &other.breakdown {
            self.breakdown
                .get_mut(p)
                .expect("same parts")
                .add(h)
                .expect("auto-resizing histograms merge");
        }
        for (name, [q, c]) in &other.nodes {
            let mine = self
                .nodes
                .entry(name.clone())
                .or_insert_with(|| [histogram(), histogram()]);
            mine[0].add(q).expect("auto-resizing histograms merge");
            mine[1].add(c).expect("auto-resizing histograms merge");
        }
        for (name, h) in &other.node_software {
            self.node_software
                .entry(name.clone())
                .or_insert_with(histogram)
                .add(h)
                .expect("auto-resizing histograms merge");
        }
        for (name, [t, e]) in &other.clients {
            let mine = self
                .clients
                .entry(name.clone())
                .or_insert_with(|| [histogram(), histogram()]);
            mine[0].add(t).expect("auto-resizing histograms merge");
            mine[1].add(e).expect("auto-resizing histograms merge");
        }
        self.extra_copies += other.extra_copies;
        self.hedge_wins += other.hedge_wins;
        self.faults.add(&other.faults);
        self.completed += other.completed;
        self.failed += other.failed;
        self.output_tokens += other.output_tokens;
        self.good += other.good;
        for (e, n) in &other.errors {
            *self.errors.entry(e.clone()).or_default() += n;
        }
        self.elapsed = self.elapsed.max(other.elapsed);
        self.window = self.window.max(other.window);
        self.parts.extend_from_slice(&other.parts);
        for (&i, metrics) in &other.intervals {
            let mine = self.intervals.entry(i).or_default();
            for (&m, values) in metrics {
                mine.entry(m).or_default().extend_from_slice(values);
            }
        }
    }
}

fn per_s(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn sample() -> Sample {
        Sample {
            scheduled_at: ms(900),
            schedule_lag: ms(2),
            tokens: vec![ms(100), ms(110), ms(130)],
            queue: ms(5),
            compute: ms(60),
            software: Duration::ZERO,
            nodes: vec![("gpu".into(), ms(5), ms(60), Duration::ZERO)],
            extra_copies: 0,
            hedge_won: false,
            client: None,
        }
    }

    /// Software time is its own part: the network residual leaves it out, and a record
    /// says it had some only when a request did (its histogram records a zero as 1 ns).
    #[test]
    fn software_is_a_part_and_not_network() {
        let mut r = RunRecord::new();
        r.record(&sample(), &Slo::default());
        assert!(!r.has_software());
        let s = Sample {
            software: ms(3),
            ..sample()
        };
        assert_eq!(s.network(), sample().network() - ms(3));
        r.record(&s, &Slo::default());
        assert!(r.has_software());
        assert_eq!(r.part(Share::Software).max() / 1_000_000, 3);
    }

    #[test]
    fn metric_definitions() {
        let s = sample();
        assert_eq!(s.ttft(), ms(100));
        assert_eq!(s.e2e(), ms(130));
        assert_eq!(s.service(), ms(128));
        assert_eq!(s.tpot(), Some(ms(15)));
        assert_eq!(s.itls().collect::<Vec<_>>(), vec![ms(10), ms(20)]);
        assert_eq!(s.network(), ms(63));
    }

    #[test]
    fn record_fills_histograms_and_goodput() {
        let mut r = RunRecord::new();
        let slo = Slo {
            ttft: Some(ms(150)),
            tpot: Some(ms(20)),
            ..Slo::default()
        };
        r.record(&sample(), &slo);
        let slow = Sample {
            tokens: vec![ms(200), ms(210)],
            ..sample()
        };
        r.record(&slow, &slo);
        r.record_failure("reset");
        r.window = Duration::from_secs(2);
        assert_eq!(r.completed, 2);
        assert_eq!(r.good, 1);
        assert_eq!(r.failed, 1);
        assert_eq!(r.histogram(Metric::Itl).len(), 3);
        assert_eq!(r.output_tokens_per_s(), 2.5);
        assert_eq!(r.requests_per_s(), 1.0);
        assert!((r.failed_fraction() - 1.0 / 3.0).abs() < 1e-12);
        // The request at p50 is the faster one, decomposed as itself.
        let p50 = r.request_at(0.5).unwrap();
        assert_eq!(
            (p50.service, p50.queue, p50.compute),
            (ms(128), ms(5), ms(60))
        );
        assert_eq!(p50.network, ms(63));
        assert_eq!(r.request_at(0.99).unwrap().service, ms(208));
        assert_eq!(RunRecord::new().request_at(0.5), None);
        let l = r.ladder(Metric::Ttft);
        assert_eq!(l.count, 2);
        assert!(
            (l.p50 - 100.0).abs() < 0.1 && (l.max - 200.0).abs() < 0.2,
            "{l:?}"
        );
    }

    #[test]
    fn intervals_by_completion_and_token_arrival() {
        use Metric::*;
        let mut r = RunRecord::new();
        // Scheduled at 0.9 s: tokens at 0.95, 0.99 and 1.03 s of the phase.
        let straddles = Sample {
            tokens: vec![ms(50), ms(90), ms(130)],
            ..sample()
        };
        r.record(&straddles, &Slo::default());
        // Scheduled at 2.5 s, done at 2.63 s.
        let later = Sample {
            scheduled_at: ms(2500),
            ..sample()
        };
        r.record(&later, &Slo::default());
        r.record_connect(ms(40));
        let got: Vec<(u64, Metric, u64)> = r
            .intervals()
            .map(|(at, m, h)| (at.as_secs(), m, h.len()))
            .collect();
        let per_request = |i| {
            [Ttft, Tpot, Itl, E2e, Service, ScheduleLag]
                .map(|m| (i, m, if m == Itl && i == 2 { 2 } else { 1 }))
        };
        let mut want = vec![(0, Itl, 1)];
        want.extend(per_request(1));
        want.extend(per_request(2));
        assert_eq!(got, want);
        let (_, _, e2e) = r
            .intervals()
            .find(|(at, m, _)| at.as_secs() == 2 && *m == E2e)
            .unwrap();
        assert!((e2e.max() as f64 / 1e6 - 130.0).abs() < 0.2, "{e2e:?}");
        let count = |r: &RunRecord| r.intervals().map(|(_, _, h)| h.len()).sum::<u64>();
        let mut merged = r.clone();
        merged.merge(&r);
        assert_eq!(count(&merged), 2 * count(&r));
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = RunRecord::new();
        a.record(&sample(), &Slo::default());
        let b = a.clone();
        a.merge(&b);
        assert_eq!(a.completed, 2);
        assert_eq!(a.histogram(Metric::E2e).len(), 2);
    }
}
