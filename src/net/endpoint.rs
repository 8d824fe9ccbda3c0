//! quinn endpoint configuration: TLS 1.3 with a per-run self-signed certificate (rcgen),
//! and the transport settings a run uses, recorded in the summary.

use super::socket::MemSocket;
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
    pub max_concurrent_bidi_streams: u32,
    pub stream_receive_window: u64,
    pub receive_window: u64,
    pub congestion_controller: &'static str,
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            initial_rtt_ms: 333.0,
            max_idle_timeout_ms: 60_000,
            keep_alive_ms: 5_000,
            max_concurrent_bidi_streams: 100_000,
            stream_receive_window: 1_250_000,
            receive_window: u32::MAX as u64,
            congestion_controller: "cubic",
        }
    }
}

impl TransportSettings {
    pub fn config(&self) -> anyhow::Result<quinn::TransportConfig> {
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
        Ok(t)
    }
}

/// Server and client configurations that trust one fresh self-signed certificate.
pub struct Tls {
    pub server: quinn::ServerConfig,
    pub client: quinn::ClientConfig,
}

/// Makes a certificate for this run and the configs that use it.
pub fn tls(settings: &TransportSettings) -> anyhow::Result<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .context("generating the run's certificate")?;
    let cert = rustls::pki_types::CertificateDer::from(certified.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
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

/// A quinn endpoint on an in-memory socket, driven by tokio.
pub fn endpoint(
    socket: Arc<MemSocket>,
    server: Option<quinn::ServerConfig>,
) -> anyhow::Result<quinn::Endpoint> {
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .context("creating a QUIC endpoint")
}
