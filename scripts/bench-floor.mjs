#!/usr/bin/env node
// A lower bound for any Node.js program doing a no-op re-sync of SRC to DST: start Node, and read
// the names and attributes (readdirSync, lstatSync) of both trees, which a re-sync cannot skip.
// Nothing is compared, sorted, filtered or checked. `npm run bench` times it in (b) beside ferry
// and rclone: ferry's time above it is ferry's own; below it no Node program gets on that machine.
// Usage: node scripts/bench-floor.mjs SRC DST (prints the number of files and bytes seen).
import { lstatSync, readdirSync } from 'node:fs';

let files = 0;
let bytes = 0;
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const st = lstatSync(dir + name);
    if (st.isDirectory()) walk(dir + name + '/');
    else {
      files++;
      bytes += st.size;
    }
  }
}

const roots = process.argv.slice(2);
if (roots.length !== 2) throw new Error('usage: bench-floor.mjs SRC DST');
for (const root of roots) walk(root.replace(/\/?$/, '/'));
console.log(`${files} files, ${bytes} bytes`);
