// Jest with a test-case span around every test: add this file to `setupFilesAfterEnv` in your
// Jest configuration, and run Jest with `--experimental-vm-modules` (the OTLP exporter loads
// `http` with a dynamic import, which Jest's module sandbox allows only with that flag).
//
//   // jest.config.js
//   module.exports = { testEnvironment: "node", setupFilesAfterEnv: ["./jest-setup.js"] };
//
//   node --experimental-vm-modules node_modules/jest/bin/jest.js
//
// Each test body runs inside a span made by tracing.js: `test.case.name` is Jest's full name of
// the test (its describe blocks and its own name), `test.suite.name` the test file's name. Its
// calls through the global `fetch` (and `undici`) are client spans below it. Jest loads modules
// through its own registry, where the `http` instrumentation cannot patch `node:http`: calls
// made with `http.request` or libraries built on it are not traced under Jest. Each test file
// exports its spans when its tests are done.

"use strict";

const path = require("node:path");
const { traced, shutdown } = require("./tracing.js");

function wrap(run) {
  const wrapped = (name, fn, timeout) => {
    if (typeof fn !== "function") return run(name, fn, timeout);
    // Callback-style tests (`(done) => …`) are left as they are.
    if (fn.length > 0) return run(name, fn, timeout);
    const body = () => {
      const { currentTestName, testPath } = expect.getState();
      const suite = testPath ? path.basename(testPath) : undefined;
      return traced(currentTestName ?? name, fn, { suite });
    };
    return run(name, body, timeout);
  };
  for (const variant of ["skip", "todo", "only", "each", "concurrent", "failing"]) {
    if (run[variant]) wrapped[variant] = run[variant];
  }
  return wrapped;
}

globalThis.test = wrap(globalThis.test);
globalThis.it = wrap(globalThis.it);
afterAll(() => shutdown());
