//! `inferlat run` end to end: the files it writes keep the contract of DESIGN §8, and
//! Ctrl-C stops a run quickly and still writes what was measured.

use assert_cmd::Command;
use inferlat::report::hgrm;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn quickstart() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/quickstart.toml")
}

fn key<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for k in path.split('.') {
        cur = cur
            .get(k)
            .unwrap_or_else(|| panic!("summary.json has no `{path}` (missing `{k}`)"));
    }
    cur
}

#[test]
fn run_writes_the_summary_contract_and_matching_hgrm_files() {
    let out = tempfile::tempdir().unwrap();
    Command::cargo_bin("inferlat")
        .unwrap()
        .args(["run", quickstart(), "--requests", "8", "--quiet", "--out"])
        .arg(out.path())
        .timeout(Duration::from_secs(600))
        .assert()
        .success();
    let dir = out.path().join("quickstart");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(key(&summary, "schema_version"), 2);
    assert_eq!(key(&summary, "tool.name"), "inferlat");
    assert_eq!(key(&summary, "complete"), true);
    assert_eq!(key(&summary, "clock"), "real");
    assert_eq!(key(&summary, "scenario.seed"), 7);
    assert_eq!(key(&summary, "scenario.sha256").as_str().unwrap().len(), 64);
    // Real-time scheduling was not asked for: nothing is recorded.
    assert!(summary["environment"].get("scheduling").is_none());
    for k in [
        "tool.version",
        "scenario.name",
        "scenario.file",
        "environment.os",
        "environment.cpus",
    ] {
        key(&summary, k);
    }
    for run in ["topology", "baseline"] {
        let r = key(&summary, &format!("runs.{run}"));
        assert_eq!(key(r, "requests.completed"), 8, "{run}");
        assert_eq!(key(r, "requests.failed"), 0, "{run}");
        for k in [
            "throughput.requests_per_s",
            "throughput.output_tokens_per_s",
            "breakdown.queue.p50",
            "breakdown.compute.p50",
            "breakdown.network.p50",
        ] {
            assert!(key(r, k).is_number(), "{run}.{k}");
        }
        for m in ["ttft", "tpot", "itl", "e2e", "service", "schedule_lag"] {
            let metric = key(r, &format!("metrics.{m}"));
            assert_eq!(key(metric, "unit"), "ms");
            for f in ["count", "min", "mean", "p50", "p90", "p99", "p999", "max"] {
                assert!(key(metric, f).is_number(), "{run}.metrics.{m}.{f}");
            }
            // The .hgrm file of the same histogram agrees with the summary.
            let text = std::fs::read_to_string(dir.join(format!("{run}.{m}.hgrm"))).unwrap();
            let (rows, total) = hgrm::parse(&text).unwrap();
            assert_eq!(
                total,
                key(metric, "count").as_u64().unwrap(),
                "{run}.{m} count"
            );
            let max = key(metric, "max").as_f64().unwrap();
            let last = rows.last().unwrap();
            assert!(
                (last.value - max).abs() <= max * 0.001 + 0.001,
                "{run}.{m}: hgrm max {} vs summary {max}",
                last.value
            );
            let p50 = key(metric, "p50").as_f64().unwrap();
            let row = rows.iter().find(|r| r.percentile >= 0.5).unwrap();
            assert!(
                row.value >= p50 * 0.999 - 0.001,
                "{run}.{m}: hgrm p50 row {} vs summary {p50}",
                row.value
            );
        }
    }
    assert!(
        key(&summary, "runs.topology.metrics.connect.count")
            .as_u64()
            .unwrap()
            >= 1
    );
    for m in ["ttft", "tpot", "itl", "e2e"] {
        let t = key(&summary, &format!("tax.{m}.p50")).as_f64().unwrap();
        assert!(
            t > 1.0,
            "a remote A100 is slower than a local H100: tax {m} {t}"
        );
    }
    assert!(key(&summary, "reference.within_tolerance").is_boolean());
    // Nothing half-written is left behind.
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        assert!(
            !e.file_name().to_string_lossy().contains(".tmp-"),
            "{:?}",
            e.path()
        );
    }
}

/// Whether this machine lets a thread of this process take `SCHED_FIFO` (root with
/// `CAP_SYS_NICE`): tried on a thread of its own, which then ends.
fn fifo_permitted() -> bool {
    std::thread::spawn(|| {
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: changes only this short-lived thread's scheduling policy.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
    })
    .join()
    .unwrap()
}

/// `--realtime` puts the real clock's threads under SCHED_FIFO and summary.json says what was
/// granted; where the machine refuses, the run still completes and the summary says why. A run
/// without it records nothing.
#[test]
fn realtime_scheduling_is_applied_or_its_refusal_recorded() {
    let out = tempfile::tempdir().unwrap();
    // A small run of its own: no warm-up, no baseline, an ideal device.
    let file = out.path().join("rt.toml");
    std::fs::write(
        &file,
        r#"name = "rt"
[model]
preset = "tinyllama-1.1b"
[workload]
prompt_tokens = 16
output_tokens = 2
arrival = { kind = "constant", rate = 20 }
requests = 3
warmup_requests = 0
[[node]]
name = "client"
role = "client"
[[node]]
name = "gpu"
role = "worker"
device = "ideal"
[[link]]
between = ["client", "gpu"]
rtt = "1ms"
"#,
    )
    .unwrap();
    Command::cargo_bin("inferlat")
        .unwrap()
        .arg("run")
        .arg(&file)
        .args(["--quiet", "--realtime", "5", "--out"])
        .arg(out.path())
        .timeout(Duration::from_secs(600))
        .assert()
        .success();
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("rt/summary.json")).unwrap())
            .unwrap();
    let got = key(&summary, "environment.scheduling").as_str().unwrap();
    if fifo_permitted() {
        assert_eq!(got, "SCHED_FIFO 5 (timing thread 6)");
    } else {
        assert!(
            got.starts_with("normal scheduler: SCHED_FIFO 5 was refused ("),
            "{got}"
        );
    }
    assert_eq!(key(&summary, "runs.topology.requests.completed"), 3);
    // Out of range: refused before anything runs.
    let bad = Command::cargo_bin("inferlat")
        .unwrap()
        .args(["run", quickstart(), "--realtime", "99"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--realtime"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn ctrl_c_stops_within_two_seconds_and_writes_partial_results() {
    let out = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("inferlat"))
        .args([
            "run",
            quickstart(),
            "--duration",
            "10min",
            "--quiet",
            "--out",
        ])
        .arg(out.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let summary = out.path().join("quickstart/summary.json");
    // Let it get into the measured phase.
    std::thread::sleep(Duration::from_secs(4));
    assert!(child.try_wait().unwrap().is_none(), "the run ended early");
    let sent = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "still running 10 s after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?} to stop");
    assert_eq!(status.code(), Some(1), "an interrupted run exits 1");
    let v: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(v["complete"], false);
    assert_eq!(v["runs"]["topology"]["complete"], false);
    assert!(
        v["runs"]["topology"]["requests"]["completed"]
            .as_u64()
            .unwrap()
            > 0,
        "what was measured is kept"
    );
    assert!(
        Path::new(&summary)
            .with_file_name("topology.e2e.hgrm")
            .exists()
    );
}

/// A link that loses everything from 1 s into the measured phase: the requests of the first
/// second complete, the other eight of ten get no answer within the drain timeout.
const OUTAGE: &str = r#"
name = "outage"
seed = 3

[model]
preset = "llama-2-7b"

[workload]
prompt_tokens = 128
output_tokens = 32
arrival = { kind = "constant", rate = 2 }
requests = 10

[[node]]
name = "client"
role = "client"

[[node]]
name = "gpu-a"
role = "worker"
device = "a100-80g"

[[link]]
between = ["client", "gpu-a"]
rtt = "40ms"
bandwidth = "1Gbit/s"

[[link.change]]
at = "1s"
loss = "100%"

[baseline]
device = "h100-sxm"
"#;

/// Runs the outage scenario on the virtual clock with extra arguments; returns the exit
/// code, stdout and the summary.
fn outage(extra: &[&str]) -> (Option<i32>, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("outage.toml");
    std::fs::write(&file, OUTAGE).unwrap();
    let out = dir.path().join("out");
    let output = Command::cargo_bin("inferlat")
        .unwrap()
        .arg("run")
        .arg(&file)
        .args(["--clock", "virtual", "--quiet", "--out"])
        .arg(&out)
        .args(extra)
        .timeout(Duration::from_secs(600))
        .output()
        .unwrap();
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("outage/summary.json")).unwrap()).unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        summary,
    )
}

#[test]
fn a_run_with_most_requests_failed_is_invalid_said_first_and_exits_1() {
    let (code, stdout, summary) = outage(&[]);
    assert_eq!(code, Some(1), "{stdout}");
    let first = stdout.lines().find(|l| !l.trim().is_empty()).unwrap();
    assert!(first.starts_with("invalid"), "{stdout}");
    assert!(stdout.contains("no answer within"), "{stdout}");
    assert!(!stdout.contains("req/s"), "throughput shown:\n{stdout}");
    assert!(
        !stdout.lines().any(|l| l.trim_start().starts_with("tax ")),
        "tax shown:\n{stdout}"
    );
    assert_eq!(key(&summary, "valid"), false);
    let t = key(&summary, "runs.topology");
    let (completed, failed) = (
        key(t, "requests.completed").as_u64().unwrap(),
        key(t, "requests.failed").as_u64().unwrap(),
    );
    assert_eq!(completed + failed, 10);
    assert!(failed >= 6, "{completed} completed, {failed} failed");
    let reasons = key(&summary, "validity.reasons").as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].as_str().unwrap().starts_with("topology:"),
        "{reasons:?}"
    );
    // Throughput counts over the window as scheduled (10 requests over 10 gaps of 0.5 s),
    // not up to the last survivor.
    assert_eq!(key(t, "throughput.window_s"), 5.0);
    assert_eq!(
        key(t, "throughput.requests_per_s").as_f64().unwrap(),
        completed as f64 / 5.0
    );
    assert_eq!(
        key(&summary, "runs.baseline.throughput.requests_per_s"),
        2.0
    );
}

#[test]
fn failures_within_the_limit_leave_the_run_valid_and_exit_0() {
    let (code, stdout, summary) = outage(&["--max-failed", "90%"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(!stdout.contains("invalid"), "{stdout}");
    assert_eq!(key(&summary, "valid"), true);
    assert_eq!(key(&summary, "validity.max_failed"), 0.9);
    assert_eq!(key(&summary, "validity.reasons"), &Value::Array(vec![]));
    assert!(
        stdout.lines().any(|l| l.trim_start().starts_with("tax ")),
        "{stdout}"
    );
}

/// When writing the results fails after the run (here: the process may write no file
/// larger than 1 KiB, RLIMIT_FSIZE, which holds for root too, so the empty probe files of
/// the pre-run check pass and the first results file does not), the table is still
/// printed, the error says what was not written, the exit code says the run failed, and
/// nothing is left where the results would have gone.
#[cfg(target_os = "linux")]
#[test]
fn a_write_that_fails_after_the_run_still_prints_the_table_and_names_what_was_not_written() {
    use std::os::unix::process::CommandExt;
    let out = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("inferlat"));
    cmd.args([
        "run",
        quickstart(),
        "--requests",
        "4",
        "--clock",
        "virtual",
        "--quiet",
        "--out",
    ])
    .arg(out.path());
    // SAFETY: setrlimit and signal are async-signal-safe and touch only this child.
    unsafe {
        cmd.pre_exec(|| {
            // A write past the limit fails with EFBIG instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("ttft"),
        "the table was not printed:\n{stdout}"
    );
    assert!(
        stderr.contains("the results were printed above but not written")
            && stderr.contains("quickstart was left as it was"),
        "{stderr}"
    );
    assert!(!out.path().join("quickstart").exists());
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
