//! `.hlog` files: HdrHistogram's interval log (format 1.3, as Java's `HistogramLogWriter`
//! writes it), one per run, with a compressed V2 histogram per metric and 1-second interval
//! of the measured phase, tagged with the metric's name. HdrHistogram's own tools read it
//! (`HistogramLogProcessor -tag e2e`, the plotters of `.hlog` files).

use super::{Exporter, Results};
use crate::record::INTERVAL;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use std::io::Write as _;
use std::time::{Duration, UNIX_EPOCH};

/// Nanoseconds per millisecond: the max column of each interval is in milliseconds.
const MAX_VALUE_DIVISOR: f64 = 1e6;

/// The legend line Java's `HistogramLogWriter` writes after the headers.
const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"";

pub struct Hlog;

impl Exporter for Hlog {
    fn render(&self, results: &Results) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut files = Vec::new();
        // The run's wall-clock start where it is known, the epoch otherwise.
        let start = UNIX_EPOCH + Duration::from_secs(results.environment.started_unix_s);
        let clock = results.measured.clock.name();
        for (run, out) in results.runs() {
            let record = &out.record;
            let mut buf = Vec::new();
            // Headers first: format version, comments, StartTime; the max value divisor's
            // header comes from the second writer, after the legend.
            IntervalLogWriterBuilder::new()
                .add_comment("[Histogram log format version 1.3]")
                .add_comment(&format!(
                    "inferlat {} interval log: scenario {}, run {run}, {clock} clock",
                    env!("CARGO_PKG_VERSION"),
                    results.scenario.name
                ))
                .add_comment(
                    "one histogram per metric (Tag=) and 1-second interval of the measured phase, \
                     by completion time (itl: by token arrival); values in ns, Interval_Max in ms",
                )
                .add_comment(&format!(
                    "StartTimestamp: seconds of the {clock} clock since the measured phase started"
                ))
                .with_start_time(start)
                .begin_log_with(&mut buf, &mut V2DeflateSerializer::new())?;
            writeln!(buf, "{LEGEND}")?;
            let mut serializer = V2DeflateSerializer::new();
            let mut log = IntervalLogWriterBuilder::new()
                .with_max_value_divisor(MAX_VALUE_DIVISOR)
                .begin_log_with(&mut buf, &mut serializer)?;
            for (at, metric, h) in record.intervals() {
                // The last interval ends with the phase's last completion.
                let end = at + INTERVAL;
                let length = if record.elapsed > at && record.elapsed < end {
                    record.elapsed - at
                } else {
                    INTERVAL
                };
                let tag = Tag::new(metric.name()).expect("metric names are valid tags");
                log.write_histogram(&h, at, length, Some(tag))
                    .map_err(|e| anyhow::anyhow!("writing {run}.hlog: {e}"))?;
            }
            files.push((format!("{run}.hlog"), buf));
        }
        Ok(files)
    }
}

/// Standard base64, as the interval log encodes each histogram.
pub fn base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | value(c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// One interval of a `.hlog` file: its tag, start and length, and its histogram (ns).
pub struct LoggedInterval {
    pub tag: String,
    pub start: Duration,
    pub length: Duration,
    pub histogram: hdrhistogram::Histogram<u64>,
}

/// Reads every tagged interval of a `.hlog` text.
pub fn read(bytes: &[u8]) -> Result<Vec<LoggedInterval>, String> {
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let mut de = Deserializer::new();
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(bytes) {
        let entry = entry.map_err(|e| format!("{e:?}"))?;
        let LogEntry::Interval(i) = entry else {
            continue;
        };
        let Some(tag) = i.tag() else { continue };
        let raw = base64(i.encoded_histogram()).ok_or("bad base64")?;
        let histogram: hdrhistogram::Histogram<u64> = de
            .deserialize(&mut raw.as_slice())
            .map_err(|e| format!("{e:?}"))?;
        out.push(LoggedInterval {
            tag: tag.as_str().to_string(),
            start: i.start_timestamp(),
            length: i.duration(),
            histogram,
        });
    }
    Ok(out)
}

/// The intervals of each tag merged into one full-resolution histogram (ns).
pub fn merged(
    bytes: &[u8],
) -> Result<std::collections::BTreeMap<String, hdrhistogram::Histogram<u64>>, String> {
    let mut out: std::collections::BTreeMap<String, hdrhistogram::Histogram<u64>> =
        std::collections::BTreeMap::new();
    for i in read(bytes)? {
        // An auto-resizing histogram: intervals decode with just the range they needed.
        let h = match out.entry(i.tag) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(
                hdrhistogram::Histogram::new(i.histogram.sigfig()).map_err(|e| format!("{e:?}"))?,
            ),
        };
        h.add(&i.histogram).map_err(|e| format!("{e:?}"))?;
    }
    Ok(out)
}
