//! Hostile and careless input the way issue 14 found it: absurd but valid scenarios are
//! refused before they run, with their estimate; oversized ones are rejected with the
//! field, its limit and why; signals stop a run and still write what it measured.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn quickstart() -> String {
    std::fs::read_to_string(root().join("scenarios/quickstart.toml")).expect("the quickstart")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write a scenario");
    p
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn inferlat(args: &[&str]) -> Outcome {
    let out = Command::cargo_bin("inferlat")
        .expect("the binary")
        .current_dir(root())
        .args(args)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .expect("run inferlat");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_refused(out: &Outcome) {
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

/// A device of one FLOP and one byte a second: every figure valid, every step absurd.
fn slow_device() -> String {
    quickstart().replace(
        "device = \"a100-80g\"",
        "device = { name = \"slow\", memory = \"80GB\", flops = \"1FLOP/s\", mem_bandwidth = \"1B/s\", efficiency = { compute = 1.0, memory = 1.0 } }",
    )
}

#[test]
fn a_run_that_would_never_end_is_refused_with_its_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "slow.toml", &slow_device());
    let out_dir = dir.path().join("out");
    for clock in ["real", "virtual"] {
        let out = inferlat(&[
            "run",
            file.to_str().unwrap(),
            "--clock",
            clock,
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert_refused(&out);
        for part in [
            "refused to run",
            "--max-wall 4.0 h",
            "years simulated",
            "of wall time",
            &format!("({clock} clock)"),
        ] {
            assert!(out.stderr.contains(part), "{part:?} not in {}", out.stderr);
        }
        assert!(
            !out_dir.join("quickstart").exists(),
            "nothing ran, nothing is written"
        );
    }
}

#[test]
fn max_wall_and_max_memory_are_limits_a_flag_moves() {
    let out = inferlat(&[
        "run",
        "scenarios/quickstart.toml",
        "--clock",
        "virtual",
        "--max-wall",
        "1ms",
        "--out",
        "/nonexistent-never-reached",
    ]);
    assert_refused(&out);
    assert!(out.stderr.contains("passes --max-wall"), "{}", out.stderr);
    assert!(out.stderr.contains("45 s simulated"), "{}", out.stderr);
    let out = inferlat(&[
        "run",
        "scenarios/quickstart.toml",
        "--clock",
        "virtual",
        "--max-memory",
        "1KiB",
        "--out",
        "/nonexistent-never-reached",
    ]);
    assert_refused(&out);
    assert!(
        out.stderr.contains("its results pass --max-memory 1 KiB"),
        "{}",
        out.stderr
    );
    let out = inferlat(&["run", "scenarios/quickstart.toml", "--max-wall", "0s"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
}

#[test]
fn flags_past_the_limits_are_refused_naming_the_limit() {
    let out = inferlat(&[
        "run",
        "scenarios/quickstart.toml",
        "--requests",
        "1000000000000",
    ]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("at most 10000000 requests"),
        "{}",
        out.stderr
    );
    let out = inferlat(&["run", "scenarios/quickstart.toml", "--duration", "1e9s"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("at most 1000000 s"), "{}", out.stderr);
}

#[test]
fn more_nodes_than_the_harness_hosts_is_an_error_naming_the_limit() {
    let mut text = quickstart();
    for i in 0..4096 {
        text.push_str(&format!(
            "\n[[node]]\nname = \"extra-{i}\"\nrole = \"relay\"\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "many.toml", &text);
    let out = inferlat(&["validate", file.to_str().unwrap()]);
    assert_refused(&out);
    assert!(
        out.stderr.contains("at most 4096 nodes, got 4098") && out.stderr.contains("field `node`"),
        "{}",
        out.stderr
    );
}
