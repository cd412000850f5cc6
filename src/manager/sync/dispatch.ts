import type { TaskSource } from '../../shared/executor.js';
import type { TaskBatch, TaskResult } from '../../shared/transfer/task.js';
import type { Ledger } from './ledger.js';

/**
 * The dispatcher: hands the ledger's queued tasks to whichever executor asks, in batches bounded
 * by task count and bytes, and takes their results back. It cannot tell the manager's own executor
 * from a remote one.
 */
export class Dispatcher implements TaskSource {
  constructor(
    readonly ledger: Ledger,
    /** The executor this source serves: the tasks it takes are its leases. */
    readonly holder = 'local',
  ) {}

  async next(want: { tasks: number; bytes: number }, signal: AbortSignal): Promise<TaskBatch | null> {
    for (;;) {
      if (signal.aborted) return null;
      const tasks = this.ledger.take(want, this.holder);
      if (tasks.length > 0) return { v: 1, tasks };
      if (this.ledger.done) return null;
      await untilWorkOrAbort(this.ledger, this.holder, signal);
    }
  }

  report(results: TaskResult[]): void {
    this.ledger.report(results, this.holder);
  }
}

/** Wait for the ledger to have work (or be done), or for the signal; no listener is left behind. */
function untilWorkOrAbort(ledger: Ledger, holder: string, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const onAbort = () => resolve();
    signal.addEventListener('abort', onAbort, { once: true });
    void ledger.waitForWork(holder).then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}
