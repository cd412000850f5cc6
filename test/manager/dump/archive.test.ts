import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, linkSync, writeFileSync, utimesSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gzipSync } from 'node:zlib';
import { pack as tarPack, extract as tarExtract } from 'tar-stream';
import yazl from 'yazl';
import { afterAll, describe, expect, it } from 'vitest';
import { createArchiveWriter, extractArchive, scanArchive, type ArchiveFormat } from '../../../src/manager/dump/archive.js';
import type { DumpEntry } from '../../../src/manager/dump/entry.js';

const root = mkdtempSync(join(tmpdir(), 'ferry-archive-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const tmp = (name: string): string => join(root, `${n++}-${name}`);

const T = Date.UTC(2024, 1, 29, 12, 30, 45);
const big = randomBytes(300_000);
const longDir = `long-${'d'.repeat(120)}`;
const longName = `${longDir}/${'n'.repeat(200)}.bin`;

/** A tree of every kind a dump holds, depth-first; `tar` adds what only tar keeps. */
function tree(tar: boolean): { entries: DumpEntry[]; data: Map<string, Buffer> } {
  const data = new Map<string, Buffer>([
    ['d/a.txt', big],
    ['zero-mode', Buffer.alloc(0)],
    ['é-ünï/名前.bin', Buffer.from('unicode name\n')],
    [longName, Buffer.from('a long name\n')],
  ]);
  const owner = tar ? { uid: 1234, gid: 5678 } : {};
  const entries: DumpEntry[] = [
    { path: 'd', type: 'dir', size: 0, mode: 0o750, mtime: T, ...owner },
    { path: 'd/a.txt', type: 'file', size: big.length, mode: 0o640, mtime: T + 1000, ...owner },
    { path: 'd/empty', type: 'dir', size: 0, mode: 0o700, mtime: T + 2000, ...owner },
    { path: 'd/link', type: 'symlink', size: 0, target: 'a.txt', mode: 0o777, mtime: T, ...owner },
    { path: 'é-ünï', type: 'dir', size: 0, mode: 0o755, mtime: T, ...owner },
    { path: 'é-ünï/名前.bin', type: 'file', size: 13, mode: 0o4755, mtime: T, ...owner },
    { path: longDir, type: 'dir', size: 0, mode: 0o755, mtime: T, ...owner },
    { path: longName, type: 'file', size: 12, mode: 0o600, mtime: T, ...owner },
    { path: `${longDir}/to-long`, type: 'symlink', size: 0, target: `../${longName}`, mode: 0o777, mtime: T, ...owner },
    { path: 'up', type: 'symlink', size: 0, target: 'd/a.txt', mode: 0o777, mtime: T, ...owner },
    { path: 'zero-mode', type: 'file', size: 0, mode: 0, mtime: T, ...owner },
  ];
  if (tar) {
    entries.push({ path: 'z-hard', type: 'file', size: big.length, linkTo: 'd/a.txt', mode: 0o640, mtime: T, uid: 3_000_000, gid: 4_000_000 });
  }
  return { entries, data };
}

async function writeArchive(format: ArchiveFormat, entries: DumpEntry[], data: Map<string, Buffer>): Promise<string> {
  const file = tmp(`tree.${format}`);
  const w = createArchiveWriter(format, createWriteStream(file));
  for (const e of entries) {
    const d = e.linkTo === undefined ? data.get(e.path) : undefined;
    await w.add(e, d === undefined ? undefined : Readable.from([d.subarray(0, 1000), d.subarray(1000)]));
  }
  await w.finish();
  return file;
}

async function readBack(format: ArchiveFormat, file: string): Promise<{ entries: DumpEntry[]; data: Map<string, Buffer> }> {
  const entries: DumpEntry[] = [];
  const data = new Map<string, Buffer>();
  await extractArchive(format, file, async (e, d) => {
    entries.push(e);
    if (d) data.set(e.path, await readAll(d));
  });
  return { entries, data };
}

/** Path -> sha256 of the data (vitest compares large buffers byte by byte, slowly). */
function digests(data: Map<string, Buffer>): Record<string, string> {
  return Object.fromEntries([...data].map(([k, v]) => [k, createHash('sha256').update(v).digest('hex')]));
}

async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return err as { code: string; message: string };
  }
  throw new Error('accepted');
}

/** Info-ZIP's zip and unzip, for the interoperability tests (Debian: zip, unzip; .ci/run installs them). */
const infoZip = spawnSync('sh', ['-c', 'command -v zip && command -v unzip'], { stdio: 'ignore' }).status === 0;
if (!infoZip) console.warn('SKIPPED: the Info-ZIP interoperability tests need zip and unzip (apt-get install zip unzip)');

describe('archives: round trip', () => {
  for (const format of ['tar', 'tar.gz', 'zip'] as const) {
    it(`keeps every kind of entry, its bytes and attributes through ${format}`, async () => {
      const isTar = format !== 'zip';
      const { entries, data } = tree(isTar);
      const file = await writeArchive(format, entries, data);
      const counters = await scanArchive(format, file);
      expect(counters).toEqual({ files: isTar ? 5 : 4, dirs: 4, symlinks: 3, bytes: isTar ? 2 * big.length + 25 : big.length + 25 });
      const back = await readBack(format, file);
      expect(back.entries).toEqual(entries);
      expect(digests(back.data)).toEqual(digests(data));
    });
  }

  it('writes tar archives that GNU tar extracts identically', async () => {
    const { entries, data } = tree(true);
    const file = await writeArchive('tar.gz', entries, data);
    const out = tmp('gnu-x');
    mkdirSync(out);
    execFileSync('tar', ['-xzf', file, '-C', out]);
    expect(readFileSync(join(out, 'd/a.txt')).equals(big)).toBe(true);
    expect(readFileSync(join(out, longName)).toString()).toBe('a long name\n');
    expect(readFileSync(join(out, 'é-ünï/名前.bin')).toString()).toBe('unicode name\n');
    expect(readlinkSync(join(out, `${longDir}/to-long`))).toBe(`../${longName}`);
    expect(lstatSync(join(out, 'd/empty')).isDirectory()).toBe(true);
    expect(lstatSync(join(out, 'd/a.txt')).mode & 0o7777).toBe(0o640);
    expect(lstatSync(join(out, 'd/a.txt')).mtimeMs).toBe(T + 1000);
    expect(lstatSync(join(out, 'z-hard')).ino).toBe(lstatSync(join(out, 'd/a.txt')).ino);
  });

  it.skipIf(!infoZip)('writes zip archives that Info-ZIP unzip extracts identically', async () => {
    const { entries, data } = tree(false);
    const file = await writeArchive('zip', entries, data);
    const out = tmp('unzip-x');
    execFileSync('unzip', ['-q', file, '-d', out]);
    expect(readFileSync(join(out, 'd/a.txt')).equals(big)).toBe(true);
    expect(readlinkSync(join(out, 'd/link'))).toBe('a.txt');
    expect(lstatSync(join(out, 'd/empty')).isDirectory()).toBe(true);
    expect(lstatSync(join(out, 'd/a.txt')).mode & 0o7777).toBe(0o640);
    expect(lstatSync(join(out, 'd/a.txt')).mtimeMs).toBe(T + 1000);
  });

  it.skipIf(!infoZip)('reads what GNU tar and Info-ZIP write: ./ prefixes, names that are not UTF-8, hard links, symlinks', async () => {
    const src = tmp('src');
    const raw = Buffer.from([0x66, 0xff, 0x80, 0x2e, 0x62, 0x69, 0x6e]); // "f\xff\x80.bin"
    mkdirSync(join(src, 'sub/empty'), { recursive: true });
    writeFileSync(join(src, 'sub/file'), 'content');
    writeFileSync(Buffer.concat([Buffer.from(`${src}/sub/`), raw]), 'raw name');
    linkSync(join(src, 'sub/file'), join(src, 'sub/hard'));
    symlinkSync('file', join(src, 'sub/sym'));
    chmodSync(join(src, 'sub/file'), 0o604);
    utimesSync(join(src, 'sub/file'), T / 1000, T / 1000);
    const rawPath = `sub/f\udcff\udc80.bin`;

    const tarFile = tmp('gnu.tar');
    execFileSync('tar', ['-cf', tarFile, '-C', src, '.']);
    const t = await readBack('tar', tarFile);
    const byPath = new Map(t.entries.map((e) => [e.path, e]));
    expect(byPath.get('')?.type).toBe('dir');
    expect(byPath.get('sub/empty')?.type).toBe('dir');
    expect(t.data.get(rawPath)?.toString()).toBe('raw name');
    expect(byPath.get('sub/sym')?.target).toBe('file');
    const file = byPath.get('sub/file')!;
    const hard = byPath.get('sub/hard')!;
    const [first, second] = t.entries.indexOf(file) < t.entries.indexOf(hard) ? [file, hard] : [hard, file];
    expect(second.linkTo).toBe(first.path);
    expect(second.size).toBe(7);
    expect(file.mode ?? first.mode).toBe(0o604);
    expect(await scanArchive('tar', tarFile)).toEqual({ files: 3, dirs: 2, symlinks: 1, bytes: 7 + 7 + 8 });

    const zipFile = tmp('infozip.zip');
    execFileSync('zip', ['-qry', zipFile, 'sub'], { cwd: src });
    const z = await readBack('zip', zipFile);
    const zp = new Map(z.entries.map((e) => [e.path, e]));
    expect(zp.get('sub/sym')).toMatchObject({ type: 'symlink', target: 'file' });
    expect(zp.get('sub/empty')?.type).toBe('dir');
    expect(zp.get('sub/file')).toMatchObject({ mode: 0o604, mtime: T, size: 7 });
    expect(z.data.get(rawPath)?.toString()).toBe('raw name');
  });

  it('records sizes above 8 GiB in a pax header', async () => {
    // Only the header is read back: the writer is stopped once it has gone out.
    const size = 8 * 2 ** 30 + 5;
    const out = new PassThrough();
    const w = createArchiveWriter('tar', out as Writable);
    const zeros = Readable.from((function* () {
      for (;;) yield Buffer.alloc(65536);
    })());
    void Promise.resolve(w.add({ path: 'huge', type: 'file', size, mode: 0o644, mtime: T }, zeros)).catch(() => undefined);
    const head: Buffer[] = [];
    for await (const c of out) {
      head.push(c as Buffer);
      if (Buffer.concat(head).length >= 4096) break;
    }
    zeros.destroy();
    const ex = tarExtract();
    const header = await new Promise<{ size: number; pax: Record<string, string> }>((resolve) => {
      ex.on('entry', (h) => resolve(h as unknown as { size: number; pax: Record<string, string> }));
      ex.write(Buffer.concat(head).subarray(0, 4096));
    });
    expect(header.size).toBe(size);
    expect(header.pax.size).toBe(String(size));
  });

  it('splits a name of 101-255 bytes between the ustar prefix and name fields', async () => {
    const dirName = 'p'.repeat(120);
    const entries: DumpEntry[] = [
      { path: dirName, type: 'dir', size: 0, mode: 0o755, mtime: T, uid: 0, gid: 0 },
      { path: `${dirName}/short.txt`, type: 'file', size: 2, mode: 0o644, mtime: T, uid: 0, gid: 0 },
    ];
    const file = await writeArchive('tar', entries, new Map([[`${dirName}/short.txt`, Buffer.from('ok')]]));
    // The file's name is split (no pax record); the directory's single 121-byte component cannot be.
    const paxOf = new Map<string, unknown>();
    const ex = tarExtract();
    ex.on('entry', (h, stream, next) => {
      paxOf.set(h.name, h.pax);
      stream.on('end', () => next());
      stream.resume();
    });
    ex.end(readFileSync(file));
    await new Promise<void>((resolve) => ex.on('finish', () => resolve()));
    expect(paxOf.get(`${dirName}/short.txt`)).toBeNull();
    expect(paxOf.get(`${dirName}/`)).toMatchObject({ path: `${dirName}/` });
    expect((await readBack('tar', file)).entries).toEqual(entries);
    expect(execFileSync('tar', ['-tf', file]).toString()).toBe(`${dirName}/\n${dirName}/short.txt\n`);
  });

  it('leaves nothing of an entry it refuses in the tar: the next entry keeps its own name', async () => {
    // Bug: add() wrote an entry's pax or GNU long-name record before it checked the data's length, so a refused entry left its record behind and the next entry took its name.
    const file = tmp('refused.tar');
    const out = createWriteStream(file);
    const closed = new Promise<void>((r) => out.on('close', () => r()));
    const w = createArchiveWriter('tar', out);
    const long = 'l'.repeat(300);
    const refused = Promise.resolve().then(() => w.add({ path: long, type: 'file', size: 5, mode: 0o644, mtime: T, uid: 0, gid: 0 }, Buffer.from('abc')));
    await expect(refused).rejects.toMatchObject({ code: 'FERRY_SOURCE_CHANGED' });
    await w.add({ path: 'next', type: 'file', size: 2, mode: 0o644, mtime: T, uid: 0, gid: 0 }, Buffer.from('ok'));
    await w.finish();
    await closed;
    expect(execFileSync('tar', ['-tf', file]).toString()).toBe('next\n');
  });

  it('keeps names that are not UTF-8 byte for byte in tar (GNU long-name records)', async () => {
    const rawDir = `r\udcff-${'x'.repeat(120)}`; // long too: no ustar field would hold it
    const entries: DumpEntry[] = [
      { path: rawDir, type: 'dir', size: 0, mode: 0o755, mtime: T, uid: 0, gid: 0 },
      { path: `${rawDir}/f\udc80\udcfe`, type: 'file', size: 3, mode: 0o644, mtime: T, uid: 0, gid: 0 },
      { path: 'link-to-raw', type: 'symlink', size: 0, target: `${rawDir}/f\udc80\udcfe`, mode: 0o777, mtime: T, uid: 0, gid: 0 },
      { path: 'hard-to-raw', type: 'file', size: 3, linkTo: `${rawDir}/f\udc80\udcfe`, mode: 0o644, mtime: T, uid: 0, gid: 0 },
    ];
    const file = await writeArchive('tar', entries, new Map([[`${rawDir}/f\udc80\udcfe`, Buffer.from('raw')]]));
    const back = await readBack('tar', file);
    expect(back.entries).toEqual(entries);
    expect(back.data.get(`${rawDir}/f\udc80\udcfe`)?.toString()).toBe('raw');
    // GNU tar makes the same bytes.
    const out = tmp('gnu-raw');
    mkdirSync(out);
    execFileSync('tar', ['-xf', file, '-C', out]);
    const rawFile = Buffer.concat([Buffer.from(`${out}/r`), Buffer.of(0xff), Buffer.from(`-${'x'.repeat(120)}/f`), Buffer.of(0x80, 0xfe)]);
    expect(readFileSync(rawFile).toString()).toBe('raw');
    expect(readlinkSync(join(out, 'link-to-raw'), { encoding: 'buffer' }).equals(rawFile.subarray(out.length + 1))).toBe(true);
  });

  it.skipIf(!infoZip)('keeps names that are not UTF-8 byte for byte in zip (no UTF-8 flag, as Info-ZIP writes them)', async () => {
    const entries: DumpEntry[] = [
      { path: 'r\udce9', type: 'dir', size: 0, mode: 0o755, mtime: T },
      { path: 'r\udce9/f\udc80\udcfe', type: 'file', size: 3, mode: 0o644, mtime: T },
      { path: 'to-raw', type: 'symlink', size: 0, target: 'r\udce9/f\udc80\udcfe', mode: 0o777, mtime: T },
    ];
    const file = await writeArchive('zip', entries, new Map([['r\udce9/f\udc80\udcfe', Buffer.from('raw')]]));
    const back = await readBack('zip', file);
    expect(back.entries).toEqual(entries);
    // (Info-ZIP unzip drops a 0xff byte from names it extracts, so the test uses 0xe9.)
    const out = tmp('unzip-raw');
    execFileSync('unzip', ['-q', file, '-d', out]);
    const rawFile = Buffer.concat([Buffer.from(`${out}/r`), Buffer.of(0xe9), Buffer.from('/f'), Buffer.of(0x80, 0xfe)]);
    expect(readFileSync(rawFile).toString()).toBe('raw');
  });

  it('writes zip64 end records past 65,535 entries, in bounded time', async () => {
    const file = tmp('many.zip');
    const w = createArchiveWriter('zip', createWriteStream(file));
    const t0 = performance.now();
    for (let i = 0; i < 70_000; i++) await w.add({ path: `d${i % 7}/f${i}`, type: 'file', size: 2, mtime: T }, Readable.from([Buffer.from('hi')]));
    await w.finish();
    console.log(`zip: 70,000 files written in ${(performance.now() - t0).toFixed(0)} ms`);
    expect(await scanArchive('zip', file)).toEqual({ files: 70_000, dirs: 0, symlinks: 0, bytes: 140_000 });
    expect(execFileSync('unzip', ['-tq', file]).toString()).toMatch(/No errors/);
  });
});

/** A tar built with tar-stream directly: [header, content?] each. */
async function hostileTar(entries: [Record<string, unknown>, string?][]): Promise<string> {
  const file = tmp('hostile.tar');
  const pack = tarPack();
  const done = pipeline(pack as unknown as Readable, createWriteStream(file));
  for (const [h, body] of entries) {
    await new Promise<void>((resolve, reject) => pack.entry(h as { name: string }, body ?? '', (err) => (err ? reject(err) : resolve())));
  }
  pack.finalize();
  await done;
  return file;
}

/** A zip built with yazl directly; names may use placeholders patched afterwards (yazl refuses `..` and `/x`). */
async function hostileZip(entries: { name: string; body?: string; mode?: number }[], patch: [string, string][] = []): Promise<string> {
  const file = tmp('hostile.zip');
  const zip = new yazl.ZipFile();
  for (const e of entries) {
    if (e.name.endsWith('/')) zip.addEmptyDirectory(e.name);
    else zip.addBuffer(Buffer.from(e.body ?? ''), e.name, { compress: false, ...(e.mode === undefined ? {} : { mode: e.mode }) });
  }
  zip.end();
  const chunks: Buffer[] = [];
  for await (const c of zip.outputStream) chunks.push(c as Buffer);
  let bytes = Buffer.concat(chunks);
  for (const [from, to] of patch) {
    expect(from.length).toBe(to.length);
    bytes = Buffer.from(bytes.toString('latin1').split(from).join(to), 'latin1');
  }
  writeFileSync(file, bytes);
  return file;
}

describe('archives: hostile input is refused by scanArchive', () => {
  const file = (name: string): Record<string, unknown> => ({ name, type: 'file' });
  const tarCases: [string, [Record<string, unknown>, string?][], RegExp][] = [
    ['../x', [[file('../x'), 'x']], /'\.\.'/],
    ['/etc/x', [[file('/etc/x'), 'x']], /absolute/],
    ['a/../../x', [[file('a/../../x'), 'x']], /'\.\.'/],
    ['a symlink pointing out', [[{ name: 'l', type: 'symlink', linkname: '../../etc' }]], /outside the root/],
    ['an absolute symlink', [[{ name: 'l', type: 'symlink', linkname: '/etc' }]], /absolute/],
    ['a symlink then a file through it', [[{ name: 'l', type: 'symlink', linkname: 'd' }], [file('l/x'), 'x']], /symlink/],
    ['a hard link out of the root', [[{ name: 'h', type: 'link', linkname: '../../etc/passwd' }]], /outside the root/],
    ['a hard link to a later file', [[{ name: 'h', type: 'link', linkname: 'x' }], [file('x'), 'x']], /not an earlier file/],
    ['duplicate names', [[file('a'), 'x'], [file('a'), 'y']], /twice/],
    ['a file then a directory of the same name', [[file('a'), 'x'], [{ name: 'a', type: 'directory' }]], /both/],
    ['a file then an entry below it', [[file('a'), 'x'], [file('a/b'), 'y']], /which is a file/],
    ['a device', [[{ name: 'null', type: 'character-device', devmajor: 1, devminor: 3 }]], /character device/],
    ['a FIFO', [[{ name: 'fifo', type: 'fifo' }]], /fifo/],
  ];
  for (const [name, entries, message] of tarCases) {
    it(`tar: ${name}`, async () => {
      const err = await refusal(scanArchive('tar', await hostileTar(entries)));
      expect(err.code).toBe('FERRY_INVALID_DUMP');
      expect(err.message).toMatch(message);
    });
  }

  const S_IFLNK = 0o120777;
  const zipCases: [string, Parameters<typeof hostileZip>, RegExp][] = [
    ['../x', [[{ name: 'AA/x', body: 'x' }], [['AA/x', '../x']]], /'\.\.'/],
    ['/etc/x', [[{ name: 'Aetc/x', body: 'x' }], [['Aetc/x', '/etc/x']]], /absolute/],
    ['a/../../x', [[{ name: 'a/AA/AA/x', body: 'x' }], [['a/AA/AA/x', 'a/../../x']]], /'\.\.'/],
    ['a symlink pointing out', [[{ name: 'l', body: '../../etc', mode: S_IFLNK }]], /outside the root/],
    ['a symlink then a file through it', [[{ name: 'l', body: 'd', mode: S_IFLNK }, { name: 'l/x', body: 'x' }]], /symlink/],
    ['duplicate names', [[{ name: 'a', body: 'x' }, { name: 'a', body: 'y' }]], /twice/],
    ['a file then a directory of the same name', [[{ name: 'a', body: 'x' }, { name: 'a/' }]], /both/],
  ];
  for (const [name, args, message] of zipCases) {
    it(`zip: ${name}`, async () => {
      const err = await refusal(scanArchive('zip', await hostileZip(...args)));
      expect(err.code).toBe('FERRY_INVALID_DUMP');
      expect(err.message).toMatch(message);
    });
  }
});

describe('archives: truncated and corrupt input', () => {
  const payload = randomBytes(200_000);
  const entries: DumpEntry[] = [
    { path: 'a', type: 'file', size: payload.length, mode: 0o644, mtime: T },
    { path: 'b', type: 'file', size: 5, mode: 0o644, mtime: T },
  ];
  const data = new Map([['a', payload], ['b', Buffer.from('hello')]]);

  async function expectRefused(format: ArchiveFormat, bytes: Buffer, message: RegExp): Promise<void> {
    const file = tmp(`bad.${format}`);
    writeFileSync(file, bytes);
    const err = await refusal(scanArchive(format, file));
    expect(err.code).toBe('FERRY_INVALID_DUMP');
    expect(err.message).toMatch(message);
    expect(err.message).toContain(file);
  }

  it('tar: cut in the middle, cut at an entry boundary, a flipped header byte', async () => {
    const good = readFileSync(await writeArchive('tar', entries, data));
    await expectRefused('tar', good.subarray(0, good.length >> 1), /truncated/);
    // After b's header and data block: every entry is whole, only the end-of-archive marker is gone.
    const boundary = 512 + Math.ceil(payload.length / 512) * 512 + 1024;
    await expectRefused('tar', good.subarray(0, boundary), /truncated.*end-of-archive/);
    const flipped = Buffer.from(good);
    flipped[boundary - 1024 + 10]! ^= 0x01; // a byte of b's name
    await expectRefused('tar', flipped, /corrupt/);
  });

  it('tar.gz: cut, and a flipped byte that only the gzip CRC catches', async () => {
    const good = readFileSync(await writeArchive('tar.gz', entries, data));
    await expectRefused('tar.gz', good.subarray(0, good.length - 100), /truncated/);
    await expectRefused('tar.gz', good.subarray(0, good.length - 4), /truncated/);
    // Stored (level 0) gzip: the flipped byte inflates fine; only the CRC-32 trailer tells.
    const stored = gzipSync(readFileSync(await writeArchive('tar', entries, data)), { level: 0 });
    const flipped = Buffer.from(stored);
    flipped[stored.length >> 1]! ^= 0x40;
    await expectRefused('tar.gz', flipped, /corrupt.*check/i);
  });

  it('zip: cut, and a flipped byte in a member that fails its CRC, in both passes', async () => {
    const good = readFileSync(await hostileZip([{ name: 'a', body: payload.toString('latin1') }, { name: 'b', body: 'hello' }]));
    await expectRefused('zip', good.subarray(0, good.length >> 1), /corrupt|truncated/);
    await expectRefused('zip', good.subarray(0, good.length - 10), /corrupt|truncated/);
    const flipped = Buffer.from(good);
    flipped[good.length >> 2]! ^= 0x01; // inside a's stored data
    await expectRefused('zip', flipped, /CRC-32/);
    const file = tmp('crc.zip');
    writeFileSync(file, flipped);
    let streamError: unknown;
    const err = await refusal(
      extractArchive('zip', file, async (_e, d) => {
        try {
          for await (const _ of d!);
        } catch (e) {
          streamError = e;
          throw e;
        }
      }),
    );
    expect(err.code).toBe('FERRY_INVALID_DUMP');
    expect((streamError as { code: string }).code).toBe('FERRY_INVALID_DUMP');
  });

  it('a compressed writer round-trip of our own zip (deflate) detects a flipped byte', async () => {
    const good = readFileSync(await writeArchive('zip', entries, data));
    const flipped = Buffer.from(good);
    flipped[good.length >> 2]! ^= 0x01;
    await expectRefused('zip', flipped, /corrupt|CRC/);
  });
});

describe('archives: the extract pass', () => {
  const entries: DumpEntry[] = [
    { path: 'a', type: 'file', size: big.length, mode: 0o644, mtime: T },
    { path: 'b', type: 'file', size: 5, mode: 0o644, mtime: T },
  ];
  const data = new Map([['a', big], ['b', Buffer.from('hello')]]);

  it("lets the consumer's own error through as it is, not as a corrupt archive", async () => {
    // Bug guarded: a store error thrown while restoring was reported as FERRY_INVALID_DUMP.
    for (const format of ['tar', 'tar.gz', 'zip'] as const) {
      const file = await writeArchive(format, entries, data);
      const mine = Object.assign(new Error('disk full'), { code: 'EXAMPLE_STORE_ERROR' });
      const err = await refusal(extractArchive(format, file, async () => Promise.reject(mine)));
      expect(err).toBe(mine);
    }
  });

  it('skips the data a consumer leaves unread', async () => {
    for (const format of ['tar', 'zip'] as const) {
      const file = await writeArchive(format, entries, data);
      const seen: string[] = [];
      await extractArchive(format, file, async (e, d) => {
        seen.push(e.path);
        if (e.path === 'b') expect((await readAll(d!)).toString()).toBe('hello');
      });
      expect(seen).toEqual(['a', 'b']);
    }
  });

  it('fails the data stream of a tar cut inside a file, with the archive error', async () => {
    const good = readFileSync(await writeArchive('tar', entries, data));
    const file = tmp('cut.tar');
    writeFileSync(file, good.subarray(0, 512 + 100_000));
    let streamErr: unknown;
    const err = await refusal(
      extractArchive('tar', file, async (_e, d) => {
        await readAll(d!).catch((e: unknown) => {
          streamErr = e;
          throw e;
        });
      }),
    );
    expect(err.code).toBe('FERRY_INVALID_DUMP');
    expect(err.message).toMatch(/truncated/);
    expect(streamErr).toBeDefined();
  });

  it('stops on abort', async () => {
    for (const format of ['tar.gz', 'zip'] as const) {
      const file = await writeArchive(format, entries, data);
      const pre = new AbortController();
      pre.abort();
      expect((await refusal(scanArchive(format, file, pre.signal))).message).toMatch(/abort/i);
      const ac = new AbortController();
      const err = await refusal(
        extractArchive(format, file, async (_e, d) => {
          ac.abort();
          await readAll(d!);
        }, ac.signal),
      );
      expect(String((err as { name?: string }).name) + err.message).toMatch(/abort/i);
    }
  });
});

/** A file's data as a reader handed it on: a stream, or the bytes whole (a small file of a tar). */
async function readAll(d: Readable | Buffer): Promise<Buffer> {
  if (Buffer.isBuffer(d)) return d;
  const chunks: Buffer[] = [];
  for await (const c of d) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
