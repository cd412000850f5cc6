import type { TaskSource } from '../shared/executor.js';
import type { WorkerMessage } from '../shared/protocol/messages.js';
import type { TaskBatch, TaskResult } from '../shared/transfer/task.js';

/** Requests for work in flight to the manager at once; the manager refuses a worker with too many (server.ts: 256). */
export const WANTS_IN_FLIGHT = 64;

interface Waiter {
  req: number;
  want: { tasks: number; bytes: number };
  resolve(batch: TaskBatch | null): void;
  /** Sent to the manager (else queued here, waiting for a free request slot). */
  sent: boolean;
}

/**
 * The manager's dispatcher, seen through the worker's socket: `next` sends `want` with a fresh
 * `req` and resolves with the `batch` of the same `req`. Once the socket is gone (close()) every
 * pending and later `next` resolves null, so the executor's loops end. At most WANTS_IN_FLIGHT
 * requests are out at once; more wait here, in order.
 */
export class RemoteTaskSource implements TaskSource {
  #req = 0;
  #closed = false;
  readonly #waiting = new Map<number, Waiter>();
  /** Waiters not sent yet, in arrival order. */
  readonly #queued: Waiter[] = [];
  #inFlight = 0;

  constructor(
    /** Sends one message to the manager; false when the socket can no longer send. */
    readonly send: (message: WorkerMessage) => boolean,
    readonly maxInFlight = WANTS_IN_FLIGHT,
    /** Told of each batch received (verbose logs). */
    readonly onBatch?: (req: number, batch: TaskBatch | null) => void,
  ) {}

  next(want: { tasks: number; bytes: number }, signal: AbortSignal): Promise<TaskBatch | null> {
    if (this.#closed || signal.aborted) return Promise.resolve(null);
    const req = ++this.#req;
    return new Promise<TaskBatch | null>((resolve) => {
      const onAbort = () => this.#settle(req, null);
      signal.addEventListener('abort', onAbort, { once: true });
      const waiter: Waiter = {
        req,
        want: { tasks: Math.max(1, want.tasks), bytes: Math.max(0, want.bytes) },
        sent: false,
        resolve: (batch) => {
          signal.removeEventListener('abort', onAbort);
          resolve(batch);
        },
      };
      this.#waiting.set(req, waiter);
      this.#queued.push(waiter);
      this.#pump();
    });
  }

  report(results: TaskResult[]): void {
    if (results.length > 0 && !this.#closed) this.send({ t: 'results', results });
  }

  /** A `batch` from the manager. False when no request of this `req` is waiting (answered twice, or never asked). */
  deliver(req: number, batch: TaskBatch | null): boolean {
    const w = this.#waiting.get(req);
    if (!w?.sent) return false;
    this.onBatch?.(req, batch);
    this.#settle(req, batch);
    return true;
  }

  /** The socket is gone: every waiting `next` resolves null, and every later one at once. */
  close(): void {
    this.#closed = true;
    for (const req of [...this.#waiting.keys()]) this.#settle(req, null);
  }

  get closed(): boolean {
    return this.#closed;
  }

  #settle(req: number, batch: TaskBatch | null): void {
    const w = this.#waiting.get(req);
    if (!w) return;
    this.#waiting.delete(req);
    if (w.sent) this.#inFlight--;
    else this.#queued.splice(this.#queued.indexOf(w), 1);
    w.resolve(batch);
    this.#pump();
  }

  #pump(): void {
    while (!this.#closed && this.#inFlight < this.maxInFlight && this.#queued.length > 0) {
      const w = this.#queued.shift()!;
      w.sent = true;
      this.#inFlight++;
      if (!this.send({ t: 'want', req: w.req, tasks: w.want.tasks, bytes: w.want.bytes })) {
        this.close();
        return;
      }
    }
  }
}
