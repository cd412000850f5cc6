import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { connect as tcpConnect, type Socket } from 'node:net';
import { basename } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { ClientChannel, TcpConnectionDetails } from 'ssh2';
import { AbortedError, FatalError, FerryError, isRetryable, TransientError, UsageError } from '../../shared/errors.js';
import { parseJumpHost } from '../../shared/ssh/config.js';
import { connectResolved, resolveSshTarget, type ResolvedSshTarget, type SshConnection, type SshOptions, type SshTarget } from '../../shared/ssh/connect.js';

/**
 * Deploying a worker to a host over SSH: connect (as OpenSSH would), probe the host, upload the
 * worker it can run to a cache named by the content's hash (once per host and build), start it
 * with the run's token on its standard input, and carry its WebSocket back to the manager through
 * a reverse port forward of the same connection. A host that has this build's JavaScript worker
 * and Node.js ≥ 20 starts it from the probe's own command: one session in all.
 *
 * Nothing of ours outlives the connection on the host: the worker exits when its standard input
 * ends, which sshd does when the session's channel closes or the connection drops (also when the
 * manager is killed), and stop() ends it explicitly (stdin, then TERM, then KILL). An upload goes
 * to a temporary name and is renamed into place, so the cache never holds a partial file.
 */

export interface WorkerArtifacts {
  /** dist/worker.cjs: for hosts with Node.js ≥ 20. */
  js: string;
  /** Node single executables by architecture (existing files only): for Linux hosts without Node.js ≥ 20. */
  sea: Partial<Record<'x64' | 'arm64', string>>;
}

export type WorkerArtifactKind = 'js' | 'sea-x64' | 'sea-arm64';

export interface DeployOptions {
  ssh: SshOptions;
  /** --ssh-strict: a host not in known_hosts is refused (StrictHostKeyChecking yes), jump hosts too. */
  strict: boolean;
  artifacts: WorkerArtifacts;
  /** The run's secret: written to the worker's standard input, never on a command line or in an environment. */
  token: string;
  /**
   * How the worker reaches the manager: through a reverse forward of this SSH connection to the
   * manager's server on 127.0.0.1:localPort, or straight to `url` (--manager-addr).
   */
  connect: { kind: 'forward'; localPort: number; /** Where the server listens here (default 127.0.0.1). */ localHost?: string } | { kind: 'direct'; url: string };
  /** Extra worker arguments (e.g. -v). `--name user@host` is added unless given here. */
  args?: string[];
  /** Each line the worker prints (the caller prefixes the host). */
  onLine(line: string, stream: 'stdout' | 'stderr'): void;
  /** Interrupts deploying (connecting, probing, uploading, starting); stopping a started worker is stop()'s. */
  signal: AbortSignal;
  debug?(message: string): void;
}

export interface DeployedWorker {
  /** `user@host` (`:port` when one was given) as shown to users. */
  host: string;
  artifact: WorkerArtifactKind;
  /** False when the host's cache already held this build. */
  uploaded: boolean;
  /** Where the worker is on the host. */
  path: string;
  /** The worker's process id on the host. */
  pid: number;
  /**
   * Resolves when the remote process has exited (its code, or the signal that ended it, e.g.
   * 'SIGKILL'), or when the connection was lost (both null; the worker then sees its standard input
   * end and exits). The SSH connection is closed by then.
   */
  exited: Promise<{ code: number | null; signal: string | null }>;
  /**
   * End the worker: close its standard input, after graceMs send TERM to its process group, after
   * graceMs more KILL; then close the forward and the SSH connection. Idempotent.
   */
  stop(graceMs?: number): Promise<void>;
}

/** What the probe found on a host. */
export interface HostProbe {
  /** `uname -s`: Linux, Darwin, FreeBSD … */
  kernel: string;
  /** `uname -m`: x86_64, aarch64 … */
  arch: string;
  /** The worker cache's parent: `${XDG_CACHE_HOME:-$HOME/.cache}` on the host. */
  cacheHome: string;
  gzip: boolean;
  /** The JavaScript worker of this build is in the cache already. */
  jsPresent: boolean;
  /** `command -v node` and `node --version`, when there is a node. */
  node?: { path: string; version: string };
}

const NODE_MAJOR = 20;
const PROBE_TIMEOUT = 30_000;
const START_TIMEOUT = 30_000;
const DEFAULT_GRACE = 5_000;
/** Longer lines are cut into pieces of this many characters (a worker printing without newlines must not grow memory). */
const MAX_LINE = 16 * 1024;

/** `[user@]host[:port]` (IPv6 in brackets) or a ~/.ssh/config alias. */
export function parseWorkerHost(spec: string): SshTarget {
  const t = parseJumpHost(spec);
  if (!t || spec.trim() !== spec) throw new UsageError(`--worker ${JSON.stringify(spec)}: expected user@host[:port] or a Host alias of ~/.ssh/config`);
  return t;
}

/** A word the remote (POSIX) login shell takes literally: single-quoted, a quote inside as '\''. */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * A command line running `script` under sh with `args` as $1…, whatever the login shell is. The
 * script is one line: some login shells (csh) refuse newlines inside quotes.
 */
function shCommand(script: string[], args: string[] = []): string {
  return ['sh', '-c', shellQuote(script.join('; ')), 'ferry', ...args.map(shellQuote)].join(' ');
}

/**
 * The first command on a host: it says what the host is (kernel, architecture, worker cache, gzip,
 * node) and whether the JavaScript worker of this build is in the cache ($1: its path under the
 * cache, $2: its size). When it is, and node is ≥ NODE_MAJOR, and $3 is `start`, it becomes that
 * worker at once (the remaining arguments are the worker's): a host that ran this build before
 * costs one session, and a session costs what the login shell's profile costs (often hundreds of
 * milliseconds). No `!` anywhere: some login shells expand it even inside quotes.
 */
const PROBE_SCRIPT = [
  'printf "ferry-probe kernel=%s\\n" "$(uname -s 2>/dev/null)"',
  'printf "ferry-probe arch=%s\\n" "$(uname -m 2>/dev/null)"',
  // XDG: a relative XDG_CACHE_HOME is to be ignored.
  'c="${XDG_CACHE_HOME:-}"',
  'case "$c" in /*) ;; *) c="${HOME:-}/.cache" ;; esac',
  'printf "ferry-probe cache=%s\\n" "$c"',
  'if command -v gzip >/dev/null 2>&1; then echo "ferry-probe gzip=yes"; fi',
  'n="$(command -v node 2>/dev/null)"',
  'v=""',
  'if [ -n "$n" ]; then v="$(node --version 2>/dev/null)"; printf "ferry-probe node=%s\\n" "$n"; printf "ferry-probe node-version=%s\\n" "$v"; fi',
  'js="$c/$1"',
  'present=no',
  'if [ -f "$js" ] && [ "$(wc -c < "$js" | tr -d " ")" = "$2" ]; then present=yes; echo "ferry-probe js-present=yes"; fi',
  'm="${v#v}"',
  'm="${m%%.*}"',
  `if [ "$3" = start ] && [ "$present" = yes ] && [ "$m" -ge ${NODE_MAJOR} ] 2>/dev/null; then shift 3; echo "ferry-worker-pid=$$"; exec "$n" "$js" "$@"; fi`,
  'exit 0',
];

/** Parse the probe's output; lines that are not the probe's (a chatty shell profile) are ignored. */
export function parseProbe(stdout: string): Partial<HostProbe> {
  const v = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    // Not anchored: a profile may print a last line without its newline.
    const m = /ferry-probe ([a-z-]+)=(.*)$/.exec(line.replace(/\r$/, ''));
    if (m && !v.has(m[1]!)) v.set(m[1]!, m[2]!.trim());
  }
  const out: Partial<HostProbe> = { gzip: v.get('gzip') === 'yes', jsPresent: v.get('js-present') === 'yes' };
  if (v.get('kernel')) out.kernel = v.get('kernel')!;
  if (v.get('arch')) out.arch = v.get('arch')!;
  if (v.get('cache')?.startsWith('/') && v.get('cache') !== '/.cache') out.cacheHome = v.get('cache')!;
  const node = v.get('node');
  if (node) out.node = { path: node, version: v.get('node-version') ?? '' };
  return out;
}

/** `uname -m` → the SEA architecture, if there is one for it. */
export function seaArch(machine: string): 'x64' | 'arm64' | undefined {
  if (/^(x86_64|amd64)$/i.test(machine)) return 'x64';
  if (/^(aarch64|arm64|armv8.*)$/i.test(machine)) return 'arm64';
  return undefined;
}

/** The major version in `v20.11.1`, or undefined. */
function nodeMajor(version: string): number | undefined {
  const m = /^v?(\d+)\.\d+/.exec(version.trim());
  return m ? Number(m[1]) : undefined;
}

/**
 * Which build a host can run: the JavaScript worker where Node.js ≥ 20 is, else the single
 * executable for a Linux host's architecture if this build has one. Otherwise a FatalError that
 * says what the host lacks and what to do.
 */
export function chooseArtifact(shown: string, probe: HostProbe, artifacts: WorkerArtifacts): { kind: WorkerArtifactKind; file: string } {
  const major = probe.node ? nodeMajor(probe.node.version) : undefined;
  if (major !== undefined && major >= NODE_MAJOR) return { kind: 'js', file: artifacts.js };
  const arch = seaArch(probe.arch);
  const isLinux = probe.kernel === 'Linux';
  if (isLinux && arch) {
    const file = artifacts.sea[arch];
    if (file) return { kind: `sea-${arch}`, file };
  }
  const has = !probe.node
    ? 'has no Node.js'
    : major === undefined
      ? `has a node (${probe.node.path}) that does not tell its version`
      : `has Node.js ${probe.node.version} (ferry's worker needs ≥ ${NODE_MAJOR})`;
  const install = `install Node.js ${NODE_MAJOR} or later there`;
  if (!isLinux) {
    return fail(`${shown} ${has} and runs ${probe.kernel} (${probe.arch}); ferry's single executables are for Linux only: ${install}`);
  }
  if (!arch) {
    return fail(`${shown} ${has} and is ${probe.arch}, for which there is no single executable (only x86_64 and aarch64): ${install}`);
  }
  return fail(`${shown} ${has} and is ${probe.arch}, for which this build has no single executable: run \`npm run build:sea\`, or ${install}`);
}

function fail(message: string): never {
  throw new FatalError(message);
}

/** sha256 (first 16 hex) and size of a file. */
async function contentId(file: string): Promise<{ hash: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  try {
    for await (const chunk of createReadStream(file)) {
      h.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
  } catch (err) {
    throw new FatalError(`the worker build ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): run npm run build`, { cause: err });
  }
  return { hash: h.digest('hex').slice(0, 16), size };
}

/** Split a stream's text into lines (a last line without newline is flushed at end). */
function lines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, nl).replace(/\r$/, ''));
      buf = buf.slice(nl + 1);
    }
    while (buf.length > MAX_LINE) {
      onLine(buf.slice(0, MAX_LINE));
      buf = buf.slice(MAX_LINE);
    }
  });
  stream.on('end', () => {
    if (buf !== '') onLine(buf);
    buf = '';
  });
}

interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

function openExec(conn: SshConnection, command: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) => {
    try {
      conn.client.exec(command, (err, ch) => (err ? reject(err) : resolve(ch)));
    } catch (err) {
      // ssh2 throws when the connection is already gone.
      reject(err as Error);
    }
  });
}

/** The channel's exit status once it has closed (both null when the connection went first). */
function channelDone(ch: ClientChannel): Promise<{ code: number | null; signal: string | null }> {
  return new Promise((resolve) => {
    let code: number | null = null;
    let signal: string | null = null;
    // ssh2 reports a signal by its full name ('SIGKILL').
    ch.on('exit', (c: number | null, s?: string) => {
      code = typeof c === 'number' ? c : null;
      signal = s ?? null;
    });
    ch.on('close', () => resolve({ code, signal }));
  });
}

/** Run a command to the end, collecting its output (bounded). */
async function execCollect(conn: SshConnection, command: string, timeoutMs: number): Promise<ExecResult> {
  const ch = await openExec(conn, command);
  let stdout = '';
  let stderr = '';
  ch.setEncoding('utf8');
  ch.stderr.setEncoding('utf8');
  ch.on('data', (d: string) => {
    if (stdout.length < 64 * 1024) stdout += d;
  });
  ch.stderr.on('data', (d: string) => {
    if (stderr.length < 64 * 1024) stderr += d;
  });
  ch.end();
  const timer = setTimeout(() => ch.close(), timeoutMs);
  try {
    const done = await channelDone(ch);
    return { ...done, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** The last few lines of a command's stderr, for a message. */
function tail(text: string): string {
  const t = text.trim().split('\n').slice(-3).join(' / ');
  return t === '' ? '' : `: ${t.slice(0, 500)}`;
}

/** Set StrictHostKeyChecking yes on a target and every jump host it goes through. */
function strictly(r: ResolvedSshTarget): ResolvedSshTarget {
  return { ...r, strictHostKeyChecking: 'yes', ...(r.via ? { via: strictly(r.via) } : {}) };
}

/** What `launch` saw: the worker started (pid on its first line), or the command ended without one. */
type Launch =
  | { started: true; ch: ClientChannel; pid: number; exited: Promise<{ code: number | null; signal: string | null }>; stdout: string }
  | { started: false; code: number | null; signal: string | null; stdout: string; stderr: string };

/**
 * Run a command that may become the worker: it prints `ferry-worker-pid=PID` and execs it. Then the
 * token goes to its standard input (after the pid line: nothing else ever reads it), which stays
 * open, and every later line goes to `emit`. Output before that line is collected, not relayed.
 */
async function launch(conn: SshConnection, command: string, token: string, emit: (line: string, stream: 'stdout' | 'stderr') => void, timeoutMs: number): Promise<Launch> {
  const ch = await openExec(conn, command);
  const exited = channelDone(ch);
  let stdout = '';
  let stderr = '';
  let pid: number | undefined;
  return new Promise<Launch>((resolve) => {
    const timer = setTimeout(() => ch.close(), timeoutMs);
    lines(ch, (line) => {
      if (pid !== undefined) return emit(line, 'stdout');
      // Not anchored: a profile may print a last line without its newline.
      const m = /ferry-worker-pid=(\d+)$/.exec(line);
      if (!m) {
        if (stdout.length < 64 * 1024) stdout += line + '\n';
        return;
      }
      pid = Number(m[1]);
      clearTimeout(timer);
      ch.write(`${token}\n`);
      resolve({ started: true, ch, pid, exited, stdout });
    });
    lines(ch.stderr, (line) => {
      if (pid !== undefined) return emit(line, 'stderr');
      if (stderr.length < 64 * 1024) stderr += line + '\n';
    });
    void exited.then((x) => {
      clearTimeout(timer);
      if (pid === undefined) resolve({ started: false, ...x, stdout, stderr });
    });
  });
}

export async function deployWorker(host: string, o: DeployOptions): Promise<DeployedWorker> {
  const debug = (m: string): void => o.debug?.(`${host}: ${m}`);
  const target = parseWorkerHost(host);
  if (o.token === '' || /[\r\n]/.test(o.token)) throw new UsageError('the run token must be one non-empty line');
  if (o.signal.aborted) throw new AbortedError(`deploying the worker to ${host} was interrupted`);
  let r = await resolveSshTarget(target, o.ssh);
  if (o.strict) r = strictly(r);
  const shownHost = target.host.includes(':') ? `[${target.host}]` : target.host;
  const shown = `${r.user}@${target.port !== undefined ? `${shownHost}:${target.port}` : target.host}`;
  const emit = (line: string, stream: 'stdout' | 'stderr'): void => {
    try {
      o.onLine(line, stream);
    } catch {
      // A throwing callback must not take the relay (and the worker's output pipe) down.
    }
  };

  // Hashed while connecting: the probe looks for it in the host's cache.
  const jsId = contentId(o.artifacts.js).catch((err: unknown) => err as FerryError);
  const t0 = Date.now();
  const { signal: _callers, ...ssh } = o.ssh;
  const conn = await connectResolved(r, { ...ssh, signal: o.signal });
  debug(`connected in ${Date.now() - t0} ms`);

  // From here an abort drops the connection: every step in flight fails, and the host's side of an
  // upload sees its input end and removes its temporary file.
  const onAbort = (): void => {
    conn.client.destroy();
  };
  o.signal.addEventListener('abort', onAbort, { once: true });
  const interrupted = (): AbortedError => new AbortedError(`deploying the worker to ${shown} was interrupted`);
  /** A failure of a step, as a ferry error naming the host. */
  const stepError = (what: string, err: unknown): FerryError => {
    if (o.signal.aborted) return interrupted();
    if (err instanceof FerryError) return err;
    const message = (err as Error | undefined)?.message ?? String(err);
    if (conn.closed) return new TransientError(`${shown}: the SSH connection was lost while ${what} (${message})`, { cause: err });
    return isRetryable(err) ? new TransientError(`${shown}: ${what} failed (${message})`, { cause: err }) : new FatalError(`${shown}: ${what} failed (${message})`, { cause: err });
  };
  const forwarded = new Set<{ destroy(): void }>();
  const release = async (): Promise<void> => {
    for (const s of forwarded) s.destroy();
    forwarded.clear();
    await conn.close();
  };

  try {
    // 1. The way back to the manager, before anything runs there.
    let managerUrl: string;
    if (o.connect.kind === 'forward') {
      const local = { host: o.connect.localHost ?? '127.0.0.1', port: o.connect.localPort };
      const remotePort = await reverseForward(conn, local, forwarded).catch((err: unknown) => {
        if (o.signal.aborted || conn.closed) throw stepError('asking for a port forward', err);
        throw new FatalError(
          `${shown}: the SSH server refused a reverse port forward (${(err as Error).message}); allow it there (AllowTcpForwarding yes or remote) or let the workers connect straight to the manager with --manager-addr`,
          { cause: err },
        );
      });
      managerUrl = `ws://127.0.0.1:${remotePort}`;
      debug(`reverse forward 127.0.0.1:${remotePort} on the host → ${local.host}:${local.port} here`);
    } else {
      managerUrl = o.connect.url;
    }
    const extra = o.args ?? [];
    const workerArgs = ['--manager', managerUrl, '--token-stdin', ...(extra.includes('--name') ? [] : ['--name', shown]), ...extra];

    // 2. Probe; where this build's JavaScript worker is cached and node can run it, this starts it.
    const js = await jsId;
    const probeArgs = js instanceof Error ? ['-', '-1', 'probe'] : [`ferry/${js.hash}/${basename(o.artifacts.js)}`, String(js.size), 'start', ...workerArgs];
    let first: Launch;
    try {
      first = await launch(conn, shCommand(PROBE_SCRIPT, probeArgs), o.token, emit, PROBE_TIMEOUT);
    } catch (err) {
      throw stepError('probing the host', err);
    }
    if (o.signal.aborted) throw interrupted();
    const p = parseProbe(first.stdout);
    if (!p.kernel || !p.arch) {
      if (first.started) first.ch.close();
      const how = first.started ? 'no answer' : `exit ${first.code ?? first.signal ?? 'unknown'}${tail(first.stderr)}`;
      throw new FatalError(`${shown}: probing the host failed (${how}); ferry's worker needs a POSIX shell with uname (Linux, or Node.js ${NODE_MAJOR}+ elsewhere)`);
    }
    if (!p.cacheHome) throw new FatalError(`${shown}: the host gives no usable HOME or XDG_CACHE_HOME for ferry's worker cache`);
    const probe = p as HostProbe;
    debug(`probe: ${probe.kernel} ${probe.arch}, node ${probe.node ? `${probe.node.version} at ${probe.node.path}` : 'none'}, cache ${probe.cacheHome}, gzip ${probe.gzip ? 'yes' : 'no'}`);

    let started: Extract<Launch, { started: true }>;
    let kind: WorkerArtifactKind;
    let path: string;
    let uploaded = false;
    if (first.started) {
      started = first;
      kind = 'js';
      path = `${probe.cacheHome}/${probeArgs[0]}`;
      debug(`${path} was there: started it with the probe`);
    } else {
      const choice = chooseArtifact(shown, probe, o.artifacts);
      if (choice.kind === 'js' && js instanceof Error) throw js;
      const id = choice.kind === 'js' ? (js as { hash: string; size: number }) : await contentId(choice.file);
      const dir = `${probe.cacheHome}/ferry/${id.hash}`;
      kind = choice.kind;
      path = `${dir}/${basename(choice.file)}`;

      // 3. Upload unless present.
      if (choice.kind === 'js' && probe.jsPresent) {
        debug(`${path} is already there`);
      } else {
        try {
          const t1 = Date.now();
          uploaded = await upload(conn, shown, { file: choice.file, dir, name: basename(choice.file), size: id.size, mode: choice.kind === 'js' ? '644' : '755', gzip: probe.gzip });
          debug(uploaded ? `uploaded ${path} (${id.size} bytes${probe.gzip ? ', gzip' : ''}) in ${Date.now() - t1} ms` : `${path} is already there`);
        } catch (err) {
          throw stepError(`uploading the worker to ${path}`, err);
        }
      }
      if (o.signal.aborted) throw interrupted();

      // 4. Start: the shell says its pid, then becomes the worker (same pid, and the leader of the
      // process group sshd made for the session when the login shell exec'ed it).
      const argv = [...(choice.kind === 'js' ? [probe.node!.path.startsWith('/') ? probe.node!.path : 'node', path] : [path]), ...workerArgs];
      let second: Launch;
      try {
        second = await launch(conn, shCommand(['echo "ferry-worker-pid=$$"', 'exec "$@"'], argv), o.token, emit, START_TIMEOUT);
      } catch (err) {
        throw stepError('starting the worker', err);
      }
      if (!second.started) {
        if (o.signal.aborted) throw interrupted();
        if (conn.closed) throw new TransientError(`${shown}: the SSH connection was lost while starting the worker`);
        throw new FatalError(`${shown}: the worker did not start (exit ${second.code ?? second.signal ?? 'unknown'})${tail(second.stderr)}`);
      }
      started = second;
    }
    // The worker runs: from now on its end, or stop(), ends the connection; an abort no longer does.
    o.signal.removeEventListener('abort', onAbort);
    const { ch, pid, exited } = started;
    debug(`worker started, pid ${pid}`);

    let exitedYet = false;
    // A worker that ends by itself leaves nothing to do on the host: the connection goes with it.
    const released = exited.then(async (x) => {
      exitedYet = true;
      await release();
      return x;
    });
    const waitExit = (ms: number): Promise<boolean> =>
      exitedYet
        ? Promise.resolve(true)
        : new Promise((resolve) => {
            const timer = setTimeout(() => resolve(false), ms);
            void exited.then(() => {
              clearTimeout(timer);
              resolve(true);
            });
          });

    let stopping: Promise<void> | undefined;
    const stop = (graceMs = DEFAULT_GRACE): Promise<void> => {
      stopping ??= (async () => {
        if (!exitedYet && !conn.closed) {
          ch.end();
          for (const sig of ['TERM', 'KILL'] as const) {
            if (await waitExit(graceMs)) break;
            if (conn.closed) break;
            debug(`worker ${pid} still running: sending ${sig} to its process group`);
            // The group when the worker leads one, else the pid. (dash's kill takes no `--`.)
            await execCollect(conn, shCommand([`kill -${sig} -${pid} 2>/dev/null || kill -${sig} ${pid}`]), 10_000).catch(() => undefined);
          }
          await waitExit(2000);
        }
        await release();
      })();
      return stopping;
    };

    return { host: shown, artifact: kind, uploaded, path, pid, exited: released, stop };
  } catch (err) {
    await release();
    throw err instanceof FerryError ? err : stepError('deploying the worker', err);
  } finally {
    o.signal.removeEventListener('abort', onAbort);
  }
}

/** Ask the host to forward connections to 127.0.0.1:<a port it picks> back here, to the manager's server. */
function reverseForward(conn: SshConnection, local: { host: string; port: number }, open: Set<{ destroy(): void }>): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    try {
      conn.client.forwardIn('127.0.0.1', 0, (err, remotePort) => {
        if (err) return reject(err);
        conn.client.on('tcp connection', (details: TcpConnectionDetails, accept, refuse) => {
          if (details.destPort !== remotePort) return refuse();
          relay(accept(), local, open);
        });
        resolve(remotePort);
      });
    } catch (err) {
      // ssh2 throws when the connection is already gone.
      reject(err as Error);
    }
  });
}

/** Pipe a forwarded channel to the manager's local server, both ways; either side's end ends both. */
function relay(ch: ClientChannel, local: { host: string; port: number }, open: Set<{ destroy(): void }>): void {
  const sock: Socket = tcpConnect(local);
  const pair = {
    destroy: () => {
      sock.destroy();
      ch.destroy();
    },
  };
  open.add(pair);
  let done = false;
  const end = (): void => {
    if (done) return;
    done = true;
    open.delete(pair);
    pair.destroy();
  };
  sock.setNoDelay(true);
  ch.pipe(sock);
  sock.pipe(ch);
  sock.on('error', end);
  sock.on('close', end);
  ch.on('error', end);
  ch.on('close', end);
}

/**
 * Put `file` at `dir/name` on the host unless a file of `size` bytes is already there: through the
 * standard input of one exec channel (gzip'ed here and unpacked there when the host has gzip) into
 * a temporary file, checked for its size, then renamed into place. Directories are made mode 700.
 * Returns whether it uploaded.
 */
async function upload(conn: SshConnection, shown: string, u: { file: string; dir: string; name: string; size: number; mode: string; gzip: boolean }): Promise<boolean> {
  const script = [
    'd="$1"',
    'f="$2"',
    'p="$d/$f"',
    'if [ -f "$p" ] && [ "$(wc -c < "$p" | tr -d " ")" = "$3" ]; then echo ferry-upload:present; exit 0; fi',
    'umask 077',
    'mkdir -p "$d" || exit 1',
    'chmod 700 "$d" "${d%/*}" 2>/dev/null',
    't="$d/.$f.tmp.$$"',
    'trap "rm -f \\"\\$t\\"" 0',
    'trap "exit 1" HUP INT TERM PIPE',
    // Temporary files of uploads that were killed outright (nothing could remove them), a day old.
    'find "$d" -maxdepth 1 -name ".$f.tmp.*" -mtime +0 -exec rm -f {} + 2>/dev/null',
    'echo ferry-upload:send',
    'if [ "$5" = gzip ]; then gzip -dc > "$t" || exit 1; else cat > "$t" || exit 1; fi',
    'n="$(wc -c < "$t" | tr -d " ")"',
    'if [ "$n" = "$3" ]; then :; else echo "received $n bytes of $3" >&2; exit 1; fi',
    'chmod "$4" "$t" && mv -f "$t" "$p" || exit 1',
    'echo ferry-upload:done',
  ];
  const ch = await openExec(conn, shCommand(script, [u.dir, u.name, String(u.size), u.mode, u.gzip ? 'gzip' : 'plain']));
  const done = channelDone(ch);
  let stderr = '';
  ch.stderr.setEncoding('utf8');
  ch.stderr.on('data', (d: string) => {
    if (stderr.length < 8192) stderr += d;
  });
  const said = new Set<string>();
  const answer = new Promise<string>((resolve) => {
    lines(ch, (line) => {
      const m = /ferry-upload:[a-z]+$/.exec(line);
      if (m) {
        said.add(m[0]);
        resolve(m[0]);
      }
    });
    void done.then(() => resolve(''));
  });
  const first = await answer;
  if (first === 'ferry-upload:present') {
    ch.end();
    await done;
    return false;
  }
  if (first === 'ferry-upload:send') {
    const source = createReadStream(u.file);
    try {
      if (u.gzip) await pipeline(source, createGzip({ level: 6 }), ch);
      else await pipeline(source, ch);
    } catch (err) {
      // The host's side says why (disk full, …) when it can.
      const x = await Promise.race([done, new Promise<null>((r) => setTimeout(() => r(null), 2000))]);
      if (x && stderr) throw new FatalError(`${shown}: could not write ${u.dir}/${u.name} (exit ${x.code ?? x.signal})${tail(stderr)}`, { cause: err });
      throw err;
    }
  }
  const x = await done;
  if (x.code !== 0 || !said.has('ferry-upload:done')) {
    if (conn.closed) throw new TransientError(`${shown}: the SSH connection was lost while uploading ${u.dir}/${u.name}`);
    throw new FatalError(`${shown}: could not write ${u.dir}/${u.name} (exit ${x.code ?? x.signal ?? 'unknown'})${tail(stderr)}`);
  }
  return true;
}
