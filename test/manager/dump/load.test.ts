/**
 * load (src/manager/dump/load.ts) of JSON dumps into real stores: the namespace comes back (empty
 * directories, symlinks, modes, mtimes — directories' after their contents), files are checked,
 * --data copies exactly what is missing or different, --verify writes nothing and finds a missing,
 * a truncated and a changed file, and an invalid input writes nothing at all.
 */
import { execFileSync } from 'node:child_process';
import { createWriteStream, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, truncateSync, utimesSync, writeFileSync, chmodSync, chownSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeDump } from '../../../src/manager/dump/dump.js';
import type { DumpFormat } from '../../../src/manager/dump/format.js';
import { load, sniffFormat, type LoadOptions } from '../../../src/manager/dump/load.js';
import { FileStore } from '../../../src/shared/storage/file/index.js';
import { MemStore } from '../../../src/shared/storage/mem.js';
import type { ObjectStore } from '../../../src/shared/storage/types.js';

let work: string;
let seq = 0;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'ferry-load-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

function fresh(name: string): string {
  const d = join(work, `${name}-${++seq}`);
  mkdirSync(d, { recursive: true });
  return d;
}

/** A local tree with what a restore must bring back: an empty directory, a symlink, modes and mtimes. */
function makeTree(): string {
  const root = fresh('src');
  mkdirSync(join(root, 'docs/empty'), { recursive: true });
  mkdirSync(join(root, 'bin'));
  writeFileSync(join(root, 'docs/a.txt'), 'alpha');
  writeFileSync(join(root, 'docs/b.txt'), 'bravo!');
  writeFileSync(join(root, 'bin/run'), '#!/bin/sh\necho hi\n');
  writeFileSync(join(root, 'top'), Buffer.alloc(100_000, 3));
  chmodSync(join(root, 'bin/run'), 0o750);
  symlinkSync('../docs/a.txt', join(root, 'bin/a-link'));
  let t = 1_600_000_000;
  for (const p of ['docs/a.txt', 'docs/b.txt', 'bin/run', 'top', 'docs/empty', 'docs', 'bin']) utimesSync(join(root, p), ++t, t);
  return root;
}

async function dumpFile(store: ObjectStore, format: DumpFormat = 'json', hash?: 'md5' | 'sha256'): Promise<string> {
  const file = join(fresh('dump'), 'dump.' + format);
  const out = createWriteStream(file);
  const done = new Promise<void>((r) => out.on('close', () => r()));
  await writeDump(store, out, { format, setting: {}, ...(hash ? { hash } : {}) });
  await done;
  return file;
}

/** Every path below a local root: type, mode, mtime (s), size, content or target. */
function snapshot(root: string, rel = ''): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(join(root, rel)).sort()) {
    const key = rel ? `${rel}/${name}` : name;
    const p = join(root, key);
    const st = lstatSync(p);
    if (st.isSymbolicLink()) out[key] = `link -> ${readlinkSync(p)}`;
    else if (st.isDirectory()) {
      out[key + '/'] = `dir ${(st.mode & 0o7777).toString(8)} ${Math.floor(st.mtimeMs / 1000)}`;
      Object.assign(out, snapshot(root, key));
    } else out[key] = `file ${(st.mode & 0o7777).toString(8)} ${Math.floor(st.mtimeMs / 1000)} ${readFileSync(p).toString('base64').slice(0, 40)} ${st.size}`;
  }
  return out;
}

const quiet: LoadOptions['log'] = { warn: () => {}, info: () => {}, debug: () => {} };

function collect(): { log: NonNullable<LoadOptions['log']>; lines: string[] } {
  const lines: string[] = [];
  return { lines, log: { warn: (m) => lines.push(m), info: (m) => lines.push(m), debug: () => {} } };
}

describe('load (JSON)', () => {
  it('restores the namespace, reports the missing files, and with --data copies them: the tree comes back whole', async () => {
    const src = makeTree();
    const file = await dumpFile(new FileStore(src + '/'));
    expect(await sniffFormat(file)).toBe('json');
    // Metadata only: directories, the empty one, the symlink; every file is missing.
    const dst = fresh('dst');
    const { log, lines } = collect();
    const r = await load(new FileStore(dst + '/'), file, { log });
    expect(r).toMatchObject({ format: 'json', dirs: 3, symlinks: 1, checked: 4, present: 0, missing: 4, unrestored: 4, restored: 0, failed: 0 });
    expect(r.counters).toEqual({ files: 4, dirs: 3, symlinks: 1, bytes: 5 + 6 + 18 + 100_000 });
    expect(r.counterDifferences).toEqual([]);
    expect(lines.filter((l) => l.startsWith('missing: '))).toHaveLength(4);
    expect(statSync(join(dst, 'docs/empty')).isDirectory()).toBe(true);
    expect(readlinkSync(join(dst, 'bin/a-link'))).toBe('../docs/a.txt');
    // With the data copy: exactly the four files, then everything is as it was, directory mtimes included.
    const again = await load(new FileStore(dst + '/'), file, { data: new FileStore(src + '/'), log: quiet });
    expect(again).toMatchObject({ missing: 4, restored: 4, restoredBytes: 100_029, unrestored: 0, present: 0, failed: 0 });
    expect(snapshot(dst)).toEqual(snapshot(src));
    // A third run finds everything there and copies nothing.
    const third = await load(new FileStore(dst + '/'), file, { data: new FileStore(src + '/'), log: quiet });
    expect(third).toMatchObject({ present: 4, missing: 0, restored: 0, unrestored: 0 });
    expect(snapshot(dst)).toEqual(snapshot(src));
  });

  it('--verify finds a missing, a truncated and a changed file, and writes nothing', async () => {
    const src = makeTree();
    const file = await dumpFile(new FileStore(src + '/'), 'json.gz', 'sha256');
    expect(await sniffFormat(file)).toBe('json.gz');
    const dst = fresh('dst');
    cpSync(src, dst, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
    rmSync(join(dst, 'docs/a.txt'));
    truncateSync(join(dst, 'top'), 10);
    writeFileSync(join(dst, 'docs/b.txt'), 'BRAVO!'); // same size, other content: only the hash tells
    rmSync(join(dst, 'docs/empty'), { recursive: true });
    const before = snapshot(dst);
    const { log, lines } = collect();
    const r = await load(new FileStore(dst + '/'), file, { verify: true, log });
    expect(r).toMatchObject({ missing: 1, different: 2, present: 1, unrestored: 3, wouldCreate: 1, dirs: 0, symlinks: 0, files: 0 });
    expect(lines.join('\n')).toMatch(/missing: docs\/a\.txt/);
    expect(lines.join('\n')).toMatch(/differs \(10 bytes, the dump says 100000\): top/);
    expect(lines.join('\n')).toMatch(/differs \(its sha256 is [0-9a-f]{64}, the dump says [0-9a-f]{64}\): docs\/b\.txt/);
    expect(snapshot(dst)).toEqual(before);
    // The drill with a data copy says what the copy can supply.
    const withData = await load(new FileStore(dst + '/'), file, { verify: true, data: new FileStore(src + '/'), log: quiet });
    expect(withData).toMatchObject({ restored: 3, unrestored: 0 });
    expect(snapshot(dst)).toEqual(before);
    // The restore itself copies exactly those three.
    const real = await load(new FileStore(dst + '/'), file, { data: new FileStore(src + '/'), log: quiet });
    expect(real).toMatchObject({ missing: 1, different: 2, restored: 3, unrestored: 0, present: 1 });
    expect(snapshot(dst)).toEqual(snapshot(src));
  });

  it('--data reports a data copy that lacks a file or holds other content, and exits short of whole', async () => {
    const src = makeTree();
    const file = await dumpFile(new FileStore(src + '/'), 'json', 'md5');
    const data = fresh('data');
    cpSync(src, data, { recursive: true, verbatimSymlinks: true });
    rmSync(join(data, 'top'));
    writeFileSync(join(data, 'docs/a.txt'), 'ALPHA'); // other content, same size
    const dst = fresh('dst');
    const { log, lines } = collect();
    const r = await load(new FileStore(dst + '/'), file, { data: new FileStore(data + '/'), log });
    expect(r).toMatchObject({ missing: 4, restored: 2, unrestored: 2, failed: 2 });
    expect(lines.join('\n')).toMatch(/cannot restore top from the data copy/);
    expect(lines.join('\n')).toMatch(/docs\/a\.txt was copied from the data copy, but its md5/);
  });

  it('round-trips a mem store through JSON and a data copy: empty directories as markers, symlinks, modes, mtimes', async () => {
    const m = new MemStore('load-src');
    m.set('a/one', Buffer.from('1'), { mtime: 1_000_000, mode: 0o600, uid: 7, gid: 8 });
    m.set('a/two', Buffer.from('22'), { mtime: 2_000_000, mode: 0o644 });
    m.set('empty/', Buffer.alloc(0), { mtime: 3_000_000 });
    await m.symlink('link', 'a/one');
    const file = await dumpFile(m);
    const dst = new MemStore('load-dst');
    const r = await load(dst, file, { data: m, log: quiet });
    expect(r).toMatchObject({ restored: 2, unrestored: 0, symlinks: 1, dirs: 1, failed: 0 });
    const list = async (s: MemStore) => {
      const out: string[] = [];
      for await (const page of s.list()) for (const e of page) out.push(`${e.key} ${e.size} ${e.isSymlink ? 'link ' + e.target : ''} ${e.isDir ? '' : e.mtime} ${e.isDir ? '' : e.mode} ${e.uid}`);
      return out;
    };
    const want = (await list(m)).map((l) => (l.startsWith('empty/') || l.startsWith('link') ? l.split(' ')[0] : l));
    const got = (await list(dst)).map((l) => (l.startsWith('empty/') || l.startsWith('link') ? l.split(' ')[0] : l));
    expect(got).toEqual(want);
  });

  it('refuses a truncated, corrupt or inconsistent dump and writes nothing', async () => {
    const src = makeTree();
    const file = await dumpFile(new FileStore(src + '/'));
    const text = readFileSync(file, 'utf8');
    const cases: Record<string, Buffer | string> = {
      truncated: text.slice(0, Math.floor(text.length * 0.6)),
      'no counters': text.slice(0, text.lastIndexOf('"counters"')),
      'corrupt gzip': (() => {
        const gz = gzipSync(text);
        gz[gz.length - 12] = gz[gz.length - 12]! ^ 0x55;
        return gz;
      })(),
      'truncated gzip': gzipSync(text).subarray(0, 60),
      duplicate: text.replace('{"name":"b.txt"', '{"name":"a.txt"'),
      'file and directory': text.replace('{"name":"top","type":"file"', '{"name":"docs","type":"file"'),
      'written through a symlink': text.replace(/\{"name":"a-link"[^\n]*\n/, (l) => l.replace(/"target":"[^"]*"/, '"target":"x"') + '{"name":"a-link","type":"dir","entries":[\n{"name":"evil","type":"file","size":0}\n]},\n'),
      'other version': text.replace('ferry-dump/1', 'ferry-dump/9'),
    };
    for (const [what, data] of Object.entries(cases)) {
      const bad = join(fresh('bad'), 'dump');
      writeFileSync(bad, data);
      const dst = fresh('dst');
      const err = await load(new FileStore(dst + '/'), bad, { data: new FileStore(src + '/'), log: quiet }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, what).toMatchObject({ code: 'FERRY_INVALID_DUMP' });
      expect(readdirSync(dst), what).toEqual([]);
    }
  });

  it('reports where the counters of the header differ from what the entries hold', async () => {
    const src = makeTree();
    const file = await dumpFile(new FileStore(src + '/'));
    writeFileSync(file, readFileSync(file, 'utf8').replace('"counters":{"files":4', '"counters":{"files":5'));
    const { log, lines } = collect();
    const r = await load(new FileStore(fresh('dst') + '/'), file, { verify: true, log });
    expect(r.counterDifferences).toEqual(["the dump's counters say 5 files, its entries hold 4"]);
    expect(lines).toContain("the dump's counters say 5 files, its entries hold 4");
  });

  it('loads 100,000 entries of a JSON dump into the mem store, checking each file once (its speed is the benchmark\'s)', async () => {
    const m = new MemStore('load-many', { capacity: 100_000 });
    const body = Buffer.from('x');
    for (let d = 0; d < 100; d++) for (let i = 0; i < 1000; i++) m.set(`d${String(d).padStart(3, '0')}/f${String(i).padStart(4, '0')}`, body, { mtime: 1 });
    const file = await dumpFile(m);
    const r = await load(m, file, { log: quiet });
    expect(r).toMatchObject({ checked: 100_000, present: 100_000, missing: 0 });
  });

  it('names the first 100 missing files, then says how many more there are (-v names every one)', async () => {
    // Regression: a restore drill of a tree whose files are all missing printed one warning per file, burying its summary.
    const m = new MemStore('many-missing', { capacity: 150 });
    for (let i = 0; i < 150; i++) m.set(`f${String(i).padStart(3, '0')}`, Buffer.from('x'), { mtime: 1 });
    const file = await dumpFile(m);
    const lines: string[] = [];
    const debug: string[] = [];
    const r = await load(new MemStore('empty'), file, { verify: true, log: { warn: (l) => lines.push(l), info: (l) => lines.push(l), debug: (l) => debug.push(l) } });
    expect(r.missing).toBe(150);
    expect(lines.filter((l) => l.startsWith('missing: '))).toHaveLength(100);
    expect(lines).toContain('50 more files missing or different are not listed one by one (-v lists every one)');
    expect(debug.filter((l) => l.startsWith('missing: '))).toHaveLength(50);
  });
});


describe('load (archive): small files in batches', () => {
  // load writes an archive's small files in batches without waiting for each: every file, mode, mtime, owner and directory mtime must still come back, and the counters must count each file once.
  it('restores 1,500 small files over several batches with their modes, mtimes and owners, and the directories after their contents', async () => {
    const root = fresh('many');
    const root0 = process.getuid?.() === 0;
    let t = 1_500_000_000;
    let bytes = 0;
    for (let d = 0; d < 3; d++) {
      mkdirSync(join(root, `d${d}`));
      for (let i = 0; i < 500; i++) {
        const p = join(root, `d${d}/f${String(i).padStart(3, '0')}`);
        writeFileSync(p, `file ${d}/${i}`);
        bytes += `file ${d}/${i}`.length;
        if (root0) chownSync(p, 1000 + i, 2000 + d);
        chmodSync(p, i % 7 === 0 ? 0o4750 : 0o640);
        utimesSync(p, ++t, t);
      }
    }
    for (let d = 0; d < 3; d++) utimesSync(join(root, `d${d}`), ++t, t);
    const file = await dumpFile(new FileStore(root + '/'), 'tar');
    const out = fresh('many-out');
    const dst = new FileStore(out + '/');
    try {
      const r = await load(dst, file, { log: quiet });
      expect([r.files, r.failed, r.bytes]).toEqual([1500, 0, bytes]);
      expect(snapshot(out)).toEqual(snapshot(root));
      if (root0) {
        expect(statSync(join(out, 'd2/f499')).uid).toBe(1499);
        expect(statSync(join(out, 'd2/f499')).gid).toBe(2002);
        // chown before chmod: the set-user-ID bit survives the owner.
        expect(statSync(join(out, 'd1/f007')).mode & 0o7777).toBe(0o4750);
      }
    } finally {
      await dst.close();
    }
  });

  // Into an empty destination, files are created at their names without a temporary: a load killed
  // mid-write can leave one cut short, and the next load must not take that tree for a restore.
  it('marks a load until it ends: the next load of a tree a killed load left refuses without --force, which writes it all anew', async () => {
    const root = makeTree();
    const file = await dumpFile(new FileStore(root + '/'), 'tar');
    const out = fresh('marked');
    const dst = new FileStore(out + '/');
    try {
      // A load that ends leaves nothing of its own behind (snapshot would show .ferry/).
      await load(dst, file, { log: quiet });
      expect(snapshot(out)).toEqual(snapshot(root));
      // What a killed load leaves: its marker, and a file cut short.
      rmSync(out, { recursive: true });
      mkdirSync(join(out, '.ferry'), { recursive: true });
      writeFileSync(join(out, '.ferry/load-incomplete'), JSON.stringify({ started: '2026-11-30T12:00:00.000Z' }));
      mkdirSync(join(out, 'docs'));
      writeFileSync(join(out, 'docs/a.txt'), 'al');
      await expect(load(dst, file, { log: quiet })).rejects.toThrow(/earlier load .* was stopped before it finished \(it started 2026-11-30T12:00:00.000Z\): files there may be cut short; load again with --force/);
      expect(readFileSync(join(out, 'docs/a.txt'), 'utf8')).toBe('al');
      const r = await load(dst, file, { log: quiet, force: true });
      expect(r.failed).toBe(0);
      expect(readFileSync(join(out, 'docs/a.txt'), 'utf8')).toBe('alpha');
      expect(readdirSync(join(out, '.ferry'))).toEqual([]);
    } finally {
      await dst.close();
    }
  });
  it('does not count a file of the archive at the load marker as restored while the marker that replaced it is removed', async () => {
    // Bug: an archive holding .ferry/load-incomplete (a tar of a tree a killed load left) restored that file over the running load's marker with --force, and the load's end deleted it: counted as restored, gone from DST.
    const root = fresh('marked-src');
    mkdirSync(join(root, '.ferry'));
    writeFileSync(join(root, '.ferry/load-incomplete'), 'archived');
    writeFileSync(join(root, 'a'), 'alpha');
    const file = join(fresh('gnu'), 'x.tar');
    execFileSync('tar', ['-cf', file, '-C', root, '.ferry', 'a']);
    const out = fresh('marked-dst');
    writeFileSync(join(out, 'other'), 'there before');
    const dst = new FileStore(out + '/');
    try {
      const r = await load(dst, file, { log: quiet, force: true });
      const kept = existsSync(join(out, '.ferry/load-incomplete')) && readFileSync(join(out, '.ferry/load-incomplete'), 'utf8') === 'archived';
      // Restored as the archive has it, or said not to be: never counted and gone.
      expect({ kept, failed: r.failed > 0 }).not.toEqual({ kept: false, failed: false });
    } finally {
      await dst.close();
    }
  });
  it('leaves a file or symlink of the destination named .ferry as it is in a load with --force', async () => {
    // Bug: the load marker's put replaced a file named .ferry (not in the archive) with the marker's directory, and the load's end removed that directory: the file was gone, the load said nothing.
    const file = await dumpFile(new FileStore(makeTree() + '/'), 'tar');
    for (const kind of ['file', 'symlink'] as const) {
      const out = fresh(`dot-ferry-${kind}`);
      const elsewhere = fresh('elsewhere');
      if (kind === 'file') writeFileSync(join(out, '.ferry'), 'the user\'s own');
      else symlinkSync(elsewhere, join(out, '.ferry'));
      const dst = new FileStore(out + '/');
      try {
        const r = await load(dst, file, { log: quiet, force: true });
        expect(r.failed).toBe(0);
        expect(readFileSync(join(out, 'docs/a.txt'), 'utf8')).toBe('alpha');
        if (kind === 'file') expect(readFileSync(join(out, '.ferry'), 'utf8')).toBe("the user's own");
        else expect(readlinkSync(join(out, '.ferry'))).toBe(elsewhere);
        expect(readdirSync(elsewhere)).toEqual([]);
      } finally {
        await dst.close();
      }
    }
  });
});
