//! What a `[[link]]` names beyond its parameters: the two ends (`LinkDef`) and the
//! shipped presets. The parameters themselves are the network's (`net::params`).

use crate::format::{format_duration, format_si};
pub use crate::net::params::{
    DEFAULT_QUEUE_BYTES, JitterDist, LinkChange, LinkParams, Loss, Queue, RateTrace, Reorder,
    WIRE_OVERHEAD,
};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct LinkDef {
    pub from: usize,
    pub to: usize,
    /// The link preset it started from, if any.
    pub preset: Option<&'static str>,
    pub params: LinkParams,
    /// Changes in time order.
    pub changes: Vec<LinkChange>,
}

/// A named link from `../shared/REFERENCE.md`, usable as `preset = "..."` in a `[[link]]`.
#[derive(Clone, Copy, Debug)]
pub struct LinkPreset {
    pub name: &'static str,
    pub rtt: Duration,
    /// Per direction.
    pub jitter: Duration,
    pub bandwidth: Option<f64>,
    pub loss: f64,
    pub queue: Queue,
    pub source: &'static str,
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// The shipped link presets. Each figure comes from `../shared/REFERENCE.md` (which cites
/// its sources); the RTT is split evenly between the two directions.
pub const LINK_PRESETS: &[LinkPreset] = &[
    LinkPreset {
        name: "lan",
        rtt: us(500),
        jitter: us(20),
        bandwidth: Some(1e9),
        loss: 0.0,
        queue: Queue::Packets(1000),
        source: "gigabit Ethernet as in llama.cpp PR #6829; RTT inside the 0.25-0.9 ms measured within and across cloud zones (AWS/Azure)",
    },
    LinkPreset {
        name: "datacenter",
        rtt: us(900),
        jitter: us(50),
        bandwidth: Some(10e9),
        loss: 0.0,
        queue: Queue::Packets(1000),
        source: "same cloud zone: about 0.9 ms TCP echo (Azure measurements); 10 Gbit/s instance networking",
    },
    LinkPreset {
        name: "thunderbolt",
        rtt: us(700),
        jitter: us(100),
        bandwidth: Some(40e9),
        loss: 0.0,
        queue: Queue::Packets(1000),
        source: "TCP over a Thunderbolt bridge: 0.4-0.95 ms RTT (exo issue #2295); Thunderbolt 4 40 Gbit/s",
    },
    LinkPreset {
        name: "wifi",
        rtt: ms(5),
        jitter: ms(2),
        bandwidth: Some(100e6),
        loss: 0.01,
        queue: Queue::Packets(1000),
        source: "Wi-Fi: 5 ms, 2 ms jitter, about 1 % loss, 100 Mbit/s (REFERENCE.md link presets; home Wi-Fi under load reaches 5-54 ms, exo issue #2295)",
    },
    LinkPreset {
        name: "cellular",
        rtt: ms(50),
        jitter: ms(15),
        bandwidth: Some(30e6),
        loss: 0.02,
        queue: Queue::Packets(1000),
        source: "cellular: 50 ms, 15 ms jitter, about 2 % loss, 30 Mbit/s (REFERENCE.md link presets)",
    },
    LinkPreset {
        name: "satellite",
        rtt: ms(600),
        jitter: ms(30),
        bandwidth: Some(15e6),
        loss: 0.03,
        queue: Queue::Packets(1000),
        source: "geostationary satellite: 600 ms, 30 ms jitter, about 3 % loss, 15 Mbit/s (REFERENCE.md link presets)",
    },
    LinkPreset {
        name: "quic-interop",
        rtt: ms(30),
        jitter: Duration::ZERO,
        bandwidth: Some(10e6),
        loss: 0.0,
        queue: Queue::Packets(25),
        source: "the QUIC interop runner's simulated link: 15 ms each way, 10 Mbit/s, a 25-packet queue",
    },
    LinkPreset {
        name: "nearby-regions",
        rtt: ms(20),
        jitter: us(500),
        bandwidth: Some(1e9),
        loss: 0.0,
        queue: Queue::Packets(1000),
        source: "nearby cloud regions: us-west-1 to us-west-2 19.5 ms, eu-west-1 to eu-central-1 19.6 ms (AWS inter-region table)",
    },
    LinkPreset {
        name: "coast-to-coast",
        rtt: ms(80),
        jitter: ms(1),
        bandwidth: Some(1e9),
        loss: 0.0,
        queue: Queue::Packets(1000),
        source: "US coast to coast: 73-87 ms (AWS inter-region table)",
    },
    LinkPreset {
        name: "transatlantic",
        rtt: ms(85),
        jitter: ms(1),
        bandwidth: Some(1e9),
        loss: 0.0,
        queue: Queue::Packets(1000),
        source: "transatlantic: 80-89 ms (AWS inter-region table)",
    },
    LinkPreset {
        name: "transpacific",
        rtt: ms(145),
        jitter: ms(2),
        bandwidth: Some(1e9),
        loss: 0.0,
        queue: Queue::Packets(1000),
        source: "US east to Tokyo: 145 ms (AWS inter-region table)",
    },
];

impl LinkPreset {
    pub fn find(name: &str) -> Option<&'static LinkPreset> {
        LINK_PRESETS.iter().find(|p| p.name == name)
    }

    pub fn names() -> Vec<&'static str> {
        LINK_PRESETS.iter().map(|p| p.name).collect()
    }

    pub fn all() -> &'static [LinkPreset] {
        LINK_PRESETS
    }

    /// One line: its figures and where they come from.
    pub fn summary(&self) -> String {
        let ms = format_duration;
        format!(
            "rtt {}, jitter {}, {}, loss {}%, queue {}  ({})",
            ms(self.rtt),
            ms(self.jitter),
            self.bandwidth
                .map(|b| format_si(b, "bit/s"))
                .unwrap_or_else(|| "unlimited".into()),
            self.loss * 100.0,
            self.queue,
            self.source
        )
    }

    /// The preset's parameters for one direction.
    pub fn params(&self) -> LinkParams {
        LinkParams {
            delay: self.rtt / 2,
            jitter: self.jitter,
            bandwidth: self.bandwidth,
            loss: if self.loss > 0.0 {
                Loss::Bernoulli {
                    p: self.loss,
                    correlation: 0.0,
                }
            } else {
                Loss::None
            },
            queue: self.queue,
            ..LinkParams::ideal()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_sourced_and_sane() {
        for p in LINK_PRESETS {
            assert!(!p.source.is_empty(), "{}", p.name);
            let l = p.params();
            assert!(l.jitter <= l.delay, "{}: jitter past the delay", p.name);
        }
    }
}
