/**
 * Names that are not valid UTF-8 on the local disk: listed as keys whose stray bytes are lone
 * surrogates U+DC80..U+DCFF (Python's surrogateescape), sorted by their bytes, addressed by every
 * method, and synced byte-exactly to stores that hold such keys (features.rawNames); a store that
 * does not fails just those keys.
 */
import fs, { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runSync } from '../../../src/manager/sync/run.js';
import { parseAddress } from '../../../src/shared/storage/address.js';
import { FileStore } from '../../../src/shared/storage/file/index.js';
import { compareKeys, decodeKey, encodeKey, hasRawBytes, rawKeyProblem } from '../../../src/shared/storage/keys.js';
import { MemStore } from '../../../src/shared/storage/mem.js';
import { s3Backend } from '../../../src/shared/storage/s3/index.js';
import type { ObjectStore } from '../../../src/shared/storage/types.js';
import { SYNC_OPTIONS } from '../../support/options.js';
import { startS3Server, type S3TestServer } from '../../support/s3-server.js';
import { ferry } from '../../manager/cli-harness.js';
import { listAll, readAll } from './conformance.js';

process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';

const b = (...bytes: number[]) => Buffer.from(bytes);
const cat = (...parts: (string | Buffer)[]) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p) : p)));
/** Byte order of keys, the order a listing must give. */
const byBytes = (a: string, c: string) => Buffer.compare(encodeKey(a), encodeKey(c));

/** Names as bytes, raw and not, each with the key it must be listed under. */
const NAMES: { bytes: Buffer; key: string }[] = [
  { bytes: b(0x61, 0xff, 0x62), key: 'a\uDCFFb' }, // a byte that never occurs in UTF-8
  { bytes: b(0xc3), key: '\uDCC3' }, // a lead byte with nothing after it
  { bytes: b(0xc0, 0xaf), key: '\uDCC0\uDCAF' }, // an overlong '/'
  { bytes: b(0xed, 0xa0, 0x80), key: '\uDCED\uDCA0\uDC80' }, // an encoded surrogate
  { bytes: cat('caf', b(0xe9), '.txt'), key: 'caf\uDCE9.txt' }, // Latin-1
  { bytes: cat('\u00e9t\u00e9', b(0xff)), key: '\u00e9t\u00e9\uDCFF' }, // valid UTF-8, then a raw byte
  { bytes: Buffer.from('a'), key: 'a' },
  { bytes: Buffer.from('ab'), key: 'ab' },
  { bytes: Buffer.from('\u00e9'), key: '\u00e9' }, // C3 A9: after the lone C3
  { bytes: Buffer.from('\uFFFD'), key: '\uFFFD' }, // U+FFFD itself is a valid name
  { bytes: Buffer.from('z\u{1F600}'), key: 'z\u{1F600}' },
];

describe('keys: raw bytes (surrogateescape)', () => {
  it('decodes bytes as Python does and encodes the key back to the same bytes', () => {
    for (const { bytes, key } of NAMES) {
      expect(decodeKey(bytes)).toBe(key);
      expect(encodeKey(key).equals(bytes)).toBe(true);
    }
    // A lone surrogate that stands for no byte, or escapes that form valid UTF-8 (the name 'é' has that key), name nothing.
    expect(rawKeyProblem('\uD800')).toMatch(/stands for no byte/);
    expect(rawKeyProblem('\uDC41')).toMatch(/stands for no byte/);
    expect(rawKeyProblem('\uDCC3\uDCA9')).toMatch(/another key/);
    expect(() => encodeKey('\uDCC3\uDCA9')).toThrow(expect.objectContaining({ code: 'FERRY_UNSAFE_PATH' }));
    expect(hasRawBytes('z\u{1F600}')).toBe(false);
    expect(hasRawBytes('a\uDCFFb')).toBe(true);
  });

  it('compares keys by their bytes: a raw byte between the UTF-8 encodings around it', () => {
    const keys = NAMES.map((n) => n.key);
    const want = [...NAMES].sort((x, y) => Buffer.compare(x.bytes, y.bytes)).map((n) => n.key);
    expect([...keys].sort(compareKeys)).toEqual(want);
    // The lone C3 sorts before 'é' (C3 A9), and 0xFF after every UTF-8 lead byte, even F0 (the emoji).
    expect(compareKeys('\uDCC3', '\u00e9')).toBeLessThan(0);
    expect(compareKeys('z\uDCFF', 'z\u{1F600}')).toBeGreaterThan(0);
    expect(compareKeys('z\uDC80', 'z\u00e9')).toBeLessThan(0);
    expect(compareKeys('\uDCC3b', '\u00e9')).toBeLessThan(0); // C3 62 < C3 A9
    expect(compareKeys('a/', 'a\uDC80')).toBeLessThan(0);
    // Random byte strings: the comparator of the keys is the byte order of the names.
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    const alphabet = [0x2f, 0x61, 0x80, 0xa9, 0xbf, 0xc3, 0xe2, 0x82, 0xac, 0xed, 0xa0, 0xef, 0xf0, 0x9f, 0x98, 0xff];
    const wrong: string[] = [];
    for (let t = 0; t < 20000; t++) {
      const x = Buffer.from(Array.from({ length: rnd(6) }, () => alphabet[rnd(alphabet.length)]!));
      const y = Buffer.from(Array.from({ length: rnd(6) }, () => alphabet[rnd(alphabet.length)]!));
      if (Math.sign(compareKeys(decodeKey(x), decodeKey(y))) !== Math.sign(Buffer.compare(x, y))) wrong.push(`${x.toString('hex')} ${y.toString('hex')}`);
      if (!encodeKey(decodeKey(x)).equals(x)) wrong.push(x.toString('hex'));
    }
    expect(wrong).toEqual([]);
  });
});

describe('file store: names that are not valid UTF-8', () => {
  let dir: string;
  let root: string;
  let s: FileStore;

  beforeAll(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-file-names-'));
  });
  beforeEach(async () => {
    root = (await fsp.mkdtemp(join(dir, 'root-'))) + '/';
    for (const { bytes } of NAMES) fs.writeFileSync(cat(root, bytes), bytes);
    // A directory whose name is raw, holding a raw name.
    fs.mkdirSync(cat(root, 'd', b(0xfe)));
    fs.writeFileSync(cat(root, 'd', b(0xfe), '/x', b(0x80)), 'inner');
    // A symlink whose name and target are raw.
    fs.symlinkSync(cat('caf', b(0xe9), '.txt'), cat(root, 'l', b(0xe9)));
    await s?.close();
    s = new FileStore(root);
  });
  afterAll(async () => {
    await s?.close();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  const rawDir = 'd\uDCFE/';
  const keysOf = (entries: { key: string }[]) => entries.map((e) => e.key);
  const allKeys = () => [...NAMES.map((n) => n.key), rawDir, rawDir + 'x\uDC80', 'l\uDCE9'].sort(byBytes);

  it('lists such names under keys that keep their bytes, in byte order among the others, with no error', async () => {
    for (const listCutoff of [1_000_000, 2]) {
      const listed = await listAll(s, { listCutoff });
      expect(keysOf(listed)).toEqual(allKeys());
      expect(listed.filter((e) => e.error !== undefined)).toEqual([]);
      const byKey = new Map(listed.map((e) => [e.key, e]));
      expect(byKey.get('a\uDCFFb')).toMatchObject({ size: 3, isDir: false });
      expect(byKey.get(rawDir)).toMatchObject({ isDir: true });
      expect(byKey.get('l\uDCE9')).toMatchObject({ isSymlink: true, target: 'caf\uDCE9.txt' });
    }
    // One level, a prefix and startAfter that hold raw bytes.
    expect(keysOf(await listAll(s, { prefix: rawDir }))).toEqual([rawDir + 'x\uDC80']);
    expect(keysOf(await listAll(s, { prefix: 'a', delimiter: '/' }))).toEqual(['a', 'ab', 'a\uDCFFb']);
    expect(keysOf(await listAll(s, { startAfter: '\uDCC3' })).slice(0, 1)).toEqual(['\u00e9']);
    // Followed links: the raw target is reached through its bytes.
    const followed = await listAll(s, { followSymlinks: true });
    expect(followed.find((e) => e.key === 'l\uDCE9')).toMatchObject({ size: 'caf\xe9.txt'.length, isDir: false });
  });

  it('reads, heads, writes, deletes and sets attributes of raw keys, and makes raw directories and links', async () => {
    expect((await readAll(await s.get('a\uDCFFb'))).equals(b(0x61, 0xff, 0x62))).toBe(true);
    expect((await readAll(await s.get('\uDCC0\uDCAF', { sizeHint: 2 }))).equals(b(0xc0, 0xaf))).toBe(true);
    expect((await readAll(await s.get('a\uDCFFb', { offset: 1, length: 1 }))).equals(b(0xff))).toBe(true);
    expect(await s.head('caf\uDCE9.txt')).toMatchObject({ key: 'caf\uDCE9.txt', size: 8 });
    expect(await s.head('l\uDCE9')).toMatchObject({ isSymlink: true, target: 'caf\uDCE9.txt' });
    await expect(s.head('\uDCFF')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });

    // Small (written whole), large (streamed to a temporary name) and in a raw directory made on the way.
    await s.put('new\uDCFF', Buffer.from('small'), { mtime: Date.UTC(2020, 0, 1), mode: 0o640 });
    const big = Buffer.alloc(3 << 20, 7);
    await s.put('n\uDC80/deep\uDCC3/big', Readable.from([big]), { size: big.length });
    expect(fs.readFileSync(cat(root, 'new', b(0xff)), 'utf8')).toBe('small');
    expect(fs.statSync(cat(root, 'new', b(0xff))).mode & 0o777).toBe(0o640);
    expect(fs.readFileSync(cat(root, 'n', b(0x80), '/deep', b(0xc3), '/big')).equals(big)).toBe(true);
    // Replacing a raw key's content; a mid-sized file goes to a file-system thread both ways.
    await s.put('a\uDCFFb', Buffer.from('replaced'));
    expect(fs.readFileSync(cat(root, 'a', b(0xff), 'b'), 'utf8')).toBe('replaced');
    const mid = Buffer.alloc(512 << 10, 3);
    await s.put('n\uDC80/mid\uDCFF', mid);
    expect((await readAll(await s.get('n\uDC80/mid\uDCFF', { sizeHint: mid.length }))).equals(mid)).toBe(true);
    await s.delete('n\uDC80/mid\uDCFF');
    // Written in place (--inplace): the file itself, no temporary name.
    const inplace = new FileStore(root, { inplace: true });
    try {
      await inplace.put('a\uDCFFb', Readable.from([big]), { size: big.length });
      expect(fs.readFileSync(cat(root, 'a', b(0xff), 'b')).equals(big)).toBe(true);
    } finally {
      await inplace.close();
    }

    await s.mkdir('m\uDCFA/');
    expect(fs.statSync(cat(root, 'm', b(0xfa))).isDirectory()).toBe(true);
    await s.symlink('k\uDCE8', 'to\uDCE8');
    expect(fs.readlinkSync(cat(root, 'k', b(0xe8)), { encoding: 'buffer' }).equals(cat('to', b(0xe8)))).toBe(true);
    await s.setAttrs('new\uDCFF', { mtime: Date.UTC(2001, 1, 2), mode: 0o600 });
    const st = fs.statSync(cat(root, 'new', b(0xff)));
    expect([st.mtimeMs, st.mode & 0o777]).toEqual([Date.UTC(2001, 1, 2), 0o600]);

    await s.delete('new\uDCFF');
    await s.delete(rawDir + 'x\uDC80');
    await s.delete(rawDir);
    await s.delete('\uDCFF'); // not there: no error
    const left = fs.readdirSync(root, { encoding: 'buffer' });
    expect(left.some((n) => n.equals(cat('new', b(0xff))))).toBe(false);
    expect(left.some((n) => n.equals(cat('d', b(0xfe))))).toBe(false);
    // Nothing temporary left behind, nothing written under a mangled (U+FFFD) name: the tree holds what the calls made.
    const made = ['new\uDCFF', 'n\uDC80/', 'n\uDC80/deep\uDCC3/', 'n\uDC80/deep\uDCC3/big', 'm\uDCFA/', 'k\uDCE8'];
    const gone = ['new\uDCFF', rawDir, rawDir + 'x\uDC80'];
    expect(keysOf(await listAll(s))).toEqual([...allKeys(), ...made].filter((k) => !gone.includes(k)).sort(byBytes));
  });

  it('copies raw keys between local stores (copyFrom, copyFromMany)', async () => {
    const other = (await fsp.mkdtemp(join(dir, 'copy-'))) + '/';
    const t = new FileStore(other);
    try {
      await t.copyFrom!('one\uDCFF', s.copySource!('a\uDCFFb'), { size: 3 });
      const results = await t.copyFromMany!([
        { key: 'x\uDC80/two', source: s.copySource!('\uDCC3'), options: { size: 1 } },
        { key: '\uDCC3\uDCA9', source: s.copySource!('\uDCC3'), options: { size: 1 } },
      ]);
      expect(results[0]).toBeUndefined();
      expect(results[1]).toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
      expect(fs.readFileSync(cat(other, 'one', b(0xff))).equals(b(0x61, 0xff, 0x62))).toBe(true);
      expect(fs.readFileSync(cat(other, 'x', b(0x80), '/two')).equals(b(0xc3))).toBe(true);
    } finally {
      await t.close();
    }
  });

  it('refuses keys that name no bytes, or that another key names: one file never has two keys', async () => {
    for (const key of ['\uDCC3\uDCA9', 'x\uD800', 'x\uDC41']) {
      await expect(s.put(key, Buffer.from('no'))).rejects.toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
      await expect(s.head(key)).rejects.toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
      await expect(s.delete(key)).rejects.toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
    }
    // 'é' is still there: the escaped form of its bytes did not delete it.
    expect(fs.existsSync(root + '\u00e9')).toBe(true);
  });
});

describe('sync of names that are not valid UTF-8', () => {
  let dir: string;
  let server: S3TestServer | undefined;
  const stores: ObjectStore[] = [];
  const log = () => {
    const lines: string[] = [];
    return { lines, logger: { error: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), info() {}, debug() {} } };
  };
  const control = (logger: ReturnType<typeof log>['logger']) => ({ stopListing: new AbortController().signal, stopNow: new AbortController().signal, logger });
  /** A source tree with raw names, as bytes: file contents are the names' bytes. */
  const source = async (): Promise<string> => {
    const src = (await fsp.mkdtemp(join(dir, 'src-'))) + '/';
    for (const n of [b(0x61, 0xff, 0x62), b(0xc3), b(0xc0, 0xaf), Buffer.from('ok.txt'), cat('d', b(0xfe))]) fs.writeFileSync(cat(src, n), n);
    fs.mkdirSync(cat(src, 'sub', b(0x80)));
    fs.writeFileSync(cat(src, 'sub', b(0x80), '/in', b(0xff)), 'deep');
    fs.writeFileSync(cat(src, 'sub', b(0x80), '/plain'), 'plain');
    return src;
  };
  /** Every path below `root` as bytes (hex), with the content of files. */
  const tree = (root: string): Record<string, string> => {
    const out: Record<string, string> = {};
    const walk = (rel: Buffer) => {
      for (const name of fs.readdirSync(cat(root, rel), { encoding: 'buffer' })) {
        const p = rel.length ? cat(rel, '/', name) : name;
        const st = fs.lstatSync(cat(root, p));
        if (st.isDirectory()) {
          out[p.toString('hex') + '/'] = '';
          walk(p);
        } else out[p.toString('hex')] = fs.readFileSync(cat(root, p)).toString('hex');
      }
    };
    walk(Buffer.alloc(0));
    return out;
  };

  beforeAll(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-names-sync-'));
  });
  afterAll(async () => {
    for (const st of stores) await st.close?.();
    await server?.close();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('ferry sync file to file copies every raw name byte-exactly, and a second run copies nothing', async () => {
    const src = await source();
    const dst = join(dir, 'dst-file') + '/';
    const r = await ferry(['sync', '--json', src, dst]);
    expect(r.stderr).not.toContain('not valid UTF-8');
    expect(r.code).toBe(0);
    expect(r.json).toMatchObject({ copied: 7, failed: 0 });
    expect(tree(dst)).toEqual(tree(src));
    expect(fs.readdirSync(dst, { encoding: 'buffer' }).some((n) => n.equals(b(0xc0, 0xaf)))).toBe(true);
    const again = await ferry(['sync', '--json', src, dst]);
    expect(again.json).toMatchObject({ copied: 0, failed: 0 });
    // --delete-dst reaches a raw name that only the destination has.
    fs.writeFileSync(cat(dst, 'extra', b(0xff)), 'x');
    const del = await ferry(['sync', '--json', '--delete-dst', src, dst]);
    expect(del.json).toMatchObject({ deleted: 1, failed: 0 });
    expect(tree(dst)).toEqual(tree(src));
  });

  it('file to mem and back to file: the raw names round-trip', async () => {
    const src = await source();
    const mem = new MemStore('raw-names');
    const from = new FileStore(src);
    stores.push(from);
    const a = await runSync(from, mem, SYNC_OPTIONS, control(log().logger));
    expect(a.stats).toMatchObject({ copied: 7, failed: 0 });
    expect(keysOf(await listAll(mem))).toEqual(['a\uDCFFb', 'd\uDCFE', 'ok.txt', 'sub\uDC80/in\uDCFF', 'sub\uDC80/plain', '\uDCC0\uDCAF', '\uDCC3']);
    expect((await readAll(await mem.get('a\uDCFFb'))).equals(b(0x61, 0xff, 0x62))).toBe(true);
    const back = join(dir, 'back') + '/';
    const to = new FileStore(back);
    stores.push(to);
    const c = await runSync(mem, to, SYNC_OPTIONS, control(log().logger));
    expect(c.stats).toMatchObject({ failed: 0 });
    expect(tree(back)).toEqual(tree(src));
  });

  it('file to s3 fails just the raw keys, with a message, and writes no mangled name', async () => {
    const src = await source();
    server = await startS3Server();
    await server.createBucket('names');
    const s3 = await s3Backend.open(parseAddress(`minio://S3RVER:S3RVER@${server.endpoint}/names`), { env: {} });
    stores.push(s3);
    const from = new FileStore(src);
    stores.push(from);
    expect(s3.features.rawNames).toBeFalsy();
    const l = log();
    const r = await runSync(from, s3, SYNC_OPTIONS, control(l.logger));
    // Every key below a raw directory name is raw too: only ok.txt can go.
    expect(r.stats).toMatchObject({ copied: 1, failed: 6 });
    expect(r.fatal).toBeUndefined();
    expect(keysOf(await listAll(s3))).toEqual(['ok.txt']);
    const failed = l.lines.filter((m) => m.includes('not valid UTF-8'));
    expect(failed).toHaveLength(6);
    expect(failed.some((m) => m.includes('"a\\udcffb"') && m.includes('s3'))).toBe(true);

    // A link copied as a link (--links) whose target is raw fails too; followed, it is a file.
    fs.symlinkSync(cat('a', b(0xff), 'b'), cat(src, 'link'));
    const asLink = log();
    const links = await runSync(from, s3, { ...SYNC_OPTIONS, links: true }, control(asLink.logger));
    expect(links.stats).toMatchObject({ copied: 0, failed: 7 });
    expect(asLink.lines.filter((m) => m.includes('"link"') && m.includes('its symlink target is not valid UTF-8'))).toHaveLength(1);
    const followed = await runSync(from, s3, SYNC_OPTIONS, control(log().logger));
    expect(followed.stats).toMatchObject({ copied: 1, failed: 6 });
    expect((await readAll(await s3.get('link'))).equals(b(0x61, 0xff, 0x62))).toBe(true);
  });

  const keysOf = (entries: { key: string }[]) => entries.map((e) => e.key);
});
