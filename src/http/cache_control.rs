//! The grammar of the header fields HTTP caching reads: `Cache-Control` (RFC 9111 §5.2, with
//! RFC 9110 §5.6.1 lists and quoted strings, and the RFC 5861 stale directives), `Age` (§5.1)
//! and `Vary`'s `*` member (RFC 9110 §12.5.5). Pure parsing, no policy: what the parsed values
//! mean for storing and serving is `object::freshness`'s, so the rules and the grammar are each
//! tested on their own (and fuzzed: arbitrary field values never panic).
//!
//! Parsing choices: names are case-insensitive; a directive's value may be a token or a quoted
//! string; when a directive appears twice the first occurrence counts, even when its value is
//! invalid (RFC 9111 §4.2.1, first-wins, which reads the same whether field lines arrive
//! separately or combined, RFC 9110 §5.3); an invalid delta-seconds is kept as
//! [`Seconds::Invalid`] (the response is then stale) and a too large one saturates (§1.2.2).

/// The value `delta-seconds` saturate at (§1.2.2: "greater than the greatest integer it can
/// represent … MUST consider the value to be 2147483648").
pub const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// A delta-seconds directive value (RFC 9111 §1.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seconds {
    Valid(u64),
    Invalid,
}

impl Seconds {
    /// The value in milliseconds; an invalid value is zero (the response is stale, §4.2.1).
    pub fn ms(self) -> u64 {
        match self {
            Seconds::Valid(s) => s.saturating_mul(1000),
            Seconds::Invalid => 0,
        }
    }
}

/// The Cache-Control directives of a response, from ALL its Cache-Control field lines
/// (RFC 9110 §5.3: several lines are one comma-separated list).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    pub no_store: bool,
    pub private: bool,
    pub no_cache: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub max_age: Option<Seconds>,
    pub s_maxage: Option<Seconds>,
    /// RFC 5861; invalid values are ignored (None).
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl Directives {
    /// No directive at all (what [`Default`] gives, usable in a `const`).
    pub const NONE: Directives = Directives {
        no_store: false,
        private: false,
        no_cache: false,
        public: false,
        must_revalidate: false,
        proxy_revalidate: false,
        max_age: None,
        s_maxage: None,
        stale_while_revalidate: None,
        stale_if_error: None,
    };
}

/// Parses the `Cache-Control` field lines of a response (§5.2).
///
/// Names are case-insensitive; values are a token or a quoted string (§5.2: recipients accept
/// both). `no-cache="…"` and `private="…"` (the qualified forms) count as the unqualified
/// directive: corvid does not strip single fields, so it treats them as the stricter whole.
/// The first occurrence of a directive counts, even when its value is invalid: a later valid
/// `stale-while-revalidate` does not grant what a broken first one did not. Unknown directives
/// and empty list members are ignored.
pub fn parse_directives<'a>(lines: impl IntoIterator<Item = &'a str>) -> Directives {
    let mut d = Directives::default();
    // The RFC 5861 fields keep only valid values, so "seen" is tracked beside them.
    let (mut swr_seen, mut sie_seen) = (false, false);
    for line in lines {
        for member in ListMembers(line) {
            let (name, value) = match member.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (member.trim(), None),
            };
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("no-store") {
                d.no_store = true;
            } else if is("private") {
                d.private = true;
            } else if is("no-cache") {
                d.no_cache = true;
            } else if is("public") {
                d.public = true;
            } else if is("must-revalidate") {
                d.must_revalidate = true;
            } else if is("proxy-revalidate") {
                d.proxy_revalidate = true;
            } else if is("max-age") {
                d.max_age.get_or_insert_with(|| delta_seconds(value));
            } else if is("s-maxage") {
                d.s_maxage.get_or_insert_with(|| delta_seconds(value));
            } else if is("stale-while-revalidate") && !swr_seen {
                swr_seen = true;
                d.stale_while_revalidate = valid(delta_seconds(value));
            } else if is("stale-if-error") && !sie_seen {
                sie_seen = true;
                d.stale_if_error = valid(delta_seconds(value));
            }
        }
    }
    d
}

fn valid(s: Seconds) -> Option<u64> {
    match s {
        Seconds::Valid(n) => Some(n),
        Seconds::Invalid => None,
    }
}

/// The members of one comma-separated field line (RFC 9110 §5.6.1), untrimmed; a comma inside
/// a quoted string (with `\` escapes) does not split. An unterminated quote runs to the end of
/// the line: a quote never spans field lines.
struct ListMembers<'a>(&'a str);

impl<'a> Iterator for ListMembers<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.0.is_empty() {
            return None;
        }
        let bytes = self.0.as_bytes();
        let (mut quoted, mut escaped) = (false, false);
        let mut end = bytes.len();
        for (i, &b) in bytes.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == b',' && !quoted {
                end = i;
                break;
            }
        }
        let member = &self.0[..end];
        // `end` is a comma (ASCII, one byte) or the end of the line.
        self.0 = self.0.get(end + 1..).unwrap_or("");
        Some(member)
    }
}

/// A directive's delta-seconds value: a token, or a quoted string (§5.2), of digits only.
/// Missing, empty or anything but digits is invalid; a too large value saturates (§1.2.2).
fn delta_seconds(value: Option<&str>) -> Seconds {
    let Some(v) = value else {
        return Seconds::Invalid;
    };
    let (digits, quoted) = match v.strip_prefix('"') {
        Some(rest) => match rest.strip_suffix('"') {
            Some(inner) => (inner, true),
            None => return Seconds::Invalid,
        },
        None => (v, false),
    };
    let mut n: u64 = 0;
    let mut any = false;
    let mut escaped = false;
    for &b in digits.as_bytes() {
        if quoted && !escaped && b == b'\\' {
            // quoted-pair: `\6` is `6` (RFC 9110 §5.6.4).
            escaped = true;
            continue;
        }
        if quoted && !escaped && b == b'"' {
            return Seconds::Invalid;
        }
        escaped = false;
        if !b.is_ascii_digit() {
            return Seconds::Invalid;
        }
        any = true;
        n = (n * 10 + u64::from(b - b'0')).min(DELTA_SECONDS_MAX);
    }
    if !any || escaped {
        return Seconds::Invalid;
    }
    Seconds::Valid(n)
}

/// The `Age` field value in seconds (§5.1): the first member of a list, digits only; missing
/// or invalid is 0 ("a cache SHOULD ignore the field").
pub fn age_seconds(age: Option<&str>) -> u64 {
    let Some(a) = age else { return 0 };
    let first = a.split(',').next().unwrap_or("").trim();
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    first.bytes().fold(0u64, |n, b| {
        (n * 10 + u64::from(b - b'0')).min(DELTA_SECONDS_MAX)
    })
}

/// Whether the `Vary` field lines have a `*` member (RFC 9110 §12.5.5: the response varies on
/// more than request fields, so no later request is ever known to match it).
pub fn vary_star<'a>(lines: impl IntoIterator<Item = &'a str>) -> bool {
    lines
        .into_iter()
        .any(|line| ListMembers(line).any(|m| m.trim_matches([' ', '\t']) == "*"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Seconds::{Invalid, Valid};

    // ---- RFC 9111 §5.2 (and §1.2.2, RFC 9110 §5.3): parsing Cache-Control ----

    #[test]
    fn s5_2_parse_directives() {
        let cases: &[(&str, &[&str], Directives)] = &[
            ("empty", &[], Directives::NONE),
            ("empty line", &[""], Directives::NONE),
            (
                "token",
                &["max-age=60"],
                Directives {
                    max_age: Some(Valid(60)),
                    ..Directives::NONE
                },
            ),
            (
                "quoted",
                &["max-age=\"60\""],
                Directives {
                    max_age: Some(Valid(60)),
                    ..Directives::NONE
                },
            ),
            (
                "quoted-pair in quoted value",
                &[r#"max-age="6\0""#],
                Directives {
                    max_age: Some(Valid(60)),
                    ..Directives::NONE
                },
            ),
            (
                "leading zeros",
                &["max-age=007"],
                Directives {
                    max_age: Some(Valid(7)),
                    ..Directives::NONE
                },
            ),
            (
                "zero",
                &["max-age=0"],
                Directives {
                    max_age: Some(Valid(0)),
                    ..Directives::NONE
                },
            ),
            (
                "negative",
                &["max-age=-3600"],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "single quotes",
                &["max-age='3600'"],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "letter first",
                &["max-age=a100"],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "letter after",
                &["max-age=100a"],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "plus sign",
                &["max-age=+5"],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "decimal",
                &["max-age=1.5"],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "empty value",
                &["max-age="],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "no value",
                &["max-age"],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "empty quoted",
                &["max-age=\"\""],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "unterminated quote",
                &["max-age=\"60"],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "space inside quotes",
                &["max-age=\" 60\""],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "2147483647 kept",
                &["max-age=2147483647"],
                Directives {
                    max_age: Some(Valid(2_147_483_647)),
                    ..Directives::NONE
                },
            ),
            (
                "2147483649 saturates",
                &["max-age=2147483649"],
                Directives {
                    max_age: Some(Valid(DELTA_SECONDS_MAX)),
                    ..Directives::NONE
                },
            ),
            (
                "huge saturates",
                &["s-maxage=99999999999999999999999999999999999999"],
                Directives {
                    s_maxage: Some(Valid(DELTA_SECONDS_MAX)),
                    ..Directives::NONE
                },
            ),
            (
                "s-maxage quoted",
                &["s-maxage=\"5\""],
                Directives {
                    s_maxage: Some(Valid(5)),
                    ..Directives::NONE
                },
            ),
            (
                "several lines are one list",
                &["max-age=3600", "no-store"],
                Directives {
                    no_store: true,
                    max_age: Some(Valid(3600)),
                    ..Directives::NONE
                },
            ),
            (
                "duplicate: first wins",
                &["max-age=60, max-age=120"],
                Directives {
                    max_age: Some(Valid(60)),
                    ..Directives::NONE
                },
            ),
            (
                "duplicate across lines: first wins",
                &["max-age=60", "max-age=120"],
                Directives {
                    max_age: Some(Valid(60)),
                    ..Directives::NONE
                },
            ),
            (
                "duplicate: invalid first still wins",
                &["max-age=x, max-age=60"],
                Directives {
                    max_age: Some(Invalid),
                    ..Directives::NONE
                },
            ),
            (
                "stale-while-revalidate and stale-if-error",
                &["stale-while-revalidate=30, stale-if-error=\"600\""],
                Directives {
                    stale_while_revalidate: Some(30),
                    stale_if_error: Some(600),
                    ..Directives::NONE
                },
            ),
            (
                "swr invalid ignored",
                &["stale-while-revalidate=abc"],
                Directives::NONE,
            ),
            (
                "swr without value ignored",
                &["stale-if-error"],
                Directives::NONE,
            ),
            (
                "swr duplicate: invalid first wins",
                &["stale-while-revalidate=x", "stale-while-revalidate=30"],
                Directives::NONE,
            ),
            (
                "swr duplicate: valid first wins",
                &["stale-if-error=5, stale-if-error=99"],
                Directives {
                    stale_if_error: Some(5),
                    ..Directives::NONE
                },
            ),
            (
                "quoted comma does not split",
                &["no-cache=\"a, b\", max-age=5"],
                Directives {
                    no_cache: true,
                    max_age: Some(Valid(5)),
                    ..Directives::NONE
                },
            ),
            (
                "escaped quote inside quoted string",
                &[r#"private="a\", max-age=1", max-age=5"#],
                Directives {
                    private: true,
                    max_age: Some(Valid(5)),
                    ..Directives::NONE
                },
            ),
            (
                "unterminated quote swallows the rest of its line only",
                &["no-cache=\"a, max-age=1", "max-age=5"],
                Directives {
                    no_cache: true,
                    max_age: Some(Valid(5)),
                    ..Directives::NONE
                },
            ),
            (
                "names case-insensitive",
                &["Max-Age=5, NO-STORE, Must-Revalidate, S-MaxAge=1"],
                Directives {
                    no_store: true,
                    must_revalidate: true,
                    max_age: Some(Valid(5)),
                    s_maxage: Some(Valid(1)),
                    ..Directives::NONE
                },
            ),
            (
                "whitespace tolerant",
                &["  max-age = 5 ,\tpublic  "],
                Directives {
                    public: true,
                    max_age: Some(Valid(5)),
                    ..Directives::NONE
                },
            ),
            (
                "empty members",
                &[",, ,max-age=5,,"],
                Directives {
                    max_age: Some(Valid(5)),
                    ..Directives::NONE
                },
            ),
            (
                "unknown ignored",
                &["foo=bar, x-ext=\"1,2\", immutable, max-agex=5, no-cachey"],
                Directives::NONE,
            ),
            (
                "qualified forms count as unqualified",
                &["no-cache=\"Set-Cookie\"", "private=\"x\""],
                Directives {
                    no_cache: true,
                    private: true,
                    ..Directives::NONE
                },
            ),
            (
                "all flags",
                &["no-store, private, no-cache, public, must-revalidate, proxy-revalidate"],
                Directives {
                    no_store: true,
                    private: true,
                    no_cache: true,
                    public: true,
                    must_revalidate: true,
                    proxy_revalidate: true,
                    ..Directives::NONE
                },
            ),
        ];
        for (name, lines, want) in cases {
            let got = parse_directives(lines.iter().copied());
            assert_eq!(got, *want, "{name}: {lines:?}");
        }
    }
}
