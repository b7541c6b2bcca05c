//! The page shell every UI page shares: head, the assets, the top bar, and small pieces of
//! markup (status badges, the verdict) used on several pages.

use maud::{DOCTYPE, Markup, html};

/// Attributes of `<body>` the script reads.
#[derive(Debug, Default)]
pub struct Body {
    /// An open run the page polls `/api/runs/{id}` for, reloading when it changes.
    pub poll_run: Option<String>,
    /// The run's `last_ns` when the page was rendered.
    pub last_ns: Option<u64>,
}

pub fn page(title: &str, body: Body, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · tracecov" }
                link rel="stylesheet" href="/assets/ui.css";
            }
            body data-poll-run=[body.poll_run.as_deref()] data-last-ns=[body.last_ns] {
                header.top {
                    a.brand href="/" { "tracecov" }
                    a href="/" { "Runs" }
                    a href="/api/runs" { "JSON API" }
                }
                main { (content) }
                script src="/assets/ui.js" defer {}
            }
        }
    }
}

/// A coverage status as a badge: the word, and its colour.
pub fn status_badge(status: &str) -> Markup {
    html! { span class={ "badge st-" (status_class(status)) } { (status) } }
}

/// The mark of a failure whose hop is flaky in its suite.
pub fn flaky_badge() -> Markup {
    html! {
        span.badge.flaky title="flaky: in the suite's last runs, failures were placed on this hop in some runs while the same tests passed through it in others" { "flaky" }
    }
}

/// The coverage statuses from worst to best.
pub const WORST_FIRST: [&str; 5] = ["failing", "untested", "unexpected", "stubbed", "covered"];

/// How bad a status is, for taking the worst of several: higher is worse; an unknown status
/// counts as covered.
pub fn severity(status: &str) -> usize {
    WORST_FIRST
        .iter()
        .rev()
        .position(|s| *s == status)
        .unwrap_or(0)
}

/// The CSS class suffix of a status; anything unknown gets none of the status colours.
pub fn status_class(status: &str) -> &'static str {
    match status {
        "covered" => "covered",
        "failing" => "failing",
        "untested" => "untested",
        "stubbed" => "stubbed",
        "unexpected" => "unexpected",
        _ => "other",
    }
}

/// `12.5%`, or `n/a` when nothing is expected.
pub fn percent(p: Option<f64>) -> String {
    p.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.1}%"))
}

/// A time in nanoseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn time(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Milliseconds, short.
pub fn ms(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) if v < 1.0 => format!("{v:.3} ms"),
        Some(v) => format!("{v:.1} ms"),
    }
}

/// Text in the reports' plain-language style, where `backticks` mark quoted values (error
/// messages, operations): those parts become `<code>`, the rest stays text. Both are escaped.
pub fn prose(text: &str) -> Markup {
    let parts: Vec<&str> = text.split('`').collect();
    // An odd number of backticks leaves the last one unpaired: keep it as text.
    let paired = parts.len() % 2 == 1;
    html! {
        @for (i, part) in parts.iter().enumerate() {
            @if i % 2 == 1 && (paired || i + 1 < parts.len()) {
                code { (part) }
            } @else {
                @if i % 2 == 1 { "`" }
                (part)
            }
        }
    }
}
