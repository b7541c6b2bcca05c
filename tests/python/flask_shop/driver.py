"""The test driver: two test cases against `orders`, each a span with test.case.name."""

import sys

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

orders = sys.argv[1]
provider = TracerProvider(resource=Resource.create({"service.name": "flask-suite"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
RequestsInstrumentor().instrument(tracer_provider=provider)
tracer = provider.get_tracer("driver")

for test, method, path, expected in [
    ("test_place_order", "POST", "/orders", 201),
    ("test_view_account", "GET", "/account", 200),
]:
    with tracer.start_as_current_span(test) as span:
        span.set_attribute("test.case.name", test)
        got = requests.request(method, f"{orders}{path}", timeout=5).status_code
        ok = got == expected
        span.set_attribute("test.case.result.status", "pass" if ok else "fail")
        if not ok:
            span.set_status(Status(StatusCode.ERROR, f"expected {expected}, got {got}"))
provider.force_flush()
provider.shutdown()
