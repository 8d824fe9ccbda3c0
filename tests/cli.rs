//! The command line as a user meets it (DESIGN §9): exit codes, help, and the error message
//! for every malformed scenario in `tests/bad/`.
//!
//! Each file in `tests/bad/` starts with comment lines that say what its error must show:
//!
//! ```toml
//! # expect: <a substring of the error>
//! # line: <the line the error points at>      (where a location makes sense)
//! # field: <the field path the error names>   (where a field makes sense)
//! ```
//!
//! Nothing here runs a scenario: only `validate`, `list`, help and the error paths of `run`.

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::time::Duration;

const QUICKSTART: &str = "scenarios/quickstart.toml";

/// What one invocation printed and returned.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The package root: the binary runs here, so relative paths in these tests resolve alike.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn inferlat() -> Command {
    let mut cmd = Command::cargo_bin("inferlat").expect("the inferlat binary is built");
    cmd.current_dir(root());
    cmd.env_remove("RUST_BACKTRACE");
    // Generous: every command here finishes in well under a second. A command that
    // started running a scenario by mistake is killed instead of hanging the suite.
    cmd.timeout(Duration::from_secs(30));
    cmd
}

fn run<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = inferlat().args(args).output().expect("inferlat starts");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `inferlat validate PATH`.
fn validate(path: &Path) -> Outcome {
    run([std::ffi::OsStr::new("validate"), path.as_os_str()])
}

/// A Rust `Debug` dump or a panic in user-facing text, if there is one.
fn debug_dump_marker(text: &str) -> Option<String> {
    for marker in [
        "panicked",
        "RUST_BACKTRACE",
        "stack backtrace",
        "Error {",
        "kind:",
        "Os {",
        "Some(",
        "\\\"",
    ] {
        if text.contains(marker) {
            return Some(marker.to_string());
        }
    }
    // Struct syntax: `Name { field: ...`. Scenario syntax like `{ kind = "poisson" }` is fine.
    for (at, _) in text.match_indices(" { ") {
        let before = text[..at]
            .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        let after = &text[at + 3..];
        let ident_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let starts_upper = before
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase());
        if starts_upper && ident_len > 0 && after[ident_len..].starts_with(':') {
            return Some(format!("{before} {{ {}:", &after[..ident_len]));
        }
    }
    None
}

/// The checks every rejected input must pass: exit code 2, nothing on stdout, and a
/// clean `error: ` message on stderr. Returns the problems found.
fn bad_input_problems(out: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    if out.code != Some(2) {
        problems.push(format!("exit code {:?}, expected 2", out.code));
    }
    if !out.stdout.is_empty() {
        problems.push(format!("stdout is not empty: {:?}", out.stdout));
    }
    if !out.stderr.starts_with("error: ") {
        problems.push("stderr does not start with `error: `".into());
    }
    if let Some(marker) = debug_dump_marker(&out.stderr) {
        problems.push(format!("stderr shows a panic or a Debug dump ({marker:?})"));
    }
    problems
}

fn assert_bad_input(out: &Outcome) {
    let problems = bad_input_problems(out);
    assert!(
        problems.is_empty(),
        "{}\n--- stderr ---\n{}",
        problems.join("\n"),
        out.stderr
    );
}

/// What the header comments of a bad file expect.
#[derive(Debug, Default)]
struct Expectation {
    substring: String,
    line: Option<usize>,
    field: Option<String>,
}

fn expectation(path: &Path) -> Expectation {
    let bytes =
        std::fs::read(root().join(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = String::from_utf8_lossy(&bytes);
    let mut exp = Expectation::default();
    for (i, line) in text.lines().enumerate() {
        let Some(comment) = line.strip_prefix('#') else {
            break;
        };
        let comment = comment.trim();
        if let Some(s) = comment.strip_prefix("expect:") {
            assert_eq!(
                i,
                0,
                "{}: `# expect:` must be the first line",
                path.display()
            );
            exp.substring = s.trim().to_string();
        } else if let Some(s) = comment.strip_prefix("line:") {
            exp.line = Some(
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{}: `# line:` needs a number", path.display())),
            );
        } else if let Some(s) = comment.strip_prefix("field:") {
            exp.field = Some(s.trim().to_string());
        }
    }
    assert!(
        !exp.substring.is_empty(),
        "{}: the first line must be `# expect: <substring>`",
        path.display()
    );
    exp
}

/// Validates one bad file and returns every way its error falls short of the header.
fn bad_file_problems(path: &Path) -> Vec<String> {
    let exp = expectation(path);
    let out = validate(path);
    let mut problems = bad_input_problems(&out);
    let shown = path.display().to_string();
    if !out.stderr.contains(&shown) {
        problems.push(format!("stderr does not name the file {shown}"));
    }
    if let Some(line) = exp.line
        && !out.stderr.contains(&format!("{shown}:{line}:"))
    {
        problems.push(format!("stderr does not point at `{shown}:{line}:`"));
    }
    if let Some(field) = &exp.field
        && !out.stderr.contains(&format!("field `{field}`"))
    {
        problems.push(format!("stderr does not name the field `{field}`"));
    }
    if !out.stderr.contains(&exp.substring) {
        problems.push(format!("stderr does not contain {:?}", exp.substring));
    }
    problems
        .into_iter()
        .map(|p| format!("{shown}: {p}\n--- stderr ---\n{}", out.stderr))
        .collect()
}

fn assert_bad_file(path: &str) {
    let problems = bad_file_problems(Path::new(path));
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The files of the bad-input corpus, relative to the package root, sorted.
fn bad_files() -> Vec<PathBuf> {
    let dir = root().join("tests/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/bad exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| Path::new("tests/bad").join(p.file_name().expect("a file name")))
        .collect();
    files.sort();
    files
}

fn write_temp(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write a temporary scenario");
    path
}

// ---------------------------------------------------------------------------------------
// The bad-input corpus.

#[test]
fn every_bad_file_is_rejected_with_a_located_message() {
    let files = bad_files();
    let problems: Vec<String> = files.iter().flat_map(|f| bad_file_problems(f)).collect();
    assert!(
        problems.is_empty(),
        "{} of {} bad files fall short:\n\n{}",
        problems.len(),
        files.len(),
        problems.join("\n\n")
    );
}

#[test]
fn bad_corpus_has_at_least_twenty_cases() {
    let files = bad_files();
    assert!(files.len() >= 20, "only {} files in tests/bad", files.len());
}

#[test]
fn validating_many_bad_files_reports_each_of_them() {
    let files = bad_files();
    let out = run(std::iter::once(PathBuf::from("validate")).chain(files.iter().cloned()));
    assert_bad_input(&out);
    for f in &files {
        assert!(
            out.stderr.contains(&f.display().to_string()),
            "{} is not reported:\n{}",
            f.display(),
            out.stderr
        );
    }
}

#[test]
fn good_and_bad_files_together_print_no_plan() {
    let out = run(["validate", QUICKSTART, "tests/bad/unit-unknown.toml"]);
    assert_bad_input(&out);
    assert!(!out.stderr.contains("quickstart.toml"), "{}", out.stderr);
}

#[test]
fn bad_unit_names_field_and_line() {
    assert_bad_file("tests/bad/unit-unknown.toml");
    let out = validate(Path::new("tests/bad/unit-unknown.toml"));
    assert!(
        out.stderr.starts_with(
            "error: tests/bad/unit-unknown.toml:27:7: field `link[0].rtt`: invalid duration \"40 parsecs\""
        ),
        "{}",
        out.stderr
    );
    // The valid units, and the offending value underlined.
    assert!(out.stderr.contains("valid units: ns, us"), "{}", out.stderr);
    assert!(
        out.stderr.contains("27 | rtt = \"40 parsecs\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("^^^^^^^^^^^^"), "{}", out.stderr);
}

#[test]
fn bandwidth_without_per_second_lists_rate_units() {
    assert_bad_file("tests/bad/bandwidth-without-per-second.toml");
    let out = validate(Path::new("tests/bad/bandwidth-without-per-second.toml"));
    assert!(out.stderr.contains("Mbit/s"), "{}", out.stderr);
}

#[test]
fn unknown_field_lists_the_valid_fields() {
    assert_bad_file("tests/bad/unknown-node-field.toml");
    assert_bad_file("tests/bad/unknown-link-field.toml");
    assert_bad_file("tests/bad/unknown-top-level-field.toml");
    let out = validate(Path::new("tests/bad/unknown-link-field.toml"));
    assert!(out.stderr.contains("`rtt`"), "{}", out.stderr);
    assert!(out.stderr.contains("`bandwidth`"), "{}", out.stderr);
}

#[test]
fn toml_syntax_error_points_at_line_and_column() {
    assert_bad_file("tests/bad/toml-unclosed-string.toml");
    let out = validate(Path::new("tests/bad/toml-unclosed-string.toml"));
    assert!(
        out.stderr
            .starts_with("error: tests/bad/toml-unclosed-string.toml:26:12: "),
        "{}",
        out.stderr
    );
}

#[test]
fn route_through_missing_link_names_both_nodes_and_the_fix() {
    assert_bad_file("tests/bad/topology-path-missing-link.toml");
    let out = validate(Path::new("tests/bad/topology-path-missing-link.toml"));
    assert!(
        out.stderr
            .contains("add [[link]] between = [\"client\", \"gpu-b\"]"),
        "{}",
        out.stderr
    );
}

#[test]
fn layer_span_past_the_model_says_what_is_valid() {
    assert_bad_file("tests/bad/layer-span-past-model.toml");
    let out = validate(Path::new("tests/bad/layer-span-past-model.toml"));
    assert!(
        out.stderr.contains("valid spans lie inside 0..32"),
        "{}",
        out.stderr
    );
}

#[test]
fn loss_over_100_percent_says_the_valid_range() {
    assert_bad_file("tests/bad/loss-over-100-percent.toml");
}

#[test]
fn weights_larger_than_device_memory_name_the_device() {
    assert_bad_file("tests/bad/weights-exceed-device-memory.toml");
}

#[test]
fn empty_file_is_rejected_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "empty.toml", b"");
    let out = validate(&path);
    assert_bad_input(&out);
    assert!(
        out.stderr.contains(&path.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("`name`"), "{}", out.stderr);
}

#[test]
fn binary_file_is_rejected_as_not_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "binary.toml", &[0xff, 0xfe, 0x00, 0x80, 0x01]);
    let out = validate(&path);
    assert_bad_input(&out);
    assert!(
        out.stderr.contains(&format!(
            "{}: not a text file: byte 0 is not UTF-8",
            path.display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_path_says_no_such_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("does-not-exist.toml");
    let out = validate(&path);
    assert_bad_input(&out);
    assert!(
        out.stderr.contains(&format!(
            "{}: cannot read the scenario file: no such file",
            path.display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn directory_path_says_it_is_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path());
    assert_bad_input(&out);
    assert!(out.stderr.contains("it is a directory"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------
// Help, validate, list and flags.

#[test]
fn top_level_help_lists_the_commands_and_exit_codes() {
    let out = run(["--help"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for word in [
        "run",
        "validate",
        "list",
        "--help",
        "--version",
        "Exit codes",
    ] {
        assert!(
            out.stdout.contains(word),
            "--help lacks {word}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn run_help_mentions_its_flags() {
    let out = run(["run", "--help"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for flag in [
        "--out",
        "--duration",
        "--requests",
        "--seed",
        "--clock",
        "--quiet",
        "real",
        "virtual",
    ] {
        assert!(
            out.stdout.contains(flag),
            "run --help lacks {flag}:\n{}",
            out.stdout
        );
    }
}

#[test]
fn validate_help_mentions_its_files() {
    let out = run(["validate", "--help"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("<FILE>"), "{}", out.stdout);
    assert!(out.stdout.contains("--help"), "{}", out.stdout);
}

#[test]
fn list_help_mentions_the_scenarios_flag() {
    let out = run(["list", "--help"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("--scenarios"), "{}", out.stdout);
}

#[test]
fn version_flag_prints_the_version() {
    let out = run(["--version"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        out.stdout
    );
}

#[test]
fn validate_quickstart_prints_route_bytes_and_floor() {
    let out = run(["validate", QUICKSTART]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    for text in [
        "scenarios/quickstart.toml: ok",
        "route",
        "client -> gpu-a",
        "bytes",
        "floor",
        "baseline on h100-sxm",
    ] {
        assert!(out.stdout.contains(text), "lacks {text:?}:\n{}", out.stdout);
    }
}

#[test]
fn every_shipped_scenario_validates() {
    let mut files: Vec<String> = std::fs::read_dir("scenarios")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 12, "{files:?}");
    let mut args = vec!["validate".to_string()];
    args.extend(files.iter().cloned());
    let out = run(args);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.matches(": ok  (").count(), files.len());
    // Every kind the library covers prints its bytes per link.
    for kind in [
        "pipeline (client-relayed)",
        "pipeline (server-to-server)",
        "tensor",
        "star",
        "relay",
        "hedged",
        "direct",
    ] {
        assert!(
            out.stdout.contains(&format!("route     {kind}")),
            "no {kind} scenario"
        );
    }
}

#[test]
fn a_scenario_that_parses_but_cannot_run_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(QUICKSTART).unwrap();
    // The ring kind is not run (a server-to-server pipeline is exo's ring).
    let ring = text.replace(
        "[[link]]",
        "[topology]\nkind = \"ring\"\npath = [\"client\", \"gpu-a\"]\n\n[[link]]",
    );
    let ring_file = dir.path().join("ring.toml");
    std::fs::write(&ring_file, ring).unwrap();
    let out = validate(&ring_file);
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(out.stderr.contains("server-to-server"), "{}", out.stderr);
}

#[test]
fn list_shows_scenarios_presets_and_profiles() {
    let out = run(["list"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for text in [
        "quickstart.toml",
        "llama-2-7b",
        "a100-80g",
        "h100-sxm",
        "dllama-0.12",
    ] {
        assert!(out.stdout.contains(text), "lacks {text:?}:\n{}", out.stdout);
    }
}

#[test]
fn unknown_flag_exits_2() {
    for args in [
        vec!["--frobnicate"],
        vec!["validate", "--frobnicate", QUICKSTART],
        vec!["run", "--frobnicate", QUICKSTART],
        vec!["list", "--frobnicate"],
    ] {
        let out = run(&args);
        assert_bad_input(&out);
        assert!(
            out.stderr.contains("'--frobnicate'"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn missing_command_or_files_exit_2() {
    for args in [vec![], vec!["validate"], vec!["run"]] {
        let out = run(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains("Usage:"), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn virtual_clock_runs_are_identical_for_one_seed() {
    let dir = tempfile::tempdir().unwrap();
    let summary = |name: &str, seed: &str| {
        let results = dir.path().join(name);
        let out = run([
            "run".as_ref(),
            "--clock".as_ref(),
            "virtual".as_ref(),
            "--seed".as_ref(),
            seed.as_ref(),
            "--quiet".as_ref(),
            "--out".as_ref(),
            results.as_os_str(),
            QUICKSTART.as_ref(),
        ]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(out.stdout.contains("virtual clock"), "{}", out.stdout);
        assert!(out.stdout.contains("simulated"), "{}", out.stdout);
        let text = std::fs::read_to_string(results.join("quickstart/summary.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let (a, b, c) = (summary("a", "7"), summary("b", "7"), summary("c", "8"));
    assert_eq!(a["clock"], "virtual");
    assert!(
        a["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("CPU costs")),
        "{}",
        a["notes"]
    );
    // Bit for bit: every metric, every link counter, quinn's own statistics.
    for key in ["runs", "tax", "network", "emulator"] {
        assert_eq!(
            a[key], b[key],
            "{key} differs between two runs with one seed"
        );
    }
    // And the seed matters.
    assert_ne!(a["runs"], c["runs"]);
}

#[test]
fn run_with_a_bad_file_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let out = run([
        "run".as_ref(),
        "--out".as_ref(),
        results.as_os_str(),
        "tests/bad/loss-over-100-percent.toml".as_ref(),
    ]);
    assert_bad_input(&out);
    assert!(
        out.stderr
            .contains("tests/bad/loss-over-100-percent.toml:30:8: field `link[0].loss`"),
        "{}",
        out.stderr
    );
    assert!(!results.exists(), "the results folder was created");
}

#[test]
fn run_with_one_bad_file_among_good_ones_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let out = run([
        "run".as_ref(),
        "--out".as_ref(),
        results.as_os_str(),
        QUICKSTART.as_ref(),
        "tests/bad/unit-unknown.toml".as_ref(),
    ]);
    assert_bad_input(&out);
    assert!(!results.exists(), "the results folder was created");
}

#[test]
fn run_with_out_under_a_regular_file_exits_2_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(&dir, "plain-file", b"not a folder");
    let results = file.join("results");
    let out = run([
        "run".as_ref(),
        "--quiet".as_ref(),
        "--out".as_ref(),
        results.as_os_str(),
        QUICKSTART.as_ref(),
    ]);
    assert_bad_input(&out);
    assert!(
        out.stderr.contains(&format!(
            "cannot create the output folder {}",
            results.display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn run_of_two_scenarios_with_one_name_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let out = run([
        "run".as_ref(),
        "--out".as_ref(),
        results.as_os_str(),
        QUICKSTART.as_ref(),
        QUICKSTART.as_ref(),
    ]);
    assert_bad_input(&out);
    assert!(
        out.stderr
            .contains("two scenarios are named \"quickstart\""),
        "{}",
        out.stderr
    );
    assert!(!results.exists(), "the results folder was created");
}

#[test]
fn run_with_bad_override_flags_exits_2() {
    for args in [
        vec!["run", "--duration", "0s", QUICKSTART],
        vec!["run", "--duration", "ten", QUICKSTART],
        vec!["run", "--requests", "0", QUICKSTART],
        vec!["run", "--requests", "-3", QUICKSTART],
        vec!["run", "--seed", "x", QUICKSTART],
        vec!["run", "--clock", "sundial", QUICKSTART],
        vec!["run", "--duration", "5s", "--requests", "5", QUICKSTART],
    ] {
        let out = run(&args);
        let problems = bad_input_problems(&out);
        assert!(
            problems.is_empty(),
            "{args:?}: {problems:?}\n{}",
            out.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------
// Problems found in review, each fixed; these tests keep them fixed.
// move a `tests/bad/` file into `tests/bad/`).

#[test]
fn tiny_bandwidth_is_rejected_without_a_panic() {
    assert_bad_file("tests/bad/bandwidth-too-small.toml");
}

#[test]
fn empty_direct_path_is_rejected_without_a_panic() {
    assert_bad_file("tests/bad/topology-direct-empty-path.toml");
}

#[test]
fn empty_star_path_is_rejected() {
    assert_bad_file("tests/bad/topology-star-empty-path.toml");
}

#[test]
fn huge_prompt_token_count_is_rejected_without_a_panic() {
    assert_bad_file("tests/bad/prompt-tokens-huge.toml");
}

#[test]
fn huge_output_token_count_is_rejected_without_an_abort() {
    assert_bad_file("tests/bad/output-tokens-huge.toml");
}

#[test]
fn huge_lognormal_median_is_rejected_without_a_panic() {
    assert_bad_file("tests/bad/lognormal-median-huge.toml");
}

#[test]
fn table_written_instead_of_array_of_tables_names_the_field_and_the_fix() {
    assert_bad_file("tests/bad/link-written-as-table.toml");
}

#[test]
fn negative_max_batch_says_what_is_valid_not_a_rust_type() {
    assert_bad_file("tests/bad/max-batch-negative.toml");
    let out = validate(Path::new("tests/bad/max-batch-negative.toml"));
    assert!(!out.stderr.contains("u32"), "{}", out.stderr);
}

#[test]
fn scenario_without_nodes_has_no_top_level_field_label() {
    assert_bad_file("tests/bad/no-nodes.toml");
    let out = validate(Path::new("tests/bad/no-nodes.toml"));
    assert!(!out.stderr.contains("(top level)"), "{}", out.stderr);
}

#[test]
fn missing_link_on_the_implied_route_is_located_in_the_file() {
    let path = "tests/bad/route-without-link.toml";
    assert_bad_file(path);
    let out = validate(Path::new(path));
    assert!(!out.stderr.contains(":1:1:"), "{}", out.stderr);
    assert!(!out.stderr.contains("topology.path"), "{}", out.stderr);
    assert!(
        out.stderr.contains(" | "),
        "no source snippet:\n{}",
        out.stderr
    );
}

#[test]
fn rejected_link_is_the_only_problem_reported() {
    for path in [
        "tests/bad/link-to-itself.toml",
        "tests/bad/link-to-missing-node.toml",
    ] {
        let out = validate(Path::new(path));
        assert_bad_input(&out);
        assert!(!out.stderr.contains(":1:1:"), "{}", out.stderr);
        assert!(!out.stderr.contains("problems found"), "{}", out.stderr);
    }
}

#[test]
fn duplicate_toml_key_names_the_key() {
    let out = validate(Path::new("tests/bad/toml-duplicate-key.toml"));
    assert_bad_input(&out);
    assert!(out.stderr.contains("`rtt`"), "{}", out.stderr);
}

#[test]
fn number_without_unit_in_a_string_says_a_unit_is_required() {
    let out = validate(Path::new("tests/bad/unit-missing-in-string.toml"));
    assert_bad_input(&out);
    assert!(out.stderr.contains("a unit is required"), "{}", out.stderr);
    assert!(!out.stderr.contains("no unit"), "{}", out.stderr);
}

#[test]
fn duration_flag_without_unit_says_a_unit_is_required() {
    let out = run(["run", "--duration", "10", QUICKSTART]);
    assert_bad_input(&out);
    assert!(out.stderr.contains("a unit is required"), "{}", out.stderr);
}

#[test]
fn requests_flag_zero_says_at_least_one() {
    let out = run(["run", "--requests", "0", QUICKSTART]);
    assert_bad_input(&out);
    assert!(out.stderr.contains("at least 1"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("18446744073709551615"),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_table_is_not_blamed_on_the_first_field() {
    let text = std::fs::read_to_string(root().join(QUICKSTART)).unwrap();
    let start = text.find("[workload]").unwrap();
    let end = text.find("[[node]]").unwrap();
    let without_workload = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(&text[start..end], "");
    assert!(without_workload.starts_with("name = "));
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "no-workload.toml", without_workload.as_bytes());
    let out = validate(&path);
    assert_bad_input(&out);
    assert!(out.stderr.contains("`workload`"), "{}", out.stderr);
    assert!(!out.stderr.contains("field `name`"), "{}", out.stderr);
}

#[test]
fn zero_byte_file_says_it_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    // Not named "empty": the message itself must say so.
    let path = write_temp(&dir, "scenario.toml", b"");
    let out = validate(&path);
    assert_bad_input(&out);
    assert!(out.stderr.contains("empty"), "{}", out.stderr);
}

#[test]
fn nul_byte_is_not_called_invalid_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(&dir, "nul.toml", b"name = \"a\0\"\n");
    let out = validate(&path);
    assert_bad_input(&out);
    assert!(out.stderr.contains("not a text file"), "{}", out.stderr);
    assert!(!out.stderr.contains("not UTF-8"), "{}", out.stderr);
}

#[test]
fn list_with_a_missing_scenarios_folder_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let out = run(["list".as_ref(), "--scenarios".as_ref(), missing.as_os_str()]);
    assert_bad_input(&out);
    assert!(
        out.stderr.contains(&missing.display().to_string()),
        "{}",
        out.stderr
    );
}
