import type { Entry, Features } from '../../shared/storage/types.js';
import type { Diff } from './merge.js';
import type { DecisionOptions } from '../../shared/job.js';

export type { DecisionOptions };

/** What the stores on each side can keep, read once from their features. */
export interface SideFeatures {
  /** Both sides keep modification times: the quick check (size and mtime) applies. */
  quickCheck: boolean;
  /** Both sides keep modes; owners too when `owner`. */
  perms: boolean;
  owner: boolean;
  /** The mtime the destination would keep for a source mtime (SFTP keeps 32-bit seconds). */
  keptMtime: (ms: number) => number;
}

export function sideFeatures(src: Features, dst: Features): SideFeatures {
  const range = dst.attrs?.mtimeRange;
  return {
    keptMtime: range ? (ms) => Math.min(range.max, Math.max(range.min, ms)) : (ms) => ms,
    quickCheck: Boolean(src.attrs?.mtime && dst.attrs?.mtime),
    perms: Boolean(src.attrs?.mode && dst.attrs?.mode),
    owner: Boolean(src.attrs?.owner && dst.attrs?.owner),
  };
}

export type Decision =
  /** Copy the source entry (file, directory or symlink) to the destination. */
  | 'copy'
  /** Compare contents; copy when they differ (--check-all). */
  | 'check'
  /** Only permissions differ (--perms). */
  | 'copyPerms'
  | 'deleteSrc'
  | 'deleteDst'
  | 'skip'
  /** On the destination only and kept. */
  | 'extra'
  /** A directory while --dirs is off: not a key of the sync at all. */
  | 'ignore';

const seconds = (ms: number) => Math.floor(ms / 1000);

export function permsDiffer(src: Entry, dst: Entry, owner: boolean): boolean {
  if ((src.mode ?? 0) !== (dst.mode ?? 0)) return true;
  return owner && (src.uid !== dst.uid || src.gid !== dst.gid);
}

/**
 * The per-key decision of `juicefs sync` (pkg/sync's produce()), with ferry's quick check: where
 * both sides keep modification times, equal sizes with different mtimes (to the second) also mean
 * "changed", as in rsync; `--size-only` turns that off.
 */
export function decide(d: Diff, o: DecisionOptions, f: SideFeatures): Decision {
  if (d.kind === 'dstOnly') {
    if (!o.deleteDst) return 'extra';
    if (d.dst.isDir && !o.dirs) return 'extra';
    return 'deleteDst';
  }
  const src = d.src;
  if (src.isDir && !o.dirs) return 'ignore';
  if (d.kind === 'srcOnly') return o.existing ? 'skip' : 'copy';

  const dst = d.dst;
  if (o.ignoreExisting) return 'skip';
  if (o.forceUpdate) return 'copy';
  // Compared as the destination keeps it, or a file dated 1960 would be copied to SFTP on every run.
  const mtime = seconds(f.keptMtime(src.mtime));
  if (o.update) {
    if (mtime > seconds(dst.mtime)) return 'copy';
    if (mtime < seconds(dst.mtime)) return 'skip';
  } else {
    if (src.size !== dst.size) return 'copy';
    if (src.isDir !== dst.isDir || Boolean(src.isSymlink) !== Boolean(dst.isSymlink)) return 'copy';
    if (src.isSymlink && src.target !== undefined && dst.target !== undefined && src.target !== dst.target) return 'copy';
    if (f.quickCheck && !o.sizeOnly && mtime !== seconds(dst.mtime)) return 'copy';
  }
  // The two are likely the same.
  if (o.checkAll && !src.isDir) return 'check';
  if (o.deleteSrc) return 'deleteSrc';
  if (o.perms && f.perms && !(o.links && src.isSymlink) && permsDiffer(src, dst, f.owner)) return 'copyPerms';
  return 'skip';
}
