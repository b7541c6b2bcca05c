"""Instrument `requests` so each test's HTTP calls are client spans under its test span."""

from opentelemetry.instrumentation.requests import RequestsInstrumentor

RequestsInstrumentor().instrument()
