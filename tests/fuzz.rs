//! Seeded mutation fuzzing of what users and peers control (STYLE: "fuzz the scenario
//! parser and the frame decoder"): every shipped scenario and every file of tests/bad/,
//! mutated thousands of times, through the parser, the validator, the planner and the
//! run estimate; and random and mutated frames through the wire decoder. Nothing may
//! panic; every rejection must name what was expected, never serde's bare "data did not
//! match any variant of untagged enum".
//!
//! A seeded loop rather than `cargo fuzz` (which needs a nightly toolchain) or a new
//! dependency: the same cases every run, so a failure reproduces from its printed seed
//! and case number, and the whole file stays within a minute in `.ci/run`.
//! `INFERLAT_FUZZ_CASES` sets the number of scenario mutations (default 10,000, a few
//! seconds; `.ci/run` runs 50,000).

use inferlat::clock::ClockKind;
use inferlat::net::wire::{self, DEFAULT_MAX_FRAME, Done, Frame, Mode, Request};
use inferlat::plan::{self, schedule, schedule::Phase};
use inferlat::scenario::{self, Extent, ProfileLibrary};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// xorshift64*: a tiny seeded generator, so the cases are the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values an attacker or a careless user writes where a value goes.
const HOSTILE: &[&str] = &[
    "0",
    "-1",
    "1e-300",
    "1e-19",
    "1e300",
    "nan",
    "inf",
    "-inf",
    "4294967295",
    "4294967296",
    "2147483647",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "true",
    "[]",
    "{}",
    "[1, \"a\"]",
    "{ kind = 1 }",
    "\"\"",
    "\"1e9s\"",
    "\"0s\"",
    "\"-5ms\"",
    "\"1e-300ms\"",
    "\"1e300Gbit/s\"",
    "\"100%\"",
    "\"1000%\"",
    "\"0..4294967295\"",
    "\"2147483640..2147483647\"",
    "\"p100\"",
    "1979-05-27",
    "\"\u{202e}\u{0}\"",
];

fn corpus() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["scenarios", "tests/bad"] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        names.sort();
        for p in names {
            let bytes = std::fs::read(&p).unwrap();
            // The 2,000-line path file mutates slowly and adds nothing to the others.
            if bytes.len() < 20_000 {
                files.push((p, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    files
}

/// One mutation of a scenario's text.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return HOSTILE[rng.below(HOSTILE.len())].to_string();
    }
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(lines.len());
        match rng.below(6) {
            // A value replaced by a hostile one (most mutations: they reach the validator).
            0..=2 => {
                if let Some(eq) = lines[i].find(" = ") {
                    let v = HOSTILE[rng.below(HOSTILE.len())];
                    lines[i] = format!("{} = {v}", &lines[i][..eq]);
                } else {
                    let v = HOSTILE[rng.below(HOSTILE.len())];
                    lines[i] = format!("x{} = {v}", rng.below(3));
                }
            }
            3 => {
                lines.remove(i);
                if lines.is_empty() {
                    lines.push(String::new());
                }
            }
            4 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            _ => {
                // A byte-level cut of the line.
                let l = &lines[i];
                let cut = rng.below(l.len() + 1);
                lines[i] = l.get(..cut).unwrap_or("").to_string();
            }
        }
    }
    lines.join("\n")
}

/// Parses, validates, plans and estimates one text; returns the error message if any.
fn check(path: &Path, text: &str, profiles: &ProfileLibrary) -> Option<String> {
    match scenario::parse(path, text, profiles) {
        Err(e) => Some(e.to_string()),
        Ok(s) => match plan::plan(&s) {
            Err(e) => Some(e.to_string()),
            Ok(p) => {
                for clock in [ClockKind::Real, ClockKind::Virtual] {
                    let e = plan::estimate::estimate(&s, &p, clock);
                    let _ = e.describe(clock);
                }
                // The schedule is generated as the run would, its first requests and the
                // window (a seeded walk of up to `requests` gaps, bounded by validation).
                for phase in [Phase::Warmup, Phase::Measure] {
                    let extent = match phase {
                        Phase::Warmup => s.workload.warmup,
                        Phase::Measure => s.workload.measure,
                    };
                    let _ = schedule::open_loop(&s.workload, extent, s.seed, phase)
                        .take(100)
                        .count();
                    if let Extent::Duration(_) | Extent::Requests(0..=100_000) = extent {
                        let _ = schedule::window(&s.workload, extent, s.seed, phase);
                    }
                }
                let _ = inferlat::report::table::plan_text(&s, &Ok(p));
                None
            }
        },
    }
}

#[test]
fn mutated_scenarios_never_panic_and_every_rejection_says_what_was_expected() {
    let cases: usize = std::env::var("INFERLAT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let files = corpus();
    let seed = 0x01a7_e4c3_u64;
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut rejected = 0;
    let mut bare = Vec::new();
    for case in 0..cases {
        // A bound on the test's time whatever the machine: at most a minute.
        if started.elapsed() > Duration::from_secs(60) {
            eprintln!("stopped after {case} cases at the time bound");
            break;
        }
        let (path, text) = &files[rng.below(files.len())];
        let mutated = mutate(&mut rng, text);
        let profiles = ProfileLibrary::for_scenario(path);
        let outcome = catch_unwind(AssertUnwindSafe(|| check(path, &mutated, &profiles)));
        match outcome {
            Err(_) => panic!(
                "case {case} (seed {seed:#x}) of {} panicked; the mutated text:\n{mutated}",
                path.display()
            ),
            Ok(Some(message)) => {
                rejected += 1;
                if std::env::var("INFERLAT_FUZZ_SHOW").is_ok() && !message.contains("field `") {
                    eprintln!("NOFIELD {}", message.lines().next().unwrap_or(""));
                }
                if message.contains("did not match any variant") || message.trim().is_empty() {
                    bare.push(format!("case {case} of {}: {message}", path.display()));
                }
            }
            Ok(None) => {}
        }
    }
    assert!(
        rejected > 0,
        "no mutation was rejected: the mutator does nothing"
    );
    assert!(
        bare.is_empty(),
        "{} bare rejections:\n{}",
        bare.len(),
        bare.join("\n")
    );
}

fn frames() -> Vec<Frame> {
    vec![
        Frame::Request(Request {
            id: 7,
            output_tokens: 3,
            mode: Mode::Stage,
            route: vec!["client".into(), "gpu-a".into()],
            prompt: vec![1, 2, 3],
        }),
        Frame::Activations {
            id: 1,
            tokens: 2,
            data: vec![9; 64],
        },
        Frame::Token {
            index: 4,
            lead_us: 5,
        },
        Frame::Done(Done {
            node: "gpu-a".into(),
            queue_ns: 1,
            compute_ns: 2,
            software_ns: 0,
        }),
        // With software time: its optional last word.
        Frame::Done(Done {
            node: "gpu-a".into(),
            queue_ns: 1,
            compute_ns: 2,
            software_ns: 3,
        }),
        Frame::Error {
            code: 3,
            message: "bad".into(),
        },
    ]
}

#[test]
fn random_and_mutated_frames_never_panic_the_decoder_nor_allocate_what_they_claim() {
    let mut rng = Rng(0x00f1_a3e5);
    let mut valid = Vec::new();
    for f in frames() {
        let mut buf = Vec::new();
        wire::encode(&f, &mut buf).unwrap();
        // A valid frame decodes to itself.
        let (back, used) = wire::decode(&buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!((back, used), (f, buf.len()));
        valid.push(buf);
    }
    for case in 0..200_000u32 {
        let buf: Vec<u8> = if case % 2 == 0 {
            let n = rng.below(64);
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            let mut b = valid[rng.below(valid.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                match rng.below(3) {
                    0 => b[i] = rng.next() as u8,
                    1 => b.truncate(i),
                    _ => b.insert(i, rng.next() as u8),
                }
                if b.is_empty() {
                    break;
                }
            }
            b
        };
        let max = [16, 1024, DEFAULT_MAX_FRAME][rng.below(3)];
        let r = catch_unwind(|| wire::decode(&buf, max));
        match r {
            Err(_) => panic!("case {case}: decode panicked on {buf:02x?}"),
            Ok(Ok(Some((_, used)))) => assert!(used <= buf.len(), "case {case}: {buf:02x?}"),
            Ok(_) => {}
        }
    }
}
