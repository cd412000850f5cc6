/**
 * The tree store safety suite: what every store that is a directory tree (file, sftp, hdfs) owes
 * its users when keys come from an object store or a destination was changed by hand. Keys stay
 * inside the root; no write goes through a symlink below the root; what stands in a file's way is
 * replaced only when the name changed type; mtimes far from 1970 survive; temporaries say whose
 * they are and only abandoned ones are reclaimed.
 *
 * A backend's test file opens a store on a fresh directory and calls `describeTreeSafety`. Tests
 * that plant links, FIFOs or temporaries under the root use node:fs on `root`, a local path (the
 * SFTP tests' server runs on this machine); a store whose tree is elsewhere (HDFS's test server)
 * says `localFs: false` and runs only the tests that go through the ObjectStore API.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withPrefix } from '../../../src/shared/storage/prefixed.js';
import { isAbandoned, TEMP_PREFIX, tempName, tempNamePrefix } from '../../../src/shared/storage/temp.js';
import type { ObjectStore, PutOptions } from '../../../src/shared/storage/types.js';
import { listAll, readAll } from './conformance.js';

export interface TreeSafetyTarget {
  /** A store on a fresh, empty directory. */
  store: ObjectStore;
  /** The store's directory, ending in '/': a local path when `localFs`, else only for messages. */
  root: string;
  /** The same directory opened with `inplace: true`, for stores with features.inplace. */
  openInplace?(): Promise<ObjectStore>;
  cleanup(): Promise<void>;
}

export interface TreeSafetyCapabilities {
  /**
   * `root` is a directory on this machine that the suite may inspect and change with node:fs (file,
   * sftp). Without it, the tests that need to plant links, files or temporaries are skipped.
   */
  localFs: boolean;
}

const DAY = 24 * 3600 * 1000;
const PAST = Date.UTC(1960, 0, 1);
const FUTURE = Date.UTC(2200, 0, 1);

async function rejectsWithCode(p: Promise<unknown>, code: string): Promise<Error> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  expect(err, `expected a rejection with ${code}`).toBeDefined();
  expect(err).toMatchObject({ code });
  return err!;
}

/** What stands at a local path. */
export async function kindAt(path: string): Promise<'missing' | 'file' | 'dir' | 'symlink' | 'fifo' | 'other'> {
  const st = await fsp.lstat(path).catch(() => undefined);
  if (!st) return 'missing';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isFIFO()) return 'fifo';
  return 'other';
}

/**
 * A safety net for FIFO tests: if the code under test opens `fifo` and blocks (perhaps blocking the
 * whole event loop or a file-system thread), a child opens the other end after two seconds and
 * again and again, so the test fails on its assertions instead of hanging. Opening what replaced
 * the FIFO does no harm (no truncation). Returns the function that stops the child.
 */
export function unblockFifoLater(fifo: string, blockedSide: 'read' | 'write'): () => void {
  const open = blockedSide === 'write' ? ': 3<"$0"' : ': 3>>"$0"';
  const script = `sleep 2; while :; do ${open}; sleep 0.1; done`;
  const child = spawn('sh', ['-c', script, fifo], { stdio: 'ignore' });
  child.on('error', () => {});
  return () => {
    child.kill('SIGKILL');
  };
}

export function mkfifo(path: string): void {
  execFileSync('mkfifo', [path]);
}

/** The listed mtime a store keeps for `ms` (clamped to features.attrs.mtimeRange), in whole seconds. */
function keptSeconds(store: ObjectStore, ms: number): number {
  const r = store.features.attrs?.mtimeRange;
  const kept = r ? Math.min(r.max, Math.max(r.min, ms)) : ms;
  return Math.floor(kept / 1000);
}

export function describeTreeSafety(name: string, open: () => Promise<TreeSafetyTarget>, capabilities: TreeSafetyCapabilities = { localFs: true }): void {
  describe(`${name} tree safety`, () => {
    let t: TreeSafetyTarget;
    let s: ObjectStore;
    const outsides: string[] = [];
    const victimBytes = 'outside the destination';
    const victimMtime = Date.UTC(2001, 1, 3);

    beforeAll(async () => {
      t = await open();
      s = t.store;
    }, 120_000);
    afterAll(async () => {
      await s?.close?.();
      if (capabilities.localFs) for (const dir of outsides) await fsp.rm(dir, { recursive: true, force: true });
      await t?.cleanup();
    });

    /**
     * A directory next to the root, which no key may reach, holding `victim`: the test's "file
     * outside the destination" (each test its own, so that one failure does not fail the next).
     * `untouched()`: the victim is as made and nothing was added next to it.
     */
    const makeOutside = async () => {
      const name = `ferry-outside-${randomBytes(4).toString('hex')}`;
      const dir = `${t.root}../${name}/`;
      if (capabilities.localFs) {
        outsides.push(dir);
        await fsp.mkdir(dir);
        await fsp.writeFile(dir + 'victim', victimBytes, { mode: 0o644 });
        await fsp.utimes(dir + 'victim', new Date(victimMtime), new Date(victimMtime));
      }
      const untouched = async () => {
        expect((await fsp.readdir(dir)).sort()).toEqual(['victim']);
        expect(await fsp.readFile(dir + 'victim', 'utf8')).toBe(victimBytes);
        const st = await fsp.stat(dir + 'victim');
        expect(st.mode & 0o777).toBe(0o644);
        expect(st.mtimeMs).toBe(victimMtime);
      };
      return { name, dir, victim: dir + 'victim', untouched };
    };
    const needLocal = (ctx: { skip(note?: string): never }) => {
      if (!capabilities.localFs) ctx.skip("the store's tree is not on this machine's disk");
    };
    const local = (key: string) => t.root + key;
    const put = (key: string, text: string, options: PutOptions = {}) => s.put(key, Buffer.from(text), { size: Buffer.byteLength(text), ...options });
    const text = async (key: string) => (await readAll(await s.get(key))).toString();
    /** A source in the store's own copy scope, for copyFrom and copyFromMany. */
    const source = async (key: string, body: string) => {
      await put(key, body);
      return s.copySource!(key);
    };

    describe('keys stay inside the root', () => {
      const badKeys = (outsideName: string) => [`../${outsideName}/victim`, `a/../../${outsideName}/victim`, '/x', 'a//b', './a', 'a/./b', 'a/..', 'a\0b'];

      it('refuses keys that would leave the root or give a file a second key, in every method', async () => {
        // A key from an object store ('../x', 'a//b') reached a path outside the destination, or a second name of one file.
        const out = await makeOutside();
        const hasCopy = Boolean(s.features.copy && s.copySource && s.copyFrom);
        const src = hasCopy ? await source('keys/src', 'copied') : undefined;
        for (const key of badKeys(out.name)) {
          const refused = async (p: Promise<unknown>, named = key) => {
            const err = await rejectsWithCode(p, 'FERRY_UNSAFE_PATH');
            expect(err.message, named).toContain(JSON.stringify(named));
          };
          await refused(s.head(key));
          await refused(s.get(key));
          await refused(s.get(key, { sizeHint: 3 }));
          await refused(put(key, 'new'));
          await refused(s.put(key, Readable.from([Buffer.from('new')])));
          await refused(s.delete(key));
          if (s.features.dirs && s.mkdir) await refused(s.mkdir(key + '/'), key + '/');
          if (s.features.symlinks && s.symlink) await refused(s.symlink(key, 'target'));
          if (s.setAttrs) await refused(s.setAttrs(key, { mtime: Date.UTC(2000, 0, 1) }));
          if (hasCopy) {
            await refused(Promise.resolve().then(() => s.copySource!(key)));
            await refused(s.copyFrom!(key, src!, { size: 6 }));
          }
        }
        if (capabilities.localFs) await out.untouched();
      });

      it('refuses a bad key in copyFromMany for that item only', async (ctx) => {
        // One key from an object store that names '../x' failed a whole batch of good copies, or was copied.
        const out = await makeOutside();
        if (!s.features.copy || !s.copySource || !s.copyFromMany) return ctx.skip('no copyFromMany');
        const src = await source('batchkeys/src', 'good bytes');
        const bad = `../${out.name}/victim`;
        const results = await s.copyFromMany([
          { key: bad, source: src, options: { size: 10 } },
          { key: 'batchkeys/dst', source: src, options: { size: 10 } },
        ]);
        expect(results[0]).toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
        expect(results[0]!.message).toContain(JSON.stringify(bad));
        expect(results[1]).toBeUndefined();
        expect(await text('batchkeys/dst')).toBe('good bytes');
        if (capabilities.localFs) await out.untouched();
      });

      it('refuses listings whose prefix or startAfter names a directory outside the root, not names that start with dots', async () => {
        // A listing of '../x/' read a directory outside the destination; or a name prefix '..' (which '..foo' matches) was refused.
        const out = await makeOutside();
        await rejectsWithCode(listAll(s, { prefix: `../${out.name}/` }), 'FERRY_UNSAFE_PATH');
        await rejectsWithCode(listAll(s, { prefix: 'lst/', startAfter: `lst/../../${out.name}/victim` }), 'FERRY_UNSAFE_PATH');
        await put('lst/..dots', 'dots');
        expect((await listAll(s, { prefix: 'lst/..' })).map((e) => e.key)).toEqual(['lst/..dots']);
      });

      it('refuses keys that leave the root through an address prefix', async () => {
        // `ferry sync s3://b/ dst/sub/` with a key '../../x' escaped through the prefix view, which joins before the store checks.
        const out = await makeOutside();
        const view = withPrefix(s, 'sub/');
        await rejectsWithCode(view.put(`../../${out.name}/victim`, Buffer.from('new'), { size: 3 }), 'FERRY_UNSAFE_PATH');
        await rejectsWithCode(view.delete(`../../${out.name}/victim`), 'FERRY_UNSAFE_PATH');
        if (capabilities.localFs) await out.untouched();
      });
    });

    describe('writes never go through a symlink below the root', () => {
      it('refuses every write under a symlinked directory and leaves what it points at alone', async (ctx) => {
        // A destination that held a link to /etc had files written, changed and deleted through it.
        const out = await makeOutside();
        needLocal(ctx);
        await fsp.mkdir(local('ln/'));
        await fsp.symlink(out.dir, local('ln/link'));
        const unsafe = async (p: Promise<unknown>) => {
          const err = await rejectsWithCode(p, 'FERRY_UNSAFE_PATH');
          expect(err.message).toContain('symlink');
        };
        await unsafe(put('ln/link/victim', 'overwritten'));
        await unsafe(put('ln/link/deeper/new', 'new'));
        await unsafe(s.put('ln/link/streamed', Readable.from([Buffer.from('new')])));
        await unsafe(s.delete('ln/link/victim'));
        if (s.setAttrs) await unsafe(s.setAttrs('ln/link/victim', { mtime: Date.UTC(2020, 0, 1), ...(s.features.attrs?.mode ? { mode: 0o600 } : {}) }));
        if (s.mkdir) await unsafe(s.mkdir('ln/link/sub/'));
        if (s.symlink) await unsafe(s.symlink('ln/link/l', 'anywhere'));
        if (s.features.copy && s.copySource && s.copyFrom) {
          const src = await source('ln-src/f', 'copied');
          await unsafe(s.copyFrom('ln/link/victim', src, { size: 6 }));
          if (s.copyFromMany) {
            const results = await s.copyFromMany([
              { key: 'ln/link/victim', source: src, options: { size: 6 } },
              { key: 'ln/real/f', source: src, options: { size: 6 } },
            ]);
            expect(results[0]).toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
            expect(results[1]).toBeUndefined();
            expect(await fsp.readFile(local('ln/real/f'), 'utf8')).toBe('copied');
          }
        }
        await out.untouched();
        expect(await kindAt(local('ln/link'))).toBe('symlink');
      });

      it('checks a symlinked directory next to one it already wrote into', async (ctx) => {
        // Remembering that 'c/' is a real directory let a write into 'c/link/' through without a look.
        const out = await makeOutside();
        needLocal(ctx);
        await put('cache/real/f', 'one');
        await fsp.symlink(out.dir, local('cache/link'));
        await rejectsWithCode(put('cache/link/victim', 'overwritten'), 'FERRY_UNSAFE_PATH');
        await put('cache/real/g', 'two');
        expect(await fsp.readFile(local('cache/real/g'), 'utf8')).toBe('two');
        await out.untouched();
      });

      it('looks again at a directory it deleted itself before writing into that name', async (ctx) => {
        // A directory the store deleted stayed "known real" in its cache, so a symlink made in its place was written through.
        const out = await makeOutside();
        needLocal(ctx);
        await put('gone/d/f', 'one');
        await s.delete('gone/d/f');
        await s.delete('gone/d/');
        expect(await kindAt(local('gone/d'))).toBe('missing');
        await fsp.symlink(out.dir, local('gone/d'));
        await rejectsWithCode(put('gone/d/victim', 'overwritten'), 'FERRY_UNSAFE_PATH');
        await out.untouched();
      });

      it('replaces a symlink or FIFO standing at the key instead of writing through it', async (ctx) => {
        // Writing file K where K was a link to a file outside overwrote that file; where K was a FIFO, the write hung.
        const out = await makeOutside();
        needLocal(ctx);
        await fsp.mkdir(local('final/'));
        const keys = ['final/put', 'final/stream', 'final/copy', 'final/many'];
        for (const k of keys) await fsp.symlink(out.victim, local(k));
        mkfifo(local('final/fifo'));
        const stop = unblockFifoLater(local('final/fifo'), 'write');
        try {
          await put('final/put', 'new put');
          await s.put('final/stream', Readable.from([Buffer.from('new stream')]));
          await put('final/fifo', 'new fifo');
          if (s.features.copy && s.copySource && s.copyFrom) {
            const src = await source('final-src/f', 'new copy');
            await s.copyFrom('final/copy', src, { size: 8 });
            if (s.copyFromMany) expect(await s.copyFromMany([{ key: 'final/many', source: src, options: { size: 8 } }])).toEqual([undefined]);
          }
        } finally {
          stop();
        }
        expect(await kindAt(local('final/put'))).toBe('file');
        expect(await fsp.readFile(local('final/put'), 'utf8')).toBe('new put');
        expect(await fsp.readFile(local('final/stream'), 'utf8')).toBe('new stream');
        expect(await kindAt(local('final/fifo'))).toBe('file');
        expect(await fsp.readFile(local('final/fifo'), 'utf8')).toBe('new fifo');
        if (s.features.copy && s.copyFrom) expect(await fsp.readFile(local('final/copy'), 'utf8')).toBe('new copy');
        if (s.features.copy && s.copyFromMany) expect(await fsp.readFile(local('final/many'), 'utf8')).toBe('new copy');
        await out.untouched();
      });

      it('with --inplace, refuses a symlink at the key and replaces a FIFO without blocking', async (ctx) => {
        // --inplace opened the final path itself: through a link it overwrote a file outside; on a FIFO it blocked for ever.
        const out = await makeOutside();
        needLocal(ctx);
        if (!s.features.inplace || !t.openInplace) return ctx.skip('no --inplace');
        const inplace = await t.openInplace();
        try {
          await fsp.mkdir(local('inplace/'));
          await fsp.symlink(out.victim, local('inplace/link'));
          await rejectsWithCode(inplace.put('inplace/link', Buffer.from('overwritten'), { size: 11 }), 'FERRY_UNSAFE_PATH');
          await rejectsWithCode(inplace.put('inplace/link', Readable.from([Buffer.from('overwritten')])), 'FERRY_UNSAFE_PATH');
          if (inplace.features.copy && inplace.copySource && inplace.copyFrom) {
            await put('inplace-src/f', 'overwritten');
            const src = inplace.copySource('inplace-src/f');
            await rejectsWithCode(inplace.copyFrom('inplace/link', src, { size: 11 }), 'FERRY_UNSAFE_PATH');
            if (inplace.copyFromMany) expect((await inplace.copyFromMany([{ key: 'inplace/link', source: src, options: { size: 11 } }]))[0]).toMatchObject({ code: 'FERRY_UNSAFE_PATH' });
          }
          expect(await kindAt(local('inplace/link'))).toBe('symlink');
          await out.untouched();

          for (const k of ['inplace/fifo', 'inplace/fifo-stream']) mkfifo(local(k));
          const stops = ['inplace/fifo', 'inplace/fifo-stream'].map((k) => unblockFifoLater(local(k), 'write'));
          try {
            await inplace.put('inplace/fifo', Buffer.from('bytes'), { size: 5 });
            await inplace.put('inplace/fifo-stream', Readable.from([Buffer.from('streamed')]));
          } finally {
            for (const stop of stops) stop();
          }
          expect(await kindAt(local('inplace/fifo'))).toBe('file');
          expect(await fsp.readFile(local('inplace/fifo'), 'utf8')).toBe('bytes');
          expect(await fsp.readFile(local('inplace/fifo-stream'), 'utf8')).toBe('streamed');
        } finally {
          await inplace.close?.();
        }
      });

      it('sets attributes of a symlink only when told it is one, and deletes the link itself', async (ctx) => {
        // chmod/utimes on a key that was a link changed the file outside it points at; delete removed the target.
        const out = await makeOutside();
        needLocal(ctx);
        if (!s.setAttrs) return ctx.skip('no setAttrs');
        await fsp.mkdir(local('attrlink/'));
        await fsp.symlink(out.victim, local('attrlink/k'));
        await rejectsWithCode(s.setAttrs('attrlink/k', { mtime: Date.UTC(2020, 0, 1), ...(s.features.attrs?.mode ? { mode: 0o600 } : {}) }), 'FERRY_UNSAFE_PATH');
        await out.untouched();
        if (s.features.symlinks) {
          const mtime = Date.UTC(2019, 4, 5);
          await s.setAttrs('attrlink/k', { mtime }, { isSymlink: true });
          expect((await fsp.lstat(local('attrlink/k'))).mtimeMs).toBe(mtime);
          await out.untouched();
        }
        await s.delete('attrlink/k');
        expect(await kindAt(local('attrlink/k'))).toBe('missing');
        await out.untouched();
      });
    });

    describe('things in the way', () => {
      it('replaces an empty directory where a file goes', async (ctx) => {
        // A directory on the destination whose name is a file on the source failed every later run.
        needLocal(ctx);
        for (const k of ['way/put', 'way/stream', 'way/copy', 'way/many', 'way/link']) await fsp.mkdir(local(k), { recursive: true });
        await put('way/put', 'file now');
        await s.put('way/stream', Readable.from([Buffer.from('file now')]));
        if (s.features.copy && s.copySource && s.copyFrom) {
          const src = await source('way-src/f', 'file now');
          await s.copyFrom('way/copy', src, { size: 8 });
          if (s.copyFromMany) expect(await s.copyFromMany([{ key: 'way/many', source: src, options: { size: 8 } }])).toEqual([undefined]);
        }
        for (const k of ['way/put', 'way/stream', ...(s.features.copy && s.copyFrom ? ['way/copy'] : []), ...(s.features.copy && s.copyFromMany ? ['way/many'] : [])]) {
          expect(await kindAt(local(k)), k).toBe('file');
          expect(await fsp.readFile(local(k), 'utf8'), k).toBe('file now');
        }
        if (s.features.symlinks && s.symlink) {
          await s.symlink('way/link', 'target');
          expect(await fsp.readlink(local('way/link'))).toBe('target');
        }
      });

      it('refuses to replace a directory with content where a file goes, and keeps the content', async (ctx) => {
        // A file on the source whose name is a full directory on the destination wiped that directory, or failed the run.
        needLocal(ctx);
        await fsp.mkdir(local('full/k'), { recursive: true });
        await fsp.writeFile(local('full/k/inner'), 'keep me');
        const inTheWay = async (p: Promise<unknown>) => {
          const err = await rejectsWithCode(p, 'FERRY_IN_THE_WAY');
          expect(err.message).toContain('full/k/');
        };
        await inTheWay(put('full/k', 'file'));
        await inTheWay(s.put('full/k', Readable.from([Buffer.from('file')])));
        if (s.features.copy && s.copySource && s.copyFrom) {
          const src = await source('full-src/f', 'file');
          await inTheWay(s.copyFrom('full/k', src, { size: 4 }));
          if (s.copyFromMany) {
            const results = await s.copyFromMany([
              { key: 'full/k', source: src, options: { size: 4 } },
              { key: 'full/other', source: src, options: { size: 4 } },
            ]);
            expect(results[0]).toMatchObject({ code: 'FERRY_IN_THE_WAY' });
            expect(results[1]).toBeUndefined();
          }
        }
        expect(await fsp.readFile(local('full/k/inner'), 'utf8')).toBe('keep me');
        expect((await fsp.readdir(local('full/k'))).sort()).toEqual(['inner']);
      });

      it('replaces a file or FIFO where a directory goes', async (ctx) => {
        // A file on the destination whose name is a directory on the source failed every key under it.
        needLocal(ctx);
        await fsp.mkdir(local('typed/'));
        for (const k of ['typed/a', 'typed/c', 'typed/m']) await fsp.writeFile(local(k), 'old file');
        mkfifo(local('typed/fifo'));
        await put('typed/a/b', 'under a');
        await put('typed/fifo/x', 'under fifo');
        if (s.features.copy && s.copySource && s.copyFromMany) {
          const src = await source('typed-src/f', 'under c');
          expect(await s.copyFromMany([{ key: 'typed/c/d/e', source: src, options: { size: 7 } }])).toEqual([undefined]);
          expect(await fsp.readFile(local('typed/c/d/e'), 'utf8')).toBe('under c');
        }
        if (s.mkdir) {
          await s.mkdir('typed/m/');
          expect(await kindAt(local('typed/m'))).toBe('dir');
        }
        expect(await kindAt(local('typed/a'))).toBe('dir');
        expect(await fsp.readFile(local('typed/a/b'), 'utf8')).toBe('under a');
        expect(await fsp.readFile(local('typed/fifo/x'), 'utf8')).toBe('under fifo');
      });

      it('deletes a file key whose name is a directory now, and the reverse, as already done', async (ctx) => {
        // Deleting file K after K became a directory (or directory K/ after it became a file) failed the run or removed the new one.
        needLocal(ctx);
        await fsp.mkdir(local('del/d'), { recursive: true });
        await fsp.writeFile(local('del/d/inner'), 'keep');
        await fsp.writeFile(local('del/f'), 'keep too');
        await s.delete('del/d');
        await s.delete('del/f/');
        expect(await fsp.readFile(local('del/d/inner'), 'utf8')).toBe('keep');
        expect(await fsp.readFile(local('del/f'), 'utf8')).toBe('keep too');
      });
    });

    describe('mtimes', () => {
      it('keeps mtimes before 1970 and after 2106 through every write', async (ctx) => {
        // Node's utimes turns a negative number of seconds into "now": a 1960 file was dated today and copied again on every run.
        if (!s.features.attrs?.mtime) return ctx.skip('the store does not keep mtimes');
        const hasCopy = Boolean(s.features.copy && s.copySource && s.copyFrom);
        const src = hasCopy ? await source('mtime-src/f', 'dated') : undefined;
        const want = new Map<string, number>();
        for (const [label, mtime] of [
          ['past', PAST],
          ['future', FUTURE],
        ] as const) {
          await put(`mtime/${label}-put`, 'dated', { mtime });
          await s.put(`mtime/${label}-stream`, Readable.from([Buffer.from('dated')]), { mtime });
          want.set(`mtime/${label}-put`, mtime).set(`mtime/${label}-stream`, mtime);
          if (s.setAttrs) {
            await put(`mtime/${label}-attrs`, 'dated');
            await s.setAttrs(`mtime/${label}-attrs`, { mtime });
            want.set(`mtime/${label}-attrs`, mtime);
          }
          if (hasCopy) {
            await s.copyFrom!(`mtime/${label}-copy`, src!, { size: 5, mtime });
            want.set(`mtime/${label}-copy`, mtime);
            if (s.copyFromMany) {
              expect(await s.copyFromMany([{ key: `mtime/${label}-many`, source: src!, options: { size: 5, mtime } }])).toEqual([undefined]);
              want.set(`mtime/${label}-many`, mtime);
            }
          }
        }
        const listed = new Map((await listAll(s, { prefix: 'mtime/' })).map((e) => [e.key, e.mtime]));
        for (const [key, mtime] of want) {
          expect(Math.floor(listed.get(key)! / 1000), key).toBe(keptSeconds(s, mtime));
          expect(Math.floor((await s.head(key)).mtime / 1000), key).toBe(keptSeconds(s, mtime));
        }
      });
    });

    describe('temporary files', () => {
      it('names its temporaries after this process, so that another run can tell they are live', async (ctx) => {
        // A temporary named only by pid was taken for abandoned (and removed) by a concurrent run on another host.
        needLocal(ctx);
        const body = new PassThrough();
        const done = s.put('tmpname/f', body);
        body.write(Buffer.alloc(1024, 1));
        let temps: string[] = [];
        for (let i = 0; i < 200 && temps.length === 0; i++) {
          await new Promise((r) => setTimeout(r, 25));
          temps = (await fsp.readdir(local('tmpname/')).catch(() => [] as string[])).filter((n) => n.startsWith(TEMP_PREFIX));
        }
        expect(temps).toHaveLength(1);
        expect(temps[0]!.startsWith(tempNamePrefix())).toBe(true);
        expect(isAbandoned(temps[0]!, Date.now())).toBe(false);
        expect((await listAll(s, { prefix: 'tmpname/' })).map((e) => e.key)).toEqual([]);
        body.end(Buffer.alloc(1024, 2));
        await done;
        expect(await fsp.readdir(local('tmpname/'))).toEqual(['f']);
        expect((await fsp.stat(local('tmpname/f'))).size).toBe(2048);
      });

      it('reclaims only the temporaries of writers that are gone, and only when asked', async (ctx) => {
        // Temporaries of killed runs piled up for ever; or a listing removed a live run's temporary, or a user's file.
        needLocal(ctx);
        const [host] = tempNamePrefix().slice(TEMP_PREFIX.length).split('_');
        const gonePid = (2 ** 22 + 12345).toString(36); // above Linux's pid_max: no such process
        const names = {
          otherHostOld: `${TEMP_PREFIX}elsewhere_1_0a0b0c0d_00000000a1`,
          thisHostGone: `${TEMP_PREFIX}${host}_${gonePid}_0a0b0c0d_00000000a2`,
          otherHostFresh: `${TEMP_PREFIX}elsewhere_2_0a0b0c0d_00000000a3`,
          live: tempName(),
        };
        await fsp.mkdir(local('reclaim/sub/'), { recursive: true });
        await fsp.writeFile(local('reclaim/' + names.otherHostOld), 'a'.repeat(11));
        await fsp.utimes(local('reclaim/' + names.otherHostOld), new Date(Date.now() - 2 * DAY), new Date(Date.now() - 2 * DAY));
        await fsp.writeFile(local('reclaim/sub/' + names.thisHostGone), 'b'.repeat(22));
        await fsp.writeFile(local('reclaim/' + names.otherHostFresh), 'c');
        await fsp.writeFile(local('reclaim/' + names.live), 'd');
        await fsp.writeFile(local('reclaim/keep.txt'), 'user file');
        await fsp.utimes(local('reclaim/keep.txt'), new Date(Date.now() - 30 * DAY), new Date(Date.now() - 30 * DAY));
        await fsp.mkdir(local(`reclaim/${TEMP_PREFIX}elsewhere_3_0a0b0c0d_00000000d1`));
        await fsp.utimes(local(`reclaim/${TEMP_PREFIX}elsewhere_3_0a0b0c0d_00000000d1`), new Date(Date.now() - 2 * DAY), new Date(Date.now() - 2 * DAY));
        const before = async () => [...(await fsp.readdir(local('reclaim/'))), ...(await fsp.readdir(local('reclaim/sub/')))].sort();
        const all = await before();

        // Without `reclaim`: hidden, and left alone.
        const plain = (await listAll(s, { prefix: 'reclaim/' })).map((e) => e.key);
        expect(plain).toEqual(['reclaim/keep.txt', 'reclaim/sub/']);
        expect(await before()).toEqual(all);

        const reclaimed: [string, number][] = [];
        const listed = (await listAll(s, { prefix: 'reclaim/', reclaim: (path, bytes) => reclaimed.push([path, bytes]) })).map((e) => e.key);
        expect(listed).toEqual(['reclaim/keep.txt', 'reclaim/sub/']);
        expect(reclaimed.map(([p, n]) => [p.slice(p.lastIndexOf('/') + 1), n]).sort()).toEqual(
          [
            [names.otherHostOld, 11],
            [names.thisHostGone, 22],
          ].sort(),
        );
        expect(reclaimed.find(([p]) => p.endsWith(names.thisHostGone))![0]).toContain('reclaim/sub/');
        expect(await kindAt(local('reclaim/' + names.otherHostOld))).toBe('missing');
        expect(await kindAt(local('reclaim/sub/' + names.thisHostGone))).toBe('missing');
        for (const n of [names.otherHostFresh, names.live, 'keep.txt']) expect(await kindAt(local('reclaim/' + n)), n).toBe('file');
        expect(await kindAt(local(`reclaim/${TEMP_PREFIX}elsewhere_3_0a0b0c0d_00000000d1`))).toBe('dir');
      });
    });
  });
}
