// Jest against the storefront, every test a test case through integrations/node/jest-setup.js.
// tests/it/node_runner.rs runs it under `tracecov run`.

"use strict";

const path = require("node:path");

module.exports = {
  rootDir: __dirname,
  testEnvironment: "node",
  setupFilesAfterEnv: [path.join(__dirname, "../../../integrations/node/jest-setup.js")],
  cacheDirectory: path.join(require("node:os").tmpdir(), "tracecov-jest-cache"),
};
