import fs, { type Dirent } from 'node:fs';
import { join } from 'node:path';
import { compareKeys, decodeKey, encodeKey, hasRawBytes } from '../keys.js';
import { isTempName, tempName } from '../temp.js';
import { specialKind, type NodeKind, type WalkRecord } from '../tree.js';
import { KeyPacker, sortKeys, type Spill } from './sorted-names.js';

/**
 * Synchronous file-system operations, which run on the main thread (small jobs) and on the
 * file-system threads of pool.ts (fs-thread.ts): one message round trip for a whole batch instead
 * of one thread-pool round trip per system call.
 */
type Fs = typeof import('node:fs');

/** What differs between the threads that run these functions. */
export interface SyncEnv {
  fs: Fs;
  /** tree.ts specialKind. */
  specialKind: (mode: number) => string;
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

export interface SystemErrorRecord {
  code: string;
  message: string;
}

/**
 * A path as fs takes it: one that holds raw bytes (lone surrogates U+DC80..U+DCFF, keys.ts
 * encodeKey) as a Buffer of the bytes it names, any other as it is. Paths travel between threads
 * as strings (lone surrogates survive postMessage) and turn into bytes only here, at the system call.
 */
export function fsPath(p: string): string | Buffer {
  return hasRawBytes(p) ? encodeKey(p) : p;
}

/** Node decodes names as UTF-8 and bytes that are not as U+FFFD: such a name no longer reaches its file (see rawNames). */
const REPLACEMENT = '\uFFFD';

/** The fields of a record beyond name, kind, size, mtime, mode, uid and gid. */
export type RecordExtra = Pick<WalkRecord, 'id' | 'special' | 'error' | 'target' | 'follow'>;

/**
 * Where the records of a directory go: objects on the calling thread, columns on a file-system
 * thread (its reply). A thread makes no object a name: V8 would see such objects outlive a
 * collection now and then while a page is read, start allocating them in the old generation,
 * and the thread's heap would grow until its next full collection.
 */
export interface RecordSink {
  add(name: string, kind: NodeKind, size: number, mtime: number, mode: number | undefined, uid: number | undefined, gid: number | undefined, extra: RecordExtra | undefined): void;
}

/** Records as objects. */
export class RecordList implements RecordSink {
  readonly records: WalkRecord[] = [];
  add(name: string, kind: NodeKind, size: number, mtime: number, mode: number | undefined, uid: number | undefined, gid: number | undefined, extra: RecordExtra | undefined): void {
    // One literal for the common case: one object shape, no transitions.
    const r: WalkRecord = mode === undefined || uid === undefined || gid === undefined ? { name, kind, size, mtime } : { name, kind, size, mtime, mode, uid, gid };
    if (extra) Object.assign(r, extra);
    this.records.push(r);
  }
}

/**
 * Look at `name` in directory `dir` and add its record to `sink`; false when it is gone. A name
 * that exists but cannot be looked at (a path too long for the system, a link loop, an I/O error)
 * gets a record with `error`: that name fails, not the listing.
 */
function statEntry(env: SyncEnv, dir: string, name: string, follow: boolean, sink: RecordSink): boolean {
  const fs = env.fs;
  const p = fsPath(dir + name);
  let st;
  try {
    st = fs.lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    sink.add(name, 'f', 0, 0, undefined, undefined, undefined, { error: `cannot read its attributes: ${(e as Error).message}` });
    return true;
  }
  const kind: NodeKind = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFile() ? 'f' : 'o';
  let extra: RecordExtra | undefined;
  if (kind === 'd') extra = { id: st.dev + ':' + st.ino };
  else if (kind === 'o') extra = { special: env.specialKind(st.mode) };
  else if (kind === 'l') {
    let target = '';
    try {
      target = fs.readlinkSync(p);
      // A target that is not valid UTF-8 keeps its bytes the way names do.
      if (target.includes(REPLACEMENT)) target = decodeKey(fs.readlinkSync(p, { encoding: 'buffer' }));
    } catch {
      // Unreadable: reported as an empty target.
    }
    extra = { target };
    if (follow) {
      try {
        const t = fs.statSync(p);
        const tk = t.isDirectory() ? 'd' : t.isFile() ? 'f' : 'o';
        extra.follow = { kind: tk, size: t.size, mtime: t.mtimeMs, mode: t.mode & 0o7777, uid: t.uid, gid: t.gid, id: t.dev + ':' + t.ino };
        if (tk === 'o') extra.follow.special = env.specialKind(t.mode);
      } catch {
        extra.follow = null;
      }
    }
  }
  sink.add(name, kind, st.size, st.mtimeMs, st.mode & 0o7777, st.uid, st.gid, extra);
  return true;
}

/**
 * The names of `dir` that Node's UTF-8 decoding turned into U+FFFD, as keys that keep their bytes
 * (keys.ts decodeKey: a byte that is not valid UTF-8 becomes a lone surrogate), with their
 * entries; a name that holds U+FFFD itself comes back unchanged. Read as bytes, apart from the
 * common pass, only for a directory where that pass met U+FFFD.
 */
function rawNames(fs: Fs, dir: string, each: (name: string, d: Dirent) => void): void {
  // Node's types know only string encodings here; 'buffer' works and gives the names' bytes.
  const h = fs.opendirSync(fsPath(dir), { encoding: 'buffer' as BufferEncoding, bufferSize: 256 });
  try {
    for (let d; (d = h.readSync()) !== null; ) {
      const raw = d.name as unknown as Buffer;
      if (raw.toString('utf8').includes(REPLACEMENT)) each(decodeKey(raw), d);
    }
  } finally {
    h.closeSync();
  }
}

/**
 * One directory: names with their attributes, in readdir order. Symlinks are reported as links,
 * and also with their target's attributes when `follow` is set. For small directories: it holds
 * every record at once.
 */
export function listDirSync(env: SyncEnv, dir: string, o: { follow: boolean; names?: string[]; temps?: boolean }): DirRead {
  const list = new RecordList();
  const temps = listInto(env, dir, o, list);
  return o.temps ? { records: list.records, temps } : { records: list.records };
}

/** listDirSync into a sink; the temporaries found (when asked for). */
function listInto(env: SyncEnv, dir: string, o: { follow: boolean; names?: string[]; temps?: boolean }, sink: RecordSink): TempFile[] {
  const fs = env.fs;
  const temps: TempFile[] = [];
  let raw = false;
  for (const name of o.names ?? fs.readdirSync(fsPath(dir))) {
    if (name.includes(REPLACEMENT)) {
      raw = true;
      continue;
    }
    // Temporary files (temp.ts) are never listed: only names of the form ferry writes.
    if (isTempName(name)) {
      if (o.temps) noteTemp(fs, dir, name, temps);
      continue;
    }
    statEntry(env, dir, name, o.follow, sink);
  }
  if (raw) rawNames(fs, dir, (name) => statEntry(env, dir, name, o.follow, sink));
  return temps;
}

/** The first `max` names of `dir` (fewer: that is all of them), in readdir order. */
export function readNamesSync(fs: Fs, dir: string, max: number): string[] {
  const h = fs.opendirSync(fsPath(dir), { bufferSize: Math.min(max + 1, 1024) });
  try {
    const names: string[] = [];
    for (let d; names.length < max && (d = h.readSync()) !== null; ) names.push(d.name);
    return names;
  } finally {
    h.closeSync();
  }
}

export interface SortNamesOptions {
  follow: boolean;
  temps?: boolean;
  /** The walk's hints (tree.ts ReadRequest): keys must start with `namePrefix`, and come after `after` unless they are directories that hold it. */
  namePrefix?: string;
  after?: string;
  /** Keys sorted in memory at most; a larger directory is sorted in runs of this many, spilled to a file in `spillDir`. */
  cutoff: number;
  /** A directory that does not exist yet, made when the sort spills (and removed here if it fails). */
  spillDir: string;
  /** Set to a non-zero value when the listing was stopped. */
  stop?: Int32Array;
}

export interface SortedNames {
  count: number;
  /** The keys packed in key order (sorted-names.ts), when they fit under the cutoff... */
  packed?: Uint8Array;
  /** ...else the sorted runs in a temporary file. */
  spill?: Spill;
  temps?: TempFile[];
}

/**
 * The names of a large directory in key order, without their attributes: a directory's name gets
 * its '/' (from the entry's type, which readdir gives; a symlink is looked at only when links are
 * followed, an entry of unknown type always), and the keys are sorted in memory, or, above
 * `cutoff`, in sorted runs written to a temporary file that the caller merges and removes (it is
 * removed here when this fails or is stopped).
 */
export function sortNamesSync(env: SyncEnv, dir: string, o: SortNamesOptions): SortedNames {
  const fs = env.fs;
  const namePrefix = o.namePrefix ?? '';
  const after = o.after;
  const keep = (key: string) => key.startsWith(namePrefix) && (after === undefined || compareKeys(key, after) > 0 || (key.endsWith('/') && after.startsWith(key)));
  /** Is this name a directory (or a link to one, when following)? For types readdir did not say. */
  const probe = (name: string, link: boolean): boolean => {
    try {
      if (!link) {
        const st = fs.lstatSync(fsPath(dir + name));
        if (st.isDirectory()) return true;
        if (!st.isSymbolicLink() || !o.follow) return false;
      }
      return fs.statSync(fsPath(dir + name)).isDirectory();
    } catch {
      return false;
    }
  };
  const temps: TempFile[] = [];
  let keys: string[] = [];
  let count = 0;
  let spill: (Spill & { fd: number; pos: number }) | undefined;
  const packer = new KeyPacker();
  const pack = () => {
    sortKeys(keys);
    packer.clear();
    for (const k of keys) packer.add(k);
    keys = [];
  };
  const spillRun = () => {
    if (!spill) {
      fs.mkdirSync(o.spillDir, { mode: 0o700 });
      const file = join(o.spillDir, 'runs');
      spill = { dir: o.spillDir, file, runs: [], fd: fs.openSync(file, 'wx', 0o600), pos: 0 };
    }
    pack();
    const bytes = packer.bytes();
    for (let off = 0; off < bytes.length; ) off += fs.writeSync(spill.fd, bytes, off, bytes.length - off, spill.pos + off);
    spill.runs.push({ start: spill.pos, end: spill.pos + bytes.length });
    spill.pos += bytes.length;
  };
  const add = (key: string) => {
    keys.push(key);
    count++;
    if (keys.length >= o.cutoff) spillRun();
  };
  const stopped = () => o.stop !== undefined && Atomics.load(o.stop, 0) !== 0;
  const consider = (name: string, d: Dirent) => {
    if (isTempName(name)) {
      if (o.temps) noteTemp(fs, dir, name, temps);
      return;
    }
    let isDir = d.isDirectory();
    if (!isDir) {
      if (d.isSymbolicLink()) isDir = o.follow && probe(name, true);
      else if (!d.isFile() && !d.isFIFO() && !d.isSocket() && !d.isCharacterDevice() && !d.isBlockDevice()) isDir = probe(name, false);
    }
    const key = isDir ? name + '/' : name;
    if (keep(key)) add(key);
  };
  try {
    let raw = false;
    const h = fs.opendirSync(fsPath(dir), { bufferSize: 1024 });
    try {
      let n = 0;
      for (let d; (d = h.readSync()) !== null; ) {
        if ((++n & 4095) === 0 && stopped()) throw Object.assign(new Error(`listing ${dir} was stopped`), { code: 'ABORT_ERR' });
        if (d.name.includes(REPLACEMENT)) raw = true;
        else consider(d.name, d);
      }
    } finally {
      h.closeSync();
    }
    if (raw) rawNames(fs, dir, consider);
    const out: SortedNames = { count };
    if (o.temps) out.temps = temps;
    if (spill) {
      if (keys.length > 0) spillRun();
      fs.closeSync(spill.fd);
      out.spill = { dir: spill.dir, file: spill.file, runs: spill.runs };
    } else {
      pack();
      out.packed = packer.bytes();
    }
    return out;
  } catch (e) {
    if (spill) {
      try {
        fs.closeSync(spill.fd);
      } catch {
        // Closed already.
      }
      fs.rmSync(spill.dir, { recursive: true, force: true });
    }
    throw e;
  }
}

/**
 * The records of keys of `dir` (sortNamesSync's, in their order), as columns: a name that is gone
 * is left out, and a name that turned from a directory into something else, or back, since it was
 * sorted keeps its place with an error (the key it was sorted under would now be out of order).
 */
export function statNamesSync(env: SyncEnv, dir: string, keys: string[], follow: boolean): RecordColumns {
  const out = new RecordColumnsWriter(keys.length);
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    const sortedAsDir = key.charCodeAt(key.length - 1) === 47;
    const name = sortedAsDir ? key.slice(0, -1) : key;
    if (!statEntry(env, dir, name, follow, out)) continue;
    const j = out.length - 1;
    const kind = out.kindAt(j);
    const extra = out.extraAt(j);
    if (extra?.error !== undefined) {
      // An entry that could not be looked at keeps the kind it was sorted as.
      if (sortedAsDir) out.setKind(j, 'd');
    } else if ((kind === 'd' || (follow && kind === 'l' && extra?.follow?.kind === 'd')) !== sortedAsDir) {
      out.pop();
      out.add(name, sortedAsDir ? 'd' : 'f', 0, 0, undefined, undefined, undefined, {
        error: `it changed from ${sortedAsDir ? 'a directory' : 'a file'} to ${sortedAsDir ? 'a file' : 'a directory'} while it was listed; the next run syncs it`,
      });
    }
  }
  return out.columns();
}

/** Records as they travel from a thread: columns instead of an object each, far cheaper for the receiving thread to take in. */
export interface RecordColumns {
  /** The names joined by '/' (which no name holds). */
  names: string;
  /** NodeKind as an index into KINDS. */
  kinds: Uint8Array;
  /** Per record: size, mtime, mode, uid, gid (NaN: absent). */
  nums: Float64Array;
  /** The rarer fields, by record index. */
  extras: [number, RecordExtra][];
}

const KINDS: readonly NodeKind[] = ['d', 'l', 'f', 'o'];
const KIND_INDEX: Record<NodeKind, number> = { d: 0, l: 1, f: 2, o: 3 };
const NUMS = 5;

/** Writes records as columns. */
export class RecordColumnsWriter implements RecordSink {
  #names: string[] = [];
  #kinds: Uint8Array;
  #nums: Float64Array;
  #extras: (RecordExtra | undefined)[] = [];
  #n = 0;

  constructor(capacity: number) {
    this.#kinds = new Uint8Array(Math.max(capacity, 16));
    this.#nums = new Float64Array(this.#kinds.length * NUMS);
  }

  get length(): number {
    return this.#n;
  }

  add(name: string, kind: NodeKind, size: number, mtime: number, mode: number | undefined, uid: number | undefined, gid: number | undefined, extra: RecordExtra | undefined): void {
    const i = this.#n++;
    if (i === this.#kinds.length) {
      const kinds = new Uint8Array(i * 2);
      kinds.set(this.#kinds);
      this.#kinds = kinds;
      const nums = new Float64Array(i * 2 * NUMS);
      nums.set(this.#nums);
      this.#nums = nums;
    }
    this.#names[i] = name;
    this.#kinds[i] = KIND_INDEX[kind];
    const j = i * NUMS;
    this.#nums[j] = size;
    this.#nums[j + 1] = mtime;
    this.#nums[j + 2] = mode ?? NaN;
    this.#nums[j + 3] = uid ?? NaN;
    this.#nums[j + 4] = gid ?? NaN;
    this.#extras[i] = extra;
  }

  kindAt(i: number): NodeKind {
    return KINDS[this.#kinds[i]!]!;
  }

  setKind(i: number, kind: NodeKind): void {
    this.#kinds[i] = KIND_INDEX[kind];
  }

  extraAt(i: number): RecordExtra | undefined {
    return this.#extras[i];
  }

  pop(): void {
    this.#n--;
    this.#names.length = this.#n;
    this.#extras.length = this.#n;
  }

  /**
   * The columns; `sortedFor` given, in the walk's order (tree.ts): UTF-8 order of the names, '/'
   * appended to directories' (and, following links, to those of links to directories).
   */
  columns(sortedFor?: { follow: boolean }): RecordColumns {
    const n = this.#n;
    let order: number[] | undefined;
    if (sortedFor) {
      const follow = sortedFor.follow;
      const keys = this.#names.map((name, i) => {
        const kind = this.#kinds[i];
        const dir = kind === 0 || (follow && kind === 1 && this.#extras[i]?.follow?.kind === 'd');
        return dir ? name + '/' : name;
      });
      order = Array.from(keys.keys());
      order.sort((a, b) => compareKeys(keys[a]!, keys[b]!));
    }
    if (!order) {
      const extras: RecordColumns['extras'] = [];
      for (let i = 0; i < n; i++) if (this.#extras[i]) extras.push([i, this.#extras[i]!]);
      return { names: this.#names.join('/'), kinds: this.#kinds.slice(0, n), nums: this.#nums.slice(0, n * NUMS), extras };
    }
    const kinds = new Uint8Array(n);
    const nums = new Float64Array(n * NUMS);
    const names: string[] = new Array<string>(n);
    const extras: RecordColumns['extras'] = [];
    for (let k = 0; k < n; k++) {
      const i = order[k]!;
      names[k] = this.#names[i]!;
      kinds[k] = this.#kinds[i]!;
      nums.set(this.#nums.subarray(i * NUMS, i * NUMS + NUMS), k * NUMS);
      if (this.#extras[i]) extras.push([k, this.#extras[i]!]);
    }
    return { names: names.join('/'), kinds, nums, extras };
  }
}

export function decodeRecords(c: RecordColumns): WalkRecord[] {
  const n = c.kinds.length;
  if (n === 0) return [];
  const names = c.names.split('/');
  const out: WalkRecord[] = new Array<WalkRecord>(n);
  const nums = c.nums;
  for (let i = 0; i < n; i++) {
    const j = i * NUMS;
    const r: WalkRecord = { name: names[i]!, kind: KINDS[c.kinds[i]!]!, size: nums[j]!, mtime: nums[j + 1]! };
    if (!Number.isNaN(nums[j + 2])) r.mode = nums[j + 2]!;
    if (!Number.isNaN(nums[j + 3])) r.uid = nums[j + 3]!;
    if (!Number.isNaN(nums[j + 4])) r.gid = nums[j + 4]!;
    out[i] = r;
  }
  for (const [i, x] of c.extras) Object.assign(out[i]!, x);
  return out;
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
  const p = fsPath(path);
  let st;
  try {
    st = fs.lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (st.isFile()) return;
  if (st.isSymbolicLink()) throw fail('FERRY_UNSAFE_PATH', `${path} is a symlink`);
  if (!st.isDirectory()) return fs.unlinkSync(p);
  try {
    fs.rmdirSync(p);
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
  /**
   * Refuse `src` if it is a symlink now, or (Linux) if what opens is not the file at `srcNoFollow`,
   * the real path the source must have: a directory on its way became a symlink (CopySource.noFollow): ELOOP.
   */
  srcNoFollow?: string;
  data?: Uint8Array;
  inplace?: boolean;
  /**
   * Written data only: create the final path itself, exclusively (O_EXCL: whatever is there, a
   * symlink too, fails the job with EEXIST), with no temporary and no rename. A failure removes
   * what it wrote; a killed process leaves the file cut short (putMany `fresh`).
   */
  exclusive?: boolean;
  /** The temporary name to write to (the caller watches it for progress); made up when absent. */
  tmp?: string;
  mtime?: number;
  mode?: number;
  uid?: number;
  gid?: number;
}

/**
 * Is the file open at `fd` the one at real path `real` (no symlink on the way was followed)? On
 * Linux, from the descriptor's /proc name; elsewhere it cannot be told, and O_NOFOLLOW alone guards.
 */
export function openedAt(fs: Fs, fd: number, real: string): boolean {
  if (process.platform !== 'linux') return true;
  let at: Buffer;
  try {
    at = fs.readlinkSync(`/proc/self/fd/${fd}`, { encoding: 'buffer' });
  } catch {
    return true; // no /proc
  }
  const want = fsPath(real);
  return at.equals(typeof want === 'string' ? Buffer.from(want) : want);
}

/** Linux file systems on which a new file is its creator's (statfs f_type): tmpfs, ext2-4, xfs, btrfs, zfs, f2fs. */
const OWNED_BY_CREATOR = new Set([0x01021994, 0xef53, 0x58465342, 0x9123683e, 0x2fc12fc1, 0xf2f52010]);

/**
 * Copy or write files, each to a fresh temporary name (O_EXCL: never through anything already
 * there) renamed into place, or, inplace, into the final path itself after clearForFileSync (never
 * through a symlink, never into a FIFO), or, exclusive, as a new file at the final path. An error
 * per job, or null.
 */
export function placeFilesSync(env: SyncEnv, jobs: PlaceJob[]): (SystemErrorRecord | null)[] {
  const fs = env.fs;
  const C = fs.constants;
  const parent = (p: string) => p.slice(0, p.lastIndexOf('/'));
  // index.ts fsTime: seconds keep the sub-millisecond part, but Node turns a negative number
  // (before 1970) into "now", so those go as a Date (floored: the same second).
  const time = (mtime: number) => (mtime >= 0 ? mtime / 1000 : new Date(Math.floor(mtime)));
  /** The job whose file write() opened last. */
  let opened: PlaceJob | undefined;
  const euid = process.geteuid?.() ?? -1;
  const egid = process.getegid?.() ?? -1;
  const mine = new Map<string, boolean>();
  /**
   * Whether a file created in directory `dir` is the process's user's and group's already: the
   * directory is in the process's group (a new file gets the process's group or, set-group-ID or
   * mounted grpid, the directory's: the same one), on a local file system that keeps the creator
   * as owner (no NFS root squash, no FUSE rules).
   */
  const createdMine = (dir: string): boolean => {
    let m = mine.get(dir);
    if (m === undefined) {
      const p = fsPath(dir);
      m = fs.statSync(p).gid === egid && OWNED_BY_CREATOR.has(fs.statfsSync(p).type);
      mine.set(dir, m);
    }
    return m;
  };
  /** Write the file; its attributes too when it is written here (through its descriptor: no path looked up again). True when they are set. */
  const write = (job: PlaceJob, target: string | Buffer): boolean => {
    if (job.src !== undefined) {
      if (!job.srcNoFollow) {
        fs.copyFileSync(fsPath(job.src), target, job.inplace ? 0 : C.COPYFILE_EXCL);
        return false;
      }
      // The file opened without following a link at its name is the one copied: on Linux through
      // its descriptor's /proc name; elsewhere the open at least refuses a link there now.
      const fd = fs.openSync(fsPath(job.src), C.O_RDONLY | C.O_NONBLOCK | C.O_NOFOLLOW);
      try {
        if (!fs.fstatSync(fd).isFile()) throw Object.assign(new Error(`EISDIR: ${job.src} is not a regular file`), { code: 'EISDIR' });
        if (!openedAt(fs, fd, job.srcNoFollow)) throw Object.assign(new Error(`ELOOP: a directory on the way to ${job.src} is a symlink now`), { code: 'ELOOP' });
        fs.copyFileSync(process.platform === 'linux' ? `/proc/self/fd/${fd}` : fsPath(job.src), target, job.inplace ? 0 : C.COPYFILE_EXCL);
      } finally {
        fs.closeSync(fd);
      }
      return false;
    }
    const fresh = !job.inplace || job.exclusive === true;
    // A file this open creates (O_EXCL) is created with the mode's permission bits, but it keeps
    // them only where neither the umask nor the directory's default ACL (which replaces the umask,
    // and which no call here can see) takes some away: the fchmod below is never left out.
    const bits = job.mode === undefined ? 0o666 : job.mode & 0o777;
    const fd = fs.openSync(target, fresh ? 'wx' : C.O_WRONLY | C.O_CREAT | C.O_TRUNC | C.O_NOFOLLOW | C.O_NONBLOCK, bits);
    opened = job;
    try {
      fs.writeFileSync(fd, job.data!);
      // chown before chmod: chown clears set-user/group-ID bits. No chown for a file this open
      // created when the owner asked for is the process's and the file is the process's already.
      if (job.uid !== undefined && job.gid !== undefined && !(fresh && job.uid === euid && job.gid === egid && createdMine(parent(job.dst)))) fs.fchownSync(fd, job.uid, job.gid);
      if (job.mode !== undefined) fs.fchmodSync(fd, job.mode);
      if (job.mtime !== undefined) fs.futimesSync(fd, time(job.mtime), time(job.mtime));
    } finally {
      fs.closeSync(fd);
    }
    return true;
  };
  return jobs.map((job) => {
    const exclusive = job.exclusive === true && job.data !== undefined;
    const target = job.inplace || exclusive ? job.dst : (job.tmp ?? env.tmpPath(job.dst));
    const t = fsPath(target);
    const dst = fsPath(job.dst);
    try {
      if (job.inplace && !exclusive) env.clearForFile(fs, job.dst);
      let attrsSet;
      try {
        attrsSet = write(job, t);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || (job.src !== undefined && !fs.existsSync(fsPath(job.src)))) throw e;
        fs.mkdirSync(fsPath(parent(job.dst)), { recursive: true });
        attrsSet = write(job, t);
      }
      if (!attrsSet) {
        if (job.uid !== undefined && job.gid !== undefined) fs.chownSync(t, job.uid, job.gid);
        if (job.mode !== undefined) fs.chmodSync(t, job.mode);
        if (job.mtime !== undefined) fs.utimesSync(t, time(job.mtime), time(job.mtime));
      }
      if (target !== job.dst) {
        try {
          fs.renameSync(t, dst);
        } catch (e) {
          // A directory where the file goes: an empty one makes way, one with content does not.
          if ((e as NodeJS.ErrnoException).code !== 'EISDIR') throw e;
          env.clearForFile(fs, job.dst);
          fs.renameSync(t, dst);
        }
      }
      return null;
    } catch (e) {
      // A temporary is ours to remove; so is the file an exclusive job created (opened is set).
      if (target !== job.dst || (exclusive && opened === job)) fs.rmSync(t, { force: true });
      const err = e as NodeJS.ErrnoException;
      return { code: err?.code ? String(err.code) : 'EIO', message: err?.message ? String(err.message) : String(e) };
    }
  });
}

/**
 * Read small files whole: the bytes, or an error, per path (readPackedSync, each file a view of
 * the one buffer). Opened without blocking and checked before reading: a FIFO would block the read
 * for ever, a device would never end.
 */
export function readBatchSync(env: SyncEnv, paths: string[]): (Uint8Array | SystemErrorRecord)[] {
  const { data, ends, errors } = readPackedSync(env, paths);
  let start = 0;
  return ends.map((end, i) => {
    const r = errors[i] ?? data.subarray(start, end);
    start = end;
    return r;
  });
}

/** Files read whole into one buffer (readPackedSync): file i is bytes ends[i-1]..ends[i] of `data`, or errors[i]. */
export interface PackedRead {
  data: Uint8Array;
  ends: number[];
  errors: Record<number, SystemErrorRecord>;
}

/**
 * readBatchSync into one buffer: a buffer per file made a thread reply carry one ArrayBuffer per
 * file, and the main thread collect them one by one. With `sizes` (what a listing said, of regular
 * files), a file is opened without following a symlink and read in one call (a pread) of its
 * size and a byte more: a read that comes back with exactly its size ended the file (a local file
 * system reads short only at the end), and only a file whose size differs, or is empty, is looked
 * at (fstat): a file still, it is read to its end; anything else fails. That spares a stat per
 * file, a fifth of the system calls of a dump.
 */
export function readPackedSync(env: SyncEnv, paths: string[], sizes?: number[]): PackedRead {
  const fs = env.fs;
  const C = fs.constants;
  // Sized for the listed sizes, else grown as files come (a single small file: no 64 KiB buffer).
  let data = new Uint8Array(sizes ? sizes.reduce((a, b) => a + b + 1, 0) : 4096);
  let n = 0;
  const room = (size: number): void => {
    if (n + size <= data.length) return;
    const grown = new Uint8Array(Math.max(data.length * 2, n + size, 4096));
    grown.set(data.subarray(0, n));
    data = grown;
  };
  /** The size of `fd` when it is a regular file; else its error for `errors`. */
  const regular = (fd: number): number | SystemErrorRecord => {
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) return { code: 'EISDIR', message: 'EISDIR: it is a directory' };
    if (!st.isFile()) return { code: 'FERRY_SPECIAL_FILE', message: `it is a ${env.specialKind(st.mode)}, not a regular file; ferry does not read FIFOs, sockets or devices` };
    return st.size;
  };
  const ends: number[] = [];
  const errors: Record<number, SystemErrorRecord> = {};
  paths.forEach((p, i) => {
    let fd = -1;
    const start = n;
    try {
      const hint = sizes?.[i];
      fd = fs.openSync(fsPath(p), C.O_RDONLY | C.O_NONBLOCK | (hint === undefined ? 0 : C.O_NOFOLLOW));
      if (hint !== undefined) {
        room(hint + 1);
        // At offset 0 (pread): a FIFO or socket fails it (ESPIPE) before a byte is taken from it,
        // where a read would take the pipe's bytes (all of them the listed size: taken for the file's).
        let r = 0;
        try {
          r = fs.readSync(fd, data, n, hint + 1, 0);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ESPIPE') throw e;
        }
        n += r;
        // An empty read proves nothing: a FIFO without a writer reads empty too.
        if (r === hint && hint > 0) return;
      }
      const size = regular(fd);
      if (typeof size !== 'number') {
        errors[i] = size;
        n = start;
        return;
      }
      // Room for the rest of its size and a byte (its end seen in the same read), more if it grew.
      room(Math.max(0, size - (n - start)) + 1);
      for (;;) {
        if (n === data.length) room(64 << 10);
        // At the offset read so far: a pread above left the file's position where it was.
        const r = fs.readSync(fd, data, n, data.length - n, n - start);
        if (r === 0) break;
        n += r;
      }
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const code = err?.code ? String(err.code) : 'EIO';
      // O_NOFOLLOW's answer, in the user's words.
      const message = code === 'ELOOP' && sizes !== undefined ? 'ELOOP: it became a symlink after it was listed, and ferry does not follow it' : err?.message ? String(err.message) : String(e);
      errors[i] = { code, message };
      n = start;
    } finally {
      if (fd >= 0) fs.closeSync(fd);
      ends.push(n);
    }
  });
  return { data, ends, errors };
}

/** The functions above as the main thread calls them. */
export const MAIN_THREAD: SyncEnv = {
  fs,
  specialKind,
  tmpPath: (dst) => dst.slice(0, dst.lastIndexOf('/') + 1) + tempName(),
  clearForFile: clearForFileSync,
};

export interface ReadDirOptions extends SortNamesOptions {
  /** Directories of up to this many names are read whole (listDirSync), larger ones sorted by name (sortNamesSync). */
  wholeMax: number;
  /** The directory's size as listed: up to READ_ALL_BYTES, its names may be read at once. */
  size?: number;
}

/** A directory of this size holds a few thousand names at most (ext4, xfs, btrfs, tmpfs): readdir may read them all at once. */
const READ_ALL_BYTES = 64 << 10;

/**
 * A directory as the listing wants it, in one round trip to a thread: up to `wholeMax` names, its
 * records in key order (as columns); more, its keys in order without their attributes.
 */
export function readDirSync(env: SyncEnv, dir: string, o: ReadDirOptions): { columns: RecordColumns; temps?: TempFile[] } | { sorted: SortedNames } {
  const small = o.size !== undefined && o.size > 0 && o.size <= READ_ALL_BYTES;
  const names = small ? env.fs.readdirSync(fsPath(dir)) : readNamesSync(env.fs, dir, o.wholeMax + 1);
  if (names.length > o.wholeMax) return { sorted: sortNamesSync(env, dir, o) };
  const out = new RecordColumnsWriter(names.length);
  const temps = listInto(env, dir, { follow: o.follow, names, ...(o.temps ? { temps: true } : {}) }, out);
  // Sorted here, where it costs the walk's thread nothing.
  const columns = out.columns({ follow: o.follow });
  return o.temps ? { columns, temps } : { columns };
}

/** A temporary file met while reading `dir`, for ListOptions.reclaim (hidden from the listing either way). */
function noteTemp(fs: typeof import('node:fs'), dir: string, name: string, temps: TempFile[]): void {
  try {
    const st = fs.lstatSync(fsPath(dir + name));
    if (st.isFile() || st.isSymbolicLink()) temps.push({ name, size: st.size, mtime: st.mtimeMs });
  } catch {
    // Gone already.
  }
}
