// The page's own script: no OpenTelemetry here. Its requests reach the storefront with the
// `traceparent` the Playwright fixture adds, so they still belong to the test.
"use strict";

async function loadProducts() {
  const res = await fetch("/api/products");
  const list = document.getElementById("products");
  if (!res.ok) {
    list.textContent = `products unavailable (${res.status})`;
    return;
  }
  for (const { name, price } of await res.json()) {
    const item = document.createElement("li");
    item.textContent = `${name}: ${price}`;
    list.append(item);
  }
}

document.getElementById("buy").addEventListener("click", async () => {
  const res = await fetch("/api/checkout", { method: "POST" });
  document.getElementById("result").textContent =
    res.ok ? "order placed" : `checkout failed (${res.status})`;
});

loadProducts();
