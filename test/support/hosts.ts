/**
 * Separate SSH hosts on one machine for cluster tests: each host is a network namespace on a
 * bridge of its own, with its own address, its own sshd (own host key, one shared authorized key)
 * and its own worker cache (`SetEnv XDG_CACHE_HOME` in its sshd_config), while all of them share
 * this machine's file system and process table. Links can be capped (tbf) live.
 *
 * Needs root (network namespaces, bridges, tc). When they cannot be made, `hostsUnavailable` says
 * why and the tests that need hosts skip themselves (`warnIfHostsUnavailable`).
 *
 * Every name carries this process's pid and a random part, and every call takes a /24 of its own,
 * so test files running in parallel processes do not meet. `close()` kills every process in the
 * namespaces (sshd and whatever its sessions started), then deletes the namespaces, the bridge and
 * the temporary files; it is safe after a partial start, and runs at process exit when a test forgot
 * it. A later call removes what a killed test process left behind.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { makeKey, SSHD, sshdMissing, waitForSshBanner, type KeyPair } from './sshd.js';
import { IP, NSENTER, TC, addNamespace, firstLine, makeBridge, newTag, removeNetworkSync, sweepStaleNetworks, tagDead } from './netns.js';

const run = promisify(execFile);

/** Try, synchronously, to make (and remove) what startHosts needs; the reason it cannot, or undefined. */
function probe(): string | undefined {
  if (sshdMissing) return sshdMissing;
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'network namespaces need root (the tests run as a normal user)';
  for (const [name, path] of [
    ['ip', IP],
    ['tc', TC],
    ['nsenter', NSENTER],
  ] as const) {
    if (!existsSync(path)) return `${name} is not installed (${path} is missing; apt-get install iproute2 util-linux)`;
  }
  const tag = newTag();
  const ns = `ferry-${tag}-probe`;
  const br = `fb-${tag}`;
  try {
    execFileSync(IP, ['netns', 'add', ns], { stdio: 'pipe' });
  } catch (err) {
    return `cannot create a network namespace (${firstLine(err)})`;
  }
  try {
    execFileSync(IP, ['link', 'add', br, 'type', 'bridge'], { stdio: 'pipe' });
    execFileSync(IP, ['link', 'del', br], { stdio: 'pipe' });
  } catch (err) {
    return `cannot create a bridge (${firstLine(err)})`;
  } finally {
    try {
      execFileSync(IP, ['netns', 'del', ns], { stdio: 'pipe' });
    } catch {
      // reported by the next run's stale-namespace sweep
    }
  }
  return undefined;
}

/** Why hosts in network namespaces cannot be made here, or undefined when they can. */
export const hostsUnavailable: string | undefined = probe();

let warned = false;
/** Print once per test process that the tests needing hosts were skipped, and why. */
export function warnIfHostsUnavailable(what = 'the cluster tests'): void {
  if (hostsUnavailable && !warned) {
    warned = true;
    console.warn(`skipping ${what}: ${hostsUnavailable}`);
  }
}

export interface TestHost {
  /** `h1`, `h2`, …: also a Host alias in the client files' ssh config. */
  name: string;
  index: number;
  ip: string;
  port: 22;
  user: 'root';
  /** `root@10.x.y.z`: what `--worker` takes. */
  sshAddr: string;
  /** The network namespace (`/run/netns/<netns>`). */
  netns: string;
  /** The host end of its link on the bridge (tc shapes traffic towards the host here). */
  veth: string;
  /** This host's XDG_CACHE_HOME: the worker cache lives in `<cacheDir>/ferry/`. */
  cacheDir: string;
  /** The host's private directory (sshd config, host key, pid file). */
  dir: string;
  hostKey: KeyPair;
  /** Its line for known_hosts (`10.x.y.z ssh-ed25519 AAAA…`). */
  knownHostLine: string;
  /** Environment the host's sshd gives every session (SetEnv); XDG_CACHE_HOME=cacheDir unless this sets it. */
  env: Record<string, string>;
  /** Extra lines of its sshd_config. */
  extraConfig: string;
}

export interface TestClientFiles {
  /** A directory usable as HOME for a child process: `<home>/.ssh` holds the files below. */
  home: string;
  /** `<home>/.ssh` */
  dir: string;
  /** Host aliases h1, h2, … (HostName, User root). */
  configPath: string;
  /** Every host's key (so `StrictHostKeyChecking yes` accepts them). */
  knownHostsPath: string;
  /** The key every host accepts (also `<home>/.ssh/id_ed25519`). */
  identityPath: string;
  sshOptions: {
    configPath: string;
    systemConfigPath: null;
    knownHostsPath: string;
    globalKnownHostsPaths: string[];
    identityFiles: string[];
    agent: false;
  };
}

export interface TestHosts {
  hosts: TestHost[];
  /** The bridge's address in the root namespace: what hosts reach this machine at (127.0.0.1 is their own). */
  bridgeIp: string;
  bridge: string;
  /** `10.x.y` */
  subnet: string;
  /** An address in the hosts' /24 that nobody answers on (for "unreachable host" tests). */
  unusedIp: string;
  clientFiles: TestClientFiles;
  sshOptions: TestClientFiles['sshOptions'];
  /** Cap the host's link both ways (Mbit/s); 0 or Infinity removes the cap. Takes effect live. */
  capRate(host: TestHost, mbit: number): Promise<void>;
  /** Stop the host's sshd and drop its open connections (what their sessions started sees its stdin end). */
  stopSshd(host: TestHost): Promise<void>;
  /**
   * Start the host's sshd again, optionally with a different session environment (SetEnv) or
   * extra sshd_config lines (e.g. `AllowTcpForwarding no`); each replaces the previous one.
   */
  startSshd(host: TestHost, options?: { env?: Record<string, string>; extraConfig?: string }): Promise<void>;
  /** Process ids running in the host's namespace (sshd, sessions and what they started). */
  pids(host: TestHost): Promise<number[]>;
  /** What the host's sshd printed (-e), for a failing test's message. */
  log(host: TestHost): string;
  /** Kill everything in the namespaces, delete them, the bridge and the files. Idempotent. */
  close(): Promise<void>;
}

export interface StartHostsOptions {
  /** Cap every link at this many Mbit/s from the start. */
  rateMbit?: number;
  /** Extra session environment for host i (0-based), set with sshd's SetEnv (e.g. a PATH without node). */
  env?: (index: number) => Record<string, string> | undefined;
}

/** What close() must undo, filled in as startHosts goes, so a partial start is undone too. */
interface Created {
  dir?: string;
  bridge?: string;
  netns: string[];
  sshd: Map<string, ChildProcess>;
}

const openSets = new Set<Created>();
let exitHook = false;

/** The last resort at process exit: synchronous, for sets a test did not close. */
function closeSync(c: Created): void {
  for (const child of c.sshd.values()) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone
    }
  }
  removeNetworkSync(c);
}

/** Remove namespaces, bridges and directories whose creating test process is gone (it was killed before close()). */
async function sweepStale(): Promise<void> {
  sweepStaleNetworks(/^ferry-([0-9a-z]+)-[0-9a-f]{4}-/);
  for (const name of await fsp.readdir(tmpdir()).catch(() => [] as string[])) {
    const m = /^ferry-hosts-([0-9a-z]+)-[0-9a-f]{4}-/.exec(name);
    if (m && tagDead(m[1]!)) await fsp.rm(join(tmpdir(), name), { recursive: true, force: true });
  }
}


/** Start `n` hosts (n ≤ 200). Call close() in afterAll. */
export async function startHosts(n: number, options: StartHostsOptions = {}): Promise<TestHosts> {
  if (hostsUnavailable) throw new Error(hostsUnavailable);
  if (!Number.isInteger(n) || n < 1 || n > 200) throw new Error(`startHosts: n must be 1..200, not ${n}`);
  await sweepStale();
  await fsp.mkdir('/run/sshd', { recursive: true, mode: 0o755 }).catch(() => {});

  const tag = newTag();
  const c: Created = { netns: [], sshd: new Map() };
  openSets.add(c);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const s of openSets) closeSync(s);
    });
  }
  const logs = new Map<string, string>();
  const hosts: TestHost[] = [];
  let closing: Promise<void> | undefined;

  const sh = async (file: string, args: string[]): Promise<string> => {
    try {
      return (await run(file, args)).stdout;
    } catch (err) {
      throw new Error(`${file} ${args.join(' ')}: ${firstLine(err)}`);
    }
  };

  const writeSshdConfig = async (h: TestHost, authorizedKeys: string): Promise<string> => {
    const config = join(h.dir, 'sshd_config');
    const env = { XDG_CACHE_HOME: h.cacheDir, ...h.env };
    await fsp.writeFile(
      config,
      [
        // First: sshd takes the first value of a keyword.
        h.extraConfig,
        'Port 22',
        `ListenAddress ${h.ip}`,
        `HostKey ${h.hostKey.path}`,
        `PidFile ${join(h.dir, 'sshd.pid')}`,
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        `AuthorizedKeysFile ${authorizedKeys}`,
        'Subsystem sftp internal-sftp',
        'AllowTcpForwarding yes',
        'StrictModes no',
        'LogLevel INFO',
        // sshd (≥ 8.7) sets these in every session after its defaults, so PATH can be replaced too.
        `SetEnv ${Object.entries(env)
          .map(([k, v]) => `"${k}=${v}"`)
          .join(' ')}`,
      ].join('\n') + '\n',
    );
    return config;
  };

  let authorizedKeys = '';
  const startSshdOf = async (h: TestHost): Promise<void> => {
    const config = await writeSshdConfig(h, authorizedKeys);
    let log = '';
    const child = spawn(NSENTER, [`--net=/run/netns/${h.netns}`, SSHD, '-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      log += d;
      logs.set(h.name, (logs.get(h.name) ?? '') + d);
    });
    child.on('error', () => {});
    c.sshd.set(h.name, child);
    await waitForSshBanner(h.ip, 22, child, 10_000, () => log);
  };

  const stopSshdOf = async (h: TestHost): Promise<void> => {
    const child = c.sshd.get(h.name);
    c.sshd.delete(h.name);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    // The per-connection sshd processes are its children: drop them too.
    for (const pid of await childrenOf(child.pid!)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  };

  const capRate = async (h: TestHost, mbit: number): Promise<void> => {
    const off = !(mbit > 0) || mbit === Infinity;
    for (const [prefix, dev] of [
      [[] as string[], h.veth],
      [['-n', h.netns], 'eth0'],
    ] as const) {
      if (off) {
        await run(TC, [...prefix, 'qdisc', 'del', 'dev', dev, 'root']).catch(() => {});
      } else {
        await sh(TC, [...prefix, 'qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', `${mbit}mbit`, 'burst', '64kb', 'latency', '50ms']);
      }
    }
  };

  const pids = async (h: TestHost): Promise<number[]> => {
    const out = await run(IP, ['netns', 'pids', h.netns]).catch(() => ({ stdout: '' }));
    return out.stdout
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  };

  const close = (): Promise<void> => {
    closing ??= (async () => {
      for (const h of hosts) await stopSshdOf(h).catch(() => {});
      for (const child of c.sshd.values()) child.kill('SIGKILL');
      // Whatever the sessions started (workers) runs in the namespaces too: removeNetworkSync kills it.
      removeNetworkSync(c);
      openSets.delete(c);
    })();
    return closing;
  };

  try {
    c.dir = await fsp.mkdtemp(join(tmpdir(), `ferry-hosts-${tag}-`));
    const net = await makeBridge(tag, c);
    const { bridge, subnet, bridgeIp } = net;

    const clientKey = await makeKey(join(c.dir, 'id_ed25519'), 'ed25519', 'ferry-test-client');
    authorizedKeys = join(c.dir, 'authorized_keys');
    await fsp.writeFile(authorizedKeys, clientKey.publicLine + '\n', { mode: 0o600 });

    for (let i = 0; i < n; i++) {
      const name = `h${i + 1}`;
      const ip = `${subnet}.${11 + i}`;
      const netns = `ferry-${tag}-${name}`;
      const veth = `fv${tag.replace('-', '')}${i}`.slice(0, 15);
      const dir = join(c.dir, name);
      await fsp.mkdir(join(dir, 'cache'), { recursive: true });
      await addNamespace(netns, veth, ip, net, c);
      const hostKey = await makeKey(join(dir, 'host_ed25519'), 'ed25519', `ferry-test-${name}`);
      const h: TestHost = {
        name,
        index: i,
        ip,
        port: 22,
        user: 'root',
        sshAddr: `root@${ip}`,
        netns,
        veth,
        cacheDir: join(dir, 'cache'),
        dir,
        hostKey,
        knownHostLine: `${ip} ${hostKey.publicLine.split(' ').slice(0, 2).join(' ')}`,
        env: options.env?.(i) ?? {},
        extraConfig: '',
      };
      hosts.push(h);
      if (options.rateMbit !== undefined) await capRate(h, options.rateMbit);
    }
    await Promise.all(hosts.map((h) => startSshdOf(h)));

    const home = join(c.dir, 'home');
    const sshDir = join(home, '.ssh');
    await fsp.mkdir(sshDir, { recursive: true, mode: 0o700 });
    const identityPath = join(sshDir, 'id_ed25519');
    await fsp.copyFile(clientKey.path, identityPath);
    await fsp.chmod(identityPath, 0o600);
    await fsp.copyFile(clientKey.path + '.pub', identityPath + '.pub');
    const configPath = join(sshDir, 'config');
    await fsp.writeFile(
      configPath,
      // The key is the default identity (~/.ssh/id_ed25519): the configuration names none, so that
      // a test can offer another one through SshOptions.identityFiles.
      hosts.map((h) => `Host ${h.name}\n  HostName ${h.ip}\n  User root\n`).join('\n'),
      { mode: 0o600 },
    );
    const knownHostsPath = join(sshDir, 'known_hosts');
    await fsp.writeFile(knownHostsPath, hosts.map((h) => h.knownHostLine + '\n').join(''), { mode: 0o600 });
    const sshOptions = { configPath, systemConfigPath: null, knownHostsPath, globalKnownHostsPaths: [], identityFiles: [identityPath], agent: false as const };
    const clientFiles: TestClientFiles = { home, dir: sshDir, configPath, knownHostsPath, identityPath, sshOptions };

    return {
      hosts,
      bridgeIp,
      bridge,
      subnet,
      unusedIp: `${subnet}.250`,
      clientFiles,
      sshOptions,
      capRate,
      stopSshd: stopSshdOf,
      startSshd: async (h, o = {}) => {
        await stopSshdOf(h);
        if (o.env) h.env = o.env;
        if (o.extraConfig !== undefined) h.extraConfig = o.extraConfig;
        await startSshdOf(h);
      },
      pids,
      log: (h) => logs.get(h.name) ?? '',
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Process ids whose parent is `pid` (Linux /proc). */
async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await fsp.readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) out.push(Number(name));
  }
  return out;
}

/**
 * A directory for a host's PATH: every command of /usr/bin and /bin except those named in `without`,
 * plus `extra` scripts (name → shell script body), e.g. a `node` that says it is v18.
 */
export async function makeBinDir(dir: string, options: { without?: string[]; extra?: Record<string, string> } = {}): Promise<string> {
  const without = new Set(options.without ?? []);
  await fsp.mkdir(dir, { recursive: true });
  for (const src of ['/usr/local/bin', '/usr/bin', '/bin', '/usr/sbin', '/sbin']) {
    let names: string[];
    try {
      names = await fsp.readdir(src);
    } catch {
      continue;
    }
    for (const name of names) {
      if (without.has(name) || name in (options.extra ?? {})) continue;
      await fsp.symlink(join(src, name), join(dir, name)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
    }
  }
  for (const [name, body] of Object.entries(options.extra ?? {})) {
    await fsp.writeFile(join(dir, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  }
  return dir;
}
