//! Physics of each topology kind on the virtual clock (deterministic): what crosses which
//! link, which route is faster, how tensor parallelism scales with the round trip, what
//! hedging buys and costs, and how several clients share the load.

use inferlat::clock::ClockKind;
use inferlat::harness::{self, Measured, Options};
use inferlat::plan::{self, Plan};
use inferlat::record::Metric;
use inferlat::scenario::testing::ScenarioText;
use inferlat::scenario::{self, ProfileLibrary, Scenario};
use std::ops::Range;
use std::path::Path;

fn scenario(s: &ScenarioText) -> Scenario {
    let text = s.build();
    scenario::parse(Path::new("test.toml"), &text, &ProfileLibrary::built_in())
        .unwrap_or_else(|e| panic!("valid scenario: {e}\n{text}"))
}

fn run(s: &Scenario) -> (Plan, Measured) {
    let plan = plan::plan(s).expect("plannable");
    let m = harness::run_to_end(s, &plan, &Options::default(), ClockKind::Virtual).expect("run");
    (plan, m)
}

fn ms(m: &Measured, metric: Metric, q: f64) -> f64 {
    let r = &m.topology.as_ref().expect("topology ran").record;
    assert_eq!(r.failed, 0, "failures: {:?}", r.errors);
    r.histogram(metric).value_at_quantile(q) as f64 / 1e6
}

/// The workload of the pipeline, relay and star scenarios: `prompt_tokens`-token prompts,
/// 6 output tokens, Poisson arrivals at 1 request/s, 12 requests, no warm-up.
fn workload(prompt_tokens: u32) -> String {
    format!(
        "prompt_tokens = {prompt_tokens}\noutput_tokens = 6\narrival = {{ kind = \"poisson\", rate = 1.0 }}\nrequests = 12\nwarmup_requests = 0"
    )
}

/// Seed 5, Llama 2 7B, [`workload`] with 32-token prompts, and a node `client`.
fn head(name: &str) -> ScenarioText {
    ScenarioText::new(name)
        .top("seed = 5")
        .workload(&workload(32))
        .client("client")
}

/// Three A100 stages of Llama 2 7B, each a `link` from the client and from the stage
/// before it, run with `hops`.
fn pipeline(hops: &str, link: &str) -> ScenarioText {
    let mut s = head("pipe");
    for (stage, layers) in [("s1", "0..11"), ("s2", "11..22"), ("s3", "22..32")] {
        s = s.worker(
            stage,
            "a100-80g",
            &format!("layers = \"{layers}\"\nmax_batch = 4"),
        );
    }
    for (a, b) in [
        ("client", "s1"),
        ("client", "s2"),
        ("client", "s3"),
        ("s1", "s2"),
        ("s2", "s3"),
    ] {
        s = s.link(a, b, link);
    }
    s.topology(
        "pipeline",
        &["client", "s1", "s2", "s3"],
        &format!("hops = \"{hops}\""),
    )
}

#[test]
fn server_to_server_never_takes_longer_than_client_relayed() {
    for link in [
        "rtt = \"2ms\"\nbandwidth = \"1Gbit/s\"",
        "rtt = \"100ms\"\nbandwidth = \"100Mbit/s\"",
        "rtt = \"40ms\"\njitter = \"5ms\"\nloss = \"0.5%\"",
    ] {
        let (rp, relayed) = run(&scenario(&pipeline("client-relayed", link)));
        let (sp, s2s) = run(&scenario(&pipeline("server-to-server", link)));
        for metric in [Metric::Ttft, Metric::Tpot, Metric::E2e] {
            for q in [0.5, 0.99] {
                let (a, b) = (ms(&s2s, metric, q), ms(&relayed, metric, q));
                assert!(
                    a <= b * 1.001,
                    "{link}: {metric} p{q}: server-to-server {a} ms > client-relayed {b} ms"
                );
            }
        }
        // Neither beats its floor, and each floor follows the route's link count.
        let shape = rp.typical;
        assert!(
            ms(&relayed, Metric::Tpot, 0.0) >= rp.floor(shape).tpot.as_secs_f64() * 1e3 * 0.999
        );
        assert!(ms(&s2s, Metric::Tpot, 0.0) >= sp.floor(shape).tpot.as_secs_f64() * 1e3 * 0.999);
        assert!(sp.floor(shape).tpot < rp.floor(shape).tpot);
        // Every stage and no one else reports its time in-band.
        let nodes: Vec<&str> = s2s
            .topology
            .as_ref()
            .unwrap()
            .record
            .nodes()
            .map(|n| n.0)
            .collect();
        assert_eq!(nodes, ["s1", "s2", "s3"]);
    }
}

/// A tensor group: a node `client`, a root on `root_device` 1 ms from it, and an ideal
/// member `w{i}` for each `i` in `members`, `rtt_ms` from the root. `head` names the
/// scenario and gives its model, workload and seed.
fn tensor_group(
    head: ScenarioText,
    root_device: &str,
    members: Range<usize>,
    rtt_ms: f64,
) -> ScenarioText {
    let members: Vec<String> = members.map(|i| format!("w{i}")).collect();
    let mut s = head.client("client").worker("root", root_device, "").link(
        "client",
        "root",
        "rtt = \"1ms\"",
    );
    let mut path = vec!["client", "root"];
    for m in &members {
        s = s
            .worker(m, "ideal", "")
            .link("root", m, &format!("rtt = \"{rtt_ms}ms\""));
        path.push(m);
    }
    s.topology("tensor", &path, "")
}

/// The workload of the small tensor groups: 16-token prompts, 5 output tokens, `requests`
/// requests arriving as `arrival`, no warm-up.
fn small_tensor_workload(arrival: &str, requests: u32) -> String {
    format!(
        "prompt_tokens = 16\noutput_tokens = 5\narrival = {arrival}\nrequests = {requests}\nwarmup_requests = 0"
    )
}

/// A 4-layer, 300 M-parameter model in 16 bits, so that the round trips dominate.
const SMALL_MODEL: &str = "layers = 4\nhidden = 1024\nparams = 300000000\nkv_dim = 1024\nvocab = 32000\nweight_bytes = 2\nactivation_bytes = 2";

/// The small model on a root on `root_device` and members `w0`..: one request a second,
/// three requests.
fn small_tensor(root_device: &str, rtt_ms: f64, members: usize) -> ScenarioText {
    let head = ScenarioText::new("tp")
        .top("seed = 5")
        .model(SMALL_MODEL)
        .workload(&small_tensor_workload(
            "{ kind = \"constant\", rate = 1.0 }",
            3,
        ));
    tensor_group(head, root_device, 0..members, rtt_ms)
}

fn tensor(rtt_ms: f64, members: usize) -> ScenarioText {
    small_tensor("ideal", rtt_ms, members)
}

#[test]
fn tensor_parallel_latency_grows_by_a_round_trip_per_synchronisation() {
    // 4 layers: per token an input broadcast, 2·L all-reduces (gather to the root and
    // broadcast back: a round trip each) and a logits gather: 2·L + 2 synchronisations,
    // (2·L + 1) round trips on the critical path.
    let l = 4.0;
    for members in [1, 3] {
        let (_, near) = run(&scenario(&tensor(1.0, members)));
        let (_, far) = run(&scenario(&tensor(11.0, members)));
        let per_token = ms(&far, Metric::Tpot, 0.5) - ms(&near, Metric::Tpot, 0.5);
        let round_trips = per_token / 10.0;
        assert!(
            (2.0 * l + 0.9..=2.0 * l + 2.0).contains(&round_trips),
            "{members} members: tpot grew by {per_token} ms for 10 ms of RTT: {round_trips} round trips"
        );
    }
}

#[test]
fn tensor_groups_under_load_never_deadlock() {
    // Four users at once on a group whose nodes each take one request at a time: the root
    // admits, the members follow it.
    let text = tensor(1.0, 2).workload(&small_tensor_workload(
        "{ kind = \"closed\", concurrency = 4 }",
        12,
    ));
    let (_, m) = run(&scenario(&text));
    let r = &m.topology.as_ref().unwrap().record;
    assert_eq!((r.completed, r.failed), (12, 0), "{:?}", r.errors);
    assert!(
        ms(&m, Metric::Ttft, 0.99) > ms(&m, Metric::Ttft, 0.0),
        "requests queued"
    );
}

#[test]
fn tensor_bytes_per_token_match_distributed_llama() {
    // REFERENCE.md: the root sends and receives 4·L·(N−1)·hidden·β bytes per token for the
    // all-reduces (Llama 3 8B, β = 1.0625: 544 KiB with 2 nodes, 1,632 KiB with 4).
    for (n, kib) in [(2usize, 544u64), (4, 1632)] {
        let head = ScenarioText::new("dllama")
            .model("preset = \"llama-3-8b\"\nactivation_bytes = 1.0625\nweight_bytes = 0.5625")
            .workload(
                "prompt_tokens = 16\noutput_tokens = 4\narrival = { kind = \"constant\", rate = 1.0 }\nrequests = 2",
            );
        let text = tensor_group(head, "ideal", 1..n, 1.0);
        let s = scenario(&text);
        let p = plan::plan(&s).unwrap();
        let (l, hb) = (s.model.layers as u64, p.hidden_bytes);
        assert_eq!(hb, 4352, "4096 × 1.0625");
        let root_traffic: u64 = p
            .hops
            .iter()
            .filter(|h| {
                (h.from == "root" || h.to == "root") && h.from != "client" && h.to != "client"
            })
            .map(|h| h.token_bytes)
            .sum();
        // Besides the all-reduces: the input broadcast and the logits gather, and a 17-byte
        // frame header on each of the 4·L + 2 messages per member.
        let members = (n - 1) as u64;
        let logits = p.logits_slice_bytes;
        let extra = members * (hb + logits + 17 * (4 * l + 2));
        assert_eq!(root_traffic - extra, 4 * l * members * hb);
        assert_eq!((root_traffic - extra) / 1024, kib);
    }
}

#[test]
fn petals_client_traffic_per_decode_step_is_two_hidden_states_per_server() {
    // REFERENCE.md: per decode step with k servers, client-side traffic 2·k·hidden·β bytes
    // (BLOOM-176B in fp16: hidden state 28,672 B).
    let mut text = ScenarioText::new("petals")
        .model("preset = \"bloom-176b\"\nweight_bytes = 1")
        .workload(
            "prompt_tokens = 16\noutput_tokens = 4\narrival = { kind = \"constant\", rate = 1.0 }\nrequests = 2",
        )
        .client("client");
    for (stage, layers) in [("s1", "0..24"), ("s2", "24..47"), ("s3", "47..70")] {
        text = text.worker(stage, "a100-80g", &format!("layers = \"{layers}\""));
    }
    for stage in ["s1", "s2", "s3"] {
        text = text.link("client", stage, "rtt = \"100ms\"");
    }
    let text = text.topology("pipeline", &["client", "s1", "s2", "s3"], "");
    let p = plan::plan(&scenario(&text)).unwrap();
    assert_eq!(p.hidden_bytes, 28_672);
    let client: u64 = p
        .hops
        .iter()
        .filter(|h| h.from == "client" || h.to == "client")
        .map(|h| h.token_bytes)
        .sum();
    assert_eq!(client, 2 * 3 * (28_672 + 17));
    // The prompt's hidden states cross each hop at prefill: 16 tokens.
    let up = p
        .hops
        .iter()
        .find(|h| h.from == "client" && h.to == "s2")
        .unwrap();
    assert!(up.prefill_bytes >= 16 * 28_672);
}

/// Two A100 replicas 10 ms away, `slow` with Pareto jitter of 150 ms, hedged after
/// `after` in the order `replicas`.
fn hedged(after: &str, replicas: [&str; 2]) -> ScenarioText {
    ScenarioText::new("hedge")
        .top("seed = 9")
        .workload(
            "prompt_tokens = 32\noutput_tokens = 4\narrival = { kind = \"poisson\", rate = 2.0 }\nrequests = 60\nwarmup_requests = 0",
        )
        .client("client")
        .worker("fast", "a100-80g", "max_batch = 8")
        .worker("slow", "a100-80g", "max_batch = 8")
        .link("client", "fast", "rtt = \"10ms\"")
        .link(
            "client",
            "slow",
            "rtt = \"10ms\"\njitter = \"150ms\"\njitter_distribution = \"pareto\"",
        )
        .topology(
            "hedged",
            &["client", replicas[0], replicas[1]],
            &format!("hedge_after = \"{after}\""),
        )
}

#[test]
fn hedging_lowers_p99_when_one_replica_is_slow_and_reports_its_copies() {
    let (_, never) = run(&scenario(&hedged("1h", ["fast", "slow"])));
    let (_, hedge) = run(&scenario(&hedged("40ms", ["fast", "slow"])));
    let (a, b) = (
        ms(&hedge, Metric::Ttft, 0.99),
        ms(&never, Metric::Ttft, 0.99),
    );
    assert!(a < b * 0.7, "hedged ttft p99 {a} ms vs unhedged {b} ms");
    let none = &never.topology.as_ref().unwrap().record;
    assert_eq!(none.extra_copies, 0);
    let r = &hedge.topology.as_ref().unwrap().record;
    assert!(
        r.extra_copies > 0 && r.hedge_wins > 0,
        "{} copies, {} wins",
        r.extra_copies,
        r.hedge_wins
    );
    assert!(r.extra_copies >= r.hedge_wins);
    // Half the requests start on the slow replica; the copies stay well under one each.
    assert!((r.extra_copies as f64) < 0.8 * r.completed as f64);
}

/// A client behind a gateway relay (20 ms) in front of one A100 (80 ms).
fn gateway_relay() -> ScenarioText {
    head("relay")
        .relay("gateway")
        .worker("gpu", "a100-80g", "")
        .link("client", "gateway", "rtt = \"20ms\"")
        .link("gateway", "gpu", "rtt = \"80ms\"")
        .topology("relay", &["client", "gateway", "gpu"], "")
}

#[test]
fn relay_and_star_keep_to_their_floors() {
    let relay = gateway_relay();
    let star = head("star")
        .worker("host", "a100-80g", "layers = \"0..0\"")
        .worker("gpu", "a100-80g", "layers = \"0..32\"")
        .link("client", "host", "rtt = \"1ms\"")
        .link("host", "gpu", "rtt = \"10ms\"")
        .topology("star", &["client", "host", "gpu"], "");
    for text in [relay, star] {
        let (p, m) = run(&scenario(&text));
        let f = p.floor(p.typical);
        let ttft = ms(&m, Metric::Ttft, 0.0);
        let tpot = ms(&m, Metric::Tpot, 0.5);
        assert!(
            ttft >= f.ttft.as_secs_f64() * 1e3 * 0.999,
            "{}: ttft {ttft} below floor {:?}",
            p.kind,
            f.ttft
        );
        // At one request a second nothing queues: the decode step is the floor's.
        let floor = f.tpot.as_secs_f64() * 1e3;
        assert!(
            (tpot - floor).abs() < 0.05 * floor + 0.1,
            "{}: tpot {tpot} vs floor {floor}",
            p.kind
        );
    }
}

#[test]
fn clients_share_the_load_by_their_weights() {
    let text = ScenarioText::new("two-clients")
        .top("seed = 2")
        .workload(
            "prompt_tokens = 2000\noutput_tokens = 2\narrival = { kind = \"poisson\", rate = 20.0 }\nrequests = 400\nwarmup_requests = 0",
        )
        .node("eu", "client", "share = 3")
        .client("us")
        .worker("gpu", "ideal", "")
        .link("eu", "gpu", "rtt = \"10ms\"")
        .link("us", "gpu", "rtt = \"80ms\"")
        .topology("direct", &["eu", "gpu"], "clients = [\"eu\", \"us\"]");
    let (_, m) = run(&scenario(&text));
    let bytes = |from: &str| {
        m.links
            .iter()
            .find(|l| l.from == from && l.to == "gpu")
            .map(|l| l.stats.bytes as f64)
            .unwrap()
    };
    // The prompts' 8 kB dominate what each client sends.
    let ratio = bytes("eu") / bytes("us");
    assert!((2.4..3.7).contains(&ratio), "eu/us bytes {ratio}");
    // Each client's own latencies: the far one's requests are the slow ones.
    let r = &m.topology.as_ref().unwrap().record;
    let clients: Vec<(&str, u64, f64)> = r
        .clients()
        .map(|(n, t, _)| (n, t.len(), t.value_at_quantile(0.5) as f64 / 1e6))
        .collect();
    assert_eq!(clients.len(), 2);
    let (eu, us) = (clients[0], clients[1]);
    assert_eq!((eu.0, us.0), ("eu", "us"));
    assert_eq!(eu.1 + us.1, r.completed);
    let split = eu.1 as f64 / us.1 as f64;
    assert!((2.4..3.7).contains(&split), "eu/us requests {split}");
    assert!(eu.2 < 20.0 && us.2 >= 80.0, "{clients:?}");
    // Pooled, the far client's requests make a two-level distribution.
    assert!(ms(&m, Metric::Ttft, 0.5) < 20.0);
    assert!(ms(&m, Metric::Ttft, 0.9) >= 80.0);
}

#[test]
fn floors_hold_for_mixed_tensor_groups_and_any_hedged_replica() {
    // A root slower than its member: the root computes while the member's round trip runs.
    let mixed = small_tensor("a100-80g", 1.0, 1);
    // A hedged pair whose first listed replica is the far one.
    let far_first = hedged("1h", ["slow", "fast"]);
    for text in [mixed, far_first] {
        let (p, m) = run(&scenario(&text));
        let f = p.floor(p.typical);
        // (A jittered path can bunch tokens behind a late first one, so tpot can dip under
        // the decode step; ttft and e2e cannot beat their floors.)
        for (metric, floor) in [(Metric::Ttft, f.ttft), (Metric::E2e, f.e2e)] {
            let low = ms(&m, metric, 0.0);
            let floor = floor.as_secs_f64() * 1e3;
            assert!(
                low >= floor * 0.999,
                "{}: {metric} min {low} ms below floor {floor} ms",
                p.kind
            );
        }
    }
}

#[test]
fn hidden_states_past_the_frame_limit_are_refused_when_planned() {
    // 9,000 tokens of Llama 2 7B hidden states: 73.7 MB, past the 64 MiB frame limit.
    let text = pipeline("client-relayed", "rtt = \"2ms\"").workload(&workload(9000));
    let e = plan::plan(&scenario(&text)).unwrap_err().to_string();
    assert!(
        e.contains("9000 tokens") && e.contains("frame limit"),
        "{e}"
    );
}

#[test]
fn a_pipeline_stage_is_not_charged_the_lm_head_its_client_runs() {
    // Llama 2 7B in bf16: 402 MB of weights per layer, 262 MB of LM head. The last stage's
    // 16 layers (6.44 GB) fit in 6.6 GB; with the head (6.70 GB) they would not, but a
    // pipeline's client runs the head.
    let dev = r#"device = { memory = "6.6GB", flops = "100TFLOP/s", mem_bandwidth = "1TB/s", efficiency = { compute = 0.5, memory = 0.5 } }"#;
    let pipeline = |split: u32| {
        ScenarioText::new("pipe-head")
            .node("client", "client", "device = \"a100-80g\"")
            .node("s1", "worker", &format!("{dev}\nlayers = \"0..{split}\""))
            .node("s2", "worker", &format!("{dev}\nlayers = \"{split}..32\""))
            .link("client", "s1", "rtt = \"1ms\"")
            .link("client", "s2", "rtt = \"1ms\"")
            .link("s1", "s2", "rtt = \"1ms\"")
            .topology("pipeline", &["client", "s1", "s2"], "")
            .parse()
    };
    let fits = pipeline(16);
    assert!(
        fits.is_ok(),
        "{}",
        fits.err().map(|e| e.to_string()).unwrap_or_default()
    );
    // 17 layers (6.84 GB) do not fit, head or no head.
    let too_many = match pipeline(15) {
        Ok(_) => panic!("17 layers of 402 MB fit in 6.6 GB"),
        Err(e) => e.to_string(),
    };
    assert!(too_many.contains("\"s2\" holds 17 layers"), "{too_many}");
}

#[test]
fn validate_prints_the_lm_head_time_of_a_star_host() {
    let s = scenario::load(Path::new("scenarios/llamacpp-rpc-gigabit.toml")).unwrap();
    let text = inferlat::report::table::plan_text(&s, &plan::plan(&s));
    let host = text
        .lines()
        .find(|l| l.contains("compute   host"))
        .expect("a compute line for the host");
    assert!(host.contains("(0 layers and the LM head)"), "{host}");
    assert!(!host.contains("prefill 0 us"), "{host}");
}

/// A 4-layer model whose feed-forward width (2,816, estimated from the parameters: 4 layers
/// of 2·1024·(1024 + 1024) attention and 3·1024·2816 gated-MLP weights beside 2 × 4000 ×
/// 1024 embeddings) and vocabulary keep every message of a pattern under QUIC's initial
/// congestion window, so the round trips alone set the time.
const PATTERN_MODEL: &str = "layers = 4\nhidden = 1024\nparams = 59572224\nkv_dim = 1024\nvocab = 4000\nweight_bytes = 2\nactivation_bytes = 2";

/// A tensor group running `pattern`: a root and `members` members, all on `device`, the
/// members `rtt_ms` from the root; three requests of 16 prompt and 5 output tokens.
fn patterned(pattern: &str, device: &str, members: usize, rtt_ms: f64) -> ScenarioText {
    let mut s = ScenarioText::new("tp")
        .top("seed = 5")
        .model(PATTERN_MODEL)
        .workload(&small_tensor_workload(
            "{ kind = \"constant\", rate = 1.0 }",
            3,
        ))
        .client("client")
        .worker("root", device, "")
        .link("client", "root", "rtt = \"1ms\"");
    let names: Vec<String> = (0..members).map(|i| format!("w{i}")).collect();
    let mut path = vec!["client", "root"];
    for m in &names {
        s = s
            .worker(m, device, "")
            .link("root", m, &format!("rtt = \"{rtt_ms}ms\""));
        path.push(m);
    }
    s.topology("tensor", &path, &format!("pattern = \"{pattern}\""))
}

/// Each preset's synchronisations cost what their directions say, on the virtual clock with
/// ideal devices: a broadcast followed by a gather is a round trip, an exchange one way.
/// `allreduce`: 2·L + 1 round trips per token; `dllama-0.1` (four gathers per layer, each
/// after a broadcast): 4·L; `dllama-0.3.1` (six gathers per layer, but Q, K and V follow one
/// broadcast with only the members' compute between them, so a member sends K and V
/// without waiting on the root): 4·L as well; `dllama-0.5` (distributed-llama v0.5.0's
/// six synchronisations per layer, three of them gathers, the LM head on the root): 3·L;
/// `dllama-0.12` (the input broadcast, two exchanges per layer, the logits gather): 2·L + 2
/// one-way trips, L + 1 round trips. The counts come from the sources' task lists, so the
/// test shows the harness runs each pattern's synchronisations and no others.
#[test]
fn each_tensor_pattern_costs_its_round_trips_per_token() {
    let l = 4.0;
    for (pattern, round_trips) in [
        ("allreduce", 2.0 * l + 1.0),
        ("dllama-0.1", 4.0 * l),
        ("dllama-0.3.1", 4.0 * l),
        ("dllama-0.5", 3.0 * l),
        ("dllama-0.12", l + 1.0),
    ] {
        for members in [1, 3] {
            let (p, near) = run(&scenario(&patterned(pattern, "ideal", members, 1.0)));
            let (_, far) = run(&scenario(&patterned(pattern, "ideal", members, 11.0)));
            let grew = ms(&far, Metric::Tpot, 0.5) - ms(&near, Metric::Tpot, 0.5);
            let measured = grew / 10.0;
            assert!(
                (round_trips - 0.1..=round_trips + 1.0).contains(&measured),
                "{pattern}, {members} members: tpot grew by {grew} ms for 10 ms of RTT: {measured} round trips, expected {round_trips}"
            );
            // The floor counts the same trips.
            let floor_far = plan::plan(&scenario(&patterned(pattern, "ideal", members, 11.0)))
                .unwrap()
                .floor(p.typical)
                .tpot;
            let floor_grew =
                floor_far.as_secs_f64() * 1e3 - p.floor(p.typical).tpot.as_secs_f64() * 1e3;
            assert!(
                (floor_grew / 10.0 - round_trips).abs() < 1e-6,
                "{pattern}: the floor grew by {floor_grew} ms"
            );
        }
    }
}

/// The bytes per token on each root ↔ member link of the two distributed-llama presets,
/// worked out by hand from the sources (REFERENCE.md for v0.12's per-layer total): each
/// message is its payload plus a 17-byte frame header.
#[test]
fn dllama_patterns_move_the_bytes_their_sources_say() {
    let hop = |p: &Plan, from: &str, to: &str| {
        p.hops
            .iter()
            .find(|h| h.from == from && h.to == to)
            .unwrap_or_else(|| panic!("{from} → {to}"))
            .token_bytes
    };
    let group = |preset: &str, pattern: &str, members: usize| {
        let head = ScenarioText::new("dllama")
            .model(&format!("preset = \"{preset}\""))
            .workload(
                "prompt_tokens = 16\noutput_tokens = 4\narrival = { kind = \"constant\", rate = 1.0 }\nrequests = 2",
            );
        let text =
            tensor_group(head, "ideal", 0..members, 1.0).raw(&format!("pattern = \"{pattern}\""));
        plan::plan(&scenario(&text)).unwrap()
    };
    // v0.5, Llama 2 7B (h = 4096, ffn = 11008), 4 nodes, Q80: per layer from the root
    // h·β (4,352 B) twice and the ffn slices a worker lacks, 3 × 2,752 values (8,772 B);
    // to the root the attention's hidden-wide partial sum (4,352 B: TB_SLICED_XBV is dim ×
    // nSlices), ffn/4 (2,924 B) and h/4 (1,088 B); sendPos's 4 bytes first; no logits (the
    // root runs the LM head).
    let p = group("llama-2-7b", "dllama-0.5", 3);
    let frame = 17;
    assert_eq!(
        hop(&p, "root", "w1"),
        4 + frame + 32 * (2 * (4352 + frame) + 8772 + frame)
    );
    assert_eq!(
        hop(&p, "w1", "root"),
        32 * ((4352 + frame) + (2924 + frame) + (1088 + frame))
    );
    // v0.12, Llama 3 8B, 2 nodes: 2·L exchanges of 4,352 B each way, plus the 32-bit input
    // (16,384 B) down and the 32-bit logits slice (64,128 × 4 B) up. The exchanges alone
    // are REFERENCE's 544 KiB per token in and out of the root.
    let text = inferlat::report::table::plan_text(
        &scenario(
            &tensor_group(
                ScenarioText::new("dllama").model("preset = \"llama-2-7b\""),
                "ideal",
                0..3,
                1.0,
            )
            .raw("pattern = \"dllama-0.5\""),
        ),
        &Ok(p.clone()),
    );
    assert!(
        text.contains("pattern   dllama-0.5: per token 97 messages from the root to each member, 96 back; on the root only: the LM head"),
        "{text}"
    );
    let p = group("llama-3-8b", "dllama-0.12", 1);
    let (down, up) = (hop(&p, "root", "w0"), hop(&p, "w0", "root"));
    assert_eq!(down, 16_384 + frame + 64 * (4352 + frame));
    assert_eq!(up, 64 * (4352 + frame) + 64_128 * 4 + frame);
    let exchanges = down - (16_384 + frame) + up - (64_128 * 4 + frame) - 2 * 64 * frame;
    assert_eq!(exchanges / 1024, 544);
}

/// What crossed each root ↔ member link in a run of `dllama-0.5` and `dllama-0.12` is the
/// pattern's bytes for every step of every request (the plan's prefill and per-token bytes,
/// three requests of one prefill and four decode steps) plus QUIC's own (packet headers,
/// acknowledgements, the handshake): never less, and no more than QUIC's share allows.
#[test]
fn a_tensor_run_carries_exactly_its_patterns_bytes() {
    for pattern in ["dllama-0.5", "dllama-0.12"] {
        let (p, m) = run(&scenario(&patterned(pattern, "ideal", 2, 1.0)));
        let r = &m.topology.as_ref().unwrap().record;
        assert_eq!((r.completed, r.failed), (3, 0), "{:?}", r.errors);
        for hop in p
            .hops
            .iter()
            .filter(|h| h.from != "client" && h.to != "client")
        {
            let link = m
                .links
                .iter()
                .find(|l| l.from == hop.from && l.to == hop.to)
                .unwrap();
            let app = 3 * (hop.prefill_bytes + 4 * hop.token_bytes);
            let sent = link.stats.bytes;
            assert!(
                sent >= app,
                "{pattern} {} → {}: {sent} bytes sent, the pattern alone is {app}",
                hop.from,
                hop.to
            );
            let quic = 64 * link.stats.datagrams + 8 * 1024;
            assert!(
                sent <= app + quic,
                "{pattern} {} → {}: {sent} bytes sent for {app} of the pattern's in {} datagrams",
                hop.from,
                hop.to,
                link.stats.datagrams
            );
        }
    }
}

/// With `dllama-0.5` the LM head runs on the root only: on equal devices the root's
/// compute per request exceeds a member's by exactly the whole head's time over the
/// request's steps, and a member's is its layers' share alone. With `allreduce` every node
/// computes its slice of the head, so the root and a member compute the same.
#[test]
fn root_only_lm_head_appears_on_the_roots_compute_only() {
    let compute = |m: &Measured, node: &str| {
        let r = &m.topology.as_ref().unwrap().record;
        assert_eq!(r.failed, 0, "{:?}", r.errors);
        let (_, _, c) = r.nodes().find(|(n, _, _)| *n == node).unwrap();
        c.mean() / 1e6
    };
    let (p, m) = run(&scenario(&patterned("dllama-0.5", "a100-80g", 2, 1.0)));
    let root = p.nodes.iter().find(|n| n.name == "root").unwrap();
    let member = p.nodes.iter().find(|n| n.name == "w0").unwrap();
    assert!(member.head.is_none(), "a member holds no LM head");
    let head = root.head.as_ref().unwrap();
    assert_eq!(
        head.model.vocab, 4000,
        "the root's head is the whole vocabulary"
    );
    let shape = p.typical;
    let head_ms = head
        .request(shape.prompt, shape.output)
        .total()
        .as_secs_f64()
        * 1e3;
    let layers = member.stage.as_ref().unwrap();
    let layers_ms = layers
        .request(shape.prompt, shape.output)
        .total()
        .as_secs_f64()
        * 1e3;
    let (r, w) = (compute(&m, "root"), compute(&m, "w0"));
    assert!(
        (w - layers_ms).abs() < layers_ms * 0.002,
        "member computes {w} ms, its layers {layers_ms} ms"
    );
    assert!(
        (r - w - head_ms).abs() < (r * 0.002).max(1e-3),
        "root {r} ms − member {w} ms is not the head's {head_ms} ms"
    );
    let (_, even) = run(&scenario(&patterned("allreduce", "a100-80g", 2, 1.0)));
    let (r, w) = (compute(&even, "root"), compute(&even, "w0"));
    assert!((r - w).abs() < r * 0.002, "root {r} ms, member {w} ms");
}

#[test]
fn a_pattern_on_another_kind_or_of_an_unknown_name_is_refused() {
    let text = pipeline("client-relayed", "rtt = \"2ms\"").raw("pattern = \"dllama-0.12\"");
    let e = scenario::parse(
        Path::new("t.toml"),
        &text.build(),
        &ProfileLibrary::built_in(),
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`pattern` applies to tensor and star topologies, not pipeline"),
        "{e}"
    );
    let text = patterned("dllama-9", "ideal", 1, 1.0);
    let e = scenario::parse(
        Path::new("t.toml"),
        &text.build(),
        &ProfileLibrary::built_in(),
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("unknown tensor pattern \"dllama-9\"") && e.contains("dllama-0.12"),
        "{e}"
    );
}

/// distributed-llama's README (commit 25e6fd4, 2024-01-12, kept to v0.5.0) published the
/// network transfer per generated token with Q80 buffers: what the root sends to and
/// receives from its workers, for Llama 2 7B, 13B and 70B on 2, 4 and 8 devices. The
/// `dllama-0.1` preset is that code's task list (src/transformer-tasks.cpp at v0.1.0); no
/// figure of it was fitted to the table. Its bytes per token on the root's links, frame
/// headers taken off, match every cell to 0.2 % (the README's "kB" are 1,024 bytes, its
/// figures truncated).
#[test]
fn dllama_01_reproduces_its_published_network_transfer_per_token() {
    let published = [
        ("llama-2-7b", 2, 590.0, 522.0),
        ("llama-2-7b", 4, 2046.0, 784.0),
        ("llama-2-7b", 8, 5094.0, 914.0),
        ("llama-2-13b", 2, 924.0, 818.0),
        ("llama-2-13b", 4, 3203.0, 1227.0),
        ("llama-2-13b", 8, 7976.0, 1431.0),
        ("llama-2-70b", 2, 3230.0, 2295.0),
        ("llama-2-70b", 4, 11475.0, 3442.0),
        ("llama-2-70b", 8, 28857.0, 4016.0),
    ];
    for (preset, devices, sent_kb, received_kb) in published {
        let head = ScenarioText::new("dllama")
            .model(&format!("preset = \"{preset}\""))
            .workload(
                "prompt_tokens = 16\noutput_tokens = 4\narrival = { kind = \"constant\", rate = 1.0 }\nrequests = 2",
            );
        let text = tensor_group(head, "ideal", 0..devices - 1, 1.0).raw("pattern = \"dllama-0.1\"");
        let s = scenario(&text);
        let p = plan::plan(&s).unwrap();
        let (down, up) = p.pattern.messages(s.model.layers);
        let root = |from_root: bool| -> f64 {
            let frames = 17 * if from_root { down } else { up };
            p.hops
                .iter()
                .filter(|h| h.from != "client" && h.to != "client")
                .filter(|h| (h.from == "root") == from_root)
                .map(|h| (h.token_bytes - frames) as f64)
                .sum::<f64>()
                / 1024.0
        };
        for (what, got, want) in [
            ("sent", root(true), sent_kb),
            ("received", root(false), received_kb),
        ] {
            assert!(
                (got - want).abs() / want < 0.002,
                "{preset} on {devices} devices: the root {what} {got:.1} kB per token, published {want} kB"
            );
        }
    }
}

/// The table form of `pattern`: a table that copies `dllama-0.12` from the source's list
/// moves the same bytes on every link and has the same floor as the preset. This shows
/// that a table maps onto the same synchronisations; it is a parsing test, not physics.
#[test]
fn a_pattern_table_runs_like_the_preset_it_copies() {
    let table = r#"pattern = { start = [{ direction = "from-root", values = "hidden", bytes_per_value = 4 }], layer = [{ direction = "exchange", values = "hidden", bytes_per_value = 1.0625 }, { direction = "exchange", values = "hidden", bytes_per_value = 1.0625 }], end = [{ direction = "to-root", values = "vocab", share = "slice", bytes_per_value = 4 }] }"#;
    let preset = plan::plan(&scenario(&patterned("dllama-0.12", "ideal", 2, 5.0))).unwrap();
    let text = patterned("dllama-0.12", "ideal", 2, 5.0)
        .build()
        .replace("pattern = \"dllama-0.12\"", table);
    let s = scenario::parse(Path::new("t.toml"), &text, &ProfileLibrary::built_in()).unwrap();
    let custom = plan::plan(&s).unwrap();
    assert_eq!(custom.pattern.name, "custom");
    for (a, b) in preset.hops.iter().zip(&custom.hops) {
        assert_eq!(
            (a.prefill_bytes, a.token_bytes),
            (b.prefill_bytes, b.token_bytes)
        );
    }
    assert_eq!(preset.floor(preset.typical), custom.floor(custom.typical));
}

/// Attention over the context and the LM head kept on the root by a pattern table: in a
/// run on equal A100s a member's compute per request is its slice of the layers without
/// attention, and the root's exceeds it by the attention of every head plus the whole LM
/// head (the plan's stages, measured in the run's per-node breakdown).
#[test]
fn root_only_attention_appears_on_the_roots_compute_only() {
    let table = r#"pattern = { layer = [{ direction = "from-root", values = "hidden" }, { direction = "to-root", values = "hidden" }], root_only = ["attention", "lm_head"] }"#;
    let text = patterned("allreduce", "a100-80g", 1, 1.0)
        .build()
        .replace("pattern = \"allreduce\"", table);
    let s = scenario::parse(Path::new("t.toml"), &text, &ProfileLibrary::built_in()).unwrap();
    let (p, m) = run(&s);
    let r = &m.topology.as_ref().unwrap().record;
    assert_eq!(r.failed, 0, "{:?}", r.errors);
    let compute = |node: &str| {
        let (_, _, c) = r.nodes().find(|(n, _, _)| *n == node).unwrap();
        c.mean() / 1e6
    };
    let shape = p.typical;
    let total = |st: &inferlat::compute::Stage| {
        st.request(shape.prompt, shape.output).total().as_secs_f64() * 1e3
    };
    let (root, member) = (&p.nodes[0], &p.nodes[1]);
    assert_eq!(member.stage.as_ref().unwrap().model.kv_dim, 0);
    let member_ms = total(member.stage.as_ref().unwrap());
    let root_ms = total(root.stage.as_ref().unwrap()) + total(root.head.as_ref().unwrap());
    assert!(root_ms > member_ms);
    let (rm, wm) = (compute("root"), compute("w0"));
    assert!(
        (wm - member_ms).abs() < member_ms * 0.002,
        "member {wm} ms, plan {member_ms} ms"
    );
    assert!(
        (rm - root_ms).abs() < root_ms * 0.002,
        "root {rm} ms, plan {root_ms} ms"
    );
}

#[test]
fn a_pattern_message_past_the_frame_limit_is_refused_when_planned() {
    // 16 prompt tokens of a 64-byte-per-value vocabulary-wide payload: 16 × 4000 × 64 B is
    // 4 MB, under the limit; 2,000 tokens make 512 MB, past the 64 MiB frame limit.
    let table = r#"pattern = { layer = [{ direction = "from-root", values = "hidden" }, { direction = "to-root", values = "vocab", bytes_per_value = 64 }] }"#;
    let text = patterned("allreduce", "ideal", 1, 1.0)
        .build()
        .replace("pattern = \"allreduce\"", table);
    let s = scenario::parse(Path::new("t.toml"), &text, &ProfileLibrary::built_in()).unwrap();
    plan::plan(&s).expect("16 tokens fit");
    let long = text.replace("prompt_tokens = 16", "prompt_tokens = 2000");
    let s = scenario::parse(Path::new("t.toml"), &long, &ProfileLibrary::built_in()).unwrap();
    let e = plan::plan(&s).unwrap_err().to_string();
    assert!(
        e.contains("frame limit") && e.contains("2000 tokens"),
        "{e}"
    );
}

/// A star of an `ideal` host holding no layers and one ideal remote holding all four of
/// [`PATTERN_MODEL`]'s layers, `rtt_ms` apart, under `pattern` (none: the default); three
/// requests of 16 prompt and 5 output tokens.
fn rpc_star(pattern: Option<&str>, rtt_ms: f64) -> ScenarioText {
    let extra = pattern.map_or(String::new(), |p| format!("pattern = \"{p}\""));
    ScenarioText::new("rpc")
        .top("seed = 5")
        .model(PATTERN_MODEL)
        .workload(&small_tensor_workload(
            "{ kind = \"constant\", rate = 1.0 }",
            3,
        ))
        .client("client")
        .worker("host", "ideal", "layers = \"0..0\"")
        .worker("gpu", "ideal", "layers = \"0..4\"")
        .link("client", "host", "rtt = \"1ms\"")
        .link("host", "gpu", &format!("rtt = \"{rtt_ms}ms\""))
        .topology("star", &["client", "host", "gpu"], &extra)
}

/// Per token a star pays its pattern's synchronous round trips to each remote stage, on
/// the virtual clock over real QUIC with ideal devices: when the host ↔ remote RTT grows
/// by 10 ms, tpot grows by k × 10 ms, with k read from the sources: 1 for the default
/// (one frame each way), 6 for `llamacpp-rpc-2024` (four SET_TENSOR, GRAPH_COMPUTE and
/// GET_TENSOR, each waiting for its reply: ggml-rpc.cpp's send_rpc_cmd at PR #6829), 2
/// for `llamacpp-rpc-12943` (PR #12943: SET_TENSOR no longer waits), 1 for
/// `llamacpp-rpc-recompute` (PR #15405's GRAPH_RECOMPUTE goes without a reply too: only
/// GET_TENSOR waits). The floor counts the same trips.
#[test]
fn a_star_pays_its_patterns_round_trips_per_token() {
    for (pattern, k) in [
        (None, 1.0),
        (Some("llamacpp-rpc-2024"), 6.0),
        (Some("llamacpp-rpc-12943"), 2.0),
        (Some("llamacpp-rpc-recompute"), 1.0),
    ] {
        let (p, near) = run(&scenario(&rpc_star(pattern, 1.0)));
        let (_, far) = run(&scenario(&rpc_star(pattern, 11.0)));
        let measured = (ms(&far, Metric::Tpot, 0.5) - ms(&near, Metric::Tpot, 0.5)) / 10.0;
        assert!(
            (k - 0.1..=k + 0.5).contains(&measured),
            "{pattern:?}: tpot grew by {measured} × 10 ms, expected {k}"
        );
        let floor_far = plan::plan(&scenario(&rpc_star(pattern, 11.0)))
            .unwrap()
            .floor(p.typical)
            .tpot;
        let floor_grew = (floor_far.as_secs_f64() - p.floor(p.typical).tpot.as_secs_f64()) * 1e3;
        assert!(
            (floor_grew / 10.0 - k).abs() < 1e-6,
            "{pattern:?}: the floor grew by {floor_grew} ms"
        );
    }
}

/// The bytes per decode token on the host ↔ remote link, worked by hand from ggml-rpc's
/// serialization formats for [`PATTERN_MODEL`] (hidden 1,024, 4 layers) at the typical
/// request's first decode step (16 + 1 positions in the cache: the KQ mask's n_kv is 32),
/// each message in a 17-byte frame: `llamacpp-rpc-2024` sends four SET_TENSOR (9-byte
/// command header, 296-byte rpc_tensor, 8-byte offset, then 4 × 1,024 B, 4 B, 32 × 32 ×
/// 4 B, 4 B), GRAPH_COMPUTE (9 + 4 + 134 nodes × 8 + 4 + 182 tensors × 296) and
/// GET_TENSOR (9 + 296 + 16), and takes back four empty replies (8 B), the 1-byte status
/// (9 B) and the 32-bit output (8 + 4,096 B). The default sends one frame of h·β each way
/// (2,048 + 17 B), as before there were patterns; and a run carries at least those bytes.
#[test]
fn a_stars_link_bytes_per_token_follow_its_pattern() {
    let hop = |p: &Plan, from: &str, to: &str| {
        p.hops
            .iter()
            .find(|h| h.from == from && h.to == to)
            .unwrap()
            .token_bytes
    };
    let frame = 17;
    let set = 9 + 296 + 8;
    let up = [
        set + 4096,
        set + 4,
        set + 32 * 32 * 4,
        set + 4,
        9 + 4 + 134 * 8 + 4 + 182 * 296,
        9 + 296 + 16,
    ];
    let down = [8, 8, 8, 8, 9, 8 + 4096];
    let sum = |xs: &[u64]| xs.iter().map(|x| x + frame).sum::<u64>();
    let s = scenario(&rpc_star(Some("llamacpp-rpc-2024"), 1.0));
    let p = plan::plan(&s).unwrap();
    let text = inferlat::report::table::plan_text(&s, &Ok(p.clone()));
    assert!(
        text.contains("pattern   llamacpp-rpc-2024: per token 6 calls to each remote stage, 6 of them waiting for a reply"),
        "{text}"
    );
    assert_eq!(hop(&p, "host", "gpu"), sum(&up));
    assert_eq!(hop(&p, "gpu", "host"), sum(&down));
    // After PR #12943 the same requests, and no SET_TENSOR replies.
    let p = plan::plan(&scenario(&rpc_star(Some("llamacpp-rpc-12943"), 1.0))).unwrap();
    assert_eq!(hop(&p, "host", "gpu"), sum(&up));
    assert_eq!(hop(&p, "gpu", "host"), sum(&down[4..]));
    let p = plan::plan(&scenario(&rpc_star(None, 1.0))).unwrap();
    assert_eq!(hop(&p, "host", "gpu"), 2048 + frame);
    assert_eq!(hop(&p, "gpu", "host"), 2048 + frame);
    // What a run of the 2024 pattern carries: every request's prefill and four decode
    // steps of the pattern's bytes (the mask and the graph as the plan sizes them), plus
    // QUIC's own.
    let (p, m) = run(&scenario(&rpc_star(Some("llamacpp-rpc-2024"), 1.0)));
    for (from, to) in [("host", "gpu"), ("gpu", "host")] {
        let h = p
            .hops
            .iter()
            .find(|h| h.from == from && h.to == to)
            .unwrap();
        let link = m
            .links
            .iter()
            .find(|l| l.from == from && l.to == to)
            .unwrap();
        let app = 3 * (h.prefill_bytes + 4 * h.token_bytes);
        let sent = link.stats.bytes;
        assert!(
            sent >= app,
            "{from} → {to}: {sent} bytes sent, the pattern alone {app}"
        );
        assert!(
            sent <= app + 64 * link.stats.datagrams + 8 * 1024,
            "{from} → {to}: {sent} bytes for {app} of the pattern's"
        );
    }
}

#[test]
fn a_star_pattern_must_be_a_star_preset() {
    let parse = |text: ScenarioText| {
        scenario::parse(
            Path::new("t.toml"),
            &text.build(),
            &ProfileLibrary::built_in(),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let e = parse(rpc_star(Some("dllama-0.12"), 1.0));
    assert!(
        e.contains("unknown star pattern \"dllama-0.12\"") && e.contains("llamacpp-rpc-2024"),
        "{e}"
    );
    let e = parse(patterned("llamacpp-rpc-2024", "ideal", 1, 1.0));
    assert!(
        e.contains("unknown tensor pattern \"llamacpp-rpc-2024\""),
        "{e}"
    );
}

/// `text` with `[quic] nagle` set.
fn with_nagle(text: &ScenarioText, on: bool) -> Scenario {
    scenario(&text.clone().raw(&format!("[quic]\nnagle = {on}")))
}

/// Every kind of topology runs with `nagle = true` (its requests, hidden states, tokens,
/// synchronisations, star calls and relayed bytes all written under Nagle's algorithm):
/// every request completes, every connection records it, and nothing gets faster for it,
/// since Nagle's algorithm only ever holds bytes back (no link here has a rate limit or a
/// queue that holding could relieve). `tests/transport.rs` measures what it costs.
#[test]
fn every_topology_kind_runs_under_nagle_and_none_is_faster_for_it() {
    let relay = gateway_relay();
    let cases = [
        ("relay", relay),
        ("star", rpc_star(None, 20.0)),
        (
            "star, llamacpp-rpc-2024",
            rpc_star(Some("llamacpp-rpc-2024"), 20.0),
        ),
        ("tensor", tensor(20.0, 2)),
        (
            "pipeline, client-relayed",
            pipeline("client-relayed", "rtt = \"40ms\""),
        ),
        (
            "pipeline, server-to-server",
            pipeline("server-to-server", "rtt = \"40ms\""),
        ),
        ("hedged", hedged("40ms", ["slow", "fast"])),
    ];
    for (name, text) in cases {
        let (_, off) = run(&with_nagle(&text, false));
        let (_, on) = run(&with_nagle(&text, true));
        let done = |m: &Measured| {
            let r = &m.topology.as_ref().expect("topology ran").record;
            assert_eq!(r.failed, 0, "{name}: {:?}", r.errors);
            r.completed
        };
        assert_eq!(done(&on), done(&off), "{name}");
        for c in &on.connections {
            assert!(c.nagle, "{name}: {} -> {} without Nagle", c.from, c.to);
        }
        assert!(off.connections.iter().all(|c| !c.nagle), "{name}");
        eprintln!(
            "{name}: ttft p50 {:.3} -> {:.3} ms, e2e p50 {:.3} -> {:.3} ms",
            ms(&off, Metric::Ttft, 0.5),
            ms(&on, Metric::Ttft, 0.5),
            ms(&off, Metric::E2e, 0.5),
            ms(&on, Metric::E2e, 0.5)
        );
        if name == "hedged" {
            // Which replica answers first depends on the timing: no order to assert.
            continue;
        }
        for (metric, q) in [(Metric::Ttft, 0.0), (Metric::Ttft, 0.5), (Metric::E2e, 0.5)] {
            let (a, b) = (ms(&on, metric, q), ms(&off, metric, q));
            assert!(
                a >= b * 0.999,
                "{name}: {metric:?} at {q} is {a} ms under Nagle, {b} ms without"
            );
        }
    }
}
