//! HTTP-date parsing (RFC 9110 §5.6.7): the one parser behind every date field corvid reads —
//! `Expires`, `Date`, `Last-Modified`, `If-Modified-Since`, `If-Unmodified-Since`, `If-Range`,
//! `Retry-After`.
//!
//! All three formats are accepted, as the RFC requires of recipients: the IMF-fixdate
//! (`Sun, 06 Nov 1994 08:49:37 GMT`) and the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37
//! GMT`) and asctime (`Sun Nov  6 08:49:37 1994`) formats. The layout of each is exact (one
//! space where the grammar has one, two digits where it has two), but, to be robust as §5.6.7
//! asks of recipients:
//! - day names, month names and `GMT` are matched without regard to case;
//! - the day name is not checked against the date: the date says when, and a generator that
//!   got the weekday wrong (the http-tests cache suite's asctime example does) still meant
//!   that date. (`httpdate`, used before, refused such dates, so an `Expires` in asctime
//!   format with a wrong day name made the response stale at once.)
//!
//! A two-digit RFC 850 year is the year with those last two digits that is not more than 50
//! years after the current one (§5.6.7) — the one place this module reads the clock.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// The last second an HTTP-date can name (9999-12-31T23:59:59Z); later times are formatted as
/// this one.
pub const MAX_SECS: u64 = 253_402_300_799;

thread_local! {
    /// The last date [`cached_imf_fixdate`] formatted on this thread, and its second.
    static LAST: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
}

/// [`format_imf_fixdate`] through a one-entry cache per thread: a hit writes the stored
/// response's `Date`, and hits in a row are often of one entry (or of entries stored the same
/// day, which only need the time of day formatted).
pub fn cached_imf_fixdate(secs: u64) -> [u8; 29] {
    let secs = secs.min(MAX_SECS);
    LAST.with(|last| {
        let (at, mut text) = last.get();
        if at == secs {
            return text;
        }
        if at != u64::MAX && at / 86_400 == secs / 86_400 {
            text[17..25].copy_from_slice(&clock((secs % 86_400) as u32));
        } else {
            text = format_imf_fixdate(secs);
        }
        last.set((secs, text));
        text
    })
}

/// `hh:mm:ss` of the second of the day `sod`.
fn clock(sod: u32) -> [u8; 8] {
    let d = |n: u32| b'0' + n as u8;
    let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);
    [
        d(hh / 10),
        d(hh % 10),
        b':',
        d(mm / 10),
        d(mm % 10),
        b':',
        d(ss / 10),
        d(ss % 10),
    ]
}

/// The IMF-fixdate of `secs` after the unix epoch (`Sun, 06 Nov 1994 08:49:37 GMT`), clamped
/// to [`MAX_SECS`]. Written by hand, without `fmt` or a `String`, because a hit renders the
/// stored response's `Date` (and the memory tier's entries do not keep it as text).
pub fn format_imf_fixdate(secs: u64) -> [u8; 29] {
    const DAY_NAMES: &[u8; 21] = b"MonTueWedThuFriSatSun";
    const MONTH_NAMES: &[u8; 36] = b"JanFebMarAprMayJunJulAugSepOctNovDec";
    let secs = secs.min(MAX_SECS);
    let days = secs / 86_400;
    let sod = (secs % 86_400) as u32;
    // 1970-01-01 was a Thursday (index 3 of DAY_NAMES, which starts on Monday).
    let wd = (days + 3) as usize % 7 * 3;
    let (year, month, day) = civil_from_days(days);
    let mo = (month as usize - 1) % 12 * 3;
    let y = year as u32;
    let d = |n: u32| b'0' + n as u8;
    let [h1, h2, c1, m1, m2, c2, s1, s2] = clock(sod);
    [
        DAY_NAMES[wd],
        DAY_NAMES[wd + 1],
        DAY_NAMES[wd + 2],
        b',',
        b' ',
        d(day as u32 / 10),
        d(day as u32 % 10),
        b' ',
        MONTH_NAMES[mo],
        MONTH_NAMES[mo + 1],
        MONTH_NAMES[mo + 2],
        b' ',
        d(y / 1000),
        d(y / 100 % 10),
        d(y / 10 % 10),
        d(y % 10),
        b' ',
        h1,
        h2,
        c1,
        m1,
        m2,
        c2,
        s1,
        s2,
        b' ',
        b'G',
        b'M',
        b'T',
    ]
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (H. Hinnant's
/// civil_from_days, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// An HTTP-date in any of the three formats (surrounding spaces and tabs ignored); `None`
/// when it is not one.
pub fn parse(s: &str) -> Option<SystemTime> {
    to_system_time(parse_unix(s, current_year)?)
}

/// [`parse`] as whole unix seconds, `None` before 1970 as well as when invalid.
pub fn parse_unix_secs(s: &str) -> Option<u64> {
    u64::try_from(parse_unix(s, current_year)?).ok()
}

/// Unix seconds (negative before 1970). `now_year` is asked only for an RFC 850 date.
fn parse_unix(s: &str, now_year: impl FnOnce() -> i64) -> Option<i64> {
    let s = s.trim_matches([' ', '\t']).as_bytes();
    if !s.is_ascii() {
        return None;
    }
    let (year, month, day, time) = if s.get(3) == Some(&b',') {
        imf_fixdate(s)?
    } else if s.get(3) == Some(&b' ') {
        asctime(s)?
    } else {
        rfc850(s, now_year)?
    };
    let (h, m, sec) = time;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // A leap second (60) is accepted as the first second of the next minute.
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

type Parts = (i64, i64, i64, (i64, i64, i64));

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(s: &[u8]) -> Option<Parts> {
    if s.len() != 29 || s[4] != b' ' || s[7] != b' ' || s[11] != b' ' || s[16] != b' ' {
        return None;
    }
    name_index(&s[..3], &DAYS)?;
    let day = digits(&s[5..7])?;
    let month = name_index(&s[8..11], &MONTHS)? + 1;
    let year = digits(&s[12..16])?;
    let time = time_of_day(&s[17..25])?;
    gmt(&s[25..])?;
    Some((year, month, day, time))
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn rfc850(s: &[u8], now_year: impl FnOnce() -> i64) -> Option<Parts> {
    let comma = s.iter().position(|&b| b == b',')?;
    name_index(&s[..comma], &LONG_DAYS)?;
    let rest = &s[comma + 1..];
    if rest.len() != 23 || rest[0] != b' ' || rest[3] != b'-' || rest[7] != b'-' || rest[10] != b' '
    {
        return None;
    }
    let day = digits(&rest[1..3])?;
    let month = name_index(&rest[4..7], &MONTHS)? + 1;
    let yy = digits(&rest[8..10])?;
    let time = time_of_day(&rest[11..19])?;
    gmt(&rest[19..])?;
    // The year ending in `yy` within (now - 50, now + 50]: at most 50 years ahead.
    let now = now_year();
    let mut year = now - now.rem_euclid(100) + yy;
    if year > now + 50 {
        year -= 100;
    } else if year <= now - 50 {
        year += 100;
    }
    Some((year, month, day, time))
}

/// `Sun Nov  6 08:49:37 1994` (the day of the month is `SP DIGIT` or two digits).
fn asctime(s: &[u8]) -> Option<Parts> {
    if s.len() != 24 || s[3] != b' ' || s[7] != b' ' || s[10] != b' ' || s[19] != b' ' {
        return None;
    }
    name_index(&s[..3], &DAYS)?;
    let month = name_index(&s[4..7], &MONTHS)? + 1;
    let day = match s[8] {
        b' ' => digits(&s[9..10])?,
        _ => digits(&s[8..10])?,
    };
    let time = time_of_day(&s[11..19])?;
    let year = digits(&s[20..24])?;
    Some((year, month, day, time))
}

/// `HH:MM:SS`
fn time_of_day(s: &[u8]) -> Option<(i64, i64, i64)> {
    if s.len() != 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    Some((digits(&s[..2])?, digits(&s[3..5])?, digits(&s[6..8])?))
}

/// ` GMT`, any case.
fn gmt(s: &[u8]) -> Option<()> {
    s.eq_ignore_ascii_case(b" GMT").then_some(())
}

/// The position of `s` in `names`, compared without regard to case.
fn name_index(s: &[u8], names: &[&str]) -> Option<i64> {
    names
        .iter()
        .position(|n| n.as_bytes().eq_ignore_ascii_case(s))
        .map(|i| i as i64)
}

/// Decimal digits only (no sign, no space).
fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, b| n * 10 + i64::from(b - b'0')))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn to_system_time(secs: i64) -> Option<SystemTime> {
    let d = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

/// The current year (UTC), for two-digit RFC 850 years.
fn current_year() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // Good enough for picking a century: 365.2425 days a year.
    1970 + secs / 31_556_952
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06T08:49:37Z, the RFC's example.
    const EXAMPLE: i64 = 784_111_777;

    fn at(s: &str) -> Option<i64> {
        parse_unix(s, || 2026)
    }

    #[test]
    fn the_three_formats_of_rfc_9110() {
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun Nov 06 08:49:37 1994",
            "  Sun, 06 Nov 1994 08:49:37 GMT\t",
        ] {
            assert_eq!(at(s), Some(EXAMPLE), "{s:?}");
        }
    }

    #[test]
    fn agrees_with_httpdate_on_what_it_formats() {
        for secs in [
            0u64,
            1,
            951_782_400,
            1_700_000_000,
            2_147_483_648,
            253_402_300_799,
        ] {
            let s = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(parse_unix_secs(&s), Some(secs), "{s}");
        }
    }

    #[test]
    fn formats_as_httpdate_does() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut cases = vec![
            0u64,
            1,
            59,
            86_399,
            86_400,
            951_782_400,
            951_868_800,
            4_107_542_399,
        ];
        cases.extend([1_700_000_000, 2_147_483_648, MAX_SECS - 1, MAX_SECS]);
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x % (MAX_SECS + 1));
        }
        for secs in cases {
            let want = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(
                std::str::from_utf8(&format_imf_fixdate(secs)),
                Ok(want.as_str()),
                "{secs}"
            );
        }
        assert_eq!(format_imf_fixdate(u64::MAX), format_imf_fixdate(MAX_SECS));
        // The cached form, over runs of one second, one day and jumps between days.
        let mut secs = 1_700_000_000u64;
        for step in [0u64, 1, 59, 3_599, 86_399, 86_400, 1, 0, 7_777_777, 13, 0] {
            secs += step;
            assert_eq!(cached_imf_fixdate(secs), format_imf_fixdate(secs), "{secs}");
        }
        assert_eq!(cached_imf_fixdate(u64::MAX), format_imf_fixdate(MAX_SECS));
    }

    /// The http-tests cache suite's `expires-parse` cases (cache-tests.fyi).
    #[test]
    fn the_cache_test_suite_cases() {
        let thu_18_aug_2050 = days_from_civil(2050, 8, 18) * 86_400 + 2 * 3600 + 60 + 18;
        let accepted = [
            // 2^31 s is 03:14:08 that day; 9_999_999_999 s is 17:46:39 the day before.
            ("Tue, 19 Jan 2038 14:14:08 GMT", 2_147_483_648 + 11 * 3600),
            ("Sun, 21 Nov 2286 04:46:39 GMT", 9_999_999_999 + 11 * 3600),
            ("Thursday, 18-Aug-50 02:01:18 GMT", thu_18_aug_2050),
            // Aug 8 2050 is a Monday: the day name is not checked.
            ("Thu Aug  8 02:01:18 2050", thu_18_aug_2050 - 10 * 86_400),
            ("THU, 18 Aug 2050 02:01:18 GMT", thu_18_aug_2050),
            ("Thu, 18 AUG 2050 02:01:18 GMT", thu_18_aug_2050),
            ("Thu, 18 Aug 2050 02:01:18 gMT", thu_18_aug_2050),
        ];
        for (s, want) in accepted {
            assert_eq!(at(s), Some(want), "{s:?}");
        }
        for s in [
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
        ] {
            assert_eq!(at(s), None, "{s:?} is not an HTTP-date");
        }
    }

    #[test]
    fn invalid_dates_and_garbage() {
        for s in [
            "",
            "0",
            "-1",
            "soon",
            "Sun, 31 Feb 2025 00:00:00 GMT",
            "Sun, 29 Feb 2025 00:00:00 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Xyz 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, +6 Nov 1994 08:49:37 GMT",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov 6 08:49:37 1994",
            "Sundae, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sün, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(at(s), None, "{s:?}");
        }
        assert_eq!(
            at("Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(951_782_400),
            "a leap day"
        );
        assert_eq!(
            at("Sat, 31 Dec 2016 23:59:60 GMT"),
            at("Sun, 01 Jan 2017 00:00:00 GMT"),
            "a leap second"
        );
        assert_eq!(at("Wed, 31 Dec 1969 23:59:59 GMT"), Some(-1));
        assert_eq!(parse_unix_secs("Wed, 31 Dec 1969 23:59:59 GMT"), None);
        assert!(parse("Wed, 31 Dec 1969 23:59:59 GMT").is_some_and(|t| t < UNIX_EPOCH));
    }

    #[test]
    fn two_digit_years_are_at_most_50_years_ahead() {
        let year = |s: &str, now: i64| {
            let secs = parse_unix(s, || now).unwrap();
            days_from_civil(2000, 1, 1) <= secs / 86_400
        };
        // In 2026: 76 is 2076 (50 years ahead), 77 is 1977.
        assert!(year("Monday, 01-Jan-76 00:00:00 GMT", 2026));
        assert!(!year("Monday, 01-Jan-77 00:00:00 GMT", 2026));
        assert!(year("Monday, 01-Jan-00 00:00:00 GMT", 2026));
        // In 2090: 40 is 2140 (50 years ahead), 41 is 2041 (2141 would be 51).
        let secs = parse_unix("Monday, 01-Jan-41 00:00:00 GMT", || 2090).unwrap();
        assert_eq!(secs, days_from_civil(2041, 1, 1) * 86_400);
        let secs = parse_unix("Monday, 01-Jan-40 00:00:00 GMT", || 2090).unwrap();
        assert_eq!(secs, days_from_civil(2140, 1, 1) * 86_400);
    }

    #[test]
    fn the_clock_gives_a_plausible_year() {
        assert!((2024..2200).contains(&current_year()));
    }
}
