//! How quantities are written for people: durations with a readable unit and values with
//! an SI prefix. Every layer formats with these, so they live below all of them.

use std::time::Duration;

/// Formats with the largest SI prefix that keeps the number at least 1.
pub fn format_si(value: f64, unit: &str) -> String {
    const PREFIXES: &[(f64, &str)] =
        &[(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for &(scale, prefix) in PREFIXES {
        if value.abs() >= scale {
            return format!("{}{prefix}{unit}", trim_float(value / scale));
        }
    }
    format!("{}{unit}", trim_float(value))
}

pub(crate) fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Formats a duration with a unit that keeps three significant digits readable.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns == 0.0 {
        "0s".into()
    } else if ns >= 1e9 {
        format!("{}s", trim_float(ns / 1e9))
    } else if ns >= 1e6 {
        format!("{}ms", trim_float(ns / 1e6))
    } else if ns >= 1e3 {
        format!("{}us", trim_float(ns / 1e3))
    } else {
        format!("{ns}ns")
    }
}

/// Serializes a duration as its formatted text (`"40ms"`), for `#[serde(with)]`.
pub(crate) mod duration_str {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
}

/// Serializes a duration as a number of milliseconds.
pub(crate) fn duration_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// A number with three significant digits (at least the units digit): 123, 12.3, 1.23,
/// 0.123; "-" when it is not finite.
pub fn significant(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    let decimals = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        3
    };
    format!("{v:.decimals$}")
}
