"""A Flask service instrumented by the stock OpenTelemetry Flask and requests instrumentation,
which emit the legacy HTTP attribute names (http.method, http.status_code, http.url) by default.

Usage: service.py orders PORT BILLING_URL | service.py billing PORT
`billing` answers GET /prices, fails POST /charge with HTTP 500 and refuses GET /secure with 401
(the injected faults); `orders` calls billing and answers 502 when billing fails.
"""

import signal
import sys
import threading

import requests
from flask import Flask, jsonify
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from werkzeug.serving import make_server

name, port = sys.argv[1], int(sys.argv[2])
provider = TracerProvider(resource=Resource.create({"service.name": name}))
# Simple (synchronous) export: every span is at the collector when its request ends.
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
app = Flask(name)
FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
RequestsInstrumentor().instrument(tracer_provider=provider)

if name == "billing":

    @app.get("/prices")
    def prices():
        return jsonify(tea=3, cake=5)

    @app.post("/charge")
    def charge():
        raise RuntimeError("ledger write failed: currency mismatch")

    @app.get("/secure")
    def secure():
        return jsonify(error="service credentials rejected"), 401

else:
    billing = sys.argv[3]

    @app.post("/orders")
    def orders():
        r = requests.post(f"{billing}/charge", json={"amount": 10}, timeout=5)
        if not r.ok:
            return jsonify(error=f"billing answered {r.status_code}"), 502
        return jsonify(id="o-1"), 201

    @app.get("/account")
    def account():
        r = requests.get(f"{billing}/secure", timeout=5)
        if not r.ok:
            return jsonify(error=f"billing answered {r.status_code}"), 502
        return jsonify(ok=True)


server = make_server("127.0.0.1", port, app, threaded=True)
# shutdown() waits for serve_forever() to return, so it must not run on the thread serving
# (the handler runs on the main thread, inside serve_forever): ask from another thread.
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print("ready", flush=True)
server.serve_forever()
provider.shutdown()
