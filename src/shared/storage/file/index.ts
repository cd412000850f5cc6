import fs, { promises as fsp } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fromSystemError, NotFoundError } from '../errors.js';
import type { Backend } from '../registry.js';
import type { Attrs, CopySource, Entry, Features, GetOptions, ListOptions, ObjectStore, PutOptions } from '../types.js';
import { listTree, type WalkRecord } from '../tree.js';
import { FsPool, listDirSync, toSystemError, writeBatchSync } from './pool.js';

const PAGE = 1000;
/** Files up to this size are read and written whole, in one round trip to a file-system thread. */
const SMALL = 1 << 20;
/** Files up to this size are read and written right on the calling thread: tens of microseconds. */
const INLINE = 256 << 10;
/** Copies of files this large report progress. */
const WATCH_SIZE = 64 << 20;
/** Directories up to this many names are read on the calling thread. */
const SYNC_LIST_MAX = 1024;
const TMP = '.ferry-tmp-';
const SCOPE = 'file:local';

/**
 * The local disk. Keys are paths relative to `root` (which ends in '/'); directories are keys ending
 * in '/'. Listings walk the tree in key order (walk.ts); large directories and copies between local
 * stores run on file-system threads (pool.ts).
 */
export class FileStore implements ObjectStore {
  readonly scheme = 'file';
  readonly description: string;
  readonly features: Features;
  readonly #pool: FsPool;
  readonly #inplace: boolean;

  readonly #release: () => Promise<void>;

  /** `pool`: file-system threads shared with other stores (the caller closes it); else its own. */
  constructor(readonly root: string, options: { inplace?: boolean; pool?: { pool: FsPool; release(): Promise<void> } } = {}) {
    this.description = root;
    this.#inplace = options.inplace ?? false;
    if (options.pool) {
      this.#pool = options.pool.pool;
      this.#release = options.pool.release;
    } else {
      const own = new FsPool(defaultThreads());
      this.#pool = own;
      this.#release = () => own.close();
    }
    const isRoot = process.getuid?.() === 0;
    this.features = {
      copy: { scope: SCOPE, local: true },
      attrs: { mode: true, owner: isRoot, mtime: true },
      symlinks: true,
      dirs: true,
      inplace: true,
    };
  }

  list(options: ListOptions = {}): AsyncIterable<Entry[]> {
    return listTree(options, PAGE, async (req, follow) => {
      const records = await this.#readDir(req.read, follow, options.signal);
      if (!req.identify) return { records };
      const st = await fsp.stat(this.root + req.read).catch(() => undefined);
      return st ? { records, id: `${st.dev}:${st.ino}` } : { records };
    });
  }

  /**
   * One directory's records. The names come in one system call; a small directory's attributes
   * are read right here (well under a millisecond: no thread round trip, no thread to start), a
   * large one's on a file-system thread, so the event loop never stalls for long.
   */
  async #readDir(dir: string, follow: boolean, signal?: AbortSignal): Promise<WalkRecord[]> {
    signal?.throwIfAborted();
    const path = this.root + dir;
    try {
      const names = fs.readdirSync(path);
      return names.length <= SYNC_LIST_MAX ? listDirSync(fs, path, follow, names) : await this.#pool.listDir(path, follow);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      throw fromSystemError(err, `list ${path}`);
    }
  }

  async head(key: string, options: { followSymlinks?: boolean } = {}): Promise<Entry> {
    const p = this.root + key;
    let st;
    try {
      st = options.followSymlinks ? await fsp.stat(p) : await fsp.lstat(p);
    } catch (err) {
      throw fromSystemError(err, `stat ${p}`);
    }
    if (key.endsWith('/') && !st.isDirectory()) throw new NotFoundError(`stat ${p}: not a directory`);
    const e: Entry = { key, size: st.isDirectory() ? 0 : st.size, mtime: st.mtimeMs, isDir: st.isDirectory(), mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
    if (st.isSymbolicLink()) {
      e.isSymlink = true;
      e.target = await fsp.readlink(p);
    }
    return e;
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const p = this.root + key;
    // A small whole file is read at once: right here up to INLINE (tens of microseconds), else in
    // one round trip to a file-system thread instead of four.
    if (options.offset === undefined && options.length === undefined && options.sizeHint !== undefined && options.sizeHint <= SMALL) {
      try {
        const data = options.sizeHint <= INLINE ? fs.readFileSync(p) : await this.#pool.readSmall(p);
        return Readable.from([data], { objectMode: false });
      } catch (err) {
        throw fromSystemError(err, `read ${p}`);
      }
    }
    let fh;
    try {
      fh = await fsp.open(p, 'r');
    } catch (err) {
      throw fromSystemError(err, `open ${p}`);
    }
    const start = options.offset ?? 0;
    if (options.length === 0) {
      await fh.close();
      return Readable.from([]);
    }
    const end = options.length === undefined ? undefined : start + options.length - 1;
    // Small files get small buffers: a 1 MiB buffer per 4 KiB file is mostly garbage to collect.
    const expected = options.length ?? options.sizeHint;
    const highWaterMark = expected === undefined ? 1 << 20 : Math.min(1 << 20, Math.max(16 << 10, expected + 1));
    return fh.createReadStream({ start, ...(end === undefined ? {} : { end }), highWaterMark, autoClose: true });
  }

  #tmpPath(p: string): string {
    return `${dirname(p)}/${TMP}${process.pid.toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  }

  async put(key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    const p = this.root + key;
    if (key.endsWith('/')) return this.mkdir(key, options.mode === undefined ? {} : { mode: options.mode });
    if (Buffer.isBuffer(body) ? body.length <= SMALL : options.size !== undefined && options.size <= SMALL) {
      // A small file is written whole (temporary name, attributes, rename) in one round trip to a
      // file-system thread, not five.
      const data = Buffer.isBuffer(body) ? body : await collect(body, options.signal);
      if (data.length <= INLINE) {
        const job = { path: p, data, inplace: this.#inplace, ...(options.mtime === undefined ? {} : { mtime: options.mtime }), ...(options.mode === undefined ? {} : { mode: options.mode }) };
        const [err] = writeBatchSync(fs, [job], (dst) => this.#tmpPath(dst));
        if (err) throw fromSystemError(toSystemError(err), `write ${p}`);
        return;
      }
      try {
        await this.#pool.writeSmall({
          path: p,
          data,
          inplace: this.#inplace,
          ...(options.mtime === undefined ? {} : { mtime: options.mtime }),
          ...(options.mode === undefined ? {} : { mode: options.mode }),
        });
      } catch (err) {
        throw fromSystemError(err, `write ${p}`);
      }
      return;
    }
    const target = this.#inplace ? p : this.#tmpPath(p);
    try {
      // Open first: a missing parent directory is made before any byte of the body is consumed.
      let fh;
      try {
        fh = await fsp.open(target, 'w');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        await fsp.mkdir(dirname(p), { recursive: true });
        fh = await fsp.open(target, 'w');
      }
      if (Buffer.isBuffer(body)) {
        try {
          await fh.writeFile(body);
        } finally {
          await fh.close();
        }
      } else {
        await pipeline(body, fh.createWriteStream({ highWaterMark: 1 << 20 }), options.signal ? { signal: options.signal } : {});
      }
      if (options.mode !== undefined) await fsp.chmod(target, options.mode);
      if (options.mtime !== undefined) await fsp.utimes(target, options.mtime / 1000, options.mtime / 1000);
      if (target !== p) await fsp.rename(target, p);
    } catch (err) {
      if (target !== p) await fsp.rm(target, { force: true }).catch(() => {});
      throw fromSystemError(err, `write ${p}`);
    }
  }

  async delete(key: string): Promise<void> {
    const p = this.root + key;
    try {
      if (key.endsWith('/')) await fsp.rmdir(p);
      else await fsp.unlink(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw fromSystemError(err, `delete ${p}`);
    }
  }

  async mkdir(key: string, options: { mode?: number } = {}): Promise<void> {
    const p = this.root + key;
    try {
      await fsp.mkdir(p, { recursive: true, ...(options.mode === undefined ? {} : { mode: options.mode }) });
      const st = await fsp.lstat(p);
      if (!st.isDirectory()) throw Object.assign(new Error(`${p} exists and is not a directory`), { code: 'EEXIST' });
    } catch (err) {
      throw fromSystemError(err, `mkdir ${p}`);
    }
  }

  async symlink(key: string, target: string): Promise<void> {
    const p = this.root + key;
    const tmp = this.#tmpPath(p);
    try {
      try {
        await fsp.symlink(target, tmp);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        await fsp.mkdir(dirname(p), { recursive: true });
        await fsp.symlink(target, tmp);
      }
      await fsp.rename(tmp, p);
    } catch (err) {
      await fsp.rm(tmp, { force: true }).catch(() => {});
      throw fromSystemError(err, `symlink ${p}`);
    }
  }

  async setAttrs(key: string, attrs: Attrs, options: { isSymlink?: boolean } = {}): Promise<void> {
    const p = this.root + key;
    try {
      // chown before chmod: chown clears setuid/setgid bits.
      if (attrs.uid !== undefined && attrs.gid !== undefined && this.features.attrs?.owner) {
        if (options.isSymlink) await fsp.lchown(p, attrs.uid, attrs.gid);
        else await fsp.chown(p, attrs.uid, attrs.gid);
      }
      if (attrs.mode !== undefined && !options.isSymlink) await fsp.chmod(p, attrs.mode);
      if (attrs.mtime !== undefined) {
        const t = attrs.mtime / 1000;
        if (options.isSymlink) await fsp.lutimes(p, t, t);
        else await fsp.utimes(p, t, t);
      }
    } catch (err) {
      throw fromSystemError(err, `set attributes of ${p}`);
    }
  }

  copySource(key: string): CopySource {
    return { scope: SCOPE, location: this.root + key };
  }

  /** Disk-to-disk copy: copy_file_range through the kernel, batched on the file-system threads. */
  async copyFrom(key: string, source: CopySource, options: PutOptions & { size: number } = { size: 0 }): Promise<void> {
    const dst = this.root + key;
    // The copy runs in one system call on a file-system thread; for a large file, progress is the
    // size of the file being written, looked at twice a second.
    const watch = options.onProgress && options.size >= WATCH_SIZE ? (this.#inplace ? dst : this.#tmpPath(dst)) : undefined;
    let timer: NodeJS.Timeout | undefined;
    if (watch) {
      const onProgress = options.onProgress!;
      timer = setInterval(() => {
        fsp.stat(watch).then(
          (st) => onProgress(st.size),
          () => {},
        );
      }, 500);
    }
    try {
      await this.#pool.copy({
        src: source.location as string,
        dst,
        inplace: this.#inplace,
        ...(watch && !this.#inplace ? { tmp: watch } : {}),
        ...(options.mtime === undefined ? {} : { mtime: options.mtime }),
        ...(options.mode === undefined ? {} : { mode: options.mode }),
      });
    } catch (err) {
      throw fromSystemError(err, `copy ${String(source.location)} to ${dst}`);
    } finally {
      clearInterval(timer);
    }
  }

  async copyFromMany(items: { key: string; source: CopySource; options: PutOptions & { size: number } }[]): Promise<(Error | undefined)[]> {
    const results = await this.#pool.copyMany(
      items.map(({ key, source, options }) => ({
        src: source.location as string,
        dst: this.root + key,
        inplace: this.#inplace,
        ...(options.mtime === undefined ? {} : { mtime: options.mtime }),
        ...(options.mode === undefined ? {} : { mode: options.mode }),
      })),
    );
    return results.map((err, i) => (err ? fromSystemError(err, `copy ${String(items[i]!.source.location)} to ${this.root + items[i]!.key}`) : undefined));
  }

  async close(): Promise<void> {
    await this.#release();
  }
}

/** Threads enough to keep two cores busy; starting one costs ~20 ms, so not one per core beyond. */
function defaultThreads(): number {
  return Math.max(2, Math.min(4, availableParallelism()));
}

/**
 * The local-disk backend. The stores it opens (source and destination of a disk-to-disk sync)
 * share one set of file-system threads, closed with the last store.
 */
export function fileBackend(): Backend {
  let shared: FsPool | undefined;
  let users = 0;
  const acquire = () => {
    shared ??= new FsPool(defaultThreads());
    users++;
    const pool = shared;
    let released = false;
    return {
      pool,
      async release() {
        if (released) return;
        released = true;
        if (--users === 0 && shared === pool) {
          shared = undefined;
          await pool.close();
        }
      },
    };
  };
  return {
    scheme: 'file',
    summary: '/path, ./relative, ~/home, file:///path — the local disk',
    async open(address, options) {
      return new FileStore(address.bucket, { inplace: options.inplace ?? false, pool: acquire() });
    },
  };
}

/** A small stream's bytes (its declared size is at most SMALL). */
async function collect(body: Readable, signal?: AbortSignal): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of body) {
    signal?.throwIfAborted();
    chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array));
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}
