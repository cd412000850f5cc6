import { Readable } from 'node:stream';
import { NotFoundError } from './errors.js';
import { compareKeys } from './keys.js';
import type { Backend } from './registry.js';
import type { Attrs, CopySource, Entry, Features, GetOptions, ListOptions, ObjectStore, PutOptions } from './types.js';

const PAGE = 1000;
const EMPTY = Buffer.alloc(0);

/**
 * An in-process store for tests and benchmarks. Objects live in sorted parallel arrays rather than
 * one object per key, so a million keys cost tens of megabytes, not hundreds.
 */
export class MemStore implements ObjectStore {
  readonly scheme = 'mem';
  readonly description: string;
  readonly features: Features;
  #keys: string[] = [];
  #data: Buffer[] = [];
  // Attributes in typed columns: 20 bytes a key instead of four boxed array slots.
  #mtime = new Float64Array(16);
  #mode = new Uint32Array(16);
  #uid = new Uint32Array(16);
  #gid = new Uint32Array(16);
  /** Symlink targets by key; links are rare, so a map. */
  #links = new Map<string, string>();

  constructor(readonly name: string) {
    this.description = `mem://${name}`;
    this.features = {
      copy: { scope: 'mem:' + name },
      attrs: { mode: true, owner: true, mtime: true },
      symlinks: true,
    };
  }

  get size(): number {
    return this.#keys.length;
  }

  /** First index whose key is >= key (or > key when `after`). */
  #bound(key: string, after: boolean): number {
    let lo = 0;
    let hi = this.#keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const c = compareKeys(this.#keys[mid]!, key);
      if (c < 0 || (after && c === 0)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  #index(key: string): number {
    const i = this.#bound(key, false);
    return i < this.#keys.length && this.#keys[i] === key ? i : -1;
  }

  #entry(i: number): Entry {
    const key = this.#keys[i]!;
    const e: Entry = { key, size: this.#data[i]!.length, mtime: this.#mtime[i]!, isDir: key.endsWith('/'), mode: this.#mode[i]!, uid: this.#uid[i]!, gid: this.#gid[i]! };
    const target = this.#links.get(key);
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
    const n = this.#keys.length;
    let i: number;
    if (n === 0 || compareKeys(this.#keys[n - 1]!, key) < 0) i = n;
    else {
      i = this.#bound(key, false);
      if (this.#keys[i] !== key) i = this.#insertAt(i, key);
      else this.#links.delete(key);
      this.#fill(i, data, attrs);
      return;
    }
    this.#insertAt(i, key);
    this.#fill(i, data, attrs);
  }

  #fill(i: number, data: Buffer, attrs: Attrs): void {
    this.#data[i] = data;
    this.#mtime[i] = attrs.mtime ?? Date.now();
    this.#mode[i] = attrs.mode ?? 0o644;
    this.#uid[i] = attrs.uid ?? 0;
    this.#gid[i] = attrs.gid ?? 0;
  }

  /** Open a slot at index i for a new key. */
  #insertAt(i: number, key: string): number {
    const n = this.#keys.length;
    if (n === this.#mtime.length) {
      const grow = <T extends Float64Array | Uint32Array>(a: T): T => {
        const b = new (a.constructor as new (n: number) => T)(a.length * 2);
        b.set(a);
        return b;
      };
      this.#mtime = grow(this.#mtime);
      this.#mode = grow(this.#mode);
      this.#uid = grow(this.#uid);
      this.#gid = grow(this.#gid);
    }
    if (i < n) {
      for (const a of [this.#mtime, this.#mode, this.#uid, this.#gid]) a.copyWithin(i + 1, i, n);
      this.#keys.splice(i, 0, key);
      this.#data.splice(i, 0, EMPTY);
    } else {
      this.#keys.push(key);
      this.#data.push(EMPTY);
    }
    return i;
  }

  async *list(options: ListOptions = {}): AsyncIterable<Entry[]> {
    const prefix = options.prefix ?? '';
    let i = this.#bound(prefix, false);
    if (options.startAfter !== undefined && compareKeys(options.startAfter, prefix) >= 0) i = this.#bound(options.startAfter, true);
    const delimiter = options.delimiter;
    let page: Entry[] = [];
    while (i < this.#keys.length) {
      options.signal?.throwIfAborted();
      const key = this.#keys[i]!;
      if (!key.startsWith(prefix)) break;
      const d = delimiter ? key.indexOf(delimiter, prefix.length) : -1;
      if (d >= 0) {
        const common = key.slice(0, d + delimiter!.length);
        page.push({ key: common, size: 0, mtime: 0, isDir: true });
        i = this.#skipPrefix(common, i);
      } else {
        page.push(this.#entry(i));
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
  #skipPrefix(common: string, i: number): number {
    let lo = i;
    let hi = this.#keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#keys[mid]!.startsWith(common) || compareKeys(this.#keys[mid]!, common) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  async head(key: string): Promise<Entry> {
    const i = this.#index(key);
    if (i < 0) throw new NotFoundError(`${this.description}: ${JSON.stringify(key)} not found`);
    return this.#entry(i);
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const i = this.#index(key);
    if (i < 0) throw new NotFoundError(`${this.description}: ${JSON.stringify(key)} not found`);
    const data = this.#data[i]!;
    const start = Math.min(options.offset ?? 0, data.length);
    const end = options.length === undefined ? data.length : Math.min(data.length, start + options.length);
    return Readable.from([data.subarray(start, end)], { objectMode: false });
  }

  async put(key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    let data: Buffer;
    if (Buffer.isBuffer(body)) data = body;
    else {
      const chunks: Buffer[] = [];
      for await (const c of body) {
        options.signal?.throwIfAborted();
        chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array));
      }
      data = chunks.length === 0 ? EMPTY : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    }
    const attrs: Attrs = {};
    if (options.mtime !== undefined) attrs.mtime = options.mtime;
    if (options.mode !== undefined) attrs.mode = options.mode;
    this.set(key, data, attrs);
  }

  async delete(key: string): Promise<void> {
    const i = this.#index(key);
    if (i < 0) return;
    const n = this.#keys.length;
    for (const a of [this.#mtime, this.#mode, this.#uid, this.#gid]) a.copyWithin(i, i + 1, n);
    this.#keys.splice(i, 1);
    this.#data.splice(i, 1);
    this.#links.delete(key);
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
    this.set(key, this.#data[i]!, { mtime: options?.mtime ?? Date.now(), mode: this.#mode[i]! });
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
