import { posix } from 'node:path';
import { Readable, addAbortSignal } from 'node:stream';
import type { Attributes, FileEntry, InputAttributes, SFTPWrapper, Stats } from 'ssh2';
import { sshError, type ResolvedSshTarget, type SshOptions } from '../../ssh/connect.js';
import { channelOpen, SftpPool } from '../../ssh/pool.js';
import type { Address } from '../address.js';
import { FatalError, FerryError, NotFoundError, PermissionDeniedError, TransientError } from '../errors.js';
import type { Backend, OpenOptions } from '../registry.js';
import type { Attrs, CopySource, Entry, Features, GetOptions, ListOptions, ObjectStore, PutOptions } from '../types.js';
import { listTree, type DirListing, type NodeAttrs, type WalkRecord } from '../tree.js';
import { SftpReadStream, writeBody } from './io.js';

const PAGE = 1000;
const TMP = '.ferry-tmp-';
/** Metadata requests in flight while listing one directory (readlink/stat of its symlinks). */
const LIST_DEPTH = 32;

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

function toEntry(key: string, kind: Kind, attrs: Attributes): Entry {
  return {
    key,
    size: kind === 'd' ? 0 : attrs.size,
    mtime: attrs.mtime * 1000,
    isDir: kind === 'd',
    mode: attrs.mode & 0o7777,
    uid: attrs.uid,
    gid: attrs.gid,
  };
}

/** A listed node as the tree walk sees it. */
function nodeOf(attrs: Attributes): NodeAttrs {
  const kind = kindOf(attrs.mode);
  return { kind, size: kind === 'd' ? 0 : attrs.size, mtime: attrs.mtime * 1000, mode: attrs.mode & 0o7777, uid: attrs.uid, gid: attrs.gid };
}

/** A path without its trailing '/' (the root '/' stays). */
function bare(path: string): string {
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
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

/**
 * A directory on an SSH server, over SFTP. Keys are paths relative to the directory; directories
 * are keys ending in '/'. Behaves like the file backend: each directory is read whole, sorted with
 * '/' appended to sub-directory names, and held only while it is walked; writes go to a temporary
 * `.ferry-tmp-*` name renamed into place.
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
      attrs: { mode: true, owner: target.user === 'root', mtime: true },
      symlinks: true,
      dirs: true,
      inplace: true,
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

  /** The absolute directory the keys are relative to, ending in '/'. Relative ones are under the login's home. */
  #rootPath(): Promise<string> {
    if (!this.#root) {
      const b = this.#bucket;
      const rel = b.startsWith('/~/') ? b.slice(3) : b.startsWith('~/') ? b.slice(2) : b === '~' || b === '/~' ? '' : b.startsWith('/') ? undefined : b;
      if (rel === undefined) this.#root = Promise.resolve(b === '' ? '/' : b);
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
    let path = this.#bucket + key;
    try {
      path = await this.#path(key);
      return await this.#pool.withSftp((sftp) => fn(sftp, path), signal);
    } catch (err) {
      throw this.#error(err, op, path);
    }
  }

  /**
   * One directory's records for the tree walk. When following links, directories carry their real
   * path as identity, so a symlink loop is entered at most once per path.
   */
  async #readDir(sftp: SFTPWrapper, path: string, follow: boolean): Promise<DirListing> {
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
    for (const f of list) {
      if (f.filename === '.' || f.filename === '..' || f.filename.startsWith(TMP)) continue;
      const r: WalkRecord = { name: f.filename, ...nodeOf(f.attrs) };
      if (follow && r.kind === 'd') r.id = `${real === '/' ? '' : real}/${r.name}`;
      records.push(r);
      if (r.kind === 'l') links.push(r);
    }
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

  list(options: ListOptions = {}): AsyncIterable<Entry[]> {
    return listTree(options, PAGE, (req, follow) => this.#run('list', req.read, (sftp, path) => this.#readDir(sftp, path, follow), options.signal));
  }

  async head(key: string, options: { followSymlinks?: boolean; signal?: AbortSignal } = {}): Promise<Entry> {
    return this.#run(
      'stat',
      key,
      async (sftp, path) => {
        const p = bare(path);
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
      path = await this.#path(key);
      lease = await this.#pool.lease(options.signal);
      const { sftp } = lease;
      const handle = await call<Buffer>(sftp, (done) => sftp.open(path, 'r', done));
      const start = options.offset ?? 0;
      if (options.length === 0) {
        await call<void>(sftp, (done) => sftp.close(handle, done)).catch(() => {});
        lease.release();
        return Readable.from([]);
      }
      const l = lease;
      const what = this.#what('read', path);
      const stream = new SftpReadStream(sftp, handle, {
        start,
        ...(options.length === undefined ? {} : { end: start + options.length }),
        mapError: (err) => sftpError(err, what, this.#target),
        onClose: () => l.release(),
      });
      if (options.signal) addAbortSignal(options.signal, stream);
      return stream;
    } catch (err) {
      lease?.release();
      throw this.#error(err, 'open', path);
    }
  }

  #tmpPath(path: string): string {
    return `${posix.dirname(path)}/${TMP}${process.pid.toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  }

  /** mkdir -p: make `dir` (no trailing '/') and any missing parent. */
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

  /** Open `path` for writing, making missing parent directories. */
  async #openForWrite(sftp: SFTPWrapper, path: string, parent: string): Promise<Buffer> {
    try {
      return await call<Buffer>(sftp, (done) => sftp.open(path, 'w', done));
    } catch (err) {
      if (statusOf(err) !== STATUS.NO_SUCH_FILE) throw err;
      await this.#mkdirp(sftp, parent);
      return call<Buffer>(sftp, (done) => sftp.open(path, 'w', done));
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
    let target = '';
    await this.#run(
      'write',
      key,
      async (sftp, path) => {
        target = this.#inplace ? path : this.#tmpPath(path);
        let handle: Buffer | undefined;
        try {
          handle = await this.#openForWrite(sftp, target, posix.dirname(path));
          await writeBody(sftp, handle, body, options.signal ? { signal: options.signal } : {});
          const h = handle;
          const attrs = this.#attrs(options);
          if (attrs) await call<void>(sftp, (done) => sftp.fsetstat(h, attrs, done));
          handle = undefined;
          await call<void>(sftp, (done) => sftp.close(h, done));
          if (target !== path) await this.#rename(sftp, target, path);
        } catch (err) {
          if (!Buffer.isBuffer(body)) body.destroy();
          const h = handle;
          if (h) await call<void>(sftp, (done) => sftp.close(h, done)).catch(() => {});
          if (target !== path) await call<void>(sftp, (done) => sftp.unlink(target, done)).catch(() => {});
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
      // SFTP version 3 keeps whole seconds.
      a.mtime = Math.floor(o.mtime / 1000);
      a.atime = a.mtime;
    }
    return a;
  }

  async delete(key: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#run(
      'delete',
      key,
      async (sftp, path) => {
        try {
          if (key.endsWith('/')) await call<void>(sftp, (done) => sftp.rmdir(bare(path), done));
          else await call<void>(sftp, (done) => sftp.unlink(path, done));
        } catch (err) {
          if (statusOf(err) === STATUS.NO_SUCH_FILE) return;
          throw err;
        }
      },
      options.signal,
    );
  }

  async mkdir(key: string, options: { mode?: number } = {}): Promise<void> {
    await this.#run('mkdir', key, (sftp, path) => this.#mkdirp(sftp, bare(path), options.mode));
  }

  async symlink(key: string, target: string): Promise<void> {
    await this.#run('symlink', key, async (sftp, path) => {
      const tmp = this.#tmpPath(path);
      try {
        try {
          await call<void>(sftp, (done) => sftp.symlink(target, tmp, done));
        } catch (err) {
          if (statusOf(err) !== STATUS.NO_SUCH_FILE) throw err;
          await this.#mkdirp(sftp, posix.dirname(path));
          await call<void>(sftp, (done) => sftp.symlink(target, tmp, done));
        }
        await this.#rename(sftp, tmp, path);
      } catch (err) {
        await call<void>(sftp, (done) => sftp.unlink(tmp, done)).catch(() => {});
        throw err;
      }
    });
  }

  async setAttrs(key: string, attrs: Attrs, options: { isSymlink?: boolean } = {}): Promise<void> {
    await this.#run('setstat', key, async (sftp, path) => {
      const p = bare(path);
      // chown before chmod: chown clears setuid/setgid bits.
      if (attrs.uid !== undefined && attrs.gid !== undefined && this.features.attrs?.owner) {
        const owner = { uid: attrs.uid, gid: attrs.gid };
        if (options.isSymlink) await this.#lsetstat(sftp, p, owner);
        else await call<void>(sftp, (done) => sftp.setstat(p, owner, done));
      }
      if (attrs.mode !== undefined && !options.isSymlink) await call<void>(sftp, (done) => sftp.setstat(p, { mode: attrs.mode! }, done));
      if (attrs.mtime !== undefined) {
        const t = Math.floor(attrs.mtime / 1000);
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
    return { scope: this.#scope(), location: { bucket: this.#bucket, key } };
  }

  /**
   * Copy on the server: the copy-data extension (OpenSSH >= 9.0) moves no bytes over the network;
   * without it the bytes make a round trip through this machine on one channel.
   */
  async copyFrom(key: string, source: CopySource, options: PutOptions & { size: number } = { size: 0 }): Promise<void> {
    const loc = source.location as { bucket: string; key: string };
    if (source.scope !== this.#scope()) throw new FatalError(`sftp copy: source scope ${source.scope} is not ${this.#scope()}`);
    const from = loc.bucket === this.#bucket ? this.#path(loc.key) : new SftpStore(loc.bucket, this.#pool, this.#target).#path(loc.key);
    let srcPath = loc.bucket + loc.key;
    let target = '';
    await this.#run('copy', key, async (sftp, path) => {
      srcPath = await from;
      target = this.#inplace ? path : this.#tmpPath(path);
      let src: Buffer | undefined;
      let dst: Buffer | undefined;
      try {
        try {
          src = await call<Buffer>(sftp, (done) => sftp.open(srcPath, 'r', done));
        } catch (err) {
          throw this.#error(err, 'open', srcPath);
        }
        dst = await this.#openForWrite(sftp, target, posix.dirname(path));
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
        if (target !== path) await this.#rename(sftp, target, path);
      } catch (err) {
        const d = dst;
        if (d) await call<void>(sftp, (done) => sftp.close(d, done)).catch(() => {});
        if (target && target !== path) await call<void>(sftp, (done) => sftp.unlink(target, done)).catch(() => {});
        throw err;
      } finally {
        const s = src;
        if (s) await call<void>(sftp, (done) => sftp.close(s, done)).catch(() => {});
      }
    }, options.signal);
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
  open: (address, options) => openSftp(address, options),
};
