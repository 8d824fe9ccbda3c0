//! quinn endpoint configuration: TLS 1.3 with a per-run self-signed certificate (rcgen),
//! and the transport settings a run uses, recorded in the summary.
//!
//! The certificate is Ed25519 with a fixed serial number, so every handshake has the same
//! size (ECDSA signatures vary by a byte or two), and each endpoint's random numbers are
//! seeded from the scenario: on the virtual clock, two runs with one seed are identical.

use crate::net::congestion::{Factory, NagleFactory, RestartFactory};
#[cfg(doc)]
use crate::net::congestion::{NagleController, NagleState};
use crate::net::params::{Congestion, LinkParams, Queue, Quic, WIRE_OVERHEAD};
use anyhow::Context as _;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// The name the per-run certificate is issued for.
pub const SERVER_NAME: &str = "inferlat.invalid";
/// ALPN of inferlat's wire protocol.
pub const ALPN: &[u8] = b"inferlat/1";

/// QUIC settings that shape latency; recorded in `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct TransportSettings {
    /// quinn's default initial RTT estimate (333 ms) unless set.
    pub initial_rtt_ms: f64,
    pub max_idle_timeout_ms: u64,
    pub keep_alive_ms: u64,
    /// Requests in flight on one connection (one stream each). quinn allocates the state of
    /// every stream it allows up front: 100,000 cost about 40 ms of CPU per handshake, which
    /// showed up in `connect`; 1,024 cost well under a millisecond. A request beyond the limit
    /// waits for a stream, timed from its scheduled start like any other wait.
    pub max_concurrent_bidi_streams: u32,
    pub stream_receive_window: u64,
    pub receive_window: u64,
    pub congestion_controller: &'static str,
    /// The congestion controller's initial window in bytes. The default is quinn's (RFC 9002
    /// with 1200-byte datagrams): min(10 × 1200, max(14,720, 2 × 1200)) = 12,000. A new
    /// connection starts from it, and with `slow_start_after_idle` the window restarts from
    /// it after an idle period.
    pub initial_window: u64,
    /// Each connection starts with the window a long-lived connection has opened on its
    /// path ([`PathShape::warm_window`]) instead of `initial_window`.
    pub warm: bool,
    /// The window restarts from `initial_window` after an idle period longer than TCP's
    /// retransmission timeout (`net::congestion`).
    pub slow_start_after_idle: bool,
    /// Writes through `net::framed::write_nagle` follow Nagle's algorithm: the connection's
    /// controller is a [`NagleController`], whose state [`NagleState::of`] finds.
    pub nagle: bool,
    /// The longest the peer may delay acknowledging a lone packet this side sends, asked
    /// of it with an ACK_FREQUENCY frame (quinn caps it at the larger of the RTT and
    /// 25 ms); none: the peer's own `max_ack_delay` (25 ms for quinn, RFC 9000's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ack_delay_ms: Option<f64>,
}

/// Ethernet's standard MTU: a link's `mtu` above it carries jumbo frames.
pub const ETHERNET_MTU: u32 = 1500;

/// The largest UDP payload an endpoint accepts: a 9,000-byte jumbo frame's, less the 28 B of
/// IPv4 and UDP headers. It is the `max_udp_payload_size` transport parameter an endpoint on
/// a jumbo link announces ([`endpoint_with`]; quinn's default is 1,472 B); it only bounds what
/// path MTU discovery may try, and is encoded in as many bytes as quinn's default, so a
/// handshake is as large.
pub const MAX_UDP_PAYLOAD: u16 = 9000 - WIRE_OVERHEAD as u16;

/// The biggest starting window of a warm connection on a rate-limited path: 64 MiB.
pub const WARM_MAX: u64 = 64 << 20;

/// The window of a warm connection on a path with no rate limit (a co-located run's ideal
/// links, a link without `bandwidth`): there is no bottleneck for a window to fill, so none
/// limits it. Past `u32::MAX` it also turns quinn's pacer off (quinn-proto's
/// `pacing.rs`), which on a path of no delay computes sub-millisecond bursts and, on the
/// virtual clock, woke the connection for every few datagrams without time advancing: a
/// 3.7 MB prefill across a zero-delay pipeline hop did not finish in minutes of wall time.
pub const UNLIMITED_WINDOW: u64 = 1 << 33;

/// What a connection's sending direction crosses, for the window a long-lived connection
/// would have opened on it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathShape {
    /// The sending direction's rate in bit/s (a trace's mean rate); `None` is unlimited.
    pub rate: Option<f64>,
    /// Both directions' one-way delays.
    pub rtt: Duration,
    /// The sending direction's tail-drop queue in bytes (a packet queue counts 1500 B a
    /// packet); none without a rate.
    pub queue_bytes: u64,
    /// The sending direction's `mtu` (the largest IP packet), if it sets one.
    pub mtu: Option<u32>,
}

impl PathShape {
    /// The path of a connection sending on `out` and hearing back on `back`.
    pub fn new(out: &LinkParams, back: Option<&LinkParams>) -> Self {
        let own = match (&out.trace, out.bandwidth) {
            (Some(t), _) => Some(t.mean_rate()),
            (None, b) => b,
        };
        let bytes = |q: Queue| match q {
            Queue::Bytes(b) => b,
            Queue::Packets(n) => u64::from(n) * 1500,
        };
        // A shared port slower than the link is the path's bottleneck (as if the
        // connection had the port to itself), and its queue the bottleneck's queue.
        let (rate, queue_bytes) = match (own, &out.port) {
            (Some(r), Some(p)) if p.rate < r => (Some(p.rate), bytes(p.queue)),
            (None, Some(p)) => (Some(p.rate), bytes(p.queue)),
            (Some(r), _) => (Some(r), bytes(out.queue)),
            (None, None) => (None, 0),
        };
        PathShape {
            rate,
            rtt: out.delay + back.map_or(out.delay, |b| b.delay),
            queue_bytes,
            mtu: out.mtu,
        }
    }

    /// The UDP payload quinn's path MTU discovery may grow to on this path: on a link of
    /// jumbo frames (an `mtu` above Ethernet's 1500 B, as inside a data centre), the
    /// link's MTU less the 28 B of IPv4 and UDP headers; otherwise `None`, quinn's default
    /// bound (1,452 B, a 1,500 B path under IPv6 headers), as on any internet path.
    pub fn jumbo_payload(&self) -> Option<u16> {
        self.mtu.filter(|&m| m > ETHERNET_MTU).map(|m| {
            m.saturating_sub(WIRE_OVERHEAD)
                .min(u32::from(MAX_UDP_PAYLOAD)) as u16
        })
    }

    /// The congestion window of a long-lived connection on this path that has carried
    /// bulk data without loss: one bandwidth-delay product plus the bottleneck's queue
    /// (what CUBIC or NewReno grow to before the queue overflows), at most [`WARM_MAX`];
    /// [`UNLIMITED_WINDOW`] on a path without a rate limit.
    pub fn warm_window(&self) -> u64 {
        match self.rate {
            None => UNLIMITED_WINDOW,
            Some(bps) => {
                let bdp = bps / 8.0 * self.rtt.as_secs_f64();
                ((bdp.ceil() as u64).saturating_add(self.queue_bytes)).min(WARM_MAX)
            }
        }
    }
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            initial_rtt_ms: 333.0,
            max_idle_timeout_ms: crate::net::params::DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
            keep_alive_ms: 5_000,
            max_concurrent_bidi_streams: 1_024,
            stream_receive_window: 1_250_000,
            receive_window: u32::MAX as u64,
            congestion_controller: "cubic",
            initial_window: 12_000,
            warm: true,
            slow_start_after_idle: false,
            nagle: false,
            max_ack_delay_ms: None,
        }
    }
}

impl TransportSettings {
    /// The defaults with what a scenario's `[quic]` sets.
    pub fn with(mut self, q: &Quic) -> Self {
        if let Some(d) = q.initial_rtt {
            self.initial_rtt_ms = d.as_secs_f64() * 1e3;
        }
        if let Some(w) = q.initial_window {
            self.initial_window = w;
        }
        if let Some(w) = q.stream_receive_window {
            self.stream_receive_window = w;
        }
        if let Some(w) = q.receive_window {
            self.receive_window = w;
        }
        if let Some(d) = q.idle_timeout {
            self.max_idle_timeout_ms = d.as_millis() as u64;
        }
        if let Some(d) = q.keep_alive {
            self.keep_alive_ms = d.as_millis() as u64;
        }
        if let Some(c) = q.congestion {
            self.congestion_controller = c.name();
        }
        if let Some(w) = q.warm {
            self.warm = w;
        }
        if let Some(r) = q.slow_start_after_idle {
            self.slow_start_after_idle = r;
        }
        if let Some(n) = q.nagle {
            self.nagle = n;
        }
        if let Some(d) = q.max_ack_delay {
            self.max_ack_delay_ms = Some(d.as_secs_f64() * 1e3);
        }
        self
    }

    /// These settings with what a link's `transport` sets over them, or else what the
    /// sending node's does (`node`), if either sets any.
    pub fn for_link(&self, link: Option<&LinkParams>, node: Option<&Quic>) -> Self {
        match link.and_then(|l| l.transport.as_deref()).or(node) {
            Some(q) => self.clone().with(q),
            None => self.clone(),
        }
    }

    /// The window a connection on `path` starts with.
    pub fn start_window(&self, path: Option<&PathShape>) -> u64 {
        match path {
            Some(p) if self.warm => p.warm_window().max(self.initial_window),
            _ => self.initial_window,
        }
    }

    /// A congestion controller of the configured kind starting at `window` bytes.
    fn controller(&self, window: u64) -> Factory {
        match Congestion::parse(self.congestion_controller) {
            Some(Congestion::NewReno) => {
                let mut c = quinn::congestion::NewRenoConfig::default();
                c.initial_window(window);
                Arc::new(c)
            }
            Some(Congestion::Bbr) => {
                let mut c = quinn::congestion::BbrConfig::default();
                c.initial_window(window);
                Arc::new(c)
            }
            _ => {
                let mut c = quinn::congestion::CubicConfig::default();
                c.initial_window(window);
                Arc::new(c)
            }
        }
    }

    /// The settings of a connection whose path is unknown: it starts from
    /// `initial_window`, as a new connection.
    pub fn config(&self) -> anyhow::Result<quinn::TransportConfig> {
        self.config_for(None)
    }

    /// The settings of a connection whose sending direction crosses `path` (warm when
    /// `warm` is set and the path is known).
    pub fn config_for(&self, path: Option<&PathShape>) -> anyhow::Result<quinn::TransportConfig> {
        let mut t = quinn::TransportConfig::default();
        t.initial_rtt(Duration::from_secs_f64(self.initial_rtt_ms / 1e3));
        t.max_idle_timeout(Some(
            Duration::from_millis(self.max_idle_timeout_ms)
                .try_into()
                .context("idle timeout")?,
        ));
        t.keep_alive_interval(Some(Duration::from_millis(self.keep_alive_ms)));
        t.max_concurrent_bidi_streams(self.max_concurrent_bidi_streams.into());
        t.max_concurrent_uni_streams(0u32.into());
        t.stream_receive_window(
            quinn::VarInt::from_u64(self.stream_receive_window).context("stream receive window")?,
        );
        t.receive_window(quinn::VarInt::from_u64(self.receive_window).context("receive window")?);
        let start = self.controller(self.start_window(path));
        let cc: Factory = if self.slow_start_after_idle {
            Arc::new(RestartFactory {
                start,
                restart: self.controller(self.initial_window),
            })
        } else {
            start
        };
        let cc: Factory = match self.nagle {
            true => Arc::new(NagleFactory { inner: cc }),
            false => cc,
        };
        t.congestion_controller_factory(cc);
        if let Some(ms) = self.max_ack_delay_ms {
            let mut ack = quinn::AckFrequencyConfig::default();
            // Acknowledge every second ack-eliciting packet at once (as without the
            // extension, and as Linux acknowledges every second full segment), and a packet
            // out of order at once (RFC 9000's rule; the extension's default waits for 2).
            ack.ack_eliciting_threshold(1u32.into())
                .reordering_threshold(1u32.into())
                .max_ack_delay(Some(Duration::from_secs_f64(ms / 1e3)));
            t.ack_frequency_config(Some(ack));
        }
        if let Some(bound) = path.and_then(PathShape::jumbo_payload) {
            let mut mtud = quinn::MtuDiscoveryConfig::default();
            mtud.upper_bound(bound);
            t.mtu_discovery_config(Some(mtud));
        }
        Ok(t)
    }
}

/// Server and client configurations that trust one fresh self-signed certificate.
pub struct Tls {
    pub server: quinn::ServerConfig,
    pub client: quinn::ClientConfig,
}

impl Tls {
    /// The client configuration with other transport settings (one connection's).
    pub fn client_with(&self, transport: quinn::TransportConfig) -> quinn::ClientConfig {
        let mut c = self.client.clone();
        c.transport_config(Arc::new(transport));
        c
    }

    /// The server configuration with other transport settings (one connection's).
    pub fn server_with(&self, transport: quinn::TransportConfig) -> quinn::ServerConfig {
        let mut s = self.server.clone();
        s.transport_config(Arc::new(transport));
        s
    }
}

/// Makes a certificate for this run and the configs that use it.
pub fn tls(settings: &TransportSettings) -> anyhow::Result<Tls> {
    // AES-128-GCM first: TLS 1.3's mandatory suite (RFC 8446 §9.1) and the cipher of QUIC's
    // Initial packets (RFC 9001 §5.2). rustls' ring provider lists AES-256-GCM first, whose
    // 14 rounds against 10 made AES about a tenth of the virtual clock's wall time at swarm
    // scale (docs/links.md, "The cipher suite and the swarm's keep-alives"). The tag is 16
    // bytes under either, so every datagram keeps its size and the emulated wire is unchanged.
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let provider = Arc::new(provider);
    let signing_key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).context("generating the run's key")?;
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
        .context("certificate parameters")?;
    params.serial_number = Some(rcgen::SerialNumber::from(1u64));
    let certified = params
        .self_signed(&signing_key)
        .context("generating the run's certificate")?;
    let cert = rustls::pki_types::CertificateDer::from(certified.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let transport = Arc::new(settings.config()?);

    let mut server_crypto = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .context("server certificate")?;
    server_crypto.alpn_protocols = vec![ALPN.to_vec()];
    let mut server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_crypto)?));
    server.transport_config(transport.clone());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).context("trusting the run's certificate")?;
    let mut client_crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_crypto.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_crypto)?));
    client.transport_config(transport);
    Ok(Tls { server, client })
}

/// A quinn endpoint on an emulated socket, driven by tokio, its random numbers seeded.
pub fn endpoint(
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    server: Option<quinn::ServerConfig>,
    seed: u64,
) -> anyhow::Result<quinn::Endpoint> {
    endpoint_with(socket, server, seed, false)
}

/// [`endpoint`], announcing with `jumbo` that it accepts [`MAX_UDP_PAYLOAD`]-byte datagrams
/// (for a node on a link of jumbo frames). Only such endpoints announce it: quinn sizes each
/// endpoint's receive buffers by it (32 datagrams' worth), which every endpoint of a swarm
/// would otherwise hold for nothing. Whether it also costs time per datagram was not
/// settled: petals-swarm-14 on the virtual clock took 9.8 to 14.3 s of wall time across
/// runs of either setting, the machine's own spread.
pub fn endpoint_with(
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    server: Option<quinn::ServerConfig>,
    seed: u64,
    jumbo: bool,
) -> anyhow::Result<quinn::Endpoint> {
    let mut config = quinn::EndpointConfig::default();
    let mut rng_seed = [0u8; 32];
    rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
    rng_seed[8..16].copy_from_slice(b"inferlat");
    config.rng_seed(Some(rng_seed));
    if jumbo {
        config
            .max_udp_payload_size(MAX_UDP_PAYLOAD)
            .context("the largest UDP payload")?;
    }
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, Arc::new(quinn::TokioRuntime))
        .context("creating a QUIC endpoint")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(mtu: Option<u32>) -> PathShape {
        PathShape {
            rate: Some(10e9),
            rtt: Duration::from_millis(1),
            queue_bytes: 0,
            mtu,
        }
    }

    #[test]
    fn only_jumbo_links_raise_the_discovery_bound() {
        assert_eq!(path(None).jumbo_payload(), None);
        assert_eq!(path(Some(1280)).jumbo_payload(), None);
        assert_eq!(path(Some(ETHERNET_MTU)).jumbo_payload(), None);
        assert_eq!(path(Some(1501)).jumbo_payload(), Some(1473));
        assert_eq!(path(Some(4000)).jumbo_payload(), Some(3972));
        assert_eq!(path(Some(9000)).jumbo_payload(), Some(MAX_UDP_PAYLOAD));
        // Past a 9,000-byte frame: what every endpoint accepts.
        assert_eq!(path(Some(65_535)).jumbo_payload(), Some(MAX_UDP_PAYLOAD));
        assert_eq!(MAX_UDP_PAYLOAD, 8972);
    }
}
