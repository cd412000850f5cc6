// Workload (dump): ferry dump and ferry load at scale.
// 1. 1,000,000 entries on the mem store, in process (scripts/bench-dump.ts): dump to .json, then
//    load that into an empty mem store; entries/s and peak RSS against the RSS of the populated
//    store alone (what the dump and the load themselves cost). Targets: dump ≥ 200,000 entries/s,
//    load ≥ 100,000 entries/s, peak RSS ≤ 256 MB each.
// 2. 200,000 files of 100 bytes in 200 directories on tmpfs, through the CLI: `ferry dump` to .json
//    against `find -printf` of the same attributes, to .tar against GNU `tar -cf`, and `ferry load`
//    of that .tar into an empty directory against `tar -xf`. Target: within 1.5× of tar both ways.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleHelper } from './bench-lib.mjs';

const FILES = 200_000;
const DIRS = 200;

function makeTree(dir) {
  const data = Buffer.alloc(100, 99);
  const per = FILES / DIRS;
  for (let d = 0; d < DIRS; d++) {
    const sub = join(dir, `d${String(d).padStart(3, '0')}`);
    mkdirSync(sub, { recursive: true });
    for (let f = 0; f < per; f++) writeFileSync(join(sub, `f${String(f).padStart(5, '0')}`), data);
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function benchDump({ work, ferry, runs, rounds, report, results }) {
  // 1. In process, on the mem store.
  const helper = await bundleHelper('bench-dump');
  const rows = { dump: [], load: [] };
  const file = join(work, 'mem-dump.json');
  const run = (mode) => JSON.parse(execFileSync('node', ['--expose-gc', helper, mode, '1000000', file], { encoding: 'utf8', maxBuffer: 16 << 20 }).trim().split('\n').pop());
  for (let i = 0; i < runs; i++) {
    rows.dump.push(run('dump'));
    rows.load.push(run('load'));
  }
  rmSync(file, { force: true });
  console.log('\n(dump) 1,000,000 files on the mem store, in process (what the populated or empty store held before, in brackets)');
  for (const what of ['dump', 'load']) {
    const rs = rows[what];
    const seconds = median(rs.map((r) => r.seconds));
    const rss = Math.max(...rs.map((r) => r.peakRssMB));
    const base = Math.max(...rs.map((r) => r.baseRssMB));
    const entries = rs[0].entries;
    console.log(`  ${what.padEnd(8)} ${seconds.toFixed(3).padStart(8)} s  ${Math.round(entries / seconds).toLocaleString('en')} entries/s  peak RSS ${rss} MB [before: ${base} MB]`);
    results.push({ workload: `mem ${what} of ${entries} entries`, rows: [{ name: 'ferry', seconds, rss, baseRss: base }] });
  }

  // 2. A local tree through the CLI.
  const tree = join(work, 'dump-tree');
  const out = join(work, 'dump-out');
  const back = join(work, 'dump-back');
  makeTree(tree);
  mkdirSync(out, { recursive: true });
  // ferry and its yardstick run in turn (rounds): report() gives the median of the rounds' ratios.
  const json = join(out, 'tree.json');
  const jsonRows = rounds([['ferry', 'node', [ferry, 'dump', '-q', tree + '/', json]], ['find', 'sh', ['-c', `find '${tree}' -printf '%P %y %s %T@ %m %U %G %l\\n' > '${join(out, 'find.txt')}'`]]]);
  report(`(dump) ${FILES.toLocaleString('en')}-file tree → .json, against find -printf of the same attributes`, jsonRows, FILES, 'entries');
  const tar = join(out, 'tree.tar');
  const tarRows = rounds([['ferry', 'node', [ferry, 'dump', '-q', tree + '/', tar]], ['tar', 'tar', ['-cf', join(out, 'gnu.tar'), '-C', tree, '.']]]);
  report(`(dump) ${FILES.toLocaleString('en')}-file tree → .tar, against tar -cf`, tarRows, FILES, 'entries');
  const fresh = () => {
    rmSync(back, { recursive: true, force: true });
    mkdirSync(back, { recursive: true });
  };
  const loadRows = rounds([['ferry', 'node', [ferry, 'load', '-q', back + '/', tar], undefined, fresh], ['tar', 'tar', ['-xf', join(out, 'gnu.tar'), '-C', back], undefined, fresh]]);
  report(`(load) that .tar into an empty directory, against tar -xf`, loadRows, FILES, 'entries');
  for (const d of [tree, out, back]) rmSync(d, { recursive: true, force: true });
}
