//! Micro-benchmarks of the harness's hot paths: the frame codec, histogram recording,
//! and one request round trip over real QUIC on a zero-delay link with a zero-compute
//! device: the harness's own overhead, which every measured latency includes.

use criterion::{Criterion, criterion_group, criterion_main};
use inferlat::clock::Clock;
use inferlat::harness::{Options, Topology};
use inferlat::net::wire::{self, Frame, Mode, Request};
use inferlat::plan::{self, schedule::Shape};
use inferlat::record::{self, RunRecord, Sample};
use inferlat::scenario::{self, ProfileLibrary, Slo};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn codec(c: &mut Criterion) {
    let request = Frame::Request(Request {
        id: 1,
        output_tokens: 64,
        mode: Mode::Serve,
        route: vec!["client".into(), "gpu-a".into()],
        prompt: (0..512).collect(),
    });
    let activations = Frame::Activations {
        id: 1,
        tokens: 1,
        data: vec![0; 8192],
    };
    let token = Frame::Token {
        index: 3,
        lead_us: 42,
    };
    let mut buf = Vec::with_capacity(1 << 16);
    for (name, frame) in [
        ("request_512", &request),
        ("activations_8k", &activations),
        ("token", &token),
    ] {
        c.bench_function(&format!("frame/encode/{name}"), |b| {
            b.iter(|| {
                buf.clear();
                wire::encode(black_box(frame), &mut buf).unwrap();
            })
        });
        let mut encoded = Vec::new();
        wire::encode(frame, &mut encoded).unwrap();
        c.bench_function(&format!("frame/decode/{name}"), |b| {
            b.iter(|| wire::decode(black_box(&encoded), wire::DEFAULT_MAX_FRAME).unwrap())
        });
    }
}

fn histograms(c: &mut Criterion) {
    let mut h = record::histogram();
    let mut v = 1_000_000u64;
    c.bench_function("histogram/record", |b| {
        b.iter(|| {
            v = v
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                % 10_000_000_000
                + 1;
            record::add(&mut h, Duration::from_nanos(black_box(v)));
        })
    });
    let sample = Sample {
        scheduled_at: Duration::ZERO,
        schedule_lag: Duration::from_micros(100),
        tokens: (1..=64)
            .map(|i| Duration::from_millis(50 + 10 * i))
            .collect(),
        queue: Duration::from_millis(1),
        compute: Duration::from_millis(600),
        software: Duration::ZERO,
        nodes: vec![(
            "gpu".into(),
            Duration::from_millis(1),
            Duration::from_millis(600),
            Duration::ZERO,
        )],
        extra_copies: 0,
        hedge_won: false,
        client: None,
    };
    let mut r = RunRecord::new();
    c.bench_function("record/request_64_tokens", |b| {
        b.iter(|| r.record(black_box(&sample), &Slo::default()))
    });
}

const ZERO: &str = r#"
name = "bench"
[model]
preset = "llama-2-7b"
[workload]
prompt_tokens = 128
output_tokens = 1
arrival = { kind = "closed", concurrency = 1 }
requests = 1
[[node]]
name = "client"
role = "client"
[[node]]
name = "gpu"
role = "worker"
device = "ideal"
[[link]]
between = ["client", "gpu"]
rtt = "0ms"
"#;

fn round_trip(c: &mut Criterion) {
    let s = scenario::parse(Path::new("bench.toml"), ZERO, &ProfileLibrary::built_in()).unwrap();
    let plan = plan::plan(&s).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = Clock::real().unwrap();
    let options = Options::default();
    let (topo, target) = rt.block_on(async {
        let topo = Topology::build(&s, &plan, &clock, &options, CancellationToken::new())
            .await
            .unwrap();
        let target = topo.clients[0].clone();
        (topo, target)
    });
    for output in [1u32, 16] {
        let shape = Shape {
            prompt: 128,
            output,
        };
        c.bench_function(
            &format!("round_trip/zero_link_ideal_device/{output}_tokens"),
            |b| {
                b.to_async(&rt)
                    .iter(|| async { target.call(0, shape, &clock).await.unwrap() })
            },
        );
    }
    rt.block_on(topo.shutdown());
}

criterion_group!(benches, codec, histograms, round_trip);
criterion_main!(benches);
