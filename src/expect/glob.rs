//! The globs of expectation selectors: `*` any run of characters, `?` one character, `[abc]`,
//! `[a-z]` and `[!abc]` one character of (or not of) a set; `\` makes the next character literal.
//! Matched against a whole name.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    parts: Vec<Part>,
    /// The name a pattern without wildcards matches (escapes taken out), compared whole.
    literal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(char),
    Any,
    One,
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Why a pattern is not a glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} in the pattern {pattern:?}")]
pub struct GlobError {
    pub pattern: String,
    pub reason: String,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        let bad = |reason: &str| GlobError {
            pattern: pattern.to_owned(),
            reason: reason.to_owned(),
        };
        if pattern.is_empty() {
            return Err(bad("an empty pattern matches nothing"));
        }
        let mut parts = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' => {
                    if parts.last() != Some(&Part::Any) {
                        parts.push(Part::Any);
                    }
                }
                '?' => parts.push(Part::One),
                '\\' => match chars.next() {
                    Some(c) => parts.push(Part::Literal(c)),
                    None => return Err(bad("a trailing `\\` escapes nothing")),
                },
                '[' => {
                    let negated = chars.next_if_eq(&'!').is_some();
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some(c) = chars.next() {
                        if c == ']' && !ranges.is_empty() {
                            closed = true;
                            break;
                        }
                        if chars.next_if_eq(&'-').is_some() {
                            match chars.next() {
                                Some(']') | None => {
                                    return Err(bad("a range `a-` needs its end"));
                                }
                                Some(hi) if hi < c => {
                                    return Err(bad(&format!("the range `{c}-{hi}` is backwards")));
                                }
                                Some(hi) => ranges.push((c, hi)),
                            }
                        } else {
                            ranges.push((c, c));
                        }
                    }
                    if !closed {
                        return Err(bad("a `[` set is not closed with `]`"));
                    }
                    parts.push(Part::Set { negated, ranges });
                }
                c => parts.push(Part::Literal(c)),
            }
        }
        let literal = parts
            .iter()
            .map(|part| match part {
                Part::Literal(c) => Some(*c),
                _ => None,
            })
            .collect();
        Ok(Self {
            text: pattern.to_owned(),
            parts,
            literal,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `name` matches. Allocates nothing: the name is walked by byte
    /// offsets, one character at a time.
    pub fn matches(&self, name: &str) -> bool {
        if let Some(literal) = &self.literal {
            return literal == name;
        }
        // Classic backtracking over the last `*`: linear for patterns with one star, and at
        // worst parts × name for any. `n` is a byte offset into `name`, always at a character
        // boundary.
        let (mut p, mut n) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = name[n..].chars().next() {
            let step = match self.parts.get(p) {
                Some(Part::Any) => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                Some(Part::One) => true,
                Some(Part::Literal(l)) => *l == c,
                Some(Part::Set { negated, ranges }) => {
                    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
                }
                None => false,
            };
            if step {
                p += 1;
                n += c.len_utf8();
            } else if let Some((sp, sn)) = star {
                // The star takes one more character and the rest is tried again after it.
                let skipped = name[sn..].chars().next().map_or(1, char::len_utf8);
                p = sp + 1;
                n = sn + skipped;
                star = Some((sp, n));
            } else {
                return false;
            }
        }
        self.parts[p..].iter().all(|part| *part == Part::Any)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        let m = |p: &str, n: &str| Glob::new(p).unwrap().matches(n);
        assert!(m("test_checkout*", "test_checkout_paid"));
        assert!(!m("test_checkout*", "a_test_checkout"));
        assert!(m("*", ""));
        assert!(m("ext:*:443", "ext:api.stripe.com:443"));
        assert!(!m("ext:*:443", "ext:api.stripe.com:8443x"));
        assert!(m("GET /orders/?", "GET /orders/7"));
        assert!(m("v[0-9]", "v7"));
        assert!(!m("v[!0-9]", "v7"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!m("*a*b*c*", "xxaxxcxxbxx"));
        assert!(m("payments", "payments"));
        assert!(!m("payments", "payment"));
        assert!(m("a\\?", "a?"));
        assert!(!m("a\\?", "ab"));
        // Characters of more than one byte are one character each, before and after a star.
        assert!(m("caf?", "café"));
        assert!(m("*é-?", "crème-brûlé-x"));
        assert!(m("[à-ü]*", "über"));
        assert!(!m("*é", "ée-"));
    }

    #[test]
    fn bad_globs_say_what_is_wrong() {
        for (p, why) in [
            ("", "empty"),
            ("a[bc", "not closed"),
            ("a[z-a]", "backwards"),
            ("a\\", "escapes nothing"),
            ("[a-]", "needs its end"),
        ] {
            let e = Glob::new(p).unwrap_err();
            assert!(e.to_string().contains(why), "{p}: {e}");
        }
    }
}
