//! OTLP decoding as the receivers do it, then the conversion into `Span`s.
//!
//! The first input byte selects the decoder (even: protobuf, odd: OTLP/JSON); the rest is the
//! request body. A request that decodes is converted (`ingest::convert::convert_request`), and
//! the spans it yields are written back out as OTLP/JSON lines (`tracecov export`'s format),
//! which must decode and convert again to the same number of spans.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracecov::ingest::{convert, otlp_json};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let request = if selector % 2 == 0 {
        ExportTraceServiceRequest::decode(body).ok()
    } else {
        otlp_json::decode_request(body).ok()
    };
    let Some(request) = request else { return };
    let converted = convert::convert_request(request);
    let _ = converted.error_message();

    // What `tracecov export` writes of these spans must import again.
    let mut out = Vec::new();
    tracecov::import::write_otlp_json_lines(&converted.spans, &mut out).expect("writing to a Vec");
    let mut again = 0;
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let req = otlp_json::decode_request(line).expect("an exported line decodes");
        let c = convert::convert_request(req);
        assert_eq!(c.rejected, 0, "an exported span is rejected: {:?}", c.first_error);
        again += c.spans.len();
    }
    assert_eq!(again, converted.spans.len());
});
