//! Shared ports (`[[port]]`, `net::port`) and a link's own transport (`transport` on a
//! `[[link]]`): real QUIC on the in-memory network, on the virtual clock, so each
//! transfer's time is the links', the port's and QUIC's alone.

#[path = "support/quic.rs"]
mod quic;
use inferlat::clock::ClockKind;
use inferlat::net::endpoint::{self, PathShape, SERVER_NAME, TransportSettings};
use inferlat::net::link::Link;
use inferlat::net::port::{Port, PortDef};
use inferlat::net::socket::Network;
use inferlat::scenario::{LinkParams, Queue};
use quic::serve;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Sends `bytes` on one stream and waits for the answer.
async fn upload(conn: &quinn::Connection, bytes: usize) {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let chunk = vec![0x5a; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(chunk.len());
        send.write_all(&chunk[..k]).await.unwrap();
        left -= k;
    }
    send.finish().unwrap();
    let answer = recv.read_to_end(8).await.unwrap();
    assert_eq!(u64::from_le_bytes(answer.try_into().unwrap()), bytes as u64);
}

const RATE: f64 = 1e9;
const BYTES: usize = 4_000_000;

/// A 1 Gbit/s LAN direction (0.25 ms one way), on `port` when given.
fn lan(port: Option<&Arc<PortDef>>) -> LinkParams {
    LinkParams {
        delay: Duration::from_micros(250),
        bandwidth: Some(RATE),
        queue: Queue::Packets(1000),
        port: port.cloned(),
        ..LinkParams::ideal()
    }
}

/// Three workers each upload `BYTES` to one root at the same moment, over warm QUIC
/// connections; the root's inbound directions share one 1 Gbit/s port when `shared`.
/// Returns the time until the last upload is answered and the datagrams dropped.
fn three_to_one(shared: bool) -> (Duration, u64) {
    let (rt, clock) = ClockKind::Virtual.runtime().unwrap();
    rt.block_on(async move {
        let net = Network::new(clock.clone());
        let root: SocketAddr = "10.2.0.1:4433".parse().unwrap();
        let workers: Vec<SocketAddr> = (2..5)
            .map(|i| format!("10.2.0.{i}:4433").parse().unwrap())
            .collect();
        let def = Arc::new(PortDef {
            name: "switch".into(),
            rate: RATE,
            queue: Queue::Packets(1000),
        });
        let port = Port::shared(def.clone());
        for (i, &w) in workers.iter().enumerate() {
            let mut up = Link::new(lan(shared.then_some(&def)), 10 + i as u64);
            if shared {
                up = up.with_port(port.clone());
            }
            net.add_link(w, root, up);
            net.add_link(root, w, Link::new(lan(None), 20 + i as u64));
        }
        let settings = TransportSettings::default();
        let tls = endpoint::tls(&settings).unwrap();
        // The root answers on its own links; each worker's window is a warm one of its path.
        let server =
            endpoint::endpoint(net.bind(root).unwrap(), Some(tls.server.clone()), 1).unwrap();
        serve(server);
        let mut conns = Vec::new();
        for (i, &w) in workers.iter().enumerate() {
            let ep = endpoint::endpoint(net.bind(w).unwrap(), None, 2 + i as u64).unwrap();
            let out = lan(shared.then_some(&def));
            let path = PathShape::new(&out, Some(&lan(None)));
            let cfg = tls.client_with(settings.config_for(Some(&path)).unwrap());
            let conn = ep
                .connect_with(cfg, root, SERVER_NAME)
                .unwrap()
                .await
                .unwrap();
            conns.push((ep, conn));
        }
        let t0 = clock.now();
        let uploads = conns.iter().map(|(_, c)| upload(c, BYTES));
        futures_util::future::join_all(uploads).await;
        let took = clock.now() - t0;
        let dropped = workers
            .iter()
            .map(|&w| net.link_stats(w, root).unwrap().dropped)
            .sum();
        (took, dropped)
    })
}

/// What it shows: three uploads into one root through a shared 1 Gbit/s port take about
/// three times one upload's serialization (3·X/rate), and through three independent
/// 1 Gbit/s links about one (X/rate), as on a gigabit switch against a full mesh. The
/// physical bounds are hard (never faster than the port or the link can carry the bytes);
/// the upper bounds leave room for QUIC's headers (about 3 %) and the handshake-free warm
/// start's first round trip.
#[test]
fn three_workers_into_one_root_queue_at_a_shared_port() {
    let x = BYTES as f64 * 8.0 / RATE;
    let (alone, alone_dropped) = three_to_one(false);
    let (shared, shared_dropped) = three_to_one(true);
    eprintln!(
        "X/rate {:.1} ms: independent links {:.1} ms ({alone_dropped} dropped), shared port {:.1} ms ({shared_dropped} dropped)",
        x * 1e3,
        alone.as_secs_f64() * 1e3,
        shared.as_secs_f64() * 1e3
    );
    let (alone, shared) = (alone.as_secs_f64(), shared.as_secs_f64());
    assert!(alone >= x, "independent: {alone} s beats X/rate {x} s");
    assert!(alone <= 1.15 * x, "independent: {alone} s, X/rate {x} s");
    assert!(
        shared >= 3.0 * x,
        "shared: {shared} s beats 3·X/rate {} s",
        3.0 * x
    );
    assert!(
        shared <= 1.15 * 3.0 * x,
        "shared: {shared} s, 3·X/rate {} s",
        3.0 * x
    );
}

/// What it shows: a scenario's `[[port]]` reaches the plan and the harness. The floor
/// counts an unlimited link on a 10 Mbit/s port as a 10 Mbit/s hop (and exactly that: the
/// same scenario with the rate on the link has the same floor); a virtual-clock run through
/// the port is never faster than that floor, and a declared port no link names changes
/// nothing and is warned about.
#[test]
fn a_scenario_port_sets_the_floor_and_the_run() {
    use inferlat::harness::{self, Options};
    use inferlat::plan::{self, schedule::Shape};
    use inferlat::record::Metric;
    use inferlat::scenario::testing;
    let port = "[[port]]\nname = \"nic\"\nrate = \"10Mbit/s\"\n";
    let on_port = testing::direct("p", "ideal", "rtt = \"20ms\"\nport = \"nic\"").raw(port);
    let on_link = testing::direct("p", "ideal", "rtt = \"20ms\"\nbandwidth = \"10Mbit/s\"");
    let unused = testing::direct("p", "ideal", "rtt = \"20ms\"").raw(port);
    let plain = testing::direct("p", "ideal", "rtt = \"20ms\"");
    let shape = Shape {
        prompt: 512,
        output: 4,
    };
    let floor = |t: &testing::ScenarioText| plan::plan(&t.parse().unwrap()).unwrap().floor(shape);
    assert_eq!(floor(&on_port), floor(&on_link));
    assert_eq!(floor(&unused), floor(&plain));
    let warnings = plan::plan(&unused.parse().unwrap()).unwrap().warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("the port \"nic\" is declared")),
        "no warning for an unused port: {warnings:?}"
    );
    assert!(
        plan::plan(&on_port.parse().unwrap())
            .unwrap()
            .warnings
            .is_empty()
    );
    assert!(floor(&on_port).ttft > floor(&plain).ttft);

    let s = on_port.parse().unwrap();
    let p = plan::plan(&s).unwrap();
    let m = harness::run_to_end(&s, &p, &Options::default(), ClockKind::Virtual).unwrap();
    let rec = &m.topology.unwrap().record;
    let ttft_min = rec.histogram(Metric::Ttft).min();
    assert!(
        Duration::from_nanos(ttft_min) >= p.floor(p.typical).ttft,
        "ttft {ttft_min} ns beats the floor"
    );
    assert!(
        m.links.iter().any(|l| l.params.port.is_some()),
        "the link reports name the port"
    );
}

/// TTFT p50 of a direct scenario on a 100 ms RTT, 100 Mbit/s link with `link_extra`
/// (one request a second: each one after 1 s of silence), and the request's bytes on the
/// way up.
fn ttft_after_idle(client: &str, link_extra: &str, prompt: u32) -> (f64, u64) {
    use inferlat::harness::{self, Options};
    use inferlat::plan;
    use inferlat::record::Metric;
    use inferlat::scenario::testing::ScenarioText;
    let s = ScenarioText::new("tcp")
        .node("client", "client", client)
        .worker("gpu", "ideal", "")
        .link(
            "client",
            "gpu",
            &format!("rtt = \"100ms\"\nbandwidth = \"100Mbit/s\"\n{link_extra}"),
        )
        .workload(&format!(
        "prompt_tokens = {prompt}\noutput_tokens = 2\narrival = {{ kind = \"constant\", rate = 1.0 }}\nrequests = 6\nwarmup_requests = 1"
    ))
    .parse()
    .unwrap();
    let p = plan::plan(&s).unwrap();
    let up = p
        .hops
        .iter()
        .find(|h| h.from == "client")
        .unwrap()
        .prefill_bytes;
    let m = harness::run_to_end(&s, &p, &Options::default(), ClockKind::Virtual).unwrap();
    let ttft = m
        .topology
        .unwrap()
        .record
        .histogram(Metric::Ttft)
        .value_at_quantile(0.5);
    (ttft as f64 / 1e9, up)
}

/// What it shows: `transport = "tcp-linux"` on a link (or on the node that sends on it,
/// unless the link states its own) makes the connection that sends on
/// it behave as Linux TCP does after an idle period longer than its RTO: the window
/// restarts from ten segments (14,480 B), so a request of two to three windows needs one
/// more round trip than on the same link with inferlat's warm QUIC default, and a request
/// that fits one window needs none. The expected counts are TCP's (RFC 5681 §4.1,
/// RFC 6928), not measured from the model.
#[test]
fn a_link_stating_tcp_linux_pays_slow_start_after_idle_per_request() {
    let rtt = 0.1;
    let tcp = "transport = \"tcp-linux\"";
    let quic = "transport = \"quic\"";
    // (what the client node states, what the link states, prompt, TCP's extra round trips)
    for (node, link, prompt, extra_trips) in [
        ("", tcp, 256u32, 0.0),
        ("", tcp, 6144, 1.0),
        // The sending node's statement covers its links ...
        (tcp, "", 6144, 1.0),
        // ... unless the link states its own.
        (tcp, quic, 6144, 0.0),
    ] {
        let (warm, up) = ttft_after_idle("", "", prompt);
        let (stated, _) = ttft_after_idle(node, link, prompt);
        let trips = (stated - warm) / rtt;
        eprintln!(
            "prompt {prompt} ({up} B up), node [{node}] link [{link}]: ttft warm quic {:.1} ms, stated {:.1} ms: {trips:.2} extra RTT",
            warm * 1e3,
            stated * 1e3
        );
        assert!(
            (trips - extra_trips).abs() < 0.35,
            "prompt {prompt} ({up} B), node [{node}] link [{link}]: {trips:.2} extra round trips, TCP needs {extra_trips}"
        );
    }
}

/// Seconds to upload `bytes` on one stream over a warm connection on a 1 Gbit/s link of
/// 100 ms RTT (a deep queue: no loss), with `stream_window` of per-stream credit.
fn long_upload(bytes: usize, stream_window: u64) -> f64 {
    let (rt, clock) = ClockKind::Virtual.runtime().unwrap();
    rt.block_on(async move {
        let net = Network::new(clock.clone());
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.4.0.1:4433".parse().unwrap(),
            "10.4.0.2:4433".parse().unwrap(),
        );
        let path = LinkParams {
            delay: Duration::from_millis(50),
            bandwidth: Some(1e9),
            queue: Queue::Bytes(20_000_000),
            ..LinkParams::ideal()
        };
        net.add_link(a, b, Link::new(path.clone(), 1));
        net.add_link(b, a, Link::new(path.clone(), 2));
        let settings = TransportSettings {
            stream_receive_window: stream_window,
            initial_rtt_ms: 100.0,
            ..TransportSettings::default()
        };
        let shape = PathShape::new(&path, Some(&path));
        let tls = endpoint::tls(&settings).unwrap();
        let server_cfg = tls.server_with(settings.config_for(Some(&shape)).unwrap());
        let server = endpoint::endpoint(net.bind(b).unwrap(), Some(server_cfg), 3).unwrap();
        serve(server);
        let ep = endpoint::endpoint(net.bind(a).unwrap(), None, 4).unwrap();
        let cfg = tls.client_with(settings.config_for(Some(&shape)).unwrap());
        let conn = ep.connect_with(cfg, b, SERVER_NAME).unwrap().await.unwrap();
        let t0 = clock.now();
        upload(&conn, bytes).await;
        (clock.now() - t0).as_secs_f64()
    })
}

/// What it shows: quinn's default stream receive window (1.25 MB) caps one stream at one
/// window per round trip, so a long prefill's 12.5 MB of activations across a 1 Gbit/s,
/// 100 ms hop takes about 10 RTTs (1 s) where the link could carry it in 0.1 s plus the
/// RTT, as it does with a 16 MiB window (what a long-lived TCP connection's autotuned
/// buffer allows). The bound is arithmetic (bytes / window × RTT), not fitted.
#[test]
fn the_default_stream_window_caps_a_long_prefill_at_one_window_per_round_trip() {
    let bytes = 12_500_000;
    let capped = long_upload(bytes, 1_250_000);
    let open = long_upload(bytes, 16 << 20);
    eprintln!(
        "12.5 MB over 1 Gbit/s, 100 ms RTT: 1.25 MB window {capped:.3} s, 16 MiB window {open:.3} s"
    );
    let window_bound = bytes as f64 / 1_250_000.0 * 0.1;
    assert!(capped >= 0.9 * window_bound, "1.25 MB window: {capped} s");
    assert!(open <= 0.5 * window_bound, "16 MiB window: {open} s");
}
