//! The percentile distributions, on HdrHistogram's axis: x = 1/(1-percentile), log scale.

use super::super::compare::Loaded;
use super::svg::{
    BLUE, Frame, Key, ORANGE, SKY, Scale, axes, header_height, legend, linear_ticks, no_data,
    polyline, svg_close, svg_open,
};

/// The right end of the percentile axis: 99.99 %.
const X_MAX: f64 = 1e4;

fn percentile_x(p: f64) -> f64 {
    if p >= 1.0 {
        X_MAX
    } else {
        (1.0 / (1.0 - p)).min(X_MAX)
    }
}

/// The step curve of a distribution: the value at each percentile.
fn percentile_curve(d: &[(f64, u64)]) -> Vec<(f64, f64)> {
    let n: u64 = d.iter().map(|x| x.1).sum();
    if n == 0 {
        return Vec::new();
    }
    let mut pts = Vec::new();
    let mut seen = 0u64;
    for &(v, c) in d {
        let x0 = percentile_x(seen as f64 / n as f64);
        seen += c;
        let x1 = percentile_x(seen as f64 / n as f64);
        pts.push((x0, v));
        pts.push((x1, v));
        if x1 >= X_MAX {
            break;
        }
    }
    pts
}

/// One distribution's curve on a percentile plot.
struct Curve {
    name: String,
    color: &'static str,
    dashed: bool,
    width: f64,
    /// Drawing order: lower first.
    layer: u8,
    dist: Vec<(f64, u64)>,
}

pub(super) fn plot(
    o: &mut String,
    id: &str,
    l: &Loaded,
    prev: Option<&(Loaded, String)>,
    metric: &str,
) {
    let dist = |l: &Loaded, run: &str| {
        l.dists
            .get(&(run.to_string(), metric.to_string()))
            .cloned()
            .unwrap_or_default()
    };
    let count = |d: &[(f64, u64)]| d.iter().map(|x| x.1).sum::<u64>();
    // In legend order; drawn baseline first (wider, so that it shows where the two are
    // equal), then the topology, then the previous topology dashed over it.
    let mut series: Vec<Curve> = Vec::new();
    let t = dist(l, "topology");
    series.push(Curve {
        name: format!("topology (n={})", count(&t)),
        color: BLUE,
        dashed: false,
        width: 2.0,
        layer: 1,
        dist: t.clone(),
    });
    let b = dist(l, "baseline");
    if !b.is_empty() {
        series.push(Curve {
            name: format!("baseline (n={})", count(&b)),
            color: ORANGE,
            dashed: false,
            width: 3.2,
            layer: 0,
            dist: b.clone(),
        });
    }
    if let Some((p, name)) = prev {
        let d = dist(p, "topology");
        if !d.is_empty() {
            series.push(Curve {
                name: format!("topology, previous ({name})"),
                color: SKY,
                dashed: true,
                width: 2.0,
                layer: 2,
                dist: d,
            });
        }
    }
    let keys: Vec<(Key, String)> = series
        .iter()
        .map(|c| {
            (
                Key::Line {
                    color: c.color,
                    dashed: c.dashed,
                },
                c.name.clone(),
            )
        })
        .collect();
    let (w, h) = (600.0, 340.0);
    let top = header_height(&keys, w);
    let max = series
        .iter()
        .flat_map(|s| s.dist.iter().map(|x| x.0))
        .fold(0.0, f64::max);
    let (ymax, y_ticks) = linear_ticks(max * 1.05, 5.0);
    let f = Frame::new(
        w,
        h,
        top,
        Scale::Log10(1.0, X_MAX),
        Scale::Linear(0.0, ymax),
    );
    let x_ticks: Vec<(f64, String)> = [
        (1.0, "0%"),
        (2.0, "50%"),
        (10.0, "90%"),
        (100.0, "99%"),
        (1e3, "99.9%"),
        (1e4, "99.99%"),
    ]
    .iter()
    .map(|(v, s)| (*v, s.to_string()))
    .collect();
    svg_open(
        o,
        &format!("percentiles-{metric}"),
        id,
        w,
        h,
        &format!("{metric}: latency by percentile"),
    );
    legend(o, &keys, w);
    axes(
        o,
        &f,
        &x_ticks,
        &y_ticks,
        "percentile",
        &format!("{metric} (ms)"),
    );
    if t.is_empty() && b.is_empty() {
        no_data(o, &f, "no values recorded");
    }
    series.sort_by_key(|c| c.layer);
    for c in &series {
        polyline(
            o,
            &f,
            &percentile_curve(&c.dist),
            c.color,
            c.dashed,
            c.width,
        );
    }
    svg_close(o, "");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_curve_steps_to_the_right_edge() {
        let c = percentile_curve(&[(1.0, 50), (2.0, 40), (3.0, 10)]);
        assert_eq!(c.first(), Some(&(1.0, 1.0)));
        assert_eq!(c.last(), Some(&(X_MAX, 3.0)));
        // 50 % of the samples at 1: the first step ends at x = 2.
        assert_eq!(c[1], (2.0, 1.0));
    }
}
