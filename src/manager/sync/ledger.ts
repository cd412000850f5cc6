import { compareKeys } from '../../shared/storage/keys.js';
import { FatalError, toWire, type WireError } from '../../shared/errors.js';
import { copyRanges, type UploadedPart, type UploadRef } from '../../shared/storage/multipart.js';
import type { Entry } from '../../shared/storage/types.js';
import { taskBytes, type Outcome, type Task, type TaskResult, type TaskSpec } from '../../shared/transfer/task.js';

/**
 * A large object copied as parts by several executors at once: the manager's own step, never
 * handed to an executor. The ledger starts its upload when it reaches the head of the queue, hands
 * out one `copyPart` task per part, and completes (or aborts) the upload when they are all back.
 */
export interface SplitCopy {
  v: 1;
  id: number;
  op: 'split';
  entry: Entry;
  /** Bytes of every part but the last. */
  partSize: number;
}

/**
 * A split copy's upload left open for a later run (`--enable-checkpoint`): the run stopped before
 * every part was in. A resumed run that splits the same object (same size, mtime and part size)
 * uploads only the parts missing here and completes it.
 */
export interface KeptUpload {
  key: string;
  size: number;
  mtime: number;
  partSize: number;
  upload: UploadRef;
  /** Parts stored so far, by part number. */
  parts: UploadedPart[];
}

/** What the ledger holds: the executors' tasks and the manager's split copies. */
export type LedgerTask = Task | SplitCopy;
export type LedgerSpec = TaskSpec | Omit<SplitCopy, 'id'>;
type PartTask = Extract<Task, { op: 'copyPart' }>;

/** The I/O of split copies, done for the ledger (split.ts): the ledger itself only keeps count. */
export interface SplitSteps {
  /** Start the destination's upload of `task.entry`, in parts of `task.partSize`. */
  start(task: SplitCopy): Promise<UploadRef>;
  /** Every part is in: make the object from them. What the key's outcome is. */
  complete(task: SplitCopy, upload: UploadRef, parts: UploadedPart[]): Promise<Outcome>;
  /** Discard the upload (a part failed, the completion failed, the run stopped). Never throws. */
  abort(task: SplitCopy, upload: UploadRef): Promise<void>;
  /** An upload of an earlier run is this copy's: from now on it is completed or aborted like one started here. */
  adopt(task: SplitCopy, upload: UploadRef): void;
  /** The run stopped and keeps the upload open for a resumed run: it is no longer this run's to abort. */
  keep(upload: UploadRef): void;
}

/** What the ledger tells the run's accounting: a task went out, a task's result came in. */
export interface LedgerHooks {
  /** A task was handed to an executor for the first time (of a split copy: its first part): from now on its key is part of the run. */
  dispatched(task: LedgerTask, counted: boolean): void;
  /**
   * A task's first result; `holder` is the executor that delivered it, undefined for a split copy
   * (the manager completed or aborted it). Returning 'again' keeps an executor's task outstanding
   * and runs it once more when everything else is done (see Ledger.#blocked).
   */
  closed(task: LedgerTask, counted: boolean, result: TaskResult, holder: string | undefined): 'again' | undefined;
  /** An executor's part of a split copy was accepted (the key itself is closed once, by the split copy). */
  partDone?(task: PartTask, holder: string, outcome: Outcome): void;
  /** Tasks an executor held went back to the queue: it left, went silent, or kept them past their lease. */
  leaseLost?(holder: string, tasks: number, why: string): void;
}

/**
 * One split copy's parts. The key is counted once: found when its first part goes out, handled
 * when the upload is completed (copied, with its size) or aborted (failed).
 */
interface Split {
  task: SplitCopy;
  /** The key's own entry in the ledger (its directory, whether it counts). */
  held: Held;
  upload: UploadRef | undefined;
  /** Part tasks not closed: queued, or out with an executor. */
  open: Set<number>;
  /** Accepted parts by number; a part run twice keeps the latest accepted ETag, as S3 keeps the latest upload. */
  parts: Map<number, UploadedPart>;
  /** Why it will not complete: a part's (or the completion's) error, or 'stopped' (the run stopped before every part went out). */
  failure: WireError | 'stopped' | undefined;
  /** A part went out: the key is part of the run. */
  announced: boolean;
  /** Its upload is being started, completed or aborted. */
  busy: boolean;
  /** Its number of parts. */
  total: number;
  /** Its upload was started by an earlier run (KeptUpload): should it be gone, the copy starts over. */
  resumed: boolean;
}

/** Deferred work of one directory: released when nothing is outstanding under its key. */
interface DirWork {
  key: string;
  tasks: { spec: LedgerSpec; counted: boolean }[];
  /** Tasks (and child directories' work) outstanding under this directory, its own released tasks included. */
  pending: number;
  /** The planner has moved past the directory: nothing more will be added under it. */
  closed: boolean;
  released: boolean;
  parent: DirWork | undefined;
}

interface Held {
  task: LedgerTask;
  dir: DirWork | undefined;
  /** Its result counts the key (a directory's follow-up work does not). */
  counted: boolean;
  dispatched: boolean;
  /** The executor running it (its lease), while it runs. */
  holder: string | undefined;
  /** When its lease ends (performance.now() milliseconds). */
  until: number;
  /** A split copy's own entry, or one of its parts. */
  split?: Split;
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
  #queue: LedgerTask[] = [];
  #head = 0;
  readonly #held = new Map<number, Held>();
  /** Directories with deferred work that enclose the planner's current key, innermost last. */
  readonly #open: DirWork[] = [];
  /** Tasks to run once more when nothing else is left (hooks.closed said 'again'). */
  #blocked: Task[] = [];
  /** Split copies started and not yet closed. */
  readonly #splits = new Set<Split>();
  /** Split copies whose upload is being started, completed or aborted now. */
  #splitsBusy = 0;
  /** Split copies whose upload is being started: the next one waits (see take()). */
  #splitsStarting = 0;
  #settledWaiters: (() => void)[] = [];
  /** Uploads an earlier run kept open, by key, until a split copy of the same object adopts one. */
  readonly #resumable = new Map<string, KeptUpload>();
  /** Uploads this run stopped with and keeps open for the next (keepStopped). */
  readonly #kept: KeptUpload[] = [];
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
    /** What starts, completes and aborts split copies' uploads; a ledger without takes none. */
    readonly splitSteps?: SplitSteps,
  ) {}

  /**
   * Executors taking work now (the run sets it in cluster mode): no executor holds more than its
   * share of one split copy's parts at once, or the first to ask, with a slot per thread, would take
   * every part of an object of few parts and leave the others idle.
   */
  executors: () => number = () => 1;
  /**
   * `--enable-checkpoint`: a split copy the run stops in the middle of keeps its upload open, with
   * the parts already stored, for the resumed run (openUploads()); without, it is aborted.
   */
  keepStopped = false;
  /** Executors whose last take stopped at their share of a split copy: they wait for a change, not for work. */
  readonly #capped = new Set<string>();

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

  /** Uploads an earlier run kept open: a split copy of the same object continues one instead of starting anew. */
  resume(uploads: readonly KeptUpload[]): void {
    for (const u of uploads) this.#resumable.set(u.key, u);
  }

  /**
   * Uploads a resumed run could continue: those in progress (with the parts stored so far), those
   * this run stopped with, and those of an earlier run not reached yet.
   */
  openUploads(): KeptUpload[] {
    const out: KeptUpload[] = [...this.#kept, ...this.#resumable.values()];
    for (const split of this.#splits) {
      if (!split.upload || (split.failure !== undefined && split.failure !== 'stopped')) continue;
      out.push(keptUpload(split));
    }
    return out;
  }

  /** Uploads of an earlier run that no split copy of this run adopted (the object was done, changed, or gone). */
  unadopted(): KeptUpload[] {
    return [...this.#resumable.values()];
  }

  /** The unadopted uploads were aborted: they are no longer anyone's. */
  forgetUnadopted(): void {
    this.#resumable.clear();
  }

  // The planner's side.

  /** Queue a task; a promise when the queue is full (resolved when there is room). `counted`: its result counts the key. */
  add(spec: LedgerSpec, counted = true): Promise<void> | undefined {
    if (this.#stopped) return undefined;
    if (spec.op === 'split' && !this.splitSteps) throw new FatalError(`${spec.entry.key}: a split copy needs the steps that start and complete its upload`);
    this.#enqueue(spec, this.#innermost(spec.entry.key), counted);
    this.#wake();
    if (this.queued < this.capacity) return undefined;
    return new Promise<void>((r) => this.#spaceWaiters.push(r));
  }

  /** Work for directory `key` (a key ending in '/') that must wait until everything under it is done. */
  later(key: string, spec: LedgerSpec, counted = true): void {
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
      const id = this.#queue[i]!.id;
      const split = this.#held.get(id)?.split;
      this.#held.delete(id);
      this.#dropped(this.#queue[i]!.entry.key);
      // A part that never went out: its upload cannot complete.
      if (split && split.task.id !== id) {
        split.open.delete(id);
        split.failure ??= 'stopped';
      } else n++;
    }
    for (const t of this.#blocked) {
      this.#held.delete(t.id);
      this.#dropped(t.entry.key);
    }
    this.#queue = [];
    this.#head = 0;
    this.#blocked = [];
    this.#open.length = 0;
    for (const split of this.#splits) {
      // Still starting: its parts never go out.
      if (!split.upload) split.failure ??= 'stopped';
      this.#settleSplit(split);
    }
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
    let shares: Map<Split, number> | undefined;
    this.#capped.delete(holder);
    while (this.#head < this.#queue.length && out.length < want.tasks) {
      const t = this.#queue[this.#head]!;
      const part = t.op === 'copyPart' ? this.#held.get(t.id)?.split : undefined;
      if (part) {
        if (!shares) {
          shares = new Map();
          for (const id of ids) {
            const sp = this.#held.get(id)?.split;
            if (sp) shares.set(sp, (shares.get(sp) ?? 0) + 1);
          }
        }
        const mine = shares.get(part) ?? 0;
        if (mine >= Math.ceil(part.total / Math.max(1, this.executors()))) {
          if (out.length === 0) this.#capped.add(holder);
          break;
        }
        shares.set(part, mine + 1);
      }
      if (t.op === 'split') {
        // The manager's own step: its parts come to the front of the queue once the upload is
        // started. One start at a time, so that uploads open one after another as their parts go
        // out, not all at once ahead of them.
        if (this.#splitsStarting === 0) {
          this.#head++;
          // A kept upload is continued at once: its missing parts are at the front now.
          if (this.#startSplit(this.#held.get(t.id)!.split!)) continue;
        }
        break;
      }
      const size = taskBytes(t);
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
        if (h.split) this.#announce(h.split);
        else this.hooks.dispatched(t, h.counted);
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
      if (h.split) {
        this.#partClosed(h.split, h.task as PartTask, r, holder);
        continue;
      }
      if (this.hooks.closed(h.task, h.counted, r, holder) === 'again' && !this.#stopped) {
        this.#blocked.push(h.task as Task);
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

  /** Resolves when a task can be taken or the ledger is done. */
  waitForWork(holder?: string): Promise<void> {
    if (this.done) return Promise.resolve();
    // At its share of a split copy's parts: what it waits for is one of them coming back (or a change).
    if (holder !== undefined && this.#capped.has(holder)) return new Promise<void>((r) => this.#workWaiters.push(r));
    if (this.#takeable()) return Promise.resolve();
    return new Promise<void>((r) => this.#workWaiters.push(r));
  }

  /** Something is queued, and it is not a split copy waiting for another's upload to start. */
  #takeable(): boolean {
    return this.queued > 0 && !(this.#splitsStarting > 0 && this.#queue[this.#head]!.op === 'split');
  }

  /** Resolves when no split copy's upload is being started, completed or aborted (a stopped run waits for its aborts here). */
  splitsSettled(): Promise<void> {
    if (this.#splitsBusy === 0) return Promise.resolve();
    return new Promise<void>((r) => this.#settledWaiters.push(r));
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
      const split = h.split;
      if (split && (this.#stopped || split.failure !== undefined)) {
        // A part of an upload that will not complete: not run again.
        this.#held.delete(id);
        split.open.delete(id);
        split.failure ??= 'stopped';
        this.#settleSplit(split);
      } else if (this.#stopped) {
        // Never to run again: counted as lost, not as closed.
        this.#held.delete(id);
        this.#dropped(h.task.entry.key);
        if (h.dir) h.dir.pending--;
      } else back.push(h.task as Task);
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

  #enqueue(spec: LedgerSpec, dir: DirWork | undefined, counted: boolean): void {
    // The planner made the spec for this one task: it becomes the task (no copy per key).
    const task = spec as LedgerTask;
    task.id = this.#nextId++;
    const h: Held = { task, dir, counted, dispatched: false, holder: undefined, until: 0 };
    if (task.op === 'split') h.split = { task, held: h, upload: undefined, open: new Set(), parts: new Map(), failure: undefined, announced: false, busy: false, total: Math.ceil(task.entry.size / task.partSize), resumed: false };
    this.#held.set(task.id, h);
    if (dir) dir.pending++;
    this.#queue.push(task);
  }

  // Split copies.

  /** The first part went out: the key is found. */
  #announce(split: Split): void {
    if (split.announced) return;
    split.announced = true;
    split.held.dispatched = true;
    this.hooks.dispatched(split.task, split.held.counted);
  }

  /** Run one of the split copy's steps; `then` sees its result once it is done. */
  #step<T>(split: Split, run: () => Promise<T>, then: (r: { value: T } | { error: unknown }) => void): void {
    split.busy = true;
    this.#splitsBusy++;
    const settle = (r: { value: T } | { error: unknown }): void => {
      split.busy = false;
      this.#splitsBusy--;
      then(r);
      if (this.#splitsBusy === 0) for (const w of this.#settledWaiters.splice(0)) w();
    };
    let p: Promise<T>;
    try {
      p = run();
    } catch (error) {
      p = Promise.reject(error);
    }
    p.then(
      (value) => settle({ value }),
      (error: unknown) => settle({ error }),
    );
  }

  /** True when its parts are queued already (it continues a kept upload); otherwise they follow once the upload has started. */
  #startSplit(split: Split): boolean {
    this.#splits.add(split);
    const { entry, partSize } = split.task;
    const kept = this.#resumable.get(entry.key);
    if (kept && kept.size === entry.size && kept.mtime === entry.mtime && kept.partSize === partSize) {
      this.#resumable.delete(entry.key);
      split.upload = kept.upload;
      split.resumed = true;
      for (const part of kept.parts) split.parts.set(part.partNumber, part);
      this.splitSteps!.adopt(split.task, kept.upload);
      this.#queueParts(split);
      this.#settleSplit(split);
      this.#wake(true);
      return true;
    }
    this.#beginUpload(split);
    return false;
  }

  /** Start the split copy's upload; its parts are queued once it has started. */
  #beginUpload(split: Split): void {
    this.#splitsStarting++;
    this.#step(
      split,
      () => this.splitSteps!.start(split.task),
      (r) => {
        this.#splitsStarting--;
        if ('error' in r) split.failure ??= toWire(r.error);
        else {
          split.upload = r.value;
          if (split.failure === undefined) this.#queueParts(split);
        }
        this.#settleSplit(split);
        // The next split copy may start now.
        this.#wake(true);
      },
    );
  }

  /** One copyPart task per part, at the front of the queue: an open upload is finished first. */
  #queueParts(split: Split): void {
    const { entry, partSize } = split.task;
    const parts: Task[] = [];
    let part = 0;
    for (const r of copyRanges(entry.size, partSize)) {
      // Stored by an earlier run (a resumed upload): not uploaded again.
      if (split.parts.has(++part)) continue;
      const task: PartTask = { v: 1, id: this.#nextId++, op: 'copyPart', entry, upload: split.upload!, part, first: r.first, last: r.last };
      this.#held.set(task.id, { task, dir: undefined, counted: false, dispatched: false, holder: undefined, until: 0, split });
      split.open.add(task.id);
      parts.push(task);
    }
    this.#queue = [...parts, ...this.#queue.slice(this.#head)];
    this.#head = 0;
    this.#wake(true);
  }

  #partClosed(split: Split, task: PartTask, r: TaskResult, holder: string): void {
    this.#held.delete(task.id);
    split.open.delete(task.id);
    const part = 'outcome' in r ? r.outcome.part : undefined;
    if (split.failure === undefined || split.failure === 'stopped') {
      if ('outcome' in r && part?.partNumber === task.part) {
        // Stored: part of the completion, or of the upload a stopped run keeps.
        split.parts.set(task.part, part);
        this.hooks.partDone?.(task, holder, r.outcome);
      } else if (this.#stopped && 'error' in r && r.error.code === 'FERRY_ABORTED') {
        // Interrupted by the stop, not failed: the upload may be kept for a resumed run.
        split.failure = 'stopped';
        this.#dropQueuedParts(split);
      } else {
        split.failure = 'error' in r ? r.error : toWire(new FatalError(`part ${task.part} of ${task.entry.key} came back without its ETag`));
        this.#dropQueuedParts(split);
      }
    }
    this.#settleSplit(split);
  }

  /** A failed split copy's parts that have not gone out never will. */
  #dropQueuedParts(split: Split): void {
    const rest = this.#queue.slice(this.#head).filter((t) => {
      if (t.op !== 'copyPart' || !split.open.has(t.id)) return true;
      this.#held.delete(t.id);
      split.open.delete(t.id);
      return false;
    });
    this.#queue = rest;
    this.#head = 0;
  }

  /**
   * Move a split copy on: complete the upload once every part is in; once it will not complete,
   * abort it when no part is out any more (a part still uploading could otherwise outlive the
   * abort), and close the key as failed (or, when the run stopped, leave it lost).
   */
  #settleSplit(split: Split): void {
    if (split.busy || !this.#splits.has(split)) return;
    if (split.failure === undefined) {
      if (split.open.size > 0 || !split.upload) return;
      const parts = [...split.parts.values()].sort((a, b) => a.partNumber - b.partNumber);
      this.#step(
        split,
        () => this.splitSteps!.complete(split.task, split.upload!, parts),
        (r) => {
          if ('value' in r) return this.#closeSplit(split, { v: 1, id: split.task.id, outcome: r.value });
          split.failure = toWire(r.error);
          this.#settleSplit(split);
        },
      );
      return;
    }
    if (split.open.size > 0) return;
    const failure = split.failure;
    if (split.resumed && failure !== 'stopped' && failure.code === 'FERRY_NOT_FOUND' && !this.#stopped) {
      // The earlier run's upload is gone (aborted, expired, or completed after all): start a new one.
      split.resumed = false;
      split.upload = undefined;
      split.failure = undefined;
      split.parts.clear();
      this.#beginUpload(split);
      return;
    }
    const close = (): void => this.#closeSplit(split, failure === 'stopped' ? undefined : { v: 1, id: split.task.id, error: failure });
    if (!split.upload) return close();
    if (failure === 'stopped' && this.keepStopped) {
      this.#kept.push(keptUpload(split));
      this.splitSteps!.keep(split.upload);
      split.upload = undefined;
      return close();
    }
    const upload = split.upload;
    split.upload = undefined;
    this.#step(split, () => this.splitSteps!.abort(split.task, upload), close);
  }

  /** The key's one result (undefined: the run stopped, and a key that went out is lost). */
  #closeSplit(split: Split, result: TaskResult | undefined): void {
    this.#splits.delete(split);
    const h = split.held;
    this.#held.delete(split.task.id);
    // Failed or abandoned: not done, a resumed run copies it again.
    if (!result || 'error' in result) this.#dropped(split.task.entry.key);
    if (result) {
      // Failed before any part went out (its upload would not start): still a key of the run.
      this.#announce(split);
      this.hooks.closed(split.task, h.counted, result, undefined);
    }
    if (h.dir) {
      h.dir.pending--;
      this.#settle(h.dir);
    }
    this.#maybeRunBlocked();
    this.#wake(true);
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
    if (!this.#planned || this.#stopped || this.#blocked.length === 0 || this.queued > 0 || this.#inFlight > 0 || this.#splits.size > 0) return;
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

function keptUpload(split: Split): KeptUpload {
  const { entry, partSize } = split.task;
  const parts = [...split.parts.values()].sort((a, b) => a.partNumber - b.partNumber);
  return { key: entry.key, size: entry.size, mtime: entry.mtime, partSize, upload: split.upload!, parts };
}
