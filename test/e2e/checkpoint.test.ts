/**
 * Resumable runs (`--enable-checkpoint`): a manager killed with SIGKILL mid-run, then the same
 * command again. The rerun must not list finished prefixes again, must not write a finished object
 * again (counted at the s3 test server), and must leave the destination byte-identical — alone and
 * with workers, for local → local, local → s3 and s3 → s3.
 */
import { promises as fsp, readFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { defaultRegistry } from '../../src/shared/storage/all.js';
import { FerryProcesses, until, type FerryProcess as Proc } from '../support/ferry-process.js';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';

const DIRS = 10;
const PER_DIR = 12;
const FILES = DIRS * PER_DIR;
const processes = new FerryProcesses();
const ferry = (args: string[]): Proc => processes.spawn(args);

const copiedLines = (p: Proc) => p.err().split('\n').filter((l) => l.startsWith('copied '));
const files = (d: string, p = ''): string[] =>
  readdirSync(join(d, p)).flatMap((n) => (n === '.ferry' ? [] : statSync(join(d, p, n)).isDirectory() ? files(d, join(p, n)) : [join(p, n)]));

describe('--enable-checkpoint: a killed manager resumes', () => {
  let work: string;
  let src: string;
  let s3: S3TestServer;
  let n = 0;

  beforeAll(async () => {
    // A second account: s3 → s3 between accounts streams the bytes (no server-side copy), so --bwlimit slows it.
    s3 = await startS3Server({ credentials: { READER: 'reader-secret' } });
    work = await fsp.mkdtemp(join(tmpdir(), 'ferry-checkpoint-'));
    src = join(work, 'src');
    for (let d = 0; d < DIRS; d++) {
      await fsp.mkdir(join(src, `d${d}`), { recursive: true });
      for (let f = 0; f < PER_DIR; f++) await fsp.writeFile(join(src, `d${d}`, `f${f}`), Buffer.alloc(12_000 + d * 100 + f, d * PER_DIR + f));
    }
  });
  afterEach(() => processes.killAll());
  afterAll(async () => {
    await s3?.close();
    if (work) await fsp.rm(work, { recursive: true, force: true });
  });

  const s3Addr = (bucket: string) => `s3://S3RVER:S3RVER@${s3.endpoint}/${bucket}/data/`;

  /** Run 1, slowed down, killed with SIGKILL once a checkpoint is written and some keys are copied. */
  async function killedRun(args: string[], checkpointWritten: () => boolean): Promise<Proc> {
    const p = ferry(['sync', '-v', '--enable-checkpoint', '--checkpoint-interval', '1s', '--bwlimit', '1.2', '-p', '2', ...args]);
    await until('a checkpoint after some copies', () => copiedLines(p).length >= FILES / 3 && checkpointWritten(), 30_000);
    // Let one more checkpoint land after those copies.
    await new Promise((r) => setTimeout(r, 1200));
    p.child.kill('SIGKILL');
    await p.done;
    expect(copiedLines(p).length).toBeLessThan(FILES);
    return p;
  }
  const localCheckpoint = (dst: string) => () => existsSync(join(dst, '.ferry')) && readdirSync(join(dst, '.ferry')).some((f) => f.startsWith('checkpoint-'));
  const s3Checkpoint = (bucket: string) => () => [...s3.writes.keys()].some((k) => k.startsWith(`${bucket}/data/.ferry/checkpoint-`));

  /** Run 2: the same command (faster: bandwidth does not change what a checkpoint is for). */
  async function rerun(args: string[]): Promise<{ p: Proc; json: Record<string, number> }> {
    const p = ferry(['sync', '-v', '--json', '--enable-checkpoint', '--checkpoint-interval', '1s', '-p', '4', ...args]);
    expect(await p.done, p.err()).toBe(0);
    expect(p.err()).toMatch(/resuming the run checkpointed at .*: every key before "d\d+\//);
    return { p, json: JSON.parse(p.out().trim()) };
  }

  it('local → local: no finished prefix listed again, no finished file copied again, byte-identical, checkpoint removed', async () => {
    const dst = join(work, `dst${++n}`);
    await killedRun([src + '/', dst + '/'], localCheckpoint(dst));
    // Finished: the content and the modification time are there (a file renamed into place whose
    // time was not set yet when the run was killed is not finished, and is copied again).
    const finished = (f: string) => readFileSync(join(dst, f)).equals(readFileSync(join(src, f))) && Math.abs(statSync(join(dst, f)).mtimeMs - statSync(join(src, f)).mtimeMs) < 1;
    const before = new Set(files(dst).filter(finished));
    const { p, json } = await rerun([src + '/', dst + '/']);
    const again = copiedLines(p).map((l) => / (\S+) \(/.exec(l)![1]!);
    for (const k of again) expect(before.has(k), `${k} was finished and copied again`).toBe(false);
    expect(json['found']).toBeLessThan(FILES);
    expect(json['copied']).toBeLessThanOrEqual(FILES - before.size);
    expect(json['copied']).toBeGreaterThanOrEqual(FILES - before.size - 2);
    expect(files(dst).sort()).toEqual(files(src).sort());
    for (const f of files(src)) expect(readFileSync(join(dst, f)).equals(readFileSync(join(src, f))), f).toBe(true);
    expect(readdirSync(join(dst, '.ferry')).filter((f) => f.startsWith('checkpoint-'))).toEqual([]);
  });

  /** Every data object of `bucket` was written exactly once over both runs. */
  function writtenOnce(bucket: string): void {
    const data = [...s3.writes].filter(([k]) => k.startsWith(`${bucket}/data/`) && !k.includes('/.ferry/'));
    expect(data.length).toBe(FILES);
    for (const [k, count] of data) expect(count, `${k} written ${count} times`).toBe(1);
  }

  async function expectBucketEquals(bucket: string): Promise<void> {
    const back = join(work, `back${++n}`);
    const r = ferry(['sync', '--json', s3Addr(bucket), back + '/']);
    expect(await r.done, r.err()).toBe(0);
    expect(files(back).sort()).toEqual(files(src).sort());
    for (const f of files(src)) expect(readFileSync(join(back, f)).equals(readFileSync(join(src, f))), f).toBe(true);
    const store = await defaultRegistry().open(s3Addr(bucket));
    const left: string[] = [];
    for await (const page of store.list({ prefix: '.ferry/' })) left.push(...page.map((e) => e.key));
    expect(left).toEqual([]);
  }

  it('local → s3: the rerun writes no finished object again (counted at the server)', async () => {
    const bucket = `ckpt${++n}`;
    await s3.createBucket(bucket);
    await killedRun([src + '/', s3Addr(bucket)], s3Checkpoint(bucket));
    const { json } = await rerun([src + '/', s3Addr(bucket)]);
    expect(json['found']).toBeLessThan(FILES);
    writtenOnce(bucket);
    await expectBucketEquals(bucket);
  });

  it('s3 → s3: the same', async () => {
    const from = `from${++n}`;
    const bucket = `ckpt${++n}`;
    await s3.createBucket(from);
    await s3.createBucket(bucket);
    const seed = ferry(['sync', src + '/', s3Addr(from)]);
    expect(await seed.done, seed.err()).toBe(0);
    const reader = `s3://READER:reader-secret@${s3.endpoint}/${from}/data/`;
    await killedRun([reader, s3Addr(bucket)], s3Checkpoint(bucket));
    const { json } = await rerun([reader, s3Addr(bucket)]);
    expect(json['found']).toBeLessThan(FILES);
    writtenOnce(bucket);
    await expectBucketEquals(bucket);
  });

  it('with workers (join mode): the manager killed, then the same command with new workers', async () => {
    const bucket = `ckpt${++n}`;
    await s3.createBucket(bucket);
    const token = join(work, 'token');
    await fsp.writeFile(token, 'checkpoint-test-token\n');
    const args = ['--listen', '127.0.0.1:0', '--token-file', token, '--no-manager-exec', src + '/', s3Addr(bucket)];
    const workersFor = async (p: Proc): Promise<Proc[]> => {
      await until('the manager to listen', () => /listening for workers at (ws:\/\/\S+)/.test(p.err()));
      const url = /listening for workers at (ws:\/\/\S+)/.exec(p.err())![1]!;
      return [1, 2].map((i) => ferry(['worker', '--manager', url, '--token-file', token, '--name', `w${i}`]));
    };
    const first = ferry(['sync', '-v', '--enable-checkpoint', '--checkpoint-interval', '1s', '--bwlimit', '1.2', '-p', '2', ...args]);
    const w1 = await workersFor(first);
    await until('a checkpoint after some copies', () => copiedLines(first).length >= FILES / 3 && s3Checkpoint(bucket)(), 30_000);
    await new Promise((r) => setTimeout(r, 1200));
    first.child.kill('SIGKILL');
    // Their manager gone, the workers leave on their own (exit 4).
    expect(await Promise.all(w1.map((w) => w.done))).toEqual([4, 4]);
    const second = ferry(['sync', '-v', '--json', '--enable-checkpoint', '--checkpoint-interval', '1s', '-p', '4', ...args]);
    const w2 = await workersFor(second);
    expect(await second.done, second.err()).toBe(0);
    expect(await Promise.all(w2.map((w) => w.done))).toEqual([0, 0]);
    expect(second.err()).toMatch(/resuming the run checkpointed/);
    expect(JSON.parse(second.out().trim())['lost']).toBe(0);
    writtenOnce(bucket);
    await expectBucketEquals(bucket);
  });
});

describe('--enable-checkpoint: a split copy continues its multipart upload', () => {
  const MiB = 1 << 20;
  const SIZE = 48 * MiB; // six parts of 8 MiB
  let work: string;
  let src: string;
  let s3: S3TestServer;
  let n = 0;

  beforeAll(async () => {
    s3 = await startS3Server();
    work = await fsp.mkdtemp(join(tmpdir(), 'ferry-checkpoint-split-'));
    src = join(work, 'src');
    await fsp.mkdir(src);
    const big = Buffer.alloc(SIZE);
    // Every 4 KiB carries its offset: a part stored in the wrong place or twice changes the bytes.
    for (let off = 0; off < SIZE; off += 4096) big.writeDoubleLE(off, off);
    await fsp.writeFile(join(src, 'big.bin'), big);
  });
  afterEach(() => processes.killAll());
  afterAll(async () => {
    await s3?.close();
    if (work) await fsp.rm(work, { recursive: true, force: true });
  });

  const dstAddr = (bucket: string) => `s3://S3RVER:S3RVER@${s3.endpoint}/${bucket}/data/`;
  const SPLIT = ['--enable-checkpoint', '--checkpoint-interval', '1s', '--split-size', '8M'];

  /** The checkpoint's recorded upload of big.bin, read through the S3 API (undefined until there is one). */
  async function recorded(bucket: string): Promise<{ uploadId: string; parts: number[] } | undefined> {
    const store = await defaultRegistry().open(dstAddr(bucket));
    try {
      for await (const page of store.list({ prefix: '.ferry/checkpoint-' })) {
        for (const e of page) {
          let text = '';
          for await (const c of await store.get(e.key)) text += c;
          const u = (JSON.parse(text) as { uploads?: { key: string; upload: { uploadId: string }; parts: { partNumber: number }[] }[] }).uploads?.find((x) => x.key === 'big.bin');
          if (u) return { uploadId: u.upload.uploadId, parts: u.parts.map((p) => p.partNumber) };
        }
      }
    } catch {
      // not written yet, or being replaced
    } finally {
      await store.close?.();
    }
    return undefined;
  }

  async function stored(bucket: string): Promise<Buffer> {
    const store = await defaultRegistry().open(dstAddr(bucket));
    try {
      const chunks: Buffer[] = [];
      for await (const c of await store.get('big.bin')) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    } finally {
      await store.close?.();
    }
  }

  const partsOf = (bucket: string) => new Map([...s3.partWrites].filter(([k]) => k.startsWith(`${bucket}/data/big.bin#`)).map(([k, v]) => [Number(k.split('#')[1]), v]));

  it('kill -9 mid-upload, then the same command: the parts the checkpoint recorded are not uploaded again; the object is byte-identical; no upload is left open', async () => {
    const bucket = `split${++n}`;
    await s3.createBucket(bucket);
    const first = ferry(['sync', '-v', ...SPLIT, '--bwlimit', '60', '-p', '2', src + '/', dstAddr(bucket)]);
    let kept: { uploadId: string; parts: number[] } | undefined;
    await until('a checkpoint recording two stored parts', async () => ((kept = await recorded(bucket)), (kept?.parts.length ?? 0) >= 2), 60_000);
    first.child.kill('SIGKILL');
    await first.done;
    kept = await recorded(bucket);
    expect(kept!.parts.length).toBeLessThan(6);
    const before = partsOf(bucket);
    const second = ferry(['sync', '-v', '--json', ...SPLIT, '-p', '4', src + '/', dstAddr(bucket)]);
    expect(await second.done, second.err()).toBe(0);
    expect(second.err()).toMatch(/1 multipart upload of the interrupted run continue from the \d+ parts already stored/);
    const after = partsOf(bucket);
    for (const p of kept!.parts) expect(after.get(p), `part ${p} was stored and uploaded again`).toBe(before.get(p));
    // Every other part went up in the rerun (once, as the kill found them, at most once more).
    for (let p = 1; p <= 6; p++) if (!kept!.parts.includes(p)) expect(after.get(p)! - (before.get(p) ?? 0)).toBe(1);
    expect(s3.writes.get(`${bucket}/data/big.bin`)).toBe(1);
    expect((await stored(bucket)).equals(await fsp.readFile(join(src, 'big.bin')))).toBe(true);
    expect(await s3.pendingUploads(bucket)).toBe(0);
    expect(JSON.parse(second.out().trim())).toMatchObject({ copied: 1, failed: 0, lost: 0 });
  }, 120_000);

  it('Ctrl-C keeps the upload open for the rerun instead of aborting it; a rerun after the source changed aborts it and copies anew', async () => {
    const bucket = `split${++n}`;
    await s3.createBucket(bucket);
    const first = ferry(['sync', '-v', ...SPLIT, '--bwlimit', '60', '-p', '2', src + '/', dstAddr(bucket)]);
    await until('two parts stored', () => [...partsOf(bucket).values()].length >= 2, 60_000);
    first.child.kill('SIGINT');
    expect(await first.done).toBe(130);
    expect(first.err()).toMatch(/progress kept in/);
    const kept = await recorded(bucket);
    expect(kept!.parts.length).toBeGreaterThanOrEqual(2);
    expect(await s3.pendingUploads(bucket)).toBe(1);
    // The source changes: the kept parts are of another version, and must not be used.
    const changed = Buffer.alloc(SIZE, 7);
    const original = await fsp.readFile(join(src, 'big.bin'));
    await fsp.writeFile(join(src, 'big.bin'), changed);
    try {
      const second = ferry(['sync', '-v', '--json', ...SPLIT, '-p', '4', src + '/', dstAddr(bucket)]);
      expect(await second.done, second.err()).toBe(0);
      expect((await stored(bucket)).equals(changed)).toBe(true);
      expect(await s3.pendingUploads(bucket)).toBe(0);
    } finally {
      await fsp.writeFile(join(src, 'big.bin'), original);
    }
  }, 120_000);
});
