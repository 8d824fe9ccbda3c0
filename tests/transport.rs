//! Real QUIC over emulated links: a bulk transfer through a rate-limited link, a queue that
//! overflows, links that change during a run, and the real-UDP driver on loopback.
//!
//! The in-memory tests run on the virtual clock: deterministic, and the transfer's
//! timing is the link's and QUIC's alone, not this machine's.

#[path = "support/quic.rs"]
mod quic;
use inferlat::clock::{Clock, ClockKind};
use inferlat::harness::{self, Options};
use inferlat::net::congestion::NagleState;
use inferlat::net::endpoint::{self, PathShape, SERVER_NAME, TransportSettings};
use inferlat::net::framed;
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
    connected_to(clock, up, down, settings, serve_echo).await
}

/// [`connected`] to a server that `serve` runs.
async fn connected_to(
    clock: &Clock,
    up: LinkParams,
    down: LinkParams,
    settings: &TransportSettings,
    serve: impl FnOnce(quinn::Endpoint),
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
    serve(server);
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

// Nagle's algorithm (RFC 896; RFC 1122 §4.2.3.4; Linux's form with Minshall's change): a
// partial segment waits while a small segment sent earlier is unacknowledged. What makes
// it costly is the receiver's delayed acknowledgement: quinn acknowledges every second
// ack-eliciting packet at once and a lone one after its max_ack_delay, 25 ms (RFC 9000
// §18.2's default, quinn's TransportParameters). The paths below have no rate limit, so
// every duration is the links' delays and that timer alone.

/// The receiver's acknowledgement delay for a lone packet (RFC 9000 §18.2, quinn's default).
const MAX_ACK_DELAY: Duration = Duration::from_millis(25);

/// What the server saw of one stream: when each chunk arrived and the bytes so far.
type Arrivals = Vec<(tokio::time::Instant, usize)>;

/// A server that reads each stream to its end, answers with one byte, and reports when
/// each chunk arrived.
fn serve_timed(server: quinn::Endpoint, tx: tokio::sync::mpsc::UnboundedSender<Arrivals>) {
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut seen = Arrivals::new();
                        let mut total = 0;
                        while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                            total += chunk.bytes.len();
                            seen.push((tokio::time::Instant::now(), total));
                        }
                        let _ = tx.send(seen);
                        let _ = send.write_all(&[1]).await;
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });
}

/// What one exchange showed: its round trip, when the server saw how many bytes (from the
/// first write), and the writer's segment size then (none without Nagle).
#[derive(Debug)]
struct Exchange {
    took: Duration,
    seen: Vec<(Duration, usize)>,
    mss: Option<usize>,
    /// Path MTU discovery sent a probe (an ack-eliciting packet) during the exchange.
    probed: bool,
}

/// One exchange on `conn`: the `writes` one after another through the Nagle writer, then
/// the answer.
async fn nagle_exchange(
    conn: &quinn::Connection,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Arrivals>,
    writes: &[usize],
) -> Exchange {
    let nagle = NagleState::of(conn);
    let mss = nagle.as_ref().map(|n| n.mss());
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let t0 = tokio::time::Instant::now();
    for &n in writes {
        framed::write_nagle(&mut send, nagle.as_deref(), &vec![0x5a; n])
            .await
            .unwrap();
    }
    send.finish().unwrap();
    let answer = recv.read_to_end(8).await.unwrap();
    assert_eq!(answer, [1]);
    let took = t0.elapsed();
    let seen = rx.recv().await.unwrap();
    let seen = seen.into_iter().map(|(at, n)| (at - t0, n)).collect();
    Exchange {
        took,
        seen,
        mss,
        probed: false,
    }
}

/// The default settings with Nagle on or off.
fn nagle(on: bool) -> TransportSettings {
    TransportSettings {
        nagle: on,
        ..TransportSettings::default()
    }
}

/// Runs `exchanges` of the given writes, 300 ms apart, on a 100 ms RTT path without a rate
/// limit; returns each exchange's round trip and arrivals, and the small segments the
/// writer held.
fn nagle_run(
    settings: TransportSettings,
    writes: &[usize],
    exchanges: usize,
) -> (Vec<Exchange>, u64) {
    let (rt, clock) = ClockKind::Virtual.runtime().unwrap();
    let nagle = settings.nagle;
    let path = link(50, None, Queue::Packets(1000));
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (_client, conn) = connected_to(&clock, path.clone(), path, &settings, |s| {
            serve_timed(s, tx)
        })
        .await;
        assert_eq!(NagleState::of(&conn).is_some(), nagle);
        let mut out = Vec::new();
        for _ in 0..exchanges {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let probes = conn.stats().path.sent_plpmtud_probes;
            let mut x = nagle_exchange(&conn, &mut rx, writes).await;
            x.probed = conn.stats().path.sent_plpmtud_probes > probes;
            out.push(x);
        }
        let held = NagleState::of(&conn).map_or(0, |s| s.held());
        eprintln!("nagle {nagle}, writes {writes:?}: {out:?}, held {held}");
        (out, held)
    })
}

const RTT: Duration = Duration::from_millis(100);

/// Whether `got` is `want` to within quinn's 1 ms timer granularity.
fn about(got: Duration, want: Duration) -> bool {
    got.abs_diff(want) <= Duration::from_millis(1)
}

#[test]
fn write_write_read_costs_one_round_trip_without_nagle() {
    // Two small messages back to back (a header, then its body) and the reply: both leave
    // at once, in one packet, and the reply comes one RTT later.
    let (runs, held) = nagle_run(nagle(false), &[17, 200], 6);
    assert_eq!(held, 0);
    for (i, x) in runs.iter().enumerate() {
        assert!(about(x.took, RTT), "exchange {i}: {x:?}, not {RTT:?}");
    }
}

#[test]
fn with_nagle_the_second_small_write_waits_for_the_delayed_ack_of_the_first() {
    // The first write leaves at once (nothing unacknowledged). The second waits for its
    // acknowledgement: the server holds it for max_ack_delay (one packet, nothing of its
    // own to send yet), so the ACK is back after RTT + 25 ms; the second message reaches
    // the server half an RTT later, and the reply half an RTT after that: 2 RTT + 25 ms.
    //
    // Unless path MTU discovery sends a probe with the first write (it does during the
    // first second of a connection): the probe is a second ack-eliciting packet, which
    // the server acknowledges at once, so that exchange costs 2 RTT. A packet after a gap
    // in the packet numbers is acknowledged at once too (RFC 9000 §13.2.1), and quinn
    // skips one number now and then against optimistic acknowledgements (RFC 9000 §21.4;
    // the first among packets 0..64, the next among 128..256, doubling): six exchanges of
    // a few packets each meet at most one skip.
    let n = 6;
    let (runs, held) = nagle_run(nagle(true), &[17, 200], n);
    assert_eq!(held, n as u64, "one held segment an exchange");
    let delayed = 2 * RTT + MAX_ACK_DELAY;
    let (mut at_once, mut probed) = (0, 0);
    for (i, x) in runs.iter().enumerate() {
        let (first, rest) = (x.seen[0], *x.seen.last().unwrap());
        assert!(about(first.0, RTT / 2), "exchange {i}: {x:?}");
        assert_eq!(first.1, 17, "exchange {i}: the first write arrived alone");
        assert_eq!(rest.1, 217);
        if about(x.took, delayed) {
            assert!(
                about(rest.0, RTT + RTT / 2 + MAX_ACK_DELAY),
                "exchange {i}: {x:?}"
            );
        } else {
            assert!(
                about(x.took, 2 * RTT),
                "exchange {i}: {x:?}, not {delayed:?}"
            );
            assert!(about(rest.0, RTT + RTT / 2), "exchange {i}: {x:?}");
            match x.probed {
                true => probed += 1,
                false => at_once += 1,
            }
        }
    }
    assert!(
        at_once <= 1,
        "{at_once} of {n} exchanges without a probe or the ACK delay"
    );
    assert!(
        probed + at_once < n / 2,
        "most exchanges wait for the ACK timer"
    );
}

#[test]
fn with_nagle_a_lone_small_write_leaves_at_once() {
    let (runs, held) = nagle_run(nagle(true), &[200], 6);
    assert_eq!(held, 0);
    for (i, x) in runs.iter().enumerate() {
        assert!(about(x.took, RTT), "exchange {i}: {x:?}, not {RTT:?}");
    }
}

#[test]
fn with_nagle_a_large_frame_leaves_at_once() {
    // A decode step's hidden state: its whole segments, and its partial last one (no small
    // segment is unacknowledged), all arrive after half an RTT.
    let (runs, held) = nagle_run(nagle(true), &[MESSAGE], 6);
    assert_eq!(held, 0);
    for (i, x) in runs.iter().enumerate() {
        assert!(about(x.took, RTT), "exchange {i}: {x:?}, not {RTT:?}");
        let last = x.seen.last().unwrap();
        assert!(about(last.0, RTT / 2), "exchange {i}: {x:?}");
        assert_eq!(last.1, MESSAGE);
    }
}

#[test]
fn with_nagle_a_small_write_then_a_large_one_holds_only_its_tail() {
    // A 17-byte header, then a body of several segments. The header and the body's whole
    // segments (of the segment size at the time: path MTU discovery raises it during the
    // first exchanges) leave at once; the partial tail waits for the header's
    // acknowledgement, which comes without delay: the whole segments make further
    // ack-eliciting packets, and quinn acknowledges every second one at once. So the tail
    // arrives one RTT after the rest, and nothing waits for the ACK timer.
    let body = 11_660;
    let (runs, held) = nagle_run(nagle(true), &[17, body], 6);
    let mut tails = 0;
    for (i, x) in runs.iter().enumerate() {
        let mss = x.mss.unwrap();
        let whole = body / mss * mss;
        let early: usize = x
            .seen
            .iter()
            .filter(|(at, _)| about(*at, RTT / 2))
            .map(|&(_, n)| n)
            .max()
            .unwrap();
        let last = x.seen.last().unwrap();
        assert_eq!(last.1, 17 + body);
        if whole == body {
            assert_eq!(early, 17 + body, "exchange {i}: {x:?}");
            assert!(about(x.took, RTT), "exchange {i}: {x:?}");
            continue;
        }
        tails += 1;
        assert_eq!(early, 17 + whole, "exchange {i}: {x:?}");
        assert!(about(last.0, RTT + RTT / 2), "exchange {i}: {x:?}");
        assert!(about(x.took, 2 * RTT), "exchange {i}: {x:?}");
    }
    assert_eq!(held, tails);
}

#[test]
fn with_nagle_and_linux_s_40_ms_ack_delay_write_write_read_costs_two_rtts_and_40_ms() {
    // Linux's delayed acknowledgement is at least TCP_DELACK_MIN, 40 ms. The sender asks
    // for it with an ACK_FREQUENCY frame (quinn grants up to the larger of the RTT, here
    // 100 ms, and 25 ms), so the second write waits 40 ms longer than the RTT.
    let n = 6;
    let settings = TransportSettings {
        max_ack_delay_ms: Some(40.0),
        ..nagle(true)
    };
    let (runs, held) = nagle_run(settings, &[17, 200], n);
    assert_eq!(held, n as u64);
    let delay = Duration::from_millis(40);
    let delayed = runs
        .iter()
        .filter(|x| about(x.took, 2 * RTT + delay))
        .count();
    for (i, x) in runs.iter().enumerate() {
        assert!(
            about(x.took, 2 * RTT + delay) || (x.probed && about(x.took, 2 * RTT)),
            "exchange {i}: {x:?}"
        );
    }
    assert!(delayed > n / 2, "{delayed} of {n} exchanges waited 40 ms");
}

#[test]
fn a_held_write_fails_when_the_connection_is_lost_instead_of_waiting_forever() {
    // The second small write waits for the first's ACK (due after RTT + 25 ms); the
    // connection is closed locally after 60 ms, so no ACK will ever be processed: the held
    // write must end with an error.
    let (rt, clock) = ClockKind::Virtual.runtime().unwrap();
    let path = link(50, None, Queue::Packets(1000));
    rt.block_on(async {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let (_client, conn) = connected_to(&clock, path.clone(), path, &nagle(true), |s| {
            serve_timed(s, tx)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let state = NagleState::of(&conn).unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        framed::write_nagle(&mut send, Some(&state), &[1; 17])
            .await
            .unwrap();
        let closer = conn.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(60)).await;
            closer.close(0u32.into(), b"bye");
        });
        let held = tokio::time::timeout(
            Duration::from_secs(10),
            framed::write_nagle(&mut send, Some(&state), &[2; 200]),
        )
        .await
        .expect("the held write still waits 10 s after the connection closed");
        assert!(held.is_err(), "{held:?}");
        assert_eq!(state.held(), 1);
        assert!(
            state.small_unacked(),
            "no ACK came: the write ended on the close"
        );
    });
}

#[test]
fn with_nagle_later_writes_join_a_held_segment_and_leave_as_whole_segments() {
    // A 17-byte message, then an activations frame written as its 17-byte header and its
    // payload (two writes, as `write_activations` makes them). The frame's header is held
    // (the first message is unacknowledged), the payload joins it, and the whole segments
    // of the two together leave at once, as a socket's send queue would send them; only
    // the partial last one waits. The whole segments draw an immediate ACK (every second
    // packet), so the tail leaves one RTT later: the exchange costs 2 RTT, where holding
    // the header on its own would have waited for the 25 ms ACK timer as well.
    let (rt, clock) = ClockKind::Virtual.runtime().unwrap();
    let path = link(50, None, Queue::Packets(1000));
    let payload = 3_000;
    let frame = 17 + payload;
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (_client, conn) = connected_to(&clock, path.clone(), path, &nagle(true), |s| {
            serve_timed(s, tx)
        })
        .await;
        // Past path MTU discovery's probes.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let state = NagleState::of(&conn).unwrap();
        let mss = state.mss();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let t0 = tokio::time::Instant::now();
        framed::write_nagle(&mut send, Some(&state), &[1; 17])
            .await
            .unwrap();
        framed::write_activations_nagle(&mut send, Some(&state), 7, 1, payload)
            .await
            .unwrap();
        send.finish().unwrap();
        recv.read_to_end(8).await.unwrap();
        let took = t0.elapsed();
        let seen: Vec<(Duration, usize)> = rx
            .recv()
            .await
            .unwrap()
            .into_iter()
            .map(|(at, n)| (at - t0, n))
            .collect();
        eprintln!("mss {mss}: {took:?}, {seen:?}, held {}", state.held());
        let early = seen
            .iter()
            .filter(|(at, _)| about(*at, RTT / 2))
            .map(|&(_, n)| n)
            .max()
            .unwrap();
        assert_eq!(early, 17 + frame / mss * mss, "{seen:?}");
        let last = seen.last().unwrap();
        assert_eq!(last.1, 17 + frame);
        assert!(about(last.0, RTT + RTT / 2), "{seen:?}");
        assert!(about(took, 2 * RTT), "{took:?}");
        assert_eq!(state.held(), 1, "one held segment: the header and the tail");
    });
}

// Nagle's algorithm in runs: the harness writes every frame through its connection's
// `net::sender::Sender`. A worker streams its tokens as one small frame each, with nothing
// to read from the client in between: write, write, and the client's acknowledgement is
// all that can release the second. Token 0 leaves at once (no small segment is
// unacknowledged); token 1, ready a decode step `d` later, is held until token 0's
// acknowledgement is back, and the client, with one packet to acknowledge and nothing to
// send, holds that acknowledgement for the ACK delay `D`. So token 1 arrives RTT + D after
// token 0 instead of `d` after it, whenever `d` < RTT + D. (When `d` < `D`, the worker's
// next packet, the `Done` frame's or the stream's end, reaches the client before its ACK
// timer fires and draws the acknowledgement at once; the device below takes `d` > `D`.)

/// A direct topology at 100 ms RTT: a worker whose decode step of Llama 2 7B is about
/// 67 ms (13.5 GB of weights at 200 GB/s), 2 output tokens, a request a second after two
/// warm-up requests, with `quic` in its `[quic]` table; the topology run and the
/// summary.json it makes.
fn token_stream(quic: &str) -> (harness::RunOutput, inferlat::report::summary::Summary) {
    token_stream_on(
        r#"device = { memory = "80GB", flops = "1000TFLOP/s", mem_bandwidth = "200GB/s", efficiency = { compute = 1.0, memory = 1.0 } }"#,
        2,
        quic,
    )
}

/// [`token_stream`] on a worker with `device` (its node's fields), `tokens` output tokens.
fn token_stream_on(
    device: &str,
    tokens: u32,
    quic: &str,
) -> (harness::RunOutput, inferlat::report::summary::Summary) {
    let text = testing::ScenarioText::new("nagle-tokens")
        .top("seed = 2")
        .workload(&format!(
            "prompt_tokens = 16\noutput_tokens = {tokens}\narrival = {{ kind = \"constant\", rate = 1 }}\nrequests = 12\nwarmup_requests = 2"
        ))
        .client("client")
        .node("gpu", "worker", device)
        .link("client", "gpu", "rtt = \"100ms\"")
        .raw(&format!("[quic]\n{quic}"))
        .build();
    let s = scenario::parse(Path::new("nagle.toml"), &text, &ProfileLibrary::built_in())
        .unwrap_or_else(|e| panic!("valid: {e}\n{text}"));
    let plan = plan::plan(&s).unwrap();
    let mut m = harness::run_to_end(&s, &plan, &Options::default(), ClockKind::Virtual).unwrap();
    let summary = inferlat::report::json::summary(&inferlat::report::Results {
        scenario: &s,
        plan: &plan,
        measured: &m,
        environment: inferlat::report::Environment::capture(std::time::SystemTime::now()),
    })
    .unwrap();
    let run = m.topology.take().unwrap();
    assert_eq!(run.record.failed, 0, "{:?}", run.record.errors);
    assert_eq!(run.record.completed, 12);
    (run, summary)
}

/// Every recorded value of `metric`, as durations.
fn values(run: &harness::RunOutput, metric: Metric) -> Vec<Duration> {
    let h = run.record.histogram(metric);
    h.iter_recorded()
        .flat_map(|v| {
            let d = Duration::from_nanos(h.median_equivalent(v.value_iterated_to()));
            std::iter::repeat_n(d, v.count_at_value() as usize)
        })
        .collect()
}

/// Whether `got` is `want` to within the histograms' 3 significant figures and quinn's
/// 1 ms timer granularity.
fn near(got: Duration, want: Duration) -> bool {
    got.abs_diff(want) <= Duration::from_millis(1)
}

#[test]
fn in_a_run_nagle_holds_a_streamed_token_for_the_delayed_ack_of_the_one_before() {
    let (off, off_summary) = token_stream("nagle = false");
    let (on, on_summary) = token_stream("nagle = true");
    let (linux, linux_summary) = token_stream("nagle = true\nmax_ack_delay = \"40ms\"");
    for (name, r) in [
        ("nagle off", &off),
        ("nagle on", &on),
        ("nagle on, max_ack_delay 40 ms", &linux),
    ] {
        eprintln!(
            "{name}: ttft {:?}, itl {:?}",
            values(r, Metric::Ttft),
            values(r, Metric::Itl)
        );
    }
    // Without Nagle token 1 follows token 0 by the decode step: one value for every
    // request, between the two ACK delays and below RTT + the shorter.
    let steps = values(&off, Metric::Itl);
    let d = steps[0];
    assert!(steps.iter().all(|&x| near(x, d)), "{steps:?}");
    assert!(
        Duration::from_millis(41) < d && d + Duration::from_millis(1) < RTT + MAX_ACK_DELAY,
        "decode step {d:?}: the scenario no longer tests what it says"
    );
    // With Nagle token 0 leaves at once: the same time to first token.
    let ttft = values(&off, Metric::Ttft);
    for r in [&on, &linux] {
        let got = values(r, Metric::Ttft);
        for (a, b) in got.iter().zip(&ttft) {
            assert!(
                near(*a, *b),
                "the first token waited: {got:?} against {ttft:?}"
            );
        }
    }
    // Token 1 waits for token 0's acknowledgement: one RTT and the ACK delay after token
    // 0, whatever the decode step. (A path MTU probe or a skipped packet number draws the
    // ACK at once, now and then: then it is one RTT.)
    for (r, ack_delay) in [(&on, MAX_ACK_DELAY), (&linux, Duration::from_millis(40))] {
        let itl = values(r, Metric::Itl);
        let delayed = itl.iter().filter(|&&x| near(x, RTT + ack_delay)).count();
        let at_once = itl.iter().filter(|&&x| near(x, RTT)).count();
        assert_eq!(delayed + at_once, itl.len(), "{ack_delay:?}: {itl:?}");
        assert!(
            delayed > itl.len() * 3 / 4,
            "{delayed} of {} waited for the {ack_delay:?} ACK timer: {itl:?}",
            itl.len()
        );
    }
    // summary.json says what ran, in the settings and on every connection.
    let t = &off_summary.network.transport;
    assert!(!t.nagle && t.max_ack_delay_ms.is_none(), "{t:?}");
    let t = &on_summary.network.transport;
    assert!(t.nagle && t.max_ack_delay_ms.is_none(), "{t:?}");
    let t = &linux_summary.network.transport;
    assert!(t.nagle && t.max_ack_delay_ms == Some(40.0), "{t:?}");
    assert!(!off_summary.network.connections.is_empty());
    assert!(off_summary.network.connections.iter().all(|c| !c.nagle));
    for s in [&on_summary, &linux_summary] {
        assert!(!s.network.connections.is_empty());
        assert!(s.network.connections.iter().all(|c| c.nagle));
    }
}

/// On the `ideal` device every token is ready when the request arrives: token 0 leaves at
/// once and tokens 1 to 5 (and the `Done` frame) are written while it is unacknowledged.
/// They join one held segment and leave together when its acknowledgement comes, as
/// later writes join a socket's queue: every token has arrived 2 RTT (and at most the ACK
/// delay) after the request was sent. Had each write waited for an acknowledgement of its
/// own, the last would come 5 round trips after the first.
#[test]
fn in_a_run_tokens_written_while_one_is_held_leave_with_it() {
    let (off, _) = token_stream_on("device = \"ideal\"", 6, "nagle = false");
    let (on, _) = token_stream_on("device = \"ideal\"", 6, "nagle = true");
    let e2e = |r: &harness::RunOutput| values(r, Metric::E2e);
    eprintln!(
        "nagle off: e2e {:?}\nnagle on: e2e {:?}",
        e2e(&off),
        e2e(&on)
    );
    for d in e2e(&off) {
        assert!(near(d, RTT), "without Nagle: {d:?}");
    }
    for d in e2e(&on) {
        assert!(
            d + Duration::from_millis(1) >= 2 * RTT
                && d <= 2 * RTT + MAX_ACK_DELAY + Duration::from_millis(1),
            "with Nagle: {d:?} outside [2 RTT, 2 RTT + the ACK delay]"
        );
    }
    // Tokens 1 to 5 arrive together: the only gap of a request is its first (a gap of
    // none is recorded as the histogram's least value, 1 ns).
    let gaps = values(&on, Metric::Itl);
    let together = gaps
        .iter()
        .filter(|&&g| g < Duration::from_micros(1))
        .count();
    assert_eq!(together, 4 * 12, "{gaps:?}");
}

/// A client-relayed pipeline of two A100 stages of Llama 2 7B, each 100 ms RTT from the
/// client, 6 output tokens, a request every five seconds after two warm-up requests (one
/// at a time: requests that overlap on a connection share its Nagle state, as requests
/// multiplexed on one socket do, and a message then waits for another request's segment),
/// with `quic` in its `[quic]` table.
fn pipeline_run(quic: &str) -> harness::RunOutput {
    let mut t = testing::ScenarioText::new("nagle-pipe")
        .top("seed = 4")
        .workload(
            "prompt_tokens = 16\noutput_tokens = 6\narrival = { kind = \"constant\", rate = 0.2 }\nrequests = 8\nwarmup_requests = 2",
        )
        .client("client")
        .worker("s1", "a100-80g", "layers = \"0..16\"")
        .worker("s2", "a100-80g", "layers = \"16..32\"");
    for s in ["s1", "s2"] {
        t = t.link("client", s, "rtt = \"100ms\"");
    }
    let text = t
        .topology(
            "pipeline",
            &["client", "s1", "s2"],
            "hops = \"client-relayed\"",
        )
        .raw(&format!("[quic]\n{quic}"))
        .build();
    let s = scenario::parse(Path::new("pipe.toml"), &text, &ProfileLibrary::built_in())
        .unwrap_or_else(|e| panic!("valid: {e}\n{text}"));
    let plan = plan::plan(&s).unwrap();
    let mut m = harness::run_to_end(&s, &plan, &Options::default(), ClockKind::Virtual).unwrap();
    let run = m.topology.take().unwrap();
    assert_eq!(run.record.failed, 0, "{:?}", run.record.errors);
    run
}

// The Petals client's pattern: each step writes a stage its hidden states as an
// activations frame, a 17-byte header and the payload as two writes (8,192 B a decode
// token for Llama 2 7B, 131,072 B for the 16-token prefill), then reads the stage's reply
// (one position's hidden states), written the same way. The header leaves at once
// (nothing small unacknowledged), and so do the payload's whole segments; the partial
// last segment waits for the header's acknowledgement, which the whole segments' packets
// draw at once (every second packet): one RTT. Both directions of both stages: every
// step, the prefill's too, costs 4 RTT more than without Nagle.
#[test]
fn in_a_run_nagle_holds_the_tail_of_each_hidden_state_a_round_trip() {
    let off = pipeline_run("nagle = false");
    let on = pipeline_run("nagle = true");
    for (name, r) in [("nagle off", &off), ("nagle on", &on)] {
        eprintln!(
            "{name}: ttft {:?}, itl {:?}",
            values(r, Metric::Ttft),
            values(r, Metric::Itl)
        );
    }
    for metric in [Metric::Ttft, Metric::Itl] {
        let without = values(&off, metric);
        let with = values(&on, metric);
        assert_eq!(with.len(), without.len(), "{metric:?}");
        let step = without[0];
        assert!(without.iter().all(|&x| near(x, step)), "{without:?}");
        for &x in &with {
            assert!(
                near(x, step + 4 * RTT),
                "{metric:?}: {x:?} under Nagle, {step:?} without"
            );
        }
    }
}
