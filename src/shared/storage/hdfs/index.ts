import { userInfo } from 'node:os';
import type { Readable } from 'node:stream';
import { AlreadyExistsError, FatalError, InTheWayError, ListOrderError, NotEmptyError, NotFoundError, retryClassOf, UnsafePathError, UsageError } from '../../errors.js';
import { abortable, abortablePages, checkDeclaredSize, destroyOnAbort, orAborted, throwIfAborted } from '../body.js';
import { compareKeys, parentKey, treeKeyProblem } from '../keys.js';
import { credentialEnv, secretEnv } from './env.js';
import type { Backend } from '../registry.js';
import { isAbandoned, isTempName, tempName } from '../temp.js';
import type { Attrs, Entry, Features, GetOptions, ListOptions, ObjectStore, PutOptions } from '../types.js';
import { listTree, type NodeAttrs, type WalkRecord } from '../tree.js';
import { DEFAULT_WEBHDFS_PORT, remoteExceptionOf, WebHdfsClient, type FileStatus } from './webhdfs.js';

const PAGE = 1000;
/**
 * The mtimes SETTIMES can set, in ms: -1 means "leave unchanged", so nothing below 0 is sent; the
 * top is a JavaScript Date's.
 */
const MTIME_RANGE = { min: 0, max: 8.64e15 } as const;
/** Directories remembered as made (MKDIRS); past this many the set starts over. */
const MADE_MAX = 4096;
/**
 * What MKDIRS answers when something other than a directory is on the way: a file (test server
 * and Hadoop) or a link (Hadoop's UnresolvedPathException; the test server's ParentNotDirectory).
 */
const IN_THE_WAY = new Set(['ParentNotDirectoryException', 'FileAlreadyExistsException', 'UnresolvedPathException', 'UnresolvedLinkException']);

function clampMtime(mtime: number): number {
  return Math.min(MTIME_RANGE.max, Math.max(MTIME_RANGE.min, mtime));
}

/** The directory part of a key or prefix ('a/b/c' → 'a/b/'). */
function dirPart(key: string): string {
  return key.slice(0, key.lastIndexOf('/') + 1);
}

export interface HdfsStoreOptions {
  host: string;
  /** The namenode's WebHDFS HTTP port (default 9870, Hadoop 3's `dfs.namenode.http-address`). */
  port?: number;
  /** Sent as `user.name`. */
  user: string;
  /** Absolute HDFS directory the keys are relative to, ending in '/'. */
  root: string;
  inplace?: boolean;
  /**
   * The namenode creates symlinks. Every HDFS release refuses CREATESYMLINK ("Symlinks not
   * supported") unless built for tests with symlinks enabled, so this is off by default.
   */
  symlinks?: boolean;
  protocol?: 'http:' | 'https:';
  timeoutMs?: number;
  maxSockets?: number;
}



/** Drop the last code point (never half of a surrogate pair). */
function dropLast(s: string): string {
  const cps = Array.from(s);
  cps.pop();
  return cps.join('');
}

/**
 * A name to hand the namenode as LISTSTATUS_BATCH's `startAfter` so that it skips names ferry
 * would skip anyway, or undefined. The namenode pages in byte order of names; ferry's order puts
 * '/' after directory names, so a directory 'a' comes after 'a-b'. Any name at or below the result
 * sorts (in ferry's order) before what the listing needs:
 * - `namePrefix` (keys must start with it): every name below it minus its last character.
 * - `afterRest` (the part of startAfter inside this directory): its first segment cut before the
 *   first character below '/' (where a directory of that shorter name would sort after startAfter),
 *   minus one more character.
 */
export function batchStart(namePrefix: string, afterRest: string | undefined): string | undefined {
  let lower: string | undefined;
  if (namePrefix !== '') lower = dropLast(namePrefix);
  if (afterRest !== undefined) {
    const slash = afterRest.indexOf('/');
    const seg = slash < 0 ? afterRest : afterRest.slice(0, slash);
    let cut = seg.length;
    for (let i = 0; i < seg.length; i++)
      if (seg.charCodeAt(i) < 0x2f) {
        cut = i;
        break;
      }
    const a = dropLast(seg.slice(0, cut));
    if (lower === undefined || compareKeys(a, lower) > 0) lower = a;
  }
  return lower === '' ? undefined : lower;
}

function isDirStatus(st: FileStatus): boolean {
  return st.type === 'DIRECTORY';
}

/** A listed status as the tree walk sees it; the file id tells directories apart (no cycles). */
function nodeOf(st: FileStatus): NodeAttrs {
  const kind = st.type === 'DIRECTORY' ? 'd' : st.type === 'SYMLINK' ? 'l' : 'f';
  const n: NodeAttrs = { kind, size: kind === 'd' ? 0 : Number(st.length) || 0, mtime: Number(st.modificationTime) || 0, mode: parseInt(st.permission, 8) };
  if (st.fileId !== undefined) n.id = String(st.fileId);
  return n;
}

/**
 * HDFS through WebHDFS. Keys are paths relative to `root`; directories are keys ending in '/'.
 * Like the file backend, each directory is read (in LISTSTATUS_BATCH pages), sorted with '/'
 * appended to sub-directory names so that 'a-b' sorts before 'a/', and held only while walked.
 *
 * The tree store safety contract:
 * - a key that would not name a path inside the root ('..', '/x', 'a//b') is refused before any
 *   request (UnsafePathError);
 * - links: the namenode never resolves a symlink inside a path (Hadoop resolves links on the client,
 *   and WebHDFS answers UnresolvedPathException; the test server answers ParentNotDirectoryException),
 *   so no write can pass through a link below the root. Where MKDIRS or CREATE meet one, the walk
 *   that looks for a file in the way finds the link and refuses it (UnsafePathError). A link at the
 *   key itself is replaced by CREATE and RENAME, never written through; setAttrs refuses one when the
 *   namenode makes links (SETTIMES and SETPERMISSION would act on what it points at; the test server
 *   follows it). Every HDFS release refuses CREATESYMLINK, so by default (`symlinks` off) there are
 *   no links and no request is spent looking for them;
 * - an empty directory where a file goes, or a file where a directory goes, is replaced (the name
 *   changed type on the source); a directory with content is in the way (InTheWayError). Parent
 *   directories are made with MKDIRS before CREATE, once per directory (bounded memory), because a
 *   CREATE refused at the datanode has consumed a body that cannot be sent again;
 * - mtimes are clamped to [0, 8.64e15] ms: SETTIMES reads -1 as "leave unchanged";
 * - temporaries of writers that are gone are removed by listings that ask for it (`reclaim`).
 */
export class HdfsStore implements ObjectStore {
  readonly scheme = 'hdfs';
  readonly description: string;
  readonly features: Features;
  readonly root: string;
  readonly client: WebHdfsClient;
  readonly #inplace: boolean;
  /** Directory keys MKDIRS has made or found (bounded: MADE_MAX). */
  readonly #made = new Set<string>();
  /** MKDIRS in flight, so that parallel writes into one new directory share one request. */
  readonly #making = new Map<string, Promise<void>>();

  constructor(o: HdfsStoreOptions) {
    if (!o.root.startsWith('/') || !o.root.endsWith('/')) throw new UsageError(`hdfs: the directory ${JSON.stringify(o.root)} must be absolute and end in '/'`);
    this.root = o.root;
    this.#inplace = o.inplace ?? false;
    this.client = new WebHdfsClient({
      host: o.host,
      port: o.port ?? DEFAULT_WEBHDFS_PORT,
      user: o.user,
      ...(o.protocol ? { protocol: o.protocol } : {}),
      ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}),
      ...(o.maxSockets ? { maxSockets: o.maxSockets } : {}),
    });
    this.description = `hdfs://${o.user}@${this.client.endpoint}${o.root}`;
    this.features = {
      // Owners are names in HDFS and uid/gid numbers in Entry and Attrs: not carried yet.
      attrs: { mode: true, owner: false, mtime: true, mtimeRange: { ...MTIME_RANGE } },
      symlinks: o.symlinks ?? false,
      dirs: true,
      inplace: true,
      // A temporary renamed with rename2 without OVERWRITE: the namenode refuses an existing name.
      exclusiveCreate: true,
    };
  }

  /** The HDFS path of a key (no trailing '/', except for '/' itself). */
  #path(key: string): string {
    const p = this.root + key;
    return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
  }

  #tmpPath(path: string): string {
    return `${path.slice(0, path.lastIndexOf('/') + 1)}${tempName()}`;
  }

  /** Refuse a key that would not name a path inside the root, before any request. */
  #refuse(op: string, key: string): void {
    const why = treeKeyProblem(key);
    if (why !== undefined) throw new UnsafePathError(`hdfs ${op} in ${this.description}: refusing the key ${JSON.stringify(key)}: ${why}`);
  }

  #linkError(path: string, key: string): UnsafePathError {
    return new UnsafePathError(
      `hdfs ${this.client.endpoint}${path} is a symlink: ferry does not write through links inside the destination (key ${JSON.stringify(key)})`,
    );
  }

  #entry(key: string, st: FileStatus): Entry {
    const isDir = isDirStatus(st);
    const e: Entry = { key, size: isDir ? 0 : Number(st.length) || 0, mtime: Number(st.modificationTime) || 0, isDir, mode: parseInt(st.permission, 8) };
    if (st.type === 'SYMLINK') {
      e.isSymlink = true;
      e.target = st.symlink ?? '';
    }
    return e;
  }

  /** The status of `path` without following a final link, or undefined when nothing is there. */
  async #linkStatus(path: string, signal?: AbortSignal): Promise<FileStatus | undefined> {
    try {
      return await this.client.getFileLinkStatus(path, signal);
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }

  #remember(dir: string): void {
    if (this.#made.size >= MADE_MAX) this.#made.clear();
    this.#made.add(dir);
  }

  /** Forget `dir` and what is under it (the store removed it). */
  #forget(dir: string): void {
    for (const d of this.#made) if (d.startsWith(dir)) this.#made.delete(d);
  }

  /** Make the directory `dir` (a key ending in '/', '' for the root) and its parents, once per directory. */
  async #ensureDir(dir: string, signal?: AbortSignal): Promise<void> {
    if (this.#made.has(dir)) return;
    let p = this.#making.get(dir);
    if (!p) {
      p = this.#makeDir(dir, undefined, signal).finally(() => this.#making.delete(dir));
      this.#making.set(dir, p);
    }
    await p;
  }

  /** MKDIRS; a file on the way is replaced by the directory, a link on the way is refused. */
  async #makeDir(dir: string, mode?: number, signal?: AbortSignal): Promise<void> {
    const path = this.#path(dir);
    try {
      await this.client.mkdirs(path, mode, signal);
    } catch (err) {
      if (!IN_THE_WAY.has(remoteExceptionOf(err) ?? '')) throw err;
      if (!(await this.#clearWayTo(dir, signal))) throw err;
      await this.client.mkdirs(path, mode, signal);
    }
    this.#remember(dir);
  }

  /**
   * Walk from the root to `dir`: the first file on the way is removed (the name is a directory on
   * the source now, as rsync replaces it), a link is refused. True when a file was removed.
   */
  async #clearWayTo(dir: string, signal?: AbortSignal): Promise<boolean> {
    let key = '';
    for (const name of dir.split('/').slice(0, -1)) {
      key += name + '/';
      const path = this.#path(key);
      const st = await this.#linkStatus(path, signal);
      if (!st) return false;
      if (st.type === 'DIRECTORY') continue;
      if (st.type === 'SYMLINK') throw this.#linkError(path, key);
      await this.client.delete(path, false, signal);
      this.#forget(key);
      return true;
    }
    return false;
  }

  /** An empty directory where the file `key` must go is removed; one with content is in the way. */
  async #removeEmptyDir(key: string, path: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.client.delete(path, false, signal);
    } catch (err) {
      if (remoteExceptionOf(err) === 'PathIsNotEmptyDirectoryException')
        throw new InTheWayError(
          `hdfs ${this.client.endpoint}${path}: the directory ${JSON.stringify(key + '/')} has content and stands where the file ${JSON.stringify(key)} must go; ferry does not remove it (move or delete it, or exclude the key)`,
        );
      throw err;
    }
    this.#forget(key + '/');
  }

  /** Give the finished temporary the name of `key` only if nothing has it (`ifAbsent`); anything there, a directory too, stays. */
  async #renameIfAbsent(tmp: string, path: string, key: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.client.rename(tmp, path, { ifAbsent: true, ...(signal ? { signal } : {}) });
    } catch (err) {
      if (remoteExceptionOf(err) === 'FileAlreadyExistsException') {
        throw new AlreadyExistsError(`hdfs RENAME ${this.client.endpoint}${path}: ${JSON.stringify(key)} exists already`, { cause: err });
      }
      throw err;
    }
  }

  /** Rename the finished temporary onto `key`, replacing an empty directory there. */
  async #renameInto(tmp: string, path: string, key: string, signal?: AbortSignal): Promise<void> {
    const rename = (): Promise<void> => this.client.rename(tmp, path, { overwrite: true, ...(signal ? { signal } : {}) });
    try {
      await rename();
    } catch (err) {
      if (retryClassOf(err) !== 'fatal') throw err;
      const st = await this.#linkStatus(path, signal).catch(() => undefined);
      if (st?.type !== 'DIRECTORY') throw err;
      await this.#removeEmptyDir(key, path, signal);
      await rename();
    }
  }

  async #readDir(
    dir: string,
    namePrefix: string,
    afterRest: string | undefined,
    follow: boolean,
    reclaim: ListOptions['reclaim'],
    signal?: AbortSignal,
  ): Promise<WalkRecord[]> {
    const path = this.#path(dir);
    const records: { name: string; st: FileStatus }[] = [];
    const temps: FileStatus[] = [];
    let start = batchStart(namePrefix, afterRest);
    let previous: string | undefined;
    try {
      for (;;) {
        signal?.throwIfAborted();
        const { statuses, remaining } = await this.client.listBatch(path, start, signal);
        let done = false;
        for (const st of statuses) {
          const name = st.pathSuffix;
          // A file answers its own status with an empty name: it has no entries.
          if (name === '') return [];
          if (previous !== undefined && compareKeys(previous, name) >= 0) throw new ListOrderError(`${this.description}${dir}`, previous, name);
          previous = name;
          if (!name.startsWith(namePrefix)) {
            // Names holding the prefix are contiguous in byte order: past them, stop asking.
            if (compareKeys(name, namePrefix) > 0) {
              done = true;
              break;
            }
            continue;
          }
          if (isTempName(name)) {
            if (reclaim) temps.push(st);
            continue;
          }
          records.push({ name, st });
        }
        const last = statuses[statuses.length - 1];
        if (done || remaining <= 0 || !last) break;
        start = last.pathSuffix;
      }
    } catch (err) {
      if (err instanceof NotFoundError) return [];
      throw err;
    }
    if (reclaim && temps.length > 0) await this.#reclaim(dir, path, temps, reclaim, signal);
    return Promise.all(
      records.map(async (r) => {
        const rec: WalkRecord = { name: r.name, ...nodeOf(r.st) };
        if (r.st.type === 'SYMLINK') {
          rec.target = r.st.symlink ?? '';
          if (follow) {
            try {
              rec.follow = nodeOf(await this.client.getFileStatus(`${path === '/' ? '' : path}/${r.name}`, signal));
            } catch (err) {
              if (!(err instanceof NotFoundError)) throw err;
              // A broken link cannot be followed: it is reported as the link it is.
              rec.follow = null;
            }
          }
        }
        return rec;
      }),
    );
  }

  /** Remove the temporaries of writers that are gone (temp.ts) and report each. */
  async #reclaim(dir: string, path: string, temps: FileStatus[], report: (path: string, bytes: number) => void, signal?: AbortSignal): Promise<void> {
    for (const st of temps) {
      if (st.type === 'DIRECTORY' || !isAbandoned(st.pathSuffix, Number(st.modificationTime) || 0)) continue;
      // false: gone already (another run reclaimed it).
      if (await this.client.delete(`${path === '/' ? '' : path}/${st.pathSuffix}`, false, signal)) report(`${this.description}${dir}${st.pathSuffix}`, Number(st.length) || 0);
    }
  }

  async *list(options: ListOptions = {}): AsyncIterable<Entry[]> {
    if (options.prefix !== undefined) this.#refuse('list', dirPart(options.prefix));
    if (options.startAfter !== undefined) this.#refuse('list', dirPart(options.startAfter));
    const pages = listTree(options, PAGE, async (req, follow) => {
      this.#refuse('list', req.read);
      const records = await this.#readDir(req.read, req.namePrefix, req.after, follow, options.reclaim, options.signal);
      if (!req.identify) return { records };
      const st = await this.client.getFileStatus(this.#path(req.read), options.signal).catch(() => undefined);
      return st?.fileId === undefined ? { records } : { records, id: String(st.fileId) };
    });
    yield* abortablePages(pages, options.signal, `hdfs LIST ${this.client.endpoint}${this.root}${options.prefix ?? ''}`);
  }

  async head(key: string, options: { followSymlinks?: boolean; signal?: AbortSignal } = {}): Promise<Entry> {
    this.#refuse('stat', key);
    const path = this.#path(key);
    const st = options.followSymlinks ? await this.client.getFileStatus(path, options.signal) : await this.client.getFileLinkStatus(path, options.signal);
    if (key.endsWith('/') && !isDirStatus(st)) throw new NotFoundError(`hdfs GETFILESTATUS ${this.client.endpoint}${path}: not a directory`);
    return this.#entry(key, st);
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    this.#refuse('read', key);
    const what = `hdfs OPEN ${this.client.endpoint}${this.#path(key)}`;
    throwIfAborted(options.signal, what);
    try {
      const body = await this.client.open(this.#path(key), {
        ...(options.offset !== undefined ? { offset: options.offset } : {}),
        ...(options.length !== undefined ? { length: options.length } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
      return abortable(body, options.signal, what);
    } catch (err) {
      throw orAborted(err, options.signal, what);
    }
  }

  async put(key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    if (key.endsWith('/')) {
      if (!Buffer.isBuffer(body)) body.resume();
      return this.mkdir(key, options.mode === undefined ? {} : { mode: options.mode });
    }
    const signal = options.signal;
    let path = '';
    let target = '';
    const what = `hdfs CREATE ${this.client.endpoint}${this.root}${key}`;
    const unhook = destroyOnAbort(body, signal, what);
    try {
      this.#refuse('write', key);
      throwIfAborted(signal, what);
      if (Buffer.isBuffer(body)) checkDeclaredSize(body, options.size, what);
      path = this.#path(key);
      await this.#ensureDir(parentKey(key), signal);
      // A conditional create always goes through a temporary: only a whole file may appear under the key.
      const inplace = this.#inplace && !options.ifAbsent;
      if (inplace) {
        // In place, the bytes go to the key itself: never through a link there, never into a directory.
        const st = await this.#linkStatus(path, signal);
        if (st?.type === 'SYMLINK') throw new UnsafePathError(`${this.#linkError(path, key).message} (--inplace writes into the file itself)`);
        if (st?.type === 'DIRECTORY') await this.#removeEmptyDir(key, path, signal);
      }
      target = inplace ? path : this.#tmpPath(path);
      await this.client.create(target, body, {
        overwrite: true,
        ...(options.size !== undefined ? { size: options.size } : {}),
        ...(options.mode !== undefined ? { permission: options.mode } : {}),
        ...(signal ? { signal } : {}),
      });
      // The namenode masks CREATE's permission with its umask: set it exactly.
      if (options.mode !== undefined) await this.client.setPermission(target, options.mode, signal);
      if (options.mtime !== undefined) await this.client.setTimes(target, { mtime: clampMtime(options.mtime) }, signal);
      if (options.ifAbsent) await this.#renameIfAbsent(target, path, key, signal);
      else if (target !== path) await this.#renameInto(target, path, key, signal);
    } catch (err) {
      if (!Buffer.isBuffer(body) && !body.destroyed) body.destroy();
      // Without the signal: an interrupted write's temporary is removed too.
      if (target !== '' && target !== path) await this.client.delete(target).catch(() => {});
      throw orAborted(err, signal, what);
    } finally {
      unhook();
    }
  }

  /**
   * Not recursive: a directory key removes only an empty directory. DELETE removes whatever is
   * there, so the type is looked at first: a file key never removes a directory that took its name
   * (nor a directory key a file). A link is removed, not what it points at.
   */
  async delete(key: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#refuse('delete', key);
    const path = this.#path(key);
    const st = await this.#linkStatus(path, options.signal);
    if (!st || isDirStatus(st) !== key.endsWith('/')) return;
    try {
      await this.client.delete(path, false, options.signal);
    } catch (err) {
      if (remoteExceptionOf(err) === 'PathIsNotEmptyDirectoryException') throw new NotEmptyError(`hdfs DELETE ${this.client.endpoint}${path}: the directory is not empty`, { cause: err });
      throw err;
    }
    if (key.endsWith('/')) this.#forget(key);
  }

  async mkdir(key: string, options: { mode?: number } = {}): Promise<void> {
    this.#refuse('mkdir', key);
    const dir = key === '' || key.endsWith('/') ? key : key + '/';
    await this.#makeDir(dir, options.mode);
    if (options.mode !== undefined) await this.client.setPermission(this.#path(dir), options.mode);
  }

  /**
   * CREATESYMLINK, made under a temporary name and renamed into place. WebHDFS takes only absolute
   * targets, so a relative one (which would change meaning if resolved here) is refused.
   */
  async symlink(key: string, target: string): Promise<void> {
    this.#refuse('symlink', key);
    const path = this.#path(key);
    if (!target.startsWith('/'))
      throw new FatalError(`hdfs CREATESYMLINK ${this.client.endpoint}${path}: WebHDFS takes only absolute link targets, not ${JSON.stringify(target)}`);
    await this.#ensureDir(parentKey(key));
    const tmp = this.#tmpPath(path);
    try {
      await this.client.createSymlink(tmp, target);
      await this.#renameInto(tmp, path, key);
    } catch (err) {
      await this.client.delete(tmp).catch(() => {});
      throw err;
    }
  }

  /**
   * SETPERMISSION and SETTIMES. uid/gid are ignored (features.attrs.owner is false): HDFS owners are
   * names; see setOwner. Nothing is set on a symlink, and a key that is one is refused without
   * `isSymlink`: the namenode would resolve it and change the target.
   */
  async setAttrs(key: string, attrs: Attrs, options: { isSymlink?: boolean } = {}): Promise<void> {
    this.#refuse('setattrs', key);
    if (options.isSymlink) return;
    const path = this.#path(key);
    // Only a namenode that makes links can have one here (see the class comment).
    if (this.features.symlinks && key !== '' && (await this.#linkStatus(path))?.type === 'SYMLINK')
      throw new UnsafePathError(`hdfs ${this.client.endpoint}${path} is a symlink: ferry does not change attributes through links inside the destination (key ${JSON.stringify(key)})`);
    if (attrs.mode !== undefined) await this.client.setPermission(path, attrs.mode);
    if (attrs.mtime !== undefined) await this.client.setTimes(path, { mtime: clampMtime(attrs.mtime) });
  }

  /** SETOWNER by name. Only the HDFS superuser may change the owner; an owner may change the group to one of its own. */
  async setOwner(key: string, owner: { owner?: string; group?: string }): Promise<void> {
    this.#refuse('setowner', key);
    await this.client.setOwner(this.#path(key), owner.owner, owner.group);
  }

  async close(): Promise<void> {
    this.client.close();
  }
}

/** The HDFS user: the address's, else HADOOP_USER_NAME, else the local user name (as Hadoop's own client does). */
export function hdfsUser(addressUser: string | undefined, env: NodeJS.ProcessEnv): string {
  if (addressUser) return addressUser;
  if (env.HADOOP_USER_NAME) return env.HADOOP_USER_NAME;
  try {
    const name = userInfo().username;
    if (name) return name;
  } catch {
    // No passwd entry for this uid (containers).
  }
  throw new UsageError('cannot tell which HDFS user to act as: put USER@ in the address (hdfs://USER@NAMENODE/PATH) or set HADOOP_USER_NAME');
}

export const hdfsBackend: Backend = {
  scheme: 'hdfs',
  summary: `hdfs://[USER@]NAMENODE[:PORT][/PATH] — HDFS over WebHDFS (the namenode's HTTP port, default ${DEFAULT_WEBHDFS_PORT}; user from the address, HADOOP_USER_NAME or the login name; no path: the user's home)`,
  credentialEnv,
  secretEnv,
  async open(address, options) {
    if (!address.host) throw new UsageError(`no namenode in ${address.display}: hdfs://[USER@]NAMENODE[:PORT]/PATH`);
    const port = address.port ?? DEFAULT_WEBHDFS_PORT;
    const user = hdfsUser(address.user, options.env ?? process.env);
    let root = address.bucket;
    if (root === '') {
      // No path: the user's home, as `hdfs dfs -ls` lists it, never the filesystem's root.
      const probe = new WebHdfsClient({ host: address.host, port, user });
      try {
        root = await probe.homeDirectory();
      } finally {
        probe.close();
      }
      if (!root.endsWith('/')) root += '/';
    }
    return new HdfsStore({
      host: address.host,
      port,
      user,
      root,
      inplace: options.inplace ?? false,
      ...(options.concurrency ? { maxSockets: Math.max(8, options.concurrency * 2) } : {}),
    });
  },
};
