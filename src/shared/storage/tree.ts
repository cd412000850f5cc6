import { AbortedError } from '../errors.js';
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
  /** Kind 'o': what it is (specialKind), for Entry.special. */
  special?: string;
}

/** What a POSIX mode's file type is when it is neither a file, a directory nor a symlink. */
export function specialKind(mode: number): string {
  switch (mode & 0o170000) {
    case 0o010000:
      return 'FIFO';
    case 0o020000:
      return 'character device';
    case 0o060000:
      return 'block device';
    case 0o140000:
      return 'socket';
    default:
      return 'special file';
  }
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
  /** The directory exists but could not be read (permission denied): its entry carries this. */
  error?: string;
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
  /** Why the directory just read could not be read, if it could not. */
  let readError: string | undefined;
  function* read(dir: string, namePrefix: string, identify = false): Generator<WalkStep, WalkRecord[], DirListing> {
    const req: ReadRequest = { read: dir, namePrefix };
    if (after !== undefined && after.startsWith(dir)) req.after = after.slice(dir.length);
    if (identify) req.identify = true;
    const listing = yield req;
    if (identify) topId = listing.id;
    if (listing.error !== undefined) readError = listing.error;
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
    const emit = after === undefined || compareKeys(key, after) > 0;
    // A directory before startAfter may still hold keys after it.
    const descend = dir && !o.shallow && (emit || after!.startsWith(key));
    if (!emit && !descend) continue;
    // A directory is read before its own entry goes out, so that an unreadable one carries the error.
    let sub: { records: WalkRecord[]; seen: Set<string> } | undefined;
    let unreadable: string | undefined;
    if (descend) {
      const id = r.kind === 'l' ? r.follow?.id : r.id;
      if (id === undefined || !level.seen.has(id)) {
        readError = undefined;
        sub = { records: yield* read(key, ''), seen: id === undefined ? level.seen : new Set(level.seen).add(id) };
        unreadable = readError;
      }
    }
    if (emit) {
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
      if (a.kind === 'o') e.special = a.special ?? 'special file';
      const error = r.error ?? unreadable;
      if (error !== undefined) e.error = error;
      page.push(e);
      if (page.length >= o.pageSize) {
        yield { page };
        page = [];
      }
    }
    if (sub) stack.push({ dir: key, records: sub.records, next: 0, seen: sub.seen });
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
      let listing: DirListing;
      try {
        listing = await readDir(s, follow);
      } catch (err) {
        // A sub-directory that cannot be read (permission denied, a path too long for the system,
        // an I/O error after the store's retries) fails its own key, which the walk marks, and the
        // listing goes on: a sync then protects that sub-tree from deletion. The top must be read.
        if (s.read === (options.prefix ?? '').slice(0, (options.prefix ?? '').lastIndexOf('/') + 1) || options.signal?.aborted || isAbort(err)) throw err;
        listing = { records: [], error: (err as Error).message };
      }
      step = walk.next(listing);
    }
  }
}

function isAbort(err: unknown): boolean {
  return err instanceof AbortedError || (err as Error)?.name === 'AbortError' || (err as { code?: string })?.code === 'ABORT_ERR';
}
