// Opens the storefront's web-SDK page (storefront/web.html, its script bundled from web/app.js)
// in Debian's Chromium with the Playwright library, waits until the page's exporter has given
// its verdict on both of the page's spans, and prints what happened as JSON: each export's
// outcome, the page's trace id, the products it listed, and the CORS errors Chromium reported
// for the export's requests (from the DevTools protocol, which tells a refused preflight from
// other failures).
//
//   node web-export.js PAGE_URL   (PAGE_URL carries ?otlp=<the receiver's /v1/traces>)

"use strict";

const { chromium } = require("playwright-core");

async function main() {
  const [url] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  try {
    const page = await browser.newPage();
    const cdp = await page.context().newCDPSession(page);
    const requests = new Map();
    const corsErrors = [];
    cdp.on("Network.requestWillBeSent", (e) => requests.set(e.requestId, e.request.url));
    cdp.on("Network.loadingFailed", (e) => {
      if (e.corsErrorStatus) {
        corsErrors.push({ url: requests.get(e.requestId), error: e.corsErrorStatus.corsError });
      }
    });
    await cdp.send("Network.enable");
    await page.goto(url);
    await page.waitForFunction(() => window.tracecovExports?.length >= 2, null, { timeout: 60000 });
    const result = await page.evaluate(() => ({
      exports: window.tracecovExports,
      traceId: window.tracecovTraceId,
      products: [...document.querySelectorAll("#products li")].map((li) => li.textContent),
    }));
    console.log(JSON.stringify({ ...result, corsErrors }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
