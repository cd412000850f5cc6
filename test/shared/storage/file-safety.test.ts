/**
 * The local-disk store's own side of the tree safety contract (the shared part runs from
 * file.test.ts through tree-safety.ts): special files, paths too long for the system, the
 * file-system threads' paths, and a root that is itself a symlink.
 */
import { execFileSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileStore } from '../../../src/shared/storage/file/index.js';
import { TEMP_PREFIX } from '../../../src/shared/storage/temp.js';
import type { Entry } from '../../../src/shared/storage/types.js';
import { listAll, readAll } from './conformance.js';
import { kindAt, mkfifo, unblockFifoLater } from './tree-safety.js';

const PAST = Date.UTC(1960, 0, 1);
const FUTURE = Date.UTC(2200, 0, 1);
const isRoot = process.getuid?.() === 0;

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string; cause?: { code?: string } }> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as Error & { code?: string; cause?: { code?: string } },
  );
}

describe('file store safety', () => {
  let dir: string;
  let root: string;
  let s: FileStore;
  const servers: Server[] = [];
  beforeAll(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-file-safety-'));
    root = join(dir, 'root') + '/';
    await fsp.mkdir(root);
    s = new FileStore(root);
  });
  afterAll(async () => {
    await s?.close();
    for (const server of servers) await new Promise((r) => server.close(r));
    // GNU rm walks trees deeper than PATH_MAX; node's rm does not.
    if (dir) execFileSync('rm', ['-rf', dir]);
  });

  describe('special files', () => {
    it('marks a FIFO in listings and head, and get refuses it on every read path without blocking', async () => {
      // readFileSync on a FIFO blocked the event loop for ever, and a FIFO in a source tree hung the whole sync.
      await fsp.mkdir(root + 'fifo/');
      mkfifo(root + 'fifo/p');
      const listed = await listAll(s, { prefix: 'fifo/' });
      expect(listed.map((e) => [e.key, e.special])).toEqual([['fifo/p', 'FIFO']]);
      expect((await s.head('fifo/p')).special).toBe('FIFO');
      const stop = unblockFifoLater(root + 'fifo/p', 'read');
      try {
        for (const options of [{ sizeHint: 0 }, { sizeHint: 300 << 10 }, {}, { offset: 1, length: 2 }]) {
          const started = Date.now();
          const err = await rejection(s.get('fifo/p', options).then(readAll));
          // Well before the safety net opens the other end (2 s): the open did not wait for a writer.
          expect(Date.now() - started, JSON.stringify(options)).toBeLessThan(1500);
          expect(err.code, JSON.stringify(options)).toBe('FERRY_FATAL');
          expect(err.message).toContain(root + 'fifo/p');
          expect(err.message).toContain('FIFO');
        }
      } finally {
        stop();
      }
      expect(await kindAt(root + 'fifo/p')).toBe('fifo');
    });

    it('marks a socket in listings and head, and get refuses it', async () => {
      // A socket in a source tree was listed as a zero-byte file and its copy failed with an unexplained error.
      await fsp.mkdir(root + 'sock/');
      const server = createServer();
      servers.push(server);
      await new Promise<void>((r) => server.listen(root + 'sock/s', r));
      expect((await listAll(s, { prefix: 'sock/' })).map((e) => [e.key, e.special])).toEqual([['sock/s', 'socket']]);
      expect((await s.head('sock/s')).special).toBe('socket');
      expect((await rejection(s.get('sock/s', { sizeHint: 0 }))).code).toBe('FERRY_FATAL');
      expect((await rejection(s.get('sock/s'))).code).toBe('FERRY_FATAL');
    });

    it('marks what a followed symlink points at when it is a device or a FIFO, and get refuses it', async () => {
      // With --links followed, a link to /dev/zero was read for ever and a link to a FIFO hung the read.
      await fsp.mkdir(root + 'devlink/');
      await fsp.symlink('/dev/null', root + 'devlink/null');
      mkfifo(root + 'devlink/p');
      await fsp.symlink('p', root + 'devlink/to-fifo');
      const followed = new Map((await listAll(s, { prefix: 'devlink/', followSymlinks: true })).map((e) => [e.key, e]));
      expect(followed.get('devlink/null')).toMatchObject({ special: 'character device', isDir: false });
      expect(followed.get('devlink/null')!.isSymlink).toBeUndefined();
      expect(followed.get('devlink/to-fifo')).toMatchObject({ special: 'FIFO' });
      // Not followed, a link is a link.
      const links = new Map((await listAll(s, { prefix: 'devlink/' })).map((e) => [e.key, e]));
      expect(links.get('devlink/null')).toMatchObject({ isSymlink: true, target: '/dev/null' });
      expect(links.get('devlink/null')!.special).toBeUndefined();
      expect((await s.head('devlink/null', { followSymlinks: true })).special).toBe('character device');
      expect((await s.head('devlink/null')).special).toBeUndefined();
      const stop = unblockFifoLater(root + 'devlink/p', 'read');
      try {
        for (const key of ['devlink/null', 'devlink/to-fifo']) {
          for (const options of [{ sizeHint: 0 }, {}]) {
            const started = Date.now();
            const err = await rejection(s.get(key, options).then(readAll));
            expect(Date.now() - started, key).toBeLessThan(1500);
            expect(err.code, key).toBe('FERRY_FATAL');
            expect(err.message).toMatch(/character device|FIFO/);
          }
        }
      } finally {
        stop();
      }
    });

    it('marks special files and reclaims temporaries in a directory large enough to be read on a thread', async () => {
      // The thread's copy of the directory reader (source text, run with eval) lacked what the main thread's had.
      await fsp.mkdir(root + 'big/');
      await Promise.all(Array.from({ length: 1100 }, (_, i) => fsp.writeFile(`${root}big/f${String(i).padStart(4, '0')}`, 'x')));
      mkfifo(root + 'big/p');
      const dead = `${TEMP_PREFIX}elsewhere_1_0a0b0c0d_00000000e1`;
      await fsp.writeFile(root + 'big/' + dead, 'temp');
      const old = new Date(Date.now() - 2 * 24 * 3600 * 1000);
      await fsp.utimes(root + 'big/' + dead, old, old);
      const reclaimed: [string, number][] = [];
      const listed = await listAll(s, { prefix: 'big/', reclaim: (p, n) => reclaimed.push([p, n]) });
      expect(listed).toHaveLength(1101);
      expect(listed.find((e) => e.key === 'big/p')!.special).toBe('FIFO');
      expect(reclaimed).toEqual([[root + 'big/' + dead, 4]]);
      expect(await kindAt(root + 'big/' + dead)).toBe('missing');
    });
  });

  describe('paths too long for the system', () => {
    it('fails a write whose name is too long for that key only, on every write path, and leaves no temporary', async () => {
      // ENAMETOOLONG on one key stopped the run, or a batch of copies, and left a temporary behind.
      const long = 'long/' + 'n'.repeat(300);
      const tooLong = (err: { code?: string; cause?: { code?: string } } | undefined) => {
        expect(err?.code).toBe('FERRY_FATAL');
        expect(err?.cause?.code).toBe('ENAMETOOLONG');
      };
      tooLong(await rejection(s.put(long, Buffer.from('x'), { size: 1 })));
      tooLong(await rejection(s.put(long, Buffer.alloc(300 << 10), { size: 300 << 10 })));
      tooLong(await rejection(s.put(long, Readable.from([Buffer.from('x')]))));
      await s.put('long-src', Buffer.from('source'), { size: 6 });
      const src = s.copySource('long-src');
      tooLong(await rejection(s.copyFrom(long, src, { size: 6 })));
      const results = await s.copyFromMany([
        { key: long, source: src, options: { size: 6 } },
        { key: 'long/ok', source: src, options: { size: 6 } },
      ]);
      tooLong(results[0] as { code?: string; cause?: { code?: string } });
      expect(results[1]).toBeUndefined();
      expect(await fsp.readFile(root + 'long/ok', 'utf8')).toBe('source');
      expect(await fsp.readdir(root + 'long/')).toEqual(['ok']);
    });

    it('lists a name whose path is too long for the system as a failed key, and the rest of the directory', async () => {
      // One lstat() failing with ENAMETOOLONG threw out of the directory reader and ended the whole listing.
      // Directories nested (by relative paths) until their path nearly reaches PATH_MAX (4096 with its NUL).
      const seg = 'd'.repeat(200);
      const base = root + 'deep';
      const depth = Math.floor((4096 - 1 - base.length - 40) / (seg.length + 1));
      const script = `mkdir deep && cd deep && for i in $(seq ${depth}); do mkdir ${seg} && cd ${seg}; done && echo hi > short && echo hi > ${'n'.repeat(250)}`;
      execFileSync('sh', ['-c', script], { cwd: root });
      const dirKey = 'deep/' + `${seg}/`.repeat(depth);
      expect((root + dirKey).length + 250).toBeGreaterThan(4095);
      const files = (await listAll(s, { prefix: 'deep/' })).filter((e: Entry) => !e.isDir);
      expect(files.map((e) => [e.key.slice(dirKey.length), e.error === undefined])).toEqual([
        ['n'.repeat(250), false],
        ['short', true],
      ]);
      expect(files[0]!.error).toContain('ENAMETOOLONG');
    });
  });

  describe('mtimes on the file-system threads', () => {
    it('keeps 1960 and 2200 mtimes for files written and copied on the threads', async () => {
      // The threads' utimesSync(seconds) turned a negative time into "now": batches of old files were re-copied on every run.
      await s.put('tm-src', Buffer.from('dated'), { size: 5 });
      const src = s.copySource('tm-src');
      const want = new Map<string, number>();
      for (const [label, mtime] of [
        ['past', PAST],
        ['future', FUTURE],
      ] as const) {
        // 300 KiB: written whole on a thread; 2 MiB: streamed from the calling thread.
        await s.put(`tm/${label}-thread`, Buffer.alloc(300 << 10, 1), { size: 300 << 10, mtime });
        await s.put(`tm/${label}-big`, Buffer.alloc(2 << 20, 1), { size: 2 << 20, mtime });
        want.set(`tm/${label}-thread`, mtime).set(`tm/${label}-big`, mtime);
        // Enough items to spread over several threads.
        const items = Array.from({ length: 80 }, (_, i) => ({ key: `tm/${label}-many/${i}`, source: src, options: { size: 5, mtime } }));
        expect((await s.copyFromMany(items)).filter(Boolean)).toEqual([]);
        for (const it of items) want.set(it.key, mtime);
      }
      const listed = new Map((await listAll(s, { prefix: 'tm/' })).map((e) => [e.key, e.mtime]));
      for (const [key, mtime] of want) expect(listed.get(key), key).toBe(mtime);
    });
  });

  it('writes under a root that is itself a symlink', async () => {
    // Refusing links below the root refused the root too, when the user named a link as the destination.
    await fsp.mkdir(dir + '/real-root');
    await fsp.symlink(dir + '/real-root', dir + '/link-root');
    const linked = new FileStore(dir + '/link-root/');
    try {
      await linked.put('a/b', Buffer.from('through the root link'), { size: 21 });
      const src = linked.copySource('a/b');
      expect(await linked.copyFromMany([{ key: 'c/d', source: src, options: { size: 21 } }])).toEqual([undefined]);
      await linked.mkdir('e/');
      expect(await fsp.readFile(dir + '/real-root/a/b', 'utf8')).toBe('through the root link');
      expect(await fsp.readFile(dir + '/real-root/c/d', 'utf8')).toBe('through the root link');
      expect(await kindAt(dir + '/real-root/e')).toBe('dir');
    } finally {
      await linked.close();
    }
  });

  it('lists a name it may not look at as a failed key (needs a user that permissions apply to)', async (ctx) => {
    // EACCES on one lstat() threw out of the directory reader and ended the whole listing.
    if (isRoot) return ctx.skip('running as root, which bypasses permission checks, so EACCES cannot be produced');
    await fsp.mkdir(root + 'noexec/', { recursive: true });
    await fsp.writeFile(root + 'noexec/f', 'x');
    await fsp.chmod(root + 'noexec', 0o600);
    try {
      const listed = await listAll(s, { prefix: 'noexec/' });
      expect(listed).toHaveLength(1);
      expect(listed[0]!.error).toContain('EACCES');
    } finally {
      await fsp.chmod(root + 'noexec', 0o755);
    }
  });
});
