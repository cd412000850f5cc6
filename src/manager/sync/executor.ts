
/**
 * Runs tasks with bounded concurrency, plus deferred tasks that wait for everything issued before
 * them: a directory's attributes are set, or the directory removed, only once all the work under
 * it is done. Deferred tasks run one at a time, in the order they were deferred (deepest first,
 * since a directory closes after its sub-directories).
 */
export class Executor<Work> {
  readonly #running = new Set<number>();
  #seq = 0;
  readonly #deferred: { after: number; task: Work }[] = [];
  #deferredBusy = false;
  readonly #slotWaiters: (() => void)[] = [];
  readonly #idleWaiters: (() => void)[] = [];

  constructor(
    readonly run: (work: Work) => Promise<void>,
    readonly concurrency: number,
    /** Once true, tasks still waiting for a slot are not started. */
    readonly stopped: () => boolean = () => false,
  ) {}

  get inFlight(): number {
    return this.#running.size;
  }

  /**
   * Start a task once a slot is free. Returns nothing when it started at once, else a promise that
   * resolves when it has started (not when it has finished), or with false when the executor was
   * stopped meanwhile: the planner's loop stays synchronous while there is room.
   */
  submit(task: Work): Promise<boolean> | undefined {
    if (this.#full()) return this.#submitLater(task);
    this.#start(task, false);
    return undefined;
  }

  #full(): boolean {
    return this.#running.size - (this.#deferredBusy ? 1 : 0) >= this.concurrency;
  }

  /** Resolves to false when the executor was stopped while the task waited: it never ran. */
  async #submitLater(task: Work): Promise<boolean> {
    while (this.#full()) await new Promise<void>((r) => this.#slotWaiters.push(r));
    if (this.stopped()) return false;
    this.#start(task, false);
    return true;
  }

  /** Run `task` after every task submitted so far has finished. */
  defer(task: Work): void {
    this.#deferred.push({ after: this.#seq, task });
    this.#pump();
  }

  /** Forget deferred tasks not yet started (an interrupted run). */
  dropDeferred(): number {
    const n = this.#deferred.length;
    this.#deferred.length = 0;
    this.#settle();
    return n;
  }

  /** Resolves when nothing runs and nothing is deferred. */
  idle(): Promise<void> {
    if (this.#running.size === 0 && this.#deferred.length === 0) return Promise.resolve();
    return new Promise<void>((r) => this.#idleWaiters.push(r));
  }

  #start(task: Work, deferred: boolean): void {
    const id = ++this.#seq;
    this.#running.add(id);
    if (deferred) this.#deferredBusy = true;
    this.run(task).finally(() => {
      this.#running.delete(id);
      if (deferred) this.#deferredBusy = false;
      this.#slotWaiters.shift()?.();
      this.#pump();
      this.#settle();
    });
  }

  #pump(): void {
    if (this.#deferredBusy) return;
    const d = this.#deferred[0];
    if (!d) return;
    let min = Infinity;
    for (const id of this.#running) if (id < min) min = id;
    if (d.after < min) {
      this.#deferred.shift();
      this.#start(d.task, true);
    }
  }

  #settle(): void {
    if (this.#running.size === 0 && this.#deferred.length === 0) for (const w of this.#idleWaiters.splice(0)) w();
  }
}
