//! The S3 `response-*` overrides (`?response-content-type=…` and five more): header values a
//! client asks to see in place of the object's own. corvid applies them to every answer it
//! writes for the object — from cache or from the origin; 200, 206, 304 and HEAD alike —
//! instead of forwarding them. So the origin's answer, and the one cached entry made from it,
//! is the same whatever a client overrides: one origin GET serves every combination, and no
//! client's values are ever stored (the entry keeps the origin's fields). Error answers carry
//! no override (S3 applies them to successful answers only).
//!
//! An override changes only what the client reads: corvid's own freshness still follows the
//! origin's `Cache-Control` and `Expires`, never a `response-cache-control`.
//!
//! Header injection is refused before a value gets here: the router answers `400` to a value
//! with a control character (CR, LF, NUL, …), one that is not UTF-8, or a parameter given
//! twice (`router::object_query`).
//!
//! Cost: without overrides, a check of an empty list on each answer. With overrides, a hit
//! renders the stored fields one by one, each compared with the overridden names
//! ([`crate::cache::entry::Meta::write_header_block_replacing`]): ~450 instructions per hit
//! of a typical entry (perf/RESULTS.md, issue 19), nothing allocated (`tests/hit_alloc.rs`).

use arrayvec::ArrayVec;

/// Query parameter → the header it sets (corvid's spelling, as stored fields are written).
const HEADERS: [(&str, &str); 6] = [
    ("response-cache-control", "Cache-Control"),
    ("response-content-disposition", "Content-Disposition"),
    ("response-content-encoding", "Content-Encoding"),
    ("response-content-language", "Content-Language"),
    ("response-content-type", "Content-Type"),
    ("response-expires", "Expires"),
];

/// The overridden headers of one request: (header name, value), at most one per header.
#[derive(Debug, Default, Clone)]
pub struct Overrides<'a> {
    fields: ArrayVec<(&'static str, &'a str), { HEADERS.len() }>,
}

impl<'a> Overrides<'a> {
    /// None asked.
    pub fn none() -> Overrides<'a> {
        Overrides::default()
    }

    /// From the decoded `response-*` parameters (`router::ObjectQuery::overrides`); a name
    /// that is not one of the six is ignored.
    pub fn of(params: &[(&str, &'a str)]) -> Overrides<'a> {
        let mut fields = ArrayVec::new();
        for (name, value) in params {
            if let Some((_, header)) = HEADERS.iter().find(|(p, _)| p == name) {
                if !fields.iter().any(|(h, _)| h == header) {
                    fields.push((*header, *value));
                }
            }
        }
        Overrides { fields }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether the header `name` (any case) is overridden: its origin value is not sent.
    pub fn replaces(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|(h, _)| h.eq_ignore_ascii_case(name))
    }

    /// (header name, value) of each override.
    pub fn fields(&self) -> &[(&'static str, &'a str)] {
        &self.fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_map_to_their_headers() {
        let o = Overrides::of(&[
            ("response-content-type", "text/plain"),
            ("response-expires", "0"),
            ("versionId", "3"),
        ]);
        assert_eq!(
            o.fields(),
            &[("Content-Type", "text/plain"), ("Expires", "0")]
        );
        assert!(o.replaces("content-type") && o.replaces("EXPIRES"));
        assert!(!o.replaces("cache-control") && !o.replaces("etag"));
        assert!(Overrides::none().is_empty() && !o.is_empty());
        let all: Vec<(&str, &str)> = HEADERS.iter().map(|(p, _)| (*p, "v")).collect();
        assert_eq!(Overrides::of(&all).fields().len(), 6);
    }
}
