// Playwright Test against the storefront in Debian's Chromium (no browser download): the
// storefront's URL in STOREFRONT, the browser in CHROMIUM, the results outside the repository
// (PLAYWRIGHT_OUTPUT). tests/it/playwright.rs runs it under `tracecov run`.

"use strict";

const os = require("node:os");
const path = require("node:path");

module.exports = {
  testDir: __dirname,
  testMatch: /.*\.spec\.js$/,
  outputDir: process.env.PLAYWRIGHT_OUTPUT ?? path.join(os.tmpdir(), "tracecov-playwright"),
  workers: 1,
  retries: 0,
  reporter: "line",
  use: {
    baseURL: process.env.STOREFRONT,
    browserName: "chromium",
    headless: true,
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      // Root needs --no-sandbox; the rest keep Chromium off the network it has no use for.
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    },
  },
};
