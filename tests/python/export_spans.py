"""Exports a small trace to tracecov with the OpenTelemetry Python SDK.

Usage: export_spans.py grpc|http ENDPOINT
Prints the trace id (32 hex digits) on stdout once every span is exported.
"""

import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode


def exporter(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # Plain for http://, TLS for https:// (trusting OTEL_EXPORTER_OTLP_CERTIFICATE); headers
        # such as a bearer token come from OTEL_EXPORTER_OTLP_HEADERS, as for the HTTP exporter.
        return OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint + "/v1/traces")


def main():
    protocol, endpoint = sys.argv[1], sys.argv[2]
    provider = TracerProvider(
        resource=Resource.create({"service.name": "py-orders", "service.version": "0.9"})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter(protocol, endpoint)))
    tracer = provider.get_tracer("tracecov-python-it")

    with tracer.start_as_current_span("enqueue") as other:
        other_ctx = other.get_span_context()
    with tracer.start_as_current_span("GET /orders/{id}", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.route", "/orders/{id}")
        with tracer.start_as_current_span(
            "SELECT orders", kind=SpanKind.CLIENT, links=[Link(other_ctx)]
        ) as child:
            child.set_attribute("db.system.name", "postgresql")
            child.set_attribute("db.response.rows", 3)
            child.add_event("exception", {"exception.type": "TimeoutError"})
            child.set_status(Status(StatusCode.ERROR, "query timed out"))
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.force_flush()
    provider.shutdown()
    print(trace_id)


if __name__ == "__main__":
    main()
