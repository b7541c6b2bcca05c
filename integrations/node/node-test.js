// node:test with a test-case span around every test.
//
//   const { test, describe, it } = require("./node-test.js");   // instead of require("node:test")
//   test("lists products", async () => { … await fetch(`${STORE}/api/products`) … });
//
// `test` and `it` take node:test's arguments (name, options, fn). Each test body runs inside a
// span made by tracing.js: `test.case.name` is the test's name under its `describe` blocks
// ("cart > adds an item"), `test.suite.name` the test file's name. The spans are exported when the
// file's tests are done. Everything else (hooks, `t.skip()`, `only`, `todo`) is node:test's own;
// node:test reports a failing test's location as this file's line.

"use strict";

const nodeTest = require("node:test");
const { traced, shutdown } = require("./tracing.js");

// The names of the enclosing `describe` blocks. node:test runs a suite's function while
// `describe` is being called, so the stack holds exactly the blocks a test is declared in (as
// long as the tests are declared before the suite function's first `await`).
const suites = [];

nodeTest.after(shutdown);

function parse(args) {
  const name = typeof args[0] === "string" ? args[0] : args[0]?.name;
  const fn = args.find((a) => typeof a === "function");
  const options = args.find((a, i) => i > 0 && a && typeof a === "object") ?? {};
  return { name, fn, options };
}

function wrapTest(run) {
  const wrapped = (...args) => {
    const { name, fn, options } = parse(args);
    if (!fn) return run(name, options);
    const full = [...suites, name].join(" > ");
    // Callback-style tests (`(t, done) => …`) keep their arity so node:test passes `done`.
    const body =
      fn.length >= 2
        ? (t, done) =>
            traced(full, () => new Promise((ok, fail) => fn(t, (e) => (e ? fail(e) : ok()))))
              .then(() => done(), done)
        : (t) => traced(full, fn, { args: [t] });
    return run(name, options, body);
  };
  for (const variant of ["skip", "todo", "only"]) wrapped[variant] = run[variant]?.bind(run);
  return wrapped;
}

function wrapDescribe(run) {
  const wrapped = (...args) => {
    const { name, fn, options } = parse(args);
    if (!fn) return run(name, options);
    return run(name, options, (...inner) => {
      suites.push(name);
      try {
        return fn(...inner);
      } finally {
        suites.pop();
      }
    });
  };
  for (const variant of ["skip", "todo", "only"]) wrapped[variant] = run[variant]?.bind(run);
  return wrapped;
}

module.exports = {
  ...nodeTest,
  test: wrapTest(nodeTest.test),
  it: wrapTest(nodeTest.it),
  describe: wrapDescribe(nodeTest.describe),
  suite: wrapDescribe(nodeTest.describe),
};
