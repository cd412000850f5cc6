import { compareKeys } from './keys.js';
import type { Entry, ListOptions } from './types.js';

export type NodeKind = 'd' | 'l' | 'f' | 'o';

/** What a directory listing says of one node (or, for `follow`, of what a symlink points at). */
export interface NodeAttrs {
  /** 'd' directory, 'l' symlink, 'f' regular file, 'o' anything else. */
  kind: NodeKind;
  size: number;
  mtime: number;
  mode?: number;
  uid?: number;
  gid?: number;
  /** A directory's identity (device:inode, file id, real path): no directory is entered twice on one path. */
  id?: string;
}

export interface WalkRecord extends NodeAttrs {
  name: string;
  /** Listed but not usable (see Entry.error). */
  error?: string;
  /** A symlink's target. */
  target?: string;
  /** When following links: what the link points at, or null when it is broken. */
  follow?: NodeAttrs | null;
}

/**
 * What the walk asks of its driver: the records of directory `read`. `namePrefix` (names must
 * start with it) and `after` (the part of startAfter below this directory) are hints a driver may
 * use to skip names on the server; the walk filters again anyway.
 */
export interface ReadRequest {
  read: string;
  namePrefix: string;
  after?: string;
  /** Following links: also say the directory's own identity (for the top of the walk). */
  identify?: boolean;
}

/** A directory's records, and its own identity when asked for it. */
export interface DirListing {
  records: WalkRecord[];
  id?: string;
}

type WalkStep = ReadRequest | { page: Entry[] };

/**
 * The recursive listing of a directory tree in UTF-8 byte order of the keys, shared by every store
 * that is a tree (file, sftp, hdfs). Each directory is read whole and sorted with '/' appended to
 * sub-directory names (so 'a-b' comes before 'a/', as in S3); only the directories on the current
 * path are held. Symlinked directories are entered when following links, never twice on one path.
 *
 * The walk does no I/O: it yields read requests and is resumed with the records (empty when the
 * directory does not exist), so each store reads its own way.
 */
export function* walkTree(o: { prefix: string; startAfter?: string; shallow: boolean; follow: boolean; pageSize: number }): Generator<WalkStep, void, DirListing> {
  const isDir = (r: WalkRecord) => r.kind === 'd' || (o.follow && r.kind === 'l' && r.follow?.kind === 'd');
  const after = o.startAfter;
  let topId: string | undefined;
  function* read(dir: string, namePrefix: string, identify = false): Generator<WalkStep, WalkRecord[], DirListing> {
    const req: ReadRequest = { read: dir, namePrefix };
    if (after !== undefined && after.startsWith(dir)) req.after = after.slice(dir.length);
    if (identify) req.identify = true;
    const listing = yield req;
    if (identify) topId = listing.id;
    const keyed: { r: WalkRecord; k: string }[] = [];
    for (const r of listing.records) {
      const k = isDir(r) ? r.name + '/' : r.name;
      if (k.startsWith(namePrefix)) keyed.push({ r, k });
    }
    keyed.sort((a, b) => compareKeys(a.k, b.k));
    return keyed.map((x) => x.r);
  }
  const slash = o.prefix.lastIndexOf('/');
  const startDir = o.prefix.slice(0, slash + 1);
  const top = yield* read(startDir, o.prefix.slice(slash + 1), o.follow && !o.shallow);
  const stack: { dir: string; records: WalkRecord[]; next: number; seen: Set<string> }[] = [{ dir: startDir, records: top, next: 0, seen: new Set(topId === undefined ? [] : [topId]) }];
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
      const e: Entry = { key, size: dir ? 0 : a.size, mtime: a.mtime, isDir: dir };
      if (a.mode !== undefined) e.mode = a.mode;
      if (a.uid !== undefined) e.uid = a.uid;
      if (a.gid !== undefined) e.gid = a.gid;
      if (!f && r.kind === 'l') {
        e.isSymlink = true;
        e.target = r.target ?? '';
      }
      if (r.error !== undefined) e.error = r.error;
      page.push(e);
      if (page.length >= o.pageSize) {
        yield { page };
        page = [];
      }
    }
    if (dir && !o.shallow) {
      const id = r.kind === 'l' ? r.follow?.id : r.id;
      if (id !== undefined && level.seen.has(id)) continue;
      const seen = id === undefined ? level.seen : new Set(level.seen).add(id);
      stack.push({ dir: key, records: yield* read(key, ''), next: 0, seen });
    }
  }
  if (page.length > 0) yield { page };
}

/**
 * A tree store's list(): the walk driven by the store's `readDir`, in pages of `pageSize`.
 * Only the delimiter '/' is supported.
 */
export async function* listTree(options: ListOptions, pageSize: number, readDir: (req: ReadRequest, follow: boolean) => Promise<DirListing>): AsyncIterable<Entry[]> {
  if (options.delimiter !== undefined && options.delimiter !== '/') throw new Error(`a directory tree lists only with delimiter '/', not ${JSON.stringify(options.delimiter)}`);
  const follow = options.followSymlinks ?? false;
  const walk = walkTree({
    prefix: options.prefix ?? '',
    ...(options.startAfter === undefined ? {} : { startAfter: options.startAfter }),
    shallow: options.delimiter !== undefined,
    follow,
    pageSize,
  });
  let step = walk.next();
  while (!step.done) {
    const s = step.value;
    if ('page' in s) {
      yield s.page;
      step = walk.next();
    } else {
      options.signal?.throwIfAborted();
      step = walk.next(await readDir(s, follow));
    }
  }
}
