/**
 * Join mode under a real Slurm: slurmctld on this machine, two nodes whose slurmd runs in a network
 * namespace of its own (test/support/slurm.ts). The manager (`ferry sync --listen`) runs here; srun
 * starts `ferry worker --manager ws://BRIDGE:PORT --token-file F` on the nodes, as a user's job
 * would. The s3 test server sits on the bridge, which every node reaches. What a user cares about:
 * the data arrives byte-identical, each worker runs on its own node and does part of the work, a
 * worker cancelled mid-run (scancel) loses nothing, no storage credential reaches a task, and the
 * batch script of docs/slurm.sbatch does all this when submitted with sbatch.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';
import { slurmUnavailable, startSlurm, type SlurmNode, type TestSlurm } from '../support/slurm.js';

const ROOT = join(__dirname, '..', '..');
const FERRY = join(ROOT, 'bin', 'ferry.js');
/** Given to the manager in its environment only: no task of a Slurm job may see them. */
const AK = 'FERRYSLURMKEY';
const SK = 'slurm-secret-8c1e5b0f2d7a4936';

if (slurmUnavailable) console.log(`skipping the Slurm tests: ${slurmUnavailable}`);

interface Manager {
  child: ChildProcess;
  stderr: () => string;
  url: string;
  done: Promise<{ code: number | null; json: Record<string, any> | undefined; stderr: string }>;
}

interface WorkerSeen {
  pid: number;
  name: string;
  node: SlurmNode;
  environ: string;
}

describe.skipIf(slurmUnavailable)('join mode under a real Slurm (nodes in network namespaces)', () => {
  let slurm: TestSlurm;
  let s3: S3TestServer;
  let work: string;
  let src: string;
  let tokenFile: string;
  let bucketN = 0;
  const FILES = 90;
  const SIZE = 40 * 1024;
  const children = new Set<ChildProcess>();

  beforeAll(async () => {
    slurm = await startSlurm(2);
    s3 = await startS3Server({ address: slurm.bridgeIp, credentials: { [AK]: SK } });
    work = await fsp.mkdtemp(join(tmpdir(), 'ferry-slurm-test-'));
    src = join(work, 'src');
    for (let i = 0; i < FILES; i++) {
      const dir = join(src, `d${i % 6}`);
      await fsp.mkdir(dir, { recursive: true });
      const data = Buffer.alloc(SIZE + i * 7, i % 251);
      data.write(`file ${i}`);
      await fsp.writeFile(join(dir, `f${i}.bin`), data);
    }
    tokenFile = join(work, 'token');
    await fsp.writeFile(tokenFile, 'slurm-job-token-4a1f\n', { mode: 0o600 });
  }, 60_000);

  afterEach(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  afterAll(async () => {
    await s3?.close();
    await slurm?.close();
    if (work) await fsp.rm(work, { recursive: true, force: true });
  });

  async function bucket(): Promise<string> {
    const name = `j${++bucketN}`;
    await s3.createBucket(name);
    return name;
  }
  const s3Addr = (b: string): string => `s3://${s3.endpoint}/${b}/data/`;

  function ferry(args: string[]): Omit<Manager, 'url'> {
    let out = '';
    let err = '';
    const child = spawn(process.execPath, [FERRY, ...args], {
      env: { PATH: process.env['PATH'] ?? '', AWS_ACCESS_KEY_ID: AK, AWS_SECRET_ACCESS_KEY: SK },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    const done = new Promise<{ code: number | null; json: Record<string, any> | undefined; stderr: string }>((resolve) =>
      child.on('close', (code) => {
        children.delete(child);
        resolve({ code, json: lastJson(out), stderr: err });
      }),
    );
    return { child, stderr: () => err, done };
  }

  /** `ferry sync SRC s3://… --listen BRIDGE:0 …`: waits for workers; resolves once it listens. */
  async function manager(b: string, extra: string[] = []): Promise<Manager> {
    const m = ferry(['sync', '--no-https', '--json', '--listen', `${slurm.bridgeIp}:0`, '--token-file', tokenFile, '--no-manager-exec', ...extra, src + '/', s3Addr(b)]);
    const re = new RegExp(`listening for workers at ws://${slurm.bridgeIp.replace(/\./g, '\\.')}:(\\d+)`);
    await until('the manager to listen', () => re.test(m.stderr()) || m.child.exitCode !== null);
    const port = re.exec(m.stderr())?.[1];
    if (!port) throw new Error(`the manager did not listen:\n${m.stderr()}`);
    return { ...m, url: `ws://${slurm.bridgeIp}:${port}` };
  }

  /** The task command: a shell that execs the worker, so the worker keeps the task's pid and environment. */
  function workerTask(url: string, name: string, extra: string[] = []): string[] {
    return ['/bin/sh', '-c', `exec "$0" "$1" worker --manager "$2" --token-file "$3" --name ${name} ${extra.join(' ')}`, process.execPath, FERRY, url, tokenFile];
  }

  /** ferry worker processes running on the Slurm nodes (found in the nodes' namespaces). */
  function workersOnNodes(): WorkerSeen[] {
    const out: WorkerSeen[] = [];
    for (const node of slurm.nodes) {
      for (const pid of slurm.pids(node)) {
        let cmdline: string;
        let environ: string;
        try {
          cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
          environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
        } catch {
          continue;
        }
        // `node …/bin/ferry.js worker …`, `…/ferry worker …` through PATH, or the title the CLI
        // gives itself (`ferry worker …`, which replaces the command line).
        // (Not the shell that is about to exec it: its `--name "$VAR"` is not expanded yet.)
        const m = /(?:^|[\s/])ferry(?:\.js)? worker .*--name ([^\s"'$]+)(?:\s|$)/.exec(cmdline);
        if (!m) continue;
        out.push({ pid, name: m[1]!, node, environ });
      }
    }
    return out;
  }

  async function noWorkersLeft(): Promise<void> {
    await until('every worker process to exit', () => workersOnNodes().length === 0, 15_000);
  }

  /** Sync the bucket back to a fresh directory here and compare every file with the source. */
  async function expectIdentical(b: string): Promise<void> {
    const back = await fsp.mkdtemp(join(work, 'back-'));
    const r = await ferry(['sync', '--no-https', '--json', '-q', s3Addr(b), back + '/']).done;
    expect(r.code, r.stderr).toBe(0);
    const want = files(src).sort();
    expect(files(back).sort()).toEqual(want);
    for (const f of want) expect(readFileSync(join(back, f)).equals(readFileSync(join(src, f))), f).toBe(true);
  }

  it('srun -N2 starts a worker on each node; both take part, the copy is byte-identical, no credential reaches a task', async () => {
    const b = await bucket();
    const m = await manager(b, ['--bwlimit', '10', '-p', '4']);
    // srun with Slurm's variables only: it would hand the caller's whole environment to the tasks.
    const job = slurm.srun(['-N2', '--ntasks-per-node=1', '-J', `ferry-${b}`, ...workerTask(m.url, 'slurm-$SLURM_PROCID')]);

    await until('both workers to join', () => (m.stderr().match(/ joined /g) ?? []).length >= 2 || m.child.exitCode !== null, 20_000);
    const seen = workersOnNodes();
    expect(seen.map((w) => w.name).sort(), m.stderr() + job.stderr()).toEqual(['slurm-0', 'slurm-1']);
    // Each ran inside a different node's namespace, and Slurm agrees on which node that is.
    expect(new Set(seen.map((w) => w.node.name)).size).toBe(2);
    for (const w of seen) {
      expect(slurm.nodeOf(w.pid)?.name).toBe(w.node.name);
      expect(w.environ).toContain(`SLURMD_NODENAME=${w.node.name}\0`);
      expect(w.environ, `environment of ${w.name}`).not.toContain(SK);
      expect(w.environ).not.toContain('AWS_');
    }

    const [r, srunCode] = await Promise.all([m.done, job.done]);
    expect(r.code, r.stderr).toBe(0);
    expect(srunCode, job.stderr()).toBe(0);
    expect(r.json).toMatchObject({ found: FILES, copied: FILES, failed: 0, lost: 0, exitCode: 0 });
    const executors = r.json!['executors'] as { host: string; tasks: number; copiedObjects: number }[];
    const byName = Object.fromEntries(executors.map((e) => [e.host, e]));
    expect(byName['manager']?.tasks ?? 0).toBe(0);
    expect(byName['slurm-0']?.tasks, 'slurm-0 did no work').toBeGreaterThan(0);
    expect(byName['slurm-1']?.tasks, 'slurm-1 did no work').toBeGreaterThan(0);
    expect(executors.reduce((n, e) => n + e.copiedObjects, 0)).toBe(FILES);
    await expectIdentical(b);
    await noWorkersLeft();
  });

  it('scancel of one worker job mid-run loses nothing: the other finishes, every key counted once', async () => {
    const b = await bucket();
    const m = await manager(b, ['--bwlimit', '12', '-p', '4']);
    const [n1, n2] = slurm.nodes as [SlurmNode, SlurmNode];
    // Two jobs, one worker each, so that one can be cancelled alone.
    const victim = slurm.srun(['-N1', '-w', n1.name, '-J', `victim-${b}`, ...workerTask(m.url, 'victim', ['-v'])]);
    const stayer = slurm.srun(['-N1', '-w', n2.name, '-J', `stayer-${b}`, ...workerTask(m.url, 'stayer')]);
    // Cancelled while it holds tasks: it has taken a batch (srun relays the task's stderr).
    await until('the victim to take tasks', () => /batch \d+/.test(victim.stderr()) || m.child.exitCode !== null, 20_000);
    await until('the stayer to join', () => /\[stayer\] joined/.test(m.stderr()) || m.child.exitCode !== null, 20_000);
    expect(workersOnNodes().find((w) => w.name === 'victim')?.node.name).toBe(n1.name);
    await slurm.client('scancel', ['--signal=KILL', '--name', `victim-${b}`]);
    const victimCode = await victim.done;
    expect(victimCode, `srun of the cancelled job:\n${victim.stderr()}`).not.toBe(0);
    expect(workersOnNodes().filter((w) => w.name === 'victim')).toEqual([]);

    const [r, stayerCode] = await Promise.all([m.done, stayer.done]);
    expect(r.code, r.stderr).toBe(0);
    expect(stayerCode, stayer.stderr()).toBe(0);
    expect(r.json).toMatchObject({ found: FILES, copied: FILES, failed: 0, lost: 0 });
    const executors = r.json!['executors'] as { host: string; tasks: number; leasesLost: number; copiedObjects: number }[];
    expect(executors.reduce((n, e) => n + e.tasks, 0)).toBe(FILES);
    expect(executors.reduce((n, e) => n + e.copiedObjects, 0)).toBe(FILES);
    expect(executors.find((e) => e.host === 'victim')?.leasesLost).toBe(1);
    expect(executors.find((e) => e.host === 'stayer')?.tasks).toBeGreaterThan(0);
    await expectIdentical(b);
    await noWorkersLeft();
    // Both jobs are over (a job may show as COMPLETING for a moment after its srun returns).
    let queue = '';
    const end = Date.now() + 10_000;
    while ((queue = (await slurm.client('squeue', ['-h', '-o', '%i %j %T'])).trim()) !== '' && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
    expect(queue).toBe('');
  });

  // Regression: Slurm's proctrack/linuxproc reads /proc/PID/stat with sscanf("%ld %s %c %ld") and
  // skipped a process whose name (comm) held a space. The CLI's process title (set to hide keys from
  // ps) made the name `ferry worker --`, so scancel, a time limit or the end of a job never signalled
  // a ferry process. src/manager/entry.ts now writes a plain name to /proc/self/comm.
  it('under proctrack/linuxproc, scancel stops a ferry worker', async () => {
    const lp = await startSlurm(1, { proctrack: 'linuxproc' });
    const b = await bucket();
    try {
      const m = await manager(b, ['--bwlimit', '4', '-p', '2']);
      // The worker reaches the manager at the other bridge's address: a local address of this machine.
      const job = lp.srun(['-N1', '-J', `lp-${b}`, ...workerTask(m.url, 'linuxproc')]);
      await until('the worker to join', () => /\[linuxproc\] joined/.test(m.stderr()) || m.child.exitCode !== null, 20_000);
      expect(m.child.exitCode, m.stderr()).toBeNull();
      const onNode = (): number[] =>
        lp.pids(lp.nodes[0]!).filter((pid) => {
          try {
            return /ferry(\.js)? worker /.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' '));
          } catch {
            return false;
          }
        });
      expect(onNode()).toHaveLength(1);
      await lp.client('scancel', ['--signal=KILL', '--name', `lp-${b}`]);
      await until('the worker to be stopped by scancel', () => onNode().length === 0, 5_000);
      expect(await job.done).not.toBe(0);
    } finally {
      for (const c of children) c.kill('SIGKILL');
      await lp.close();
    }
  });

  it('docs/slurm.sbatch, submitted with sbatch -N2, runs the manager on the first node and a worker on each', async () => {
    const b = await bucket();
    // `ferry` on PATH, as on a cluster where it is installed; HOME holds the job's token file.
    const bin = join(work, 'bin');
    await fsp.mkdir(bin, { recursive: true });
    await fsp.symlink(FERRY, join(bin, 'ferry')).catch(() => {});
    const home = join(work, 'home');
    await fsp.mkdir(home, { recursive: true });
    const out = join(work, `sbatch-${b}.out`);
    const err = join(work, `sbatch-${b}.err`);
    // What the user's shell would hold: the storage keys too (sbatch exports them to the batch script).
    const env = {
      PATH: `${bin}:${dirname(process.execPath)}:${slurm.env['PATH']}`,
      HOME: home,
      FERRY_SRC: src + '/',
      FERRY_DST: s3Addr(b),
      FERRY_OPTIONS: '--no-https --bwlimit 10 -p 4',
      AWS_ACCESS_KEY_ID: AK,
      AWS_SECRET_ACCESS_KEY: SK,
    };
    const job = slurm.sbatch(['--wait', '-N2', '-w', slurm.nodes.map((n) => n.name).join(','), `--output=${out}`, `--error=${err}`, '--chdir', work, join(ROOT, 'docs', 'slurm.sbatch')], env);
    let seen: WorkerSeen[] = [];
    await until('a worker on each node', () => (seen = workersOnNodes()).length === 2 || job.child.exitCode !== null, 30_000);
    expect(seen.map((w) => w.name).sort(), job.stderr()).toEqual(slurm.nodes.map((n) => n.name));
    for (const w of seen) {
      expect(w.node.name).toBe(w.name);
      expect(w.environ, `environment of the worker on ${w.name}`).not.toContain(SK);
      expect(w.environ).not.toContain('AWS_');
    }
    const code = await job.done;
    const stdout = await fsp.readFile(out, 'utf8').catch(() => '');
    const stderr = await fsp.readFile(err, 'utf8').catch(() => '');
    const managerLog = await fsp.readFile(join(work, readdirSync(work).find((f) => /^ferry-\d+\.manager\.log$/.test(f)) ?? 'none'), 'utf8').catch(() => '');
    expect(code, `${job.stderr()}\n${stderr}\n${managerLog}`).toBe(0);
    const json = lastJson(stdout);
    expect(json, stdout).toMatchObject({ found: FILES, copied: FILES, failed: 0, lost: 0 });
    const executors = json!['executors'] as { host: string; tasks: number }[];
    for (const n of slurm.nodes) expect(executors.find((e) => e.host === n.name)?.tasks, `${n.name} did no work`).toBeGreaterThan(0);
    // The manager ran on the first node: it listened at that node's address.
    expect(managerLog).toContain(`listening for workers at ws://${slurm.nodes[0]!.ip}:7070`);
    // The per-job token file is gone.
    expect(readdirSync(join(home, '.ferry')).filter((f) => f.startsWith('token-'))).toEqual([]);
    await expectIdentical(b);
    await noWorkersLeft();
  });
});

function files(d: string, p = ''): string[] {
  return readdirSync(join(d, p)).flatMap((n) => (statSync(join(d, p, n)).isDirectory() ? files(d, join(p, n)) : [join(p, n)]));
}

function lastJson(text: string): Record<string, any> | undefined {
  const line = text
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  try {
    return line ? (JSON.parse(line) as Record<string, any>) : undefined;
  } catch {
    return undefined;
  }
}

async function until(what: string, test: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!test()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
