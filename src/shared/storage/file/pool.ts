import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { TEMP_PREFIX, tempName, tempNamePrefix } from '../temp.js';
import { specialKind, type WalkRecord } from '../tree.js';

/**
 * Synchronous file-system calls on worker threads. Listing a directory or copying a batch of small
 * files costs one message round trip instead of one thread-pool round trip per system call, which
 * is where the time of a many-small-files sync goes.
 *
 * The thread runs the source text of the functions below with `eval`, so it works the same from
 * the sources (tests) and from the bundle. Those functions use nothing from outside their own
 * bodies but what comes in their `SyncEnv` argument.
 */
type Fs = typeof import('node:fs');

/** What the functions that also run on threads may use. */
export interface SyncEnv {
  fs: Fs;
  /** tree.ts specialKind. */
  specialKind: (mode: number) => string;
  /** temp.ts TEMP_PREFIX: names starting with it are temporary files, never listed. */
  tempPrefix: string;
  /** A fresh temporary path (temp.ts) in the directory of `dst`. */
  tmpPath: (dst: string) => string;
  /** clearForFileSync, for the functions that need it. */
  clearForFile: (fs: Fs, path: string) => void;
}

/** A temporary file of some writer, which listings hide and may reclaim (temp.ts isAbandoned). */
export interface TempFile {
  name: string;
  size: number;
  mtime: number;
}

export interface DirRead {
  records: WalkRecord[];
  /** Asked for with `temps`: the temporary files of the directory (regular files and symlinks). */
  temps?: TempFile[];
}

/**
 * One directory: names with their attributes, in readdir order. Symlinks are reported as links,
 * and also with their target's attributes when `follow` is set. Runs on the main thread for small
 * directories and on a file-system thread for large ones.
 */
export function listDirSync(env: SyncEnv, dir: string, o: { follow: boolean; names?: string[]; temps?: boolean }): DirRead {
  const fs = env.fs;
  const out: WalkRecord[] = [];
  const temps: TempFile[] = [];
  let undecodable = false;
  for (const name of o.names ?? fs.readdirSync(dir)) {
    const temp = name.startsWith(env.tempPrefix);
    if (temp && !o.temps) continue;
    const p = dir + name;
    let st;
    try {
      st = fs.lstatSync(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (temp) continue;
      if (code === 'ENOENT') {
        // Node decodes names as UTF-8: bytes that are not UTF-8 come back as U+FFFD, and the name
        // no longer reaches the file. Such names are reported (under their bytes, so that two of
        // them stay two keys) rather than passed over.
        if (name.includes('\uFFFD')) undecodable = true;
        continue;
      }
      // A path too long for the system, a link loop, an I/O error: this name fails, not the listing.
      out.push({ name, kind: 'f', size: 0, mtime: 0, error: `cannot read its attributes: ${(e as Error).message}` });
      continue;
    }
    if (temp) {
      if (st.isFile() || st.isSymbolicLink()) temps.push({ name, size: st.size, mtime: st.mtimeMs });
      continue;
    }
    const kind = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFile() ? 'f' : 'o';
    const rec: WalkRecord = { name, kind, size: st.size, mtime: st.mtimeMs, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
    if (kind === 'd') rec.id = st.dev + ':' + st.ino;
    if (kind === 'o') rec.special = env.specialKind(st.mode);
    if (kind === 'l') {
      try {
        rec.target = fs.readlinkSync(p);
      } catch {
        rec.target = '';
      }
      if (o.follow) {
        try {
          const t = fs.statSync(p);
          const tk = t.isDirectory() ? 'd' : t.isFile() ? 'f' : 'o';
          rec.follow = { kind: tk, size: t.size, mtime: t.mtimeMs, mode: t.mode & 0o7777, uid: t.uid, gid: t.gid, id: t.dev + ':' + t.ino };
          if (tk === 'o') rec.follow.special = env.specialKind(t.mode);
        } catch {
          rec.follow = null;
        }
      }
    }
    out.push(rec);
  }
  if (undecodable) {
    for (const raw of fs.readdirSync(dir, { encoding: 'buffer' })) {
      const text = raw.toString('utf8');
      if (Buffer.from(text, 'utf8').equals(raw)) continue;
      out.push({ name: `${text} [bytes ${raw.toString('hex')}]`, kind: 'f', size: 0, mtime: 0, error: 'its name is not valid UTF-8, which ferry cannot address yet' });
    }
  }
  return o.temps ? { records: out, temps } : { records: out };
}

/**
 * Make room for a file at `path`, which a write opens itself (--inplace) or renames onto: nothing
 * stays there but a regular file. An empty directory is removed and a FIFO, socket or device
 * unlinked (the name changed type on the source; opening a FIFO to write would block for ever). A
 * directory with content fails with FERRY_IN_THE_WAY, a symlink with FERRY_UNSAFE_PATH: writing
 * through it would change a file outside the destination.
 */
export function clearForFileSync(fs: Fs, path: string): void {
  const fail = (code: string, message: string) => Object.assign(new Error(message), { code });
  let st;
  try {
    st = fs.lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (st.isFile()) return;
  if (st.isSymbolicLink()) throw fail('FERRY_UNSAFE_PATH', `${path} is a symlink`);
  if (!st.isDirectory()) return fs.unlinkSync(path);
  try {
    fs.rmdirSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') throw fail('FERRY_IN_THE_WAY', `${path}/ is a directory with content`);
    throw e;
  }
}

export interface PlaceJob {
  /** Final path. */
  dst: string;
  /** Copy this file, or write `data`. */
  src?: string;
  data?: Uint8Array;
  inplace?: boolean;
  /** The temporary name to write to (the caller watches it for progress); made up when absent. */
  tmp?: string;
  mtime?: number;
  mode?: number;
  uid?: number;
  gid?: number;
}

/**
 * Copy or write files, each to a fresh temporary name (O_EXCL: never through anything already
 * there) renamed into place, or, inplace, into the final path itself after clearForFileSync (never
 * through a symlink, never into a FIFO). An error per job, or null.
 */
export function placeFilesSync(env: SyncEnv, jobs: PlaceJob[]): (SystemErrorRecord | null)[] {
  const fs = env.fs;
  const C = fs.constants;
  const parent = (p: string) => p.slice(0, p.lastIndexOf('/'));
  const write = (job: PlaceJob, target: string) => {
    if (job.src !== undefined) fs.copyFileSync(job.src, target, job.inplace ? 0 : C.COPYFILE_EXCL);
    else {
      const fd = fs.openSync(target, job.inplace ? C.O_WRONLY | C.O_CREAT | C.O_TRUNC | C.O_NOFOLLOW | C.O_NONBLOCK : 'wx');
      try {
        fs.writeFileSync(fd, job.data!);
      } finally {
        fs.closeSync(fd);
      }
    }
  };
  return jobs.map((job) => {
    const target = job.inplace ? job.dst : (job.tmp ?? env.tmpPath(job.dst));
    try {
      if (job.inplace) env.clearForFile(fs, job.dst);
      try {
        write(job, target);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || (job.src !== undefined && !fs.existsSync(job.src))) throw e;
        fs.mkdirSync(parent(job.dst), { recursive: true });
        write(job, target);
      }
      if (job.uid !== undefined && job.gid !== undefined) fs.chownSync(target, job.uid, job.gid);
      if (job.mode !== undefined) fs.chmodSync(target, job.mode);
      if (job.mtime !== undefined) {
        // index.ts fsTime: seconds keep the sub-millisecond part, but Node turns a negative number
        // (before 1970) into "now", so those go as a Date (floored: the same second).
        const t = job.mtime >= 0 ? job.mtime / 1000 : new Date(Math.floor(job.mtime));
        fs.utimesSync(target, t, t);
      }
      if (target !== job.dst) {
        try {
          fs.renameSync(target, job.dst);
        } catch (e) {
          // A directory where the file goes: an empty one makes way, one with content does not.
          if ((e as NodeJS.ErrnoException).code !== 'EISDIR') throw e;
          env.clearForFile(fs, job.dst);
          fs.renameSync(target, job.dst);
        }
      }
      return null;
    } catch (e) {
      if (target !== job.dst) fs.rmSync(target, { force: true });
      const err = e as NodeJS.ErrnoException;
      return { code: err?.code ? String(err.code) : 'EIO', message: err?.message ? String(err.message) : String(e) };
    }
  });
}

/**
 * Read small files whole: the bytes, or an error, per path. Opened without blocking and checked
 * before reading: a FIFO would block the read for ever, a device would never end.
 */
export function readBatchSync(env: SyncEnv, paths: string[]): (Uint8Array | SystemErrorRecord)[] {
  const fs = env.fs;
  const C = fs.constants;
  return paths.map((p) => {
    let fd = -1;
    try {
      fd = fs.openSync(p, C.O_RDONLY | C.O_NONBLOCK);
      const st = fs.fstatSync(fd);
      if (st.isDirectory()) return { code: 'EISDIR', message: 'EISDIR: it is a directory' };
      if (!st.isFile()) return { code: 'FERRY_SPECIAL_FILE', message: `it is a ${env.specialKind(st.mode)}, not a regular file; ferry does not read FIFOs, sockets or devices` };
      const buf = Buffer.allocUnsafe(st.size);
      let n = 0;
      while (n < buf.length) {
        const r = fs.readSync(fd, buf, n, buf.length - n, null);
        if (r === 0) break;
        n += r;
      }
      return n === buf.length ? buf : buf.subarray(0, n);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      return { code: err?.code ? String(err.code) : 'EIO', message: err?.message ? String(err.message) : String(e) };
    } finally {
      if (fd >= 0) fs.closeSync(fd);
    }
  });
}

/** The functions above as the main thread calls them. */
export const MAIN_THREAD: SyncEnv = {
  fs,
  specialKind,
  tempPrefix: TEMP_PREFIX,
  tmpPath: (dst) => dst.slice(0, dst.lastIndexOf('/') + 1) + tempName(),
  clearForFile: clearForFileSync,
};

// Worker threads share the process id: the temporaries of every thread carry this process's prefix,
// with the thread's id and a sequence number to keep them apart.
const THREAD_SOURCE = `
const { parentPort, threadId } = require('node:worker_threads');
const fs = require('node:fs');
const listDirSync = ${listDirSync.toString()};
const placeFilesSync = ${placeFilesSync.toString()};
const readBatchSync = ${readBatchSync.toString()};
let seq = 0;
const env = {
  fs,
  specialKind: ${specialKind.toString()},
  tempPrefix: ${JSON.stringify(TEMP_PREFIX)},
  tmpPath: (dst) => dst.slice(0, dst.lastIndexOf('/') + 1) + ${JSON.stringify(tempNamePrefix())} + threadId.toString(36) + '-' + (seq++).toString(36) + '-' + Math.random().toString(36).slice(2, 8),
  clearForFile: ${clearForFileSync.toString()},
};
const ops = {
  listDir: (m) => listDirSync(env, m.dir, m.options),
  place: (m) => placeFilesSync(env, m.jobs),
  readBatch: (m) => readBatchSync(env, m.jobs),
};

parentPort.on('message', (m) => {
  let reply;
  try {
    const result = ops[m.op](m);
    reply = { id: m.id, result };
  } catch (e) {
    reply = { id: m.id, error: { code: e && e.code ? String(e.code) : 'EIO', message: String(e && e.message ? e.message : e) } };
  }
  parentPort.postMessage(reply);
});
`;

export interface SystemErrorRecord {
  code: string;
  message: string;
}

type Pending = { resolve: (v: unknown) => void; reject: (e: unknown) => void };

class PoolThread {
  readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  constructor(onExit: (t: PoolThread, err: Error) => void) {
    this.worker = new Worker(THREAD_SOURCE, { eval: true });
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

export class FsPool {
  readonly #threads: PoolThread[] = [];
  #next = 0;
  #id = 0;
  #closed = false;
  /** Jobs waiting for their batch to be sent, by kind. */
  #queues: Record<BatchOp, { job: unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }[]> = { place: [], readBatch: [] };
  readonly #scheduled = new Set<BatchOp>();

  constructor(readonly size: number) {}

  #thread(): PoolThread {
    if (this.#closed) throw new Error('file-system pool is closed');
    if (this.#threads.length < this.size) {
      const t = new PoolThread((dead, err) => {
        const i = this.#threads.indexOf(dead);
        if (i >= 0) this.#threads.splice(i, 1);
        for (const p of dead.pending.values()) p.reject(err);
        dead.pending.clear();
      });
      this.#threads.push(t);
      return t;
    }
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

  listDir(dir: string, options: { follow: boolean; temps?: boolean }): Promise<DirRead> {
    return this.#call<DirRead>({ op: 'listDir', dir, options });
  }

  /** Copy files in one message per thread; one error (or null) per job, in order. */
  async copyMany(jobs: PlaceJob[]): Promise<(NodeJS.ErrnoException | null)[]> {
    if (jobs.length === 0) return [];
    const n = Math.min(this.size, Math.ceil(jobs.length / 32));
    const per = Math.ceil(jobs.length / n);
    const parts: Promise<(SystemErrorRecord | null)[]>[] = [];
    for (let i = 0; i < jobs.length; i += per) parts.push(this.#call({ op: 'place', jobs: jobs.slice(i, i + per) }));
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
  }
}
