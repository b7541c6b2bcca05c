"""Logs through Python's `logging` with the OpenTelemetry SDK's LoggingHandler and OTLP log
exporter, inside a span, so the records carry the span's trace and span id.

Usage: log_spans.py grpc|http ENDPOINT
Prints the trace id and the span id (hex) on stdout once spans and records are exported.
"""

import logging
import sys

from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind


def exporters(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return (
            OTLPSpanExporter(endpoint=endpoint, insecure=True),
            OTLPLogExporter(endpoint=endpoint, insecure=True),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return (
        OTLPSpanExporter(endpoint=endpoint + "/v1/traces"),
        OTLPLogExporter(endpoint=endpoint + "/v1/logs"),
    )


def main():
    protocol, endpoint = sys.argv[1], sys.argv[2]
    resource = Resource.create({"service.name": "py-inventory"})
    span_exporter, log_exporter = exporters(protocol, endpoint)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    log = logging.getLogger("inventory.consumer")
    log.setLevel(logging.INFO)
    log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
    tracer = tracer_provider.get_tracer("tracecov-python-logs")

    # A record outside any span: it carries no trace id.
    log.warning("consumer starting")
    with tracer.start_as_current_span("orders process", kind=SpanKind.CONSUMER) as span:
        log.info("reserving stock for the order")
        try:
            raise KeyError("sku-404")
        except KeyError:
            log.exception("could not reserve stock; dropping the message")
        ctx = span.get_span_context()
    tracer_provider.force_flush()
    logger_provider.force_flush()
    tracer_provider.shutdown()
    logger_provider.shutdown()
    print(format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))


if __name__ == "__main__":
    main()
