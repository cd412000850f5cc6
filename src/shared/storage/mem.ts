import { createHash, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { AlreadyExistsError, FatalError, NotFoundError } from '../errors.js';
import { abortable, abortablePages, checkDeclaredSize, destroyOnAbort, orAborted, readBody, sliced, throwIfAborted } from './body.js';
import { compareKeys, decodeKey, encodeKey } from './keys.js';
import { MiB, multipartUploads, type MultipartRequests, type PartData, type PartLimits } from './multipart.js';
import type { Backend } from './registry.js';
import type { Attrs, CopySource, Entry, Features, GetOptions, ListOptions, MultipartUploads, ObjectStore, PutOptions } from './types.js';

const PAGE = 1000;
const EMPTY = Buffer.alloc(0);
/** S3's: parts of 5 MiB to 5 GiB, at most 10,000. */
const PART_LIMITS: PartLimits = { minPartSize: 5 * MiB, maxPartSize: 5 * 1024 * MiB, maxParts: 10_000 };

/** A multipart upload in progress: its parts as uploaded, by number. */
interface MemUpload {
  key: string;
  parts: Map<number, { etag: string; data: Buffer }>;
}

/**
 * An in-process store for tests and benchmarks. Keys live as their bytes (UTF-8, and a key's raw
 * bytes as they are: keys.ts encodeKey) in one byte buffer and attributes in typed columns, so a
 * million keys cost about 60 bytes each and no garbage-collected object per key; strings are made
 * only for the entries being listed.
 */
export class MemStore implements ObjectStore {
  readonly scheme = 'mem';
  readonly description: string;
  readonly features: Features;
  readonly multipart: MultipartUploads;
  #n = 0;
  /** Key i is #keyBytes[#keyEnd[i-1] .. #keyEnd[i]] (from 0 for i = 0). */
  #keyBytes: Buffer;
  #keyEnd: Uint32Array;
  #mtime: Float64Array;
  #mode: Uint32Array;
  #uid: Uint32Array;
  #gid: Uint32Array;
  /** Object bodies by index into #blobs; a body written to many keys is stored once. */
  #blob: Uint32Array;
  #blobs: Buffer[] = [EMPTY];
  #blobIndex = new Map<Buffer, number>([[EMPTY, 0]]);
  /** Symlink targets by key; links are rare, so a map. */
  #links = new Map<string, string>();
  readonly #uploads = new Map<string, MemUpload>();

  constructor(
    readonly name: string,
    /** `parts`: the multipart limits (default S3's); tests lower them to split small objects. */
    options: { capacity?: number; keyBytes?: number; parts?: PartLimits } = {},
  ) {
    this.description = `mem://${name}`;
    this.features = {
      copy: { scope: 'mem:' + name },
      multipart: options.parts ?? PART_LIMITS,
      attrs: { mode: true, owner: true, mtime: true },
      symlinks: true,
      // Keys are kept as their bytes (encodeKey), raw ones too, and listed back as the same keys.
      rawNames: true,
      // One thread: the check and the store below happen with no await between them.
      exclusiveCreate: true,
    };
    const requests = this.#uploadRequests();
    this.multipart = multipartUploads(this.features.multipart!, () => requests, (op, key) => `${this.description} multipart ${op} ${JSON.stringify(key)}`);
    const cap = Math.max(16, options.capacity ?? 16);
    this.#keyBytes = Buffer.allocUnsafe(Math.max(256, options.keyBytes ?? cap * 32));
    this.#keyEnd = new Uint32Array(cap);
    this.#mtime = new Float64Array(cap);
    this.#mode = new Uint32Array(cap);
    this.#uid = new Uint32Array(cap);
    this.#gid = new Uint32Array(cap);
    this.#blob = new Uint32Array(cap);
  }

  get size(): number {
    return this.#n;
  }

  #start(i: number): number {
    return i === 0 ? 0 : this.#keyEnd[i - 1]!;
  }

  /** Byte order of key i against `b` (UTF-8 byte order is S3's key order). */
  #cmp(i: number, b: Buffer): number {
    return this.#keyBytes.compare(b, 0, b.length, this.#start(i), this.#keyEnd[i]!);
  }

  #keyAt(i: number): string {
    const key = this.#keyBytes.toString('utf8', this.#start(i), this.#keyEnd[i]!);
    // U+FFFD: raw bytes (features.rawNames), or U+FFFD itself.
    return key.includes('\uFFFD') ? decodeKey(this.#keyBytes.subarray(this.#start(i), this.#keyEnd[i]!)) : key;
  }

  #startsWith(i: number, prefix: Buffer): boolean {
    const s = this.#start(i);
    return this.#keyEnd[i]! - s >= prefix.length && this.#keyBytes.compare(prefix, 0, prefix.length, s, s + prefix.length) === 0;
  }

  /** First index whose key is >= key (or > key when `after`). */
  #bound(key: Buffer, after: boolean): number {
    let lo = 0;
    let hi = this.#n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const c = this.#cmp(mid, key);
      if (c < 0 || (after && c === 0)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  #index(key: string): number {
    const b = encodeKey(key);
    const i = this.#bound(b, false);
    return i < this.#n && this.#cmp(i, b) === 0 ? i : -1;
  }

  #entry(i: number, key = this.#keyAt(i)): Entry {
    const e: Entry = { key, size: this.#blobs[this.#blob[i]!]!.length, mtime: this.#mtime[i]!, isDir: key.endsWith('/'), mode: this.#mode[i]!, uid: this.#uid[i]!, gid: this.#gid[i]! };
    const target = this.#links.size === 0 ? undefined : this.#links.get(key);
    if (target !== undefined) {
      e.isSymlink = true;
      e.target = target;
    }
    return e;
  }

  /**
   * Store an object. Appending keys in ascending order is O(1), which is how benchmarks fill a
   * store with a million keys.
   */
  set(key: string, data: Buffer, attrs: Attrs = {}): void {
    const b = encodeKey(key);
    let i: number;
    if (this.#n === 0 || this.#cmp(this.#n - 1, b) < 0) i = this.#insertAt(this.#n, b);
    else {
      i = this.#bound(b, false);
      if (i < this.#n && this.#cmp(i, b) === 0) this.#links.delete(key);
      else this.#insertAt(i, b);
    }
    let blob = this.#blobIndex.get(data);
    if (blob === undefined) {
      blob = this.#blobs.push(data) - 1;
      this.#blobIndex.set(data, blob);
    }
    this.#blob[i] = blob;
    this.#mtime[i] = attrs.mtime ?? Date.now();
    this.#mode[i] = attrs.mode ?? 0o644;
    this.#uid[i] = attrs.uid ?? 0;
    this.#gid[i] = attrs.gid ?? 0;
  }

  /** Open slot i for a new key. */
  #insertAt(i: number, key: Buffer): number {
    const n = this.#n;
    if (n === this.#keyEnd.length) {
      const grow = <T extends Float64Array | Uint32Array>(a: T): T => {
        const b = new (a.constructor as new (n: number) => T)(a.length * 2);
        b.set(a);
        return b;
      };
      this.#keyEnd = grow(this.#keyEnd);
      this.#mtime = grow(this.#mtime);
      this.#mode = grow(this.#mode);
      this.#uid = grow(this.#uid);
      this.#gid = grow(this.#gid);
      this.#blob = grow(this.#blob);
    }
    const used = n === 0 ? 0 : this.#keyEnd[n - 1]!;
    if (used + key.length > this.#keyBytes.length) {
      const bigger = Buffer.allocUnsafe(Math.max(this.#keyBytes.length * 2, used + key.length));
      this.#keyBytes.copy(bigger, 0, 0, used);
      this.#keyBytes = bigger;
    }
    const at = this.#start(i);
    if (i < n) {
      this.#keyBytes.copy(this.#keyBytes, at + key.length, at, used);
      for (const a of [this.#keyEnd, this.#mtime, this.#mode, this.#uid, this.#gid, this.#blob]) a.copyWithin(i + 1, i, n);
      for (let j = i + 1; j <= n; j++) this.#keyEnd[j]! += key.length;
    }
    key.copy(this.#keyBytes, at);
    this.#keyEnd[i] = at + key.length;
    this.#n = n + 1;
    return i;
  }

  list(options: ListOptions = {}): AsyncIterable<Entry[]> {
    return abortablePages(this.#list(options), options.signal, `${this.description} list ${JSON.stringify(options.prefix ?? '')}`);
  }

  async *#list(options: ListOptions): AsyncIterable<Entry[]> {
    const prefix = options.prefix ?? '';
    const p = encodeKey(prefix);
    let i = this.#bound(p, false);
    if (options.startAfter !== undefined && compareKeys(options.startAfter, prefix) >= 0) i = this.#bound(encodeKey(options.startAfter), true);
    const delimiter = options.delimiter;
    const end = p.length === 0 ? this.#n : this.#skipPrefix(p, i);
    let page: Entry[] = [];
    while (i < end) {
      const key = this.#keyAt(i);
      const d = delimiter ? key.indexOf(delimiter, prefix.length) : -1;
      if (d >= 0) {
        const common = key.slice(0, d + delimiter!.length);
        page.push({ key: common, size: 0, mtime: 0, isDir: true });
        i = this.#skipPrefix(encodeKey(common), i);
      } else {
        page.push(this.#entry(i, key));
        i++;
      }
      if (page.length >= PAGE) {
        yield page;
        page = [];
      }
    }
    if (page.length > 0) yield page;
  }

  /** Index of the first key after `i` that does not start with `common`. */
  #skipPrefix(common: Buffer, i: number): number {
    let lo = i;
    let hi = this.#n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#startsWith(mid, common) || this.#cmp(mid, common) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  async head(key: string): Promise<Entry> {
    const i = this.#index(key);
    if (i < 0) throw new NotFoundError(`${this.description}: ${JSON.stringify(key)} not found`);
    return this.#entry(i);
  }

  /** The bytes come in slices of at most 1 MiB (no copy), so that a signal can stop a reader between them. */
  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const what = `${this.description} get ${JSON.stringify(key)}`;
    throwIfAborted(options.signal, what);
    const i = this.#index(key);
    if (i < 0) throw new NotFoundError(`${this.description}: ${JSON.stringify(key)} not found`);
    const data = this.#blobs[this.#blob[i]!]!;
    const start = Math.min(options.offset ?? 0, data.length);
    const end = options.length === undefined ? data.length : Math.min(data.length, start + options.length);
    return abortable(sliced(data.subarray(start, end)), options.signal, what);
  }

  /** The key changes only once the whole body is in: a failed or interrupted put leaves it as it was. */
  async put(key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    const what = `${this.description} put ${JSON.stringify(key)}`;
    const signal = options.signal;
    const unhook = destroyOnAbort(body, signal, what);
    let data: Buffer;
    try {
      throwIfAborted(signal, what);
      if (Buffer.isBuffer(body)) {
        checkDeclaredSize(body, options.size, what);
        data = body;
      } else data = await readBody(body, options.size, what);
      throwIfAborted(signal, what);
    } catch (err) {
      if (!Buffer.isBuffer(body)) body.destroy();
      throw orAborted(err, signal, what);
    } finally {
      unhook();
    }
    if (data.length === 0) data = EMPTY;
    if (options.ifAbsent && this.#index(key) >= 0) throw new AlreadyExistsError(`${what}: the key exists already`);
    const attrs: Attrs = {};
    if (options.mtime !== undefined) attrs.mtime = options.mtime;
    if (options.mode !== undefined) attrs.mode = options.mode;
    this.set(key, data, attrs);
  }

  async delete(key: string): Promise<void> {
    const i = this.#index(key);
    if (i < 0) return;
    const n = this.#n;
    const at = this.#start(i);
    const len = this.#keyEnd[i]! - at;
    this.#keyBytes.copy(this.#keyBytes, at, at + len, this.#keyEnd[n - 1]!);
    for (const a of [this.#keyEnd, this.#mtime, this.#mode, this.#uid, this.#gid, this.#blob]) a.copyWithin(i, i + 1, n);
    for (let j = i; j < n - 1; j++) this.#keyEnd[j]! -= len;
    this.#n = n - 1;
    this.#links.delete(key);
  }

  /** Multipart uploads started and neither completed nor aborted. */
  get openUploads(): number {
    return this.#uploads.size;
  }

  /** Checks completions as S3 does: known ETags, ascending part numbers, every part but the last at least the minimum. */
  #uploadRequests(): MultipartRequests<PartData> {
    const upload = (ref: { key: string; uploadId: string }, what: string): MemUpload => {
      const u = this.#uploads.get(ref.uploadId);
      if (!u || u.key !== ref.key) throw new NotFoundError(`${this.description}: ${what} ${JSON.stringify(ref.key)}: no such upload`);
      return u;
    };
    return {
      create: async (key) => {
        const id = randomUUID();
        this.#uploads.set(id, { key, parts: new Map() });
        return id;
      },
      uploadPart: async (ref, n, part, signal) => {
        const what = `${this.description} part ${n} of ${JSON.stringify(ref.key)}`;
        upload(ref, `part ${n} of`);
        const data = Buffer.isBuffer(part.body) ? part.body : await readBody(abortable(part.body, signal, what), part.size, what);
        throwIfAborted(signal, what);
        const etag = createHash('md5').update(data).digest('hex');
        // Aborted meanwhile: the part goes nowhere.
        upload(ref, `part ${n} of`).parts.set(n, { etag, data });
        return etag;
      },
      complete: async (ref, parts) => {
        const u = upload(ref, 'complete');
        const min = this.features.multipart!.minPartSize;
        const chunks: Buffer[] = [];
        parts.forEach((p, i) => {
          const have = u.parts.get(p.partNumber);
          if (i > 0 && p.partNumber <= parts[i - 1]!.partNumber) throw new FatalError(`${this.description}: complete ${JSON.stringify(ref.key)}: parts out of order`);
          if (!have || have.etag !== p.etag) throw new FatalError(`${this.description}: complete ${JSON.stringify(ref.key)}: part ${p.partNumber} with ETag ${p.etag} was not uploaded`);
          if (i < parts.length - 1 && have.data.length < min) throw new FatalError(`${this.description}: complete ${JSON.stringify(ref.key)}: part ${p.partNumber} is smaller than ${min} bytes`);
          chunks.push(have.data);
        });
        this.#uploads.delete(ref.uploadId);
        this.set(ref.key, Buffer.concat(chunks));
      },
      abort: async (ref) => {
        upload(ref, 'abort');
        this.#uploads.delete(ref.uploadId);
      },
    };
  }

  async symlink(key: string, target: string): Promise<void> {
    this.set(key, Buffer.from(target));
    this.#links.set(key, target);
  }

  async setAttrs(key: string, attrs: Attrs): Promise<void> {
    const i = this.#index(key);
    if (i < 0) throw new NotFoundError(`${this.description}: ${JSON.stringify(key)} not found`);
    if (attrs.mtime !== undefined) this.#mtime[i] = attrs.mtime;
    if (attrs.mode !== undefined) this.#mode[i] = attrs.mode;
    if (attrs.uid !== undefined) this.#uid[i] = attrs.uid;
    if (attrs.gid !== undefined) this.#gid[i] = attrs.gid;
  }

  copySource(key: string): CopySource {
    return { scope: 'mem:' + this.name, location: key };
  }

  async copyFrom(key: string, source: CopySource, options?: PutOptions): Promise<void> {
    const from = source.location as string;
    const i = this.#index(from);
    if (i < 0) throw new NotFoundError(`${this.description}: ${JSON.stringify(from)} not found`);
    this.set(key, this.#blobs[this.#blob[i]!]!, { mtime: options?.mtime ?? Date.now(), mode: this.#mode[i]! });
  }
}

/**
 * The named in-process stores of one registry: `mem://NAME` opens the same store each time,
 * within the process that made the registry.
 */
export class MemSpace {
  readonly #stores = new Map<string, MemStore>();
  store(name: string): MemStore {
    let s = this.#stores.get(name);
    if (!s) this.#stores.set(name, (s = new MemStore(name)));
    return s;
  }
}

export function memBackend(space: MemSpace = new MemSpace()): Backend {
  return {
    scheme: 'mem',
    summary: 'mem://NAME[/PREFIX] — in-process store (tests and benchmarks)',
    async open(address) {
      return space.store(address.bucket);
    },
  };
}
