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
    assert!(out.stderr.contains("68 s simulated"), "{}", out.stderr);
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

/// Starts a long virtual-clock run, sends `signal` once it is under way, and returns the
/// exit code, the stdout, the stderr, how long after the signal the table was printed, and
/// the summary written.
#[cfg(unix)]
fn interrupt(signal: i32) -> (Option<i32>, String, String, std::time::Duration, String) {
    use std::io::{BufRead, Read};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("inferlat"))
        .current_dir(root())
        .args(["run", "scenarios/quickstart.toml", "--clock", "virtual"])
        .args(["--duration", "50000s", "--quiet", "--out"])
        .arg(&out_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start inferlat");
    // Under way: past setup and into the measured phase (the whole run would take minutes).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended by itself"
    );
    let sent = std::time::Instant::now();
    // SAFETY: kill only sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let acted = sent.elapsed();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    let summary = std::fs::read_to_string(out_dir.join("quickstart/summary.json"))
        .unwrap_or_else(|e| panic!("no summary.json after the signal: {e}\n{stderr}"));
    (status.code(), first + &rest, stderr, acted, summary)
}

#[cfg(unix)]
fn assert_interrupted_run_is_written(signal: i32, name: &str) {
    let (code, stdout, stderr, acted, summary) = interrupt(signal);
    assert_eq!(code, Some(1), "an interrupted run exits 1\n{stderr}");
    assert!(
        stderr.contains(&format!("interrupted ({name})")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The table of what was measured is printed, and soon: the signal acts at once even
    // while the virtual clock runs flat out (half a second on an idle machine; the bound
    // here leaves room for a machine shared with builds).
    assert!(stdout.contains("topology"), "{stdout}");
    assert!(acted < std::time::Duration::from_secs(10), "{acted:?}");
    eprintln!("{name}: the table came {acted:?} after the signal");
    let s: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(s["complete"], false, "{summary}");
    let topology = &s["runs"]["topology"];
    assert_eq!(topology["complete"], false);
    assert!(topology["requests"]["completed"].as_u64().unwrap() > 0);
    // Requests in flight got their grace: a 356 ms request is never cut by a 1 s grace.
    assert_eq!(topology["requests"]["failed"], 0, "{}", topology["errors"]);
}

#[cfg(unix)]
#[test]
fn sigint_stops_the_run_gives_grace_and_writes_an_incomplete_summary() {
    assert_interrupted_run_is_written(libc::SIGINT, "Ctrl-C");
}

#[cfg(unix)]
#[test]
fn sigterm_does_what_ctrl_c_does() {
    assert_interrupted_run_is_written(libc::SIGTERM, "SIGTERM");
}

#[test]
fn a_file_where_the_results_folder_goes_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("quickstart"), b"not a folder").unwrap();
    let out = inferlat(&[
        "run",
        "scenarios/quickstart.toml",
        "--clock",
        "virtual",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_refused(&out);
    assert!(out.stderr.contains("is in the way"), "{}", out.stderr);
}

#[test]
fn progress_on_a_non_terminal_is_at_most_one_line_every_five_seconds_of_wall_time() {
    // A virtual-clock run of 30 simulated minutes (topology and baseline): its clock's 5-second ticks fly by, but the
    // lines follow wall time (stderr is a pipe here, not a terminal).
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = inferlat(&[
        "run",
        "scenarios/quickstart.toml",
        "--clock",
        "virtual",
        "--duration",
        "900s",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("[quickstart]"))
        .count();
    let allowed = 1 + (wall / 5.0) as usize;
    assert!(
        lines <= allowed,
        "{lines} progress lines in {wall:.1} s of wall time (at most {allowed}):\n{}",
        out.stderr
    );
}
