//! The shipped 1,000-node swarm (`scenarios/swarm/petals-swarm-1000.toml`, issue 15): it
//! validates through the command line, parses and plans, and has the shape docs/links.md
//! describes. Its speed on the virtual clock is measured by `cargo bench --bench scale`
//! (which also checks the file is what it generates), not here.

use assert_cmd::Command;
use inferlat::plan;
use inferlat::scenario::{self, ProfileLibrary};
use std::path::Path;
use std::time::Duration;

const FILE: &str = "scenarios/swarm/petals-swarm-1000.toml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_swarm_validates() {
    let out = Command::cargo_bin("inferlat")
        .expect("the inferlat binary is built")
        .current_dir(root())
        .args(["validate", FILE])
        .timeout(Duration::from_secs(60))
        .output()
        .expect("inferlat starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok  ("), "{stdout}");
    assert!(stdout.contains("pipeline (server-to-server)"), "{stdout}");
}

#[test]
fn the_swarm_plans_with_its_shape() {
    let path = root().join(FILE);
    let text = std::fs::read_to_string(&path).expect("the shipped swarm");
    let s = scenario::parse(&path, &text, &ProfileLibrary::built_in()).expect("it parses");
    assert_eq!(s.nodes.len(), 1_000);
    let p = plan::plan(&s).expect("it plans");
    assert_eq!(
        p.clients.len(),
        991,
        "every client but the path's own is a client"
    );
    // Eight stages of ten layers each cover Llama 2 70B's 80 layers.
    let stages = p.nodes.iter().filter(|n| n.stage.is_some()).count();
    assert_eq!(stages, 8);
    // The data centre's hops (relay and stages, 1 ms RTT) carry jumbo frames; the
    // clients' internet paths keep Ethernet's MTU (no `mtu`: quinn's 1,452 B bound).
    let dc = |name: &str| name == "relay" || name.starts_with('w');
    let mut jumbo = 0;
    for h in &p.hops {
        if dc(&h.from) && dc(&h.to) {
            assert_eq!(h.link.mtu, Some(9000), "{} -> {}", h.from, h.to);
            jumbo += 1;
        } else {
            assert_eq!(h.link.mtu, None, "{} -> {}", h.from, h.to);
        }
    }
    // relay <-> w0 and w0 <-> w1 ... w6 <-> w7, both directions.
    assert_eq!(jumbo, 2 * 8);
}
