import { posix } from 'node:path';
import { Readable } from 'node:stream';
import type { Attributes, FileEntry, InputAttributes, SFTPWrapper, Stats } from 'ssh2';
import { sshError, type ResolvedSshTarget, type SshOptions } from '../../ssh/connect.js';
import { channelOpen, SftpPool } from '../../ssh/pool.js';
import type { Address } from '../address.js';
import { AlreadyExistsError, FatalError, FerryError, InTheWayError, NotEmptyError, NotFoundError, PermissionDeniedError, TransientError, UnsafePathError } from '../../errors.js';
import { abortable, abortablePages, checkDeclaredSize, destroyOnAbort, orAborted, throwIfAborted } from '../body.js';
import { parentKey, treeKeyProblem } from '../keys.js';
import { credentialEnv, secretEnv } from './env.js';
import type { Backend, OpenOptions } from '../registry.js';
import { isAbandoned, isTempName, tempName } from '../temp.js';
import type { Attrs, CopySource, Entry, Features, GetOptions, ListOptions, ObjectStore, PutOptions } from '../types.js';
import { listTree, specialKind, type DirListing, type NodeAttrs, type WalkRecord } from '../tree.js';
import { SftpReadStream, writeBody } from './io.js';

const PAGE = 1000;
/** Metadata requests in flight while listing one directory (readlink/stat of its symlinks). */
const LIST_DEPTH = 32;
/** SFTP version 3 carries times as unsigned 32-bit seconds: 1970-01-01 to 2106-02-07. */
const MTIME_RANGE = { min: 0, max: (2 ** 32 - 1) * 1000 } as const;
/**
 * Directories remembered as checked (no symlink on the way from the root). Past this many the set
 * starts over: memory never grows with the tree, and a directory is checked again at most once more.
 */
const CHECKED_MAX = 4096;
/** How long a failed write may spend removing its temporary over a new connection. */
const CLEANUP_MS = 10_000;

/** SFTP status codes (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks). */
const STATUS = {
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  BAD_MESSAGE: 5,
  NO_CONNECTION: 6,
  CONNECTION_LOST: 7,
  OP_UNSUPPORTED: 8,
} as const;

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;

type Kind = 'd' | 'l' | 'f' | 'o';

function kindOf(mode: number): Kind {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return 'd';
    case S_IFLNK:
      return 'l';
    case S_IFREG:
      return 'f';
    default:
      return 'o';
  }
}

function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** The ferry error for a failed SFTP request; `what` names the operation and the remote path. */
export function sftpError(err: unknown, what: string, target: Pick<ResolvedSshTarget, 'user' | 'host' | 'port'>): FerryError {
  if (err instanceof FerryError) return err;
  const message = (err as Error | undefined)?.message ?? String(err);
  switch (statusOf(err)) {
    case STATUS.NO_SUCH_FILE:
      return new NotFoundError(`${what}: no such file or directory (NO_SUCH_FILE)`, { cause: err });
    case STATUS.PERMISSION_DENIED:
      return new PermissionDeniedError(`${what}: permission denied (PERMISSION_DENIED)`, { cause: err });
    case STATUS.NO_CONNECTION:
    case STATUS.CONNECTION_LOST:
      return new TransientError(`${what}: connection lost (${message})`, { cause: err });
    case STATUS.OP_UNSUPPORTED:
      return new FatalError(`${what}: the server does not support this operation (OP_UNSUPPORTED)`, { cause: err });
    case STATUS.FAILURE:
      return new FatalError(`${what}: failed (${message}; SFTP FAILURE)`, { cause: err });
    case STATUS.BAD_MESSAGE:
      return new FatalError(`${what}: the server rejected the request (${message}; SFTP BAD_MESSAGE)`, { cause: err });
    default:
      break;
  }
  // ssh2 fails every request in flight with 'No response from server' when the channel or the
  // connection goes away.
  if (/No response from server|Not connected|channel.*clos|Channel not open/i.test(message)) {
    return new TransientError(`${what}: connection lost (${message})`, { cause: err });
  }
  const mapped = sshError(err, target, what);
  return mapped;
}

/** One SFTP request as a promise; a channel that has closed fails at once (ssh2 would wait forever). */
function call<T>(sftp: SFTPWrapper, fn: (done: (err: Error | undefined | null, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (!channelOpen(sftp)) return reject(Object.assign(new Error('the SFTP channel is closed'), { code: STATUS.CONNECTION_LOST }));
    try {
      fn((err, value) => (err ? reject(err) : resolve(value as T)));
    } catch (err) {
      reject(err);
    }
  });
}

/** lstat, or undefined when nothing is there. */
async function lstatOrNone(sftp: SFTPWrapper, path: string): Promise<Stats | undefined> {
  try {
    return await call<Stats>(sftp, (done) => sftp.lstat(path, done));
  } catch (err) {
    if (statusOf(err) === STATUS.NO_SUCH_FILE) return undefined;
    throw err;
  }
}

function toEntry(key: string, kind: Kind, attrs: Attributes): Entry {
  const e: Entry = {
    key,
    size: kind === 'd' ? 0 : attrs.size,
    mtime: attrs.mtime * 1000,
    isDir: kind === 'd',
    mode: attrs.mode & 0o7777,
    uid: attrs.uid,
    gid: attrs.gid,
  };
  if (kind === 'o') e.special = specialKind(attrs.mode);
  return e;
}

/** A listed node as the tree walk sees it. */
function nodeOf(attrs: Attributes): NodeAttrs {
  const kind = kindOf(attrs.mode);
  const n: NodeAttrs = { kind, size: kind === 'd' ? 0 : attrs.size, mtime: attrs.mtime * 1000, mode: attrs.mode & 0o7777, uid: attrs.uid, gid: attrs.gid };
  if (kind === 'o') n.special = specialKind(attrs.mode);
  return n;
}

/** What a non-regular file is, for messages. */
function describeKind(mode: number): string {
  const kind = kindOf(mode);
  return kind === 'd' ? 'a directory' : kind === 'l' ? 'a symlink' : `a ${specialKind(mode)}`;
}

/** A path without its trailing '/' (the root '/' stays). */
function bare(path: string): string {
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
}

/** The directory part of a key or prefix ('a/b/c' → 'a/b/'). */
function dirPart(key: string): string {
  return key.slice(0, key.lastIndexOf('/') + 1);
}

/** An SFTP v3 time (whole seconds) for an mtime in ms, clamped to what the protocol carries. */
function sftpSeconds(mtime: number): number {
  return Math.floor(Math.min(MTIME_RANGE.max, Math.max(MTIME_RANGE.min, mtime)) / 1000);
}

async function mapLimit<T, R>(items: T[], n: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (i < items.length) {
        const k = i++;
        out[k] = await fn(items[k]!);
      }
    }),
  );
  return out;
}

export interface SftpStoreOptions {
  inplace?: boolean;
  /** SSH settings (tests point these at temporary files). */
  ssh?: SshOptions;
  /** SFTP channels on the one connection (default from the caller's concurrency). */
  channels?: number;
}

/** A directory below the root: a real directory ('ok'), or it or a parent is missing or a file ('absent'). */
type DirState = 'ok' | 'absent';

/**
 * A directory on an SSH server, over SFTP. Keys are paths relative to the directory; directories
 * are keys ending in '/'. Behaves like the file backend: each directory is read whole, sorted with
 * '/' appended to sub-directory names, and held only while it is walked; writes go to a temporary
 * name (temp.ts) renamed into place.
 *
 * The tree store safety contract:
 * - a key that would not name a path inside the root ('..', '/x', 'a//b') is refused before any
 *   request (UnsafePathError);
 * - nothing is written, removed or changed through a symlink below the root: the directories on the
 *   way to a key are checked once each (lstat) and remembered in a bounded set, so a write into a
 *   known directory costs no request; the root itself may be a link;
 * - an empty directory where a file goes, or a file where a directory goes, is replaced (the name
 *   changed type on the source, as rsync does); a directory with content is in the way (InTheWayError);
 * - FIFOs, sockets and devices are listed as `special` and never opened: opening a FIFO would block
 *   the server's sftp-server until a writer came;
 * - mtimes are clamped to SFTP v3's unsigned 32-bit seconds;
 * - temporaries of writers that are gone are removed by listings that ask for it (`reclaim`).
 */
export class SftpStore implements ObjectStore {
  readonly scheme = 'sftp';
  readonly description: string;
  readonly features: Features;
  readonly #pool: SftpPool;
  readonly #target: ResolvedSshTarget;
  readonly #bucket: string;
  readonly #inplace: boolean;
  readonly #where: string;
  #root: Promise<string> | undefined;
  /** Directory keys known to be real directories, with none but real ones above (bounded: CHECKED_MAX). */
  readonly #checked = new Set<string>();
  /** Checks in flight, so that parallel writes into one new directory share one round trip. */
  readonly #checking = new Map<string, Promise<DirState>>();

  constructor(bucket: string, pool: SftpPool, target: ResolvedSshTarget, options: { inplace?: boolean } = {}) {
    this.#pool = pool;
    this.#target = target;
    this.#bucket = bucket;
    this.#inplace = options.inplace ?? false;
    const host = target.host.includes(':') ? `[${target.host}]` : target.host;
    this.#where = `${target.user}@${host}:${target.port}`;
    // A relative directory is under the login's home: written /~/dir/ as curl and OpenSSH's sftp do.
    const shown = bucket.startsWith('/') ? bucket : '/~/' + bucket.replace(/^~\/?/, '');
    this.description = `sftp://${this.#where}${shown}`;
    this.features = {
      copy: { scope: this.#scope() },
      attrs: { mode: true, owner: target.user === 'root', mtime: true, mtimeRange: { ...MTIME_RANGE } },
      symlinks: true,
      dirs: true,
      inplace: true,
      // SFTP v3's own rename, which refuses an existing target (OpenSSH: link + unlink, atomic).
      exclusiveCreate: true,
    };
  }

  #scope(): string {
    return `sftp:${this.#where}`;
  }

  #what(op: string, path: string): string {
    return `sftp ${op} ${this.#where}${path}`;
  }

  #error(err: unknown, op: string, path: string): FerryError {
    return sftpError(err, this.#what(op, path), this.#target);
  }

  /** Refuse a key that would not name a path inside the root, before any request. */
  #refuse(op: string, key: string): void {
    const why = treeKeyProblem(key);
    if (why !== undefined) throw new UnsafePathError(`sftp ${op} in ${this.description}: refusing the key ${JSON.stringify(key)}: ${why}`);
  }

  #linkError(linkPath: string, key: string): UnsafePathError {
    return new UnsafePathError(
      `sftp ${this.#where}${linkPath} is a symlink: ferry does not write through links inside the destination (key ${JSON.stringify(key)}); replace the link with a directory, or name the link's target as the destination`,
    );
  }

  /** The absolute directory the keys are relative to, ending in '/'. Relative ones are under the login's home. */
  #rootPath(): Promise<string> {
    if (!this.#root) {
      const b = this.#bucket;
      const rel = b.startsWith('/~/') ? b.slice(3) : b.startsWith('~/') ? b.slice(2) : b === '~' || b === '/~' ? '' : b.startsWith('/') ? undefined : b;
      if (rel === undefined) this.#root = Promise.resolve(b);
      else {
        const p = this.#pool
          .withSftp((sftp) => call<string>(sftp, (done) => sftp.realpath('.', done)))
          .then((home) => {
            const h = home.endsWith('/') ? home : home + '/';
            return rel === '' ? h : h + rel + (rel.endsWith('/') ? '' : '/');
          });
        this.#root = p;
        // Not cached when it fails (the next call tries again).
        p.catch(() => {
          if (this.#root === p) this.#root = undefined;
        });
      }
    }
    return this.#root;
  }

  async #path(key: string): Promise<string> {
    return (await this.#rootPath()) + key;
  }

  async #run<T>(op: string, key: string, fn: (sftp: SFTPWrapper, path: string) => Promise<T>, signal?: AbortSignal): Promise<T> {
    this.#refuse(op, key);
    let path = this.#bucket + key;
    try {
      throwIfAborted(signal, this.#what(op, path));
      path = await this.#path(key);
      return await this.#pool.withSftp((sftp) => fn(sftp, path), signal);
    } catch (err) {
      throw orAborted(this.#error(err, op, path), signal, this.#what(op, path));
    }
  }

  /** `dir` is a real directory, and so is every directory above it (checked, or made, before it). */
  #remember(dir: string): void {
    if (this.#checked.size >= CHECKED_MAX) this.#checked.clear();
    this.#checked.add(dir);
  }

  /** Forget `dir` and what is under it (the store removed it). */
  #forget(dir: string): void {
    for (const d of this.#checked) if (d.startsWith(dir)) this.#checked.delete(d);
  }

  /**
   * Whether `dir` (a key ending in '/', '' for the root) can be written in without passing a symlink
   * below the root: 'ok' when every directory on the way, and `dir` itself, is a real directory;
   * 'absent' when one of them is missing or a file (nothing under it exists; a writer makes it).
   * Throws UnsafePathError at a link. Directories found real are remembered, so a write into a
   * known directory costs no request; a new one costs one lstat.
   */
  #checkDir(sftp: SFTPWrapper, dir: string): Promise<DirState> | DirState {
    if (dir === '' || this.#checked.has(dir)) return 'ok';
    let p = this.#checking.get(dir);
    if (!p) {
      p = this.#checkDirNow(sftp, dir).finally(() => this.#checking.delete(dir));
      this.#checking.set(dir, p);
    }
    return p;
  }

  async #checkDirNow(sftp: SFTPWrapper, dir: string): Promise<DirState> {
    // lstat every directory below the deepest one known real, all at once (pipelined on the
    // channel: about one round trip), and judge them from the top: what lies below a link or a
    // file was looked at through it and says nothing. lstat, not realpath: SFTP's REALPATH only
    // promises a canonical name, and a server that does not resolve links there would hide one.
    const chain: string[] = [];
    for (let d = dir; d !== '' && !this.#checked.has(d); d = parentKey(d)) chain.unshift(d);
    const root = await this.#rootPath();
    const looks = await Promise.allSettled(chain.map((d) => lstatOrNone(sftp, root + d.slice(0, -1))));
    for (let i = 0; i < chain.length; i++) {
      const look = looks[i]!;
      if (look.status === 'rejected') throw look.reason;
      const st = look.value;
      if (!st) return 'absent';
      const kind = kindOf(st.mode);
      if (kind === 'l') throw this.#linkError(root + chain[i]!.slice(0, -1), chain[i]!);
      if (kind !== 'd') return 'absent';
      this.#remember(chain[i]!);
    }
    return 'ok';
  }

  /** Is a directory on the way to directory key `dir`, or `dir` itself, a symlink? */
  async #linkOnWay(sftp: SFTPWrapper, dir: string): Promise<boolean> {
    try {
      await this.#checkDir(sftp, dir);
      return false;
    } catch (err) {
      // Anything else is for the operation itself to report.
      return err instanceof UnsafePathError;
    }
  }

  /**
   * Make directory `dir` (a key ending in '/') and its missing parents. A file where a directory
   * must go is removed (the name is a directory on the source now); a link there is refused. The
   * caller has checked the directories that exist (#checkDir); above the root, links are followed.
   */
  async #makeDir(sftp: SFTPWrapper, dir: string, mode?: number): Promise<void> {
    const root = await this.#rootPath();
    if (dir === '') return this.#mkdirp(sftp, bare(root), mode);
    const path = root + dir.slice(0, -1);
    const attrs: InputAttributes = mode === undefined ? {} : { mode };
    const mk = (): Promise<void> => call<void>(sftp, (done) => sftp.mkdir(path, attrs, done));
    try {
      await mk();
    } catch (first) {
      let err = first;
      if (statusOf(err) === STATUS.NO_SUCH_FILE) {
        await this.#makeDir(sftp, parentKey(dir));
        try {
          await mk();
          err = undefined;
        } catch (again) {
          err = again;
        }
      }
      if (err !== undefined) await this.#existingDir(sftp, dir, path, err, mk);
    }
    this.#remember(dir);
  }

  /** mkdir failed with `err`: fine when a directory is there (OpenSSH answers FAILURE for EEXIST); a file there is replaced. */
  async #existingDir(sftp: SFTPWrapper, dir: string, path: string, err: unknown, mk: () => Promise<void>): Promise<void> {
    const status = statusOf(err);
    if (status !== STATUS.FAILURE && status !== STATUS.PERMISSION_DENIED) throw err;
    const st = await lstatOrNone(sftp, path);
    if (!st) throw err;
    switch (kindOf(st.mode)) {
      case 'd':
        return;
      case 'l':
        throw this.#linkError(path, dir);
      default:
        // A file (or FIFO) whose name is a directory on the source now: replaced, as rsync does.
        await call<void>(sftp, (done) => sftp.unlink(path, done));
        try {
          await mk();
        } catch (again) {
          // Another writer made it first.
          if (kindOf((await lstatOrNone(sftp, path))?.mode ?? 0) !== 'd') throw again;
        }
    }
  }

  /** mkdir -p of an absolute path: for the root itself and what is above it (links followed there). */
  async #mkdirp(sftp: SFTPWrapper, dir: string, mode?: number): Promise<void> {
    const attrs: InputAttributes = mode === undefined ? {} : { mode };
    try {
      await call<void>(sftp, (done) => sftp.mkdir(dir, attrs, done));
      return;
    } catch (err) {
      const status = statusOf(err);
      if (status === STATUS.NO_SUCH_FILE && dir !== '/' && posix.dirname(dir) !== dir) {
        await this.#mkdirp(sftp, posix.dirname(dir));
        try {
          await call<void>(sftp, (done) => sftp.mkdir(dir, attrs, done));
          return;
        } catch (again) {
          if (statusOf(again) !== STATUS.FAILURE) throw again;
        }
      } else if (status !== STATUS.FAILURE && status !== STATUS.PERMISSION_DENIED) throw err;
      // FAILURE is what OpenSSH answers when the path exists (EEXIST): fine if it is a directory.
      let st: Stats;
      try {
        st = await call<Stats>(sftp, (done) => sftp.stat(dir, done));
      } catch {
        throw err;
      }
      if (kindOf(st.mode) !== 'd') throw new FatalError(`${this.#what('mkdir', dir)}: exists and is not a directory`);
    }
  }

  /**
   * Ready the directory of the file `key` and say where its bytes go: a temporary name beside it,
   * or (inplace) the path itself, which must then be neither a link nor a directory.
   */
  async #prepareWrite(sftp: SFTPWrapper, op: string, key: string, path: string, inplace = this.#inplace): Promise<string> {
    const dir = parentKey(key);
    if ((await this.#checkDir(sftp, dir)) === 'absent') await this.#makeDir(sftp, dir);
    if (!inplace) return this.#tmpPath(path);
    const st = await lstatOrNone(sftp, path);
    if (st) {
      switch (kindOf(st.mode)) {
        case 'l':
          throw new UnsafePathError(
            `${this.#what(op, path)} is a symlink: ferry does not write through links inside the destination (key ${JSON.stringify(key)}; --inplace writes into the file itself)`,
          );
        case 'd':
          await this.#removeEmptyDir(sftp, key, path);
          break;
        case 'o':
          // Opening a FIFO for writing would block until a reader came: replace it, as a rename would.
          await call<void>(sftp, (done) => sftp.unlink(path, done));
          break;
        default:
          break;
      }
    }
    return path;
  }

  /** An empty directory where the file `key` must go is removed; one with content is in the way. */
  async #removeEmptyDir(sftp: SFTPWrapper, key: string, path: string): Promise<void> {
    try {
      await call<void>(sftp, (done) => sftp.rmdir(path, done));
    } catch (err) {
      if (statusOf(err) === STATUS.FAILURE)
        throw new InTheWayError(
          `${this.#what('write', path)}: the directory ${JSON.stringify(key + '/')} has content and stands where the file ${JSON.stringify(key)} must go; ferry does not remove it (move or delete it, or exclude the key)`,
        );
      if (statusOf(err) !== STATUS.NO_SUCH_FILE) throw err;
    }
    this.#forget(key + '/');
  }

  /** Rename the finished temporary onto `key`, replacing an empty directory there. */
  async #renameInto(sftp: SFTPWrapper, from: string, path: string, key: string): Promise<void> {
    try {
      await this.#rename(sftp, from, path);
    } catch (err) {
      if (statusOf(err) !== STATUS.FAILURE) throw err;
      const st = await lstatOrNone(sftp, path);
      if (!st || kindOf(st.mode) !== 'd') throw err;
      await this.#removeEmptyDir(sftp, key, path);
      await this.#rename(sftp, from, path);
    }
  }

  /**
   * Remove a temporary after a failed write, best effort. When the channel is gone (a dropped
   * connection), the pool connects again, if it can within CLEANUP_MS; what is left anyway is
   * reclaimed by a later run's listing.
   */
  async #removeTemp(sftp: SFTPWrapper, path: string): Promise<void> {
    if (channelOpen(sftp)) {
      try {
        await call<void>(sftp, (done) => sftp.unlink(path, done));
        return;
      } catch {
        if (channelOpen(sftp)) return;
      }
    }
    await this.#pool.withSftp((s) => call<void>(s, (done) => s.unlink(path, done)), AbortSignal.timeout(CLEANUP_MS)).catch(() => {});
  }

  /**
   * One directory's records for the tree walk. When following links, directories carry their real
   * path as identity, so a symlink loop is entered at most once per path.
   */
  async #readDir(sftp: SFTPWrapper, dir: string, path: string, follow: boolean, reclaim: ListOptions['reclaim']): Promise<DirListing> {
    let list: FileEntry[];
    try {
      list = await call<FileEntry[]>(sftp, (done) => sftp.readdir(path, done));
    } catch (err) {
      // A missing directory (or a file where a directory was expected) lists nothing, as on disk.
      if (statusOf(err) === STATUS.NO_SUCH_FILE) return { records: [] };
      throw err;
    }
    const real = follow ? bare(await call<string>(sftp, (done) => sftp.realpath(bare(path), done)).catch(() => bare(path))) : '';
    const records: WalkRecord[] = [];
    const links: WalkRecord[] = [];
    const temps: FileEntry[] = [];
    for (const f of list) {
      if (f.filename === '.' || f.filename === '..') continue;
      if (isTempName(f.filename)) {
        if (reclaim) temps.push(f);
        continue;
      }
      const r: WalkRecord = { name: f.filename, ...nodeOf(f.attrs) };
      if (follow && r.kind === 'd') r.id = `${real === '/' ? '' : real}/${r.name}`;
      records.push(r);
      if (r.kind === 'l') links.push(r);
    }
    if (reclaim && temps.length > 0) await this.#reclaim(sftp, dir, path, temps, reclaim);
    await mapLimit(links, LIST_DEPTH, async (r) => {
      const p = path + r.name;
      r.target = await call<string>(sftp, (done) => sftp.readlink(p, done)).catch(() => '');
      if (!follow) return;
      const st = await call<Stats>(sftp, (done) => sftp.stat(p, done)).catch(() => null);
      r.follow = st ? nodeOf(st) : null;
      if (r.follow?.kind === 'd') r.follow.id = bare(await call<string>(sftp, (done) => sftp.realpath(p, done)).catch(() => p));
    });
    return follow ? { records, id: real } : { records };
  }

  /**
   * Remove the temporaries of writers that are gone (temp.ts) and report each. Only in a directory
   * of this tree: a listing that follows links may be reading someone else's.
   */
  async #reclaim(sftp: SFTPWrapper, dir: string, path: string, temps: FileEntry[], report: (path: string, bytes: number) => void): Promise<void> {
    const gone = temps.filter((f) => {
      const kind = kindOf(f.attrs.mode);
      return (kind === 'f' || kind === 'l') && isAbandoned(f.filename, f.attrs.mtime * 1000);
    });
    if (gone.length === 0) return;
    try {
      if ((await this.#checkDir(sftp, dir)) !== 'ok') return;
    } catch (err) {
      if (err instanceof UnsafePathError) return;
      throw err;
    }
    await mapLimit(gone, LIST_DEPTH, async (f) => {
      try {
        await call<void>(sftp, (done) => sftp.unlink(path + f.filename, done));
      } catch {
        // Gone already (another run reclaimed it), or not ours to remove: left as it is.
        return;
      }
      report(`${this.description}${dir}${f.filename}`, kindOf(f.attrs.mode) === 'f' ? f.attrs.size : 0);
    });
  }

  async *list(options: ListOptions = {}): AsyncIterable<Entry[]> {
    if (options.prefix !== undefined) this.#refuse('list', dirPart(options.prefix));
    if (options.startAfter !== undefined) this.#refuse('list', dirPart(options.startAfter));
    // Without following links, a symlinked directory is one entry with nothing under it, as the
    // walk from the root sees it: a prefix below it names no keys (the server would follow it).
    const start = dirPart(options.prefix ?? '');
    if (!options.followSymlinks && start !== '' && (await this.#run('list', start, (sftp) => this.#linkOnWay(sftp, start), options.signal))) return;
    const pages = listTree(options, PAGE, (req, follow) =>
      this.#run('list', req.read, (sftp, path) => this.#readDir(sftp, req.read, path, follow, options.reclaim), options.signal),
    );
    yield* abortablePages(pages, options.signal, this.#what('list', this.#bucket + (options.prefix ?? '')));
  }

  async head(key: string, options: { followSymlinks?: boolean; signal?: AbortSignal } = {}): Promise<Entry> {
    return this.#run(
      'stat',
      key,
      async (sftp, path) => {
        const p = bare(path);
        // Without following links, what lies beyond a symlinked directory is not in this store (the listing's view).
        if (!options.followSymlinks && (await this.#linkOnWay(sftp, parentKey(key)))) throw new NotFoundError(`${this.#what('stat', path)}: a symlink on its way is not followed`);
        const st = await call<Stats>(sftp, (done) => (options.followSymlinks ? sftp.stat(p, done) : sftp.lstat(p, done)));
        const kind = kindOf(st.mode);
        if (key.endsWith('/') && kind !== 'd') throw new NotFoundError(`${this.#what('stat', path)}: not a directory`);
        const e = toEntry(key, kind, st);
        if (kind === 'l') {
          e.isSymlink = true;
          e.target = await call<string>(sftp, (done) => sftp.readlink(p, done));
        }
        return e;
      },
      options.signal,
    );
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    let path = this.#bucket + key;
    let lease: { sftp: SFTPWrapper; release: () => void } | undefined;
    try {
      this.#refuse('read', key);
      throwIfAborted(options.signal, this.#what('read', path));
      path = await this.#path(key);
      lease = await this.#pool.lease(options.signal);
      const { sftp } = lease;
      // Look before opening: opening a FIFO blocks the server's sftp-server until a writer comes.
      const st = await call<Stats>(sftp, (done) => sftp.stat(path, done));
      if (kindOf(st.mode) !== 'f') throw new FatalError(`${this.#what('read', path)}: ${describeKind(st.mode)}, not a regular file; ferry reads only regular files`);
      const handle = await call<Buffer>(sftp, (done) => sftp.open(path, 'r', done));
      const start = options.offset ?? 0;
      if (options.length === 0) {
        await call<void>(sftp, (done) => sftp.close(handle, done)).catch(() => {});
        lease.release();
        lease = undefined;
        return Readable.from([]);
      }
      const l = lease;
      const what = this.#what('read', path);
      const stream = new SftpReadStream(sftp, handle, {
        start,
        ...(options.length === undefined ? {} : { end: start + options.length }),
        size: st.size,
        mapError: (err) => sftpError(err, what, this.#target),
        onClose: () => l.release(),
      });
      return abortable(stream, options.signal, what);
    } catch (err) {
      lease?.release();
      throw orAborted(this.#error(err, 'open', path), options.signal, this.#what('read', path));
    }
  }

  #tmpPath(path: string): string {
    return `${posix.dirname(path)}/${tempName()}`;
  }

  /** Open `path` for writing; a directory that went missing since it was checked is made again. */
  async #openForWrite(sftp: SFTPWrapper, path: string, dir: string): Promise<Buffer> {
    try {
      return await call<Buffer>(sftp, (done) => sftp.open(path, 'w', done));
    } catch (err) {
      if (statusOf(err) !== STATUS.NO_SUCH_FILE) throw err;
      await this.#makeDir(sftp, dir);
      return call<Buffer>(sftp, (done) => sftp.open(path, 'w', done));
    }
  }

  /**
   * Give a finished temporary its name only if nothing has that name (`ifAbsent`), with SFTP v3's
   * plain rename, never the posix-rename extension, which replaces. The protocol says that rename
   * fails when the target exists; OpenSSH's sftp-server does it as link(2) + unlink(2), so that of
   * racing writers exactly one gets the name (on a file system without hard links it falls back to
   * a check and a rename, which is not atomic).
   */
  async #renameIfAbsent(sftp: SFTPWrapper, from: string, path: string, key: string): Promise<void> {
    try {
      await call<void>(sftp, (done) => sftp.rename(from, path, done));
    } catch (err) {
      // OpenSSH answers EEXIST as FAILURE: anything at the name (a directory, a link) counts as there.
      if (statusOf(err) === STATUS.FAILURE && (await lstatOrNone(sftp, path))) {
        throw new AlreadyExistsError(`${this.#what('write', path)}: ${JSON.stringify(key)} exists already`, { cause: err });
      }
      throw err;
    }
  }

  /** Rename over an existing file: POSIX rename where the server has it, else remove + rename. */
  async #rename(sftp: SFTPWrapper, from: string, to: string): Promise<void> {
    let posixRename = true;
    try {
      await call<void>(sftp, (done) => sftp.ext_openssh_rename(from, to, done));
      return;
    } catch (err) {
      if (!/does not support/i.test((err as Error).message ?? '')) throw err;
      posixRename = false;
    }
    if (!posixRename) {
      try {
        await call<void>(sftp, (done) => sftp.rename(from, to, done));
      } catch (err) {
        if (statusOf(err) !== STATUS.FAILURE) throw err;
        await call<void>(sftp, (done) => sftp.unlink(to, done)).catch(() => {});
        await call<void>(sftp, (done) => sftp.rename(from, to, done));
      }
    }
  }

  async put(key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    if (key.endsWith('/')) {
      if (!Buffer.isBuffer(body)) body.resume();
      return this.mkdir(key, options.mode === undefined ? {} : { mode: options.mode });
    }
    const what = this.#what('write', this.#bucket + key);
    const unhook = destroyOnAbort(body, options.signal, what);
    try {
      this.#refuse('write', key);
      if (Buffer.isBuffer(body)) checkDeclaredSize(body, options.size, what);
      await this.#write(key, body, options);
    } catch (err) {
      if (!Buffer.isBuffer(body)) body.destroy();
      throw orAborted(err, options.signal, what);
    } finally {
      unhook();
    }
  }

  /**
   * Write to a temporary (removed on any failure) and rename it into place; in place, to the file
   * itself. A conditional create (`ifAbsent`) always goes through a temporary.
   */
  async #write(key: string, body: Readable | Buffer, options: PutOptions): Promise<void> {
    await this.#run(
      'write',
      key,
      async (sftp, path) => {
        let target = '';
        let handle: Buffer | undefined;
        try {
          target = await this.#prepareWrite(sftp, 'write', key, path, this.#inplace && !options.ifAbsent);
          handle = await this.#openForWrite(sftp, target, parentKey(key));
          await writeBody(sftp, handle, body, {
            ...(options.signal ? { signal: options.signal } : {}),
            ...(options.size === undefined ? {} : { size: options.size }),
            what: this.#what('write', path),
          });
          const h = handle;
          const attrs = this.#attrs(options);
          if (attrs) await call<void>(sftp, (done) => sftp.fsetstat(h, attrs, done));
          handle = undefined;
          await call<void>(sftp, (done) => sftp.close(h, done));
          if (options.ifAbsent) await this.#renameIfAbsent(sftp, target, path, key);
          else if (target !== path) await this.#renameInto(sftp, target, path, key);
        } catch (err) {
          if (!Buffer.isBuffer(body)) body.destroy();
          const h = handle;
          if (h) await call<void>(sftp, (done) => sftp.close(h, done)).catch(() => {});
          if (target !== '' && target !== path) await this.#removeTemp(sftp, target);
          throw err;
        }
      },
      options.signal,
    );
  }

  #attrs(o: { mode?: number; mtime?: number }): InputAttributes | undefined {
    if (o.mode === undefined && o.mtime === undefined) return undefined;
    const a: InputAttributes = {};
    if (o.mode !== undefined) a.mode = o.mode;
    if (o.mtime !== undefined) {
      a.mtime = sftpSeconds(o.mtime);
      a.atime = a.mtime;
    }
    return a;
  }

  /** Deleting a symlink removes the link. A file key whose name is a directory now, or a directory key whose name is a file, is gone already. */
  async delete(key: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#run(
      'delete',
      key,
      async (sftp, path) => {
        if ((await this.#checkDir(sftp, parentKey(key))) === 'absent') return;
        try {
          if (key.endsWith('/')) {
            await call<void>(sftp, (done) => sftp.rmdir(bare(path), done));
            this.#forget(key);
          } else await call<void>(sftp, (done) => sftp.unlink(path, done));
        } catch (err) {
          if (statusOf(err) === STATUS.NO_SUCH_FILE) return;
          // rmdir of a directory with entries: ENOTEMPTY, which OpenSSH answers as FAILURE.
          if (key.endsWith('/') && statusOf(err) === STATUS.FAILURE && (await this.#hasEntries(sftp, bare(path)))) {
            throw new NotEmptyError(`${this.#what('delete', path)}: the directory is not empty`, { cause: err });
          }
          // unlink of a directory: EISDIR, which OpenSSH answers as FAILURE.
          if (!key.endsWith('/') && statusOf(err) === STATUS.FAILURE && kindOf((await lstatOrNone(sftp, path))?.mode ?? 0) === 'd') return;
          throw err;
        }
      },
      options.signal,
    );
  }

  /** True when `path` is a directory (not a link to one) that holds at least one entry. */
  async #hasEntries(sftp: SFTPWrapper, path: string): Promise<boolean> {
    if (kindOf((await lstatOrNone(sftp, path))?.mode ?? 0) !== 'd') return false;
    const handle = await call<Buffer>(sftp, (done) => sftp.opendir(path, done));
    try {
      const names = await call<FileEntry[] | false>(sftp, (done) => sftp.readdir(handle, done)).catch((err: unknown) => {
        if (statusOf(err) === STATUS.EOF) return false as const;
        throw err;
      });
      return names !== false && names.some((f) => f.filename !== '.' && f.filename !== '..');
    } finally {
      await call<void>(sftp, (done) => sftp.close(handle, done)).catch(() => {});
    }
  }

  async mkdir(key: string, options: { mode?: number } = {}): Promise<void> {
    await this.#run('mkdir', key, async (sftp) => {
      const dir = key === '' || key.endsWith('/') ? key : key + '/';
      await this.#checkDir(sftp, parentKey(dir));
      await this.#makeDir(sftp, dir, options.mode);
    });
  }

  async symlink(key: string, target: string): Promise<void> {
    await this.#run('symlink', key, async (sftp, path) => {
      const dir = parentKey(key);
      if ((await this.#checkDir(sftp, dir)) === 'absent') await this.#makeDir(sftp, dir);
      const tmp = this.#tmpPath(path);
      try {
        try {
          await call<void>(sftp, (done) => sftp.symlink(target, tmp, done));
        } catch (err) {
          if (statusOf(err) !== STATUS.NO_SUCH_FILE) throw err;
          await this.#makeDir(sftp, dir);
          await call<void>(sftp, (done) => sftp.symlink(target, tmp, done));
        }
        await this.#renameInto(sftp, tmp, path, key);
      } catch (err) {
        await this.#removeTemp(sftp, tmp);
        throw err;
      }
    });
  }

  /** Without `isSymlink`, a key that is a link is refused: SFTP's setstat would change what it points at. */
  async setAttrs(key: string, attrs: Attrs, options: { isSymlink?: boolean } = {}): Promise<void> {
    await this.#run('setstat', key, async (sftp, path) => {
      const p = bare(path);
      // The root may be a link (the user named it); below it, nothing is changed through one.
      if (key !== '') {
        if ((await this.#checkDir(sftp, parentKey(key))) === 'absent') throw new NotFoundError(`${this.#what('setstat', path)}: no such file or directory`);
        if (!options.isSymlink) {
          const st = await call<Stats>(sftp, (done) => sftp.lstat(p, done));
          if (kindOf(st.mode) === 'l')
            throw new UnsafePathError(`${this.#what('setstat', p)} is a symlink: ferry does not change attributes through links inside the destination (key ${JSON.stringify(key)})`);
        }
      }
      // chown before chmod: chown clears setuid/setgid bits.
      if (attrs.uid !== undefined && attrs.gid !== undefined && this.features.attrs?.owner) {
        const owner = { uid: attrs.uid, gid: attrs.gid };
        if (options.isSymlink) await this.#lsetstat(sftp, p, owner);
        else await call<void>(sftp, (done) => sftp.setstat(p, owner, done));
      }
      if (attrs.mode !== undefined && !options.isSymlink) await call<void>(sftp, (done) => sftp.setstat(p, { mode: attrs.mode! }, done));
      if (attrs.mtime !== undefined) {
        const t = sftpSeconds(attrs.mtime);
        if (options.isSymlink) await this.#lsetstat(sftp, p, { atime: t, mtime: t });
        else await call<void>(sftp, (done) => sftp.setstat(p, { atime: t, mtime: t }, done));
      }
    });
  }

  /** setstat on the link itself (lsetstat@openssh.com); a server without it leaves links as they are. */
  async #lsetstat(sftp: SFTPWrapper, path: string, attrs: InputAttributes): Promise<void> {
    try {
      await call<void>(sftp, (done) => sftp.ext_openssh_lsetstat(path, attrs, done));
    } catch (err) {
      if (/does not support/i.test((err as Error).message ?? '')) return;
      throw err;
    }
  }

  copySource(key: string): CopySource {
    this.#refuse('copy', key);
    return { scope: this.#scope(), location: { bucket: this.#bucket, key } };
  }

  /**
   * Copy on the server: the copy-data extension (OpenSSH >= 9.0) moves no bytes over the network;
   * without it the bytes make a round trip through this machine on one channel.
   */
  async copyFrom(key: string, source: CopySource, options: PutOptions & { size: number } = { size: 0 }): Promise<void> {
    const loc = source.location as { bucket: string; key: string };
    if (source.scope !== this.#scope()) throw new FatalError(`sftp copy: source scope ${source.scope} is not ${this.#scope()}`);
    this.#refuse('copy', loc.key);
    const from = loc.bucket === this.#bucket ? this.#path(loc.key) : new SftpStore(loc.bucket, this.#pool, this.#target).#path(loc.key);
    let srcPath = loc.bucket + loc.key;
    await this.#run(
      'copy',
      key,
      async (sftp, path) => {
        srcPath = await from;
        let target = '';
        let src: Buffer | undefined;
        let dst: Buffer | undefined;
        try {
          try {
            // Look before opening: opening a FIFO blocks the server until a writer comes.
            const st = await call<Stats>(sftp, (done) => sftp.stat(srcPath, done));
            if (kindOf(st.mode) !== 'f') throw new FatalError(`${this.#what('read', srcPath)}: ${describeKind(st.mode)}, not a regular file; ferry reads only regular files`);
            src = await call<Buffer>(sftp, (done) => sftp.open(srcPath, 'r', done));
          } catch (err) {
            throw this.#error(err, 'open', srcPath);
          }
          target = await this.#prepareWrite(sftp, 'copy', key, path);
          dst = await this.#openForWrite(sftp, target, parentKey(key));
          const s = src;
          const d = dst;
          let copied = false;
          try {
            await call<void>(sftp, (done) => sftp.ext_copy_data(s, 0, 0, d, 0, done));
            copied = true;
          } catch (err) {
            if (!/does not support/i.test((err as Error).message ?? '')) throw err;
          }
          if (!copied) {
            const reader = new SftpReadStream(sftp, s, { start: 0, mapError: (e) => e as Error, onClose: () => {} });
            src = undefined; // the reader closes it
            await writeBody(sftp, d, reader, options.signal ? { signal: options.signal } : {});
          }
          const attrs = this.#attrs(options);
          if (attrs) await call<void>(sftp, (done) => sftp.fsetstat(d, attrs, done));
          dst = undefined;
          await call<void>(sftp, (done) => sftp.close(d, done));
          if (target !== path) await this.#renameInto(sftp, target, path, key);
        } catch (err) {
          const d = dst;
          if (d) await call<void>(sftp, (done) => sftp.close(d, done)).catch(() => {});
          if (target !== '' && target !== path) await this.#removeTemp(sftp, target);
          throw err;
        } finally {
          const s = src;
          if (s) await call<void>(sftp, (done) => sftp.close(s, done)).catch(() => {});
        }
      },
      options.signal,
    );
  }

  async close(): Promise<void> {
    await this.#pool.close();
  }
}

/** Channels for a caller running `concurrency` transfers: a few sftp-server sessions, not one each. */
function channelsFor(concurrency: number | undefined): number {
  return Math.max(1, Math.min(4, Math.ceil((concurrency ?? 8) / 4)));
}

/** Open a store for an sftp address; nothing connects until the first request. */
export async function openSftp(address: Address, options: OpenOptions & SftpStoreOptions = {}): Promise<SftpStore> {
  if (!address.host) throw new FatalError(`sftp address ${address.display} has no host`);
  const ssh: SshOptions = { ...(options.env ? { env: options.env } : {}), ...options.ssh };
  if (address.password !== undefined) ssh.password = address.password;
  const pool = new SftpPool(
    { host: address.host, ...(address.user ? { user: address.user } : {}), ...(address.port ? { port: address.port } : {}) },
    ssh,
    { maxChannels: options.channels ?? channelsFor(options.concurrency) },
  );
  const target = await pool.resolved();
  return new SftpStore(address.bucket, pool, target, { inplace: options.inplace ?? false });
}

export const sftpBackend: Backend = {
  scheme: 'sftp',
  summary: 'sftp://user@host[:port]/path, user@host:path — a directory on an SSH server (honours ~/.ssh/config, the agent, known_hosts)',
  credentialEnv,
  secretEnv,
  open: (address, options) => openSftp(address, options),
};
