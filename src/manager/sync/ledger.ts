import { compareKeys } from '../../shared/storage/keys.js';
import type { Task, TaskResult, TaskSpec } from '../../shared/transfer/task.js';

/** What the ledger tells the run's accounting: a task went out, a task's result came in. */
export interface LedgerHooks {
  /** A task was handed to an executor for the first time: from now on its key is part of the run. */
  dispatched(task: Task, counted: boolean): void;
  /**
   * A task's first result. Returning 'again' keeps the task outstanding and runs it once more when
   * everything else is done (see Ledger.#blocked).
   */
  closed(task: Task, counted: boolean, result: TaskResult, holder: string): 'again' | undefined;
  /** Tasks an executor held went back to the queue: it left, went silent, or kept them past their lease. */
  leaseLost?(holder: string, tasks: number, why: string): void;
}

/** Deferred work of one directory: released when nothing is outstanding under its key. */
interface DirWork {
  key: string;
  tasks: { spec: TaskSpec; counted: boolean }[];
  /** Tasks (and child directories' work) outstanding under this directory, its own released tasks included. */
  pending: number;
  /** The planner has moved past the directory: nothing more will be added under it. */
  closed: boolean;
  released: boolean;
  parent: DirWork | undefined;
}

interface Held {
  task: Task;
  dir: DirWork | undefined;
  /** Its result counts the key (a directory's follow-up work does not). */
  counted: boolean;
  dispatched: boolean;
  /** The executor running it (its lease), while it runs. */
  holder: string | undefined;
  /** When its lease ends (performance.now() milliseconds). */
  until: number;
}

/** How long an executor may hold a task: a base, plus time for its bytes at a slow rate. */
export interface LeaseTerms {
  /** Milliseconds any task may run. */
  baseMs: number;
  /** Bytes per second a task is expected to move at least (its size adds to the lease). */
  minRate: number;
}

/**
 * What is outstanding, by task id and by directory. Tasks wait in a bounded queue (the planner
 * waits when it is full, so memory never grows with the number of keys), go out in batches, and
 * are counted when their id closes: a result that comes twice (a task run again after a lost
 * lease) or late is dropped. A directory's own work (its attributes, its deletion) is released
 * when nothing is outstanding under it, each directory independently of its siblings.
 */
export class Ledger {
  #nextId = 1;
  #queue: Task[] = [];
  #head = 0;
  readonly #held = new Map<number, Held>();
  /** Directories with deferred work that enclose the planner's current key, innermost last. */
  readonly #open: DirWork[] = [];
  /** Tasks to run once more when nothing else is left (hooks.closed said 'again'). */
  #blocked: Task[] = [];
  #inFlight = 0;
  #planned = false;
  #stopped = false;
  /** Directory work is dropped, not released (a listing failed: its view of the tree is partial). */
  #noDirWork = false;
  #spaceWaiters: (() => void)[] = [];
  #workWaiters: (() => void)[] = [];
  #wakeScheduled = false;
  /** The key the planner reached last. */
  #reached: string | undefined;
  /** Directories whose own work has not gone out yet (open, or closed and waiting for what is under them). */
  readonly #unreleased = new Set<DirWork>();
  /** The smallest key dropped undone: low() never passes it. */
  #floor: string | undefined;
  /** Task ids held by each executor. */
  readonly #byHolder = new Map<string, Set<number>>();

  constructor(
    readonly hooks: LedgerHooks,
    /** Tasks queued at most before the planner waits. */
    readonly capacity = 4096,
    readonly lease: LeaseTerms = { baseMs: 3_600_000, minRate: 1 << 20 },
  ) {}

  get queued(): number {
    return this.#queue.length - this.#head;
  }

  /** Tasks not yet closed: queued, running, or waiting to run again. */
  get outstanding(): number {
    return this.#held.size;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  // The planner's side.

  /** Queue a task; a promise when the queue is full (resolved when there is room). `counted`: its result counts the key. */
  add(spec: TaskSpec, counted = true): Promise<void> | undefined {
    if (this.#stopped) return undefined;
    this.#enqueue(spec, this.#innermost(spec.entry.key), counted);
    this.#wake();
    if (this.queued < this.capacity) return undefined;
    return new Promise<void>((r) => this.#spaceWaiters.push(r));
  }

  /** Work for directory `key` (a key ending in '/') that must wait until everything under it is done. */
  later(key: string, spec: TaskSpec, counted = true): void {
    if (this.#stopped) return;
    const top = this.#open[this.#open.length - 1];
    if (top && top.key === key) {
      top.tasks.push({ spec, counted });
      return;
    }
    const parent = this.#innermost(key);
    if (parent) parent.pending++;
    const d: DirWork = { key, tasks: [{ spec, counted }], pending: 0, closed: false, released: false, parent };
    this.#open.push(d);
    this.#unreleased.add(d);
  }

  /** The planner has reached `key` (undefined: the end): directories that do not enclose it are closed. */
  reach(key: string | undefined): void {
    // Called for every key: the common case (no open directory) stays small enough to inline.
    if (key !== undefined) this.#reached = key;
    if (this.#open.length > 0) this.#closeOutside(key);
  }

  /**
   * The smallest key not known to be done: every key before it was planned and its task (if any)
   * closed. A checkpoint resumes from here. Undefined before planning began; '' never.
   */
  low(): string | undefined {
    let low = this.#reached;
    for (const h of this.#held.values()) {
      const k = h.task.entry.key;
      if (low === undefined || compareKeys(k, low) < 0) low = k;
    }
    for (const d of this.#unreleased) if (low === undefined || compareKeys(d.key, low) < 0) low = d.key;
    if (this.#floor !== undefined && (low === undefined || compareKeys(this.#floor, low) < 0)) low = this.#floor;
    return low;
  }

  /** A key whose work was dropped undone (withdrawn at a stop, lost, directory work not released). */
  #dropped(key: string): void {
    if (this.#floor === undefined || compareKeys(key, this.#floor) < 0) this.#floor = key;
  }

  #closeOutside(key: string | undefined): void {
    for (;;) {
      const top = this.#open[this.#open.length - 1];
      if (!top || (key !== undefined && key.startsWith(top.key))) return;
      this.#open.pop();
      top.closed = true;
      this.#settle(top);
    }
  }

  /**
   * Planning ended with a failed listing: what was planned runs, but no directory's deferred work
   * (its attributes, its deletion) is released — the planner never saw the whole of any open one.
   */
  finishPartly(): void {
    this.#noDirWork = true;
    this.finish();
  }

  /** Nothing more will be planned. */
  finish(): void {
    this.reach(undefined);
    this.#planned = true;
    this.#maybeRunBlocked();
    this.#wake(true);
  }

  /**
   * Stop handing out work (Ctrl-C, too many failures, a failed listing): queued tasks and directory
   * work not yet released are withdrawn — they never went out, so they are not part of the run.
   * Tasks already out finish and are counted. Returns how many tasks were withdrawn.
   */
  stop(): number {
    if (this.#stopped) return 0;
    this.#stopped = true;
    this.#planned = true;
    let n = 0;
    for (let i = this.#head; i < this.#queue.length; i++) {
      this.#held.delete(this.#queue[i]!.id);
      this.#dropped(this.#queue[i]!.entry.key);
      n++;
    }
    for (const t of this.#blocked) {
      this.#held.delete(t.id);
      this.#dropped(t.entry.key);
    }
    this.#queue = [];
    this.#head = 0;
    this.#blocked = [];
    this.#open.length = 0;
    for (const w of this.#spaceWaiters.splice(0)) w();
    this.#wake(true);
    return n;
  }

  // The dispatcher's side.

  /** Up to `want.tasks` tasks and `want.bytes` bytes (at least one task); [] when none is queued. */
  take(want: { tasks: number; bytes: number }, holder = 'local'): Task[] {
    const out: Task[] = [];
    let bytes = 0;
    let ids = this.#byHolder.get(holder);
    if (!ids) this.#byHolder.set(holder, (ids = new Set()));
    const now = performance.now();
    while (this.#head < this.#queue.length && out.length < want.tasks) {
      const t = this.#queue[this.#head]!;
      const size = t.entry.isDir ? 0 : t.entry.size;
      if (out.length > 0 && bytes + size > want.bytes) break;
      this.#head++;
      bytes += size;
      out.push(t);
      const h = this.#held.get(t.id)!;
      h.holder = holder;
      h.until = now + this.lease.baseMs + (size / this.lease.minRate) * 1000;
      ids.add(t.id);
      if (!h.dispatched) {
        h.dispatched = true;
        this.hooks.dispatched(t, h.counted);
      }
    }
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    this.#inFlight += out.length;
    if (this.queued < this.capacity) for (const w of this.#spaceWaiters.splice(0)) w();
    return out;
  }

  /**
   * Results of tasks `holder` took. A result for an id that is not outstanding, or that `holder`
   * no longer holds (its lease was lost and the task went to another executor), is dropped.
   */
  report(results: TaskResult[], holder = 'local'): void {
    const ids = this.#byHolder.get(holder);
    for (const r of results) {
      const h = this.#held.get(r.id);
      if (!h || h.holder !== holder) continue;
      ids?.delete(r.id);
      h.holder = undefined;
      this.#inFlight--;
      if (this.hooks.closed(h.task, h.counted, r, holder) === 'again' && !this.#stopped) {
        this.#blocked.push(h.task);
        continue;
      }
      this.#held.delete(r.id);
      // A failed key is not done: a resumed run tries it again.
      if ('error' in r) this.#dropped(h.task.entry.key);
      if (h.dir) {
        h.dir.pending--;
        this.#settle(h.dir);
      }
    }
    this.#maybeRunBlocked();
    this.#wake();
  }

  /** No task will ever be queued again: planning is over and nothing is outstanding (or the run stopped). */
  get done(): boolean {
    return this.queued === 0 && (this.#stopped || (this.#planned && this.#held.size === 0));
  }

  /** Resolves when a task is queued or the ledger is done. */
  waitForWork(): Promise<void> {
    if (this.queued > 0 || this.done) return Promise.resolve();
    return new Promise<void>((r) => this.#workWaiters.push(r));
  }

  // Leases.

  /**
   * Everything `holder` runs goes back to the front of the queue for another executor (it
   * disconnected or went silent); a result it sends later is dropped. After the run stopped the
   * tasks are not run again: they are lost. Returns how many tasks it held.
   */
  release(holder: string, why: string): number {
    const ids = this.#byHolder.get(holder);
    this.#byHolder.delete(holder);
    if (!ids || ids.size === 0) return 0;
    this.#requeue([...ids], holder, why);
    return ids.size;
  }

  /**
   * Executors holding a task past its lease (`exempt`: those never judged so, such as the
   * manager's own executor, whose progress is known). The caller disconnects them and releases
   * all they hold: a task must not be run elsewhere while its first holder may still write it.
   */
  overdue(now = performance.now(), exempt?: string): string[] {
    const out: string[] = [];
    for (const [holder, ids] of this.#byHolder) {
      if (holder === exempt) continue;
      for (const id of ids) {
        if (this.#held.get(id)!.until <= now) {
          out.push(holder);
          break;
        }
      }
    }
    return out;
  }

  /** Tasks each executor holds now. */
  holding(holder: string): number {
    return this.#byHolder.get(holder)?.size ?? 0;
  }

  #requeue(ids: number[], holder: string, why: string): void {
    const back: Task[] = [];
    for (const id of ids) {
      const h = this.#held.get(id);
      if (!h || h.holder !== holder) continue;
      h.holder = undefined;
      this.#inFlight--;
      if (this.#stopped) {
        // Never to run again: counted as lost, not as closed.
        this.#held.delete(id);
        this.#dropped(h.task.entry.key);
        if (h.dir) h.dir.pending--;
      } else back.push(h.task);
    }
    if (back.length > 0) {
      this.#queue = [...back, ...this.#queue.slice(this.#head)];
      this.#head = 0;
    }
    this.hooks.leaseLost?.(holder, ids.length, why);
    this.#maybeRunBlocked();
    this.#wake(true);
  }

  // Internals.

  #innermost(key: string): DirWork | undefined {
    for (let i = this.#open.length - 1; i >= 0; i--) if (key.startsWith(this.#open[i]!.key)) return this.#open[i];
    return undefined;
  }

  #enqueue(spec: TaskSpec, dir: DirWork | undefined, counted: boolean): void {
    // The planner made the spec for this one task: it becomes the task (no copy per key).
    const task = spec as Task;
    task.id = this.#nextId++;
    this.#held.set(task.id, { task, dir, counted, dispatched: false, holder: undefined, until: 0 });
    if (dir) dir.pending++;
    this.#queue.push(task);
  }

  /** A directory closed, or something under it finished: release its work, or tell its parent it is done. */
  #settle(d: DirWork): void {
    if (!d.closed || d.pending > 0 || this.#stopped) return;
    this.#unreleased.delete(d);
    if (!d.released && this.#noDirWork) this.#dropped(d.key);
    if (!d.released && !this.#noDirWork) {
      d.released = true;
      for (const { spec, counted } of d.tasks) this.#enqueue(spec, d, counted);
      this.#wake();
      return;
    }
    d.released = true;
    if (d.parent) {
      d.parent.pending--;
      this.#settle(d.parent);
    }
  }

  /**
   * Blocked tasks run once everything else that can run has: planning over, nothing queued or out.
   * What is still held then is either blocked or directory work waiting for a blocked task.
   */
  #maybeRunBlocked(): void {
    if (!this.#planned || this.#stopped || this.#blocked.length === 0 || this.queued > 0 || this.#inFlight > 0) return;
    for (const t of this.#blocked.splice(0)) {
      const again = (t.op === 'copy' ? { ...t, clearWay: true } : t) as Task;
      this.#held.get(t.id)!.task = again;
      this.#queue.push(again);
    }
    this.#wake();
  }

  /** Wake executors waiting for work; coalesced to the next turn, so a page's tasks go out together. */
  #wake(now = false): void {
    if (this.#workWaiters.length === 0) return;
    if (now) {
      for (const w of this.#workWaiters.splice(0)) w();
      return;
    }
    if (this.#wakeScheduled) return;
    this.#wakeScheduled = true;
    setImmediate(() => {
      this.#wakeScheduled = false;
      for (const w of this.#workWaiters.splice(0)) w();
    });
  }
}
