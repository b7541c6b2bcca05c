//! Errors in the files that declare the expected topology, and warnings about names in them.
//!
//! A `SourceError` names the file, the line (and column) where the format has lines and the
//! fault has a place, and what is wrong, so a user can jump straight to it:
//! `tracecov.yaml:7:5: edges[1]: unknown field `calee`, expected one of …`.

use std::fmt;
use std::path::{Path, PathBuf};

/// A manifest, Pact or OpenAPI file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SourceError {
    pub file: PathBuf,
    /// 1-based; `None` when the fault has no single place (a missing key) or the file could
    /// not be read at all.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

impl SourceError {
    pub(crate) fn new(file: &Path, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: None,
            column: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn at(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }

    pub(crate) fn read(file: &Path, e: &std::io::Error) -> Self {
        Self::new(file, format!("cannot read the file: {e}"))
    }

    /// A YAML error, its position moved out of the message into the fields.
    pub(crate) fn yaml(file: &Path, e: &serde_yaml_ng::Error) -> Self {
        let mut reason = e.to_string();
        let (line, column) = match e.location() {
            Some(l) => {
                let mark = format!(" at line {} column {}", l.line(), l.column());
                if let Some(pos) = reason.find(&mark) {
                    reason.replace_range(pos..pos + mark.len(), "");
                }
                (Some(l.line()), Some(l.column()))
            }
            None => (None, None),
        };
        Self {
            file: file.to_owned(),
            line,
            column,
            reason,
        }
    }

    /// A JSON error, its position moved out of the message into the fields.
    pub(crate) fn json(file: &Path, e: &serde_json::Error) -> Self {
        let mut reason = e.to_string();
        let mark = format!(" at line {} column {}", e.line(), e.column());
        if let Some(pos) = reason.rfind(&mark) {
            reason.replace_range(pos..pos + mark.len(), "");
        }
        Self {
            file: file.to_owned(),
            line: (e.line() > 0).then_some(e.line()),
            column: (e.column() > 0).then_some(e.column()),
            reason,
        }
    }
}

/// The first line (1-based) of `text` holding `needle`, to place an error found after parsing
/// (a bad route in a key) when the parser's value no longer knows its position.
pub(crate) fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|n| n + 1)
}

/// A name in the manifest that no trace has ever shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameWarning {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub name: String,
    /// The nearest node ids seen, closest first (at most three).
    pub closest: Vec<String>,
}

impl fmt::Display for NameWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        let kind = match self.name.split_once(':').map(|(prefix, _)| prefix) {
            Some("db") => "database",
            Some("queue") => "queue",
            Some("ext") => "external host",
            _ => "service",
        };
        write!(f, ": {kind} {:?} never appears in any trace", self.name)?;
        if self.closest.is_empty() {
            f.write_str("; nothing seen has a similar name, so unless it is misspelled no trace has reached it yet")
        } else {
            write!(f, "; similar names seen: {}", self.closest.join(", "))
        }
    }
}

/// Levenshtein distance over characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The (at most three) names of `seen` closest to `name`, nearest first, ties by name.
/// The names seen that `name` could be a misspelling of (a few edits apart for its length),
/// closest first, at most three.
pub(crate) fn closest<'a>(name: &str, seen: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let near = (name.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = seen
        .into_iter()
        .map(|s| (edit_distance(name, s), s))
        .filter(|(d, _)| *d <= near)
        .collect();
    scored.sort();
    scored.dedup();
    scored
        .into_iter()
        .take(3)
        .map(|(_, s)| s.to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_and_closest_names() {
        assert_eq!(edit_distance("gatway", "gateway"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let seen = ["gateway", "cart", "checkout", "users", "payments"];
        assert_eq!(closest("gatway", seen)[0], "gateway");
        assert_eq!(closest("chekout", seen)[0], "checkout");
        assert!(closest("queue:memory/orders", seen).is_empty());
    }
}
