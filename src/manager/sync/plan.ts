import { createReadStream } from 'node:fs';
import { FerryError, isAbortError, NotFoundError } from '../../shared/errors.js';
import { compareKeys, hasRawBytes } from '../../shared/storage/keys.js';
import type { Entry, ObjectStore } from '../../shared/storage/types.js';
import { decide, sideFeatures } from './decide.js';
import type { Ledger } from './ledger.js';
import { listSide, RESERVED_PREFIX, type ListSideOptions } from './list.js';
import { mergeListings, type Diff } from './merge.js';
import type { Logger, SyncOptions } from './run.js';
import type { SyncStats } from './stats.js';

export interface PlanContext {
  src: ObjectStore;
  dst: ObjectStore;
  o: SyncOptions;
  /** Keep this entry? (include/exclude rules, size, age and time filters); absent keeps all. */
  filter: ((e: Entry) => boolean) | undefined;
  /** Directories under which the filter keeps nothing: neither side lists them. */
  skipDir: ((key: string) => boolean) | undefined;
  /** Copies made in parts by every executor (split.ts): the part size for a key to split, else undefined. */
  split?: ((e: Entry) => number | undefined) | undefined;
  stats: SyncStats;
  log: Logger;
  ledger: Ledger;
  /** Aborted: stop listing and planning (Ctrl-C, too many failures). */
  signal: AbortSignal;
}

/**
 * The planner: list both sides, merge them, decide per key, and hand the ledger a task for each
 * key that needs work; what needs none (skipped, excluded, extra, refused) is tallied right here.
 * Every source of keys — the listings, or the lines of --files-from — goes through the same merge.
 * Throws when a listing fails as a whole (after its retries): nothing after that point is planned,
 * so nothing after it is deleted.
 */
export async function plan(c: PlanContext): Promise<void> {
  const { src, dst, o, stats, log, ledger } = c;
  const features = sideFeatures(src.features, dst.features);
  let limit = o.limit;
  if (limit === 0) return; // --limit 0 handles nothing

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
  /** A key that needs no task: counted as found and handled at once. */
  const tally = (e: Entry, as: 'skipped' | 'failed'): void => {
    stats.found++;
    stats.handled++;
    if (as === 'failed') stats.failed++;
    else {
      stats.skipped++;
      stats.skippedBytes += e.size;
    }
  };

  /**
   * Plan one key: false when --limit is reached, a promise when the ledger's queue is full.
   * Synchronous otherwise, so a million equal keys cost no promise each.
   */
  const planKey = (d: Diff): boolean | Promise<boolean> => {
    const key = d.kind === 'dstOnly' ? d.dst.key : d.src.key;
    ledger.reach(key);
    if (d.kind !== 'dstOnly') {
      stats.scanned++;
      if (c.filter && !c.filter(d.src)) {
        // Excluded on the source: the destination's copy (if any) is left alone too. A directory
        // excluded with everything under it was not read: it counts once, for its sub-tree.
        if (!d.src.isDir || o.dirs || c.skipDir?.(d.src.key)) {
          stats.excluded++;
          stats.excludedBytes += d.src.size;
        }
        return true;
      }
      // Kept itself, but nothing under it is ('logs/**'): its sub-tree was not read, and counts once.
      if (d.src.isDir && c.skipDir?.(d.src.key)) stats.excluded++;
    } else if (c.filter && !c.filter(d.dst)) return true;

    if (d.kind === 'both' && d.dst.error !== undefined) shield(d.dst, dst, d.dst.error);
    const broken = d.kind === 'dstOnly' ? d.dst.error : d.src.error;
    if (broken !== undefined) {
      shield(d.kind === 'dstOnly' ? d.dst : d.src, d.kind === 'dstOnly' ? dst : src, broken);
      if (d.kind === 'dstOnly') {
        // Left alone: ferry cannot address it, so it cannot delete it either.
        stats.extra++;
        log.warn(`${dst.description}${key} is kept: ${broken}`);
      } else {
        tally(d.src, 'failed');
        log.error(`cannot sync ${JSON.stringify(key)} from ${src.description}: ${broken}`);
      }
      return true;
    }
    if (d.kind !== 'dstOnly' && d.src.special !== undefined) {
      // juicefs: "is not a regular file, ignore it". Reading a FIFO or a device never ends.
      tally(d.src, 'skipped');
      log.warn(`skipping ${src.description}${key}: a ${d.src.special}, not a regular file`);
      return true;
    }
    const decision = decide(d, o, features);
    if (decision !== 'ignore' && d.kind !== 'dstOnly' && !dst.features.rawNames && (hasRawBytes(d.src.key) || (o.links && d.src.isSymlink && hasRawBytes(d.src.target ?? '')))) {
      // Like an Entry.error above: a name (or the target of a link copied as a link) that is not
      // valid UTF-8, its stray bytes held as lone surrogates, would be written mangled, as another
      // name, by a store without features.rawNames. That key fails; nothing is written.
      tally(d.src, 'failed');
      const what = hasRawBytes(d.src.key) ? 'its name is' : 'its symlink target is';
      log.error(`cannot sync ${JSON.stringify(key)} from ${src.description}: ${what} not valid UTF-8, and ${dst.description} (${dst.scheme}) holds only names that are`);
      return true;
    }
    let wait: Promise<void> | undefined;
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
        if (e.isDir) ledger.later(e.key, { v: 1, op: 'deleteDst', entry: e });
        else wait = ledger.add({ v: 1, op: 'deleteDst', entry: e });
        break;
      }
      default: {
        const e = (d as { src: Entry }).src;
        if (decision === 'skip') tally(e, 'skipped');
        else if (e.isSymlink && !o.links) {
          // Listed with links followed, a link still reported as one is broken.
          tally(e, 'skipped');
          log.warn(`skipping broken symlink ${JSON.stringify(e.key)} (use --links to copy links as links)`);
        } else if (decision === 'deleteSrc' && !mayDelete(e)) tally(e, 'skipped');
        else if (decision === 'deleteSrc' && e.isDir) ledger.later(e.key, { v: 1, op: 'deleteSrc', entry: e });
        else if (decision === 'deleteSrc') {
          // The copy on the destination is the proof the source may go: its ETag, or its bytes.
          const t = (d as { dst: Entry }).dst;
          wait = ledger.add({ v: 1, op: 'deleteSrc', entry: e, ...(t.etag === undefined ? {} : { dstEtag: t.etag }) });
        } else if (decision === 'check' && o.deleteSrc && !e.isDir && !mayDelete(e)) {
          wait = ledger.add({ v: 1, op: 'check', entry: e, keepSource: true });
        } else {
          if (decision === 'copy' && e.isDir) {
            // Before the directory's own task, so that its work waits for that task too.
            if (dst.features.dirs) ledger.later(e.key, { v: 1, op: 'finishDir', entry: e }, false);
            if (o.deleteSrcAfter) ledger.later(e.key, { v: 1, op: 'deleteSrc', entry: e }, false);
          }
          const partSize = decision === 'copy' ? c.split?.(e) : undefined;
          wait = partSize === undefined ? ledger.add({ v: 1, op: decision, entry: e }) : ledger.add({ v: 1, op: 'split', entry: e, partSize });
        }
      }
    }
    const more = !(limit >= 0 && --limit <= 0);
    return wait ? wait.then(() => more) : more;
  };

  /** Plan every key of two listings; false once --limit is reached or the run stops. */
  const planListings = async (s: AsyncIterable<Entry[]>, t: AsyncIterable<Entry[]>): Promise<boolean> => {
    for await (const batch of mergeListings(s, t, { src: src.description, dst: dst.description })) {
      for (const d of batch) {
        if (c.signal.aborted) return false;
        let more = planKey(d);
        if (more !== true && more !== false) more = await more;
        if (!more) return false;
      }
    }
    return true;
  };

  const srcSide: ListSideOptions = {
    ...(o.start === undefined ? {} : { start: o.start }),
    ...(o.end === undefined ? {} : { end: o.end }),
    followSymlinks: !o.links,
    threads: o.listThreads,
    depth: o.listDepth,
    ...(o.listCutoff === undefined ? {} : { listCutoff: o.listCutoff }),
    ...(c.skipDir ? { skipDir: c.skipDir } : {}),
    signal: c.signal,
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
  // juicefs does not list the destination when every key is copied anyway and nothing is deleted.
  const listDst = !(o.forceUpdate && !o.deleteDst);
  const empty: AsyncIterable<Entry[]> = (async function* () {})();

  if (o.filesFrom === undefined) {
    await planListings(listSide(src, srcSide), listDst ? listSide(dst, dstSide) : empty);
    return;
  }
  type Selection = Awaited<ReturnType<typeof selected>>;
  const planLine = async (line: string, s: Selection, t: Selection): Promise<boolean> => {
    if ('missing' in s) {
      // The destination's listing of the line is not read: let go of it now (a large directory's spill).
      if ('release' in t) await t.release?.();
      // rsync: exit 23. The line's destination keys are left alone: nothing was seen to replace them.
      ledger.reach(line);
      stats.found++;
      stats.handled++;
      stats.failed++;
      log.error(`--files-from names ${JSON.stringify(line)}, which ${s.missing}`);
      return true;
    }
    return planListings(s.pages, 'missing' in t ? empty : t.pages);
  };
  /**
   * Lines without '/' that name a directory, planned where their key ('x/') falls in key order:
   * after a line 'x-y' that sorts before it, so that the ledger reaches keys in order.
   */
  const dirLines: { key: string; s: Selection; t: Selection }[] = [];
  const planDirLinesUpTo = async (line: string | undefined): Promise<boolean> => {
    while (dirLines.length > 0 && (line === undefined || compareKeys(dirLines[0]!.key, line) <= 0)) {
      const d = dirLines.shift()!;
      if (c.signal.aborted || !(await planLine(d.key, d.s, d.t))) return false;
    }
    return true;
  };
  for (const line of await readKeyLines(o.filesFrom)) {
    if (c.signal.aborted) return;
    if (!(await planDirLinesUpTo(line))) return;
    const [s, t] = await Promise.all([selected(src, line, srcSide), listDst ? selected(dst, line, dstSide) : { pages: empty }]);
    if ('dirKey' in s && s.dirKey !== undefined) {
      const key = s.dirKey;
      const at = dirLines.findIndex((d) => compareKeys(d.key, key) > 0);
      dirLines.splice(at < 0 ? dirLines.length : at, 0, { key, s, t });
      continue;
    }
    if (!(await planLine(line, s, t))) return;
  }
  await planDirLinesUpTo(undefined);
}

/**
 * The keys a --files-from file names, in key order, each once: a line inside a 'dir/' line of the
 * same file is dropped (the prefix covers it), so overlapping lines never copy or count a key
 * twice. Lines are held in memory (as rclone does); the keys they name are streamed.
 */
async function readKeyLines(path: string): Promise<string[]> {
  const { createInterface } = await import('node:readline');
  const rl = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
  const lines: string[] = [];
  let first = true;
  for await (const raw of rl) {
    // A file saved by a Windows editor: a byte-order mark before the first line, CRLF line ends.
    let line = first && raw.startsWith('\uFEFF') ? raw.slice(1) : raw;
    first = false;
    line = line.replace(/\r$/, '');
    if (line.trim() !== '') lines.push(line);
  }
  lines.sort(compareKeys);
  const out: string[] = [];
  for (const line of lines) {
    const prev = out[out.length - 1];
    if (prev !== undefined && (line === prev || (prev.endsWith('/') && line.startsWith(prev)))) continue;
    out.push(line);
  }
  return out;
}

/**
 * The keys one --files-from line names: a 'dir/' prefix is listed, a plain key is looked up. A
 * line that names nothing on the source says why (`missing`), so it is reported, never ignored.
 */
async function selected(store: ObjectStore, line: string, o: ListSideOptions): Promise<{ pages: AsyncIterable<Entry[]>; dirKey?: string; release?: () => Promise<void> } | { missing: string }> {
  if (line.startsWith(RESERVED_PREFIX) || line + '/' === RESERVED_PREFIX) return { missing: `is ferry's own ${RESERVED_PREFIX} directory` };
  const follow = o.followSymlinks;
  if (line.endsWith('/')) {
    const it = store
      .list({
        prefix: line,
        followSymlinks: follow,
        ...(o.signal ? { signal: o.signal } : {}),
        ...(o.reclaim ? { reclaim: o.reclaim } : {}),
        ...(o.skipDir ? { skipDir: o.skipDir } : {}),
        ...(o.listCutoff === undefined ? {} : { listCutoff: o.listCutoff }),
      })
      [Symbol.asyncIterator]();
    let first: IteratorResult<Entry[]>;
    try {
      first = await it.next();
    } catch (err) {
      if (err instanceof FerryError && err.retry !== 'transient' && err.retry !== 'throttled' && !isAbortError(err)) return { missing: `cannot be listed on ${store.description}: ${err.message}` };
      throw err;
    }
    if (first.done) return { missing: `has no keys on ${store.description}` };
    return {
      // For pages never read: stopping them does not run their `finally`.
      release: async () => {
        await it.return?.();
      },
      pages: (async function* () {
        try {
          yield first.value;
          for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
        } finally {
          // Stopped early (--limit, Ctrl-C): the store's listing ends too (a large directory's temporary files go).
          await it.return?.();
        }
      })(),
    };
  }
  try {
    const found = await store.head(line, { followSymlinks: follow });
    // A directory's key ends in '/', as a listing gives it (a tree store's head() keeps the name as asked).
    const e = found.isDir && !found.key.endsWith('/') ? { ...found, key: found.key + '/' } : found;
    return {
      pages: (async function* () {
        yield [e];
      })(),
      ...(e === found ? {} : { dirKey: e.key }),
    };
  } catch (err) {
    if (err instanceof NotFoundError) return { missing: `is not on ${store.description}` };
    if (err instanceof FerryError && err.retry === 'fatal' && !isAbortError(err)) return { missing: `cannot be read on ${store.description}: ${err.message}` };
    throw err;
  }
}
