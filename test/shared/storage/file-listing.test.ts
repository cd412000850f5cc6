/**
 * The local-disk store's listing of large directories: names sorted on a file-system thread and
 * stat'ed a page at a time, sorted on disk above the list cutoff, and sub-trees a filter excludes
 * never read.
 */
import { spawnSync } from 'node:child_process';
import fs, { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { FileStore } from '../../../src/shared/storage/file/index.js';
import { compareKeys, decodeKey, encodeKey } from '../../../src/shared/storage/keys.js';
import { TEMP_PREFIX } from '../../../src/shared/storage/temp.js';
import type { Entry, ListOptions } from '../../../src/shared/storage/types.js';
import { listAll } from './conformance.js';
import { mkfifo } from './tree-safety.js';
import { spillsOf } from '../../support/files.js';

describe('file store: large directories', () => {
  let dir: string;
  let root: string;
  let s: FileStore;
  /** Every key under big/, in the order a listing must give them. */
  let want: string[];
  const BIG = 6000;

  beforeAll(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-file-listing-'));
    root = join(dir, 'root') + '/';
    const big = root + 'big/';
    await fsp.mkdir(big, { recursive: true });
    const keys: string[] = [];
    for (let i = 0; i < BIG; i++) {
      const name = `f${String(i).padStart(5, '0')}`;
      await fsp.writeFile(big + name, 'x'.repeat(i % 7));
      keys.push(name);
    }
    // '-' sorts before '/': the file a-b comes before the directory a/ and its keys.
    for (const d of ['a', 'd0500', 'zz']) {
      await fsp.mkdir(big + d);
      await fsp.writeFile(`${big}${d}/inner`, 'i');
      keys.push(d + '/', d + '/inner');
    }
    for (const name of ['a-b', 'a0', 'z\uFF5E', 'z\u{1F600}']) {
      await fsp.writeFile(big + name, name);
      keys.push(name);
    }
    await fsp.symlink('zz', big + 'link-to-dir');
    await fsp.symlink('nowhere', big + 'broken-link');
    keys.push('link-to-dir', 'broken-link');
    mkfifo(big + 'pipe');
    keys.push('pipe');
    // Hidden: a temporary file of a writer.
    await fsp.writeFile(big + TEMP_PREFIX + 'other_1_0a0b0c0d_0000000001', 'temp');
    want = keys.map((k) => 'big/' + k).sort(compareKeys);
    s = new FileStore(root);
  });
  afterEach(() => vi.restoreAllMocks());
  afterAll(async () => {
    await s?.close();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  const keysOf = (entries: Entry[]) => entries.map((e) => e.key);

  it('lists in UTF-8 key order with directory names sorted as if they ended in /', async () => {
    const listed = await listAll(s, { prefix: 'big/' });
    expect(keysOf(listed)).toEqual(want);
    const keys = keysOf(listed);
    expect(keys.indexOf('big/a-b')).toBeLessThan(keys.indexOf('big/a/'));
    expect(keys.indexOf('big/z\uFF5E')).toBeLessThan(keys.indexOf('big/z\u{1F600}'));
    const byKey = new Map(listed.map((e) => [e.key, e]));
    expect(byKey.get('big/f00003')).toMatchObject({ size: 3, isDir: false });
    expect(byKey.get('big/a/')).toMatchObject({ isDir: true, size: 0 });
    expect(byKey.get('big/link-to-dir')).toMatchObject({ isSymlink: true, target: 'zz' });
    expect(byKey.get('big/pipe')!.special).toBe('FIFO');
  });

  it('sorts on disk above the list cutoff, gives the same listing, and removes the temporary file', async () => {
    const inMemory = await listAll(s, { prefix: 'big/' });
    const it = s.list({ prefix: 'big/', listCutoff: 100 })[Symbol.asyncIterator]();
    const first = await it.next();
    // While the listing runs, its sorted runs are on disk.
    expect(spillsOf()).toHaveLength(1);
    const rest: Entry[] = [...(first.value as Entry[])];
    for (let r = await it.next(); !r.done; r = await it.next()) rest.push(...r.value);
    expect(rest).toEqual(inMemory);
    expect(spillsOf()).toEqual([]);
  });

  it('follows symlinks to directories in a large directory', async () => {
    const listed = keysOf(await listAll(s, { prefix: 'big/', followSymlinks: true, listCutoff: 500 }));
    expect(listed).toContain('big/link-to-dir/');
    expect(listed).toContain('big/link-to-dir/inner');
    expect(listed).toContain('big/broken-link');
    expect(listed).toEqual([...listed].sort(compareKeys));
  });

  it('starts after startAfter and honours a prefix that ends mid-name, in memory and on disk', async () => {
    for (const listCutoff of [1_000_000, 100]) {
      expect(keysOf(await listAll(s, { prefix: 'big/', startAfter: 'big/d0500/', listCutoff })).slice(0, 3)).toEqual(['big/d0500/inner', 'big/f00000', 'big/f00001']);
      // A directory before startAfter is still entered when startAfter lies inside it.
      expect(keysOf(await listAll(s, { prefix: 'big/', startAfter: 'big/a/', listCutoff })).slice(0, 2)).toEqual(['big/a/inner', 'big/a0']);
      expect(keysOf(await listAll(s, { prefix: 'big/f0599', listCutoff }))).toEqual(['big/f05990', 'big/f05991', 'big/f05992', 'big/f05993', 'big/f05994', 'big/f05995', 'big/f05996', 'big/f05997', 'big/f05998', 'big/f05999']);
    }
    expect(spillsOf()).toEqual([]);
  });

  it('removes the sorted runs when the listing stops early or is aborted', async () => {
    // A listing dropped after its first page (the planner stopped, --limit) held its spill file for ever.
    for await (const page of s.list({ prefix: 'big/', listCutoff: 100 })) {
      expect(page.length).toBeGreaterThan(0);
      break;
    }
    expect(spillsOf()).toEqual([]);
    const abort = new AbortController();
    const pages = s.list({ prefix: 'big/', listCutoff: 100, signal: abort.signal })[Symbol.asyncIterator]();
    await pages.next();
    expect(spillsOf()).toHaveLength(1);
    abort.abort();
    await expect(pages.next()).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    await pages.return?.();
    expect(spillsOf()).toEqual([]);
  });

  it('reports a name that changed from a file to a directory while it was listed, in the place it was sorted', async () => {
    // The key sorted as a file would come out as a directory key, out of order, and fail the whole listing.
    const big = root + 'big/';
    const pages = s.list({ prefix: 'big/' })[Symbol.asyncIterator]();
    const seen: Entry[] = [...((await pages.next()).value as Entry[])];
    // A couple of pages of attributes are read ahead: f05500 is five pages away.
    await fsp.rm(big + 'f05500');
    await fsp.mkdir(big + 'f05500');
    try {
      for (let r = await pages.next(); !r.done; r = await pages.next()) seen.push(...r.value);
      const changed = seen.find((e) => e.key === 'big/f05500');
      expect(changed?.error).toMatch(/changed from a file to a directory/);
      expect(keysOf(seen)).toEqual([...keysOf(seen)].sort(compareKeys));
    } finally {
      await fsp.rmdir(big + 'f05500');
      await fsp.writeFile(big + 'f05500', 'x'.repeat(5500 % 7));
    }
  });

  it('lists names that are not valid UTF-8 under keys that keep their bytes, in byte order, in a large directory sorted on disk too', async () => {
    // Regression: such names were failed keys ("ferry cannot address yet"), and the packed form of
    // a large directory's names (UTF-8) would have turned their bytes into U+FFFD.
    const names = [
      [0x6e, 0xff, 0xfe], // 'n', then two bytes that never occur in UTF-8
      [0x66, 0x30, 0x30, 0x31, 0x30, 0x30, 0xc3], // 'f00100' and a lead byte with nothing after it
      [0x7a, 0xef], // 'z' and the first byte of 'z\uFF5E', which it sorts before
      [0x7a, 0xf5], // after 'z\u{1F600}' (F0 9F 98 80): F5 is above any UTF-8 lead byte
    ].map((b) => Buffer.from(b));
    const paths = names.map((n) => Buffer.concat([Buffer.from(root + 'big/'), n]));
    for (const p of paths) fs.writeFileSync(p, 'raw');
    try {
      const raw = names.map((n) => 'big/' + decodeKey(n));
      expect(raw).toEqual(['big/n\uDCFF\uDCFE', 'big/f00100\uDCC3', 'big/z\uDCEF', 'big/z\uDCF5']);
      const byBytes = [...want, ...raw].sort((a, b) => Buffer.compare(encodeKey(a), encodeKey(b)));
      for (const listCutoff of [1_000_000, 1000]) {
        const listed = await listAll(s, { prefix: 'big/', listCutoff });
        expect(listed.filter((e) => e.error !== undefined)).toEqual([]);
        expect(keysOf(listed)).toEqual(byBytes);
        expect(listed.find((e) => e.key === 'big/z\uDCF5')).toMatchObject({ size: 3, isDir: false });
        // startAfter a raw key, and a prefix that holds raw bytes.
        expect(keysOf(await listAll(s, { prefix: 'big/', startAfter: 'big/f00100\uDCC3', listCutoff })).slice(0, 1)).toEqual(['big/f00101']);
        expect(keysOf(await listAll(s, { prefix: 'big/z\uDCEF', listCutoff }))).toEqual(['big/z\uDCEF']);
      }
      expect(spillsOf()).toEqual([]);
    } finally {
      for (const p of paths) fs.rmSync(p);
    }
  });
});

describe('file store: sub-trees a filter excludes', () => {
  let dir: string;
  let s: FileStore;
  beforeAll(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-file-skip-'));
    for (const d of ['keep/', 'logs/', 'logs/deep/', 'a/logs/']) await fsp.mkdir(join(dir, d), { recursive: true });
    for (const f of ['keep/1', 'logs/1', 'logs/2', 'logs/deep/3', 'a/logs/4', 'a/5']) await fsp.writeFile(join(dir, f), f);
    s = new FileStore(dir + '/');
  });
  afterEach(() => vi.restoreAllMocks());
  afterAll(async () => {
    await s?.close();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('lists an excluded directory without reading it: nothing in it is read or looked at', async () => {
    const touched: string[] = [];
    for (const method of ['readdirSync', 'opendirSync', 'lstatSync', 'statSync'] as const) {
      const original = fs[method] as (...args: unknown[]) => unknown;
      vi.spyOn(fs, method).mockImplementation(((...args: unknown[]) => {
        touched.push(String(args[0]));
        return original.apply(fs, args);
      }) as never);
    }
    const options: ListOptions = { skipDir: (key) => key === 'logs/' || key.endsWith('/logs/') };
    const keys = (await listAll(s, options)).map((e) => e.key);
    expect(keys).toEqual(['a/', 'a/5', 'a/logs/', 'keep/', 'keep/1', 'logs/']);
    expect(touched.filter((p) => p.includes('/logs/'))).toEqual([]);
    // Without the hook, the same directories are read.
    touched.length = 0;
    expect((await listAll(s)).map((e) => e.key)).toContain('logs/deep/3');
    expect(touched.filter((p) => p.includes('/logs/')).length).toBeGreaterThan(0);
  });
});

describe('file store: the event loop', () => {
  it('turns while a listing reads many small directories on the calling thread', async () => {
    // Small directories are read synchronously and the walk goes on in microtasks: a long listing
    // kept timers (progress) and signal handlers (Ctrl-C) waiting until it ended.
    const dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-file-turns-'));
    const s = new FileStore(dir + '/');
    try {
      for (let d = 0; d < 150; d++) {
        await fsp.mkdir(join(dir, `d${d}`));
        await Promise.all(Array.from({ length: 20 }, (_, f) => fsp.writeFile(join(dir, `d${d}`, `f${f}`), '')));
      }
      let ticks = 0;
      const timer = setInterval(() => ticks++, 0);
      try {
        let n = 0;
        for await (const page of s.list()) n += page.length;
        expect(n).toBe(150 * 21);
      } finally {
        clearInterval(timer);
      }
      expect(ticks).toBeGreaterThan(0);
    } finally {
      await s.close();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the bundle', () => {
  it('starts its file-system threads from dist/fs-thread.js: a sync of large directories, then one with nothing to do', async () => {
    // The threads ran source text with eval; the bundle now loads a module of its own beside it.
    const work = await fsp.mkdtemp(join(tmpdir(), 'ferry-file-bundle-'));
    try {
      const src = join(work, 'src');
      await fsp.mkdir(join(src, 'sub'), { recursive: true });
      await Promise.all(Array.from({ length: 1500 }, (_, i) => fsp.writeFile(join(src, `n${i}`), String(i))));
      await Promise.all(Array.from({ length: 200 }, (_, i) => fsp.writeFile(join(src, 'sub', `m${i}`), String(i))));
      const run = () => {
        const r = spawnSync(process.execPath, ['bin/ferry.js', 'sync', '--json', src + '/', join(work, 'dst') + '/'], { encoding: 'utf8' });
        expect(r.status, r.stderr).toBe(0);
        return JSON.parse(r.stdout) as { copied: number; skipped: number };
      };
      expect(run()).toMatchObject({ copied: 1700 });
      expect(run()).toMatchObject({ copied: 0, skipped: 1700 });
      expect((await fsp.readdir(join(work, 'dst'))).length).toBe(1501);
    } finally {
      await fsp.rm(work, { recursive: true, force: true });
    }
  });
});

