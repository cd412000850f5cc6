/**
 * Regression (found in review): a task whose lease expired kept running on its first holder, and
 * its stale write landed after the re-run's. With --delete-src-after and a source that changed
 * during the run, the newer content was lost: the re-run verified and deleted the source, then the
 * first attempt wrote the older content over the destination. Now a holder past its lease is
 * disconnected, and a disconnected worker aborts its copies before they are renamed into place.
 * Real workers (src/worker/run.ts) in this process, real ClusterServer + runSync, mem stores.
 */
import { Readable } from 'node:stream';
import { afterEach, expect, it } from 'vitest';
import { ClusterServer } from '../../../src/manager/cluster/server.js';
import { runSync, type SyncOptions } from '../../../src/manager/sync/run.js';
import { SyncStats } from '../../../src/manager/sync/stats.js';
import { MemSpace, memBackend, type MemStore } from '../../../src/shared/storage/mem.js';
import { BackendRegistry } from '../../../src/shared/storage/registry.js';
import type { JobSpec } from '../../../src/shared/job.js';
import { runWorker } from '../../../src/worker/run.js';
import { SYNC_OPTIONS } from '../../support/options.js';

const OPTIONS: SyncOptions = { ...SYNC_OPTIONS, deleteSrcAfter: true, threads: 1 };
const TOKEN = 'tok-stale';
const servers: ClusterServer[] = [];
afterEach(async () => void (await Promise.all(servers.splice(0).map((s) => s.close()))));

function registry(space: MemSpace, slowReads = 0): BackendRegistry {
  const r = new BackendRegistry();
  const base = memBackend(space);
  r.register({
    ...base,
    async open(address, options) {
      const store = (await base.open(address, options)) as MemStore;
      if (!slowReads || address.bucket !== 'a') return store;
      // The source as a slow reader sees it: the bytes as they were when the read began, delivered late.
      return new Proxy(store, {
        get(t, p) {
          if (p === 'get')
            return async (key: string, o: unknown) => {
              const chunks: Buffer[] = [];
              for await (const c of await t.get(key, o as never)) chunks.push(c as Buffer);
              await new Promise((res) => setTimeout(res, slowReads));
              return Readable.from([Buffer.concat(chunks)]);
            };
          const v = Reflect.get(t, p, t);
          return typeof v === 'function' ? v.bind(t) : v;
        },
      });
    },
  });
  return r;
}

it('F3 --delete-src-after: a stale first attempt (lease expired) overwrites the verified re-run; the newer content is gone from both sides', async () => {
  const space = new MemSpace();
  const src = space.store('a');
  const dst = space.store('b');
  src.set('k', Buffer.from('OLD version'));
  const job: JobSpec = { v: 1, src: 'mem://a/', dst: 'mem://b/', options: OPTIONS, filter: { rules: [], matchFullPath: false, limits: {} }, now: Date.now(), noHttps: false };
  const log = { lines: [] as string[], error: (m: string) => void log.lines.push(m), warn: (m: string) => void log.lines.push(m), info: (m: string) => void log.lines.push(m), debug: (m: string) => void log.lines.push(m) };
  const stats = new SyncStats();
  const s = await ClusterServer.listen({ token: TOKEN, job, env: {}, threads: 1, bandwidth: undefined, stats, log, beatMs: 100, silenceMs: 5000 }, '127.0.0.1', 0);
  servers.push(s);
  const url = `ws://127.0.0.1:${s.address.port}`;
  s.expect('slow');
  const result = runSync(src, dst, OPTIONS, {
    stopListing: new AbortController().signal,
    stopNow: new AbortController().signal,
    logger: log,
    stats,
    cluster: s,
    managerExecutes: false,
    lease: { baseMs: 400, minRate: 1 << 20 }, // --task-lease, short for the test
  });
  const sink = { write: () => true };
  const slow = runWorker({ manager: url, token: TOKEN, name: 'slow' }, { stderr: sink, registry: registry(space, 1500) });
  await new Promise((r) => setTimeout(r, 300)); // the slow worker has read 'OLD version' and holds k
  src.set('k', Buffer.from('NEW version')); // the source changes during the run (a live data set)
  await new Promise((r) => setTimeout(r, 400)); // k's lease expired: back in the queue
  const fast = runWorker({ manager: url, token: TOKEN, name: 'fast' }, { stderr: sink, registry: registry(space) });
  const { stats: st } = await result;
  await Promise.all([slow, fast]);
  const head = await src.head('k').then(() => 'present', () => 'deleted');
  const body = await (async () => {
    const chunks: Buffer[] = [];
    for await (const c of await dst.get('k')) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString();
  })();
  expect({ copied: st.copied, failed: st.failed, src: head }).toEqual({ copied: 1, failed: 0, src: 'deleted' });
  // The only copy of 'NEW version' was verified on the destination, then the source was deleted:
  expect(body).toBe('NEW version');
});
