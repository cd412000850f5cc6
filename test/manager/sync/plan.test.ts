import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runSync, type SyncOptions } from '../../../src/manager/sync/run.js';
import { SyncStats } from '../../../src/manager/sync/stats.js';
import { compileRules } from '../../../src/shared/filter/rules.js';
import { MemStore } from '../../../src/shared/storage/mem.js';
import type { Entry, ObjectStore } from '../../../src/shared/storage/types.js';
import { QUIET, SYNC_OPTIONS } from '../../support/options.js';

const OPTIONS: SyncOptions = SYNC_OPTIONS;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function control(extra: { stopListing?: AbortSignal; filter?: (e: Entry) => boolean } = {}) {
  return { stopListing: extra.stopListing ?? new AbortController().signal, stopNow: new AbortController().signal, logger: QUIET, ...(extra.filter ? { filter: extra.filter } : {}) };
}

/** Source and destination mem stores; a key's content is its name unless given. */
function stores(src: (string | [string, string, number?])[], dst: (string | [string, string, number?])[]) {
  const s = new MemStore('src');
  const d = new MemStore('dst');
  for (const [store, keys] of [[s, src], [d, dst]] as const) {
    for (const k of keys) {
      const [key, body, mtime] = typeof k === 'string' ? [k, k, 1000] : k;
      store.set(key, Buffer.from(body), { mtime: mtime ?? 1000 });
    }
  }
  return { s, d };
}

const counters = (stats: SyncStats) => {
  const j = stats.toJSON();
  delete j.seconds;
  return Object.fromEntries(Object.entries(j).filter(([, v]) => v !== 0));
};

describe('the planner counts every key exactly, per decision', () => {
  const cases: [string, Partial<SyncOptions>, ReturnType<typeof stores>, Record<string, number>][] = [
    ['copy what is missing', {}, stores(['a', 'b'], []), { found: 2, copied: 2, copiedBytes: 2 }],
    ['skip what is equal', {}, stores(['a', 'b'], ['a', 'b']), { found: 2, skipped: 2, skippedBytes: 2 }],
    ['copy what changed (size)', {}, stores([['a', 'new!']], [['a', 'old']]), { found: 1, copied: 1, copiedBytes: 4 }],
    ['copy what changed (mtime, both keep mtimes)', {}, stores([['a', 'x', 5000]], [['a', 'y', 1000]]), { found: 1, copied: 1, copiedBytes: 1 }],
    ['--size-only keeps equal sizes', { sizeOnly: true }, stores([['a', 'x', 5000]], [['a', 'y', 1000]]), { found: 1, skipped: 1, skippedBytes: 1 }],
    ['keep what is extra', {}, stores(['a'], ['a', 'zz']), { found: 1, skipped: 1, skippedBytes: 1, extra: 1, extraBytes: 2 }],
    ['--delete-dst deletes what is extra', { deleteDst: true }, stores(['a'], ['a', 'zz']), { found: 1, skipped: 1, skippedBytes: 1, deleted: 1 }],
    ['--existing skips new keys', { existing: true }, stores(['a', 'new'], ['a']), { found: 2, skipped: 2, skippedBytes: 4 }],
    ['--ignore-existing skips changed keys', { ignoreExisting: true }, stores([['a', 'new!']], [['a', 'old']]), { found: 1, skipped: 1, skippedBytes: 4 }],
    ['--update keeps a newer destination', { update: true }, stores([['a', 'x', 1000]], [['a', 'yy', 9000]]), { found: 1, skipped: 1, skippedBytes: 1 }],
    ['--force-update copies everything', { forceUpdate: true }, stores(['a'], ['a']), { found: 1, copied: 1, copiedBytes: 1 }],
    ['--check-all compares equal-looking keys', { checkAll: true }, stores(['a', ['b', 'x']], ['a', ['b', 'y']]), { found: 2, skipped: 1, skippedBytes: 1, copied: 1, copiedBytes: 1, checked: 2, checkedBytes: 2 }],
    ['--delete-src deletes what is proven on the destination', { deleteSrc: true }, stores(['a', 'new'], ['a']), { found: 2, copied: 1, copiedBytes: 3, deleted: 1, checked: 1, checkedBytes: 1 }],
    ['--dry counts without writing', { dry: true, deleteDst: true }, stores(['a'], ['zz']), { found: 1, copied: 1, copiedBytes: 1, deleted: 1 }],
  ];
  for (const [name, extra, { s, d }, want] of cases) {
    it(name, async () => {
      const r = await runSync(s, d, { ...OPTIONS, ...extra }, control());
      expect(counters(r.stats)).toEqual(want);
    });
  }

  it('excluded keys are counted as excluded and left alone on both sides', async () => {
    const { s, d } = stores(['keep', 'skip.log'], ['skip.log', 'old.log']);
    const matcher = compileRules([{ include: false, pattern: '*.log' }]);
    const r = await runSync(s, d, { ...OPTIONS, deleteDst: true }, control({ filter: (e) => matcher(e.key) }));
    expect(counters(r.stats)).toEqual({ found: 1, copied: 1, copiedBytes: 4, excluded: 1, excludedBytes: 8 });
  });
});

describe('the planner honours its limits', () => {
  it('--limit N handles N keys', async () => {
    const { s, d } = stores(['a', 'b', 'c', 'd'], []);
    const r = await runSync(s, d, { ...OPTIONS, limit: 3 }, control());
    expect(counters(r.stats)).toEqual({ found: 3, copied: 3, copiedBytes: 3 });
  });

  it('--max-failure stops handing out work after N failures', async () => {
    const { s } = stores(Array.from({ length: 200 }, (_, i) => `k${String(i).padStart(3, '0')}`), []);
    const refusing: ObjectStore = Object.assign(Object.create(null), {
      scheme: 'mem',
      description: 'mem://refusing',
      features: {},
      async *list() {},
      head: async () => {
        throw new Error('no');
      },
      get: async () => {
        throw new Error('no');
      },
      put: async () => {
        throw Object.assign(new Error('disk full'), { code: 'ENOSPC' });
      },
      delete: async () => {},
    });
    const r = await runSync(s, refusing, { ...OPTIONS, maxFailure: 2, threads: 1 }, control());
    expect(r.stopped).toBe('maxFailure');
    expect(r.stats.failed).toBe(3);
    expect(r.stats.found).toBe(3);
    expect(r.stats.lost).toBe(0);
  });

  it('--files-from with overlapping lines copies and counts each key once', async () => {
    // Bug: lines 'a/' and 'a/x' copied and counted a/x twice; '.ferry/' reached the reserved directory.
    const { s, d } = stores(['a/x', 'a/y', 'b', '.ferry/meta'], []);
    const dir = mkdtempSync(join(tmpdir(), 'ferry-plan-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'list'), 'a/x\nb\na/\na/x\n.ferry/\n');
    const r = await runSync(s, d, { ...OPTIONS, filesFrom: join(dir, 'list') }, control());
    expect(counters(r.stats)).toEqual({ found: 4, copied: 3, copiedBytes: 7, failed: 1 });
    expect(d.size).toBe(3);
  });

  it('Ctrl-C before the run starts plans and copies nothing', async () => {
    const { s, d } = stores(['a', 'b'], []);
    const stop = new AbortController();
    stop.abort();
    const r = await runSync(s, d, OPTIONS, control({ stopListing: stop.signal }));
    expect(r.stopped).toBe('interrupted');
    expect(counters(r.stats)).toEqual({});
    expect(d.size).toBe(0);
  });

  it('Ctrl-C during the run: what went out is finished and counted, nothing is lost', async () => {
    const { s, d } = stores(Array.from({ length: 5000 }, (_, i): [string, string] => [`k${String(i).padStart(4, '0')}`, 'x'.repeat(1024)]), []);
    const stop = new AbortController();
    const stats = new SyncStats();
    const watcher = setInterval(() => {
      if (stats.copied > 70) stop.abort();
    }, 5);
    // Throttled (100 KB/s after a 64 KiB burst), so the run is still going when stopped.
    const r = await runSync(s, d, { ...OPTIONS, bwlimit: 0.8 }, { ...control({ stopListing: stop.signal }), stats });
    clearInterval(watcher);
    expect(r.stopped).toBe('interrupted');
    expect(r.stats.copied).toBeGreaterThan(70);
    expect(r.stats.copied).toBeLessThan(5000);
    expect(r.stats.found).toBe(r.stats.copied);
    expect(r.stats.lost).toBe(0);
    expect(d.size).toBe(r.stats.copied);
  });
});
