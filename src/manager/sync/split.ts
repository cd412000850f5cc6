import { AbortedError, NotFoundError, SourceChangedError } from '../../shared/errors.js';
import type { SyncOptions } from '../../shared/job.js';
import { partSizing, type UploadedPart, type UploadRef } from '../../shared/storage/multipart.js';
import type { Attrs, Entry, MultipartUploads, ObjectStore } from '../../shared/storage/types.js';
import { copiesServerSide } from '../../shared/transfer/copy.js';
import { DEFAULT_RETRY, withRetry, type RetryOptions } from '../../shared/transfer/retry.js';
import type { Outcome } from '../../shared/transfer/task.js';
import type { KeptUpload, SplitCopy, SplitSteps } from './ledger.js';
import type { Logger } from './run.js';

/**
 * Split copies (`--split-size`): an object larger than the split size, going to a store that takes
 * multipart uploads, is copied as parts by every executor at once. The planner asks the policy
 * below which keys to split and in parts of what size; the ledger hands out the parts as tasks and
 * calls the steps here, which the manager runs itself: start the upload, complete it from the
 * parts' ETags, abort it when it will not complete.
 */

/**
 * Which keys a run splits, and the size of their parts: `--split-size`, raised (as the store's
 * limits require) until the store's part count holds the object. Undefined when the run splits
 * nothing: no split size, a destination without multipart uploads, a dry run, a copy that must
 * be verified key by key (--check-new, --delete-src-after), or a copy the destination makes
 * itself (same endpoint and account). `limited`: --bwlimit is on.
 */
export function splitPolicy(src: ObjectStore, dst: ObjectStore, o: SyncOptions, limited: boolean): ((e: Entry) => number | undefined) | undefined {
  const splitSize = o.splitSize ?? 0;
  const limits = dst.features.multipart;
  if (splitSize <= 0 || !limits || !dst.multipart || o.dry || o.checkNew || o.deleteSrcAfter) return undefined;
  if (copiesServerSide(src, dst, limited)) return undefined;
  return (e) => {
    if (e.isDir || e.isSymlink || e.size <= splitSize) return undefined;
    let partSize: number;
    try {
      partSize = partSizing(limits, splitSize, e.size, e.key).partSize;
    } catch {
      // More than the store holds in one object: the plain copy says so.
      return undefined;
    }
    return e.size > partSize ? partSize : undefined;
  };
}

/**
 * The steps of the run's split copies, with retries. Every upload it starts is completed or
 * aborted: the ledger aborts those that fail, and `close()` at the end of the run aborts any that
 * is still open (its parts were with executors that never came back, or the run was stopped).
 */
export class SplitUploads implements SplitSteps {
  readonly #multipart: MultipartUploads;
  /** Uploads started and neither completed nor aborted, by upload id. */
  readonly #open = new Map<string, { task: SplitCopy; upload: UploadRef }>();
  /** Split copies that continue an earlier run's upload. */
  readonly #adopted = new Set<number>();
  #closed = false;

  constructor(
    readonly src: ObjectStore,
    readonly dst: ObjectStore,
    readonly o: SyncOptions,
    /** Aborted: stop now (second Ctrl-C). Aborts still go out. */
    readonly signal: AbortSignal,
    readonly log: Logger,
    readonly retry: RetryOptions = DEFAULT_RETRY,
  ) {
    this.#multipart = dst.multipart!;
  }

  /** Uploads open now. */
  get open(): number {
    return this.#open.size;
  }

  async start(task: SplitCopy): Promise<UploadRef> {
    const e = task.entry;
    this.#refuseWhenClosed(e.key);
    if (this.#adopted.delete(task.id)) this.log.info(`the multipart upload of ${JSON.stringify(e.key)} that the interrupted run kept is gone: copying it anew`);
    const storageClass = this.o.storageClass;
    const u = await withRetry(() => this.#multipart.start(e.key, e.size, { partSize: task.partSize, signal: this.signal, ...(storageClass ? { storageClass } : {}) }), this.#retry());
    const upload = { key: u.key, uploadId: u.uploadId };
    this.#open.set(upload.uploadId, { task, upload });
    if (this.#closed) {
      // The run ended while the upload was being started.
      await this.abort(task, upload);
      this.#refuseWhenClosed(e.key);
    }
    this.log.debug(`copying ${e.key} in ${Math.ceil(e.size / task.partSize)} parts of ${task.partSize} bytes by every executor`);
    return upload;
  }

  async complete(task: SplitCopy, upload: UploadRef, parts: UploadedPart[]): Promise<Outcome> {
    const e = task.entry;
    this.#refuseWhenClosed(e.key);
    if (this.o.checkChange) {
      // Looked at as it was listed: links followed unless --links.
      const now = await withRetry(() => this.src.head(e.key, { signal: this.signal, followSymlinks: !this.o.links }), this.#retry());
      if (now.size !== e.size || Math.floor(now.mtime / 1000) !== Math.floor(e.mtime / 1000)) {
        throw new SourceChangedError(`${this.src.description}${e.key} changed during the copy (size ${e.size} → ${now.size})`);
      }
    }
    let attempts = 0;
    await withRetry(async () => {
      attempts++;
      try {
        await this.#multipart.complete(upload, parts, { signal: this.signal });
      } catch (err) {
        // A completion whose answer was lost is retried into "no such upload": the object says whether it went through.
        if (attempts > 1 && err instanceof NotFoundError && (await this.#holds(e))) return;
        throw err;
      }
    }, this.#retry());
    this.#open.delete(upload.uploadId);
    await this.#setAttrs(e);
    return { result: 'copied', bytes: e.size, checked: false };
  }

  adopt(task: SplitCopy, upload: UploadRef): void {
    this.#refuseWhenClosed(task.entry.key);
    this.#adopted.add(task.id);
    this.#open.set(upload.uploadId, { task, upload });
    this.log.debug(`continuing the multipart upload of ${task.entry.key} that the interrupted run kept`);
  }

  keep(upload: UploadRef): void {
    this.#open.delete(upload.uploadId);
  }

  /**
   * Abort uploads an earlier run kept that this run did not continue: the object was copied after
   * all, changed, or is no longer to be copied. Never throws.
   */
  async abortStale(uploads: readonly KeptUpload[]): Promise<void> {
    await Promise.all(
      uploads.map(async (u) => {
        this.log.debug(`aborting the multipart upload of ${u.key} that the interrupted run kept: this run did not need it`);
        await this.abort({ v: 1, id: 0, op: 'split', entry: { key: u.key, size: u.size, mtime: u.mtime, isDir: false }, partSize: u.partSize }, u.upload);
      }),
    );
  }

  /** Never throws: an upload that cannot be aborted is reported, with what it costs. */
  async abort(task: SplitCopy, upload: UploadRef): Promise<void> {
    try {
      // Without the run's signal: an interrupted run cleans up too.
      await withRetry(() => this.#multipart.abort(upload), this.retry);
      this.#open.delete(upload.uploadId);
    } catch (err) {
      this.log.error(
        `could not abort the multipart upload of ${JSON.stringify(task.entry.key)} on ${this.dst.description} (upload id ${upload.uploadId}): ${(err as Error).message}; ` +
          'its parts stay stored (and billed) until it is aborted, e.g. by a lifecycle rule for incomplete multipart uploads',
      );
    }
  }

  /** The run is over: abort every upload still open; none starts or completes after this. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#open.values()].map(({ task, upload }) => this.abort(task, upload)));
  }

  #refuseWhenClosed(key: string): void {
    if (this.#closed) throw new AbortedError(`${key}: the run is over; its multipart upload is not started or completed`);
  }

  #retry(): RetryOptions {
    return { ...this.retry, signal: this.signal };
  }

  async #holds(e: Entry): Promise<boolean> {
    try {
      return (await this.dst.head(e.key, { signal: this.signal })).size === e.size;
    } catch {
      return false;
    }
  }

  /** Where the destination keeps mtimes (and modes, with --perms), the copy gets the source's, as a whole-object copy does. */
  async #setAttrs(e: Entry): Promise<void> {
    const can = this.dst.features.attrs;
    if (!can || !this.dst.setAttrs) return;
    const attrs: Attrs = {};
    if (can.mtime) attrs.mtime = e.mtime;
    if (this.o.perms && can.mode && e.mode !== undefined) attrs.mode = e.mode;
    if (Object.keys(attrs).length > 0) await withRetry(() => this.dst.setAttrs!(e.key, attrs), this.#retry());
  }
}
