/**
 * A sync through a large directory sorted on disk (--list-cutoff far below its size): keys come in
 * UTF-8 byte order on both sides, every key is counted once, and the spill directories in
 * os.tmpdir() are gone when the run ends — after success, after --max-failure, after Ctrl-C and
 * after --limit.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runSync } from '../../src/manager/sync/run.js';
import { SyncStats } from '../../src/manager/sync/stats.js';
import { FileStore } from '../../src/shared/storage/file/index.js';
import { TEMP_PREFIX } from '../../src/shared/storage/temp.js';
import type { ObjectStore } from '../../src/shared/storage/types.js';
import { QUIET, SYNC_OPTIONS } from '../support/options.js';
import { spillsOf } from '../support/files.js';

const work = mkdtempSync(join(tmpdir(), 'ferry-adversarial-spill-'));
const open: ObjectStore[] = [];
afterAll(async () => {
  for (const s of open) await s.close?.();
  rmSync(work, { recursive: true, force: true });
});
const N = 2500;
/** Names whose UTF-16 order differs from their UTF-8 order, and neighbours of '/'. */
const TRICKY = ['\uFFFD', '\uFF5E', '\u{1F600}', '\u{1F600}x', 'é', 'z', 'a-b', 'a.b', 'a0', 'a\u0001', TEMP_PREFIX.slice(0, -1), 'Z'];

let seq = 0;
function tree(): { src: string; dst: string } {
  const root = join(work, `t${++seq}`);
  const src = join(root, 'src');
  const dst = join(root, 'dst');
  mkdirSync(join(src, 'big', 'a'), { recursive: true });
  mkdirSync(join(dst, 'big'), { recursive: true });
  for (let i = 0; i < N; i++) writeFileSync(join(src, 'big', `f${String(i).padStart(5, '0')}`), 'x');
  for (const n of TRICKY) writeFileSync(join(src, 'big', n), n);
  writeFileSync(join(src, 'big', 'a', 'in'), 'in');
  // Extras on the destination, among the tricky names.
  for (const n of ['\uFFFD-extra', '\u{1F600}-extra', 'a-extra', 'zz-extra']) writeFileSync(join(dst, 'big', n), 'e');
  return { src, dst };
}

function control(stats = new SyncStats(), stopListing = new AbortController().signal) {
  return { stopListing, stopNow: new AbortController().signal, logger: QUIET, stats };
}

describe('--list-cutoff 10 through a sync', () => {
  it('copies and deletes each key once, in order, and leaves no spill behind', async () => {
    const t = tree();
    const s = new FileStore(t.src + '/');
    const d = new FileStore(t.dst + '/');
    open.push(s, d);
    const r = await runSync(s, d, { ...SYNC_OPTIONS, deleteDst: true, listCutoff: 10 }, control());
    expect(r.fatal).toBeUndefined();
    const files = N + TRICKY.length + 1;
    expect(r.stats.toJSON()).toMatchObject({ found: files, copied: files, deleted: 4, failed: 0, lost: 0 });
    expect(spillsOf()).toEqual([]);
    const again = await runSync(s, d, { ...SYNC_OPTIONS, deleteDst: true, listCutoff: 10 }, control());
    expect(again.stats.toJSON()).toMatchObject({ found: files, copied: 0, skipped: files, deleted: 0, failed: 0 });
    expect(spillsOf()).toEqual([]);
  });

  it('--max-failure 0: the spill is gone when the run stops', async () => {
    const t = tree();
    // Every copy into dst/big fails: big is a symlink there, and ferry does not write through it.
    rmSync(join(t.dst, 'big'), { recursive: true });
    mkdirSync(join(t.dst, '..', 'elsewhere'));
    symlinkSync('../elsewhere', join(t.dst, 'big'));
    const s = new FileStore(t.src + '/');
    const d = new FileStore(t.dst + '/');
    open.push(s, d);
    const r = await runSync(s, d, { ...SYNC_OPTIONS, maxFailure: 0, listCutoff: 10 }, control());
    expect(r.stopped).toBe('maxFailure');
    expect(r.stats.failed).toBeGreaterThan(0);
    expect(r.stats.copied).toBe(0);
    expect(spillsOf()).toEqual([]);
  });

  it('Ctrl-C mid-directory: the spill is gone when the run returns', async () => {
    const t = tree();
    const s = new FileStore(t.src + '/');
    const d = new FileStore(t.dst + '/');
    open.push(s, d);
    const stop = new AbortController();
    const stats = new SyncStats();
    const watcher = setInterval(() => stats.copied > 100 && stop.abort(), 1);
    const r = await runSync(s, d, { ...SYNC_OPTIONS, listCutoff: 10, bwlimit: 0.1 }, control(stats, stop.signal));
    clearInterval(watcher);
    expect(r.stopped).toBe('interrupted');
    expect(r.stats.copied).toBeLessThan(N);
    expect(r.stats.lost).toBe(0);
    expect(spillsOf()).toEqual([]);
  });

  it('--limit stops inside the directory: the spill is gone', async () => {
    const t = tree();
    const s = new FileStore(t.src + '/');
    const d = new FileStore(t.dst + '/');
    open.push(s, d);
    const r = await runSync(s, d, { ...SYNC_OPTIONS, limit: 20, listCutoff: 10 }, control());
    expect(r.stats.toJSON()).toMatchObject({ found: 20, copied: 20 });
    expect(spillsOf()).toEqual([]);
    expect(existsSync(join(t.dst, 'big', 'zz-extra'))).toBe(true);
  });
});

describe('--list-cutoff 10: a listing aborted while the directory is being sorted', () => {
  it('leaves no spill, whether the sorting thread saw the stop or finished first', async () => {
    const t = tree();
    const s = new FileStore(t.src + '/');
    open.push(s);
    for (const delay of [0, 1, 5, 20]) {
      const abort = new AbortController();
      const it = s.list({ prefix: 'big/', listCutoff: 10, signal: abort.signal })[Symbol.asyncIterator]();
      const first = it.next();
      setTimeout(() => abort.abort(), delay);
      await first.then(
        async () => {
          await it.next().catch(() => {});
          await it.return?.();
        },
        () => {},
      );
      expect(spillsOf(), `abort after ${delay} ms`).toEqual([]);
    }
  });
});
