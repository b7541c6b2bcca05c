// The storefront's page instrumented with the OpenTelemetry web SDK, bundled for the browser
// with esbuild at test time (build.js, run by tests/it/playwright.rs). It exports straight from
// the browser to the OTLP/HTTP receiver named by the page's `?otlp=` parameter, which must let
// this page's origin in (`tracecov serve --cors-origin ORIGIN`).
//
// The page loads the product list inside a span; the fetch instrumentation makes the request a
// client span and sends its `traceparent` to the storefront, so the storefront's and billing's
// spans continue the page's trace. For the test, each export's outcome is kept in
// `window.tracecovExports` ("ok", or the exporter's error), and the trace's id in
// `window.tracecovTraceId`.

import { trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { registerInstrumentations } from "@opentelemetry/instrumentation";
import { FetchInstrumentation } from "@opentelemetry/instrumentation-fetch";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { WebTracerProvider } from "@opentelemetry/sdk-trace-web";

const url = new URLSearchParams(location.search).get("otlp");
const exporter = new OTLPTraceExporter({ url });
window.tracecovExports = [];
const exportSpans = exporter.export.bind(exporter);
exporter.export = (spans, done) =>
  exportSpans(spans, (result) => {
    window.tracecovExports.push(result.code === 0 ? "ok" : String(result.error ?? "failed"));
    done(result);
  });

const provider = new WebTracerProvider({
  resource: resourceFromAttributes({ "service.name": "storefront-web" }),
  spanProcessors: [new SimpleSpanProcessor(exporter)],
});
provider.register();
registerInstrumentations({ instrumentations: [new FetchInstrumentation()] });

const tracer = trace.getTracer("storefront-web");
tracer.startActiveSpan("load products", async (span) => {
  window.tracecovTraceId = span.spanContext().traceId;
  try {
    const res = await fetch("/api/products");
    const list = document.getElementById("products");
    for (const { name } of await res.json()) {
      const item = document.createElement("li");
      item.textContent = name;
      list.append(item);
    }
  } finally {
    span.end();
  }
});
