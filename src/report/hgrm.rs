//! `.hgrm` files: HdrHistogram's percentile distribution, the text format that
//! HdrHistogram's plotter and wrk2 print (`outputPercentileDistribution`), in milliseconds.

use super::{Exporter, Results};
use crate::record::Metric;
use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// Ticks per half distance, as HdrHistogram's default output uses.
const TICKS: u32 = 5;
/// Nanoseconds per millisecond: the output value unit scaling ratio.
const SCALE: f64 = 1e6;

pub struct Hgrm;

impl Exporter for Hgrm {
    fn render(&self, results: &Results) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut files = Vec::new();
        for (run, out) in results.runs() {
            for m in Metric::ALL {
                let h = out.record.histogram(m);
                if !h.is_empty() {
                    files.push((
                        format!("{run}.{}.hgrm", m.name()),
                        percentile_distribution(h).into_bytes(),
                    ));
                }
            }
        }
        Ok(files)
    }
}

/// The percentile distribution of a histogram of nanoseconds, with values in milliseconds.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut last = None;
    let mut total = 0u64;
    for v in h.iter_quantiles(TICKS) {
        let value = v.value_iterated_to() as f64 / SCALE;
        let q = v.quantile_iterated_to();
        total += v.count_since_last_iteration();
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:12.3} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            last = Some((value, q, total));
        }
    }
    if let Some((value, q, total)) = last {
        let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / SCALE,
        h.stdev() / SCALE
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / SCALE,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h)
    );
    out
}

/// HdrHistogram's sub-bucket count: 2 × 10^sigfig rounded up to a power of two.
fn sub_buckets(h: &Histogram<u64>) -> u64 {
    (2 * 10u64.pow(h.sigfig() as u32)).next_power_of_two()
}

/// A parsed `.hgrm` line: value (ms), percentile, total count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    pub value: f64,
    pub percentile: f64,
    pub total: u64,
}

/// Reads the rows and the total count back from an `.hgrm` text.
pub fn parse(text: &str) -> Result<(Vec<Row>, u64), String> {
    let mut rows = Vec::new();
    let mut total = None;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with("Value") {
            continue;
        }
        if let Some(rest) = t.strip_prefix("#[Max") {
            let n = rest
                .rsplit('=')
                .next()
                .and_then(|s| s.trim().trim_end_matches(']').trim().parse().ok());
            total = Some(n.ok_or_else(|| format!("bad footer line: {line}"))?);
            continue;
        }
        if t.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        if f.len() < 3 {
            return Err(format!("bad row: {line}"));
        }
        let num = |s: &str| {
            s.parse::<f64>()
                .map_err(|_| format!("bad number {s} in: {line}"))
        };
        rows.push(Row {
            value: num(f[0])?,
            percentile: num(f[1])?,
            total: num(f[2])? as u64,
        });
    }
    Ok((rows, total.ok_or("no total count footer")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::histogram;

    #[test]
    fn distribution_round_trips_through_the_parser() {
        let mut h = histogram();
        for i in 1..=1000u64 {
            h.record(i * 1_000_000).unwrap();
        }
        let text = percentile_distribution(&h);
        let (rows, total) = parse(&text).unwrap();
        assert_eq!(total, 1000);
        let last = rows.last().unwrap();
        assert_eq!(last.percentile, 1.0);
        assert_eq!(last.total, 1000);
        assert!((last.value - 1000.0).abs() < 1.0);
        // Monotonic in value, percentile and count.
        for w in rows.windows(2) {
            assert!(
                w[1].value >= w[0].value
                    && w[1].percentile >= w[0].percentile
                    && w[1].total >= w[0].total
            );
        }
        let median = rows.iter().find(|r| r.percentile >= 0.5).unwrap();
        assert!((median.value - 500.0).abs() < 1.0, "{median:?}");
    }
}
