import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { PassThrough, type Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { AlreadyExistsError, FerryError, isAbortError } from '../../shared/errors.js';
import type { ObjectStore } from '../../shared/storage/types.js';
import { describeCounters, type DumpCounters } from '../dump/entry.js';
import { formatInterval } from '../repeat.js';
import type { Logger } from '../sync/run.js';
import { claimKey, dumpKey, META_PREFIX, parseMetaKey } from './names.js';
import { retention } from './retention.js';

/** What writing a dump reports (src/manager/dump/dump.ts writeDump). */
export interface DumpOutcome {
  counters: DumpCounters;
  /** Entries that could not be read: the dump is written without them. */
  failed: number;
}

/**
 * Writes a dump of the source to `out` (gzip-compressed JSON); resolves when all of it is written.
 * It may end `out` itself; the caller ends it otherwise.
 */
export type ProduceDump = (out: Writable, signal: AbortSignal) => Promise<DumpOutcome>;

export interface BackupOptions {
  /** The sync's destination store (rooted at DST): backups go to its `.ferry/meta/`. */
  dst: ObjectStore;
  /** `--backup-meta`: one backup per interval, intervals aligned to UTC multiples of it since the epoch. */
  intervalMs: number;
  produce: ProduceDump;
  log: Logger;
  /** Aborted: the backup stops and nothing of it is kept. */
  signal?: AbortSignal;
  /** The clock (tests): ms since the epoch. */
  now?: () => number;
  /** Stores without conditional create: how long a claim settles before it is read back (2 s). */
  settleMs?: number;
  /** Who claims (written in the claim, for messages): host, process and a random part by default. */
  manager?: string;
}

/** What became of a backup, for the log and the `backup` field of the --json summary. */
export interface BackupReport {
  status: 'written' | 'skipped' | 'failed';
  /**
   * Why it was skipped or failed: not due (this interval has its backup), claimed (another manager
   * writes this interval's), dry (--dry), interrupted (Ctrl-C), refused (the run was refused), error.
   */
  reason?: 'not-due' | 'claimed' | 'dry' | 'interrupted' | 'refused' | 'error';
  /** The sentence the log said. */
  message: string;
  /** The backup's key under DST (written). */
  key?: string;
  /** How long writing it took. */
  seconds?: number;
  counters?: DumpCounters;
  /** Entries of SRC that could not be read (left out of the backup). */
  unreadable?: number;
  /** It took longer than its interval. */
  slow?: boolean;
  /** Old backups and claims deleted by the retention policy after this one. */
  pruned?: number;
  /** When the next interval starts (ISO 8601, UTC). */
  nextDue?: string;
}

interface Claim {
  v: 1;
  kind: 'ferry-backup-claim';
  id: string;
  interval: string;
  claimedAt: string;
}

/** Bytes of a claim read at most. */
const CLAIM_MAX = 4096;
const DAY = 86_400_000;

/**
 * `--backup-meta`: write this interval's metadata backup of SRC to DST/.ferry/meta/ unless the
 * interval already has one or another manager claimed it, then apply the retention policy. Never
 * throws: every outcome, failures included, is a report (and a log line).
 */
export async function backupIfDue(o: BackupOptions): Promise<BackupReport> {
  const clock = o.now ?? Date.now;
  const signal = o.signal ?? new AbortController().signal;
  const manager = o.manager ?? `${hostname()}/${process.pid}/${randomBytes(6).toString('hex')}`;
  const now = clock();
  const start = Math.floor(now / o.intervalMs) * o.intervalMs;
  const nextDue = new Date(start + o.intervalMs).toISOString();
  const every = formatInterval(o.intervalMs);
  const skipped = (reason: 'not-due' | 'claimed', message: string): BackupReport => {
    o.log.info(message);
    return { status: 'skipped', reason, message, nextDue };
  };
  const failed = (err: unknown, began?: number): BackupReport => {
    const interrupted = signal.aborted && isAbortError(err);
    const message = interrupted ? 'metadata backup interrupted: nothing of it was kept' : `metadata backup FAILED: ${messageOf(err)}`;
    if (interrupted) o.log.warn(message);
    else o.log.error(message);
    return { status: 'failed', reason: interrupted ? 'interrupted' : 'error', message, ...(began === undefined ? {} : { seconds: seconds(clock() - began) }), nextDue };
  };
  let began: number | undefined;
  try {
    const meta = await listMeta(o.dst, signal);
    const latest = meta.dumps.reduce((a, b) => Math.max(a, b), -Infinity);
    if (latest >= start) {
      return skipped('not-due', `metadata backup not due: ${dumpKey(latest)} is this interval's (--backup-meta ${every}); the next is due at ${nextDue}`);
    }
    const key = claimKey(start);
    const claim: Claim = { v: 1, kind: 'ferry-backup-claim', id: manager, interval: new Date(start).toISOString(), claimedAt: new Date(now).toISOString() };
    // undefined: this manager holds the claim; null: someone does, who is not known.
    const holder = meta.claims.includes(start) ? ((await readClaim(o.dst, key, signal)) ?? null) : await takeClaim(o.dst, key, claim, o.settleMs ?? 2000, signal);
    if (holder !== undefined) {
      const who = holder === null ? 'another manager' : holder.id === manager ? 'this manager, earlier' : `another manager (${holder.id}, at ${holder.claimedAt})`;
      return skipped('claimed', `metadata backup skipped: this interval's backup (from ${claim.interval}) was claimed by ${who}: ${key}; the next is due at ${nextDue}`);
    }
    began = clock();
    const dumpAt = began;
    let written: DumpOutcome;
    try {
      written = await writeBackup(o.dst, dumpKey(dumpAt), o.produce, signal);
    } catch (err) {
      // This manager's claim goes with its backup, so the interval can be tried again (by the next
      // run, or another manager) rather than stay claimed by a backup that does not exist.
      await o.dst.delete(key).catch((e: unknown) => o.log.warn(`cannot remove the claim ${key} (${messageOf(e)}): this interval gets no backup`));
      throw err;
    }
    const took = clock() - began;
    const c = written.counters;
    const message =
      `metadata backup written: ${dumpKey(dumpAt)} in ${seconds(took)} s ` +
      `(${describeCounters(c)})`;
    o.log.info(message);
    if (written.failed > 0) o.log.warn(`metadata backup ${dumpKey(dumpAt)}: ${written.failed} entries of the source could not be read and are not in it`);
    const slow = took > o.intervalMs;
    if (slow) o.log.warn(`the metadata backup took ${formatInterval(took)}, longer than its interval (--backup-meta ${every}): intervals are being missed; choose a longer one`);
    let pruned = 0;
    try {
      pruned = await prune(o.dst, clock(), start, o.log, signal);
    } catch (err) {
      o.log.warn(`retention: cannot list ${META_PREFIX} (${messageOf(err)}): old backups are pruned after the next backup`);
    }
    return { status: 'written', message, key: dumpKey(dumpAt), seconds: seconds(took), counters: c, unreadable: written.failed, slow, pruned, nextDue };
  } catch (err) {
    return failed(err, began);
  }
}

/** ferry's backups and claims under META_PREFIX (a handful, kept so by retention); nothing there is none. */
async function listMeta(dst: ObjectStore, signal: AbortSignal): Promise<{ dumps: number[]; claims: number[] }> {
  const dumps: number[] = [];
  const claims: number[] = [];
  try {
    for await (const page of dst.list({ prefix: META_PREFIX, signal })) {
      for (const e of page) {
        const m = e.isDir ? undefined : parseMetaKey(e.key);
        if (m?.kind === 'dump') dumps.push(m.at);
        else if (m?.kind === 'claim') claims.push(m.at);
      }
    }
  } catch (err) {
    if (!(err instanceof FerryError && err.retry === 'notFound')) throw err;
  }
  return { dumps, claims };
}

/**
 * Claim the interval: undefined when this manager won it, else who holds it (null: unknown).
 *
 * Where the store creates conditionally (features.exclusiveCreate), the store decides: exactly one
 * of racing managers creates the claim. Elsewhere this is BEST EFFORT: write the claim with this
 * manager's random id, let racing writers settle, read it back; the manager whose id is there
 * won. Two managers whose writes are further apart than the settling time can both win (one
 * interval then gets two backups — harmless, retention keeps the older).
 */
async function takeClaim(dst: ObjectStore, key: string, claim: Claim, settleMs: number, signal: AbortSignal): Promise<Claim | null | undefined> {
  const body = Buffer.from(JSON.stringify(claim) + '\n');
  if (dst.features.exclusiveCreate) {
    try {
      await dst.put(key, body, { size: body.length, ifAbsent: true, signal });
      return undefined;
    } catch (err) {
      if (err instanceof AlreadyExistsError) return (await readClaim(dst, key, signal)) ?? null;
      throw err;
    }
  }
  const before = await readClaim(dst, key, signal);
  if (before !== undefined) return before;
  await dst.put(key, body, { size: body.length, signal });
  await sleep(settleMs, undefined, { signal });
  const after = await readClaim(dst, key, signal);
  return after?.id === claim.id ? undefined : (after ?? null);
}

/** The claim at `key`: undefined when there is none; one that is not a claim reads as an unknown holder. */
async function readClaim(dst: ObjectStore, key: string, signal: AbortSignal): Promise<Claim | undefined> {
  const unknown: Claim = { v: 1, kind: 'ferry-backup-claim', id: 'unknown', interval: '', claimedAt: 'an unknown time' };
  let text = '';
  try {
    for await (const chunk of await dst.get(key, { signal })) {
      text += (chunk as Buffer).toString('utf8');
      if (text.length > CLAIM_MAX) return unknown;
    }
  } catch (err) {
    if (err instanceof FerryError && err.retry === 'notFound') return undefined;
    throw err;
  }
  try {
    const c = JSON.parse(text) as Partial<Claim>;
    return c.kind === 'ferry-backup-claim' && typeof c.id === 'string' && typeof c.claimedAt === 'string' ? (c as Claim) : unknown;
  } catch {
    return unknown;
  }
}

/** Stream the dump into `key` through the store's put: the key holds all of it or nothing. */
async function writeBackup(dst: ObjectStore, key: string, produce: ProduceDump, signal: AbortSignal): Promise<DumpOutcome> {
  const body = new PassThrough();
  const stop = new AbortController();
  const onAbort = () => stop.abort(signal.reason);
  signal.addEventListener('abort', onAbort);
  if (signal.aborted) onAbort();
  // A put that fails (a full disk, denied) stops the producer through its stream.
  const putting = dst.put(key, body, { signal: stop.signal });
  putting.catch((err: unknown) => {
    body.destroy(err as Error);
    stop.abort(err);
  });
  try {
    const outcome = await produce(body, stop.signal);
    if (!body.writableEnded) body.end();
    await putting;
    return outcome;
  } catch (err) {
    // A producer that failed leaves a stream the store must not keep.
    stop.abort(err);
    body.destroy(err as Error);
    await putting.catch(() => undefined);
    throw err;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/**
 * The retention policy (retention.ts) over ferry's backups, and the claims of intervals that ended
 * before the policy's "keep everything" horizon (yesterday, UTC). A deletion that fails is said and
 * left for the next time.
 */
async function prune(dst: ObjectStore, now: number, currentStart: number, log: Logger, signal: AbortSignal): Promise<number> {
  const { dumps, claims } = await listMeta(dst, signal);
  const horizon = Math.min(Math.floor(now / DAY) * DAY - DAY, currentStart);
  const doomed = [
    ...retention(dumps, now)
      .filter((f) => !f.keep)
      .map((f) => dumpKey(f.at)),
    ...claims.filter((at) => at < horizon).map((at) => claimKey(at)),
  ];
  let pruned = 0;
  for (const key of doomed) {
    try {
      await dst.delete(key, { signal });
      pruned++;
      log.debug(`retention: deleted ${key}`);
    } catch (err) {
      log.warn(`retention: cannot delete ${key} (${messageOf(err)}): it is tried again after the next backup`);
    }
  }
  return pruned;
}

function seconds(ms: number): number {
  return Math.round(ms) / 1000;
}

function messageOf(err: unknown): string {
  if (err instanceof FerryError) return `${err.message} [${err.code}]`;
  return (err as Error)?.message ?? String(err);
}
