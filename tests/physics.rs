//! Physics of a real run: nothing finishes before its analytic floor, the emulated link
//! delivers with the configured delay, and the baseline follows the compute model.
//!
//! Most run on the virtual clock, where the harness's own costs take no time, so they can
//! assert tight bounds deterministically. The real-clock run checks the precise timing
//! path with bounds that hold on a loaded machine: lower bounds are exact physics, upper
//! bounds are generous and use medians.

use inferlat::clock::ClockKind;
use inferlat::harness::{self, Measured, Options};
use inferlat::plan::{self, schedule::Shape};
use inferlat::record::Metric;
use inferlat::scenario::{self, ProfileLibrary, Scenario, testing};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Runs one at a time, so runs in this file don't steal each other's cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn scenario(text: &str) -> Scenario {
    scenario::parse(Path::new("test.toml"), text, &ProfileLibrary::built_in())
        .expect("valid scenario")
}

fn run_on(s: &Scenario, kind: ClockKind) -> Measured {
    let _guard =
        (kind == ClockKind::Real).then(|| SERIAL.lock().unwrap_or_else(|e| e.into_inner()));
    let plan = plan::plan(s).expect("plannable");
    harness::run_to_end(s, &plan, &Options::default(), kind).expect("run")
}

fn run(s: &Scenario) -> Measured {
    run_on(s, ClockKind::Virtual)
}

fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

/// The physics scenario: a client and a worker over one link of `rtt` (plus `extra`:
/// more link fields, or further tables), constant arrivals and two warm-up requests.
fn text(
    device: &str,
    rtt: &str,
    prompt: u32,
    output: u32,
    requests: u32,
    rate: f64,
    extra: &str,
) -> String {
    testing::direct("physics", device, &format!("rtt = \"{rtt}\"\n{extra}"))
        .top("seed = 3")
        .workload(&format!(
            "prompt_tokens = {prompt}\noutput_tokens = {output}\narrival = {{ kind = \"constant\", rate = {rate} }}\nrequests = {requests}\nwarmup_requests = 2"
        ))
        .build()
}

#[test]
fn fifty_ms_link_gives_fifty_ms_single_token_requests_on_the_virtual_clock() {
    let s = scenario(&text("ideal", "50ms", 16, 1, 30, 20.0, ""));
    let m = run(&s);
    let t = &m.topology.as_ref().unwrap().record;
    assert_eq!(t.completed, 30, "errors: {:?}", t.errors);
    let e2e = t.histogram(Metric::E2e);
    // Simulated time: one round trip and nothing else (histogram rounding aside).
    assert!(e2e.min() as f64 / 1e6 >= 49.95, "min {}", e2e.min());
    assert!(e2e.max() as f64 / 1e6 <= 50.1, "max {}", e2e.max());
}

#[test]
fn fifty_ms_link_gives_fifty_ms_single_token_requests() {
    let s = scenario(&text("ideal", "50ms", 16, 1, 30, 20.0, ""));
    let m = run_on(&s, ClockKind::Real);
    let t = &m.topology.as_ref().unwrap().record;
    assert_eq!(t.completed, 30, "errors: {:?}", t.errors);
    let e2e = t.histogram(Metric::E2e);
    // Physics: one round trip can't take less than the RTT.
    assert!(
        e2e.min() as f64 / 1e6 >= 49.95,
        "min e2e {} ms",
        e2e.min() as f64 / 1e6
    );
    // Accuracy of the emulator and the harness: the median within 2 ms of the RTT.
    let p50 = ms(e2e, 0.5);
    assert!((50.0..52.0).contains(&p50), "p50 e2e {p50} ms");
}

#[test]
fn no_request_beats_its_analytic_floor() {
    let extra = "bandwidth = \"20Mbit/s\"\n[baseline]\ndevice = \"h100-sxm\"";
    let s = scenario(&text("a100-80g", "30ms", 512, 8, 12, 4.0, extra));
    let p = plan::plan(&s).unwrap();
    let shape = Shape {
        prompt: 512,
        output: 8,
    };
    let floor = p.floor(shape);
    let base_floor = p.baseline_floor(shape).unwrap();
    let m = run(&s);
    // Histograms keep 3 significant figures: allow their rounding (0.1 %) below the floor.
    let at_least = |h: &hdrhistogram::Histogram<u64>, f: Duration, what: &str| {
        let min = h.min() as f64;
        let f = f.as_nanos() as f64;
        assert!(
            min >= f * 0.999,
            "{what}: min {:.3} ms below floor {:.3} ms",
            min / 1e6,
            f / 1e6
        );
    };
    let t = &m.topology.as_ref().unwrap().record;
    assert_eq!(t.completed, 12, "errors: {:?}", t.errors);
    at_least(t.histogram(Metric::Ttft), floor.ttft, "topology ttft");
    at_least(t.histogram(Metric::E2e), floor.e2e, "topology e2e");
    // ITL has no per-gap floor: a token delayed by the network shortens the next gap.
    let b = &m.baseline.as_ref().unwrap().record;
    assert_eq!(b.completed, 12);
    at_least(b.histogram(Metric::Ttft), base_floor.ttft, "baseline ttft");
    at_least(b.histogram(Metric::E2e), base_floor.e2e, "baseline e2e");
    // The topology pays at least the round trip on top of the slower device.
    assert!(ms(t.histogram(Metric::E2e), 0.5) > ms(b.histogram(Metric::E2e), 0.5) + 30.0);
}

#[test]
fn baseline_at_low_load_matches_the_compute_model() {
    // One request at a time (constant 2/s, each ~130 ms): no queueing.
    let extra = "[baseline]\ndevice = \"a100-80g\"";
    let s = scenario(&text("ideal", "1ms", 128, 12, 10, 2.0, extra));
    let p = plan::plan(&s).unwrap();
    let predicted = p
        .baseline
        .as_ref()
        .unwrap()
        .request(128, 12)
        .total()
        .as_secs_f64()
        * 1e3;
    let m = run(&s);
    let b = &m.baseline.as_ref().unwrap().record;
    assert_eq!(b.completed, 10);
    let p50 = ms(b.histogram(Metric::E2e), 0.5);
    assert!(
        (p50 - predicted).abs() / predicted < 0.05,
        "baseline e2e p50 {p50:.2} ms, model {predicted:.2} ms"
    );
    // The breakdown agrees: compute is the model's, the baseline has no network.
    let compute = b
        .part(inferlat::record::Share::Compute)
        .value_at_quantile(0.5) as f64
        / 1e6;
    assert!(
        (compute - predicted).abs() / predicted < 0.05,
        "compute {compute:.2} ms"
    );
    let network = b
        .part(inferlat::record::Share::Network)
        .value_at_quantile(0.5) as f64
        / 1e6;
    assert!(network < 1.0, "baseline network residual {network:.3} ms");
}

#[test]
fn lossy_link_still_completes_every_request() {
    // QUIC recovers what the link loses; requests complete, only later.
    let s = scenario(&text("ideal", "10ms", 64, 4, 20, 20.0, "loss = \"5%\""));
    let m = run(&s);
    let t = &m.topology.as_ref().unwrap().record;
    assert_eq!(t.completed, 20, "errors: {:?}", t.errors);
    let lost: u64 = m.links.iter().map(|l| l.stats.lost).sum();
    let sent: u64 = m.links.iter().map(|l| l.stats.datagrams).sum();
    assert!(sent > 0 && lost > 0, "lost {lost} of {sent}");
}

#[test]
fn closed_loop_keeps_its_concurrency_and_runs_the_requested_count() {
    // Two users against a FIFO worker (max_batch = 1): each request queues behind at most
    // one other.
    let t = text("a100-80g", "2ms", 64, 4, 10, 1.0, "")
        .replace(
            "arrival = { kind = \"constant\", rate = 1 }",
            "arrival = { kind = \"closed\", concurrency = 2 }",
        )
        .replace(
            "device = \"a100-80g\"",
            "device = \"a100-80g\"\nmax_batch = 1",
        );
    assert!(t.contains("closed"), "{t}");
    let s = scenario(&t);
    let p = plan::plan(&s).unwrap();
    let one = p.nodes[0]
        .stage
        .as_ref()
        .unwrap()
        .request(64, 4)
        .total()
        .as_secs_f64()
        * 1e3;
    let m = run(&s);
    let r = &m.topology.as_ref().unwrap().record;
    assert_eq!(r.completed, 10, "errors: {:?}", r.errors);
    // A closed loop sends when the last request ends: no schedule lag by construction.
    assert_eq!(
        r.histogram(Metric::ScheduleLag).max(),
        r.histogram(Metric::ScheduleLag).min()
    );
    // With two in flight the worker is never idle, so the queue holds about one request.
    let queue_p50 = r
        .part(inferlat::record::Share::Queue)
        .value_at_quantile(0.5) as f64
        / 1e6;
    assert!(
        queue_p50 > one * 0.5,
        "queue p50 {queue_p50:.2} ms, one request {one:.2} ms"
    );
    // Throughput is bounded by the worker: one request per compute time.
    assert!(
        r.requests_per_s() <= 1000.0 / one * 1.01,
        "{} req/s",
        r.requests_per_s()
    );
}

#[test]
fn continuous_batching_raises_throughput_at_the_batch_step_time() {
    // Eight users in a closed loop against one A100: memory-bound decode, so a batch of
    // eight reads the weights once per step and takes little longer than a batch of one.
    let closed = |batch: u32| {
        let t = text("a100-80g", "2ms", 64, 32, 40, 1.0, "").replace(
            "arrival = { kind = \"constant\", rate = 1 }",
            "arrival = { kind = \"closed\", concurrency = 6 }",
        );
        let t = t.replace(
            "device = \"a100-80g\"",
            &format!("device = \"a100-80g\"\nmax_batch = {batch}"),
        );
        scenario(&t)
    };
    let (one, eight) = (closed(1), closed(8));
    let p = plan::plan(&eight).unwrap();
    assert_eq!(p.max_batch, 8);
    let step1 = p.nodes[0]
        .stage
        .as_ref()
        .unwrap()
        .decode_batch(&[80])
        .as_secs_f64()
        * 1e3;
    let step8 = p.nodes[0]
        .stage
        .as_ref()
        .unwrap()
        .decode_batch(&[80; 8])
        .as_secs_f64()
        * 1e3;
    let m1 = run(&one);
    let m8 = run(&eight);
    let (r1, r8) = (
        &m1.topology.as_ref().unwrap().record,
        &m8.topology.as_ref().unwrap().record,
    );
    assert_eq!((r1.completed, r8.completed), (40, 40));
    // At batch 1 a token takes one step; at batch 8 one step of the batch (or a stall
    // behind a newcomer's prefill), never less.
    let tpot1 = ms(r1.histogram(Metric::Tpot), 0.5);
    let tpot8 = ms(r8.histogram(Metric::Tpot), 0.5);
    assert!(
        (tpot1 - step1).abs() / step1 < 0.02,
        "tpot {tpot1} step {step1}"
    );
    assert!(
        tpot8 >= step8 * 0.98,
        "tpot {tpot8} below the batch step {step8}"
    );
    assert!(tpot8 < step8 * 1.5, "tpot {tpot8}, batch step {step8}");
    // Throughput rises with the batch until the step time catches up: several times here.
    let (x1, x8) = (r1.output_tokens_per_s(), r8.output_tokens_per_s());
    assert!(x8 > 4.0 * x1, "{x8} tok/s at batch 8, {x1} at batch 1");
    // And queueing shrinks: with eight slots, eight users never wait for one.
    let q1 = r1
        .part(inferlat::record::Share::Queue)
        .value_at_quantile(0.5);
    let q8 = r8
        .part(inferlat::record::Share::Queue)
        .value_at_quantile(0.5);
    assert!(
        q8 < q1 / 10,
        "queue p50 {q8} ns at batch 8, {q1} ns at batch 1"
    );
}

#[test]
fn a_request_with_no_answer_within_the_drain_timeout_fails_instead_of_stalling_the_loop() {
    // One worker serving one request at a time, each about 10 s (a slow inline device);
    // six closed-loop users and twelve requests: the last of the first six wait 50 s, past
    // the request timeout (the drain timeout: at least 30 s and four times the floor), so
    // they fail with a reason, their users go on, and the run ends.
    let slow = r#"device = { memory = "80GB", flops = "10TFLOP/s", mem_bandwidth = "13.4GB/s", efficiency = { compute = 1.0, memory = 1.0 } }"#;
    let t = text("a100-80g", "10ms", 8, 10, 12, 1.0, "")
        .replace("device = \"a100-80g\"", &format!("{slow}\nmax_batch = 1"))
        .replace(
            "arrival = { kind = \"constant\", rate = 1 }",
            "arrival = { kind = \"closed\", concurrency = 6 }",
        );
    assert!(t.contains("closed"), "{t}");
    let m = run(&scenario(&t));
    let r = &m.topology.as_ref().unwrap().record;
    assert_eq!(r.completed + r.failed, 12, "{:?}", r.errors);
    assert!(
        r.completed >= 3,
        "{} completed, {:?}",
        r.completed,
        r.errors
    );
    assert!(
        r.errors.keys().any(|e| e.contains("no answer within")),
        "{:?}",
        r.errors
    );
}

/// The two taxes take the total apart: with the baseline on the topology's own device, the
/// device tax is 1 and the network tax is all of it; the network tax of TTFT is the link's
/// round trip over the compute, and the network adds nothing to TPOT on a link with no
/// jitter. With a faster baseline device, the device tax is the ratio of the two devices'
/// decode steps (from their datasheet figures) and the network tax does not move. The
/// co-located run is a run of its own (the same nodes over ideal links), so none of these
/// ratios is computed from the model's floor.
#[test]
fn network_tax_is_the_link_alone_and_device_tax_the_devices_alone() {
    use inferlat::report::{Environment, Results};
    let run_with = |baseline: &str| {
        let s = scenario(&text(
            "a100-80g",
            "40ms",
            128,
            16,
            8,
            0.5,
            &format!("bandwidth = \"10Gbit/s\"\n[baseline]\ndevice = \"{baseline}\""),
        ));
        let plan = plan::plan(&s).expect("plannable");
        let m = harness::run_to_end(&s, &plan, &Options::default(), ClockKind::Virtual).unwrap();
        (s, plan, m)
    };
    let taxes = |baseline: &str| {
        let (s, plan, m) = run_with(baseline);
        let r = Results {
            scenario: &s,
            plan: &plan,
            measured: &m,
            environment: Environment::capture(std::time::SystemTime::now()),
        };
        let topo = &m.topology.as_ref().unwrap().record;
        let colo = &m.colocated.as_ref().expect("a co-located run").record;
        assert_eq!(colo.completed, 8);
        let gap = ms(topo.histogram(Metric::Ttft), 0.5) - ms(colo.histogram(Metric::Ttft), 0.5);
        let t = |f: &dyn Fn(Metric, f64) -> Option<f64>, m| f(m, 0.5).expect("a tax");
        (
            gap,
            t(&|m, q| r.network_tax(m, q), Metric::Ttft),
            t(&|m, q| r.network_tax(m, q), Metric::Tpot),
            t(&|m, q| r.device_tax(m, q), Metric::Ttft),
            t(&|m, q| r.device_tax(m, q), Metric::Tpot),
            t(&|m, q| r.tax(m, q), Metric::Tpot),
            plan.floor(Shape {
                prompt: 128,
                output: 16,
            }),
            plan.baseline_floor(Shape {
                prompt: 128,
                output: 16,
            })
            .unwrap(),
        )
    };
    let (gap, net_ttft, net_tpot, dev_ttft, dev_tpot, _, _, _) = taxes("a100-80g");
    // One round trip (the request out, the first token back) and a few hundred bytes at
    // 10 Gbit/s: 40 ms and a little more, nothing like two.
    assert!((40.0..42.0).contains(&gap), "ttft gap {gap:.3} ms");
    assert!(net_ttft > 4.0, "network tax of ttft {net_ttft:.2}");
    assert!(
        (net_tpot - 1.0).abs() < 0.01,
        "network tax of tpot {net_tpot:.4}"
    );
    // The same device on both sides: no device tax at all.
    assert!(
        (dev_ttft - 1.0).abs() < 0.01,
        "device tax of ttft {dev_ttft:.4}"
    );
    assert!(
        (dev_tpot - 1.0).abs() < 0.01,
        "device tax of tpot {dev_tpot:.4}"
    );

    let (gap2, net_ttft2, net_tpot2, _, dev_tpot2, tax_tpot2, floor, base_floor) =
        taxes("h100-sxm");
    // The topology and its co-located twin did not change: neither does the network tax.
    assert!((gap2 - gap).abs() < 0.01, "{gap2} against {gap}");
    assert!((net_ttft2 - net_ttft).abs() < 0.01);
    assert!((net_tpot2 - net_tpot).abs() < 0.01);
    // The device tax is the A100's decode step over the H100's; the total is the product.
    let steps = floor.tpot.as_secs_f64() / base_floor.tpot.as_secs_f64();
    assert!(
        (dev_tpot2 / steps - 1.0).abs() < 0.01,
        "device tax {dev_tpot2:.4} against the steps' ratio {steps:.4}"
    );
    assert!((tax_tpot2 / (net_tpot2 * dev_tpot2) - 1.0).abs() < 0.01);
}
