//! Human-friendly sizes and durations.
//!
//! A size is an integer number of bytes or a string `"<number><unit>"` with unit `B`, `KiB`,
//! `MiB`, `GiB` or `TiB` (binary multiples only: `KB`/`MB` are refused rather than guessed, since
//! half the world reads them as powers of 1000). A duration is an integer number of seconds or a
//! string with unit `ms`, `s`, `m`, `h` or `d`.
//!
//! Decisions the spec left open:
//! * A string without a unit (`"4096"`, `"30"`) means bytes / seconds, like the integer form, so
//!   a value supplied through `${ENV}` need not carry a unit.
//! * Decimal fractions are accepted (`"1.5GiB"`, `"0.5s"`) as long as the result is a whole
//!   number of bytes / nanoseconds: `"1.5B"` is an error, not silently rounded.
//! * Whitespace between number and unit is allowed (`"512 MiB"`); units are case-sensitive
//!   (`"512mib"` is refused: `m` is minutes in durations, and `Mb` would be bits).
//! * No compound forms (`"1h30m"`), no sign, no exponent, no `_` separators inside strings.

use std::time::Duration;

const SIZE_UNITS: &[(&str, u128)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

const NANOS_PER_SEC: u128 = 1_000_000_000;

const DURATION_UNITS: &[(&str, u128)] = &[
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("h", 3600 * NANOS_PER_SEC),
    ("d", 86_400 * NANOS_PER_SEC),
];

/// More fractional digits than this cannot be meaningful for either unit family and would
/// overflow the exact arithmetic below.
const MAX_FRACTION_DIGITS: usize = 18;

/// Parses a size string (see the module docs) into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bytes = parse_scaled(text, SIZE_UNITS, 1, "bytes")?;
    u64::try_from(bytes).map_err(|_| format!("size `{}` is too large", text.trim()))
}

/// Parses a duration string (see the module docs).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let nanos = parse_scaled(text, DURATION_UNITS, NANOS_PER_SEC, "nanoseconds")?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC)
        .map_err(|_| format!("duration `{}` is too large", text.trim()))?;
    // The remainder is < 1e9, so it always fits.
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// A size given as a TOML integer (bytes).
pub fn size_from_int(n: i64) -> Result<u64, String> {
    u64::try_from(n).map_err(|_| "a size must not be negative".to_string())
}

/// A duration given as a TOML integer (seconds).
pub fn duration_from_int(n: i64) -> Result<Duration, String> {
    u64::try_from(n)
        .map(Duration::from_secs)
        .map_err(|_| "a duration must not be negative".to_string())
}

/// Formats a byte count the way a person would write it in the config (`"16MiB"`), exact.
pub fn format_size(bytes: u64) -> String {
    for &(unit, factor) in SIZE_UNITS.iter().rev() {
        let factor = factor as u64;
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

fn parse_scaled(
    text: &str,
    units: &[(&str, u128)],
    bare_factor: u128,
    base_name: &str,
) -> Result<u128, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty value".into());
    }
    if s.starts_with('-') {
        return Err(format!("`{s}` must not be negative"));
    }
    let unit_list = || units.iter().map(|(u, _)| *u).collect::<Vec<_>>().join(", ");
    let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let int_digits = &s[..int_end];
    let mut rest = &s[int_end..];
    if int_digits.is_empty() {
        return Err(format!(
            "`{s}` is not a number followed by a unit ({})",
            unit_list()
        ));
    }
    let mut frac_digits = "";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_end = after_dot
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after_dot.len());
        frac_digits = &after_dot[..frac_end];
        if frac_digits.is_empty() {
            return Err(format!("`{s}`: malformed number"));
        }
        if frac_digits.len() > MAX_FRACTION_DIGITS {
            return Err(format!("`{s}`: too many decimal places"));
        }
        rest = &after_dot[frac_end..];
    }
    let unit = rest.trim_start();
    let factor = if unit.is_empty() {
        bare_factor
    } else {
        match units.iter().find(|(u, _)| *u == unit) {
            Some(&(_, f)) => f,
            None => {
                return Err(format!(
                    "unknown unit `{unit}` in `{s}` (expected one of {})",
                    unit_list()
                ))
            }
        }
    };
    let too_large = || format!("`{s}` is too large");
    let mut int: u128 = 0;
    for d in int_digits.bytes() {
        int = int
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(d - b'0')))
            .ok_or_else(too_large)?;
    }
    let mut total = int.checked_mul(factor).ok_or_else(too_large)?;
    if !frac_digits.is_empty() {
        // frac < 10^18 and factor <= 86400e9 < 2^47, so the product fits in u128 easily.
        let frac: u128 = frac_digits.parse().map_err(|_| too_large())?;
        let scale = 10u128.pow(frac_digits.len() as u32);
        let scaled = frac * factor;
        if !scaled.is_multiple_of(scale) {
            return Err(format!("`{s}` is not a whole number of {base_name}"));
        }
        total = total.checked_add(scaled / scale).ok_or_else(too_large)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("0B"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size(" 512 MiB "), Ok(512 << 20));
        assert_eq!(parse_size("16KiB"), Ok(16 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("0.5KiB"), Ok(512));
        assert_eq!(parse_size("1.0B"), Ok(1));
    }

    #[test]
    fn size_errors() {
        for bad in [
            "", " ", "-1", "-1MiB", "MiB", "1KB", "1MB", "1mib", "1 M", "1.5B", "0.1KiB", "1.",
            ".5MiB", "1e3", "1_000", "+1", "1MiB ", "1 MiB x", "1.2.3MiB",
        ] {
            // "1MiB " is fine after trimming: check that separately below.
            if bad == "1MiB " {
                continue;
            }
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_size("1MiB ").is_ok());
        let e = parse_size("1KB").unwrap_err();
        assert!(e.contains("unknown unit `KB`") && e.contains("KiB"), "{e}");
        assert!(parse_size("-5").unwrap_err().contains("negative"));
        // Overflow: u64::MAX bytes is fine, one more is not; huge digit strings do not panic.
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_size("18446744073709551616")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("16777216TiB").unwrap_err().contains("too large"));
        assert!(parse_size(&"9".repeat(60))
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size(&format!("1.{}MiB", "0".repeat(19))).is_err());
        assert_eq!(
            size_from_int(-1).unwrap_err(),
            "a size must not be negative"
        );
        assert_eq!(size_from_int(7), Ok(7));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.25ms"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1 h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn duration_errors() {
        for bad in [
            "",
            "-1s",
            "s",
            "1sec",
            "1S",
            "1H",
            "1us",
            "1ns",
            "1h30m",
            "0.0000000001s",
            "1.",
            "1e3s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            parse_duration("18446744073709551615s"),
            Ok(Duration::from_secs(u64::MAX))
        );
        assert!(parse_duration("18446744073709551616s")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration("213503982334602d")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration(&"9".repeat(50))
            .unwrap_err()
            .contains("too large"));
        assert_eq!(duration_from_int(5), Ok(Duration::from_secs(5)));
        assert!(duration_from_int(-5).is_err());
    }

    #[test]
    fn format_round_trips() {
        for n in [0u64, 1, 1000, 1024, 16 << 20, 3 << 29, 5 << 40, u64::MAX] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
        assert_eq!(format_size(16 << 20), "16MiB");
    }
}
