//! Making span-derived text inert in each output language: terminal control sequences removed,
//! then escaped for Markdown, Mermaid labels, XML and HTML.
//!
//! Every renderer first passes the whole report through `sanitized`, which strips terminal
//! control characters from every string in it (keys included), so no format can forget a
//! field. The language escapes are then applied where text is written; each has a test with
//! hostile input. A key design decision: sanitizing works on the report's JSON value rather
//! than field by field, so fields added to the report later are covered without anyone
//! remembering to.

use serde_json::Value;

use super::json::Report;

/// The text without terminal control sequences: ANSI escape sequences (CSI, OSC and other
/// ESC-introduced sequences) are removed whole, and the remaining C0 and C1 control
/// characters and DEL are dropped, except newline. A tab becomes a space.
/// JSON text with every DEL and C1 control character written as a `\u` escape: JSON allows them
/// raw inside strings, and a terminal that shows the JSON would act on them. (C0 controls are
/// escaped by every JSON serializer already.) They can only occur inside strings, so the text is
/// rewritten character by character.
pub fn json_escape_controls(json: String) -> String {
    if !json.chars().any(|c| ('\u{7f}'..='\u{9f}').contains(&c)) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if ('\u{7f}'..='\u{9f}').contains(&c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub fn strip_controls(text: &str) -> String {
    if !text.chars().any(is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => out.push('\n'),
            '\t' => out.push(' '),
            '\u{1b}' => skip_escape(&mut chars),
            // CSI and OSC as single C1 characters take parameters like their ESC forms.
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{9e}' | '\u{9f}' | '\u{98}' => skip_string(&mut chars),
            c if is_control(c) => {}
            c => out.push(c),
        }
    }
    out
}

fn is_control(c: char) -> bool {
    c != '\n' && (c <= '\u{1f}' || ('\u{7f}'..='\u{9f}').contains(&c))
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// After an ESC: the rest of the sequence it introduces.
fn skip_escape(chars: &mut Chars<'_>) {
    match chars.next() {
        Some('[') => skip_csi(chars),
        // OSC, DCS, SOS, PM, APC: a string ended by BEL or ST (ESC \).
        Some(']' | 'P' | 'X' | '^' | '_') => skip_string(chars),
        // Character-set and similar two-byte-argument sequences: ESC ( B, ESC # 8 …
        Some(' ' | '#' | '%' | '(' | ')' | '*' | '+' | '-' | '.' | '/') => {
            chars.next();
        }
        // Any other ESC x is a complete two-character sequence.
        _ => {}
    }
}

/// Parameter and intermediate bytes, then one final byte in `@`..=`~`.
fn skip_csi(chars: &mut Chars<'_>) {
    while let Some(&c) = chars.peek() {
        chars.next();
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
        if !('\u{20}'..='\u{3f}').contains(&c) {
            // Not a CSI byte: the sequence was malformed; stop here and drop it.
            return;
        }
    }
}

/// A control string, ended by BEL, ST (`ESC \`) or the C1 ST character.
fn skip_string(chars: &mut Chars<'_>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

/// The report with terminal control characters stripped from every string, keys included.
pub fn sanitized(report: &Report) -> Report {
    let Ok(mut value) = serde_json::to_value(report) else {
        return report.clone();
    };
    strip_value(&mut value);
    // Only string contents changed, so the value still has the report's shape.
    serde_json::from_value(value).unwrap_or_else(|_| report.clone())
}

fn strip_value(value: &mut Value) {
    match value {
        Value::String(s) => *s = strip_controls(s),
        Value::Array(items) => items.iter_mut().for_each(strip_value),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (k, mut v) in entries {
                strip_value(&mut v);
                map.insert(strip_controls(&k), v);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// One line of text: newlines and other line breaks become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Text for a Markdown paragraph or table cell: every ASCII punctuation character is
/// backslash-escaped (CommonMark allows exactly that, and it disarms emphasis, links, raw HTML,
/// headings, lists and table pipes), and the text is kept on one line.
pub fn markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in one_line(text).chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A URL as a Markdown link destination: in angle brackets, with the characters that could end
/// it or break out percent-encoded.
pub fn markdown_url(url: &str) -> String {
    let mut out = String::from("<");
    for c in one_line(url).chars() {
        match c {
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            ' ' => out.push_str("%20"),
            '\\' => out.push_str("%5C"),
            c => out.push(c),
        }
    }
    out.push('>');
    out
}

/// Text for a Mermaid label written inside double quotes: every character that Mermaid or the
/// surrounding Markdown gives a meaning is written as a Mermaid entity code (`#35;`), so the
/// label cannot end its quotes, inject HTML, open a Markdown string or end the code fence.
pub fn mermaid(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in one_line(text).chars() {
        match c {
            '"' | '#' | '<' | '>' | '&' | '`' | ';' | '\\' | '|' | '[' | ']' | '{' | '}' | '('
            | ')' => {
                out.push('#');
                out.push_str(&u32::from(c).to_string());
                out.push(';');
            }
            c => out.push(c),
        }
    }
    out
}

/// Text for XML content or a double-quoted attribute value. Characters XML 1.0 forbids are
/// dropped; line breaks are written as character references so attributes keep them.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(' '),
            '\u{fffe}' | '\u{ffff}' => {}
            c if c < '\u{20}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Text for HTML content or a double-quoted attribute value.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A URL safe to put in an `href`: only `http` and `https` (a span-derived `javascript:` URL
/// must not become a link).
pub fn safe_href(url: &str) -> Option<String> {
    let lower = url.trim_start().to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")).then(|| html(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_sequences_and_controls_are_stripped_but_newlines_kept() {
        let hostile = "a\u{1b}[31mred\u{1b}[0m b\u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{1b}\\ \
                       c\u{7}\u{8}\u{9b}2Jd\u{85}e\r\nf\u{1b}(Bg\u{7f}";
        assert_eq!(strip_controls(hostile), "ared blink cde\nfg");
        assert_eq!(strip_controls("plain ✓"), "plain ✓");
        // A sequence cut off at the end of the text is dropped, not kept half.
        assert_eq!(strip_controls("x\u{1b}[3"), "x");
        assert_eq!(strip_controls("x\u{1b}"), "x");
    }

    #[test]
    fn markdown_escapes_every_punctuation_character() {
        assert_eq!(
            markdown("*a* | [l](javascript:x) <b>\n# h"),
            "\\*a\\* \\| \\[l\\]\\(javascript\\:x\\) \\<b\\> \\# h"
        );
        assert_eq!(markdown_url("http://h/a b>c"), "<http://h/a%20b%3Ec>");
    }

    #[test]
    fn mermaid_labels_cannot_end_their_quotes() {
        assert_eq!(
            mermaid("a\"] --> x[\"<img src=x>`#;"),
            "a#34;#93; --#62; x#91;#34;#60;img src=x#62;#96;#35;#59;"
        );
    }

    #[test]
    fn xml_and_html_escape_markup_and_quotes() {
        assert_eq!(
            xml("<a href=\"x\">&'\n\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&#10;"
        );
        assert_eq!(
            html("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(safe_href("javascript:alert(1)"), None);
        assert_eq!(
            safe_href("https://h/t?a=1&b=\"").as_deref(),
            Some("https://h/t?a=1&amp;b=&quot;")
        );
    }
}
