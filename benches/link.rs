//! Precision of the link emulator on the real clock: 10,000 datagrams/s through one link
//! with a 5 ms delay, through the in-memory network and through the real-UDP driver on
//! loopback. Prints the lateness ladder (actual minus scheduled delivery) of each, and what
//! an idle emulator costs in CPU.
//!
//! `cargo bench --bench link` measures for 5 s each; under `cargo test --benches` it runs
//! for a fraction of a second as a smoke test. The last line is for CI logs:
//! `link-bench: p50_us=.. p99_us=.. idle_cpu_pct=.. verdict=pass|miss`.

use hdrhistogram::Histogram;
use inferlat::clock::Clock;
use inferlat::harness::cpu_time;
use inferlat::net::link::Link;
use inferlat::net::socket::{Network, UdpLinkSocket};
use inferlat::scenario::LinkParams;
use quinn::AsyncUdpSocket;
use quinn::udp::{RecvMeta, Transmit};
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Targets of the link-emulation issue.
const P50_TARGET_US: f64 = 50.0;
const P99_TARGET_US: f64 = 250.0;
const IDLE_TARGET_PCT: f64 = 5.0;
const RATE: u64 = 10_000;

fn link() -> Link {
    Link::new(
        LinkParams {
            delay: Duration::from_millis(5),
            ..LinkParams::ideal()
        },
        1,
    )
}

/// Sends RATE datagrams/s from `tx` to `to` for `length`, on schedule, while a task
/// drains `rx`; returns how many arrived.
async fn drive(
    clock: &Clock,
    tx: Arc<dyn AsyncUdpSocket>,
    rx: Arc<dyn AsyncUdpSocket>,
    to: SocketAddr,
    length: Duration,
) -> u64 {
    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        let mut storage = vec![[0u8; 1500]; 8];
        loop {
            let mut bufs: Vec<IoSliceMut> =
                storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let mut meta = vec![RecvMeta::default(); bufs.len()];
            let n = std::future::poll_fn(|cx| rx.poll_recv(cx, &mut bufs, &mut meta)).await;
            match n {
                Ok(n) => got += n as u64,
                Err(_) => break,
            }
            if got >= u64::MAX / 2 {
                break;
            }
        }
        got
    });
    let payload = [7u8; 1200];
    let start = clock.now() + Duration::from_millis(10);
    let count = length.as_secs_f64() * RATE as f64;
    for i in 0..count as u64 {
        clock
            .sleep_until(start + Duration::from_nanos(i * 1_000_000_000 / RATE))
            .await;
        let t = Transmit {
            destination: to,
            ecn: None,
            contents: &payload,
            segment_size: None,
            src_ip: None,
        };
        let _ = tx.try_send(&t);
    }
    // Let the last ones arrive.
    clock.sleep(Duration::from_millis(50)).await;
    receiver.abort();
    count as u64
}

fn ladder(name: &str, h: &Histogram<u64>) -> (f64, f64) {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    println!(
        "{name:<24} n={:<7} p50 {:>7.1} us  p90 {:>7.1} us  p99 {:>7.1} us  p99.9 {:>7.1} us  max {:>8.1} us",
        h.len(),
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1e3
    );
    (us(0.5), us(0.99))
}

const MINUTE: &str = r#"
name = "virtual-minute"
seed = 1
[model]
preset = "llama-2-7b"
[workload]
prompt_tokens = 128
output_tokens = 64
arrival = { kind = "poisson", rate = 4.0 }
duration = "60s"
warmup = "2s"
[[node]]
name = "client"
role = "client"
[[node]]
name = "gpu"
role = "worker"
device = "h100-sxm"
[[link]]
between = ["client", "gpu"]
rtt = "100ms"
bandwidth = "100Mbit/s"
[baseline]
device = "h100-sxm"
"#;

/// Runs a minute of simulated time on the virtual clock; returns the wall time it took.
fn virtual_minute() -> Duration {
    use inferlat::clock::ClockKind;
    use inferlat::harness::{self, Options};
    use inferlat::scenario::{self, ProfileLibrary};
    let s = scenario::parse(
        std::path::Path::new("virtual-minute.toml"),
        MINUTE,
        &ProfileLibrary::built_in(),
    )
    .expect("valid scenario");
    let plan = inferlat::plan::plan(&s).expect("plannable");
    let t0 = Instant::now();
    let m = harness::run_to_end(&s, &plan, &Options::default(), ClockKind::Virtual).expect("run");
    let wall = t0.elapsed();
    let done = m.topology.as_ref().map_or(0, |t| t.record.completed);
    assert!(done > 150, "only {done} requests completed");
    wall
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let length = if full {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(300)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let clock = Clock::real().expect("timer thread");
    println!(
        "link emulator lateness (actual - scheduled delivery), {RATE} datagrams/s, 5 ms delay, {:.1} s each:",
        length.as_secs_f64()
    );

    // The in-memory network.
    let net = Network::new(clock.clone());
    let (a, b): (SocketAddr, SocketAddr) =
        ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap());
    net.add_link(a, b, link());
    let (sa, sb) = (net.bind(a).unwrap(), net.bind(b).unwrap());
    rt.block_on(drive(&clock, sa, sb, b, length));
    let mem = net.lateness().histogram();
    let (p50, p99) = ladder("in-memory network", &mem);

    // The real-UDP driver on loopback.
    let std_a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let std_b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = std_b.local_addr().unwrap();
    let (ua, ub) = rt.block_on(async {
        (
            UdpLinkSocket::new(std_a, clock.clone(), Some(link())).unwrap(),
            UdpLinkSocket::new(std_b, clock.clone(), None).unwrap(),
        )
    });
    rt.block_on(drive(&clock, ua.clone(), ub, to, length));
    ladder("real UDP (loopback)", &ua.lateness().histogram());

    // An idle emulator: the timer thread and the runtime with nothing scheduled.
    let idle = if full {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(300)
    };
    let (c0, w0) = (cpu_time(), Instant::now());
    std::thread::sleep(idle);
    let idle_pct = match (c0, cpu_time()) {
        (Some(c0), Some(c1)) => (c1 - c0).as_secs_f64() / w0.elapsed().as_secs_f64() * 100.0,
        _ => f64::NAN,
    };
    println!("idle emulator: {idle_pct:.2}% of one core");

    // The virtual clock: 60 simulated seconds at 100 ms RTT.
    let wall = virtual_minute();
    println!(
        "virtual clock: 60 simulated seconds at 100 ms RTT (Poisson 4 req/s, 64 tokens out) in {:.2} s of wall time",
        wall.as_secs_f64()
    );

    let pass = p50 <= P50_TARGET_US && p99 <= P99_TARGET_US && idle_pct < IDLE_TARGET_PCT;
    println!(
        "targets: p50 <= {P50_TARGET_US} us, p99 <= {P99_TARGET_US} us, idle < {IDLE_TARGET_PCT}% ({})",
        if full {
            "measured"
        } else {
            "smoke run: too short to judge"
        }
    );
    println!(
        "link-bench: p50_us={p50:.1} p99_us={p99:.1} idle_cpu_pct={idle_pct:.2} verdict={}",
        if pass { "pass" } else { "miss" }
    );
    drop(clock);
    rt.shutdown_background();
}
