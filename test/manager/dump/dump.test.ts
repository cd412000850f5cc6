/**
 * writeDump (src/manager/dump/dump.ts) over real stores: the walk is depth-first, directories an
 * object store only implies are written, `.ferry/` is left out, what cannot be dumped is counted
 * and said, hashes are those of the bytes, and the format follows the output's name.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeDump, type DumpOptions } from '../../../src/manager/dump/dump.js';
import { formatOf } from '../../../src/manager/dump/format.js';
import type { DumpEntry } from '../../../src/manager/dump/entry.js';
import { JsonDumpReader } from '../../../src/manager/dump/json.js';
import { NamespaceCheck } from '../../../src/manager/dump/validate.js';
import { FileStore } from '../../../src/shared/storage/file/index.js';
import { MemStore } from '../../../src/shared/storage/mem.js';
import type { ObjectStore } from '../../../src/shared/storage/types.js';
import { PermissionDeniedError } from '../../../src/shared/errors.js';

let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'ferry-dump-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function dump(store: ObjectStore, options: Partial<DumpOptions> = {}): Promise<{ text: Buffer; entries: DumpEntry[]; failed: number; warnings: string[]; reader: JsonDumpReader }> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const warnings: string[] = [];
  const r = await writeDump(store, out, { format: 'json', setting: { source: store.description }, onWarning: (m) => warnings.push(m), ...options });
  const text = Buffer.concat(chunks);
  const json = options.format === 'json.gz' ? gunzipSync(text) : text;
  const reader = new JsonDumpReader(Readable.from([json]));
  const entries: DumpEntry[] = [];
  for await (const b of reader.batches()) entries.push(...b);
  expect(reader.counters).toEqual(r.counters);
  // Whatever dump writes, load's namespace check accepts.
  const check = new NamespaceCheck();
  for (const e of entries) check.add(e);
  expect(check.counters).toEqual(r.counters);
  return { text, entries, failed: r.failed, warnings, reader };
}

describe('writeDump', () => {
  it('walks an object store depth-first, making the directories it implies and leaving out .ferry/', async () => {
    const m = new MemStore('objects');
    const t = 1_700_000_000_000;
    m.set('top', Buffer.from('top'), { mtime: t, mode: 0o640 });
    m.set('a/b/c.txt', Buffer.from('c'), { mtime: t + 1 });
    m.set('a/x', Buffer.from('xx'), { mtime: t + 2 });
    m.set('a-b', Buffer.from('ab'), { mtime: t + 3 });
    m.set('empty/', Buffer.alloc(0), { mtime: t + 4 }); // a directory marker
    m.set('.ferry/meta/dump.json.gz', Buffer.from('not dumped'));
    await m.symlink('a/link', 'x');
    const { entries, reader } = await dump(m);
    expect(entries.map((e) => `${e.type} ${e.path}`)).toEqual(['file a-b', 'dir a', 'dir a/b', 'file a/b/c.txt', 'symlink a/link', 'file a/x', 'dir empty', 'file top']);
    expect(entries.find((e) => e.path === 'top')).toMatchObject({ size: 3, mtime: t, mode: 0o640 });
    expect(entries.find((e) => e.path === 'a/link')).toMatchObject({ target: 'x', size: 0 });
    expect(entries.find((e) => e.path === 'empty')).toMatchObject({ type: 'dir', mtime: t + 4 });
    // Implied directories carry no attributes of their own.
    expect(entries.find((e) => e.path === 'a')).toEqual({ path: 'a', type: 'dir', size: 0 });
    expect(reader.counters).toEqual({ files: 4, dirs: 3, symlinks: 1, bytes: 8 });
  });

  it('keeps a local tree whole: empty directories, symlinks, modes, mtimes; a FIFO is counted as failed and said', async () => {
    const root = join(work, 'tree');
    mkdirSync(join(root, 'd/empty'), { recursive: true });
    writeFileSync(join(root, 'd/f.txt'), 'hello');
    chmodSync(join(root, 'd/f.txt'), 0o600);
    symlinkSync('f.txt', join(root, 'd/l'));
    utimesSync(join(root, 'd/f.txt'), 1_600_000_000, 1_600_000_000);
    utimesSync(join(root, 'd/empty'), 1_500_000_000, 1_500_000_000);
    execFileSync('mkfifo', [join(root, 'fifo')]);
    const { entries, failed, warnings } = await dump(new FileStore(root + '/'));
    expect(entries.map((e) => `${e.type} ${e.path}`)).toEqual(['dir d', 'dir d/empty', 'file d/f.txt', 'symlink d/l']);
    expect(entries[1]).toMatchObject({ mtime: 1_500_000_000_000 });
    expect(entries[2]).toMatchObject({ size: 5, mode: 0o600, mtime: 1_600_000_000_000 });
    expect(entries[3]).toMatchObject({ target: 'f.txt' });
    expect(failed).toBe(1);
    expect(warnings.join('\n')).toMatch(/fifo.*FIFO/);
  });

  it('leaves out, counted and said, a directory that clashes with a file of the same name', async () => {
    const m = new MemStore('clash');
    m.set('a', Buffer.from('file a'));
    m.set('a.txt', Buffer.from('t'));
    m.set('a/b', Buffer.from('under a'));
    m.set('a/c/d', Buffer.from('deeper'));
    m.set('b', Buffer.from('b'));
    const { entries, failed, warnings } = await dump(m);
    expect(entries.map((e) => e.path)).toEqual(['a', 'a.txt', 'b']);
    expect(failed).toBe(2);
    expect(warnings.join('\n')).toMatch(/"a" is both a file and a directory/);
  });

  it('records the hashes of the bytes (several files read at once, written in order), and dumps a subdirectory', async () => {
    const m = new MemStore('hashes');
    const data: Record<string, Buffer> = {};
    for (let i = 0; i < 50; i++) {
      const key = `s/${String(i).padStart(2, '0')}.bin`;
      data[key] = Buffer.alloc(i * 1000 + 1, i);
      m.set(key, data[key]);
    }
    m.set('other/x', Buffer.from('x'));
    for (const algo of ['md5', 'sha256'] as const) {
      const { entries } = await dump(m, { hash: algo, threads: 7, subdir: '/s/' });
      expect(entries.map((e) => e.path)).toEqual(Object.keys(data).map((k) => k.slice(2)));
      for (const e of entries) expect(e[algo]).toBe(createHash(algo).update(data['s/' + e.path]!).digest('hex'));
    }
  });

  it('writes .json.gz, and refuses to go on once the signal fires', async () => {
    const m = new MemStore('gz');
    for (let i = 0; i < 3000; i++) m.set(`k${i}`, Buffer.from('v'));
    const { text, entries } = await dump(m, { format: 'json.gz' });
    expect(text[0]).toBe(0x1f);
    expect(entries).toHaveLength(3000);
    const stop = new AbortController();
    stop.abort();
    await expect(writeDump(m, new PassThrough(), { format: 'json', setting: {}, signal: stop.signal })).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
  });

  it('counts a file that cannot be read as failed: a JSON dump names it without a hash, an archive leaves it out', async () => {
    const m = new MemStore('unreadable');
    m.set('a', Buffer.from('aaa'));
    m.set('bad', Buffer.from('secret'));
    m.set('c', Buffer.from('c'));
    // The store answers the listing but refuses to read one key, as a file without read permission does.
    const store: ObjectStore = Object.assign(Object.create(m) as MemStore, {
      get: (key: string, o?: Parameters<MemStore['get']>[1]) => (key === 'bad' ? Promise.reject(new PermissionDeniedError('read bad: permission denied')) : m.get(key, o)),
      list: (o?: Parameters<MemStore['list']>[0]) => m.list(o),
    });
    const json = await dump(store, { hash: 'md5' });
    expect(json.failed).toBe(1);
    expect(json.entries.map((e) => [e.path, e.md5 !== undefined])).toEqual([['a', true], ['bad', false], ['c', true]]);
    expect(json.warnings.join('\n')).toMatch(/bad: cannot be read .*without its md5/);
    const out = new PassThrough();
    const chunks: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    const warnings: string[] = [];
    const r = await writeDump(store, out, { format: 'tar', setting: {}, onWarning: (w) => warnings.push(w) });
    expect(r).toMatchObject({ failed: 1, counters: { files: 2, bytes: 4 } });
    expect(warnings.join('\n')).toMatch(/bad: cannot be read .*not in the dump/);
    const file = join(work, 'unreadable.tar');
    writeFileSync(file, Buffer.concat(chunks));
    const { scanArchive } = await import('../../../src/manager/dump/archive.js');
    expect(await scanArchive('tar', file)).toEqual({ files: 2, dirs: 0, symlinks: 0, bytes: 4 });
  });

  it('leaves no dump behind when interrupted midway: the output store gets nothing, not half a dump', async () => {
    const m = new MemStore('interrupted');
    for (let i = 0; i < 5000; i++) m.set(`k${String(i).padStart(5, '0')}`, Buffer.from('v'));
    const outDir = join(work, 'interrupted');
    mkdirSync(outDir);
    const target = new FileStore(outDir + '/');
    const stop = new AbortController();
    const body = new PassThrough();
    const putting = target.put('dump.json', body, { signal: stop.signal });
    putting.catch(() => body.destroy());
    const dumping = writeDump(m, body, { format: 'json', setting: {}, signal: stop.signal, onProgress: (c) => c.files >= 2000 && stop.abort() });
    await expect(dumping).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    await expect(putting).rejects.toBeDefined();
    expect(readdirSync(outDir)).toEqual([]);
  });

  it('chooses the format by the output name, or --format', () => {
    expect(formatOf('-')).toBe('json');
    expect(formatOf('x.json')).toBe('json');
    expect(formatOf('s3://b/x.JSON.GZ')).toBe('json.gz');
    expect(formatOf('x.tar')).toBe('tar');
    expect(formatOf('x.tgz')).toBe('tar.gz');
    expect(formatOf('x.tar.gz')).toBe('tar.gz');
    expect(formatOf('x.zip')).toBe('zip');
    expect(formatOf('x.whatever', 'zip')).toBe('zip');
    expect(() => formatOf('x.tar.xz')).toThrow(expect.objectContaining({ code: 'FERRY_NOT_SUPPORTED_YET', message: expect.stringMatching(/\.tar\.gz.*\.zip/) }));
    expect(() => formatOf('x.tbz2')).toThrow(expect.objectContaining({ code: 'FERRY_NOT_SUPPORTED_YET' }));
    expect(() => formatOf('x.txt')).toThrow(expect.objectContaining({ code: 'FERRY_USAGE' }));
    expect(() => formatOf('x.json', 'rar')).toThrow(expect.objectContaining({ code: 'FERRY_USAGE' }));
  });

  it('dumps 100,000 keys of the mem store in bounded time', async () => {
    const m = new MemStore('many', { capacity: 100_000 });
    const body = Buffer.from('x');
    for (let d = 0; d < 100; d++) for (let i = 0; i < 1000; i++) m.set(`d${String(d).padStart(3, '0')}/f${String(i).padStart(4, '0')}`, body, { mtime: 1 });
    const out = new PassThrough();
    let bytes = 0;
    out.on('data', (c: Buffer) => (bytes += c.length));
    const t0 = performance.now();
    const r = await writeDump(m, out, { format: 'json', setting: {} });
    const ms = performance.now() - t0;
    expect(r.counters).toEqual({ files: 100_000, dirs: 100, symlinks: 0, bytes: 100_000 });
    expect(bytes).toBeGreaterThan(5_000_000);
    expect(ms).toBeLessThan(3000);
  });
});
