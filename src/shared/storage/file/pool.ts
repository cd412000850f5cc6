import { Worker } from 'node:worker_threads';
import type { WalkRecord } from '../tree.js';

/**
 * Synchronous file-system calls on worker threads. Listing a directory or copying a batch of small
 * files costs one message round trip instead of one thread-pool round trip per system call, which
 * is where the time of a many-small-files sync goes.
 *
 * The thread runs the source text of the functions below with `eval`, so it works the same from
 * the sources (tests) and from the bundle.
 */
type Fs = typeof import('node:fs');

const TMP = '.ferry-tmp-';

/**
 * One directory: names with their attributes, in readdir order. Symlinks are reported as links,
 * and also with their target's attributes when `follow` is set. Runs on the main thread for small
 * directories and on a file-system thread for large ones, so it takes its modules as arguments
 * and is sent to the thread as source text: it must use nothing from outside its own body.
 */
export function listDirSync(fs: Fs, dir: string, follow: boolean, names?: string[]): WalkRecord[] {
  const out: WalkRecord[] = [];
  let undecodable = false;
  for (const name of names ?? fs.readdirSync(dir)) {
    if (name.startsWith('.ferry-tmp-')) continue;
    const p = dir + name;
    let st;
    try {
      st = fs.lstatSync(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      // Node decodes names as UTF-8: bytes that are not UTF-8 come back as U+FFFD, and the name
      // no longer reaches the file. Such names are reported (under their bytes, so that two of
      // them stay two keys) rather than passed over.
      if (name.includes('\uFFFD')) undecodable = true;
      continue;
    }
    const kind = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFile() ? 'f' : 'o';
    const rec: WalkRecord = { name, kind, size: st.size, mtime: st.mtimeMs, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
    if (kind === 'd') rec.id = st.dev + ':' + st.ino;
    if (kind === 'l') {
      try {
        rec.target = fs.readlinkSync(p);
      } catch {
        rec.target = '';
      }
      if (follow) {
        try {
          const t = fs.statSync(p);
          const tk = t.isDirectory() ? 'd' : t.isFile() ? 'f' : 'o';
          rec.follow = { kind: tk, size: t.size, mtime: t.mtimeMs, mode: t.mode & 0o7777, uid: t.uid, gid: t.gid, id: t.dev + ':' + t.ino };
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
  return out;
}

/** Copy files, each to a temporary name renamed into place (unless inplace); an error per job. */
function copyBatchSync(fs: Fs, jobs: CopyJob[], tmpName: (dst: string) => string): (SystemErrorRecord | null)[] {
  const parent = (p: string) => p.slice(0, p.lastIndexOf('/'));
  return jobs.map((job) => {
    const target = job.inplace ? job.dst : (job.tmp ?? tmpName(job.dst));
    try {
      try {
        fs.copyFileSync(job.src, target);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || !fs.existsSync(job.src)) throw e;
        fs.mkdirSync(parent(job.dst), { recursive: true });
        fs.copyFileSync(job.src, target);
      }
      try {
        if (job.uid !== undefined && job.gid !== undefined) fs.chownSync(target, job.uid, job.gid);
        if (job.mode !== undefined) fs.chmodSync(target, job.mode);
        if (job.mtime !== undefined) fs.utimesSync(target, job.mtime / 1000, job.mtime / 1000);
        if (target !== job.dst) fs.renameSync(target, job.dst);
      } catch (e) {
        if (target !== job.dst) fs.rmSync(target, { force: true });
        throw e;
      }
      return null;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      return { code: err?.code ? String(err.code) : 'EIO', message: err?.message ? String(err.message) : String(e) };
    }
  });
}

export interface WriteJob {
  /** Final path. */
  path: string;
  data: Uint8Array;
  inplace?: boolean;
  mtime?: number;
  mode?: number;
}

/** Write small files whole, each to a temporary name renamed into place (unless inplace). */
export function writeBatchSync(fs: Fs, jobs: WriteJob[], tmpName: (dst: string) => string): (SystemErrorRecord | null)[] {
  const parent = (p: string) => p.slice(0, p.lastIndexOf('/'));
  return jobs.map((job) => {
    const target = job.inplace ? job.path : tmpName(job.path);
    try {
      try {
        fs.writeFileSync(target, job.data);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        fs.mkdirSync(parent(job.path), { recursive: true });
        fs.writeFileSync(target, job.data);
      }
      try {
        if (job.mode !== undefined) fs.chmodSync(target, job.mode);
        if (job.mtime !== undefined) fs.utimesSync(target, job.mtime / 1000, job.mtime / 1000);
        if (target !== job.path) fs.renameSync(target, job.path);
      } catch (e) {
        if (target !== job.path) fs.rmSync(target, { force: true });
        throw e;
      }
      return null;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      return { code: err?.code ? String(err.code) : 'EIO', message: err?.message ? String(err.message) : String(e) };
    }
  });
}

/** Read small files whole: the bytes, or an error, per path. */
function readBatchSync(fs: Fs, paths: string[]): (Uint8Array | SystemErrorRecord)[] {
  return paths.map((p) => {
    try {
      return fs.readFileSync(p);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      return { code: err?.code ? String(err.code) : 'EIO', message: err?.message ? String(err.message) : String(e) };
    }
  });
}

const THREAD_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const listDirSync = ${listDirSync.toString()};
const copyBatchSync = ${copyBatchSync.toString()};
const writeBatchSync = ${writeBatchSync.toString()};
const readBatchSync = ${readBatchSync.toString()};
const ops = {
  listDir: (m) => listDirSync(fs, m.dir, m.follow),
  copyBatch: (m) => copyBatchSync(fs, m.jobs, tmpName),
  writeBatch: (m) => writeBatchSync(fs, m.jobs, tmpName),
  readBatch: (m) => readBatchSync(fs, m.jobs),
};

let seq = 0;
const tmpName = (dst) => dst.slice(0, dst.lastIndexOf('/') + 1) + ${JSON.stringify(TMP)} + process.pid.toString(36) + '-' + (seq++).toString(36) + '-' + Math.random().toString(36).slice(2, 8);
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


export interface CopyJob {
  src: string;
  dst: string;
  inplace?: boolean;
  /** The temporary name to write to (the caller watches it for progress); made up when absent. */
  tmp?: string;
  mtime?: number;
  mode?: number;
  uid?: number;
  gid?: number;
}

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

type BatchOp = 'copyBatch' | 'writeBatch' | 'readBatch';

export class FsPool {
  readonly #threads: PoolThread[] = [];
  #next = 0;
  #id = 0;
  #closed = false;
  /** Jobs waiting for their batch to be sent, by kind. */
  #queues: Record<BatchOp, { job: unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }[]> = { copyBatch: [], writeBatch: [], readBatch: [] };
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

  listDir(dir: string, follow: boolean): Promise<WalkRecord[]> {
    return this.#call<WalkRecord[]>({ op: 'listDir', dir, follow });
  }

  /** Copy files in one message per thread; one error (or null) per job, in order. */
  async copyMany(jobs: CopyJob[]): Promise<(NodeJS.ErrnoException | null)[]> {
    const n = Math.min(this.size, Math.ceil(jobs.length / 32));
    const per = Math.ceil(jobs.length / n);
    const parts: Promise<(SystemErrorRecord | null)[]>[] = [];
    for (let i = 0; i < jobs.length; i += per) parts.push(this.#call({ op: 'copyBatch', jobs: jobs.slice(i, i + per) }));
    const results = (await Promise.all(parts)).flat();
    return results.map((r) => (r ? toSystemError(r) : null));
  }

  /** Copy one file; jobs issued in the same tick travel to a thread together. */
  copy(job: CopyJob): Promise<void> {
    return this.#batched('copyBatch', job).then(() => undefined);
  }

  /** Write a small file whole (temporary name, attributes, rename) in one round trip. */
  writeSmall(job: WriteJob): Promise<void> {
    return this.#batched('writeBatch', job).then(() => undefined);
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
