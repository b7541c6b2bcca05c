// The node:test suite's tests again, under Jest: "places an order" fails on billing's 500, and
// tracecov must place the failure on storefront -> billing.

"use strict";

const STORE = process.env.STOREFRONT;

test("lists products", async () => {
  const res = await fetch(`${STORE}/api/products`);
  expect(res.status).toBe(200);
  expect((await res.json()).map((p) => p.name)).toEqual(["cake", "tea"]);
});

describe("checkout", () => {
  test("places an order", async () => {
    const res = await fetch(`${STORE}/api/checkout`, { method: "POST" });
    expect(res.status).toBe(201);
  });
});
