// End-to-end tests of the storefront's page, each a test case through
// integrations/playwright/fixture.js. The page's own script is not instrumented: its requests
// belong to the test by the `traceparent` the fixture adds. "buys tea" fails: billing answers the
// charge with a 500, and tracecov must place the failure on storefront -> billing.

"use strict";

const { test, expect } = require("../../../integrations/playwright/fixture.js");

test("shows the products", async ({ page }) => {
  await page.goto("/");
  await expect(page.locator("#products li")).toHaveText(["cake: 5", "tea: 3"]);
});

test.describe("checkout", () => {
  test("buys tea", async ({ page }) => {
    await page.goto("/");
    await page.click("#buy");
    await expect(page.locator("#result")).toHaveText("order placed", { timeout: 5000 });
  });
});
