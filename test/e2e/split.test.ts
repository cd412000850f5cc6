/**
 * Split copies end to end: a 1 GiB file copied to S3 (the project's S3 test server) as parts that
 * three join-mode workers upload at once — the real CLI on every side, as child processes — arrives
 * byte-identical, also when one worker is killed in the middle of a part; a part that keeps
 * failing aborts the upload. No multipart upload is ever left open.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseAddress } from '../../src/shared/storage/address.js';
import { defaultRegistry } from '../../src/shared/storage/all.js';
import { FaultProxy } from '../support/fault-proxy.js';
import { FerryProcesses, until, type FerryProcess as Proc } from '../support/ferry-process.js';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';
import { ferry as ferryInProcess } from '../manager/cli-harness.js';

const MiB = 1 << 20;
const GiB = 1024 * MiB;
const BUCKET = 'split';
const processes = new FerryProcesses();
const ferry = (args: string[]): Proc => processes.spawn(args);

/**
 * A file of `size` bytes in which every 4 KiB carries its own offset, so that a part stored in the
 * wrong place, or twice, changes the digest; written in 1 MiB blocks. Returns its SHA-256.
 */
async function writePatternFile(path: string, size: number): Promise<string> {
  const base = Buffer.alloc(MiB);
  for (let i = 0; i < MiB; i += 4) base.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ 0x5bd1e995) >>> 0, i);
  const h = createHash('sha256');
  const f = await fsp.open(path, 'w');
  try {
    for (let off = 0; off < size; off += MiB) {
      const block = Buffer.from(base.subarray(0, Math.min(MiB, size - off)));
      for (let i = 0; i + 8 <= block.length; i += 4096) block.writeDoubleLE(off + i, i);
      h.update(block);
      await f.write(block);
    }
  } finally {
    await f.close();
  }
  return h.digest('hex');
}

async function sha256(stream: AsyncIterable<Buffer | Uint8Array>): Promise<string> {
  const h = createHash('sha256');
  for await (const c of stream) h.update(c);
  return h.digest('hex');
}

describe('split copies: one large object, parts uploaded by several executors', () => {
  let work: string;
  let s3: S3TestServer;
  let tokenFile: string;
  let bigSha: string;
  const registry = defaultRegistry();
  const s3Addr = (endpoint: string, path: string) => `s3://S3RVER:S3RVER@${endpoint}/${BUCKET}/${path}`;

  /** The destination object's SHA-256, read back through the S3 API. */
  async function stored(path: string, key: string): Promise<string> {
    const store = await registry.open(parseAddress(s3Addr(s3.endpoint, path)));
    try {
      return await sha256(await store.get(key));
    } finally {
      await store.close?.();
    }
  }

  beforeAll(async () => {
    work = await fsp.mkdtemp(join(tmpdir(), 'ferry-split-'));
    await fsp.mkdir(join(work, 'src'));
    bigSha = await writePatternFile(join(work, 'src', 'big.bin'), GiB);
    tokenFile = join(work, 'token');
    await fsp.writeFile(tokenFile, 'split-test-token\n', { mode: 0o600 });
    s3 = await startS3Server();
    await s3.createBucket(BUCKET);
  }, 120_000);
  afterEach(() => processes.killAll());
  afterAll(async () => {
    await s3?.close();
    await fsp.rm(work, { recursive: true, force: true });
  });

  /** The manager, waiting for workers that join; resolves once it listens. */
  async function manager(dstPath: string, extra: string[] = []): Promise<{ m: Proc; url: string }> {
    const m = ferry(['sync', '--json', '--listen', '127.0.0.1:0', '--token-file', tokenFile, '--no-manager-exec', '--split-size', '64M', '-p', '2', ...extra, join(work, 'src') + '/', s3Addr(s3.endpoint, dstPath)]);
    await until('the manager to listen', () => /listening for workers at ws:\/\/127\.0\.0\.1:\d+/.test(m.err()), 30_000);
    const port = /listening for workers at ws:\/\/127\.0\.0\.1:(\d+)/.exec(m.err())![1];
    return { m, url: `ws://127.0.0.1:${port}` };
  }

  const worker = (url: string, name: string) => ferry(['worker', '--manager', url, '--token-file', tokenFile, '--name', name, '-v']);

  type ExecutorJson = { host: string; tasks: number; parts: number; copiedObjects: number; leasesLost: number };
  const executors = (json: { executors: ExecutorJson[] }) => Object.fromEntries(json.executors.map((e) => [e.host, e]));

  it('three workers each upload parts of a 1 GiB object; it arrives byte-identical, counted once, with no upload left open', async () => {
    const { m, url } = await manager('three/');
    const workers = ['w1', 'w2', 'w3'].map((n) => worker(url, n));
    const code = await m.done;
    expect(code, m.err()).toBe(0);
    expect(await Promise.all(workers.map((w) => w.done))).toEqual([0, 0, 0]);
    const json = JSON.parse(m.out().trim());
    expect(json).toMatchObject({ found: 1, copied: 1, copiedBytes: GiB, failed: 0, lost: 0, exitCode: 0 });
    const by = executors(json);
    for (const name of ['w1', 'w2', 'w3']) {
      expect(by[name]!.parts, `${name} uploaded no part\n${m.err()}`).toBeGreaterThan(0);
      expect(by[name]!.tasks).toBe(by[name]!.parts);
    }
    expect(by['manager']).toMatchObject({ tasks: 0, parts: 0 });
    // 1 GiB in parts of 64 MiB.
    expect(by['w1']!.parts + by['w2']!.parts + by['w3']!.parts).toBe(16);
    expect(await stored('three/', 'big.bin')).toBe(bigSha);
    expect(await s3.pendingUploads(BUCKET)).toBe(0);
  }, 300_000);

  it('a worker killed (kill -9) in the middle of a part loses nothing: its part goes to another, the object arrives whole', async () => {
    // Slowed down (800 Mbit/s for the whole cluster) so that a part takes seconds, and the kill lands mid-part.
    const { m, url } = await manager('killed/', ['--bwlimit', '800']);
    const [w1, w2, w3] = ['w1', 'w2', 'w3'].map((n) => worker(url, n));
    await until('w1 to take a part', () => /batch \d+: 1 task/.test(w1!.err()), 30_000);
    await new Promise((r) => setTimeout(r, 300));
    w1!.child.kill('SIGKILL');
    expect(await m.done, m.err()).toBe(0);
    expect(await Promise.all([w2!.done, w3!.done])).toEqual([0, 0]);
    const json = JSON.parse(m.out().trim());
    expect(json).toMatchObject({ found: 1, copied: 1, copiedBytes: GiB, failed: 0, lost: 0 });
    const by = executors(json);
    // It held a part and finished none: the part it was uploading went to another worker.
    expect(by['w1']).toMatchObject({ leasesLost: 1, parts: 0 });
    expect(m.err()).toMatch(/worker w\d \[w1\] disconnected/);
    expect(by['w2']!.parts + by['w3']!.parts).toBeGreaterThan(0);
    expect(await stored('killed/', 'big.bin')).toBe(bigSha);
    expect(await s3.pendingUploads(BUCKET)).toBe(0);
  }, 300_000);

  it('a part that keeps failing fails the key once and aborts the upload: nothing stored, no upload left open', async () => {
    await fsp.mkdir(join(work, 'small'));
    await writePatternFile(join(work, 'small', 'obj.bin'), 20 * MiB + 5);
    const proxy = await FaultProxy.start({ port: s3.port });
    try {
      // Part 2 of every upload: 500 InternalError, for every attempt.
      proxy.respond(
        { status: 500, body: '<Error><Code>InternalError</Code><Message>injected</Message></Error>', match: (r) => r.method === 'PUT' && r.query.get('partNumber') === '2' },
        1000,
      );
      const r = await ferryInProcess(['sync', '--json', '--split-size', '8M', join(work, 'small') + '/', s3Addr(proxy.endpoint, 'failing/')], { registry });
      expect(r.code, r.stderr).toBe(1);
      expect(r.json).toMatchObject({ found: 1, copied: 0, failed: 1, lost: 0 });
      expect(r.stderr).toMatch(/failed to copy "obj\.bin": s3 UploadPart #2 .*\[FERRY_TRANSIENT\]/);
      const tried = proxy.requests.filter((q) => q.query.get('partNumber') === '2');
      expect(tried.length).toBe(5); // the retry policy's attempts
      expect(proxy.requests.some((q) => q.method === 'DELETE' && q.query.has('uploadId'))).toBe(true);
      expect(await s3.pendingUploads(BUCKET)).toBe(0);
      const store = await registry.open(parseAddress(s3Addr(s3.endpoint, 'failing/')));
      await expect(store.head('obj.bin')).rejects.toMatchObject({ code: 'FERRY_NOT_FOUND' });
      await store.close?.();
    } finally {
      await proxy.close();
    }
  }, 120_000);
});
