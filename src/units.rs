//! Unit-checked quantities of the scenario format: durations (`"40ms"`), bit rates
//! (`"100Mbit/s"`), fractions (`"0.1%"`), byte sizes (`"256KiB"`), FLOP rates
//! (`"312TFLOP/s"`) and byte rates (`"2.04TB/s"`).
//!
//! Each type parses from a TOML string (and, where a bare number is unambiguous, from a
//! number), and its error says what would be valid. Values are stored in SI base units.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::fmt;
use std::time::Duration;

use crate::format::trim_float;
pub use crate::format::{format_duration, format_si};

/// Splits `"12.5 ms"` into (12.5, "ms"). The number may have a sign, a fraction and an exponent.
fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_digit()
                || c == '.'
                || c == '_'
                || ((c == '-' || c == '+') && (i == 0 || s[..i].ends_with(['e', 'E'])))
                || ((c == 'e' || c == 'E')
                    && i > 0
                    && s[i + c.len_utf8()..]
                        .starts_with(|n: char| n.is_ascii_digit() || n == '-' || n == '+')))
        })
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let number: f64 = s[..end].replace('_', "").parse().ok()?;
    if !number.is_finite() {
        return None;
    }
    Some((number, s[end..].trim()))
}

fn lookup(unit: &str, table: &[(&str, f64)]) -> Option<f64> {
    table
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|&(_, scale)| scale)
}

fn unit_names(table: &[(&str, f64)]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// Parses `"<number><unit>"` against a unit table; the number must be finite and not negative.
fn parse_scaled(s: &str, what: &str, example: &str, table: &[(&str, f64)]) -> Result<f64, String> {
    let Some((number, unit)) = split_number(s) else {
        return Err(format!(
            "invalid {what} \"{s}\": expected a number and a unit, like \"{example}\""
        ));
    };
    if unit.is_empty() {
        return Err(format!(
            "invalid {what} \"{s}\": a unit is required, like \"{example}\""
        ));
    }
    let Some(scale) = lookup(unit, table) else {
        return Err(format!(
            "invalid {what} \"{s}\": unknown unit `{unit}`; valid units: {}",
            unit_names(table)
        ));
    };
    if number < 0.0 {
        return Err(format!("invalid {what} \"{s}\": must not be negative"));
    }
    Ok(number * scale)
}

const DURATION_UNITS: &[(&str, f64)] = &[
    ("ns", 1e-9),
    ("us", 1e-6),
    ("µs", 1e-6),
    ("ms", 1e-3),
    ("s", 1.0),
    ("min", 60.0),
    ("m", 60.0),
    ("h", 3600.0),
];

const BITRATE_UNITS: &[(&str, f64)] = &[
    ("bit/s", 1.0),
    ("kbit/s", 1e3),
    ("Kbit/s", 1e3),
    ("Mbit/s", 1e6),
    ("Gbit/s", 1e9),
    ("Tbit/s", 1e12),
    ("bps", 1.0),
    ("kbps", 1e3),
    ("Mbps", 1e6),
    ("Gbps", 1e9),
    ("B/s", 8.0),
    ("kB/s", 8e3),
    ("KB/s", 8e3),
    ("MB/s", 8e6),
    ("GB/s", 8e9),
    ("KiB/s", 8.0 * 1024.0),
    ("MiB/s", 8.0 * 1024.0 * 1024.0),
    ("GiB/s", 8.0 * 1024.0 * 1024.0 * 1024.0),
];

const SIZE_UNITS: &[(&str, f64)] = &[
    ("B", 1.0),
    ("kB", 1e3),
    ("KB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
    ("TB", 1e12),
    ("KiB", 1024.0),
    ("MiB", 1024.0 * 1024.0),
    ("GiB", 1024.0 * 1024.0 * 1024.0),
    ("TiB", 1024.0 * 1024.0 * 1024.0 * 1024.0),
];

const FLOPS_UNITS: &[(&str, f64)] = &[
    ("FLOP/s", 1.0),
    ("GFLOP/s", 1e9),
    ("TFLOP/s", 1e12),
    ("PFLOP/s", 1e15),
    ("GFLOPS", 1e9),
    ("TFLOPS", 1e12),
    ("PFLOPS", 1e15),
];

const BYTERATE_UNITS: &[(&str, f64)] = &[
    ("B/s", 1.0),
    ("kB/s", 1e3),
    ("KB/s", 1e3),
    ("MB/s", 1e6),
    ("GB/s", 1e9),
    ("TB/s", 1e12),
    ("KiB/s", 1024.0),
    ("MiB/s", 1024.0 * 1024.0),
    ("GiB/s", 1024.0 * 1024.0 * 1024.0),
];

/// Either a string with a unit or a bare number, as TOML gives them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Text(String),
    Int(i64),
    Float(f64),
    /// Anything else (a boolean, an array, a table, a date): named in the error, so it
    /// never reads "data did not match any variant of untagged enum".
    Other(toml::Value),
}

/// The error for a value of the wrong TOML type where a quantity goes.
fn wrong_type<E: de::Error>(what: &str, example: &str, v: &toml::Value) -> E {
    E::custom(format!(
        "invalid {what}: expected a string with a unit, like \"{example}\", got {} {}",
        if matches!(v, toml::Value::Array(_)) {
            "an"
        } else {
            "a"
        },
        v.type_str()
    ))
}

macro_rules! quantity {
    ($(#[$doc:meta])* $name:ident, $what:literal, $example:literal, $table:ident, $display:expr, $min:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default)]
        pub struct $name(f64);

        impl $name {
            /// The value in SI base units.
            pub fn get(self) -> f64 {
                self.0
            }

            /// A value in SI base units.
            pub fn new(value: f64) -> Self {
                Self(value)
            }

            /// Parses `"<number><unit>"`.
                        pub fn parse(s: &str) -> Result<Self, String> {
                let v = parse_scaled(s, $what, $example, $table)?;
                let show: fn(f64) -> String = $display;
                if !(($min)..=($max)).contains(&v) {
                    return Err(format!(
                        "invalid {} \"{s}\": must be between {} and {}",
                        $what,
                        show($min),
                        show($max)
                    ));
                }
                Ok(Self(v))
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match Raw::deserialize(d)? {
                    Raw::Text(s) => Self::parse(&s).map_err(de::Error::custom),
                    Raw::Int(n) => Err(de::Error::custom(format!(
                        "invalid {} {n}: a unit is required, like \"{}\"",
                        $what, $example
                    ))),
                    Raw::Float(n) => Err(de::Error::custom(format!(
                        "invalid {} {n}: a unit is required, like \"{}\"",
                        $what, $example
                    ))),
                    Raw::Other(v) => Err(wrong_type($what, $example, &v)),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let show: fn(f64) -> String = $display;
                f.write_str(&show(self.0))
            }
        }
    };
}

quantity!(
    /// A bit rate in bits per second.
    BitRate, "bandwidth", "100Mbit/s", BITRATE_UNITS, |v| format_si(v, "bit/s"), 1e3, 1e15
);
quantity!(
    /// A size in bytes.
    Bytes, "size", "256KiB", SIZE_UNITS, |v| format_si(v, "B"), 0.0, 1e15
);
quantity!(
    /// A compute rate in floating-point operations per second.
    FlopRate, "compute rate", "312TFLOP/s", FLOPS_UNITS, |v| format_si(v, "FLOP/s"), 0.0, 1e19
);
quantity!(
    /// A memory bandwidth in bytes per second.
    ByteRate, "memory bandwidth", "2.04TB/s", BYTERATE_UNITS, |v| format_si(v, "B/s"), 0.0, 1e16
);

impl Bytes {
    /// The size rounded to whole bytes.
    pub fn as_u64(self) -> u64 {
        self.0.round() as u64
    }
}

/// A non-negative duration, written like `"40ms"`, `"1.5s"`, `"250us"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn parse(s: &str) -> Result<Self, String> {
        let secs = parse_scaled(s, "duration", "40ms", DURATION_UNITS)?;
        if secs > 1e9 {
            return Err(format!("invalid duration \"{s}\": too long"));
        }
        Ok(Dur(Duration::from_secs_f64(secs)))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(s) => Self::parse(&s).map_err(de::Error::custom),
            Raw::Int(n) => Err(de::Error::custom(format!(
                "invalid duration {n}: a unit is required, like \"{n}ms\" or \"{n}s\""
            ))),
            Raw::Float(n) => Err(de::Error::custom(format!(
                "invalid duration {n}: a unit is required, like \"{n}ms\" or \"{n}s\""
            ))),
            Raw::Other(v) => Err(wrong_type("duration", "40ms", &v)),
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// A duration per byte, written like a duration (`"1ns"`, `"0.25ns"`): kept in seconds as a
/// float, so that costs below a nanosecond per byte are not truncated to nothing.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default)]
pub struct PerByte(pub f64);

impl PerByte {
    pub fn parse(s: &str) -> Result<Self, String> {
        parse_scaled(s, "duration per byte", "1ns", DURATION_UNITS).map(PerByte)
    }

    /// Seconds per byte.
    pub fn secs(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for PerByte {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(s) => Self::parse(&s).map_err(de::Error::custom),
            Raw::Int(n) => Err(de::Error::custom(format!(
                "invalid duration per byte {n}: a unit is required, like \"{n}ns\""
            ))),
            Raw::Float(n) => Err(de::Error::custom(format!(
                "invalid duration per byte {n}: a unit is required, like \"{n}ns\""
            ))),
            Raw::Other(v) => Err(wrong_type("duration per byte", "1ns", &v)),
        }
    }
}

/// A fraction in [0, 1], written as a percentage: `"0.1%"`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default)]
pub struct Fraction(f64);

impl Fraction {
    pub fn new(v: f64) -> Self {
        Fraction(v)
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let Some(number) = t.strip_suffix('%') else {
            return Err(format!(
                "invalid percentage \"{s}\": expected a number followed by %, like \"0.1%\""
            ));
        };
        let Some((v, rest)) = split_number(number) else {
            return Err(format!(
                "invalid percentage \"{s}\": expected a number followed by %, like \"0.1%\""
            ));
        };
        if !rest.is_empty() {
            return Err(format!(
                "invalid percentage \"{s}\": expected a number followed by %, like \"0.1%\""
            ));
        }
        if !(0.0..=100.0).contains(&v) {
            return Err(format!(
                "invalid percentage \"{s}\": must be between 0% and 100%"
            ));
        }
        Ok(Fraction(v / 100.0))
    }

    /// The fraction in [0, 1].
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(s) => Self::parse(&s).map_err(de::Error::custom),
            Raw::Int(n) => Err(de::Error::custom(format!(
                "invalid percentage {n}: write it as a string with %, like \"{n}%\""
            ))),
            Raw::Float(n) => Err(de::Error::custom(format!(
                "invalid percentage {n}: write it as a string with %, like \"{n}%\""
            ))),
            Raw::Other(v) => Err(wrong_type("percentage", "0.5%", &v)),
        }
    }
}

impl Serialize for Fraction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", trim_float(self.0 * 100.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(Dur::parse("40ms").unwrap().0, Duration::from_millis(40));
        assert_eq!(Dur::parse("1.5s").unwrap().0, Duration::from_millis(1500));
        assert_eq!(Dur::parse("250us").unwrap().0, Duration::from_micros(250));
        assert_eq!(Dur::parse("250µs").unwrap().0, Duration::from_micros(250));
        assert_eq!(Dur::parse("7ns").unwrap().0, Duration::from_nanos(7));
        assert_eq!(Dur::parse("2min").unwrap().0, Duration::from_secs(120));
        assert_eq!(Dur::parse(" 3 s ").unwrap().0, Duration::from_secs(3));
        assert_eq!(Dur::parse("1e3ms").unwrap().0, Duration::from_secs(1));
    }

    #[test]
    fn bad_durations_say_what_is_valid() {
        let e = Dur::parse("40").unwrap_err();
        assert!(e.contains("a unit is required") && e.contains("ms"), "{e}");
        let e = Dur::parse("40 parsecs").unwrap_err();
        assert!(e.contains("parsecs"), "{e}");
        assert!(Dur::parse("-5ms").unwrap_err().contains("negative"));
        assert!(Dur::parse("ms").is_err());
        assert!(Dur::parse("").is_err());
        assert!(Dur::parse("nan ms").is_err());
    }

    #[test]
    fn bit_rates() {
        assert_eq!(BitRate::parse("100Mbit/s").unwrap().get(), 100e6);
        assert_eq!(BitRate::parse("1Gbit/s").unwrap().get(), 1e9);
        assert_eq!(BitRate::parse("10 Mbps").unwrap().get(), 10e6);
        assert_eq!(BitRate::parse("1MB/s").unwrap().get(), 8e6);
        assert!(BitRate::parse("100Mbit").is_err());
        assert!(
            BitRate::parse("1e-30bit/s")
                .unwrap_err()
                .contains("between 1kbit/s and 1Pbit/s")
        );
        assert_eq!(
            BitRate::parse("100Mbit/s").unwrap().to_string(),
            "100Mbit/s"
        );
    }

    #[test]
    fn sizes_and_device_rates() {
        assert_eq!(Bytes::parse("256KiB").unwrap().as_u64(), 262_144);
        assert_eq!(Bytes::parse("80GB").unwrap().get(), 80e9);
        assert_eq!(Bytes::parse("1500B").unwrap().as_u64(), 1500);
        assert_eq!(FlopRate::parse("312TFLOP/s").unwrap().get(), 312e12);
        assert_eq!(ByteRate::parse("2.04TB/s").unwrap().get(), 2.04e12);
    }

    #[test]
    fn percentages() {
        assert!((Fraction::parse("0.1%").unwrap().get() - 0.001).abs() < 1e-15);
        assert_eq!(Fraction::parse("100%").unwrap().get(), 1.0);
        assert!(
            Fraction::parse("150%")
                .unwrap_err()
                .contains("between 0% and 100%")
        );
        assert!(Fraction::parse("-1%").is_err());
        assert!(
            Fraction::parse("0.1")
                .unwrap_err()
                .contains("followed by %")
        );
    }

    #[test]
    fn deserializing_a_bare_number_asks_for_a_unit() {
        #[derive(Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            rtt: Dur,
        }
        let e = toml::from_str::<T>("rtt = 40").unwrap_err();
        assert!(e.message().contains("a unit is required"), "{e}");
    }
}
