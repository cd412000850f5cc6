import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { backupIfDue, type ProduceDump } from '../../../src/manager/backup/schedule.js';
import { dumpProducer } from '../../../src/manager/backup/produce.js';
import { claimKey, dumpKey } from '../../../src/manager/backup/names.js';
import { AlreadyExistsError } from '../../../src/shared/errors.js';
import { FileStore } from '../../../src/shared/storage/file/index.js';
import { MemStore } from '../../../src/shared/storage/mem.js';
import type { ObjectStore, PutOptions } from '../../../src/shared/storage/types.js';
import type { Readable } from 'node:stream';

const HOUR = 3_600_000;
const utc = (s: string) => Date.parse(s + 'Z');
const root = mkdtempSync(join(tmpdir(), 'ferry-backup-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A logger that keeps what it was told. */
function said() {
  const lines = { info: [] as string[], warn: [] as string[], error: [] as string[] };
  return {
    lines,
    log: { info: (m: string) => lines.info.push(m), warn: (m: string) => lines.warn.push(m), error: (m: string) => lines.error.push(m), debug: () => undefined },
  };
}

/**
 * The store as the claim code sees it, with or without conditional create. Where the store itself
 * lacks it (every backend before put's `ifAbsent` lands), `exclusive` adds it here: atomic within
 * this process, which is where the racing callers are.
 */
function claimsVia(store: ObjectStore, exclusive: boolean): ObjectStore {
  const features = { ...store.features, exclusiveCreate: exclusive };
  const creating = new Set<string>();
  const put = async (key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> => {
    const { ifAbsent, ...rest } = options;
    if (!ifAbsent || store.features.exclusiveCreate) return store.put(key, body, options);
    if (creating.has(key)) throw new AlreadyExistsError(`${key} exists`);
    creating.add(key);
    const there = await store.head(key).then(
      () => true,
      () => false,
    );
    if (there) throw new AlreadyExistsError(`${key} exists`);
    return store.put(key, body, rest);
  };
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'features') return features;
      if (prop === 'put') return put;
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

async function read(store: ObjectStore, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await store.get(key)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function metaKeys(store: ObjectStore): Promise<string[]> {
  const keys: string[] = [];
  try {
    for await (const page of store.list({ prefix: '.ferry/meta/' })) for (const e of page) if (!e.isDir) keys.push(e.key);
  } catch {
    // none
  }
  return keys;
}

async function source(): Promise<MemStore> {
  const src = new MemStore('src-' + Math.random());
  await src.put('a/one.txt', Buffer.from('one'));
  await src.put('a/two.txt', Buffer.from('two!'));
  await src.put('b.bin', Buffer.alloc(1000, 1));
  return src;
}

const setting = { src: '/data/' };

describe('backupIfDue', () => {
  it('writes this interval\'s backup once, a gzip JSON dump of SRC, and again in the next interval', async () => {
    const src = await source();
    const dst = new MemStore('dst-' + Math.random());
    let now = utc('2026-11-30T10:17:03');
    const { lines, log } = said();
    const o = { dst, intervalMs: HOUR, produce: dumpProducer(src, setting), log, now: () => now, settleMs: 10 };
    const first = await backupIfDue(o);
    expect(first).toMatchObject({ status: 'written', key: '.ferry/meta/dump-2026-11-30-101703.json.gz', counters: { files: 3, bytes: 1007 }, unreadable: 0, slow: false, nextDue: '2026-11-30T11:00:00.000Z' });
    expect(first.seconds).toBeGreaterThanOrEqual(0);
    const doc = JSON.parse(gunzipSync(await read(dst, first.key!)).toString('utf8'));
    expect(doc).toMatchObject({ format: 'ferry-dump/1', setting });
    expect(lines.info.some((l) => l.startsWith('metadata backup written: .ferry/meta/dump-2026-11-30-101703.json.gz in '))).toBe(true);

    now += 40 * 60_000; // 10:57, same interval
    const second = await backupIfDue(o);
    expect(second).toMatchObject({ status: 'skipped', reason: 'not-due', nextDue: '2026-11-30T11:00:00.000Z' });
    expect(lines.info.at(-1)).toContain('not due: .ferry/meta/dump-2026-11-30-101703.json.gz is this interval');

    now += 5 * 60_000; // 11:02, next interval
    expect(await backupIfDue(o)).toMatchObject({ status: 'written', key: '.ferry/meta/dump-2026-11-30-110203.json.gz' });
    expect((await metaKeys(dst)).sort()).toEqual([
      '.ferry/meta/claim-2026-11-30-100000',
      '.ferry/meta/claim-2026-11-30-110000',
      '.ferry/meta/dump-2026-11-30-101703.json.gz',
      '.ferry/meta/dump-2026-11-30-110203.json.gz',
    ]);
  });

  describe.each([
    ['a conditional create (features.exclusiveCreate)', true],
    ['no conditional create (best effort: write, settle, read back)', false],
  ])('two managers racing for one interval, %s', (_what, exclusive) => {
    it.each(['mem', 'file'])('on a %s store: exactly one backup, the other says the interval was claimed', async (kind) => {
      const src = await source();
      const store: ObjectStore = kind === 'mem' ? new MemStore('race-' + Math.random()) : new FileStore(mkdtempSync(join(root, 'race-')) + '/');
      const dst = claimsVia(store, exclusive);
      const now = utc('2026-11-30T10:17:03');
      const a = said();
      const b = said();
      const [ra, rb] = await Promise.all([
        backupIfDue({ dst, intervalMs: HOUR, produce: dumpProducer(src, setting), log: a.log, now: () => now, settleMs: 200, manager: 'manager-a' }),
        backupIfDue({ dst, intervalMs: HOUR, produce: dumpProducer(src, setting), log: b.log, now: () => now + 1000, settleMs: 200, manager: 'manager-b' }),
      ]);
      const reports = [ra, rb];
      expect(reports.map((r) => r.status).sort()).toEqual(['skipped', 'written']);
      const loser = reports.find((r) => r.status === 'skipped')!;
      const winner = reports.find((r) => r.status === 'written')!;
      expect(loser.reason).toBe('claimed');
      // Who holds it is named when its claim could be read (a conditional create can refuse before the winner's claim is readable).
      expect(loser.message).toMatch(exclusive ? /claimed by another manager/ : /claimed by another manager \(manager-[ab], at 2026-11-30T10:17:0[34]\.000Z\)/);
      const keys = await metaKeys(store);
      expect(keys.filter((k) => k.includes('/dump-'))).toEqual([winner.key]);
      expect(keys.filter((k) => k.includes('/claim-'))).toEqual(['.ferry/meta/claim-2026-11-30-100000']);
      await store.close?.();
    });
  });

  it('a producer that fails leaves no backup and no claim (the interval can be tried again), says why, and reports it failed', async () => {
    const dst = new MemStore('fail-' + Math.random());
    const { lines, log } = said();
    const produce: ProduceDump = async (out) => {
      out.write(Buffer.alloc(5000, 1));
      throw new Error('listing /data/x failed: permission denied');
    };
    const r = await backupIfDue({ dst, intervalMs: HOUR, produce, log, now: () => utc('2026-11-30T10:17:03'), settleMs: 10 });
    expect(r).toMatchObject({ status: 'failed', reason: 'error' });
    expect(r.message).toContain('permission denied');
    expect(lines.error).toEqual([r.message]);
    expect(await metaKeys(dst)).toEqual([]);
    // The next run in the same interval tries again.
    const again = await backupIfDue({ dst, intervalMs: HOUR, produce: dumpProducer(new MemStore('empty'), setting), log, now: () => utc('2026-11-30T10:47:00'), settleMs: 10 });
    expect(again).toMatchObject({ status: 'written', key: '.ferry/meta/dump-2026-11-30-104700.json.gz' });
  });

  it('a backup stopped by its signal (Ctrl-C) keeps nothing and says it was interrupted', async () => {
    const dst = new FileStore(mkdtempSync(join(root, 'abort-')) + '/');
    const stop = new AbortController();
    const { log } = said();
    const produce: ProduceDump = async (out, signal) => {
      out.write(Buffer.alloc(100_000, 1));
      setTimeout(() => stop.abort(), 50);
      await new Promise((_, reject) => signal.addEventListener('abort', () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' }))));
      throw new Error('unreachable');
    };
    const r = await backupIfDue({ dst, intervalMs: HOUR, produce, log, now: () => utc('2026-11-30T10:17:03'), settleMs: 10, signal: stop.signal });
    expect(r).toMatchObject({ status: 'failed', reason: 'interrupted' });
    expect((await metaKeys(dst)).filter((k) => k.includes('dump-'))).toEqual([]);
    await dst.close?.();
  });

  it('says how long a backup took and warns when it took longer than its interval', async () => {
    const dst = new MemStore('slow-' + Math.random());
    let now = utc('2026-11-30T10:17:03');
    const { lines, log } = said();
    const produce: ProduceDump = async (out) => {
      now += 2 * HOUR + 5000; // the simulated clock moves while the dump is written
      out.end(Buffer.from('x'));
      return { counters: { files: 1, dirs: 0, symlinks: 0, bytes: 1 }, failed: 2 };
    };
    const r = await backupIfDue({ dst, intervalMs: HOUR, produce, log, now: () => now, settleMs: 10 });
    expect(r).toMatchObject({ status: 'written', seconds: 7205, slow: true, unreadable: 2 });
    expect(lines.warn).toEqual([
      'metadata backup .ferry/meta/dump-2026-11-30-101703.json.gz: 2 entries of the source could not be read and are not in it',
      'the metadata backup took 2h5s, longer than its interval (--backup-meta 1h): intervals are being missed; choose a longer one',
    ]);
  });

  it('prunes by the retention policy only the backups and claims ferry wrote', async () => {
    const dst = new MemStore('prune-' + Math.random());
    const now = utc('2026-11-30T10:17:03');
    const old = ['2026-11-01T00:00:00', '2026-11-01T06:00:00', '2026-09-03T00:00:00', '2026-09-20T00:00:00', '2026-11-29T05:00:00'].map(utc);
    for (const t of old) await dst.put(dumpKey(t), Buffer.from('old'));
    const claims = ['2026-11-28T09:00:00', '2026-11-29T05:00:00'].map(utc);
    for (const t of claims) await dst.put(claimKey(t), Buffer.from('{}'));
    const strangers = ['.ferry/meta/dump-2026-09-03-000000.json.gz.keep', '.ferry/meta/notes.txt', '.ferry/meta/dump-2026-09-20-000000.json', '.ferry/checkpoint-abc'];
    for (const k of strangers) await dst.put(k, Buffer.from('mine'));
    const { log } = said();
    const r = await backupIfDue({ dst, intervalMs: HOUR, produce: dumpProducer(new MemStore('empty'), setting), log, now: () => now, settleMs: 10 });
    // Gone: 2026-11-01T06 (November's week 44 keeps its oldest, 00:00), 2026-09-20 (September keeps
    // the 3rd), the claim of the 28th (before yesterday). Kept: yesterday's backup and claim.
    expect(r).toMatchObject({ status: 'written', pruned: 3 });
    expect((await metaKeys(dst)).sort()).toEqual(
      [
        ...strangers.filter((k) => k.startsWith('.ferry/meta/')),
        dumpKey(utc('2026-11-01T00:00:00')),
        dumpKey(utc('2026-09-03T00:00:00')),
        dumpKey(utc('2026-11-29T05:00:00')),
        claimKey(utc('2026-11-29T05:00:00')),
        claimKey(utc('2026-11-30T10:00:00')),
        r.key!,
      ].sort(),
    );
    expect(await read(dst, '.ferry/checkpoint-abc')).toEqual(Buffer.from('mine'));
  });
});

