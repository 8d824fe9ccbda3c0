//! `.hlog` interval logs: a short virtual-clock run written by `report::write_all` and read
//! back with hdrhistogram's own interval log parser and deserializer.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::{Deserializer, Serializer as _};
use inferlat::clock::ClockKind;
use inferlat::harness::{self, Measured, Options};
use inferlat::plan::{self, Plan};
use inferlat::report::{self, Environment, Results};
use inferlat::scenario::{self, ProfileLibrary, Scenario, testing};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// 20 requests at 4 per second: a little over 5 seconds of completions, each second busy.
fn scenario_text() -> String {
    testing::direct("hlog", "a100-80g", "rtt = \"40ms\"")
        .top("seed = 11")
        .workload("prompt_tokens = 64\noutput_tokens = 8\narrival = { kind = \"constant\", rate = 4.0 }\nrequests = 20\nwarmup_requests = 2")
        .raw("[baseline]\ndevice = \"h100-sxm\"")
        .build()
}

fn run(s: &Scenario) -> (Plan, Measured) {
    let plan = plan::plan(s).expect("plannable");
    let measured =
        harness::run_to_end(s, &plan, &Options::default(), ClockKind::Virtual).expect("run");
    (plan, measured)
}

/// Standard base64 (with padding), as the interval log encodes each histogram.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | value(c) as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// One interval line of a log.
struct Interval {
    start: Duration,
    length: Duration,
    max_ms: f64,
    histogram: Histogram<u64>,
}

/// Reads a log: its StartTime and its intervals by tag.
fn read(text: &[u8]) -> (Option<Duration>, BTreeMap<String, Vec<Interval>>) {
    let mut start_time = None;
    let mut by_tag: BTreeMap<String, Vec<Interval>> = BTreeMap::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(text) {
        match entry.expect("a well-formed log") {
            LogEntry::StartTime(t) => start_time = Some(t),
            LogEntry::BaseTime(_) => panic!("no BaseTime expected"),
            LogEntry::Interval(i) => {
                let tag = i
                    .tag()
                    .expect("every interval is tagged")
                    .as_str()
                    .to_string();
                let bytes = base64(i.encoded_histogram());
                let histogram: Histogram<u64> = deserializer
                    .deserialize(&mut bytes.as_slice())
                    .expect("a V2 histogram");
                by_tag.entry(tag).or_default().push(Interval {
                    start: i.start_timestamp(),
                    length: i.duration(),
                    max_ms: i.max(),
                    histogram,
                });
            }
        }
    }
    (start_time, by_tag)
}

#[test]
fn interval_logs_hold_every_measured_request_by_completion_second() {
    let s = scenario::parse(
        Path::new("hlog.toml"),
        &scenario_text(),
        &ProfileLibrary::built_in(),
    )
    .expect("valid scenario");
    let (plan, measured) = run(&s);
    let results = Results {
        scenario: &s,
        plan: &plan,
        measured: &measured,
        environment: Environment::capture(SystemTime::now()),
    };
    let dir = tempfile::tempdir().unwrap();
    // A log of an earlier run that this one does not make is removed.
    std::fs::write(dir.path().join("stale.hlog"), "#old\n").unwrap();
    let written = report::write_all(&results, dir.path()).unwrap();
    assert!(!dir.path().join("stale.hlog").exists());
    let summary = report::summary::Summary::parse(
        &std::fs::read_to_string(dir.path().join("summary.json")).unwrap(),
    )
    .unwrap();

    for run in ["topology", "baseline"] {
        let path = dir.path().join(format!("{run}.hlog"));
        assert!(written.contains(&path), "{run}.hlog not written");
        let text = std::fs::read(&path).unwrap();
        let head = String::from_utf8_lossy(&text);
        assert!(
            head.starts_with("#[Histogram log format version 1.3]\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("scenario hlog, run {run}")),
            "{head}"
        );
        assert!(head.contains("#[MaxValueDivisor: 1000000.000]"), "{head}");
        let (start_time, by_tag) = read(&text);
        let started = summary.environment.started_unix_s;
        assert_eq!(start_time, Some(Duration::from_secs(started)));

        let sum = summary.run(run).unwrap();
        let completed = sum.requests.completed;
        assert_eq!(completed, 20, "{run}: {:?}", sum.errors);
        let tags: Vec<&str> = by_tag.keys().map(String::as_str).collect();
        assert_eq!(
            tags,
            ["e2e", "itl", "schedule_lag", "service", "tpot", "ttft"],
            "{run}: connect is measured before the measured phase and has no intervals"
        );

        // One e2e interval per second from the phase's start to its last completion: at 4
        // requests per second every second has completions.
        let e2e = &by_tag["e2e"];
        let measured_s = sum.measured_s;
        let starts: Vec<u64> = e2e.iter().map(|i| i.start.as_secs()).collect();
        let seconds = measured_s.ceil() as u64;
        assert_eq!(
            starts,
            (0..seconds).collect::<Vec<_>>(),
            "{run}: {measured_s} s"
        );
        for (k, i) in e2e.iter().enumerate() {
            assert_eq!(i.start.subsec_nanos(), 0);
            assert!(!i.histogram.is_empty(), "{run}: interval {k} is empty");
            // Interval_Max is the interval's max in ms.
            let max_ms = i.histogram.max() as f64 / 1e6;
            assert!((i.max_ms - max_ms).abs() < 1e-3, "{} vs {max_ms}", i.max_ms);
            let want = if k + 1 == e2e.len() {
                Duration::from_secs_f64(measured_s - k as f64)
            } else {
                Duration::from_secs(1)
            };
            assert!(
                i.length.abs_diff(want) < Duration::from_millis(1),
                "{run}: interval {k} lasts {:?}, not {want:?}",
                i.length
            );
        }

        // Every measured request is in exactly one interval of each per-request metric,
        // and every inter-token gap in one itl interval.
        for (tag, metric) in [("e2e", "e2e"), ("ttft", "ttft"), ("itl", "itl")] {
            let count: u64 = by_tag[tag].iter().map(|i| i.histogram.len()).sum();
            let want = sum.metrics[metric].count;
            assert_eq!(count, want, "{run}: {tag}");
        }
        assert_eq!(
            by_tag["itl"].iter().map(|i| i.histogram.len()).sum::<u64>(),
            20 * 7
        );
        assert_eq!(
            by_tag["e2e"].iter().map(|i| i.histogram.len()).sum::<u64>(),
            completed
        );

        // The merged intervals are the run's histogram: same max as summary.json's e2e.
        let mut merged = inferlat::record::histogram();
        for i in e2e {
            merged.add(&i.histogram).unwrap();
        }
        let max = sum.value("e2e", "max").unwrap();
        let merged_max = merged.max() as f64 / 1e6;
        assert!(
            (merged_max - max).abs() <= max * 1e-3,
            "{run}: merged max {merged_max} ms, summary {max} ms"
        );
        let merged_p50 = merged.value_at_quantile(0.5) as f64 / 1e6;
        let p50 = sum.value("e2e", "p50").unwrap();
        assert!((merged_p50 - p50).abs() <= p50 * 1e-3, "{run}");
    }
}

/// Standard base64 with padding.
fn encode64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A log of one interval whose histogram is the deflated `plain` bytes.
fn log_of(plain: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(plain).unwrap();
    let body = z.finish().unwrap();
    let mut raw = 0x1c84_9314u32.to_be_bytes().to_vec();
    raw.extend((body.len() as u32).to_be_bytes());
    raw.extend(body);
    format!("Tag=e2e,0.000,1.000,1.000,{}\n", encode64(&raw)).into_bytes()
}

/// A V2 header declaring `payload` bytes of counts, `digits` and values up to `high`.
fn header(payload: u32, digits: u32, high: u64) -> Vec<u8> {
    let mut h = 0x1c84_9313u32.to_be_bytes().to_vec();
    h.extend(payload.to_be_bytes());
    h.extend(0u32.to_be_bytes());
    h.extend(digits.to_be_bytes());
    h.extend(1u64.to_be_bytes());
    h.extend(high.to_be_bytes());
    h.extend(1f64.to_be_bytes());
    h
}

#[test]
fn crafted_logs_are_refused_before_anything_large_is_allocated() {
    use inferlat::report::hlog;
    // A declared 4 GB of counts that are not there.
    let e = hlog::merged(&log_of(&header(u32::MAX, 3, 1 << 40))).unwrap_err();
    assert!(e.to_string().contains("declares 4294967295 bytes"), "{e}");
    // A range and precision that would need gigabytes of counters.
    let e = hlog::merged(&log_of(&header(0, 5, u64::MAX))).unwrap_err();
    assert!(e.to_string().contains("counters"), "{e}");
    // A deflate bomb: 64 MiB of zeros in a few tens of kilobytes.
    let mut bomb = header(64 << 20, 3, 1 << 40);
    bomb.resize(bomb.len() + (64 << 20), 0);
    let log = log_of(&bomb);
    assert!(log.len() < 200_000, "{}", log.len());
    let e = hlog::merged(&log).unwrap_err();
    assert!(e.to_string().contains("decompresses to more than"), "{e}");
    // A sound one still reads.
    let mut h = inferlat::record::histogram();
    h.record(5_000_000).unwrap();
    let mut plain = Vec::new();
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(&h, &mut plain)
        .unwrap();
    let merged = hlog::merged(&log_of(&plain)).unwrap();
    assert_eq!(merged["e2e"].len(), 1);
}
