import { FerryError, isAbortError, NotFoundError } from '../../shared/errors.js';
import { compareKeys } from '../../shared/storage/keys.js';
import type { Entry, ListOptions, ObjectStore } from '../../shared/storage/types.js';

/** ferry's own keys (metadata backups) at the root of a sync: never listed, so never deleted. */
export const RESERVED_PREFIX = '.ferry/';
/** The first key after every key that starts with RESERVED_PREFIX ('0' follows '/'). */
const RESERVED_END = '.ferry0';

export interface ListSideOptions {
  /** First key to list (inclusive), `--start`. */
  start?: string;
  /** Last key to list (inclusive), `--end`. */
  end?: string;
  followSymlinks: boolean;
  /** `--list-threads`: sub-trees listed at once. */
  threads: number;
  /** `--list-depth`: levels of directories split into sub-trees listed in parallel. */
  depth: number;
  signal?: AbortSignal;
  /** Passed to the store's list(): remove abandoned temporary files (a destination's listing). */
  reclaim?: (path: string, bytes: number) => void;
  /** Pages buffered ahead per sub-tree. */
  pagesAhead?: number;
  /**
   * Directory keys under which nothing is wanted (a filter excludes all of it: rules.ts
   * compileSubtreeTest): tree stores do not read them. Their own entries are still listed.
   */
  skipDir?: (key: string) => boolean;
  /** `--list-cutoff`: directories of more names are sorted on disk (ListOptions.listCutoff). */
  listCutoff?: number;
}

const PAGE = 1000;

/**
 * One side's listing for a sync: the store's keys in UTF-8 byte order within [start, end], without
 * ferry's reserved keys. With more than one list thread, the top `depth` levels are read with a
 * delimiter and the sub-trees below are listed concurrently (at most `threads` at once, a few
 * pages buffered each), then yielded in order — memory stays bounded by threads × pages.
 *
 * The listing starts at once and runs a page ahead of its consumer, so that the two sides of a
 * sync are listed at the same time (more pages ahead cost memory and collection time, and gained
 * nothing measurable). Iterate it to its end or stop it (`return()`, as `for await` does on
 * `break`): stopping lets go of what the store holds (temporary files of large directories).
 */
export function listSide(store: ObjectStore, o: ListSideOptions): AsyncIterable<Entry[]> {
  const ahead = new Prefetch(o.threads > 1 ? parallelPages(store, o) : sequentialPages(store, o), 1);
  return bounded(ahead.drain(), o.end);
}

/** Pages up to `end` (inclusive), without ferry's reserved keys. */
async function* bounded(pages: AsyncIterable<Entry[]>, end: string | undefined): AsyncIterable<Entry[]> {
  for await (const page of pages) {
    let out = page;
    let stop = false;
    if (end !== undefined && page.length > 0 && compareKeys(page[page.length - 1]!.key, end) > 0) {
      out = page.filter((e) => compareKeys(e.key, end) <= 0);
      stop = true;
    }
    // Reserved keys are a contiguous run in key order: filter only pages that reach into it.
    if (out.length > 0 && compareKeys(out[0]!.key, RESERVED_END) < 0 && compareKeys(out[out.length - 1]!.key, RESERVED_PREFIX) >= 0) {
      out = out.filter((e) => !e.key.startsWith(RESERVED_PREFIX));
    }
    if (out.length > 0) yield out;
    if (stop) return;
  }
}

/** What every list() call of a side passes on. */
function passOn(o: ListSideOptions): Pick<ListOptions, 'signal' | 'reclaim' | 'skipDir' | 'listCutoff'> {
  return {
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.reclaim ? { reclaim: o.reclaim } : {}),
    ...(o.skipDir ? { skipDir: o.skipDir } : {}),
    ...(o.listCutoff === undefined ? {} : { listCutoff: o.listCutoff }),
  };
}

async function headStart(store: ObjectStore, o: ListSideOptions): Promise<Entry | undefined> {
  if (o.start === undefined) return undefined;
  try {
    return await store.head(o.start, { followSymlinks: o.followSymlinks });
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
}

async function* sequentialPages(store: ObjectStore, o: ListSideOptions): AsyncIterable<Entry[]> {
  // List() starts after a key; --start is inclusive, so the start key itself is looked up apart.
  const first = await headStart(store, o);
  if (first) yield [first];
  yield* store.list({
    followSymlinks: o.followSymlinks,
    ...(o.start === undefined ? {} : { startAfter: o.start }),
    ...passOn(o),
  });
}

/** A sub-tree comes with its directory's own entry (stores with real directories): see subtreePages. */
type Unit = { entry: Entry } | { prefix: string; dir?: Entry };

/**
 * A directory that cannot be read (permission denied, a name the system refuses): its sub-tree
 * fails, not the listing, as the walk of one tree does (tree.ts). Transient failures were retried
 * already and stopping is not a failure: those end the listing.
 */
function unreadable(err: unknown, o: ListSideOptions): boolean {
  return err instanceof FerryError && err.retry !== 'transient' && err.retry !== 'throttled' && !isAbortError(err) && !o.signal?.aborted;
}

/** The keys of the top levels and the sub-trees below them, in order. */
async function* units(store: ObjectStore, prefix: string, depth: number, o: ListSideOptions): AsyncIterable<Unit> {
  // No startAfter here: a sub-prefix before --start ('a/' for 'a/b') still holds keys after it,
  // and a delimiter listing would leave it out.
  const pages = store.list({
    prefix,
    delimiter: '/',
    followSymlinks: o.followSymlinks,
    ...passOn(o),
  });
  const start = o.start;
  for await (const page of pages) {
    for (const e of page) {
      if (start !== undefined && compareKeys(e.key, start) <= 0 && !(e.key.endsWith('/') && start.startsWith(e.key))) continue;
      if (e.isDir && e.key.endsWith('/')) {
        // Stores with real directories report them here with their attributes; on object stores a
        // common prefix is not an object (a directory marker, if any, is listed in the sub-tree).
        const own = store.features.dirs && (o.start === undefined || compareKeys(e.key, o.start) > 0) ? e : undefined;
        // Nothing under it is wanted: not listed at all. Only where the directory is an entry of
        // its own; an object store's directory marker would be listed in the sub-tree.
        if (store.features.dirs && o.skipDir?.(e.key)) {
          if (own) yield { entry: own };
          continue;
        }
        if (depth > 1) yield* deeper(store, e.key, own, depth - 1, o);
        else yield own ? { prefix: e.key, dir: own } : { prefix: e.key };
      } else yield { entry: e };
    }
  }
}

/**
 * The units below directory `key`, after its own entry: an entry marked with the error when the
 * directory cannot be read, so that the planner protects what lies under it.
 */
async function* deeper(store: ObjectStore, key: string, own: Entry | undefined, depth: number, o: ListSideOptions): AsyncIterable<Unit> {
  const it = units(store, key, depth, o)[Symbol.asyncIterator]();
  let first: IteratorResult<Unit>;
  try {
    first = await it.next();
  } catch (err) {
    if (!own || !unreadable(err, o)) throw err;
    yield { entry: { ...own, error: (err as Error).message } };
    return;
  }
  if (own) yield { entry: own };
  if (first.done) return;
  yield first.value;
  for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
}

/**
 * A sub-tree listed ahead, after its directory's own entry; the entry marked with the error when
 * the sub-tree cannot be read at all.
 */
async function* subtreePages(sub: Prefetch, o: ListSideOptions): AsyncIterable<Entry[]> {
  let started = false;
  try {
    for await (const p of sub.drain()) {
      if (!started && sub.dir) yield [sub.dir];
      started = true;
      yield p;
    }
  } catch (err) {
    if (started || !sub.dir || !unreadable(err, o)) throw err;
    yield [{ ...sub.dir, error: (err as Error).message }];
    return;
  }
  if (!started && sub.dir) yield [sub.dir];
}

/**
 * Lists into a small buffer (`max` pages) while the consumer is still busy with earlier pages.
 * Stopping it (or stopping its drain()) ends the listing with its source's return(), which lets go
 * of what the source holds, as soon as the page being listed arrives.
 */
class Prefetch {
  readonly #pages: Entry[][] = [];
  #done = false;
  #stopped = false;
  #error: unknown;
  #wake: (() => void) | undefined;
  #space: (() => void) | undefined;
  /** A sub-tree's directory entry, given before its pages (parallelPages). */
  dir: Entry | undefined;

  constructor(source: AsyncIterable<Entry[]>, readonly max: number) {
    void this.#run(source);
  }

  async #run(source: AsyncIterable<Entry[]>): Promise<void> {
    try {
      for await (const p of source) {
        while (this.#pages.length >= this.max && !this.#stopped) await new Promise<void>((r) => (this.#space = r));
        if (this.#stopped) break;
        this.#pages.push(p);
        this.#wake?.();
      }
    } catch (err) {
      this.#error = err;
    }
    this.#done = true;
    this.#wake?.();
  }

  stop(): void {
    this.#stopped = true;
    this.#pages.length = 0;
    this.#space?.();
  }

  async *drain(): AsyncIterable<Entry[]> {
    try {
      for (;;) {
        const p = this.#pages.shift();
        if (p) {
          this.#space?.();
          yield p;
          continue;
        }
        if (this.#error) throw this.#error;
        if (this.#done) return;
        await new Promise<void>((r) => (this.#wake = r));
      }
    } finally {
      if (!this.#done) this.stop();
    }
  }
}

async function* parallelPages(store: ObjectStore, o: ListSideOptions): AsyncIterable<Entry[]> {
  const first = await headStart(store, o);
  if (first) yield [first];
  const ahead = o.pagesAhead ?? 4;
  const queue: (Entry | Prefetch)[] = [];
  let active = 0;
  let queued = 0;
  let batch: Entry[] = [];

  const subtree = (prefix: string) =>
    store.list({
      prefix,
      followSymlinks: o.followSymlinks,
      ...(o.start !== undefined && o.start.startsWith(prefix) ? { startAfter: o.start } : {}),
      ...passOn(o),
    });

  // Yield the queue's head until fewer than `threads` sub-trees are pending.
  async function* flush(all: boolean): AsyncIterable<Entry[]> {
    // Entries at the head go straight out; those queued behind sub-trees are bounded too.
    while (queue.length > 0 && (all || active >= o.threads || queued >= PAGE * 4 || !(queue[0] instanceof Prefetch))) {
      const head = queue.shift()!;
      if (head instanceof Prefetch) {
        if (batch.length > 0) {
          yield batch;
          batch = [];
        }
        for await (const p of subtreePages(head, o)) yield p;
        active--;
      } else {
        queued--;
        batch.push(head);
        if (batch.length >= PAGE) {
          yield batch;
          batch = [];
        }
      }
    }
  }

  try {
    for await (const u of units(store, '', Math.max(1, o.depth), o)) {
      if ('entry' in u) {
        queue.push(u.entry);
        queued++;
      } else {
        if (o.start !== undefined && compareKeys(u.prefix, o.start) < 0 && !o.start.startsWith(u.prefix)) continue;
        const sub = new Prefetch(subtree(u.prefix), ahead);
        sub.dir = u.dir;
        queue.push(sub);
        active++;
      }
      yield* flush(false);
    }
    yield* flush(true);
    if (batch.length > 0) yield batch;
  } finally {
    // Stopped early or failed: the sub-trees listed ahead stop too.
    for (const q of queue) if (q instanceof Prefetch) q.stop();
  }
}
