import { setMaxListeners } from 'node:events';
import { fromWire, isAbortError } from '../../shared/errors.js';
import { LocalExecutor } from '../../shared/executor.js';
import type { Entry, ObjectStore } from '../../shared/storage/types.js';
import { ByteRateLimiter } from '../../shared/throttle/bucket.js';
import { Transfer, transferOptions } from '../../shared/transfer/copy.js';
import type { Outcome, TaskResult } from '../../shared/transfer/task.js';
import type { SyncOptions } from '../../shared/job.js';
import { Dispatcher } from './dispatch.js';
import { Ledger, type KeptUpload, type LeaseTerms, type LedgerHooks, type LedgerTask } from './ledger.js';
import { plan } from './plan.js';
import { splitPolicy, SplitUploads } from './split.js';
import { SyncStats } from './stats.js';

export type { SyncOptions };

/** Copies run a second time after --delete-dst's deletions, at most (see `again` below). */
const AGAIN_MAX = 10_000;

export interface Logger {
  error(message: string): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

export interface RunControl {
  /** Aborted: stop listing and starting tasks, let running tasks finish (first Ctrl-C). */
  stopListing: AbortSignal;
  /** Aborted: stop everything now (second Ctrl-C). */
  stopNow: AbortSignal;
  logger: Logger;
  stats?: SyncStats;
  /** Keep this entry? (include/exclude rules, size, age and time filters); absent keeps all. */
  filter?: (e: Entry) => boolean;
  /** Directories under which the filter keeps nothing: not listed (see compileSubtreeTest). */
  skipDir?: (key: string) => boolean;
  /** Workers on other hosts (cluster mode): executors beside the manager's own. */
  cluster?: RemoteExecutors;
  /** The manager runs tasks itself too (default); without, only when no worker is left. */
  managerExecutes?: boolean;
  /** Called when the manager's own executor starts (at once, or when it takes over): e.g. to take its share of --bwlimit. */
  onManagerExecutes?: () => void;
  /** The manager's own byte-rate limiter (the cluster re-shares --bwlimit); default: one of --bwlimit. */
  limiter?: ByteRateLimiter;
  /** How long an executor may hold a task before it goes to another. */
  lease?: LeaseTerms;
  /**
   * `--enable-checkpoint`: `save` is called every `intervalMs` with what a resumed run needs;
   * `uploads` are those the interrupted run kept open. A run that stops keeps its split copies'
   * uploads open (SyncResult.uploads) instead of aborting them.
   */
  checkpoint?: { intervalMs: number; save(state: ResumeState): void; uploads?: readonly KeptUpload[] };
}

/** Where a resumed run starts. */
export interface ResumeState {
  /** The first key not known to be done. */
  resumeFrom: string | undefined;
  /** Multipart uploads left open, with their stored parts. */
  uploads: KeptUpload[];
}

/** The executor id of the manager's own executor. */
export const MANAGER = 'manager';

/** Remote executors as a run sees them (src/manager/cluster). */
export interface RemoteExecutors {
  /** The run begins: workers take tasks from `ledger`; `alone()` is called when no worker is left. */
  attach(ledger: Ledger, alone: () => void): void;
  /** Resolves when every worker has finished and holds no task, or when `stopNow` aborts. */
  drain(stopNow: AbortSignal): Promise<void>;
  /** Workers connected and taking work now. */
  readonly live: number;
}

export interface SyncResult {
  stats: SyncStats;
  /** The run stopped before the end: interrupted, or too many failures. */
  stopped: 'interrupted' | 'maxFailure' | undefined;
  /** A failure that ended the run itself (a listing that failed), not a single key. */
  fatal?: unknown;
  /** The first key not known to be done when the run ended (what a checkpoint resumes from). */
  resumeFrom: string | undefined;
  /** Multipart uploads kept open for a resumed run (only with RunControl.checkpoint). */
  uploads: KeptUpload[];
}

/**
 * One sync, wired: the planner feeds the ledger, the dispatcher hands its tasks to the executor,
 * results come back through the ledger, which counts each key once. Single-machine and cluster
 * runs share all of it; only which executors pull from the dispatcher differs.
 */
export async function runSync(src: ObjectStore, dst: ObjectStore, o: SyncOptions, control: RunControl): Promise<SyncResult> {
  const stats = control.stats ?? new SyncStats();
  // Each executor slot waiting for work listens on stopNow: more than the default ten is normal.
  setMaxListeners(0, control.stopNow);
  const log = control.logger;
  let stopped: SyncResult['stopped'];
  const listAbort = new AbortController();
  const limiter = control.limiter ?? (o.bwlimit > 0 ? new ByteRateLimiter((o.bwlimit * 1e6) / 8) : undefined);
  const self = stats.executor(MANAGER);
  const transfer = new Transfer(
    src,
    dst,
    transferOptions(o, {
      ...(limiter ? { limiter } : {}),
      signal: control.stopNow,
      onBytes: (n) => {
        stats.transferredBytes += n;
        self.transferredBytes += n;
      },
    }),
  );
  const split = splitPolicy(src, dst, o, limiter !== undefined);
  const splits = split ? new SplitUploads(src, dst, o, control.stopNow, log) : undefined;
  const ledger = new Ledger(accounting(o, stats, log, control.stopNow, () => stop('maxFailure')), undefined, control.lease, splits);
  const stop = (why: 'interrupted' | 'maxFailure') => {
    stopped ??= why;
    listAbort.abort();
    ledger.stop();
  };
  const onStopListing = () => stop('interrupted');
  const onStopNow = () => stop('interrupted');
  control.stopListing.addEventListener('abort', onStopListing);
  control.stopNow.addEventListener('abort', onStopNow);
  // A signal aborted before the run began fires no event.
  if (control.stopListing.aborted || control.stopNow.aborted) stop('interrupted');
  let executing: Promise<void> | undefined;
  if (control.cluster) {
    const cluster = control.cluster;
    ledger.executors = () => cluster.live + (executing ? 1 : 0);
  }
  if (control.checkpoint) {
    ledger.keepStopped = true;
    ledger.resume(control.checkpoint.uploads ?? []);
  }
  const saving = control.checkpoint ? setInterval(() => control.checkpoint!.save({ resumeFrom: ledger.low(), uploads: ledger.openUploads() }), control.checkpoint.intervalMs) : undefined;
  const runLocally = () => {
    if (executing) return;
    control.onManagerExecutes?.();
    executing = new LocalExecutor(MANAGER, transfer, o.threads).run(new Dispatcher(ledger, MANAGER), control.stopNow);
  };
  try {
    if (control.managerExecutes !== false || !control.cluster) runLocally();
    else self.live = false;
    control.cluster?.attach(ledger, () => {
      if (executing) return;
      self.live = true;
      log.warn('no worker is left: the manager runs the remaining tasks itself');
      runLocally();
    });
    let fatal: unknown;
    try {
      await plan({ src, dst, o, filter: control.filter, skipDir: control.skipDir, split, stats, log, ledger, signal: listAbort.signal });
    } catch (err) {
      if (!(listAbort.signal.aborted && isAbortError(err))) {
        fatal = err;
        const running = ledger.outstanding > ledger.queued ? `; waiting for the ${ledger.outstanding - ledger.queued} tasks already started` : '';
        log.error(`${(err as Error).message ?? err}${running}; nothing after this point is deleted`);
      }
    }
    if (fatal !== undefined) ledger.finishPartly();
    else ledger.finish();
    await executing;
    await control.cluster?.drain(control.stopNow);
    // A worker that left after the manager's executor finished can have handed tasks back.
    if (control.cluster && !ledger.done && !control.stopNow.aborted) {
      runLocally();
      await executing;
    }
    // A stopped run's split copies are aborted by now, or being aborted.
    await ledger.splitsSettled();
    if (splits && stopped === undefined && fatal === undefined) {
      // The listing went to the end: an earlier run's upload no copy took is no longer wanted.
      await splits.abortStale(ledger.unadopted());
      ledger.forgetUnadopted();
    }
    return { stats, stopped, ...(fatal === undefined ? {} : { fatal }), resumeFrom: ledger.low(), uploads: ledger.openUploads() };
  } finally {
    clearInterval(saving);
    control.stopListing.removeEventListener('abort', onStopListing);
    control.stopNow.removeEventListener('abort', onStopNow);
    // Whatever ended the run, no multipart upload is left open (parts with an executor that never came back).
    await splits?.close();
  }
}

/**
 * How results become counters: a key is counted when its task goes out (found, or a planned
 * deletion) and when its result comes in (handled, and what happened), once each. A task that
 * never went out (the run stopped first) is not part of the run; one that went out and never
 * came back is lost.
 */
function accounting(o: SyncOptions, stats: SyncStats, log: Logger, stopNow: AbortSignal, tooManyFailures: () => void): LedgerHooks {
  let again = 0;
  let failuresSaid = false;
  const record = (task: LedgerTask, counted: boolean, out: Outcome): void => {
    const e = task.entry;
    if (out.warning) log.warn(out.warning);
    if (out.checked) {
      stats.checked++;
      stats.checkedBytes += e.size;
    }
    if (!counted) return;
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
  return {
    leaseLost(holder, tasks, why) {
      stats.executor(holder).leasesLost++;
      log.debug(`executor ${holder} ${why}: its ${tasks} tasks go to other executors`);
    },
    dispatched(task, counted) {
      if (!counted) return;
      if (task.op === 'deleteDst') stats.deletions++;
      else stats.found++;
    },
    partDone(_task, holder, outcome) {
      const by = stats.executor(holder);
      by.tasks++;
      by.parts++;
      by.copiedBytes += outcome.bytes;
    },
    closed(task, counted, result: TaskResult, holder) {
      // A split copy is the manager's own: its parts were counted for the executors that uploaded them.
      const by = holder === undefined ? undefined : stats.executor(holder);
      if ('outcome' in result) {
        if (counted && by) {
          by.tasks++;
          if (result.outcome.result === 'copied') {
            by.copiedObjects++;
            by.copiedBytes += result.outcome.bytes;
          }
        }
        record(task, counted, result.outcome);
        return undefined;
      }
      if (stopNow.aborted) return undefined; // counted as lost
      /*
       * A copy that failed while --delete-dst was removing destination keys: typically a directory
       * with content (or a symlink, or a file being replaced) where its file or parent directory
       * must go, which this run deletes. It runs once more when everything else is done (first
       * clearing an empty directory tree in its way), so a file that became a directory, or the
       * reverse, converges in one run; a second failure is counted.
       */
      if (o.deleteDst && task.op === 'copy' && !task.clearWay && again < AGAIN_MAX) {
        again++;
        log.debug(`copying ${JSON.stringify(task.entry.key)} failed (${result.error.message}); it runs once more when --delete-dst's deletions are done`);
        return 'again';
      }
      if (counted && by) by.tasks++;
      const err = fromWire(result.error);
      if (counted) stats.handled++;
      stats.failed++;
      const code = err.code === 'FERRY_FATAL' ? '' : ` [${err.code}]`;
      log.error(`failed to ${describeOp(task)} ${JSON.stringify(task.entry.key)}: ${err.message}${code}`);
      if (o.maxFailure >= 0 && stats.failed > o.maxFailure && !failuresSaid) {
        failuresSaid = true;
        log.error(`more than ${o.maxFailure} failures (--max-failure): stopping`);
        tooManyFailures();
      }
      return undefined;
    },
  };
}

function describeOp(task: LedgerTask): string {
  switch (task.op) {
    case 'copy':
    case 'split':
      return 'copy';
    case 'copyPart':
      return `copy part ${task.part} of`;
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
