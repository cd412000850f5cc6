/**
 * A WebHDFS REST client on Node's own `node:http`.
 *
 * Why not the `webhdfs` npm package: it was tried and loses data (PITFALLS.md, "HDFS"). Its read
 * streams hand HTTP error bodies (a datanode's 503) to the caller as file content; it does not
 * percent-encode paths, so '%', 'ü' or CJK names break or name other files; its streams fail
 * `stream.pipeline` with "Premature close"; a refused connection can crash the process; and it has
 * no SETTIMES. The protocol is small, so this client speaks it directly and keeps every one of those
 * cases under test.
 *
 * Protocol facts relied on (Hadoop 3):
 * - Requests go to http://NAMENODE:9870/webhdfs/v1/PATH?op=OP&user.name=USER. 9870 is the
 *   namenode's HTTP port since Hadoop 3 (Hadoop 2 used 50070); the RPC port 8020 does not speak HTTP.
 * - OPEN and CREATE answer 307 with a Location on a datanode, which serves or takes the bytes.
 * - Failures carry {"RemoteException": {exception, javaClassName, message}}. The namenode answers
 *   403 for every IOException it does not single out (StandbyException, RetriableException,
 *   FileAlreadyExistsException...), so the exception's name, not the status, says what happened.
 * - Only a 2xx body is ever content: every other body is read (bounded) as an error report.
 */
import http, { type ClientRequest, type IncomingMessage } from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortedError,
  FatalError,
  FerryError,
  fromSystemError,
  NotFoundError,
  PermissionDeniedError,
  retryClassOf,
  ThrottledError,
  TransientError,
} from '../../errors.js';
import { sizeGuard } from '../body.js';
import { compareKeys } from '../keys.js';

/** The namenode's WebHDFS HTTP port in Hadoop 3 (`dfs.namenode.http-address`). */
export const DEFAULT_WEBHDFS_PORT = 9870;

const PREFIX = '/webhdfs/v1';
/** At most this many 307s per request (namenode → datanode; HttpFS redirects to itself once). */
const MAX_REDIRECTS = 3;
/** Error bodies are read up to this size; the rest is discarded. */
const ERROR_BODY_LIMIT = 64 * 1024;
const JSON_LIMIT = 16 * 1024 * 1024;
/** LISTSTATUS (the fallback without paging) returns a whole directory in one body. */
const LISTING_LIMIT = 512 * 1024 * 1024;
/**
 * Idle pooled connections are closed after this long, before servers close them: Node's servers
 * close at 5 s (and announce it; the agent then uses 4 s), Hadoop's Jetty later.
 */
const IDLE_SOCKET_MS = 4000;

/** One entry of a WebHDFS listing or GETFILESTATUS (the fields ferry reads). */
export interface FileStatus {
  /** The name within the listed directory; '' for GETFILESTATUS and for a listed file. */
  pathSuffix: string;
  type: 'FILE' | 'DIRECTORY' | 'SYMLINK';
  length: number;
  /** Milliseconds since the epoch. */
  modificationTime: number;
  accessTime?: number;
  /** Octal, e.g. "644" or "1777". */
  permission: string;
  owner: string;
  group: string;
  symlink?: string;
  fileId?: number;
}

export interface WebHdfsOptions {
  host: string;
  port: number;
  /** Sent as `user.name` (simple authentication). */
  user: string;
  protocol?: 'http:' | 'https:';
  /** Idle time on a connection before a request fails as transient. */
  timeoutMs?: number;
  maxSockets?: number;
}

interface RemoteException {
  exception?: string;
  javaClassName?: string;
  message?: string;
}

interface Failure {
  status: number;
  remote?: RemoteException;
  text: string;
}

interface Target {
  protocol: 'http:' | 'https:';
  hostname: string;
  port: number;
  /** Path and query, already encoded. */
  path: string;
  /** host:port, for messages. */
  endpoint: string;
}

type Params = Record<string, string | number | boolean | undefined>;

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Percent-encode an absolute HDFS path segment by segment ('/' stays the separator). */
export function encodePath(path: string): string {
  try {
    return path.split('/').map(encodeURIComponent).join('/');
  } catch {
    throw new FatalError(`hdfs: the path ${JSON.stringify(path)} is not valid Unicode`);
  }
}

function snippet(text: string): string {
  const t = text.replace(/\s+/g, ' ').trim();
  return t.length > 200 ? t.slice(0, 200) + '…' : t;
}

function parseRemote(text: string): RemoteException | undefined {
  try {
    const j = JSON.parse(text) as { RemoteException?: RemoteException } | null;
    const r = j?.RemoteException;
    return r && typeof r === 'object' ? r : undefined;
  } catch {
    return undefined;
  }
}

/** Exceptions after which the same request may succeed later (failover, safe mode, lease recovery). */
const TRANSIENT_EXCEPTIONS = new Set([
  'StandbyException',
  'RetriableException',
  'SafeModeException',
  'ObserverRetryOnActiveException',
  'AlreadyBeingCreatedException',
  'RecoveryInProgressException',
  'LeaseExpiredException',
  'NotReplicatedYetException',
]);
const DENIED_EXCEPTIONS = new Set(['AccessControlException', 'SecurityException', 'AuthorizationException', 'InvalidToken', 'AuthenticationException']);

/** Map a non-2xx answer to ferry's error classes. `what` names the operation, endpoint and path. */
export function errorFor(f: Failure, what: string): FerryError {
  const err = classify(f, what);
  // Callers that must tell one refusal from another (a file in the way, a directory not empty) read the name.
  if (f.remote?.exception) Object.defineProperty(err, 'remoteException', { value: f.remote.exception, enumerable: false });
  return err;
}

/** The namenode's exception name behind an error of this client ('ParentNotDirectoryException'), if any. */
export function remoteExceptionOf(err: unknown): string | undefined {
  const ex = (err as { remoteException?: unknown } | null)?.remoteException;
  return typeof ex === 'string' ? ex : undefined;
}

function classify(f: Failure, what: string): FerryError {
  const ex = f.remote?.exception ?? '';
  const detail = f.remote ? `${f.status} ${ex}: ${f.remote.message ?? ''}`.trim() : `HTTP ${f.status}${f.text ? ': ' + snippet(f.text) : ''}`;
  if (f.status === 429 || f.status === 503) return new ThrottledError(`${what}: the server is busy (${detail})`);
  if (ex === 'FileNotFoundException') return new NotFoundError(`${what}: not found (${detail})`);
  if (DENIED_EXCEPTIONS.has(ex)) return new PermissionDeniedError(`${what}: permission denied (${detail})`);
  if (TRANSIENT_EXCEPTIONS.has(ex)) return new TransientError(`${what}: ${detail}`);
  if (!f.remote) {
    if (f.status === 401)
      return new PermissionDeniedError(`${what}: authentication required (${detail}); ferry sends simple authentication (user.name), not Kerberos/SPNEGO`);
    if (f.status === 403) return new PermissionDeniedError(`${what}: permission denied (${detail})`);
    if (f.status === 404) return new FatalError(`${what}: answered 404 without a WebHDFS error (${detail}); is this the namenode's HTTP port (default ${DEFAULT_WEBHDFS_PORT})?`);
  }
  if (f.status >= 500) return new TransientError(`${what}: ${detail}`);
  return new FatalError(`${what}: ${detail}`);
}

/** True when the server does not know `op` (a Hadoop older than the op): the caller falls back. */
function isUnknownOp(f: Failure, op: string): boolean {
  const ex = f.remote?.exception;
  return f.status === 400 && (ex === 'IllegalArgumentException' || ex === 'UnsupportedOperationException') && (f.remote?.message ?? '').includes(op);
}

function netError(err: unknown, what: string, endpoint: string, signal?: AbortSignal): FerryError {
  if (signal?.aborted) return new AbortedError(`${what}: interrupted`);
  if (err instanceof FerryError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = e?.code;
  if (code === 'ECONNREFUSED') return new TransientError(`${what}: connection refused by ${endpoint} (ECONNREFUSED)`, { cause: err });
  if (code === 'ENOTFOUND') return new FatalError(`${what}: unknown host in ${endpoint} (ENOTFOUND)`, { cause: err });
  const detail = [code, e?.message].filter((s) => s).join(' ') || String(err);
  if (retryClassOf(err) === 'transient') return new TransientError(`${what}: connection to ${endpoint} failed (${detail})`, { cause: err });
  return new FatalError(`${what}: request to ${endpoint} failed (${detail})`, { cause: err });
}

async function readText(res: IncomingMessage, limit: number, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of res as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > limit) {
        res.destroy();
        throw new FatalError(`${what}: the answer is larger than ${limit} bytes`);
      }
      chunks.push(c);
    }
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw new TransientError(`${what}: the connection closed while reading the answer (${(err as Error)?.message ?? err})`, { cause: err });
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Read a failed answer's body (bounded; a body that cannot be read leaves only the status). */
async function readFailure(res: IncomingMessage): Promise<Failure> {
  const status = res.statusCode ?? 0;
  let text = '';
  try {
    text = await readText(res, ERROR_BODY_LIMIT, '');
  } catch {
    // The status alone still classifies the failure.
  }
  const remote = parseRemote(text);
  return remote ? { status, remote, text } : { status, text };
}

/**
 * The body of a 2xx answer as a plain Readable: it ends only when the answer was complete, and a
 * connection lost midway is an error (never a short file).
 */
class ResponseBody extends Readable {
  readonly #res: IncomingMessage;
  #ended = false;
  #bytes = 0;

  constructor(res: IncomingMessage, what: string, signal?: AbortSignal) {
    super({ highWaterMark: 1 << 20 });
    this.#res = res;
    const lost = (cause?: unknown): void => {
      if (this.#ended || this.destroyed) return;
      this.destroy(
        signal?.aborted
          ? new AbortedError(`${what}: interrupted`)
          : new TransientError(`${what}: the connection closed after ${this.#bytes} bytes of the answer`, cause === undefined ? undefined : { cause }),
      );
    };
    res.on('data', (c: Buffer) => {
      if (this.destroyed) return;
      this.#bytes += c.length;
      if (!this.push(c)) res.pause();
    });
    res.on('end', () => {
      if (!res.complete) return lost();
      this.#ended = true;
      this.push(null);
    });
    res.on('error', lost);
    res.on('close', () => lost());
  }

  override _read(): void {
    this.#res.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.#ended) this.#res.destroy();
    cb(err);
  }
}

export class WebHdfsClient {
  /** host:port of the namenode. */
  readonly endpoint: string;
  readonly user: string;
  readonly #host: string;
  readonly #port: number;
  readonly #protocol: 'http:' | 'https:';
  readonly #timeoutMs: number;
  readonly #agent: http.Agent;
  /** Ops the namenode answered as unknown (an older Hadoop): asked once, then avoided. */
  readonly #unknownOps = new Set<string>();

  constructor(o: WebHdfsOptions) {
    this.#host = o.host;
    this.#port = o.port;
    this.user = o.user;
    this.#protocol = o.protocol ?? 'http:';
    this.#timeoutMs = o.timeoutMs ?? 120_000;
    this.endpoint = hostPort(o.host, o.port);
    const agentOptions = { keepAlive: true, maxSockets: o.maxSockets ?? Infinity, scheduling: 'lifo' as const, timeout: IDLE_SOCKET_MS };
    this.#agent = this.#protocol === 'https:' ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
  }

  #what(op: string, path: string): string {
    return `hdfs ${op} ${this.endpoint}${path}`;
  }

  #target(op: string, path: string, params: Params = {}): Target {
    let q = `op=${op}&user.name=${encodeURIComponent(this.user)}`;
    for (const [k, v] of Object.entries(params)) if (v !== undefined) q += `&${k}=${encodeURIComponent(String(v))}`;
    return { protocol: this.#protocol, hostname: this.#host, port: this.#port, path: `${PREFIX}${encodePath(path)}?${q}`, endpoint: this.endpoint };
  }

  #redirectTarget(location: string | undefined, from: Target, what: string): Target {
    if (!location) throw new FatalError(`${what}: 307 without a Location`);
    let url: URL;
    try {
      url = new URL(location, `${from.protocol}//${from.endpoint}${from.path}`);
    } catch {
      throw new FatalError(`${what}: 307 to a bad Location ${JSON.stringify(snippet(location))}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new FatalError(`${what}: 307 to a ${url.protocol} Location`);
    const hostname = url.hostname.replace(/^\[|\]$/g, '');
    const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
    return { protocol: url.protocol, hostname, port, path: url.pathname + url.search, endpoint: hostPort(hostname, port) };
  }

  /** Send one request; resolves with the answer's head. Every failure becomes a FerryError. */
  #send(
    t: Target,
    method: string,
    what: string,
    options: { signal?: AbortSignal | undefined; headers?: Record<string, string | number> } = {},
  ): { req: ClientRequest; response: Promise<IncomingMessage> } {
    const mod = t.protocol === 'https:' ? https : http;
    const req = mod.request({
      protocol: t.protocol,
      hostname: t.hostname,
      port: t.port,
      path: t.path,
      method,
      agent: this.#agent,
      headers: options.headers ?? {},
    });
    const response = new Promise<IncomingMessage>((resolve, reject) => {
      req.once('response', resolve);
      req.on('error', (err) => reject(netError(err, what, t.endpoint, options.signal)));
    });
    response.catch(() => {});
    const signal = options.signal;
    if (signal) {
      // Not http's `signal` option: it destroys the request's socket with the abort even when the
      // request is not yet bound to it, or the exchange is over and the socket back in the pool,
      // and nothing listens for that socket's errors then (an uncaught exception). Here a request
      // is destroyed only while its exchange runs, and once it has its socket.
      let answer: IncomingMessage | undefined;
      const onAbort = (): void => {
        if (answer?.complete) return;
        const err = new AbortedError(`${what}: interrupted`);
        if (req.socket) req.destroy(err);
        else req.once('socket', () => req.destroy(err));
      };
      const off = (): void => signal.removeEventListener('abort', onAbort);
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        req.once('response', (res: IncomingMessage) => {
          answer = res;
          res.once('end', off);
        });
        req.once('close', off);
      }
    }
    req.setTimeout(this.#timeoutMs, () => req.destroy(new TransientError(`${what}: no answer from ${t.endpoint} in ${Math.round(this.#timeoutMs / 1000)} s`)));
    return { req, response };
  }

  /** A request without a body: one attempt (a dropped connection is a TransientError). */
  #bodyless(t: Target, method: string, what: string, signal?: AbortSignal): Promise<IncomingMessage> {
    const headers = method === 'GET' || method === 'DELETE' ? {} : { 'content-length': 0 };
    const { req, response } = this.#send(t, method, what, { signal, headers });
    req.end();
    return response;
  }

  #call(op: string, method: string, path: string, params: Params, signal?: AbortSignal): Promise<IncomingMessage> {
    return this.#bodyless(this.#target(op, path, params), method, this.#what(op, path), signal);
  }

  /** A metadata op answered with 200 and a JSON body (or an empty one). */
  async #json<T>(op: string, method: string, path: string, params: Params, signal?: AbortSignal, limit = JSON_LIMIT): Promise<T> {
    const what = this.#what(op, path);
    const res = await this.#call(op, method, path, params, signal);
    if (res.statusCode !== 200) throw errorFor(await readFailure(res), what);
    const text = await readText(res, limit, what);
    if (text.trim() === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new FatalError(`${what}: answered 200 with a body that is not JSON: ${snippet(text)}`);
    }
  }

  /** The user's home directory (`/user/NAME` on Hadoop), whether or not it exists. */
  async homeDirectory(signal?: AbortSignal): Promise<string> {
    const j = await this.#json<{ Path?: unknown }>('GETHOMEDIRECTORY', 'GET', '/', {}, signal);
    if (typeof j?.Path !== 'string' || !j.Path.startsWith('/')) throw new FatalError(`${this.#what('GETHOMEDIRECTORY', '/')}: the answer has no absolute Path`);
    return j.Path;
  }

  async getFileStatus(path: string, signal?: AbortSignal): Promise<FileStatus> {
    const j = await this.#json<{ FileStatus?: FileStatus }>('GETFILESTATUS', 'GET', path, {}, signal);
    if (!j?.FileStatus) throw new FatalError(`${this.#what('GETFILESTATUS', path)}: the answer has no FileStatus`);
    return j.FileStatus;
  }

  /**
   * The status of a path without following a final symlink. GETFILESTATUS follows links;
   * GETFILELINKSTATUS (Hadoop 3.3.5+) does not. Older namenodes fall back to GETFILESTATUS.
   */
  async getFileLinkStatus(path: string, signal?: AbortSignal): Promise<FileStatus> {
    const op = 'GETFILELINKSTATUS';
    if (this.#unknownOps.has(op)) return this.getFileStatus(path, signal);
    const what = this.#what(op, path);
    const res = await this.#call(op, 'GET', path, {}, signal);
    if (res.statusCode !== 200) {
      const f = await readFailure(res);
      if (isUnknownOp(f, op)) {
        this.#unknownOps.add(op);
        return this.getFileStatus(path, signal);
      }
      throw errorFor(f, what);
    }
    const text = await readText(res, JSON_LIMIT, what);
    const st = (parseJson(text, what) as { FileStatus?: FileStatus } | undefined)?.FileStatus;
    if (!st) throw new FatalError(`${what}: the answer has no FileStatus`);
    return st;
  }

  /**
   * One batch of a directory's entries after `startAfter` (a name, exclusive, in UTF-8 byte order)
   * with LISTSTATUS_BATCH; `remaining` > 0 means there are more. A namenode without the op (Hadoop
   * before 2.8) gets LISTSTATUS, the whole directory at once.
   */
  async listBatch(path: string, startAfter: string | undefined, signal?: AbortSignal): Promise<{ statuses: FileStatus[]; remaining: number }> {
    const op = 'LISTSTATUS_BATCH';
    if (!this.#unknownOps.has(op)) {
      const what = this.#what(op, path);
      const res = await this.#call(op, 'GET', path, { startAfter }, signal);
      if (res.statusCode === 200) {
        const j = parseJson(await readText(res, JSON_LIMIT, what), what) as
          | { DirectoryListing?: { partialListing?: { FileStatuses?: { FileStatus?: FileStatus[] } }; remainingEntries?: number } }
          | undefined;
        const d = j?.DirectoryListing;
        if (!d) throw new FatalError(`${what}: the answer has no DirectoryListing`);
        return { statuses: d.partialListing?.FileStatuses?.FileStatus ?? [], remaining: Number(d.remainingEntries ?? 0) };
      }
      const f = await readFailure(res);
      if (!isUnknownOp(f, op)) throw errorFor(f, what);
      this.#unknownOps.add(op);
    }
    const j = await this.#json<{ FileStatuses?: { FileStatus?: FileStatus[] } }>('LISTSTATUS', 'GET', path, {}, signal, LISTING_LIMIT);
    let statuses = j?.FileStatuses?.FileStatus ?? [];
    if (startAfter !== undefined) statuses = statuses.filter((s) => compareKeys(s.pathSuffix, startAfter) > 0);
    return { statuses, remaining: 0 };
  }

  /**
   * Read `length` bytes (to the end when omitted) from `offset`: the namenode redirects to a
   * datanode holding the block, which streams the bytes. Rejects before returning the stream when
   * the answer is not a 2xx.
   */
  async open(path: string, options: { offset?: number; length?: number; signal?: AbortSignal } = {}): Promise<Readable> {
    const op = 'OPEN';
    let what = this.#what(op, path);
    let t = this.#target(op, path, { offset: options.offset || undefined, length: options.length });
    for (let hop = 0; ; hop++) {
      const res = await this.#bodyless(t, 'GET', what, options.signal);
      const status = res.statusCode ?? 0;
      if (status === 307 && hop < MAX_REDIRECTS) {
        res.resume();
        t = this.#redirectTarget(res.headers.location, t, what);
        what = `hdfs ${op} ${path} at datanode ${t.endpoint}`;
        continue;
      }
      if (status >= 200 && status < 300) return new ResponseBody(res, what, options.signal);
      throw errorFor(await readFailure(res), what);
    }
  }

  /**
   * Write a file: PUT to the namenode without a body, which redirects to a datanode; the body goes
   * there (Content-Length when the size is known, chunked otherwise). `size` is enforced.
   */
  async create(
    path: string,
    body: Readable | Buffer,
    options: { size?: number; overwrite?: boolean; permission?: number; signal?: AbortSignal } = {},
  ): Promise<void> {
    const op = 'CREATE';
    const what = this.#what(op, path);
    const first = this.#target(op, path, {
      overwrite: options.overwrite ?? true,
      permission: options.permission === undefined ? undefined : (options.permission & 0o1777).toString(8),
    });
    const res = await this.#bodyless(first, 'PUT', what, options.signal);
    if (res.statusCode !== 307) {
      if ((res.statusCode ?? 0) < 300) {
        res.resume();
        throw new FatalError(`${what}: answered ${res.statusCode} instead of a redirect to a datanode`);
      }
      throw errorFor(await readFailure(res), what);
    }
    res.resume();
    const t = this.#redirectTarget(res.headers.location, first, what);
    await this.#upload(t, body, options.size, `hdfs ${op} ${path} at datanode ${t.endpoint}`, options.signal);
  }

  /** PUT the body to the datanode; only 200/201 is success. */
  async #upload(t: Target, body: Readable | Buffer, size: number | undefined, what: string, signal?: AbortSignal): Promise<void> {
    const length = Buffer.isBuffer(body) ? body.length : size;
    const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream' };
    if (length !== undefined) headers['content-length'] = length;
    const { req, response } = this.#send(t, 'PUT', what, { signal, headers });
    let sendError: unknown;
    let sent = false;
    const sending = (
      Buffer.isBuffer(body)
        ? // end()'s callback waits for 'finish' only; a failed request ends with 'close'.
          new Promise<void>((resolve) => {
            req.once('close', resolve);
            req.end(body, resolve);
          })
        : pipeline(size === undefined ? [body, req] : [body, sizeGuard(size, what), req])
    ).then(
      () => {
        sent = true;
      },
      (err: unknown) => {
        sendError = err;
        req.destroy();
      },
    );
    const fromSending = (): FerryError => (signal?.aborted ? new AbortedError(`${what}: interrupted`) : fromSystemError(sendError, what));
    let res: IncomingMessage;
    try {
      res = await response;
    } catch (err) {
      await sending;
      // The body's own failure explains more than the connection it broke; a connection failure
      // seen by both keeps the message that names the endpoint.
      throw sendError !== undefined && (err as FerryError).cause !== sendError ? fromSending() : err;
    }
    const status = res.statusCode ?? 0;
    if (status !== 200 && status !== 201) {
      // The datanode refused, perhaps before the body was through: stop sending.
      const failure = await readFailure(res);
      if (!sent) req.destroy();
      await sending;
      if (status >= 200 && status < 400) throw new FatalError(`${what}: answered ${status} instead of 201 Created`);
      throw errorFor(failure, what);
    }
    await sending;
    if (sendError !== undefined) throw fromSending();
    await readText(res, ERROR_BODY_LIMIT, what).catch(() => '');
  }

  async mkdirs(path: string, permission?: number, signal?: AbortSignal): Promise<void> {
    const j = await this.#json<{ boolean?: boolean }>(
      'MKDIRS',
      'PUT',
      path,
      { permission: permission === undefined ? undefined : (permission & 0o1777).toString(8) },
      signal,
    );
    if (j?.boolean !== true) throw new FatalError(`${this.#what('MKDIRS', path)}: the namenode answered false`);
  }

  /** True when something was deleted; a missing path answers false. */
  async delete(path: string, recursive = false, signal?: AbortSignal): Promise<boolean> {
    const j = await this.#json<{ boolean?: boolean }>('DELETE', 'DELETE', path, { recursive }, signal);
    return j?.boolean === true;
  }

  /**
   * Rename; with `overwrite` an existing file at `destination` is replaced atomically (rename2).
   * With `ifAbsent` (rename2 without OVERWRITE) an existing `destination`, file or directory, is
   * left alone and the namenode answers FileAlreadyExistsException (remoteExceptionOf): the check
   * and the rename are one step under the namenode's lock. (The plain rename would move the file
   * into a directory of that name.)
   */
  async rename(path: string, destination: string, options: { overwrite?: boolean; ifAbsent?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    const rename2 = options.overwrite === true || options.ifAbsent === true;
    const j = await this.#json<{ boolean?: boolean } | undefined>(
      'RENAME',
      'PUT',
      path,
      { destination, renameoptions: options.overwrite ? 'OVERWRITE' : options.ifAbsent ? 'NONE' : undefined },
      options.signal,
    );
    if (!rename2 && j?.boolean !== true) throw new FatalError(`${this.#what('RENAME', path)}: the namenode refused to rename to ${destination}`);
  }

  async setPermission(path: string, mode: number, signal?: AbortSignal): Promise<void> {
    await this.#json('SETPERMISSION', 'PUT', path, { permission: (mode & 0o1777).toString(8) }, signal);
  }

  /** Owner and group are names. Only the superuser may change the owner. */
  async setOwner(path: string, owner: string | undefined, group: string | undefined, signal?: AbortSignal): Promise<void> {
    await this.#json('SETOWNER', 'PUT', path, { owner, group }, signal);
  }

  /** Times in milliseconds; an omitted time is left as it is (-1). */
  async setTimes(path: string, times: { mtime?: number; atime?: number }, signal?: AbortSignal): Promise<void> {
    await this.#json(
      'SETTIMES',
      'PUT',
      path,
      {
        modificationtime: times.mtime === undefined ? -1 : Math.round(times.mtime),
        accesstime: times.atime === undefined ? -1 : Math.round(times.atime),
      },
      signal,
    );
  }

  /** `target` must be absolute: WebHDFS's `destination` parameter refuses relative paths. */
  async createSymlink(path: string, target: string, signal?: AbortSignal): Promise<void> {
    await this.#json('CREATESYMLINK', 'PUT', path, { destination: target, createparent: true }, signal);
  }

  close(): void {
    this.#agent.destroy();
  }
}

function parseJson(text: string, what: string): unknown {
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new FatalError(`${what}: answered 200 with a body that is not JSON: ${snippet(text)}`);
  }
}
