//! Offline import of trace files (OTLP/JSON, Jaeger JSON, Zipkin v2 JSON) and the OTLP/JSON-lines
//! export that `tracecov export` writes, with the OTLP/JSON log records such files may hold.
//!
//! The main entry points are [`import_file`] and [`import_reader`]: they detect the format from
//! the content (unless told), convert every record into the project's `Span` at this edge, and
//! hand spans to a caller's sink in batches of at most [`BATCH_SPANS`]. Nothing here touches the
//! store or knows about runs: the CLI wires the sink to them.
//!
//! Log records come only from OTLP/JSON (`ExportLogsServiceRequest`, `{"resourceLogs": …}`, as
//! the Collector's file exporter writes its logs pipeline, in a file of their own or as lines
//! among the trace lines). [`import_file_with_logs`] hands them to a second sink as
//! `TracedLog`s, in batches of at most [`BATCH_SPANS`] records; records without a trace id are
//! dropped and counted (`ImportSummary::logs_without_trace`), as the receivers drop them. The
//! entry points without a log sink read log lines and drop them.
//!
//! Key design decisions:
//! - **Bounded memory.** Files may be larger than memory, so nothing reads a whole file into one
//!   buffer or one `serde_json::Value`. JSON lines are read line by line (each line capped at
//!   [`MAX_LINE_BYTES`]); a top-level array is streamed element by element through serde's
//!   `deserialize_seq`. What is held at once is one record (an OTLP `resourceSpans` element, a
//!   Jaeger trace) or, for Zipkin, the spans of the traces being assembled (see `zipkin`).
//! - **Skip what can be skipped, stop where nothing can be trusted.** A record that is valid JSON
//!   but not a valid record (a bad id, a wrong type) and a JSON line that does not parse are
//!   skipped and counted in [`ImportSummary`]; a syntax error inside a streamed document ends the
//!   import with an [`ImportError`] naming the file, the position and the reason. Either way the
//!   spans read before the problem have been delivered to the sink.
//! - **OTLP/JSON is decoded once**, by `ingest::otlp_json` and `ingest::convert`, the same code the
//!   HTTP receiver uses.
//!
//! This module must not panic on any input, and must not hold more than one record (or one
//! Zipkin trace buffer) in memory.

mod export;
mod jaeger;
mod otlp;
pub mod progress;
mod zipkin;

#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read};
use std::path::Path;
use std::rc::Rc;
use std::str::FromStr;

use crate::model::{Span, TracedLog};

pub use export::write_otlp_json_lines;
pub use progress::Progress;
pub use zipkin::{MAX_BUFFERED_SPANS, SHARED_SPAN_ID};

/// The most spans handed to the sink in one call.
pub const BATCH_SPANS: usize = 1024;

/// The longest JSON line accepted (an OTLP/JSON line holds one export request; collectors write
/// a few megabytes at most). A longer line is skipped, so one runaway line cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 256 << 20;

/// How many bytes of (decompressed) content format detection looks at.
const PEEK_BYTES: usize = 64 << 10;

/// The sink spans are delivered to.
pub type Sink<'a> = dyn FnMut(Vec<Span>) -> anyhow::Result<()> + 'a;

/// The sink log records (each with a trace id) are delivered to.
pub type LogSink<'a> = dyn FnMut(Vec<TracedLog>) -> anyhow::Result<()> + 'a;

/// A trace file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// One OTLP/JSON `ExportTraceServiceRequest` (or `ExportLogsServiceRequest`), or JSON lines
    /// of them, either kind on any line.
    OtlpJson,
    /// Jaeger's `/api/traces` response or the UI's download (a bare trace object).
    Jaeger,
    /// Zipkin v2 JSON: an array of spans, or an array of traces (arrays of spans).
    Zipkin,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OtlpJson => "otlp-json",
            Format::Jaeger => "jaeger",
            Format::Zipkin => "zipkin",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text of a `--format` flag was not a known format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?} (expected otlp-json, jaeger or zipkin)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "otlp-json" | "otlp" | "otlp_json" => Ok(Format::OtlpJson),
            "jaeger" => Ok(Format::Jaeger),
            "zipkin" => Ok(Format::Zipkin),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// Where in a file something was found. Every part is optional because formats differ in what
/// they can say: a JSON line has a line number, a streamed document a line and column from the
/// parser, a record an index, a corrupt gzip stream only a byte offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// 1-based line of the (decompressed) content.
    pub line: Option<u64>,
    /// 1-based column within that line.
    pub column: Option<u64>,
    /// 1-based index of the record in the file: the JSON line, the `resourceSpans` (or
    /// `resourceLogs`) element, the Zipkin span or the Jaeger span, counted from the start of
    /// the file.
    pub record: Option<u64>,
    /// Byte offset in the file as stored (compressed, for a gzip file).
    pub byte: Option<u64>,
}

impl Position {
    fn is_empty(&self) -> bool {
        self.line.is_none() && self.column.is_none() && self.record.is_none() && self.byte.is_none()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(l) = self.line {
            parts.push(format!("line {l}"));
        }
        if let Some(c) = self.column {
            parts.push(format!("column {c}"));
        }
        if let Some(r) = self.record {
            parts.push(format!("record {r}"));
        }
        if let Some(b) = self.byte {
            parts.push(format!("byte {b}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// A record that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProblem {
    pub file: String,
    pub position: Position,
    pub reason: String,
}

impl fmt::Display for ImportProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.position.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.position, self.reason)
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    /// The file's name as given (or the name passed to [`import_reader`]).
    pub file: String,
    pub format: Format,
    /// Whether the content was gzip-compressed.
    pub gzip: bool,
    /// Spans delivered to the sink (and accepted by it).
    pub spans: u64,
    /// Log records delivered to the log sink (and accepted by it).
    pub log_records: u64,
    /// Log records dropped because they carry no trace id: they cannot join a trace, and the
    /// receivers drop them too. Not problems with the file, so not in `records_skipped`.
    pub logs_without_trace: u64,
    /// Records that produced no span or log record: lines that did not parse, spans and log
    /// records with invalid ids, elements of the wrong shape.
    pub records_skipped: u64,
    /// The first of them, with its position: one example is enough to find the problem.
    pub first_problem: Option<ImportProblem>,
}

impl ImportSummary {
    /// What was imported, as the summary lines say it: "N spans", and ", M log records" when
    /// the file held any.
    pub fn counts(&self) -> String {
        if self.log_records == 0 && self.logs_without_trace == 0 {
            format!("{} spans", self.spans)
        } else {
            format!("{} spans, {} log records", self.spans, self.log_records)
        }
    }
}

/// Why an import stopped. Spans read before the problem were delivered; `summary` says how many.
#[derive(Debug)]
pub struct ImportError {
    pub position: Position,
    pub reason: ErrorReason,
    /// What was imported before the error, and the file's name. Boxed to keep the `Result`
    /// small on the success path.
    pub summary: Box<ImportSummary>,
}

impl ImportError {
    /// The file, as named to the importer.
    pub fn file(&self) -> &str {
        &self.summary.file
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ErrorReason {
    #[error("cannot read: {0}")]
    Io(#[source] io::Error),
    #[error("not valid {format}: {message}")]
    Invalid { format: Format, message: String },
    #[error("cannot tell the format: {0} (pass the format explicitly)")]
    UnknownFormat(String),
    #[error("the sink refused a batch: {0:#}")]
    Sink(anyhow::Error),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.position.is_empty() {
            write!(f, "{}: {}", self.file(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file(), self.position, self.reason)
        }
    }
}

impl std::error::Error for ImportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            ErrorReason::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Imports one file's spans (its log records are read and dropped). See the module documentation
/// for what is skipped and what stops the import.
pub fn import_file(
    path: &Path,
    format: Option<Format>,
    sink: &mut Sink<'_>,
) -> Result<ImportSummary, ImportError> {
    open_and_import(path, format, sink, None)
}

/// Imports one file's spans and log records, each kind to its sink.
pub fn import_file_with_logs<'s>(
    path: &Path,
    format: Option<Format>,
    sink: &mut Sink<'s>,
    logs: &mut LogSink<'s>,
) -> Result<ImportSummary, ImportError> {
    open_and_import(path, format, sink, Some(logs))
}

fn open_and_import<'s>(
    path: &Path,
    format: Option<Format>,
    sink: &mut Sink<'s>,
    logs: Option<&mut LogSink<'s>>,
) -> Result<ImportSummary, ImportError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| ImportError {
        position: Position::default(),
        reason: ErrorReason::Io(e),
        summary: Box::new(empty_summary(&name, format.unwrap_or(Format::OtlpJson))),
    })?;
    import_any(file, &name, format, sink, logs)
}

/// Imports spans from any reader (log records are read and dropped); `name` stands for the file
/// in messages.
pub fn import_reader(
    reader: impl Read,
    name: &str,
    format: Option<Format>,
    sink: &mut Sink<'_>,
) -> Result<ImportSummary, ImportError> {
    import_any(reader, name, format, sink, None)
}

/// Imports spans and log records from any reader, each kind to its sink.
pub fn import_reader_with_logs<'s>(
    reader: impl Read,
    name: &str,
    format: Option<Format>,
    sink: &mut Sink<'s>,
    logs: &mut LogSink<'s>,
) -> Result<ImportSummary, ImportError> {
    import_any(reader, name, format, sink, Some(logs))
}

fn import_any<'s>(
    reader: impl Read,
    name: &str,
    format: Option<Format>,
    sink: &mut Sink<'s>,
    logs: Option<&mut LogSink<'s>>,
) -> Result<ImportSummary, ImportError> {
    let counter = Rc::new(Cell::new(0u64));
    let counted = CountingReader {
        inner: reader,
        count: counter.clone(),
    };
    let mut ctx = Ctx::new(
        name,
        format.unwrap_or(Format::OtlpJson),
        sink,
        logs,
        counter,
    );

    // Gzip is recognized by its magic bytes whatever the format, as the collector's file
    // exporter can compress any of its outputs.
    let (head, rest) = match peek(counted, 2) {
        Ok(v) => v,
        Err(e) => return Err(ctx.fail_io(e)),
    };
    let raw = Cursor::new(head.clone()).chain(rest);
    let content: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
        ctx.summary.gzip = true;
        Box::new(flate2::read::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let (head, rest) = match peek(content, PEEK_BYTES) {
        Ok(v) => v,
        Err(e) => return Err(ctx.fail_io(e)),
    };
    let format = match format {
        Some(f) => f,
        None => match detect_format(&head) {
            Some(f) => f,
            None => {
                let reason = ErrorReason::UnknownFormat(describe_head(&head));
                return Err(ctx.fail(Position::default(), reason));
            }
        },
    };
    ctx.summary.format = format;
    let json_lines =
        format == Format::OtlpJson && otlp::looks_like_json_lines(&head, head.len() < PEEK_BYTES);
    let input = BufReader::with_capacity(64 << 10, Cursor::new(head).chain(rest));
    let result = match format {
        Format::OtlpJson if json_lines => otlp::import_lines(input, &mut ctx),
        Format::OtlpJson => otlp::import_stream(input, &mut ctx),
        Format::Jaeger => jaeger::import(input, &mut ctx),
        Format::Zipkin => zipkin::import(input, &mut ctx),
    };
    match result {
        Ok(()) => match ctx.flush() {
            Ok(()) => Ok(ctx.summary),
            Err(e) => Err(ctx.fail(Position::default(), ErrorReason::Sink(e))),
        },
        Err(Stop::Sink(e)) => Err(ctx.fail(Position::default(), ErrorReason::Sink(e))),
        Err(Stop::Fatal(position, reason)) => {
            // Valid records before the error stay delivered.
            if let Err(e) = ctx.flush() {
                return Err(ctx.fail(position, ErrorReason::Sink(e)));
            }
            Err(ctx.fail(position, reason))
        }
    }
}

/// Detects the format from the first bytes of (decompressed) content. `None` when the content is
/// not JSON this module reads.
pub fn detect_format(head: &[u8]) -> Option<Format> {
    let text = strip_bom(head);
    let first = text.iter().find(|b| !b.is_ascii_whitespace())?;
    match first {
        b'[' => Some(Format::Zipkin),
        b'{' => {
            // Keys are not ordered in JSON, so look for the earliest key that only one format
            // uses rather than trusting the first key.
            let marker = |keys: &[&str]| {
                keys.iter()
                    .filter_map(|k| find(text, format!("\"{k}\"").as_bytes()))
                    .min()
            };
            let otlp = marker(&[
                "resourceSpans",
                "resource_spans",
                "scopeSpans",
                "scope_spans",
                "resourceLogs",
                "resource_logs",
                "scopeLogs",
                "scope_logs",
                "logRecords",
                "log_records",
            ]);
            let jaeger = marker(&[
                "traceID",
                "spanID",
                "processes",
                "operationName",
                "processID",
            ]);
            let zipkin = marker(&["localEndpoint", "remoteEndpoint"]);
            let best = [
                (otlp, Format::OtlpJson),
                (jaeger, Format::Jaeger),
                (zipkin, Format::Zipkin),
            ]
            .into_iter()
            .filter_map(|(at, f)| at.map(|at| (at, f)))
            .min_by_key(|(at, _)| *at);
            match best {
                Some((_, f)) => Some(f),
                // An empty Jaeger answer is `{"data":[]}`; an empty OTLP request is `{}`.
                None if find(text, b"\"data\"").is_some() => Some(Format::Jaeger),
                None => Some(Format::OtlpJson),
            }
        }
        _ => None,
    }
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(bytes)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn describe_head(head: &[u8]) -> String {
    let text = strip_bom(head);
    match text.iter().position(|b| !b.is_ascii_whitespace()) {
        None => "the file is empty".to_owned(),
        Some(i) => {
            let shown: String = String::from_utf8_lossy(&text[i..text.len().min(i + 16)])
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            format!("content starts with {shown:?}, not a JSON object or array")
        }
    }
}

fn empty_summary(file: &str, format: Format) -> ImportSummary {
    ImportSummary {
        file: file.to_owned(),
        format,
        gzip: false,
        spans: 0,
        log_records: 0,
        logs_without_trace: 0,
        records_skipped: 0,
        first_problem: None,
    }
}

/// Reads up to `n` bytes (fewer only at the end of input) and gives back the reader.
fn peek<R: Read>(mut reader: R, n: usize) -> io::Result<(Vec<u8>, R)> {
    let mut head = Vec::with_capacity(n.min(PEEK_BYTES));
    (&mut reader).take(n as u64).read_to_end(&mut head)?;
    Ok((head, reader))
}

/// Counts bytes read from the file as stored, for positions in corrupt gzip streams.
struct CountingReader<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Why a format's reader stopped early.
pub(crate) enum Stop {
    /// The sink refused a batch.
    Sink(anyhow::Error),
    /// The input cannot be read further.
    Fatal(Position, ErrorReason),
}

/// State shared by the format readers: the summary being built and the batching sinks.
pub(crate) struct Ctx<'a, 's> {
    summary: ImportSummary,
    sink: &'a mut Sink<'s>,
    pending: Vec<Span>,
    /// Where log records go; without one they are dropped (`import_file` reads spans only).
    log_sink: Option<&'a mut LogSink<'s>>,
    pending_logs: Vec<TracedLog>,
    /// Records seen so far (1-based index of the current record once incremented).
    records: u64,
    /// Bytes read from the stored file.
    bytes_read: Rc<Cell<u64>>,
    /// A sink error raised inside a serde visitor, where only a serde error can be returned; the
    /// reader checks it first when the deserializer fails.
    sink_error: Option<anyhow::Error>,
}

impl<'a, 's> Ctx<'a, 's> {
    fn new(
        name: &str,
        format: Format,
        sink: &'a mut Sink<'s>,
        log_sink: Option<&'a mut LogSink<'s>>,
        bytes_read: Rc<Cell<u64>>,
    ) -> Self {
        Self {
            summary: empty_summary(name, format),
            sink,
            pending: Vec::new(),
            log_sink,
            pending_logs: Vec::new(),
            records: 0,
            bytes_read,
            sink_error: None,
        }
    }

    fn format(&self) -> Format {
        self.summary.format
    }

    /// Starts the next record and returns its 1-based index.
    fn next_record(&mut self) -> u64 {
        self.records += 1;
        self.records
    }

    /// Queues spans for the sink, delivering full batches.
    fn emit(&mut self, spans: Vec<Span>) -> anyhow::Result<()> {
        if self.pending.is_empty() && spans.len() >= BATCH_SPANS {
            let mut spans = spans;
            while spans.len() >= BATCH_SPANS {
                let rest = spans.split_off(BATCH_SPANS);
                self.deliver(spans)?;
                spans = rest;
            }
            self.pending = spans;
            return Ok(());
        }
        for span in spans {
            self.pending.push(span);
            if self.pending.len() >= BATCH_SPANS {
                let batch = std::mem::take(&mut self.pending);
                self.deliver(batch)?;
            }
        }
        Ok(())
    }

    /// Like `emit`, for use inside serde visitors: a sink error is parked in `sink_error`.
    fn emit_in_visitor<E: serde::de::Error>(&mut self, spans: Vec<Span>) -> Result<(), E> {
        self.emit(spans).map_err(|e| {
            self.sink_error = Some(e);
            E::custom("the sink refused a batch")
        })
    }

    fn deliver(&mut self, batch: Vec<Span>) -> anyhow::Result<()> {
        let n = batch.len() as u64;
        (self.sink)(batch)?;
        self.summary.spans += n;
        Ok(())
    }

    /// Queues converted log records for the log sink, delivering full batches, and counts the
    /// records that had no trace id.
    fn emit_logs(&mut self, logs: Vec<TracedLog>, without_trace: u64) -> anyhow::Result<()> {
        self.summary.logs_without_trace += without_trace;
        if self.log_sink.is_none() {
            return Ok(());
        }
        for log in logs {
            self.pending_logs.push(log);
            if self.pending_logs.len() >= BATCH_SPANS {
                self.deliver_logs()?;
            }
        }
        Ok(())
    }

    /// Like `emit_logs`, for use inside serde visitors (see `emit_in_visitor`).
    fn emit_logs_in_visitor<E: serde::de::Error>(
        &mut self,
        logs: Vec<TracedLog>,
        without_trace: u64,
    ) -> Result<(), E> {
        self.emit_logs(logs, without_trace).map_err(|e| {
            self.sink_error = Some(e);
            E::custom("the sink refused a batch")
        })
    }

    fn deliver_logs(&mut self) -> anyhow::Result<()> {
        let batch = std::mem::take(&mut self.pending_logs);
        if let Some(sink) = self.log_sink.as_mut()
            && !batch.is_empty()
        {
            let n = batch.len() as u64;
            sink(batch)?;
            self.summary.log_records += n;
        }
        Ok(())
    }

    /// Delivers what is pending: spans first, so a trace's records seldom arrive before it.
    fn flush(&mut self) -> anyhow::Result<()> {
        if !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            self.deliver(batch)?;
        }
        self.deliver_logs()
    }

    /// Counts skipped records and keeps the first problem.
    fn skip(&mut self, count: u64, position: Position, reason: impl Into<String>) {
        self.summary.records_skipped += count;
        if self.summary.first_problem.is_none() {
            self.summary.first_problem = Some(ImportProblem {
                file: self.summary.file.clone(),
                position,
                reason: reason.into(),
            });
        }
    }

    fn record_position(&self, record: u64) -> Position {
        Position {
            record: Some(record),
            ..Position::default()
        }
    }

    /// Turns a serde_json error from a streamed document into the reason to stop.
    fn stop_from_json(&mut self, err: serde_json::Error) -> Stop {
        if let Some(e) = self.sink_error.take() {
            return Stop::Sink(e);
        }
        let mut position = Position {
            line: (err.line() > 0).then_some(err.line() as u64),
            column: (err.column() > 0).then_some(err.column() as u64),
            // The record being read when the input broke off.
            record: Some(self.records + 1),
            byte: None,
        };
        if err.is_io() {
            position.byte = Some(self.bytes_read.get());
            let message = err.to_string();
            return Stop::Fatal(
                position,
                ErrorReason::Io(io::Error::new(io::ErrorKind::InvalidData, message)),
            );
        }
        let message = if err.is_eof() {
            format!("the file ends inside a record ({err})")
        } else {
            strip_serde_position(&err.to_string())
        };
        Stop::Fatal(
            position,
            ErrorReason::Invalid {
                format: self.format(),
                message,
            },
        )
    }

    fn io_stop(&self, err: io::Error, line: Option<u64>) -> Stop {
        Stop::Fatal(
            Position {
                line,
                byte: Some(self.bytes_read.get()),
                ..Position::default()
            },
            ErrorReason::Io(err),
        )
    }

    fn fail(&mut self, position: Position, reason: ErrorReason) -> ImportError {
        ImportError {
            position,
            reason,
            summary: Box::new(self.summary.clone()),
        }
    }

    fn fail_io(&mut self, err: io::Error) -> ImportError {
        let position = Position {
            byte: Some(self.bytes_read.get()),
            ..Position::default()
        };
        self.fail(position, ErrorReason::Io(err))
    }
}

/// serde_json appends " at line L column C" to its messages; the position is reported separately.
fn strip_serde_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A non-negative integer as trace formats write them: usually a JSON integer, but some tracers
/// send floats or decimal strings.
pub(crate) fn lenient_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
