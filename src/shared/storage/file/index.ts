import fs, { promises as fsp } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AlreadyExistsError, FatalError, type FerryError, fromSystemError, InTheWayError, NotEmptyError, NotFoundError, UnsafePathError } from '../../errors.js';
import { abortable, abortablePages, checkDeclaredSize, destroyOnAbort, orAborted, readBody, sizeGuard, throwIfAborted } from '../body.js';
import { decodeKey, parentKey, rawKeyProblem, treeKeyProblem } from '../keys.js';
import type { Backend } from '../registry.js';
import { isAbandoned } from '../temp.js';
import type { Attrs, CopySource, Entry, Features, GetOptions, ListOptions, ObjectStore, PutOptions } from '../types.js';
import { inOrder, listTree, specialKind, type DirListing, type ReadRequest, type SortedListing, type WalkRecord } from '../tree.js';
import type { DirRead, SortedNames, TempFile } from './fs-ops.js';
import { clearForFileSync, FsPool, fsPath, listDirSync, MAIN_THREAD, openedAt, placeFilesSync, type PlaceJob, readBatchSync, toSystemError } from './pool.js';
import { SortedDir } from './sorted-dir.js';
import { PackedKeys, SpilledKeys, type KeySource } from './sorted-names.js';

const PAGE = 1000;
/** Files up to this size are read and written whole, in one round trip to a file-system thread. */
const SMALL = 1 << 20;
/** Files up to this size are read and written right on the calling thread: tens of microseconds. */
const INLINE = 256 << 10;
/** Copies of files this large report progress. */
const WATCH_SIZE = 64 << 20;
/** Directories up to this many names are read on the calling thread. */
const SYNC_LIST_MAX = 64;
/** A directory of this size or smaller likely holds at most about SYNC_LIST_MAX names (tmpfs: 20 bytes a name). */
const SMALL_DIR_BYTES = 2048;
/** A directory of this size or smaller holds a few thousand names at most: they may be read at once. */
const MAIN_DIR_BYTES = 64 << 10;
/** Names a listing reads on the calling thread before it uses file-system threads for directories of more than SYNC_LIST_MAX. */
const MAIN_LIST_BUDGET = 12288;
/** Names read on the calling thread between turns of the event loop (a few milliseconds' worth). */
const TURN_EVERY = 512;
/** Directories up to this many names are read whole on a file-system thread; larger ones sorted by name there first. */
const WHOLE_DIR_MAX = 1024;
/** A large directory's attributes are read this many names at a time. */
const STAT_PAGE = 1024;
/** --list-cutoff's default (rclone's): larger directories are sorted on disk. */
const LIST_CUTOFF = 1_000_000;
/** Verified directories remembered at most: keys arrive in order, so the recent ones are what counts. */
const DIR_CACHE_MAX = 4096;
const SCOPE = 'file:local';
const LINKS = 'ferry does not write through links inside the destination';

/**
 * The local disk. Keys are paths relative to `root` (which ends in '/'); directories are keys ending
 * in '/'. Listings walk the tree in key order (tree.ts); large directories and copies between local
 * stores run on file-system threads (pool.ts).
 *
 * A tree store's safety contract: every key stays inside the root (treeKeyProblem), no write goes
 * through a symlink below the root, whatever stands in a file's way is replaced only when the
 * source says the name changed type, and special files are never read or written.
 */
export class FileStore implements ObjectStore {
  readonly scheme = 'file';
  readonly description: string;
  readonly features: Features;
  readonly #pool: FsPool;
  readonly #inplace: boolean;
  /** The root's real path (symlinks resolved), for reads that follow no link (--links): read at the first. */
  #realRoot: string | undefined;
  /**
   * Directory keys ('a/b/') found to be real directories, every one above them too. A write looks
   * up its parent here instead of lstat()ing each ancestor; cleared when full, so memory does not
   * grow with the number of keys, and a directory this store removes is dropped.
   */
  readonly #dirs = new Set<string>();

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
      rawNames: true,
      exclusiveCreate: true,
    };
  }

  /**
   * Refuse a key that would leave the root or give a file a second key (`part`: the part that names
   * a path). A key may hold raw bytes (a name that is not valid UTF-8, features.rawNames), but only
   * as the one key decodeKey gives that name.
   */
  #checkKey(key: string, what: string, part = key): void {
    const why = treeKeyProblem(part) ?? rawKeyProblem(part);
    if (why !== undefined) throw new UnsafePathError(`${what} ${JSON.stringify(key)} in ${this.root}: refused, because ${why}`);
  }

  #remember(dir: string): void {
    if (this.#dirs.size >= DIR_CACHE_MAX) this.#dirs.clear();
    this.#dirs.add(dir);
  }

  /** Once a write made the missing directories down to directory key `dir`, they are real directories. */
  #rememberDirs(dir: string): void {
    if (dir === '' || this.#dirs.has(dir)) return;
    for (let i = dir.indexOf('/') + 1; i > 0; i = dir.indexOf('/', i) + 1) this.#remember(dir.slice(0, i));
  }

  /**
   * Check the directories on the way to `key` up to and including directory key `upTo` (its parent,
   * or a directory key itself): each that exists must be a real directory. A symlink fails with
   * UnsafePathError (the write would land outside the destination). A file, FIFO, socket or device
   * is unlinked when `fix` (the name changed type on the source) and else ends the check (nothing
   * under it exists). True when a directory on the way is missing: the write makes it, and the
   * caller remembers them (rememberDirs) once it did. `making`: directories a batch under way makes.
   */
  #checkWay(key: string, upTo: string, fix: boolean, what: string, making?: Set<string>): boolean {
    if (upTo === '' || this.#dirs.has(upTo)) return false;
    if (making?.has(upTo)) return true;
    // From here on, the directories below the one at `i` do not exist: the batch makes them.
    const missing = (i: number) => {
      if (making) for (let j = i; j > 0 && j <= upTo.length; j = upTo.indexOf('/', j) + 1) making.add(upTo.slice(0, j));
      return true;
    };
    for (let i = upTo.indexOf('/') + 1; i > 0; i = upTo.indexOf('/', i) + 1) {
      const dir = upTo.slice(0, i);
      if (this.#dirs.has(dir)) continue;
      if (making?.has(dir)) return missing(i);
      const path = this.root + upTo.slice(0, i - 1);
      let st;
      try {
        st = fs.lstatSync(fsPath(path));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(err, `${what} ${this.root}${key}`);
        return missing(i);
      }
      if (st.isDirectory()) {
        this.#remember(dir);
        continue;
      }
      if (st.isSymbolicLink()) throw new UnsafePathError(`${what} ${JSON.stringify(key)}: ${path} is a symlink: ${LINKS}`);
      if (!fix) return true;
      try {
        fs.unlinkSync(fsPath(path));
      } catch (err) {
        throw fromSystemError(err, `${what} ${this.root}${key}: remove ${path}, which stands where a directory must go`);
      }
      return missing(i);
    }
    return false;
  }

  /** Is a directory on the way to `key`, up to and including directory key `upTo`, a symlink? */
  #linkOnWay(key: string, upTo: string): boolean {
    try {
      this.#checkWay(key, upTo, false, 'look at');
      return false;
    } catch (err) {
      // Anything else (no permission to look) is for the operation itself to report.
      return err instanceof UnsafePathError;
    }
  }

  /** A write's failure as users should see it: errors of pool.ts's clearForFileSync get their class. */
  #writeError(err: unknown, key: string, what: string, kind = 'file'): FerryError {
    switch ((err as NodeJS.ErrnoException | null)?.code) {
      case 'FERRY_IN_THE_WAY':
        return new InTheWayError(`${this.root}${key}/ is a directory with content where ${kind} ${key} must go`, { cause: err });
      case 'FERRY_UNSAFE_PATH':
        return new UnsafePathError(`${what}: ${this.root}${key} is a symlink: ${LINKS} (--inplace writes the file itself)`, { cause: err });
      case 'ELOOP':
        // A name opened without following links is a symlink: a copy's source that became one
        // after it was listed (CopySource.noFollow), or an --inplace destination.
        return new UnsafePathError(`${what}: a symlink where ferry follows none (a source that became one after it was listed, with --links)`, { cause: err });
      case 'EEXIST':
        // Only a file created exclusively (putMany `fresh`) meets one: something is there already.
        return new AlreadyExistsError(`${what}: ${JSON.stringify(key)} exists already`, { cause: err });
      default:
        return fromSystemError(err, what);
    }
  }

  async *list(options: ListOptions = {}): AsyncIterable<Entry[]> {
    // Only the directory part names a path: prefix '..' lists the names that start with '..'.
    for (const k of [options.prefix, options.startAfter]) if (k !== undefined) this.#checkKey(k, 'list', k.slice(0, k.lastIndexOf('/') + 1));
    // Without following links, a symlinked directory is one entry with nothing under it, as the
    // walk from the root sees it: a prefix below it names no keys (the system would follow it).
    const startDir = (options.prefix ?? '').slice(0, (options.prefix ?? '').lastIndexOf('/') + 1);
    if (!options.followSymlinks && this.#linkOnWay(startDir, startDir)) return;
    // What this listing may still read on the calling thread (a small listing never waits for a
    // thread), and what it read since it last let the event loop turn.
    const budget = { names: MAIN_LIST_BUDGET, sinceTurn: 0 };
    const pages = listTree(options, PAGE, async (req, follow) => {
      const listing = await this.#readDir(req, follow, options, budget);
      if (!req.identify) return listing;
      const st = await fsp.stat(fsPath(this.root + req.read)).catch(() => undefined);
      return st ? { ...listing, id: `${st.dev}:${st.ino}` } : listing;
    });
    yield* abortablePages(pages, options.signal, `list ${this.root}${options.prefix ?? ''}`);
  }

  /**
   * One directory for the walk. A small one is read right here (well under a millisecond: no
   * thread round trip), and so is any one up to WHOLE_DIR_MAX names while the listing is young
   * (`budget`: starting threads costs more than a small listing); else a file-system thread reads
   * it, whole up to WHOLE_DIR_MAX names, or as its names in key order (sorted on disk above the
   * list cutoff) whose attributes are read a page at a time as the walk goes: the event loop never
   * stalls for long, the other core lists too, and a directory costs its packed names, not its
   * records.
   */
  async #readDir(req: ReadRequest, follow: boolean, options: ListOptions, budget: { names: number; sinceTurn: number }): Promise<DirListing | SortedListing> {
    // Directories read here are read synchronously, and what follows runs as microtasks: without
    // a turn of the event loop now and then, timers and signals (Ctrl-C) would wait for the end.
    if (budget.sinceTurn >= TURN_EVERY) {
      budget.sinceTurn = 0;
      await new Promise((resolve) => setImmediate(resolve));
    }
    options.signal?.throwIfAborted();
    const path = this.root + req.read;
    const temps = options.reclaim !== undefined;
    /** Records in readdir order (read here), in key order (on a thread), or keys in order. */
    let read: DirRead | { inOrder: WalkRecord[]; temps?: TempFile[] } | { sorted: SortedNames } | undefined;
    try {
      // A directory's size tells roughly how many names it holds (ext4 and xfs: bytes of entries,
      // btrfs: bytes of names, tmpfs: 20 a name): reading the names of one that looks large here
      // would be wasted, and unbounded for a huge one.
      const size = req.size ?? fs.statSync(fsPath(path)).size;
      const young = budget.names > 0;
      if (size > 0 && size <= (young ? MAIN_DIR_BYTES : SMALL_DIR_BYTES)) {
        const names = fs.readdirSync(fsPath(path));
        if (names.length <= (young ? WHOLE_DIR_MAX : SYNC_LIST_MAX)) {
          budget.names -= names.length;
          budget.sinceTurn += names.length + 1;
          read = listDirSync(MAIN_THREAD, path, { follow, names, temps });
        }
      }
      if (!read) {
        const o = { follow, temps, size, namePrefix: req.namePrefix, cutoff: Math.max(1, options.listCutoff ?? LIST_CUTOFF), wholeMax: WHOLE_DIR_MAX };
        const r = await this.#pool.readDir(path, req.after === undefined ? o : { ...o, after: req.after }, options.signal);
        read = 'sorted' in r ? r : r.temps ? { inOrder: r.records, temps: r.temps } : { inOrder: r.records };
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return { records: [] };
      throw fromSystemError(err, `list ${path}`);
    }
    let listing: DirListing | SortedListing;
    let found: TempFile[] | undefined;
    if ('sorted' in read) {
      listing = { sorted: new SortedDir({ pool: this.#pool, path, keys: sortedKeys(this.#pool, read.sorted), follow, page: STAT_PAGE, ...(options.signal ? { signal: options.signal } : {}) }) };
      found = read.sorted.temps;
    } else {
      listing = 'inOrder' in read ? { sorted: inOrder(read.inOrder) } : { records: read.records };
      found = read.temps;
    }
    // Only what a writer that is gone left behind (temp.ts): a live run's temporaries stay.
    for (const t of found ?? []) {
      if (!isAbandoned(t.name, t.mtime)) continue;
      const p = path + t.name;
      const removed = await fsp.unlink(fsPath(p)).then(
        () => true,
        () => false,
      );
      if (removed) options.reclaim!(p, t.size);
    }
    return listing;
  }

  async head(key: string, options: { followSymlinks?: boolean } = {}): Promise<Entry> {
    this.#checkKey(key, 'head');
    const p = this.root + key;
    // Without following links, what lies beyond a symlinked directory is not in this store (the listing's view).
    if (!options.followSymlinks && this.#linkOnWay(key, parentKey(key))) throw new NotFoundError(`stat ${p}: a symlink on its way is not followed`);
    let st;
    try {
      st = options.followSymlinks ? await fsp.stat(fsPath(p)) : await fsp.lstat(fsPath(p));
    } catch (err) {
      throw fromSystemError(err, `stat ${p}`);
    }
    if (key.endsWith('/') && !st.isDirectory()) throw new NotFoundError(`stat ${p}: not a directory`);
    const e: Entry = { key, size: st.isDirectory() ? 0 : st.size, mtime: st.mtimeMs, isDir: st.isDirectory(), mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
    if (st.isSymbolicLink()) {
      e.isSymlink = true;
      // A target that is not valid UTF-8 keeps its bytes the way names do (fs-ops.ts statEntry).
      e.target = await fsp.readlink(fsPath(p));
      if (e.target.includes('\uFFFD')) e.target = decodeKey(await fsp.readlink(fsPath(p), { encoding: 'buffer' }));
    } else if (!st.isFile() && !st.isDirectory()) {
      e.special = specialKind(st.mode);
    }
    return e;
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    this.#checkKey(key, 'read');
    const p = this.root + key;
    throwIfAborted(options.signal, `read ${p}`);
    const noFollow = options.followSymlinks === false;
    // A small whole file is read at once: right here up to INLINE (tens of microseconds), else in
    // one round trip to a file-system thread instead of four. Either way it is opened without
    // blocking and refused unless it is a regular file (readBatchSync).
    if (!noFollow && options.offset === undefined && options.length === undefined && options.sizeHint !== undefined && options.sizeHint <= SMALL) {
      let data;
      if (options.sizeHint <= INLINE) {
        const [r] = readBatchSync(MAIN_THREAD, [p]);
        if (!(r instanceof Uint8Array)) throw fromSystemError(toSystemError(r!), `read ${p}`);
        data = r;
      } else {
        try {
          data = await this.#pool.readSmall(p);
        } catch (err) {
          throw fromSystemError(err, `read ${p}`);
        }
      }
      return abortable(Readable.from([data], { objectMode: false }), options.signal, `read ${p}`);
    }
    let fh;
    try {
      fh = await fsp.open(fsPath(p), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | (noFollow ? fs.constants.O_NOFOLLOW : 0));
      const st = await fh.stat();
      if (noFollow && !openedAt(fs, fh.fd, this.#real(key))) throw Object.assign(new Error('ELOOP: a directory on its way is a symlink now'), { code: 'ELOOP' });
      if (!st.isFile()) {
        const what = st.isDirectory() ? 'a directory' : `a ${specialKind(st.mode)}`;
        throw new FatalError(`read ${p}: it is ${what}, not a regular file; ferry does not read FIFOs, sockets or devices`);
      }
    } catch (err) {
      await fh?.close();
      if (noFollow && (err as NodeJS.ErrnoException).code === 'ELOOP') throw new UnsafePathError(`read ${p}: it became a symlink after it was listed, and ferry does not follow it (--links)`, { cause: err });
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
    return abortable(fh.createReadStream({ start, ...(end === undefined ? {} : { end }), highWaterMark, autoClose: true }), options.signal, `read ${p}`);
  }

  /** Rename a temporary into place; an empty directory there makes way (clearForFileSync). */
  #renameIntoPlace(tmp: string, p: string): void {
    try {
      fs.renameSync(fsPath(tmp), fsPath(p));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EISDIR') throw err;
      clearForFileSync(fs, p);
      fs.renameSync(fsPath(tmp), fsPath(p));
    }
  }

  /**
   * Give a complete temporary its final name only if nothing has that name (`ifAbsent`): link(2)
   * fails with EEXIST atomically where rename(2) would replace, so of racing writers exactly one
   * links. Anything at the name, an empty directory or a symlink too, counts as there. The caller
   * removes the temporary.
   */
  async #linkIntoPlace(tmp: string, p: string, key: string): Promise<void> {
    try {
      await fsp.link(fsPath(tmp), fsPath(p));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new AlreadyExistsError(`write ${p}: ${JSON.stringify(key)} exists already`, { cause: err });
      // vfat, some FUSE and network file systems: no hard links, so no atomic conditional create.
      if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'EXDEV' || code === 'EMLINK') {
        throw new FatalError(`write ${p}: this file system cannot create ${JSON.stringify(key)} conditionally (no hard links: ${code})`, { cause: err });
      }
      throw err;
    }
    await fsp.unlink(fsPath(tmp)).catch(() => {});
  }

  /**
   * An interrupted write, or a body that is not its announced `size`, leaves the key as it was
   * (the temporary is removed; in place, the file holds what was written).
   */
  async put(key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    const what = `write ${this.root}${key}`;
    const unhook = destroyOnAbort(body, options.signal, what);
    try {
      throwIfAborted(options.signal, what);
      if (Buffer.isBuffer(body)) checkDeclaredSize(body, options.size, what);
      await this.#put(key, body, options);
    } catch (err) {
      if (!Buffer.isBuffer(body)) body.destroy();
      throw orAborted(err, options.signal, what);
    } finally {
      unhook();
    }
  }

  async #put(key: string, body: Readable | Buffer, options: PutOptions): Promise<void> {
    this.#checkKey(key, 'write');
    if (key.endsWith('/')) return this.mkdir(key, options.mode === undefined ? {} : { mode: options.mode });
    const p = this.root + key;
    const making = this.#checkWay(key, parentKey(key), true, 'write');
    // File `key` replaces directory `key/` if that is empty: it is no directory to remember then.
    this.#dirs.delete(key + '/');
    const attrs = { ...(options.mtime === undefined ? {} : { mtime: options.mtime }), ...(options.mode === undefined ? {} : { mode: options.mode }) };
    // A conditional create takes the path below (link, not rename), whatever its size.
    if (!options.ifAbsent && (Buffer.isBuffer(body) ? body.length <= SMALL : options.size !== undefined && options.size <= SMALL)) {
      // A small file is written whole (temporary name, attributes, rename) in one round trip to a
      // file-system thread, not five.
      const data = Buffer.isBuffer(body) ? body : await readBody(body, options.size, `write ${p}`);
      const job: PlaceJob = { dst: p, data, inplace: this.#inplace, ...attrs };
      if (data.length <= INLINE) {
        const [err] = placeFilesSync(MAIN_THREAD, [job]);
        if (err) throw this.#writeError(toSystemError(err), key, `write ${p}`);
      } else {
        try {
          await this.#pool.writeSmall(job);
        } catch (err) {
          throw this.#writeError(err, key, `write ${p}`);
        }
      }
      if (making) this.#rememberDirs(parentKey(key));
      return;
    }
    // A conditional create is never written in place: only a whole file may appear under the key.
    const inplace = this.#inplace && !options.ifAbsent;
    const target = inplace ? p : MAIN_THREAD.tmpPath(p);
    // A fresh temporary is created exclusively; in place, nothing but a regular file may be there
    // (never a symlink, which would be followed, nor a FIFO, which would block the open).
    const C = fs.constants;
    const flags = inplace ? C.O_WRONLY | C.O_CREAT | C.O_TRUNC | C.O_NOFOLLOW | C.O_NONBLOCK : 'wx';
    try {
      if (inplace) clearForFileSync(fs, p);
      // Open first: a missing parent directory is made before any byte of the body is consumed.
      let fh;
      try {
        fh = await fsp.open(fsPath(target), flags);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        await fsp.mkdir(fsPath(dirname(p)), { recursive: true });
        fh = await fsp.open(fsPath(target), flags);
      }
      if (Buffer.isBuffer(body)) {
        try {
          await fh.writeFile(body);
        } finally {
          await fh.close();
        }
      } else {
        const out = fh.createWriteStream({ highWaterMark: 1 << 20 });
        const signal = options.signal ? { signal: options.signal } : {};
        if (options.size === undefined) await pipeline(body, out, signal);
        else await pipeline(body, sizeGuard(options.size, `write ${p}`), out, signal);
      }
      if (options.mode !== undefined) await fsp.chmod(fsPath(target), options.mode);
      if (options.mtime !== undefined) await fsp.utimes(fsPath(target), fsTime(options.mtime), fsTime(options.mtime));
      if (options.ifAbsent) await this.#linkIntoPlace(target, p, key);
      else if (target !== p) this.#renameIntoPlace(target, p);
    } catch (err) {
      if (target !== p) await fsp.rm(fsPath(target), { force: true }).catch(() => {});
      throw this.#writeError(err, key, `write ${p}`);
    }
    if (making) this.#rememberDirs(parentKey(key));
  }

  /**
   * Deleting what is not there succeeds, and so does deleting a file key whose name is a directory
   * now, or a directory key whose name is a file: that key is gone. A symlink is removed itself.
   */
  async delete(key: string): Promise<void> {
    this.#checkKey(key, 'delete');
    this.#checkWay(key, parentKey(key), false, 'delete');
    const isDir = key.endsWith('/');
    const p = this.root + (isDir ? key.slice(0, -1) : key);
    try {
      if (isDir) {
        this.#dirs.delete(key);
        await fsp.rmdir(fsPath(p));
      } else await fsp.unlink(fsPath(p));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      if (!isDir && (code === 'EISDIR' || code === 'EPERM') && (await fsp.lstat(fsPath(p)).then((st) => st.isDirectory(), () => false))) return;
      // POSIX lets rmdir say EEXIST for a directory with entries.
      if (isDir && (code === 'ENOTEMPTY' || code === 'EEXIST')) throw new NotEmptyError(`delete ${this.root + key}: the directory is not empty`, { cause: err });
      throw fromSystemError(err, `delete ${this.root + key}`);
    }
  }

  async mkdir(key: string, options: { mode?: number } = {}): Promise<void> {
    this.#checkKey(key, 'mkdir');
    const dirKey = key.endsWith('/') ? key : key + '/';
    const p = this.root + key;
    this.#checkWay(dirKey, dirKey, true, 'mkdir');
    try {
      // Fails with EEXIST if something not a directory appeared there since the check.
      await fsp.mkdir(fsPath(p), { recursive: true, ...(options.mode === undefined ? {} : { mode: options.mode }) });
    } catch (err) {
      throw fromSystemError(err, `mkdir ${p}`);
    }
    this.#rememberDirs(dirKey);
  }

  async symlink(key: string, target: string): Promise<void> {
    this.#checkKey(key, 'symlink');
    const p = this.root + key;
    const making = this.#checkWay(key, parentKey(key), true, 'symlink');
    this.#dirs.delete(key + '/');
    const tmp = MAIN_THREAD.tmpPath(p);
    try {
      try {
        await fsp.symlink(fsPath(target), fsPath(tmp));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        await fsp.mkdir(fsPath(dirname(p)), { recursive: true });
        await fsp.symlink(fsPath(target), fsPath(tmp));
      }
      this.#renameIntoPlace(tmp, p);
    } catch (err) {
      await fsp.rm(fsPath(tmp), { force: true }).catch(() => {});
      throw this.#writeError(err, key, `symlink ${p}`, 'symlink');
    }
    if (making) this.#rememberDirs(parentKey(key));
  }

  /** Without `isSymlink`, `key` must not be a symlink: chmod and utimes would change what it points at. */
  async setAttrs(key: string, attrs: Attrs, options: { isSymlink?: boolean } = {}): Promise<void> {
    this.#checkKey(key, 'set attributes of');
    this.#checkWay(key, parentKey(key), false, 'set attributes of');
    const p = this.root + (key.endsWith('/') ? key.slice(0, -1) : key);
    const at = fsPath(p);
    try {
      if (!options.isSymlink && (await fsp.lstat(at)).isSymbolicLink()) {
        throw new UnsafePathError(`set attributes of ${JSON.stringify(key)}: ${p} is a symlink: ${LINKS}`);
      }
      // chown before chmod: chown clears setuid/setgid bits.
      if (attrs.uid !== undefined && attrs.gid !== undefined && this.features.attrs?.owner) {
        if (options.isSymlink) await fsp.lchown(at, attrs.uid, attrs.gid);
        else await fsp.chown(at, attrs.uid, attrs.gid);
      }
      if (attrs.mode !== undefined && !options.isSymlink) await fsp.chmod(at, attrs.mode);
      if (attrs.mtime !== undefined) {
        const t = fsTime(attrs.mtime);
        if (options.isSymlink) await fsp.lutimes(at, t, t);
        else await fsp.utimes(at, t, t);
      }
    } catch (err) {
      throw fromSystemError(err, `set attributes of ${p}`);
    }
  }

  copySource(key: string, options: { followSymlinks?: boolean } = {}): CopySource {
    this.#checkKey(key, 'copy');
    if (options.followSymlinks !== false) return { scope: SCOPE, location: this.root + key };
    // `real`: where the file must be (file stores only), checked once it is opened.
    const source: CopySource & { real: string } = { scope: SCOPE, location: this.root + key, noFollow: true, real: this.#real(key) };
    return source;
  }

  /** Where `key` really is: the root's real path and the key (a read that follows no link must open that file). */
  #real(key: string): string {
    // As a key holds a name: its bytes, those that are not UTF-8 as lone surrogates (keys.ts).
    this.#realRoot ??= decodeKey(fs.realpathSync(fsPath(this.root.slice(0, -1)), { encoding: 'buffer' })) + '/';
    return this.#realRoot + key;
  }

  /** Disk-to-disk copy: copy_file_range through the kernel, batched on the file-system threads. */
  async copyFrom(key: string, source: CopySource, options: PutOptions & { size: number } = { size: 0 }): Promise<void> {
    this.#checkKey(key, 'copy to');
    const dst = this.root + key;
    const making = this.#checkWay(key, parentKey(key), true, 'copy to');
    this.#dirs.delete(key + '/');
    // The copy runs in one system call on a file-system thread; for a large file, progress is the
    // size of the file being written, looked at twice a second.
    const watch = options.onProgress && options.size >= WATCH_SIZE ? (this.#inplace ? dst : MAIN_THREAD.tmpPath(dst)) : undefined;
    let timer: NodeJS.Timeout | undefined;
    if (watch) {
      const onProgress = options.onProgress!;
      timer = setInterval(() => {
        fsp.stat(fsPath(watch)).then(
          (st) => onProgress(st.size),
          () => {},
        );
      }, 500);
    }
    try {
      await this.#pool.copy({
        src: source.location as string,
        ...(source.noFollow ? { srcNoFollow: (source as CopySource & { real: string }).real } : {}),
        dst,
        inplace: this.#inplace,
        ...(watch && !this.#inplace ? { tmp: watch } : {}),
        ...(options.mtime === undefined ? {} : { mtime: options.mtime }),
        ...(options.mode === undefined ? {} : { mode: options.mode }),
      });
    } catch (err) {
      throw this.#writeError(err, key, `copy ${String(source.location)} to ${dst}`);
    } finally {
      clearInterval(timer);
    }
    if (making) this.#rememberDirs(parentKey(key));
  }

  /** A key that cannot be written (refused, or in the way) fails on its own; the others are copied. */
  async copyFromMany(items: { key: string; source: CopySource; options: PutOptions & { size: number } }[]): Promise<(Error | undefined)[]> {
    return this.#placeMany(
      items.map(({ key, source, options }) => ({ key, what: 'copy to', from: `copy ${String(source.location)} to` })),
      (i) => {
        const { key, source, options } = items[i]!;
        return { src: source.location as string, ...(source.noFollow ? { srcNoFollow: (source as CopySource & { real: string }).real } : {}), dst: this.root + key, inplace: this.#inplace, ...(options.mtime === undefined ? {} : { mtime: options.mtime }), ...(options.mode === undefined ? {} : { mode: options.mode }) };
      },
    );
  }

  /**
   * Small whole files read at once on the file-system threads (one message per thread), each as
   * get() reads it: opened without blocking, refused unless a regular file. The bytes or the error
   * per key, in order. With `sizes`, a symlink is refused too, and only a file whose size differs
   * is stat'ed (readPackedSync).
   */
  async getMany(keys: string[], options: { signal?: AbortSignal; sizes?: number[] } = {}): Promise<(Buffer | Error)[]> {
    throwIfAborted(options.signal, `read from ${this.root}`);
    const results: (Buffer | Error)[] = new Array<Buffer | Error>(keys.length);
    const paths: string[] = [];
    const sizes: number[] | undefined = options.sizes ? [] : undefined;
    const sent: number[] = [];
    keys.forEach((key, i) => {
      try {
        this.#checkKey(key, 'read');
        paths.push(this.root + key);
        sizes?.push(options.sizes![i]!);
        sent.push(i);
      } catch (err) {
        results[i] = err as Error;
      }
    });
    const read = await this.#pool.readMany(paths, sizes);
    read.forEach((r, j) => {
      results[sent[j]!] = Buffer.isBuffer(r) ? r : fromSystemError(r, `read ${paths[j]!}`);
    });
    return results;
  }

  /**
   * Small whole files in one round trip per file-system thread: each to a fresh temporary with its
   * attributes (owner before mode: chown clears set-user/group-ID bits), renamed into place, as
   * put() writes them. `ifAbsent` is not honoured here (put() it). `fresh`: each file is created
   * at its name, exclusively, without a temporary and a rename (placeFilesSync `exclusive`).
   */
  async putMany(items: { key: string; body: Buffer; options: PutOptions; owner?: { uid: number; gid: number } }[], options: { signal?: AbortSignal; fresh?: boolean } = {}): Promise<(Error | undefined)[]> {
    throwIfAborted(options.signal, `write to ${this.root}`);
    return this.#placeMany(
      items.map(({ key }) => ({ key, what: 'write', from: 'write' })),
      (i) => {
        const { key, body, options: o, owner } = items[i]!;
        if (o.ifAbsent) throw new FatalError(`write ${this.root + key}: putMany does not create conditionally`);
        checkDeclaredSize(body, o.size, `write ${this.root + key}`);
        if (key.endsWith('/')) throw new FatalError(`write ${this.root + key}: putMany writes files, not directories`);
        // Set one by one: spreads made three short-lived objects a file.
        const job: PlaceJob = { dst: this.root + key, data: body, inplace: this.#inplace };
        if (options.fresh) job.exclusive = true;
        if (o.mtime !== undefined) job.mtime = o.mtime;
        if (o.mode !== undefined) job.mode = o.mode;
        if (owner && this.features.attrs?.owner) {
          job.uid = owner.uid;
          job.gid = owner.gid;
        }
        return job;
      },
    );
  }

  /**
   * Files placed in one batch on the file-system threads (copyFromMany, putMany): each key checked
   * (its name, no symlink on its way) before its job is made, one result per item, in order.
   */
  async #placeMany(items: { key: string; what: string; from: string }[], job: (i: number) => PlaceJob): Promise<(Error | undefined)[]> {
    const results: (Error | undefined)[] = new Array<Error | undefined>(items.length).fill(undefined);
    const jobs: PlaceJob[] = [];
    const sent: { i: number; making: boolean }[] = [];
    const making = new Set<string>();
    items.forEach(({ key, what }, i) => {
      try {
        const made = job(i);
        this.#checkKey(key, what);
        const m = this.#checkWay(key, parentKey(key), true, what, making);
        this.#dirs.delete(key + '/');
        jobs.push(made);
        sent.push({ i, making: m });
      } catch (err) {
        results[i] = err as Error;
      }
    });
    const errors = await this.#pool.copyMany(jobs);
    errors.forEach((err, j) => {
      const { i, making: m } = sent[j]!;
      const { key, from } = items[i]!;
      if (err) results[i] = this.#writeError(err, key, `${from} ${this.root + key}`);
      else if (m) this.#rememberDirs(parentKey(key));
    });
    return results;
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

/**
 * An mtime (ms) as fs.utimes takes it. Seconds keep the sub-millisecond part (a Date would drop it,
 * and a whole millisecond turns into x.999 on the way to the kernel), but Node turns a negative
 * number, a time before 1970, into "now": those go as a Date, floored so that the second stays.
 */
function fsTime(ms: number): number | Date {
  return ms >= 0 ? ms / 1000 : new Date(Math.floor(ms));
}

/** The keys of a directory sorted on a thread: packed in memory, or spilled runs merged as they are read. */
function sortedKeys(pool: FsPool, sorted: SortedNames): KeySource {
  if (sorted.spill) return new SpilledKeys(sorted.spill, (spill) => pool.releaseSpill(spill));
  return new PackedKeys(sorted.packed ?? new Uint8Array(0));
}
