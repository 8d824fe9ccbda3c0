//! Outages on the virtual clock: a link that drops everything for longer than QUIC's idle
//! timeout closes the connection for good, and the client dials again once the link is
//! back, as a real client does, so the requests after the outage are served.

use inferlat::clock::ClockKind;
use inferlat::harness::{self, Options};
use inferlat::plan;
use inferlat::scenario::{self, ProfileLibrary};
use std::path::Path;
use std::time::Duration;

/// The quickstart at one request every 2 s for 200 s, its link dropping every datagram
/// from 20 s to 110 s of the measured phase (90 s, past the 60 s idle timeout).
fn outage() -> scenario::Scenario {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("scenarios/quickstart.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text[..text.find("[reference]").unwrap()]
        .replace("duration = \"20s\"", "duration = \"200s\"")
        .replace(
            "arrival = { kind = \"poisson\", rate = 1.5 }",
            "arrival = { kind = \"constant\", rate = 0.5 }",
        )
        .replace(
            "bandwidth = \"1Gbit/s\"\n",
            "bandwidth = \"1Gbit/s\"\n\n[[link.change]]\nat = \"20s\"\nloss = \"100%\"\n\n[[link.change]]\nat = \"110s\"\n",
        );
    scenario::parse(&path, &text, &ProfileLibrary::for_scenario(&path)).unwrap()
}

#[test]
fn after_an_outage_past_the_idle_timeout_the_client_reconnects_and_requests_are_served() {
    let s = outage();
    let p = plan::plan(&s).unwrap();
    let m = harness::run_to_end(&s, &p, &Options::default(), ClockKind::Virtual).unwrap();
    let t = &m.topology.as_ref().unwrap().record;
    assert_eq!(t.completed + t.failed, 100, "{:?}", t.errors);
    // 10 requests before the outage and the 45 scheduled after it are served (before the
    // client dialled again, all 90 after the first 10 failed); those sent into the outage
    // fail, or wait for the link and the new connection within the drain timeout.
    assert!(
        t.completed >= 55,
        "{} completed: {:?}",
        t.completed,
        t.errors
    );
    assert!(
        !t.errors.keys().any(|e| e.contains("opening a stream")),
        "{:?}",
        t.errors
    );
    // The baseline has no network: untouched.
    assert_eq!(m.baseline.as_ref().unwrap().record.completed, 100);
}

#[test]
fn a_relay_reconnects_to_its_worker_after_an_outage_past_the_idle_timeout() {
    use inferlat::scenario::testing::ScenarioText;
    let s = ScenarioText::new("relay-outage")
        .workload(
            "prompt_tokens = 16\noutput_tokens = 4\narrival = { kind = \"constant\", rate = 0.5 }\nduration = \"200s\"",
        )
        .client("client")
        .relay("relay")
        .worker("gpu", "a100-80g", "")
        .link("client", "relay", "rtt = \"10ms\"")
        .link(
            "relay",
            "gpu",
            "rtt = \"10ms\"\n\n[[link.change]]\nat = \"20s\"\nloss = \"100%\"\n\n[[link.change]]\nat = \"110s\"",
        )
        .topology("relay", &["client", "relay", "gpu"], "")
        .parse()
        .unwrap();
    let p = plan::plan(&s).unwrap();
    let m = harness::run_to_end(&s, &p, &Options::default(), ClockKind::Virtual).unwrap();
    let t = &m.topology.as_ref().unwrap().record;
    assert_eq!(t.completed + t.failed, 100, "{:?}", t.errors);
    // The relay's connection to the worker timed out in the outage; the 45 requests
    // after it are served through a new one.
    assert!(
        t.completed >= 55,
        "{} completed: {:?}",
        t.completed,
        t.errors
    );
}

// `[[fault]]`s (docs/faults.md): one test per kind and per recovery path, on the virtual
// clock. Each asserts what the fault must do physically (which requests it can and cannot
// lose, what a recovery must resend), not numbers taken from a run of the model itself.

use inferlat::record::RunRecord;
use inferlat::scenario::testing::ScenarioText;

/// Runs the topology alone (no co-located run, no baseline) and returns its record.
fn topology_run(s: &scenario::Scenario) -> RunRecord {
    let p = plan::plan(s).unwrap();
    let options = Options {
        colocated: false,
        ..Options::default()
    };
    let m = harness::run_to_end(s, &p, &options, ClockKind::Virtual).unwrap();
    let r = m.topology.unwrap().record;
    // What the run did, for whoever reads the test's output (--nocapture).
    eprintln!(
        "{}: {} completed, {} failed, {:?}, e2e max {:.0} ms, errors {:?}",
        s.name,
        r.completed,
        r.failed,
        r.faults,
        r.ladder(inferlat::record::Metric::E2e).max,
        r.errors
    );
    r
}

/// Every failure of the run was blamed on `fault` (its error names it).
fn all_lost_to(r: &RunRecord, fault: &str) {
    for (e, n) in &r.errors {
        assert!(
            e.starts_with(&format!("lost to fault {fault}")),
            "{n} failed with {e:?}, not lost to {fault}"
        );
    }
    assert_eq!(r.faults.lost, r.failed, "{:?}", r.errors);
}

/// A direct worker at one request a second for 60 s (32-token answers take well under a
/// second on an A100), with `faults` appended.
fn direct(faults: &str) -> scenario::Scenario {
    ScenarioText::new("crash")
        .workload(
            "prompt_tokens = 128\noutput_tokens = 32\narrival = { kind = \"constant\", rate = 1.0 }\nduration = \"60s\"",
        )
        .client("client")
        .worker("gpu-a", "a100-80g", "")
        .link("client", "gpu-a", "rtt = \"20ms\"\nbandwidth = \"1Gbit/s\"")
        .raw(faults)
        .parse()
        .unwrap()
}

/// A crash with a restart loses only the requests that its outage can touch: those in
/// flight at 20 s and those sent while the worker was down or before the client noticed
/// (at most one idle timeout after the restart; here the default 60 s is longer than the
/// run, so only until the restarted worker's reset reached the client). The requests sent
/// before the crash all complete, and so do the later ones once the client has dialled
/// again: at 1 request/s, 60 requests, at least the 19 before it and a share after it.
#[test]
fn a_crash_with_a_restart_loses_the_requests_it_touches_and_serves_the_later_ones() {
    let r = topology_run(&direct(
        "[[fault]]\nkind = \"crash\"\nnode = \"gpu-a\"\nat = \"20s\"\nfor = \"5s\"",
    ));
    assert_eq!(r.completed + r.failed, 60, "{:?}", r.errors);
    assert_eq!(r.faults.injected, 1);
    all_lost_to(&r, "crash(gpu-a) at 20s");
    // Requests sent at 20 s to 24 s cannot be served by a worker that is down: its links
    // drop everything, and it forgets their streams. At most three more can be touched:
    // QUIC's probes back off while the worker is down, so the client may hear of the
    // restart (the reset of its old connection) a couple of seconds after 25 s.
    assert!(
        (5..=8).contains(&r.failed),
        "{} failed: {:?}",
        r.failed,
        r.errors
    );
    // The 20 requests before the crash completed (each takes well under a second), and
    // every request from 28 s on (32 of them) too, over a new connection.
    assert!(
        r.completed >= 52,
        "{} completed: {:?}",
        r.completed,
        r.errors
    );
    assert!(r.faults.dropped_datagrams > 0);
}

/// A crash with no restart on a topology with no recovery (a direct worker): every request
/// from the crash on fails, with the fault's name, and the ones before it complete.
#[test]
fn a_crash_without_a_restart_fails_every_later_request_with_the_faults_name() {
    let r = topology_run(&direct(
        "[[fault]]\nkind = \"crash\"\nnode = \"gpu-a\"\nat = \"30s\"",
    ));
    assert_eq!(r.completed + r.failed, 60, "{:?}", r.errors);
    all_lost_to(&r, "crash(gpu-a) at 30s");
    // Requests at 0..29 s finished before the crash (each takes well under a second); the
    // 30 from 30 s on cannot be served.
    assert_eq!(r.completed, 30, "{:?}", r.errors);
    assert_eq!(r.failed, 30, "{:?}", r.errors);
}

/// A client-relayed pipeline of two stages (Llama 2 7B, 16 layers each) sending one long
/// generation (16-token prompt, 1,200 tokens) over 50 Mbit/s links, with stage b crashing at
/// `at` for 2 s.
fn pipeline(fault_at: Option<&str>) -> scenario::Scenario {
    let fault = fault_at.map_or(String::new(), |at| {
        format!("[[fault]]\nkind = \"crash\"\nnode = \"gpu-b\"\nat = \"{at}\"\nfor = \"2s\"")
    });
    ScenarioText::new("replay")
        .workload(
            "prompt_tokens = 16\noutput_tokens = 1200\narrival = { kind = \"constant\", rate = 0.01 }\nrequests = 1",
        )
        .client("client")
        .worker("gpu-a", "a100-80g", "layers = \"0..16\"")
        .worker("gpu-b", "a100-80g", "layers = \"16..32\"")
        .link("client", "gpu-a", "rtt = \"10ms\"\nbandwidth = \"50Mbit/s\"")
        .link("client", "gpu-b", "rtt = \"10ms\"\nbandwidth = \"50Mbit/s\"")
        .topology("pipeline", &["client", "gpu-a", "gpu-b"], "hops = \"client-relayed\"")
        .raw(&fault)
        .parse()
        .unwrap()
}

/// Petals' recovery: the session on the crashed stage is opened again once its server is
/// back, and the prompt plus every token generated so far is replayed there as one
/// prefill. The request completes with all its tokens; the replay sends prompt + k tokens
/// (k: the tokens before the failure), so a crash late in the generation replays more
/// tokens and costs more time than the same crash early: the hidden states alone are
/// (prompt + k) × 4,096 × 2 bytes each way over a 50 Mbit/s link, about 1.3 ms a token.
#[test]
fn a_pipeline_replays_the_tokens_so_far_and_a_late_crash_costs_more_than_an_early_one() {
    let clean = topology_run(&pipeline(None));
    assert_eq!(clean.completed, 1, "{:?}", clean.errors);
    let e2e =
        |r: &RunRecord| Duration::from_secs_f64(r.ladder(inferlat::record::Metric::E2e).max / 1e3);
    let clean_e2e = e2e(&clean);
    // One token every 20 ms or more (two stages, a round trip of 10 ms to each, then the
    // compute): 1,200 tokens take more than 24 s, so both crashes (1 s and 25 s) fall
    // inside the generation.
    assert!(clean_e2e > Duration::from_secs(28), "{clean_e2e:?}");
    assert!(clean_e2e < Duration::from_secs(96), "{clean_e2e:?}");
    let early = topology_run(&pipeline(Some("1s")));
    let late = topology_run(&pipeline(Some("25s")));
    for (name, r) in [("early", &early), ("late", &late)] {
        assert_eq!(r.completed, 1, "{name}: {:?}", r.errors);
        assert_eq!(r.faults.injected, 1, "{name}");
        assert!(r.faults.failovers >= 1, "{name}: {:?}", r.faults);
        // Replays are prompt + k with 0 < k < 1,200.
        assert!(
            r.faults.replayed_tokens > 16
                && r.faults.replayed_tokens < 16 + 1200 * r.faults.failovers,
            "{name}: {:?}",
            r.faults
        );
    }
    // The late crash came after 24 s more of generation, at 20 ms a token or more: up to
    // 1,200 more tokens, and at least 300 more (every token took under 80 ms).
    assert!(
        late.faults.replayed_tokens > early.faults.replayed_tokens + 300,
        "early {:?}, late {:?}",
        early.faults,
        late.faults
    );
    // Both lose the same 2 s of outage and notice it the same way; the late one also sends
    // its extra replayed tokens' hidden states there and back: at least half of that time.
    let extra = late.faults.replayed_tokens - early.faults.replayed_tokens;
    let bytes = extra as f64 * 4096.0 * 2.0 * 2.0;
    let floor = Duration::from_secs_f64(0.5 * bytes * 8.0 / 50e6);
    let (pe, pl) = (e2e(&early) - clean_e2e, e2e(&late) - clean_e2e);
    assert!(
        pl > pe + floor,
        "penalty early {pe:?}, late {pl:?}, floor {floor:?}"
    );
}

/// Two A100 replicas 10 ms away, hedged only after 1 h (so no copy is sent for speed), one
/// request of 16 prompt tokens and 400 output tokens, `fault` appended; QUIC notices a dead
/// peer after 2 s of silence.
fn hedged(fault: &str) -> scenario::Scenario {
    ScenarioText::new("failover")
        .workload(
            "prompt_tokens = 16\noutput_tokens = 400\narrival = { kind = \"constant\", rate = 0.01 }\nrequests = 1",
        )
        .client("client")
        .worker("gpu-a", "a100-80g", "")
        .worker("gpu-b", "a100-80g", "")
        .link("client", "gpu-a", "rtt = \"10ms\"")
        .link("client", "gpu-b", "rtt = \"10ms\"")
        .topology("hedged", &["client", "gpu-a", "gpu-b"], "hedge_after = \"1h\"")
        .raw("[quic]\nidle_timeout = \"2s\"\nkeep_alive = \"500ms\"")
        .raw(fault)
        .parse()
        .unwrap()
}

/// The replica answering request 0 (gpu-a, the first in turn) crashes for good half-way
/// through: the client fails over to gpu-b once QUIC gives the connection up, sending the
/// prompt and the tokens received so far as gpu-b's prompt. The request completes with
/// all 400 tokens, one failover is counted, and the replayed tokens are 16 plus the tokens
/// received before the crash, which is more than none and fewer than all.
#[test]
fn a_hedged_client_fails_over_to_the_surviving_replica_with_the_tokens_so_far() {
    let r = topology_run(&hedged(
        "[[fault]]\nkind = \"crash\"\nnode = \"gpu-a\"\nat = \"1s\"",
    ));
    assert_eq!(r.completed, 1, "{:?}", r.errors);
    assert_eq!(r.output_tokens, 400);
    assert_eq!(r.faults.failovers, 1, "{:?}", r.faults);
    let got = r.faults.replayed_tokens - 16;
    assert!(got > 0 && got < 400, "{:?}", r.faults);
    // The crash of the replica it does not use costs nothing.
    let other = topology_run(&hedged(
        "[[fault]]\nkind = \"crash\"\nnode = \"gpu-b\"\nat = \"1s\"",
    ));
    assert_eq!(other.completed, 1, "{:?}", other.errors);
    assert_eq!(other.faults.failovers, 0);
}

/// A client, a relay and a worker, one request a second for `secs` seconds, `fault` and
/// `quic` appended.
fn relayed(secs: u32, fault: &str) -> scenario::Scenario {
    ScenarioText::new("partition")
        .workload(&format!(
            "prompt_tokens = 16\noutput_tokens = 8\narrival = {{ kind = \"constant\", rate = 1.0 }}\nduration = \"{secs}s\""
        ))
        .client("client")
        .relay("relay")
        .worker("gpu", "a100-80g", "")
        .link("client", "relay", "rtt = \"10ms\"")
        .link("relay", "gpu", "rtt = \"10ms\"")
        .topology("relay", &["client", "relay", "gpu"], "")
        .raw(fault)
        .parse()
        .unwrap()
}

/// A partition between the client and its relay shorter than QUIC's idle timeout (5 s
/// against 60 s) loses nothing: the connection survives, QUIC retransmits once it heals,
/// and the requests sent into it finish late. The one sent as it began waits at least
/// most of the 5 s.
#[test]
fn a_short_partition_between_client_and_relay_delays_requests_and_loses_none() {
    let clean = topology_run(&relayed(40, ""));
    let r = topology_run(&relayed(
        40,
        "[[fault]]\nkind = \"partition\"\nbetween = [\"client\", \"relay\"]\nat = \"20s\"\nfor = \"5s\"",
    ));
    assert_eq!(r.failed, 0, "{:?}", r.errors);
    assert_eq!(r.completed, 40);
    assert_eq!(r.faults.injected, 1);
    assert!(r.faults.dropped_datagrams > 0);
    let max = |r: &RunRecord| r.ladder(inferlat::record::Metric::E2e).max;
    assert!(max(&clean) < 500.0, "{}", max(&clean));
    assert!(max(&r) > 4_000.0, "{}", max(&r));
}

/// A partition longer than the idle timeout (70 s against 60 s) closes the connection:
/// the requests sent into it fail, named by the partition, and once it heals the client
/// dials the relay again and the requests after it are served.
#[test]
fn a_long_partition_between_client_and_relay_is_recovered_after_it_heals() {
    let r = topology_run(&relayed(
        150,
        "[[fault]]\nkind = \"partition\"\nbetween = [\"client\", \"relay\"]\nat = \"20s\"\nfor = \"70s\"",
    ));
    assert_eq!(r.completed + r.failed, 150, "{:?}", r.errors);
    all_lost_to(&r, "partition(client | relay) at 20s");
    // The 20 requests before it and the 60 from its end (90 s) on complete, the last ones
    // once the client has dialled again; of the 70 sent into it, those sent in its first
    // 40 s cannot outlast it within their 30 s timeout.
    assert!(
        (40..=70).contains(&r.failed),
        "{} failed: {:?}",
        r.failed,
        r.errors
    );
    assert!(
        r.completed >= 80,
        "{} completed: {:?}",
        r.completed,
        r.errors
    );
}

/// A direct worker, two requests a second for 60 s; a 30 % loss burst on its link from 20
/// s to 30 s. The burst drops datagrams only while it lasts: the requests sent outside it
/// run as fast as on a clean link (the same ttft ladder up to the burst's requests), the
/// worst request is slower than the clean run's worst, and nothing fails.
#[test]
fn a_loss_burst_drops_datagrams_and_slows_requests_only_while_it_lasts() {
    let s = |fault: &str| {
        ScenarioText::new("burst")
            .workload(
                "prompt_tokens = 128\noutput_tokens = 16\narrival = { kind = \"constant\", rate = 2.0 }\nduration = \"60s\"",
            )
            .client("client")
            .worker("gpu-a", "a100-80g", "")
            .link("client", "gpu-a", "rtt = \"20ms\"")
            .raw(fault)
            .parse()
            .unwrap()
    };
    let clean = topology_run(&s(""));
    let r = topology_run(&s(
        "[[fault]]\nkind = \"loss\"\nbetween = [\"client\", \"gpu-a\"]\nloss = \"30%\"\nat = \"20s\"\nfor = \"10s\"",
    ));
    assert_eq!(r.failed, 0, "{:?}", r.errors);
    assert_eq!(r.faults.lost, 0);
    assert!(r.faults.dropped_datagrams > 0);
    let e2e = inferlat::record::Metric::E2e;
    assert!(r.ladder(e2e).max > clean.ladder(e2e).max);
    // Per 1-second interval of completions: outside the burst (and a second after it for
    // the retransmissions in flight) every interval's worst request is as on the clean link.
    let worst = |rec: &RunRecord| -> std::collections::BTreeMap<u64, u64> {
        rec.intervals()
            .filter(|(_, m, _)| *m == e2e)
            .map(|(start, _, h)| (start.as_secs(), h.max()))
            .collect()
    };
    let (wc, wf) = (worst(&clean), worst(&r));
    let mut slower_inside = false;
    for (sec, max) in &wf {
        let base = wc.get(sec).copied().unwrap_or(0);
        if (20..32).contains(sec) {
            slower_inside |= *max > base + base / 10;
        } else {
            assert!(
                *max <= base + base / 100,
                "second {sec}: {max} ns against {base} ns clean"
            );
        }
    }
    assert!(
        slower_inside,
        "no interval in the burst was slower: {wf:?} against {wc:?}"
    );
}

/// A server-to-server pipeline (Petals 2) of three stages whose middle one crashes for 2 s
/// during a 400-token generation: the client builds the chain again once the stage is back
/// and replays the prompt and the tokens so far through it, so the request completes with
/// every token, and the replay carries more than the prompt and fewer than all the tokens.
/// Without a restart, nothing holds the span and the request is lost to the crash.
#[test]
fn a_server_to_server_pipeline_rebuilds_its_chain_and_replays_after_a_stage_restarts() {
    let s = |fault: &str| {
        ScenarioText::new("chain")
            .workload(
                "prompt_tokens = 16\noutput_tokens = 400\narrival = { kind = \"constant\", rate = 0.01 }\nrequests = 1",
            )
            .client("client")
            .worker("s1", "a100-80g", "layers = \"0..10\"")
            .worker("s2", "a100-80g", "layers = \"10..20\"")
            .worker("s3", "a100-80g", "layers = \"20..32\"")
            .link("client", "s1", "rtt = \"10ms\"")
            .link("s1", "s2", "rtt = \"10ms\"")
            .link("s2", "s3", "rtt = \"10ms\"")
            .link("client", "s3", "rtt = \"10ms\"")
            .topology(
                "pipeline",
                &["client", "s1", "s2", "s3"],
                "hops = \"server-to-server\"",
            )
            .raw(fault)
            .parse()
            .unwrap()
    };
    let r = topology_run(&s(
        "[[fault]]\nkind = \"crash\"\nnode = \"s2\"\nat = \"2s\"\nfor = \"2s\"",
    ));
    assert_eq!(r.completed, 1, "{:?}", r.errors);
    assert_eq!(r.output_tokens, 400);
    assert!(r.faults.failovers >= 1, "{:?}", r.faults);
    let per = r.faults.replayed_tokens / r.faults.failovers;
    assert!(per > 16 && per < 416, "{:?}", r.faults);
    let lost = topology_run(&s(
        "[[fault]]\nkind = \"crash\"\nnode = \"s2\"\nat = \"2s\"",
    ));
    assert_eq!(lost.completed, 0);
    all_lost_to(&lost, "crash(s2) at 2s");
}

/// A client-relayed pipeline whose second span (16..32) is held by b and, off the path, by a
/// standby server b2 that the client also reaches. b crashes for good at 1 s of a
/// 300-token generation: once QUIC gives b's connection up (2 s of silence), the client
/// moves the session to b2 and replays the prompt and the tokens so far there. The request
/// completes with every token, b2 computed for it, and the replay is more than the prompt
/// and fewer than all the tokens. Without b2 nothing holds the span and the request is
/// lost to the crash.
#[test]
fn a_pipeline_moves_a_failed_stage_to_a_standby_server_holding_its_span() {
    let s = |standby: bool| {
        let mut t = ScenarioText::new("standby")
            .workload(
                "prompt_tokens = 16\noutput_tokens = 300\narrival = { kind = \"constant\", rate = 0.01 }\nrequests = 1",
            )
            .client("client")
            .worker("a", "a100-80g", "layers = \"0..16\"")
            .worker("b", "a100-80g", "layers = \"16..32\"")
            .link("client", "a", "rtt = \"10ms\"")
            .link("client", "b", "rtt = \"10ms\"");
        if standby {
            t = t.worker("b2", "a100-80g", "layers = \"16..32\"").link(
                "client",
                "b2",
                "rtt = \"10ms\"",
            );
        }
        t.topology(
            "pipeline",
            &["client", "a", "b"],
            "hops = \"client-relayed\"",
        )
        .raw("[quic]\nidle_timeout = \"2s\"\nkeep_alive = \"500ms\"")
        .raw("[[fault]]\nkind = \"crash\"\nnode = \"b\"\nat = \"1s\"")
        .parse()
        .unwrap()
    };
    let r = topology_run(&s(true));
    assert_eq!(r.completed, 1, "{:?}", r.errors);
    assert_eq!(r.output_tokens, 300);
    assert_eq!(r.faults.failovers, 1, "{:?}", r.faults);
    assert!(
        r.faults.replayed_tokens > 16 && r.faults.replayed_tokens < 316,
        "{:?}",
        r.faults
    );
    assert!(r.nodes().any(|(n, _, _)| n == "b2"), "b2 computed nothing");
    let lost = topology_run(&s(false));
    assert_eq!(lost.completed, 0);
    all_lost_to(&lost, "crash(b) at 1s");
}
