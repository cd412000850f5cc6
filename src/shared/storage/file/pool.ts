import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { processRuns, TEMP_MAX_AGE_MS, tempNamePrefix, thisHost } from '../temp.js';
import type { WalkRecord } from '../tree.js';
import { decodeRecords, type DirRead, type PackedRead, type PlaceJob, type RecordColumns, type ReadDirOptions, type SortedNames, type SystemErrorRecord, type TempFile } from './fs-ops.js';
import type { ThreadData } from './fs-thread.js';
import type { Spill } from './sorted-names.js';

// What the store's writes and reads take from here (defined in fs-ops.ts, which the threads run too).
export { clearForFileSync, fsPath, listDirSync, MAIN_THREAD, openedAt, placeFilesSync, readBatchSync, type DirRead, type PlaceJob, type SyncEnv, type SystemErrorRecord, type TempFile } from './fs-ops.js';

/**
 * Synchronous file-system calls on worker threads (fs-thread.ts running fs-ops.ts). Listing a
 * directory or copying a batch of small files costs one message round trip instead of one
 * thread-pool round trip per system call, which is where the time of a many-small-files sync goes.
 */

/** The thread's module as a data: URL, defined by the worker bundle's build (scripts/build.mjs); absent elsewhere. */
declare const FERRY_FS_THREAD_URL: string | undefined;

/**
 * The thread's module. Bundled, it is dist/fs-thread.js beside the bundle that holds this code
 * (scripts/build.mjs checks that they stay side by side). Running from the TypeScript sources
 * (tests), Node cannot load fs-thread.ts itself: it is bundled in memory with esbuild, a
 * development dependency that is there wherever the sources are, once per process.
 */
function threadModule(): URL {
  // The worker bundle is one CommonJS file, copied alone to hosts (and into single executables):
  // nothing lies beside it, and import.meta is empty there. It carries the thread's module inline.
  if (typeof FERRY_FS_THREAD_URL === 'string') return new URL(FERRY_FS_THREAD_URL);
  if (!import.meta.url.endsWith('.ts')) {
    // Beside the bundle's entry (dist/cli.js), or one level up when this code landed in a shared chunk (dist/chunks/).
    const beside = new URL('./fs-thread.js', import.meta.url);
    return existsSync(fileURLToPath(beside)) ? beside : new URL('../fs-thread.js', import.meta.url);
  }
  sourceThread ??= (() => {
    const esbuild = createRequire(import.meta.url)('esbuild') as typeof import('esbuild');
    const out = esbuild.buildSync({
      entryPoints: [fileURLToPath(new URL('./fs-thread.ts', import.meta.url))],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      write: false,
      logLevel: 'error',
      sourcemap: 'inline',
    });
    return new URL('data:text/javascript;base64,' + Buffer.from(out.outputFiles[0]!.contents).toString('base64'));
  })();
  return sourceThread;
}
/** The thread's module built from the sources: the same for every pool of the process. */
let sourceThread: URL | undefined;

/** The young generation of a file-system thread's heap. */
const THREAD_YOUNG_MB = 6;

type Pending = { resolve: (v: unknown) => void; reject: (e: unknown) => void };

class PoolThread {
  readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  constructor(onExit: (t: PoolThread, err: Error) => void) {
    const workerData: ThreadData = { tempNamePrefix: tempNamePrefix() };
    // A thread allocates fast and keeps little (a stat result is garbage once sent): a small young
    // generation keeps what it holds at ~15 MB instead of ~45, at no measurable cost in time.
    this.worker = new Worker(threadModule(), { workerData, resourceLimits: { maxYoungGenerationSizeMb: THREAD_YOUNG_MB } });
    this.worker.unref();
    this.worker.on('message', (m: { id: number; result?: unknown; error?: SystemErrorRecord }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (this.pending.size === 0) this.worker.unref();
      if (m.error) p.reject(toSystemError(m.error));
      else p.resolve(m.result);
    });
    this.worker.on('error', (err) => onExit(this, err));
    this.worker.on('exit', (code) => onExit(this, new Error(`file-system thread exited with code ${code}`)));
  }
}

export function toSystemError(r: SystemErrorRecord): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(r.message);
  e.code = r.code;
  return e;
}

type BatchOp = 'place' | 'readBatch';

/** The spill directory of a listing (FsPool.readDir): `ferry-list-PID-POOL-SEQ.HOST`. */
const SPILL_NAME = /^ferry-list-(\d+)-[0-9a-f]{8}-[0-9a-z]+\.([A-Za-z0-9.-]+)$/;

/**
 * Remove the spill directories in `root` of ferry processes that are gone (killed while they
 * sorted a large directory on disk: SIGKILL, the OOM killer, SIGHUP): they hold a whole directory's
 * names. The rule of temporary files (temp.ts isAbandoned): one of this host whose process no
 * longer runs; one of another host sharing the directory (a container, whose process numbers are
 * not this host's) once unchanged for TEMP_MAX_AGE_MS. Never throws.
 */
async function reclaimSpills(root: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return;
  }
  await Promise.all(
    names.map(async (name) => {
      const m = SPILL_NAME.exec(name);
      if (!m) return;
      const pid = Number(m[1]);
      const path = join(root, name);
      if (m[2] === thisHost()) {
        if (pid === process.pid || processRuns(pid)) return;
      } else {
        const st = await stat(path).catch(() => undefined);
        if (!st || Date.now() - st.mtimeMs <= TEMP_MAX_AGE_MS) return;
      }
      await rm(path, { recursive: true, force: true }).catch(() => {});
    }),
  );
}

export class FsPool {
  readonly #threads: PoolThread[] = [];
  #next = 0;
  #id = 0;
  #closed = false;
  /** Jobs waiting for their batch to be sent, by kind. */
  #queues: Record<BatchOp, { job: unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }[]> = { place: [], readBatch: [] };
  readonly #scheduled = new Set<BatchOp>();
  /** Directories of spilled listings not removed yet: close() removes what a listing left behind. */
  readonly #spills = new Set<string>();
  readonly #spillName = randomBytes(4).toString('hex');
  #spillSeq = 0;
  /** os.tmpdir(), read at the first spill directory named. */
  #spillRoot: string | undefined;
  /** The spill directories of processes that are gone, being removed (once a pool). */
  #reclaimed: Promise<void> | undefined;

  constructor(readonly size: number) {}

  #start(): PoolThread {
    const t = new PoolThread((dead, err) => {
      const i = this.#threads.indexOf(dead);
      if (i >= 0) this.#threads.splice(i, 1);
      for (const p of dead.pending.values()) p.reject(err);
      dead.pending.clear();
    });
    this.#threads.push(t);
    return t;
  }

  #thread(): PoolThread {
    if (this.#closed) throw new Error('file-system pool is closed');
    if (this.#threads.length < this.size) return this.#start();
    // The least busy thread, starting after the last one used.
    let best = this.#threads[this.#next % this.#threads.length]!;
    for (const t of this.#threads) if (t.pending.size < best.pending.size) best = t;
    this.#next++;
    return best;
  }

  #call<T>(message: Record<string, unknown>): Promise<T> {
    const t = this.#thread();
    const id = ++this.#id;
    return new Promise<T>((resolve, reject) => {
      t.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      t.worker.ref();
      t.worker.postMessage({ ...message, id });
    });
  }

  /**
   * A directory for the listing (readDirSync): its records in key order when it is small enough
   * to hold whole, else its keys in key order (sortNamesSync). Spilled runs go to os.tmpdir() and stay this
   * pool's until releaseSpill() (or close()) removes them. An abort stops the thread at its next
   * check.
   */
  async readDir(dir: string, options: Omit<ReadDirOptions, 'spillDir' | 'stop'>, signal?: AbortSignal): Promise<DirRead | { sorted: SortedNames }> {
    signal?.throwIfAborted();
    const stop = new Int32Array(new SharedArrayBuffer(4));
    const onAbort = () => Atomics.store(stop, 0, 1);
    signal?.addEventListener('abort', onAbort, { once: true });
    // Named here, made by the thread only if it spills: whatever happens to the thread, this pool
    // knows what to remove.
    // tmpdir() reads three environment variables, each read five system calls in Node 20: once a pool.
    this.#spillRoot ??= tmpdir();
    await (this.#reclaimed ??= reclaimSpills(this.#spillRoot));
    const spillDir = join(this.#spillRoot, `ferry-list-${process.pid}-${this.#spillName}-${(++this.#spillSeq).toString(36)}.${thisHost()}`);
    this.#spills.add(spillDir);
    let r: { columns: RecordColumns; temps?: TempFile[] } | { sorted: SortedNames };
    try {
      r = await this.#call<typeof r>({ op: 'readDir', dir, options: { ...options, spillDir, stop } });
    } catch (err) {
      // The thread removes what it spilled when it fails, but it may have died on the way.
      this.#spills.delete(spillDir);
      await rm(spillDir, { recursive: true, force: true });
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    if (!('sorted' in r) || r.sorted.spill === undefined) this.#spills.delete(spillDir);
    if ('sorted' in r) return r;
    return r.temps ? { records: decodeRecords(r.columns), temps: r.temps } : { records: decodeRecords(r.columns) };
  }

  /** Remove a spill of readDir(). */
  async releaseSpill(spill: Spill): Promise<void> {
    this.#spills.delete(spill.dir);
    await rm(spill.dir, { recursive: true, force: true });
  }

  /** The records of keys that readDir() gave, in their order (statNamesSync). */
  async statNames(dir: string, keys: string[], follow: boolean): Promise<WalkRecord[]> {
    return decodeRecords(await this.#call<RecordColumns>({ op: 'statNames', dir, keys, follow }));
  }

  /** Copy files in one message per thread; one error (or null) per job, in order. */
  async copyMany(jobs: PlaceJob[]): Promise<(NodeJS.ErrnoException | null)[]> {
    if (jobs.length === 0) return [];
    const n = Math.min(this.size, Math.ceil(jobs.length / 32));
    const per = Math.ceil(jobs.length / n);
    const parts: Promise<(SystemErrorRecord | null)[]>[] = [];
    for (let i = 0; i < jobs.length; i += per) parts.push(this.#call({ op: 'place', jobs: packData(jobs.slice(i, i + per)) }));
    const results = (await Promise.all(parts)).flat();
    return results.map((r) => (r ? toSystemError(r) : null));
  }

  /** Copy one file; jobs issued in the same tick travel to a thread together. */
  copy(job: PlaceJob): Promise<void> {
    return this.#batched('place', job).then(() => undefined);
  }

  /** Write a small file whole (temporary name, attributes, rename) in one round trip. */
  writeSmall(job: PlaceJob): Promise<void> {
    return this.#batched('place', job).then(() => undefined);
  }

  /** Read small files whole in one message per thread: the bytes or the error per path, in order (readPackedSync). */
  async readMany(paths: string[], sizes?: number[]): Promise<(Buffer | NodeJS.ErrnoException)[]> {
    if (paths.length === 0) return [];
    const n = Math.min(this.size, Math.ceil(paths.length / 32));
    const per = Math.ceil(paths.length / n);
    const parts: Promise<PackedRead>[] = [];
    for (let i = 0; i < paths.length; i += per) parts.push(this.#call({ op: 'readPacked', jobs: paths.slice(i, i + per), ...(sizes ? { sizes: sizes.slice(i, i + per) } : {}) }));
    const out: (Buffer | NodeJS.ErrnoException)[] = [];
    for (const { data, ends, errors } of await Promise.all(parts)) {
      let start = 0;
      ends.forEach((end, i) => {
        const err = errors[i];
        out.push(err ? toSystemError(err) : Buffer.from(data.buffer, data.byteOffset + start, end - start));
        start = end;
      });
    }
    return out;
  }

  /** Read a small file whole in one round trip. */
  readSmall(path: string): Promise<Buffer> {
    return this.#batched('readBatch', path).then((r) => Buffer.from((r as Uint8Array).buffer, (r as Uint8Array).byteOffset, (r as Uint8Array).byteLength));
  }

  /** Jobs of one kind issued in the same tick travel to a thread in one message. */
  #batched(op: BatchOp, job: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const queue = this.#queues[op];
      queue.push({ job, resolve, reject });
      if (queue.length >= 64) this.#flush(op);
      else if (!this.#scheduled.has(op)) {
        this.#scheduled.add(op);
        setImmediate(() => this.#flush(op));
      }
    });
  }

  #flush(op: BatchOp): void {
    this.#scheduled.delete(op);
    const batch = this.#queues[op];
    if (batch.length === 0) return;
    this.#queues[op] = [];
    this.#call<unknown[]>({ op, jobs: batch.map((b) => b.job) }).then(
      (results) => {
        batch.forEach((b, i) => {
          const r = results[i];
          if (r && typeof r === 'object' && 'code' in r && 'message' in r) b.reject(toSystemError(r as SystemErrorRecord));
          else b.resolve(r);
        });
      },
      (err) => {
        for (const b of batch) b.reject(err);
      },
    );
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#threads.map((t) => t.worker.terminate()));
    this.#threads.length = 0;
    await Promise.all([...this.#spills].map((dir) => rm(dir, { recursive: true, force: true })));
    this.#spills.clear();
  }
}

/**
 * The jobs with their data copied into one buffer of their own: a message copies the whole buffer
 * under every view it holds, and a small file's data is mostly a view of a larger one (a chunk of
 * an archive read 64 KiB at a time), so 256 files of 100 bytes would copy megabytes.
 */
function packData(jobs: PlaceJob[]): PlaceJob[] {
  let total = 0;
  for (const j of jobs) if (j.data) total += j.data.byteLength;
  if (total === 0) return jobs;
  const packed = new Uint8Array(total);
  let at = 0;
  return jobs.map((j) => {
    if (!j.data) return j;
    const n = j.data.byteLength;
    packed.set(j.data, at);
    const data = packed.subarray(at, at + n);
    at += n;
    return { ...j, data };
  });
}
