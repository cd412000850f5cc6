import { promises as fsp } from 'node:fs';
import { compareKeys, decodeKey, encodeKey, hasRawBytes } from '../keys.js';

/**
 * The names of a large directory while the walk goes through it: keys (a directory's name ends in
 * '/') in UTF-8 byte order, packed as the length of the name's bytes (u16, little endian) and the
 * bytes themselves (a key's raw bytes as they are: keys.ts encodeKey), about 2 + length bytes a
 * name where a JavaScript string costs 30–50. A file-system thread packs them (and transfers the
 * buffer, no copy); above the list cutoff it writes sorted runs in this form to a temporary file,
 * which the walk merges as it goes.
 */

/** Some keys in order. */
export interface KeyPage {
  keys: string[];
}

/** A directory's keys, a page at a time, in key order. */
export interface KeySource {
  /** Up to `max` keys; none once all were given. */
  next(max: number): Promise<KeyPage>;
  /** Let go of what it holds (the temporary file of a spilled sort). */
  close(): Promise<void>;
}

/** Where the sorted runs of a directory too large to sort in memory went. */
export interface Spill {
  /** A directory of its own (os.tmpdir()), removed whole when the listing is done with it. */
  dir: string;
  file: string;
  /** Byte ranges of the runs, each sorted. */
  runs: { start: number; end: number }[];
}

/** Packs keys; `bytes()` gives the result in an ArrayBuffer of its own (transferable). */
export class KeyPacker {
  #buf: Buffer;
  #len = 0;
  count = 0;

  constructor(capacity = 1 << 16) {
    this.#buf = Buffer.allocUnsafeSlow(capacity);
  }

  add(key: string): void {
    // A UTF-16 code unit takes at most 3 bytes in UTF-8.
    const need = this.#len + 2 + key.length * 3;
    if (need > this.#buf.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(need, this.#buf.length * 2));
      this.#buf.copy(grown, 0, 0, this.#len);
      this.#buf = grown;
    }
    // UTF-8 would write a lone surrogate as U+FFFD: a key holding raw bytes is written as those bytes.
    const n = hasRawBytes(key) ? encodeKey(key).copy(this.#buf, this.#len + 2) : this.#buf.write(key, this.#len + 2, 'utf8');
    if (n > 0xffff) throw new Error(`a name of ${n} bytes is too long to list`);
    this.#buf.writeUInt16LE(n, this.#len);
    this.#len += 2 + n;
    this.count++;
  }

  get length(): number {
    return this.#len;
  }

  /** The packed keys, trimmed to a buffer of their own when much room is left over. */
  bytes(): Uint8Array {
    if (this.#len * 1.25 >= this.#buf.length) return this.#buf.subarray(0, this.#len);
    const out = Buffer.allocUnsafeSlow(this.#len);
    this.#buf.copy(out, 0, 0, this.#len);
    return out;
  }

  clear(): void {
    this.#len = 0;
    this.count = 0;
  }
}

/**
 * Sort keys in UTF-8 byte order. The default sort (UTF-16 code units) agrees with it unless a
 * surrogate meets a code unit above U+E000, or a key holds raw bytes (lone surrogates); one pass
 * over neighbours finds out, and only then does the slower comparator run.
 */
export function sortKeys(keys: string[]): void {
  keys.sort();
  for (let i = 1; i < keys.length; i++) {
    if (compareKeys(keys[i - 1]!, keys[i]!) > 0) {
      keys.sort(compareKeys);
      return;
    }
  }
}

/** Decode records from `buf` starting at `pos`, until `end`, `max` keys, or a record cut off. */
function decode(buf: Buffer, pos: number, end: number, max: number, page: KeyPage): number {
  while (pos + 2 <= end && page.keys.length < max) {
    const len = buf.readUInt16LE(pos);
    if (pos + 2 + len > end) break;
    const key = buf.toString('utf8', pos + 2, pos + 2 + len);
    // U+FFFD: the name holds bytes that are not valid UTF-8 (or U+FFFD itself).
    page.keys.push(key.includes('\uFFFD') ? decodeKey(buf.subarray(pos + 2, pos + 2 + len)) : key);
    pos += 2 + len;
  }
  return pos;
}

/** Keys packed in memory (a directory below the cutoff). */
export class PackedKeys implements KeySource {
  #buf: Buffer | undefined;
  #pos = 0;

  constructor(bytes: Uint8Array) {
    this.#buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  async next(max: number): Promise<KeyPage> {
    const page: KeyPage = { keys: [] };
    if (!this.#buf) return page;
    this.#pos = decode(this.#buf, this.#pos, this.#buf.length, max, page);
    if (this.#pos >= this.#buf.length) this.#buf = undefined;
    return page;
  }

  async close(): Promise<void> {
    this.#buf = undefined;
  }
}

/** What the runs of one merge read at a time, together: a few MiB whatever their number... */
const MERGE_BUFFER = 4 << 20;
/** ...in chunks of these bounds. */
const MIN_CHUNK = 4 << 10;
const MAX_CHUNK = 64 << 10;

/** One sorted run of a spill file, read a chunk at a time. */
class Run {
  keys: string[] = [];
  i = 0;
  #pos: number;
  #carry: Buffer = Buffer.alloc(0);

  constructor(
    readonly fh: fsp.FileHandle,
    start: number,
    readonly end: number,
    readonly chunk: number,
  ) {
    this.#pos = start;
  }

  get head(): string | undefined {
    return this.keys[this.i];
  }

  /** Decode the next chunk; false at the end of the run. */
  async fill(): Promise<boolean> {
    this.keys = [];
    this.i = 0;
    while (this.keys.length === 0) {
      if (this.#pos >= this.end) return false;
      const want = Math.min(this.chunk, this.end - this.#pos);
      const buf = Buffer.allocUnsafe(this.#carry.length + want);
      this.#carry.copy(buf, 0);
      const { bytesRead } = await this.fh.read(buf, this.#carry.length, want, this.#pos);
      if (bytesRead === 0) throw new Error('a spilled listing run ended early');
      this.#pos += bytesRead;
      const end = this.#carry.length + bytesRead;
      const page: KeyPage = { keys: [] };
      const used = decode(buf, 0, end, Infinity, page);
      this.#carry = Buffer.from(buf.subarray(used, end));
      this.keys = page.keys;
    }
    return true;
  }
}

/**
 * The runs of a spill file merged into one sequence (a k-way merge over a heap): memory is a chunk
 * per run (MERGE_BUFFER in all), whatever the size of the directory.
 */
export class SpilledKeys implements KeySource {
  readonly #spill: Spill;
  readonly #release: (spill: Spill) => Promise<void>;
  #fh: fsp.FileHandle | undefined;
  /** Runs with a current key, as a binary heap by that key. */
  #heap: Run[] | undefined;
  #closed = false;

  /** `release` removes the spill (the pool that made it knows it). */
  constructor(spill: Spill, release: (spill: Spill) => Promise<void>) {
    this.#spill = spill;
    this.#release = release;
  }

  async #open(): Promise<Run[]> {
    this.#fh = await fsp.open(this.#spill.file, 'r');
    const heap: Run[] = [];
    const chunk = Math.max(MIN_CHUNK, Math.min(MAX_CHUNK, Math.floor(MERGE_BUFFER / this.#spill.runs.length)));
    for (const r of this.#spill.runs) {
      const run = new Run(this.#fh, r.start, r.end, chunk);
      if (await run.fill()) heap.push(run);
    }
    heap.sort((a, b) => compareKeys(a.head!, b.head!));
    return heap;
  }

  async next(max: number): Promise<KeyPage> {
    const page: KeyPage = { keys: [] };
    if (this.#closed) return page;
    const heap = (this.#heap ??= await this.#open());
    while (heap.length > 0 && page.keys.length < max) {
      const run = heap[0]!;
      page.keys.push(run.head!);
      run.i++;
      if (run.head === undefined && !(await run.fill())) {
        const last = heap.pop()!;
        if (heap.length === 0) break;
        heap[0] = last;
      }
      siftDown(heap);
    }
    return page;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#heap = [];
    await this.#fh?.close().catch(() => {});
    await this.#release(this.#spill);
  }
}

function siftDown(heap: Run[]): void {
  const n = heap.length;
  let i = 0;
  const top = heap[0]!;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    const c = r < n && compareKeys(heap[r]!.head!, heap[l]!.head!) < 0 ? r : l;
    if (compareKeys(heap[c]!.head!, top.head!) >= 0) break;
    heap[i] = heap[c]!;
    i = c;
  }
  heap[i] = top;
}
