// ferry dump and load of N entries on the mem store, in process: the cost of the format, the walk
// and the validation themselves. `dump FILE`: populate a store (N files in directories of 1,000),
// dump it to FILE (.json); `load FILE`: validate and load FILE into an empty store. Each prints one
// JSON line: entries, seconds, peak RSS, and the RSS before the timed part (the store alone). The
// load goes onto a store that holds the files already (a restore onto the DR data copy): every
// entry is validated, every file checked and its attributes set.
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { writeDump } from '../src/manager/dump/dump.js';
import { load } from '../src/manager/dump/load.js';
import { MemStore } from '../src/shared/storage/mem.js';
import { fillStore } from './bench-keys.js';

const [mode, nArg, file] = process.argv.slice(2);
const n = Number(nArg);
if ((mode !== 'dump' && mode !== 'load') || !(n > 0) || !file) throw new Error('usage: bench-dump dump|load N FILE');
const rssMB = () => Math.round(process.memoryUsage().rss / 1048576);
const peakMB = () => Math.round(process.resourceUsage().maxRSS / 1024);

/** A store of n files of 100 bytes in directories of 1,000. */
function populated(name: string): MemStore {
  return fillStore(new MemStore(name, { capacity: n, keyBytes: n * 24 }), n, Buffer.alloc(100, 1), { mtime: Date.UTC(2024, 0, 1), mode: 0o644 });
}

if (mode === 'dump') {
  const src = populated('src');
  (globalThis as { gc?: () => void }).gc?.();
  const base = rssMB();
  const out = createWriteStream(file);
  const t0 = performance.now();
  const r = await writeDump(src, out, { format: 'json', setting: { source: 'mem://src' } });
  out.end();
  await once(out, 'close');
  const seconds = (performance.now() - t0) / 1000;
  if (r.counters.files !== n || r.failed !== 0) throw new Error(`dumped ${JSON.stringify(r)}, expected ${n} files`);
  const entries = r.counters.files + r.counters.dirs + r.counters.symlinks;
  console.log(JSON.stringify({ entries, seconds, peakRssMB: peakMB(), baseRssMB: base }));
} else {
  const dst = populated('dst');
  (globalThis as { gc?: () => void }).gc?.();
  const base = rssMB();
  const t0 = performance.now();
  const r = await load(dst, file, {});
  const seconds = (performance.now() - t0) / 1000;
  if (r.counters.files !== n || r.present !== n) throw new Error(`loaded ${JSON.stringify(r)}, expected ${n} files present`);
  const entries = r.counters.files + r.counters.dirs + r.counters.symlinks;
  console.log(JSON.stringify({ entries, seconds, peakRssMB: peakMB(), baseRssMB: base }));
}
