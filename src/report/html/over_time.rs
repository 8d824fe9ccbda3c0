//! Latency over time, from the interval log.

use super::super::compare::Loaded;
use super::super::fmt_ms;
use super::super::summary::{Summary, seconds};
use super::esc;
use super::svg::{
    BLUE, Frame, GREEN, GREY, Key, Scale, VERMILLION, axes, header_height, legend, linear_ticks,
    no_data, polyline, svg_close, svg_open,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub(super) struct IntervalStats {
    start: f64,
    end: f64,
    count: u64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// Per tag, the statistics of each interval of a `.hlog` file, in ms.
pub(super) fn read_hlog(path: &Path) -> Result<BTreeMap<String, Vec<IntervalStats>>, String> {
    let hlog = super::super::hlog::read_bounded(path, super::super::hlog::MAX_FILE)
        .map_err(|e| format!("{}: {e}", file_name(path)))?;
    let mut out: BTreeMap<String, Vec<IntervalStats>> = BTreeMap::new();
    // One interval at a time: a long run's log never sits decoded in memory whole.
    super::super::hlog::visit(&hlog, |i, _| {
        let h = &i.histogram;
        if h.is_empty() {
            return Ok(());
        }
        let start = i.start.as_secs_f64();
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1e6;
        out.entry(i.tag).or_default().push(IntervalStats {
            start,
            end: start + i.length.as_secs_f64(),
            count: h.len(),
            p50: q(0.5),
            p99: q(0.99),
            max: h.max() as f64 / 1e6,
        });
        Ok(())
    })
    .map_err(|e| format!("{}: {e}", file_name(path)))?;
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// When the links change during the run, in seconds of the measured phase.
pub(super) fn change_times(s: &Summary) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for l in &s.network.links {
        for c in &l.changes {
            if let Some(t) = seconds(&c.at)
                && !out.iter().any(|x| (x - t).abs() < 1e-9)
            {
                out.push(t);
            }
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

pub(super) fn plot(
    o: &mut String,
    id: &str,
    l: &Loaded,
    intervals: &Result<BTreeMap<String, Vec<IntervalStats>>, String>,
    changes: &[f64],
    metric: &str,
) {
    let empty = Vec::new();
    let points = match intervals {
        Ok(m) => m.get(metric).unwrap_or(&empty),
        Err(_) => &empty,
    };
    let mut keys = vec![
        (Key::Ring { color: GREY }, "max".to_string()),
        (
            Key::Line {
                color: VERMILLION,
                dashed: false,
            },
            "p99".to_string(),
        ),
        (
            Key::Line {
                color: BLUE,
                dashed: false,
            },
            "p50".to_string(),
        ),
    ];
    if !changes.is_empty() {
        keys.push((
            Key::Line {
                color: GREEN,
                dashed: true,
            },
            "link change".to_string(),
        ));
    }
    let (w, h) = (600.0, 320.0);
    let top = header_height(&keys, w);
    let measured = l.summary.run("topology").map_or(0.0, |r| r.measured_s);
    let t_end = points.iter().map(|p| p.end).fold(measured, f64::max);
    let (xmax, x_ticks) = linear_ticks(t_end, 8.0);
    let ymax_raw = points.iter().map(|p| p.max).fold(0.0, f64::max);
    let (ymax, y_ticks) = linear_ticks(ymax_raw * 1.05, 5.0);
    let f = Frame::new(
        w,
        h,
        top,
        Scale::Linear(0.0, xmax),
        Scale::Linear(0.0, ymax),
    );
    svg_open(
        o,
        &format!("over-time-{metric}"),
        id,
        w,
        h,
        &format!("{metric} per second: p50, p99 and max"),
    );
    legend(o, &keys, w);
    axes(
        o,
        &f,
        &x_ticks,
        &y_ticks,
        &format!(
            "seconds since the measured phase started ({} clock; by completion time)",
            l.clock
        ),
        &format!("{metric} (ms)"),
    );
    for t in changes {
        let x = f.px(*t);
        w!(
            o,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{GREEN}\" stroke-width=\"1.5\" stroke-dasharray=\"5 4\"/>\n",
            f.y1(),
            f.y0()
        );
    }
    match (intervals, points.is_empty()) {
        (Err(why), _) => no_data(o, &f, &format!("no interval log: {why}")),
        (Ok(_), true) => no_data(o, &f, "no intervals for this metric"),
        _ => {}
    }
    let mid = |p: &IntervalStats| (p.start + p.end) / 2.0;
    for p in points {
        w!(
            o,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5.5\" fill=\"none\" stroke=\"{GREY}\" stroke-width=\"1.5\"><title>{:.1}-{:.1} s: {} values, p50 {}, p99 {}, max {}</title></circle>\n",
            f.px(mid(p)),
            f.py(p.max),
            p.start,
            p.end,
            p.count,
            esc(&fmt_ms(p.p50)),
            esc(&fmt_ms(p.p99)),
            esc(&fmt_ms(p.max))
        );
    }
    // p99 wider under p50, so that where they are equal (one request in a second) both show.
    type Stat = fn(&IntervalStats) -> f64;
    let lines: [(&str, f64, Stat); 2] = [(VERMILLION, 4.0, |p| p.p99), (BLUE, 2.0, |p| p.p50)];
    for (color, width, get) in lines {
        // Lines join consecutive seconds only: a gap with no completions stays a gap.
        let mut run: Vec<(f64, f64)> = Vec::new();
        let mut last_end = f64::NAN;
        for p in points {
            if !run.is_empty() && (p.start - last_end).abs() > 1e-6 {
                flush_run(o, &f, &mut run, color, width);
            }
            run.push((mid(p), get(p)));
            last_end = p.end;
        }
        flush_run(o, &f, &mut run, color, width);
    }
    let caption = if changes.is_empty() {
        String::new()
    } else {
        format!(
            "Dashed green lines: the links change at {}.",
            changes
                .iter()
                .map(|t| format!("{t} s"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    svg_close(o, &caption);
}

fn flush_run(o: &mut String, f: &Frame, run: &mut Vec<(f64, f64)>, color: &str, width: f64) {
    if run.len() > 1 {
        polyline(o, f, run, color, false, width);
    }
    for (x, y) in run.iter() {
        w!(
            o,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{:.1}\" fill=\"{color}\"/>\n",
            f.px(*x),
            f.py(*y),
            width * 0.5 + 1.6
        );
    }
    run.clear();
}
