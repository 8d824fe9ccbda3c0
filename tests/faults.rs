//! Outages on the virtual clock: a link that drops everything for longer than QUIC's idle
//! timeout closes the connection for good, and the client dials again once the link is
//! back, as a real client does, so the requests after the outage are served.

use inferlat::clock::ClockKind;
use inferlat::harness::{self, Options};
use inferlat::plan;
use inferlat::scenario::{self, ProfileLibrary};
use std::path::Path;

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
