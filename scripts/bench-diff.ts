// mem → mem listing and diff of N equal keys, in process: the cost of the planner itself.
// Prints one JSON line: keys, seconds, keys per second, peak RSS.
import { runSync, type SyncOptions } from '../src/manager/sync/run.js';
import { MemStore } from '../src/shared/storage/mem.js';

const n = Number(process.argv[2] ?? 1_000_000);
const src = new MemStore('src', { capacity: n, keyBytes: n * 24 });
const dst = new MemStore('dst', { capacity: n, keyBytes: n * 24 });
const body = Buffer.alloc(100, 1);
const mtime = Date.UTC(2024, 0, 1);
// Keys are made flat, as a listing's are, in one reused buffer: a concatenation would keep rope
// nodes per key, and a buffer per key would leave garbage that inflates peak RSS.
const template = Buffer.from('dir00000/file-000000.dat', 'latin1');
const digits = (at: number, width: number, v: number) => {
  for (let k = at + width - 1; k >= at; k--, v = Math.floor(v / 10)) template[k] = 48 + (v % 10);
};
for (let i = 0; i < n; i++) {
  digits(3, 5, Math.floor(i / 1000));
  digits(14, 6, i % 1000);
  const key = template.toString('latin1');
  src.set(key, body, { mtime });
  dst.set(key, body, { mtime });
}
const options: SyncOptions = {
  update: false, forceUpdate: false, existing: false, ignoreExisting: false, checkAll: false, deleteSrc: false,
  deleteDst: true, perms: false, dirs: false, links: false, sizeOnly: false, limit: -1, inplace: false,
  deleteSrcAfter: false, checkNew: false, checkChange: false, maxFailure: -1, maxDeletes: -1, dry: false, threads: 10,
  listThreads: 1, listDepth: 1, bwlimit: 0,
};
const quiet = { error() {}, warn() {}, info() {}, debug() {} };
const never = new AbortController().signal;
const t0 = performance.now();
const { stats } = await runSync(src, dst, options, { stopListing: never, stopNow: never, logger: quiet });
const seconds = (performance.now() - t0) / 1000;
if (stats.skipped !== n || stats.copied !== 0) throw new Error(`expected ${n} skipped, got ${stats.summaryLine()}`);
console.log(JSON.stringify({ keys: n, seconds, keysPerSecond: Math.round(n / seconds), peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024) }));
