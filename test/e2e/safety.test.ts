/**
 * Data safety of `ferry sync`, class by class, through the command line against real stores: the
 * local disk, SFTP (a real sshd), HDFS, S3, OSS and COS (their test servers). Each test names the
 * class of defect it guards against; every one of them lost or misplaced data before.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackendRegistry } from '../../src/shared/storage/registry.js';
import { tempName } from '../../src/shared/storage/temp.js';
import { HDFS_HOME, startBackends, type Backends } from '../support/backends.js';
import { sshdMissing } from '../support/sshd.js';
import { ferry as runFerry } from '../manager/cli-harness.js';
import { chownTree } from '../support/files.js';

/** The unprivileged user the permission tests run ferry as (root reads every directory). */
const NOBODY = 65534;

let work: string;
let b: Backends;
let registry: BackendRegistry;
let seq = 0;

const ferry = (...args: string[]) => runFerry(args, { registry });

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ferry-safety-'));
  chmodSync(work, 0o755);
  b = await startBackends('safety', { ferry: ['ferry'], other: ['other'] });
  registry = b.registry;
}, 120_000);

afterAll(async () => {
  await b?.close();
  rmSync(work, { recursive: true, force: true });
});

/** A fresh local directory. */
function dir(name = 'd'): string {
  const d = join(work, `${name}-${++seq}`);
  mkdirSync(d, { recursive: true });
  return d;
}

function write(root: string, files: Record<string, string>): void {
  for (const [k, v] of Object.entries(files)) {
    mkdirSync(join(root, k, '..'), { recursive: true });
    writeFileSync(join(root, k), v);
  }
}

/** Every file under a local directory with its content (symlinks as '-> target'). */
function tree(root: string, rel = ''): Record<string, string> {
  const out: Record<string, string> = {};
  if (!existsSync(join(root, rel))) return out;
  for (const name of readdirSync(join(root, rel))) {
    const key = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(root, key));
    if (st.isSymbolicLink()) out[key] = '-> ' + readFileSync(join(root, key)).length;
    else if (st.isDirectory()) Object.assign(out, tree(root, key));
    else if (st.isFile()) out[key] = readFileSync(join(root, key), 'utf8');
  }
  return out;
}

/** Destinations that are directory trees, as [name, address of dir, a way to read it back as local files]. */
function treeDestinations(): { name: string; addr: (d: string) => string }[] {
  // Decided when the tests are collected, before beforeAll starts sshd: its address is read inside each test.
  return [{ name: 'file', addr: (d) => d + '/' }, ...(sshdMissing ? [] : [{ name: 'sftp', addr: (d: string) => b.sftpAddr(d) + '/' }])];
}

/** The permission tests drop root's privileges to get real "permission denied" answers. */
const asRoot = process.getuid?.() === 0;
if (!asRoot) console.warn('not running as root: skipping the tests that run ferry as an unprivileged user against unreadable directories');

/**
 * Run ferry as an unprivileged user, through the built binary (root reads every directory). The
 * bundle is self-contained: a copy of it where that user can read it (CI's checkout may not be).
 */
function ferryAsNobody(args: string[]): { code: number; stderr: string; json: Record<string, unknown> } {
  const app = join(work, 'app');
  if (!existsSync(app)) {
    cpSync(join(process.cwd(), 'bin'), join(app, 'bin'), { recursive: true });
    cpSync(join(process.cwd(), 'dist'), join(app, 'dist'), { recursive: true });
    cpSync(join(process.cwd(), 'package.json'), join(app, 'package.json'));
  }
  const r = spawnSync(process.execPath, [join(app, 'bin/ferry.js'), ...args], { uid: NOBODY, gid: NOBODY, encoding: 'utf8', cwd: work });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return { code: r.status ?? -1, stderr: r.stderr, json: line.startsWith('{') ? JSON.parse(line) : {} };
}


describe('deletion needs a complete view', () => {
  it.skipIf(!asRoot)('an unreadable source sub-directory protects its destination copies from --delete-dst (file)', () => {
    // Bug: a sub-directory the user could not read listed as empty, so --delete-dst deleted its backup.
    const src = dir('src');
    const dst = dir('dst');
    write(src, { 'a.txt': 'a', 'locked/x.txt': 'x', 'open/y.txt': 'y' });
    write(dst, { 'a.txt': 'a', 'locked/x.txt': 'x', 'locked/z.txt': 'z', 'open/y.txt': 'y', 'open/stray.txt': 's' });
    chownTree(src, NOBODY);
    chownTree(dst, NOBODY);
    chownSync(join(src, 'locked'), 0, 0);
    chmodSync(join(src, 'locked'), 0o700);
    const r = ferryAsNobody(['sync', '--delete-dst', '--json', src + '/', dst + '/']);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/locked\/.*incomplete/);
    expect(tree(dst)).toEqual({ 'a.txt': 'a', 'locked/x.txt': 'x', 'locked/z.txt': 'z', 'open/y.txt': 'y' });
    expect(r.json).toMatchObject({ deleted: 1, protected: 2, failed: 1 });
    expect(r.json.error).toBeTruthy();
  });

  it.skipIf(!asRoot)('an unreadable destination sub-directory protects the source from --delete-src (file)', () => {
    // Bug: --delete-src trusted a destination listing that had silently skipped a directory.
    const src = dir('src');
    const dst = dir('dst');
    write(src, { 'k/1': '1', 'k/2': '2', 'top': 't' });
    write(dst, { 'k/1': '1', 'k/2': '2', 'top': 't' });
    chownTree(src, NOBODY);
    chownTree(dst, NOBODY);
    chownSync(join(dst, 'k'), 0, 0);
    chmodSync(join(dst, 'k'), 0o700);
    const r = ferryAsNobody(['sync', '--delete-src', '--json', src + '/', dst + '/']);
    expect(r.code, r.stderr).toBe(1);
    expect(tree(src)).toEqual({ 'k/1': '1', 'k/2': '2' });
  });

  it('a source directory HDFS refuses to list protects the destination copies under it', async () => {
    // Bug: a 403 on one HDFS directory made its whole sub-tree look deleted on the source.
    const base = `${HDFS_HOME}/cv-${++seq}`;
    b.hdfs.mkdir(base, 'ferry', 0o755);
    const store = await registry.open(`hdfs://ferry@127.0.0.1:${b.hdfs.namenodePort}${base}/`);
    await store.put('pub/a', Buffer.from('a'), { size: 1 });
    await store.close?.();
    b.hdfs.mkdir(`${base}/secret`, 'other', 0o700);
    const dst = dir('dst');
    write(dst, { 'pub/a': 'a', 'secret/kept': 'k', 'stray': 's' });
    const r = await ferry('sync', '--delete-dst', '--json', `hdfs://ferry@127.0.0.1:${b.hdfs.namenodePort}${base}/`, dst + '/');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/secret\/.*incomplete/);
    expect(tree(dst)).toEqual({ 'pub/a': 'a', 'secret/kept': 'k' });
    expect(r.json).toMatchObject({ deleted: 1, protected: 1 });
  });

  it('--max-deletes stops deleting once N would be exceeded, and says so', async () => {
    // The safety net DR users ask for: a source emptied by mistake must not empty the mirror.
    const src = dir('src');
    const dst = dir('dst');
    write(src, { keep: 'k' });
    write(dst, { keep: 'k', x1: '1', x2: '2', x3: '3', x4: '4' });
    const r = await ferry('sync', '--delete-dst', '--max-deletes', '2', '--json', src + '/', dst + '/');
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ deleted: 2, protected: 2 });
    expect(r.stderr).toContain('--max-deletes 2');
    expect(r.stderr).toMatch(/protected from deletion: 2 — the run FAILED: 2 deletions withheld by --max-deletes/);
    expect(Object.keys(tree(dst))).toHaveLength(3);
  });

  describe.skipIf(!asRoot)('the deletion-safety matrix: address forms × deletions × a failure mid-listing', () => {
    // Whatever the form and whichever side deletes, nothing outside the intended set is deleted,
    // and nothing under the sub-tree whose listing failed.
    const forms: { name: string; src: (d: string) => string; dst: (d: string) => string; base: string }[] = [
      { name: 'directories', src: (d) => `${d}/`, dst: (d) => `${d}/`, base: '' },
      { name: 'nested directories', src: (d) => `${d}/data/`, dst: (d) => `${d}/data/`, base: 'data/' },
      { name: 'key prefixes', src: (d) => `${d}/data`, dst: (d) => `${d}/data`, base: 'data' },
    ];
    for (const form of forms) {
      for (const flag of ['--delete-dst', '--delete-src'] as const) {
        for (const failure of [false, true]) {
          it(`${form.name}, ${flag}, ${failure ? 'a sub-directory unreadable' : 'complete listings'}`, () => {
            const root = dir('matrix');
            const src = join(root, 'src');
            const dst = join(root, 'dst');
            const b = form.base;
            // Outside the addressed keys on both sides: must never be touched.
            const outside: Record<string, string> = b === '' ? {} : { 'other/o.txt': 'o', 'dat.txt': 'near miss' };
            write(src, { ...outside, [`${b}same.txt`]: 's', [`${b}sub/in.txt`]: 'i', [`${b}new.txt`]: 'n' });
            write(dst, { ...outside, [`${b}same.txt`]: 's', [`${b}sub/in.txt`]: 'i', [`${b}sub/extra.txt`]: 'e', [`${b}extra.txt`]: 'e' });
            chownTree(root, NOBODY);
            const locked = flag === '--delete-dst' ? join(src, `${b}sub`) : join(dst, `${b}sub`);
            if (failure) {
              chownSync(locked, 0, 0);
              chmodSync(locked, 0o700);
            }
            const r = ferryAsNobody(['sync', flag, '--json', form.src(src), form.dst(dst)]);
            const s = tree(src);
            const t = tree(dst);
            for (const [k, v] of Object.entries(outside)) {
              expect(s[k], k).toBe(v);
              expect(t[k], k).toBe(v);
            }
            if (flag === '--delete-dst') {
              expect(t[`${b}extra.txt`]).toBeUndefined();
              expect(t[`${b}new.txt`]).toBe('n');
              // Under the unreadable sub-tree nothing goes; with complete listings, the stray goes.
              expect(t[`${b}sub/extra.txt`]).toBe(failure ? 'e' : undefined);
              expect(t[`${b}sub/in.txt`]).toBe('i');
            } else {
              expect(s[`${b}same.txt`]).toBeUndefined();
              expect(t[`${b}same.txt`]).toBe('s');
              expect(s[`${b}new.txt`]).toBe('n');
              // The destination copy could not be seen: its source stays.
              if (failure) {
                chmodSync(locked, 0o755);
                expect(tree(src)[`${b}sub/in.txt`]).toBe('i');
              } else expect(s[`${b}sub/in.txt`]).toBeUndefined();
            }
            expect(r.code, r.stderr).toBe(failure ? 1 : 0);
          });
        }
      }
    }
  });
});

describe('one key, one name, on both sides', () => {
  for (const t of treeDestinations()) {
    it(`a directory SRC without '/' and a DST with one is refused before anything is touched (${t.name})`, async () => {
      // Bug: 'ferry sync --delete-dst data backup/' copied every file, then deleted each as "extra".
      const root = dir('forms');
      write(join(root, 'data'), { 'a.txt': 'a', 'b/c.txt': 'c' });
      write(join(root, 'backup'), { 'old.txt': 'o' });
      const r = await ferry('sync', '--delete-dst', '--json', join(root, 'data'), t.addr(join(root, 'backup')));
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("should both end with '/'");
      expect(r.json).toMatchObject({ copied: 0, deleted: 0, exitCode: 2 });
      expect(tree(join(root, 'backup'))).toEqual({ 'old.txt': 'o' });
    });
  }

  it('both sides without a trailing slash keep one form: a second run copies and deletes nothing', async () => {
    const root = dir('forms');
    write(join(root, 'data'), { 'a.txt': 'a', 'b/c.txt': 'c' });
    const first = await ferry('sync', '--delete-dst', '--json', join(root, 'data'), join(root, 'backup'));
    expect(first.json).toMatchObject({ copied: 2, deleted: 0, failed: 0 });
    const second = await ferry('sync', '--delete-dst', '--json', join(root, 'data'), join(root, 'backup'));
    expect(second.json).toMatchObject({ copied: 0, deleted: 0, skipped: 2 });
    expect(tree(join(root, 'backup'))).toEqual({ 'a.txt': 'a', 'b/c.txt': 'c' });
  });

  it('one file into a directory still works', async () => {
    const root = dir('forms');
    write(root, { 'report.pdf': 'pdf' });
    mkdirSync(join(root, 'out'));
    const r = await ferry('sync', '--json', join(root, 'report.pdf'), join(root, 'out') + '/');
    expect(r.code).toBe(0);
    expect(tree(join(root, 'out'))).toEqual({ 'report.pdf': 'pdf' });
  });

  it('--dry -v with a prefix DST and --delete-dst says deletions reach every key sharing the prefix', async () => {
    const root = dir('forms');
    write(join(root, 'src'), { 'config/a': 'a' });
    write(root, { 'dst/config.old/x': 'x', 'dst/configuration.yaml': 'y' });
    const r = await ferry('sync', '--delete-dst', '--dry', '-v', join(root, 'src', 'config'), join(root, 'dst', 'config'));
    expect(r.stderr).toMatch(/key prefix, so --delete-dst reaches every destination key starting with it/);
    expect(r.stderr).toContain('would delete .old/x');
    expect(r.stderr).toContain('would delete uration.yaml');
  });
});

describe('writes stay inside the destination root', () => {
  const hostile = ['../escape.txt', 'a/../../escape2.txt', '/abs.txt', 'a//b.txt', './dot.txt'];

  it('keys with .., a leading / or empty segments from an object store are refused on every tree destination', async () => {
    // Bug: an object key '../x' was written outside the destination directory.
    // s3rver keeps objects as files and normalises such keys away, and ali-oss normalises them
    // before signing; COS's test server holds any key, as the real services do.
    const sources = [
      { name: 'cos', addr: (p: string) => b.cosAddr('safety', p), keys: hostile },
    ];
    for (const source of sources) {
      const prefix = `hostile-${++seq}/`;
      const from = await registry.open(source.addr(prefix));
      try {
        for (const k of [...source.keys, 'fine.txt']) await from.put(k, Buffer.from(k), { size: Buffer.byteLength(k) });
      } finally {
        await from.close?.();
      }
      const base = `${HDFS_HOME}/hostile-${seq}`;
      b.hdfs.mkdir(base, 'ferry', 0o755);
      const dests = [
        ...treeDestinations().map((t) => {
          const parent = dir('hostile');
          return { name: t.name, addr: t.addr(join(parent, 'inside')), check: () => expect(tree(parent)).toEqual({ 'inside/fine.txt': 'fine.txt' }) };
        }),
        {
          name: 'hdfs',
          addr: `hdfs://ferry@127.0.0.1:${b.hdfs.namenodePort}${base}/inside/`,
          check: () => {
            expect(b.hdfs.stat(`${base}/escape.txt`)).toBeUndefined();
            expect(b.hdfs.stat(`${HDFS_HOME}/escape2.txt`)).toBeUndefined();
            expect(b.hdfs.stat(`${base}/inside/fine.txt`)?.length).toBe(8);
          },
        },
      ];
      for (const d of dests) {
        const what = `${source.name} → ${d.name}`;
        const r = await ferry('sync', '--json', source.addr(prefix), d.addr);
        expect(r.json, what).toMatchObject({ copied: 1, failed: source.keys.length });
        expect(r.code, what).toBe(1);
        expect(r.stderr, what).toContain('FERRY_UNSAFE_PATH');
        d.check();
      }
    }
  });

  it('--files-from lines with .. never read or write outside the roots', async () => {
    const root = dir('ff');
    write(root, { 'secret.txt': 'secret', 'src/ok.txt': 'ok' });
    writeFileSync(join(root, 'list'), '../secret.txt\nok.txt\n');
    mkdirSync(join(root, 'dst', 'deeper'), { recursive: true });
    const r = await ferry('sync', '--files-from', join(root, 'list'), '--json', join(root, 'src') + '/', join(root, 'dst', 'deeper') + '/');
    expect(r.json).toMatchObject({ copied: 1, failed: 1 });
    expect(tree(join(root, 'dst'))).toEqual({ 'deeper/ok.txt': 'ok' });
  });

  for (const t of treeDestinations()) {
    it(`--inplace never writes through a symlink in the destination (${t.name})`, async () => {
      // Bug: --inplace opened dst/f, a symlink to a file elsewhere, and overwrote that file.
      const root = dir('inplace');
      write(root, { 'src/f': 'new content', 'elsewhere/precious': 'precious' });
      mkdirSync(join(root, 'dst'));
      symlinkSync(join(root, 'elsewhere/precious'), join(root, 'dst/f'));
      const r = await ferry('sync', '--inplace', '--json', join(root, 'src') + '/', t.addr(join(root, 'dst')));
      expect(readFileSync(join(root, 'elsewhere/precious'), 'utf8')).toBe('precious');
      expect(r.json.failed).toBe(1);
      expect(r.stderr).toContain('FERRY_UNSAFE_PATH');
    });

    it(`--delete-dst never deletes through a symlinked directory in the destination (${t.name})`, async () => {
      // Bug: the destination was listed following links, so --delete-dst deleted files outside it.
      const root = dir('dirlink');
      write(root, { 'src/a': 'a', 'elsewhere/important': 'i', 'elsewhere/more/deep': 'd' });
      mkdirSync(join(root, 'dst'));
      symlinkSync(join(root, 'elsewhere'), join(root, 'dst/link'));
      const r = await ferry('sync', '--delete-dst', '--json', join(root, 'src') + '/', t.addr(join(root, 'dst')));
      expect(r.code).toBe(0);
      expect(tree(join(root, 'elsewhere'))).toEqual({ important: 'i', 'more/deep': 'd' });
      // The link itself was extra: removed, never followed.
      expect(existsSync(join(root, 'dst/link'))).toBe(false);
      expect(tree(join(root, 'dst'))).toEqual({ a: 'a' });
    });

    it(`a write under a symlinked destination directory is refused (${t.name})`, async () => {
      const root = dir('under');
      write(root, { 'src/d/f': 'f', 'elsewhere/keep': 'k' });
      mkdirSync(join(root, 'dst'));
      symlinkSync(join(root, 'elsewhere'), join(root, 'dst/d'));
      const r = await ferry('sync', '--json', join(root, 'src') + '/', t.addr(join(root, 'dst')));
      expect(r.json.failed).toBe(1);
      expect(tree(join(root, 'elsewhere'))).toEqual({ keep: 'k' });
    });
  }
});

describe('overlapping or root-level destructive runs are refused', () => {
  it('the same or nested places, after resolving . .. ~ and symlinks, with any destructive option', async () => {
    // Bug: 'ferry sync --delete-src data/ data/' deleted every file it had just found "equal".
    const root = dir('overlap');
    write(root, { 'data/a': 'a', 'data/sub/b': 'b' });
    symlinkSync(join(root, 'data'), join(root, 'alias'));
    const cases: [string, string][] = [
      [join(root, 'data') + '/', join(root, 'data') + '/'],
      [join(root, 'data') + '/', join(root, 'alias') + '/'],
      [join(root, 'data') + '/', join(root, 'data/sub/..') + '/'],
      [join(root, 'data') + '/', join(root, 'data/sub') + '/'],
      [join(root, 'data/sub') + '/', join(root, 'alias') + '/'],
    ];
    for (const [s, d] of cases) {
      for (const flag of ['--delete-src', '--delete-src-after', '--delete-dst', '--force-update']) {
        const r = await ferry('sync', flag, '--json', s, d);
        expect(r.code, `${flag} ${s} ${d}`).toBe(2);
        expect(r.stderr).toMatch(/overlap|same place/);
      }
    }
    expect(tree(join(root, 'data'))).toEqual({ a: 'a', 'sub/b': 'b' });
  });

  it('overlapping SFTP directories and S3 prefixes are refused too', async () => {
    const r1 = await ferry('sync', '--delete-dst', b.s3Addr('safety', 'x/'), b.s3Addr('safety', 'x/y/'));
    expect(r1.code).toBe(2);
    const r2 = await ferry('sync', '--delete-src', 'sftp://u@example.invalid/data/', 'sftp://u@example.invalid/data/../data/');
    expect(r2.code).toBe(2);
  });

  it('--delete-dst at the root of a file system needs --allow-root', async () => {
    const src = dir('src');
    for (const d of ['/', 'file:///', 'sftp://u@example.invalid/', `hdfs://ferry@127.0.0.1:${b.hdfs.namenodePort}/`]) {
      const r = await ferry('sync', '--delete-dst', '--dry', src + '/', d);
      expect(r.code, d).toBe(2);
      expect(r.stderr, d).toContain('--allow-root');
    }
  });
});

describe('deleting a source needs proof of a copy', () => {
  it('--delete-src compares content on stores without mtimes: a changed file of the same size is copied, not lost', async () => {
    // Bug: equal sizes meant "equal", so the source's new content was deleted.
    const src = b.s3Addr('safety', `prove-${++seq}/`);
    const dst = b.ossAddr('safety', `prove-${seq}/`);
    const from = await registry.open(src);
    const to = await registry.open(dst);
    try {
      await from.put('same', Buffer.from('1111'), { size: 4 });
      await from.put('changed', Buffer.from('NEW!'), { size: 4 });
      await to.put('same', Buffer.from('1111'), { size: 4 });
      await to.put('changed', Buffer.from('old!'), { size: 4 });
      const r = await ferry('sync', '--delete-src', '--json', src, dst);
      expect(r.code).toBe(0);
      const body = async (key: string) => Buffer.concat(await (await to.get(key)).toArray()).toString();
      expect(await body('changed')).toBe('NEW!');
      expect(await body('same')).toBe('1111');
      await expect(from.head('changed')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
      await expect(from.head('same')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
    } finally {
      await Promise.all([from.close?.(), to.close?.()]);
    }
  });

  it('--delete-src-after deletes a source only after its copy is verified', async () => {
    const root = dir('after');
    write(root, { 'src/a': 'aaa', 'src/b': 'bbb' });
    const r = await ferry('sync', '--delete-src-after', '--json', join(root, 'src') + '/', join(root, 'dst') + '/');
    expect(r.json).toMatchObject({ copied: 2, checked: 2 });
    expect(tree(join(root, 'src'))).toEqual({});
    expect(tree(join(root, 'dst'))).toEqual({ a: 'aaa', b: 'bbb' });
  });
});

describe('special files and odd entries', () => {
  let sock: Server | undefined;
  afterAll(() => sock?.close());

  for (const t of treeDestinations()) {
    it(`FIFOs, sockets and devices in the source are skipped with a warning each (${t.name} source)`, async () => {
      // Bug: a FIFO hung the run forever; a device was copied as an empty file.
      const root = dir('special');
      write(root, { 'src/regular': 'r' });
      execFileSync('mkfifo', [join(root, 'src/fifo')]);
      symlinkSync('/dev/null', join(root, 'src/null-device'));
      sock = createServer().listen(join(root, 'src/socket'));
      await new Promise((r) => sock!.once('listening', r));
      const src = t.name === 'file' ? join(root, 'src') + '/' : b.sftpAddr(join(root, 'src')) + '/';
      const r = await ferry('sync', '--check-new', '--json', src, join(root, 'dst') + '/');
      expect(r.code, r.stderr).toBe(0);
      expect(r.json).toMatchObject({ copied: 1, skipped: 3, failed: 0 });
      expect(r.stderr).toMatch(/FIFO, not a regular file/);
      expect(r.stderr).toMatch(/socket, not a regular file/);
      expect(r.stderr).toMatch(/character device, not a regular file/);
      expect(tree(join(root, 'dst'))).toEqual({ regular: 'r' });
      sock.close();
    }, 30_000);
  }

  for (const t of treeDestinations()) {
    it(`a directory replaced by a file, and the reverse, converge in one run (${t.name})`, async () => {
      for (const dirs of [[], ['--dirs']]) {
        const root = dir('retype');
        write(join(root, 'src'), { was_dir: 'now a file', 'was_file/inside': 'now a dir' });
        write(join(root, 'dst'), { 'was_dir/old1': 'o', 'was_dir/sub/old2': 'o', was_file: 'old file' });
        const r = await ferry('sync', '--delete-dst', ...dirs, '--json', join(root, 'src') + '/', t.addr(join(root, 'dst')));
        expect(r.code, `${dirs} ${r.stderr}`).toBe(0);
        expect(tree(join(root, 'dst')), String(dirs)).toEqual({ was_dir: 'now a file', 'was_file/inside': 'now a dir' });
        const again = await ferry('sync', '-v', '--delete-dst', ...dirs, '--json', join(root, 'src') + '/', t.addr(join(root, 'dst')));
        expect(again.json, again.stderr).toMatchObject({ copied: 0, deleted: 0, failed: 0 });
      }
    });

    it(`modification times before 1970 and after 2106 survive, or compare as kept (${t.name})`, async () => {
      // Bug: a 1960 file arrived dated "now" (and wrapped at 32 bits on SFTP), so every run copied it again.
      const root = dir('times');
      write(join(root, 'src'), { old: 'old', future: 'future' });
      utimesSync(join(root, 'src/old'), new Date('1960-01-01T00:00:00Z'), new Date('1960-01-01T00:00:00Z'));
      utimesSync(join(root, 'src/future'), new Date('2200-01-01T00:00:00Z'), new Date('2200-01-01T00:00:00Z'));
      const first = await ferry('sync', '--json', join(root, 'src') + '/', t.addr(join(root, 'dst')));
      expect(first.json).toMatchObject({ copied: 2 });
      const second = await ferry('sync', '--json', join(root, 'src') + '/', t.addr(join(root, 'dst')));
      expect(second.json).toMatchObject({ copied: 0, skipped: 2 });
      if (t.name === 'file') {
        expect(new Date(statSync(join(root, 'dst/old')).mtimeMs).getUTCFullYear()).toBe(1960);
        expect(new Date(statSync(join(root, 'dst/future')).mtimeMs).getUTCFullYear()).toBe(2200);
      }
    });
  }

  it('a path longer than the system allows fails that key, not the run', async () => {
    const root = dir('long');
    write(join(root, 'src'), { 'a.txt': 'a', 'z.txt': 'z' });
    // Built a level at a time with relative paths: the absolute path ends up over PATH_MAX (4096).
    const seg = 'd'.repeat(200);
    execFileSync('bash', ['-c', `cd "${join(root, 'src')}" && for i in $(seq 1 22); do mkdir ${seg} && cd ${seg}; done && echo deep > deep.txt`]);
    const r = await ferry('sync', '--json', join(root, 'src') + '/', join(root, 'dst') + '/');
    expect(r.code).toBe(1);
    expect(r.json).toMatchObject({ copied: 2 });
    expect((r.json.failed as number) >= 1).toBe(true);
    expect(readFileSync(join(root, 'dst/z.txt'), 'utf8')).toBe('z');
    execFileSync('bash', ['-c', `rm -rf "${join(root, 'src')}"`]);
  });

  it('--files-from with a BOM and CRLF line ends, and a line naming nothing, are read correctly and reported', async () => {
    const root = dir('ff');
    write(join(root, 'src'), { 'a.txt': 'a', 'b.txt': 'b', 'c.txt': 'c' });
    writeFileSync(join(root, 'list'), '\uFEFFa.txt\r\nb.txt\r\nmissing.txt\r\n');
    const r = await ferry('sync', '--files-from', join(root, 'list'), '--json', join(root, 'src') + '/', join(root, 'dst') + '/');
    expect(tree(join(root, 'dst'))).toEqual({ 'a.txt': 'a', 'b.txt': 'b' });
    expect(r.json).toMatchObject({ copied: 2, failed: 1 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('"missing.txt"');
  });
});

describe('crash leftovers are cleaned', () => {
  for (const t of treeDestinations()) {
    it(`temporaries of dead writers are reclaimed, a live run's are kept (${t.name})`, async () => {
      // Bug: temporaries of killed runs were hidden by listings and stayed forever.
      const root = dir('tmp');
      write(join(root, 'src'), { 'a/x': 'x' });
      const dead = execFileSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
      const mine = tempName();
      const deadName = mine.replace(/_([0-9a-z]+)_/, `_${Number(dead).toString(36)}_`);
      write(join(root, 'dst'), { [`a/${deadName}`]: 'half a file from a killed run', [mine]: 'a live writer' });
      const r = await ferry('sync', '--json', join(root, 'src') + '/', t.addr(join(root, 'dst')));
      expect(r.code, r.stderr).toBe(0);
      expect(r.json).toMatchObject({ reclaimed: 1, reclaimedBytes: 29 });
      expect(existsSync(join(root, 'dst/a', deadName))).toBe(false);
      expect(existsSync(join(root, 'dst', mine))).toBe(true);
      expect(r.stderr).toContain('reclaimed 1 temporary files');
    });
  }

  it('a run killed with SIGKILL leaves a temporary that the next run reclaims', async () => {
    const root = dir('kill');
    mkdirSync(join(root, 'src'));
    execFileSync('dd', ['if=/dev/zero', `of=${join(root, 'src/big')}`, 'bs=1M', 'count=64'], { stdio: 'ignore' });
    const { spawn } = await import('node:child_process');
    // Throttled, so it is still writing when killed.
    const child = spawn(process.execPath, ['bin/ferry.js', 'sync', '--bwlimit', '40', join(root, 'src') + '/', join(root, 'dst') + '/'], { stdio: 'ignore' });
    const deadline = Date.now() + 20_000;
    const temps = () => (existsSync(join(root, 'dst')) ? readdirSync(join(root, 'dst')).filter((n) => n.startsWith('.ferry-tmp-')) : []);
    while (temps().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(temps()).toHaveLength(1);
    const r = await ferry('sync', '--json', join(root, 'src') + '/', join(root, 'dst') + '/');
    expect(r.json).toMatchObject({ reclaimed: 1, copied: 1 });
    expect(temps()).toHaveLength(0);
  }, 60_000);
});

describe('honest output', () => {
  it('--json prints a summary with an error on every exit', async () => {
    const root = dir('json');
    const missing = await ferry('sync', '--json', join(root, 'nope') + '/', join(root, 'dst') + '/');
    expect(missing.code).toBe(1);
    expect(missing.json).toMatchObject({ exitCode: 1, failed: 0 });
    expect(String(missing.json.error)).toContain('does not exist');
    expect(missing.stderr).toContain('does not exist');
    const usage = await ferry('sync', '--json', '--update', '--force-update', root + '/', root + '/x/');
    expect(usage.code).toBe(2);
    expect(String(usage.json.error)).toContain('contradict');
    write(join(root, 'ok'), { a: 'a' });
    const ok = await ferry('sync', '--json', join(root, 'ok') + '/', join(root, 'dst') + '/');
    expect(ok.json).toMatchObject({ exitCode: 0, error: null, copied: 1 });
  });

  it('juicefs options ferry lacks answer "not supported yet", and --stats-interval has a minimum', async () => {
    for (const args of [['--debug'], ['--consul', 'c:8500'], ['--encrypt-rsa-key', 'k.pem'], ['--no-agent']]) {
      const r = await ferry('sync', ...args, '/tmp/a/', '/tmp/b/');
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toContain('not supported yet');
    }
    const r = await ferry('sync', '--stats-interval', '0', '/tmp/a/', '/tmp/b/');
    expect(r.code).toBe(2);
  });

  it('-v escapes control characters in keys', async () => {
    const root = dir('ctl');
    write(join(root, 'src'), { 'evil\x1b[2Jname': 'x' });
    const r = await ferry('sync', '-v', join(root, 'src') + '/', join(root, 'dst') + '/');
    expect(r.stderr).not.toContain('\x1b[2J');
    expect(r.stderr).toContain('evil\\x1b[2Jname');
  });
});
