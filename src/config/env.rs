//! `${NAME}` interpolation in string values.
//!
//! Rules (the spec left the details open):
//! * `${NAME}` is replaced by the variable's value; `NAME` is `[A-Za-z_][A-Za-z0-9_]*`.
//! * `$${` is an escape for a literal `${` (for a secret that really contains it). A `$` not
//!   followed by `{` is literal, so `"pa$$word"` needs no escaping.
//! * Substitution is a single pass: a value that itself contains `${...}` is not expanded again,
//!   so the environment cannot smuggle references to other variables into the config.
//! * A variable that is set but empty substitutes the empty string; whether that is acceptable
//!   is up to the key's own validation (e.g. `access_key` must not be empty).
//! * Only string values of keys the config knows are interpolated; unknown keys are reported as
//!   unknown and never looked up.

/// Expands `${NAME}` references in `text`. On failure, the message names every unset variable
/// (or the first syntax problem).
pub fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut unset: Vec<&str> = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let Some(end) = after.find('}') else {
                return Err(format!("unterminated `${{` in `{text}`"));
            };
            let name = &after[..end];
            if !is_var_name(name) {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable reference \
                     (names are [A-Za-z_][A-Za-z0-9_]*; write `$${{` for a literal `${{`)"
                ));
            }
            match env(name) {
                Some(value) => out.push_str(&value),
                None => {
                    if !unset.contains(&name) {
                        unset.push(name);
                    }
                }
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    match unset.as_slice() {
        [] => Ok(out),
        [one] => Err(format!("environment variable `{one}` is not set")),
        many => Err(format!(
            "environment variables {} are not set",
            many.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "B_2" => Some("beta".into()),
            "EMPTY" => Some(String::new()),
            "REF" => Some("${A}".into()),
            _ => None,
        }
    }

    fn run(s: &str) -> Result<String, String> {
        interpolate(s, &env)
    }

    #[test]
    fn substitutes() {
        assert_eq!(run("plain").unwrap(), "plain");
        assert_eq!(run("${A}").unwrap(), "alpha");
        assert_eq!(run("x-${A}-y").unwrap(), "x-alpha-y");
        assert_eq!(run("${A}${B_2}").unwrap(), "alphabeta");
        assert_eq!(run("${A}/${B_2}/${A}").unwrap(), "alpha/beta/alpha");
        assert_eq!(run("${EMPTY}").unwrap(), "");
        assert_eq!(run("é${A}é").unwrap(), "éalphaé");
    }

    #[test]
    fn single_pass() {
        assert_eq!(run("${REF}").unwrap(), "${A}");
    }

    #[test]
    fn escapes_and_lone_dollars() {
        assert_eq!(run("$${A}").unwrap(), "${A}");
        assert_eq!(run("pa$$word").unwrap(), "pa$$word");
        assert_eq!(run("$").unwrap(), "$");
        assert_eq!(run("a$b").unwrap(), "a$b");
        // Left to right: a lone `$`, then the `$${` escape.
        assert_eq!(run("$$${A}").unwrap(), "$${A}");
    }

    #[test]
    fn errors() {
        assert_eq!(
            run("${NOPE}").unwrap_err(),
            "environment variable `NOPE` is not set"
        );
        let e = run("${X}-${Y}-${X}").unwrap_err();
        assert_eq!(e, "environment variables `X`, `Y` are not set");
        assert!(run("${A").unwrap_err().contains("unterminated"));
        assert!(run("${}").unwrap_err().contains("not a valid"));
        assert!(run("${1A}").unwrap_err().contains("not a valid"));
        assert!(run("${A-B}").unwrap_err().contains("not a valid"));
    }
}
