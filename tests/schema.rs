//! `docs/summary.schema.json` against real output: every shipped scenario's `summary.json`
//! (and one scenario that reaches the optional and null branches) validates; a summary
//! with an unknown key or a wrong value does not; and `bencher.json` and
//! `benchmark-action.json` carry the same numbers as `summary.json`.

use assert_cmd::Command;
use inferlat::report::summary::Summary;
use inferlat::scenario::testing::ScenarioText;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/summary.schema.json");

/// A scenario that reaches what the shipped ones do not: no `[baseline]` (null run, null
/// tax, null baseline floor), no `[slo]` (null goodput), no `[reference]` (key absent),
/// one output token (empty `tpot` and `itl`: null ladders), a closed loop, uniform prompt
/// sizes, a requests extent, no warm-up, Gilbert-Elliott and correlated loss, normal jitter,
/// reordering, duplication, an MTU, a queue in bytes and BBR.
fn variety() -> String {
    ScenarioText::new("schema-variety")
        .top("seed = 3")
        .workload(
            "prompt_tokens = { dist = \"uniform\", min = 32, max = 96 }\noutput_tokens = 1\narrival = { kind = \"closed\", concurrency = 2 }\nrequests = 6\n# One of the six requests is still running when the drain timeout ends; the run stays valid.\nmax_failed = \"50%\"",
        )
        .client("client")
        .worker("gpu", "a100-80g", "")
        .one_way(
            "client",
            "gpu",
            r#"delay = "5ms"
jitter = "1ms"
jitter_distribution = "normal"
jitter_correlation = "25%"
fifo = false
bandwidth = "100Mbit/s"
queue = "64KiB"
loss = { model = "gilbert-elliott", p = "1%", r = "30%" }
duplicate = "1%"
mtu = 1400"#,
        )
        .one_way(
            "gpu",
            "client",
            r#"delay = "5ms"
reorder = "5%"
reorder_gap = 2
loss = { model = "bernoulli", p = "0.5%", correlation = "25%" }"#,
        )
        .raw("[quic]\ncongestion = \"bbr\"\ninitial_rtt = \"20ms\"")
        .build()
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

/// Runs a scenario on the virtual clock into `out` and returns its result folder, named
/// after the scenario.
fn run(scenario: &Path, name: &str, out: &Path) -> PathBuf {
    Command::cargo_bin("inferlat")
        .unwrap()
        .arg("run")
        .arg(scenario)
        .args(["--clock", "virtual", "--quiet", "--out"])
        .arg(out)
        .timeout(Duration::from_secs(600))
        .assert()
        .success();
    out.join(name)
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn schema() -> Value {
    read_json(Path::new(SCHEMA))
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&schema()).expect("docs/summary.schema.json compiles")
}

/// The validation errors of an instance, one line each with where they are.
fn errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect()
}

fn quickstart_summary() -> (tempfile::TempDir, PathBuf, Value) {
    let out = tempfile::tempdir().unwrap();
    let dir = run(&scenario("quickstart"), "quickstart", out.path());
    let summary = read_json(&dir.join("summary.json"));
    (out, dir, summary)
}

#[test]
fn the_schema_is_draft_2020_12_and_describes_this_schema_version() {
    let s = schema();
    jsonschema::draft202012::meta::validate(&s)
        .unwrap_or_else(|e| panic!("summary.schema.json is not a valid 2020-12 schema: {e}"));
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(
        s["properties"]["schema_version"]["const"],
        json!(inferlat::report::summary::SCHEMA_VERSION)
    );
}

/// Every object the schema spells out key by key is closed, and every map names its keys
/// or its value type: a key added to summary.json fails validation until the schema has it.
#[test]
fn every_object_in_the_schema_is_closed() {
    fn walk(v: &Value, at: &str, open: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if o.contains_key("properties")
                    && o.get("additionalProperties") != Some(&Value::Bool(false))
                {
                    open.push(at.to_string());
                }
                if o.get("type") == Some(&json!("object"))
                    && !o.contains_key("properties")
                    && !o.get("additionalProperties").is_some_and(Value::is_object)
                {
                    open.push(format!("{at} (a map without a value schema)"));
                }
                for (k, child) in o {
                    walk(child, &format!("{at}/{k}"), open);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, &format!("{at}/{i}"), open);
                }
            }
            _ => {}
        }
    }
    let mut open = Vec::new();
    walk(&schema(), "#", &mut open);
    assert!(open.is_empty(), "open objects in the schema: {open:#?}");
}

#[test]
fn shipped_scenarios_write_summaries_that_match_the_schema() {
    let v = validator();
    let out = tempfile::tempdir().unwrap();
    let names = [
        "quickstart",
        "congested-minute",
        "phone-cellular-edge",
        "gpu-marketplace",
        "hedged-replicas",
        "petals-bloom-lan-s2s",
        "dllama-tp2",
        "petals-lan-stage-crash",
    ];
    // Two runs at a time (each is its own process on the virtual clock, so they cannot
    // disturb each other's numbers): the suite's longest test, halved on 2 cores.
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(name) = names.get(i) else { break };
                    run(&scenario(name), name, out.path());
                }
            });
        }
    });
    for name in names {
        let dir = out.path().join(name);
        let summary = read_json(&dir.join("summary.json"));
        let errs = errors(&v, &summary);
        assert!(
            errs.is_empty(),
            "{name}/summary.json does not match docs/summary.schema.json:\n{}",
            errs.join("\n")
        );
        // The readers' types hold everything the writer wrote: read back and written
        // again, the file is the same.
        let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
        let typed = Summary::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            serde_json::to_value(&typed).unwrap(),
            summary,
            "{name}: summary.json does not survive a typed read"
        );
    }
}

#[test]
fn summaries_record_what_ran() {
    let out = tempfile::tempdir().unwrap();
    let parts = |name: &str| {
        let dir = run(&scenario(name), name, out.path());
        let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
        let s = Summary::parse(&text).unwrap();
        let t = s
            .topology
            .expect("a version-2 summary records the topology");
        assert!(s.model.is_some_and(|m| m.layers > 0), "{name}: no model");
        let parts: Vec<(String, String, String)> = t
            .nodes
            .iter()
            .filter(|n| n.part != "unused")
            .map(|n| (n.name.clone(), n.role.clone(), n.part.clone()))
            .collect();
        (t.kind, t.path, parts, t.nodes)
    };
    let (kind, path, nodes, all) = parts("quickstart");
    assert_eq!(kind, "direct");
    assert_eq!(path.first().map(String::as_str), Some("client"));
    assert!(nodes.iter().any(|(_, r, p)| r == "client" && p == "client"));
    assert!(nodes.iter().any(|(_, r, p)| r == "worker" && p == "whole"));
    let worker = all.iter().find(|n| n.role == "worker").unwrap();
    assert!(worker.device.as_ref().is_some_and(|d| d.flops.is_some()));
    assert!(worker.layers.is_some() && worker.max_batch.is_some());
    let (kind, _, nodes, _) = parts("dllama-tp2");
    assert_eq!(kind, "tensor");
    assert!(
        nodes.iter().any(|(_, _, p)| p == "tensor-root"),
        "{nodes:?}"
    );
    assert!(
        nodes.iter().any(|(_, _, p)| p == "tensor-member"),
        "{nodes:?}"
    );
    let (kind, _, nodes, _) = parts("petals-bloom-lan-s2s");
    assert_eq!(kind, "pipeline");
    assert!(
        nodes.iter().filter(|(_, _, p)| p == "stage").count() >= 2,
        "{nodes:?}"
    );
}

#[test]
fn a_summary_with_nulls_and_without_optional_parts_matches_the_schema() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("schema-variety.toml");
    std::fs::write(&file, variety()).unwrap();
    let dir = run(&file, "schema-variety", out.path());
    let summary = read_json(&dir.join("summary.json"));
    // The branches this scenario is here for.
    assert!(summary["runs"]["baseline"].is_null());
    assert!(summary["floor"]["baseline"].is_null());
    assert!(summary["tax"]["ttft"]["p50"].is_null());
    assert!(summary.get("reference").is_none());
    assert!(summary["runs"]["topology"]["throughput"]["goodput_requests_per_s"].is_null());
    assert_eq!(summary["runs"]["topology"]["metrics"]["tpot"]["count"], 0);
    assert!(summary["runs"]["topology"]["metrics"]["tpot"]["p50"].is_null());
    assert_eq!(
        summary["network"]["links"][0]["params"]["loss"]["model"],
        "gilbert-elliott"
    );
    assert_eq!(summary["scenario"]["workload"]["arrival"]["kind"], "closed");
    let errs = errors(&validator(), &summary);
    assert!(
        errs.is_empty(),
        "schema-variety/summary.json does not match docs/summary.schema.json:\n{}",
        errs.join("\n")
    );
    // Empty histograms and a missing baseline are left out of both exporters.
    let bmf = read_json(&dir.join("bencher.json"));
    let mut names: Vec<&str> = bmf
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "schema-variety/colocated/e2e",
            "schema-variety/colocated/throughput",
            "schema-variety/colocated/ttft",
            "schema-variety/topology/e2e",
            "schema-variety/topology/throughput",
            "schema-variety/topology/ttft",
        ]
    );
    let action = read_json(&dir.join("benchmark-action.json"));
    let names: Vec<&str> = action
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "schema-variety topology ttft p50",
            "schema-variety topology ttft p99",
            "schema-variety topology e2e p50",
            "schema-variety topology e2e p99",
            "schema-variety colocated ttft p50",
            "schema-variety colocated ttft p99",
            "schema-variety colocated e2e p50",
            "schema-variety colocated e2e p99",
        ]
    );
}

#[test]
fn broken_summaries_fail_validation() {
    let v = validator();
    let (_out, _dir, good) = quickstart_summary();
    assert!(errors(&v, &good).is_empty(), "{:#?}", errors(&v, &good));
    type Break = fn(&mut Value);
    let cases: [(&str, Break); 15] = [
        ("schema_version 1", |s| s["schema_version"] = json!(1)),
        ("an unknown node part", |s| {
            s["topology"]["nodes"][0]["part"] = json!("boss")
        }),
        ("a node without a role", |s| {
            s["topology"]["nodes"][0]
                .as_object_mut()
                .unwrap()
                .remove("role");
        }),
        ("a missing model", |s| {
            s.as_object_mut().unwrap().remove("model");
        }),
        ("an unknown top-level key", |s| s["extra"] = json!(1)),
        ("an unknown key in a ladder", |s| {
            s["runs"]["topology"]["metrics"]["ttft"]["p95"] = json!(1.0)
        }),
        ("an unknown metric", |s| {
            s["runs"]["topology"]["metrics"]["ttlt"] =
                s["runs"]["topology"]["metrics"]["ttft"].clone()
        }),
        ("a missing metric", |s| {
            s["runs"]["baseline"]["metrics"]
                .as_object_mut()
                .unwrap()
                .remove("itl");
        }),
        ("a missing required key", |s| {
            s.as_object_mut().unwrap().remove("network");
        }),
        ("an unknown key in a link", |s| {
            s["network"]["links"][0]["jitter_ms"] = json!(0.5)
        }),
        ("an unknown loss model", |s| {
            s["network"]["links"][0]["params"]["loss"] = json!({ "model": "burst" })
        }),
        ("a duration as a number", |s| {
            s["network"]["links"][0]["params"]["delay"] = json!(20)
        }),
        ("a tax as a string", |s| {
            s["tax"]["ttft"]["p50"] = json!("8x")
        }),
        ("an unknown clock", |s| s["clock"] = json!("wall")),
        ("a negative count", |s| {
            s["runs"]["topology"]["requests"]["failed"] = json!(-1)
        }),
    ];
    for (what, break_it) in cases {
        let mut bad = good.clone();
        break_it(&mut bad);
        assert!(!v.is_valid(&bad), "a summary with {what} passed validation");
    }
}

/// Bencher Metric Format as bencher.dev documents it: benchmark -> measure -> a number
/// `value` and optional numbers `lower_value` and `upper_value`.
fn bmf_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "value": { "type": "number" },
                    "lower_value": { "type": "number" },
                    "upper_value": { "type": "number" }
                },
                "required": ["value"],
                "additionalProperties": false
            }
        }
    })
}

/// github-action-benchmark's custom tool format: an array of name, unit and value, with
/// optional range and extra strings.
fn action_schema() -> Value {
    json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "name": { "type": "string" },
                "unit": { "type": "string" },
                "value": { "type": "number" },
                "range": { "type": "string" },
                "extra": { "type": "string" }
            },
            "required": ["name", "unit", "value"],
            "additionalProperties": false
        }
    })
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-9)
}

#[test]
fn bencher_and_benchmark_action_files_carry_the_summary_values() {
    let (_out, dir, summary) = quickstart_summary();
    let runs = ["topology", "colocated", "baseline"];
    let metrics = ["ttft", "tpot", "itl", "e2e"];

    let bmf = read_json(&dir.join("bencher.json"));
    let v = jsonschema::draft202012::new(&bmf_schema()).unwrap();
    let errs = errors(&v, &bmf);
    assert!(errs.is_empty(), "bencher.json is not BMF: {errs:#?}");
    let mut expected: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            metrics
                .iter()
                .chain(&["throughput"])
                .map(move |m| format!("quickstart/{r}/{m}"))
        })
        .collect();
    expected.sort();
    let mut names: Vec<String> = bmf.as_object().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(names, expected);
    for run in runs {
        let r = &summary["runs"][run];
        for m in metrics {
            let b = &bmf[format!("quickstart/{run}/{m}")];
            assert_eq!(b.as_object().unwrap().len(), 1, "{run}/{m}: {b}");
            let lat = &b["latency"];
            let ladder = &r["metrics"][m];
            // Nanoseconds in bencher.json, milliseconds in summary.json.
            for (bmf_key, summary_key) in [
                ("value", "p50"),
                ("lower_value", "min"),
                ("upper_value", "p99"),
            ] {
                let ns = lat[bmf_key].as_f64().unwrap();
                let ms = ladder[summary_key].as_f64().unwrap();
                assert!(
                    close(ns / 1e6, ms),
                    "{run}/{m} {bmf_key} {ns} ns, summary {summary_key} {ms} ms"
                );
            }
        }
        let t = &bmf[format!("quickstart/{run}/throughput")];
        assert_eq!(t.as_object().unwrap().len(), 1, "{run}/throughput: {t}");
        assert!(close(
            t["throughput"]["value"].as_f64().unwrap(),
            r["throughput"]["requests_per_s"].as_f64().unwrap()
        ));
    }

    let action = read_json(&dir.join("benchmark-action.json"));
    let v = jsonschema::draft202012::new(&action_schema()).unwrap();
    let errs = errors(&v, &action);
    assert!(
        errs.is_empty(),
        "benchmark-action.json is not customSmallerIsBetter: {errs:#?}"
    );
    let entries = action.as_array().unwrap();
    let mut i = 0;
    for run in runs {
        for m in metrics {
            for pct in ["p50", "p99"] {
                let e = &entries[i];
                i += 1;
                assert_eq!(e["name"], format!("quickstart {run} {m} {pct}"));
                assert_eq!(e["unit"], "ms");
                let want = summary["runs"][run]["metrics"][m][pct].as_f64().unwrap();
                assert!(
                    close(e["value"].as_f64().unwrap(), want),
                    "{}: {} against summary {want}",
                    e["name"],
                    e["value"]
                );
            }
        }
    }
    assert_eq!(i, entries.len(), "extra entries: {:#?}", &entries[i..]);
}

/// A run under Nagle's algorithm with a requested ACK delay: the keys it adds
/// (`network.transport.nagle` and `max_ack_delay_ms`, `network.connections[].nagle`) are
/// written, with the values that ran, and match the schema.
#[test]
fn a_summary_of_a_run_under_nagle_matches_the_schema() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("schema-nagle.toml");
    let text = ScenarioText::new("schema-nagle")
        .workload(
            "prompt_tokens = 16\noutput_tokens = 3\narrival = { kind = \"constant\", rate = 2 }\nrequests = 4\nwarmup_requests = 0",
        )
        .client("client")
        .worker("gpu", "a100-80g", "")
        .link("client", "gpu", "rtt = \"20ms\"")
        .raw("[quic]\nnagle = true\nmax_ack_delay = \"40ms\"")
        .build();
    std::fs::write(&file, text).unwrap();
    let dir = run(&file, "schema-nagle", out.path());
    let summary = read_json(&dir.join("summary.json"));
    let transport = &summary["network"]["transport"];
    assert_eq!(transport["nagle"], true, "{transport}");
    assert_eq!(transport["max_ack_delay_ms"], 40.0, "{transport}");
    let connections = summary["network"]["connections"].as_array().unwrap();
    assert!(!connections.is_empty());
    for c in connections {
        assert_eq!(c["nagle"], true, "{c}");
    }
    let errs = errors(&validator(), &summary);
    assert!(
        errs.is_empty(),
        "schema-nagle/summary.json does not match docs/summary.schema.json:\n{}",
        errs.join("\n")
    );
}
