// A node:test suite against the storefront, each test a test case through
// integrations/node/node-test.js. One test fails: billing answers its charge with a 500, the
// storefront turns that into a 502, and tracecov must place the failure on storefront -> billing.
//
//   STOREFRONT=http://127.0.0.1:… tracecov run -- node --test storefront.test.js

"use strict";

const assert = require("node:assert/strict");
const { describe, test } = require("../../../integrations/node/node-test.js");

const STORE = process.env.STOREFRONT;

test("lists products", async () => {
  const res = await fetch(`${STORE}/api/products`);
  assert.equal(res.status, 200);
  assert.deepEqual((await res.json()).map((p) => p.name), ["cake", "tea"]);
});

describe("checkout", () => {
  test("places an order", async () => {
    const res = await fetch(`${STORE}/api/checkout`, { method: "POST" });
    assert.equal(res.status, 201, "the order should be placed");
  });
});
