import type { Duplex, Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { ChecksumMismatchError, FatalError, NotEmptyError, NotFoundError, SourceChangedError, retryClassOf } from '../errors.js';
import type { Entry, ObjectStore, PutOptions } from '../storage/types.js';
import { throttle, type ByteRateLimiter } from '../throttle/bucket.js';
import { DigestTap, digestOf } from './checksum.js';
import { DEFAULT_RETRY, withRetry, type RetryOptions } from './retry.js';
import type { Outcome, Task, TaskSpec } from './task.js';
import type { SyncOptions } from '../job.js';

export interface TransferOptions {
  perms: boolean;
  links: boolean;
  checkNew: boolean;
  checkChange: boolean;
  deleteSrcAfter: boolean;
  /** --delete-src: a key found equal by --check-all is deleted from the source. */
  deleteSrc: boolean;
  dry: boolean;
  storageClass?: string;
  limiter?: ByteRateLimiter;
  retry?: RetryOptions;
  signal: AbortSignal;
  /** Called with each chunk's size as bytes move, for live progress. */
  onBytes?(n: number): void;
}

/** A run's transfer options from its SyncOptions: the same on the manager and on every worker. */
export function transferOptions(o: SyncOptions, run: Pick<TransferOptions, 'limiter' | 'signal' | 'onBytes'>): TransferOptions {
  return {
    perms: o.perms,
    links: o.links,
    checkNew: o.checkNew,
    checkChange: o.checkChange,
    deleteSrcAfter: o.deleteSrcAfter,
    deleteSrc: o.deleteSrc,
    dry: o.dry,
    ...(o.storageClass ? { storageClass: o.storageClass } : {}),
    ...(run.limiter ? { limiter: run.limiter } : {}),
    signal: run.signal,
    ...(run.onBytes ? { onBytes: run.onBytes } : {}),
  };
}

/** Transfer code every executor runs: the manager's own and each worker's. */
export class Transfer {
  readonly #perms: boolean;
  readonly #owner: boolean;
  readonly #mtime: boolean;
  /** Compare contents after each copy: --check-new, and --delete-src-after (a source key is deleted only once its copy is proven). */
  readonly #verify: boolean;
  /** With --links, the source is read without following a link that was swapped in after the listing. */
  readonly #reading: { followSymlinks?: boolean };
  /** A source key is looked at again as the listing saw it: through links, unless --links. */
  readonly #asListed: { followSymlinks: boolean };

  constructor(
    readonly src: ObjectStore,
    readonly dst: ObjectStore,
    readonly o: TransferOptions,
  ) {
    this.#perms = o.perms && Boolean(dst.features.attrs?.mode) && Boolean(dst.setAttrs);
    this.#reading = o.links ? { followSymlinks: false } : {};
    this.#asListed = { followSymlinks: !o.links };
    this.#owner = o.perms && Boolean(dst.features.attrs?.owner && src.features.attrs?.owner);
    this.#mtime = Boolean(dst.features.attrs?.mtime);
    this.#verify = o.checkNew || o.deleteSrcAfter;
  }

  /**
   * Tasks worth keeping in flight per `--threads`: disk-to-disk copies are batched onto a few
   * file-system threads, and each costs microseconds, so ten at a time would leave those threads
   * idle between round trips; network transfers run one per thread.
   */
  get depth(): number {
    return this.#serverSide() && this.dst.features.copy?.local ? 32 : 1;
  }

  /**
   * Whether file copies can go in batches (runCopies): a store that copies many keys in one call,
   * and no per-key step (checks, moves, owners) around the copy.
   */
  get batchable(): boolean {
    const o = this.o;
    return this.#serverSide() && Boolean(this.dst.copyFromMany) && !o.dry && !o.checkNew && !o.checkChange && !o.deleteSrcAfter && !this.#owner;
  }

  /**
   * Copy many files at once (see `batchable`); a key whose batched copy failed is run again on its
   * own, with retries. One outcome or error per entry, in order.
   */
  async runCopies(entries: Entry[]): Promise<(Outcome | { error: unknown })[]> {
    const items = entries.map((e) => {
      const options: PutOptions & { size: number } = { size: e.size };
      if (this.#mtime) options.mtime = e.mtime;
      if (this.#perms && e.mode !== undefined) options.mode = e.mode;
      return { key: e.key, source: this.src.copySource!(e.key, this.#reading), options };
    });
    const results = await this.dst.copyFromMany!(items);
    const out: (Outcome | { error: unknown })[] = new Array(entries.length);
    const retries: Promise<void>[] = [];
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      if (!results[i]) {
        this.o.onBytes?.(e.size);
        out[i] = { result: 'copied', bytes: e.size, checked: false };
      } else {
        retries.push(this.run({ v: 1, op: 'copy', entry: e }).then((r) => void (out[i] = r), (error: unknown) => void (out[i] = { error })));
      }
    }
    if (retries.length > 0) await Promise.all(retries);
    return out;
  }

  /** Run one task with retries of transient failures; throws what finally failed. */
  run(task: TaskSpec): Promise<Outcome> {
    const retry = { ...(this.o.retry ?? DEFAULT_RETRY), signal: this.o.signal };
    return withRetry(() => this.#runOnce(task), retry);
  }

  async #runOnce(task: TaskSpec): Promise<Outcome> {
    const e = task.entry;
    switch (task.op) {
      case 'copy':
        if (task.clearWay && !e.isDir && !this.o.dry && this.dst.features.dirs) await removeEmptyTree(this.dst, e.key + '/', this.o.signal);
        return this.#copy(e);
      case 'check':
        return this.#check(e, task.keepSource === true);
      case 'copyPerms':
        if (!this.o.dry) await this.#setPerms(e);
        return { result: 'copied', bytes: 0, checked: false };
      case 'deleteSrc':
        return e.isDir || this.o.dry ? this.#delete(this.src, e) : this.#deleteProvenSource(e, task.dstEtag);
      case 'deleteDst':
        return this.#delete(this.dst, e);
      case 'finishDir':
        if (!this.o.dry) await this.#finishDir(e);
        return { result: 'copied', bytes: 0, checked: false };
      case 'copyPart':
        return this.#copyPart(task);
    }
  }

  /**
   * --delete-src of a key this run did not copy: "equal" came from sizes (and mtimes where kept),
   * which a changed file of the same size passes. The content is compared first — by ETag when both
   * sides have plain MD5 ones, else by reading both — and a source that differs is copied (and the
   * copy verified) before it is deleted, so its content is never lost.
   */
  async #deleteProvenSource(e: Entry, dstEtag: string | undefined): Promise<Outcome> {
    const a = plainMd5(e.etag);
    if (a === undefined || a !== plainMd5(dstEtag)) {
      const [s, d] = await Promise.all([digestOf(this.src, e.key, this.o.signal), digestOf(this.dst, e.key, this.o.signal)]);
      if (s.digest !== d.digest || s.size !== d.size) {
        const copied = await this.#copy(e, true);
        if (!copied.checked) throw new ChecksumMismatchError(`${e.key} differed from its destination copy and could not be verified after copying it again: the source is kept`);
        await this.src.delete(e.key, { signal: this.o.signal });
        return { ...copied, warning: `${e.key} had the same size on both sides but different content: copied again, verified, then deleted from the source` };
      }
      const out = await this.#delete(this.src, e);
      return { ...out, checked: true };
    }
    return this.#delete(this.src, e);
  }

  async #delete(store: ObjectStore, e: Entry): Promise<Outcome> {
    if (this.o.dry) return { result: 'deleted', bytes: 0, checked: false };
    try {
      await store.delete(e.key, { signal: this.o.signal });
    } catch (err) {
      // A directory that still holds excluded or failed keys stays.
      if (e.isDir && err instanceof NotEmptyError) {
        return { result: 'kept', bytes: 0, checked: false, warning: `${store.description}${e.key} is not empty: kept` };
      }
      throw err;
    }
    return { result: 'deleted', bytes: 0, checked: false };
  }

  /** `verify`: compare contents after the copy even without --check-new. */
  async #copy(e: Entry, verify = this.#verify): Promise<Outcome> {
    if (this.o.dry) return { result: 'copied', bytes: e.isDir ? 0 : e.size, checked: false };
    let outcome: Outcome;
    try {
      if (this.o.links && e.isSymlink) outcome = await this.#copyLink(e);
      else if (e.isDir) outcome = await this.#makeDir(e);
      else outcome = await this.#copyFile(e, verify);
    } catch (err) {
      // The source key went away after it was listed: nothing is lost by not copying it.
      if (retryClassOf(err) === 'notFound' && !(await this.#sourceExists(e.key))) {
        return { result: 'skipped', bytes: 0, checked: false, warning: `${e.key} vanished from the source before it was copied` };
      }
      throw err;
    }
    if (this.o.deleteSrcAfter && !e.isDir) {
      // Only what was proven copied leaves the source (a symlink is proven by being recreated).
      if (!outcome.checked && !(this.o.links && e.isSymlink)) throw new ChecksumMismatchError(`${e.key} was copied but not verified: kept on the source`);
      await this.src.delete(e.key, { signal: this.o.signal });
    }
    return outcome;
  }

  async #sourceExists(key: string): Promise<boolean> {
    try {
      await this.src.head(key, this.#asListed);
      return true;
    } catch (err) {
      if (err instanceof NotFoundError || retryClassOf(err) === 'notFound') return false;
      throw err;
    }
  }

  async #copyLink(e: Entry): Promise<Outcome> {
    if (!this.dst.symlink) throw new FatalError(`${this.dst.description} cannot hold symlinks (copying ${e.key})`);
    await this.dst.symlink(e.key, e.target ?? '');
    if (this.#mtime && this.dst.setAttrs) await this.dst.setAttrs(e.key, { mtime: e.mtime }, { isSymlink: true });
    return { result: 'copied', bytes: 0, checked: false };
  }

  async #makeDir(e: Entry): Promise<Outcome> {
    if (this.dst.features.dirs && this.dst.mkdir) {
      await this.dst.mkdir(e.key, this.#perms && e.mode !== undefined ? { mode: e.mode } : {});
    } else {
      await this.dst.put(e.key, Buffer.alloc(0), { size: 0, signal: this.o.signal });
    }
    return { result: 'copied', bytes: 0, checked: false };
  }

  async #finishDir(e: Entry): Promise<void> {
    if (!this.dst.setAttrs || !this.dst.features.dirs) return;
    const attrs: { mtime?: number; mode?: number; uid?: number; gid?: number } = {};
    if (this.#mtime) attrs.mtime = e.mtime;
    if (this.#perms && e.mode !== undefined) attrs.mode = e.mode;
    if (this.#owner && e.uid !== undefined && e.gid !== undefined) {
      attrs.uid = e.uid;
      attrs.gid = e.gid;
    }
    if (Object.keys(attrs).length > 0) await this.dst.setAttrs(e.key, attrs);
  }

  async #setPerms(e: Entry): Promise<void> {
    if (!this.#perms) return;
    const attrs: { mode?: number; uid?: number; gid?: number } = {};
    if (e.mode !== undefined) attrs.mode = e.mode;
    if (this.#owner && e.uid !== undefined && e.gid !== undefined) {
      attrs.uid = e.uid;
      attrs.gid = e.gid;
    }
    await this.dst.setAttrs!(e.key, attrs, e.isSymlink ? { isSymlink: true } : {});
  }

  #serverSide(): boolean {
    return copiesServerSide(this.src, this.dst, this.o.limiter !== undefined);
  }

  /** One part of a large object (a split copy): a range of the source, streamed into the destination's upload. */
  async #copyPart(t: Omit<Extract<Task, { op: 'copyPart' }>, 'id'>): Promise<Outcome> {
    const multipart = this.dst.multipart;
    if (!multipart) throw new FatalError(`${this.dst.description} takes no multipart uploads (part ${t.part} of ${t.entry.key})`);
    // The manager splits no copy in a dry run; a part is never "pretend" uploaded.
    if (this.o.dry) throw new FatalError(`a dry run uploads no parts (part ${t.part} of ${t.entry.key})`);
    const size = t.last - t.first + 1;
    const body = await this.src.get(t.entry.key, { offset: t.first, length: size, signal: this.o.signal, sizeHint: size, ...this.#reading });
    const { result: part, read } = await this.#pipe(body, false, (data) => multipart.uploadPart(t.upload, t.part, { body: data, size }, { signal: this.o.signal }));
    if (read !== size) {
      throw new SourceChangedError(`${this.src.description}${t.entry.key} changed during the copy: bytes ${t.first}-${t.last} (part ${t.part}) read ${read} bytes`);
    }
    return { result: 'copied', bytes: size, checked: false, part };
  }

  /**
   * Stream `body` (throttled by --bwlimit, counted for progress, hashed when `digest`) into
   * `write`. A failure of the source wins over what it did to the destination; the bytes read and
   * their MD5 come back with what `write` returned.
   */
  async #pipe<T>(body: Readable, digest: boolean, write: (data: Readable) => Promise<T>): Promise<{ result: T; read: number; digest: string | undefined }> {
    const tap = new DigestTap(this.o.onBytes, digest);
    const piped = chain(this.o.limiter ? [body, throttle(this.o.limiter, this.o.signal), tap.stream] : [body, tap.stream]);
    let result: T;
    try {
      result = await write(piped.out);
    } catch (err) {
      // The destination gave up: release the source (a response body holds a connection).
      piped.destroy();
      throw piped.failure() ?? err;
    }
    const failure = piped.failure();
    if (failure) throw failure;
    return { result, read: tap.size, digest: tap.digest() };
  }

  async #copyFile(e: Entry, verify: boolean): Promise<Outcome> {
    const put: PutOptions & { size: number } = { size: e.size, signal: this.o.signal };
    if (this.#mtime) put.mtime = e.mtime;
    if (this.#perms && e.mode !== undefined) put.mode = e.mode;
    if (this.o.storageClass) put.storageClass = this.o.storageClass;

    let srcDigest: string | undefined;
    if (this.#serverSide()) {
      let reported = 0;
      const onBytes = this.o.onBytes;
      if (onBytes) {
        put.onProgress = (bytes) => {
          if (bytes > reported) {
            onBytes(bytes - reported);
            reported = bytes;
          }
        };
      }
      await this.dst.copyFrom!(e.key, this.src.copySource!(e.key, this.#reading), put);
      onBytes?.(Math.max(0, e.size - reported));
    } else if (e.size <= WHOLE) {
      // A small object travels as one buffer: no stream machinery on either side, and stores send
      // a buffer in one write (S3: one request body with its length).
      // Charged before it is read: the download, not only the upload, keeps to --bwlimit.
      if (this.o.limiter) await this.o.limiter.take(e.size, this.o.signal);
      const body = await this.src.get(e.key, { signal: this.o.signal, sizeHint: e.size, ...this.#reading });
      const data = await readUpTo(body, e.size + 1, this.o.signal);
      if (data.length !== e.size) {
        throw new SourceChangedError(`${this.src.description}${e.key} changed during the copy: listed ${e.size} bytes, read ${data.length}${data.length > e.size ? ' or more' : ''}`);
      }
      this.o.onBytes?.(data.length);
      if (verify) srcDigest = createHash('md5').update(data).digest('hex');
      await this.dst.put(e.key, data, put);
    } else {
      const body = await this.src.get(e.key, { signal: this.o.signal, sizeHint: e.size, ...this.#reading });
      const { read, digest } = await this.#pipe(body, verify, (data) => this.dst.put(e.key, data, put));
      if (read !== e.size) {
        throw new SourceChangedError(`${this.src.description}${e.key} changed during the copy: listed ${e.size} bytes, read ${read}`);
      }
      srcDigest = digest;
    }
    if (this.#owner && e.uid !== undefined && e.gid !== undefined) {
      await this.dst.setAttrs!(e.key, { uid: e.uid, gid: e.gid, ...(e.mode === undefined ? {} : { mode: e.mode }) });
    }
    if (this.o.checkChange) {
      const now = await this.src.head(e.key, this.#asListed);
      if (now.size !== e.size || Math.floor(now.mtime / 1000) !== Math.floor(e.mtime / 1000)) {
        throw new SourceChangedError(`${this.src.description}${e.key} changed during the copy (size ${e.size} → ${now.size})`);
      }
    }
    let checked = false;
    if (verify) {
      const [s, d] = await Promise.all([
        srcDigest === undefined ? digestOf(this.src, e.key, this.o.signal).then((x) => x.digest) : Promise.resolve(srcDigest),
        digestOf(this.dst, e.key, this.o.signal),
      ]);
      if (s !== d.digest) throw new ChecksumMismatchError(`checksums of ${e.key} differ after the copy (source ${s}, destination ${d.digest})`);
      checked = true;
    }
    return { result: 'copied', bytes: e.size, checked };
  }

  /** `keepSource`: --delete-src, but the planner withheld this deletion (--max-deletes, an incomplete listing). */
  async #check(e: Entry, keepSource: boolean): Promise<Outcome> {
    if (this.o.dry) return { result: 'skipped', bytes: 0, checked: true };
    const [s, d] = await Promise.all([digestOf(this.src, e.key, this.o.signal), digestOf(this.dst, e.key, this.o.signal)]);
    if (s.digest !== d.digest || s.size !== d.size) {
      const out = await this.#copy(e, this.#verify || this.o.deleteSrc);
      return { ...out, checked: true };
    }
    if (this.o.deleteSrc && !keepSource) {
      await this.src.delete(e.key, { signal: this.o.signal });
      return { result: 'deleted', bytes: 0, checked: true };
    }
    if (this.o.perms) {
      const cur = await this.dst.head(e.key);
      if ((cur.mode ?? 0) !== (e.mode ?? 0)) {
        await this.#setPerms(e);
        return { result: 'copied', bytes: 0, checked: true };
      }
    }
    return { result: 'skipped', bytes: 0, checked: true };
  }
}

/**
 * Whether copies from `src` to `dst` go server-side (copyFrom): both stores of one scope, and not a
 * disk-to-disk copy that --bwlimit (`limited`) must see the bytes of.
 */
export function copiesServerSide(src: ObjectStore, dst: ObjectStore, limited: boolean): boolean {
  const s = src.features.copy;
  const d = dst.features.copy;
  if (!s || !d || s.scope !== d.scope || !src.copySource || !dst.copyFrom) return false;
  return !(d.local && limited);
}

/**
 * Pipe a source through transforms. An error anywhere destroys every stage and is kept for the
 * caller; the consumer stopping early destroys the source. Lighter than stream.pipeline, whose
 * per-call AbortController costs ~80 µs of a small object's copy.
 */
function chain(stages: [Readable, ...Duplex[]]): { out: Readable; failure(): Error | undefined; destroy(): void } {
  let failure: Error | undefined;
  const fail = (err: Error) => {
    if (failure) return;
    failure = err;
    for (const s of stages) s.destroy(err);
  };
  let prev: Readable = stages[0];
  prev.on('error', fail);
  for (const s of stages.slice(1) as Duplex[]) {
    s.on('error', fail);
    prev = prev.pipe(s);
  }
  const out = prev;
  out.once('close', () => {
    if (!out.readableEnded && !failure) for (const s of stages) if (!s.destroyed) s.destroy();
  });
  return {
    out,
    failure: () => failure,
    destroy: () => {
      for (const s of stages) if (!s.destroyed) s.destroy();
    },
  };
}

/** Objects up to this size are read whole and written from one buffer. */
const WHOLE = 1 << 20;

/** A stream's bytes, but no more than `max` (the rest is left unread and the stream destroyed). */
async function readUpTo(body: Readable, max: number, signal: AbortSignal): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of body) {
      signal.throwIfAborted();
      const b = Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array);
      chunks.push(b);
      n += b.length;
      if (n >= max) break;
    }
  } finally {
    if (!body.readableEnded) body.destroy();
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, n);
}

/** An ETag that is the MD5 of the content (not a multipart or encrypted object's), lower case; else undefined. */
function plainMd5(etag: string | undefined): string | undefined {
  if (etag === undefined) return undefined;
  const t = etag.replace(/^W\//, '').replace(/"/g, '').toLowerCase();
  return /^[0-9a-f]{32}$/.test(t) ? t : undefined;
}

/**
 * Remove the directory `dir` when nothing but empty directories is under it (no file, link or
 * anything else), deepest first; false, leaving everything, when it holds anything else. Without
 * --dirs, the directories that held keys --delete-dst removed are still there, empty, and may
 * stand where a file must go.
 */
async function removeEmptyTree(store: ObjectStore, dir: string, signal: AbortSignal): Promise<boolean> {
  const dirs: string[] = [];
  try {
    for await (const page of store.list({ prefix: dir, followSymlinks: false, signal })) {
      for (const e of page) {
        if (!e.isDir || e.isSymlink || dirs.length >= 10_000) return false;
        dirs.push(e.key);
      }
    }
    for (const d of dirs.reverse()) await store.delete(d, { signal });
    await store.delete(dir, { signal });
    return true;
  } catch {
    // The copy that follows fails with the store's own words.
    return false;
  }
}
