import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { ProtocolError } from '../../shared/errors.js';
import type { JobSpec } from '../../shared/job.js';
import { CLOSE, MAX_FRAME_BYTES, PROTOCOL_VERSION, type ManagerMessage, type WorkerInfo, type WorkerMessage } from '../../shared/protocol/messages.js';
import { decodeWorkerMessage, encodeMessage } from '../../shared/protocol/codec.js';
import { Dispatcher } from '../sync/dispatch.js';
import type { Ledger } from '../sync/ledger.js';
import { MANAGER, type Logger, type RemoteExecutors } from '../sync/run.js';
import type { SyncStats } from '../sync/stats.js';
import type { BandwidthShare } from './bandwidth.js';

export interface ClusterConfig {
  /** The run's secret: a connection that does not present it is refused. */
  token: string;
  /** The job as workers resolve it (credentials in its addresses travel only over this channel). */
  job: JobSpec;
  /** Credential environment variables for the workers' stores. */
  env: Record<string, string>;
  /** `--threads` of each worker. */
  threads: number;
  bandwidth: BandwidthShare | undefined;
  stats: SyncStats;
  log: Logger;
  /** How often both sides send heartbeats (ms). */
  beatMs: number;
  /** A worker silent this long (ms) loses its tasks and is disconnected. */
  silenceMs: number;
  /** A connection that has not said a valid hello within this long (ms) is closed. */
  helloMs?: number;
  /** Workers may join at any time (--listen without the manager executing): never fall back to the manager. */
  waitForJoiners?: boolean;
}

/** A worker's requests for work waiting at once, at most (each holds a batch while it runs). */
const WANTS_MAX = 256;

/**
 * The manager's side of the cluster: a WebSocket server that admits workers presenting the run's
 * token and protocol version, hands them the job, serves their requests for work from the ledger
 * (each worker is an executor holding leases on what it took) and takes their results back. A
 * worker that disconnects or stays silent past `silenceMs` loses its tasks to other executors;
 * its late results are dropped by the ledger.
 */
export class ClusterServer implements RemoteExecutors {
  readonly #wss: WebSocketServer;
  readonly #sessions = new Set<Session>();
  #ledger: Ledger | undefined;
  #alone: (() => void) | undefined;
  #attachWaiters: (() => void)[] = [];
  #nextId = 1;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Workers on their way (being deployed), by name: the run is not alone while one may yet connect. */
  readonly #expected = new Map<string, () => void>();
  readonly #tokenDigest: Buffer;

  private constructor(
    readonly config: ClusterConfig,
    wss: WebSocketServer,
  ) {
    this.#wss = wss;
    this.#tokenDigest = digest(config.token);
    wss.on('connection', (ws, req) => this.#admit(ws, req));
    this.#timer = setInterval(() => this.#tick(), Math.min(1000, config.beatMs));
    this.#timer.unref();
  }

  /** Listen on host:port (port 0: any free one). */
  static async listen(config: ClusterConfig, host: string, port: number): Promise<ClusterServer> {
    const wss = new WebSocketServer({ host, port, maxPayload: MAX_FRAME_BYTES, perMessageDeflate: false, clientTracking: false });
    await new Promise<void>((resolve, reject) => {
      wss.once('listening', resolve);
      wss.once('error', reject);
    });
    wss.on('error', (err) => config.log.error(`the cluster server failed: ${err.message}`));
    return new ClusterServer(config, wss);
  }

  get address(): { host: string; port: number } {
    const a = this.#wss.address() as AddressInfo;
    return { host: a.address, port: a.port };
  }

  /** Workers connected and welcomed. */
  get live(): number {
    let n = 0;
    for (const s of this.#sessions) if (s.id !== undefined && !s.gone) n++;
    return n;
  }

  /** A worker named `name` is on its way; the returned function says it will not come (its deploy failed). */
  expect(name: string): () => void {
    const gone = () => {
      if (this.#expected.get(name) !== gone) return;
      this.#expected.delete(name);
      this.#checkAlone();
    };
    this.#expected.set(name, gone);
    return gone;
  }

  /** A worker said hello under `name`. */
  arrived(name: string): void {
    this.#expected.delete(name);
  }

  attach(ledger: Ledger, alone: () => void): void {
    this.#ledger = ledger;
    this.#alone = alone;
    for (const w of this.#attachWaiters.splice(0)) w();
    this.#checkAlone();
  }

  async drain(stopNow: AbortSignal): Promise<void> {
    const ledger = this.#ledger;
    if (!ledger) return;
    // Workers finish when the ledger is done (their requests for work get no batch): wait for them
    // to report and leave, or for their silence to hand their tasks back.
    for (;;) {
      if (stopNow.aborted) return;
      const busy = [...this.#sessions].some((s) => !s.gone && ledger.holding(s.id ?? '') > 0);
      if (!busy && ledger.done) break;
      if (!busy && this.live === 0 && this.#expected.size === 0 && !this.config.waitForJoiners) return; // the caller runs what is left
      await new Promise((r) => setTimeout(r, 50));
    }
    // Give finished workers a moment to leave by themselves, then tell the rest.
    const until = Date.now() + 2000;
    while (this.live > 0 && Date.now() < until && !stopNow.aborted) await new Promise((r) => setTimeout(r, 25));
  }

  /** End the run for every worker still connected and stop listening. */
  async close(reason = 'the run is over'): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const s of this.#sessions) s.end(reason);
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
  }

  #admit(ws: WebSocket, req: IncomingMessage): void {
    const session = new Session(this, ws, req.socket.remoteAddress ?? '?');
    this.#sessions.add(session);
    ws.on('close', (code, reason) => {
      this.#sessions.delete(session);
      session.closed(code, reason.toString());
    });
  }

  // Used by sessions.

  checkToken(token: unknown): boolean {
    return typeof token === 'string' && timingSafeEqual(digest(token), this.#tokenDigest);
  }

  newId(): string {
    return `w${this.#nextId++}`;
  }

  get ledger(): Ledger | undefined {
    return this.#ledger;
  }

  /** Resolves once the run has begun (workers that connect early wait here for work). */
  attached(): Promise<void> {
    if (this.#ledger) return Promise.resolve();
    return new Promise((r) => this.#attachWaiters.push(r));
  }

  left(): void {
    this.#checkAlone();
  }

  #checkAlone(): void {
    if (this.config.waitForJoiners) return;
    if (this.#ledger && this.#alone && this.live === 0 && this.#expected.size === 0 && !this.#ledger.done) this.#alone();
  }

  #tick(): void {
    const now = performance.now();
    for (const s of this.#sessions) s.tick(now);
    const overdue = this.#ledger?.overdue(now, MANAGER) ?? [];
    for (const s of this.#sessions) if (s.id !== undefined && overdue.includes(s.id)) s.overdue();
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** One worker's connection. */
class Session {
  id: string | undefined;
  info: WorkerInfo | undefined;
  gone = false;
  #heard = performance.now();
  #sent = performance.now();
  readonly #abort = new AbortController();
  #wants = 0;
  #source: Dispatcher | undefined;
  readonly #opened = performance.now();

  constructor(
    readonly server: ClusterServer,
    readonly ws: WebSocket,
    readonly peer: string,
  ) {
    ws.on('message', (data, isBinary) => this.#onMessage(data, isBinary));
    ws.on('error', (err: Error & { code?: string }) => {
      // ws closes the socket itself after this (1009 for an oversized frame).
      const what = err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? `sent a frame over the ${MAX_FRAME_BYTES >> 20} MiB limit` : err.message;
      this.server.config.log.warn(`${this.label}: ${what}; disconnected`);
    });
  }

  get label(): string {
    return this.info ? `worker ${this.id} [${this.info.name ?? this.info.host}]` : `a connection from ${this.peer}`;
  }

  send(msg: ManagerMessage): void {
    if (this.ws.readyState !== this.ws.OPEN) return;
    this.#sent = performance.now();
    this.ws.send(encodeMessage(msg));
  }

  refuse(code: number, reason: string): void {
    this.server.config.log.warn(`refused ${this.label}: ${reason}`);
    this.send({ t: 'refuse', reason });
    this.ws.close(code, reason.slice(0, 120));
  }

  end(reason: string): void {
    this.send({ t: 'end', reason });
    this.ws.close(CLOSE.end, 'the run is over');
  }

  tick(now: number): void {
    const c = this.server.config;
    if (this.id === undefined) {
      if (now - this.#opened > (c.helloMs ?? 10_000)) this.refuse(CLOSE.timeout, 'no hello within the time allowed');
      return;
    }
    if (this.gone) return;
    if (now - this.#heard > c.silenceMs) {
      c.log.warn(`${this.label} has been silent for ${Math.round((now - this.#heard) / 1000)} s: disconnected, its tasks go to other executors`);
      this.#lose('went silent');
      this.ws.terminate();
      return;
    }
    if (now - this.#sent >= c.beatMs) this.send({ t: 'beat' });
  }

  /**
   * It holds a task past the task's lease: disconnected, so that it stops (its copies abort before
   * their rename) rather than finishing a task another executor runs again.
   */
  overdue(): void {
    if (this.gone) return;
    this.server.config.log.warn(`${this.label} has held a task past its lease (--task-lease): disconnected, its tasks go to other executors`);
    this.#lose('held a task past its lease');
    this.ws.terminate();
  }

  closed(code: number, reason: string): void {
    if (this.id !== undefined && !this.gone) {
      const log = this.server.config.log;
      if (code === 1000 && this.server.ledger?.done) log.info(`${this.label} finished`);
      else log.warn(`${this.label} disconnected (${code === 1009 ? 'a frame over the size limit' : reason || `code ${code}`})`);
      this.#lose('disconnected');
    }
    this.#abort.abort();
  }

  /** The worker is gone: what it held goes back to the queue, its share of the bandwidth to the others. */
  #lose(why: string): void {
    if (this.gone) return;
    this.gone = true;
    this.#abort.abort();
    const c = this.server.config;
    const me = c.stats.executor(this.id!);
    me.live = false;
    c.bandwidth?.leave(this.id!);
    this.server.ledger?.release(this.id!, why);
    this.server.left();
  }

  #onMessage(data: RawData, isBinary: boolean): void {
    let msg: WorkerMessage;
    try {
      if (!isBinary) throw new Error('a text frame (the protocol speaks binary msgpack frames)');
      msg = decodeWorkerMessage(data as Buffer);
    } catch (err) {
      if (err instanceof ProtocolError && err.versionMismatch) this.refuse(CLOSE.badVersion, err.message);
      else this.refuse(CLOSE.badMessage, `a malformed message: ${(err as Error).message}`);
      return;
    }
    this.#heard = performance.now();
    if (this.id === undefined) {
      this.#hello(msg);
      return;
    }
    if (this.gone) return;
    switch (msg.t) {
      case 'hello':
        this.refuse(CLOSE.badMessage, 'a second hello');
        return;
      case 'want':
        void this.#want(msg.req, msg.tasks, msg.bytes);
        return;
      case 'results':
        this.#source?.report(msg.results);
        return;
      case 'beat': {
        const c = this.server.config;
        c.stats.transferredBytes += msg.bytes;
        c.stats.executor(this.id).transferredBytes += msg.bytes;
        return;
      }
      case 'log': {
        const log = this.server.config.log;
        log[msg.level](`[${this.info?.name ?? this.info?.host}] ${msg.message}`);
        return;
      }
    }
  }

  #hello(msg: WorkerMessage): void {
    if (msg.t !== 'hello') return this.refuse(CLOSE.badMessage, `the first message must be a hello, not ${JSON.stringify(msg.t)}`);
    if (!this.server.checkToken(msg.token)) return this.refuse(CLOSE.badToken, 'wrong or missing token');
    const c = this.server.config;
    this.info = msg.worker;
    this.id = this.server.newId();
    const host = msg.worker.name ?? msg.worker.host;
    this.server.arrived(host);
    const me = c.stats.executor(this.id, host);
    me.live = true;
    // Joining re-shares the limit among everyone; this worker's first share goes in its welcome.
    let rate: number | undefined;
    c.bandwidth?.join(this.id, (share) => {
      if (rate === undefined) rate = share;
      else this.send({ t: 'rate', rate: share });
    });
    this.send({ t: 'welcome', v: PROTOCOL_VERSION, id: this.id, job: c.job, env: c.env, threads: c.threads, rate: rate ?? 0, beatMs: c.beatMs, deadMs: c.silenceMs });
    c.log.info(`worker ${this.id} [${host}] joined (${this.server.live} connected)`);
  }

  async #want(req: number, tasks: number, bytes: number): Promise<void> {
    if (this.#wants >= WANTS_MAX) return this.refuse(CLOSE.badMessage, `more than ${WANTS_MAX} requests for work at once`);
    this.#wants++;
    try {
      await this.server.attached();
      const ledger = this.server.ledger!;
      this.#source ??= new Dispatcher(ledger, this.id!);
      const batch = await this.#source.next({ tasks: Math.max(1, Math.min(tasks, 1024)), bytes: Math.max(0, bytes) }, this.#abort.signal);
      if (this.gone) {
        // Taken as the worker left: back to the queue.
        ledger.release(this.id!, 'disconnected');
        return;
      }
      this.send({ t: 'batch', req, batch });
    } finally {
      this.#wants--;
    }
  }
}
