import { describe, expect, it } from 'vitest';
import { runSync, type SyncOptions } from '../../../src/manager/sync/run.js';
import { TransientError } from '../../../src/shared/errors.js';
import { MemStore } from '../../../src/shared/storage/mem.js';
import type { Entry, ListOptions, ObjectStore } from '../../../src/shared/storage/types.js';
import { SYNC_OPTIONS } from '../../support/options.js';

const OPTIONS: SyncOptions = SYNC_OPTIONS;

function logger() {
  const lines: string[] = [];
  return { lines, error: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), info() {}, debug() {} };
}

function control(log = logger()) {
  return { stopListing: new AbortController().signal, stopNow: new AbortController().signal, logger: log };
}

/** The real mem store, whose listing fails for good (after its retries) once it reaches `failAt`. */
function failingFrom(store: MemStore, failAt: string): ObjectStore {
  async function* list(o: ListOptions = {}): AsyncIterable<Entry[]> {
    for await (const page of store.list(o)) {
      const ok = page.filter((e) => e.key < failAt);
      if (ok.length > 0) yield ok;
      if (ok.length < page.length) throw new TransientError(`listing ${store.description} failed after retries at ${failAt}`);
    }
  }
  return new Proxy(store, {
    get(target, name) {
      if (name === 'list') return list;
      const v = Reflect.get(target, name) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

const keys = async (s: MemStore) => {
  const out: string[] = [];
  for await (const p of s.list()) out.push(...p.map((e) => e.key));
  return out;
};

describe('runSync deletion safety', () => {
  it('a source listing that fails mid-way deletes nothing after the failure point', async () => {
    // Bug class: deletion from a partial view. Keys after the failure were never seen on the source.
    const src = new MemStore('src');
    const dst = new MemStore('dst');
    for (const k of ['a', 'b', 'm', 'z']) {
      src.set(k, Buffer.from(k));
      dst.set(k, Buffer.from(k));
    }
    dst.set('a-extra', Buffer.from('x'));
    dst.set('n-extra', Buffer.from('x'));
    const log = logger();
    const r = await runSync(failingFrom(src, 'm'), dst, { ...OPTIONS, deleteDst: true }, control(log));
    expect(r.fatal).toMatchObject({ code: 'FERRY_TRANSIENT' });
    expect(await keys(dst)).toEqual(['a', 'b', 'm', 'n-extra', 'z']);
    expect(log.lines.join('\n')).toContain('nothing after this point is deleted');
  });

  it('a destination listing that fails mid-way deletes no source key after it (--delete-src)', async () => {
    const src = new MemStore('src');
    const dst = new MemStore('dst');
    for (const k of ['a', 'b', 'y', 'z']) {
      src.set(k, Buffer.from(k));
      dst.set(k, Buffer.from(k));
    }
    const r = await runSync(src, failingFrom(dst, 'y'), { ...OPTIONS, deleteSrc: true }, control());
    expect(r.fatal).toBeDefined();
    // 'a' and 'b' were seen equal on both sides and may go; 'y' and 'z' were never seen on the destination.
    expect(await keys(src)).toEqual(['y', 'z']);
  });

  it('--max-deletes withholds deletions past N on either side and counts them', async () => {
    const src = new MemStore('src');
    const dst = new MemStore('dst');
    for (let i = 0; i < 10; i++) dst.set(`k${i}`, Buffer.from('x'));
    const log = logger();
    const r = await runSync(src, dst, { ...OPTIONS, deleteDst: true, maxDeletes: 3 }, control(log));
    expect(r.stats.deleted).toBe(3);
    expect(r.stats.protected).toBe(7);
    expect((await keys(dst)).length).toBe(7);
    expect(log.lines.filter((l) => l.includes('--max-deletes 3'))).toHaveLength(1);
  });

  it('--delete-src proves equal content before deleting: same size, other bytes, is copied first', async () => {
    // Bug class: deleting a source without proof of a copy (mem stores keep mtimes; sizes and mtimes match here).
    const src = new MemStore('src');
    const dst = new MemStore('dst');
    src.set('f', Buffer.from('new!'), { mtime: 1000 });
    dst.set('f', Buffer.from('old!'), { mtime: 1000 });
    src.set('g', Buffer.from('same'), { mtime: 1000 });
    dst.set('g', Buffer.from('same'), { mtime: 1000 });
    const r = await runSync(src, dst, { ...OPTIONS, deleteSrc: true }, control());
    expect(await keys(src)).toEqual([]);
    const body = async (k: string) => Buffer.concat(await (await dst.get(k)).toArray()).toString();
    expect(await body('f')).toBe('new!');
    expect(await body('g')).toBe('same');
    expect(r.stats.failed).toBe(0);
  });
});
