import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JobSpec } from '../../shared/job.js';
import type { SshOptions } from '../../shared/ssh/index.js';
import { parseAddress } from '../../shared/storage/address.js';
import type { BackendRegistry } from '../../shared/storage/registry.js';
import { UsageError } from '../../shared/errors.js';
import type { Logger } from '../sync/run.js';
import type { SyncStats } from '../sync/stats.js';
import { BandwidthShare } from './bandwidth.js';
import { deployWorker, type DeployedWorker, type WorkerArtifacts } from './deploy.js';
import { ClusterServer } from './server.js';

export { BandwidthShare } from './bandwidth.js';
export { ClusterServer } from './server.js';

export interface ClusterSetup {
  /** `--worker`: user@host[:port] or ~/.ssh/config aliases. */
  hosts: string[];
  /** `--manager-addr HOST:PORT`: listen there and have workers connect straight to it. */
  managerAddr?: string;
  /** `--listen HOST:PORT`: listen there for workers that join (`ferry worker`), with `token`. */
  listen?: string;
  /** The run's token (`--token-file`); default: a random one. */
  token?: string;
  /** Without the manager executing, wait for joining workers however long it takes (no fallback to the manager). */
  waitForJoiners?: boolean;
  /** `--ssh-strict`: refuse hosts not in known_hosts. */
  strict: boolean;
  spec: JobSpec;
  registry: BackendRegistry;
  /** `--threads` of each worker. */
  threads: number;
  /** `--bwlimit` for the whole cluster, bytes per second (0: none). */
  bandwidth: number;
  /** Heartbeats: how often (ms), and the silence (ms) after which a worker loses its tasks. */
  beatMs: number;
  silenceMs: number;
  stats: SyncStats;
  log: Logger;
  verbose: boolean;
  /** SSH files (tests point them elsewhere); default: the user's. */
  ssh?: SshOptions;
  /** Worker builds (default: beside this module, or the package's dist/). */
  artifacts?: WorkerArtifacts;
  signal: AbortSignal;
}

export interface Cluster {
  server: ClusterServer;
  bandwidth: BandwidthShare | undefined;
  /** Ends every worker and waits until each remote process is gone. */
  stop(): Promise<void>;
}

/**
 * Start cluster mode: a WebSocket server for workers (on 127.0.0.1, reached through each host's
 * SSH reverse forward, or on --manager-addr), and one worker deployed on each host in the
 * background. A host that cannot be reached or cannot run the worker is named and left out; the
 * run goes on with the others.
 */
export async function startCluster(s: ClusterSetup): Promise<Cluster> {
  const token = s.token ?? randomBytes(32).toString('base64url');
  const bandwidth = s.bandwidth > 0 ? new BandwidthShare(s.bandwidth) : undefined;
  const direct = s.managerAddr !== undefined ? parseHostPort(s.managerAddr, '--manager-addr') : undefined;
  const listen = s.listen !== undefined ? parseHostPort(s.listen, '--listen', true) : undefined;
  if (direct && listen) throw new UsageError('--manager-addr and --listen both say where the manager listens: give one (deployed workers use --listen too)');
  const at = listen ?? direct;
  const server = await ClusterServer.listen(
    {
      token,
      job: workerJob(s.spec),
      env: credentialValues(s.registry),
      threads: s.threads,
      bandwidth,
      stats: s.stats,
      log: s.log,
      beatMs: s.beatMs,
      silenceMs: s.silenceMs,
      ...(s.waitForJoiners ? { waitForJoiners: true } : {}),
    },
    at?.host ?? '127.0.0.1',
    at?.port ?? 0,
  );
  if (listen) s.log.info(`listening for workers at ws://${listen.advertise}:${server.address.port} (join with: ferry worker --manager ws://HOST:${server.address.port} --token-file FILE)`);
  // Only deployed workers need the build; workers that join bring their own.
  const artifacts = s.hosts.length === 0 ? undefined : (s.artifacts ?? findArtifacts());
  warnAboutOwnCredentials(s.spec, credentialValues(s.registry), s.log);
  const listening = server.address;
  const deployed: DeployedWorker[] = [];
  const stopping = new AbortController();
  const abort = () => stopping.abort();
  s.signal.addEventListener('abort', abort, { once: true });
  const debug = (m: string) => s.log.debug(m);
  const quiet: Logger = { error: debug, warn: debug, info: debug, debug };
  const starting = new Set(s.hosts);
  const deploys = s.hosts.map(async (host) => {
    const gone = server.expect(host);
    try {
      const w = await deployWorker(host, {
        ssh: s.ssh ?? {},
        strict: s.strict,
        artifacts: artifacts!,
        token,
        connect: direct
          ? { kind: 'direct', url: `ws://${direct.advertise}:${listening.port}` }
          : { kind: 'forward', localPort: listening.port, ...(listen && !listen.wildcard ? { localHost: listen.host } : {}) },
        args: ['--name', host, ...(s.verbose ? ['-v'] : [])],
        // Once the run is over, what workers say as they are stopped is only for -v.
        onLine: (line) => relay(stopping.signal.aborted ? quiet : s.log, host, line),
        ...(s.verbose ? { debug: (m: string) => s.log.debug(`deploy ${m}`) } : {}),
        signal: stopping.signal,
      });
      starting.delete(host);
      deployed.push(w);
      s.log.debug(`[${host}] worker started (${w.artifact}${w.uploaded ? ', uploaded' : ', already on the host'})`);
      void w.exited.then(gone);
    } catch (err) {
      starting.delete(host);
      gone();
      if (!stopping.signal.aborted) s.log.error(`worker ${host}: ${(err as Error).message}; the run goes on without it`);
    }
  });
  return {
    server,
    bandwidth,
    async stop() {
      for (const host of starting) s.log.warn(`worker ${host} had not started when the run ended`);
      starting.clear();
      stopping.abort();
      s.signal.removeEventListener('abort', abort);
      await server.close();
      await Promise.allSettled(deploys);
      await Promise.allSettled(deployed.map((w) => w.stop()));
    },
  };
}

/** A worker's log line (`LEVEL message`) at its own level, prefixed with its host. */
function relay(log: Logger, host: string, line: string): void {
  const m = /^(ERROR|WARN|INFO|DEBUG) (.*)$/s.exec(line);
  const text = `[${host}] ${m ? m[2] : line}`;
  switch (m?.[1]) {
    case 'ERROR':
      return log.error(text);
    case 'WARN':
      return log.warn(text);
    case 'DEBUG':
      return log.debug(text);
    default:
      return log.info(text);
  }
}

/**
 * HOST:PORT (or [v6]:PORT). --manager-addr is also what deployed workers dial, so a wildcard is
 * refused there; --listen may take one (joining workers are told the address by whoever starts them).
 */
function parseHostPort(v: string, flag: string, wildcardOk = false): { host: string; port: number; advertise: string; wildcard: boolean } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(v);
  if (!m) throw new UsageError(`${flag} wants HOST:PORT (an address workers can reach), not ${JSON.stringify(v)}`);
  const host = m[1] ?? m[2]!;
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`${flag}: port ${port} is out of range`);
  const wildcard = host === '0.0.0.0' || host === '::';
  if (wildcard && !wildcardOk) throw new UsageError(`${flag} ${v}: give the address workers dial, not a wildcard`);
  return { host, port, advertise: host.includes(':') ? `[${host}]` : host, wildcard };
}

/** The job as a worker resolves it: local paths made absolute (a worker starts in its home directory). */
function workerJob(spec: JobSpec): JobSpec {
  const abs = (a: string) => {
    const p = parseAddress(a);
    if (p.scheme !== 'file' || /^file:\/\//i.test(a)) return a;
    // parseAddress resolved it (cwd, '~') into bucket (the directory) and prefix.
    return p.bucket + p.prefix;
  };
  return { ...spec, src: abs(spec.src), dst: abs(spec.dst) };
}

/**
 * The credential variables every backend reads, as the manager has them. Paths that mean something
 * only on this machine (an agent socket, a credentials file) are not sent: on a worker host they
 * would name nothing, or something else.
 */
function credentialValues(registry: BackendRegistry): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of registry.credentialEnv()) {
    if (LOCAL_ONLY.has(name)) continue;
    const v = process.env[name];
    if (v !== undefined && v !== '') env[name] = v;
  }
  return env;
}

const LOCAL_ONLY = new Set(['SSH_AUTH_SOCK', 'AWS_SHARED_CREDENTIALS_FILE', 'AWS_CONFIG_FILE', 'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE']);

/**
 * Object-store addresses whose keys come neither from the address nor from variables the workers
 * receive: the workers then use whatever their own hosts provide (a profile, an instance role) —
 * perhaps another identity. Said once, up front.
 */
function warnAboutOwnCredentials(spec: JobSpec, env: Record<string, string>, log: Logger): void {
  const keyVars: Record<string, string[]> = {
    s3: ['AWS_ACCESS_KEY_ID'],
    minio: ['AWS_ACCESS_KEY_ID'],
    oss: ['ALIBABA_CLOUD_ACCESS_KEY_ID', 'OSS_ACCESS_KEY_ID'],
    cos: ['COS_SECRETID', 'TENCENTCLOUD_SECRETID'],
  };
  for (const addr of [spec.src, spec.dst]) {
    const a = parseAddress(addr);
    const vars = keyVars[a.scheme];
    if (!vars || a.accessKey || vars.some((v) => env[v])) continue;
    log.warn(`${a.display}: no keys in the address or in ${vars.join(' or ')}: each worker uses its own host's credentials (profile, instance role), which may be another identity than the manager's`);
  }
}

/** dist/worker.cjs and any single executables built beside it (npm run build:sea). */
export function findArtifacts(): WorkerArtifacts {
  const here = dirname(fileURLToPath(import.meta.url));
  // Bundled, this code is in dist/cli.js or a chunk in dist/chunks/; from the sources (tests), the package's dist/.
  const dist = [here, join(here, '..'), join(here, '..', '..', '..', 'dist')].find((d) => existsSync(join(d, 'worker.cjs')));
  if (!dist) throw new UsageError(`the worker build (dist/worker.cjs) is missing: run npm run build`);
  const sea: WorkerArtifacts['sea'] = {};
  for (const arch of ['x64', 'arm64'] as const) {
    const f = join(dist, 'sea', `ferry-worker-linux-${arch}`);
    if (existsSync(f)) sea[arch] = f;
  }
  return { js: join(dist, 'worker.cjs'), sea };
}
