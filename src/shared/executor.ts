import { toWire } from './errors.js';
import type { Transfer } from './transfer/copy.js';
import type { Task, TaskBatch, TaskResult } from './transfer/task.js';

/**
 * What the dispatcher offers an executor: batches of tasks, and a place to report what became of
 * them. The manager's own executor and a remote worker see the same interface.
 */
export interface TaskSource {
  /** The next batch, at most `want.tasks` tasks and (but for one large task) `want.bytes`; null when no work will come again. */
  next(want: { tasks: number; bytes: number }, signal: AbortSignal): Promise<TaskBatch | null>;
  report(results: TaskResult[]): void;
}

/** Runs tasks from a source until it has none left. Executors only execute: they never list or decide. */
export interface Executor {
  readonly id: string;
  run(source: TaskSource, signal: AbortSignal): Promise<void>;
}

/** Files up to this size copy in batches (Transfer.runCopies); larger ones alone, so their progress shows. */
const BATCH_FILE_MAX = 16 << 20;
/** Tasks per batch when the stores copy many files in one call. */
const BATCH = 256;

/**
 * The executor in the manager's process (and in each worker): `slots` loops, each pulling a batch,
 * running it with the runner and reporting the results. Disk-to-disk copies go in batches of up to
 * 256 files (one round trip to a file-system thread), network transfers one task a slot.
 */
export class LocalExecutor implements Executor {
  constructor(
    readonly id: string,
    readonly transfer: Transfer,
    /** `--threads`. */
    readonly threads: number,
  ) {}

  /** Batches in flight at once. */
  get slots(): number {
    return Math.max(1, this.threads) * (this.transfer.batchable ? 1 : this.transfer.depth);
  }

  async run(source: TaskSource, signal: AbortSignal): Promise<void> {
    const want = this.transfer.batchable ? { tasks: BATCH, bytes: BATCH * (1 << 20) } : { tasks: 1, bytes: 0 };
    const loop = async (): Promise<void> => {
      for (;;) {
        if (signal.aborted) return;
        const batch = await source.next(want, signal);
        if (!batch) return;
        source.report(await this.#runBatch(batch.tasks));
      }
    };
    await Promise.all(Array.from({ length: this.slots }, loop));
  }

  /** One result per task; never throws. */
  async #runBatch(tasks: Task[]): Promise<TaskResult[]> {
    const results: TaskResult[] = [];
    const single = async (t: Task): Promise<void> => {
      try {
        results.push({ v: 1, id: t.id, outcome: await this.transfer.run(t) });
      } catch (err) {
        results.push({ v: 1, id: t.id, error: toWire(err) });
      }
    };
    if (tasks.length === 1) {
      await single(tasks[0]!);
      return results;
    }
    const batched: Task[] = [];
    const alone: Task[] = [];
    for (const t of tasks) (this.transfer.batchable && t.op === 'copy' && !t.clearWay && !t.entry.isDir && !t.entry.isSymlink && t.entry.size <= BATCH_FILE_MAX ? batched : alone).push(t);
    const copies = async () => {
      if (batched.length === 0) return;
      let out: Awaited<ReturnType<Transfer['runCopies']>>;
      try {
        out = await this.transfer.runCopies(batched.map((t) => t.entry));
      } catch (err) {
        out = batched.map(() => ({ error: err }));
      }
      out.forEach((r, i) => results.push('error' in r ? { v: 1, id: batched[i]!.id, error: toWire(r.error) } : { v: 1, id: batched[i]!.id, outcome: r }));
    };
    await Promise.all([copies(), ...alone.map(single)]);
    return results;
  }
}
