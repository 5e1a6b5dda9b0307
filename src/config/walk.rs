//! A small typed walker over a parsed TOML tree that collects every problem instead of stopping
//! at the first one.
//!
//! Why not `#[derive(Deserialize)]` with `deny_unknown_fields`: serde stops at the first error,
//! and the spec wants all problems reported together. Walking `toml::Table`s by hand costs a few
//! lines per key but lets every key be checked (type, `${ENV}` interpolation, unit parsing,
//! range) independently, each problem named by its key path, and every leftover key reported
//! as unknown, with a suggestion when it looks like a typo of a known key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use super::{env, units, Problem};

/// Shared state of one config walk: the problems found so far, the environment, and the
/// directory relative paths are resolved against.
pub struct Ctx<'a> {
    pub problems: Vec<Problem>,
    env: &'a dyn Fn(&str) -> Option<String>,
    base_dir: Option<&'a Path>,
}

impl<'a> Ctx<'a> {
    pub fn new(env: &'a dyn Fn(&str) -> Option<String>, base_dir: Option<&'a Path>) -> Self {
        Ctx {
            problems: Vec::new(),
            env,
            base_dir,
        }
    }

    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn type_error(&mut self, key: &str, expected: &str, found: &Value) {
        self.problem(
            key,
            format!("expected {expected}, found {}", describe(found)),
        );
    }

    /// A string value with `${ENV}` references expanded.
    pub fn string(&mut self, key: &str, v: Value) -> Option<String> {
        match v {
            Value::String(s) => match env::interpolate(&s, self.env) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.problem(key, e);
                    None
                }
            },
            other => {
                self.type_error(key, "a string", &other);
                None
            }
        }
    }

    /// A string that must not be empty (after interpolation).
    pub fn nonempty(&mut self, key: &str, v: Value) -> Option<String> {
        let s = self.string(key, v)?;
        if s.is_empty() {
            self.problem(key, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub fn boolean(&mut self, key: &str, v: Value) -> Option<bool> {
        match v {
            Value::Boolean(b) => Some(b),
            other => {
                self.type_error(key, "true or false", &other);
                None
            }
        }
    }

    /// A non-negative count. A string of digits is accepted too, so counts can come from
    /// `${ENV}`.
    pub fn count(&mut self, key: &str, v: Value) -> Option<usize> {
        match v {
            Value::Integer(n) => match usize::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problem(key, format!("must not be negative (got {n})"));
                    None
                }
            },
            Value::String(_) => {
                let s = self.string(key, v)?;
                match s.trim().parse::<usize>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        self.problem(key, format!("`{s}` is not a non-negative integer"));
                        None
                    }
                }
            }
            other => {
                self.type_error(key, "a non-negative integer", &other);
                None
            }
        }
    }

    /// A size: integer bytes or a string with a unit (see [`units`]).
    pub fn size(&mut self, key: &str, v: Value) -> Option<u64> {
        let parsed = match v {
            Value::Integer(n) => units::size_from_int(n),
            Value::String(_) => units::parse_size(&self.string(key, v)?),
            other => {
                self.type_error(
                    key,
                    "a size (integer bytes or a string like \"16MiB\")",
                    &other,
                );
                return None;
            }
        };
        parsed.map_err(|e| self.problem(key, e)).ok()
    }

    /// A duration: integer seconds or a string with a unit (see [`units`]).
    pub fn duration(&mut self, key: &str, v: Value) -> Option<Duration> {
        let parsed = match v {
            Value::Integer(n) => units::duration_from_int(n),
            Value::String(_) => units::parse_duration(&self.string(key, v)?),
            other => {
                self.type_error(
                    key,
                    "a duration (integer seconds or a string like \"30s\")",
                    &other,
                );
                return None;
            }
        };
        parsed.map_err(|e| self.problem(key, e)).ok()
    }

    /// A duration that must be > 0 (timeouts: a zero timeout would fail every operation).
    pub fn timeout(&mut self, key: &str, v: Value) -> Option<Duration> {
        let d = self.duration(key, v)?;
        if d.is_zero() {
            self.problem(key, "must be greater than 0");
            return None;
        }
        Some(d)
    }

    pub fn socket_addr(&mut self, key: &str, v: Value) -> Option<SocketAddr> {
        let s = self.string(key, v)?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    key,
                    format!(
                        "`{s}` is not a socket address (expected IP:PORT, e.g. \
                         \"0.0.0.0:8080\" or \"[::]:8080\")"
                    ),
                );
                None
            }
        }
    }

    /// A filesystem path; relative paths are resolved against the config file's directory.
    pub fn path(&mut self, key: &str, v: Value) -> Option<PathBuf> {
        let s = self.nonempty(key, v)?;
        let p = PathBuf::from(s);
        Some(match self.base_dir {
            Some(base) if p.is_relative() => base.join(p),
            _ => p,
        })
    }

    /// A path to a file that must exist now (certificates, keys, CA bundles, JWKS).
    #[expect(
        clippy::disallowed_methods,
        reason = "config validation runs while loading, before any worker exists"
    )]
    pub fn existing_file(&mut self, key: &str, v: Value) -> Option<PathBuf> {
        let p = self.path(key, v)?;
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Some(p),
            Ok(_) => {
                self.problem(key, format!("`{}` is not a regular file", p.display()));
                None
            }
            Err(e) => {
                self.problem(key, format!("cannot read `{}`: {e}", p.display()));
                None
            }
        }
    }

    /// An array, each element converted by `each` with key `key[i]`. `None` if the value is
    /// not an array or any element is invalid.
    pub fn array<T>(
        &mut self,
        key: &str,
        v: Value,
        mut each: impl FnMut(&mut Self, &str, Value) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = match v {
            Value::Array(items) => items,
            other => {
                self.type_error(key, "an array", &other);
                return None;
            }
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.into_iter().enumerate() {
            match each(self, &format!("{key}[{i}]"), item) {
                Some(x) => out.push(x),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// Opens a table value as a [`Section`].
    pub fn section(&mut self, key: &str, v: Value) -> Option<Section> {
        match v {
            Value::Table(t) => Some(Section::new(key.to_owned(), t)),
            other => {
                self.type_error(key, "a table", &other);
                None
            }
        }
    }
}

/// One TOML table being consumed: every key taken is remembered as known; whatever is left at
/// [`Section::finish`] is reported as unknown.
pub struct Section {
    path: String,
    table: Table,
    known: Vec<&'static str>,
}

impl Section {
    pub fn new(path: String, table: Table) -> Self {
        Section {
            path,
            table,
            known: Vec::new(),
        }
    }

    /// The key path of `key` inside this table.
    pub fn key(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the table contains `key` (without consuming it).
    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// Takes an optional key and converts it; `None` if absent or invalid (invalid is recorded).
    pub fn opt<'a, T>(
        &mut self,
        cx: &mut Ctx<'a>,
        key: &'static str,
        conv: impl FnOnce(&mut Ctx<'a>, &str, Value) -> Option<T>,
    ) -> Option<T> {
        self.known.push(key);
        let v = self.table.remove(key)?;
        conv(cx, &self.key(key), v)
    }

    /// Takes a required key; a missing key is recorded as a problem.
    pub fn req<'a, T>(
        &mut self,
        cx: &mut Ctx<'a>,
        key: &'static str,
        conv: impl FnOnce(&mut Ctx<'a>, &str, Value) -> Option<T>,
    ) -> Option<T> {
        if !self.table.contains_key(key) {
            self.known.push(key);
            cx.problem(&self.key(key), "required key is missing");
            return None;
        }
        self.opt(cx, key, conv)
    }

    /// Takes an optional key with a default for when it is absent. `None` only when present
    /// and invalid.
    pub fn or<'a, T>(
        &mut self,
        cx: &mut Ctx<'a>,
        key: &'static str,
        default: T,
        conv: impl FnOnce(&mut Ctx<'a>, &str, Value) -> Option<T>,
    ) -> Option<T> {
        if self.table.contains_key(key) {
            self.opt(cx, key, conv)
        } else {
            self.known.push(key);
            Some(default)
        }
    }

    /// Reports every key not taken as unknown.
    pub fn finish(self, cx: &mut Ctx<'_>) {
        for (k, _) in self.table {
            let message = match suggest(&k, &self.known) {
                Some(s) => format!("unknown key (did you mean `{s}`?)"),
                None if self.known.is_empty() => "unknown key".to_string(),
                None => {
                    let mut known = self.known.clone();
                    known.sort_unstable();
                    known.dedup();
                    format!("unknown key (known keys here: {})", known.join(", "))
                }
            };
            cx.problem(&join(&self.path, &k), message);
        }
    }
}

/// `parent.key`, quoting keys that are not bare TOML keys so the path stays unambiguous.
fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(n) => format!("integer {n}"),
        Value::Float(f) => format!("float {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        other => other.type_str().to_string(),
    }
}

/// The known key closest to `unknown`, if it is plausibly a typo (edit distance ≤ 2, or a
/// case-only difference).
fn suggest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, k)| *d <= 2.min(k.len().saturating_sub(1)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths() {
        assert_eq!(join("", "server"), "server");
        assert_eq!(join("buckets[1]", "prefix"), "buckets[1].prefix");
        assert_eq!(join("server", "a.b"), "server.\"a.b\"");
    }

    #[test]
    fn suggestions() {
        let known = ["idle_timeout", "header_timeout", "listen"];
        assert_eq!(suggest("idle_timout", &known), Some("idle_timeout"));
        assert_eq!(suggest("Listen", &known), Some("listen"));
        assert_eq!(suggest("zzz", &known), None);
    }
}
