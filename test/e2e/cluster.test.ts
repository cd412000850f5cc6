/**
 * Cluster mode end to end: the real CLI as the manager (a child process, so it can be killed),
 * workers deployed over SSH to separate hosts (network namespaces, each with its own sshd), the
 * s3 test server on the bridge that every host reaches. What a user cares about: the data arrives
 * byte-identical, every key is counted once whatever happens to a worker, no secret reaches a
 * worker host but over the SSH channel, and no process of ours is left on any host.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostsUnavailable, startHosts, warnIfHostsUnavailable, type TestHost, type TestHosts } from '../support/hosts.js';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';

const FERRY = join(__dirname, '..', '..', 'bin', 'ferry.js');
/** Credentials given to the manager in its environment only: they must never show on a worker host. */
const AK = 'FERRYCLUSTERKEY';
const SK = 'cluster-secret-3f9c2d7a61e04b58';

interface Run {
  child: ChildProcess;
  stderr: () => string;
  done: Promise<{ code: number | null; json: Record<string, any> | undefined; stderr: string }>;
}

describe.skipIf(hostsUnavailable)('cluster mode over SSH (hosts in network namespaces)', () => {
  let hosts: TestHosts;
  let s3: S3TestServer;
  let work: string;
  let src: string;
  let bucketN = 0;
  const FILES = 160;
  const SIZE = 48 * 1024;

  beforeAll(async () => {
    hosts = await startHosts(3);
    s3 = await startS3Server({ address: hosts.bridgeIp, credentials: { [AK]: SK } });
    work = await fsp.mkdtemp(join(tmpdir(), 'ferry-cluster-'));
    src = join(work, 'src');
    for (let i = 0; i < FILES; i++) {
      const dir = join(src, `d${i % 8}`);
      await fsp.mkdir(dir, { recursive: true });
      const data = Buffer.alloc(SIZE + i, i % 251);
      data.write(`file ${i}`);
      await fsp.writeFile(join(dir, `f${i}.bin`), data);
    }
  }, 60_000);

  it('syncs local → local with workers (every host sees the same file system here) and caches the worker on each host', async () => {
    const small = join(work, 'small');
    for (let i = 0; i < 20; i++) await fsp.mkdir(join(small, `d${i % 3}`), { recursive: true }).then(() => fsp.writeFile(join(small, `d${i % 3}`, `f${i}`), `data ${i}`));
    const out = join(work, 'small-copy');
    const r = await ferry(['sync', '--json', '--no-manager-exec', '--dirs', ...workerFlag(...hosts.hosts), small + '/', out + '/']).done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ found: 23, copied: 23, lost: 0 });
    for (let i = 0; i < 20; i++) expect(readFileSync(join(out, `d${i % 3}`, `f${i}`), 'utf8')).toBe(`data ${i}`);
    // Each host got the worker once, in its own cache.
    for (const h of hosts.hosts) expect(readdirSync(join(h.cacheDir, 'ferry'))).toHaveLength(1);
    await noWorkersLeft(hosts.hosts);
  });

  afterAll(async () => {
    await s3?.close();
    await hosts?.close();
    if (work) await fsp.rm(work, { recursive: true, force: true });
  });

  async function bucket(): Promise<string> {
    const name = `c${++bucketN}`;
    await s3.createBucket(name);
    return name;
  }

  const s3Addr = (b: string) => `s3://${s3.endpoint}/${b}/data/`;

  function ferry(args: string[], extraEnv: Record<string, string> = {}): Run {
    let err = '';
    let out = '';
    const child = spawn(process.execPath, [FERRY, ...args], {
      env: { PATH: process.env['PATH'] ?? '', HOME: hosts.clientFiles.home, AWS_ACCESS_KEY_ID: AK, AWS_SECRET_ACCESS_KEY: SK, ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    const done = new Promise<{ code: number | null; json: Record<string, any> | undefined; stderr: string }>((resolve) =>
      child.on('close', (code) => {
        let json: Record<string, any> | undefined;
        try {
          json = JSON.parse(out.trim().split('\n').pop() ?? '');
        } catch {
          json = undefined;
        }
        resolve({ code, json, stderr: err });
      }),
    );
    return { child, stderr: () => err, done };
  }

  const workerFlag = (...hs: TestHost[]) => ['--worker', hs.map((h) => h.sshAddr).join(',')];

  /** Worker processes of ours running on a host. */
  async function workersOn(h: TestHost): Promise<number[]> {
    const out: number[] = [];
    for (const pid of await hosts.pids(h)) {
      const cmd = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmd.includes('ferry') && cmd.includes('--manager')) out.push(pid);
    }
    return out;
  }

  async function until(what: string, test: () => Promise<boolean> | boolean, ms = 15_000): Promise<void> {
    const end = Date.now() + ms;
    while (!(await test())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async function noWorkersLeft(hs: TestHost[], ms = 15_000): Promise<void> {
    await until('every worker process to exit', async () => (await Promise.all(hs.map(workersOn))).every((p) => p.length === 0), ms);
  }

  /** Sync the bucket back to a fresh directory on this machine and compare every file with the source. */
  async function expectIdentical(b: string): Promise<void> {
    const back = await fsp.mkdtemp(join(work, 'back-'));
    const r = await ferry(['sync', '--no-https', '--json', '-q', s3Addr(b), back + '/']).done;
    expect(r.code, r.stderr).toBe(0);
    const files = (d: string, p = ''): string[] =>
      readdirSync(join(d, p)).flatMap((n) => (statSync(join(d, p, n)).isDirectory() ? files(d, join(p, n)) : [join(p, n)]));
    const want = files(src).sort();
    expect(files(back).sort()).toEqual(want);
    for (const f of want) expect(readFileSync(join(back, f)).equals(readFileSync(join(src, f))), f).toBe(true);
  }

  it('two workers and the manager share a local → s3 sync; the data is byte-identical and each key counted once', async () => {
    const [h1, h2] = hosts.hosts;
    const b = await bucket();
    // A cluster-wide bandwidth limit keeps the run long enough for both workers to join.
    const r = await ferry(['sync', '--no-https', '--json', '-v', '--bwlimit', '8', '-p', '4', ...workerFlag(h1!, h2!), src + '/', s3Addr(b)]).done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ found: FILES, copied: FILES, failed: 0, lost: 0, exitCode: 0 });
    const executors = r.json!['executors'] as { id: string; host: string; tasks: number; copiedObjects: number }[];
    expect(executors.map((e) => e.host).sort()).toEqual(['manager', h1!.sshAddr, h2!.sshAddr].sort());
    for (const e of executors) expect(e.tasks, `${e.host} did no work`).toBeGreaterThan(0);
    expect(executors.reduce((n, e) => n + e.copiedObjects, 0)).toBe(FILES);
    await expectIdentical(b);
    // The worker's log lines came back prefixed with their host.
    expect(r.stderr).toContain(`[${h1!.sshAddr}]`);
    await noWorkersLeft([h1!, h2!]);
  });

  it('with --manager-addr, workers connect straight to the manager', async () => {
    const [h3] = [hosts.hosts[2]!];
    const b = await bucket();
    const r = await ferry(['sync', '--no-https', '--json', '-v', '--no-manager-exec', '--manager-addr', `${hosts.bridgeIp}:0`, ...workerFlag(h3), src + '/', s3Addr(b)]).done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ copied: FILES, lost: 0 });
    expect(r.stderr).toMatch(new RegExp(`connected to the manager at ws://${hosts.bridgeIp.replace(/\./g, '\\.')}:\\d+`));
    await expectIdentical(b);
  });

  it('puts no credential in a worker host: not on a command line, not in an environment, not in any file of its cache', async () => {
    const [h1] = hosts.hosts;
    const b = await bucket();
    const run = ferry(['sync', '--no-https', '--json', '--bwlimit', '8', ...workerFlag(h1!), src + '/', s3Addr(b)]);
    let checked = 0;
    await until('the worker to start', async () => (await workersOn(h1!)).length > 0);
    for (const pid of await hosts.pids(h1!)) {
      for (const what of ['cmdline', 'environ']) {
        const text = await fsp.readFile(`/proc/${pid}/${what}`, 'utf8').catch(() => '');
        expect(text, `/proc/${pid}/${what}`).not.toContain(SK);
        checked++;
      }
    }
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    expect(checked).toBeGreaterThan(2);
    const cache = join(h1!.cacheDir, 'ferry');
    const all = (d: string): string[] => readdirSync(d).flatMap((n) => (statSync(join(d, n)).isDirectory() ? all(join(d, n)) : [join(d, n)]));
    const cached = all(cache);
    expect(cached.length).toBeGreaterThan(0);
    for (const f of cached) expect(readFileSync(f).includes(SK), f).toBe(false);
    expect(r.stderr).not.toContain(SK);
  });

  it('a worker killed with SIGKILL mid-run loses nothing: the run completes, exit 0, each key counted once', async () => {
    const [h1, h2] = hosts.hosts;
    const b = await bucket();
    const run = ferry(['sync', '--no-https', '--json', '-v', '--bwlimit', '16', '-p', '4', '--no-manager-exec', ...workerFlag(h1!, h2!), src + '/', s3Addr(b)]);
    // Killed while it holds tasks: it has taken a batch.
    await until('the first worker to take tasks', () => run.stderr().includes(`[${h1!.sshAddr}] batch`));
    const victims = await workersOn(h1!);
    expect(victims.length).toBeGreaterThan(0);
    for (const pid of victims) process.kill(pid, 'SIGKILL');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ found: FILES, copied: FILES, failed: 0, lost: 0 });
    const executors = r.json!['executors'] as { host: string; tasks: number; leasesLost: number }[];
    expect(executors.reduce((n, e) => n + e.tasks, 0)).toBe(FILES);
    expect(executors.find((e) => e.host === h1!.sshAddr)!.leasesLost).toBe(1);
    await expectIdentical(b);
    await noWorkersLeft([h1!, h2!]);
  });

  it('a frozen worker (SIGSTOP, still connected) loses its tasks when its heartbeats stop; they finish elsewhere', async () => {
    const [h1, h2] = hosts.hosts;
    const b = await bucket();
    const run = ferry(['sync', '--no-https', '--json', '-v', '--bwlimit', '12', '-p', '4', '--no-manager-exec', '--heartbeat-timeout', '2', ...workerFlag(h1!, h2!), src + '/', s3Addr(b)]);
    // Frozen while it holds tasks: it has taken a batch.
    await until('the second worker to take tasks', () => run.stderr().includes(`[${h2!.sshAddr}] batch`));
    const frozen = await workersOn(h2!);
    for (const pid of frozen) process.kill(pid, 'SIGSTOP');
    let r: Awaited<Run['done']>;
    try {
      r = await run.done;
    } finally {
      for (const pid of frozen) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // gone already
        }
      }
    }
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ found: FILES, copied: FILES, lost: 0 });
    expect(r.stderr).toMatch(/has been silent/);
    await expectIdentical(b);
    // Thawed, it finds its connection gone and exits.
    await noWorkersLeft([h1!, h2!]);
  });

  it('names an unreachable host and a host whose key changed, and goes on without them', async () => {
    const [h1, h2] = hosts.hosts;
    const b = await bucket();
    const home = await fsp.mkdtemp(join(work, 'home-'));
    await fsp.cp(hosts.clientFiles.home, home, { recursive: true });
    // h2 presents another key than the one on record: someone in the middle, or a reinstall.
    const other = hosts.hosts[2]!.knownHostLine.split(' ').slice(1).join(' ');
    const known = join(home, '.ssh', 'known_hosts');
    const lines = readFileSync(known, 'utf8').split('\n').map((l) => (l.startsWith(h2!.ip + ' ') ? `${h2!.ip} ${other}` : l));
    await fsp.writeFile(known, lines.join('\n'));
    await fsp.appendFile(join(home, '.ssh', 'config'), `\nHost ${hosts.unusedIp}\n  ConnectTimeout 3\n`);
    const r = await ferry(['sync', '--no-https', '--json', '--bwlimit', '12', '--worker', `root@${hosts.unusedIp},${h2!.sshAddr},${h1!.sshAddr}`, src + '/', s3Addr(b)], { HOME: home }).done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ copied: FILES, lost: 0 });
    expect(r.stderr).toMatch(new RegExp(`worker root@${hosts.unusedIp.replace(/\./g, '\\.')}: .*the run goes on without it`));
    expect(r.stderr).toMatch(new RegExp(`worker ${h2!.sshAddr.replace(/\./g, '\\.')}: .*host key has changed`));
    await noWorkersLeft([h1!, h2!]);
  });

  it('leaves no process on any host after Ctrl-C', async () => {
    const [h1, h2] = hosts.hosts;
    const b = await bucket();
    const run = ferry(['sync', '--no-https', '--json', '--bwlimit', '4', ...workerFlag(h1!, h2!), src + '/', s3Addr(b)]);
    await until('both workers to join', () => (run.stderr().match(/joined/g) ?? []).length >= 2);
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code).toBe(130);
    await noWorkersLeft([h1!, h2!], 10_000);
  });

  it('leaves no process on any host after the manager is killed with SIGKILL', async () => {
    const [h1, h2] = hosts.hosts;
    const b = await bucket();
    const run = ferry(['sync', '--no-https', '--bwlimit', '4', ...workerFlag(h1!, h2!), src + '/', s3Addr(b)]);
    await until('both workers to join', () => (run.stderr().match(/joined/g) ?? []).length >= 2);
    run.child.kill('SIGKILL');
    await run.done;
    await noWorkersLeft([h1!, h2!], 10_000);
  });
});

if (hostsUnavailable) warnIfHostsUnavailable('the cluster end-to-end tests');
