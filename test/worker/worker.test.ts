/**
 * The worker bundle (dist/worker.cjs, built by the global setup) as a process of its own, against a
 * manager played by the test over a real WebSocket: what it says, what it does with the tasks it
 * is given, and when and how it leaves.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import type { JobSpec, SyncOptions } from '../../src/shared/job.js';
import { decodeWorkerMessage, encodeMessage } from '../../src/shared/protocol/codec.js';
import { CLOSE, MAX_FRAME_BYTES, PROTOCOL_VERSION, type ManagerMessage, type WorkerMessage } from '../../src/shared/protocol/messages.js';
import { parseAddress } from '../../src/shared/storage/address.js';
import { defaultRegistry } from '../../src/shared/storage/all.js';
import type { Entry } from '../../src/shared/storage/types.js';
import type { Task, TaskResult } from '../../src/shared/transfer/task.js';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';
import { RemoteTaskSource } from '../../src/worker/source.js';
import { SYNC_OPTIONS } from '../support/options.js';

/**
 * The bundle runs from a copy in a directory of its own: no node_modules above it to fall back on
 * (so a backend or SDK missing from the bundle fails here), and a rebuild of dist/ meanwhile does
 * not pull it away.
 */
let WORKER = '';
beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-worker-bundle-'));
  WORKER = join(dir, 'worker.cjs');
  await copyFile(join(process.cwd(), 'dist/worker.cjs'), WORKER);
});
afterAll(async () => {
  if (WORKER) await rm(join(WORKER, '..'), { recursive: true, force: true });
});

const OPTIONS: SyncOptions = { ...SYNC_OPTIONS, threads: 2 };

function job(src: string, dst: string, options: Partial<SyncOptions> = {}): JobSpec {
  return { v: 1, src, dst, options: { ...OPTIONS, ...options }, filter: { rules: [], matchFullPath: false, limits: {} }, now: Date.now(), noHttps: false };
}

type Welcome = Extract<ManagerMessage, { t: 'welcome' }>;
function welcome(j: JobSpec, over: Partial<Welcome> = {}): Welcome {
  return { t: 'welcome', v: PROTOCOL_VERSION, id: 'w1', job: j, env: {}, threads: 2, rate: 0, beatMs: 100, deadMs: 10_000, ...over };
}

// Everything a test starts, stopped after it whatever happened.
const children = new Set<ChildProcess>();
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
  for (const f of cleanups.splice(0).reverse()) await f().catch(() => undefined);
});

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-worker-test-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** One worker's connection, seen from the manager's side. */
class Connection {
  readonly got: WorkerMessage[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  #waiters: (() => void)[] = [];
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      this.got.push(decodeWorkerMessage(data as Buffer));
      for (const w of this.#waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  send(m: ManagerMessage): void {
    this.ws.send(encodeMessage(m));
  }

  /** The next message of type `t` (earlier ones of other types stay in `got`). */
  async next<T extends WorkerMessage['t']>(t: T, timeoutMs = 10_000): Promise<Extract<WorkerMessage, { t: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.got.findIndex((m) => m.t === t);
      if (i >= 0) return this.got.splice(i, 1)[0] as Extract<WorkerMessage, { t: T }>;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no '${t}' from the worker within ${timeoutMs} ms (got: ${this.got.map((m) => m.t).join(', ') || 'nothing'})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }

  /**
   * Plays the dispatcher: answers each `want` with up to its count of the tasks, and with null once
   * they are all out (and for as long as the connection lasts). Resolves with the results once
   * every task has one. Beats stay in `got`.
   */
  serve(tasks: Task[]): Promise<TaskResult[]> {
    const queue = [...tasks];
    const results: TaskResult[] = [];
    return new Promise((resolve, reject) => {
      let open = true;
      const pump = () => {
        if (!open) return;
        for (const m of this.got.filter((m) => m.t !== 'beat')) {
          this.got.splice(this.got.indexOf(m), 1);
          if (m.t === 'want') this.send({ t: 'batch', req: m.req, batch: queue.length ? { v: 1, tasks: queue.splice(0, m.tasks) } : null });
          else if (m.t === 'results') results.push(...m.results);
          else reject(new Error(`unexpected '${m.t}' from the worker: ${JSON.stringify(m)}`));
        }
        if (results.length >= tasks.length) resolve(results);
        this.#waiters.push(pump);
      };
      void this.closed.then(() => {
        open = false;
        reject(new Error(`the worker left with ${results.length} of ${tasks.length} results`));
      });
      pump();
    });
  }
}

/** A WebSocket server speaking the manager's side of messages.ts. */
class FakeManager {
  readonly #wss: WebSocketServer;
  readonly #arrived: Connection[] = [];
  #waiters: (() => void)[] = [];
  constructor(wss: WebSocketServer) {
    this.#wss = wss;
    wss.on('connection', (ws) => {
      this.#arrived.push(new Connection(ws));
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  static async start(options: { port?: number } = {}): Promise<FakeManager> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: options.port ?? 0, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false });
    await new Promise((resolve) => wss.once('listening', resolve));
    const m = new FakeManager(wss);
    cleanups.push(() => m.close());
    return m;
  }

  get url(): string {
    const a = this.#wss.address();
    if (a === null || typeof a === 'string') throw new Error('no port');
    return `ws://127.0.0.1:${a.port}`;
  }

  async connection(timeoutMs = 10_000): Promise<Connection> {
    const deadline = Date.now() + timeoutMs;
    while (this.#arrived.length === 0) {
      if (Date.now() > deadline) throw new Error('no worker connected');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 100);
        this.#waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
    return this.#arrived.shift()!;
  }

  close(): Promise<void> {
    for (const c of this.#wss.clients) c.terminate();
    return new Promise((resolve) => this.#wss.close(() => resolve()));
  }
}

interface WorkerProcess {
  child: ChildProcess;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

/** The environment of the test without credentials: a worker gets them from its welcome only. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('AWS_') || k === 'FERRY_TOKEN_FILE') delete env[k];
  return env;
}

function startWorker(args: string[], options: { stdin?: 'pipe' | 'ignore'; env?: NodeJS.ProcessEnv; executable?: string } = {}): WorkerProcess {
  const [command, ...pre] = options.executable ? [options.executable] : [process.execPath, WORKER];
  const child = spawn(command!, [...pre, ...args], { stdio: [options.stdin ?? 'ignore', 'ignore', 'pipe'], env: options.env ?? cleanEnv() });
  children.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
  return { child, stderr: () => stderr, exited };
}

async function tokenFile(token: string): Promise<string> {
  const path = join(await tempDir(), 'token');
  await writeFile(path, token + '\n', { mode: 0o600 });
  return path;
}

/** A worker joined to `manager` with a token file; resolves with its connection, the hello received. */
async function joined(manager: FakeManager, extra: string[] = [], options: Parameters<typeof startWorker>[1] = {}): Promise<{ worker: WorkerProcess; conn: Connection; token: string }> {
  const token = randomBytes(16).toString('hex');
  const worker = startWorker(['--manager', manager.url, '--token-file', await tokenFile(token), ...extra], options);
  const conn = await manager.connection();
  const hello = await conn.next('hello');
  expect(hello.token).toBe(token);
  return { worker, conn, token };
}

/** Files of the given sizes under `dir`, as the entries a listing would give. */
async function makeFiles(dir: string, sizes: Record<string, number>): Promise<Entry[]> {
  const entries: Entry[] = [];
  for (const [key, size] of Object.entries(sizes)) {
    const path = join(dir, key);
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, randomBytes(size));
    const s = await stat(path);
    entries.push({ key, size, mtime: s.mtimeMs, isDir: false });
  }
  return entries;
}

function copyTasks(entries: Entry[], firstId = 1): Task[] {
  return entries.map((entry, i) => ({ v: 1, id: firstId + i, op: 'copy', entry }));
}

async function expectSameFiles(src: string, dst: string, keys: string[]): Promise<void> {
  for (const key of keys) expect((await readFile(join(dst, key))).equals(await readFile(join(src, key))), key).toBe(true);
}

describe('the worker process', () => {
  it('says hello with the token, which is on neither its command line nor in its environment', async () => {
    const manager = await FakeManager.start();
    const { worker, conn, token } = await joined(manager, ['--name', 'node-7']);
    const pid = worker.child.pid!;
    expect(await readFile(`/proc/${pid}/cmdline`, 'utf8')).not.toContain(token);
    expect(await readFile(`/proc/${pid}/environ`, 'utf8')).not.toContain(token);
    conn.send({ t: 'end', reason: 'enough' });
    expect((await worker.exited).code).toBe(0);
    expect(worker.stderr()).not.toContain(token);
  });

  it('reports the worker it is in its hello', async () => {
    const manager = await FakeManager.start();
    const token = 'tok-' + randomBytes(8).toString('hex');
    const worker = startWorker(['--manager', manager.url, '--token-file', await tokenFile(token), '--name', 'slurm-3']);
    const conn = await manager.connection();
    const hello = await conn.next('hello');
    expect(hello).toMatchObject({ v: PROTOCOL_VERSION, token, worker: { pid: worker.child.pid, node: process.version, arch: process.arch, name: 'slurm-3' } });
    expect(hello.worker.ferry).toMatch(/^\d+\.\d+\.\d+/);
    conn.send({ t: 'end', reason: 'enough' });
    expect((await worker.exited).code).toBe(0);
  });

  it('runs a local-to-local job to its end: a result for every task, the same bytes on disk, exit 0', async () => {
    const src = await tempDir();
    const dst = await tempDir();
    const entries = await makeFiles(src, { 'a.txt': 10, 'b.bin': 70_000, 'd/e/f.bin': 3 << 20, 'd/g': 0, 'h.bin': 200_000 });
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager, ['-v']);
    conn.send(welcome(job(src + '/', dst + '/')));
    const tasks = copyTasks(entries);
    const results = await conn.serve(tasks);
    expect(results.map((r) => r.id).sort((a, b) => a - b)).toEqual(tasks.map((t) => t.id));
    for (const r of results) expect(r, JSON.stringify(r)).toHaveProperty('outcome.result', 'copied');
    const exit = await worker.exited;
    expect(exit.code, worker.stderr()).toBe(0);
    await expectSameFiles(src, dst, entries.map((e) => e.key));
    // Beats carry the bytes moved since the one before; the last goes out before the worker leaves.
    const beaten = conn.got.reduce((n, m) => n + (m.t === 'beat' ? m.bytes : 0), 0);
    expect(beaten).toBe(entries.reduce((n, e) => n + e.size, 0));
    expect(worker.stderr()).toMatch(/^DEBUG batch \d+: \d+ tasks?$/m);
    expect(worker.stderr()).toMatch(/^INFO no more work: done$/m);
  });

  it('copies within the limiter’s rate, and a new rate (0: no limit) applies to the rest', async () => {
    const src = await tempDir();
    const dst = await tempDir();
    // 1.6 MB at 40 kB/s would take 40 s; unlimited, a moment.
    const sizes: Record<string, number> = {};
    for (let i = 0; i < 16; i++) sizes[`f${i}`] = 100_000;
    const entries = await makeFiles(src, sizes);
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager);
    conn.send(welcome(job(src + '/', dst + '/'), { rate: 40_000, beatMs: 200 }));
    const started = Date.now();
    const serving = conn.serve(copyTasks(entries));
    await new Promise((r) => setTimeout(r, 1500));
    const moved = conn.got.reduce((n, m) => n + (m.t === 'beat' ? m.bytes : 0), 0);
    // Beats carry what moved since the previous one; the bucket's burst is 64 KiB, and each thread may be a file into debt.
    expect(moved).toBeLessThan(40_000 * 1.5 + 65_536 + 2 * 100_000);
    conn.send({ t: 'rate', rate: 0 });
    const results = await serving;
    expect(results).toHaveLength(16);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect((await worker.exited).code).toBe(0);
    await expectSameFiles(src, dst, Object.keys(sizes));
  });

  it('exits 3 with the reason when the manager refuses it', async () => {
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager);
    conn.send({ t: 'refuse', reason: 'wrong token' });
    conn.ws.close(CLOSE.badToken, 'wrong token');
    expect((await worker.exited).code).toBe(3);
    expect(worker.stderr()).toMatch(/^ERROR refused by the manager: wrong token$/m);
  });

  it('exits 3 when the manager closes with a 44xx code and no refuse message', async () => {
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager);
    conn.ws.close(CLOSE.badVersion, 'protocol version 1 is not spoken here');
    expect((await worker.exited).code).toBe(3);
    expect(worker.stderr()).toContain('refused by the manager: protocol version 1 is not spoken here');
  });

  it('exits 4 within a moment when the manager drops the connection mid-run', async () => {
    const src = await tempDir();
    const dst = await tempDir();
    await makeFiles(src, { a: 10 });
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager);
    conn.send(welcome(job(src + '/', dst + '/')));
    await conn.next('want'); // asking for work, never answered
    const at = Date.now();
    conn.ws.terminate();
    const exit = await worker.exited;
    expect(exit.code).toBe(4);
    expect(exit.at - at).toBeLessThan(2000);
    expect(worker.stderr()).toContain('the connection to the manager was lost');
  });

  it('exits 4 when the manager says nothing for deadMs', async () => {
    const src = await tempDir();
    const dst = await tempDir();
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager);
    conn.send(welcome(job(src + '/', dst + '/'), { deadMs: 600, beatMs: 100 }));
    const at = Date.now();
    await conn.next('want');
    const exit = await worker.exited;
    expect(exit.code).toBe(4);
    expect(exit.at - at).toBeGreaterThanOrEqual(500);
    expect(exit.at - at).toBeLessThan(3000);
    expect(worker.stderr()).toContain('no word from the manager for 0.6 s: it is gone');
  });

  it('stays while the manager beats, though no work comes', async () => {
    const src = await tempDir();
    const dst = await tempDir();
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager);
    conn.send(welcome(job(src + '/', dst + '/'), { deadMs: 500, beatMs: 100 }));
    const beats = setInterval(() => conn.send({ t: 'beat' }), 100);
    try {
      await new Promise((r) => setTimeout(r, 1500));
      expect(worker.child.exitCode).toBeNull();
      expect(conn.got.filter((m) => m.t === 'beat').length).toBeGreaterThanOrEqual(5);
    } finally {
      clearInterval(beats);
    }
    conn.send({ t: 'end', reason: 'over' });
    expect((await worker.exited).code).toBe(0);
  });

  it('with --token-stdin, reads the token from standard input and leaves as soon as it closes', async () => {
    const manager = await FakeManager.start();
    const token = randomBytes(16).toString('hex');
    const worker = startWorker(['--manager', manager.url, '--token-stdin'], { stdin: 'pipe' });
    worker.child.stdin!.write(token + '\n');
    const conn = await manager.connection();
    expect((await conn.next('hello')).token).toBe(token);
    expect(await readFile(`/proc/${worker.child.pid}/cmdline`, 'utf8')).not.toContain(token);
    conn.send(welcome(job((await tempDir()) + '/', (await tempDir()) + '/')));
    await conn.next('want');
    const at = Date.now();
    worker.child.stdin!.end();
    const exit = await worker.exited;
    expect(exit.code).toBe(4);
    expect(exit.at - at).toBeLessThan(2000);
    expect(worker.stderr()).toContain('standard input closed: the manager is gone');
  });

  it('stops promptly on SIGTERM (exit 143)', async () => {
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager);
    conn.send(welcome(job((await tempDir()) + '/', (await tempDir()) + '/')));
    await conn.next('want');
    const at = Date.now();
    worker.child.kill('SIGTERM');
    const exit = await worker.exited;
    expect(exit.code).toBe(143);
    expect(exit.at - at).toBeLessThan(2000);
    expect((await conn.closed).code).toBe(1001);
  });

  it('refuses bad usage with exit 2: no token, an empty token file, a manager address that is not ws://', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'empty'), '\n');
    const cases: [string[], RegExp][] = [
      [['--manager', 'ws://127.0.0.1:9'], /a token is needed/],
      [['--manager', 'ws://127.0.0.1:9', '--token-file', join(dir, 'empty')], /the token file .*empty is empty/],
      [['--manager', 'ws://127.0.0.1:9', '--token-file', join(dir, 'missing')], /cannot read the token file .*missing: ENOENT/],
      [['--manager', 'http://127.0.0.1:9', '--token-file', join(dir, 'empty')], /--manager takes ws:\/\/HOST:PORT/],
      [['--token-stdin'], /required option '--manager <URL>'/],
    ];
    for (const [args, message] of cases) {
      const worker = startWorker(args);
      expect((await worker.exited).code, args.join(' ')).toBe(2);
      expect(worker.stderr()).toMatch(message);
    }
  });

  it('exits 4 when the manager cannot be reached within --connect-timeout', async () => {
    const manager = await FakeManager.start();
    const url = manager.url;
    await manager.close();
    const t0 = performance.now();
    const worker = startWorker(['--manager', url, '--token-file', await tokenFile('t'), '--connect-timeout', '1.5']);
    expect((await worker.exited).code).toBe(4);
    expect(performance.now() - t0).toBeGreaterThan(1400);
    expect(worker.stderr()).toContain(`waiting for the manager at ${url}`);
    expect(worker.stderr()).toContain(`cannot reach the manager at ${url}`);
  });

  it('waits for a manager that starts after it (a scheduler may start workers first)', async () => {
    const probe = await FakeManager.start();
    const port = Number(new URL(probe.url).port);
    await probe.close();
    const worker = startWorker(['--manager', `ws://127.0.0.1:${port}`, '--token-file', await tokenFile('t')]);
    await new Promise((r) => setTimeout(r, 800));
    const manager = await FakeManager.start({ port });
    const conn = await manager.connection();
    expect((await conn.next('hello')).token).toBe('t');
    conn.send({ t: 'end', reason: 'test over' });
    expect((await worker.exited).code).toBe(0);
  });

  it('exits 1 on a malformed message from the manager, closing with CLOSE.badMessage', async () => {
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager);
    conn.ws.send(Buffer.from([0x81, 0xa1, 0x74, 0xa6, 0x67, 0x6f, 0x73, 0x73, 0x69, 0x70])); // {t: 'gossip'}
    expect((await worker.exited).code).toBe(1);
    expect((await conn.closed).code).toBe(CLOSE.badMessage);
    expect(worker.stderr()).toContain('unknown manager message type "gossip"');
  });

  it('tells the manager, and exits 1, when its stores do not open', async () => {
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager);
    const missing = join(await tempDir(), 'nothing-here') + '/';
    conn.send(welcome(job(missing, (await tempDir()) + '/')));
    const log = await conn.next('log');
    expect(log.level).toBe('error');
    expect(log.message).toMatch(/cannot open the stores: .*does not exist/);
    expect((await worker.exited).code).toBe(1);
  });

  it('runs as the bundle alone, without node_modules, with an empty PATH', async () => {
    const dir = join(WORKER, '..');
    expect(await readdir(dir)).toEqual(['worker.cjs']);
    const child = spawn(process.execPath, [WORKER, '--help'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: '' } });
    children.add(child);
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
    const code = await new Promise((resolve) => child.once('exit', resolve));
    expect(code).toBe(0);
    expect(out).toContain('--manager <URL>');
  });
});

describe('the worker process with S3', () => {
  let s3: S3TestServer | undefined;
  afterEach(async () => {
    await s3?.close();
    s3 = undefined;
  });

  it('copies to S3 with the credentials of its welcome, which reach neither its environment nor its logs', async () => {
    const ak = 'WORKERAK' + randomBytes(4).toString('hex').toUpperCase();
    const sk = 'worker-secret-' + randomBytes(12).toString('hex');
    s3 = await startS3Server({ credentials: { [ak]: sk } });
    await s3.createBucket('bucket');
    const src = await tempDir();
    const entries = await makeFiles(src, { 'one.bin': 1000, 'sub/two.bin': 2 << 20, 'three.bin': 0 });
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager, ['-v']);
    const dst = `s3://${s3.endpoint}/bucket/path/`;
    conn.send(welcome(job(src + '/', dst), { env: { AWS_ACCESS_KEY_ID: ak, AWS_SECRET_ACCESS_KEY: sk } }));
    const tasks = copyTasks(entries);
    const results = await conn.serve(tasks);
    for (const r of results) expect(r, JSON.stringify(r)).toHaveProperty('outcome.result', 'copied');
    expect(await readFile(`/proc/${worker.child.pid}/environ`, 'utf8').catch(() => '')).not.toContain(sk);
    expect((await worker.exited).code, worker.stderr()).toBe(0);
    expect(worker.stderr()).not.toContain(sk);

    const store = await defaultRegistry().open(parseAddress(`s3://${ak}:${encodeURIComponent(sk)}@${s3.endpoint}/bucket/path/`), { env: {} });
    try {
      for (const e of entries) {
        const chunks: Buffer[] = [];
        for await (const c of await store.get(e.key)) chunks.push(c as Buffer);
        expect(Buffer.concat(chunks).equals(await readFile(join(src, e.key))), e.key).toBe(true);
      }
    } finally {
      await store.close?.();
    }
  });

  it('reports a task’s failure as its result, keeping its code (wrong credentials)', async () => {
    s3 = await startS3Server();
    await s3.createBucket('bucket');
    const src = await tempDir();
    const entries = await makeFiles(src, { 'one.bin': 10 });
    const manager = await FakeManager.start();
    const { worker, conn } = await joined(manager);
    conn.send(welcome(job(src + '/', `s3://${s3.endpoint}/bucket/`), { env: { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'not-the-secret' } }));
    const [result] = await conn.serve(copyTasks(entries));
    expect(result).toHaveProperty('error.code', 'FERRY_PERMISSION_DENIED');
    expect((await worker.exited).code).toBe(0);
  });
});

describe('the worker as a single executable (Node SEA)', () => {
  it.runIf(process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64'))(
    'runs with an empty environment and copies with its file-system threads',
    async () => {
      const out = await tempDir();
      await promisify(execFile)(process.execPath, ['scripts/build-sea.mjs'], { env: { ...process.env, FERRY_SEA_TARGETS: process.arch, FERRY_SEA_OUT: out } });
      const exe = join(out, `ferry-worker-linux-${process.arch}`);
      const help = await promisify(execFile)(exe, ['--help'], { env: {} });
      expect(help.stdout).toContain('--manager <URL>');

      const src = await tempDir();
      const dst = await tempDir();
      const entries = await makeFiles(src, { a: 100, 'b/c': 300_000 });
      const manager = await FakeManager.start();
      const { worker, conn } = await joined(manager, [], { executable: exe, env: {} });
      conn.send(welcome(job(src + '/', dst + '/')));
      const results = await conn.serve(copyTasks(entries));
      for (const r of results) expect(r, JSON.stringify(r)).toHaveProperty('outcome.result', 'copied');
      expect((await worker.exited).code, worker.stderr()).toBe(0);
      await expectSameFiles(src, dst, ['a', 'b/c']);
    },
    120_000,
  );
});

describe('RemoteTaskSource', () => {
  const task = (id: number): Task => ({ v: 1, id, op: 'deleteDst', entry: { key: `k${id}`, size: 0, mtime: 0, isDir: false } });

  it('pairs each want with the batch of its req, in any order, and sends results', async () => {
    const sent: WorkerMessage[] = [];
    const source = new RemoteTaskSource((m) => (sent.push(m), true));
    const signal = new AbortController().signal;
    const a = source.next({ tasks: 5, bytes: 100 }, signal);
    const b = source.next({ tasks: 1, bytes: 0 }, signal);
    expect(sent).toEqual([
      { t: 'want', req: 1, tasks: 5, bytes: 100 },
      { t: 'want', req: 2, tasks: 1, bytes: 0 },
    ]);
    expect(source.deliver(2, null)).toBe(true);
    expect(source.deliver(1, { v: 1, tasks: [task(7)] })).toBe(true);
    expect(await a).toEqual({ v: 1, tasks: [task(7)] });
    expect(await b).toBeNull();
    // Answered already, or never asked.
    expect(source.deliver(1, null)).toBe(false);
    expect(source.deliver(9, null)).toBe(false);
    source.report([{ v: 1, id: 7, outcome: { result: 'deleted', bytes: 0, checked: false } }]);
    source.report([]);
    expect(sent.slice(2)).toEqual([{ t: 'results', results: [{ v: 1, id: 7, outcome: { result: 'deleted', bytes: 0, checked: false } }] }]);
  });

  it('resolves null for every waiting and later request once the socket is gone, or the signal aborts', async () => {
    const sent: WorkerMessage[] = [];
    const source = new RemoteTaskSource((m) => (sent.push(m), true));
    const abort = new AbortController();
    const a = source.next({ tasks: 1, bytes: 0 }, abort.signal);
    const b = source.next({ tasks: 1, bytes: 0 }, new AbortController().signal);
    abort.abort();
    expect(await a).toBeNull();
    source.close();
    expect(await b).toBeNull();
    expect(await source.next({ tasks: 1, bytes: 0 }, new AbortController().signal)).toBeNull();
    expect(sent).toHaveLength(2);
  });

  it('keeps at most maxInFlight wants out at once; the rest wait their turn in order', async () => {
    const sent: WorkerMessage[] = [];
    const source = new RemoteTaskSource((m) => (sent.push(m), true), 2);
    const signal = new AbortController().signal;
    const reqs = () => sent.map((m) => (m as { req: number }).req);
    const first = [1, 2, 3].map(() => source.next({ tasks: 1, bytes: 0 }, signal));
    const givenUp = new AbortController();
    const abandoned = source.next({ tasks: 1, bytes: 0 }, givenUp.signal);
    const last = source.next({ tasks: 1, bytes: 0 }, signal);
    expect(reqs()).toEqual([1, 2]);
    source.deliver(1, { v: 1, tasks: [task(1)] });
    expect(reqs()).toEqual([1, 2, 3]);
    // A queued request given up never goes out.
    givenUp.abort();
    expect(await abandoned).toBeNull();
    source.deliver(2, null);
    expect(reqs()).toEqual([1, 2, 3, 5]);
    source.deliver(3, null);
    source.deliver(5, null);
    expect((await Promise.all([...first, last])).map((b) => b?.tasks.length ?? null)).toEqual([1, null, null, null]);
  });

  it('ends every request when a want cannot be sent', async () => {
    const source = new RemoteTaskSource(() => false);
    expect(await source.next({ tasks: 1, bytes: 0 }, new AbortController().signal)).toBeNull();
    expect(source.closed).toBe(true);
  });
});
