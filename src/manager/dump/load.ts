/**
 * `ferry load`: restore a dump into a store. The input is read twice: first every entry is checked
 * (the format, and the namespace through NamespaceCheck), and only when all of it is valid is
 * anything written. A JSON dump restores the namespace (directories, symlinks, attributes) and
 * checks the files that are there; `data` copies the missing ones from a data copy; `verify` checks
 * everything and writes nothing. An archive restores everything it holds into an empty destination.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants as zc, createGunzip, gunzipSync } from 'node:zlib';
import { ChecksumMismatchError, InvalidDumpError, NotFoundError, UsageError, fromWire, retryClassOf } from '../../shared/errors.js';
import { LocalExecutor, type TaskSource } from '../../shared/executor.js';
import { parseAddress } from '../../shared/storage/address.js';
import { compareKeys } from '../../shared/storage/keys.js';
import type { BackendRegistry } from '../../shared/storage/registry.js';
import type { Attrs, Entry, ObjectStore, PutOptions } from '../../shared/storage/types.js';
import { readBody } from '../../shared/storage/body.js';
import { Transfer } from '../../shared/transfer/copy.js';
import type { Task, TaskBatch, TaskResult } from '../../shared/transfer/task.js';
import type { DumpFormat } from './format.js';
import type { DumpCounters, DumpEntry } from './entry.js';
import { JsonDumpReader, type DumpHeader } from './json.js';
import { NamespaceCheck } from './validate.js';

export interface LoadLog {
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

export interface LoadOptions {
  /** Archives: restore into a destination that already holds keys (merge; files of the archive replace theirs). */
  force?: boolean;
  /** JSON: copy files that are missing or differ from this data copy (a point-in-time restore). */
  data?: ObjectStore;
  /** The restore drill: every check, no write. */
  verify?: boolean;
  /**
   * Restore symlinks whose target is absolute or leaves DST (as links: nothing is ever written
   * through a symlink). Without, such a link refuses the input, as other hostile entries do.
   */
  linksOutside?: boolean;
  /** Checks and copies at once; default 10. */
  threads?: number;
  /** The input's format, when its content should not decide (it always does otherwise). */
  format?: DumpFormat;
  /** How the input is called in messages. */
  name?: string;
  signal?: AbortSignal;
  log?: LoadLog;
  /** Each entry as it is restored (or checked). */
  onEntry?(e: DumpEntry): void;
  /** Set by load(): the destination was empty, small files may be created in place (putMany `fresh`). */
  fresh?: boolean;
  /** Now and then: entries handled so far (in the second pass). */
  onProgress?(entries: number): void;
}

export interface LoadReport {
  format: DumpFormat;
  /** What the input holds, counted by load. */
  counters: DumpCounters;
  /** What the dump's header says it holds (JSON dumps). */
  declared?: DumpCounters;
  header?: DumpHeader;
  /** Where `declared` and `counters` differ, said for a user. */
  counterDifferences: string[];
  /** Written to the destination (none with `verify`). */
  dirs: number;
  symlinks: number;
  files: number;
  bytes: number;
  /** JSON: files of the dump checked on the destination, and those found whole. */
  checked: number;
  present: number;
  /** JSON: files not on the destination, and files there with another size or content. */
  missing: number;
  different: number;
  /** --data: files copied from the data copy (bytes), and those it could not supply. */
  restored: number;
  restoredBytes: number;
  /** Files the destination still lacks (or, with `verify`, would lack after the restore). */
  unrestored: number;
  /** Directories and symlinks the destination lacks (`verify`: a restore would create them). */
  wouldCreate: number;
  /** Entries the destination cannot hold (symlinks on an object store). */
  skipped: number;
  /** Writes that failed. */
  failed: number;
}

const READ_CHUNK = 1 << 20;
/** Entries handled before a progress call. */
const PROGRESS_EVERY = 4096;

// ---------------------------------------------------------------------------------------------
// The input

/** A dump to load, as a local file (load reads it twice). */
export interface LoadInput {
  file: string;
  /** For messages. */
  name: string;
  /** Remove the temporary copy (for inputs that were not local files). */
  close(): Promise<void>;
}

/**
 * The input as a local file: a local path is used where it is; standard input ('-') and any other
 * address are copied to a temporary file first, because validation reads the input before the
 * restore reads it again.
 */
export async function openLoadInput(input: string, registry: BackendRegistry, stdin: Readable, signal?: AbortSignal): Promise<LoadInput> {
  if (input !== '-') {
    const a = parseAddress(input);
    if (a.scheme === 'file') {
      const file = a.bucket + a.prefix;
      const st = await fsp.stat(file).catch((err: unknown) => {
        throw new NotFoundError(`the dump ${JSON.stringify(input)} cannot be read: ${(err as Error).message}`);
      });
      if (!st.isFile()) throw new UsageError(`the dump ${JSON.stringify(input)} is not a file`);
      return { file, name: input, close: async () => {} };
    }
    if (a.prefix === '' || a.prefix.endsWith('/')) throw new UsageError(`IN ${JSON.stringify(a.display)} names a directory or bucket, not a dump`);
  }
  const dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-load-'));
  const file = join(dir, 'input');
  const close = () => fsp.rm(dir, { recursive: true, force: true });
  try {
    let body: Readable;
    let name: string;
    if (input === '-') {
      body = stdin;
      name = 'standard input';
    } else {
      const a = parseAddress(input);
      name = a.display;
      const store = await registry.open(a);
      try {
        body = await store.get('', signal ? { signal } : {});
        await pipeline(body, createWriteStream(file), signal ? { signal } : {});
      } finally {
        await store.close?.();
      }
      return { file, name, close };
    }
    await pipeline(body, createWriteStream(file), signal ? { signal } : {});
    return { file, name, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** What a dump file is, from its first bytes: gzip, then JSON or tar inside; zip; tar; JSON. */
export async function sniffFormat(file: string, name = file): Promise<DumpFormat> {
  const h = await fsp.open(file, 'r');
  let head: Buffer;
  try {
    const b = Buffer.alloc(64 << 10);
    const { bytesRead } = await h.read(b, 0, b.length, 0);
    head = b.subarray(0, bytesRead);
  } finally {
    await h.close();
  }
  if (head.length === 0) throw new InvalidDumpError(`${name} is empty: not a dump`);
  const kind = (d: Buffer): 'json' | 'tar' | undefined => {
    if (d.length >= 262 && d.toString('latin1', 257, 262) === 'ustar') return 'tar';
    const t = d.toString('latin1', 0, Math.min(d.length, 64)).trimStart();
    if (t.startsWith('{')) return 'json';
    return undefined;
  };
  if (head[0] === 0x1f && head[1] === 0x8b) {
    let d: Buffer;
    try {
      d = gunzipSync(head, { finishFlush: zc.Z_SYNC_FLUSH });
    } catch (err) {
      throw new InvalidDumpError(`${name} is not a valid gzip stream: ${(err as Error).message}`);
    }
    const k = kind(d);
    if (!k) throw new InvalidDumpError(`${name} is gzip-compressed but holds neither a ferry JSON dump nor a tar archive`);
    return k === 'json' ? 'json.gz' : 'tar.gz';
  }
  if (head[0] === 0x50 && head[1] === 0x4b && (head[2] === 3 || head[2] === 5) && (head[3] === 4 || head[3] === 6)) return 'zip';
  const k = kind(head);
  if (!k) throw new InvalidDumpError(`${name} is neither a ferry JSON dump (.json, .json.gz) nor a tar or zip archive`);
  return k;
}

function jsonStream(file: string, gz: boolean): Readable {
  const raw = createReadStream(file, { highWaterMark: READ_CHUNK });
  if (!gz) return raw;
  const z = createGunzip();
  raw.on('error', (err) => z.destroy(err));
  return raw.pipe(z);
}

// ---------------------------------------------------------------------------------------------
// Pass 1: validation

interface Validated {
  counters: DumpCounters;
  declared?: DumpCounters;
  header?: DumpHeader;
}

async function validateJson(file: string, gz: boolean, name: string, signal: AbortSignal | undefined, linksOutside: boolean): Promise<Validated> {
  const check = new NamespaceCheck(undefined, linksOutside);
  const reader = new JsonDumpReader(jsonStream(file, gz), { name });
  for await (const batch of reader.batches()) {
    signal?.throwIfAborted();
    for (const e of batch) check.add(e);
  }
  return { counters: check.counters, ...(reader.counters ? { declared: reader.counters } : {}), ...(reader.header ? { header: reader.header } : {}) };
}

function differences(declared: DumpCounters | undefined, counted: DumpCounters): string[] {
  if (!declared) return [];
  const out: string[] = [];
  for (const k of ['files', 'dirs', 'symlinks', 'bytes'] as const) {
    if (declared[k] !== counted[k]) out.push(`the dump's counters say ${declared[k]} ${k}, its entries hold ${counted[k]}`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Load

/**
 * Load the dump in `file` into `dst`. Throws InvalidDumpError (having written nothing) when any of
 * the input is invalid, UsageError when an archive would go into a destination that is not empty
 * without `force`. What was restored, found missing or different, and failed is in the report.
 */
export async function load(dst: ObjectStore, file: string, options: LoadOptions = {}): Promise<LoadReport> {
  const name = options.name ?? file;
  const signal = options.signal;
  const format = options.format ?? (await sniffFormat(file, name));
  const archive = format === 'tar' || format === 'tar.gz' || format === 'zip';
  let v: Validated;
  if (archive) {
    const { scanArchive } = await import('./archive.js');
    v = { counters: await scanArchive(format, file, signal, { linksOutside: options.linksOutside ?? false }) };
  } else v = await validateJson(file, format === 'json.gz', name, signal, options.linksOutside ?? false);
  const report: LoadReport = {
    format,
    counters: v.counters,
    ...(v.declared ? { declared: v.declared } : {}),
    ...(v.header ? { header: v.header } : {}),
    counterDifferences: differences(v.declared, v.counters),
    dirs: 0,
    symlinks: 0,
    files: 0,
    bytes: 0,
    checked: 0,
    present: 0,
    missing: 0,
    different: 0,
    restored: 0,
    restoredBytes: 0,
    unrestored: 0,
    wouldCreate: 0,
    skipped: 0,
    failed: 0,
  };
  for (const d of report.counterDifferences) options.log?.warn(d);
  if (archive) {
    const stopped = await loadMarker(dst, signal);
    if (stopped !== undefined) {
      const why = `an earlier load into ${dst.description} was stopped before it finished (${stopped}): files there may be cut short`;
      if (options.verify) options.log?.warn(why);
      else if (!options.force && !(await isEmpty(dst, signal))) throw new UsageError(`${why}; load again with --force, which writes every file of the archive anew, or empty it first`);
    }
    const empty = options.verify || options.force ? false : await isEmpty(dst, signal);
    if (!options.verify && !options.force && !empty) {
      throw new UsageError(`${dst.description} is not empty: an archive is restored into an empty destination; add --force to merge it into what is there`);
    }
    if (options.verify) await new Restore(dst, report, options).archive(format, file);
    else await whileMarked(dst, () => new Restore(dst, report, { ...options, fresh: empty }).archive(format, file));
  } else {
    const restore = new Restore(dst, report, options);
    await restore.json(jsonStream(file, format === 'json.gz'), name);
    if (restore.unlisted > 0) options.log?.warn(`${restore.unlisted} more files missing or different are not listed one by one (-v lists every one)`);
  }
  return report;
}

/**
 * Where a load of an archive says, while it runs, that it has not finished. Into an empty
 * destination, files are created at their names without a temporary (putMany `fresh`): one being
 * written when the process was killed stays cut short. The next load sees the marker and will not
 * go on without --force, which writes every file anew.
 */
export const LOAD_MARKER = '.ferry/load-incomplete';

/**
 * Runs `restore` with LOAD_MARKER in `dst`: written before, removed after, also when it fails or is
 * stopped (every write has ended then). A load killed meanwhile leaves it.
 */
async function whileMarked(dst: ObjectStore, restore: () => Promise<void>): Promise<void> {
  // Until the load ends, the marker says it has not: a load killed while it wrote leaves it.
  // The directory the marker makes goes with it, unless it was there before.
  const ferryDir = LOAD_MARKER.slice(0, LOAD_MARKER.indexOf('/') + 1);
  // What is at .ferry itself (a symlink not followed). A file or symlink of that name is the
  // destination's own, not the marker's place. Only a merge (--force) meets one (it makes DST
  // non-empty), and a merge writes every file whole: no marker then.
  const at = dst.features.dirs ? await entryAt(dst, ferryDir.slice(0, -1)) : undefined;
  const madeDir = dst.features.dirs && at === undefined;
  const inTheWay = at !== undefined && !at.isDir;
  const marker = Buffer.from(JSON.stringify({ started: new Date().toISOString(), pid: process.pid, host: hostname() }) + '\n');
  if (!inTheWay) await dst.put(LOAD_MARKER, marker, { size: marker.length });
  const unmark = async () => {
    if (inTheWay) return;
    // Only the marker this load wrote goes: an archive may hold a file of that name (a tar of a
    // tree a killed load left), restored over it, which is the archive's to keep.
    let there: Buffer;
    try {
      there = await readBody(await dst.get(LOAD_MARKER), undefined, `read ${LOAD_MARKER}`);
    } catch (err) {
      if (retryClassOf(err) === 'notFound') return;
      throw err;
    }
    if (!there.equals(marker)) return;
    await dst.delete(LOAD_MARKER);
    if (madeDir) await dst.delete(ferryDir).catch(() => undefined);
  };
  try {
    await restore();
  } catch (err) {
    // Stopped or failed, but every write has ended (Restore.archive waits for them): no file is cut short.
    await unmark().catch(() => undefined);
    throw err;
  }
  await unmark();
}

/** When the load that left LOAD_MARKER started, or undefined when there is none. */
async function loadMarker(store: ObjectStore, signal: AbortSignal | undefined): Promise<string | undefined> {
  try {
    const body = await readBody(await store.get(LOAD_MARKER, signal ? { signal } : {}), undefined, `read ${LOAD_MARKER}`);
    const started = (JSON.parse(body.subarray(0, 4096).toString()) as { started?: unknown }).started;
    return typeof started === 'string' ? `it started ${started}` : `${LOAD_MARKER} is there`;
  } catch (err) {
    if (retryClassOf(err) === 'notFound') return undefined;
    if (err instanceof SyntaxError) return `${LOAD_MARKER} is there`;
    throw err;
  }
}

/** What is at `key`, a symlink not followed, or undefined when nothing is. */
async function entryAt(store: ObjectStore, key: string): Promise<Entry | undefined> {
  try {
    return await store.head(key);
  } catch (err) {
    if (retryClassOf(err) === 'notFound') return undefined;
    throw err;
  }
}

/** True when the store holds no key (ferry's own `.ferry/` aside). */
async function isEmpty(store: ObjectStore, signal: AbortSignal | undefined): Promise<boolean> {
  try {
    for await (const page of store.list({ followSymlinks: false, ...(signal ? { signal } : {}) })) {
      for (const e of page) if (!e.key.startsWith('.ferry/')) return false;
    }
  } catch (err) {
    if (retryClassOf(err) === 'notFound') return true;
    throw err;
  }
  return true;
}

/** A directory open in the walk of the second pass: its attributes wait until everything under it is written. */
interface OpenDir {
  e: DumpEntry;
  /** Its path and '/': what the paths below it start with. */
  under: string;
  /** Something was restored under it (an object store needs no marker for it). */
  full: boolean;
}

/** Missing or different files named one by one at most (the rest with -v). */
const FILES_LISTED = 100;

/** An archive's files up to this size are read into memory and written in batches (Restore.#inFlight). */
const SMALL_FILE = 1 << 20;
/** A batch of small files is written once it holds this many files or bytes. */
const BATCH_FILES = 256;
const BATCH_BYTES = 8 << 20;
/** At most this many batches are being written at once (a file store spreads one over its threads)... */
const IN_FLIGHT_BATCHES = 4;
/** ...and at most this many bytes of small files are in memory waiting to be written. */
const IN_FLIGHT_BYTES = 64 << 20;

/** A small file of an archive waiting to be written. */
interface SmallFile {
  e: DumpEntry;
  body: Buffer;
  put: PutOptions;
}

/** The second pass: entries in order, written (or, verifying, checked) against the destination. */
class Restore {
  readonly #dst: ObjectStore;
  readonly #r: LoadReport;
  readonly #o: LoadOptions;
  readonly #verify: boolean;
  readonly #threads: number;
  readonly #open: OpenDir[] = [];
  readonly #signal: AbortSignal | undefined;
  readonly #transfer: Transfer | undefined;
  readonly #lookup: SortedLookup;
  #handled = 0;
  #skippedSaid = false;
  /** The archive's order was not depth-first: directory attributes are set in a pass of their own at the end. */
  #dirPass = false;
  /**
   * Small files of an archive being written, not waited for one by one: a file store writes many
   * at once (its file-system threads, its thread pool). Bounded by count and bytes; drained
   * (#settle) before anything that must come after them: a directory's attributes, a hard link
   * to one of them, the end.
   */
  readonly #inFlight = new Set<Promise<void>>();
  #batch: SmallFile[] = [];
  #batchBytes = 0;
  /** The keys of the writes in flight (and of the batch): an archive naming one again (not one of ferry's) waits for it. */
  readonly #inFlightKeys = new Set<string>();
  #inFlightBytes = 0;
  /** What ended a write in flight and must end the load (an abort): thrown by #settle. */
  #inFlightError: unknown;

  constructor(dst: ObjectStore, report: LoadReport, o: LoadOptions) {
    this.#dst = dst;
    this.#r = report;
    this.#o = o;
    this.#verify = o.verify === true;
    this.#threads = Math.max(1, o.threads ?? 10);
    this.#signal = o.signal;
    this.#lookup = new SortedLookup(dst, o.signal);
    if (o.data && !this.#verify) {
      this.#transfer = new Transfer(o.data, dst, {
        perms: true,
        links: false,
        checkNew: false,
        checkChange: false,
        deleteSrcAfter: false,
        deleteSrc: false,
        dry: false,
        signal: o.signal ?? new AbortController().signal,
      });
    }
  }

  get #log(): LoadLog | undefined {
    return this.#o.log;
  }

  /** Files found missing or different and not named one by one (past FILES_LISTED). */
  unlisted = 0;
  #listed = 0;

  /**
   * A missing or different file, named: the first FILES_LISTED at `level`, the rest only with -v
   * (debug), so that a restore drill of a million missing files does not bury its summary.
   */
  #sayFile(level: 'warn' | 'info', message: string): void {
    if (this.#listed < FILES_LISTED) {
      this.#listed++;
      this.#log?.[level](message);
    } else {
      this.unlisted++;
      this.#log?.debug(message);
    }
  }

  #progress(): void {
    if (++this.#handled % PROGRESS_EVERY === 0) this.#o.onProgress?.(this.#handled);
  }

  // ----- JSON

  async json(input: Readable, name: string): Promise<void> {
    const reader = new JsonDumpReader(input, { name });
    const closes: OpenDir[] = [];
    for await (const batch of reader.batches()) {
      this.#signal?.throwIfAborted();
      const files: DumpEntry[] = [];
      for (const e of batch) {
        this.#closeTo(e.path, closes);
        this.#o.onEntry?.(e);
        this.#progress();
        if (e.type === 'dir') {
          await this.#dir(e);
          this.#markParent();
          this.#open.push({ e, under: e.path + '/', full: false });
        } else if (e.type === 'symlink') {
          this.#markParent();
          await this.#symlink(e);
        } else {
          this.#markParent();
          files.push(e);
        }
        // Files wait for their directories (made above, in order); directories' attributes wait for their files.
        if (files.length >= 4 * this.#threads * 16) await this.#files(files.splice(0), closes.splice(0));
      }
      await this.#files(files, closes.splice(0));
    }
    while (this.#open.length > 0) closes.push(this.#open.pop()!);
    for (const d of closes) await this.#closeDir(d);
    this.#o.onProgress?.(this.#handled);
  }

  /** Check (and restore) files, then finish the directories closed before them. */
  async #files(files: DumpEntry[], closes: OpenDir[]): Promise<void> {
    const copies: DumpEntry[] = [];
    // Looked up one after the other, in the dump's order (which is the listing's): no lookup overtakes another.
    // A file found whole, needing no hash and no attribute, is done here without a promise of its own.
    const slow: { e: DumpEntry; st: Entry | undefined | Error }[] = [];
    for (const e of files) {
      let st = this.#lookup.now(e.path);
      if (st === MORE) st = await this.#lookup.get(e.path);
      if (st !== undefined && !(st instanceof Error) && !st.isDir && !st.isSymlink && st.size === e.size && e.md5 === undefined && e.sha256 === undefined && (this.#verify || !this.#attrsFor(e, st))) {
        this.#r.checked++;
        this.#r.present++;
      } else slow.push({ e, st });
    }
    await pool(
      slow,
      this.#threads,
      async ({ e, st }) => {
      const problem = await this.#checkFile(e, st);
      if (problem === undefined) return;
      if (problem === 'missing') this.#r.missing++;
      else this.#r.different++;
      const what = problem === 'missing' ? 'missing' : `differs (${problem})`;
      if (this.#o.data) {
        if (this.#verify) {
          const supplied = await this.#dataHas(e);
          if (supplied === undefined) {
            this.#r.restored++;
            this.#r.restoredBytes += e.size;
            this.#sayFile('info', `${what}: ${e.path} (the data copy has it)`);
          } else {
            this.#r.unrestored++;
            this.#sayFile('warn', `${what}: ${e.path}; the data copy cannot supply it: ${supplied}`);
          }
        } else {
          this.#log?.debug(`${what}: ${e.path}; copying it from the data copy`);
          copies.push(e);
        }
      } else {
        this.#r.unrestored++;
        this.#sayFile('warn', `${what}: ${e.path}`);
      }
      },
    );
    if (copies.length > 0) await this.#copy(copies);
    for (const d of closes) await this.#closeDir(d);
  }

  /** Why the destination's file differs from the entry ('missing', or what differs), or undefined when it is whole. */
  async #checkFile(e: DumpEntry, st: Entry | undefined | Error): Promise<string | undefined> {
    this.#r.checked++;
    if (st === undefined) return 'missing';
    if (st instanceof Error) return `cannot be looked at: ${st.message}`;
    if (st.isDir) return 'a directory stands where the file goes';
    if (st.isSymlink) return 'a symlink stands where the file goes';
    if (st.size !== e.size) return `${st.size} bytes, the dump says ${e.size}`;
    if (e.md5 !== undefined || e.sha256 !== undefined) {
      const algo = e.sha256 !== undefined ? 'sha256' : 'md5';
      const want = e.sha256 ?? e.md5!;
      let got: string;
      try {
        got = await digest(this.#dst, e.path, algo, this.#signal);
      } catch (err) {
        return `cannot be read: ${(err as Error).message}`;
      }
      if (got !== want) return `its ${algo} is ${got}, the dump says ${want}`;
    }
    this.#r.present++;
    if (!this.#verify) await this.#fileAttrs(e, st);
    return undefined;
  }

  /** undefined when the data copy holds the file as the dump describes it, else why not. */
  async #dataHas(e: DumpEntry): Promise<string | undefined> {
    try {
      const st = await this.#o.data!.head(e.path, this.#signal ? { signal: this.#signal } : {});
      if (st.isDir || st.isSymlink) return 'it is not a file there';
      if (st.size !== e.size) return `it has ${st.size} bytes there, the dump says ${e.size}`;
      return undefined;
    } catch (err) {
      return retryClassOf(err) === 'notFound' ? 'it is not there' : (err as Error).message;
    }
  }

  /** Copy files from the data copy with the runner, `threads` at once; each is checked against the dump after. */
  async #copy(entries: DumpEntry[]): Promise<void> {
    const tasks: Task[] = entries.map((e, id) => ({ v: 1, id, op: 'copy', entry: toStoreEntry(e) }));
    let next = 0;
    const results: TaskResult[] = [];
    const source: TaskSource = {
      next: async (want) => {
        if (next >= tasks.length) return null;
        const batch: TaskBatch = { v: 1, tasks: tasks.slice(next, next + Math.max(1, want.tasks)) };
        next += batch.tasks.length;
        return batch;
      },
      report: (r) => void results.push(...r),
    };
    const signal = this.#signal ?? new AbortController().signal;
    await new LocalExecutor('load', this.#transfer!, this.#threads).run(source, signal);
    signal.throwIfAborted();
    await pool(results, this.#threads, async (res) => {
      const e = entries[res.id]!;
      if ('error' in res) {
        this.#r.unrestored++;
        this.#r.failed++;
        this.#log?.warn(`cannot restore ${e.path} from the data copy: ${fromWire(res.error).message}`);
        return;
      }
      if (res.outcome.result !== 'copied') {
        this.#r.unrestored++;
        this.#r.failed++;
        this.#log?.warn(`cannot restore ${e.path} from the data copy: it is not there`);
        return;
      }
      if (e.md5 !== undefined || e.sha256 !== undefined) {
        const algo = e.sha256 !== undefined ? 'sha256' : 'md5';
        const got = await digest(this.#dst, e.path, algo, this.#signal).catch((err: unknown) => `unreadable (${(err as Error).message})`);
        if (got !== (e.sha256 ?? e.md5)) {
          this.#r.unrestored++;
          this.#r.failed++;
          this.#log?.warn(`${e.path} was copied from the data copy, but its ${algo} is ${got}, the dump says ${e.sha256 ?? e.md5}: the data copy holds other content`);
          return;
        }
      }
      this.#r.restored++;
      this.#r.restoredBytes += res.outcome.bytes;
      this.#r.files++;
      this.#r.bytes += res.outcome.bytes;
      this.#log?.debug(`restored ${e.path} from the data copy`);
      // The runner wrote the mode and mtime with the data; an owner it sets only from a source that has owners.
      const owner = this.#attrsFor(e);
      if (owner?.uid !== undefined) await this.#dst.setAttrs!(e.path, { uid: owner.uid, gid: owner.gid! }).catch((err: unknown) => this.#fail(e, err));
    });
  }

  /** A file's mode, owner and mtime as the dump has them, where the destination keeps them and they differ. */
  async #fileAttrs(e: DumpEntry, st?: Entry): Promise<void> {
    const a = this.#attrsFor(e, st);
    if (a) await this.#dst.setAttrs!(e.path, a);
  }

  #attrsFor(e: DumpEntry, st?: Entry): Attrs | undefined {
    const f = this.#dst.features.attrs;
    if (!f || !this.#dst.setAttrs) return undefined;
    const a: Attrs = {};
    const secondsOnly = f.mtimeRange !== undefined;
    if (f.mtime && e.mtime !== undefined && (!st || (secondsOnly ? Math.floor(st.mtime / 1000) !== Math.floor(e.mtime / 1000) : Math.abs(st.mtime - e.mtime) >= 1))) a.mtime = e.mtime;
    if (f.mode && e.mode !== undefined && (!st || st.mode !== e.mode)) a.mode = e.mode;
    if (f.owner && e.uid !== undefined && e.gid !== undefined && (!st || st.uid !== e.uid || st.gid !== e.gid)) {
      a.uid = e.uid;
      a.gid = e.gid;
    }
    return Object.keys(a).length > 0 ? a : undefined;
  }

  // ----- the namespace, shared by JSON and archives

  /** Close the open directories `path` is not in (their attributes are set by `closes`' owner). */
  #closeTo(path: string, closes: OpenDir[]): void {
    const open = this.#open;
    while (open.length > 0 && !path.startsWith(open[open.length - 1]!.under)) closes.push(open.pop()!);
  }

  #markParent(): void {
    const top = this.#open[this.#open.length - 1];
    if (top) top.full = true;
  }

  async #dir(e: DumpEntry): Promise<void> {
    const dst = this.#dst;
    if (!dst.features.dirs || !dst.mkdir) return; // an object store: a marker, if it stays empty (closeDir)
    if (this.#verify) {
      if (!(await this.#exists(e.path + '/'))) {
        this.#r.wouldCreate++;
        this.#log?.info(`missing directory (a restore creates it): ${e.path}`);
      }
      return;
    }
    try {
      // Its mode comes with its other attributes once its contents are in: a read-only directory
      // made read-only first could not take them.
      await dst.mkdir(e.path);
      this.#r.dirs++;
    } catch (err) {
      this.#fail(e, err);
    }
  }

  /** Everything under a directory is done: its marker (object stores, if it is empty) or its attributes. */
  async #closeDir(d: OpenDir): Promise<void> {
    const dst = this.#dst;
    const e = d.e;
    if (!dst.features.dirs) {
      if (d.full) return;
      if (this.#verify) {
        if (!(await this.#exists(e.path + '/'))) {
          this.#r.wouldCreate++;
          this.#log?.info(`missing empty directory (a restore creates its marker): ${e.path}/`);
        }
        return;
      }
      try {
        const f = dst.features.attrs;
        await dst.put(e.path + '/', Buffer.alloc(0), {
          size: 0,
          ...(f?.mtime && e.mtime !== undefined ? { mtime: e.mtime } : {}),
          ...(f?.mode && e.mode !== undefined ? { mode: e.mode } : {}),
          ...(this.#signal ? { signal: this.#signal } : {}),
        });
        this.#r.dirs++;
      } catch (err) {
        this.#fail(e, err);
      }
      return;
    }
    if (this.#verify || this.#dirPass) return;
    await this.#dirAttrs(e);
  }

  async #dirAttrs(e: DumpEntry): Promise<void> {
    const a = this.#attrsFor(e);
    if (!a) return;
    try {
      await this.#dst.setAttrs!(e.path + '/', a);
    } catch (err) {
      this.#fail(e, err);
    }
  }

  async #symlink(e: DumpEntry): Promise<void> {
    const dst = this.#dst;
    if (!dst.features.symlinks || !dst.symlink) {
      this.#r.skipped++;
      if (!this.#skippedSaid) {
        this.#skippedSaid = true;
        this.#log?.warn(`${dst.description} cannot hold symlinks: ${e.path} and every other symlink of the dump are not restored`);
      }
      return;
    }
    if (this.#verify) {
      try {
        const st = await dst.head(e.path, { followSymlinks: false });
        if (st.isSymlink && st.target === e.target) return;
        this.#r.wouldCreate++;
        this.#log?.info(`symlink ${e.path} differs (a restore replaces it)`);
      } catch (err) {
        if (retryClassOf(err) !== 'notFound') throw err;
        this.#r.wouldCreate++;
        this.#log?.info(`missing symlink (a restore creates it): ${e.path}`);
      }
      return;
    }
    try {
      await dst.symlink(e.path, e.target!);
      this.#r.symlinks++;
      const f = dst.features.attrs;
      if (f && dst.setAttrs) {
        const a: Attrs = {};
        if (f.mtime && e.mtime !== undefined) a.mtime = e.mtime;
        if (f.owner && e.uid !== undefined && e.gid !== undefined) {
          a.uid = e.uid;
          a.gid = e.gid;
        }
        if (Object.keys(a).length > 0) await dst.setAttrs(e.path, a, { isSymlink: true });
      }
    } catch (err) {
      this.#fail(e, err);
    }
  }

  async #exists(key: string): Promise<boolean> {
    try {
      await this.#dst.head(key);
      return true;
    } catch (err) {
      if (retryClassOf(err) === 'notFound') return false;
      throw err;
    }
  }

  #fail(e: DumpEntry, err: unknown): void {
    if (this.#signal?.aborted) throw err;
    this.#r.failed++;
    this.#log?.warn(`cannot restore ${e.path}: ${(err as Error)?.message ?? err}`);
  }

  // ----- archives

  async archive(format: 'tar' | 'tar.gz' | 'zip', file: string): Promise<void> {
    const { extractArchive } = await import('./archive.js');
    const closes: OpenDir[] = [];
    const finish = async () => {
      if (closes.length === 0) return;
      // A directory's mtime comes after its contents are written.
      await this.#settle();
      for (const d of closes.splice(0)) await this.#closeDir(d);
    };
    try {
      await extractArchive(
        format,
        file,
        (e, data) => {
          if (e.path === '') return;
          this.#closeTo(e.path, closes);
          // A small file given whole, with nothing to wait for first, joins the batch at once: no
          // promise per entry (most entries of a tree of small files).
          if (Buffer.isBuffer(data) && closes.length === 0 && !this.#inFlightKeys.has(e.path) && e.type === 'file' && e.linkTo === undefined && e.size <= SMALL_FILE && !this.#verify) {
            this.#entered(e);
            return this.#archiveSmallFile(e, data, this.#putOptions(e));
          }
          return (async () => {
            try {
              await finish();
              if (this.#inFlightKeys.has(e.path)) await this.#settle();
              this.#entered(e);
              if (e.type === 'dir') {
                await this.#dir(e);
                this.#open.push({ e, under: e.path + '/', full: false });
              } else if (e.type === 'symlink') await this.#symlink(e);
              else await this.#archiveFile(e, data);
            } finally {
              // Whatever became of the entry, the archive goes on to the next one (data the reader
              // had whole is no stream to drain).
              if (data && !Buffer.isBuffer(data) && !data.readableEnded) data.resume();
            }
          })();
        },
        this.#signal,
        { linksOutside: this.#o.linksOutside ?? false, entries: this.#entries },
      );
    } catch (err) {
      // Nothing may still be writing when the load ends (its store is closed next); what was read is written.
      await this.#sendBatch();
      while (this.#inFlight.size > 0) await Promise.all(this.#inFlight);
      throw err;
    }
    while (this.#open.length > 0) closes.push(this.#open.pop()!);
    await finish();
    await this.#settle();
    if (this.#dirPass && !this.#verify && this.#dst.features.dirs) {
      // Setting a directory's attributes changes nothing in its parent: any order does.
      await extractArchive(
        format,
        file,
        async (e, data) => {
          if (data && !Buffer.isBuffer(data)) data.resume();
          if (e.type === 'dir' && e.path !== '') await this.#dirAttrs(e);
        },
        this.#signal,
        { linksOutside: this.#o.linksOutside ?? false, entries: this.#entries },
      );
    }
    this.#o.onProgress?.(this.#handled);
  }

  /** Write the batch and wait for every write in flight; an abort that ended one is thrown. */
  async #settle(): Promise<void> {
    await this.#sendBatch();
    while (this.#inFlight.size > 0) await Promise.all(this.#inFlight);
    if (this.#inFlightError !== undefined) throw this.#inFlightError;
  }

  /** Its owner, after the data (chown clears set-user/group-ID bits, so those are set again after it). */
  async #archiveOwner(e: DumpEntry): Promise<void> {
    const dst = this.#dst;
    const f = dst.features.attrs;
    if (f?.owner && e.uid !== undefined && e.gid !== undefined && dst.setAttrs) {
      await dst.setAttrs(e.path, { uid: e.uid, gid: e.gid, ...(f.mode && e.mode !== undefined && (e.mode & 0o6000) !== 0 ? { mode: e.mode } : {}) });
    }
  }

  /**
   * A small file: its data read now (the archive moves on), written later with others in one
   * batch (ObjectStore.putMany where the store has it). Up to IN_FLIGHT_BATCHES batches and
   * IN_FLIGHT_BYTES in memory; failures are counted per entry as ever.
   */
  #archiveSmallFile(e: DumpEntry, data: Readable | Buffer | undefined, put: PutOptions): void | Promise<void> {
    // A tar's small file comes whole: no stream to read, and nothing to wait for unless the batch goes out.
    if (data === undefined || Buffer.isBuffer(data)) return this.#batchSmallFile(e, data ?? Buffer.alloc(0), put);
    return readBody(data, e.size, `read ${e.path} from the archive`).then(
      (body) => this.#batchSmallFile(e, body, put),
      (err: unknown) => this.#fail(e, err),
    );
  }

  #batchSmallFile(e: DumpEntry, body: Buffer, put: PutOptions): void | Promise<void> {
    try {
      const algo = e.sha256 !== undefined ? 'sha256' : e.md5 !== undefined ? 'md5' : undefined;
      if (algo) {
        const got = createHash(algo).update(body).digest('hex');
        if (got !== (e.sha256 ?? e.md5)) throw new ChecksumMismatchError(`its ${algo} is ${got}, the archive says ${e.sha256 ?? e.md5}`);
      }
    } catch (err) {
      this.#fail(e, err);
      return;
    }
    if (this.#inFlightError !== undefined) throw this.#inFlightError;
    this.#batch.push({ e, body, put });
    this.#batchBytes += body.length;
    this.#inFlightKeys.add(e.path);
    if (this.#batch.length >= BATCH_FILES || this.#batchBytes >= BATCH_BYTES) return this.#sendBatch();
  }

  /** Write the batch of small files without waiting for it, once fewer than IN_FLIGHT_BATCHES (and IN_FLIGHT_BYTES) are. */
  async #sendBatch(): Promise<void> {
    if (this.#batch.length === 0) return;
    const batch = this.#batch;
    const bytes = this.#batchBytes;
    this.#batch = [];
    this.#batchBytes = 0;
    while (this.#inFlight.size >= IN_FLIGHT_BATCHES || (this.#inFlight.size > 0 && this.#inFlightBytes + bytes > IN_FLIGHT_BYTES)) await Promise.race(this.#inFlight);
    this.#inFlightBytes += bytes;
    const write = this.#writeBatch(batch).finally(() => {
      this.#inFlightBytes -= bytes;
      for (const b of batch) this.#inFlightKeys.delete(b.e.path);
      this.#inFlight.delete(write);
    });
    this.#inFlight.add(write);
  }

  async #writeBatch(batch: SmallFile[]): Promise<void> {
    const dst = this.#dst;
    const f = dst.features.attrs;
    const fail = (e: DumpEntry, err: unknown) => {
      try {
        this.#fail(e, err);
      } catch (abort) {
        this.#inFlightError ??= abort;
      }
    };
    const done = (e: DumpEntry) => {
      this.#r.files++;
      this.#r.bytes += e.size;
    };
    if (dst.putMany) {
      // The owner is set with the data, before the mode (chown clears set-user/group-ID bits).
      const owner = (e: DumpEntry) => (f?.owner && e.uid !== undefined && e.gid !== undefined ? { owner: { uid: e.uid, gid: e.gid } } : {});
      let results: (Error | undefined)[];
      try {
        results = await dst.putMany(
          batch.map((b) => ({ key: b.e.path, body: b.body, options: b.put, ...owner(b.e) })),
          { ...(this.#signal ? { signal: this.#signal } : {}), ...(this.#o.fresh ? { fresh: true } : {}) },
        );
      } catch (err) {
        for (const b of batch) fail(b.e, err);
        return;
      }
      results.forEach((err, i) => (err ? fail(batch[i]!.e, err) : done(batch[i]!.e)));
      return;
    }
    await Promise.all(
      batch.map(async (b) => {
        try {
          await dst.put(b.e.path, b.body, b.put);
          done(b.e);
          await this.#archiveOwner(b.e);
        } catch (err) {
          fail(b.e, err);
        }
      }),
    );
  }

  /** Entries the first pass counted in the input. */
  get #entries(): number {
    const c = this.#r.counters;
    return c.files + c.dirs + c.symlinks;
  }

  /** An archive's entry is under way: the walk's bookkeeping before it is written. */
  #entered(e: DumpEntry): void {
    // Depth-first order puts an entry right below the innermost open directory; another order
    // (an archive made by another tool) leaves the directories' attributes to a pass of their own.
    const slash = e.path.lastIndexOf('/');
    const top = this.#open[this.#open.length - 1];
    if (top ? slash !== top.e.path.length || !e.path.startsWith(top.under) : slash >= 0) this.#dirPass = true;
    this.#o.onEntry?.(e);
    this.#progress();
    this.#markParent();
  }

  /** How an archive's file is put: its size, and the mtime and mode where DST keeps them. */
  #putOptions(e: DumpEntry): PutOptions & { size: number } {
    const f = this.#dst.features.attrs;
    const put: PutOptions & { size: number } = { size: e.size };
    if (f?.mtime && e.mtime !== undefined) put.mtime = e.mtime;
    if (f?.mode && e.mode !== undefined) put.mode = e.mode;
    if (this.#signal) put.signal = this.#signal;
    return put;
  }

  async #archiveFile(e: DumpEntry, data: Readable | Buffer | undefined): Promise<void> {
    const dst = this.#dst;
    if (this.#verify) return;
    const put = this.#putOptions(e);
    if (e.linkTo === undefined && e.size <= SMALL_FILE) return this.#archiveSmallFile(e, data, put);
    // A hard link's target may be in flight; so may a small file this one replaces.
    await this.#settle();
    try {
      if (e.linkTo !== undefined) {
        // A hard link: a copy of its target, restored before it.
        if (dst.copyFrom && dst.copySource) await dst.copyFrom(e.path, dst.copySource(e.linkTo), put);
        else await dst.put(e.path, await dst.get(e.linkTo, this.#signal ? { signal: this.#signal } : {}), put);
      } else {
        const algo = e.sha256 !== undefined ? 'sha256' : e.md5 !== undefined ? 'md5' : undefined;
        const hash = algo ? createHash(algo) : undefined;
        let body: Readable = data === undefined ? emptyStream() : Buffer.isBuffer(data) ? Readable.from([data]) : data;
        if (hash) body = body.pipe(new Transform({ transform: (c: Buffer, _e, cb) => (hash.update(c), cb(null, c)) }));
        await dst.put(e.path, body, put);
        if (hash) {
          const got = hash.digest('hex');
          if (got !== (e.sha256 ?? e.md5)) throw new ChecksumMismatchError(`its ${algo} is ${got}, the archive says ${e.sha256 ?? e.md5}`);
        }
      }
      this.#r.files++;
      this.#r.bytes += e.size;
      // The mode came with the data.
      await this.#archiveOwner(e);
    } catch (err) {
      this.#fail(e, err);
    }
  }
}

/**
 * What the destination holds at the keys a dump names, found by listing it alongside the dump: a
 * dump written by ferry names its files in key order, which is the listing's, so one listing
 * answers every lookup (a million HEAD requests, and a million "not found" errors, are avoided).
 * A key before the last one looked up (a dump edited by hand) is asked of the store itself.
 */
const MORE: unique symbol = Symbol('more');

class SortedLookup {
  #pages: AsyncIterator<Entry[]> | undefined;
  #page: Entry[] = [];
  #i = 0;
  #done = false;
  #last: string | undefined;

  constructor(
    readonly store: ObjectStore,
    readonly signal: AbortSignal | undefined,
  ) {}

  /**
   * `get` without waiting, when the listing's page in hand answers (the common case): MORE when
   * the next page must be fetched first (then call `get`).
   */
  now(key: string): Entry | undefined | Error | typeof MORE {
    if (this.#last !== undefined && compareKeys(key, this.#last) <= 0) return MORE;
    while (this.#i < this.#page.length) {
      const e = this.#page[this.#i]!;
      const c = compareKeys(e.key, key);
      if (c > 0) {
        this.#last = key;
        return undefined;
      }
      this.#i++;
      if (c === 0) {
        this.#last = key;
        return e.error === undefined ? e : new Error(e.error);
      }
    }
    if (this.#done) {
      this.#last = key;
      return undefined;
    }
    return MORE;
  }

  /** The entry at `key`, undefined when there is none, or the error that kept it from being looked at. */
  async get(key: string): Promise<Entry | undefined | Error> {
    if (this.#last !== undefined && compareKeys(key, this.#last) <= 0) return this.#head(key);
    this.#last = key;
    try {
      for (;;) {
        while (this.#i < this.#page.length) {
          const e = this.#page[this.#i]!;
          const c = compareKeys(e.key, key);
          if (c > 0) return undefined;
          this.#i++;
          if (c === 0) return e.error === undefined ? e : new Error(e.error);
        }
        if (this.#done) return undefined;
        this.#pages ??= this.store.list({ followSymlinks: false, ...(this.signal ? { signal: this.signal } : {}) })[Symbol.asyncIterator]();
        const next = await this.#pages.next();
        if (next.done) {
          this.#done = true;
          return undefined;
        }
        this.#page = next.value;
        this.#i = 0;
      }
    } catch (err) {
      if (retryClassOf(err) === 'notFound') {
        // The destination does not exist (yet): nothing is there.
        this.#done = true;
        this.#page = [];
        return undefined;
      }
      throw err;
    }
  }

  async #head(key: string): Promise<Entry | undefined | Error> {
    try {
      return await this.store.head(key, this.signal ? { signal: this.signal } : {});
    } catch (err) {
      if (retryClassOf(err) === 'notFound') return undefined;
      return err as Error;
    }
  }
}

function emptyStream(): Readable {
  const s = new PassThrough();
  s.end();
  return s;
}

/** A dump entry as the runner's Entry (a file to copy, with the dump's attributes). */
function toStoreEntry(e: DumpEntry): Entry {
  return {
    key: e.path,
    size: e.size,
    mtime: e.mtime ?? Date.now(),
    isDir: false,
    ...(e.mode !== undefined ? { mode: e.mode } : {}),
    ...(e.uid !== undefined ? { uid: e.uid } : {}),
    ...(e.gid !== undefined ? { gid: e.gid } : {}),
  };
}

async function digest(store: ObjectStore, key: string, algo: 'md5' | 'sha256', signal: AbortSignal | undefined): Promise<string> {
  const h = createHash(algo);
  const body = await store.get(key, signal ? { signal } : {});
  for await (const c of body as AsyncIterable<Buffer>) h.update(c);
  return h.digest('hex');
}

/** Run `each` over `items`, `n` at once. */
async function pool<T>(items: T[], n: number, each: (item: T) => Promise<void>): Promise<void> {
  let i = 0;
  const worker = async () => {
    while (i < items.length) await each(items[i++]!);
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}
