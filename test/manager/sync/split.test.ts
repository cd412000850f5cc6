import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Dispatcher } from '../../../src/manager/sync/dispatch.js';
import type { Ledger } from '../../../src/manager/sync/ledger.js';
import { runSync, type RemoteExecutors, type SyncOptions } from '../../../src/manager/sync/run.js';
import { splitPolicy } from '../../../src/manager/sync/split.js';
import { MemStore } from '../../../src/shared/storage/mem.js';
import type { GetOptions, ObjectStore } from '../../../src/shared/storage/types.js';

const OPTIONS: SyncOptions = {
  update: false, forceUpdate: false, existing: false, ignoreExisting: false, checkAll: false, deleteSrc: false,
  deleteDst: false, perms: false, dirs: false, links: false, sizeOnly: false, limit: -1, inplace: false,
  deleteSrcAfter: false, checkNew: false, checkChange: false, maxFailure: -1, maxDeletes: -1, dry: false, threads: 4,
  listThreads: 1, listDepth: 1, bwlimit: 0, splitSize: 4096,
};
/** Parts as small as 1 KiB, so that small objects split. */
const PARTS = { minPartSize: 1024, maxPartSize: 1 << 30, maxParts: 10_000 };
const KiB = 1024;

function logger() {
  const lines: string[] = [];
  return { lines, error: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), info() {}, debug() {} };
}

function control(log = logger(), stopNow = new AbortController().signal) {
  return { stopListing: new AbortController().signal, stopNow, logger: log };
}

/** Bytes that differ at every offset, so a part in the wrong place changes the digest. */
function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(Math.ceil(size / 4) * 4);
  for (let i = 0; i < size; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ seed) >>> 0, i);
  return b.subarray(0, size);
}

const digest = async (s: ObjectStore, key: string) => createHash('sha256').update(Buffer.concat(await (await s.get(key)).toArray())).digest('hex');

/** The mem store, with ranged reads from `from` on cut short: a source that shrank after it was listed. */
function shrinking(store: MemStore, from: number): ObjectStore {
  return new Proxy(store, {
    get(target, name) {
      if (name === 'get') {
        return async (key: string, o: GetOptions = {}) => {
          const offset = o.offset ?? 0;
          return target.get(key, offset >= from ? { ...o, length: Math.max(0, (o.length ?? 0) - 1) } : o);
        };
      }
      const v = Reflect.get(target, name) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

describe('splitPolicy: which copies go in parts, and how large', () => {
  it('splits regular files above --split-size to a store with multipart uploads, in parts the store allows', () => {
    const src = new MemStore('a');
    const dst = new MemStore('b', { parts: { minPartSize: 1024, maxPartSize: 1 << 30, maxParts: 4 } });
    const split = splitPolicy(src, dst, OPTIONS, false)!;
    const file = (size: number) => ({ key: 'k', size, mtime: 0, isDir: false });
    expect(split(file(4096))).toBeUndefined();
    expect(split(file(4097))).toBe(4096);
    // Four parts at most: the part size grows (to whole MiB once past one) until four hold the object.
    expect(split(file(4 * 4096 + 1))).toBe(4 * 4096 / 4 + 1);
    expect(split({ ...file(10_000), isDir: true })).toBeUndefined();
    expect(split({ ...file(10_000), isSymlink: true })).toBeUndefined();
  });

  it('splits nothing without a split size, in a dry run, when copies are verified key by key, without multipart, or server-side', () => {
    const src = new MemStore('a');
    const dst = new MemStore('b');
    expect(splitPolicy(src, dst, { ...OPTIONS, splitSize: 0 }, false)).toBeUndefined();
    const { splitSize: _, ...noSplitSize } = OPTIONS;
    expect(splitPolicy(src, dst, noSplitSize, false)).toBeUndefined();
    expect(splitPolicy(src, dst, { ...OPTIONS, dry: true }, false)).toBeUndefined();
    expect(splitPolicy(src, dst, { ...OPTIONS, checkNew: true }, false)).toBeUndefined();
    expect(splitPolicy(src, dst, { ...OPTIONS, deleteSrcAfter: true }, false)).toBeUndefined();
    const noMultipart: ObjectStore = new Proxy(dst, { get: (t, n) => (n === 'multipart' ? undefined : (Reflect.get(t, n) as unknown)) });
    expect(splitPolicy(src, noMultipart, OPTIONS, false)).toBeUndefined();
    // The same mem store on both sides copies server-side: no bytes move through ferry.
    expect(splitPolicy(dst, dst, OPTIONS, false)).toBeUndefined();
    expect(splitPolicy(src, dst, OPTIONS, false)).toBeDefined();
  });
});

describe('runSync with split copies', () => {
  it('copies a large object in parts, byte-identical, counted once, leaving no upload open', async () => {
    const src = new MemStore('src');
    const dst = new MemStore('dst', { parts: PARTS });
    const big = pattern(10 * KiB + 123, 1);
    src.set('big', big, { mtime: 5000 });
    src.set('small', Buffer.from('small'));
    const r = await runSync(src, dst, OPTIONS, control());
    expect(r.stats.toJSON()).toMatchObject({ found: 2, copied: 2, copiedBytes: big.length + 5, failed: 0, lost: 0 });
    expect(await digest(dst, 'big')).toBe(await digest(src, 'big'));
    expect(dst.openUploads).toBe(0);
    // Three parts of 4 KiB; each is one of the manager's tasks, the object none of its copiedObjects.
    expect(r.stats.executorsJSON()).toEqual([{ id: 'manager', host: 'manager', tasks: 4, copiedObjects: 1, copiedBytes: big.length + 5, parts: 3, leasesLost: 0 }]);
    // The destination keeps mtimes: the split copy gets the source's, so a second run copies nothing.
    expect((await dst.head('big')).mtime).toBe(5000);
    const again = await runSync(src, dst, OPTIONS, control());
    expect(again.stats.toJSON()).toMatchObject({ copied: 0, skipped: 2 });
  });

  it('a part that keeps failing (the source shrank) fails the key and aborts its upload: nothing stored, nothing left open', async () => {
    const src = new MemStore('src');
    const dst = new MemStore('dst', { parts: PARTS });
    src.set('big', pattern(10 * KiB, 2));
    const log = logger();
    const r = await runSync(shrinking(src, 8 * KiB), dst, OPTIONS, control(log));
    expect(r.stats.toJSON()).toMatchObject({ found: 1, copied: 0, failed: 1, lost: 0 });
    expect(log.lines.join('\n')).toMatch(/failed to copy "big": .*FERRY_SOURCE_CHANGED/);
    await expect(dst.head('big')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
    expect(dst.openUploads).toBe(0);
  }, 30_000);

  it('stopped at once mid-copy: the upload is aborted, and the key is lost, not copied', async () => {
    const src = new MemStore('src');
    const dst = new MemStore('dst', { parts: PARTS });
    src.set('big', pattern(64 * KiB, 3));
    const stopNow = new AbortController();
    // The first part's read stops the run.
    const stopping = new Proxy(src, {
      get(target, name) {
        if (name === 'get') {
          return async (key: string, o: GetOptions = {}) => {
            stopNow.abort();
            return target.get(key, o);
          };
        }
        const v = Reflect.get(target, name) as unknown;
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const r = await runSync(stopping, dst, OPTIONS, control(logger(), stopNow.signal));
    expect(r.stopped).toBe('interrupted');
    expect(r.stats.copied).toBe(0);
    expect(r.stats.lost).toBe(1);
    expect(dst.openUploads).toBe(0);
    await expect(dst.head('big')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
  });

  it('stopped at once while a worker that never answers holds a part: the upload is aborted all the same', async () => {
    // The ledger aborts an upload once its parts out are back; one that never comes back must not keep the upload open.
    const src = new MemStore('src');
    const dst = new MemStore('dst', { parts: PARTS });
    src.set('big', pattern(16 * KiB, 5));
    const stopNow = new AbortController();
    let ledger: Ledger | undefined;
    const silentWorker: RemoteExecutors = {
      live: 1,
      attach: (l) => void (ledger = l),
      async drain() {
        const w = new Dispatcher(ledger!, 'w1');
        const part = await w.next({ tasks: 1, bytes: 0 }, stopNow.signal);
        expect(part?.tasks[0]).toMatchObject({ op: 'copyPart', part: 1 });
        expect(dst.openUploads).toBe(1);
        stopNow.abort();
      },
    };
    const r = await runSync(src, dst, OPTIONS, { ...control(logger(), stopNow.signal), cluster: silentWorker, managerExecutes: false });
    expect(r.stats.lost).toBe(1);
    expect(dst.openUploads).toBe(0);
  });

  it('a dry run splits nothing and starts no upload', async () => {
    const src = new MemStore('src');
    const dst = new MemStore('dst', { parts: PARTS });
    src.set('big', pattern(10 * KiB, 4));
    const r = await runSync(src, dst, { ...OPTIONS, dry: true }, control());
    expect(r.stats.toJSON()).toMatchObject({ copied: 1, copiedBytes: 10 * KiB });
    expect(r.stats.executorsJSON()[0]).toMatchObject({ parts: 0 });
    expect(dst.openUploads).toBe(0);
    await expect(dst.head('big')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
  });
});
