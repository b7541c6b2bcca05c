// Bundles app.js (the web SDK and its instrumentation) into one browser script with esbuild's
// JavaScript API, which works however npm installed esbuild's binary.
//
//   NODE_PATH=integrations/node_modules node build.js OUTFILE

"use strict";

const path = require("node:path");
const esbuild = require("esbuild");

esbuild.buildSync({
  entryPoints: [path.join(__dirname, "app.js")],
  bundle: true,
  format: "iife",
  outfile: process.argv[2],
  logLevel: "warning",
  nodePaths: (process.env.NODE_PATH ?? "").split(path.delimiter).filter(Boolean),
});
