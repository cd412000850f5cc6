/**
 * What the test hosts (hosts.ts) and the test Slurm (slurm.ts) both do with network namespaces:
 * names that say which test process made them, killing what runs in a namespace, removing
 * namespaces and bridges (also those of test processes that were killed), and picking a free /24.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const IP = '/usr/sbin/ip';
export const TC = '/usr/sbin/tc';
export const NSENTER = '/usr/bin/nsenter';

/**
 * `<pid in base 36>-<4 hex>`: names made with it (`ferry-<tag>-…` namespaces, `fb-<tag>` bridges)
 * tell which process made them, so that a later run can remove what a killed one left.
 */
export function newTag(): string {
  return `${process.pid.toString(36)}-${randomBytes(2).toString('hex')}`;
}

/** The tag's process is gone. */
export function tagDead(pid36: string): boolean {
  return !pidAlive(parseInt(pid36, 36));
}

/** A command's error in one line (its stderr's first line, else its message). */
export function firstLine(err: unknown): string {
  const e = err as { stderr?: Buffer | string; message?: string };
  const text = e.stderr && String(e.stderr).trim() ? String(e.stderr) : (e.message ?? String(err));
  return text.trim().split('\n')[0] ?? '';
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function killPid(pid: number | undefined, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (!pid) return;
  try {
    process.kill(pid, signal);
  } catch {
    // gone
  }
}

/** Processes running in a namespace (none when it is gone). */
export function netnsPids(ns: string): number[] {
  try {
    return execFileSync(IP, ['netns', 'pids', ns], { stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** Kill what runs in the namespaces, then delete them, the bridge and the directory. Synchronous: also for process exit. */
export function removeNetworkSync(c: { netns: string[]; bridge?: string | undefined; dir?: string | undefined }): void {
  for (const ns of c.netns) {
    for (const pid of netnsPids(ns)) killPid(pid);
    try {
      execFileSync(IP, ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // gone
    }
  }
  if (c.bridge) {
    try {
      execFileSync(IP, ['link', 'del', c.bridge], { stdio: 'ignore' });
    } catch {
      // gone
    }
  }
  if (c.dir) rmSync(c.dir, { recursive: true, force: true });
}

/** Namespaces matching `pattern` (its first group: the tag's pid in base 36) and `fb-<tag>` bridges whose test process is gone. */
export function sweepStaleNetworks(pattern: RegExp): void {
  let names: string[] = [];
  try {
    names = readdirSync('/run/netns');
  } catch {
    names = [];
  }
  for (const ns of names) {
    const m = pattern.exec(ns);
    if (m && tagDead(m[1]!)) removeNetworkSync({ netns: [ns] });
  }
  let links = '';
  try {
    links = execFileSync(IP, ['-o', 'link', 'show', 'type', 'bridge'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  } catch {
    return;
  }
  for (const line of links.split('\n')) {
    const m = /^\d+:\s+(fb-([0-9a-z]+)-[0-9a-f]{4})[:@]/.exec(line);
    if (m && tagDead(m[2]!)) removeNetworkSync({ netns: [], bridge: m[1]! });
  }
}

/** A /24 in 10.200–249.x that no interface or route of this machine uses. */
export async function pickSubnet(): Promise<string> {
  const used = new Set<string>();
  const addrs = await run(IP, ['-o', '-4', 'addr', 'show']);
  const routes = await run(IP, ['-4', 'route', 'show', 'table', 'all']);
  for (const m of (addrs.stdout + '\n' + routes.stdout).matchAll(/\b(10\.\d+\.\d+)\.\d+/g)) used.add(m[1]!);
  for (let i = 0; i < 200; i++) {
    const b = randomBytes(2);
    const subnet = `10.${200 + (b[0]! % 50)}.${b[1]!}`;
    if (!used.has(subnet)) return subnet;
  }
  throw new Error('no free 10.2xx.y.0/24 for test hosts');
}

/** Make `fb-<tag>`, a bridge with address `<subnet>.1` on a free /24, and note it in `c` for removal. */
export async function makeBridge(tag: string, c: { bridge?: string | undefined }): Promise<{ bridge: string; subnet: string; bridgeIp: string }> {
  const subnet = await pickSubnet();
  const bridgeIp = `${subnet}.1`;
  const bridge = `fb-${tag}`;
  c.bridge = bridge;
  await ip(['link', 'add', bridge, 'type', 'bridge']);
  await ip(['addr', 'add', `${bridgeIp}/24`, 'dev', bridge]);
  await ip(['link', 'set', bridge, 'up']);
  // Another process may have taken the same /24 between the check and our add.
  const clash = (await run(IP, ['-o', '-4', 'addr', 'show'])).stdout.split('\n').filter((l) => l.includes(` ${subnet}.`) && !l.includes(` ${bridge} `));
  if (clash.length > 0) throw new Error(`subnet ${subnet}.0/24 clashes with: ${clash.join('; ')}`);
  return { bridge, subnet, bridgeIp };
}

/** A namespace `netns` on the bridge: its `eth0` at `address`/24 (the host end is `veth`), routed through `bridgeIp`. */
export async function addNamespace(netns: string, veth: string, address: string, net: { bridge: string; bridgeIp: string }, c: { netns: string[] }): Promise<void> {
  await ip(['netns', 'add', netns]);
  c.netns.push(netns);
  await ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
  await ip(['link', 'set', veth, 'master', net.bridge, 'up']);
  await ip(['-n', netns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
  await ip(['-n', netns, 'link', 'set', 'eth0', 'up']);
  await ip(['-n', netns, 'link', 'set', 'lo', 'up']);
  await ip(['-n', netns, 'route', 'add', 'default', 'via', net.bridgeIp]);
}

async function ip(args: string[]): Promise<void> {
  try {
    await run(IP, args);
  } catch (err) {
    throw new Error(`ip ${args.join(' ')}: ${firstLine(err)}`);
  }
}
