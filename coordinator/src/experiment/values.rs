//! Scalar values shared by several fields and kinds: numbers that may be
//! written as text (`count: all`, `"95%"`), rates, sizes and regular
//! expressions, read so that a wrong value is described in the file's words.

use std::fmt;

use regex::Regex;
use serde::Deserialize;

/// A value that serde accepted but the field does not.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field} {text:?}: unknown unit; write e.g. 512MiB, 2GB or a number of bytes")]
    SizeUnit { field: &'static str, text: String },
    #[error("{field} {text:?}: write a positive size, e.g. 512MiB")]
    SizeValue { field: &'static str, text: String },
    #[error("{field}: invalid regular expression {pattern:?}: {source}")]
    Regex {
        field: &'static str,
        pattern: String,
        source: regex::Error,
    },
}

/// Result of reading a value.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Compiles the regular expression `pattern` written in `field`.
pub(crate) fn compile(field: &'static str, pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|source| Error::Regex {
        field,
        pattern: pattern.to_string(),
        source,
    })
}

/// Reads a scalar that may be a number or text (`count: 3` or `count: all`),
/// so a wrong value is described in the file's words, not as a variant of
/// an internal enum.
pub(crate) struct NumberOrText<T> {
    pub expecting: &'static str,
    /// Numbers arrive as f64; integers are exact up to 2^53. None for a
    /// number the field does not take.
    pub number: fn(f64) -> Option<T>,
    /// What a refused number is, in the file's words: the error reads
    /// `{refused} {number}: {fix}`.
    pub refused: (&'static str, &'static str),
    pub text: fn(String) -> T,
}

impl<'de, T> serde::de::Visitor<'de> for NumberOrText<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
        let (what, fix) = self.refused;
        (self.number)(v).ok_or_else(|| E::custom(format!("{what} {v}: {fix}")))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_f64(v as f64)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<T, E> {
        Err(E::custom(format!("number too large: expected {}", self.expecting)))
    }

    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<T, E> {
        Err(E::custom(format!("number too large: expected {}", self.expecting)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.text)(v.to_string()))
    }
}

/// A fraction (0.95) or a percentage string ("95%").
pub(crate) enum RawRate {
    Fraction(f64),
    Text(String),
}

impl RawRate {
    /// The number in a percentage written as text (`"95%"` → 95).
    pub fn percent_text(t: &str) -> Option<f64> {
        t.trim().strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok())
    }
}

impl<'de> Deserialize<'de> for RawRate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText {
            expecting: "a fraction (0.95) or a percentage (\"95%\")",
            number: |v| Some(RawRate::Fraction(v)),
            refused: ("rate", "write a fraction (0.95) or a percentage (\"95%\")"),
            text: RawRate::Text,
        })
    }
}

/// A size: a number of bytes, or text with a unit (`512MiB`, `2 GB`).
pub(crate) enum RawSize {
    N(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberOrText {
            expecting: "a size: a number of bytes or a number with a unit (512MiB, 2GB)",
            number: |v| (v >= 1.0 && v.fract() == 0.0 && v <= u64::MAX as f64).then_some(RawSize::N(v as u64)),
            refused: ("size", "write a whole number of bytes or a unit, e.g. 512MiB"),
            text: RawSize::Text,
        })
    }
}

impl RawSize {
    /// The size in bytes; `field` names it in errors.
    pub fn bytes(&self, field: &'static str) -> Result<u64> {
        let t = match self {
            RawSize::N(n) => return Ok(*n),
            RawSize::Text(t) => t.trim(),
        };
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            _ => {
                return Err(Error::SizeUnit {
                    field,
                    text: t.to_string(),
                })
            }
        };
        match num.parse::<f64>() {
            Ok(n) if n > 0.0 && n.is_finite() => Ok((n * mult as f64) as u64),
            _ => Err(Error::SizeValue {
                field,
                text: t.to_string(),
            }),
        }
    }
}

/// `1.5 GiB`-style sizes for reports.
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{:.1} {}", v, UNITS[i])
    }
}
