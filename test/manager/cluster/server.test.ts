/**
 * The manager's cluster server against workers played by the test over a real WebSocket: who is
 * admitted, and how leases move when a worker leaves, goes silent or holds a task too long. The
 * run is the real runSync over mem stores; the real worker process is tested in test/e2e/cluster.
 */
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ClusterServer } from '../../../src/manager/cluster/server.js';
import { BandwidthShare } from '../../../src/manager/cluster/bandwidth.js';
import { runSync, type SyncOptions } from '../../../src/manager/sync/run.js';
import { SyncStats } from '../../../src/manager/sync/stats.js';
import { decodeManagerMessage, encodeMessage } from '../../../src/shared/protocol/codec.js';
import { CLOSE, PROTOCOL_VERSION, type ManagerMessage, type WorkerMessage } from '../../../src/shared/protocol/messages.js';
import { MemStore } from '../../../src/shared/storage/mem.js';
import type { Task, TaskResult } from '../../../src/shared/transfer/task.js';
import type { JobSpec } from '../../../src/shared/job.js';
import { SYNC_OPTIONS } from '../../support/options.js';

const OPTIONS: SyncOptions = { ...SYNC_OPTIONS, threads: 2 };
const TOKEN = 'the-run-token';
const JOB: JobSpec = { v: 1, src: 'mem://a/', dst: 'mem://b/', options: OPTIONS, filter: { rules: [], matchFullPath: false, limits: {} }, now: 0, noHttps: false };

function logger() {
  const lines: string[] = [];
  const push = (m: string) => void lines.push(m);
  return { lines, error: push, warn: push, info: push, debug: push };
}

const servers: ClusterServer[] = [];
const sockets: WebSocket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.terminate();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function server(over: { silenceMs?: number; bandwidth?: BandwidthShare } = {}) {
  const log = logger();
  const stats = new SyncStats();
  const s = await ClusterServer.listen(
    { token: TOKEN, job: JOB, env: { AWS_SECRET_ACCESS_KEY: 'k' }, threads: 2, bandwidth: over.bandwidth, stats, log, beatMs: 100, silenceMs: over.silenceMs ?? 5000 },
    '127.0.0.1',
    0,
  );
  servers.push(s);
  return { s, log, stats, url: `ws://127.0.0.1:${s.address.port}` };
}

/** A worker played by the test: it sends what it is told and keeps what it receives. */
class FakeWorker {
  readonly got: ManagerMessage[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  #waiters: (() => void)[] = [];
  #req = 0;
  constructor(readonly ws: WebSocket) {
    sockets.push(ws);
    ws.on('message', (d) => {
      this.got.push(decodeManagerMessage(d as Buffer));
      for (const w of this.#waiters.splice(0)) w();
    });
    this.closed = new Promise((r) => ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
  }
  static async connect(url: string): Promise<FakeWorker> {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
    return new FakeWorker(ws);
  }
  send(m: WorkerMessage | Record<string, unknown>): void {
    this.ws.send(encodeMessage(m as WorkerMessage));
  }
  hello(over: Partial<{ v: number; token: string }> = {}): void {
    this.send({ t: 'hello', v: over.v ?? PROTOCOL_VERSION, token: over.token ?? TOKEN, worker: { host: 'test', pid: 1, node: process.version, arch: process.arch, ferry: '0', name: 'fake' } });
  }
  async next<T extends ManagerMessage['t']>(t: T): Promise<Extract<ManagerMessage, { t: T }>> {
    for (;;) {
      const i = this.got.findIndex((m) => m.t === t);
      if (i >= 0) return this.got.splice(i, 1)[0] as Extract<ManagerMessage, { t: T }>;
      await new Promise<void>((r) => this.#waiters.push(r));
    }
  }
  async want(tasks = 100): Promise<Task[] | null> {
    const req = ++this.#req;
    this.send({ t: 'want', req, tasks, bytes: 1 << 30 });
    for (;;) {
      const b = await this.next('batch');
      if (b.req === req) return b.batch?.tasks ?? null;
    }
  }
}

const done = (tasks: Task[]): TaskResult[] => tasks.map((t) => ({ v: 1, id: t.id, outcome: { result: 'copied', bytes: t.entry.size, checked: false } }));

describe('ClusterServer admission', () => {
  it('refuses a wrong token, a missing token and a wrong protocol version, saying why', async () => {
    const { log, url } = await server();
    const wrong = await FakeWorker.connect(url);
    wrong.hello({ token: 'guess' });
    expect((await wrong.next('refuse')).reason).toBe('wrong or missing token');
    expect(await wrong.closed).toEqual({ code: CLOSE.badToken, reason: 'wrong or missing token' });

    const none = await FakeWorker.connect(url);
    none.send({ t: 'hello', v: PROTOCOL_VERSION, worker: { host: 'x', pid: 1, node: 'v20', arch: 'x64', ferry: '0' } });
    expect((await none.closed).code).not.toBe(1000);

    const old = await FakeWorker.connect(url);
    old.hello({ v: 99 });
    const refused = await old.next('refuse');
    expect(refused.reason).toContain('protocol version 99');
    expect(refused.reason).toContain(`manager speaks version ${PROTOCOL_VERSION}`);
    expect((await old.closed).code).toBe(CLOSE.badVersion);
    // Nothing secret was sent to any of them.
    for (const w of [wrong, none, old]) expect(w.got.some((m) => m.t === 'welcome')).toBe(false);
    expect(log.lines.filter((l) => l.startsWith('refused'))).toHaveLength(3);
  });

  it('closes a connection that sends a frame over the size limit, or text, or says nothing', async () => {
    const { log, url } = await server();
    const big = await FakeWorker.connect(url);
    big.ws.send(Buffer.alloc(17 << 20));
    expect((await big.closed).code).toBe(1009);
    const text = await FakeWorker.connect(url);
    text.ws.send('hello');
    expect((await text.closed).code).toBe(CLOSE.badMessage);
    expect(log.lines.join('\n')).toMatch(/over the 16 MiB limit/);
  });

  it('welcomes a worker with the job, its credentials and its share of --bwlimit, and re-shares when one leaves', async () => {
    const bandwidth = new BandwidthShare(1000);
    const { url, stats } = await server({ bandwidth });
    const a = await FakeWorker.connect(url);
    a.hello();
    const wa = await a.next('welcome');
    expect(wa.job).toEqual(JOB);
    expect(wa.env).toEqual({ AWS_SECRET_ACCESS_KEY: 'k' });
    expect(wa.rate).toBe(1000);
    const b = await FakeWorker.connect(url);
    b.hello();
    expect((await b.next('welcome')).rate).toBe(500);
    expect((await a.next('rate')).rate).toBe(500);
    b.ws.close();
    expect((await a.next('rate')).rate).toBe(1000);
    expect(stats.liveExecutors).toBe(1);
  });
});

describe('ClusterServer leases', () => {
  /** A run of `n` keys whose only executors are the test's workers. */
  async function run(n: number, lease?: { baseMs: number; minRate: number }, silenceMs?: number) {
    const { s, url, log, stats } = await server(silenceMs ? { silenceMs } : {});
    const src = new MemStore('a');
    for (let i = 0; i < n; i++) src.set(`k${i}`, Buffer.from(`v${i}`));
    // The test's first worker is on its way: without it the manager would run everything alone.
    s.expect('fake');
    const result = runSync(src, new MemStore('b'), OPTIONS, {
      stopListing: new AbortController().signal,
      stopNow: new AbortController().signal,
      logger: log,
      stats,
      cluster: s,
      managerExecutes: false,
      ...(lease ? { lease } : {}),
    });
    return { s, url, log, stats, result };
  }

  it("hands a disconnected worker's tasks to another, and counts every key once", async () => {
    const r = await run(6);
    const a = await FakeWorker.connect(r.url);
    a.hello();
    await a.next('welcome');
    const held = await a.want(4);
    expect(held).toHaveLength(4);
    const b = await FakeWorker.connect(r.url);
    b.hello();
    await b.next('welcome');
    a.ws.terminate();
    const seen: string[] = [];
    for (;;) {
      const tasks = await b.want(100);
      if (!tasks) break;
      seen.push(...tasks.map((t) => t.entry.key));
      b.send({ t: 'results', results: done(tasks) });
    }
    expect(seen.sort()).toEqual(['k0', 'k1', 'k2', 'k3', 'k4', 'k5']);
    const { stats } = await r.result;
    expect({ found: stats.found, copied: stats.copied, lost: stats.lost }).toEqual({ found: 6, copied: 6, lost: 0 });
    expect(stats.executorsJSON().map((e) => [e.host, e.tasks, e.leasesLost])).toEqual([
      ['manager', 0, 0],
      ['fake', 0, 1],
      ['fake', 6, 0],
    ]);
  });

  it('disconnects a worker that holds tasks past their lease, so it cannot finish them behind another executor', async () => {
    // A first holder still writing while the task runs again elsewhere could overwrite the newer copy.
    const r = await run(2, { baseMs: 300, minRate: 1 << 20 });
    const slow = await FakeWorker.connect(r.url);
    slow.hello();
    await slow.next('welcome');
    const held = (await slow.want(100))!;
    expect(held).toHaveLength(2);
    const fast = await FakeWorker.connect(r.url);
    fast.hello();
    await fast.next('welcome');
    const beats = setInterval(() => slow.send({ t: 'beat', bytes: 0 }), 50);
    try {
      expect((await slow.closed).code).toBe(1006);
    } finally {
      clearInterval(beats);
    }
    const again = (await fast.want(100))!;
    expect(again.map((t) => t.id)).toEqual(held.map((t) => t.id));
    fast.send({ t: 'results', results: done(again) });
    expect(await fast.want()).toBeNull();
    const { stats } = await r.result;
    expect({ copied: stats.copied, copiedBytes: stats.copiedBytes }).toEqual({ copied: 2, copiedBytes: 4 });
    expect(r.stats.executorsJSON().find((e) => e.id === 'w1')).toMatchObject({ tasks: 0, leasesLost: 1 });
    expect(r.log.lines.join('\n')).toMatch(/held a task past its lease/);
  });

  it('refuses a worker whose result carries a byte count that is not a whole number, and its tasks go to another', async () => {
    // Regression (found in review): NaN or negative bytes from a buggy worker poisoned the summary's counters.
    const r = await run(2);
    const bad = await FakeWorker.connect(r.url);
    bad.hello();
    await bad.next('welcome');
    const good = await FakeWorker.connect(r.url);
    good.hello();
    await good.next('welcome');
    const t = (await bad.want(100))!;
    bad.send({ t: 'results', results: t.map((x, i) => ({ v: 1, id: x.id, outcome: { result: 'copied', bytes: i === 0 ? Number.NaN : -1e18, checked: false } })) });
    expect((await bad.closed).code).toBe(CLOSE.badMessage);
    const again = (await good.want(100))!;
    expect(again).toHaveLength(2);
    good.send({ t: 'results', results: done(again) });
    expect(await good.want()).toBeNull();
    const { stats } = await r.result;
    expect({ copied: stats.copied, copiedBytes: stats.copiedBytes }).toEqual({ copied: 2, copiedBytes: 4 });
  });

  it('disconnects a worker that stops sending heartbeats, and its tasks finish elsewhere', async () => {
    const r = await run(3, undefined, 400);
    const frozen = await FakeWorker.connect(r.url);
    frozen.hello();
    await frozen.next('welcome');
    expect(await frozen.want(100)).toHaveLength(3);
    const other = await FakeWorker.connect(r.url);
    other.hello();
    await other.next('welcome');
    const beats = setInterval(() => other.send({ t: 'beat', bytes: 0 }), 100);
    try {
      expect((await frozen.closed).code).toBe(1006);
      const tasks = (await other.want(100))!;
      expect(tasks).toHaveLength(3);
      other.send({ t: 'results', results: done(tasks) });
      expect(await other.want()).toBeNull();
    } finally {
      clearInterval(beats);
    }
    const { stats } = await r.result;
    expect({ copied: stats.copied, lost: stats.lost }).toEqual({ copied: 3, lost: 0 });
    expect(r.log.lines.join('\n')).toMatch(/worker w1 \[fake\] has been silent/);
  });
});
