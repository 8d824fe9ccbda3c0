//! `inferlat compare` and `run --baseline/--save-baseline`: verdicts on constructed pairs
//! (identical, clearly slower, within noise), refusals, the JSON file and the exit codes.

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn quickstart() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/quickstart.toml")
}

fn inferlat(args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("inferlat")
        .unwrap()
        .args(args)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A virtual-clock run of the quickstart into `out`.
fn run_into(out: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "run",
        quickstart(),
        "--clock",
        "virtual",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    inferlat(&args)
}

/// Copies a result folder, multiplying every topology latency by `factor`, as if the
/// topology had become that much slower. The interval logs are left out, so the copy's
/// distributions come from its (scaled) .hgrm files.
fn slowed_copy(from: &Path, to: &Path, factor: f64) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".hlog") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let text = if name.starts_with("topology.") && name.ends_with(".hgrm") {
            text.lines()
                .map(|l| {
                    let mut f = l.split_whitespace();
                    match f.next().and_then(|v| v.parse::<f64>().ok()) {
                        Some(v) if !l.trim_start().starts_with('#') => {
                            format!("{:12.3} {}", v * factor, f.collect::<Vec<_>>().join(" "))
                        }
                        _ => l.to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        } else if name == "summary.json" {
            let mut v: Value = serde_json::from_str(&text).unwrap();
            for (_, ladder) in v["runs"]["topology"]["metrics"].as_object_mut().unwrap() {
                for k in ["min", "mean", "p50", "p90", "p99", "p999", "max"] {
                    if let Some(x) = ladder[k].as_f64() {
                        ladder[k] = (x * factor).into();
                    }
                }
            }
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            text
        };
        std::fs::write(to.join(&name), text).unwrap();
    }
}

fn verdicts(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn identical_slower_and_refused_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert_eq!(run_into(&a, &[]).0, 0);
    assert_eq!(run_into(&b, &[]).0, 0);

    // Identical (the virtual clock makes two runs with one seed equal): nothing changes.
    let (code, stdout, stderr) = inferlat(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--fail-on-regression",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v = verdicts(&b.join("compare.json"));
    assert_eq!(v["counts"]["regressed"], 0);
    assert_eq!(v["counts"]["improved"], 0);
    assert!(v["counts"]["no_significant_change"].as_u64().unwrap() >= 16);
    assert!(stdout.contains("compare: 0 regressed"), "{stdout}");

    // Clearly slower: the topology's latencies 50 % up regress; the baseline's do not.
    let slow = tmp.path().join("slow/quickstart");
    slowed_copy(&a.join("quickstart"), &slow, 1.5);
    let json = tmp.path().join("v.json");
    let (code, stdout, stderr) = inferlat(&[
        "compare",
        a.to_str().unwrap(),
        slow.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "without --fail-on-regression: {stderr}");
    let v = verdicts(&json);
    let rows = v["scenarios"][0]["rows"].as_array().unwrap();
    let find = |run: &str, metric: &str, stat: &str| {
        rows.iter()
            .find(|r| r["run"] == run && r["metric"] == metric && r["stat"] == stat)
            .unwrap_or_else(|| panic!("no row {run} {metric} {stat}"))
    };
    assert_eq!(find("topology", "tpot", "p50")["verdict"], "regressed");
    assert_eq!(find("topology", "itl", "p50")["verdict"], "regressed");
    // 29 requests cannot bound a p99 from above: no verdict, however large the change.
    assert_eq!(
        find("topology", "tpot", "p99")["verdict"],
        "no_significant_change"
    );
    assert_eq!(find("topology", "itl", "p99")["verdict"], "regressed");
    assert_eq!(
        find("baseline", "e2e", "p50")["verdict"],
        "no_significant_change"
    );
    assert!(stdout.contains("regressed"), "{stdout}");
    let (code, _, stderr) = inferlat(&[
        "compare",
        a.to_str().unwrap(),
        slow.to_str().unwrap(),
        "--fail-on-regression",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("regressed (--fail-on-regression)"),
        "{stderr}"
    );

    // Within noise: 2 % slower is under the 5 % threshold.
    let near = tmp.path().join("near/quickstart");
    slowed_copy(&a.join("quickstart"), &near, 1.02);
    let (code, _, stderr) = inferlat(&[
        "compare",
        a.to_str().unwrap(),
        near.to_str().unwrap(),
        "--fail-on-regression",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        verdicts(&near.join("compare.json"))["counts"]["regressed"],
        0
    );

    // Another clock: refused, saying why, exit 2.
    let other = tmp.path().join("other/quickstart");
    slowed_copy(&a.join("quickstart"), &other, 1.0);
    let mut s: Value =
        serde_json::from_slice(&std::fs::read(other.join("summary.json")).unwrap()).unwrap();
    s["clock"] = "real".into();
    std::fs::write(other.join("summary.json"), s.to_string()).unwrap();
    let (code, _, stderr) = inferlat(&["compare", a.to_str().unwrap(), other.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("clocks differ"), "{stderr}");

    // Another scenario file: refused.
    s["clock"] = "virtual".into();
    s["scenario"]["sha256"] = "0".repeat(64).into();
    std::fs::write(other.join("summary.json"), s.to_string()).unwrap();
    let (code, _, stderr) = inferlat(&["compare", a.to_str().unwrap(), other.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("scenario differs"), "{stderr}");

    // A folder that is not there.
    let (code, _, stderr) = inferlat(&["compare", a.to_str().unwrap(), "/no/such/folder"]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("no such folder"),
        "{stderr}"
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
        out.join("baselines/main/quickstart/topology.e2e.hgrm")
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
fn version_one_folders_still_compare_and_unknown_versions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new");
    assert_eq!(run_into(&new, &[]).0, 0);
    // The committed CI baselines are schema version 1.
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/baselines/ci/quickstart");
    let text = std::fs::read_to_string(v1.join("summary.json")).unwrap();
    assert!(
        text.contains("\"schema_version\": 1"),
        "the fixture is no longer version 1"
    );
    let (code, stdout, stderr) = inferlat(&[
        "compare",
        v1.to_str().unwrap(),
        new.join("quickstart").to_str().unwrap(),
        "--json",
        tmp.path().join("v1.json").to_str().unwrap(),
        "--fail-on-regression",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v = verdicts(&tmp.path().join("v1.json"));
    assert_eq!(v["counts"]["refused"], 0);
    assert_eq!(v["counts"]["regressed"], 0);
    assert!(v["counts"]["no_significant_change"].as_u64().unwrap() >= 16);

    let odd = tmp.path().join("odd/quickstart");
    slowed_copy(&new.join("quickstart"), &odd, 1.0);
    let mut s: Value =
        serde_json::from_slice(&std::fs::read(odd.join("summary.json")).unwrap()).unwrap();
    s["schema_version"] = 9.into();
    std::fs::write(odd.join("summary.json"), s.to_string()).unwrap();
    let (code, _, stderr) = inferlat(&["compare", new.to_str().unwrap(), odd.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("schema_version 9"), "{stderr}");
}
