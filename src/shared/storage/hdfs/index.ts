import { userInfo } from 'node:os';
import type { Readable } from 'node:stream';
import { FatalError, ListOrderError, NotFoundError, UsageError } from '../errors.js';
import { compareKeys } from '../keys.js';
import type { Backend } from '../registry.js';
import type { Attrs, Entry, Features, GetOptions, ListOptions, ObjectStore, PutOptions } from '../types.js';
import { listTree, type NodeAttrs, type WalkRecord } from '../tree.js';
import { DEFAULT_WEBHDFS_PORT, WebHdfsClient, type FileStatus } from './webhdfs.js';

const PAGE = 1000;
const TMP = '.ferry-tmp-';

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
 */
export class HdfsStore implements ObjectStore {
  readonly scheme = 'hdfs';
  readonly description: string;
  readonly features: Features;
  readonly root: string;
  readonly client: WebHdfsClient;
  readonly #inplace: boolean;

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
      attrs: { mode: true, owner: false, mtime: true },
      symlinks: o.symlinks ?? false,
      dirs: true,
      inplace: true,
    };
  }

  /** The HDFS path of a key (no trailing '/', except for '/' itself). */
  #path(key: string): string {
    const p = this.root + key;
    return p.length > 1 && p.endsWith('/') ? p.slice(0, -1) : p;
  }

  #tmpPath(path: string): string {
    return `${path.slice(0, path.lastIndexOf('/') + 1)}${TMP}${process.pid.toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
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

  async #readDir(dir: string, namePrefix: string, afterRest: string | undefined, follow: boolean, signal?: AbortSignal): Promise<WalkRecord[]> {
    const path = this.#path(dir);
    const records: { name: string; st: FileStatus }[] = [];
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
          if (name.startsWith(TMP)) continue;
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

  list(options: ListOptions = {}): AsyncIterable<Entry[]> {
    return listTree(options, PAGE, async (req, follow) => {
      const records = await this.#readDir(req.read, req.namePrefix, req.after, follow, options.signal);
      if (!req.identify) return { records };
      const st = await this.client.getFileStatus(this.#path(req.read), options.signal).catch(() => undefined);
      return st?.fileId === undefined ? { records } : { records, id: String(st.fileId) };
    });
  }

  async head(key: string, options: { followSymlinks?: boolean; signal?: AbortSignal } = {}): Promise<Entry> {
    const path = this.#path(key);
    const st = options.followSymlinks ? await this.client.getFileStatus(path, options.signal) : await this.client.getFileLinkStatus(path, options.signal);
    if (key.endsWith('/') && !isDirStatus(st)) throw new NotFoundError(`hdfs GETFILESTATUS ${this.client.endpoint}${path}: not a directory`);
    return this.#entry(key, st);
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    return this.client.open(this.#path(key), {
      ...(options.offset !== undefined ? { offset: options.offset } : {}),
      ...(options.length !== undefined ? { length: options.length } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  async put(key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    if (key.endsWith('/')) return this.mkdir(key, options.mode === undefined ? {} : { mode: options.mode });
    const path = this.#path(key);
    const target = this.#inplace ? path : this.#tmpPath(path);
    const signal = options.signal;
    try {
      // CREATE makes missing parent directories.
      await this.client.create(target, body, {
        overwrite: true,
        ...(options.size !== undefined ? { size: options.size } : {}),
        ...(options.mode !== undefined ? { permission: options.mode } : {}),
        ...(signal ? { signal } : {}),
      });
      // The namenode masks CREATE's permission with its umask: set it exactly.
      if (options.mode !== undefined) await this.client.setPermission(target, options.mode, signal);
      if (options.mtime !== undefined) await this.client.setTimes(target, { mtime: options.mtime }, signal);
      if (target !== path) await this.client.rename(target, path, { overwrite: true, ...(signal ? { signal } : {}) });
    } catch (err) {
      if (!Buffer.isBuffer(body) && !body.destroyed) body.destroy();
      if (target !== path) await this.client.delete(target).catch(() => {});
      throw err;
    }
  }

  async delete(key: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    // Not recursive: a directory key removes only an empty directory. A missing path answers false.
    await this.client.delete(this.#path(key), false, options.signal);
  }

  async mkdir(key: string, options: { mode?: number } = {}): Promise<void> {
    const path = this.#path(key);
    await this.client.mkdirs(path, options.mode);
    if (options.mode !== undefined) await this.client.setPermission(path, options.mode);
  }

  /**
   * CREATESYMLINK, made under a temporary name and renamed into place. WebHDFS takes only absolute
   * targets, so a relative one (which would change meaning if resolved here) is refused.
   */
  async symlink(key: string, target: string): Promise<void> {
    const path = this.#path(key);
    if (!target.startsWith('/'))
      throw new FatalError(`hdfs CREATESYMLINK ${this.client.endpoint}${path}: WebHDFS takes only absolute link targets, not ${JSON.stringify(target)}`);
    const tmp = this.#tmpPath(path);
    try {
      await this.client.createSymlink(tmp, target);
      await this.client.rename(tmp, path, { overwrite: true });
    } catch (err) {
      await this.client.delete(tmp).catch(() => {});
      throw err;
    }
  }

  /**
   * SETPERMISSION and SETTIMES. uid/gid are ignored (features.attrs.owner is false): HDFS owners are
   * names; see setOwner. Nothing is set on a symlink: the namenode would resolve it and change the
   * target.
   */
  async setAttrs(key: string, attrs: Attrs, options: { isSymlink?: boolean } = {}): Promise<void> {
    if (options.isSymlink) return;
    const path = this.#path(key);
    if (attrs.mode !== undefined) await this.client.setPermission(path, attrs.mode);
    if (attrs.mtime !== undefined) await this.client.setTimes(path, { mtime: attrs.mtime });
  }

  /** SETOWNER by name. Only the HDFS superuser may change the owner; an owner may change the group to one of its own. */
  async setOwner(key: string, owner: { owner?: string; group?: string }): Promise<void> {
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
  summary: `hdfs://[USER@]NAMENODE[:PORT]/PATH — HDFS over WebHDFS (the namenode's HTTP port, default ${DEFAULT_WEBHDFS_PORT}; user from the address, HADOOP_USER_NAME or the login name)`,
  async open(address, options) {
    if (!address.host) throw new UsageError(`no namenode in ${address.display}: hdfs://[USER@]NAMENODE[:PORT]/PATH`);
    return new HdfsStore({
      host: address.host,
      port: address.port ?? DEFAULT_WEBHDFS_PORT,
      user: hdfsUser(address.user, options.env ?? process.env),
      root: address.bucket,
      inplace: options.inplace ?? false,
      ...(options.concurrency ? { maxSockets: Math.max(8, options.concurrency * 2) } : {}),
    });
  },
};
