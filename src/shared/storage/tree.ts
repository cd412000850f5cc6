import { isAbortError } from '../errors.js';
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
  /** The directory's size as its parent listed it (what a store may guess its number of names from). */
  size?: number;
}

/** A directory's records, and its own identity when asked for it. */
export interface DirListing {
  records: WalkRecord[];
  id?: string;
  /** The directory exists but could not be read (permission denied): its entry carries this. */
  error?: string;
}

/**
 * A directory whose records come sorted, a page at a time, from a store that holds only the names
 * while it sorts (file/index.ts): what a very large directory costs is then its names, not its
 * records.
 */
export interface SortedRecords {
  /**
   * The next records in key order (sorted with '/' appended to directory names, as the walk sorts
   * a DirListing); none at the end.
   */
  next(): Promise<WalkRecord[]>;
  /** Let go of what it holds (temporary files); called once, also when the listing stops early. */
  close(): Promise<void>;
}

/** Records already in key order, as one page. */
export function inOrder(records: WalkRecord[]): SortedRecords {
  let page: WalkRecord[] = records;
  return {
    next: async () => {
      const out = page;
      page = [];
      return out;
    },
    close: async () => {
      page = [];
    },
  };
}

/** A directory read the SortedRecords way. */
export interface SortedListing {
  sorted: SortedRecords;
  id?: string;
  error?: string;
}

/** One directory on the path the walk is in. */
interface Level {
  dir: string;
  /** Records in key order: the whole directory, or the current page of `source`. */
  records: WalkRecord[];
  next: number;
  source: SortedRecords | undefined;
  /** Names a sorted source gives must start with this (a DirListing is filtered when it is sorted). */
  namePrefix: string;
  /** Identities of the directories on the path, for following links. */
  seen: Set<string>;
}

/**
 * A tree store's list(): the recursive listing of a directory tree in UTF-8 byte order of the keys,
 * shared by every store that is a tree (file, sftp, hdfs), in pages of `pageSize`. A directory comes
 * from the store's `readDir` whole (a DirListing, which the walk sorts with '/' appended to
 * sub-directory names, so that 'a-b' comes before 'a/', as in S3) or sorted a page at a time (a
 * SortedListing); only the directories on the current path are held. Symlinked directories are
 * entered when following links, never twice on one path. Directories for which
 * `options.skipDir` says so are listed but not read. Only the delimiter '/' is supported.
 */
export async function* listTree(options: ListOptions, pageSize: number, readDir: (req: ReadRequest, follow: boolean) => Promise<DirListing | SortedListing>): AsyncIterable<Entry[]> {
  if (options.delimiter !== undefined && options.delimiter !== '/') throw new Error(`a directory tree lists only with delimiter '/', not ${JSON.stringify(options.delimiter)}`);
  const follow = options.followSymlinks ?? false;
  const shallow = options.delimiter !== undefined;
  const prefix = options.prefix ?? '';
  const after = options.startAfter;
  const skipDir = options.skipDir;
  const signal = options.signal;
  const isDir = (r: WalkRecord) => r.kind === 'd' || (follow && r.kind === 'l' && r.follow?.kind === 'd');
  const slash = prefix.lastIndexOf('/');
  const startDir = prefix.slice(0, slash + 1);

  /** Read a directory: its level, its identity when asked, and why it could not be read. */
  const open = async (dir: string, namePrefix: string, seen: Set<string>, identify: boolean, size?: number): Promise<{ level: Level; id?: string; error?: string }> => {
    signal?.throwIfAborted();
    const req: ReadRequest = { read: dir, namePrefix };
    if (after !== undefined && after.startsWith(dir)) req.after = after.slice(dir.length);
    if (identify) req.identify = true;
    if (size !== undefined) req.size = size;
    let listing: DirListing | SortedListing;
    try {
      listing = await readDir(req, follow);
    } catch (err) {
      // A sub-directory that cannot be read (permission denied, a path too long for the system,
      // an I/O error after the store's retries) fails its own key, which the walk marks, and the
      // listing goes on: a sync then protects that sub-tree from deletion. The top must be read.
      if (dir === startDir || signal?.aborted || isAbortError(err)) throw err;
      listing = { records: [], error: (err as Error).message };
    }
    const level: Level = { dir, records: [], next: 0, source: undefined, namePrefix: '', seen };
    if ('sorted' in listing) {
      level.source = listing.sorted;
      level.namePrefix = namePrefix;
    } else {
      const keyed: { r: WalkRecord; k: string }[] = [];
      for (const r of listing.records) {
        const k = isDir(r) ? r.name + '/' : r.name;
        if (k.startsWith(namePrefix)) keyed.push({ r, k });
      }
      keyed.sort((a, b) => compareKeys(a.k, b.k));
      level.records = keyed.map((x) => x.r);
    }
    return { level, ...(listing.id === undefined ? {} : { id: listing.id }), ...(listing.error === undefined ? {} : { error: listing.error }) };
  };

  /**
   * Whether the walk enters sub-directory record `r` of `level` (key `key`), and with which
   * identities on its path; undefined when it does not.
   */
  const entry = (level: Level, r: WalkRecord, key: string, emit: boolean): { seen: Set<string>; size?: number } | undefined => {
    if (!isDir(r) || shallow || r.error !== undefined || !(emit || after!.startsWith(key)) || (skipDir !== undefined && skipDir(key))) return undefined;
    const id = r.kind === 'l' ? r.follow?.id : r.id;
    if (id !== undefined && level.seen.has(id)) return undefined;
    const size = r.kind === 'l' ? r.follow?.size : r.size;
    return { seen: id === undefined ? level.seen : new Set(level.seen).add(id), ...(size === undefined ? {} : { size }) };
  };
  /** Is directory record `r` one already on the walk's path (a symlink, or a bind mount, leading back up)? */
  const leadsBack = (level: Level, r: WalkRecord): boolean => {
    const id = r.kind === 'l' ? r.follow?.id : r.id;
    return id !== undefined && level.seen.has(id);
  };
  /**
   * Sub-directories read ahead: while the walk goes through one, the next one of its parent is
   * read (a thread or a server round trip the walk need not wait for). One per level at most.
   */
  const ahead = new Map<string, Promise<Awaited<ReturnType<typeof open>>>>();
  const readAhead = (level: Level): void => {
    for (let i = level.next; i < level.records.length; i++) {
      const r = level.records[i]!;
      if (!isDir(r)) continue;
      const name = r.name + '/';
      if (level.namePrefix !== '' && !name.startsWith(level.namePrefix)) continue;
      const key = level.dir + name;
      if (ahead.has(key)) return;
      const how = entry(level, r, key, after === undefined || compareKeys(key, after) > 0);
      if (how === undefined) continue;
      const read = open(key, '', how.seen, false, how.size);
      read.catch(() => {}); // seen when the walk gets there
      ahead.set(key, read);
      return;
    }
  };

  const stack: Level[] = [];
  try {
    const top = await open(startDir, prefix.slice(slash + 1), new Set(), follow && !shallow);
    if (top.id !== undefined) top.level.seen.add(top.id);
    stack.push(top.level);
    let page: Entry[] = [];
    while (stack.length > 0) {
      const level = stack[stack.length - 1]!;
      const r = level.records[level.next++];
      if (!r) {
        if (level.source) {
          signal?.throwIfAborted();
          level.records = await level.source.next();
          level.next = 0;
          if (level.records.length > 0) continue;
          const source = level.source;
          level.source = undefined;
          await source.close();
        }
        stack.pop();
        continue;
      }
      const dir = isDir(r);
      const name = dir ? r.name + '/' : r.name;
      if (level.namePrefix !== '' && !name.startsWith(level.namePrefix)) continue;
      const key = level.dir + name;
      const emit = after === undefined || compareKeys(key, after) > 0;
      // A directory before startAfter may still hold keys after it. One that could not be looked
      // at (an error record) is not entered; its entry carries the error.
      const how = dir ? entry(level, r, key, emit) : undefined;
      if (!emit && how === undefined) continue;
      // A directory that leads back to one above it is not entered: what lies under it was not listed.
      const looped = dir && how === undefined && !shallow && r.error === undefined && !(skipDir !== undefined && skipDir(key)) && leadsBack(level, r);
      // A directory is read before its own entry goes out, so that an unreadable one carries the error.
      let sub: Level | undefined;
      let unreadable: string | undefined;
      if (how !== undefined) {
        const early = ahead.get(key);
        ahead.delete(key);
        const pending = early ?? open(key, '', how.seen, false, how.size);
        readAhead(level);
        const read = await pending;
        sub = read.level;
        unreadable = read.error;
      }
      // Held on the stack before anything is yielded: a listing stopped at the yield closes it.
      if (sub) stack.push(sub);
      if (emit) {
        const f = follow && r.kind === 'l' && r.follow ? r.follow : null;
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
        const error = r.error ?? unreadable ?? (looped ? 'it leads back to a directory above it (a symlink loop), so what lies under it is not listed' : undefined);
        if (error !== undefined) e.error = error;
        page.push(e);
        if (page.length >= pageSize) {
          yield page;
          page = [];
        }
      }
    }
    if (page.length > 0) yield page;
  } finally {
    // Stopped early (or failed): what the open directories and those read ahead hold goes.
    for (const level of stack) await level.source?.close().catch(() => {});
    for (const read of ahead.values()) await read.then((r) => r.level.source?.close()).catch(() => {});
  }
}
