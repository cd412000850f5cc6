/**
 * A Tencent COS test server on node:http that checks what COS checks: the `q-sign-algorithm=sha1`
 * Authorization header (computed here from Tencent's documented algorithm, independently of the
 * SDK), the bucket in the virtual-host `Host` header, GET Bucket (V1) paging with
 * Marker/NextMarker/IsTruncated, ranges, multipart uploads with a validated part list, copies named
 * by `x-cos-copy-source`, batched deletes with Content-MD5, and COS's XML error bodies.
 * `x-cos-forbid-overwrite: true` on PUT Object, PUT Object - Copy and Complete Multipart Upload
 * refuses to replace a key (409 FileAlreadyExists), checked in the same turn of the event loop that
 * stores the object: of racing creates exactly one wins.
 *
 * Stricter or smaller than the real service where a test needs it: a listing page holds at most
 * `pageLimit` (100) entries even when max-keys asks for 1000, so paging is exercised with few keys.
 * Object bodies live in files under a temporary directory, never whole in memory.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { compareKeys } from '../../src/shared/storage/keys.js';

/** 503 SlowDown, 500 InternalError, a dropped connection, or a request read and never answered. */
export type CosFault = 'throttle' | 'error' | 'drop' | 'stall';

export interface CosCredential {
  secretId: string;
  secretKey: string;
  /** A temporary credential: requests must carry it in `x-cos-security-token`. */
  token?: string;
}

export interface CosServerOptions {
  credentials?: CosCredential[];
  /** Buckets (`name-appid`) created at start, all in `region`. */
  buckets?: string[];
  region?: string;
  /** Most entries one GET Bucket page returns, whatever max-keys says (default 100). */
  pageLimit?: number;
  /** Longest key in UTF-8 bytes (COS: 850). */
  maxKeyBytes?: number;
  /** Smallest part but the last in a completed multipart upload (COS: 1 MiB). */
  minPartSize?: number;
}

export interface StoredObject {
  size: number;
  etag: string;
  mtime: Date;
  storageClass: string;
  contentType: string;
  file: string;
}

export interface LoggedRequest {
  method: string;
  bucket: string;
  key: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  fault?: CosFault;
}

interface Part {
  file: string;
  size: number;
  etag: string;
  md5: Buffer;
}

interface Upload {
  bucket: string;
  key: string;
  storageClass: string;
  contentType: string;
  parts: Map<number, Part>;
}

interface Bucket {
  name: string;
  region: string;
  /** Keys in UTF-8 byte order. */
  keys: string[];
  objects: Map<string, StoredObject>;
}

class CosError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const STORAGE_CLASSES = new Set([
  'STANDARD',
  'STANDARD_IA',
  'ARCHIVE',
  'DEEP_ARCHIVE',
  'INTELLIGENT_TIERING',
  'MAZ_STANDARD',
  'MAZ_STANDARD_IA',
  'MAZ_INTELLIGENT_TIERING',
]);
const HOST = /^([a-z0-9-]+-\d+)\.cos\.([a-z0-9-]+)\.myqcloud\.com(?::\d+)?$/;
const COPY_SOURCE = /^\/?([a-z0-9-]+-\d+)\.cos\.([a-z0-9-]+)\.myqcloud\.com\/([^?]+)(?:\?.*)?$/;
const MAX_XML_BODY = 2 << 20;
/** How far the signature's time window may be from the server's clock, in seconds. */
const CLOCK_SKEW = 900;

/** RFC 3986 percent-encoding: everything but A-Z a-z 0-9 - _ . ~ (Tencent's "UrlEncode"). */
function uriEncode(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-_.~]/.test(c) ? c : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

function hmacSha1Hex(key: string, data: string): string {
  return createHmac('sha1', key).update(data).digest('hex');
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

function xmlUnescape(s: string): string {
  return s.replace(/&(lt|gt|quot|apos|amp|#x[0-9a-fA-F]+|#\d+);/g, (_, e: string) => {
    switch (e) {
      case 'lt':
        return '<';
      case 'gt':
        return '>';
      case 'quot':
        return '"';
      case 'apos':
        return "'";
      case 'amp':
        return '&';
      default:
        return String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    }
  });
}

/** COS's `encoding-type=url` form of a name in a listing (spaces as '+', like form encoding). */
function listEncode(s: string): string {
  return encodeURIComponent(s).replace(/%20/g, '+');
}

function parseQuery(raw: string): Record<string, string> {
  const q: Record<string, string> = {};
  if (raw === '') return q;
  for (const part of raw.split('&')) {
    if (part === '') continue;
    const i = part.indexOf('=');
    const k = i < 0 ? part : part.slice(0, i);
    const v = i < 0 ? '' : part.slice(i + 1);
    q[decodeURIComponent(k)] = decodeURIComponent(v);
  }
  return q;
}

function requestId(): string {
  return randomBytes(18).toString('base64');
}

function isoDate(d: Date): string {
  return d.toISOString();
}

function normEtag(s: string): string {
  return s.replace(/^"|"$/g, '');
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) throw new CosError(400, 'EntityTooLarge', 'request body too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

function tags(xml: string, name: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`<${name}>([\\s\\S]*?)</${name}>`, 'g');
  for (let m = re.exec(xml); m; m = re.exec(xml)) out.push(m[1] ?? '');
  return out;
}

export class CosServer {
  readonly region: string;
  readonly dir: string;
  /** Every request received, in order (faulted ones too). */
  readonly requests: LoggedRequest[] = [];
  readonly #server: Server;
  readonly #credentials: CosCredential[];
  readonly #buckets = new Map<string, Bucket>();
  readonly #uploads = new Map<string, Upload>();
  readonly #faults: { fault: CosFault; op: 'UploadPart' | undefined }[] = [];
  readonly #sockets = new Set<Socket>();
  /** TCP connections accepted so far. */
  connections = 0;
  readonly #pageLimit: number;
  readonly #maxKeyBytes: number;
  readonly #minPartSize: number;
  #seq = 0;

  private constructor(dir: string, options: CosServerOptions) {
    this.dir = dir;
    this.region = options.region ?? 'ap-beijing';
    this.#credentials = options.credentials ?? [{ secretId: 'AKIDtest', secretKey: 'test-secret-key' }];
    this.#pageLimit = options.pageLimit ?? 100;
    this.#maxKeyBytes = options.maxKeyBytes ?? 850;
    this.#minPartSize = options.minPartSize ?? 1 << 20;
    for (const b of options.buckets ?? []) this.createBucket(b);
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.#sendError(req, res, err instanceof CosError ? err : new CosError(500, 'InternalError', String(err)));
        else res.destroy();
      });
    });
    // Longer than any test: a keep-alive socket closed under the client would look like a fault.
    this.#server.keepAliveTimeout = 120_000;
    this.#server.on('connection', (socket: Socket) => {
      this.connections++;
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
  }

  static async start(options: CosServerOptions = {}): Promise<CosServer> {
    const dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-cos-server-'));
    const s = new CosServer(dir, options);
    await new Promise<void>((resolve) => s.#server.listen(0, '127.0.0.1', resolve));
    return s;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  /** `127.0.0.1:PORT`, for the SDK's `Ip` option. */
  get ip(): string {
    return `127.0.0.1:${this.port}`;
  }

  createBucket(name: string, region = this.region): void {
    if (!this.#buckets.has(name)) this.#buckets.set(name, { name, region, keys: [], objects: new Map() });
  }

  object(bucket: string, key: string): StoredObject | undefined {
    return this.#buckets.get(bucket)?.objects.get(key);
  }

  keys(bucket: string): string[] {
    return [...(this.#buckets.get(bucket)?.keys ?? [])];
  }

  /** Multipart uploads started and neither completed nor aborted. */
  get pendingUploads(): number {
    return this.#uploads.size;
  }

  /**
   * Fail the next `count` requests (or, with `op`, the next `count` part uploads): 503 SlowDown,
   * 500 InternalError, a dropped connection, or no answer.
   */
  inject(fault: CosFault, count = 1, op?: 'UploadPart'): void {
    for (let i = 0; i < count; i++) this.#faults.push({ fault, op });
  }

  #takeFault(method: string, query: Record<string, string>, headers: IncomingMessage['headers']): CosFault | undefined {
    const isPart = method === 'PUT' && 'partNumber' in query && 'uploadId' in query && headers['x-cos-copy-source'] === undefined;
    const i = this.#faults.findIndex((f) => f.op === undefined || (f.op === 'UploadPart' && isPart));
    if (i < 0) return undefined;
    return this.#faults.splice(i, 1)[0]!.fault;
  }

  /** Cut every open connection, as a network failure would (a body being sent stops short). */
  dropConnections(): void {
    for (const s of this.#sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await fsp.rm(this.dir, { recursive: true, force: true });
  }

  #newFile(): string {
    return join(this.dir, `o${++this.#seq}`);
  }

  // ---- dispatch -------------------------------------------------------------------------------

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const rawPath = qi < 0 ? url : url.slice(0, qi);
    let query: Record<string, string>;
    let path: string;
    try {
      query = parseQuery(qi < 0 ? '' : url.slice(qi + 1));
      path = decodeURIComponent(rawPath);
    } catch {
      throw new CosError(400, 'InvalidURI', 'Could not parse the specified URI.');
    }
    const key = path.slice(1);
    const host = HOST.exec(req.headers.host ?? '');
    const method = req.method ?? 'GET';
    const fault = this.#takeFault(method, query, req.headers);
    this.requests.push({ method, bucket: host?.[1] ?? '', key, query, headers: { ...req.headers }, ...(fault ? { fault } : {}) });

    if (fault === 'drop') {
      req.socket.destroy();
      return;
    }
    if (fault === 'stall') {
      req.resume();
      return;
    }
    if (fault) {
      req.resume();
      await new Promise((r) => req.once('end', r));
      throw fault === 'throttle' ? new CosError(503, 'SlowDown', 'Please reduce your request rate.') : new CosError(500, 'InternalError', 'We encountered an internal error. Please try again.');
    }
    if (!host) throw new CosError(400, 'InvalidURI', `Host ${req.headers.host ?? ''} is not BUCKET-APPID.cos.REGION.myqcloud.com`);
    this.#verifySignature(req, method, path, query);

    const bucket = this.#buckets.get(host[1]!);
    if (!bucket || bucket.region !== host[2]) throw new CosError(404, 'NoSuchBucket', 'The specified bucket does not exist.');
    if (Buffer.byteLength(key) > this.#maxKeyBytes) throw new CosError(400, 'KeyTooLong', `Your key is too long (limit ${this.#maxKeyBytes} bytes).`);

    if (key === '') {
      if (method === 'GET') return this.#listObjects(bucket, query, res);
      if (method === 'HEAD') return void res.writeHead(200, this.#commonHeaders()).end();
      if (method === 'POST' && 'delete' in query) return this.#deleteMultiple(bucket, req, res);
      throw new CosError(405, 'MethodNotAllowed', `${method} on a bucket is not supported here.`);
    }
    switch (method) {
      case 'GET':
        return this.#getObject(bucket, key, req, res);
      case 'HEAD':
        return this.#headObject(bucket, key, res);
      case 'PUT':
        if ('uploadId' in query || 'partNumber' in query) return this.#uploadPart(bucket, key, query, req, res);
        if (req.headers['x-cos-copy-source'] !== undefined) return this.#copyObject(bucket, key, req, res);
        return this.#putObject(bucket, key, req, res);
      case 'POST':
        if ('uploads' in query) return this.#initiate(bucket, key, req, res);
        if ('uploadId' in query) return this.#complete(bucket, key, query, req, res);
        break;
      case 'DELETE':
        if ('uploadId' in query) return this.#abort(bucket, key, query, res);
        return this.#deleteObject(bucket, key, res);
    }
    throw new CosError(405, 'MethodNotAllowed', `${method} ${Object.keys(query).join('&')} is not supported.`);
  }

  /**
   * Tencent's signature (https://cloud.tencent.com/document/product/436/7778):
   * SignKey = HMAC-SHA1(SecretKey, KeyTime); HttpString = method\npath\nparams\nheaders\n;
   * StringToSign = sha1\nSignTime\nSHA1(HttpString)\n; Signature = HMAC-SHA1(SignKey, StringToSign).
   * Params and headers are those the client listed in q-url-param-list and q-header-list.
   */
  #verifySignature(req: IncomingMessage, method: string, path: string, query: Record<string, string>): void {
    const auth = req.headers.authorization;
    if (!auth) throw new CosError(403, 'AccessDenied', 'Access Denied.');
    const f = new Map<string, string>();
    for (const part of auth.split('&')) {
      const i = part.indexOf('=');
      if (i > 0) f.set(part.slice(0, i), part.slice(i + 1));
    }
    const need = ['q-sign-algorithm', 'q-ak', 'q-sign-time', 'q-key-time', 'q-header-list', 'q-url-param-list', 'q-signature'];
    if (need.some((k) => !f.has(k)) || f.get('q-sign-algorithm') !== 'sha1') throw new CosError(403, 'AccessDenied', 'Authorization header is malformed.');
    const cred = this.#credentials.find((c) => c.secretId === f.get('q-ak'));
    if (!cred) throw new CosError(403, 'InvalidAccessKeyId', 'The access key Id you provided does not exist in our records.');
    const signTime = f.get('q-sign-time')!;
    const [start, end] = signTime.split(';').map(Number);
    const now = Math.floor(Date.now() / 1000);
    if (!Number.isFinite(start) || !Number.isFinite(end) || now < start! - CLOCK_SKEW || now > end!) throw new CosError(403, 'AccessDenied', 'Request has expired');

    const lowerQuery = new Map<string, string>();
    for (const [k, v] of Object.entries(query)) lowerQuery.set(uriEncode(k.toLowerCase()), v);
    const paramNames = f.get('q-url-param-list')!.split(';').filter((s) => s !== '').sort();
    const params = paramNames.map((k) => `${k}=${uriEncode(lowerQuery.get(k) ?? '')}`).join('&');
    const headerNames = f.get('q-header-list')!.split(';').filter((s) => s !== '').sort();
    const headers = headerNames
      .map((k) => {
        const v = req.headers[k];
        return `${k}=${uriEncode(Array.isArray(v) ? v.join(',') : (v ?? ''))}`;
      })
      .join('&');
    const httpString = `${method.toLowerCase()}\n${path}\n${params}\n${headers}\n`;
    const stringToSign = `sha1\n${signTime}\n${createHash('sha1').update(httpString).digest('hex')}\n`;
    const signKey = hmacSha1Hex(cred.secretKey, f.get('q-key-time')!);
    if (hmacSha1Hex(signKey, stringToSign) !== f.get('q-signature')) {
      throw new CosError(403, 'SignatureDoesNotMatch', 'The Signature you specified is invalid.');
    }
    if (cred.token !== undefined && req.headers['x-cos-security-token'] !== cred.token) {
      throw new CosError(403, 'InvalidAccessKeyId', 'The security token of the temporary key is missing or invalid.');
    }
  }

  #commonHeaders(): Record<string, string> {
    return { 'x-cos-request-id': requestId(), server: 'tencent-cos' };
  }

  #sendError(req: IncomingMessage, res: ServerResponse, e: CosError): void {
    const id = requestId();
    const headers = { 'x-cos-request-id': id, server: 'tencent-cos', 'content-type': 'application/xml' };
    if (req.method === 'HEAD') {
      res.writeHead(e.status, headers).end();
      return;
    }
    const body =
      `<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n\t<Code>${e.code}</Code>\n\t<Message>${xmlEscape(e.message)}</Message>\n` +
      `\t<Resource>${xmlEscape((req.headers.host ?? '') + (req.url ?? ''))}</Resource>\n\t<RequestId>${id}</RequestId>\n` +
      `\t<TraceId>${randomBytes(24).toString('base64')}</TraceId>\n</Error>`;
    // Drain what the client still sends so it reads the answer instead of a reset.
    req.resume();
    res.writeHead(e.status, { ...headers, 'content-length': Buffer.byteLength(body) }).end(body);
  }

  #sendXml(res: ServerResponse, status: number, xml: string): void {
    const body = `<?xml version="1.0" encoding="UTF-8"?>\n${xml}`;
    res.writeHead(status, { ...this.#commonHeaders(), 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) }).end(body);
  }

  #storageClass(req: IncomingMessage): string {
    const sc = req.headers['x-cos-storage-class'];
    if (sc === undefined) return 'STANDARD';
    const v = String(sc).toUpperCase();
    if (!STORAGE_CLASSES.has(v)) throw new CosError(400, 'InvalidArgument', `Invalid storage class ${String(sc)}.`);
    return v;
  }

  /**
   * A write with `x-cos-forbid-overwrite: true` finds `key` there: its new file goes, 409. Called in
   * the same synchronous step as the #store that follows, so no other write comes between.
   */
  #refuseOverwrite(bucket: Bucket, key: string, req: IncomingMessage, file: string): void {
    if (String(req.headers['x-cos-forbid-overwrite'] ?? '').toLowerCase() !== 'true' || !bucket.objects.has(key)) return;
    void fsp.rm(file, { force: true });
    throw new CosError(409, 'FileAlreadyExists', 'The object already exists and cannot be overwritten.');
  }

  #store(bucket: Bucket, key: string, obj: StoredObject): void {
    const old = bucket.objects.get(key);
    if (old) void fsp.rm(old.file, { force: true });
    else {
      let lo = 0;
      let hi = bucket.keys.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (compareKeys(bucket.keys[mid]!, key) < 0) lo = mid + 1;
        else hi = mid;
      }
      bucket.keys.splice(lo, 0, key);
    }
    bucket.objects.set(key, obj);
  }

  #remove(bucket: Bucket, key: string): void {
    const old = bucket.objects.get(key);
    if (!old) return;
    bucket.objects.delete(key);
    const i = bucket.keys.indexOf(key);
    if (i >= 0) bucket.keys.splice(i, 1);
    void fsp.rm(old.file, { force: true });
  }

  /** Stream the request body to a new file; checks Content-Length and Content-MD5 when sent. */
  async #receive(req: IncomingMessage): Promise<{ file: string; size: number; md5: Buffer }> {
    const file = this.#newFile();
    const h = createHash('md5');
    let size = 0;
    try {
      await pipeline(
        req,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const c of source) {
            h.update(c);
            size += c.length;
            yield c;
          }
        },
        createWriteStream(file),
      );
    } catch (err) {
      await fsp.rm(file, { force: true });
      throw err;
    }
    const md5 = h.digest();
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) !== size) {
      await fsp.rm(file, { force: true });
      throw new CosError(400, 'IncompleteBody', 'You did not provide the number of bytes specified by the Content-Length HTTP header.');
    }
    const contentMd5 = req.headers['content-md5'];
    if (contentMd5 !== undefined && contentMd5 !== md5.toString('base64')) {
      await fsp.rm(file, { force: true });
      throw new CosError(400, 'BadDigest', 'The Content-MD5 you specified did not match what we received.');
    }
    return { file, size, md5 };
  }

  // ---- objects --------------------------------------------------------------------------------

  #objectHeaders(o: StoredObject): Record<string, string> {
    const h: Record<string, string> = {
      ...this.#commonHeaders(),
      etag: `"${o.etag}"`,
      'last-modified': o.mtime.toUTCString(),
      'content-type': o.contentType,
      'accept-ranges': 'bytes',
    };
    // COS sends the header only for classes other than STANDARD.
    if (o.storageClass !== 'STANDARD') h['x-cos-storage-class'] = o.storageClass;
    return h;
  }

  #find(bucket: Bucket, key: string): StoredObject {
    const o = bucket.objects.get(key);
    if (!o) throw new CosError(404, 'NoSuchKey', 'The specified key does not exist.');
    return o;
  }

  #headObject(bucket: Bucket, key: string, res: ServerResponse): void {
    const o = this.#find(bucket, key);
    res.writeHead(200, { ...this.#objectHeaders(o), 'content-length': o.size }).end();
  }

  async #getObject(bucket: Bucket, key: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const o = this.#find(bucket, key);
    let start = 0;
    let end = o.size - 1;
    let status = 200;
    const range = /^bytes=(\d*)-(\d*)$/.exec(String(req.headers.range ?? ''));
    if (range && (range[1] !== '' || range[2] !== '')) {
      if (range[1] === '') {
        start = Math.max(0, o.size - Number(range[2]));
      } else {
        start = Number(range[1]);
        if (range[2] !== '') end = Math.min(end, Number(range[2]));
        if (start >= o.size || (range[2] !== '' && Number(range[2]) < start)) {
          throw new CosError(416, 'InvalidRange', 'The requested range is not satisfiable.');
        }
      }
      status = 206;
    }
    const length = Math.max(0, end - start + 1);
    const headers: Record<string, string | number> = { ...this.#objectHeaders(o), 'content-length': length };
    if (status === 206) headers['content-range'] = `bytes ${start}-${end}/${o.size}`;
    res.writeHead(status, headers);
    if (length === 0) return void res.end();
    await pipeline(createReadStream(o.file, { start, end }), res);
  }

  async #putObject(bucket: Bucket, key: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const storageClass = this.#storageClass(req);
    const { file, size, md5 } = await this.#receive(req);
    const etag = md5.toString('hex');
    this.#refuseOverwrite(bucket, key, req, file);
    this.#store(bucket, key, { file, size, etag, mtime: new Date(), storageClass, contentType: String(req.headers['content-type'] ?? 'application/octet-stream') });
    res.writeHead(200, { ...this.#commonHeaders(), etag: `"${etag}"`, 'content-length': 0 }).end();
  }

  #deleteObject(bucket: Bucket, key: string, res: ServerResponse): void {
    this.#remove(bucket, key);
    res.writeHead(204, this.#commonHeaders()).end();
  }

  /** The object an `x-cos-copy-source` header names: `BUCKET-APPID.cos.REGION.myqcloud.com/urlencoded-key`. */
  #copySource(req: IncomingMessage): StoredObject {
    const m = COPY_SOURCE.exec(String(req.headers['x-cos-copy-source']));
    if (!m) throw new CosError(400, 'InvalidArgument', 'x-cos-copy-source must read BUCKET-APPID.cos.REGION.myqcloud.com/KEY.');
    let key: string;
    try {
      key = decodeURIComponent(m[3]!);
    } catch {
      throw new CosError(400, 'InvalidArgument', 'x-cos-copy-source has a bad percent-escape.');
    }
    const b = this.#buckets.get(m[1]!);
    if (!b || b.region !== m[2]) throw new CosError(404, 'NoSuchBucket', 'The source bucket does not exist.');
    return this.#find(b, key);
  }

  async #copyObject(bucket: Bucket, key: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.resume();
    const src = this.#copySource(req);
    const storageClass = this.#storageClass(req);
    const directive = String(req.headers['x-cos-metadata-directive'] ?? 'Copy');
    if (src === bucket.objects.get(key) && directive !== 'Replaced' && storageClass === src.storageClass) {
      throw new CosError(400, 'InvalidRequest', 'This copy request is illegal because it is trying to copy an object to itself without changing anything.');
    }
    const file = this.#newFile();
    await fsp.copyFile(src.file, file);
    const mtime = new Date();
    this.#refuseOverwrite(bucket, key, req, file);
    this.#store(bucket, key, { file, size: src.size, etag: src.etag, mtime, storageClass, contentType: src.contentType });
    this.#sendXml(res, 200, `<CopyObjectResult><ETag>&quot;${src.etag}&quot;</ETag><LastModified>${isoDate(mtime)}</LastModified></CopyObjectResult>`);
  }

  async #deleteMultiple(bucket: Bucket, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req, MAX_XML_BODY);
    const md5 = req.headers['content-md5'];
    if (md5 === undefined) throw new CosError(400, 'MissingContentMD5', 'Missing required header for this request: Content-MD5.');
    if (md5 !== createHash('md5').update(body).digest('base64')) throw new CosError(400, 'InvalidDigest', 'The Content-MD5 you specified was invalid.');
    const xml = body.toString('utf8');
    if (!/<Delete>[\s\S]*<\/Delete>/.test(xml)) throw new CosError(400, 'MalformedXML', 'The XML you provided was not well-formed.');
    const objects = tags(xml, 'Object').map((o) => tags(o, 'Key')[0]);
    if (objects.length === 0 || objects.length > 1000 || objects.some((k) => k === undefined)) {
      throw new CosError(400, 'MalformedXML', 'A Delete request names 1 to 1000 objects, each with a Key.');
    }
    const quiet = (tags(xml, 'Quiet')[0] ?? 'false').trim() === 'true';
    let out = '<DeleteResult>';
    for (const raw of objects) {
      const k = xmlUnescape(raw!);
      this.#remove(bucket, k);
      if (!quiet) out += `<Deleted><Key>${xmlEscape(k)}</Key></Deleted>`;
    }
    this.#sendXml(res, 200, out + '</DeleteResult>');
  }

  // ---- listing --------------------------------------------------------------------------------

  #listObjects(bucket: Bucket, q: Record<string, string>, res: ServerResponse): void {
    const prefix = q['prefix'] ?? '';
    const delimiter = q['delimiter'] ?? '';
    const marker = q['marker'] ?? '';
    const encoding = q['encoding-type'];
    if (encoding !== undefined && encoding !== 'url') throw new CosError(400, 'InvalidArgument', 'encoding-type must be url.');
    const maxKeys = q['max-keys'] === undefined ? 1000 : Number(q['max-keys']);
    if (!Number.isInteger(maxKeys) || maxKeys < 0 || maxKeys > 1000) throw new CosError(400, 'InvalidArgument', 'max-keys must be an integer from 0 to 1000.');
    const limit = Math.min(maxKeys, this.#pageLimit);
    const enc = encoding === 'url' ? listEncode : xmlEscape;

    // First key >= prefix and > marker.
    const from = (k: string, after: boolean): number => {
      let lo = 0;
      let hi = bucket.keys.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        const c = compareKeys(bucket.keys[mid]!, k);
        if (c < 0 || (after && c === 0)) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    };
    let i = Math.max(from(prefix, false), marker === '' ? 0 : from(marker, true));
    const contents: Array<{ key: string; o: StoredObject }> = [];
    const prefixes: string[] = [];
    let last = '';
    let truncated = false;
    for (; i < bucket.keys.length; i++) {
      const key = bucket.keys[i]!;
      if (!key.startsWith(prefix)) break;
      const d = delimiter === '' ? -1 : key.indexOf(delimiter, prefix.length);
      const entry = d >= 0 ? key.slice(0, d + delimiter.length) : key;
      // A common prefix already returned (the marker is it, or inside it) is not returned again.
      if (d >= 0 && (entry === last || compareKeys(entry, marker) <= 0)) continue;
      if (contents.length + prefixes.length >= limit) {
        truncated = true;
        break;
      }
      if (d >= 0) prefixes.push(entry);
      else contents.push({ key, o: bucket.objects.get(key)! });
      last = entry;
    }

    let xml =
      `<ListBucketResult><Name>${bucket.name}</Name>` +
      (encoding === 'url' ? '<EncodingType>url</EncodingType>' : '') +
      `<Prefix>${enc(prefix)}</Prefix><Marker>${enc(marker)}</Marker><MaxKeys>${maxKeys}</MaxKeys>` +
      (delimiter === '' ? '' : `<Delimiter>${enc(delimiter)}</Delimiter>`) +
      `<IsTruncated>${truncated}</IsTruncated>` +
      (truncated ? `<NextMarker>${enc(last)}</NextMarker>` : '');
    for (const p of prefixes) xml += `<CommonPrefixes><Prefix>${enc(p)}</Prefix></CommonPrefixes>`;
    for (const { key, o } of contents) {
      xml +=
        `<Contents><Key>${enc(key)}</Key><LastModified>${isoDate(o.mtime)}</LastModified><ETag>&quot;${o.etag}&quot;</ETag>` +
        `<Size>${o.size}</Size><Owner><ID>1250000000</ID><DisplayName>1250000000</DisplayName></Owner><StorageClass>${o.storageClass}</StorageClass></Contents>`;
    }
    this.#sendXml(res, 200, xml + '</ListBucketResult>');
  }

  // ---- multipart ------------------------------------------------------------------------------

  #upload(bucket: Bucket, key: string, uploadId: string | undefined): Upload {
    const u = uploadId === undefined ? undefined : this.#uploads.get(uploadId);
    if (!u || u.bucket !== bucket.name || u.key !== key) throw new CosError(404, 'NoSuchUpload', 'The specified multipart upload does not exist.');
    return u;
  }

  #initiate(bucket: Bucket, key: string, req: IncomingMessage, res: ServerResponse): void {
    req.resume();
    const storageClass = this.#storageClass(req);
    const uploadId = `${Date.now()}${randomBytes(12).toString('hex')}`;
    const ct = req.headers['content-type'];
    this.#uploads.set(uploadId, { bucket: bucket.name, key, storageClass, contentType: ct ? String(ct) : 'application/octet-stream', parts: new Map() });
    this.#sendXml(res, 200, `<InitiateMultipartUploadResult><Bucket>${bucket.name}</Bucket><Key>${xmlEscape(key)}</Key><UploadId>${uploadId}</UploadId></InitiateMultipartUploadResult>`);
  }

  async #uploadPart(bucket: Bucket, key: string, q: Record<string, string>, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = this.#upload(bucket, key, q['uploadId']);
    const n = Number(q['partNumber']);
    if (!Number.isInteger(n) || n < 1 || n > 10000) throw new CosError(400, 'InvalidArgument', 'partNumber must be an integer from 1 to 10000.');
    let part: Part;
    if (req.headers['x-cos-copy-source'] !== undefined) {
      req.resume();
      const src = this.#copySource(req);
      let start = 0;
      let end = src.size - 1;
      const range = req.headers['x-cos-copy-source-range'];
      if (range !== undefined) {
        const m = /^bytes=(\d+)-(\d+)$/.exec(String(range));
        if (!m || Number(m[1]) > Number(m[2]) || Number(m[2]) >= src.size) throw new CosError(400, 'InvalidArgument', 'x-cos-copy-source-range is not a valid range of the source.');
        start = Number(m[1]);
        end = Number(m[2]);
      }
      const file = this.#newFile();
      const h = createHash('md5');
      const size = end - start + 1;
      if (size > 0) {
        await pipeline(
          createReadStream(src.file, { start, end }),
          async function* (source: AsyncIterable<Buffer>) {
            for await (const c of source) {
              h.update(c);
              yield c;
            }
          },
          createWriteStream(file),
        );
      } else await fsp.writeFile(file, '');
      const md5 = h.digest();
      part = { file, size, etag: md5.toString('hex'), md5 };
      const old = u.parts.get(n);
      if (old) void fsp.rm(old.file, { force: true });
      u.parts.set(n, part);
      this.#sendXml(res, 200, `<CopyPartResult><ETag>&quot;${part.etag}&quot;</ETag><LastModified>${isoDate(new Date())}</LastModified></CopyPartResult>`);
      return;
    }
    const { file, size, md5 } = await this.#receive(req);
    part = { file, size, etag: md5.toString('hex'), md5 };
    // The upload may have been aborted while the part was arriving.
    if (!this.#uploads.has(q['uploadId']!)) {
      await fsp.rm(file, { force: true });
      throw new CosError(404, 'NoSuchUpload', 'The specified multipart upload does not exist.');
    }
    const old = u.parts.get(n);
    if (old) void fsp.rm(old.file, { force: true });
    u.parts.set(n, part);
    res.writeHead(200, { ...this.#commonHeaders(), etag: `"${part.etag}"`, 'content-length': 0 }).end();
  }

  async #complete(bucket: Bucket, key: string, q: Record<string, string>, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = this.#upload(bucket, key, q['uploadId']);
    const xml = (await readBody(req, MAX_XML_BODY)).toString('utf8');
    if (!/<CompleteMultipartUpload>[\s\S]*<\/CompleteMultipartUpload>/.test(xml)) throw new CosError(400, 'MalformedXML', 'The XML you provided was not well-formed.');
    const listed = tags(xml, 'Part').map((p) => ({ n: Number(tags(p, 'PartNumber')[0]), etag: normEtag(xmlUnescape(tags(p, 'ETag')[0] ?? '')) }));
    if (listed.length === 0) throw new CosError(400, 'MalformedXML', 'You must specify at least one part.');
    let prev = 0;
    const parts: Part[] = [];
    for (const l of listed) {
      if (!Number.isInteger(l.n) || l.n <= prev) throw new CosError(400, 'InvalidPartOrder', 'The list of parts was not in ascending order.');
      prev = l.n;
      const p = u.parts.get(l.n);
      if (!p || p.etag !== l.etag) throw new CosError(400, 'InvalidPart', `Part ${l.n} could not be found or its ETag does not match.`);
      parts.push(p);
    }
    for (let j = 0; j < parts.length - 1; j++) {
      if (parts[j]!.size < this.#minPartSize) throw new CosError(400, 'EntityTooSmall', `Part ${listed[j]!.n} is smaller than the minimum part size.`);
    }
    const file = this.#newFile();
    const out = createWriteStream(file);
    await pipeline(async function* () {
      for (const p of parts) for await (const c of createReadStream(p.file) as AsyncIterable<Buffer>) yield c;
    }, out);
    const etag = createHash('md5').update(Buffer.concat(parts.map((p) => p.md5))).digest('hex') + '-' + parts.length;
    const size = parts.reduce((n, p) => n + p.size, 0);
    // Refused, the upload stays open (to be aborted), as on COS.
    this.#refuseOverwrite(bucket, key, req, file);
    this.#uploads.delete(q['uploadId']!);
    for (const p of u.parts.values()) void fsp.rm(p.file, { force: true });
    this.#store(bucket, key, { file, size, etag, mtime: new Date(), storageClass: u.storageClass, contentType: u.contentType });
    this.#sendXml(
      res,
      200,
      `<CompleteMultipartUploadResult><Location>${bucket.name}.cos.${bucket.region}.myqcloud.com/${xmlEscape(uriEncode(key).replace(/%2F/g, '/'))}</Location>` +
        `<Bucket>${bucket.name}</Bucket><Key>${xmlEscape(key)}</Key><ETag>&quot;${etag}&quot;</ETag></CompleteMultipartUploadResult>`,
    );
  }

  #abort(bucket: Bucket, key: string, q: Record<string, string>, res: ServerResponse): void {
    const u = this.#upload(bucket, key, q['uploadId']);
    this.#uploads.delete(q['uploadId']!);
    for (const p of u.parts.values()) void fsp.rm(p.file, { force: true });
    res.writeHead(204, this.#commonHeaders()).end();
  }
}
