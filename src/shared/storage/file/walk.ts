import { compareKeys } from '../keys.js';
import type { Entry } from '../types.js';
import type { DirRecord } from './pool.js';

export interface WalkOptions {
  prefix: string;
  startAfter?: string;
  /** One level only ('/' delimiter). */
  shallow: boolean;
  follow: boolean;
  pageSize: number;
}

/** What the walk asks of its driver: a directory's records, or to pass on a page of entries. */
export type WalkStep = { read: string } | { page: Entry[] };

/**
 * The recursive listing of a directory tree in UTF-8 byte order of the keys, a page at a time.
 * Each directory is read whole and sorted with '/' appended to sub-directory names (so 'a-b' comes
 * before 'a/', as in S3); only the directories on the current path are held. Symlinked
 * directories are entered when following links, never twice on one path (no cycles).
 *
 * The walk does no I/O: it yields `{read: dir}` and is resumed with that directory's records
 * (empty when it does not exist), so its driver decides where and how directories are read.
 */
export function* walkTree(o: WalkOptions): Generator<WalkStep, void, DirRecord[]> {
  const isDir = (r: DirRecord) => r.kind === 'd' || (o.follow && r.kind === 'l' && r.follow?.kind === 'd');
  function* read(dir: string): Generator<WalkStep, DirRecord[], DirRecord[]> {
    const records = yield { read: dir };
    const keyed = records.map((r) => ({ r, k: isDir(r) ? r.name + '/' : r.name }));
    keyed.sort((a, b) => compareKeys(a.k, b.k));
    return keyed.map((x) => x.r);
  }
  const after = o.startAfter;
  const slash = o.prefix.lastIndexOf('/');
  const startDir = o.prefix.slice(0, slash + 1);
  const namePrefix = o.prefix.slice(slash + 1);
  const top = (yield* read(startDir)).filter((r) => !namePrefix || (isDir(r) ? r.name + '/' : r.name).startsWith(namePrefix));
  const stack: { dir: string; records: DirRecord[]; next: number; seen: Set<string> }[] = [{ dir: startDir, records: top, next: 0, seen: new Set() }];
  let page: Entry[] = [];
  while (stack.length > 0) {
    const level = stack[stack.length - 1]!;
    const r = level.records[level.next++];
    if (!r) {
      stack.pop();
      continue;
    }
    const dir = isDir(r);
    const key = level.dir + r.name + (dir ? '/' : '');
    if (after !== undefined && compareKeys(key, after) <= 0) {
      // A directory before startAfter may still hold keys after it.
      if (!(dir && !o.shallow && after.startsWith(key))) continue;
    } else {
      const f = o.follow && r.kind === 'l' && r.follow ? r.follow : null;
      const a = f ?? r;
      const e: Entry = { key, size: dir ? 0 : a.size, mtime: a.mtime, isDir: dir, mode: a.mode, uid: a.uid, gid: a.gid };
      if (!f && r.kind === 'l') {
        e.isSymlink = true;
        e.target = r.target ?? '';
      }
      page.push(e);
      if (page.length >= o.pageSize) {
        yield { page };
        page = [];
      }
    }
    if (dir && !o.shallow) {
      const id = r.kind === 'l' && r.follow ? `${r.follow.dev}:${r.follow.ino}` : `${r.dev}:${r.ino}`;
      if (level.seen.has(id)) continue;
      stack.push({ dir: key, records: yield* read(key), next: 0, seen: new Set(level.seen).add(id) });
    }
  }
  if (page.length > 0) yield { page };
}
