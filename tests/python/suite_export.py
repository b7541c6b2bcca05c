"""A tiny "test suite" that reports its test cases as spans, the way DESIGN describes them.

Run under `tracecov run`: it reads the standard OTEL_* environment variables (endpoint, protocol,
resource attributes) that tracecov sets. Two test cases; each makes an HTTP client call. With the
argument `fail`, the second test fails and the process exits with status 3.
"""

import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def main():
    fail = len(sys.argv) > 1 and sys.argv[1] == "fail"
    # Resource.create() merges OTEL_RESOURCE_ATTRIBUTES, which carries tracecov.run.id.
    provider = TracerProvider(resource=Resource.create({"service.name": "py-suite"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("suite")

    for name, broken in [("test_list_items", False), ("test_buy_item", fail)]:
        with tracer.start_as_current_span(name) as test:
            test.set_attribute("test.case.name", name)
            with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as call:
                call.set_attribute("http.request.method", "GET")
                call.set_attribute("url.full", "http://inventory.example:8080/items?page=2")
                call.set_attribute("http.response.status_code", 500 if broken else 200)
                if broken:
                    call.set_status(Status(StatusCode.ERROR))
            test.set_attribute("test.case.result.status", "fail" if broken else "pass")
            if broken:
                test.set_status(Status(StatusCode.ERROR, "expected 200, got 500"))
    provider.force_flush()
    provider.shutdown()
    sys.exit(3 if fail else 0)


if __name__ == "__main__":
    main()
