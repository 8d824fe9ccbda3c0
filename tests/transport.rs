//! Real QUIC over emulated links: a bulk transfer through a rate-limited link, a queue that
//! overflows, links that change during a run, and the real-UDP driver on loopback.
//!
//! The in-memory tests run on the virtual clock: deterministic, and the transfer's
//! timing is the link's and QUIC's alone, not this machine's.

#[path = "support/quic.rs"]
mod quic;
use inferlat::clock::{Clock, ClockKind};
use inferlat::harness::{self, Options};
use inferlat::net::endpoint::{self, PathShape, SERVER_NAME, TransportSettings};
use inferlat::net::link::Link;
use inferlat::net::socket::{Network, UdpLinkSocket};
use inferlat::plan;
use inferlat::record::Metric;
use inferlat::scenario::{self, LinkParams, ProfileLibrary, Queue, testing};
use quic::serve;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Sends `bytes` on one stream and waits for the answer; returns how long it took.
async fn upload(conn: &quinn::Connection, clock: &Clock, bytes: usize) -> Duration {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let t0 = clock.now();
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
    clock.now() - t0
}

struct Pair {
    net: Network,
    client: quinn::Endpoint,
    a: SocketAddr,
    b: SocketAddr,
}

/// A client and an echo server on the in-memory network, with `up` and `down` links.
fn pair(clock: &Clock, up: LinkParams, down: LinkParams) -> Pair {
    let net = Network::new(clock.clone());
    let (a, b): (SocketAddr, SocketAddr) = (
        "10.1.0.1:4433".parse().unwrap(),
        "10.1.0.2:4433".parse().unwrap(),
    );
    net.add_link(a, b, Link::new(up, 1));
    net.add_link(b, a, Link::new(down, 2));
    let settings = TransportSettings {
        initial_rtt_ms: 20.0,
        ..TransportSettings::default()
    };
    let tls = endpoint::tls(&settings).unwrap();
    let server = endpoint::endpoint(net.bind(b).unwrap(), Some(tls.server), 3).unwrap();
    let mut client = endpoint::endpoint(net.bind(a).unwrap(), None, 4).unwrap();
    client.set_default_client_config(tls.client);
    serve(server);
    Pair { net, client, a, b }
}

fn link(delay_ms: u64, bandwidth: Option<f64>, queue: Queue) -> LinkParams {
    LinkParams {
        delay: Duration::from_millis(delay_ms),
        bandwidth,
        queue,
        ..LinkParams::ideal()
    }
}

#[test]
fn bulk_transfer_reaches_ninety_percent_of_the_link_rate() {
    let (rt, clock) = ClockKind::Virtual.runtime().unwrap();
    let rate = 20e6;
    // A queue of one bandwidth-delay product: enough that cubic keeps the link busy.
    let bdp = Queue::Bytes((rate / 8.0 * 0.02) as u64 * 2);
    rt.block_on(async {
        let p = pair(&clock, link(10, Some(rate), bdp), link(10, None, bdp));
        let conn = p.client.connect(p.b, SERVER_NAME).unwrap().await.unwrap();
        // Warm the congestion window up, then time a large upload.
        upload(&conn, &clock, 2_000_000).await;
        let bytes = 20_000_000;
        let took = upload(&conn, &clock, bytes).await;
        let goodput = bytes as f64 * 8.0 / took.as_secs_f64();
        assert!(
            goodput >= 0.9 * rate,
            "goodput {:.2} Mbit/s of {:.0} Mbit/s",
            goodput / 1e6,
            rate / 1e6
        );
        eprintln!("goodput {:.3} Mbit/s in {took:?}", goodput / 1e6);
        // And never faster than the link.
        assert!(goodput <= rate, "goodput {goodput} beats the link");
    });
}

#[test]
fn a_short_queue_drops_what_overflows_and_quic_recovers() {
    let (rt, clock) = ClockKind::Virtual.runtime().unwrap();
    rt.block_on(async {
        let p = pair(
            &clock,
            link(20, Some(10e6), Queue::Packets(10)),
            link(20, None, Queue::Packets(10)),
        );
        let conn = p.client.connect(p.b, SERVER_NAME).unwrap().await.unwrap();
        upload(&conn, &clock, 5_000_000).await;
        let stats = p.net.link_stats(p.a, p.b).unwrap();
        assert!(stats.dropped > 0, "no drops: {stats:?}");
        assert_eq!(
            stats.datagrams,
            stats.delivered + stats.dropped,
            "every datagram is delivered or dropped: {stats:?}"
        );
        let q = conn.stats();
        assert!(q.path.lost_packets > 0, "quinn saw no loss: {:?}", q.path);
    });
}

#[test]
fn a_link_change_shows_in_the_latencies_at_its_time() {
    let text = testing::direct(
        "flap",
        "ideal",
        "rtt = \"20ms\"\n[[link.change]]\nat = \"2s\"\nrtt = \"200ms\"\n[[link.change]]\nat = \"4s\"",
    )
    .top("seed = 1")
    .workload(
        "prompt_tokens = 16\noutput_tokens = 1\narrival = { kind = \"constant\", rate = 10 }\nduration = \"6s\"\nwarmup_requests = 2",
    )
    .build();
    let s = scenario::parse(Path::new("flap.toml"), &text, &ProfileLibrary::built_in()).unwrap();
    let plan = plan::plan(&s).unwrap();
    let m = harness::run_to_end(&s, &plan, &Options::default(), ClockKind::Virtual).unwrap();
    let r = &m.topology.as_ref().unwrap().record;
    assert_eq!(r.failed, 0, "{:?}", r.errors);
    let e2e = r.histogram(Metric::E2e);
    let ms = |v: u64| v as f64 / 1e6;
    // A third of the requests cross the slow route, the rest the fast one.
    assert!(
        (19.9..20.5).contains(&ms(e2e.min())),
        "min {}",
        ms(e2e.min())
    );
    assert!(ms(e2e.max()) >= 199.9, "max {}", ms(e2e.max()));
    let slow = e2e
        .iter_recorded()
        .filter(|v| ms(v.value_iterated_to()) > 150.0)
        .map(|v| v.count_at_value())
        .sum::<u64>();
    let share = slow as f64 / e2e.len() as f64;
    assert!(
        (0.25..0.42).contains(&share),
        "share on the slow route {share}"
    );
    let applied: u64 = m.links.iter().map(|l| l.stats.changes_applied).sum();
    assert_eq!(applied, 4, "two changes on each direction");
}

#[test]
fn real_udp_driver_adds_its_delay_on_loopback() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = Clock::real().unwrap();
    rt.block_on(async {
        let one_way = |ms: u64| Link::new(link(ms, None, Queue::Packets(1000)), 9);
        let sa = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sb = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = sb.local_addr().unwrap();
        // Each side delays its own egress by 20 ms: 40 ms of RTT on top of loopback.
        let ua = UdpLinkSocket::new(sa, clock.clone(), Some(one_way(20))).unwrap();
        let ub = UdpLinkSocket::new(sb, clock.clone(), Some(one_way(20))).unwrap();
        let settings = TransportSettings {
            initial_rtt_ms: 40.0,
            ..TransportSettings::default()
        };
        let tls = endpoint::tls(&settings).unwrap();
        let server = endpoint::endpoint(ub.clone(), Some(tls.server), 1).unwrap();
        let mut client = endpoint::endpoint(ua.clone(), None, 2).unwrap();
        client.set_default_client_config(tls.client);
        serve(server);
        let conn = client.connect(b, SERVER_NAME).unwrap().await.unwrap();
        for _ in 0..5 {
            let took = upload(&conn, &clock, 100).await;
            // Physics: a request and its answer cross both delays.
            assert!(took >= Duration::from_millis(40), "round trip {took:?}");
            assert!(took < Duration::from_millis(400), "round trip {took:?}");
        }
        let rtt = conn.stats().path.min_rtt;
        assert!(rtt >= Duration::from_millis(40), "quinn's min RTT {rtt:?}");
        let up = ua.link_stats(None).unwrap();
        assert!(up.datagrams > 0 && up.delivered == up.datagrams, "{up:?}");
        assert_eq!(ua.refused(), 0);
        assert!(ua.lateness().histogram().len() >= up.delivered);
    });
}

#[test]
fn gso_batches_meet_the_link_one_datagram_at_a_time() {
    use quinn::AsyncUdpSocket;
    use quinn::udp::{RecvMeta, Transmit};
    let (rt, clock) = ClockKind::Virtual.runtime().unwrap();
    rt.block_on(async {
        let net = Network::new(clock.clone());
        let (a, b): (SocketAddr, SocketAddr) =
            ("10.2.0.1:1".parse().unwrap(), "10.2.0.2:1".parse().unwrap());
        // 8 Mbit/s: each 1000-byte datagram (1028 on the wire) takes 1.028 ms.
        net.add_link(a, b, Link::new(link(5, Some(8e6), Queue::Packets(1000)), 1));
        let (sa, sb) = (net.bind(a).unwrap(), net.bind(b).unwrap());
        let batch = vec![1u8; 10 * 1000];
        sa.try_send(&Transmit {
            destination: b,
            ecn: None,
            contents: &batch,
            segment_size: Some(1000),
            src_ip: None,
        })
        .unwrap();
        let stats = net.link_stats(a, b).unwrap();
        assert_eq!((stats.datagrams, stats.bytes), (10, 10_000));
        let t0 = clock.now();
        let mut arrivals = Vec::new();
        let mut buf = [0u8; 2000];
        while arrivals.len() < 10 {
            let mut bufs = [std::io::IoSliceMut::new(&mut buf)];
            let mut meta = [RecvMeta::default()];
            let n = std::future::poll_fn(|cx| sb.poll_recv(cx, &mut bufs, &mut meta))
                .await
                .unwrap();
            assert_eq!((n, meta[0].len), (1, 1000));
            arrivals.push(clock.now() - t0);
        }
        // Serialized one after another, not as one 10 kB blob.
        for (i, at) in arrivals.iter().enumerate() {
            let want = Duration::from_millis(5) + Duration::from_micros(1028 * (i as u64 + 1));
            assert_eq!(*at, want, "datagram {i}");
        }
    });
}

// Round trips per message: a decode step's hidden state (BLOOM-176B: 14,336 × 2 B =
// 28,672 B) sent each way on a 100 ms RTT, 100 Mbit/s path, with idle time between
// messages as between a pipeline's decode steps. The physics: a message that fits the
// congestion window crosses in one flight (half an RTT plus its serialization), so a
// message and its answer take one RTT; a message larger than the window takes one more
// RTT per extra flight.

/// Bytes of one decode message.
const MESSAGE: usize = 28_672;

/// A QUIC server that answers each stream with as many bytes as it read.
fn serve_echo(server: quinn::Endpoint) {
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let Ok(got) = recv.read_to_end(usize::MAX).await else {
                            return;
                        };
                        let _ = send.write_all(&vec![0xa5; got.len()]).await;
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });
}

/// A client connected to an echo server across `up` and `down`, each side's transport
/// configured for the direction it sends on (as the harness does).
async fn connected(
    clock: &Clock,
    up: LinkParams,
    down: LinkParams,
    settings: &TransportSettings,
) -> (quinn::Endpoint, quinn::Connection) {
    let net = Network::new(clock.clone());
    let (a, b): (SocketAddr, SocketAddr) = (
        "10.3.0.1:4433".parse().unwrap(),
        "10.3.0.2:4433".parse().unwrap(),
    );
    net.add_link(a, b, Link::new(up.clone(), 1));
    net.add_link(b, a, Link::new(down.clone(), 2));
    let tls = endpoint::tls(settings).unwrap();
    let server_side = settings
        .config_for(Some(&PathShape::new(&down, Some(&up))))
        .unwrap();
    let client_side = settings
        .config_for(Some(&PathShape::new(&up, Some(&down))))
        .unwrap();
    let server =
        endpoint::endpoint(net.bind(b).unwrap(), Some(tls.server_with(server_side)), 3).unwrap();
    let client = endpoint::endpoint(net.bind(a).unwrap(), None, 4).unwrap();
    serve_echo(server);
    let conn = client
        .connect_with(tls.client_with(client_side), b, SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    (client, conn)
}

/// Sends `bytes` and waits for as many back; returns the round trip.
async fn exchange(conn: &quinn::Connection, clock: &Clock, bytes: usize) -> Duration {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let t0 = clock.now();
    send.write_all(&vec![0x5a; bytes]).await.unwrap();
    send.finish().unwrap();
    let answer = recv.read_to_end(2 * bytes).await.unwrap();
    assert_eq!(answer.len(), bytes);
    clock.now() - t0
}

/// Round trips of `n` exchanges of one decode message, each after `gap` of silence, in
/// units of the path's RTT.
fn round_trips(settings: TransportSettings, gap: Duration, n: usize) -> Vec<f64> {
    let (rt, clock) = ClockKind::Virtual.runtime().unwrap();
    let rtt = Duration::from_millis(100);
    let path = link(50, Some(100e6), Queue::Bytes(1_500_000));
    rt.block_on(async {
        let (_client, conn) = connected(&clock, path.clone(), path, &settings).await;
        let mut out = Vec::new();
        for _ in 0..n {
            tokio::time::sleep(gap).await;
            let took = exchange(&conn, &clock, MESSAGE).await;
            out.push(took.as_secs_f64() / rtt.as_secs_f64());
        }
        eprintln!("round trips (RTTs): {out:.3?}");
        out
    })
}

#[test]
fn a_warm_connection_carries_a_decode_message_each_way_in_one_round_trip() {
    // 300 ms between messages, as a three-server Petals pipeline leaves each connection
    // between decode steps. Floor: 100 ms of RTT plus two serializations of about 21
    // datagrams of 1,480 wire bytes at 100 Mbit/s (2.5 ms each).
    let trips = round_trips(TransportSettings::default(), Duration::from_millis(300), 8);
    for (i, t) in trips.iter().enumerate() {
        assert!(
            (1.04..1.10).contains(t),
            "exchange {i}: {t:.3} RTT, not one flight each way"
        );
    }
}

#[test]
fn a_cold_connection_needs_a_second_flight_each_way_for_a_message_past_its_window() {
    // A new connection: 12,000 B of initial window carries 8 of the message's 21
    // datagrams; the rest go after the first acknowledgements, an RTT later, in each
    // direction: three RTTs for the exchange.
    let cold = TransportSettings {
        warm: false,
        ..TransportSettings::default()
    };
    let trips = round_trips(cold, Duration::from_millis(300), 1);
    assert!(
        (3.0..3.3).contains(&trips[0]),
        "first exchange on a cold connection: {:.3} RTT",
        trips[0]
    );
}

#[test]
fn slow_start_after_idle_costs_a_round_trip_each_way_after_an_rto_of_silence() {
    // TCP's defaults: a restart window of 10 segments of 1,448 B (RFC 6928) and slow start
    // after idle (RFC 5681 §4.1, Linux's tcp_slow_start_after_idle = 1). Linux's RTO at a
    // steady 100 ms RTT is about 300 ms.
    let tcp = TransportSettings {
        initial_window: 14_480,
        slow_start_after_idle: true,
        ..TransportSettings::default()
    };
    // 500 ms of silence, past the RTO: every message restarts from 14,480 B, which carries
    // 9 of its 21 datagrams, so each direction needs a second flight.
    // (The first exchange follows the handshake, whose last flight quinn never reports
    // as an empty pipe to the controller, so only the later ones restart.) The second
    // flight is paced at 1.25 windows per RTT on quinn's millisecond timer: up to 0.3 RTT.
    let idle = round_trips(tcp.clone(), Duration::from_millis(500), 4);
    for (i, t) in idle.iter().enumerate().skip(1) {
        assert!(
            (3.0..3.35).contains(t),
            "exchange {i} after 500 ms idle: {t:.3} RTT"
        );
    }
    // 150 ms of silence, within the RTO: the warm window stays, one flight each way.
    let busy = round_trips(tcp, Duration::from_millis(150), 4);
    for (i, t) in busy.iter().enumerate() {
        assert!(
            (1.04..1.10).contains(t),
            "exchange {i} after 150 ms idle: {t:.3} RTT"
        );
    }
}
