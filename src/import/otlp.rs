//! OTLP/JSON files: JSON lines (one `ExportTraceServiceRequest` or `ExportLogsServiceRequest`
//! per line, as the OpenTelemetry Collector's file exporter writes; one file may hold both) and
//! single documents, streamed one `resourceSpans` (or `resourceLogs`) element at a time.
//!
//! Decoding is `ingest::otlp_json` and conversion `ingest::convert`: this file only cuts the input
//! into requests. A streamed document may be followed by further documents (concatenated JSON),
//! which is what a JSON-lines file whose first line is too long to inspect looks like.
//!
//! Which kind a line is, is told by its first top-level key, found the way `detect_format` finds
//! markers (the earliest of `"resourceSpans"` and `"resourceLogs"`), so each line is parsed once.
//! A key cannot be mistaken for text inside a string value before it, because the top-level key
//! is the first thing in a request object.

use std::io::BufRead;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Ctx, MAX_LINE_BYTES, Position, Stop};
use crate::ingest::convert::{convert_logs, convert_request};
use crate::ingest::otlp_json::{decode_logs_request, decode_request, decode_value};

/// What a JSON line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Spans,
    Logs,
}

/// A line is logs when a logs key comes before any spans key; anything else (an empty `{}`
/// too) is read as a trace request, as before logs were imported.
fn line_kind(line: &[u8]) -> LineKind {
    let first = |keys: &[&[u8]]| {
        keys.iter()
            .filter_map(|k| super::find(line, k))
            .min()
            .unwrap_or(usize::MAX)
    };
    let logs = first(&[b"\"resourceLogs\"", b"\"resource_logs\""]);
    let spans = first(&[b"\"resourceSpans\"", b"\"resource_spans\""]);
    if logs < spans {
        LineKind::Logs
    } else {
        LineKind::Spans
    }
}

/// JSON lines when the first non-blank line is a complete JSON value on its own. A pretty-printed
/// document's first line (`{`) is not; a one-line document is, and reads the same either way.
pub(super) fn looks_like_json_lines(head: &[u8], whole_file: bool) -> bool {
    let head = super::strip_bom(head);
    let mut rest = head;
    while !rest.is_empty() {
        let (line, terminated, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], true, &rest[i + 1..]),
            None => (rest, false, &rest[rest.len()..]),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            rest = next;
            continue;
        }
        // A line that runs past the peeked bytes cannot be judged; the streamed reader copes.
        return (terminated || whole_file) && serde_json::from_slice::<IgnoredAny>(line).is_ok();
    }
    false
}

pub(super) fn import_lines(mut input: impl BufRead, ctx: &mut Ctx<'_, '_>) -> Result<(), Stop> {
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        number += 1;
        let (read, overlong) = read_line_capped(&mut input, &mut line, MAX_LINE_BYTES)
            .map_err(|e| ctx.io_stop(e, Some(number)))?;
        if read == 0 {
            return Ok(());
        }
        let record = ctx.next_record();
        let position = |column: Option<u64>| Position {
            line: Some(number),
            column,
            record: Some(record),
            byte: None,
        };
        if overlong {
            ctx.skip(
                1,
                position(None),
                format!("line longer than {MAX_LINE_BYTES} bytes"),
            );
            continue;
        }
        let text = if number == 1 {
            super::strip_bom(&line)
        } else {
            &line[..]
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let decoded = match line_kind(text) {
            LineKind::Spans => decode_request(text).map(|req| {
                let converted = convert_request(req);
                if converted.rejected > 0 {
                    let reason = converted.error_message();
                    ctx.skip(converted.rejected, position(None), reason);
                }
                ctx.emit(converted.spans)
            }),
            LineKind::Logs => decode_logs_request(text).map(|req| {
                let converted = convert_logs(req);
                if converted.rejected > 0 {
                    let reason = converted.error_message();
                    ctx.skip(converted.rejected, position(None), reason);
                }
                ctx.emit_logs(converted.logs, converted.without_trace)
            }),
        };
        match decoded {
            Ok(delivered) => delivered.map_err(Stop::Sink)?,
            Err(e) => {
                let column = (e.column() > 0).then_some(e.column() as u64);
                let reason = if e.is_eof() {
                    "the line ends inside a request (truncated?)".to_owned()
                } else {
                    super::strip_serde_position(&e.to_string())
                };
                ctx.skip(1, position(column), reason);
            }
        }
    }
}

/// Reads one line (with its `\n`) into `buf`, keeping at most `max` bytes; the rest of an
/// overlong line is consumed and dropped. Returns the bytes consumed and whether it was overlong.
fn read_line_capped(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut overlong = false;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((consumed, overlong));
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        if !overlong {
            if buf.len() + chunk.len() > max {
                overlong = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let n = chunk.len();
        input.consume(n);
        consumed += n;
        if done {
            return Ok((consumed, overlong));
        }
    }
}

pub(super) fn import_stream(input: impl BufRead, ctx: &mut Ctx<'_, '_>) -> Result<(), Stop> {
    let mut de = serde_json::Deserializer::from_reader(input);
    // `end` succeeds only at the end of input; otherwise another document follows.
    while de.end().is_err() {
        RequestSeed { ctx }
            .deserialize(&mut de)
            .map_err(|e| ctx.stop_from_json(e))?;
    }
    Ok(())
}

/// One `ExportTraceServiceRequest` or `ExportLogsServiceRequest` object, of which only
/// `resourceSpans` and `resourceLogs` are read.
struct RequestSeed<'c, 'a, 's> {
    ctx: &'c mut Ctx<'a, 's>,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an OTLP/JSON ExportTraceServiceRequest or ExportLogsServiceRequest object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "resourceSpans" || key == "resource_spans" {
                map.next_value_seed(ResourceSpansSeed {
                    ctx: &mut *self.ctx,
                })?;
            } else if key == "resourceLogs" || key == "resource_logs" {
                map.next_value_seed(ResourceLogsSeed {
                    ctx: &mut *self.ctx,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `resourceSpans` array, decoded and converted one element at a time.
struct ResourceSpansSeed<'c, 'a, 's> {
    ctx: &'c mut Ctx<'a, 's>,
}

impl<'de> DeserializeSeed<'de> for ResourceSpansSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ResourceSpansSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of ResourceSpans")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(element) = seq.next_element::<serde_json::Value>()? {
            let record = self.ctx.next_record();
            let request = serde_json::json!({ "resourceSpans": [element] });
            match decode_value(request) {
                Ok(req) => {
                    let converted = convert_request(req);
                    if converted.rejected > 0 {
                        let reason = converted.error_message();
                        let position = self.ctx.record_position(record);
                        self.ctx.skip(converted.rejected, position, reason);
                    }
                    self.ctx.emit_in_visitor(converted.spans)?;
                }
                Err(e) => {
                    let position = self.ctx.record_position(record);
                    self.ctx
                        .skip(1, position, format!("resourceSpans element: {e}"));
                }
            }
        }
        Ok(())
    }
}

/// The `resourceLogs` array, decoded and converted one element at a time.
struct ResourceLogsSeed<'c, 'a, 's> {
    ctx: &'c mut Ctx<'a, 's>,
}

impl<'de> DeserializeSeed<'de> for ResourceLogsSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ResourceLogsSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of ResourceLogs")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(element) = seq.next_element::<serde_json::Value>()? {
            let record = self.ctx.next_record();
            // The logs decoder reads bytes only; one element is small next to its file.
            let request = serde_json::json!({ "resourceLogs": [element] }).to_string();
            match decode_logs_request(request.as_bytes()) {
                Ok(req) => {
                    let converted = convert_logs(req);
                    if converted.rejected > 0 {
                        let reason = converted.error_message();
                        let position = self.ctx.record_position(record);
                        self.ctx.skip(converted.rejected, position, reason);
                    }
                    self.ctx
                        .emit_logs_in_visitor(converted.logs, converted.without_trace)?;
                }
                Err(e) => {
                    let position = self.ctx.record_position(record);
                    self.ctx
                        .skip(1, position, format!("resourceLogs element: {e}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_told_from_pretty_documents() {
        assert!(looks_like_json_lines(
            b"{\"resourceSpans\":[]}\n{\"resourceSpans\":[]}\n",
            true
        ));
        assert!(looks_like_json_lines(b"\n{\"resourceSpans\":[]}", true));
        assert!(!looks_like_json_lines(
            b"{\n  \"resourceSpans\": []\n}\n",
            true
        ));
        // A first line cut off by the peek window is left to the streamed reader.
        assert!(!looks_like_json_lines(b"{\"resourceSpans\":[]}", false));
    }

    #[test]
    fn a_line_is_logs_when_its_first_key_is() {
        assert_eq!(line_kind(br#"{"resourceLogs":[]}"#), LineKind::Logs);
        assert_eq!(line_kind(br#"{"resource_logs":[]}"#), LineKind::Logs);
        assert_eq!(line_kind(br#"{"resourceSpans":[]}"#), LineKind::Spans);
        assert_eq!(line_kind(b"{}"), LineKind::Spans);
        // A body quoting the other key comes after the request's own key.
        assert_eq!(
            line_kind(br#"{"resourceLogs":[{"body":{"stringValue":"{\"resourceSpans\"}"}}]}"#),
            LineKind::Logs
        );
    }

    #[test]
    fn overlong_lines_are_dropped_whole() {
        let mut input = std::io::Cursor::new(b"0123456789\nabc\n".to_vec());
        let mut buf = Vec::new();
        assert_eq!(
            read_line_capped(&mut input, &mut buf, 5).unwrap(),
            (11, true)
        );
        assert!(buf.is_empty());
        assert_eq!(
            read_line_capped(&mut input, &mut buf, 5).unwrap(),
            (4, false)
        );
        assert_eq!(buf, b"abc\n");
    }
}
