// mem → mem listing and diff of N equal keys, in process: the cost of the planner itself.
// Prints one JSON line: keys, seconds, keys per second, peak RSS.
import { runSync, type SyncOptions } from '../src/manager/sync/run.js';
import { MemStore } from '../src/shared/storage/mem.js';
import { fillStore } from './bench-keys.js';

const n = Number(process.argv[2] ?? 1_000_000);
const src = new MemStore('src', { capacity: n, keyBytes: n * 24 });
const dst = new MemStore('dst', { capacity: n, keyBytes: n * 24 });
const body = Buffer.alloc(100, 1);
const mtime = Date.UTC(2024, 0, 1);
fillStore(src, n, body, { mtime });
fillStore(dst, n, body, { mtime });
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
