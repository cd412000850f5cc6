/**
 * A real Slurm on one machine, for tests of ferry's join mode under a scheduler: munged and
 * slurmctld in this machine's network namespace, one slurmd per node, each in a network namespace
 * of its own on a bridge (so the nodes reach each other and slurmctld, and every task a node runs is
 * on that node's network), all sharing this machine's file system and process table.
 *
 * Everything lives in one temporary directory: slurm.conf, the munge key and socket, state, spool,
 * logs and pid files. `SLURM_CONF` (in `env`) points the clients at it; nothing goes in /etc, and a
 * munged or Slurm already running on the machine is left alone (ours has its own key and socket).
 *
 * Needs root and Debian's `slurmctld slurmd slurm-client munge` (plus iproute2 and util-linux).
 * When they are missing, `slurmUnavailable` says why (checked synchronously and cheaply when this
 * module loads); a failure to start once they are there is an error of `startSlurm`, not a skip.
 *
 * `close()` kills every process it started and everything that runs in the nodes' namespaces
 * (slurmd, slurmstepd and the tasks), slurmctld and its helper, munged, and any srun or sbatch
 * started through `srun()`/`sbatch()`; then it deletes the namespaces, the bridge and the
 * directory. It is safe after a partial start and runs (synchronously) at process exit when a test
 * forgot it. Names carry this process's
 * pid in base 36 (`ferry-<tag>-s1`, `fb-<tag>`, `$TMPDIR/ferry-slurm-<tag>-…`), so a later start
 * removes what a killed test process left behind, daemons included.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { IP, NSENTER, addNamespace, firstLine, killPid as kill, makeBridge, netnsPids, newTag, pidAlive, removeNetworkSync, sweepStaleNetworks, tagDead } from './netns.js';

const run = promisify(execFile);

const MUNGED = '/usr/sbin/munged';
const SLURMCTLD = '/usr/sbin/slurmctld';
const SLURMD = '/usr/sbin/slurmd';
const SRUN = '/usr/bin/srun';
const SINFO = '/usr/bin/sinfo';
const SCANCEL = '/usr/bin/scancel';
const SQUEUE = '/usr/bin/squeue';
const SBATCH = '/usr/bin/sbatch';

function probe(): string | undefined {
  if (process.platform !== 'linux') return `Slurm nodes in network namespaces need Linux (this is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'a test Slurm needs root (network namespaces, slurmd as root); the tests run as a normal user';
  const missing: string[] = [];
  for (const [path, pkg] of [
    [MUNGED, 'munge'],
    [SLURMCTLD, 'slurmctld'],
    [SLURMD, 'slurmd'],
    [SRUN, 'slurm-client'],
    [SINFO, 'slurm-client'],
    [SCANCEL, 'slurm-client'],
    [SBATCH, 'slurm-client'],
    [IP, 'iproute2'],
    [NSENTER, 'util-linux'],
  ] as const) {
    if (!existsSync(path) && !missing.includes(pkg)) missing.push(pkg);
  }
  if (missing.length > 0) return `Slurm is not installed (apt-get install -y --no-install-recommends ${missing.join(' ')})`;
  const tag = newTag();
  const ns = `ferry-${tag}-probe`;
  try {
    execFileSync(IP, ['netns', 'add', ns], { stdio: 'pipe' });
  } catch (err) {
    return `cannot create a network namespace (${firstLine(err)})`;
  }
  try {
    execFileSync(IP, ['netns', 'del', ns], { stdio: 'pipe' });
  } catch {
    // the next sweep removes it
  }
  return undefined;
}

/** Why a test Slurm cannot run here, or undefined when it can. */
export const slurmUnavailable: string | undefined = probe();

export interface SlurmNode {
  /** `s1`, `s2`, …: the Slurm node name (`srun -w s1`, `$SLURMD_NODENAME`). */
  name: string;
  ip: string;
  /** The network namespace, `/run/netns/<netns>`. */
  netns: string;
  /** The inode of the namespace: what `/proc/<pid>/ns/net` of a process on this node points at. */
  netnsInode: number;
}

export interface SrunProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** srun's exit code (null when a signal ended it). */
  done: Promise<number | null>;
}

export interface TestSlurm {
  nodes: SlurmNode[];
  /** The bridge's address on this machine: where the nodes reach slurmctld and anything of the test. */
  bridgeIp: string;
  /** The temporary directory holding everything. */
  dir: string;
  /** slurm.conf */
  conf: string;
  /**
   * The whole environment a Slurm client gets here: PATH and SLURM_CONF, nothing else. srun passes
   * its environment on to the tasks, so the clients must not inherit the test's.
   */
  env: Record<string, string>;
  /** Start `srun ARGS` with `env` plus `extraEnv` only; it is killed by close(). */
  srun(args: string[], extraEnv?: Record<string, string>): SrunProcess;
  /** Start `sbatch ARGS` (with `--wait`, it returns when the job ends) the same way. */
  sbatch(args: string[], extraEnv?: Record<string, string>): SrunProcess;
  /** Run a Slurm client (`scancel`, `squeue`, `sinfo`, …) with `env`; its standard output. */
  client(command: 'scancel' | 'squeue' | 'sinfo', args: string[]): Promise<string>;
  /** Process ids running on a node (in its namespace): slurmd, slurmstepd, tasks. */
  pids(node: SlurmNode): number[];
  /** The node a process runs on, by its network namespace; undefined when on none of them. */
  nodeOf(pid: number): SlurmNode | undefined;
  /** The daemons' logs, for a failing test's message. */
  logs(): string;
  /** Kill everything started, delete the namespaces, the bridge and the directory. Idempotent. */
  close(): Promise<void>;
}

interface Created {
  tag: string;
  dir?: string;
  bridge?: string;
  netns: string[];
  children: Set<ChildProcess>;
}

const open = new Set<Created>();
let exitHook = false;

/** Processes whose command line or environment names `needle` (a path of ours): daemons, srun, tasks. */
function pidsMentioning(needle: string): number[] {
  const out: number[] = [];
  let names: string[] = [];
  try {
    names = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const name of names) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    for (const what of ['cmdline', 'environ']) {
      let text = '';
      try {
        text = readFileSync(`/proc/${name}/${what}`, 'latin1');
      } catch {
        continue;
      }
      if (text.includes(needle)) {
        out.push(Number(name));
        break;
      }
    }
  }
  return out;
}

/** Kill, synchronously, everything a set made, and remove it: the exit hook's and close()'s core. */
function teardownSync(c: Created): void {
  // Children first (slurmctld's slurmscriptd renames itself, so only its parent tells it is ours).
  const tracked = [...c.children].map((ch) => ch.pid).filter((p): p is number => p !== undefined);
  for (const pid of descendants(tracked)) kill(pid);
  for (const pid of tracked) kill(pid);
  // Several rounds: slurmd may fork a slurmstepd while we kill, slurmctld has its slurmscriptd.
  for (let round = 0; round < 3; round++) {
    for (const ns of c.netns) for (const pid of netnsPids(ns)) kill(pid);
    if (c.dir) for (const pid of pidsMentioning(c.dir)) kill(pid);
  }
  removeNetworkSync(c);
}

/** Remove what a test process that died before close() left: its daemons, namespaces, bridge, directory. */
function sweepStale(): void {
  for (const name of readdirSafe(tmpdir())) {
    const m = /^ferry-slurm-([0-9a-z]+)-[0-9a-f]{4}-/.exec(name);
    if (!m || !tagDead(m[1]!)) continue;
    const dir = join(tmpdir(), name);
    for (let round = 0; round < 3; round++) for (const pid of pidsMentioning(dir)) kill(pid);
    rmSync(dir, { recursive: true, force: true });
  }
  sweepStaleNetworks(/^ferry-([0-9a-z]+)-[0-9a-f]{4}-s\d+$/);
}

/** Every descendant of the given processes (Linux /proc), deepest last. */
function descendants(roots: number[]): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSafe('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone
    }
  }
  const out: number[] = [];
  const seen = new Set(roots);
  let frontier = roots;
  while (frontier.length > 0) {
    const next: number[] = [];
    for (const [pid, ppid] of parent) if (frontier.includes(ppid) && !seen.has(pid)) (seen.add(pid), next.push(pid));
    out.push(...next);
    frontier = next;
  }
  return out;
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** A TCP port free on every address of this machine (slurmctld listens on all of them). */
async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '0.0.0.0', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface StartSlurmOptions {
  /** CPUs each node offers (default 2). */
  cpus?: number;
  /**
   * How slurmd finds a step's processes (to signal them on scancel, a time limit, the job's end).
   * `pgid` (the default): signals the task's process group. (`cgroup`, what most sites run, cannot
   * run here: several slurmd would share one cgroup tree, and there is no systemd.)
   * `linuxproc`: the process tree, read from /proc/PID/stat with `sscanf("%ld %s %c %ld")`; a
   * process whose name (comm) holds a space does not parse and is never signalled.
   */
  proctrack?: 'pgid' | 'linuxproc';
  /** How long to wait for every node to be idle (default 30 s). */
  readyTimeoutMs?: number;
}

/** Start munged, slurmctld and `n` nodes (1 ≤ n ≤ 50); resolves when every node is idle. Call close() in afterAll. */
export async function startSlurm(n = 2, options: StartSlurmOptions = {}): Promise<TestSlurm> {
  if (slurmUnavailable) throw new Error(slurmUnavailable);
  if (!Number.isInteger(n) || n < 1 || n > 50) throw new Error(`startSlurm: n must be 1..50, not ${n}`);
  sweepStale();
  const tag = newTag();
  const c: Created = { tag, netns: [], children: new Set() };
  open.add(c);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const s of open) teardownSync(s);
    });
  }
  const daemonOut = new Map<string, string>();
  let closing: Promise<void> | undefined;

  const daemon = (label: string, file: string, args: string[], env: Record<string, string>): ChildProcess => {
    const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    c.children.add(child);
    daemonOut.set(label, '');
    const add = (d: Buffer): void => void daemonOut.set(label, daemonOut.get(label)! + d.toString());
    child.stdout!.on('data', add);
    child.stderr!.on('data', add);
    child.on('error', (err) => add(Buffer.from(`spawn failed: ${err.message}\n`)));
    child.on('exit', () => c.children.delete(child));
    return child;
  };

  const logs = (): string => {
    const parts: string[] = [];
    for (const [label, out] of daemonOut) if (out.trim()) parts.push(`--- ${label} (stdout/stderr)\n${out.trim()}`);
    if (c.dir) {
      for (const name of readdirSafe(join(c.dir, 'log')).sort()) {
        let text = '';
        try {
          text = readFileSync(join(c.dir, 'log', name), 'utf8');
        } catch {
          continue;
        }
        parts.push(`--- ${name}\n${text.trim().split('\n').slice(-40).join('\n')}`);
      }
    }
    return parts.join('\n');
  };

  const close = (): Promise<void> => {
    closing ??= (async () => {
      teardownSync(c);
      // Wait until the processes are really gone (a zombie of ours is reaped by Node's child handling).
      const end = Date.now() + 5000;
      while (Date.now() < end && c.dir !== undefined && pidsMentioning(c.dir).some((p) => pidAlive(p) && !isZombie(p))) {
        await new Promise((r) => setTimeout(r, 50));
        teardownSync(c);
      }
      open.delete(c);
    })();
    return closing;
  };

  const env: Record<string, string> = { PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin' };

  try {
    // mkdtemp gives 0700; munged wants its socket's directory (and those above) searchable by all.
    const dir = await fsp.mkdtemp(join(tmpdir(), `ferry-slurm-${tag}-`));
    c.dir = dir;
    await fsp.chmod(dir, 0o755);
    for (const d of ['run', 'log', 'state', 'spool']) await fsp.mkdir(join(dir, d), { mode: 0o755 });
    await fsp.mkdir(join(dir, 'munge'), { mode: 0o700 });
    const key = join(dir, 'munge', 'munge.key');
    await fsp.writeFile(key, randomBytes(1024), { mode: 0o400 });
    const socket = join(dir, 'run', 'munge.sock');
    const conf = join(dir, 'slurm.conf');
    env['SLURM_CONF'] = conf;

    const net = await makeBridge(tag, c);
    const { subnet, bridgeIp } = net;

    const nodes: SlurmNode[] = [];
    for (let i = 0; i < n; i++) {
      const name = `s${i + 1}`;
      const ip = `${subnet}.${11 + i}`;
      const netns = `ferry-${tag}-${name}`;
      const veth = `fs${tag.replace('-', '')}${i}`.slice(0, 15);
      await addNamespace(netns, veth, ip, net, c);
      nodes.push({ name, ip, netns, netnsInode: statSync(`/run/netns/${netns}`).ino });
    }

    const host = hostname().split('.')[0]!;
    const cpus = options.cpus ?? 2;
    const ctldPort = await freePort();
    await fsp.writeFile(
      conf,
      [
        `ClusterName=ferry${tag.replace('-', '')}`.slice(0, 40),
        // slurmctld checks that it runs on this host name; the nodes reach it at the bridge address.
        `SlurmctldHost=${host}(${bridgeIp})`,
        `SlurmctldPort=${ctldPort}`,
        'SlurmUser=root',
        'SlurmdUser=root',
        'AuthType=auth/munge',
        `AuthInfo=socket=${socket}`,
        'CredType=cred/munge',
        `ProctrackType=proctrack/${options.proctrack ?? 'pgid'}`,
        'TaskPlugin=task/none',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_CPU',
        'AccountingStorageType=accounting_storage/none',
        'JobCompType=jobcomp/none',
        'JobAcctGatherType=jobacct_gather/none',
        'MpiDefault=none',
        'ReturnToService=2',
        'KillWait=2',
        'MinJobAge=2',
        'SlurmctldTimeout=10',
        'SlurmdTimeout=10',
        `StateSaveLocation=${join(dir, 'state')}`,
        `SlurmdSpoolDir=${join(dir, 'spool', '%n')}`,
        `SlurmctldPidFile=${join(dir, 'run', 'slurmctld.pid')}`,
        `SlurmdPidFile=${join(dir, 'run', 'slurmd-%n.pid')}`,
        `SlurmctldLogFile=${join(dir, 'log', 'slurmctld.log')}`,
        `SlurmdLogFile=${join(dir, 'log', 'slurmd-%n.log')}`,
        // One line a node: all share this machine's host name, each has its own address and port.
        ...nodes.map((nd, i) => `NodeName=${nd.name} NodeHostname=${host} NodeAddr=${nd.ip} Port=${17001 + i} CPUs=${cpus} RealMemory=1000 State=UNKNOWN`),
        `PartitionName=test Nodes=${nodes.map((nd) => nd.name).join(',')} Default=YES MaxTime=INFINITE State=UP`,
      ]
        .filter(Boolean)
        .join('\n') + '\n',
    );

    // munged as root (the test's user) with a key and socket of its own; -F keeps it our child.
    const munged = daemon('munged', MUNGED, ['-F', `--key-file=${key}`, `--socket=${socket}`, `--pid-file=${join(dir, 'run', 'munged.pid')}`, `--log-file=${join(dir, 'log', 'munged.log')}`, `--seed-file=${join(dir, 'munge', 'seed')}`], env);
    await waitFor('munged to make its socket', () => existsSync(socket), munged, logs, 10_000);

    const ctld = daemon('slurmctld', SLURMCTLD, ['-D', '-f', conf], env);
    // slurmctld answers before the nodes register; then each slurmd, in its namespace.
    const slurmds = nodes.map((nd) => daemon(`slurmd ${nd.name}`, NSENTER, [`--net=/run/netns/${nd.netns}`, SLURMD, '-D', '-N', nd.name, '-f', conf], env));
    const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
    for (;;) {
      for (const [child, label] of [[munged, 'munged'], [ctld, 'slurmctld'], ...slurmds.map((d, i) => [d, `slurmd ${nodes[i]!.name}`] as const)] as const) {
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${label} exited (${child.exitCode ?? child.signalCode}):\n${logs()}`);
      }
      const states = await run(SINFO, ['-h', '-N', '-o', '%N %T'], { env }).then(
        (r) => r.stdout,
        () => '',
      );
      const idle = states.split('\n').filter((l) => /\sidle$/.test(l.trim())).length;
      if (idle === n) break;
      if (Date.now() > deadline) throw new Error(`the Slurm nodes are not idle after ${options.readyTimeoutMs ?? 30_000} ms (sinfo: ${states.trim() || 'no answer'}):\n${logs()}`);
      await new Promise((r) => setTimeout(r, 100));
    }

    const launch = (file: string, args: string[], extraEnv: Record<string, string> = {}): SrunProcess => {
      let out = '';
      let err = '';
      const child = spawn(file, args, { env: { ...env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
      c.children.add(child);
      child.stdout!.on('data', (d) => (out += d));
      child.stderr!.on('data', (d) => (err += d));
      const done = new Promise<number | null>((resolve) => {
        child.on('error', (e) => {
          err += `spawn failed: ${e.message}\n`;
          c.children.delete(child);
          resolve(null);
        });
        child.on('close', (code) => {
          c.children.delete(child);
          resolve(code);
        });
      });
      return { child, stdout: () => out, stderr: () => err, done };
    };

    const client = async (command: 'scancel' | 'squeue' | 'sinfo', args: string[]): Promise<string> => {
      const file = { scancel: SCANCEL, squeue: SQUEUE, sinfo: SINFO }[command];
      try {
        return (await run(file, args, { env })).stdout;
      } catch (e) {
        throw new Error(`${command} ${args.join(' ')}: ${firstLine(e)}`);
      }
    };

    const nodeOf = (pid: number): SlurmNode | undefined => {
      let ino: number;
      try {
        ino = statSync(`/proc/${pid}/ns/net`).ino;
      } catch {
        return undefined;
      }
      return nodes.find((nd) => nd.netnsInode === ino);
    };

    const srun = (args: string[], extraEnv?: Record<string, string>): SrunProcess => launch(SRUN, args, extraEnv);
    const sbatch = (args: string[], extraEnv?: Record<string, string>): SrunProcess => launch(SBATCH, args, extraEnv);

    return { nodes, bridgeIp, dir, conf, env, srun, sbatch, client, pids: (nd) => netnsPids(nd.netns), nodeOf, logs, close };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    await close();
    throw new Error(`cannot start a test Slurm: ${message}`);
  }
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function waitFor(what: string, test: () => boolean, child: ChildProcess, logs: () => string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!test()) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`exited before ${what} (${child.exitCode ?? child.signalCode}):\n${logs()}`);
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}:\n${logs()}`);
    await new Promise((r) => setTimeout(r, 30));
  }
}
