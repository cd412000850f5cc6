import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { chooseArtifact, deployWorker, parseProbe, type DeployedWorker, type DeployOptions, type WorkerArtifacts } from '../../../src/manager/cluster/deploy.js';
import { decodeWorkerMessage } from '../../../src/shared/protocol/codec.js';
import { hostsUnavailable, makeBinDir, startHosts, warnIfHostsUnavailable, type TestHost, type TestHosts } from '../../support/hosts.js';

warnIfHostsUnavailable('the worker deployment tests (test/manager/cluster/deploy.test.ts)');

const repo = fileURLToPath(new URL('../../..', import.meta.url));

/** Processes (pids) whose command line mentions `text`: what a stopped worker must not leave. */
async function processesWith(text: string): Promise<number[]> {
  const out: number[] = [];
  for (const name of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmdline = await fsp.readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(text)) out.push(Number(name));
  }
  return out;
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A WebSocket server standing in for the manager's: it records each worker's hello. */
async function fakeManager(host: string): Promise<{ port: number; hellos: { token: string; name?: string; from: string }[]; sockets: Set<WebSocket>; close(): Promise<void> }> {
  const wss = new WebSocketServer({ host, port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const hellos: { token: string; name?: string; from: string }[] = [];
  const sockets = new Set<WebSocket>();
  wss.on('connection', (ws, req) => {
    sockets.add(ws);
    ws.on('close', () => sockets.delete(ws));
    ws.once('message', (data: RawData) => {
      const m = decodeWorkerMessage(data as Buffer);
      if (m.t === 'hello') hellos.push({ token: m.token, ...(m.worker.name !== undefined ? { name: m.worker.name } : {}), from: req.socket.remoteAddress ?? '' });
    });
  });
  return {
    port: (wss.address() as { port: number }).port,
    hellos,
    sockets,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.terminate();
        wss.close(() => r());
      }),
  };
}

describe.skipIf(hostsUnavailable !== undefined)('deployWorker to hosts in network namespaces', () => {
  let env: TestHosts;
  let dir: string;
  let artifacts: WorkerArtifacts;
  let manager: Awaited<ReturnType<typeof fakeManager>>;
  const token = randomBytes(24).toString('base64url');
  const deployed: DeployedWorker[] = [];
  const lines: string[] = [];

  const options = (over: Partial<DeployOptions> = {}): DeployOptions => ({
    ssh: env.sshOptions,
    strict: false,
    artifacts,
    token,
    connect: { kind: 'forward', localPort: manager.port },
    onLine: (line, stream) => lines.push(`${stream}: ${line}`),
    signal: new AbortController().signal,
    ...(process.env['FERRY_TEST_DEBUG'] ? { debug: (m: string) => console.log(new Date().toISOString(), m) } : {}),
    ...over,
  });
  const deploy = async (host: string, over: Partial<DeployOptions> = {}): Promise<DeployedWorker> => {
    const w = await deployWorker(host, options(over));
    deployed.push(w);
    return w;
  };

  beforeAll(async () => {
    // The real worker bundle; copied, so that a rebuild of dist/ meanwhile does not pull it away.
    const built = join(repo, 'dist', 'worker.cjs');
    if (!existsSync(built)) execFileSync('npm', ['run', 'build'], { cwd: repo, stdio: 'inherit' });
    dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-deploy-test-'));
    // Another test run's global setup may be rebuilding dist/ this very moment.
    await until('dist/worker.cjs', async () => fsp.copyFile(built, join(dir, 'worker.cjs')).then(() => true, () => false), 30_000);
    artifacts = { js: join(dir, 'worker.cjs'), sea: {} };
    manager = await fakeManager('127.0.0.1');
    env = await startHosts(2);
  });
  afterEach(async () => {
    await Promise.all(deployed.splice(0).map((w) => w.stop(500)));
    lines.length = 0;
  });
  afterAll(async () => {
    await Promise.all(deployed.splice(0).map((w) => w.stop(500)));
    await env?.close();
    await manager?.close();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  const h = (i: number): TestHost => env.hosts[i]!;

  it('uploads the worker once per host and build, into the host’s cache, leaving no temporary file', async () => {
    const content = await fsp.readFile(artifacts.js);
    const hash = createHash('sha256').update(content).digest('hex').slice(0, 16);
    const first = await deploy(h(0).sshAddr);
    expect(first).toMatchObject({ host: h(0).sshAddr, artifact: 'js', uploaded: true, path: join(h(0).cacheDir, 'ferry', hash, 'worker.cjs') });
    // (Buffer.equals: a deep toEqual of 5 MB takes vitest half a minute.)
    expect((await fsp.readFile(first.path)).equals(content)).toBe(true);
    expect((await fsp.stat(join(h(0).cacheDir, 'ferry', hash))).mode & 0o777).toBe(0o700);
    expect((await fsp.stat(join(h(0).cacheDir, 'ferry'))).mode & 0o777).toBe(0o700);
    expect(await fsp.readdir(join(h(0).cacheDir, 'ferry', hash))).toEqual(['worker.cjs']);
    await first.stop();

    const again = await deploy(h(0).sshAddr);
    expect(again).toMatchObject({ artifact: 'js', uploaded: false, path: first.path });
    // The other host has a cache of its own.
    const other = await deploy(h(1).sshAddr);
    expect(other).toMatchObject({ uploaded: true, path: join(h(1).cacheDir, 'ferry', hash, 'worker.cjs') });
  });

  it('starts the real worker: it reads the token from stdin and reaches the manager through the reverse forward', async () => {
    const before = manager.hellos.length;
    const w = await deploy(h(1).sshAddr);
    const hello = await until('the worker’s hello', async () => manager.hellos[before]);
    expect(hello).toEqual({ token, name: h(1).sshAddr, from: '127.0.0.1' });
    // It runs on the host: in the host's network namespace.
    expect(await fsp.readlink(`/proc/${w.pid}/ns/net`)).toBe(await fsp.readlink(`/proc/${(await env.pids(h(1)))[0]}/ns/net`));
    const cmdline = await fsp.readFile(`/proc/${w.pid}/cmdline`, 'utf8');
    expect(cmdline).toContain(w.path);
    expect(cmdline).toContain('--token-stdin');
    expect(cmdline).not.toContain(token);
    expect(await fsp.readFile(`/proc/${w.pid}/environ`, 'utf8')).not.toContain(token);

    await w.stop();
    expect(await w.exited).toMatchObject({ signal: null });
    expect(await processesWith(w.path)).toEqual([]);
    await until('the worker’s WebSocket to close', async () => manager.sockets.size === 0);
  });

  it('lets the worker connect straight to the manager with connect: direct', async () => {
    // Hosts reach this machine at the bridge's address, not at 127.0.0.1.
    const direct = await fakeManager(env.bridgeIp);
    try {
      const w = await deploy(h(0).sshAddr, { connect: { kind: 'direct', url: `ws://${env.bridgeIp}:${direct.port}` } });
      const hello = await until('the worker’s hello', async () => direct.hellos[0]);
      expect(hello).toEqual({ token, name: h(0).sshAddr, from: h(0).ip });
      await w.stop();
      expect(await processesWith(w.path)).toEqual([]);
    } finally {
      await direct.close();
    }
  });

  it('deploys to a ~/.ssh/config alias reached through a jump host, and closes both connections at stop()', async () => {
    const config = join(dir, 'config-jump');
    await fsp.writeFile(config, `${await fsp.readFile(env.clientFiles.configPath, 'utf8')}\nHost behind\n  HostName ${h(1).ip}\n  User root\n  ProxyJump h1\n`);
    const before = manager.hellos.length;
    const w = await deploy('behind', { ssh: { ...env.sshOptions, configPath: config } });
    expect(w.host).toBe('root@behind');
    expect(w.path.startsWith(h(1).cacheDir)).toBe(true);
    expect(await until('the worker’s hello', async () => manager.hellos[before])).toMatchObject({ token, name: 'root@behind' });
    // A session on each: the jump host's carries the other's connection.
    expect((await env.pids(h(0))).length).toBeGreaterThan(1);
    await w.stop();
    await until('both hosts’ sessions to end', async () => (await env.pids(h(0))).length === 1 && (await env.pids(h(1))).length === 1);
  });

  it('leaves no process on the host when the manager is killed (SIGKILL)', async () => {
    // Regression guard for the design goal: the worker's stdin is its lifeline, and sshd closes it when the client vanishes.
    const driverSrc = join(dir, 'driver.ts');
    await fsp.writeFile(
      driverSrc,
      [
        `import { deployWorker } from ${JSON.stringify(join(repo, 'src/manager/cluster/deploy.ts'))};`,
        'const o = JSON.parse(process.argv[2]);',
        'deployWorker(o.host, { ...o.options, onLine: () => {}, signal: new AbortController().signal }).then(',
        '  (w) => { process.stdout.write(JSON.stringify({ pid: w.pid, path: w.path }) + "\\n"); setInterval(() => {}, 1000); },',
        '  (err) => { console.error(err); process.exit(1); },',
        ');',
      ].join('\n'),
    );
    await build({ entryPoints: [driverSrc], outfile: join(dir, 'driver.cjs'), bundle: true, platform: 'node', format: 'cjs', target: 'node20', external: ['cpu-features', '*.node'], logLevel: 'error' });
    const before = manager.hellos.length;
    const child = spawn(process.execPath, [join(dir, 'driver.cjs'), JSON.stringify({ host: h(0).sshAddr, options: { ssh: env.sshOptions, strict: false, artifacts, token, connect: { kind: 'forward', localPort: manager.port } } })], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const started = await new Promise<{ pid: number; path: string }>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]!) as { pid: number; path: string });
        });
        child.once('exit', (code) => reject(new Error(`the deploying process exited (${code})`)));
      });
      await until('the worker’s hello', async () => manager.hellos[before]);
      expect(await processesWith(started.path)).toEqual([started.pid]);
      child.kill('SIGKILL');
      await until('the worker to exit', async () => (await processesWith(started.path)).length === 0, 5000);
      // Nothing else of ours either: the session's sshd went with the connection.
      await until('the host’s sessions to end', async () => (await env.pids(h(0))).length === 1, 5000);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('stop() escalates to TERM and KILL for a worker that ignores its stdin and SIGTERM', async () => {
    const stubborn = join(dir, 'stubborn-worker.cjs');
    // It also leaves a child behind in its process group, which the KILL of the group must take too.
    const marker = `ferry-stubborn-child-${randomBytes(4).toString('hex')}`;
    await fsp.writeFile(
      stubborn,
      [
        `require('child_process').spawn('sh', ['-c', 'sleep 600; : ${marker}'], { stdio: 'ignore' });`,
        `process.on('SIGTERM', () => console.log('ignoring TERM'));`,
        `process.stdin.resume(); process.stdin.on('end', () => console.log('stdin ended'));`,
        `console.log('stubborn up'); setInterval(() => {}, 1000);`,
      ].join('\n'),
    );
    const w = await deploy(h(1).sshAddr, { artifacts: { js: stubborn, sea: {} } });
    await until('the stand-in to start', async () => lines.includes('stdout: stubborn up'));
    expect(await until('its child', async () => (await processesWith(marker)).length > 0)).toBe(true);
    const t0 = Date.now();
    await w.stop(300);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(await w.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(lines).toEqual(expect.arrayContaining(['stdout: stdin ended', 'stdout: ignoring TERM']));
    expect(await processesWith(w.path)).toEqual([]);
    expect(await until('its child to go', async () => (await processesWith(marker)).length === 0, 2000)).toBe(true);
    // Idempotent.
    await w.stop();
  });

  it('gives a host without Node.js ≥ 20 the single executable, and names what is missing when there is none', async () => {
    const host = h(1);
    const noNode = await makeBinDir(join(dir, 'bin-no-node'), { without: ['node', 'nodejs'] });
    const oldNode = await makeBinDir(join(dir, 'bin-old-node'), { without: ['nodejs'], extra: { node: 'echo v18.19.0' } });
    // A stand-in single executable: reads its token line, says so, then lives until its stdin ends.
    const sea = join(dir, 'ferry-worker-linux-x64');
    await fsp.writeFile(sea, '#!/bin/sh\nread -r token\necho "sea up, token of ${#token} characters, args: $*"\ncat >/dev/null\necho "sea: stdin ended" >&2\n', { mode: 0o755 });
    try {
      await env.startSshd(host, { env: { PATH: noNode } });
      const w = await deploy(host.sshAddr, { artifacts: { js: artifacts.js, sea: { x64: sea } } });
      expect(w).toMatchObject({ artifact: 'sea-x64', uploaded: true });
      expect((await fsp.stat(w.path)).mode & 0o777).toBe(0o755);
      await until('the stand-in to start', async () => lines.find((l) => l.startsWith('stdout: sea up')));
      expect(lines.find((l) => l.startsWith('stdout: sea up'))).toMatch(
        new RegExp(`^stdout: sea up, token of ${token.length} characters, args: --manager ws://127\\.0\\.0\\.1:\\d+ --token-stdin --name ${host.sshAddr.replace(/\./g, '\\.')}$`),
      );
      await w.stop();
      expect(await w.exited).toEqual({ code: 0, signal: null });
      expect(lines).toContain('stderr: sea: stdin ended');

      const err = await deployWorker(host.sshAddr, options()).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'FERRY_FATAL' });
      expect((err as Error).message).toContain(`${host.sshAddr} has no Node.js and is x86_64, for which this build has no single executable: run \`npm run build:sea\``);

      await env.startSshd(host, { env: { PATH: oldNode } });
      const old = await deployWorker(host.sshAddr, options()).catch((e: unknown) => e);
      expect(old).toMatchObject({ code: 'FERRY_FATAL' });
      expect((old as Error).message).toContain(`${host.sshAddr} has Node.js v18.19.0 (ferry's worker needs ≥ 20) and is x86_64`);
    } finally {
      await env.startSshd(host, { env: {} });
    }
  });

  it('refuses a host whose key changed, and under strict an unknown host, naming it', async () => {
    const host = h(0);
    const stranger = h(1).hostKey.publicLine.split(' ').slice(0, 2).join(' ');
    const changed = join(dir, 'known_hosts-changed');
    await fsp.writeFile(changed, `${host.ip} ${stranger}\n`);
    const err = await deployWorker(host.sshAddr, options({ ssh: { ...env.sshOptions, knownHostsPath: changed } })).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'FERRY_FATAL' });
    expect((err as Error).message).toContain(`ssh ${host.ip}: the host key has changed`);

    const empty = join(dir, 'known_hosts-empty');
    await fsp.writeFile(empty, '');
    const strict = await deployWorker(host.sshAddr, options({ strict: true, ssh: { ...env.sshOptions, knownHostsPath: empty } })).catch((e: unknown) => e);
    expect(strict).toMatchObject({ code: 'FERRY_FATAL' });
    expect((strict as Error).message).toContain(`ssh ${host.ip}: the host is not in`);
    expect(await fsp.readFile(empty, 'utf8')).toBe('');
  });

  it('fails on an unreachable host within the connect timeout, naming it; an abort ends the attempt at once', async () => {
    const t0 = Date.now();
    const err = await deployWorker(`root@${env.unusedIp}`, options({ ssh: { ...env.sshOptions, readyTimeout: 2000 } })).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(4500);
    expect(err).toMatchObject({ code: 'FERRY_TRANSIENT' });
    expect((err as Error).message).toContain(env.unusedIp);

    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const t1 = Date.now();
    await expect(deployWorker(`root@${env.unusedIp}`, options({ signal: ac.signal }))).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
    expect(Date.now() - t1).toBeLessThan(1500);
  });

  it('names the host and the keys it tried when authentication fails', async () => {
    const stranger = join(dir, 'stranger_ed25519');
    if (!existsSync(stranger)) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', stranger]);
    const err = await deployWorker(h(0).sshAddr, options({ ssh: { ...env.sshOptions, identityFiles: [stranger] } })).then(
      (w) => deployed.push(w),
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'FERRY_PERMISSION_DENIED' });
    expect((err as Error).message).toContain(`root@${h(0).ip}:22: permission denied`);
    expect((err as Error).message).toContain(stranger);
  });

  it('uploads uncompressed to a host without gzip', async () => {
    const host = h(1);
    const noGzip = await makeBinDir(join(dir, 'bin-no-gzip'), { without: ['gzip'] });
    const small = join(dir, 'plain-worker.cjs');
    await fsp.writeFile(small, `console.log('plain up'); process.stdin.resume(); process.stdin.on('end', () => process.exit(0));\n// ${randomBytes(8).toString('hex')}\n`);
    try {
      await env.startSshd(host, { env: { PATH: noGzip } });
      const w = await deploy(host.sshAddr, { artifacts: { js: small, sea: {} } });
      expect(w).toMatchObject({ artifact: 'js', uploaded: true });
      expect((await fsp.readFile(w.path)).equals(await fsp.readFile(small))).toBe(true);
      await until('the stand-in to start', async () => lines.includes('stdout: plain up'));
      await w.stop();
      expect(await w.exited).toEqual({ code: 0, signal: null });
    } finally {
      await env.startSshd(host, { env: {} });
    }
  });

  it('says which host cannot take the upload, and where', async () => {
    const host = h(1);
    try {
      // Not even root can make a directory under /proc.
      await env.startSshd(host, { env: { XDG_CACHE_HOME: '/proc/ferry-cache' } });
      const err = await deployWorker(host.sshAddr, options()).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'FERRY_FATAL' });
      expect((err as Error).message).toMatch(new RegExp(`^${host.sshAddr.replace(/\./g, '\\.')}: could not write /proc/ferry-cache/ferry/[0-9a-f]{16}/worker\\.cjs \\(exit 1\\): mkdir`));
    } finally {
      await env.startSshd(host, { env: {} });
    }
  });

  it('says so when the host refuses the reverse forward, suggesting --manager-addr', async () => {
    const host = h(1);
    try {
      await env.startSshd(host, { extraConfig: 'AllowTcpForwarding no' });
      const err = await deployWorker(host.sshAddr, options()).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'FERRY_FATAL' });
      expect((err as Error).message).toContain(`${host.sshAddr}: the SSH server refused a reverse port forward`);
      expect((err as Error).message).toContain('--manager-addr');
      // Nothing was started.
      expect(await env.pids(host)).toHaveLength(1);
    } finally {
      await env.startSshd(host, { extraConfig: '' });
    }
  });

  it('an abort during the upload leaves neither a partial file at the final name nor a temporary one', async () => {
    const host = h(0);
    // Incompressible, so that gzip does not shrink it: ~2 s at 8 Mbit/s.
    const big = join(dir, 'big-worker.cjs');
    await fsp.writeFile(big, randomBytes(2 << 20));
    await env.capRate(host, 8);
    const ac = new AbortController();
    const cache = join(host.cacheDir, 'ferry');
    const temps = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const d of await fsp.readdir(cache).catch(() => [] as string[])) {
        for (const f of await fsp.readdir(join(cache, d)).catch(() => [] as string[])) if (f.startsWith('.big-worker.cjs.tmp.')) out.push(join(cache, d, f));
      }
      return out;
    };
    try {
      const p = deployWorker(host.sshAddr, options({ artifacts: { js: big, sea: {} }, signal: ac.signal }));
      const seen = await until('the upload to begin', async () => ((await temps()).length > 0 ? await temps() : undefined), 10_000);
      ac.abort();
      await expect(p).rejects.toMatchObject({ code: 'FERRY_ABORTED' });
      await until('the temporary file to go', async () => (await temps()).length === 0, 5000);
      expect(existsSync(seen[0]!.replace(/\.big-worker\.cjs\.tmp\.\d+$/, 'big-worker.cjs'))).toBe(false);
    } finally {
      await env.capRate(host, 0);
    }
  });
});

describe('the host probe', () => {
  it('reads its own lines and ignores what a shell profile prints', () => {
    const out = ['Welcome to host!', 'ferry-probe kernel=Linux', 'ferry-probe arch=aarch64', 'ferry-probe cache=/home/u/.cache', 'ferry-probe node=/usr/bin/node', 'ferry-probe node-version=v18.19.0', ''].join('\n');
    expect(parseProbe(out)).toEqual({ kernel: 'Linux', arch: 'aarch64', cacheHome: '/home/u/.cache', gzip: false, jsPresent: false, node: { path: '/usr/bin/node', version: 'v18.19.0' } });
    const crlf = 'ferry-probe kernel=Linux\r\nferry-probe arch=x86_64\r\nferry-probe cache=/.cache\r\nferry-probe gzip=yes\r\nferry-probe js-present=yes\r\n';
    expect(parseProbe(crlf)).toEqual({ kernel: 'Linux', arch: 'x86_64', gzip: true, jsPresent: true });
  });

  const linux = { kernel: 'Linux', arch: 'x86_64', cacheHome: '/c', gzip: true, jsPresent: false };
  const builds = { js: '/d/worker.cjs', sea: { x64: '/d/sea-x64', arm64: '/d/sea-arm64' } };

  it('picks the JavaScript worker where Node.js ≥ 20 is, on any kernel', () => {
    expect(chooseArtifact('u@h', { ...linux, node: { path: '/usr/bin/node', version: 'v20.0.0' } }, builds)).toEqual({ kind: 'js', file: '/d/worker.cjs' });
    expect(chooseArtifact('u@h', { ...linux, kernel: 'Darwin', arch: 'arm64', node: { path: '/opt/homebrew/bin/node', version: 'v22.3.1' } }, builds).kind).toBe('js');
  });

  it('picks the single executable for the architecture where Node.js is missing or older', () => {
    expect(chooseArtifact('u@h', { ...linux, arch: 'aarch64', node: { path: '/usr/bin/node', version: 'v18.19.0' } }, builds)).toEqual({ kind: 'sea-arm64', file: '/d/sea-arm64' });
    expect(chooseArtifact('u@h', linux, builds)).toEqual({ kind: 'sea-x64', file: '/d/sea-x64' });
  });

  it('says what the host lacks and what to do', () => {
    const message = (p: Parameters<typeof chooseArtifact>[1], a: Parameters<typeof chooseArtifact>[2] = { js: builds.js, sea: {} }): string => {
      try {
        chooseArtifact('u@h', p, a);
      } catch (err) {
        expect(err).toMatchObject({ code: 'FERRY_FATAL' });
        return (err as Error).message;
      }
      throw new Error('no error');
    };
    expect(message({ ...linux, arch: 'aarch64', node: { path: '/usr/bin/node', version: 'v18.19.0' } })).toBe(
      "u@h has Node.js v18.19.0 (ferry's worker needs ≥ 20) and is aarch64, for which this build has no single executable: run `npm run build:sea`, or install Node.js 20 or later there",
    );
    expect(message({ ...linux, kernel: 'FreeBSD', arch: 'amd64' }, builds)).toBe("u@h has no Node.js and runs FreeBSD (amd64); ferry's single executables are for Linux only: install Node.js 20 or later there");
    expect(message({ ...linux, arch: 'riscv64' }, builds)).toContain('is riscv64, for which there is no single executable (only x86_64 and aarch64)');
  });
});
