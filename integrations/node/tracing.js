// Test-case spans for JavaScript test runners, with the OpenTelemetry JS SDK.
//
// `traced(name, fn)` runs one test body inside a span that tracecov recognizes as a test case
// (`test.case.name`, `test.suite.name`, `test.case.result.status` = pass | fail). The span is
// the active context while the body runs, so every HTTP call the test makes through `http`,
// `https`, `undici` or the global `fetch` is a client span below it, and the services it calls
// continue the trace: each of those calls is a hop of this test.
//
// The SDK starts on first use and reads the standard variables that `tracecov run` sets for its
// command: OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf, http/json
// or grpc; grpc needs @opentelemetry/exporter-trace-otlp-grpc installed), OTEL_EXPORTER_OTLP_HEADERS
// and OTEL_RESOURCE_ATTRIBUTES (which carries `tracecov.run.id`). OTEL_SERVICE_NAME names the
// test driver (default `node-tests`). Call `shutdown()` once the tests are done: it exports
// what is still batched. The node:test wrapper (node-test.js) does that for you.
//
// Runner-agnostic: node-test.js wraps node:test; with Jest, wrap `test` the same way
// (`const tracedTest = (name, fn) => test(name, () => traced(name, fn))`).

"use strict";

const path = require("node:path");
const api = require("@opentelemetry/api");
const { NodeSDK } = require("@opentelemetry/sdk-node");
const { HttpInstrumentation } = require("@opentelemetry/instrumentation-http");
const { UndiciInstrumentation } = require("@opentelemetry/instrumentation-undici");

let sdk = null;
let stopping = null;

/** Starts the SDK once: the exporter, the resource and the HTTP client instrumentations. */
function start() {
  if (sdk) return;
  if (!process.env.OTEL_SERVICE_NAME) process.env.OTEL_SERVICE_NAME = "node-tests";
  // The exporter, its protocol and the resource come from the OTEL_* variables; only the
  // instrumentations are chosen here: the clients a test calls its system through. Incoming
  // requests are not the test's business, and file-system or DNS spans would only add noise.
  sdk = new NodeSDK({
    instrumentations: [new HttpInstrumentation(), new UndiciInstrumentation()],
  });
  sdk.start();
}

/** Exports every span still batched and stops the SDK; safe to call more than once. */
function shutdown() {
  if (!sdk) return Promise.resolve();
  stopping ??= sdk.shutdown().catch((e) => {
    process.stderr.write(`tracecov: exporting the test spans failed: ${e}\n`);
  });
  return stopping;
}

/** The suite a test belongs to when the runner gives none: the test file's name. */
function defaultSuite() {
  const main = require.main?.filename ?? process.argv[1];
  return main ? path.basename(main) : "tests";
}

/**
 * Runs `fn(...args)` inside a test-case span named `name` and returns what it returns. The span
 * is a root: every test is a trace of its own, so tests running in parallel never share one.
 * A body that throws (or rejects) marks the test `fail`, records the exception and rethrows.
 */
function traced(name, fn, { suite = defaultSuite(), args = [] } = {}) {
  start();
  const tracer = api.trace.getTracer("tracecov-test");
  const attributes = { "test.case.name": name, "test.suite.name": suite };
  return tracer.startActiveSpan(name, { attributes }, api.ROOT_CONTEXT, async (span) => {
    try {
      const result = await fn(...args);
      span.setAttribute("test.case.result.status", "pass");
      return result;
    } catch (error) {
      span.setAttribute("test.case.result.status", "fail");
      span.recordException(error);
      span.setStatus({ code: api.SpanStatusCode.ERROR, message: String(error?.message ?? error) });
      throw error;
    } finally {
      span.end();
    }
  });
}

module.exports = { traced, shutdown, start };
