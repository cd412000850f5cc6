import { ListOrderError } from '../../shared/errors.js';
import { compareKeys } from '../../shared/storage/keys.js';
import type { Entry } from '../../shared/storage/types.js';

export type Diff =
  | { kind: 'srcOnly'; src: Entry }
  | { kind: 'dstOnly'; dst: Entry }
  | { kind: 'both'; src: Entry; dst: Entry };

/** Reads one sorted listing, a page at a time, and checks that its keys strictly increase. */
class Cursor {
  #it: AsyncIterator<Entry[]>;
  #page: Entry[] = [];
  #i = 0;
  #prev: string | undefined;
  done = false;

  constructor(pages: AsyncIterable<Entry[]>, readonly name: string) {
    this.#it = pages[Symbol.asyncIterator]();
  }

  /** Make the next entry available; false when the listing has ended. */
  async fill(): Promise<boolean> {
    while (this.#i >= this.#page.length) {
      if (this.done) return false;
      const r = await this.#it.next();
      if (r.done) {
        this.done = true;
        return false;
      }
      this.#page = r.value;
      this.#i = 0;
    }
    return true;
  }

  /** The current entry, or undefined when the loaded page is used up (call fill()). */
  peek(): Entry | undefined {
    return this.#page[this.#i];
  }

  take(): Entry {
    const e = this.#page[this.#i++]!;
    if (this.#prev !== undefined && compareKeys(this.#prev, e.key) >= 0) throw new ListOrderError(this.name, this.#prev, e.key);
    this.#prev = e.key;
    return e;
  }

  async close(): Promise<void> {
    if (!this.done) {
      this.done = true;
      await this.#it.return?.();
    }
  }
}

/**
 * Merge-join two listings in UTF-8 key order: every key comes out once, as present on the source
 * only, on the destination only, or on both. Yields batches (one per page boundary) so the per-key
 * work is a plain loop. A listing out of order raises ListOrderError naming both keys.
 */
export async function* mergeListings(
  src: AsyncIterable<Entry[]>,
  dst: AsyncIterable<Entry[]>,
  names: { src: string; dst: string } = { src: 'source', dst: 'destination' },
): AsyncIterable<Diff[]> {
  const a = new Cursor(src, names.src);
  const b = new Cursor(dst, names.dst);
  try {
    let aLive = await a.fill();
    let bLive = await b.fill();
    while (aLive || bLive) {
      const out: Diff[] = [];
      for (;;) {
        const x = aLive ? a.peek() : undefined;
        const y = bLive ? b.peek() : undefined;
        if (x && y) {
          const c = compareKeys(x.key, y.key);
          if (c < 0) out.push({ kind: 'srcOnly', src: a.take() });
          else if (c > 0) out.push({ kind: 'dstOnly', dst: b.take() });
          else out.push({ kind: 'both', src: a.take(), dst: b.take() });
        } else if (x && !bLive) out.push({ kind: 'srcOnly', src: a.take() });
        else if (y && !aLive) out.push({ kind: 'dstOnly', dst: b.take() });
        else break; // a loaded page ran out: refill it
      }
      if (out.length > 0) yield out;
      if (aLive && a.peek() === undefined) aLive = await a.fill();
      if (bLive && b.peek() === undefined) bLive = await b.fill();
    }
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}
