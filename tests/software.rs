//! Per-message software costs (`send_cost`, `recv_cost` on a worker): the time they add to
//! a request, where the breakdown puts it, and the plan's floor that predicts it.
//!
//! Every run is on the virtual clock with real QUIC, where the harness's own CPU costs
//! take no simulated time, so the costs show exactly: a request is compared with the
//! same request on the same scenario without costs, or with the plan's floor.

use inferlat::clock::ClockKind;
use inferlat::harness::{self, Options};
use inferlat::plan::{self, schedule::Shape};
use inferlat::record::{Parts, RunRecord, Share};
use inferlat::scenario::{Scenario, testing};
use std::time::Duration;

/// A direct topology over a 0 ms link with no rate limit: a worker on `device` with
/// `costs` (its extra `[[node]]` fields), constant arrivals far apart (no queueing),
/// `requests` of `prompt` and `output` tokens.
fn scenario(device: &str, costs: &str, prompt: u32, output: u32) -> Scenario {
    testing::ScenarioText::new("software")
        .top("seed = 5")
        .workload(&format!(
            "prompt_tokens = {prompt}\noutput_tokens = {output}\narrival = {{ kind = \"constant\", rate = 2.0 }}\nrequests = 6\nwarmup_requests = 1"
        ))
        .client("client")
        .worker("gpu", device, costs)
        .link("client", "gpu", "rtt = \"0ms\"")
        .parse()
        .expect("valid scenario")
}

fn run(s: &Scenario) -> RunRecord {
    let plan = plan::plan(s).expect("plannable");
    let m = harness::run_to_end(s, &plan, &Options::default(), ClockKind::Virtual).expect("run");
    let t = m.topology.expect("a topology run").record;
    assert_eq!(t.completed, 6, "errors: {:?}", t.errors);
    t
}

/// Every completed request's parts are the same (no queueing, no jitter): the median's.
fn parts(r: &RunRecord) -> Parts {
    let (lo, hi) = (r.request_at(0.0).unwrap(), r.request_at(1.0).unwrap());
    assert_eq!(lo, hi, "requests differ: {lo:?} vs {hi:?}");
    lo
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1e3)
}

/// A 1-token request on an ideal device over a 0 ms link, to a worker with
/// `send_cost.fixed = 1ms` and `recv_cost.fixed = 2ms`: its service time grows by exactly
/// 3 ms (2 ms receiving the request, then 1 ms sending its one token; the `Done` frame's
/// send comes after the token, on no metric's path), the breakdown's software part holds
/// those 3 ms, and the network stays what it was without costs (0 on this link).
#[test]
fn fixed_costs_add_exactly_the_frames_on_the_path_and_show_as_software() {
    let plain = parts(&run(&scenario("ideal", "", 16, 1)));
    let costly = parts(&run(&scenario(
        "ideal",
        "send_cost = { fixed = \"1ms\" }\nrecv_cost = { fixed = \"2ms\" }",
        16,
        1,
    )));
    assert_eq!(plain.software, Duration::ZERO);
    assert_eq!(
        costly.service - plain.service,
        ms(3.0),
        "{plain:?} {costly:?}"
    );
    assert_eq!(costly.software, ms(3.0));
    assert_eq!(costly.network, plain.network);
    assert!(plain.network < ms(0.01), "network {:?}", plain.network);
    assert_eq!(
        (costly.queue, costly.compute),
        (plain.queue, plain.compute),
        "the costs are neither queue nor compute"
    );
}

/// A 4-token request on the ideal device (every step takes no time): the token sends
/// cannot hide behind compute, so each waits for the one before. Tokens leave at
/// 2 + 1, + 2, + 3, + 4 ms: the request takes 2 ms (receive) + 4 × 1 ms (sends), and all
/// 6 ms are software (the last token was ready at 2 ms and written at 6 ms); the
/// time per output token is the send cost, 1 ms.
#[test]
fn sends_that_no_compute_hides_queue_behind_each_other() {
    let r = run(&scenario(
        "ideal",
        "send_cost = { fixed = \"1ms\" }\nrecv_cost = { fixed = \"2ms\" }",
        16,
        4,
    ));
    let p = parts(&r);
    let plain = parts(&run(&scenario("ideal", "", 16, 4)));
    assert_eq!(p.service - plain.service, ms(6.0), "{plain:?} {p:?}");
    assert_eq!(p.software, ms(6.0));
    assert_eq!(p.network, plain.network);
    // The part's histogram holds it too (3 significant figures).
    let h = r.part(Share::Software);
    assert!(
        (h.min() as f64 - 6e6).abs() <= 6e3 && (h.max() as f64 - 6e6).abs() <= 6e3,
        "software histogram {}..{}",
        h.min(),
        h.max()
    );
}

/// `recv_cost.per_byte = 1us` scales with the request frame's bytes: a prompt 100 tokens
/// longer (100 token ids of 4 bytes) costs exactly 400 us more on the receive, and the
/// software part says so; the fixed part is paid once per frame either way.
#[test]
fn per_byte_cost_scales_with_the_request_bytes() {
    let costs = "recv_cost = { fixed = \"100us\", per_byte = \"1us\" }";
    let short = parts(&run(&scenario("ideal", costs, 16, 1)));
    let long = parts(&run(&scenario("ideal", costs, 116, 1)));
    assert_eq!(long.software - short.software, Duration::from_micros(400));
    assert_eq!(long.service - short.service, Duration::from_micros(400));
    // The short request's frame: 5 header bytes, 14 of fields, 64 of token ids.
    assert_eq!(
        short.software,
        Duration::from_micros(100) + Duration::from_micros(5 + 14 + 64)
    );
}

/// The plan's floor counts the costs on the path exactly as the worker spends them: on
/// the ideal device over a 0 ms link the measured e2e equals the floor, for one token
/// (2 + 1 ms) and for four (sends queued behind each other: 2 + 4 × 1 ms), and with a
/// per-byte cost; and without costs the floor is what it was.
#[test]
fn the_floor_counts_the_costs_on_the_path() {
    for (costs, output, want) in [
        (
            "send_cost = { fixed = \"1ms\" }\nrecv_cost = { fixed = \"2ms\" }",
            1,
            3.0,
        ),
        (
            "send_cost = { fixed = \"1ms\" }\nrecv_cost = { fixed = \"2ms\" }",
            4,
            6.0,
        ),
        (
            "send_cost = { fixed = \"1ms\", per_byte = \"10us\" }\nrecv_cost = { per_byte = \"1us\" }",
            1,
            // receive: 83 bytes × 1 us; send: 1 ms + 13 bytes × 10 us.
            0.083 + 1.0 + 0.13,
        ),
    ] {
        let s = scenario("ideal", costs, 16, output);
        let plain = scenario("ideal", "", 16, output);
        let shape = Shape { prompt: 16, output };
        let floor = plan::plan(&s).unwrap().floor(shape);
        let plain_floor = plan::plan(&plain).unwrap().floor(shape);
        assert_eq!(floor.e2e - plain_floor.e2e, ms(want), "{costs}");
        let measured = parts(&run(&s));
        let measured_plain = parts(&run(&plain));
        assert_eq!(
            measured.service - measured_plain.service,
            floor.e2e - plain_floor.e2e,
            "{costs}: measured against the floor"
        );
    }
}

/// On a real device, a token's send cost shorter than a decode step hides behind the next
/// step's compute: only the last token's send (and the receive) lie on the path, so the
/// request grows by recv + send, not by recv + output × send, and the floor says the same.
#[test]
fn sends_shorter_than_a_step_hide_behind_compute() {
    let costs = "send_cost = { fixed = \"1ms\" }\nrecv_cost = { fixed = \"2ms\" }";
    let (s, plain) = (
        scenario("a100-80g", costs, 16, 8),
        scenario("a100-80g", "", 16, 8),
    );
    let shape = Shape {
        prompt: 16,
        output: 8,
    };
    let (floor, plain_floor) = (
        plan::plan(&s).unwrap().floor(shape),
        plan::plan(&plain).unwrap().floor(shape),
    );
    assert!(plain_floor.tpot > ms(1.0), "a decode step outlasts a send");
    assert_eq!(floor.e2e - plain_floor.e2e, ms(3.0));
    assert_eq!(floor.tpot, plain_floor.tpot);
    let (p, q) = (parts(&run(&s)), parts(&run(&plain)));
    assert_eq!(p.service - q.service, ms(3.0), "{q:?} {p:?}");
    assert_eq!(p.software, ms(3.0));
    assert_eq!((p.queue, p.compute), (q.queue, q.compute));
}
