import { FatalError, type WireError } from '../errors.js';
import type { UploadedPart, UploadRef } from '../storage/multipart.js';
import type { Entry } from '../storage/types.js';

/**
 * One unit of work an executor runs, with the id the ledger knows it by. Tasks are idempotent (a
 * copy rewrites the whole object through a temporary name), so running one twice does no harm and
 * the ledger counts it once. Versioned: the cluster protocol carries them as they are.
 */
export type Task =
  /** Copy the source entry (file, directory or symlink). `clearWay`: first remove an empty directory tree where the file goes. */
  | { v: 1; id: number; op: 'copy'; entry: Entry; clearWay?: boolean }
  /** Compare contents; copy when they differ (--check-all). `keepSource`: with --delete-src, keep an equal source all the same. */
  | { v: 1; id: number; op: 'check'; entry: Entry; keepSource?: boolean }
  /** Set the destination's mode (and owner) to the source's (--perms). */
  | { v: 1; id: number; op: 'copyPerms'; entry: Entry }
  /**
   * Delete a source key found equal on the destination. `dstEtag`: the destination's ETag, which
   * proves equal content without reading either side when both are plain MD5s.
   */
  | { v: 1; id: number; op: 'deleteSrc'; entry: Entry; dstEtag?: string }
  | { v: 1; id: number; op: 'deleteDst'; entry: Entry }
  /** Set a copied directory's attributes once everything under it is done. */
  | { v: 1; id: number; op: 'finishDir'; entry: Entry }
  /**
   * Upload bytes `first`..`last` (inclusive) of the source entry as part `part` of the destination's
   * multipart upload `upload`: one piece of a large object that several executors copy at once. The
   * manager starts and completes the upload; the outcome carries the part's ETag (`Outcome.part`).
   */
  | { v: 1; id: number; op: 'copyPart'; entry: Entry; upload: UploadRef; part: number; first: number; last: number };

export type TaskOp = Task['op'];

/** What a task is before the ledger gives it an id. */
export type TaskSpec = Task extends infer T ? (T extends Task ? Omit<T, 'id'> : never) : never;

/** Tasks handed to an executor at once. */
export interface TaskBatch {
  v: 1;
  tasks: Task[];
}

export interface Outcome {
  /** copied: data or attributes written; kept: a deletion that did not happen (a non-empty directory). */
  result: 'copied' | 'skipped' | 'deleted' | 'kept';
  /** Bytes copied (or that would be, in a dry run). */
  bytes: number;
  /** Contents were compared (--check-all, --check-new). */
  checked: boolean;
  /** Something the user should hear about, though the task did not fail. */
  warning?: string;
  /** copyPart: the part as the destination has it, for the manager to complete the upload with. */
  part?: UploadedPart;
}

/** What an executor says of one task: its outcome, or the error that finally failed it. */
export type TaskResult = { v: 1; id: number; outcome: Outcome } | { v: 1; id: number; error: WireError };

const OPS = new Set<string>(['copy', 'check', 'copyPerms', 'deleteSrc', 'deleteDst', 'finishDir', 'copyPart']);

/** Bytes a task moves: what batches and leases are measured in. */
export function taskBytes(t: Task): number {
  if (t.op === 'copyPart') return t.last - t.first + 1;
  return t.entry.isDir ? 0 : t.entry.size;
}

const isCount = (x: unknown, min: number): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= min;

/**
 * A task as it arrives over a boundary (a worker's socket), checked: a version this build does not
 * speak, an unknown op or a malformed entry is refused by name, never half understood.
 */
export function validateTask(x: unknown): Task {
  const t = x as Partial<Task> & { v?: unknown };
  if (typeof t !== 'object' || t === null) throw new FatalError('a task must be an object');
  if (t.v !== 1) throw new FatalError(`task version ${JSON.stringify(t.v)} is not spoken here (this build speaks 1)`);
  if (typeof t.id !== 'number' || !Number.isSafeInteger(t.id)) throw new FatalError('a task needs an integer id');
  if (typeof t.op !== 'string' || !OPS.has(t.op)) throw new FatalError(`unknown task op ${JSON.stringify(t.op)}`);
  const e = t.entry as Partial<Entry> | undefined;
  if (!e || typeof e.key !== 'string' || typeof e.size !== 'number' || typeof e.mtime !== 'number' || typeof e.isDir !== 'boolean') {
    throw new FatalError(`task ${t.id} has a malformed entry`);
  }
  if (t.op === 'copyPart') {
    const p = t as Partial<Extract<Task, { op: 'copyPart' }>>;
    const u = p.upload as Partial<UploadRef> | undefined;
    if (!u || typeof u.key !== 'string' || typeof u.uploadId !== 'string' || u.uploadId === '') throw new FatalError(`task ${t.id} (copyPart) names no upload`);
    if (!isCount(p.part, 1) || !isCount(p.first, 0) || !isCount(p.last, 0) || p.first > p.last || p.last >= e.size) {
      throw new FatalError(`task ${t.id} (copyPart) has a malformed part: number ${JSON.stringify(p.part)}, bytes ${JSON.stringify(p.first)}-${JSON.stringify(p.last)} of ${e.size}`);
    }
  }
  return t as Task;
}

export function validateResult(x: unknown): TaskResult {
  const r = x as { v?: unknown; id?: unknown; outcome?: Partial<Outcome>; error?: Partial<WireError> };
  if (typeof r !== 'object' || r === null) throw new FatalError('a task result must be an object');
  if (r.v !== 1) throw new FatalError(`task result version ${JSON.stringify(r.v)} is not spoken here (this build speaks 1)`);
  if (typeof r.id !== 'number') throw new FatalError('a task result needs an id');
  if (r.outcome) {
    const o = r.outcome;
    if (!['copied', 'skipped', 'deleted', 'kept'].includes(o.result as string) || typeof o.checked !== 'boolean') throw new FatalError(`task result ${r.id} has a malformed outcome`);
    // Counters add these up: a byte count that is not a whole number of bytes would poison the summary.
    if (typeof o.bytes !== 'number' || !Number.isSafeInteger(o.bytes) || o.bytes < 0) throw new FatalError(`task result ${r.id} has a byte count that is not a whole number ≥ 0`);
    if (o.warning !== undefined && typeof o.warning !== 'string') throw new FatalError(`task result ${r.id} has a warning that is not text`);
    if (o.part !== undefined) {
      const p = o.part as Partial<UploadedPart>;
      if (typeof p !== 'object' || p === null || !isCount(p.partNumber, 1) || typeof p.etag !== 'string' || !isCount(p.size, 0)) throw new FatalError(`task result ${r.id} has a malformed part`);
    }
  } else if (!r.error || typeof r.error.code !== 'string' || typeof r.error.message !== 'string') throw new FatalError(`task result ${r.id} has neither an outcome nor an error`);
  return r as TaskResult;
}
