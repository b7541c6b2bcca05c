//! The file importers (`tracecov import`): OTLP/JSON (a document or JSON lines), Jaeger JSON and
//! Zipkin v2 JSON, plain or gzip-compressed.
//!
//! The first input byte selects the format given to `import::import_reader` (0: detect it from
//! the content, 1: OTLP/JSON, 2: Jaeger, 3: Zipkin; taken modulo 4); the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracecov::import::{Format, import_reader};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let format = match selector % 4 {
        0 => None,
        1 => Some(Format::OtlpJson),
        2 => Some(Format::Jaeger),
        _ => Some(Format::Zipkin),
    };
    let mut spans = 0usize;
    let mut sink = |batch: Vec<tracecov::model::Span>| -> anyhow::Result<()> {
        assert!(batch.len() <= tracecov::import::BATCH_SPANS);
        spans += batch.len();
        Ok(())
    };
    match import_reader(file, "fuzz-input", format, &mut sink) {
        Ok(summary) => {
            assert_eq!(summary.spans as usize, spans);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
