//! Named transport behaviours a `[[link]]` can state with `transport = "name"`: the
//! settings of `[quic]` that make quinn's connections behave like the modelled system's
//! transport on that link. A table (`transport = { slow_start_after_idle = true, ... }`)
//! states the same fields one by one. Either overrides `[quic]` for the connection
//! directions that send on the link; `docs/links.md` has the measurements.
//!
//! Nagle's algorithm is the `nagle` field (default false: every write leaves at once, as
//! with `TCP_NODELAY`). With it, a connection's controller is a
//! `net::congestion::NagleController` and `net::framed::write_nagle` holds a partial
//! segment while a small one sent earlier is unacknowledged (Linux's rule); the receiver's
//! delayed acknowledgement that makes this cost time is quinn's (a lone packet after 25 ms,
//! every second one at once), or what `max_ack_delay` asks of the peer (Linux: 40 ms). In
//! runs every stream of such a connection writes through a `net::sender::Sender`, which
//! keeps its queue as a socket does. No preset sets it: the systems inferlat models set
//! `TCP_NODELAY` (ggml-rpc's `transport.cpp`, distributed-llama's `nn-network.cpp`), so
//! `tcp-linux` keeps it off (`tests/transport.rs` measures it, on its own and in a run;
//! see `docs/links.md`).

use crate::net::params::Quic;

/// A named transport behaviour.
#[derive(Clone, Copy, Debug)]
pub struct TransportPreset {
    pub name: &'static str,
    /// The `[quic]` fields it sets.
    pub settings: fn() -> Quic,
    pub source: &'static str,
}

fn quic() -> Quic {
    Quic::default()
}

fn tcp_linux() -> Quic {
    Quic {
        // RFC 6928's ten segments of 1,448 B (a 1500-byte MTU with timestamps).
        initial_window: Some(14_480),
        slow_start_after_idle: Some(true),
        ..Quic::default()
    }
}

/// The shipped transport presets.
pub const TRANSPORT_PRESETS: &[TransportPreset] = &[
    TransportPreset {
        name: "quic",
        settings: quic,
        source: "inferlat's QUIC defaults (and `[quic]`): warm windows, no restart after idle",
    },
    TransportPreset {
        name: "tcp-linux",
        settings: tcp_linux,
        source: "Linux TCP defaults: initial window 10 segments (RFC 6928), net.ipv4.tcp_slow_start_after_idle = 1 (RFC 5681 §4.1), CUBIC; a long-lived, warm connection",
    },
];

impl TransportPreset {
    pub fn find(name: &str) -> Option<&'static TransportPreset> {
        TRANSPORT_PRESETS.iter().find(|p| p.name == name)
    }

    pub fn names() -> Vec<&'static str> {
        TRANSPORT_PRESETS.iter().map(|p| p.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_sourced() {
        for p in TRANSPORT_PRESETS {
            assert!(!p.source.is_empty(), "{}", p.name);
        }
        assert_eq!(
            (TransportPreset::find("quic").unwrap().settings)(),
            Quic::default()
        );
        let tcp = (TransportPreset::find("tcp-linux").unwrap().settings)();
        assert_eq!(tcp.slow_start_after_idle, Some(true));
        // The modelled systems set TCP_NODELAY: no preset turns Nagle on.
        for p in TRANSPORT_PRESETS {
            assert_ne!((p.settings)().nagle, Some(true), "{}", p.name);
        }
    }
}
