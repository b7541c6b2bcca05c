//! Import progress for people: an indicatif spinner with spans/s when stderr is a terminal, plain
//! lines at a steady interval otherwise (CI logs must not fill with carriage returns).
//!
//! The importer itself reports nothing: the caller counts the batches its sink receives, e.g.
//! `|batch| { progress.add(batch.len()); store(batch) }`, and calls [`Progress::finish`].

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::ImportSummary;

/// How often plain progress lines are written.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    label: String,
    started: Instant,
    spans: u64,
    out: Output,
}

enum Output {
    Bar(ProgressBar),
    Plain {
        out: Box<dyn Write + Send>,
        every: Duration,
        last: Instant,
    },
    Hidden,
}

impl Progress {
    /// A spinner on a terminal, plain lines to stderr otherwise.
    pub fn new(label: impl Into<String>) -> Self {
        let label = label.into();
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} {prefix} {human_pos} spans, {per_sec} [{elapsed}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_prefix(label.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            Self::with_output(label, Output::Bar(bar))
        } else {
            Self::plain(label, Box::new(std::io::stderr()), PLAIN_EVERY)
        }
    }

    /// Plain lines to `out`, at most one per `every`, and one at the end.
    pub fn plain(label: impl Into<String>, out: Box<dyn Write + Send>, every: Duration) -> Self {
        Self::with_output(
            label.into(),
            Output::Plain {
                out,
                every,
                last: Instant::now(),
            },
        )
    }

    /// Reports nothing (`--quiet`).
    pub fn hidden() -> Self {
        Self::with_output(String::new(), Output::Hidden)
    }

    fn with_output(label: String, out: Output) -> Self {
        Self {
            label,
            started: Instant::now(),
            spans: 0,
            out,
        }
    }

    /// Spans imported so far.
    pub fn spans(&self) -> u64 {
        self.spans
    }

    /// Counts `n` more spans.
    pub fn add(&mut self, n: usize) {
        self.spans += n as u64;
        let rate = self.rate();
        match &mut self.out {
            Output::Bar(bar) => bar.inc(n as u64),
            Output::Plain { out, every, last } => {
                if last.elapsed() >= *every {
                    *last = Instant::now();
                    // Progress output is best effort: a closed stderr must not stop an import.
                    let _ = writeln!(
                        out,
                        "{}: {} spans ({rate:.0} spans/s)",
                        self.label, self.spans
                    );
                }
            }
            Output::Hidden => {}
        }
    }

    fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.spans as f64 / secs
        } else {
            0.0
        }
    }

    /// Ends the report with the import's outcome.
    pub fn finish(&mut self, summary: &ImportSummary) {
        let mut line = format!(
            "{}: {} ({}{}) in {:.1}s",
            self.label,
            summary.counts(),
            summary.format,
            if summary.gzip { ", gzip" } else { "" },
            self.started.elapsed().as_secs_f64()
        );
        if summary.logs_without_trace > 0 {
            line.push_str(&format!(
                "; {} log records without a trace id skipped",
                summary.logs_without_trace
            ));
        }
        if summary.records_skipped > 0 {
            line.push_str(&format!("; {} records skipped", summary.records_skipped));
            if let Some(p) = &summary.first_problem {
                line.push_str(&format!(", the first: {p}"));
            }
        }
        match &mut self.out {
            Output::Bar(bar) => bar.finish_with_message(String::new()),
            Output::Plain { .. } | Output::Hidden => {}
        }
        match &mut self.out {
            Output::Bar(_) => eprintln!("{line}"),
            Output::Plain { out, .. } => {
                let _ = writeln!(out, "{line}");
            }
            Output::Hidden => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::import::Format;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_progress_writes_lines_with_rate_and_a_summary() {
        let out = Shared::default();
        let mut p = Progress::plain("trace.json", Box::new(out.clone()), Duration::ZERO);
        p.add(10);
        p.add(5);
        p.finish(&ImportSummary {
            file: "trace.json".into(),
            format: Format::Zipkin,
            gzip: false,
            spans: 15,
            log_records: 0,
            logs_without_trace: 0,
            records_skipped: 1,
            first_problem: None,
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("trace.json: 15 spans ("), "{text}");
        assert!(lines[1].ends_with("spans/s)"), "{text}");
        assert!(
            lines[2].starts_with("trace.json: 15 spans (zipkin) in "),
            "{text}"
        );
        assert!(lines[2].ends_with("; 1 records skipped"), "{text}");
    }
}
