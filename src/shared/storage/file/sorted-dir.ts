import type { SortedRecords, WalkRecord } from '../tree.js';
import type { FsPool } from './pool.js';
import type { KeySource } from './sorted-names.js';

/** Pages whose attributes are read at once: one a thread, while the walk goes through the current one. */
const AHEAD = 2;

/**
 * A large directory for the tree walk: its keys come sorted (sorted-names.ts) and their attributes
 * are read a page at a time on the file-system threads, the next pages while the walk goes through
 * the current one. Memory is the packed names (or a chunk per spilled run) and a few pages of
 * records.
 */
export class SortedDir implements SortedRecords {
  readonly #pool: FsPool;
  readonly #path: string;
  readonly #keys: KeySource;
  readonly #follow: boolean;
  readonly #page: number;
  readonly #signal: AbortSignal | undefined;
  /** Pages being read, in order: their records, or null past the end. */
  readonly #ahead: Promise<WalkRecord[] | null>[] = [];
  /** The key source gives its pages one after the other. */
  #keyed: Promise<unknown> = Promise.resolve();
  #done = false;
  #closed = false;

  constructor(o: { pool: FsPool; path: string; keys: KeySource; follow: boolean; page: number; signal?: AbortSignal }) {
    this.#pool = o.pool;
    this.#path = o.path;
    this.#keys = o.keys;
    this.#follow = o.follow;
    this.#page = o.page;
    this.#signal = o.signal;
  }

  /** Start reading the page after those under way. */
  #readAhead(): void {
    const keys = this.#keyed.then(() => {
      this.#signal?.throwIfAborted();
      return this.#keys.next(this.#page);
    });
    this.#keyed = keys.catch(() => {});
    const records = keys.then((page) => (page.keys.length === 0 ? null : this.#pool.statNames(this.#path, page.keys, this.#follow)));
    // A failure is seen when the walk reaches that page; until then it must not count as unhandled.
    records.catch(() => {});
    this.#ahead.push(records);
  }

  /** The records of the next page that has any (names may be gone by now); none at the end. */
  async next(): Promise<WalkRecord[]> {
    while (!this.#done && !this.#closed) {
      while (this.#ahead.length < AHEAD) this.#readAhead();
      const records = await this.#ahead.shift()!;
      if (records === null) {
        this.#done = true;
        break;
      }
      // AHEAD pages stay under way while the walk goes through this one.
      this.#readAhead();
      if (records.length > 0) return records;
    }
    return [];
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // The pages under way still read the key source: let them finish before the source goes.
    await Promise.all(this.#ahead.splice(0).map((p) => p.catch(() => {})));
    await this.#keyed;
    await this.#keys.close();
  }
}
