//! What one direction of an emulated link does, as the emulator (`net::link`) applies
//! it: delay and its jitter distribution, loss, duplication, reordering, MTU, a rate
//! (fixed or from a mahimahi trace) with a tail-drop queue, and changes during a run.
//! The scenario maps a `[[link]]` table onto these, and its `[quic]` table onto the
//! transport settings (`Quic`) that `net::endpoint` gives quinn; `docs/links.md` explains
//! each parameter next to netem's.

use crate::format::{duration_str, format_duration, format_si};
pub use crate::net::port::PortDef;
use serde::{Serialize, Serializer};
use std::sync::Arc;
use std::time::Duration;

/// Bytes each datagram carries on the wire beyond its UDP payload (IPv4 20 + UDP 8): they
/// count against the rate, the queue and the MTU.
pub const WIRE_OVERHEAD: u32 = 28;

/// The default tail-drop buffer of a rate-limited link: netem's default limit of 1000
/// packets of 1500 bytes.
pub const DEFAULT_QUEUE_BYTES: u64 = 1_500_000;

/// Loss model of one link direction.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "model", rename_all = "kebab-case")]
pub enum Loss {
    None,
    /// Each datagram lost with probability `p`; with `correlation` ρ, a Markov chain whose
    /// long-run loss is still `p` and whose consecutive losses have correlation ρ.
    Bernoulli {
        p: f64,
        correlation: f64,
    },
    /// Two-state Markov chain: good -> bad with `p`, bad -> good with `r`; a datagram is
    /// lost with `loss_good` in the good state and `loss_bad` in the bad one (netem's
    /// `gemodel p r 1-h 1-k`).
    GilbertElliott {
        p: f64,
        r: f64,
        loss_good: f64,
        loss_bad: f64,
    },
}

impl Loss {
    /// The long-run loss rate.
    pub fn mean(&self) -> f64 {
        match *self {
            Loss::None => 0.0,
            Loss::Bernoulli { p, .. } => p,
            Loss::GilbertElliott {
                p,
                r,
                loss_good,
                loss_bad,
            } => {
                if p + r == 0.0 {
                    loss_good
                } else {
                    let bad = p / (p + r);
                    bad * loss_bad + (1.0 - bad) * loss_good
                }
            }
        }
    }
}

/// The distribution of the delay around its mean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JitterDist {
    /// Uniform in `delay ± jitter` (netem's default).
    #[default]
    Uniform,
    /// Normal with standard deviation `jitter`.
    Normal,
    /// Pareto (shape 3, netem's table) shifted to mean `delay`, scaled to deviation `jitter`.
    Pareto,
    /// netem's mix of 1/4 normal and 3/4 pareto, scaled to deviation `jitter`.
    #[serde(rename = "paretonormal")]
    ParetoNormal,
}

impl JitterDist {
    pub const NAMES: &'static [&'static str] = &["uniform", "normal", "pareto", "paretonormal"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "uniform" => JitterDist::Uniform,
            "normal" => JitterDist::Normal,
            "pareto" => JitterDist::Pareto,
            "paretonormal" | "pareto-normal" => JitterDist::ParetoNormal,
            _ => return None,
        })
    }

    /// The lowest value of the standardized distribution (delay = mean + jitter × this):
    /// the floor of the delay.
    pub fn min(self) -> f64 {
        match self {
            JitterDist::Uniform => -1.0,
            JitterDist::Normal | JitterDist::ParetoNormal => f64::NEG_INFINITY,
            // (1 - 1.5) / sqrt(0.75)
            JitterDist::Pareto => -0.5 / 0.75f64.sqrt(),
        }
    }
}

/// netem's explicit reordering: every datagram after `gap - 1` in order goes out at once
/// (skipping the delay) with probability `p`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Reorder {
    pub p: f64,
    pub correlation: f64,
    pub gap: u32,
}

/// The tail-drop buffer in front of the rate limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    Bytes(u64),
    Packets(u32),
}

impl Serialize for Queue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl std::fmt::Display for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queue::Bytes(b) => f.write_str(&format_si(*b as f64, "B")),
            Queue::Packets(n) => write!(f, "{n} packets"),
        }
    }
}

/// A mahimahi packet-delivery trace: each line is a millisecond at which one MTU-sized
/// (1500-byte) delivery opportunity occurs; the trace repeats after its last line.
#[derive(Debug, PartialEq)]
pub struct RateTrace {
    /// The file as written in the scenario.
    pub file: String,
    /// Opportunities, in milliseconds from the start of a period, non-decreasing.
    pub opportunities: Vec<u64>,
    /// The period in milliseconds (the last opportunity's time).
    pub period_ms: u64,
}

impl RateTrace {
    /// Bytes one delivery opportunity carries.
    pub const OPPORTUNITY_BYTES: u32 = 1500;

    /// Parses a trace's text; errors name the 1-based line.
    pub fn parse(file: &str, text: &str) -> Result<Self, String> {
        let mut opportunities = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let ms: u64 = line.parse().map_err(|_| {
                format!(
                    "line {}: \"{line}\" is not a whole number of milliseconds",
                    i + 1
                )
            })?;
            if opportunities.last().is_some_and(|&last| ms < last) {
                return Err(format!(
                    "line {}: {ms} ms comes before the line above it; a mahimahi trace is in time order",
                    i + 1
                ));
            }
            opportunities.push(ms);
        }
        let period_ms = match opportunities.last() {
            None => return Err("the trace has no delivery opportunities".into()),
            Some(0) => {
                return Err(
                    "the trace's last opportunity is at 0 ms: its period would be zero".into(),
                );
            }
            Some(&p) => p,
        };
        Ok(RateTrace {
            file: file.into(),
            opportunities,
            period_ms,
        })
    }

    /// The long-run rate in bits per second.
    pub fn mean_rate(&self) -> f64 {
        self.opportunities.len() as f64 * Self::OPPORTUNITY_BYTES as f64 * 8.0
            / (self.period_ms as f64 / 1e3)
    }

    /// The least time the trace can take to carry `bytes`: the shortest window holding
    /// enough opportunities, over every starting point (a lower bound for the floor).
    pub fn min_time(&self, bytes: f64) -> Duration {
        let k = (bytes / Self::OPPORTUNITY_BYTES as f64).ceil().max(1.0) as usize;
        let n = self.opportunities.len();
        let at = |j: usize| (j / n) as u64 * self.period_ms + self.opportunities[j % n];
        let best = (0..n).map(|i| at(i + k - 1) - at(i)).min().unwrap_or(0);
        Duration::from_millis(best)
    }
}

impl Serialize for RateTrace {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("RateTrace", 3)?;
        st.serialize_field("file", &self.file)?;
        st.serialize_field("period_ms", &self.period_ms)?;
        st.serialize_field("mean_bit_per_s", &self.mean_rate())?;
        st.end()
    }
}

/// One direction of an emulated link.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkParams {
    #[serde(with = "duration_str")]
    pub delay: Duration,
    #[serde(with = "duration_str")]
    pub jitter: Duration,
    pub jitter_distribution: JitterDist,
    /// Correlation of consecutive delays (of the underlying normal), 0..1.
    pub jitter_correlation: f64,
    /// Deliveries keep the order datagrams were sent in (jitter never reorders).
    pub fifo: bool,
    pub reorder: Option<Reorder>,
    /// Bits per second; `None` is unlimited (unless `trace` is set).
    pub bandwidth: Option<f64>,
    /// A trace-driven rate instead of a fixed one.
    pub trace: Option<Arc<RateTrace>>,
    pub loss: Loss,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// The largest IP packet the link carries (UDP payload + 28 bytes); larger ones are dropped.
    pub mtu: Option<u32>,
    pub queue: Queue,
    /// A port this direction shares with other links (`[[port]]`): its datagrams also
    /// queue behind theirs at the port's rate (`net::port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Arc<PortDef>>,
    /// The transport behaviour of the connections that send on this direction
    /// (`transport` on a `[[link]]`), over `[quic]`'s; none: `[quic]`'s alone.
    #[serde(skip)]
    pub transport: Option<Arc<Quic>>,
}

impl LinkParams {
    /// A perfect link: no delay, no loss, no rate limit.
    pub fn ideal() -> Self {
        LinkParams {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            jitter_distribution: JitterDist::Uniform,
            jitter_correlation: 0.0,
            fifo: true,
            reorder: None,
            bandwidth: None,
            trace: None,
            loss: Loss::None,
            duplicate: 0.0,
            mtu: None,
            queue: Queue::Bytes(DEFAULT_QUEUE_BYTES),
            port: None,
            transport: None,
        }
    }

    /// Whether the link limits the rate (fixed or from a trace).
    pub fn rate_limited(&self) -> bool {
        self.bandwidth.is_some() || self.trace.is_some()
    }

    /// The least time to serialize `bytes` onto the link: the slower of its own rate and
    /// its port's, with no other traffic on the port.
    pub fn serialization(&self, bytes: f64) -> Duration {
        let port = self
            .port
            .as_ref()
            .map_or(Duration::ZERO, |p| p.serialization(bytes));
        if let Some(t) = &self.trace {
            return t.min_time(bytes).max(port);
        }
        let own = match self.bandwidth {
            Some(bps) if bps > 0.0 => {
                Duration::try_from_secs_f64(bytes * 8.0 / bps).unwrap_or(Duration::MAX)
            }
            _ => Duration::ZERO,
        };
        own.max(port)
    }

    /// The least one-way delay a datagram can see (reordered datagrams skip the delay).
    pub fn min_delay(&self) -> Duration {
        if self.reorder.is_some_and(|r| r.p > 0.0) {
            return Duration::ZERO;
        }
        let low =
            self.delay.as_secs_f64() + self.jitter.as_secs_f64() * self.jitter_distribution.min();
        if self.jitter.is_zero() {
            self.delay
        } else {
            Duration::from_secs_f64(low.max(0.0))
        }
    }

    /// A one-line description for `validate` and the terminal table.
    pub fn describe(&self) -> String {
        let ms = |d: Duration| format_duration(d);
        let mut s = format!("delay {}", ms(self.delay));
        if !self.jitter.is_zero() {
            let dist = serde_json::to_value(self.jitter_distribution)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            s += &format!(", jitter {} {dist}", ms(self.jitter));
            if self.jitter_correlation > 0.0 {
                s += &format!(" ({:.0}% correlated)", self.jitter_correlation * 100.0);
            }
            if !self.fifo {
                s += ", reordering";
            }
        }
        match (&self.trace, self.bandwidth) {
            (Some(t), _) => {
                s += &format!(
                    ", rate from {} (mean {})",
                    t.file,
                    format_si(t.mean_rate(), "bit/s")
                )
            }
            (None, Some(b)) => s += &format!(", bandwidth {}", format_si(b, "bit/s")),
            (None, None) => s += ", bandwidth unlimited",
        }
        if self.rate_limited() {
            s += &format!(", queue {}", self.queue);
        }
        let loss = self.loss.mean();
        if loss > 0.0 {
            let model = match self.loss {
                Loss::GilbertElliott { .. } => " gilbert-elliott",
                _ => "",
            };
            s += &format!(", loss {:.3}%{model}", loss * 100.0);
        }
        if self.duplicate > 0.0 {
            s += &format!(", duplicate {:.3}%", self.duplicate * 100.0);
        }
        if let Some(r) = self.reorder {
            s += &format!(", reorder {:.3}% gap {}", r.p * 100.0, r.gap);
        }
        if let Some(m) = self.mtu {
            s += &format!(", mtu {m}");
        }
        if let Some(p) = &self.port {
            s += &format!(", {}", p.describe());
        }
        if let Some(t) = &self.transport {
            s += &format!(", transport {}", t.describe());
        }
        s
    }
}

/// New parameters for a link from a moment of the run on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkChange {
    /// From the start of the measured phase.
    #[serde(with = "duration_str")]
    pub at: Duration,
    pub params: LinkParams,
}

// QUIC transport settings: what a scenario's `[quic]` table maps onto and
// `net::endpoint` configures quinn with.

/// A congestion controller quinn offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    Cubic,
    NewReno,
    Bbr,
}

impl Congestion {
    pub const NAMES: &'static [&'static str] = &["cubic", "newreno", "bbr"];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cubic" => Congestion::Cubic,
            "newreno" | "new-reno" => Congestion::NewReno,
            "bbr" => Congestion::Bbr,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::NewReno => "newreno",
            Congestion::Bbr => "bbr",
        }
    }
}

/// The idle timeout of inferlat's QUIC connections unless `[quic]` sets one.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `[quic]`: the QUIC settings that distort latency unless set on purpose. `None` keeps
/// the default documented in `docs/links.md`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quic {
    pub initial_rtt: Option<Duration>,
    pub initial_window: Option<u64>,
    pub stream_receive_window: Option<u64>,
    pub receive_window: Option<u64>,
    pub idle_timeout: Option<Duration>,
    pub keep_alive: Option<Duration>,
    pub congestion: Option<Congestion>,
    /// Whether each connection starts with the window of a long-lived connection on its
    /// path (true, the default) or from `initial_window` like a new one.
    pub warm: Option<bool>,
    /// Whether the window restarts from `initial_window` after an idle period (TCP's
    /// slow start after idle); default false.
    pub slow_start_after_idle: Option<bool>,
    /// Whether writes follow Nagle's algorithm (a partial segment waits while an earlier
    /// small one is unacknowledged, `net::framed::write_nagle`); default false, as with
    /// `TCP_NODELAY`.
    pub nagle: Option<bool>,
    /// The longest the receiver may hold the acknowledgement of a lone packet this side
    /// sends (QUIC's ACK_FREQUENCY request); none: the receiver's own 25 ms.
    pub max_ack_delay: Option<Duration>,
}

impl Quic {
    /// The fields it sets, for `validate` ("initial_window 14.5kB, slow start after idle");
    /// "the run's [quic]" when it sets none.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(w) = self.initial_window {
            parts.push(format!("initial_window {}", format_si(w as f64, "B")));
        }
        match self.slow_start_after_idle {
            Some(true) => parts.push("slow start after idle".into()),
            Some(false) => parts.push("no slow start after idle".into()),
            None => {}
        }
        match self.nagle {
            Some(true) => parts.push("nagle".into()),
            Some(false) => parts.push("no nagle".into()),
            None => {}
        }
        if let Some(d) = self.max_ack_delay {
            parts.push(format!("max_ack_delay {}", format_duration(d)));
        }
        match self.warm {
            Some(true) => parts.push("warm".into()),
            Some(false) => parts.push("cold".into()),
            None => {}
        }
        if let Some(c) = self.congestion {
            parts.push(c.name().into());
        }
        if let Some(d) = self.initial_rtt {
            parts.push(format!("initial_rtt {}", format_duration(d)));
        }
        if let Some(w) = self.stream_receive_window {
            parts.push(format!(
                "stream_receive_window {}",
                format_si(w as f64, "B")
            ));
        }
        if let Some(w) = self.receive_window {
            parts.push(format!("receive_window {}", format_si(w as f64, "B")));
        }
        if let Some(d) = self.idle_timeout {
            parts.push(format!("idle_timeout {}", format_duration(d)));
        }
        if let Some(d) = self.keep_alive {
            parts.push(format!("keep_alive {}", format_duration(d)));
        }
        match parts.is_empty() {
            true => "the run's [quic]".into(),
            false => parts.join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_parses_and_repeats() {
        let t = RateTrace::parse("t", "# comment\n1\n1\n5\n\n10\n").unwrap();
        assert_eq!(t.opportunities, vec![1, 1, 5, 10]);
        assert_eq!(t.period_ms, 10);
        // 4 × 1500 B per 10 ms = 4.8 Mbit/s.
        assert!((t.mean_rate() - 4.8e6).abs() < 1.0);
        // Two opportunities share the 1 ms mark: 3000 B can go in no time at all.
        assert_eq!(t.min_time(3000.0), Duration::ZERO);
        // Five need a window across the wrap: 10 -> 11 -> 11 -> 15 -> 20 is 10 ms, but
        // 1 -> 1 -> 5 -> 10 -> 11 is 10 ms too.
        assert_eq!(t.min_time(7500.0), Duration::from_millis(10));
    }

    #[test]
    fn trace_errors_name_the_line() {
        assert!(
            RateTrace::parse("t", "1\nx\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(
            RateTrace::parse("t", "5\n3\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(RateTrace::parse("t", "").is_err());
        assert!(RateTrace::parse("t", "0\n0\n").is_err());
    }

    #[test]
    fn min_delay_follows_the_distribution() {
        let p = LinkParams {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(4),
            ..LinkParams::ideal()
        };
        assert_eq!(p.min_delay(), Duration::from_millis(6));
        let n = LinkParams {
            jitter_distribution: JitterDist::Normal,
            ..p.clone()
        };
        assert_eq!(n.min_delay(), Duration::ZERO);
        let r = LinkParams {
            reorder: Some(Reorder {
                p: 0.1,
                correlation: 0.0,
                gap: 1,
            }),
            ..p
        };
        assert_eq!(r.min_delay(), Duration::ZERO);
    }
}
