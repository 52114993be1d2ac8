//! Byte sizes as operators write them (`"512MiB"`, `"2GiB"`, `"100MB"`), so
//! resource requests read the same in a definition file, over JSON and in logs.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes. Parses from and displays as a human size string.
///
/// `Display` picks the largest binary unit that divides the value exactly
/// (`512MiB`, `1536MiB`, `2GiB`), else plain bytes (`1000B`), so that
/// `s.parse::<ByteSize>()` of a displayed value gives the value back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Every unit `FromStr` knows, with its multiplier.
const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", KIB),
    ("MiB", MIB),
    ("GiB", GIB),
    ("TiB", TIB),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

impl ByteSize {
    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * MIB)
    }

    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Self {
        ByteSize(n * GIB)
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err("empty size; write a number with a unit, e.g. \"512MiB\"".to_string());
        }
        if text.starts_with('-') {
            return Err(format!("size {s:?} is negative"));
        }
        let number_end = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(number_end);
        let unit = unit.trim_start();
        let multiplier = if unit.is_empty() {
            1
        } else {
            match UNITS.iter().find(|(name, _)| *name == unit) {
                Some((_, m)) => *m,
                None => {
                    let known: Vec<&str> = UNITS.iter().map(|(name, _)| *name).collect();
                    return Err(format!(
                        "size {s:?} has unknown unit {unit:?}; known units: {}",
                        known.join(", ")
                    ));
                }
            }
        };
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if whole.is_empty() || (number.contains('.') && frac.is_empty()) || frac.contains('.') {
            return Err(format!(
                "size {s:?} does not start with a number, e.g. \"512MiB\" or \"1.5GiB\""
            ));
        }
        let too_big = || format!("size {s:?} is too large (the limit is {} bytes)", u64::MAX);
        let whole: u128 = whole.parse().map_err(|_| too_big())?;
        if frac.len() > 18 {
            return Err(format!("size {s:?} has too many decimal places"));
        }
        let frac_value: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| too_big())?
        };
        let scale = 10u128.pow(frac.len() as u32);
        let m = u128::from(multiplier);
        let frac_bytes_scaled = frac_value * m;
        if !frac_bytes_scaled.is_multiple_of(scale) {
            return Err(format!("size {s:?} is not a whole number of bytes"));
        }
        let total = whole
            .checked_mul(m)
            .and_then(|v| v.checked_add(frac_bytes_scaled / scale))
            .ok_or_else(too_big)?;
        u64::try_from(total).map(ByteSize).map_err(|_| too_big())
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n == 0 {
            return f.write_str("0B");
        }
        for (unit, m) in [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
            if n.is_multiple_of(m) {
                return write!(f, "{}{unit}", n / m);
            }
        }
        write!(f, "{n}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"512MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size {v} is negative")))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_units() {
        let cases: &[(&str, u64)] = &[
            ("512MiB", 512 * MIB),
            ("2GiB", 2 * GIB),
            ("1.5GiB", 3 * GIB / 2),
            ("100MB", 100_000_000),
            ("64KiB", 64 * KIB),
            ("4096", 4096),
            ("4096B", 4096),
            ("1TiB", TIB),
            ("3TB", 3_000_000_000_000),
            ("2KB", 2000),
            ("7GB", 7_000_000_000),
            ("0", 0),
            ("0.5KiB", 512),
            ("512 MiB", 512 * MIB),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(*want)), "{text}");
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        let cases: &[(&str, &str)] = &[
            ("", "empty size"),
            ("  ", "empty size"),
            ("-1MiB", "negative"),
            ("12XB", "unknown unit \"XB\""),
            ("12mib", "unknown unit"),
            ("MiB", "does not start with a number"),
            ("1.MiB", "does not start with a number"),
            (".5MiB", "does not start with a number"),
            ("1.2.3MiB", "does not start with a number"),
            ("18446744073709551616", "too large"),
            ("16777216TiB", "too large"),
            ("99999999999999999999999999999999999999999TiB", "too large"),
            ("1.5B", "not a whole number of bytes"),
            ("0.1KiB", "not a whole number of bytes"),
        ];
        for (text, want) in cases {
            let err = text.parse::<ByteSize>().unwrap_err();
            assert!(
                err.contains(want),
                "{text:?}: {err:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn displays_largest_exact_binary_unit() {
        let cases: &[(u64, &str)] = &[
            (0, "0B"),
            (1000, "1000B"),
            (1024, "1KiB"),
            (512 * MIB, "512MiB"),
            (3 * GIB / 2, "1536MiB"),
            (2 * GIB, "2GiB"),
            (TIB, "1TiB"),
            (1025 * TIB, "1025TiB"),
            (100_000_000, "100000000B"),
            (1_024_000, "1000KiB"),
        ];
        for (n, want) in cases {
            assert_eq!(ByteSize(*n).to_string(), *want);
        }
    }

    #[test]
    fn serde_as_string_or_integer() {
        assert_eq!(
            serde_json::to_string(&ByteSize::mib(512)).unwrap(),
            "\"512MiB\""
        );
        let s: ByteSize = serde_json::from_str("\"2GiB\"").unwrap();
        assert_eq!(s, ByteSize::gib(2));
        let n: ByteSize = serde_json::from_str("4096").unwrap();
        assert_eq!(n, ByteSize(4096));
        assert!(serde_json::from_str::<ByteSize>("-1").is_err());
        assert!(serde_json::from_str::<ByteSize>("\"lots\"").is_err());
        assert!(serde_json::from_str::<ByteSize>("true").is_err());
    }
}
