import { formatBytes } from '../sync/stats.js';

/**
 * One entry of a namespace snapshot, as `ferry dump` writes it and `ferry load` reads it, whatever
 * the format (JSON document, tar, zip).
 *
 * Order: a dump yields entries depth-first, a directory before what it holds, each directory's
 * entries in UTF-8 byte order of their keys (a sub-directory's name with '/' appended, as stores
 * list). Load does not rely on that order: an archive written by another tool has its own.
 */
export interface DumpEntry {
  /**
   * The path below the dump's root, '/'-separated, with no leading or trailing '/'; '' is the root
   * itself. Bytes of a name that are not valid UTF-8 are held as lone surrogates U+DC80–U+DCFF, one
   * per byte (as Python's "surrogateescape" does), so that every name round-trips exactly.
   */
  path: string;
  type: 'file' | 'dir' | 'symlink';
  /** Bytes of a file; 0 for directories and symlinks. */
  size: number;
  /** Milliseconds since the epoch. */
  mtime?: number;
  /** Permission bits (0o7777). */
  mode?: number;
  uid?: number;
  gid?: number;
  /** A symlink's target, as stored (relative or absolute). */
  target?: string;
  /**
   * An archive's hard link: this file has the content of the earlier file at this path (below the
   * same root). Load restores it as a copy.
   */
  linkTo?: string;
  /** Content hashes, lowercase hex, when the dump recorded them (`--hash`). */
  md5?: string;
  sha256?: string;
}

/** What a namespace holds: written in a dump's header, recomputed by load. */
export interface DumpCounters {
  files: number;
  dirs: number;
  symlinks: number;
  /** Sum of file sizes. */
  bytes: number;
}

export function emptyCounters(): DumpCounters {
  return { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
}

/** The counters as a user reads them: "2 files (12 B), 1 directory, 0 symlinks". */
export function describeCounters(c: DumpCounters): string {
  return `${plural(c.files, 'file')} (${formatBytes(c.bytes)}), ${plural(c.dirs, 'directory', 'directories')}, ${plural(c.symlinks, 'symlink')}`;
}

export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Count one entry (the root directory itself is not counted). */
export function countEntry(c: DumpCounters, e: DumpEntry): void {
  if (e.path === '') return;
  if (e.type === 'file') {
    c.files++;
    c.bytes += e.size;
  } else if (e.type === 'dir') c.dirs++;
  else c.symlinks++;
}
