//! The validator's unit tests: topology, clients and weights.

use crate::scenario::testing::ScenarioText;
use crate::scenario::{HedgeAfter, Scenario};
use std::time::Duration;

fn load(s: ScenarioText) -> Result<Scenario, String> {
    s.parse().map_err(|e| e.to_string())
}

fn link(s: ScenarioText, a: &str, b: &str) -> ScenarioText {
    s.link(a, b, "rtt = \"10ms\"")
}

#[test]
fn clients_and_shares_are_parsed() {
    let s = ScenarioText::new("t")
        .node("eu", "client", "share = 2.5")
        .client("us")
        .client("idle")
        .worker("gpu", "a100-80g", "");
    let s = link(link(s, "eu", "gpu"), "us", "gpu").topology(
        "direct",
        &["eu", "gpu"],
        "clients = [\"us\", \"eu\"]",
    );
    let s = load(s).unwrap();
    let ix = |n: &str| s.node_index(n).unwrap();
    assert_eq!(s.topology.clients, vec![ix("us"), ix("eu")]);
    assert_eq!(s.nodes[ix("eu")].share, 2.5);
    assert_eq!(s.nodes[ix("us")].share, 1.0);
    assert_eq!(s.topology.hedge_after, HedgeAfter::Percentile(95.0));
}

#[test]
fn clients_default_to_the_path_start() {
    let s = ScenarioText::new("t")
        .client("c")
        .worker("gpu", "a100-80g", "");
    let s = load(link(s, "c", "gpu")).unwrap();
    assert_eq!(s.topology.clients, vec![s.node_index("c").unwrap()]);
}

#[test]
fn another_client_needs_the_same_links() {
    let s = ScenarioText::new("t")
        .client("eu")
        .client("us")
        .worker("gpu", "a100-80g", "");
    let s = link(s, "eu", "gpu").topology("direct", &["eu", "gpu"], "clients = [\"eu\", \"us\"]");
    let e = load(s).unwrap_err();
    assert!(
        e.contains("field `topology.clients[1]`: client \"us\" takes the route of \"eu\": the route needs a link us -> gpu"),
        "{e}"
    );
}

fn hedged(hedge_after: &str) -> Result<Scenario, String> {
    let s = ScenarioText::new("t")
        .client("c")
        .worker("a", "a100-80g", "")
        .worker("b", "a100-80g", "");
    let s = link(link(s, "c", "a"), "c", "b").topology(
        "hedged",
        &["c", "a", "b"],
        &format!("hedge_after = \"{hedge_after}\""),
    );
    load(s)
}

#[test]
fn hedge_after_is_a_delay_or_a_percentile() {
    assert_eq!(
        hedged("30ms").unwrap().topology.hedge_after,
        HedgeAfter::Delay(Duration::from_millis(30))
    );
    assert_eq!(
        hedged("p99.9").unwrap().topology.hedge_after,
        HedgeAfter::Percentile(99.9)
    );
    assert_eq!(
        hedged("p95").unwrap().topology.hedge_after,
        HedgeAfter::Percentile(95.0)
    );
    for bad in ["p0", "p100", "pxx", "30", "30 parsecs"] {
        let e = hedged(bad).unwrap_err();
        assert!(e.contains("hedge_after"), "{bad}: {e}");
    }
}

fn pipeline(hops: &str, links: &[(&str, &str)]) -> Result<Scenario, String> {
    let mut s = ScenarioText::new("t")
        .client("c")
        .relay("r")
        .worker("a", "a100-80g", "layers = \"0..16\"")
        .worker("b", "a100-80g", "layers = \"16..32\"");
    for (x, y) in links {
        s = link(s, x, y);
    }
    load(s.topology(
        "pipeline",
        &["c", "a", "r", "b"],
        &format!("hops = \"{hops}\""),
    ))
}

#[test]
fn a_relay_may_stand_before_a_pipeline_stage() {
    let s = pipeline("client-relayed", &[("c", "a"), ("c", "r"), ("r", "b")]).unwrap();
    assert_eq!(s.topology.path.len(), 4);
    // Server to server: a -> r -> b, and the client's return stream c -> r -> b.
    pipeline(
        "server-to-server",
        &[("c", "a"), ("a", "r"), ("r", "b"), ("c", "r")],
    )
    .unwrap();
    let e = pipeline("server-to-server", &[("c", "a"), ("a", "r"), ("r", "b")]).unwrap_err();
    assert!(e.contains("the route needs a link c -> r"), "{e}");
    let e = pipeline("client-relayed", &[("c", "a"), ("c", "r")]).unwrap_err();
    assert!(e.contains("the route needs a link r -> b"), "{e}");
}

fn star(path: &[&str]) -> Result<Scenario, String> {
    let s = ScenarioText::new("t")
        .client("c")
        .worker("host", "a100-80g", "layers = \"0..0\"")
        .worker("a", "a100-80g", "layers = \"0..16\"")
        .worker("b", "a100-80g", "layers = \"16..32\"");
    let s = link(link(link(s, "c", "host"), "host", "a"), "host", "b");
    load(s.topology("star", path, ""))
}

#[test]
fn a_star_host_may_hold_no_layers() {
    let s = star(&["c", "host", "a", "b"]).unwrap();
    assert!(s.nodes[s.node_index("host").unwrap()].layers.is_empty());
    // Anywhere else an empty span is an error.
    let e = star(&["c", "a", "host", "b"]).unwrap_err();
    assert!(e.contains("layer span 0..0 is empty"), "{e}");
}

#[test]
fn tensor_workers_hold_a_slice_of_the_weights() {
    // Llama 2 70B in bf16 is about 138 GB: half of it is too much for a 40 GB device, a
    // quarter fits.
    let tensor = |workers: &[&str]| {
        let mut s = ScenarioText::new("t").preset("llama-2-70b").client("c");
        for w in workers {
            s = s.worker(w, "a100-40g", "");
        }
        s = link(s, "c", workers[0]);
        for w in &workers[1..] {
            s = link(s, workers[0], w);
        }
        let path: Vec<&str> = std::iter::once("c")
            .chain(workers.iter().copied())
            .collect();
        load(s.topology("tensor", &path, ""))
    };
    tensor(&["a", "b", "d", "e"]).unwrap();
    let e = tensor(&["a", "b"]).map(|_| ()).unwrap_err();
    assert!(e.contains("holds 1/2 of 80 layers"), "{e}");
}
