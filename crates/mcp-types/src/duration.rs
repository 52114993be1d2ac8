//! Durations as operators write them in configuration (`"250ms"`, `"30s"`,
//! `"1m30s"`), so every binary's config and its tests can use any unit.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Units from largest to smallest; `format_duration` writes them in this order.
const UNITS: &[(&str, u128)] = &[
    ("d", 86_400 * NANOS_PER_SEC),
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

fn unit_nanos(unit: &str) -> Option<u128> {
    if unit == "µs" {
        return Some(1_000);
    }
    UNITS.iter().find(|(u, _)| *u == unit).map(|(_, n)| *n)
}

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"2d"`, `"1500us"`, `"1.5s"` and
/// compounds such as `"1m30s"`. A number without a unit is an error.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration; write a number with a unit, e.g. \"30s\"".to_string());
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() {
            return Err(format!(
                "duration {s:?} is not a number followed by a unit, e.g. \"30s\" or \"1m30s\""
            ));
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        if unit.is_empty() {
            return Err(format!(
                "duration {s:?} is missing a unit after {number:?}; use d, h, m, s, ms, us or ns"
            ));
        }
        let Some(per_unit) = unit_nanos(unit) else {
            return Err(format!(
                "duration {s:?} has unknown unit {unit:?}; use d, h, m, s, ms, us or ns"
            ));
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() || (number.contains('.') && frac.is_empty()) || frac.contains('.') {
            return Err(format!("duration {s:?} has a malformed number {number:?}"));
        }
        let too_long = || format!("duration {s:?} is too long");
        let whole: u128 = whole.parse().map_err(|_| too_long())?;
        let mut nanos = whole.checked_mul(per_unit).ok_or_else(too_long)?;
        if !frac.is_empty() {
            // Keep at most 9 decimal places: finer than a nanosecond is noise.
            let digits = &frac[..frac.len().min(9)];
            let value: u128 = digits.parse().map_err(|_| too_long())?;
            // value < 10^9 and per_unit <= 86_400 * 10^9: the product fits in u128,
            // but the sum may not ("340282366920938463463374607431768211.9us").
            nanos = nanos
                .checked_add(value * per_unit / 10u128.pow(digits.len() as u32))
                .ok_or_else(too_long)?;
        }
        total = total.checked_add(nanos).ok_or_else(too_long)?;
        rest = next;
    }
    let secs =
        u64::try_from(total / NANOS_PER_SEC).map_err(|_| format!("duration {s:?} is too long"))?;
    // The remainder is below one second, so it fits in u32.
    let sub = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, sub))
}

/// Writes a duration the way `parse_duration` reads it: `"250ms"`, `"30s"`,
/// `"1m30s"`, `"2d"`; zero is `"0s"`.
pub fn format_duration(d: Duration) -> String {
    let mut nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, per) in UNITS {
        let n = nanos / per;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            nanos %= per;
        }
    }
    out
}

/// `#[serde(with = "mcp_types::duration::serde_duration")]` for a `Duration`
/// field written as `"30s"`.
pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the duration as `format_duration` does.
    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*d))
    }

    /// Reads a duration string as `parse_duration` does.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(default, with = "mcp_types::duration::serde_duration_option")]` for an
/// `Option<Duration>` field.
pub mod serde_duration_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some` as `format_duration` does and `None` as none.
    pub fn serialize<S: Serializer>(
        d: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => serializer.serialize_some(&super::format_duration(*d)),
            None => serializer.serialize_none(),
        }
    }

    /// Reads an optional duration string as `parse_duration` does.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| super::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        let cases: &[(&str, Duration)] = &[
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("2d", Duration::from_secs(2 * 86_400)),
            ("1500us", Duration::from_micros(1500)),
            ("1500µs", Duration::from_micros(1500)),
            ("7ns", Duration::from_nanos(7)),
            ("1m30s", Duration::from_secs(90)),
            ("1h1m1s1ms", Duration::from_millis(3_661_001)),
            ("1.5s", Duration::from_millis(1500)),
            ("0s", Duration::ZERO),
            ("0.25h", Duration::from_secs(900)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_durations() {
        let cases: &[(&str, &str)] = &[
            ("", "empty duration"),
            ("30", "missing a unit"),
            ("0", "missing a unit"),
            ("1m30", "missing a unit after \"30\""),
            ("30x", "unknown unit \"x\""),
            ("30 s", "unknown unit \" s\""),
            ("-5s", "not a number"),
            ("s", "not a number"),
            ("1..5s", "malformed number"),
            (".5s", "malformed number"),
            ("99999999999999999999999999999999999999999d", "too long"),
            ("300000000000000d", "too long"),
            // The whole part fits, the fraction tips the sum over u128.
            (
                "340282366920938463463374607431768211.999999999us",
                "too long",
            ),
            ("340282366920938463463374607431768211455ns1ns", "too long"),
            ("18446744073709551616s", "too long"),
            // humantime 2.4 panics here (Duration::new's carry overflows).
            ("18446744073709551615s1000ms", "too long"),
            ("18446744073709551615s999999999ns1ns", "too long"),
        ];
        for (text, want) in cases {
            let err = parse_duration(text).unwrap_err();
            assert!(
                err.contains(want),
                "{text:?}: {err:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn formats_compactly() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(86_400 * 2), "2d"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_nanos(1_001), "1us1ns"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(*d), *want);
        }
    }

    #[test]
    fn serde_helpers() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Config {
            #[serde(with = "serde_duration")]
            interval: Duration,
            #[serde(default, with = "serde_duration_option")]
            timeout: Option<Duration>,
        }
        let c: Config = serde_json::from_str(r#"{"interval":"1m30s","timeout":"5s"}"#).unwrap();
        assert_eq!(c.interval, Duration::from_secs(90));
        assert_eq!(c.timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"interval":"1m30s","timeout":"5s"}"#
        );
        let c: Config = serde_json::from_str(r#"{"interval":"250ms"}"#).unwrap();
        assert_eq!(c.timeout, None);
        assert!(serde_json::from_str::<Config>(r#"{"interval":"30"}"#).is_err());
    }
}
