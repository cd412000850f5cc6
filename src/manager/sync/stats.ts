/** What one executor did: the manager's own ('manager') or a worker's. */
export interface ExecutorStats {
  id: string;
  /** `user@host` of a deployed worker, the name a joining worker gave, or 'manager'. */
  host: string;
  /** Tasks whose results it delivered and that counted (a late result of a lost lease does not). */
  tasks: number;
  copiedObjects: number;
  /** Bytes of the keys it copied, and of the parts of split objects it uploaded. */
  copiedBytes: number;
  /** Parts of split objects (--split-size) it uploaded; each is one of its `tasks`. Such an object counts in the run's `copied`, not in an executor's `copiedObjects`. */
  parts: number;
  /** Times it lost the tasks it held (it left, went silent, or kept a task past its lease). */
  leasesLost: number;
  /** Bytes it moved, also of copies still running (its throughput). */
  transferredBytes: number;
  /** It is connected and may take work. */
  live: boolean;
}

/** Counters of one sync run, named as in juicefs's summary. Each key is counted once. */
export class SyncStats {
  /** Executors by id, in the order they joined. */
  readonly executors = new Map<string, ExecutorStats>();
  /** Source keys that passed the filters (the keys this run is about). */
  found = 0;
  /** Source keys listed in all, excluded ones included: progress while listing. */
  scanned = 0;
  excluded = 0;
  excludedBytes = 0;
  skipped = 0;
  skippedBytes = 0;
  copied = 0;
  copiedBytes = 0;
  /** On the destination only, and kept. */
  extra = 0;
  extraBytes = 0;
  checked = 0;
  checkedBytes = 0;
  deleted = 0;
  failed = 0;
  /** Deletions withheld: under a prefix whose listing was incomplete, or past --max-deletes. */
  protected = 0;
  /** Prefixes whose listing was incomplete on either side (nothing under them is deleted). */
  incomplete = 0;
  /** Temporary files of killed runs removed from the destination, and their bytes. */
  reclaimed = 0;
  reclaimedBytes = 0;
  /** Deletions planned: with `found`, the keys that must each be handled. */
  deletions = 0;
  handled = 0;
  /** Bytes moved so far, also of copies still running: the live rate. */
  transferredBytes = 0;
  readonly startedAt = performance.now();

  /** Keys found or planned for deletion that were never handled (interrupted or stopped runs). */
  get lost(): number {
    return Math.max(0, this.found + this.deletions - this.handled);
  }

  get pending(): number {
    return this.found + this.deletions - this.handled;
  }

  /** The executor's counters, made on first use. */
  executor(id: string, host = id): ExecutorStats {
    let e = this.executors.get(id);
    if (!e) this.executors.set(id, (e = { id, host, tasks: 0, copiedObjects: 0, copiedBytes: 0, parts: 0, leasesLost: 0, transferredBytes: 0, live: true }));
    return e;
  }

  get liveExecutors(): number {
    let n = 0;
    for (const e of this.executors.values()) if (e.live) n++;
    return n;
  }

  /** The --json summary's `executors`. */
  executorsJSON(): { id: string; host: string; tasks: number; copiedObjects: number; copiedBytes: number; parts: number; leasesLost: number }[] {
    return [...this.executors.values()].map(({ id, host, tasks, copiedObjects, copiedBytes, parts, leasesLost }) => ({ id, host, tasks, copiedObjects, copiedBytes, parts, leasesLost }));
  }

  get elapsedSeconds(): number {
    return (performance.now() - this.startedAt) / 1000;
  }

  /** juicefs's summary line, then what ferry adds; `failure` says why the run as a whole failed. */
  summaryLine(failure?: string): string {
    const more =
      (this.incomplete > 0 ? `, incompletely listed: ${this.incomplete}` : '') +
      (this.protected > 0 ? `, protected from deletion: ${this.protected}` : '') +
      (this.reclaimed > 0 ? `, reclaimed: ${this.reclaimed} temporary files (${formatBytes(this.reclaimedBytes)})` : '');
    return (
      `Found: ${this.found}, excluded: ${this.excluded} (${formatBytes(this.excludedBytes)}), ` +
      `skipped: ${this.skipped} (${formatBytes(this.skippedBytes)}), copied: ${this.copied} (${formatBytes(this.copiedBytes)}), ` +
      `extra: ${this.extra} (${formatBytes(this.extraBytes)}), checked: ${this.checked} (${formatBytes(this.checkedBytes)}), ` +
      `deleted: ${this.deleted}, failed: ${this.failed}, lost: ${this.lost}` +
      more +
      (failure === undefined ? '' : ` — the run FAILED: ${failure}`)
    );
  }

  toJSON(): Record<string, number> {
    return {
      found: this.found,
      excluded: this.excluded,
      excludedBytes: this.excludedBytes,
      skipped: this.skipped,
      skippedBytes: this.skippedBytes,
      copied: this.copied,
      copiedBytes: this.copiedBytes,
      extra: this.extra,
      extraBytes: this.extraBytes,
      checked: this.checked,
      checkedBytes: this.checkedBytes,
      deleted: this.deleted,
      failed: this.failed,
      lost: this.lost,
      incomplete: this.incomplete,
      protected: this.protected,
      reclaimed: this.reclaimed,
      reclaimedBytes: this.reclaimedBytes,
      seconds: Math.round(this.elapsedSeconds * 1000) / 1000,
    };
  }
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${Math.round(v)} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${UNITS[u]}`;
}
