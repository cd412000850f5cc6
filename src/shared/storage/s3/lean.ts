/**
 * The per-object hot calls (GetObject, HeadObject, single-part PutObject, DeleteObject) sent
 * straight with node:http(s) and signed with SigV4. Measured on this project's 2-core machine: the
 * SDK's `send()` costs 2.8–3.4 ms of CPU per request (schema serde, endpoint rules, retry, user-agent
 * and checksum middleware), a plain signed request ~0.4 ms; with small objects that is most of
 * ferry's CPU. Everything else (listings, multipart, copies, batch deletes) stays with the SDK.
 *
 * Whatever the SDK would decide is taken from the store's own SDK client, so both paths agree: the
 * endpoint (the SDK's endpoint rules, resolved once per bucket and region), the credentials (its
 * memoized provider chain), the clock-skew offset, the keep-alive agent. Failures reject with errors
 * shaped like the SDK's (`name`/`Code` from the XML error body, `$metadata.httpStatusCode`,
 * `$response.headers`; network errors as Node raises them, time-outs named `TimeoutError`, aborts as
 * `AbortError` with the signal's reason as `cause`), so `mapS3Error` classifies both paths alike.
 */
import { request as httpRequest, type Agent, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getEndpointFromInstructions } from '@smithy/core/endpoints';
import { escapeUri, SigV4 } from './sigv4.js';
import { TransientError } from '../../errors.js';
import { CONNECTION_TIMEOUT_MS, SOCKET_TIMEOUT_MS, type S3Settings } from './config.js';

/** SHA-256 of an empty payload: what the SDK signs for requests without a body. */
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
/** Error bodies are small XML documents; more than this is not an S3 error body. */
const MAX_ERROR_BODY = 64 * 1024;
/** Node error codes the SDK's HTTP handler renames `TimeoutError`. */
const TIMEOUT_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

/** Where and how requests for one bucket in one region go. */
interface Target {
  https: boolean;
  /** For connecting: an IPv6 address without its brackets. */
  hostname: string;
  port: number | undefined;
  /** The Host header, as the SDK sends and signs it. */
  host: string;
  /** The path up to the key, ending in '/': '/' (virtual host) or '/BUCKET/' (path style). */
  basePath: string;
  signingRegion: string;
}

export interface LeanRequest {
  method: 'GET' | 'HEAD' | 'PUT' | 'DELETE';
  key: string;
  /** Extra headers, lower-case names (range, content-length, x-amz-storage-class, ...). */
  headers?: Record<string, string>;
  body?: Buffer | Readable;
  /** Query parameters (signed); a GET with a query is read whole, like other non-GET answers. */
  query?: Record<string, string>;
  signal?: AbortSignal | undefined;
  /** `s3 PUT bucket/key`, for the few errors made here. */
  what: string;
}

/** An error answer, shaped as the SDK shapes it (what `mapS3Error` reads). */
export interface ServiceError extends Error {
  Code?: string;
  $fault: 'client' | 'server';
  $metadata: { httpStatusCode: number };
  $response: { statusCode: number; headers: IncomingHttpHeaders };
}

/** An object key as S3 wants it in a path: each segment RFC 3986-encoded, '/' kept. */
export function encodeKey(key: string): string {
  return key
    .split('/')
    .map((s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase()))
    .join('/');
}

function decodeXml(s: string): string {
  return s.replace(/&(?:#(\d+)|#x([0-9a-fA-F]+)|(amp|lt|gt|quot|apos));/g, (_m, dec: string | undefined, hex: string | undefined, name: string | undefined) => {
    if (dec) return String.fromCodePoint(Number(dec));
    if (hex) return String.fromCodePoint(parseInt(hex, 16));
    return ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[name!]!;
  });
}

/**
 * The SDK's error for a response: the Code and Message of an XML error body when there is one;
 * `NotFound` for 404 and `Unknown` for the rest when the body is empty or XML without a code; a
 * plain `Error` (no name to show) when the body is not XML at all (a proxy's text or HTML page).
 */
export function serviceError(status: number, headers: IncomingHttpHeaders, body: string): ServiceError {
  const text = body.trim();
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1];
  let err: ServiceError;
  if (text !== '' && !text.startsWith('<')) {
    err = new Error(`the service answered ${status} with a body that is not XML`) as ServiceError;
  } else {
    err = new Error(message === undefined ? 'UnknownError' : decodeXml(message)) as ServiceError;
    err.name = code !== undefined ? decodeXml(code) : status === 404 ? 'NotFound' : 'Unknown';
    if (code !== undefined) err.Code = err.name;
  }
  err.$fault = status >= 500 ? 'server' : 'client';
  err.$metadata = { httpStatusCode: status };
  err.$response = { statusCode: status, headers };
  return err;
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  const err = new Error(reason instanceof Error || reason === undefined ? 'Request aborted' : String(reason), reason instanceof Error ? { cause: reason } : undefined);
  err.name = 'AbortError';
  return err;
}

function timeoutError(message: string): Error {
  const err = new Error(message);
  err.name = 'TimeoutError';
  return err;
}

/** Read a small response body whole; past `limit` bytes the rest is dropped. */
function collect(res: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (c: Buffer) => {
      if (size < limit) chunks.push(c);
      size += c.length;
    });
    res.on('end', () => resolve(Buffer.concat(chunks).subarray(0, limit).toString('utf8')));
    res.on('error', reject);
  });
}

export class LeanS3 {
  readonly #client: S3Client;
  readonly #settings: S3Settings;
  readonly #agent: Agent;
  readonly #signer: SigV4 | undefined;
  /** Per region: the target, or undefined when the SDK must send the requests (see `#resolve`). */
  readonly #targets = new Map<string, Promise<Target | undefined>>();
  /** The bucket's region: the configured one until S3 redirects a request elsewhere. */
  #region: string;

  constructor(client: S3Client, settings: S3Settings, agent: Agent) {
    this.#client = client;
    this.#settings = settings;
    this.#agent = agent;
    this.#region = settings.region;
    // Anonymous stores send requests unsigned, as the SDK client's no-op signer does.
    this.#signer = settings.credentials.kind === 'anonymous' ? undefined : new SigV4('s3');
  }

  /** Whether this store's requests can go the lean way (false: the SDK must send them). */
  async usable(): Promise<boolean> {
    return (await this.#target(this.#region)) !== undefined;
  }

  /** The URL a request for `key` goes to (undefined: the SDK sends them); for tests and messages. */
  async url(key: string): Promise<string | undefined> {
    const t = await this.#target(this.#region);
    return t && `${t.https ? 'https' : 'http'}://${t.host}${t.basePath}${encodeKey(key)}`;
  }

  #target(region: string): Promise<Target | undefined> {
    let target = this.#targets.get(region);
    if (!target) {
      target = this.#resolve(region).catch(() => undefined);
      this.#targets.set(region, target);
    }
    return target;
  }

  /**
   * The SDK's own endpoint resolution for a GetObject on this bucket. Anything but plain SigV4 for
   * service s3 on an http(s) URL (S3 Express directory buckets, access point ARNs, endpoints that
   * add headers) is left to the SDK.
   */
  async #resolve(region: string): Promise<Target | undefined> {
    const config = region === this.#settings.region ? this.#client.config : { ...this.#client.config, region: async () => region };
    const endpoint = await getEndpointFromInstructions({ Bucket: this.#settings.bucket, Key: 'k' }, GetObjectCommand, config);
    const auth = (endpoint.properties?.['authSchemes'] as { name?: string; signingName?: string; signingRegion?: string }[] | undefined)?.[0];
    if (auth && (auth.name !== 'sigv4' || (auth.signingName ?? 's3') !== 's3')) return undefined;
    if (endpoint.headers && Object.keys(endpoint.headers).length > 0) return undefined;
    const url = endpoint.url;
    if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.username !== '' || url.password !== '') return undefined;
    // The store's agent speaks one protocol.
    if ((url.protocol === 'https:') !== this.#settings.https) return undefined;
    return {
      https: url.protocol === 'https:',
      hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: url.port === '' ? undefined : Number(url.port),
      host: url.host,
      basePath: url.pathname.replace(/\/$/, '') + '/',
      signingRegion: auth?.signingRegion ?? region,
    };
  }

  /**
   * Send one request. Resolves with the response once it is known to be a success: a GET's body is
   * left to the caller to stream; other responses have been read. Rejects as the SDK would.
   */
  async send(request: LeanRequest): Promise<IncomingMessage> {
    const region = this.#region;
    try {
      return await this.#sendTo(region, request);
    } catch (err) {
      const moved = this.#redirected(err, region);
      if (moved === undefined) throw err;
      // As the SDK's region redirect, once; unlike it, the store remembers the region.
      this.#region = moved;
      if (request.body !== undefined && !Buffer.isBuffer(request.body)) {
        throw new TransientError(`${request.what}: the bucket is in ${moved}, not ${region}; the next attempt goes there (301)`, { cause: err });
      }
      return await this.#sendTo(moved, request);
    }
  }

  /** The region S3 says the bucket is in, when it redirects and the store follows redirects. */
  #redirected(err: unknown, region: string): string | undefined {
    if (!this.#settings.followRegionRedirects) return undefined;
    const e = err as Partial<ServiceError>;
    const status = e.$metadata?.httpStatusCode;
    const header = e.$response?.headers['x-amz-bucket-region'];
    const moved = Array.isArray(header) ? header[0] : header;
    if (!moved || moved === region) return undefined;
    if (status === 301 || (status === 400 && e.name === 'IllegalLocationConstraintException')) return moved;
    return undefined;
  }

  async #sendTo(region: string, r: LeanRequest): Promise<IncomingMessage> {
    if (r.signal?.aborted) throw abortError(r.signal);
    const target = await this.#target(region);
    if (!target) throw new Error(`s3: no direct endpoint for ${this.#settings.bucket} in ${region}`);
    const path = target.basePath + encodeKey(r.key);
    const query = r.query ?? {};
    const headers: Record<string, string> = { host: target.host, ...r.headers };
    if (this.#signer) {
      headers['x-amz-content-sha256'] = r.body === undefined ? EMPTY_SHA256 : 'UNSIGNED-PAYLOAD';
      const offset = this.#client.config.systemClockOffset ?? 0;
      const creds = await this.#client.config.credentials();
      this.#signer.sign(r.method, path, query, headers, creds, target.signingRegion, new Date(Date.now() + offset));
      if (r.signal?.aborted) throw abortError(r.signal);
    }
    const search = Object.keys(query)
      .sort()
      .map((k) => `${escapeUri(k)}=${escapeUri(query[k]!)}`)
      .join('&');
    return this.#exchange(target, search ? `${path}?${search}` : path, headers, r);
  }

  #exchange(target: Target, path: string, headers: Record<string, string>, r: LeanRequest): Promise<IncomingMessage> {
    return new Promise<IncomingMessage>((resolve, reject) => {
      const sent = Date.now();
      const req: ClientRequest = (target.https ? httpsRequest : httpRequest)({
        agent: this.#agent,
        hostname: target.hostname,
        ...(target.port === undefined ? {} : { port: target.port }),
        method: r.method,
        path,
        headers,
      });
      let settled = false;
      let response: IncomingMessage | undefined;
      let connectTimer: NodeJS.Timeout | undefined;
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(connectTimer);
        // A connection whose exchange finished cleanly (an error answer read whole) stays in the pool.
        if (!(response?.complete && req.writableFinished)) req.destroy();
        reject(err);
      };
      const succeed = (res: IncomingMessage): void => {
        if (settled) return;
        settled = true;
        resolve(res);
      };

      req.on('error', (err: NodeJS.ErrnoException) => {
        if (typeof err.code === 'string' && TIMEOUT_CODES.has(err.code)) err.name = 'TimeoutError';
        fail(err);
      });
      const signal = r.signal;
      if (signal) {
        // Also after the response: aborting stops a GET's body too, as with the SDK.
        const onAbort = (): void => {
          fail(abortError(signal));
          req.destroy();
        };
        signal.addEventListener('abort', onAbort, { once: true });
        req.once('close', () => signal.removeEventListener('abort', onAbort));
      }
      req.once('socket', (socket: Socket) => {
        if (!socket.connecting) return;
        connectTimer = setTimeout(() => fail(timeoutError(`the request socket did not establish a connection with the server within ${CONNECTION_TIMEOUT_MS} ms`)), CONNECTION_TIMEOUT_MS);
        socket.once('connect', () => clearTimeout(connectTimer));
      });
      req.once('close', () => clearTimeout(connectTimer));
      req.setTimeout(SOCKET_TIMEOUT_MS, () => {
        const err = timeoutError(`the request socket timed out after ${SOCKET_TIMEOUT_MS} ms of inactivity`);
        if (response && !response.complete) response.destroy(err);
        fail(err);
        req.destroy();
      });

      req.on('response', (res: IncomingMessage) => {
        response = res;
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) {
          if (res.headers['date'] !== undefined && res.headers['age'] === undefined) this.#sampleClock(res.headers['date'], sent);
          // HEAD answers have no body: the status alone speaks, as with the SDK.
          collect(res, r.method === 'HEAD' ? 0 : MAX_ERROR_BODY).then((body) => fail(serviceError(status, res.headers, body)), fail);
          return;
        }
        if (r.method === 'GET' && r.query === undefined) return succeed(res);
        if (r.method === 'HEAD') {
          res.resume();
          return succeed(res);
        }
        // As the SDK: a 2xx answer whose body is an XML error is a 503 with that error.
        if (r.method === 'GET') {
          // A listing: read whole here (a page of 1,000 keys is a few hundred KiB).
          collect(res, MAX_LISTING_BODY).then((body) => {
            if (body.trimEnd().endsWith('</Error>')) return fail(serviceError(503, res.headers, body));
            (res as IncomingMessage & { text?: string }).text = body;
            succeed(res);
          }, fail);
          return;
        }
        collect(res, MAX_ERROR_BODY).then((body) => (body.trimEnd().endsWith('</Error>') ? fail(serviceError(503, res.headers, body)) : succeed(res)), fail);
      });

      const body = r.body;
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else {
        body.on('error', fail);
        body.pipe(req);
      }
    });
  }

  /** As the SDK's signer: an error answer's Date header corrects the clock offset used to sign. */
  #sampleClock(date: string, sent: number): void {
    const server = Date.parse(date);
    const now = Date.now();
    if (Number.isNaN(server) || now - sent > 900_000) return;
    this.#client.config.systemClockOffset = server - now;
  }
}

/** The largest listing page read (S3 pages hold at most 1,000 keys of at most 1,024 bytes). */
const MAX_LISTING_BODY = 16 << 20;
