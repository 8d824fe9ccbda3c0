//! The command line: clap parsing, the progress display, exit codes (DESIGN §9).
//! `main` only calls [`run`].

use crate::clock::{Clock, ClockKind};
use crate::harness::{self, Options, Progress};
use crate::plan::{self, Plan};
use crate::report::{self, Environment, Results, compare};
pub use crate::report::{save_baseline, write_reports};
use crate::scenario::units::Dur;
use crate::scenario::{self, Extent, Override, ProfileLibrary, Scenario};
use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the run failed or was interrupted.
pub const EXIT_RUN_FAILED: i32 = 1;
/// Exit code: bad input (a scenario, a flag, a path).
pub const EXIT_BAD_INPUT: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "inferlat",
    version,
    about = "Measure what remote and decentralized AI inference really costs",
    long_about = "inferlat builds the topology a scenario file describes (clients, relays and GPU workers joined by \
emulated links) from real QUIC endpoints, drives it with a load generator that times every request from its \
scheduled start, runs the same workload on a local-GPU baseline, and writes HdrHistograms and a JSON summary.\n\n\
Exit codes: 0 success, 1 the run failed, was invalid (too many requests failed) or was interrupted, 2 bad input.",
    after_help = "Start with: inferlat run scenarios/quickstart.toml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenarios: the topology, then the local baseline; print a table and write results
    #[command(
        after_help = "Results go to <out>/<scenario-name>/: summary.json and one .hgrm per run and metric.\n\
Ctrl-C or SIGTERM stops at once: requests in flight get 1 s, then what was measured is written, marked \"complete\": false \
(exit 1); a second signal quits without writing. A run estimated past --max-wall or --max-memory is refused before it starts."
    )]
    Run(RunArgs),
    /// Check scenarios without running them and print each plan and its analytic floor
    Validate {
        /// Scenario files (TOML)
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Compare two result folders: per scenario, run and metric, the change and a verdict
    #[command(
        after_help = "BASE and NEW are result folders: one scenario's (with summary.json) or a folder of them, \
like results/ or results/baselines/NAME/. Scenarios are matched by name.\n\n\
Virtual clock (deterministic): a value that moved by more than --threshold regressed or improved, exactly. \
Real clock: the 95% confidence interval of the relative change decides: wholly past --threshold is a verdict, \
wholly within it is \"no change\", anything else \"inconclusive\". \
Results of different identities (scenario text or traces, device profiles, seed, overrides, clock, tool version) \
are refused, naming what differs. Only metrics that changed are listed unless --verbose.\n\n\
Exit codes: 0 compared (no regression, or regressions without --fail-on-regression); \
1 a regression with --fail-on-regression; 2 bad input: a missing or unreadable folder, or a refused pair."
    )]
    Compare(CompareArgs),
    /// Rebuild report.md and report.html from result folders (and the comparisons saved in them)
    #[command(
        after_help = "RESULTS are result folders: one scenario's (with summary.json) or a folder of them, like results/.\n\
The report has, per scenario, topology against baseline at p50 and p99 for ttft, tpot and e2e, throughput, \
the latency tax, where the time goes, the published reference check, and the verdicts of a \
`run --baseline` when its compare.json is in the folder."
    )]
    Report {
        /// Result folders
        #[arg(required = true, value_name = "RESULTS")]
        results: Vec<PathBuf>,
        /// Where to write report.md and report.html [default: the first RESULTS folder, or the folder above it when it is one scenario's]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Fit a device profile to a real engine: measure prefill and decode, print each
    /// point's residual, write the profile
    #[command(
        after_help = "Measures through the openai engine (docs/engines.md): the prefill of each --prompts length (time to the first token of a one-token request, alone) and the decode step of each --batches size at each --contexts length (time per output token of that many requests at once); fits the roofline model's effective FLOP/s, bandwidth and per-layer overhead for the model's shape; prints every point's residual and writes the profile, with the engine, model, date and fit error in its [sources]. Give the model's shape with --preset (`inferlat list` shows them) or --shape FILE. Ctrl-C stops measuring and fits what it has."
    )]
    Calibrate(CalibrateArgs),
    /// List shipped scenarios, model presets and device profiles
    List {
        /// Folder of scenarios to list [default: scenarios]
        #[arg(long, value_name = "DIR")]
        scenarios: Option<PathBuf>,
    },
}

#[derive(Parser, Debug)]
struct RunArgs {
    /// Scenario files (TOML)
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Folder for results; each scenario writes to <DIR>/<scenario-name>/
    #[arg(long, value_name = "DIR", default_value = "results")]
    out: PathBuf,
    /// Override the measured phase's length, like 10s (replaces the scenario's duration or requests)
    #[arg(long, value_name = "D", conflicts_with = "requests", value_parser = parse_dur)]
    duration: Option<Dur>,
    /// Override the measured phase with a number of requests
    #[arg(long, value_name = "N", value_parser = parse_requests)]
    requests: Option<u64>,
    /// The failed share of measured requests past which a run is invalid (exit 1), like 5%;
    /// overrides the scenario's `[workload] max_failed` [default: 5%]
    #[arg(long, value_name = "PCT", value_parser = parse_max_failed)]
    max_failed: Option<f64>,
    /// Override the scenario's seed
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Which clock runs the harness: real (wall-clock time, what you measure) or virtual
    /// (simulated time: deterministic from the seed, no waiting; harness CPU costs are not in it)
    #[arg(long, value_enum, default_value_t = ClockKind::Real)]
    clock: ClockKind,
    /// Real clock: run the harness's threads under SCHED_FIFO at PRIORITY (1-90; the timing
    /// thread one above), so a busy machine does not make the load generator send late.
    /// Needs root or CAP_SYS_NICE; where refused the run goes on under the normal scheduler
    /// and summary.json says so (environment.scheduling). Also INFERLAT_REALTIME=PRIORITY
    #[arg(long, value_name = "PRIORITY", num_args = 0..=1, default_missing_value = "10",
          value_parser = clap::value_parser!(u8).range(1..=90))]
    realtime: Option<u8>,
    /// Print no progress while running
    #[arg(long, short)]
    quiet: bool,
    /// Also save the results as baseline NAME, in <out>/baselines/NAME/<scenario-name>/
    #[arg(long, value_name = "NAME", value_parser = parse_baseline_name)]
    save_baseline: Option<String>,
    /// Compare the results with baseline NAME (<out>/baselines/NAME/) and print the verdicts
    #[arg(long, value_name = "NAME", value_parser = parse_baseline_name)]
    baseline: Option<String>,
    /// With --baseline: the noise threshold, a percentage
    #[arg(long, value_name = "PCT", default_value = "5%", value_parser = parse_threshold)]
    threshold: f64,
    /// With --baseline: exit 1 when any metric regressed
    #[arg(long, requires = "baseline")]
    fail_on_regression: bool,
    /// Refuse (exit 2, printing the estimate) a scenario whose estimated wall time, setup,
    /// topology and baseline together, passes this, like 30m or 12h [default: 4h]
    #[arg(long, value_name = "D", value_parser = parse_limit)]
    max_wall: Option<Dur>,
    /// Refuse (exit 2, printing the estimate) a scenario whose measured results would hold
    /// more memory than this, like 512MiB or 32GiB [default: 8GiB]
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    max_memory: Option<u64>,
}

fn parse_limit(s: &str) -> Result<Dur, String> {
    let d = Dur::parse(s)?;
    if d.get().is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn parse_memory(s: &str) -> Result<u64, String> {
    let b = crate::scenario::units::Bytes::parse(s)?.as_u64();
    if b == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(b)
}

#[derive(Parser, Debug)]
struct CalibrateArgs {
    /// The engine's API base URL, like http://127.0.0.1:8000/v1
    #[arg(long, value_name = "URL")]
    engine: String,
    /// The model name the server serves (its /v1/models lists them)
    #[arg(long, value_name = "NAME")]
    model: String,
    /// The model's shape: a preset name (see `inferlat list`)
    #[arg(
        long,
        value_name = "MODEL",
        required_unless_present = "shape",
        conflicts_with = "shape"
    )]
    preset: Option<String>,
    /// The model's shape from a TOML file with the fields of a scenario's [model] table
    /// (layers, hidden, params, kv_dim, vocab, weight_bytes)
    #[arg(long, value_name = "FILE")]
    shape: Option<PathBuf>,
    /// Where to write the profile, like profiles/NAME.toml (its name is the file's stem)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The API: completions or chat
    #[arg(long, value_name = "API", default_value = "completions", value_parser = ["completions", "chat"])]
    api: String,
    /// Prompt lengths whose prefill is measured, in tokens, comma-separated (longer ones stop at the server's limit)
    #[arg(long, value_name = "N,...", default_value = "16,32,64,128,256,512,1024,2048", value_parser = parse_counts)]
    prompts: Counts,
    /// Batch sizes whose decode step is measured, comma-separated
    #[arg(long, value_name = "N,...", default_value = "1,2,4,8", value_parser = parse_counts)]
    batches: Counts,
    /// Context lengths (tokens) of the decode measurements, comma-separated
    #[arg(long, value_name = "N,...", default_value = "128,512,1024", value_parser = parse_counts)]
    contexts: Counts,
    /// Prompt lengths measured like the others but kept out of the fit, comma-separated: the
    /// profile's error on each is printed and recorded in its [sources]
    #[arg(long, value_name = "N,...", value_parser = parse_counts)]
    hold_out_prompts: Option<Counts>,
    /// Decode steps measured but kept out of the fit, as BATCHxCONTEXT, comma-separated, like 2x64
    #[arg(long, value_name = "BxC,...", value_parser = parse_decodes)]
    hold_out_decodes: Option<Decodes>,
    /// Output tokens of each decode request
    #[arg(long, value_name = "N", default_value_t = 32)]
    steps: u32,
    /// Measurements of each point, taken in rounds over all the points; the fastest is kept
    /// (other load only adds time)
    #[arg(long, value_name = "N", default_value_t = 3)]
    repeats: u32,
    /// The device's memory, like 24GB (not measured; the profile needs it for weight checks)
    #[arg(long, value_name = "SIZE", default_value = "80GB")]
    memory: String,
    /// Further request fields as a JSON object, like '{"temperature": 0}'
    #[arg(long, value_name = "JSON")]
    body: Option<String>,
    /// The environment variable that holds the API key
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// Do not send min_tokens and ignore_eos (for servers that reject them)
    #[arg(long)]
    no_ignore_eos: bool,
}

/// A comma-separated list of counts.
#[derive(Clone, Debug)]
struct Counts(Vec<u32>);

fn parse_counts(s: &str) -> Result<Counts, String> {
    let v: Result<Vec<u32>, String> = s
        .split(',')
        .map(|t| match t.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "invalid count \"{t}\": give whole numbers above 0, like 16,64,256"
            )),
        })
        .collect();
    v.map(Counts)
}

/// A comma-separated list of decode steps, each BATCHxCONTEXT.
#[derive(Clone, Debug)]
struct Decodes(Vec<(u32, u32)>);

fn parse_decodes(s: &str) -> Result<Decodes, String> {
    let v: Result<Vec<(u32, u32)>, String> = s
        .split(',')
        .map(|t| {
            let bad = || {
                format!("invalid decode step \"{t}\": give BATCHxCONTEXT with whole numbers above 0, like 2x64")
            };
            let (b, c) = t.trim().split_once(['x', 'X']).ok_or_else(bad)?;
            match (b.trim().parse::<u32>(), c.trim().parse::<u32>()) {
                (Ok(b), Ok(c)) if b > 0 && c > 0 => Ok((b, c)),
                _ => Err(bad()),
            }
        })
        .collect();
    v.map(Decodes)
}

#[derive(Parser, Debug)]
struct CompareArgs {
    /// The base results folder
    #[arg(value_name = "BASE")]
    base: PathBuf,
    /// The new results folder
    #[arg(value_name = "NEW")]
    new: PathBuf,
    /// Changes smaller than this percentage are never verdicts
    #[arg(long, value_name = "PCT", default_value = "5%", value_parser = parse_threshold)]
    threshold: f64,
    /// Exit 1 when any metric regressed
    #[arg(long)]
    fail_on_regression: bool,
    /// Where to write the verdicts as JSON [default: NEW/compare.json]
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// List every compared metric, not only those that changed
    #[arg(long, short)]
    verbose: bool,
}

fn parse_threshold(s: &str) -> Result<f64, String> {
    let f = crate::scenario::units::Fraction::parse(s)?.get();
    if f >= 1.0 {
        return Err("a threshold of 100% or more would hide every change".into());
    }
    Ok(f)
}

fn parse_max_failed(s: &str) -> Result<f64, String> {
    Ok(crate::scenario::units::Fraction::parse(s)?.get())
}

fn parse_baseline_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with('.');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "\"{s}\" is not a baseline name: use 1-64 letters, digits, '-', '_' or '.', not starting with '.'"
        ))
    }
}

fn parse_requests(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) if n > scenario::limits::MAX_REQUESTS => Err(scenario::too_many_requests(n)),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "\"{s}\" is not a whole number of requests (at least 1)"
        )),
    }
}

fn parse_dur(s: &str) -> Result<Dur, String> {
    let d = Dur::parse(s)?;
    if d.get().is_zero() {
        return Err("must be greater than zero".into());
    }
    if d.get() > scenario::limits::MAX_PHASE {
        return Err(scenario::phase_too_long(d.get()));
    }
    Ok(d)
}

/// A failure and the exit code it maps to.
enum Failure {
    BadInput(anyhow::Error),
    Run(anyhow::Error),
}

/// Parses the command line, runs the command, prints errors, returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                EXIT_BAD_INPUT
            } else {
                EXIT_OK
            };
        }
    };
    let result = match cli.command {
        Command::Run(args) => run_command(args),
        Command::Validate { files } => validate_command(&files),
        Command::Compare(args) => compare_command(&args),
        Command::Report { results, out } => report_command(&results, out),
        Command::Calibrate(args) => calibrate_command(&args),
        Command::List { scenarios } => match scenarios {
            Some(dir) if !dir.is_dir() => Err(Failure::BadInput(anyhow!(
                "{}: no such folder",
                dir.display()
            ))),
            Some(dir) => list_command(&dir),
            None => list_command(Path::new("scenarios")),
        },
    };
    match result {
        Ok(code) => code,
        Err(Failure::BadInput(e)) => {
            eprintln!("error: {e:#}");
            EXIT_BAD_INPUT
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {e:#}");
            EXIT_RUN_FAILED
        }
    }
}

/// Loads every file, reporting all that fail.
fn load_all(files: &[PathBuf]) -> Result<Vec<Scenario>, Failure> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match scenario::load(f) {
            Ok(s) => ok.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(ok)
    } else {
        Err(Failure::BadInput(anyhow!(errors.join("\nerror: "))))
    }
}

fn validate_command(files: &[PathBuf]) -> Result<i32, Failure> {
    let scenarios = load_all(files)?;
    let mut errors = Vec::new();
    for s in &scenarios {
        let plan = plan::plan(s);
        print!("{}", report::table::plan_text(s, &plan));
        if let Err(e) = plan {
            errors.push(format!("{}: {e}", s.file.display()));
        }
    }
    if errors.is_empty() {
        Ok(EXIT_OK)
    } else {
        // A scenario that parses but cannot run is bad input too.
        Err(Failure::BadInput(anyhow!(errors.join("\nerror: "))))
    }
}

fn calibrate_command(a: &CalibrateArgs) -> Result<i32, Failure> {
    use crate::compute::openai::{Api, Config, DEFAULT_TIMEOUT, UsageMode};
    let bad = |e: anyhow::Error| Failure::BadInput(e);
    let (model, shape) = match (&a.preset, &a.shape) {
        (Some(name), _) => {
            let preset = crate::compute::model::Preset::find(name).ok_or_else(|| {
                anyhow!("unknown preset \"{name}\"; `inferlat list` shows the presets, or give --shape FILE")
            });
            (preset.map_err(bad)?.model(), name.clone())
        }
        (None, Some(file)) => (
            crate::calibrate::shape_file(file).map_err(bad)?,
            file.display().to_string(),
        ),
        (None, None) => return Err(bad(anyhow!("give --preset MODEL or --shape FILE"))),
    };
    let url = a.engine.trim().trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(bad(anyhow!(
            "invalid --engine \"{}\": give the API's base with http:// or https://, like http://127.0.0.1:8000/v1",
            a.engine
        )));
    }
    let body = match &a.body {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                return Err(bad(anyhow!(
                    "--body must be a JSON object, like '{{\"temperature\": 0}}'"
                )));
            }
        },
    };
    let memory = crate::units::Bytes::parse(&a.memory)
        .map_err(|e| bad(anyhow!("--memory: {e}")))?
        .get();
    let name = a
        .out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("calibrated")
        .to_string();
    use crate::calibrate::Spec;
    let mut held_out: Vec<Spec> = Vec::new();
    for &tokens in a.hold_out_prompts.iter().flat_map(|c| &c.0) {
        if a.prompts.0.contains(&tokens) {
            return Err(bad(anyhow!(
                "--hold-out-prompts {tokens} is also in --prompts: a held-out point must not be fitted"
            )));
        }
        held_out.push(Spec::Prefill { tokens });
    }
    for &(batch, context) in a.hold_out_decodes.iter().flat_map(|d| &d.0) {
        if a.batches.0.contains(&batch) && a.contexts.0.contains(&context) {
            return Err(bad(anyhow!(
                "--hold-out-decodes {batch}x{context} is also measured by --batches and --contexts: a held-out point must not be fitted"
            )));
        }
        held_out.push(Spec::Decode { batch, context });
    }
    let options = crate::calibrate::Options {
        config: Config {
            url,
            model: a.model.clone(),
            api: if a.api == "chat" {
                Api::Chat
            } else {
                Api::Completions
            },
            api_key_env: a.api_key_env.clone(),
            ignore_eos: !a.no_ignore_eos,
            usage: UsageMode::Final,
            connections: None,
            timeout: DEFAULT_TIMEOUT,
            body,
        },
        model,
        shape,
        prompts: a.prompts.0.clone(),
        batches: a.batches.0.clone(),
        contexts: a.contexts.0.clone(),
        held_out,
        steps: a.steps.max(2),
        repeats: a.repeats.max(1),
        name,
        memory,
        out: a.out.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(Failure::Run)?;
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        let on_signal = cancel.clone();
        let listener = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\ninterrupted: fitting what was measured (Ctrl-C again to quit at once)"
                );
                on_signal.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let r = crate::calibrate::calibrate(&options, &cancel).await;
        listener.abort();
        r
    });
    runtime.shutdown_background();
    result.map(|_| EXIT_OK).map_err(Failure::Run)
}

fn list_command(dir: &Path) -> Result<i32, Failure> {
    let mut out = String::new();
    out.push_str(&format!("Scenarios ({}):\n", dir.display()));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        out.push_str("  (none found; pass --scenarios DIR)\n");
    }
    let width = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().chars().count()))
        .max()
        .unwrap_or(0)
        .max(28);
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match scenario::load(f) {
            Ok(s) => {
                let desc = s
                    .description
                    .as_deref()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let desc: String = desc.chars().take(90).collect();
                out.push_str(&format!(
                    "  {name:<width$} {:<8} {desc}\n",
                    s.topology.kind.to_string()
                ));
            }
            Err(_) => out.push_str(&format!(
                "  {name:<width$} (invalid: run `inferlat validate {}`)\n",
                f.display()
            )),
        }
    }
    out.push_str("\nModel presets (bf16 weights unless overridden):\n");
    for (name, text) in scenario::preset_summaries() {
        out.push_str(&format!("  {name:<16} {text}\n"));
    }
    out.push_str("\nDevice profiles:\n");
    let lib = ProfileLibrary::for_scenario(&dir.join("x.toml"));
    for name in lib.names() {
        match lib.load(&name) {
            Ok((p, _)) if p.is_ideal() => out.push_str(&format!(
                "  {name:<10} zero compute time: isolates the network\n"
            )),
            Ok((p, _)) => out.push_str(&format!(
                "  {name:<10} {}, {}, {} (efficiency {} / {})  {}\n",
                p.flops,
                p.mem_bandwidth,
                p.memory,
                p.efficiency.compute,
                p.efficiency.memory,
                p.description.as_deref().unwrap_or("")
            )),
            Err(e) => out.push_str(&format!("  {name:<10} (invalid: {e})\n")),
        }
    }
    out.push_str(
        "\nLink presets ([[link]] preset = \"...\"; RTT split evenly, fields override):\n",
    );
    for p in scenario::LinkPreset::all() {
        out.push_str(&format!("  {:<15} {}\n", p.name, p.summary()));
    }
    out.push_str("\nTensor patterns ([topology] pattern = \"...\"; see docs/topologies.md):\n");
    for p in crate::topology::pattern::PRESETS {
        let only = match (p.root_only.attention, p.root_only.lm_head) {
            (true, true) => "; attention and the LM head on the root",
            (false, true) => "; the LM head on the root",
            (true, false) => "; attention on the root",
            (false, false) => "",
        };
        out.push_str(&format!(
            "  {:<12} {} + {} per layer + {} synchronisations per token{only}: {}\n",
            p.name,
            p.start.len(),
            p.layer.len(),
            p.end.len(),
            p.source.split([':', '(']).next().unwrap_or(p.source).trim()
        ));
    }
    out.push_str("\nStar patterns ([topology] pattern = \"...\"; see docs/topologies.md):\n");
    for p in crate::topology::rpc::PRESETS {
        out.push_str(&format!(
            "  {:<19} per remote stage and token: calls {}, round trips {}: {}\n",
            p.name,
            p.calls.len(),
            p.round_trips(),
            p.source.split([':', '(']).next().unwrap_or(p.source).trim()
        ));
    }
    print!("{out}");
    Ok(EXIT_OK)
}

fn run_command(args: RunArgs) -> Result<i32, Failure> {
    let mut scenarios = load_all(&args.files)?;
    let mut seen = std::collections::HashSet::new();
    for s in &mut scenarios {
        if !seen.insert(s.name.clone()) {
            return Err(Failure::BadInput(anyhow!(
                "two scenarios are named \"{}\"; their results would overwrite each other in {}",
                s.name,
                args.out.join(&s.name).display()
            )));
        }
        if let Some(d) = args.duration {
            s.apply(Override::Duration(d.get()));
        }
        if let Some(n) = args.requests {
            s.apply(Override::Requests(n));
        }
        if let Some(f) = args.max_failed {
            s.workload.max_failed = f;
        }
        if let Some(seed) = args.seed {
            s.apply(Override::Seed(seed));
        }
    }
    let plans: Vec<Plan> = scenarios
        .iter()
        .map(|s| plan::plan(s).map_err(|e| Failure::BadInput(anyhow!("{}: {e}", s.file.display()))))
        .collect::<Result<_, _>>()?;
    for (s, p) in scenarios.iter().zip(&plans) {
        for w in &p.warnings {
            eprintln!("warning: {}: {w}", s.name);
        }
    }
    // What each run will cost, from its plan: refused before anything runs when it passes
    // the limits (an absurd device or workload fails here, not after a day).
    let max_wall = args
        .max_wall
        .map_or(plan::estimate::DEFAULT_MAX_WALL, |d| d.get());
    let max_memory = args
        .max_memory
        .unwrap_or(plan::estimate::DEFAULT_MAX_MEMORY);
    let mut refused = Vec::new();
    for (s, p) in scenarios.iter().zip(&plans) {
        let e = plan::estimate::estimate(s, p, args.clock);
        if let Some(why) = e.refusal(max_wall, max_memory) {
            refused.push(format!(
                "{}: refused to run: {why}; estimate: {}. Shorten the run (--duration, --requests), or raise the limit (--max-wall, --max-memory) to run it anyway",
                s.file.display(),
                e.describe(args.clock)
            ));
        }
    }
    if !refused.is_empty() {
        return Err(Failure::BadInput(anyhow!(refused.join("\nerror: "))));
    }
    let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    check_out_dir(&args.out, &names).map_err(Failure::BadInput)?;
    if args.clock == ClockKind::Virtual {
        for s in &scenarios {
            if let Some((whose, engine)) = harness::real_engines(s).first() {
                return Err(Failure::BadInput(anyhow!(
                    "{}: {whose} is backed by a real {} engine, which computes in wall-clock time: it cannot run on --clock virtual; run with --clock real (the default)",
                    s.file.display(),
                    engine.kind()
                )));
            }
        }
    }
    if let Some(name) = &args.baseline {
        for s in &scenarios {
            let dir = args.out.join("baselines").join(name).join(&s.name);
            if !dir.join("summary.json").is_file() {
                return Err(Failure::BadInput(anyhow!(
                    "no baseline \"{name}\" for scenario \"{}\": {} has no summary.json (save one with --save-baseline {name})",
                    s.name,
                    dir.display()
                )));
            }
        }
    }

    if let Some(p) = args.realtime {
        crate::clock::request_realtime(Some(p));
    }
    let cancel = CancellationToken::new();
    // Signals are watched on a thread of their own, so they act within milliseconds of
    // wall time whatever the run's runtime is busy with (a virtual-clock run computes
    // flat out and would see them late).
    let _signals = watch_signals(cancel.clone());
    let mut code = EXIT_OK;
    for (s, p) in scenarios.iter().zip(&plans) {
        if cancel.is_cancelled() {
            break;
        }
        // A fresh runtime and clock for each scenario: a virtual run depends on nothing
        // that ran before it.
        let (runtime, clock) = args
            .clock
            .runtime()
            .context("starting the async runtime")
            .map_err(Failure::Run)?;
        let outcome = runtime.block_on(run_one(s, p, &args, &clock, &cancel));
        runtime.shutdown_background();
        let staged = match outcome {
            Ok((ok, staged)) => {
                if !ok {
                    code = EXIT_RUN_FAILED;
                }
                staged
            }
            Err(e) => {
                eprintln!("error: {}: {e:#}", s.name);
                code = EXIT_RUN_FAILED;
                continue;
            }
        };
        let dir = args.out.join(&s.name);
        let verdict = compare_staged(staged, &args)?;
        if verdict != EXIT_OK {
            code = code.max(verdict);
        }
        // After the comparison, so one name can be compared with and then replaced.
        if let Some(name) = &args.save_baseline {
            let to = args.out.join("baselines").join(name).join(&s.name);
            save_baseline(&dir, &to).map_err(Failure::Run)?;
            println!("  saved as baseline \"{name}\": {}", to.display());
        }
    }
    Ok(code)
}

/// Compares a run's staged folder with `--baseline` and writes its `compare.json` into it
/// before the folder is swapped into place, so the verdicts belong to the folder's run.
fn compare_staged(mut staged: report::folder::Staged, args: &RunArgs) -> Result<i32, Failure> {
    let verdict = match &args.baseline {
        Some(name) => verdicts_into(&mut staged, name, args),
        None => Ok(EXIT_OK),
    };
    // The results are written whatever the comparison said.
    staged.commit().map_err(|e| Failure::Run(e.into()))?;
    verdict
}

fn verdicts_into(
    staged: &mut report::folder::Staged,
    name: &str,
    args: &RunArgs,
) -> Result<i32, Failure> {
    let dest = staged.dest().to_path_buf();
    let scenario = dest.file_name().map(PathBuf::from).unwrap_or_default();
    let base_dir = args.out.join("baselines").join(name).join(scenario);
    let base = compare::load(&base_dir).map_err(|e| Failure::BadInput(e.into()))?;
    let mut new = compare::load(staged.path()).map_err(|e| Failure::BadInput(e.into()))?;
    for n in &mut new {
        n.dir = dest.clone();
    }
    let c =
        compare::compare(&base, &new, args.threshold).map_err(|e| Failure::BadInput(e.into()))?;
    let (verdict, bytes) = judge_comparison(&c, args.fail_on_regression, false)?;
    staged
        .write("compare.json", &bytes)
        .map_err(|e| Failure::Run(e.into()))?;
    println!("verdicts: {}", dest.join("compare.json").display());
    Ok(verdict)
}

/// `inferlat report`.
fn report_command(results: &[PathBuf], out: Option<PathBuf>) -> Result<i32, Failure> {
    let mut loaded = Vec::new();
    for r in results {
        loaded.extend(compare::load(r).map_err(|e| Failure::BadInput(e.into()))?);
    }
    let out = out.unwrap_or_else(|| {
        let first = &results[0];
        if first.join("summary.json").is_file() {
            first
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        } else {
            first.clone()
        }
    });
    let written = write_reports(&loaded, &out).map_err(Failure::Run)?;
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(EXIT_OK)
}

/// `inferlat compare`.
fn compare_command(args: &CompareArgs) -> Result<i32, Failure> {
    let base = compare::load(&args.base).map_err(|e| Failure::BadInput(e.into()))?;
    let new = compare::load(&args.new).map_err(|e| Failure::BadInput(e.into()))?;
    let c =
        compare::compare(&base, &new, args.threshold).map_err(|e| Failure::BadInput(e.into()))?;
    let json = args
        .json
        .clone()
        .unwrap_or_else(|| args.new.join("compare.json"));
    finish_comparison(&c, &json, args.fail_on_regression, args.verbose)
}

/// Prints a comparison, writes its JSON, and maps it to an exit code.
fn finish_comparison(
    c: &compare::Comparison,
    json: &Path,
    fail: bool,
    verbose: bool,
) -> Result<i32, Failure> {
    let (code, bytes) = judge_comparison(c, fail, verbose)?;
    report::write_atomic(json, &bytes).map_err(Failure::BadInput)?;
    println!("verdicts: {}", json.display());
    Ok(code)
}

/// Prints a comparison and maps it to an exit code; returns the code and the JSON.
fn judge_comparison(
    c: &compare::Comparison,
    fail: bool,
    verbose: bool,
) -> Result<(i32, Vec<u8>), Failure> {
    print!("{}", compare::render(c, verbose));
    let mut bytes = serde_json::to_vec_pretty(c)
        .context("encoding the comparison")
        .map_err(Failure::Run)?;
    bytes.push(b'\n');
    if c.scenarios.is_empty() {
        return Err(Failure::BadInput(anyhow!(
            "no scenario is in both folders: nothing was compared"
        )));
    }
    for s in &c.scenarios {
        if let Some(why) = &s.refused {
            eprintln!("error: {}: refused to compare: {why}", s.name);
        }
    }
    if c.counts.refused > 0 {
        return Ok((EXIT_BAD_INPUT, bytes));
    }
    if fail && c.counts.regressed > 0 {
        eprintln!(
            "error: {} regressed (--fail-on-regression)",
            if c.counts.regressed == 1 {
                "1 metric".to_string()
            } else {
                format!("{} metrics", c.counts.regressed)
            }
        );
        return Ok((EXIT_RUN_FAILED, bytes));
    }
    Ok((EXIT_OK, bytes))
}

/// Watches SIGINT (Ctrl-C) and SIGTERM on a thread with its own runtime: the first stops
/// the run (no new requests, in-flight ones get their grace, what was measured is written
/// with `"complete": false`); a second quits at once with exit code 130 (SIGINT) or 143
/// (SIGTERM), writing nothing.
fn watch_signals(cancel: CancellationToken) -> Option<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    // Registered before this returns, so a signal that comes at once is already handled.
    #[cfg(unix)]
    let (mut int, mut term) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _entered = rt.enter();
        (
            signal(SignalKind::interrupt()).ok()?,
            signal(SignalKind::terminate()).ok()?,
        )
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                #[cfg(unix)]
                {
                    let mut first = true;
                    loop {
                        let (name, code) = tokio::select! {
                            _ = int.recv() => ("Ctrl-C", 130),
                            _ = term.recv() => ("SIGTERM", 143),
                        };
                        if !first {
                            std::process::exit(code);
                        }
                        first = false;
                        eprintln!(
                            "\ninterrupted ({name}): no new requests; those in flight get 1 s to finish; then what was measured is written ({name} again to quit at once)"
                        );
                        cancel.cancel();
                    }
                }
                #[cfg(not(unix))]
                {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        eprintln!("\ninterrupted: stopping and writing what was measured (Ctrl-C again to quit at once)");
                        cancel.cancel();
                        if tokio::signal::ctrl_c().await.is_ok() {
                            std::process::exit(130);
                        }
                    }
                }
            })
        })
        .ok()
}

/// The least free space the output folder's file system must have before a run: a run's
/// folder holds a few MiB (histograms, the interval log, reports).
const MIN_FREE_BYTES: u64 = 64 << 20;

/// Makes sure results can be written before anything runs: the output folder, each
/// scenario's folder in it, and enough free space.
fn check_out_dir(out: &Path, names: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    let probe = out.join(format!(".inferlat-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("cannot write into the output folder {}", out.display()))?;
    let _ = std::fs::remove_file(probe);
    for name in names {
        let dir = out.join(name);
        match std::fs::symlink_metadata(&dir) {
            Err(_) => {}
            Ok(m) if m.is_dir() => {
                if m.permissions().readonly() {
                    anyhow::bail!(
                        "cannot replace the results folder {}: it is read-only",
                        dir.display()
                    );
                }
                let probe = dir.join(format!(".inferlat-write-test-{}", std::process::id()));
                std::fs::write(&probe, b"").with_context(|| {
                    format!("cannot write into the results folder {}", dir.display())
                })?;
                let _ = std::fs::remove_file(probe);
            }
            Ok(_) => anyhow::bail!(
                "{} is in the way: results go to a folder of that name, and it is a file",
                dir.display()
            ),
        }
    }
    if let Some(free) = free_space(out)
        && free < MIN_FREE_BYTES
    {
        anyhow::bail!(
            "only {} free where {} is: a run needs at least {} for its results",
            plan::estimate::human_bytes(free as f64),
            out.display(),
            plan::estimate::human_bytes(MIN_FREE_BYTES as f64)
        );
    }
    Ok(())
}

/// Free bytes for an unprivileged writer on the file system holding `path`.
fn free_space(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs writes only the struct it is given; `c` is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Runs one scenario, writes its results and prints its table. Ok(false): interrupted,
/// nothing completed, or invalid (too many requests failed).
async fn run_one(
    s: &Scenario,
    p: &Plan,
    args: &RunArgs,
    clock: &Clock,
    cancel: &CancellationToken,
) -> anyhow::Result<(bool, report::folder::Staged)> {
    for note in &p.notes {
        eprintln!("note: {}: {note}", s.name);
    }
    let started = SystemTime::now();
    let progress = Arc::new(Progress::default());
    let display =
        (!args.quiet).then(|| spawn_progress(s.name.clone(), progress.clone(), clock.clone()));
    let options = Options::default();
    let wall = Instant::now();
    let measured = harness::run(s, p, &options, clock, progress, cancel.clone()).await;
    let wall = wall.elapsed();
    if let Some((stop, handle)) = display {
        stop.cancel();
        let _ = handle.await;
    }
    let measured = measured?;
    let results = Results {
        scenario: s,
        plan: p,
        measured: &measured,
        environment: Environment::capture(started),
    };
    let dir = args.out.join(&s.name);
    // The table first: if writing fails, what was measured is still shown.
    print!("{}", report::table::render(&results));
    let staged = report::stage(&results, &dir).with_context(|| {
        format!(
            "the results were printed above but not written: {} was left as it was (no summary.json, .hgrm, .hlog or reports of this run)",
            dir.display()
        )
    })?;
    if clock.kind() == ClockKind::Virtual {
        println!(
            "  simulated {:.1} s in {:.1} s of wall time",
            measured.simulated.as_secs_f64(),
            wall.as_secs_f64()
        );
    }
    for w in report::warnings(&results) {
        eprintln!("warning: {}: {w}", s.name);
    }
    println!("  results: {}", dir.display());
    let completed = measured
        .topology
        .as_ref()
        .is_some_and(|t| t.record.completed > 0);
    let validity = results.validity();
    if !completed && results.complete() {
        eprintln!(
            "error: {}: no request completed; see the errors above and in {}",
            s.name,
            dir.join("summary.json").display()
        );
    } else if !validity.reasons.is_empty() {
        eprintln!(
            "error: {}: the run is invalid: {}",
            s.name,
            validity.reasons.join("; ")
        );
    }
    Ok((
        results.complete() && completed && validity.reasons.is_empty(),
        staged,
    ))
}

/// Prints progress to stderr: a line rewritten in place on a terminal, a line every
/// 5 seconds of wall time otherwise (on either clock).
fn spawn_progress(
    name: String,
    progress: Arc<Progress>,
    clock: Clock,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let done = stop.clone();
    let tty = std::io::stderr().is_terminal();
    let period = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        // The ticker runs on the run's clock; on the virtual clock its seconds fly by, so a
        // line is printed only when `period` of wall time has passed since the last one.
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = done.cancelled() => break,
                _ = tick.tick() => {}
            }
            if last.elapsed() < period {
                continue;
            }
            last = Instant::now();
            let snap = progress.snapshot(clock.now());
            let of = match snap.extent {
                Some(Extent::Duration(d)) => {
                    format!("{:.1}s/{:.0}s", snap.elapsed.as_secs_f64(), d.as_secs_f64())
                }
                Some(Extent::Requests(n)) => format!("{}/{n} requests", snap.started),
                None => String::new(),
            };
            let line = format!(
                "[{name}] {} {:<8} {of:<16} done {} in flight {} failed {}",
                snap.run,
                snap.phase.name(),
                snap.completed,
                snap.started.saturating_sub(snap.completed + snap.failed),
                snap.failed
            );
            let mut err = std::io::stderr().lock();
            if tty {
                let _ = write!(err, "\r\x1b[2K{line}");
            } else {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
        }
        if tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    });
    (stop, handle)
}
