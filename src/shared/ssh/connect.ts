import { existsSync, promises as fsp } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { AnyAuthMethod, AuthenticationType, Client as SshClient, ConnectConfig, ParsedKey, SFTPWrapper, ServerHostKeyAlgorithm } from 'ssh2';
import { AbortedError, FatalError, FerryError, PermissionDeniedError, TransientError, retryClassOf } from '../errors.js';
import { expandTokens, localUserName, parseJumpHost, readSshConfig } from './config.js';
import { addKnownHost, checkHostKey, fingerprint, hostKeyAlgorithmsFor, keyTypeOf, knownHostLines, knownHostName } from './known-hosts.js';

type Ssh2 = typeof import('ssh2');

/** ssh2 takes ~70 ms to load: only runs that use SSH pay for it. */
async function loadSsh2(): Promise<Ssh2> {
  const m = (await import('ssh2')) as Ssh2 & { default?: Ssh2 };
  return m.default ?? m;
}

/** Where to connect: what the user wrote (an address or a Host alias of ~/.ssh/config). */
export interface SshTarget {
  user?: string;
  host: string;
  port?: number;
}

/**
 * How to connect. Paths default to the user's real files under os.homedir(); tests point them
 * elsewhere. Each is a default that ~/.ssh/config may override for a host, as in OpenSSH.
 */
export interface SshOptions {
  /** A password given in the address. */
  password?: string;
  /** ~/.ssh/config */
  configPath?: string;
  /** /etc/ssh/ssh_config; null reads none. */
  systemConfigPath?: string | null;
  /** ~/.ssh/known_hosts: checked, and where unknown hosts are recorded. */
  knownHostsPath?: string;
  /** /etc/ssh/ssh_known_hosts (checked, never written). */
  globalKnownHostsPaths?: string[];
  /** The default identities, used when the configuration names none: ~/.ssh/id_ed25519, id_ecdsa, id_rsa. */
  identityFiles?: string[];
  /** The agent's socket; false for none. Default: the configuration's IdentityAgent, else SSH_AUTH_SOCK. */
  agent?: string | false;
  /** Environment for SSH_AUTH_SOCK (defaults to process.env). */
  env?: NodeJS.ProcessEnv;
  /** Milliseconds for TCP connect + handshake + authentication (default: ConnectTimeout, else 20 s). */
  readyTimeout?: number;
  signal?: AbortSignal;
  debug?: (message: string) => void;
}

/** A target after ~/.ssh/config: everything connectSsh needs, nothing secret. */
export interface ResolvedSshTarget {
  /** The host as the user wrote it. */
  alias: string;
  /** The host to connect to (HostName). */
  host: string;
  port: number;
  user: string;
  /** Identity files to try, in order, after expansion (missing ones are skipped at connect time). */
  identityFiles: string[];
  /** The agent socket, if any. */
  agent?: string;
  /** The user's known_hosts files; the first one records new hosts. */
  knownHostsFiles: string[];
  globalKnownHostsFiles: string[];
  /** The name known_hosts holds for this host: `host` or `[host]:port`. */
  knownHostName: string;
  /** 'yes' refuses unknown hosts; anything else records them (OpenSSH's accept-new). */
  strictHostKeyChecking: string;
  hashKnownHosts: boolean;
  /** Milliseconds. */
  readyTimeout: number;
  /** Milliseconds; 0 disables. */
  keepaliveInterval: number;
  keepaliveCountMax: number;
  /**
   * The jump host this one is reached through (ProxyJump): connect to `via` (itself perhaps through
   * its own `via`), then open a channel from it to `host:port`. Undefined for a direct connection.
   */
  via?: ResolvedSshTarget;
}

/** Hops a ProxyJump chain may have (counting jump hosts' own ProxyJump): more is taken for a loop. */
const MAX_JUMPS = 8;

const DEFAULT_READY_TIMEOUT = 20_000;
const DEFAULT_KEEPALIVE = 15_000;
const HOST_KEY_ALGORITHMS = new Set<string>([
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'rsa-sha2-512',
  'rsa-sha2-256',
  'ssh-rsa',
]);

/** `user@host:port`, for messages. */
export function describeTarget(r: Pick<ResolvedSshTarget, 'user' | 'host' | 'port'>): string {
  const host = r.host.includes(':') ? `[${r.host}]` : r.host;
  return `${r.user}@${host}:${r.port}`;
}

function hostPort(r: Pick<ResolvedSshTarget, 'host' | 'port'>): string {
  return `${r.host.includes(':') ? `[${r.host}]` : r.host}:${r.port}`;
}

/** Apply ~/.ssh/config (and the system's) to a target. Reads local files only. */
export async function resolveSshTarget(target: SshTarget, options: SshOptions = {}): Promise<ResolvedSshTarget> {
  return resolveHop(target, options, { from: 'config' }, 0);
}

/**
 * Where a hop's jump host comes from. OpenSSH turns `ProxyJump a,b` for `t` into `ssh -J a -W t b`:
 * the first hop `a` follows its own ProxyJump from the configuration; a later hop `b` is reached
 * through the hop before it, whatever its own configuration says.
 */
type JumpSource = { from: 'config' } | { from: 'chain'; via: ResolvedSshTarget };

async function resolveHop(target: SshTarget, options: SshOptions, jump: JumpSource, depth: number): Promise<ResolvedSshTarget> {
  const home = homedir();
  const env = options.env ?? process.env;
  const configPath = options.configPath ?? join(home, '.ssh', 'config');
  const systemConfigPath = options.systemConfigPath === undefined ? '/etc/ssh/ssh_config' : options.systemConfigPath;
  // OpenSSH lowercases the host name before matching and before %h.
  const alias = target.host.toLowerCase();
  const cfg = await readSshConfig(alias, { user: configPath, ...(systemConfigPath ? { system: systemConfigPath } : {}) }, home);
  const localUser = localUserName();
  const hostTokens = { h: alias, n: target.host, d: home, u: localUser };
  const host = cfg.hostName ? expandTokens(cfg.hostName, hostTokens, home) : alias;
  const port = target.port ?? cfg.port ?? 22;
  const user = target.user ?? cfg.user ?? localUser;
  const tokens = { h: host, n: target.host, p: String(port), r: user, d: home, u: localUser };
  const defaults = options.identityFiles ?? ['id_ed25519', 'id_ecdsa', 'id_rsa'].map((n) => join(home, '.ssh', n));
  const identityFiles = cfg.identityFiles.length > 0 ? cfg.identityFiles.map((f) => expandTokens(f, tokens, home)) : defaults;

  let agent: string | undefined;
  if (options.agent !== undefined) {
    if (options.agent !== false) agent = options.agent;
  } else if (!cfg.identitiesOnly) {
    const ia = cfg.identityAgent;
    if (ia === undefined || ia === 'SSH_AUTH_SOCK') agent = env['SSH_AUTH_SOCK'] || undefined;
    else if (ia.toLowerCase() !== 'none') agent = expandTokens(ia.replace(/^\$\{?(\w+)\}?$/, (_m, v: string) => env[v] ?? ''), tokens, home) || undefined;
  }

  const knownHostsFiles = (cfg.userKnownHostsFiles ?? [options.knownHostsPath ?? join(home, '.ssh', 'known_hosts')]).map((f) => expandTokens(f, tokens, home));
  const globalKnownHostsFiles = cfg.globalKnownHostsFiles ?? options.globalKnownHostsPaths ?? ['/etc/ssh/ssh_known_hosts'];
  const readyTimeout = options.readyTimeout ?? (cfg.connectTimeout !== undefined ? cfg.connectTimeout * 1000 : DEFAULT_READY_TIMEOUT);
  const keepaliveInterval = cfg.serverAliveInterval !== undefined && cfg.serverAliveInterval > 0 ? cfg.serverAliveInterval * 1000 : DEFAULT_KEEPALIVE;
  let via: ResolvedSshTarget | undefined;
  if (jump.from === 'chain') via = jump.via;
  else if (cfg.proxyJump !== undefined && cfg.proxyJump.toLowerCase() !== 'none') {
    // As OpenSSH ("jumphost loop via"): a host whose last jump is itself, e.g. `Host *` with a
    // ProxyJump that also matches the jump host.
    const last = parseJumpHost(cfg.proxyJump.split(',').at(-1) ?? '');
    if (last && last.host.toLowerCase() === alias && (last.port ?? 22) === port && (last.user ?? user) === user) {
      throw new FatalError(`ssh ${target.host}: ProxyJump loop: ${target.host} would be its own jump host (exclude it from the Host pattern that sets ProxyJump, e.g. "Host * !${target.host}")`);
    }
    via = await resolveJumps(target.host, cfg.proxyJump, options, depth);
  }
  return {
    alias: target.host,
    host,
    port,
    user,
    identityFiles,
    ...(agent ? { agent } : {}),
    knownHostsFiles,
    globalKnownHostsFiles,
    knownHostName: knownHostName(cfg.hostKeyAlias ?? host, port),
    strictHostKeyChecking: cfg.strictHostKeyChecking ?? 'ask',
    hashKnownHosts: cfg.hashKnownHosts ?? false,
    readyTimeout,
    keepaliveInterval,
    keepaliveCountMax: cfg.serverAliveCountMax ?? 3,
    ...(via ? { via } : {}),
  };
}

/** The last hop of a ProxyJump list, each hop resolved through the configuration under its own name. */
async function resolveJumps(forHost: string, spec: string, options: SshOptions, depth: number): Promise<ResolvedSshTarget> {
  let via: ResolvedSshTarget | undefined;
  const hops = spec.split(',');
  for (const [i, text] of hops.entries()) {
    const hop = parseJumpHost(text);
    if (!hop) throw new FatalError(`ssh ${forHost}: ProxyJump ${JSON.stringify(spec)}: ${JSON.stringify(text)} is not [user@]host[:port]`);
    if (depth + i + 1 > MAX_JUMPS) throw new FatalError(`ssh ${forHost}: ProxyJump goes through more than ${MAX_JUMPS} jump hosts (is there a loop in ~/.ssh/config?)`);
    via = await resolveHop(hop, options, via ? { from: 'chain', via } : { from: 'config' }, depth + i + 1);
  }
  return via!;
}

/** `user@host:port via user@jump:port via …`, for messages about a jumped connection. */
function describeRoute(r: ResolvedSshTarget): string {
  let out = describeTarget(r);
  for (let hop = r.via; hop; hop = hop.via) out += ` via ${describeTarget(hop)}`;
  return out;
}

interface LoadedKeys {
  keys: { file: string; key: ParsedKey }[];
  /** Files that exist but could not be used, with why (an encrypted key without its passphrase). */
  skipped: string[];
}

async function loadIdentities(files: string[], utils: Ssh2['utils']): Promise<LoadedKeys> {
  const out: LoadedKeys = { keys: [], skipped: [] };
  for (const file of files) {
    let data: Buffer;
    try {
      data = await fsp.readFile(file);
    } catch {
      continue;
    }
    const parsed = utils.parseKey(data);
    if (parsed instanceof Error) {
      out.skipped.push(/encrypt|passphrase/i.test(parsed.message) ? `${file} (encrypted: add it to ssh-agent)` : `${file} (${parsed.message})`);
      continue;
    }
    const key = Array.isArray(parsed) ? (parsed[0] as ParsedKey | undefined) : parsed;
    if (!key || !key.isPrivateKey()) continue;
    out.keys.push({ file, key });
  }
  return out;
}

/** The ferry error for a failure of ssh2 while connecting or on an open connection. */
export function sshError(err: unknown, r: Pick<ResolvedSshTarget, 'user' | 'host' | 'port'>, what = 'ssh'): FerryError {
  if (err instanceof FerryError) return err;
  const e = err as (Error & { code?: string; level?: string }) | undefined;
  const message = e?.message ?? String(err);
  const where = hostPort(r);
  if (e?.level === 'client-authentication' || /authentication/i.test(message)) {
    return new PermissionDeniedError(`${what} ${describeTarget(r)}: permission denied (${message})`, { cause: err });
  }
  if (e?.level === 'client-timeout') return new TransientError(`${what} ${where}: timed out (${message})`, { cause: err });
  if (e?.code === 'ECONNREFUSED') return new TransientError(`${what} ${where}: connection refused (ECONNREFUSED); is an SSH server listening there?`, { cause: err });
  if (e?.code === 'ENOTFOUND') return new FatalError(`${what} ${where}: unknown host name (ENOTFOUND)`, { cause: err });
  if (e?.code && retryClassOf(e) === 'transient') return new TransientError(`${what} ${where}: ${message}`, { cause: err });
  if (/No response from server|Not connected|closed|reset|timed out/i.test(message)) return new TransientError(`${what} ${where}: connection lost (${message})`, { cause: err });
  return new FatalError(`${what} ${where}: ${message}`, { cause: err });
}

/** An open SSH connection. `client` is ssh2's; the SFTP backend and the cluster build on it. */
export class SshConnection {
  #closed = false;
  #lastError: Error | undefined;
  readonly #closeListeners = new Set<(err?: Error) => void>();

  /**
   * `jump`: the connection to the jump host this one runs through (ProxyJump). It belongs to this
   * connection: closing this one closes it, and losing it loses this one.
   */
  constructor(
    readonly client: SshClient,
    readonly target: ResolvedSshTarget,
    readonly jump?: SshConnection,
  ) {
    client.on('error', (err: Error) => {
      this.#lastError = err;
    });
    client.on('close', () => {
      this.#closed = true;
      for (const l of this.#closeListeners) l(this.#lastError);
      this.#closeListeners.clear();
      void jump?.close();
    });
    jump?.onClose(() => client.destroy());
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** `user@host:port` */
  get description(): string {
    return describeTarget(this.target);
  }

  /** Call `listener` once when the connection ends (at once if it already has). */
  onClose(listener: (err?: Error) => void): () => void {
    if (this.#closed) {
      listener(this.#lastError);
      return () => {};
    }
    this.#closeListeners.add(listener);
    return () => this.#closeListeners.delete(listener);
  }

  /** Open an SFTP channel (one `sftp-server` session on the host). */
  sftp(): Promise<SFTPWrapper> {
    if (this.#closed) return Promise.reject(new TransientError(`sftp ${hostPort(this.target)}: the SSH connection is closed`));
    return new Promise((resolve, reject) => {
      this.client.sftp((err, sftp) => {
        if (err) {
          const closed = this.#closed || /No response|Not connected|closed/i.test(err.message);
          reject(closed ? sshError(err, this.target, 'sftp') : new FatalError(`sftp ${hostPort(this.target)}: cannot start the sftp subsystem (${err.message})`, { cause: err }));
        } else resolve(sftp);
      });
    });
  }

  async close(): Promise<void> {
    await this.#closeOwn();
    await this.jump?.close();
  }

  #closeOwn(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      // A peer that never answers the disconnect must not hold close() forever.
      const timer = setTimeout(() => {
        this.client.destroy();
        resolve();
      }, 2000);
      timer.unref();
      this.onClose(() => {
        clearTimeout(timer);
        resolve();
      });
      this.client.end();
    });
  }
}

/**
 * Connect as OpenSSH would: ~/.ssh/config, then authenticate with the address's password (if
 * any), the agent's keys and the identity files, checking the host key against known_hosts (an
 * unknown host is recorded, a changed key refused). The socket gets TCP_NODELAY once ready:
 * without it SFTP writes are about 50 times slower.
 */
export async function connectSsh(target: SshTarget, options: SshOptions = {}): Promise<SshConnection> {
  const r = await resolveSshTarget(target, options);
  return connectResolved(r, options);
}

export async function connectResolved(r: ResolvedSshTarget, options: SshOptions = {}): Promise<SshConnection> {
  options.signal?.throwIfAborted();
  if (!r.via) return handshake(r, options);
  // A password in the address is the target's: jump hosts never see it. Each hop's host key is
  // checked under that hop's own name.
  const { password: _targetOnly, ...jumpOptions } = options;
  const jump = await connectResolved(r.via, jumpOptions);
  try {
    const sock = await openDirect(jump, r, options.signal);
    return await handshake(r, options, sock, jump);
  } catch (err) {
    await jump.close();
    throw err;
  }
}

/** A channel from the jump host to `r`'s host and port (what `ssh -W host:port jump` opens). */
function openDirect(jump: SshConnection, r: ResolvedSshTarget, signal: AbortSignal | undefined): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(new AbortedError(`ssh ${describeRoute(r)}: connecting was interrupted`));
    signal?.addEventListener('abort', onAbort, { once: true });
    const onLost = jump.onClose(() => reject(new TransientError(`ssh ${describeRoute(r)}: the connection to the jump host ${describeTarget(jump.target)} closed`)));
    const opened = (err: Error | undefined, stream?: Duplex): void => {
      signal?.removeEventListener('abort', onAbort);
      onLost();
      if (err || !stream) {
        reject(new TransientError(`ssh ${describeRoute(r)}: the jump host ${describeTarget(jump.target)} could not connect to ${hostPort(r)} (${err?.message ?? 'no channel'})`, { cause: err }));
        return;
      }
      if (signal?.aborted) {
        stream.destroy();
        return;
      }
      resolve(stream);
    };
    try {
      jump.client.forwardOut('127.0.0.1', 0, r.host, r.port, opened);
    } catch (err) {
      // ssh2 throws when the connection is already gone.
      opened(err as Error);
    }
  });
}

async function handshake(r: ResolvedSshTarget, options: SshOptions, sock?: Duplex, jump?: SshConnection): Promise<SshConnection> {
  const { Client, utils } = await loadSsh2();
  const identities = await loadIdentities(r.identityFiles, utils);
  const knownFiles = [...r.knownHostsFiles, ...r.globalKnownHostsFiles];
  const onRecord = await knownHostLines(knownFiles, r.knownHostName);

  // Ask first for the host key types on record, as OpenSSH does, so a host with several keys
  // presents the one we know.
  const known: string[] = [];
  for (const l of onRecord) if (!l.revoked) for (const a of hostKeyAlgorithmsFor(l.keyType)) if (HOST_KEY_ALGORITHMS.has(a) && !known.includes(a)) known.push(a);

  const agent = r.agent && existsSync(r.agent) ? r.agent : undefined;
  const password = options.password;
  const attempts: { label: string; method: AuthenticationType; auth: AnyAuthMethod }[] = [{ label: 'none', method: 'none', auth: { type: 'none', username: r.user } }];
  if (password !== undefined) {
    attempts.push({ label: 'password', method: 'password', auth: { type: 'password', username: r.user, password } });
    attempts.push({
      label: 'keyboard-interactive',
      method: 'keyboard-interactive',
      auth: { type: 'keyboard-interactive', username: r.user, prompt: (_n, _i, _l, prompts, finish) => finish(prompts.map(() => password)) },
    });
  }
  if (agent) attempts.push({ label: 'ssh-agent', method: 'publickey', auth: { type: 'agent', username: r.user, agent } });
  for (const { file, key } of identities.keys) attempts.push({ label: file, method: 'publickey', auth: { type: 'publickey', username: r.user, key } });

  const tried: string[] = [];
  let serverMethods: string[] | undefined;
  let next = 0;
  let hostKeyFailure: FerryError | undefined;

  const config: ConnectConfig = {
    host: r.host,
    port: r.port,
    username: r.user,
    readyTimeout: r.readyTimeout,
    keepaliveInterval: r.keepaliveInterval,
    keepaliveCountMax: r.keepaliveCountMax,
    ...(sock ? { sock } : {}),
    ...(options.debug ? { debug: options.debug } : {}),
    ...(known.length > 0
      ? { algorithms: { serverHostKey: { remove: known as ServerHostKeyAlgorithm[], prepend: known as ServerHostKeyAlgorithm[], append: [] } } }
      : {}),
    authHandler: (methodsLeft, _partial, nextAuth) => {
      if (methodsLeft) serverMethods = methodsLeft;
      while (next < attempts.length) {
        const a = attempts[next++]!;
        if (methodsLeft && !methodsLeft.includes(a.method)) continue;
        if (a.method !== 'none') tried.push(a.label);
        nextAuth(a.auth);
        return;
      }
      (nextAuth as unknown as (v: false) => void)(false);
    },
    hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
      verifyHostKey(r, knownFiles, key).then(
        () => verify(true),
        (err: unknown) => {
          hostKeyFailure = err instanceof FerryError ? err : new FatalError(`ssh ${hostPort(r)}: checking the host key failed: ${String(err)}`, { cause: err });
          verify(false);
        },
      );
    },
  };

  const client = new Client();
  return new Promise<SshConnection>((resolve, reject) => {
    let settled = false;
    const finish = (err: FerryError | null): void => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener('abort', onAbort);
      client.removeListener('ready', onReady);
      client.removeListener('error', onError);
      client.removeListener('close', onCloseEarly);
      if (err) {
        client.on('error', () => {});
        client.destroy();
        reject(err);
      }
    };
    const onAbort = (): void => finish(new AbortedError(`ssh ${hostPort(r)}: connecting was interrupted`));
    const onReady = (): void => {
      // Through a jump host the socket is a channel: the jump connection's own socket has it set.
      client.setNoDelay(true);
      const conn = new SshConnection(client, r, jump);
      finish(null);
      resolve(conn);
    };
    const onError = (err: Error & { level?: string }): void => {
      // A broken agent is not fatal: authentication goes on with the next method.
      if (err.level === 'agent') return;
      if (hostKeyFailure) return finish(hostKeyFailure);
      if (err.level === 'client-authentication') {
        const accepts = serverMethods ? serverMethods.join(', ') : 'unknown';
        const skipped = identities.skipped.length > 0 ? `; skipped ${identities.skipped.join(', ')}` : '';
        return finish(
          new PermissionDeniedError(
            `ssh ${describeTarget(r)}: permission denied (the server accepts: ${accepts}; tried: ${tried.length > 0 ? tried.join(', ') : 'nothing — no password, agent or key file'}${skipped})`,
            { cause: err },
          ),
        );
      }
      finish(sshError(err, r));
    };
    const onCloseEarly = (): void => finish(hostKeyFailure ?? new TransientError(`ssh ${hostPort(r)}: the connection closed during the handshake`));
    client.on('ready', onReady);
    client.on('error', onError);
    client.on('close', onCloseEarly);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      client.connect(config);
    } catch (err) {
      finish(new FatalError(`ssh ${hostPort(r)}: ${(err as Error).message}`, { cause: err }));
    }
  });
}

async function verifyHostKey(r: ResolvedSshTarget, files: string[], key: Buffer): Promise<void> {
  const name = r.knownHostName;
  const result = await checkHostKey(files, name, key);
  const fp = `${keyTypeOf(key)} ${fingerprint(key)}`;
  switch (result.status) {
    case 'known':
      return;
    case 'revoked':
      throw new FatalError(`ssh ${name}: the host key (${fp}) is marked @revoked in ${result.line.file}:${result.line.line}; refusing to connect`);
    case 'changed':
      throw new FatalError(
        `ssh ${name}: the host key has changed (now ${fp}); the key on record is at ${result.line.file}:${result.line.line}. ` +
          `Someone may be intercepting the connection, or the host was reinstalled: if you trust the new key, remove the old one ` +
          `(ssh-keygen -R '${name}' -f ${result.line.file}) and try again`,
      );
    case 'new': {
      if (r.strictHostKeyChecking === 'yes') {
        throw new FatalError(`ssh ${name}: the host is not in ${files.join(' or ')} and StrictHostKeyChecking is yes (its key is ${fp}); add it with ssh-keyscan or connect once with ssh`);
      }
      const file = r.knownHostsFiles[0];
      if (file && file !== '/dev/null') {
        // Like OpenSSH, a known_hosts that cannot be written does not stop the connection.
        await addKnownHost(file, name, key, { hash: r.hashKnownHosts }).catch(() => {});
      }
      return;
    }
  }
}
