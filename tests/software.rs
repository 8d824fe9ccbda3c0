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

// ----- Software costs on the nodes of a split model (pipeline, star, tensor) -----

use inferlat::net::wire;
use inferlat::scenario::MessageCost;

/// A 4-layer, 300 M-parameter model in 16 bits.
const SMALL_MODEL: &str = "layers = 4\nhidden = 1024\nparams = 300000000\nkv_dim = 1024\nvocab = 32000\nweight_bytes = 2\nactivation_bytes = 2";

/// The small model, constant arrivals far apart (no queueing), 6 requests of 16 prompt
/// tokens and `output` output tokens, and a node `client`.
fn split_head(name: &str, output: u32) -> testing::ScenarioText {
    testing::ScenarioText::new(name)
        .top("seed = 5")
        .model(SMALL_MODEL)
        .workload(&format!(
            "prompt_tokens = 16\noutput_tokens = {output}\narrival = {{ kind = \"constant\", rate = 2.0 }}\nrequests = 6\nwarmup_requests = 1"
        ))
        .client("client")
}

/// `send_cost` and `recv_cost` fields of a `[[node]]`, from microseconds fixed and
/// nanoseconds per byte.
fn costs(send_us: u64, send_ns_per_byte: u64, recv_us: u64, recv_ns_per_byte: u64) -> String {
    format!(
        "send_cost = {{ fixed = \"{send_us}us\", per_byte = \"{send_ns_per_byte}ns\" }}\nrecv_cost = {{ fixed = \"{recv_us}us\", per_byte = \"{recv_ns_per_byte}ns\" }}"
    )
}

fn cost(fixed_us: u64, per_byte_ns: u64) -> MessageCost {
    MessageCost {
        fixed: Duration::from_micros(fixed_us),
        per_byte: per_byte_ns as f64 * 1e-9,
    }
}

/// Two ideal stages `s1` (layers 0..2) and `s2` (2..4), each with `stage_costs`, over
/// 0 ms links, run `hops`.
fn two_stages(hops: &str, stage_costs: &str, output: u32) -> Scenario {
    let mut s = split_head("pipe", output)
        .worker("s1", "ideal", &format!("layers = \"0..2\"\n{stage_costs}"))
        .worker("s2", "ideal", &format!("layers = \"2..4\"\n{stage_costs}"));
    for (a, b) in [("client", "s1"), ("client", "s2"), ("s1", "s2")] {
        s = s.link(a, b, "rtt = \"0ms\"");
    }
    s.topology(
        "pipeline",
        &["client", "s1", "s2"],
        &format!("hops = \"{hops}\""),
    )
    .parse()
    .expect("valid scenario")
}

/// The measured service time and the plan's floor e2e grow by the same amount, `want`,
/// from `plain` to `costly` (the same scenario without costs).
fn grows_by(
    plain: &Scenario,
    costly: &Scenario,
    output: u32,
    want: Duration,
) -> (Parts, RunRecord) {
    let shape = Shape { prompt: 16, output };
    let floor = plan::plan(costly).unwrap().floor(shape);
    let plain_floor = plan::plan(plain).unwrap().floor(shape);
    let r = run(costly);
    let (p, q) = (parts(&r), parts(&run(plain)));
    assert_eq!(p.service - q.service, want, "measured: {q:?} -> {p:?}");
    assert_eq!(floor.e2e - plain_floor.e2e, want, "the floor");
    assert_eq!((p.queue, p.compute), (q.queue, q.compute));
    (p, r)
}

/// A pipeline of two stages on the ideal device, both hop styles: every step each stage
/// receives the hidden states (its receive cost), computes nothing and sends them on (its
/// send cost), in turn. Client-relayed, each stage gets and returns all the step's
/// positions; server-to-server, the last stage returns only the last position's hidden
/// state to the client. So a request grows by exactly the sum over its steps and stages of
/// `fixed + per_byte × frame bytes`, all of it the software part, and the floor by as much.
#[test]
fn pipeline_stages_pay_for_every_activation_frame_they_receive_and_send() {
    let (send, recv) = (cost(300, 2), cost(500, 1));
    let text = costs(300, 2, 500, 1);
    let output = 4;
    // Hidden states of n positions: 1024 × 2 bytes each, in an activations frame.
    let frame = |n: u64| wire::activations_frame_len((n * 2048) as usize) as u64;
    for hops in ["client-relayed", "server-to-server"] {
        let mut want = Duration::ZERO;
        for k in 0..output {
            let n = if k == 0 { 16 } else { 1 };
            // Each stage receives n positions; s1 always sends n on; s2 sends n back
            // (client-relayed) or the last position's to the client (server-to-server).
            let last = if hops == "client-relayed" { n } else { 1 };
            want += recv.of(frame(n)) * 2 + send.of(frame(n)) + send.of(frame(last));
        }
        let (p, r) = grows_by(
            &two_stages(hops, "", output),
            &two_stages(hops, &text, output),
            output,
            want,
        );
        assert_eq!(p.software, want, "{hops}");
        // Each stage reports its own share per node.
        for stage in ["s1", "s2"] {
            let h = r
                .node_software(stage)
                .expect("the stage spent software time");
            assert!(h.max() > 0, "{hops}: {stage}");
        }
    }
}

/// A star of an ideal host holding no layers and one ideal remote holding all four,
/// over 0 ms links, calling it as `pattern`; `host` and `remote` are their cost fields.
fn star(pattern: &str, host: &str, remote: &str, output: u32) -> Scenario {
    split_head("star", output)
        .worker("host", "ideal", &format!("layers = \"0..0\"\n{host}"))
        .worker("gpu", "ideal", &format!("layers = \"0..4\"\n{remote}"))
        .link("client", "host", "rtt = \"0ms\"")
        .link("host", "gpu", "rtt = \"0ms\"")
        .topology(
            "star",
            &["client", "host", "gpu"],
            &format!("pattern = \"{pattern}\""),
        )
        .parse()
        .expect("valid scenario")
}

/// llama.cpp RPC's 2024 protocol waits for the reply to every call: per step and remote,
/// each call costs the host a send and the remote a receive, each reply the remote a send
/// and the host a receive, all in turn; the host then sends the token (a send) and the
/// request cost it one receive. The count of calls and the bytes of each come from the
/// pattern; the request grows by exactly their costs, and the software part holds them
/// all (the host waits on the remote at every call), each node's own share per node.
#[test]
fn a_star_pays_for_every_rpc_call_and_reply() {
    let (hs, hr, rs, rr) = (cost(40, 1), cost(70, 2), cost(25, 3), cost(55, 1));
    let host = costs(40, 1, 70, 2);
    let remote = costs(25, 3, 55, 1);
    let output = 3;
    let plain = star("llamacpp-rpc-2024", "", "", output);
    let costly = star("llamacpp-rpc-2024", &host, &remote, output);
    let p = plan::plan(&costly).unwrap();
    let gpu = p.nodes.iter().find(|n| n.name == "gpu").unwrap();
    let model = gpu.stage.as_ref().unwrap().model.clone();
    let frame = |b: u64| wire::activations_frame_len(b as usize) as u64;
    let request = (wire::HEADER_LEN + wire::request_payload_len(16, &["gpu"])) as u64;
    let (mut want, mut host) = (hr.of(request), hr.of(request));
    for k in 0..output {
        let (tokens, kv) = if k == 0 { (16, 16) } else { (1, 16 + k) };
        let calls = p.star.calls(&model, tokens, kv, 4);
        assert_eq!(calls.len(), 6, "four inputs, the graph, the output");
        for c in &calls {
            let reply = frame(c.reply.expect("every call waits in the 2024 protocol"));
            want += hs.of(frame(c.request)) + rr.of(frame(c.request));
            want += rs.of(reply) + hr.of(reply);
            host += hs.of(frame(c.request)) + hr.of(reply);
        }
        want += hs.of(wire::TOKEN_FRAME_LEN as u64);
        host += hs.of(wire::TOKEN_FRAME_LEN as u64);
    }
    let (parts, r) = grows_by(&plain, &costly, output, want);
    assert_eq!(parts.software, want);
    let h = r.node_software("host").expect("the host spent some");
    let host = host.as_nanos() as f64;
    assert!(
        (h.max() as f64 - host).abs() <= host * 1e-3,
        "{} vs {host}",
        h.max()
    );
    let g = r.node_software("gpu").expect("the remote spent some");
    let gpu = want.as_nanos() as f64 - host;
    assert!(
        (g.max() as f64 - gpu).abs() <= gpu * 1e-3,
        "{} vs {gpu}",
        g.max()
    );
}

/// After llama.cpp PR #12943 the four SET_TENSOR calls go without a reply: the host sends
/// them one after another (a send cost each), and the remote receives each when it has
/// arrived and the one before is received. With the remote's receive slower than the
/// host's send it falls behind, and the floor follows exactly how far; the measurement
/// agrees with it to the nanosecond. The same holds after PR #15405
/// (`llamacpp-rpc-recompute`), where the call that computes (`GRAPH_RECOMPUTE`) has no
/// reply either and only `GET_TENSOR` waits.
#[test]
fn calls_without_a_reply_queue_at_the_remote_as_the_floor_says() {
    let output = 3;
    for (pattern, host, remote) in [
        (
            "llamacpp-rpc-12943",
            costs(40, 1, 70, 2),
            costs(25, 3, 120, 1),
        ),
        (
            "llamacpp-rpc-12943",
            costs(200, 1, 10, 0),
            costs(5, 0, 30, 0),
        ),
        (
            "llamacpp-rpc-recompute",
            costs(40, 1, 70, 2),
            costs(25, 3, 120, 1),
        ),
        (
            "llamacpp-rpc-recompute",
            costs(200, 1, 10, 0),
            costs(5, 0, 30, 0),
        ),
    ] {
        let plain = star(pattern, "", "", output);
        let costly = star(pattern, &host, &remote, output);
        let shape = Shape { prompt: 16, output };
        let grow = plan::plan(&costly).unwrap().floor(shape).e2e
            - plan::plan(&plain).unwrap().floor(shape).e2e;
        assert!(grow > Duration::from_millis(1), "{grow:?}");
        grows_by(&plain, &costly, output, grow);
    }
}

/// A tensor group of an ideal root and `members` ideal members over 0 ms links, with
/// `pattern`; `root` and `member` are their cost fields.
fn group(pattern: &str, members: usize, root: &str, member: &str, output: u32) -> Scenario {
    let mut s = split_head("tp", output).worker("root", "ideal", root).link(
        "client",
        "root",
        "rtt = \"0ms\"",
    );
    let mut path = vec!["client".to_string(), "root".to_string()];
    for i in 0..members {
        let m = format!("w{i}");
        s = s
            .worker(&m, "ideal", member)
            .link("root", &m, "rtt = \"0ms\"");
        path.push(m);
    }
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    s.topology("tensor", &path, &format!("pattern = \"{pattern}\""))
        .parse()
        .expect("valid scenario")
}

/// distributed-llama 0.1's pattern on a root and 3 members, L = 4 layers: per token and
/// member the root sends 4·L messages (the broadcasts) and receives 4·L (the gathers), in
/// turn on its one thread, then sends the token; the request cost it one receive. With
/// fixed costs on the root only, the request grows by exactly
/// `recv + output × (M·(4L·send + 4L·recv) + send)`, all of it the software part.
#[test]
fn a_tensor_root_pays_for_every_message_of_its_pattern() {
    let (members, output) = (3u32, 3u32);
    let (send, recv) = (Duration::from_micros(10), Duration::from_micros(20));
    let root = costs(10, 0, 20, 0);
    let plain = group("dllama-0.1", members as usize, "", "", output);
    let costly = group("dllama-0.1", members as usize, &root, "", output);
    let (down, up) = costly.topology.pattern.messages(4);
    assert_eq!(
        (down, up),
        (16, 16),
        "8 synchronisations per layer, half each way"
    );
    let per_token = (send * down as u32 + recv * up as u32) * members + send;
    let want = recv + per_token * output;
    let (p, _) = grows_by(&plain, &costly, output, want);
    assert_eq!(p.software, want);
}

/// The same group with fixed costs on the members only: each broadcast costs every member
/// a receive and each gather a send, side by side; the root waits for them at every one of
/// the 4·L round trips per token, so the request grows by `4L·(recv + send)` per token. The
/// software part of the request is the root's (none); each member's own shows per node.
#[test]
fn tensor_members_costs_delay_the_root_at_every_round_trip() {
    let (members, output) = (3usize, 3u32);
    let (send, recv) = (Duration::from_micros(10), Duration::from_micros(20));
    let member = costs(10, 0, 20, 0);
    let plain = group("dllama-0.1", members, "", "", output);
    let costly = group("dllama-0.1", members, "", &member, output);
    let want = (recv + send) * 16 * output;
    let (p, r) = grows_by(&plain, &costly, output, want);
    assert_eq!(p.software, Duration::ZERO);
    for i in 0..members {
        let h = r
            .node_software(&format!("w{i}"))
            .expect("a member spent some");
        let each = want.as_nanos() as f64;
        assert!(
            (h.max() as f64 - each).abs() <= each * 1e-3,
            "w{i}: {} ns, want {each}",
            h.max()
        );
    }
}

/// Costs on every node of the group, with per-byte terms: the root's reads wait both for
/// the members' messages and for its own earlier reads. The floor walks the same
/// schedule and the measurement matches it exactly, for distributed-llama 0.1, 0.3.1
/// (whose members send the Q, K and V slices each after its own share of compute, without
/// waiting on the root in between) and 0.5 (whose first two messages of a step are both
/// broadcasts, back to back, as 0.3.1's poke and first broadcast are) and for the generic
/// all-reduce. (An exchange pattern, `dllama-0.12`, is not exact: the floor joins
/// every node's timeline at each exchange, docs/topologies.md.)
#[test]
fn a_tensor_group_with_costs_everywhere_keeps_to_its_floor() {
    let output = 3;
    for pattern in ["dllama-0.1", "dllama-0.3.1", "dllama-0.5", "allreduce"] {
        let (root, member) = (costs(15, 1, 9, 2), costs(4, 3, 30, 1));
        let plain = group(pattern, 3, "", "", output);
        let costly = group(pattern, 3, &root, &member, output);
        let shape = Shape { prompt: 16, output };
        let grow = plan::plan(&costly).unwrap().floor(shape).e2e
            - plan::plan(&plain).unwrap().floor(shape).e2e;
        assert!(grow > Duration::from_millis(1), "{pattern}: {grow:?}");
        grows_by(&plain, &costly, output, grow);
    }
}
