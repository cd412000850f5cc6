/**
 * `ferry dump`: a depth-first streaming walk of a store, written as a JSON dump (json.ts) or an
 * archive that carries the data too (archive.ts). Memory holds the open directories of the walk
 * and, for archives and --hash, the data of at most `threads` small files read ahead; never a
 * listing.
 */
import { createHash } from 'node:crypto';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { UsageError } from '../../shared/errors.js';
import { treeKeyProblem } from '../../shared/storage/keys.js';
import type { Entry, ObjectStore } from '../../shared/storage/types.js';
import { countEntry, emptyCounters, type DumpCounters, type DumpEntry } from './entry.js';
import type { DumpFormat } from './format.js';
import { JsonDumpWriter } from './json.js';

export interface DumpOptions {
  format: DumpFormat;
  /** Dump only this directory of the store ('a/b'); its entries' paths are below it. */
  subdir?: string;
  /** Record each file's content hash (reads every file). */
  hash?: 'md5' | 'sha256';
  /** What the header says of the dump's origin (JSON dumps); secrets in it are written as "removed". */
  setting: Record<string, unknown>;
  /** Files read at once (archives and --hash); default 10. */
  threads?: number;
  signal?: AbortSignal;
  /** Called now and then (after each page of the listing) with the counters so far. */
  onProgress?(c: DumpCounters): void;
  /** Called with each entry written. */
  onEntry?(e: DumpEntry): void;
  /** A key that could not be dumped (counted in `failed`), and why. */
  onWarning?(message: string): void;
}

export interface DumpResult {
  counters: DumpCounters;
  /** Keys of the store that are not in the dump: unreadable, special files, names no path can hold. */
  failed: number;
}

/** ferry's own reserved keys at the root of a store (checkpoints, metadata backups): never dumped. */
const RESERVED = '.ferry/';
/** Files up to this size are read ahead whole (archives, --hash); larger ones stream when their turn comes. */
const READ_AHEAD_MAX = 4 << 20;
/** Where the store reads many files at once (getMany): files up to this size are read in groups... */
const GROUP_SIZE_MAX = 1 << 20;
/** ...of this many files or bytes (a reply per thread per group)... */
const GROUP_FILES = 512;
const GROUP_BYTES = 8 << 20;
/** ...up to this many files and bytes of them read ahead (8 groups: the threads never wait for the next). */
const GROUPED_FILES_MAX = 8 * GROUP_FILES;
const GROUPED_BYTES_MAX = 64 << 20;
/** Entries waiting for a file read ahead of them, at most. */
const QUEUE_MAX = 2 * GROUPED_FILES_MAX;

/** `--subdir`: 'a/b' (no leading or trailing '/'), checked. */
export function normalizeSubdir(subdir: string | undefined): string {
  if (subdir === undefined) return '';
  const s = subdir.replace(/^\/+|\/+$/g, '');
  if (s === '') return '';
  const problem = treeKeyProblem(s);
  if (problem !== undefined) throw new UsageError(`--subdir ${JSON.stringify(subdir)}: ${problem}`);
  return s;
}

/** One entry waiting to be written: files that need their data carry its read. */
interface Pending {
  e: DumpEntry;
  /** The file read ahead (its bytes, or only its hash), or why it could not be read. */
  read?: Promise<{ data?: Buffer; hash?: string } | { error: unknown }>;
  /** To be read with others (getMany): `group` is set once its group is sent, `index` is its place there. */
  grouped?: boolean;
  group?: GroupRead;
  index?: number;
}

/** The read of one group of small files (getMany): a promise for the group, not one per file. */
interface GroupRead {
  read: Promise<unknown>;
  /** Once read: each file's bytes, or why it could not be read. */
  results?: (Buffer | unknown)[];
}

/**
 * Write a dump of `source` (or of `options.subdir` in it) to `out`, and end `out`. Entries go out
 * depth-first (entry.ts); directories that an object store only implies are written as
 * directories; ferry's own `.ferry/` at the root is left out. Keys that cannot be dumped are counted
 * in `failed` and said through `onWarning`, never passed over silently. Throws (leaving `out`
 * destroyed, unless it is standard output) when the listing or the output fails, or when the signal fires.
 */
export async function writeDump(source: ObjectStore, out: Writable, options: DumpOptions): Promise<DumpResult> {
  const subdir = normalizeSubdir(options.subdir);
  const prefix = subdir === '' ? '' : subdir + '/';
  const counters = emptyCounters();
  const threads = Math.max(1, options.threads ?? 10);
  const signal = options.signal;
  const hash = options.hash;
  const archive = options.format === 'tar' || options.format === 'tar.gz' || options.format === 'zip';
  const needsData = archive || hash !== undefined;
  const warn = (m: string) => options.onWarning?.(m);
  let failed = 0;

  // The sink: the JSON writer (through gzip for .json.gz), or the archive writer.
  let json: JsonDumpWriter | undefined;
  let piping: Promise<void> | undefined;
  let addArchive: ((e: DumpEntry, data?: Readable | Buffer) => void | Promise<void>) | undefined;
  let finishArchive: (() => Promise<void>) | undefined;
  if (archive) {
    const { createArchiveWriter } = await import('./archive.js');
    const w = createArchiveWriter(options.format as 'tar' | 'tar.gz' | 'zip', out);
    addArchive = (e, data) => w.add(e, data);
    finishArchive = () => w.finish();
  } else {
    let sink: Writable = out;
    if (options.format === 'json.gz') {
      const gz = createGzip({ level: 6 });
      piping = pipeline(gz, out);
      // A failure is seen where the writer waits; this keeps it from going unhandled meanwhile.
      piping.catch(() => {});
      sink = gz;
    }
    json = new JsonDumpWriter(sink, { setting: { ...options.setting, ...(hash ? { hash } : {}) } });
  }

  const walk = new DumpWalk(prefix, (key, why) => {
    failed++;
    if (why !== undefined) warn(`${key}: ${why}; not in the dump`);
  });
  const queue: Pending[] = [];
  let filesQueued = 0;
  // Small files read in groups, where the store can (a local disk: one round trip to a thread for many).
  const getMany = source.getMany?.bind(source);
  let group: Pending[] = [];
  let groupBytes = 0;
  let groupedBytes = 0;
  const sendGroup = (): void => {
    const g = group;
    group = [];
    groupBytes = 0;
    const read: GroupRead = {
      read: getMany!(
        g.map((p) => prefix + p.e.path),
        { ...(signal ? { signal } : {}), sizes: g.map((p) => p.e.size) },
      ).then(
        (rs) => void (read.results = rs),
        (error: unknown) => void (read.results = g.map(() => error)),
      ),
    };
    g.forEach((p, i) => {
      p.group = read;
      p.index = i;
    });
  };

  /** Write one entry (JSON: into the writer's buffer, at once). */
  const write = (e: DumpEntry, data?: Readable | Buffer): void | Promise<void> => {
    if (archive && e.path === '') return; // an archive holds no entry for its root
    countEntry(counters, e);
    options.onEntry?.(e);
    if (json) return json.add(e);
    return addArchive!(e, data);
  };

  /** Write the entry at the head of the queue, waiting for its file's read. */
  const writeHead = async (): Promise<void> => {
    const p = queue.shift()!;
    const e = p.e;
    if (e.type !== 'file' || !needsData) return void (await write(e));
    filesQueued--;
    if (p.grouped) {
      if (!p.group) sendGroup();
      groupedBytes -= e.size;
    }
    const key = prefix + e.path;
    // Only reading fails a key; a failure of the output fails the dump.
    let data: Readable | Buffer | undefined;
    try {
      if (p.group) {
        if (p.group.results === undefined) await p.group.read;
        const r = p.group.results![p.index!];
        if (!Buffer.isBuffer(r)) throw r;
        if (r.length !== e.size) e.size = r.length; // changed since listed: the dump holds what was read
        if (hash) e[hash] = createHash(hash).update(r).digest('hex');
        data = archive ? r : undefined;
      } else if (p.read) {
        const r = await p.read;
        if ('error' in r) throw r.error;
        if (r.data !== undefined && r.data.length !== e.size) e.size = r.data.length; // changed since listed: the dump holds what was read
        if (r.hash !== undefined) e[hash!] = r.hash;
        data = archive ? (r.data ?? Buffer.alloc(0)) : undefined;
      } else {
        // A large file for an archive: hashed first when asked (a second read), then streamed in.
        if (hash) e[hash] = (await readFile(source, key, e.size, hash, false, signal)).hash!;
        data = await source.get(key, { ...(signal ? { signal } : {}), sizeHint: e.size });
      }
    } catch (err) {
      if (signal?.aborted) throw err;
      failed++;
      if (archive) {
        warn(`${key}: cannot be read (${(err as Error)?.message ?? err}); not in the dump`);
        return;
      }
      // A JSON dump still names the file: only its hash is missing.
      warn(`${key}: cannot be read (${(err as Error)?.message ?? err}); in the dump without its ${hash}`);
    }
    await write(e, data);
  };

  /**
   * writeHead without a promise when nothing has to wait: the head is no file to read, or a file
   * whose group has been read, and the writer takes it at once (the common case for a tree of small
   * files, where a promise or two per entry were most of the dump's garbage).
   */
  const writeHeadNow = (): void | Promise<void> => {
    const p = queue[0]!;
    const e = p.e;
    if (e.type !== 'file' || !needsData) {
      queue.shift();
      return write(e);
    }
    const r = p.group?.results?.[p.index!];
    if (!Buffer.isBuffer(r) || hash) return writeHead();
    queue.shift();
    filesQueued--;
    groupedBytes -= e.size;
    if (r.length !== e.size) e.size = r.length; // changed since listed: the dump holds what was read
    return write(e, archive ? r : undefined);
  };

  /** Write entries from the head of the queue until at most `max` are queued. */
  const drainTo = (max: number): void | Promise<void> => {
    while (queue.length > max) {
      const w = writeHeadNow();
      if (w) return w.then(() => drainTo(max));
    }
  };

  /** Queue an entry (a file to read with others, without a promise while nothing has to wait). */
  const push = (e: DumpEntry): void | Promise<void> => {
    if (e.type !== 'file' || !needsData || !getMany || e.size > GROUP_SIZE_MAX) return pushOther(e);
    while (filesQueued >= GROUPED_FILES_MAX || (filesQueued > 0 && groupedBytes + e.size > GROUPED_BYTES_MAX)) {
      const w = writeHeadNow();
      if (w) return w.then(() => push(e));
    }
    const p: Pending = { e, grouped: true };
    group.push(p);
    groupBytes += e.size;
    groupedBytes += e.size;
    filesQueued++;
    queue.push(p);
    if (group.length >= GROUP_FILES || groupBytes >= GROUP_BYTES) sendGroup();
    return drainTo(QUEUE_MAX);
  };

  const pushOther = async (e: DumpEntry): Promise<void> => {
    if (e.type === 'file' && needsData) {
      const p: Pending = { e };
      while (filesQueued >= threads) await writeHead();
      if (!archive || e.size <= READ_AHEAD_MAX) {
        p.read = readFile(source, prefix + e.path, e.size, hash, archive, signal).then(
          (r) => r,
          (error: unknown) => ({ error }),
        );
      }
      filesQueued++;
      queue.push(p);
    } else if (queue.length === 0) await write(e);
    else queue.push({ e });
    while (queue.length > QUEUE_MAX) await writeHead();
  };

  try {
    const listing = source.list({ prefix, followSymlinks: false, ...(signal ? { signal } : {}) });
    for await (const page of listing) {
      signal?.throwIfAborted();
      // Indexed loops: an iterator result per entry was a tenth of the dump's garbage.
      for (let i = 0; i < page.length; i++) {
        const made = walk.take(page[i]!);
        if (made === undefined) continue;
        for (let j = 0; j < made.length; j++) {
          if (!needsData) {
            write(made[j]!);
            continue;
          }
          const w = push(made[j]!);
          if (w) await w;
        }
      }
      if (json && json.buffered > 0) await json.flush();
      options.onProgress?.(counters);
    }
    while (queue.length > 0) await writeHead();
    if (walk.rootMissing) write({ path: '', type: 'dir', size: 0 });
    signal?.throwIfAborted();
    if (json) {
      await json.finish(counters);
      await piping;
    } else await finishArchive!();
    options.onProgress?.(counters);
    return { counters, failed };
  } catch (err) {
    // The reader sees the output break off (a store's put then writes nothing); the error is ours to throw.
    if (out !== process.stdout) out.destroy();
    throw err;
  }
}

/** Read a file: its bytes (`keep`) and/or its hash. */
async function readFile(store: ObjectStore, key: string, size: number, hash: 'md5' | 'sha256' | undefined, keep: boolean, signal: AbortSignal | undefined): Promise<{ data?: Buffer; hash?: string }> {
  const body = await store.get(key, { ...(signal ? { signal } : {}), sizeHint: size });
  const h = hash ? createHash(hash) : undefined;
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body as AsyncIterable<Buffer>) {
    h?.update(c);
    if (keep) chunks.push(c);
    n += c.length;
  }
  return { ...(keep ? { data: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, n) } : {}), ...(h ? { hash: h.digest('hex') } : {}) };
}

/**
 * Turns a store's listing (keys in UTF-8 byte order, which is depth-first pre-order) into dump
 * entries: the directories an object store only implies are made, a `dir/` marker is a directory,
 * and what cannot be an entry is reported. The state is the open directories, one per level.
 */
export class DumpWalk {
  /** Open directories below the root, outermost first (`under`: the path and '/'), each with the names of non-directories that a later directory of the same name would clash with. */
  readonly #open: { path: string; under: string; names: string[] }[] = [];
  readonly #rootNames: string[] = [];
  #rootDone = false;
  /** Everything under this key (relative, ending in '/') is left out: its directory clashed with a file. */
  #skipping: string | undefined;

  constructor(
    /** The listing's prefix: '' or 'a/b/'. */
    readonly prefix: string,
    /** A key left out: `why` says it (once for a sub-tree left out as a whole). */
    readonly fail: (key: string, why: string | undefined) => void,
  ) {}

  /** The root was never written (the walk saw no entry): the caller writes it bare. */
  get rootMissing(): boolean {
    return !this.#rootDone;
  }

  /** What take() gives, one array for every call. */
  readonly #out: DumpEntry[] = [];

  /**
   * The entries one listed key makes (its implied directories first), or undefined when it makes
   * none. The array is the same for every call: it holds them until the next one.
   */
  take(raw: Entry): DumpEntry[] | undefined {
    const key = raw.key;
    if (!key.startsWith(this.prefix)) return undefined;
    let rel = key.slice(this.prefix.length);
    const out = this.#out;
    out.length = 0;
    if (rel === '' || rel === '/') {
      // The dumped directory's own entry (a file store lists it): the root's attributes.
      if (!this.#rootDone && raw.isDir) {
        this.#rootDone = true;
        out.push(withAttrs({ path: '', type: 'dir', size: 0 }, raw));
      }
      return out;
    }
    if (this.prefix === '' && (rel.startsWith(RESERVED) || rel === RESERVED.slice(0, -1))) return undefined;
    if (this.#skipping !== undefined) {
      if (rel.startsWith(this.#skipping)) {
        this.fail(key, undefined);
        return undefined;
      }
      this.#skipping = undefined;
    }
    if (raw.error !== undefined) {
      this.fail(key, raw.error);
      return undefined;
    }
    if (raw.special !== undefined) {
      this.fail(key, `a ${raw.special}, which a dump cannot hold`);
      return undefined;
    }
    const isDir = raw.isDir && !raw.isSymlink && rel.endsWith('/');
    if (rel.endsWith('/')) rel = rel.slice(0, -1);
    if (!isDir && key.endsWith('/')) {
      this.fail(key, "a key ending in '/' that is not a directory");
      return undefined;
    }
    const problem = treeKeyProblem(rel);
    if (problem !== undefined) {
      this.fail(key, `no path can hold this key: ${problem}`);
      return undefined;
    }
    if (raw.isSymlink && (raw.target === undefined || raw.target === '')) {
      this.fail(key, 'a symlink whose target could not be read');
      return undefined;
    }
    if (!this.#rootDone) {
      this.#rootDone = true;
      out.push({ path: '', type: 'dir', size: 0 });
    }
    // Close the directories this key is not in, then open (make) those it is in but are not open.
    const open = this.#open;
    while (open.length > 0 && !rel.startsWith(open[open.length - 1]!.under)) open.pop();
    const slash = rel.lastIndexOf('/');
    let at = open.length === 0 ? 0 : open[open.length - 1]!.path.length + 1;
    while (at <= slash) {
      const end = rel.indexOf('/', at);
      const dir = rel.slice(0, end);
      if (!this.#enter(key, rel.slice(at, end), dir)) return out;
      out.push({ path: dir, type: 'dir', size: 0 });
      open.push({ path: dir, under: dir + '/', names: [] });
      at = end + 1;
    }
    const name = rel.slice(slash + 1);
    if (!this.#enter(key, name, isDir ? rel : undefined)) return out;
    if (isDir) {
      out.push(withAttrs({ path: rel, type: 'dir', size: 0 }, raw));
      open.push({ path: rel, under: rel + '/', names: [] });
    } else if (raw.isSymlink) out.push(withAttrs({ path: rel, type: 'symlink', size: 0, target: raw.target! }, raw));
    else out.push(fileEntry(rel, raw));
    return out;
  }

  /**
   * A name arrives in the innermost open directory. A file `a` and a directory `a/` can both exist
   * in an object store; between them in key order come only names that start with `a` (`a-b`,
   * `a.txt`), so the non-directories whose names prefix the latest one are all a later directory
   * could clash with. False (and the sub-tree left out) on a clash.
   */
  #enter(key: string, name: string, dir: string | undefined): boolean {
    const names = this.#open.length === 0 ? this.#rootNames : this.#open[this.#open.length - 1]!.names;
    while (names.length > 0 && !name.startsWith(names[names.length - 1]!)) names.pop();
    if (dir !== undefined && names.length > 0 && names[names.length - 1] === name) {
      this.#skipping = dir + '/';
      this.fail(key, `${JSON.stringify(this.prefix + dir)} is both a file and a directory in the source; the directory and everything under it are left out of the dump`);
      return false;
    }
    if (dir === undefined) names.push(name);
    return true;
  }
}

/** A file's entry. */
function fileEntry(path: string, raw: Entry): DumpEntry {
  // A file of a local tree has every attribute: one literal, one object shape, no property added later.
  if (raw.mode !== undefined && raw.uid !== undefined && raw.gid !== undefined && Number.isFinite(raw.mtime)) {
    return { path, type: 'file', size: raw.size, mtime: raw.mtime, mode: raw.mode & 0o7777, uid: raw.uid, gid: raw.gid };
  }
  return withAttrs({ path, type: 'file', size: raw.size }, raw);
}

function withAttrs(e: DumpEntry, raw: Entry): DumpEntry {
  if (raw.mtime !== undefined && Number.isFinite(raw.mtime) && (raw.mtime !== 0 || !raw.isDir)) e.mtime = raw.mtime;
  if (raw.mode !== undefined) e.mode = raw.mode & 0o7777;
  if (raw.uid !== undefined) e.uid = raw.uid;
  if (raw.gid !== undefined) e.gid = raw.gid;
  return e;
}
