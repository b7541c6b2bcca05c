// A Playwright Test fixture that makes every test a tracecov test case, and ties the system's
// spans to it even when the page under test has no instrumentation of its own.
//
//   // in your spec files, instead of require("@playwright/test"):
//   const { test, expect } = require("./tracecov-fixture.js");
//
// Per test, a span with `test.case.name` (the test's titles under its describe blocks),
// `test.suite.name` (the spec file) and, once the test is over, `test.case.result.status`
// (pass, or fail when the test did not end as expected). Every request the page sends to a
// traced origin carries that span's W3C `traceparent`, added by `page.route`, so the server
// spans of your backend are children of the test: its hops. Traced origins: the `baseURL`'s,
// or the fixture option `tracedOrigins` (`test.use({ tracedOrigins: ["http://localhost:8080"] })`).
// Requests to any other origin are left alone. A page that is itself instrumented (the
// OpenTelemetry web SDK) sends its own `traceparent` to the origins it propagates to: keep
// those origins out of `tracedOrigins` if its spans should be the parents.
//
// The SDK (see ../node/tracing.js) reads the OTEL_* variables `tracecov run` sets; each worker
// exports its spans when it stops. Calls the test body itself makes from Node (an API client in
// the test) are not under the test's span: Playwright runs the body outside the fixture's
// context.

"use strict";

const path = require("node:path");
const api = require("@opentelemetry/api");
const base = require("@playwright/test");
const tracing = require("../node/tracing.js");

const test = base.test.extend({
  tracedOrigins: [[], { option: true }],

  // One SDK per worker, flushed when the worker stops.
  tracecovSdk: [
    async ({}, use) => {
      tracing.start();
      await use(null);
      await tracing.shutdown();
    },
    { scope: "worker", auto: true },
  ],

  // The test case's span: a root, so every test is a trace of its own.
  tracecovSpan: [
    async ({}, use, testInfo) => {
      const name = testInfo.titlePath.slice(1).join(" > ");
      const span = api.trace.getTracer("tracecov-playwright").startSpan(name, {
        root: true,
        attributes: {
          "test.case.name": name,
          "test.suite.name": path.basename(testInfo.file),
        },
      });
      await use(span);
      const passed = testInfo.status === testInfo.expectedStatus;
      span.setAttribute("test.case.result.status", passed ? "pass" : "fail");
      if (!passed) {
        const message = testInfo.error?.message ?? testInfo.status;
        span.setStatus({ code: api.SpanStatusCode.ERROR, message });
      }
      span.end();
    },
    { auto: true },
  ],

  page: async ({ page, baseURL, tracedOrigins, tracecovSpan }, use) => {
    const origins = new Set(tracedOrigins.length ? tracedOrigins : baseURL ? [baseURL] : []);
    const traced = new Set([...origins].map((o) => new URL(o).origin));
    const headers = {};
    api.propagation.inject(api.trace.setSpan(api.ROOT_CONTEXT, tracecovSpan), headers);
    await page.route("**/*", (route, request) => {
      if (!traced.has(new URL(request.url()).origin)) return route.fallback();
      return route.fallback({ headers: { ...request.headers(), ...headers } });
    });
    await use(page);
  },
});

module.exports = { ...base, test };
