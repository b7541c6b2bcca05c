//! How an answer to an agent is shaped (DESIGN, "Agents"): a page of a list with the count of
//! what it left out and the exact call that gets the next page, and never more than `MAX_BYTES`
//! of text, whatever the run held.
//!
//! Key design decision: the bound is enforced on the text actually sent, after the answer was
//! built from the same JSON the report and the API write, rather than by estimating item sizes:
//! one failure with a long stacktrace must not push an answer over, and a page of short items
//! must not be cut early. A page shrinks by whole items first (the hint then starts where it
//! stopped); only an item too large alone has its long texts cut, and says so.
//!
//! This module does no I/O.

use serde_json::{Map, Value};

/// The most an answer may hold, in bytes of text.
pub const MAX_BYTES: usize = 40 * 1024;
/// Items in a page when the call names no `limit`.
pub const DEFAULT_LIMIT: usize = 20;
/// The largest `limit` honoured.
pub const MAX_LIMIT: usize = 200;

/// A listing tool, as its hint names it.
pub struct Listing<'a> {
    /// The tool's name, e.g. `failures`.
    pub tool: &'a str,
    /// What the items are (plural), also the key they sit under, e.g. `failures`.
    pub items: &'a str,
    /// The call's other arguments, repeated in the hint so it can be copied as it is.
    pub args: Vec<(&'a str, String)>,
}

impl Listing<'_> {
    fn hint(&self, remaining: usize, next: usize, stopped_at_size: bool) -> String {
        let mut hint = format!(
            "{remaining} more {}: call `{}` with `offset` {next}",
            self.items, self.tool
        );
        for (name, value) in &self.args {
            hint.push_str(&format!(" and `{name}` {value:?}"));
        }
        if stopped_at_size {
            hint.push_str(&format!(
                " (this page stopped at the {} KB bound of an answer)",
                MAX_BYTES / 1024
            ));
        }
        hint
    }
}

/// A page of `all` from `offset`, at most `limit` items (default `DEFAULT_LIMIT`, at most
/// `MAX_LIMIT`) and at most `MAX_BYTES` of JSON text, with `head`'s fields (what the list is of)
/// first, then `total`, `offset`, `returned`, the items, and `more` (the hint) when items are left.
pub fn page(
    listing: &Listing,
    head: Map<String, Value>,
    all: Vec<Value>,
    offset: usize,
    limit: Option<usize>,
) -> String {
    let total = all.len();
    let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut items: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let render = |items: &[Value], stopped_at_size: bool, note: Option<&str>| {
        let mut o = head.clone();
        o.insert("total".into(), total.into());
        o.insert("offset".into(), offset.into());
        o.insert("returned".into(), items.len().into());
        o.insert(listing.items.into(), Value::Array(items.to_vec()));
        let next = offset + items.len();
        if next < total {
            let hint = listing.hint(total - next, next, stopped_at_size);
            o.insert("more".into(), hint.into());
        } else if offset >= total && total > 0 {
            o.insert(
                "more".into(),
                format!(
                    "`offset` {offset} is past the end: there are {total} {}; call `{}` with a smaller `offset`",
                    listing.items, listing.tool
                )
                .into(),
            );
        }
        if let Some(note) = note {
            o.insert("cut".into(), note.into());
        }
        to_text(&Value::Object(o))
    };
    let whole = render(&items, false, None);
    if whole.len() <= MAX_BYTES {
        return whole;
    }
    // The most items that fit: fitting shrinks as items are added, so bisect.
    let (mut lo, mut hi) = (0, items.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if render(&items[..mid], true, None).len() <= MAX_BYTES {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo > 0 {
        return render(&items[..lo], true, None);
    }
    let ask = listing.hint(total - offset.min(total), offset, true);
    if items.is_empty() {
        // What the list is of (a run's name, say) is too large alone.
        return bounded_text(render(&[], true, None), &ask);
    }
    // Not even the first item fits alone: send it with its long texts cut.
    items.truncate(1);
    for max in [4096, 1024, 256, 64] {
        let mut first = items[0].clone();
        cut_strings(&mut first, max);
        let note = format!(
            "texts longer than {max} characters in this item were cut (ask for one item with \
             a narrower tool, e.g. `bug_report` for one failure)"
        );
        let text = render(std::slice::from_ref(&first), true, Some(&note));
        if text.len() <= MAX_BYTES {
            return text;
        }
    }
    bounded_text(
        render(
            &[],
            true,
            Some("the next item is too large to send even with its texts cut"),
        ),
        &ask,
    )
}

/// `value` as text of at most `MAX_BYTES`: whole when it fits; else with long texts cut and long
/// lists shortened (each saying how many of how many it kept), and `left_out` saying what
/// `ask_for_more` can get; at worst cut as text with a closing note.
pub fn bounded(value: Value, ask_for_more: &str) -> String {
    let text = to_text(&value);
    if text.len() <= MAX_BYTES {
        return text;
    }
    for (max_len, max_items) in [(4096, 50), (1024, 20), (256, 5), (64, 1)] {
        let mut v = value.clone();
        cut_strings(&mut v, max_len);
        let mut notes = Vec::new();
        shorten_lists(&mut v, max_items, "", &mut notes);
        let mut left_out = format!(
            "this answer was cut to fit the {} KB bound: texts longer than {max_len} characters",
            MAX_BYTES / 1024
        );
        if !notes.is_empty() {
            left_out.push_str(&format!(", and lists: {}", notes.join("; ")));
        }
        left_out.push_str(&format!(". {ask_for_more}"));
        if let Value::Object(o) = &mut v {
            o.insert("left_out".into(), left_out.into());
        }
        let text = to_text(&v);
        if text.len() <= MAX_BYTES {
            return text;
        }
    }
    bounded_text(text, ask_for_more)
}

/// `text` cut to at most `MAX_BYTES` (at a line end when one is near), with a closing note saying
/// how much was left out and how to get it.
pub fn bounded_text(text: String, ask_for_more: &str) -> String {
    if text.len() <= MAX_BYTES {
        return text;
    }
    let note_room = 300 + ask_for_more.len();
    let mut end = MAX_BYTES.saturating_sub(note_room);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if let Some(nl) = text[..end].rfind('\n').filter(|&nl| nl + 2048 > end) {
        end = nl + 1;
    }
    let left = text.len() - end;
    let mut out = text[..end].to_owned();
    out.push_str(&format!(
        "\n[left out: the last {left} bytes of this answer, past the {} KB bound. {ask_for_more}]",
        MAX_BYTES / 1024
    ));
    out
}

fn to_text(v: &Value) -> String {
    // Pretty: agents read it. serde escapes C0 controls from span text, and
    // `json_escape_controls` the C1 ones, before the size is measured.
    crate::report::json_escape_controls(serde_json::to_string_pretty(v).unwrap_or_default())
}

/// Cuts every string longer than `max` characters, saying how much was cut.
fn cut_strings(v: &mut Value, max: usize) {
    match v {
        Value::String(s) => {
            let n = s.chars().count();
            if n > max {
                let kept: String = s.chars().take(max).collect();
                *s = format!("{kept}… [{} more characters cut]", n - max);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| cut_strings(x, max)),
        Value::Object(o) => o.values_mut().for_each(|x| cut_strings(x, max)),
        _ => {}
    }
}

/// Keeps the first `max` items of every list longer than that, noting each as `path: kept of n`.
fn shorten_lists(v: &mut Value, max: usize, path: &str, notes: &mut Vec<String>) {
    match v {
        Value::Array(a) => {
            if a.len() > max {
                notes.push(format!(
                    "`{}` {max} of {}",
                    if path.is_empty() { "." } else { path },
                    a.len()
                ));
                a.truncate(max);
            }
            for (i, x) in a.iter_mut().enumerate() {
                shorten_lists(x, max, &format!("{path}[{i}]"), notes);
            }
        }
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                shorten_lists(x, max, &p, notes);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn listing() -> Listing<'static> {
        Listing {
            tool: "failures",
            items: "failures",
            args: vec![("run", "latest".to_owned())],
        }
    }

    fn failures(n: usize, text: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"trace_id": format!("{i:032x}"), "summary": "x".repeat(text)}))
            .collect()
    }

    #[test]
    fn a_page_says_how_many_are_left_and_how_to_ask_for_them() {
        let text = page(&listing(), Map::new(), failures(66, 10), 0, None);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["total"], 66);
        assert_eq!(v["returned"], 20);
        assert_eq!(v["failures"].as_array().unwrap().len(), 20);
        assert_eq!(
            v["more"],
            "46 more failures: call `failures` with `offset` 20 and `run` \"latest\""
        );
        // The last page has no hint; an offset past the end says so.
        let v: Value =
            serde_json::from_str(&page(&listing(), Map::new(), failures(66, 10), 60, None))
                .unwrap();
        assert_eq!(v["returned"], 6);
        assert!(v.get("more").is_none());
        let v: Value =
            serde_json::from_str(&page(&listing(), Map::new(), failures(3, 10), 9, None)).unwrap();
        assert_eq!(v["returned"], 0);
        assert!(v["more"].as_str().unwrap().contains("past the end"));
    }

    #[test]
    fn a_page_of_large_items_stops_at_the_bound_and_continues_from_there() {
        let text = page(&listing(), Map::new(), failures(100, 3000), 10, Some(100));
        assert!(text.len() <= MAX_BYTES, "{} bytes", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        let returned = v["returned"].as_u64().unwrap() as usize;
        assert!((10..20).contains(&returned), "{returned} items");
        let more = v["more"].as_str().unwrap();
        assert!(
            more.starts_with(&format!(
                "{} more failures: call `failures` with `offset` {}",
                90 - returned,
                10 + returned
            )),
            "{more}"
        );
        assert!(more.contains("40 KB"), "{more}");
    }

    #[test]
    fn an_item_too_large_alone_is_sent_with_its_texts_cut() {
        let text = page(&listing(), Map::new(), failures(2, 100_000), 0, None);
        assert!(text.len() <= MAX_BYTES);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["returned"], 1);
        assert!(v["cut"].as_str().unwrap().contains("were cut"));
        assert!(
            v["failures"][0]["summary"]
                .as_str()
                .unwrap()
                .contains("more characters cut")
        );
        assert!(v["more"].as_str().unwrap().contains("`offset` 1"));
    }

    #[test]
    fn a_page_whose_head_alone_is_too_large_is_still_bounded() {
        let mut head = Map::new();
        head.insert("run_name".into(), "n".repeat(100_000).into());
        for items in [vec![], failures(3, 10)] {
            let text = page(&listing(), head.clone(), items, 0, None);
            assert!(text.len() <= MAX_BYTES, "{} bytes", text.len());
            assert!(text.contains("[left out: the last "));
        }
    }

    #[test]
    fn a_large_answer_is_bounded_and_says_what_it_left_out() {
        let value = json!({"run": "r1", "changes": failures(500, 200)});
        let text = bounded(value, "call `diff` with `offset`");
        assert!(text.len() <= MAX_BYTES, "{} bytes", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        let left_out = v["left_out"].as_str().unwrap();
        assert!(left_out.contains("`changes`"), "{left_out}");
        assert!(left_out.contains("of 500"), "{left_out}");
        // Small answers are sent whole, with no note.
        let small = bounded(json!({"a": 1}), "");
        assert!(!small.contains("left_out"));
    }

    #[test]
    fn long_text_is_cut_at_the_bound_with_a_closing_note() {
        let text = "line of a bug report\n".repeat(10_000);
        let out = bounded_text(text.clone(), "call `trace` for the spans");
        assert!(out.len() <= MAX_BYTES);
        assert!(
            out.contains("[left out: the last "),
            "{}",
            &out[out.len() - 200..]
        );
        assert!(out.ends_with("call `trace` for the spans]"));
        assert_eq!(bounded_text("short".into(), "x"), "short");
    }
}
