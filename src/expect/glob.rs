//! The globs of expectation selectors: `*` any run of characters, `?` one character, `[abc]`,
//! `[a-z]` and `[!abc]` one character of (or not of) a set; `\` makes the next character literal.
//! Matched against a whole name.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    parts: Vec<Part>,
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
        Ok(Self {
            text: pattern.to_owned(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let chars: Vec<char> = name.chars().collect();
        // Classic backtracking over the last `*`: linear for patterns with one star, and at
        // worst parts × name for any.
        let (mut p, mut n) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while n < chars.len() {
            let step = match self.parts.get(p) {
                Some(Part::Any) => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                Some(Part::One) => true,
                Some(Part::Literal(c)) => *c == chars[n],
                Some(Part::Set { negated, ranges }) => {
                    ranges
                        .iter()
                        .any(|(lo, hi)| (*lo..=*hi).contains(&chars[n]))
                        != *negated
                }
                None => false,
            };
            if step {
                p += 1;
                n += 1;
            } else if let Some((sp, sn)) = star {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
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
