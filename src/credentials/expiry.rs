//! Parsing the `Expiration` timestamps of STS, ECS, IMDS and `credential_process`: ISO 8601 /
//! RFC 3339 in UTC (`2026-12-01T16:38:15Z`), with optional fractional seconds and an optional
//! numeric offset (`+00:00`), as the services send them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::s3::sigv4::days_from_civil;

/// `2026-12-01T16:38:15Z` (or `.123Z`, `+01:00`) → the instant; `None` if malformed.
pub fn parse(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" | "" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let h: i64 = rest[1..3].parse().ok()?;
            let m: i64 = rest[4..6].parse().ok()?;
            let o = h * 3600 + m * 60;
            if rb[0] == b'-' {
                -o
            } else {
                o
            }
        }
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let t = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
    u64::try_from(t)
        .ok()
        .map(|t| UNIX_EPOCH + Duration::from_secs(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(s: &str) -> Option<u64> {
        parse(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs())
    }

    #[test]
    fn iso8601() {
        assert_eq!(unix("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix("2026-12-01T16:38:15Z"), Some(1_796_143_095));
        assert_eq!(unix("2026-12-01T16:38:15.123Z"), Some(1_796_143_095));
        assert_eq!(unix("2026-12-01T17:38:15+01:00"), Some(1_796_143_095));
        assert_eq!(unix("2026-12-01T15:38:15-01:00"), Some(1_796_143_095));
        assert_eq!(unix("2026-12-01T16:38:15"), Some(1_796_143_095));
        for bad in [
            "",
            "2026-12-01",
            "2026-13-01T00:00:00Z",
            "2026-12-01T16:38:15.Z",
            "x026-12-01T16:38:15Z",
            "2026-12-01T16:38:15+0100",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
