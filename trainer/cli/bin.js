#!/usr/bin/env node
// Entry for `npx idiom`. In a checkout it runs the TypeScript sources through tsx, so a fresh
// clone works right after `npm ci` with no build step and never runs a stale bundle; where tsx
// is absent (an installed package) it runs the esbuild bundle.
const path = require('node:path');
let fromSource = true;
try {
  require.resolve('tsx/cjs');
} catch {
  fromSource = false;
}
if (fromSource) {
  require('tsx/cjs');
  void require('./main.ts').main();
} else {
  void require(path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js')).main();
}
