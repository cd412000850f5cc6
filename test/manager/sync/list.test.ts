import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { listSide, type ListSideOptions } from '../../../src/manager/sync/list.js';
import { FileStore } from '../../../src/shared/storage/file/index.js';
import { MemStore } from '../../../src/shared/storage/mem.js';
import type { ObjectStore } from '../../../src/shared/storage/types.js';

const keys = [
  // '-' sorts before '.': the reserved keys sit in the middle of a page, not at its start.
  '-dash',
  '.ferry/meta/backup.json',
  '.hidden',
  'a-b',
  'a/1',
  'a/b-c', // '-' sorts before '/'
  'a/b/2',
  'a/b/c/3',
  'b',
  'c/d/e/f/g',
  'z/\uFF5E',
  'z/\u{1F600}', // above U+FFFF: after U+FF5E in UTF-8 order, before it in UTF-16
];

async function collect(store: ObjectStore, o: Partial<ListSideOptions>): Promise<string[]> {
  const out: string[] = [];
  for await (const page of listSide(store, { followSymlinks: false, threads: 1, depth: 1, ...o })) for (const e of page) out.push(e.key);
  return out;
}

const root = mkdtempSync(join(tmpdir(), 'ferry-list-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const stores: [string, () => ObjectStore][] = [
  [
    'mem',
    () => {
      const m = new MemStore('list');
      for (const k of keys) m.set(k, Buffer.from(k));
      return m;
    },
  ],
  [
    'file',
    () => {
      for (const k of keys) {
        mkdirSync(join(root, k, '..'), { recursive: true });
        writeFileSync(join(root, k), k);
      }
      return new FileStore(root + '/');
    },
  ],
];

describe.each(stores)('listSide on %s', (_name, make) => {
  const store = make();
  const files = (xs: string[]) => xs.filter((k) => !k.endsWith('/'));

  it('lists in key order without .ferry/', async () => {
    const seq = await collect(store, {});
    expect(files(seq)).toEqual(keys.filter((k) => !k.startsWith('.ferry/')));
  });

  it('gives the same keys with parallel sub-tree listing, at every depth', async () => {
    const seq = await collect(store, {});
    for (const depth of [1, 2, 3]) {
      for (const threads of [2, 4]) {
        expect(await collect(store, { threads, depth, pagesAhead: 1 }), `threads ${threads} depth ${depth}`).toEqual(seq);
      }
    }
  });

  it('honours --start and --end, inclusive, sequential and parallel', async () => {
    const want = ['a/b/2', 'a/b/c/3', 'b'];
    expect(files(await collect(store, { start: 'a/b/2', end: 'b' }))).toEqual(want);
    expect(files(await collect(store, { start: 'a/b/2', end: 'b', threads: 3, depth: 2 }))).toEqual(want);
  });
});

describe.each(stores)('listSide on %s: sub-trees not wanted', (name, make) => {
  const store = make();

  it('passes skipDir to the store: tree stores list the directory but nothing under it', async () => {
    const skipDir = (key: string) => key === 'a/b/' || key === 'c/';
    for (const [threads, depth] of [
      [1, 1],
      [3, 1],
      [3, 2],
    ] as const) {
      const got = await collect(store, { skipDir, threads, depth });
      if (name === 'file') {
        expect(got.filter((k) => k.startsWith('a/b/') || k.startsWith('c/')), `threads ${threads} depth ${depth}`).toEqual(['a/b/', 'c/']);
      } else {
        // Object stores may ignore it (a prefix is no entry of its own there).
        expect(got.filter((k) => !k.endsWith('/'))).toEqual(keys.filter((k) => !k.startsWith('.ferry/')));
      }
    }
  });
});

describe('listSide: stopping early', () => {
  it('lets go of what the store holds when the consumer stops', async () => {
    // A side listed ahead of its consumer kept its store's listing (and its temporary files) open.
    let returned = 0;
    const unused = () => Promise.reject(new Error('not used by this test'));
    const endless: ObjectStore = {
      scheme: 'mem',
      description: 'endless',
      features: {},
      list: () =>
        (async function* () {
          try {
            for (let i = 0; ; i++) yield [{ key: `k${String(i).padStart(9, '0')}`, size: 0, mtime: 0, isDir: false }];
          } finally {
            returned++;
          }
        })(),
      head: unused,
      get: unused,
      put: unused,
      delete: unused,
    };
    let n = 0;
    for await (const page of listSide(endless, { followSymlinks: false, threads: 1, depth: 1 })) {
      n += page.length;
      if (n >= 5) break;
    }
    await new Promise((r) => setTimeout(r, 20));
    expect(returned).toBe(1);
  });
});

