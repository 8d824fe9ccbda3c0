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

/// The most bytes read from an `.hlog` file.
pub const MAX_FILE: u64 = 256 << 20;
/// The most bytes one histogram may decompress to: a V2 histogram of 3 significant figures
/// up to a day of nanoseconds encodes in well under 1 MiB.
pub const MAX_INFLATED: u64 = 4 << 20;
/// The most counters one histogram may declare (a day of ns at 3 significant figures needs
/// 39,936 of them; 1,048,576 counters are 8 MiB).
pub const MAX_COUNTERS: u64 = 1 << 20;
/// The most counters all the intervals [`read`] keeps may declare together (256 MiB).
pub const MAX_COUNTERS_KEPT: u64 = 1 << 25;
/// The most distinct tags a log may have.
pub const MAX_TAGS: usize = 32;

/// Why an interval log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("larger than {limit} bytes: not a file inferlat wrote")]
    TooLarge { limit: u64 },
    #[error("line {line}: {why}")]
    Line { line: usize, why: String },
    #[error("the intervals would need more than {MAX_COUNTERS_KEPT} histogram counters together")]
    TooManyCounters,
    #[error("more than {MAX_TAGS} tags")]
    TooManyTags,
}

/// A file's bytes, refusing one larger than `limit` without reading past it.
pub fn read_bounded(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// A V2 histogram's header: cookie, payload length, normalizing offset, significant
/// figures, lowest and highest trackable values, integer-to-double ratio.
const V2_HEADER: usize = 40;

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The counters a histogram of these bounds allocates (HdrHistogram's own arithmetic,
/// with the lowest value taken as 1, as an auto-resizing histogram it is merged into has).
fn counters(high: u64, digits: u32) -> u64 {
    let sub_buckets = (2 * 10u64.pow(digits)).next_power_of_two();
    let mut smallest_untrackable = sub_buckets;
    let mut buckets = 1u64;
    while smallest_untrackable <= high {
        if smallest_untrackable > u64::MAX / 2 {
            buckets += 1;
            break;
        }
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    (buckets + 1) * (sub_buckets / 2)
}

/// Decodes one base64 V2 (optionally deflated) histogram, checking every length and bound
/// its header declares before anything is allocated from it.
fn decode(
    encoded: &str,
    de: &mut hdrhistogram::serialization::Deserializer,
) -> Result<(hdrhistogram::Histogram<u64>, u64), String> {
    use std::io::Read as _;
    let raw = base64(encoded).ok_or("bad base64")?;
    let plain = match be_u32(&raw, 0) {
        Some(V2_COOKIE) => raw,
        Some(V2_COMPRESSED_COOKIE) => {
            let len = be_u32(&raw, 4).ok_or("truncated histogram")? as usize;
            let body = raw
                .get(8..8 + len)
                .ok_or("truncated compressed histogram")?;
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(body)
                .take(MAX_INFLATED + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("bad compressed histogram: {e}"))?;
            if out.len() as u64 > MAX_INFLATED {
                return Err(format!(
                    "a histogram decompresses to more than {MAX_INFLATED} bytes"
                ));
            }
            out
        }
        _ => return Err("not a V2 histogram".into()),
    };
    let header = |at| be_u32(&plain, at).ok_or("truncated histogram header");
    if header(0)? != V2_COOKIE {
        return Err("not a V2 histogram".into());
    }
    let payload = header(4)? as usize;
    let digits = header(12)?;
    let (low, high) = be_u64(&plain, 16)
        .zip(be_u64(&plain, 24))
        .ok_or("truncated histogram header")?;
    if payload > plain.len().saturating_sub(V2_HEADER) {
        return Err(format!(
            "the histogram declares {payload} bytes of counts and holds {}",
            plain.len().saturating_sub(V2_HEADER)
        ));
    }
    if !(1..=5).contains(&digits) || low < 1 || high < low.saturating_mul(2) {
        return Err(format!(
            "bad histogram bounds: {digits} significant figures, values {low} to {high}"
        ));
    }
    let n = counters(high, digits);
    if n > MAX_COUNTERS {
        return Err(format!(
            "the histogram declares values up to {high} at {digits} significant figures: {n} counters, more than the {MAX_COUNTERS} inferlat reads"
        ));
    }
    let h = de
        .deserialize(&mut plain.as_slice())
        .map_err(|e| format!("{e:?}"))?;
    Ok((h, n))
}

/// One interval of a `.hlog` file: its tag, start and length, and its histogram (ns).
pub struct LoggedInterval {
    pub tag: String,
    pub start: Duration,
    pub length: Duration,
    pub histogram: hdrhistogram::Histogram<u64>,
}

/// Calls `f` with every tagged interval of a `.hlog` text in turn, with the counters its
/// histogram holds; the histograms are bounded ([`MAX_COUNTERS`], [`MAX_INFLATED`]).
pub fn visit(
    bytes: &[u8],
    mut f: impl FnMut(LoggedInterval, u64) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let mut de = Deserializer::new();
    for (k, entry) in IntervalLogIterator::new(bytes).enumerate() {
        let line = |why: String| ReadError::Line { line: k + 1, why };
        let entry = entry.map_err(|e| line(format!("{e:?}")))?;
        let LogEntry::Interval(i) = entry else {
            continue;
        };
        let Some(tag) = i.tag() else { continue };
        let (histogram, n) = decode(i.encoded_histogram(), &mut de).map_err(line)?;
        f(
            LoggedInterval {
                tag: tag.as_str().to_string(),
                start: i.start_timestamp(),
                length: i.duration(),
                histogram,
            },
            n,
        )?;
    }
    Ok(())
}

/// Reads every tagged interval of a `.hlog` text, all of them together bounded by
/// [`MAX_COUNTERS_KEPT`].
pub fn read(bytes: &[u8]) -> Result<Vec<LoggedInterval>, ReadError> {
    let mut out = Vec::new();
    let mut kept = 0u64;
    visit(bytes, |i, n| {
        kept += n;
        if kept > MAX_COUNTERS_KEPT {
            return Err(ReadError::TooManyCounters);
        }
        out.push(i);
        Ok(())
    })?;
    Ok(out)
}

/// The intervals of each tag merged into one full-resolution histogram (ns), at most
/// [`MAX_TAGS`] of them.
pub fn merged(
    bytes: &[u8],
) -> Result<std::collections::BTreeMap<String, hdrhistogram::Histogram<u64>>, ReadError> {
    use std::collections::btree_map::Entry;
    let mut out: std::collections::BTreeMap<String, hdrhistogram::Histogram<u64>> =
        std::collections::BTreeMap::new();
    let bad = |why: String| ReadError::Line { line: 0, why };
    visit(bytes, |i, _| {
        let tags = out.len();
        // An auto-resizing histogram: intervals decode with just the range they needed.
        let h = match out.entry(i.tag) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if tags >= MAX_TAGS => return Err(ReadError::TooManyTags),
            Entry::Vacant(e) => e.insert(
                hdrhistogram::Histogram::new(i.histogram.sigfig())
                    .map_err(|e| bad(format!("{e:?}")))?,
            ),
        };
        h.add(&i.histogram).map_err(|e| bad(format!("{e:?}")))
    })?;
    Ok(out)
}

/// [`merged`] of a file, read bounded by [`MAX_FILE`].
pub fn merged_file(
    path: &std::path::Path,
) -> Result<std::collections::BTreeMap<String, hdrhistogram::Histogram<u64>>, ReadError> {
    merged(&read_bounded(path, MAX_FILE)?)
}
