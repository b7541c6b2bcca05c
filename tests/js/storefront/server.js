// A small shop front in Express, instrumented the way most Node services are: started with
// `node --require @opentelemetry/auto-instrumentations-node/register`, every setting at its
// default. The Node instrumentations pinned here (instrumentation-http 0.223) emit only the
// current HTTP attribute names (http.request.method, url.full, http.response.status_code,
// server.address); the Flask service it calls emits the older ones (http.method, http.url,
// http.status_code) by default, so one trace holds both. Express's instrumentation adds its
// `middleware` and `request handler` spans between the server span and the handler's calls.
//
//   STOREFRONT_PORT=… BILLING_URL=http://127.0.0.1:… [STOREFRONT_WEB_BUNDLE=app.js] node server.js
//
// Routes: `/` a page with no instrumentation of its own (for the Playwright fixture, which adds
// `traceparent` to its requests); `/web.html` a page whose bundled script (STOREFRONT_WEB_BUNDLE,
// built from ../web/app.js) runs the OpenTelemetry web SDK; `GET /api/products` asks billing for
// its prices; `POST /api/checkout` asks billing to charge, and answers 502 when billing fails.
// Prints `ready PORT` once it listens.

"use strict";

const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");
const express = require("express");

const billing = new URL(process.env.BILLING_URL);

/** One call to billing through `node:http` (instrumented: a client span with legacy names). */
function callBilling(method, pathname) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: billing.hostname, port: billing.port, method, path: pathname,
        headers: { "content-type": "application/json" } },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode, body }));
      },
    );
    req.on("error", reject);
    req.end(method === "POST" ? JSON.stringify({ amount: 3 }) : undefined);
  });
}

const app = express();
const page = (file) => path.join(__dirname, file);

app.get("/", (_req, res) => res.sendFile(page("index.html")));
app.get("/page.js", (_req, res) => res.sendFile(page("page.js")));
app.get("/web.html", (_req, res) => res.sendFile(page("web.html")));
app.get("/app.js", (_req, res) => {
  const bundle = process.env.STOREFRONT_WEB_BUNDLE;
  if (!bundle || !fs.existsSync(bundle)) return res.status(404).send("no web bundle built");
  res.type("js").send(fs.readFileSync(bundle));
});

app.get("/api/products", async (_req, res) => {
  const prices = await callBilling("GET", "/prices");
  if (prices.status !== 200) return res.status(502).json({ error: `billing answered ${prices.status}` });
  const list = Object.entries(JSON.parse(prices.body)).map(([name, price]) => ({ name, price }));
  res.json(list);
});

app.post("/api/checkout", async (_req, res) => {
  const charge = await callBilling("POST", "/charge");
  if (charge.status >= 300) return res.status(502).json({ error: `billing answered ${charge.status}` });
  res.status(201).json({ order: "o-1" });
});

const server = app.listen(Number(process.env.STOREFRONT_PORT ?? 0), "127.0.0.1", () => {
  console.log(`ready ${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
