import { hostname } from 'node:os';
import { setMaxListeners } from 'node:events';
import WebSocket from 'ws';
import { LocalExecutor } from '../shared/executor.js';
import { resolveJob, type ResolvedJob } from '../shared/job.js';
import { decodeManagerMessage, encodeMessage } from '../shared/protocol/codec.js';
import { CLOSE, MAX_FRAME_BYTES, PROTOCOL_VERSION, type ManagerMessage, type WorkerInfo, type WorkerMessage } from '../shared/protocol/messages.js';
import { Redactor } from '../shared/redact.js';
import { parseAddress, secretsOf } from '../shared/storage/address.js';
import { defaultRegistry } from '../shared/storage/all.js';
import type { BackendRegistry } from '../shared/storage/registry.js';
import { ByteRateLimiter } from '../shared/throttle/bucket.js';
import { Transfer, transferOptions } from '../shared/transfer/copy.js';
import { RemoteTaskSource } from './source.js';

declare const FERRY_VERSION: string | undefined;
const VERSION = typeof FERRY_VERSION === 'string' ? FERRY_VERSION : '0.0.0-dev';

/**
 * The worker's exit codes:
 *   0   the run ended (the manager said `end`, or it has no more work)
 *   1   the worker failed (its stores would not open, a malformed message, an unexpected error)
 *   2   bad usage (options, the token file)
 *   3   the manager refused the worker (`refuse`, or a close with a 44xx code: token, version, ...)
 *   4   the manager is gone: unreachable, the connection lost, silent for `deadMs`, or (with
 *       --token-stdin) standard input closed
 *   130 interrupted (SIGINT); 143 terminated (SIGTERM)
 */
export const EXIT = { ended: 0, failed: 1, usage: 2, refused: 3, managerGone: 4, interrupted: 130, terminated: 143 } as const;

export interface WorkerOptions {
  /** ws://HOST:PORT of the manager. */
  manager: string;
  /** The run's token (never logged, never on a command line). */
  token: string;
  /** `--name`: a label for the manager's logs and summary. */
  name?: string;
  /** `-v`: log each batch. */
  verbose?: boolean;
  /** Standard error reaches the manager already (an SSH-deployed worker): no `log` messages. */
  relayedStderr?: boolean;
  /** No `welcome` (or `refuse`) this long after connecting: the manager is gone. */
  welcomeTimeoutMs?: number;
  /** Keep trying to reach a manager that is not listening yet for this long (a scheduler may start workers first). */
  connectTimeoutMs?: number;
}

/** Why the worker was told to stop from outside (signals, standard input): the abort reason of `WorkerIO.stop`. */
export interface WorkerStop {
  exitCode: number;
  message: string;
}

export interface WorkerIO {
  /** Log lines (`LEVEL message`) go here. */
  stderr: { write(chunk: string): unknown };
  /** Aborted (with a WorkerStop as its reason): stop now, exit with its code. */
  stop?: AbortSignal;
  /** Stores to open the job's addresses with (tests); by default every backend ferry ships. */
  registry?: BackendRegistry;
}

/** A limiter's rate standing for "no limit": the limiter stays in place, so a later share applies. */
const UNLIMITED_RATE = 1e12;
/** Time to leave, at most, for running tasks and the stores to wind down before the exit code is returned. */
const WIND_DOWN_MS = 1500;
const WELCOME_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 60_000;

type Level = 'error' | 'warn' | 'info' | 'debug';

/**
 * A worker process's life: connect to the manager, say hello with the token, take the job from the
 * `welcome`, and run a LocalExecutor over the manager's tasks until the manager ends the run or has
 * no more work. Heartbeats go out every `beatMs`; a manager silent for `deadMs`, or a connection
 * lost without `end`, stops everything at once: the manager gives the tasks held here to others.
 * Resolves to the exit code (EXIT); never throws.
 */
export async function runWorker(options: WorkerOptions, io: WorkerIO): Promise<number> {
  return new WorkerRun(options, io).run();
}

class WorkerRun {
  readonly #redactor = new Redactor();
  /** Aborted when the worker stops, for whatever reason: every task and request listens to it. */
  readonly #abort = new AbortController();
  readonly #timers = new Set<NodeJS.Timeout>();
  #ws: WebSocket | undefined;
  #source: RemoteTaskSource | undefined;
  #limiter: ByteRateLimiter | undefined;
  #warnedUnlimited = false;
  #welcomed = false;
  #dead: NodeJS.Timeout | undefined;
  #deadMs = 0;
  /** The stores being opened, then open (run() closes them). */
  #opening: Promise<ResolvedJob | undefined> | undefined;
  #executing: Promise<void> | undefined;
  #moved = 0;
  #noMoreWork = false;
  #beaten = 0;
  /** Set once: the exit code, and how to leave the socket. */
  #exit: { code: number; socket: 'close' | 'terminate'; closeCode?: number; closeReason?: string } | undefined;
  #ended!: () => void;
  readonly #done = new Promise<void>((resolve) => (this.#ended = resolve));

  constructor(
    readonly options: WorkerOptions,
    readonly io: WorkerIO,
  ) {
    this.#redactor.add(options.token);
    // Every executor slot waiting for work listens on the signal.
    setMaxListeners(0, this.#abort.signal);
  }

  async run(): Promise<number> {
    const stop = this.io.stop;
    const onStop = () => {
      const why = stop?.reason as Partial<WorkerStop> | undefined;
      this.#finish(typeof why?.exitCode === 'number' ? why.exitCode : EXIT.interrupted, 'warn', why?.message ?? 'stopped', { socket: 'close', closeCode: 1001, closeReason: 'the worker is stopping' });
    };
    if (stop?.aborted) onStop();
    else stop?.addEventListener('abort', onStop, { once: true });
    try {
      if (!this.#exit) this.#connect();
      await this.#done;
      await this.#windDown();
      return this.#exit!.code;
    } finally {
      stop?.removeEventListener('abort', onStop);
      for (const t of this.#timers) clearTimeout(t);
      if (this.#dead) clearTimeout(this.#dead);
    }
  }

  #log(level: Level, message: string): void {
    if (level === 'debug' && !this.options.verbose) return;
    const text = this.#redactor.redact(message);
    this.io.stderr.write(`${level.toUpperCase()} ${text}\n`);
    // A worker a scheduler started has no SSH stderr the manager could relay: what went wrong goes over the socket too.
    if ((level === 'error' || level === 'warn') && !this.options.relayedStderr && this.#welcomed && !this.#exit) this.#send({ t: 'log', level, message: text });
  }

  readonly #firstTry = performance.now();
  #opened = false;
  #retryScheduled = false;
  #saidWaiting = false;

  /**
   * A manager not reachable yet (not listening, still starting): try again shortly, until
   * connectTimeoutMs has passed since the first try. True when another try is on its way.
   */
  #retry(why: string): boolean {
    if (this.#exit || this.#opened) return false;
    if (this.#retryScheduled) return true;
    const waited = performance.now() - this.#firstTry;
    if (waited >= (this.options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS)) return false;
    if (!this.#saidWaiting) {
      this.#saidWaiting = true;
      this.#log('info', `waiting for the manager at ${this.options.manager} (${why})`);
    }
    this.#retryScheduled = true;
    const t = setTimeout(() => {
      this.#timers.delete(t);
      this.#retryScheduled = false;
      if (!this.#exit) this.#connect();
    }, Math.min(2000, 250 + waited / 10));
    this.#timers.add(t);
    return true;
  }

  #connect(): void {
    const url = this.options.manager;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, { maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, handshakeTimeout: 10_000 });
    } catch (err) {
      this.#finish(EXIT.usage, 'error', `bad manager address ${url}: ${(err as Error).message}`, { socket: 'terminate' });
      return;
    }
    this.#ws = ws;
    ws.binaryType = 'nodebuffer';
    ws.on('open', () => {
      this.#opened = true;
      this.#log('info', `connected to the manager at ${url}`);
      const worker: WorkerInfo = { host: hostname(), pid: process.pid, node: process.version, arch: process.arch, ferry: VERSION };
      if (this.options.name !== undefined) worker.name = this.options.name;
      this.#send({ t: 'hello', v: PROTOCOL_VERSION, token: this.options.token, worker });
      this.#watch(this.options.welcomeTimeoutMs ?? WELCOME_TIMEOUT_MS, (ms) => `no welcome from the manager within ${seconds(ms)}: it is gone`);
    });
    ws.on('message', (data, isBinary) => this.#onFrame(data, isBinary));
    ws.on('close', (code, reasonBytes) => {
      if (this.#retry(`close code ${code}`)) return;
      this.#source?.close();
      const reason = reasonBytes.toString();
      if (code >= 4400 && code < 4500) this.#finish(EXIT.refused, 'error', `refused by the manager: ${reason || `close code ${code}`}`, { socket: 'terminate' });
      else if (code === CLOSE.end) this.#finish(EXIT.ended, 'info', `the manager ended the run${reason ? `: ${reason}` : ''}`, { socket: 'terminate' });
      else this.#finish(EXIT.managerGone, 'error', `the connection to the manager was lost (close code ${code}${reason ? `: ${reason}` : ''})`, { socket: 'terminate' });
    });
    ws.on('error', (err) => {
      if (this.#retry(err.message)) return;
      const what = this.#welcomed ? 'the connection to the manager failed' : `cannot reach the manager at ${url}`;
      this.#finish(EXIT.managerGone, 'error', `${what}: ${err.message}`, { socket: 'terminate' });
    });
  }

  /** Sends one message; false when the socket cannot send (closed, or the message is too large). */
  #send(message: WorkerMessage): boolean {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    let frame: Buffer;
    try {
      frame = encodeMessage(message);
    } catch (err) {
      this.#log('error', (err as Error).message);
      return false;
    }
    ws.send(frame, { binary: true });
    return true;
  }

  /** (Re)arms the silence timer: no frame from the manager for `ms`, and it is gone. */
  #watch(ms: number, message: (ms: number) => string): void {
    if (this.#dead) clearTimeout(this.#dead);
    this.#deadMs = ms;
    this.#dead = setTimeout(() => this.#finish(EXIT.managerGone, 'error', message(ms), { socket: 'terminate' }), ms);
  }

  #onFrame(data: WebSocket.RawData, isBinary: boolean): void {
    if (this.#exit) return;
    if (this.#welcomed) this.#watch(this.#deadMs, silence);
    let m: ManagerMessage;
    try {
      if (!isBinary) throw new Error('a text frame (the protocol speaks binary msgpack frames)');
      m = decodeManagerMessage(data);
    } catch (err) {
      this.#protocolError(`a malformed message from the manager: ${(err as Error).message}`);
      return;
    }
    switch (m.t) {
      case 'welcome':
        if (this.#welcomed) return this.#protocolError('a second welcome from the manager');
        this.#start(m).catch((err: unknown) => this.#finish(EXIT.failed, 'error', `the worker failed: ${(err as Error)?.message ?? String(err)}`, { socket: 'close', closeCode: 1011, closeReason: 'the worker failed' }));
        return;
      case 'refuse':
        this.#finish(EXIT.refused, 'error', `refused by the manager: ${m.reason}`, { socket: 'close', closeCode: 1000 });
        return;
      case 'end':
        this.#finish(EXIT.ended, 'info', `the manager ended the run${m.reason ? `: ${m.reason}` : ''}`, { socket: 'close', closeCode: 1000, closeReason: 'ended' });
        return;
      default:
        break;
    }
    if (!this.#welcomed) return this.#protocolError(`a '${m.t}' message before the welcome`);
    switch (m.t) {
      case 'batch':
        if (!this.#source?.deliver(m.req, m.batch)) this.#log('debug', `a batch for request ${m.req}, which is not waiting: ignored`);
        return;
      case 'rate':
        this.#setRate(m.rate);
        return;
      case 'beat':
        return;
    }
  }

  #protocolError(message: string): void {
    this.#finish(EXIT.failed, 'error', message, { socket: 'close', closeCode: CLOSE.badMessage, closeReason: 'a malformed message' });
  }

  #setRate(rate: number): void {
    if (this.#limiter) {
      this.#limiter.setRate(rate > 0 ? rate : UNLIMITED_RATE);
      this.#log('debug', rate > 0 ? `bandwidth share: ${rate} bytes/s` : 'bandwidth: no limit');
    } else if (rate > 0 && !this.#warnedUnlimited) {
      // Transfer decides at its start whether bytes go through a limiter (a limiter turns off
      // local copies between disks): a run that began without a limit keeps running without one.
      this.#warnedUnlimited = true;
      this.#log('warn', `the manager set a bandwidth share of ${rate} bytes/s, but this run started without a limit: not applied`);
    }
  }

  async #start(welcome: Extract<ManagerMessage, { t: 'welcome' }>): Promise<void> {
    this.#welcomed = true;
    this.#watch(welcome.deadMs, silence);
    // The values of secret variables only: a user name such as HADOOP_USER_NAME=hdfs is no secret, and hiding it would hide every 'hdfs'.
    for (const name of (this.io.registry ?? defaultRegistry()).secretEnv()) this.#redactor.add(welcome.env[name]);
    for (const address of [welcome.job.src, welcome.job.dst]) {
      try {
        for (const secret of secretsOf(parseAddress(address))) this.#redactor.add(secret);
      } catch {
        // resolveJob says what is wrong with the address.
      }
    }
    this.#log('info', `joined the run as ${welcome.id} (${welcome.threads} threads)`);
    const beat = setInterval(() => {
      const bytes = this.#moved - this.#beaten;
      this.#beaten += bytes;
      this.#send({ t: 'beat', bytes });
    }, welcome.beatMs);
    this.#timers.add(beat);

    if (welcome.rate > 0 || welcome.job.options.bwlimit > 0) this.#limiter = new ByteRateLimiter(welcome.rate > 0 ? welcome.rate : UNLIMITED_RATE);
    // Credentials go to the stores only, never into process.env.
    this.#opening = resolveJob(welcome.job, this.io.registry ?? defaultRegistry(), { env: welcome.env, concurrency: welcome.threads }).catch((err: unknown) => {
      this.#log('error', `cannot open the stores: ${(err as Error).message}`);
      this.#finish(EXIT.failed, undefined, undefined, { socket: 'close', closeCode: 1011, closeReason: 'the stores would not open' });
      return undefined;
    });
    const resolved = await this.#opening;
    if (!resolved || this.#exit) return;
    for (const note of resolved.notes) this.#log('debug', note);
    const signal = this.#abort.signal;
    const transfer = new Transfer(
      resolved.src,
      resolved.dst,
      transferOptions(resolved.options, {
        ...(this.#limiter ? { limiter: this.#limiter } : {}),
        signal,
        onBytes: (n) => (this.#moved += n),
      }),
    );
    this.#source = new RemoteTaskSource(
      (m) => this.#send(m),
      undefined,
      (req, batch) => {
        if (batch) this.#log('debug', `batch ${req}: ${batch.tasks.length} task${batch.tasks.length === 1 ? '' : 's'}`);
        else if (!this.#noMoreWork) this.#log('debug', 'the manager has no more work');
        if (!batch) this.#noMoreWork = true;
      },
    );
    if (this.#ws?.readyState !== WebSocket.OPEN) this.#source.close();
    const executor = new LocalExecutor(welcome.id, transfer, welcome.threads);
    this.#executing = executor.run(this.#source, signal).then(
      () => {
        if (!this.#source?.closed) this.#finish(EXIT.ended, 'info', 'no more work: done', { socket: 'close', closeCode: 1000, closeReason: 'done' });
      },
      (err: unknown) => this.#finish(EXIT.failed, 'error', `the executor failed: ${(err as Error).message}`, { socket: 'close', closeCode: 1011, closeReason: 'the worker failed' }),
    );
  }

  /** The first reason to stop wins: log it, stop every task and request, and let run() wind down. */
  #finish(code: number, level: Level | undefined, message: string | undefined, exit: { socket: 'close' | 'terminate'; closeCode?: number; closeReason?: string }): void {
    if (this.#exit) return;
    if (level && message) this.#log(level, message);
    // The bytes since the last beat: the manager's totals come from beats.
    if (this.#welcomed && this.#moved > this.#beaten) {
      this.#send({ t: 'beat', bytes: this.#moved - this.#beaten });
      this.#beaten = this.#moved;
    }
    this.#exit = { code, ...exit };
    if (this.#dead) clearTimeout(this.#dead);
    for (const t of this.#timers) clearTimeout(t);
    this.#source?.close();
    this.#abort.abort();
    this.#ended();
  }

  /** Closes the socket (flushing what was sent), lets tasks and stores stop, within WIND_DOWN_MS. */
  async #windDown(): Promise<void> {
    const exit = this.#exit!;
    const ws = this.#ws;
    const closed = new Promise<void>((resolve) => {
      if (!ws || ws.readyState === WebSocket.CLOSED) return resolve();
      ws.once('close', () => resolve());
      if (exit.socket === 'terminate' || ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else if (ws.readyState === WebSocket.OPEN) ws.close(exit.closeCode ?? 1000, exit.closeReason?.slice(0, 120));
    });
    const rest = (async () => {
      await this.#executing;
      const r = await this.#opening;
      if (r) await Promise.allSettled([r.src.close?.(), r.dst.close?.()]);
    })();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), WIND_DOWN_MS)));
    try {
      if ((await Promise.race([Promise.all([closed, rest]), late])) === 'late') ws?.terminate();
    } finally {
      clearTimeout(timer);
    }
  }
}

function silence(ms: number): string {
  return `no word from the manager for ${seconds(ms)}: it is gone`;
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}
