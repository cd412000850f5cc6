/**
 * A real OpenSSH server on 127.0.0.1 for tests: its own host key, a generated client key in
 * authorized_keys, internal-sftp. Tests that need it skip themselves when sshd or ssh-keygen is
 * missing (see `sshdMissing`).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const SSHD = '/usr/sbin/sshd';
export const SSH_KEYGEN = '/usr/bin/ssh-keygen';

/** Why the sshd tests cannot run here, or undefined when they can. */
export const sshdMissing: string | undefined = !existsSync(SSHD)
  ? `sshd is not installed (${SSHD} is missing; apt-get install openssh-server): skipping the SSH/SFTP tests`
  : !existsSync(SSH_KEYGEN)
    ? `ssh-keygen is not installed (${SSH_KEYGEN} is missing; apt-get install openssh-client): skipping the SSH/SFTP tests`
    : undefined;

let warned = false;
/** Print the skip reason once per test process. */
export function warnIfSshdMissing(): void {
  if (sshdMissing && !warned) {
    warned = true;
    console.warn(sshdMissing);
  }
}

export interface KeyPair {
  /** Path of the private key; the public key is at `${path}.pub`. */
  path: string;
  /** The public key line (`ssh-ed25519 AAAA... comment`). */
  publicLine: string;
}

export async function makeKey(path: string, type: 'ed25519' | 'ecdsa' | 'rsa' = 'ed25519', comment = 'ferry-test'): Promise<KeyPair> {
  await run(SSH_KEYGEN, ['-q', '-t', type, ...(type === 'rsa' ? ['-b', '2048'] : []), '-N', '', '-C', comment, '-f', path]);
  return { path, publicLine: (await fsp.readFile(path + '.pub', 'utf8')).trim() };
}

export interface Sshd {
  host: '127.0.0.1';
  port: number;
  /** The user the tests log in as (the one running them). */
  user: string;
  dir: string;
  /** A key the server accepts. */
  clientKey: KeyPair;
  /** The server's (first) host key, e.g. for known_hosts. */
  hostKey: KeyPair;
  /** All its host keys, one per type asked for. */
  hostKeys: KeyPair[];
  /** Kill the per-connection sshd processes: every open connection drops, the server keeps listening. */
  killSessions(): Promise<number>;
  /** Everything sshd printed (-e): useful when a test fails. */
  log(): string;
  /** Kill the server (connections drop); start() again on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stop and remove the directory. */
  cleanup(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolve when an SSH banner answers at host:port; fail when `child` (the sshd) exits first or the deadline passes. */
export async function waitForSshBanner(host: string, port: number, child: ChildProcess, deadlineMs: number, log: () => string = () => ''): Promise<void> {
  const until = Date.now() + deadlineMs;
  const said = () => (log() ? `:\n${log()}` : '');
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`sshd on ${host}:${port} exited (${child.exitCode ?? child.signalCode})${said()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = tcpConnect({ host, port });
      const done = (v: boolean): void => {
        s.destroy();
        resolve(v);
      };
      s.setTimeout(1000, () => done(false));
      s.once('error', () => done(false));
      s.once('data', (d) => done(d.toString('latin1').startsWith('SSH-')));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`sshd did not answer on ${host}:${port} within ${deadlineMs} ms${said()}`);
    await new Promise((r) => setTimeout(r, 30));
  }
}

/** Process ids whose parent is `pid` (Linux /proc). */
async function childrenOf(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await fsp.readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) out.push(Number(name));
  }
  return out;
}

export async function startSshd(options: { extraConfig?: string; hostKeyTypes?: ('ed25519' | 'ecdsa' | 'rsa')[] } = {}): Promise<Sshd> {
  if (sshdMissing) throw new Error(sshdMissing);
  // sshd refuses to start without its privilege-separation directory.
  await fsp.mkdir('/run/sshd', { recursive: true, mode: 0o755 }).catch(() => {});
  const dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-sshd-'));
  const hostKeys: KeyPair[] = [];
  for (const t of options.hostKeyTypes ?? ['ed25519']) hostKeys.push(await makeKey(join(dir, `host_${t}`), t, 'ferry-test-host'));
  const hostKey = hostKeys[0]!;
  const clientKey = await makeKey(join(dir, 'client_ed25519'), 'ed25519', 'ferry-test-client');
  await fsp.writeFile(join(dir, 'authorized_keys'), clientKey.publicLine + '\n', { mode: 0o600 });
  const user = userInfo().username;
  let port = 0;
  let child: ChildProcess | undefined;
  let log = '';

  const writeConfig = async (): Promise<string> => {
    const config = join(dir, 'sshd_config');
    await fsp.writeFile(
      config,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        ...hostKeys.map((k) => `HostKey ${k.path}`),
        `PidFile ${join(dir, 'sshd.pid')}`,
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        'Subsystem sftp internal-sftp',
        'AllowTcpForwarding yes',
        'StrictModes no',
        'LogLevel INFO',
        options.extraConfig ?? '',
      ].join('\n') + '\n',
    );
    return config;
  };

  const start = async (): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      if (port === 0 || attempt > 0) port = await freePort();
      const config = await writeConfig();
      const c = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
      c.stderr!.setEncoding('utf8');
      c.stderr!.on('data', (d: string) => {
        log += d;
      });
      c.on('error', () => {});
      try {
        await waitForSshBanner('127.0.0.1', port, c, 10_000);
        child = c;
        return;
      } catch (err) {
        c.kill('SIGKILL');
        // Another process may have taken the port between freePort() and sshd's bind: try another.
        if (attempt >= 2) throw new Error(`${(err as Error).message}\n${log}`);
      }
    }
  };

  const stop = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGTERM');
      setTimeout(() => c.kill('SIGKILL'), 2000).unref();
    });
  };

  await start();
  const sshd: Sshd = {
    host: '127.0.0.1',
    get port() {
      return port;
    },
    user,
    dir,
    clientKey,
    hostKey,
    hostKeys,
    log: () => log,
    killSessions: async () => {
      const main = child?.pid;
      if (!main) return 0;
      let killed = 0;
      for (const pid of await childrenOf(main)) {
        try {
          process.kill(pid, 'SIGKILL');
          killed++;
        } catch {
          // already gone
        }
      }
      return killed;
    },
    stop,
    // Restart on the same port (connections already made are gone).
    start: async () => {
      const config = await writeConfig();
      const c = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
      c.stderr!.setEncoding('utf8');
      c.stderr!.on('data', (d: string) => {
        log += d;
      });
      c.on('error', () => {});
      await waitForSshBanner('127.0.0.1', port, c, 10_000);
      child = c;
    },
    cleanup: async () => {
      await stop();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
  return sshd;
}

export interface ClientFiles {
  /** A directory standing in for ~/.ssh. */
  dir: string;
  configPath: string;
  knownHostsPath: string;
  /** Options for connectSsh: these files, no system config, no agent. */
  sshOptions: {
    configPath: string;
    systemConfigPath: null;
    knownHostsPath: string;
    globalKnownHostsPaths: string[];
    identityFiles: string[];
    agent: false;
  };
}

/**
 * A temporary ~/.ssh for a test: `config` (the given text) and `known_hosts` (the given lines, or
 * empty). The default identity is the server's client key unless `identityFiles` says otherwise.
 */
export async function writeClientFiles(sshd: Pick<Sshd, 'clientKey' | 'dir'>, options: { config?: string; knownHosts?: string[]; identityFiles?: string[] } = {}): Promise<ClientFiles> {
  // Inside the server's directory, so that cleanup() removes it too.
  const dir = await fsp.mkdtemp(join(sshd.dir, 'client-'));
  const configPath = join(dir, 'config');
  const knownHostsPath = join(dir, 'known_hosts');
  await fsp.writeFile(configPath, options.config ?? '', { mode: 0o600 });
  if (options.knownHosts) await fsp.writeFile(knownHostsPath, options.knownHosts.map((l) => l + '\n').join(''), { mode: 0o600 });
  return {
    dir,
    configPath,
    knownHostsPath,
    sshOptions: {
      configPath,
      systemConfigPath: null,
      knownHostsPath,
      globalKnownHostsPaths: [],
      identityFiles: options.identityFiles ?? [sshd.clientKey.path],
      agent: false,
    },
  };
}
