/**
 * Join mode: `ferry sync --listen HOST:PORT --token-file F` waits for workers that a scheduler
 * starts on its own (`ferry worker --manager ws://HOST:PORT --token-file F`). The real CLI on both
 * sides, as child processes.
 */
import { promises as fsp, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FerryProcesses, until, type FerryProcess as Proc } from '../support/ferry-process.js';

const processes = new FerryProcesses();
const ferry = (args: string[], env: Record<string, string> = {}): Proc => processes.spawn(args, env);

describe('join mode: ferry sync --listen and ferry worker', () => {
  let work: string;
  let src: string;
  let tokenFile: string;
  const FILES = 60;

  beforeAll(async () => {
    work = await fsp.mkdtemp(join(tmpdir(), 'ferry-join-'));
    src = join(work, 'src');
    await fsp.mkdir(src);
    for (let i = 0; i < FILES; i++) await fsp.writeFile(join(src, `f${String(i).padStart(3, '0')}`), Buffer.alloc(32 * 1024, i));
    tokenFile = join(work, 'token');
    await fsp.writeFile(tokenFile, 'a-shared-secret-from-a-k8s-secret\n', { mode: 0o600 });
  });
  afterEach(() => processes.killAll());
  afterAll(async () => {
    await fsp.rm(work, { recursive: true, force: true });
  });

  /** The manager, waiting for workers; resolves with the port it listens on. */
  async function manager(dst: string, extra: string[] = []): Promise<{ m: Proc; url: string }> {
    const m = ferry(['sync', '--json', '--listen', '127.0.0.1:0', '--token-file', tokenFile, '--no-manager-exec', '--bwlimit', '8', '-p', '2', ...extra, src + '/', dst + '/']);
    await until('the manager to listen', () => /listening for workers at ws:\/\/127\.0\.0\.1:\d+/.test(m.err()));
    const port = /listening for workers at ws:\/\/127\.0\.0\.1:(\d+)/.exec(m.err())![1];
    return { m, url: `ws://127.0.0.1:${port}` };
  }

  it('waits for workers, gives work to one that joins late, and every worker exits when the run ends', async () => {
    const dst = join(work, 'dst1');
    const { m, url } = await manager(dst);
    // Nobody has joined: the manager waits and copies nothing itself.
    await new Promise((r) => setTimeout(r, 500));
    expect(m.err()).not.toMatch(/copied/);
    const first = ferry(['worker', '--manager', url, '--name', 'early'], { FERRY_TOKEN_FILE: tokenFile });
    await until('work to start', () => /joined/.test(m.err()));
    await new Promise((r) => setTimeout(r, 700));
    const late = ferry(['worker', '--manager', url, '--token-file', tokenFile, '--name', 'late']);
    const [code, c1, c2] = await Promise.all([m.done, first.done, late.done]);
    expect(code, m.err()).toBe(0);
    expect([c1, c2]).toEqual([0, 0]);
    const json = JSON.parse(m.out().trim());
    expect(json).toMatchObject({ found: FILES, copied: FILES, lost: 0 });
    const byHost = Object.fromEntries((json.executors as { host: string; tasks: number }[]).map((e) => [e.host, e.tasks]));
    expect(byHost['manager']).toBe(0);
    expect(byHost['early']).toBeGreaterThan(0);
    expect(byHost['late'], 'the late worker got no work').toBeGreaterThan(0);
    expect(byHost['early']! + byHost['late']!).toBe(FILES);
    for (let i = 0; i < FILES; i += 7) {
      const n = `f${String(i).padStart(3, '0')}`;
      expect(readFileSync(join(dst, n)).equals(readFileSync(join(src, n)))).toBe(true);
    }
  });

  it('refuses a worker with another token (exit 3, the reason on both sides), and a leaving worker loses its tasks to another', async () => {
    const dst = join(work, 'dst2');
    const { m, url } = await manager(dst);
    const wrong = join(work, 'wrong-token');
    await fsp.writeFile(wrong, 'guess\n');
    const intruder = ferry(['worker', '--manager', url, '--token-file', wrong]);
    expect(await intruder.done).toBe(3);
    expect(intruder.err()).toMatch(/wrong or missing token/);
    expect(m.err()).toMatch(/refused .*wrong or missing token/);

    const quitter = ferry(['worker', '--manager', url, '--token-file', tokenFile, '--name', 'quitter', '-v']);
    await until('the worker to take tasks', () => /batch \d+/.test(quitter.err()));
    quitter.child.kill('SIGKILL');
    await quitter.done;
    const stayer = ferry(['worker', '--manager', url, '--token-file', tokenFile, '--name', 'stayer']);
    expect(await m.done, m.err()).toBe(0);
    expect(await stayer.done).toBe(0);
    const json = JSON.parse(m.out().trim());
    expect(json).toMatchObject({ copied: FILES, lost: 0 });
    expect((json.executors as { host: string; leasesLost: number }[]).find((e) => e.host === 'quitter')!.leasesLost).toBe(1);
  });

  it('refuses --listen without a token file, and an empty token file, as usage errors', async () => {
    const a = ferry(['sync', '--listen', '127.0.0.1:0', src + '/', join(work, 'x') + '/']);
    expect(await a.done).toBe(2);
    expect(a.err()).toMatch(/--listen needs --token-file/);
    const empty = join(work, 'empty');
    await fsp.writeFile(empty, '');
    const b = ferry(['sync', '--listen', '127.0.0.1:0', '--token-file', empty, src + '/', join(work, 'x') + '/']);
    expect(await b.done).toBe(2);
    expect(b.err()).toMatch(/token file .* is empty/);
  });
});
