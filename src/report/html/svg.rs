//! The SVG primitives the plots are drawn with: scales, the frame, legends, axes, ticks
//! and lines.

use super::esc;
use std::fmt::Write as _;

// Colours (Okabe-Ito, safe for colour blindness).
pub(super) const BLUE: &str = "#0072B2";
pub(super) const ORANGE: &str = "#E69F00";
pub(super) const SKY: &str = "#56B4E9";
pub(super) const GREEN: &str = "#009E73";
pub(super) const VERMILLION: &str = "#D55E00";
pub(super) const GREY: &str = "#7f7f7f";

#[derive(Clone, Copy)]
pub(super) enum Scale {
    Linear(f64, f64),
    Log10(f64, f64),
}

impl Scale {
    pub(super) fn frac(self, v: f64) -> f64 {
        let f = match self {
            Scale::Linear(a, b) => {
                if b > a {
                    (v - a) / (b - a)
                } else {
                    0.0
                }
            }
            Scale::Log10(a, b) => (v.max(a).log10() - a.log10()) / (b.log10() - a.log10()),
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// A plot's canvas: size, margins and the two scales.
pub(super) struct Frame {
    pub(super) w: f64,
    pub(super) h: f64,
    pub(super) left: f64,
    pub(super) right: f64,
    pub(super) top: f64,
    pub(super) bottom: f64,
    pub(super) x: Scale,
    pub(super) y: Scale,
}

impl Frame {
    pub(super) fn new(w: f64, h: f64, top: f64, x: Scale, y: Scale) -> Self {
        Frame {
            w,
            h,
            left: 66.0,
            right: 30.0,
            top,
            bottom: 50.0,
            x,
            y,
        }
    }
    pub(super) fn px(&self, v: f64) -> f64 {
        self.left + self.x.frac(v) * (self.w - self.left - self.right)
    }
    pub(super) fn py(&self, v: f64) -> f64 {
        self.h - self.bottom - self.y.frac(v) * (self.h - self.top - self.bottom)
    }
    pub(super) fn x0(&self) -> f64 {
        self.left
    }
    pub(super) fn x1(&self) -> f64 {
        self.w - self.right
    }
    pub(super) fn y0(&self) -> f64 {
        self.h - self.bottom
    }
    pub(super) fn y1(&self) -> f64 {
        self.top
    }
}

pub(super) enum Key {
    Line { color: &'static str, dashed: bool },
    Ring { color: &'static str },
    Swatch { color: &'static str },
    Box,
}

/// Legend rows that fit a width, and the height they take.
pub(super) fn legend_layout(
    items: &[(Key, String)],
    width: f64,
) -> (Vec<(f64, usize, usize)>, f64) {
    // (row y offset, first item, one past the last) per row.
    let mut rows = Vec::new();
    let (mut x, mut start, mut row) = (0.0, 0, 0.0);
    for (i, (_, text)) in items.iter().enumerate() {
        let wi = 30.0 + text.chars().count() as f64 * 6.6 + 16.0;
        if x + wi > width && i > start {
            rows.push((row, start, i));
            row += 18.0;
            start = i;
            x = 0.0;
        }
        x += wi;
    }
    if start < items.len() {
        rows.push((row, start, items.len()));
        row += 18.0;
    }
    (rows, row)
}

/// The height of the title and legend above a plot area.
pub(super) fn header_height(items: &[(Key, String)], w: f64) -> f64 {
    let (_, h) = legend_layout(items, w - 40.0);
    34.0 + h + 10.0
}

pub(super) fn svg_open(o: &mut String, plot: &str, id: &str, w: f64, h: f64, title: &str) {
    w!(
        o,
        "<figure>\n<svg id=\"{id}-{plot}\" data-plot=\"{plot}\" viewBox=\"0 0 {w:.0} {h:.0}\" \
         width=\"{w:.0}\" height=\"{h:.0}\" role=\"img\" aria-label=\"{t}\">\n<title>{t}</title>\n\
         <rect x=\"0\" y=\"0\" width=\"{w:.0}\" height=\"{h:.0}\" fill=\"#fff\"/>\n\
         <text class=\"title\" x=\"{:.1}\" y=\"22\" text-anchor=\"middle\">{t}</text>\n",
        w / 2.0,
        t = esc(title)
    );
}

pub(super) fn legend(o: &mut String, items: &[(Key, String)], w: f64) {
    let (rows, _) = legend_layout(items, w - 40.0);
    for (dy, a, b) in rows {
        let width: f64 = items[a..b]
            .iter()
            .map(|(_, t)| 30.0 + t.chars().count() as f64 * 6.6 + 16.0)
            .sum::<f64>()
            - 16.0;
        let mut x = ((w - width) / 2.0).max(8.0);
        let y = 42.0 + dy;
        w!(o, "<g class=\"legend\">");
        for (key, text) in &items[a..b] {
            match key {
                Key::Line { color, dashed } => w!(
                    o,
                    "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-width=\"2.5\"{}/>",
                    x + 24.0,
                    if *dashed {
                        " stroke-dasharray=\"6 4\""
                    } else {
                        ""
                    }
                ),
                Key::Ring { color } => w!(
                    o,
                    "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"5\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>",
                    x + 12.0
                ),
                Key::Swatch { color } => w!(
                    o,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"18\" height=\"12\" fill=\"{color}\"/>",
                    x + 3.0,
                    y - 6.0
                ),
                Key::Box => w!(
                    o,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"22\" height=\"14\" rx=\"3\" fill=\"#eef4fb\" stroke=\"{BLUE}\"/>",
                    x + 1.0,
                    y - 7.0
                ),
            }
            w!(
                o,
                "<text class=\"legend\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x + 30.0,
                y + 4.0,
                esc(text)
            );
            x += 30.0 + text.chars().count() as f64 * 6.6 + 16.0;
        }
        w!(o, "</g>\n");
    }
}

/// Grid lines, tick labels, axis lines and the axis labels.
pub(super) fn axes(
    o: &mut String,
    f: &Frame,
    x_ticks: &[(f64, String)],
    y_ticks: &[(f64, String)],
    x_label: &str,
    y_label: &str,
) {
    for (v, label) in x_ticks {
        let x = f.px(*v);
        w!(
            o,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            f.y1(),
            f.y0(),
            f.y0() + 16.0,
            esc(label)
        );
    }
    for (v, label) in y_ticks {
        let y = f.py(*v);
        w!(
            o,
            "<line class=\"grid\" x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            f.x0(),
            f.x1(),
            f.x0() - 6.0,
            y + 4.0,
            esc(label)
        );
    }
    let (x0, x1, y0, y1) = (f.x0(), f.x1(), f.y0(), f.y1());
    w!(
        o,
        "<line class=\"axis\" x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x1:.1}\" y2=\"{y0:.1}\"/>\
         <line class=\"axis\" x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x0:.1}\" y2=\"{y1:.1}\"/>\n\
         <text class=\"axis-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
         <text class=\"axis-label\" transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        (x0 + x1) / 2.0,
        f.h - 12.0,
        esc(x_label),
        (y0 + y1) / 2.0,
        esc(y_label),
    );
}

pub(super) fn no_data(o: &mut String, f: &Frame, why: &str) {
    w!(
        o,
        "<text class=\"note\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
        (f.x0() + f.x1()) / 2.0,
        (f.y0() + f.y1()) / 2.0,
        esc(why)
    );
}

pub(super) fn svg_close(o: &mut String, caption: &str) {
    w!(o, "</svg>\n");
    if !caption.is_empty() {
        w!(o, "<figcaption>{caption}</figcaption>\n");
    }
    w!(o, "</figure>\n");
}

/// A round step near `range / target`: 1, 2 or 5 times a power of ten.
pub(super) fn nice_step(range: f64, target: f64) -> f64 {
    let raw = range / target;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let m = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Ticks from 0 to a round number at or above `max`, and that number.
pub(super) fn linear_ticks(max: f64, target: f64) -> (f64, Vec<(f64, String)>) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let step = nice_step(max, target);
    let top = (max / step - 1e-9).ceil().max(1.0) * step;
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    let n = (top / step).round() as usize;
    let ticks = (0..=n)
        .map(|i| {
            let v = i as f64 * step;
            (v, format!("{v:.decimals$}"))
        })
        .collect();
    (top, ticks)
}

pub(super) fn polyline(
    o: &mut String,
    f: &Frame,
    pts: &[(f64, f64)],
    color: &str,
    dashed: bool,
    width: f64,
) {
    if pts.is_empty() {
        return;
    }
    let mut d = String::new();
    for (i, (x, y)) in pts.iter().enumerate() {
        w!(
            d,
            "{}{:.1},{:.1}",
            if i == 0 { "" } else { " " },
            f.px(*x),
            f.py(*y)
        );
    }
    w!(
        o,
        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\" stroke-linejoin=\"round\"{} points=\"{d}\"/>\n",
        if dashed {
            " stroke-dasharray=\"7 4\""
        } else {
            ""
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        let (top, t) = linear_ticks(619.0, 5.0);
        assert_eq!(top, 800.0);
        assert_eq!(t[1].1, "200");
        let (top, t) = linear_ticks(0.3, 3.0);
        assert!((top - 0.3).abs() < 1e-9);
        assert_eq!(t[1].1, "0.1");
        let (top, _) = linear_ticks(0.9, 5.0);
        assert!((top - 1.0).abs() < 1e-9);
    }
}
