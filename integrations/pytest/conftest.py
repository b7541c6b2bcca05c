"""Test-case spans for pytest: copy this file into your tests folder (or merge it into your
conftest.py).

Each test's call runs inside a span with `test.case.name` (the test's node id),
`test.suite.name` (its file) and `test.case.result.status` (`pass` or `fail`), so tracecov
counts it as a test case; the HTTP calls it makes through `requests` are client spans below it,
and the services they reach continue its trace. The OTLP/HTTP exporter reads the variables
`tracecov run` sets (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
OTEL_RESOURCE_ATTRIBUTES with the run id); OTEL_SERVICE_NAME names the suite (default `pytest`).
Needs opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http and
opentelemetry-instrumentation-requests. If pytest-opentelemetry is installed too, turn it off
(`-p no:pytest_opentelemetry`): it would make its own span for every test.
"""

import os

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

# Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the default name is
# given only when neither names the service.
default = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "pytest"}
provider = TracerProvider(resource=Resource.create(default))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
RequestsInstrumentor().instrument()

tracer = trace.get_tracer("tests")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    # A root span (empty context): every test is a trace of its own.
    with tracer.start_as_current_span(item.nodeid, context=Context()) as span:
        span.set_attribute("test.case.name", item.nodeid)
        span.set_attribute("test.suite.name", item.nodeid.split("::")[0])
        outcome = yield
        failed = outcome.excinfo is not None
        span.set_attribute("test.case.result.status", "fail" if failed else "pass")
        if failed:
            span.set_status(Status(StatusCode.ERROR, str(outcome.excinfo[1])))


def pytest_sessionfinish(session):
    provider.shutdown()  # exports what is still batched
