//! The virtual clock at swarm scale: wall time, events per second and memory at 10, 100 and
//! 1,000 nodes.
//!
//! ```text
//! cargo bench --bench scale
//! ```
//!
//! Each size is a generated swarm of the same shape: clients in five regions (10 to 150 ms
//! RTT), each reaching a public relay, which fronts an 8-stage server-to-server pipeline of
//! Llama 2 70B on A100s in one data centre (1 ms RTT, 10 Gbit/s between stages), the last
//! stage streaming tokens back to each client directly. Only the number of clients grows;
//! the offered load grows with them (0.002 requests/s a client: 2 requests/s at 1,000 nodes, a public swarm's scale), so the cost per event can be
//! compared across sizes. Each size runs in a process of its own (the bench starts itself
//! again with `INFERLAT_SCALE_NODES`), so its peak resident memory (`VmHWM`) is its own.
//!
//! "Events" are datagrams delivered by the link emulator: every QUIC packet crossing a link,
//! which is what the simulation spends its time on. It prints a row per size and, as its last
//! line, `inferlat-scale: ratio_1000=R wall_us_per_event_10=A wall_us_per_event_1000=B
//! peak_mib_1000=M`. Targets (issue 15): a 1,000-node swarm at >= 20 x real time within
//! 2 GiB, and the cost per event flat as nodes grow. Under `cargo test --benches` it runs the
//! 10-node size only, briefly.

use inferlat::clock::ClockKind;
use inferlat::harness::{self, Options};
use inferlat::plan;
use inferlat::scenario::{self, ProfileLibrary};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

const STAGES: usize = 8;
const REGIONS: [(&str, &str); 5] = [
    ("eu", "20ms"),
    ("us-east", "10ms"),
    ("us-west", "70ms"),
    ("asia", "150ms"),
    ("sa", "120ms"),
];

/// A swarm of `nodes` nodes: one relay, 8 stages, the rest clients.
fn swarm(nodes: usize, requests: u32) -> String {
    let clients = nodes.saturating_sub(1 + STAGES).max(1);
    let rate = 0.002 * clients as f64;
    let mut s = format!(
        r#"name = "swarm-{nodes}"
seed = 7
[model]
preset = "llama-2-70b"
[workload]
prompt_tokens = {{ dist = "uniform", min = 16, max = 128 }}
output_tokens = 16
arrival = {{ kind = "poisson", rate = {rate} }}
requests = {requests}
warmup_requests = 0
[quic]
idle_timeout = "600s"
"#
    );
    let layers = 80 / STAGES;
    for i in 0..clients {
        let _ = writeln!(s, "[[node]]\nname = \"c{i}\"\nrole = \"client\"");
    }
    let _ = writeln!(s, "[[node]]\nname = \"relay\"\nrole = \"relay\"");
    for k in 0..STAGES {
        let _ = writeln!(
            s,
            "[[node]]\nname = \"w{k}\"\nrole = \"worker\"\ndevice = \"a100-80g\"\nlayers = \"{}..{}\"",
            k * layers,
            (k + 1) * layers
        );
    }
    for i in 0..clients {
        let rtt = REGIONS[i % REGIONS.len()].1;
        let _ = writeln!(
            s,
            "[[link]]\nbetween = [\"c{i}\", \"relay\"]\nrtt = \"{rtt}\"\nbandwidth = \"100Mbit/s\"\n[[link]]\nbetween = [\"c{i}\", \"w{}\"]\nrtt = \"{rtt}\"\nbandwidth = \"100Mbit/s\"",
            STAGES - 1
        );
    }
    let _ = writeln!(
        s,
        "[[link]]\nbetween = [\"relay\", \"w0\"]\nrtt = \"1ms\"\nbandwidth = \"10Gbit/s\""
    );
    for k in 1..STAGES {
        let _ = writeln!(
            s,
            "[[link]]\nbetween = [\"w{}\", \"w{k}\"]\nrtt = \"1ms\"\nbandwidth = \"10Gbit/s\"",
            k - 1
        );
    }
    let path: Vec<String> = std::iter::once("\"c0\"".to_string())
        .chain(std::iter::once("\"relay\"".to_string()))
        .chain((0..STAGES).map(|k| format!("\"w{k}\"")))
        .collect();
    let all: Vec<String> = (0..clients).map(|i| format!("\"c{i}\"")).collect();
    let _ = writeln!(
        s,
        "[topology]\nkind = \"pipeline\"\nhops = \"server-to-server\"\npath = [{}]\nclients = [{}]",
        path.join(", "),
        all.join(", ")
    );
    s
}

/// Peak resident memory of this process, in MiB (Linux's VmHWM).
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs one size in this process and prints its result line.
fn one(nodes: usize, requests: u32) {
    let text = swarm(nodes, requests);
    let s = scenario::parse(
        Path::new(&format!("swarm-{nodes}.toml")),
        &text,
        &ProfileLibrary::built_in(),
    )
    .expect("the generated swarm is valid");
    let p = plan::plan(&s).expect("it plans");
    let options = Options {
        colocated: false,
        ..Options::default()
    };
    let t0 = Instant::now();
    let m = harness::run_to_end(&s, &p, &options, ClockKind::Virtual).expect("the run");
    let wall = t0.elapsed().as_secs_f64();
    let r = &m.topology.as_ref().expect("a topology run").record;
    let events: u64 = m.links.iter().map(|l| l.stats.delivered).sum();
    let sim = m.simulated.as_secs_f64();
    println!(
        "RESULT nodes={nodes} completed={} failed={} simulated_s={sim:.2} wall_s={wall:.3} events={events} peak_mib={:.0}",
        r.completed,
        r.failed,
        peak_mib().unwrap_or(f64::NAN)
    );
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if let Ok(n) = std::env::var("INFERLAT_SCALE_NODES") {
        let requests = std::env::var("INFERLAT_SCALE_REQUESTS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(40);
        one(n.parse().expect("a node count"), requests);
        return;
    }
    // Requests grow with the clients, so each size simulates about the same span of time.
    let sizes: &[(usize, u32)] = if full {
        &[(10, 20), (100, 200), (1_000, 2_000)]
    } else {
        &[(10, 4)]
    };
    let exe = std::env::current_exe().expect("the bench's own path");
    println!(
        "{:>6} {:>10} {:>8} {:>12} {:>10} {:>10} {:>12} {:>14} {:>10}",
        "nodes",
        "completed",
        "failed",
        "simulated",
        "wall",
        "x real",
        "events",
        "wall/event",
        "peak"
    );
    let mut rows = Vec::new();
    for &(nodes, requests) in sizes {
        let out = std::process::Command::new(&exe)
            .env("INFERLAT_SCALE_NODES", nodes.to_string())
            .env("INFERLAT_SCALE_REQUESTS", requests.to_string())
            .output()
            .expect("running one size");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find(|l| l.starts_with("RESULT")) else {
            eprintln!(
                "{nodes} nodes: no result ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            std::process::exit(1);
        };
        let (sim, wall, events) = (
            field(line, "simulated_s"),
            field(line, "wall_s"),
            field(line, "events"),
        );
        let per_event_us = wall * 1e6 / events;
        println!(
            "{nodes:>6} {:>10} {:>8} {:>10.1} s {:>8.2} s {:>9.0}x {:>12} {:>11.2} us {:>6.0} MiB",
            field(line, "completed"),
            field(line, "failed"),
            sim,
            wall,
            sim / wall,
            events,
            per_event_us,
            field(line, "peak_mib")
        );
        rows.push((nodes, sim / wall, per_event_us, field(line, "peak_mib")));
    }
    let at = |n: usize| rows.iter().find(|r| r.0 == n).copied();
    let (first, last) = (rows[0], at(1_000).unwrap_or(*rows.last().unwrap()));
    println!(
        "inferlat-scale: ratio_{}={:.1} wall_us_per_event_{}={:.2} wall_us_per_event_{}={:.2} peak_mib_{}={:.0}",
        last.0, last.1, first.0, first.2, last.0, last.2, last.0, last.3
    );
}
