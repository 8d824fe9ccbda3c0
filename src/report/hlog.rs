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
