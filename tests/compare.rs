//! `inferlat compare` and `run --baseline/--save-baseline` on real virtual-clock results:
//! exact verdicts on scaled copies of a result (every histogram value and every summary
//! latency multiplied), refusals of results of other inputs (seed, request count, device
//! profile, clock, a result from before identities), missing or broken histograms, the JSON
//! file and the exit codes.

use assert_cmd::Command;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, SystemTime};

fn quickstart() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/quickstart.toml")
}

fn inferlat(args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("inferlat")
        .unwrap()
        .args(args)
        .timeout(Duration::from_secs(600))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A virtual-clock run of `scenario` into `out`.
fn run_file(scenario: &str, out: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "run",
        scenario,
        "--clock",
        "virtual",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    inferlat(&args)
}

fn run_into(out: &Path, extra: &[&str]) -> (i32, String, String) {
    run_file(quickstart(), out, extra)
}

/// An interval log with every value of every histogram multiplied by `factor`.
fn scaled_hlog(bytes: &[u8], factor: f64) -> Vec<u8> {
    let intervals = inferlat::report::hlog::read(bytes).unwrap();
    let mut buf = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment("[Histogram log format version 1.3]")
        .with_start_time(SystemTime::UNIX_EPOCH)
        .with_max_value_divisor(1e6)
        .begin_log_with(&mut buf, &mut serializer)
        .unwrap();
    for i in intervals {
        let mut h: Histogram<u64> = Histogram::new(3).unwrap();
        h.auto(true);
        for v in i.histogram.iter_recorded() {
            let value = i.histogram.highest_equivalent(v.value_iterated_to()) as f64 * factor;
            h.record_n(value.round() as u64, v.count_at_value())
                .unwrap();
        }
        log.write_histogram(&h, i.start, i.length, Tag::new(&i.tag))
            .unwrap();
    }
    drop(log);
    buf
}

/// An `.hgrm` text with every value multiplied by `factor`.
fn scaled_hgrm(text: &str, factor: f64) -> String {
    text.lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            match f.next().and_then(|v| v.parse::<f64>().ok()) {
                Some(v) => format!("{:12.3} {}", v * factor, f.collect::<Vec<_>>().join(" ")),
                None => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A copy of a result folder as if every latency of both runs were `factor` times what
/// it was: the interval logs, the percentile files and summary.json's ladders.
fn scaled_copy(from: &Path, to: &Path, factor: f64) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(e.path()).unwrap();
        let out = if name.ends_with(".hlog") {
            scaled_hlog(&bytes, factor)
        } else if name.ends_with(".hgrm") {
            scaled_hgrm(&String::from_utf8(bytes).unwrap(), factor).into_bytes()
        } else if name == "summary.json" {
            let mut v: Value = serde_json::from_slice(&bytes).unwrap();
            for run in ["topology", "baseline"] {
                let metrics = v["runs"][run]["metrics"].as_object_mut().unwrap();
                for (_, ladder) in metrics {
                    for k in ["min", "mean", "p50", "p90", "p99", "p999", "max"] {
                        if let Some(x) = ladder[k].as_f64() {
                            ladder[k] = (x * factor).into();
                        }
                    }
                }
            }
            serde_json::to_vec_pretty(&v).unwrap()
        } else {
            bytes
        };
        std::fs::write(to.join(&name), out).unwrap();
    }
}

/// Edits a result folder's summary.json.
fn edit_summary(dir: &Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join("summary.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, v.to_string()).unwrap();
}

fn verdicts(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `compare BASE NEW --json FILE`: the exit code, stdout, stderr and the verdicts.
fn compare(base: &Path, new: &Path, json: &Path, extra: &[&str]) -> (i32, String, String, Value) {
    let mut args = vec![
        "compare",
        base.to_str().unwrap(),
        new.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = inferlat(&args);
    let v = if json.is_file() {
        verdicts(json)
    } else {
        Value::Null
    };
    (code, out, err, v)
}

fn rows(v: &Value) -> &Vec<Value> {
    v["scenarios"][0]["rows"].as_array().unwrap()
}

#[test]
fn scaled_copies_regress_exactly_and_small_changes_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    assert_eq!(run_into(&a, &[]).0, 0);
    let a = a.join("quickstart");

    // Against a copy of itself: every metric unchanged, and nothing listed.
    let same = tmp.path().join("same/quickstart");
    scaled_copy(&a, &same, 1.0);
    let json = tmp.path().join("same.json");
    let (code, out, err, v) = compare(&a, &same, &json, &["--fail-on-regression"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(v["schema_version"], 2);
    assert_eq!(v["counts"]["regressed"], 0);
    assert_eq!(v["counts"]["inconclusive"], 0);
    let n = rows(&v).len();
    assert!(n >= 18, "{n} rows");
    assert_eq!(v["counts"]["unchanged"], n);
    assert!(out.contains(&format!("{n} more unchanged")), "{out}");
    assert!(!out.contains("ttft "), "only changes are listed: {out}");

    // 1.5 times slower: every latency metric regresses at p50 and p99, in both runs,
    // exactly (no intervals on the virtual clock).
    let slow = tmp.path().join("slow/quickstart");
    scaled_copy(&a, &slow, 1.5);
    let json = tmp.path().join("slow.json");
    let (code, out, err, v) = compare(&a, &slow, &json, &[]);
    assert_eq!(code, 0, "without --fail-on-regression: {err}");
    for run in ["topology", "baseline"] {
        for metric in ["ttft", "tpot", "itl", "e2e"] {
            for stat in ["p50", "p99"] {
                let r = rows(&v)
                    .iter()
                    .find(|r| r["run"] == run && r["metric"] == metric && r["stat"] == stat)
                    .unwrap_or_else(|| panic!("no row {run} {metric} {stat}"));
                assert_eq!(r["verdict"], "regressed", "{run} {metric} {stat}: {r}");
                let change = r["change"].as_f64().unwrap();
                assert!(
                    (change - 0.5).abs() < 0.01,
                    "{run} {metric} {stat}: {change}"
                );
                assert!(r["change_interval"].is_null());
            }
        }
    }
    assert!(out.contains("regressed") && out.contains("+50.0%"), "{out}");
    let (code, _, err, _) = compare(&a, &slow, &json, &["--fail-on-regression"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("regressed (--fail-on-regression)"), "{err}");
    // And the other way it improves.
    let (_, _, _, v) = compare(&slow, &a, &json, &[]);
    assert_eq!(v["counts"]["improved"], 16, "{v}");

    // 1.02 times: under the 5 % threshold, unchanged; past a 1 % one, regressed.
    let near = tmp.path().join("near/quickstart");
    scaled_copy(&a, &near, 1.02);
    let json = tmp.path().join("near.json");
    let (code, _, err, v) = compare(&a, &near, &json, &["--fail-on-regression"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["counts"]["regressed"], 0);
    assert_eq!(v["counts"]["unchanged"], n);
    let (_, out, _, v) = compare(&a, &near, &json, &["--threshold", "1%", "--verbose"]);
    assert_eq!(v["counts"]["regressed"], 16, "{out}");
    assert!(
        out.contains("no change"),
        "--verbose lists unchanged rows: {out}"
    );
}

#[test]
fn results_of_other_inputs_are_refused_naming_the_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let out = |name: &str| tmp.path().join(name);
    assert_eq!(run_into(&out("a"), &[]).0, 0);
    let a = out("a").join("quickstart");
    let json = out("v.json");
    let refused = |new: &Path, want: &[&str]| {
        let (code, _, err, v) = compare(&a, new, &json, &[]);
        assert_eq!(code, 2, "{err}");
        for w in want {
            assert!(err.contains(w), "wanted {w:?} in: {err}");
        }
        assert_eq!(v["counts"]["refused"], 1);
    };

    // Another seed, another request count.
    assert_eq!(run_into(&out("seed"), &["--seed", "9"]).0, 0);
    refused(
        &out("seed").join("quickstart"),
        &[
            "the seed differs (7 in the base, 9 in the new run)",
            "--seed 9",
        ],
    );
    assert_eq!(run_into(&out("req"), &["--requests", "5"]).0, 0);
    refused(
        &out("req").join("quickstart"),
        &["overrides differ (none in the base, --requests 5 in the new run)"],
    );

    // The same scenario text with an edited device profile beside it.
    let dir = out("scn");
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    let scn = dir.join("quickstart.toml");
    std::fs::copy(quickstart(), &scn).unwrap();
    assert_eq!(run_file(scn.to_str().unwrap(), &out("p0"), &[]).0, 0);
    let profile = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/a100-80g.toml"),
    )
    .unwrap()
    .replace("312TFLOP/s", "300TFLOP/s");
    std::fs::write(dir.join("profiles/a100-80g.toml"), profile).unwrap();
    assert_eq!(run_file(scn.to_str().unwrap(), &out("p1"), &[]).0, 0);
    let (code, _, err, _) = compare(
        &out("p0").join("quickstart"),
        &out("p1").join("quickstart"),
        &json,
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the device profile of") && err.contains("(a100-80g, figures sha256"),
        "{err}"
    );
    assert!(!err.contains("scenario text differs"), "{err}");

    // Another clock.
    let other = out("clock/quickstart");
    scaled_copy(&a, &other, 1.0);
    edit_summary(&other, |s| {
        s["clock"] = "real".into();
        s["identity"]["clock"] = "real".into();
    });
    refused(
        &other,
        &["the clocks differ (virtual in the base, real in the new run)"],
    );

    // A result from before identities.
    let old = out("old/quickstart");
    scaled_copy(&a, &old, 1.0);
    edit_summary(&old, |s| {
        s.as_object_mut().unwrap().remove("identity");
    });
    refused(&old, &["predates identities", "--save-baseline ci"]);

    // A version-1 result folder is refused the same way, saying how to save it again.
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/quickstart");
    let (code, _, err, _) = compare(&v1, &a, &json, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("predates identities") && err.contains("schema_version 1"),
        "{err}"
    );
}

#[test]
fn missing_or_broken_histograms_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(run_into(&tmp.path().join("a"), &[]).0, 0);
    let a = tmp.path().join("a/quickstart");
    let json = tmp.path().join("v.json");

    let gone = tmp.path().join("gone/quickstart");
    scaled_copy(&a, &gone, 10.0);
    std::fs::remove_file(gone.join("topology.hlog")).unwrap();
    let (code, _, err, _) = compare(&a, &gone, &json, &["--fail-on-regression"]);
    assert_eq!(code, 2, "{err}");
    let path = gone.join("topology.hlog");
    assert!(
        err.contains(&format!("{}: no such file", path.display())),
        "{err}"
    );

    let cut = tmp.path().join("cut/quickstart");
    scaled_copy(&a, &cut, 1.0);
    let p = cut.join("baseline.hlog");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, err, _) = compare(&a, &cut, &json, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&p.display().to_string()), "{err}");

    // Files of two runs in one folder: the counts disagree.
    assert_eq!(run_into(&tmp.path().join("b"), &["--requests", "5"]).0, 0);
    let mixed = tmp.path().join("mixed/quickstart");
    scaled_copy(&a, &mixed, 1.0);
    std::fs::copy(
        tmp.path().join("b/quickstart/topology.hlog"),
        mixed.join("topology.hlog"),
    )
    .unwrap();
    let (code, _, err, _) = compare(&a, &mixed, &json, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("mixes files of different runs"), "{err}");

    let (code, _, err) = inferlat(&["compare", a.to_str().unwrap(), "/no/such/folder"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: ") && err.contains("no such folder"),
        "{err}"
    );
}

#[test]
fn run_saves_and_compares_with_a_named_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    // Comparing with a baseline that was never saved is bad input, before anything runs.
    let (code, _, stderr) = run_into(out, &["--baseline", "main"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no baseline \"main\""), "{stderr}");
    assert!(!out.join("quickstart").exists());

    let (code, stdout, _) = run_into(out, &["--save-baseline", "main"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("saved as baseline \"main\""), "{stdout}");
    assert!(out.join("baselines/main/quickstart/summary.json").is_file());
    assert!(
        out.join("baselines/main/quickstart/topology.hlog")
            .is_file()
    );

    let (code, stdout, stderr) = run_into(out, &["--baseline", "main", "--fail-on-regression"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("compare: 0 regressed"), "{stdout}");
    assert!(out.join("quickstart/compare.json").is_file());

    let (code, _, stderr) = run_into(out, &["--save-baseline", "../up"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a baseline name"), "{stderr}");
}

#[test]
fn unknown_summary_versions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new");
    assert_eq!(run_into(&new, &[]).0, 0);
    let odd = tmp.path().join("odd/quickstart");
    scaled_copy(&new.join("quickstart"), &odd, 1.0);
    edit_summary(&odd, |s| s["schema_version"] = 9.into());
    let (code, _, stderr) = inferlat(&["compare", new.to_str().unwrap(), odd.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("schema_version 9"), "{stderr}");
}
