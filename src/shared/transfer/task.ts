import type { Entry } from '../storage/types.js';

/**
 * One unit of work an executor runs. Tasks are idempotent (a copy rewrites the whole object), so
 * running one twice does no harm. Versioned: the cluster protocol carries them as they are.
 */
export type Task =
  /** Copy the source entry (file, directory or symlink). */
  | { v: 1; op: 'copy'; entry: Entry }
  /** Compare contents; copy when they differ (--check-all). */
  /** `keepSource`: with --delete-src, a source found equal is kept all the same (a withheld deletion). */
  | { v: 1; op: 'check'; entry: Entry; keepSource?: boolean }
  /** Set the destination's mode (and owner) to the source's (--perms). */
  | { v: 1; op: 'copyPerms'; entry: Entry }
  /**
   * Delete a source key found equal on the destination. `dstEtag`: the destination's ETag, which
   * proves equal content without reading either side when both are plain MD5s.
   */
  | { v: 1; op: 'deleteSrc'; entry: Entry; dstEtag?: string }
  | { v: 1; op: 'deleteDst'; entry: Entry }
  /** Set a copied directory's attributes once everything under it is done. */
  | { v: 1; op: 'finishDir'; entry: Entry };

export type TaskOp = Task['op'];

export interface Outcome {
  /** copied: data or attributes written; kept: a deletion that did not happen (a non-empty directory). */
  result: 'copied' | 'skipped' | 'deleted' | 'kept';
  /** Bytes copied (or that would be, in a dry run). */
  bytes: number;
  /** Contents were compared (--check-all, --check-new). */
  checked: boolean;
  /** Something the user should hear about, though the task did not fail. */
  warning?: string;
}
