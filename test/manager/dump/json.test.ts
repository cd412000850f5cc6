/**
 * The JSON dump format (src/manager/dump/json.ts): what the writer writes is valid JSON in the line
 * form, the reader gives back exactly the entries written (names that are not UTF-8 included), and
 * every malformed, truncated or foreign document is refused with FERRY_INVALID_DUMP.
 */
import { PassThrough, Readable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { InvalidDumpError } from '../../../src/shared/errors.js';
import type { DumpCounters, DumpEntry } from '../../../src/manager/dump/entry.js';
import { JsonDumpReader, JsonDumpWriter, removeSecrets } from '../../../src/manager/dump/json.js';
import { decodeKey as nameFromBytes, encodeKey as nameToBytes } from '../../../src/shared/storage/keys.js';

async function writeAll(entries: DumpEntry[], counters: DumpCounters, setting: Record<string, unknown> = { source: 'mem://x/' }): Promise<string> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const w = new JsonDumpWriter(out, { setting, created: new Date(0) });
  for (const e of entries) w.add(e);
  await w.finish(counters);
  return Buffer.concat(chunks).toString('utf8');
}

async function readAll(text: string | Buffer, options: { wholeMax?: number } = {}): Promise<{ entries: DumpEntry[]; reader: JsonDumpReader }> {
  const data = typeof text === 'string' ? Buffer.from(text) : text;
  // Small chunks, so lines split across them.
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += 7) chunks.push(data.subarray(i, i + 7));
  const reader = new JsonDumpReader(Readable.from(chunks), options);
  const entries: DumpEntry[] = [];
  for await (const b of reader.batches()) entries.push(...b);
  return { entries, reader };
}

async function refused(text: string | Buffer, options: { wholeMax?: number } = {}): Promise<InvalidDumpError> {
  const err = await readAll(text, options).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(InvalidDumpError);
  expect((err as InvalidDumpError).code).toBe('FERRY_INVALID_DUMP');
  return err as InvalidDumpError;
}

const TREE: DumpEntry[] = [
  { path: '', type: 'dir', size: 0, mtime: 1000, mode: 0o755 },
  { path: 'a.txt', type: 'file', size: 3, mtime: 1700000000123.5, mode: 0o644, uid: 1000, gid: 100, md5: 'd41d8cd98f00b204e9800998ecf8427e' },
  { path: 'd', type: 'dir', size: 0, mtime: 2000, mode: 0o700 },
  { path: 'd/empty', type: 'dir', size: 0 },
  { path: 'd/link', type: 'symlink', size: 0, target: '../a.txt', mtime: 5 },
  { path: 'd/sub', type: 'dir', size: 0 },
  { path: 'd/sub/deep', type: 'file', size: 0 },
  { path: 'd/日本語 "quoted"\n', type: 'file', size: 10 },
  { path: 'z', type: 'file', size: 7, linkTo: 'a.txt' },
];
const COUNTERS = { files: 4, dirs: 3, symlinks: 1, bytes: 20 };

describe('JSON dump', () => {
  it('round-trips every entry and attribute, and is valid JSON with one entry a line', async () => {
    const text = await writeAll(TREE, COUNTERS);
    const doc = JSON.parse(text);
    expect(doc.format).toBe('ferry-dump/1');
    expect(doc.counters).toEqual(COUNTERS);
    expect(doc.tree.entries.map((e: { name: string }) => e.name)).toEqual(['a.txt', 'd', 'z']);
    const lines = text.trimEnd().split('\n');
    // Header, root, one line per entry, a closing line per directory (3 and the root), counters.
    expect(lines).toHaveLength(1 + 1 + (TREE.length - 1) + 4 + 1);
    const { entries, reader } = await readAll(text);
    expect(entries).toEqual(TREE.slice(1));
    expect(reader.root).toEqual({ mtime: 1000, mode: 0o755 });
    expect(reader.counters).toEqual(COUNTERS);
    expect(reader.header?.setting).toEqual({ source: 'mem://x/' });
    expect(reader.wasWhole).toBe(false);
  });

  it('writes names that are not UTF-8 as their bytes (base64), and reads them back exactly', async () => {
    const raw = nameFromBytes(Buffer.from([0x61, 0xff, 0xc3, 0x28, 0x62])); // a, a lone byte, a broken pair, b
    expect(raw).toBe('a\udcff\udcc3(b');
    expect(nameToBytes(raw)).toEqual(Buffer.from([0x61, 0xff, 0xc3, 0x28, 0x62]));
    const entries: DumpEntry[] = [
      { path: raw, type: 'dir', size: 0 },
      { path: raw + '/\udc80x', type: 'symlink', size: 0, target: 'to-\udcfe' },
      { path: 'emoji 😀 \ud800\udc80', type: 'file', size: 1 }, // a real pair whose low half is in U+DC80..U+DCFF
      { path: 'lone \ud800', type: 'file', size: 1 }, // a lone high surrogate: no byte form, escaped by JSON
    ];
    const text = await writeAll(entries, { files: 2, dirs: 1, symlinks: 1, bytes: 2 });
    expect(Buffer.from(text, 'utf8').toString('utf8')).toBe(text); // valid UTF-8 throughout
    expect(text).toContain(`"nameBytes":"${Buffer.from([0x61, 0xff, 0xc3, 0x28, 0x62]).toString('base64')}"`);
    expect(text).toContain('"targetBytes"');
    expect(text).toContain('"name":"emoji 😀 𐂀"');
    expect(text).toContain('"name":"lone \\ud800"');
    const back = await readAll(text);
    expect(back.entries).toEqual(entries);
  });

  it('reads a document reformatted by jq (not the line form) whole, and refuses it above the size cap', async () => {
    const text = await writeAll(TREE, COUNTERS);
    const pretty = JSON.stringify(JSON.parse(text), null, 2);
    const { entries, reader } = await readAll(pretty);
    expect(entries).toEqual(TREE.slice(1));
    expect(reader.wasWhole).toBe(true);
    const compact = JSON.stringify(JSON.parse(text));
    expect((await readAll(compact)).entries).toEqual(TREE.slice(1));
    const err = await refused(pretty, { wholeMax: 100 });
    expect(err.message).toMatch(/line form/);
  });

  it('refuses truncated, corrupt and foreign documents', async () => {
    const text = await writeAll(TREE, COUNTERS);
    const lines = text.split('\n');
    expect((await refused('')).message).toMatch(/empty/);
    // Cut anywhere: after the root, inside a directory, before the counters, in the middle of a line.
    for (const n of [2, 5, lines.length - 3, lines.length - 2]) {
      expect((await refused(lines.slice(0, n).join('\n') + '\n')).message).toMatch(/truncated|line/);
    }
    await refused(text.slice(0, text.length - 20));
    await refused(text.replace('"type":"file"', '"type":"fifo"'));
    await refused(text.replace('"size":3', '"size":-3'));
    await refused(text.replace('"name":"a.txt"', '"name":"../a.txt"'));
    await refused(text.replace('"name":"a.txt"', '"name":"x/y"'));
    await refused(text.replace('"mode":420', '"mode":"rw"'));
    await refused(text.replace('d41d8cd98f00b204e9800998ecf8427e', 'nothex'));
    await refused(text + 'extra\n');
    await refused('not json at all\n');
    await refused('{"hello": "world"}');
    expect((await refused(text.replace('ferry-dump/1', 'ferry-dump/2'))).message).toMatch(/newer ferry/);
    // A directory closed once too often.
    await refused(text.replace(']},\n"counters"', ']},\n]},\n"counters"'));
  });

  it('refuses a gzip stream that is truncated or corrupt', async () => {
    const gz = gzipSync(await writeAll(TREE, COUNTERS));
    const { createGunzip } = await import('node:zlib');
    const read = async (data: Buffer) => {
      const r = new JsonDumpReader(Readable.from([data]).pipe(createGunzip()));
      for await (const _ of r.batches()) void _;
    };
    expect(gunzipSync(gz).toString()).toContain('ferry-dump/1');
    await expect(read(gz.subarray(0, gz.length - 30))).rejects.toMatchObject({ code: 'FERRY_INVALID_DUMP' });
    const bad = Buffer.from(gz);
    bad[30] = bad[30]! ^ 0xff;
    bad[31] = bad[31]! ^ 0xff;
    await expect(read(bad)).rejects.toMatchObject({ code: 'FERRY_INVALID_DUMP' });
  });

  it('writes every secret of the setting as "removed"', async () => {
    const s = removeSecrets({ source: 's3://AK:removed@b/', secretKey: 'hunter22', nested: { password: 'pw123', user: 'me' }, token: 'tok123', threads: 4 });
    expect(s).toEqual({ source: 's3://AK:removed@b/', secretKey: 'removed', nested: { password: 'removed', user: 'me' }, token: 'removed', threads: 4 });
    const text = await writeAll([], { files: 0, dirs: 0, symlinks: 0, bytes: 0 }, { sessionToken: 'SECRET-TOKEN-1' });
    expect(text).not.toContain('SECRET-TOKEN-1');
    const { entries, reader } = await readAll(text);
    expect(entries).toEqual([]);
    expect(reader.header?.setting).toEqual({ sessionToken: 'removed' });
  });

  it('writes and reads 200,000 entries quickly and in line form', async () => {
    const n = 200_000;
    const out = new PassThrough();
    let size = 0;
    const lines: string[] = [];
    out.on('data', (c: Buffer) => {
      size += c.length;
      if (lines.length < 3) lines.push(c.toString());
    });
    const chunks: Buffer[] = [];
    out.on('data', (c: Buffer) => chunks.push(c));
    const w = new JsonDumpWriter(out, { setting: {} });
    const t0 = performance.now();
    for (let d = 0; d < n / 1000; d++) {
      w.add({ path: `dir${d}`, type: 'dir', size: 0, mtime: 1, mode: 0o755 });
      for (let i = 0; i < 999; i++) w.add({ path: `dir${d}/file-${i}.dat`, type: 'file', size: i, mtime: 1700000000000 + i, mode: 0o644, uid: 0, gid: 0 });
      await w.flush();
    }
    await w.finish({ files: (n / 1000) * 999, dirs: n / 1000, symlinks: 0, bytes: 0 });
    const wrote = performance.now() - t0;
    const t1 = performance.now();
    let count = 0;
    const r = new JsonDumpReader(Readable.from(chunks));
    for await (const b of r.batches()) count += b.length;
    const read = performance.now() - t1;
    expect(count).toBe(n);
    expect(size).toBeGreaterThan(n * 50);
    // Generous bounds (a shared 2-core machine): the targets are 200,000/s dump and 100,000/s load in all.
    expect(wrote).toBeLessThan(4000);
    expect(read).toBeLessThan(4000);
  });
});
