import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { AbortedError, FerryError, NotFoundError } from '../../shared/errors.js';
import { compareKeys, isUnder, parentKey } from '../../shared/storage/keys.js';
import type { Entry, ObjectStore } from '../../shared/storage/types.js';
import { ByteRateLimiter } from '../../shared/throttle/bucket.js';
import { Transfer } from '../../shared/transfer/copy.js';
import type { Outcome, Task } from '../../shared/transfer/task.js';
import { decide, sideFeatures, type DecisionOptions } from './decide.js';
import { Executor } from './executor.js';
import { listSide, RESERVED_PREFIX, type ListSideOptions } from './list.js';
import { mergeListings, type Diff } from './merge.js';
import { SyncStats } from './stats.js';

/** What the executor runs: one task, or a batch of file copies. */
type Work = Task | Entry[];

/** File copies per batch, when the stores copy in batches. */
const BATCH = 256;
/** Copies kept for a second pass (see `blocked` in runSync). */
const BLOCKED_MAX = 10_000;
/** Larger files are copied one a task, so that their progress shows and they spread over threads. */
const BATCH_FILE_MAX = 16 << 20;

export interface Logger {
  error(message: string): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

export interface SyncOptions extends DecisionOptions {
  start?: string;
  end?: string;
  /** Keep this entry? (include/exclude rules, size, age and time filters); absent keeps all. */
  filter?: (e: Entry) => boolean;
  /** Objects to handle at most (`--limit`; -1 for no limit). */
  limit: number;
  /** A file naming the keys (or 'dir/' prefixes) to sync, one per line. */
  filesFrom?: string;
  inplace: boolean;
  deleteSrcAfter: boolean;
  checkNew: boolean;
  checkChange: boolean;
  /** Stop after this many failures (-1: never). */
  maxFailure: number;
  /** Delete at most this many keys (-1: no limit); deletions past it are withheld (`--max-deletes`). */
  maxDeletes: number;
  dry: boolean;
  threads: number;
  listThreads: number;
  listDepth: number;
  /** Megabits per second for the whole process; 0 means no limit. */
  bwlimit: number;
  storageClass?: string;
}

export interface RunControl {
  /** Aborted: stop listing and starting tasks, let running tasks finish (first Ctrl-C). */
  stopListing: AbortSignal;
  /** Aborted: stop everything now (second Ctrl-C). */
  stopNow: AbortSignal;
  logger: Logger;
  stats?: SyncStats;
}

export interface SyncResult {
  stats: SyncStats;
  /** The run stopped before the end: interrupted, or too many failures. */
  stopped: 'interrupted' | 'maxFailure' | undefined;
  /** A failure that ended the run itself (a listing that failed), not a single key. */
  fatal?: unknown;
}

/**
 * One sync: list both sides, merge, decide per key, run the tasks. Single-machine and cluster runs
 * share this planner; only where tasks execute differs.
 */
export async function runSync(src: ObjectStore, dst: ObjectStore, o: SyncOptions, control: RunControl): Promise<SyncResult> {
  const stats = control.stats ?? new SyncStats();
  const log = control.logger;
  let stopped: SyncResult['stopped'];
  const listAbort = new AbortController();
  const onStopListing = () => {
    stopped ??= 'interrupted';
    listAbort.abort();
  };
  control.stopListing.addEventListener('abort', onStopListing);
  const onStopNow = () => listAbort.abort();
  control.stopNow.addEventListener('abort', onStopNow);

  const transfer = new Transfer(src, dst, {
    perms: o.perms,
    links: o.links,
    checkNew: o.checkNew,
    checkChange: o.checkChange,
    deleteSrcAfter: o.deleteSrcAfter,
    deleteSrc: o.deleteSrc,
    dry: o.dry,
    ...(o.storageClass ? { storageClass: o.storageClass } : {}),
    ...(o.bwlimit > 0 ? { limiter: new ByteRateLimiter((o.bwlimit * 1e6) / 8) } : {}),
    signal: control.stopNow,
    onBytes: (n) => (stats.transferredBytes += n),
  });

  const record = (task: Task, out: Outcome): void => {
    const e = task.entry;
    if (out.warning) log.warn(out.warning);
    if (out.checked) {
      stats.checked++;
      stats.checkedBytes += e.size;
    }
    if (task.op === 'finishDir') return;
    stats.handled++;
    switch (out.result) {
      case 'copied':
        stats.copied++;
        stats.copiedBytes += out.bytes;
        log.debug(`${o.dry ? 'would copy' : 'copied'} ${e.key} (${out.bytes} bytes)`);
        break;
      case 'skipped':
        stats.skipped++;
        stats.skippedBytes += e.size;
        break;
      case 'deleted':
        stats.deleted++;
        log.debug(`${o.dry ? 'would delete' : 'deleted'} ${e.key} from the ${task.op === 'deleteDst' ? 'destination' : 'source'}`);
        break;
      case 'kept':
        stats.extra++;
        break;
    }
  };
  /**
   * Copies that failed while --delete-dst was removing destination keys: typically a directory
   * with content (or a symlink, or a file being replaced) where their file or parent directory
   * must go, which this run deletes concurrently. They run once more when everything else is done,
   * so a file that became a directory, or the reverse, converges in one run; a second failure is
   * counted as usual. Bounded: past the cap they fail at once and the next run finishes them.
   */
  const blocked: Task[] = [];
  let secondPass = false;
  const fail = (task: Task, err: unknown): void => {
    if (control.stopNow.aborted) return; // counted as lost
    const code = err instanceof FerryError ? err.code : undefined;
    if (o.deleteDst && !secondPass && task.op === 'copy' && blocked.length < BLOCKED_MAX) {
      blocked.push(task);
      return;
    }
    if (task.op !== 'finishDir') stats.handled++;
    stats.failed++;
    log.error(`failed to ${describeOp(task)} ${JSON.stringify(task.entry.key)}: ${(err as Error).message ?? err}${code === undefined || code === 'FERRY_FATAL' ? '' : ` [${code}]`}`);
    if (o.maxFailure >= 0 && stats.failed > o.maxFailure && !stopped) {
      stopped = 'maxFailure';
      log.error(`more than ${o.maxFailure} failures (--max-failure): stopping`);
      listAbort.abort();
    }
  };
  /** Run a task, or a batch of file copies, and count the outcome of each key; never throws. */
  const account = async (work: Work): Promise<void> => {
    if (Array.isArray(work)) {
      let results: (Outcome | { error: unknown })[];
      try {
        results = await transfer.runCopies(work);
      } catch (err) {
        results = work.map(() => ({ error: err }));
      }
      results.forEach((r, i) => {
        const task: Task = { v: 1, op: 'copy', entry: work[i]! };
        if ('error' in r) fail(task, r.error);
        else record(task, r);
      });
      return;
    }
    try {
      record(work, await transfer.run(work));
    } catch (err) {
      fail(work, err);
    }
  };
  /** File copies waiting to go out as one batch (disk-to-disk syncs): see Transfer.batchable. */
  const batchable = transfer.batchable;
  let batch: Entry[] = [];
  const flushBatch = (): Promise<boolean> | undefined => {
    if (batch.length === 0) return undefined;
    const b = batch;
    batch = [];
    return executor.submit(b)?.then((started) => {
      if (!started) stats.found -= b.length;
      return started;
    });
  };
  const executor = new Executor<Work>(account, Math.max(1, o.threads) * (batchable ? 1 : transfer.depth), () => listAbort.signal.aborted);
  const features = sideFeatures(src.features, dst.features);
  let limit = o.limit;
  /**
   * Sub-trees whose listing was incomplete on either side (an unreadable directory, a name ferry
   * cannot address): nothing under them is deleted, on either side. Keys arrive in order, so only
   * the prefixes enclosing the current key are held.
   */
  const shielded: string[] = [];
  const isShielded = (key: string): boolean => {
    while (shielded.length > 0 && !key.startsWith(shielded[shielded.length - 1]!)) shielded.pop();
    return shielded.length > 0;
  };
  const shield = (e: Entry, side: ObjectStore, why: string): void => {
    if (isShielded(e.key)) return;
    shielded.push(e.key);
    stats.incomplete++;
    log.error(`the listing of ${side.description}${e.key} is incomplete (${why}): nothing under it is deleted from either side`);
  };
  let deleteLimitSaid = false;
  /** Deletions allowed so far, of either side: what --max-deletes counts. */
  let deletes = 0;
  /** May this deletion go ahead? Counts it as protected when not. */
  const mayDelete = (e: Entry): boolean => {
    if (isShielded(e.key)) {
      stats.protected++;
      log.debug(`not deleting ${JSON.stringify(e.key)}: under an incompletely listed prefix`);
      return false;
    }
    if (o.maxDeletes >= 0 && deletes >= o.maxDeletes) {
      stats.protected++;
      if (!deleteLimitSaid) {
        deleteLimitSaid = true;
        log.error(`--max-deletes ${o.maxDeletes} reached: ${JSON.stringify(e.key)} and every later deletion are withheld (copies go on)`);
      }
      return false;
    }
    deletes++;
    return true;
  };
  /** Directories whose deferred work waits for their sub-tree: only the ancestors of the current key. */
  const open: { key: string; tasks: Task[] }[] = [];

  /** Close the open directories that `key` is not under; returns a wait if a batch had to go out first. */
  const closeDirs = (key: string | undefined): Promise<unknown> | undefined => {
    const top = open[open.length - 1];
    if (!top || (key !== undefined && isUnder(key, top.key))) return undefined;
    // Deferred work waits for what was issued before it: the pending batch must be issued first.
    const wait = flushBatch();
    const close = () => {
      while (open.length > 0) {
        const t = open[open.length - 1]!;
        if (key !== undefined && isUnder(key, t.key)) break;
        open.pop();
        for (const task of t.tasks) executor.defer(task);
      }
    };
    if (wait) return wait.then(close);
    close();
    return undefined;
  };
  const later = (key: string, task: Task) => {
    const top = open[open.length - 1];
    if (top && top.key === key) top.tasks.push(task);
    else open.push({ key, tasks: [task] });
  };

  /**
   * Plan one key: false when --limit is reached, a promise when the executor had no free slot.
   * Synchronous otherwise, so a million equal keys cost no promise each.
   */
  const plan = (d: Diff): boolean | Promise<boolean> => {
    const key = d.kind === 'dstOnly' ? d.dst.key : d.src.key;
    if (open.length > 0) {
      const wait = closeDirs(key);
      if (wait) return wait.then(() => plan(d));
    }
    if (d.kind !== 'dstOnly') {
      stats.scanned++;
      if (o.filter && !o.filter(d.src)) {
        // Excluded on the source: the destination's copy (if any) is left alone too.
        if (!d.src.isDir || o.dirs) {
          stats.excluded++;
          stats.excludedBytes += d.src.size;
        }
        return true;
      }
    } else if (o.filter && !o.filter(d.dst)) return true;

    if (d.kind === 'both' && d.dst.error !== undefined) shield(d.dst, dst, d.dst.error);
    const broken = d.kind === 'dstOnly' ? d.dst.error : d.src.error;
    if (broken !== undefined) {
      shield(d.kind === 'dstOnly' ? d.dst : d.src, d.kind === 'dstOnly' ? dst : src, broken);
      if (d.kind === 'dstOnly') {
        // Left alone: ferry cannot address it, so it cannot delete it either.
        stats.extra++;
        log.warn(`${dst.description}${key} is kept: ${broken}`);
      } else {
        stats.found++;
        stats.handled++;
        stats.failed++;
        log.error(`cannot sync ${JSON.stringify(key)} from ${src.description}: ${broken}`);
      }
      return true;
    }
    const special = d.kind === 'dstOnly' ? undefined : d.src.special;
    if (special !== undefined) {
      // juicefs: "is not a regular file, ignore it". Reading a FIFO or a device never ends.
      stats.found++;
      stats.handled++;
      stats.skipped++;
      log.warn(`skipping ${src.description}${key}: a ${special}, not a regular file`);
      return true;
    }
    const decision = decide(d, o, features);
    /** A task that waits for a slot; if the run stops meanwhile it never starts and is not counted. */
    let wait: Promise<unknown> | undefined;
    switch (decision) {
      case 'ignore':
        return true;
      case 'extra':
        stats.extra++;
        stats.extraBytes += d.kind === 'dstOnly' ? d.dst.size : 0;
        return true;
      case 'deleteDst': {
        const e = (d as { dst: Entry }).dst;
        if (!mayDelete(e)) return true;
        stats.deletions++;
        if (e.isDir) later(e.key, { v: 1, op: 'deleteDst', entry: e });
        else wait = executor.submit({ v: 1, op: 'deleteDst', entry: e })?.then((started) => started || stats.deletions--);
        break;
      }
      default: {
        const e = (d as { src: Entry }).src;
        stats.found++;
        if (decision === 'skip') {
          stats.handled++;
          stats.skipped++;
          stats.skippedBytes += e.size;
        } else if (e.isSymlink && !o.links) {
          // Listed with links followed, a link still reported as one is broken.
          stats.handled++;
          stats.skipped++;
          log.warn(`skipping broken symlink ${JSON.stringify(e.key)} (use --links to copy links as links)`);
        } else if (decision === 'deleteSrc' && !mayDelete(e)) {
          stats.handled++;
          stats.skipped++;
          stats.skippedBytes += e.size;
        } else if (decision === 'deleteSrc' && e.isDir) {
          later(e.key, { v: 1, op: 'deleteSrc', entry: e });
        } else if (decision === 'deleteSrc') {
          // The copy on the destination is the proof the source may go: its ETag, or its bytes.
          const t = (d as { dst: Entry }).dst;
          wait = executor.submit({ v: 1, op: 'deleteSrc', entry: e, ...(t.etag === undefined ? {} : { dstEtag: t.etag }) })?.then((started) => started || stats.found--);
        } else if (batchable && decision === 'copy' && !e.isDir && !(o.links && e.isSymlink) && e.size <= BATCH_FILE_MAX) {
          batch.push(e);
          if (batch.length >= BATCH) wait = flushBatch();
        } else if (decision === 'check' && o.deleteSrc && !e.isDir && !mayDelete(e)) {
          wait = executor.submit({ v: 1, op: 'check', entry: e, keepSource: true })?.then((started) => started || stats.found--);
        } else {
          wait = executor.submit({ v: 1, op: decision, entry: e })?.then((started) => started || stats.found--);
          if (decision === 'copy' && e.isDir) {
            if (dst.features.dirs) later(e.key, { v: 1, op: 'finishDir', entry: e });
            if (o.deleteSrcAfter) later(e.key, { v: 1, op: 'deleteSrc', entry: e });
          }
        }
      }
    }
    const more = !(limit >= 0 && --limit <= 0);
    return wait ? wait.then(() => more) : more;
  };

  /** How the source is listed. */
  const srcSide: ListSideOptions = {
    ...(o.start === undefined ? {} : { start: o.start }),
    ...(o.end === undefined ? {} : { end: o.end }),
    followSymlinks: !o.links,
    threads: o.listThreads,
    depth: o.listDepth,
    signal: listAbort.signal,
  };
  /**
   * The destination is listed without following links, whatever --links says: a symlink there is
   * one entry, and nothing is ever written or deleted through it. Its listing also reclaims the
   * temporary files of runs that were killed.
   */
  const dstSide: ListSideOptions = {
    ...srcSide,
    followSymlinks: false,
    ...(o.dry
      ? {}
      : {
          reclaim: (path: string, bytes: number) => {
            stats.reclaimed++;
            stats.reclaimedBytes += bytes;
            log.debug(`removed ${path}, a temporary file of a run that is gone`);
          },
        }),
  };

  /** Plan every key of two listings; false once --limit is reached or the run stops. */
  const planListings = async (s: AsyncIterable<Entry[]>, t: AsyncIterable<Entry[]>): Promise<boolean> => {
    for await (const batch of mergeListings(s, t, { src: src.description, dst: dst.description })) {
      for (const d of batch) {
        if (listAbort.signal.aborted) return false;
        let more = plan(d);
        if (more !== true && more !== false) more = await more;
        if (!more) return false;
      }
      // A batch never waits for the next page of a slow listing.
      await flushBatch();
    }
    await closeDirs(undefined);
    await flushBatch();
    return true;
  };

  // juicefs does not list the destination when every key is copied anyway and nothing is deleted.
  const listDst = !(o.forceUpdate && !o.deleteDst);
  const empty: AsyncIterable<Entry[]> = (async function* () {})();
  let fatal: unknown;
  try {
    if (limit === 0) {
      // --limit 0 processes nothing.
    } else if (o.filesFrom) {
      for await (const line of readLines(o.filesFrom)) {
        if (listAbort.signal.aborted) break;
        const [s, t] = await Promise.all([selected(src, line, srcSide), listDst ? selected(dst, line, dstSide) : { pages: empty }]);
        if ('missing' in s) {
          // rsync: exit 23. The line's destination keys are left alone: nothing was seen to replace them.
          stats.found++;
          stats.handled++;
          stats.failed++;
          log.error(`--files-from names ${JSON.stringify(line)}, which ${s.missing}`);
          continue;
        }
        if (!(await planListings(s.pages, 'missing' in t ? empty : t.pages))) break;
      }
    } else {
      const s = listSide(src, srcSide);
      const t = listDst ? listSide(dst, dstSide) : empty;
      await planListings(s, t);
    }
  } catch (err) {
    if (!(listAbort.signal.aborted && isAbort(err))) {
      fatal = err;
      const running = executor.inFlight > 0 ? `; waiting for the ${executor.inFlight} tasks already started` : '';
      log.error(`${(err as Error).message ?? err}${running}; nothing after this point is deleted`);
    }
  }
  if (fatal !== undefined || stopped) {
    executor.dropDeferred();
    stats.found -= batch.length;
    batch = [];
  } else {
    await closeDirs(undefined);
    await flushBatch();
  }
  await executor.idle();
  if (blocked.length > 0) {
    // Whatever stood in their way has been deleted by now: run them once more, failures counted.
    secondPass = true;
    if (fatal === undefined && !stopped && !control.stopNow.aborted) {
      for (const task of blocked) {
        // Without --dirs, the directories that held the deleted keys are still there, empty.
        if (!task.entry.isDir && dst.features.dirs && !o.dry) await removeEmptyTree(dst, task.entry.key + '/', control.stopNow);
        const w = executor.submit(task);
        if (w && !(await w)) break;
      }
      await executor.idle();
      // Writing into a directory changes its mtime: the directories these copies went into get the
      // source's attributes again (deepest first), or the next run would copy them.
      if (o.dirs && dst.features.dirs && !o.dry) {
        const dirs = new Set<string>();
        for (const task of blocked) for (let k = parentKey(task.entry.key); k !== ''; k = parentKey(k)) dirs.add(k);
        for (const key of [...dirs].sort((a, b) => compareKeys(b, a))) {
          try {
            await transfer.run({ v: 1, op: 'finishDir', entry: await src.head(key, { followSymlinks: !o.links }) });
          } catch (err) {
            log.warn(`could not set the attributes of ${dst.description}${key} again: ${(err as Error).message}`);
          }
        }
      }
    }
  }
  control.stopListing.removeEventListener('abort', onStopListing);
  control.stopNow.removeEventListener('abort', onStopNow);
  return { stats, stopped, ...(fatal === undefined ? {} : { fatal }) };
}

/**
 * Remove the directory `dir` when nothing but empty directories is under it (no file, link or
 * anything else), deepest first; false, leaving everything, when it holds anything else.
 */
async function removeEmptyTree(store: ObjectStore, dir: string, signal: AbortSignal): Promise<boolean> {
  const dirs: string[] = [];
  try {
    for await (const page of store.list({ prefix: dir, followSymlinks: false, signal })) {
      for (const e of page) {
        if (!e.isDir || e.isSymlink || dirs.length >= BLOCKED_MAX) return false;
        dirs.push(e.key);
      }
    }
    for (const d of dirs.reverse()) await store.delete(d, { signal });
    await store.delete(dir, { signal });
    return true;
  } catch {
    // The copy that follows fails with the store's own words.
    return false;
  }
}

function isAbort(err: unknown): boolean {
  return err instanceof AbortedError || (err as Error)?.name === 'AbortError' || (err as { code?: string })?.code === 'ABORT_ERR';
}

function describeOp(task: Task): string {
  switch (task.op) {
    case 'copy':
      return 'copy';
    case 'check':
      return 'check';
    case 'copyPerms':
      return 'copy permissions of';
    case 'deleteSrc':
      return 'delete from the source';
    case 'deleteDst':
      return 'delete from the destination';
    case 'finishDir':
      return 'set attributes of';
  }
}

async function* readLines(path: string): AsyncIterable<string> {
  const rl = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
  let first = true;
  for await (const raw of rl) {
    // A file saved by a Windows editor: a byte-order mark before the first line, CRLF line ends.
    let line = first && raw.startsWith('\uFEFF') ? raw.slice(1) : raw;
    first = false;
    line = line.replace(/\r$/, '');
    if (line.trim() !== '') yield line;
  }
}

/**
 * The keys one --files-from line names: a 'dir/' prefix is listed, a plain key is looked up. A
 * line that names nothing on the source says why (`missing`), so it is reported, never ignored.
 */
async function selected(store: ObjectStore, line: string, o: ListSideOptions): Promise<{ pages: AsyncIterable<Entry[]> } | { missing: string }> {
  if (line.startsWith(RESERVED_PREFIX)) return { missing: `is ferry's own ${RESERVED_PREFIX} directory` };
  const follow = o.followSymlinks;
  if (line.endsWith('/')) {
    const it = store.list({ prefix: line, followSymlinks: follow, ...(o.signal ? { signal: o.signal } : {}), ...(o.reclaim ? { reclaim: o.reclaim } : {}) })[Symbol.asyncIterator]();
    let first: IteratorResult<Entry[]>;
    try {
      first = await it.next();
    } catch (err) {
      if (err instanceof FerryError && err.retry !== 'transient' && err.retry !== 'throttled' && !isAbort(err)) return { missing: `cannot be listed on ${store.description}: ${err.message}` };
      throw err;
    }
    if (first.done) return { missing: `has no keys on ${store.description}` };
    return {
      pages: (async function* () {
        yield first.value;
        for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
      })(),
    };
  }
  try {
    const e = await store.head(line, { followSymlinks: follow });
    return { pages: (async function* () { yield [e]; })() };
  } catch (err) {
    if (err instanceof NotFoundError) return { missing: `is not on ${store.description}` };
    if (err instanceof FerryError && err.retry === 'fatal' && !isAbort(err)) return { missing: `cannot be read on ${store.description}: ${err.message}` };
    throw err;
  }
}
