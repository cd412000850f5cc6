/**
 * An Aliyun OSS test server on node:http that checks what OSS checks: the V1 signature (computed
 * here from the OSS specification, not with the SDK's signer), the request time, the bucket in the
 * virtual-host `Host` header, object-name limits, Content-MD5, multipart part lists; and answers
 * with OSS's status codes and XML error bodies. `x-oss-forbid-overwrite: true` on PutObject, CopyObject,
 * InitiateMultipartUpload and CompleteMultipartUpload refuses an existing key (409 FileAlreadyExists); the
 * writes check it in the same
 * turn of the event loop that stores the object: of racing creates exactly one wins. Object data lives in a temporary directory as
 * immutable segment files, so a completed multipart upload or a copy shares the parts' files.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** `truncate` sends a GetObject's headers and half its body, then drops the connection. */
export type OssFault = 'throttle' | 'error' | 'drop' | 'truncate';

export interface OssCredential {
  accessKeyId: string;
  accessKeySecret: string;
  /** STS credentials: requests must carry this `x-oss-security-token`. */
  securityToken?: string;
}

export interface OssServerOptions {
  credentials: OssCredential[];
  buckets: string[];
  /** Most keys one ListObjectsV2 page returns, whatever max-keys asks for (real OSS: 1000). */
  maxPageKeys?: number;
  /** Largest source CopyObject accepts; bigger objects need UploadPartCopy (OSS: 1 GB). */
  copyLimit?: number;
  /** Added to the server's clock, to provoke RequestTimeTooSkewed. */
  clockOffsetMs?: number;
}

export interface LoggedRequest {
  op: string;
  method: string;
  host: string;
  bucket: string;
  key: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  status: number;
}

interface Segment {
  path: string;
  start: number;
  length: number;
}

export interface StoredObject {
  size: number;
  etag: string;
  lastModified: Date;
  storageClass: string;
  contentType: string;
  type: 'Normal' | 'Multipart';
  segments: Segment[];
}

interface Part {
  size: number;
  etag: string;
  md5: Buffer;
  segments: Segment[];
}

interface Upload {
  bucket: string;
  key: string;
  storageClass: string;
  contentType: string;
  parts: Map<number, Part>;
}

const MAX_KEY_BYTES = 1023;
const MAX_PUT = 5 * 1024 ** 3;
const MIN_PART = 100 * 1024;
const MAX_PARTS = 10_000;
const SKEW_MS = 15 * 60_000;
const STORAGE_CLASSES = new Set(['Standard', 'IA', 'Archive', 'ColdArchive', 'DeepColdArchive']);
/** Query parameters that are sub-resources: they take part in the V1 signature (OSS's list). */
const SUB_RESOURCES = new Set([
  'acl', 'uploads', 'location', 'cors', 'logging', 'website', 'referer', 'lifecycle', 'delete', 'append', 'tagging',
  'objectMeta', 'uploadId', 'partNumber', 'security-token', 'position', 'img', 'style', 'styleName', 'replication',
  'replicationProgress', 'replicationLocation', 'cname', 'bucketInfo', 'comp', 'qos', 'live', 'status', 'vod',
  'startTime', 'endTime', 'symlink', 'x-oss-process', 'response-content-type', 'x-oss-traffic-limit',
  'response-content-language', 'response-expires', 'response-cache-control', 'response-content-disposition',
  'response-content-encoding', 'udf', 'udfName', 'udfImage', 'udfId', 'udfImageDesc', 'udfApplication',
  'udfApplicationLog', 'restore', 'callback', 'callback-var', 'qosInfo', 'policy', 'stat', 'encryption', 'versions',
  'versioning', 'versionId', 'requestPayment', 'x-oss-request-payer', 'sequential', 'inventory', 'inventoryId',
  'continuation-token', 'asyncFetch', 'worm', 'wormId', 'wormExtend',
]);

class OssError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly extra: Record<string, string> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const xmlEscape = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
const xmlUnescape = (s: string): string =>
  s.replace(/&(amp|lt|gt|quot|apos|#x([0-9a-fA-F]+)|#(\d+));/g, (_, name: string, hex?: string, dec?: string) =>
    hex ? String.fromCodePoint(parseInt(hex, 16)) : dec ? String.fromCodePoint(Number(dec)) : ({ amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" } as Record<string, string>)[name]!,
  );
/** UTF-8 byte order, computed independently of the code under test. */
const byteOrder = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));
const requestId = (): string => randomBytes(12).toString('hex').toUpperCase();
const quoted = (md5hex: string): string => `"${md5hex.toUpperCase()}"`;
const unquote = (etag: string): string => etag.trim().replace(/^"|"$/g, '').toUpperCase();

export class OssServer {
  readonly requests: LoggedRequest[] = [];
  readonly #options: Required<Omit<OssServerOptions, 'credentials' | 'buckets'>>;
  readonly #credentials: Map<string, OssCredential>;
  readonly #buckets = new Map<string, { keys: string[]; objects: Map<string, StoredObject> }>();
  readonly #uploads = new Map<string, Upload>();
  readonly #faults: { fault: OssFault; remaining: number; op: string | undefined }[] = [];
  #server!: Server;
  #dir!: string;
  #files = 0;
  url = '';
  port = 0;

  private constructor(options: OssServerOptions) {
    this.#credentials = new Map(options.credentials.map((c) => [c.accessKeyId, c]));
    for (const b of options.buckets) this.createBucket(b);
    this.#options = { maxPageKeys: options.maxPageKeys ?? 100, copyLimit: options.copyLimit ?? 1024 ** 3, clockOffsetMs: options.clockOffsetMs ?? 0 };
  }

  static async start(options: OssServerOptions): Promise<OssServer> {
    const s = new OssServer(options);
    s.#dir = await fsp.mkdtemp(join(tmpdir(), 'ferry-oss-'));
    s.#server = createServer((req, res) => void s.#handle(req, res));
    s.#server.keepAliveTimeout = 30_000;
    await new Promise<void>((resolve) => s.#server.listen(0, '127.0.0.1', resolve));
    s.port = (s.#server.address() as AddressInfo).port;
    s.url = `http://127.0.0.1:${s.port}`;
    return s;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await fsp.rm(this.#dir, { recursive: true, force: true });
  }

  createBucket(name: string): void {
    if (!this.#buckets.has(name)) this.#buckets.set(name, { keys: [], objects: new Map() });
  }

  /**
   * Fail the next `count` requests, or the next `count` of operation `op` ('UploadPart', ...).
   * `truncate` applies to GetObject requests only.
   */
  inject(fault: OssFault, count: number, op?: string): void {
    this.#faults.push({ fault, remaining: count, op });
  }

  stat(bucket: string, key: string): StoredObject | undefined {
    return this.#buckets.get(bucket)?.objects.get(key);
  }

  count(op: string): number {
    return this.requests.filter((r) => r.op === op).length;
  }

  pendingUploads(): number {
    return this.#uploads.size;
  }

  #takeFault(op: string): OssFault | undefined {
    const i = this.#faults.findIndex((f) => (f.op === undefined || f.op === op) && (f.fault !== 'truncate' || op === 'GetObject'));
    const f = this.#faults[i];
    if (!f) return undefined;
    if (--f.remaining <= 0) this.#faults.splice(i, 1);
    return f.fault;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const id = requestId();
    // The path is taken raw: URL parsing would fold '.' and '..' segments, which are plain key text to OSS.
    const raw = req.url ?? '/';
    const qi = raw.indexOf('?');
    const rawPath = qi < 0 ? raw : raw.slice(0, qi);
    const query: Record<string, string> = {};
    for (const [k, v] of new URLSearchParams(qi < 0 ? '' : raw.slice(qi + 1))) query[k] = v;
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    const hostMatch = /^([a-z0-9][a-z0-9-]{1,61}[a-z0-9])\.(oss-[a-z0-9-]+|vpc100-oss-[a-z0-9-]+)\.aliyuncs\.com$/.exec(host);
    const bucket = hostMatch?.[1] ?? '';
    let key = '';
    const log: LoggedRequest = { op: 'Unknown', method: req.method ?? '', host, bucket, key, query, headers: req.headers, status: 0 };
    this.requests.push(log);
    try {
      try {
        key = decodeURIComponent(rawPath.slice(1));
      } catch {
        throw new OssError(400, 'InvalidURI', 'The URI is not valid.');
      }
      log.key = key;
      log.op = this.#operation(req.method ?? '', key, query, req.headers);
      const fault = this.#takeFault(log.op);
      if (fault === 'drop') {
        log.status = -1;
        req.socket.destroy();
        return;
      }
      if (fault === 'throttle') throw new OssError(503, 'SlowDown', 'Please reduce your request rate.');
      if (fault === 'error') throw new OssError(500, 'InternalError', 'We encountered an internal error. Please try again.');
      if (!hostMatch) throw new OssError(403, 'SecondLevelDomainForbidden', 'Please use virtual hosted style to access.');
      this.#authenticate(req, bucket, key, query);
      const b = this.#buckets.get(bucket);
      if (!b) throw new OssError(404, 'NoSuchBucket', 'The specified bucket does not exist.', { BucketName: bucket });
      if (key !== '') this.#checkKey(key);
      log.status = await this.#dispatch(log, req, res, bucket, key, query, id, fault === 'truncate');
    } catch (err) {
      const e = err instanceof OssError ? err : new OssError(500, 'InternalError', String((err as Error)?.message ?? err));
      log.status = e.status;
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      // Read the rest of the body first: answering mid-upload makes clients see a reset, not the error.
      if (!req.complete && !req.destroyed) {
        req.resume();
        await new Promise<void>((resolve) => {
          req.once('end', resolve);
          req.once('close', resolve);
        });
      }
      this.#sendError(req, res, e, bucket, key, id);
    }
  }

  #operation(method: string, key: string, q: Record<string, string>, h: IncomingHttpHeaders): string {
    if (key === '') {
      if (method === 'GET' && q['list-type'] === '2') return 'ListObjectsV2';
      if (method === 'GET') return 'ListObjects';
      if (method === 'POST' && 'delete' in q) return 'DeleteMultipleObjects';
      return 'BucketOperation';
    }
    switch (method) {
      case 'GET':
        return 'GetObject';
      case 'HEAD':
        return 'HeadObject';
      case 'DELETE':
        return 'uploadId' in q ? 'AbortMultipartUpload' : 'DeleteObject';
      case 'POST':
        if ('uploads' in q) return 'InitiateMultipartUpload';
        if ('uploadId' in q) return 'CompleteMultipartUpload';
        return 'PostObject';
      case 'PUT':
        if ('partNumber' in q || 'uploadId' in q) return h['x-oss-copy-source'] ? 'UploadPartCopy' : 'UploadPart';
        return h['x-oss-copy-source'] ? 'CopyObject' : 'PutObject';
      default:
        return 'Unknown';
    }
  }

  /** V1: `OSS ak:base64(hmac-sha1(secret, VERB\nContent-MD5\nContent-Type\nDate\nCanonicalizedOSSHeaders+CanonicalizedResource))`. */
  #authenticate(req: IncomingMessage, bucket: string, key: string, query: Record<string, string>): void {
    const auth = req.headers.authorization;
    if (!auth) throw new OssError(403, 'AccessDenied', 'You have no right to access this object because of bucket acl.');
    const m = /^OSS ([^:\s]+):(\S+)$/.exec(auth);
    if (!m) throw new OssError(400, 'InvalidArgument', 'Authorization header is invalid.');
    const cred = this.#credentials.get(m[1]!);
    if (!cred) throw new OssError(403, 'InvalidAccessKeyId', 'The OSS Access Key Id you provided does not exist in our records.', { OSSAccessKeyId: m[1]! });
    const token = req.headers['x-oss-security-token'];
    if ((cred.securityToken ?? undefined) !== (token ?? undefined)) {
      throw new OssError(403, 'InvalidAccessKeyId', 'The security token you provided is invalid.', { OSSAccessKeyId: m[1]! });
    }
    const h = req.headers;
    const header = (name: string): string => {
      const v = h[name];
      return Array.isArray(v) ? v.join(',') : (v ?? '');
    };
    // x-oss-date wins over Date when both are present.
    const date = header('x-oss-date') || header('date');
    const when = Date.parse(date);
    if (!date || Number.isNaN(when)) throw new OssError(403, 'AccessDenied', 'OSS authentication requires a valid Date.');
    if (Math.abs(Date.now() + this.#options.clockOffsetMs - when) > SKEW_MS) {
      throw new OssError(403, 'RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.', { RequestTime: date, ServerTime: new Date(Date.now() + this.#options.clockOffsetMs).toUTCString() });
    }
    const ossHeaders = Object.keys(h)
      .filter((k) => k.startsWith('x-oss-'))
      .sort()
      .map((k) => `${k}:${header(k).trim()}\n`)
      .join('');
    const sub = Object.keys(query)
      .filter((k) => SUB_RESOURCES.has(k))
      .sort()
      .map((k) => (query[k] === '' ? k : `${k}=${query[k]}`))
      .join('&');
    const resource = (bucket ? `/${bucket}/${key}` : '/') + (sub ? `?${sub}` : '');
    const toSign = `${req.method}\n${header('content-md5')}\n${header('content-type')}\n${date}\n${ossHeaders}${resource}`;
    const expected = createHmac('sha1', cred.accessKeySecret).update(toSign, 'utf8').digest('base64');
    if (expected !== m[2]) {
      throw new OssError(403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.', { StringToSign: toSign, OSSAccessKeyId: m[1]! });
    }
  }

  #checkKey(key: string): void {
    const n = Buffer.byteLength(key);
    if (n > MAX_KEY_BYTES) throw new OssError(400, 'InvalidObjectName', 'The length of object name must be less than 1024.');
    if (key.startsWith('/') || key.startsWith('\\')) throw new OssError(400, 'InvalidObjectName', 'The object name must not start with "/" or "\\".');
  }

  async #dispatch(log: LoggedRequest, req: IncomingMessage, res: ServerResponse, bucket: string, key: string, q: Record<string, string>, id: string, truncate: boolean): Promise<number> {
    const op = log.op;
    switch (op) {
      case 'ListObjectsV2':
        return this.#send(res, 200, id, this.#listV2(bucket, q));
      case 'DeleteMultipleObjects':
        return this.#send(res, 200, id, await this.#deleteMultiple(req, bucket));
      case 'PutObject':
        return this.#putObject(req, res, bucket, key, id);
      case 'CopyObject':
        return this.#copyObject(req, res, bucket, key, id);
      case 'GetObject':
      case 'HeadObject':
        return this.#getObject(log, req, res, bucket, key, id, truncate);
      case 'DeleteObject':
        this.#remove(bucket, key);
        return this.#send(res, 204, id);
      case 'InitiateMultipartUpload':
        return this.#initiate(req, res, bucket, key, id);
      case 'UploadPart':
      case 'UploadPartCopy':
        return this.#uploadPart(op, req, res, bucket, key, q, id);
      case 'CompleteMultipartUpload':
        return this.#complete(req, res, bucket, key, q, id);
      case 'AbortMultipartUpload':
        this.#upload(q['uploadId'] ?? '', bucket, key);
        this.#uploads.delete(q['uploadId']!);
        return this.#send(res, 204, id);
      default:
        throw new OssError(501, 'NotImplemented', `The test server does not implement ${req.method} ${op}.`);
    }
  }

  #send(res: ServerResponse, status: number, id: string, xml?: string, headers: Record<string, string> = {}): number {
    const body = xml === undefined ? undefined : Buffer.from(xml);
    res.writeHead(status, {
      'x-oss-request-id': id,
      Date: new Date().toUTCString(),
      ...(body ? { 'Content-Type': 'application/xml', 'Content-Length': String(body.length) } : { 'Content-Length': '0' }),
      ...headers,
    });
    res.end(body);
    return status;
  }

  #sendError(req: IncomingMessage, res: ServerResponse, e: OssError, bucket: string, key: string, id: string): void {
    const extra = { ...e.extra };
    if (e.code === 'NoSuchKey' && !extra['Key']) extra['Key'] = key;
    const xml =
      '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n' +
      `  <Code>${e.code}</Code>\n  <Message>${xmlEscape(e.message)}</Message>\n  <RequestId>${id}</RequestId>\n` +
      `  <HostId>${xmlEscape(bucket ? `${bucket}.oss-cn-hangzhou.aliyuncs.com` : 'oss-cn-hangzhou.aliyuncs.com')}</HostId>\n` +
      Object.entries(extra).map(([k, v]) => `  <${k}>${xmlEscape(v)}</${k}>\n`).join('') +
      '</Error>\n';
    if (req.method === 'HEAD') {
      // A HEAD answer has no body: OSS sends the error document base64-encoded in x-oss-err.
      res.writeHead(e.status, { 'x-oss-request-id': id, 'x-oss-err': Buffer.from(xml).toString('base64'), 'Content-Length': '0', ...e.headers });
      res.end();
      return;
    }
    this.#send(res, e.status, id, xml, e.headers);
  }

  // ---- objects -----------------------------------------------------------------------------

  #bucket(bucket: string): { keys: string[]; objects: Map<string, StoredObject> } {
    const b = this.#buckets.get(bucket);
    if (!b) throw new OssError(404, 'NoSuchBucket', 'The specified bucket does not exist.', { BucketName: bucket });
    return b;
  }

  #bound(keys: string[], key: string, after: boolean): number {
    let lo = 0;
    let hi = keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const c = byteOrder(keys[mid]!, key);
      if (c < 0 || (after && c === 0)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Store an object; with `x-oss-forbid-overwrite: true` among `h`, only where the key is absent.
   * Synchronous: the check and the store are one step, whatever other requests are under way.
   */
  #store(bucket: string, key: string, obj: StoredObject, h?: IncomingHttpHeaders): void {
    const b = this.#bucket(bucket);
    if (h && String(h['x-oss-forbid-overwrite'] ?? '').toLowerCase() === 'true' && b.objects.has(key)) {
      throw new OssError(409, 'FileAlreadyExists', 'The object you specified already exists and can not be overwritten.');
    }
    if (!b.objects.has(key)) b.keys.splice(this.#bound(b.keys, key, false), 0, key);
    b.objects.set(key, obj);
  }

  #remove(bucket: string, key: string): boolean {
    const b = this.#bucket(bucket);
    if (!b.objects.delete(key)) return false;
    b.keys.splice(this.#bound(b.keys, key, false), 1);
    return true;
  }

  #object(bucket: string, key: string): StoredObject {
    const o = this.#bucket(bucket).objects.get(key);
    if (!o) throw new OssError(404, 'NoSuchKey', 'The specified key does not exist.', { Key: key });
    return o;
  }

  #storageClass(h: IncomingHttpHeaders): string {
    const sc = h['x-oss-storage-class'];
    if (sc === undefined) return 'Standard';
    if (typeof sc !== 'string' || !STORAGE_CLASSES.has(sc)) throw new OssError(400, 'InvalidArgument', `Invalid storage class: ${String(sc)}.`, { ArgumentName: 'x-oss-storage-class', ArgumentValue: String(sc) });
    return sc;
  }

  /** Stream the request body to a new segment file, checking its length and Content-MD5. */
  async #receive(req: IncomingMessage, limit: number): Promise<{ segment: Segment; md5: Buffer }> {
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limit) throw new OssError(400, 'EntityTooLarge', 'Your proposed upload exceeds the maximum allowed size.');
    const path = join(this.#dir, `seg-${++this.#files}`);
    const hash = createHash('md5');
    let size = 0;
    await pipeline(
      req,
      new Transform({
        transform(chunk: Buffer, _enc, done) {
          size += chunk.length;
          if (size > limit) return done(new OssError(400, 'EntityTooLarge', 'Your proposed upload exceeds the maximum allowed size.'));
          hash.update(chunk);
          done(null, chunk);
        },
      }),
      createWriteStream(path),
    );
    const md5 = hash.digest();
    const want = req.headers['content-md5'];
    if (typeof want === 'string' && want !== md5.toString('base64')) throw new OssError(400, 'InvalidDigest', 'The Content-MD5 you specified is not valid.');
    return { segment: { path, start: 0, length: size }, md5 };
  }

  async #readSmall(req: IncomingMessage, limit: number): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > limit) throw new OssError(400, 'MalformedXML', 'The XML you provided was too large.');
      chunks.push(c);
    }
    const body = Buffer.concat(chunks);
    const want = req.headers['content-md5'];
    if (typeof want === 'string' && want !== createHash('md5').update(body).digest('base64')) throw new OssError(400, 'InvalidDigest', 'The Content-MD5 you specified is not valid.');
    return body;
  }

  async #putObject(req: IncomingMessage, res: ServerResponse, bucket: string, key: string, id: string): Promise<number> {
    const storageClass = this.#storageClass(req.headers);
    const { segment, md5 } = await this.#receive(req, MAX_PUT);
    const etag = quoted(md5.toString('hex'));
    this.#store(bucket, key, { size: segment.length, etag, lastModified: now(), storageClass, contentType: String(req.headers['content-type'] ?? 'application/octet-stream'), type: 'Normal', segments: [segment] }, req.headers);
    return this.#send(res, 200, id, undefined, { ETag: etag });
  }

  #copySource(h: IncomingHttpHeaders): { bucket: string; key: string } {
    const src = String(h['x-oss-copy-source'] ?? '');
    const m = /^\/([^/]+)\/(.+)$/.exec(src);
    if (!m) throw new OssError(400, 'InvalidArgument', 'Copy Source must mention the source bucket and key: /sourcebucket/sourcekey.');
    try {
      return { bucket: m[1]!, key: decodeURIComponent(m[2]!) };
    } catch {
      throw new OssError(400, 'InvalidArgument', 'The copy source is not URL-encoded correctly.');
    }
  }

  async #copyObject(req: IncomingMessage, res: ServerResponse, bucket: string, key: string, id: string): Promise<number> {
    await this.#readSmall(req, 0);
    const storageClass = this.#storageClass(req.headers);
    const from = this.#copySource(req.headers);
    const src = this.#object(from.bucket, from.key);
    if (src.size > this.#options.copyLimit) throw new OssError(400, 'InvalidArgument', `The source object is larger than ${this.#options.copyLimit} bytes; use UploadPartCopy.`);
    const lastModified = now();
    this.#store(bucket, key, { ...src, lastModified, storageClass, segments: [...src.segments] }, req.headers);
    return this.#send(res, 200, id, `<?xml version="1.0" encoding="UTF-8"?>\n<CopyObjectResult>\n  <ETag>${src.etag}</ETag>\n  <LastModified>${lastModified.toISOString()}</LastModified>\n</CopyObjectResult>\n`);
  }

  async #getObject(log: LoggedRequest, req: IncomingMessage, res: ServerResponse, bucket: string, key: string, id: string, truncate: boolean): Promise<number> {
    const o = this.#object(bucket, key);
    const headers: Record<string, string> = {
      'x-oss-request-id': id,
      'Content-Type': o.contentType,
      ETag: o.etag,
      'Last-Modified': o.lastModified.toUTCString(),
      'Accept-Ranges': 'bytes',
      'x-oss-object-type': o.type,
      'x-oss-storage-class': o.storageClass,
    };
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...headers, 'Content-Length': String(o.size) });
      res.end();
      return 200;
    }
    let start = 0;
    let end = o.size - 1;
    let status = 200;
    const range = req.headers.range;
    const standard = req.headers['x-oss-range-behavior'] === 'standard';
    const m = typeof range === 'string' ? /^bytes=(\d*)-(\d*)$/.exec(range.trim()) : null;
    if (m && (m[1] !== '' || m[2] !== '')) {
      let a: number;
      let z: number;
      if (m[1] === '') {
        a = Math.max(0, o.size - Number(m[2]));
        z = o.size - 1;
      } else {
        a = Number(m[1]);
        z = m[2] === '' ? o.size - 1 : Number(m[2]);
      }
      // 'a-b' with a > b is not a range at all (ignored); a well-formed range may still be unsatisfiable.
      const wellFormed = m[1] === '' || m[2] === '' || a <= z;
      const satisfiable = m[1] === '' ? Number(m[2]) > 0 && o.size > 0 : a < o.size;
      if (wellFormed && satisfiable) {
        start = a;
        end = Math.min(z, o.size - 1);
        status = 206;
        headers['Content-Range'] = `bytes ${start}-${end}/${o.size}`;
      } else if (wellFormed && standard) {
        // Standard behaviour answers an unsatisfiable range with 416; the default ignores it.
        throw new OssError(416, 'InvalidRange', 'The requested range cannot be satisfied.', {}, { 'Content-Range': `bytes */${o.size}` });
      }
    }
    const length = Math.max(0, end - start + 1);
    headers['Content-Length'] = String(length);
    // Logged before the body goes out: the client may read it all before this handler returns.
    log.status = status;
    res.writeHead(status, headers);
    const limit = truncate ? Math.floor(length / 2) : length;
    let sent = 0;
    let pos = 0;
    for (const seg of o.segments) {
      const segStart = Math.max(start, pos);
      const segEnd = Math.min(start + limit, pos + seg.length);
      if (segEnd > segStart) {
        for await (const chunk of createReadStream(seg.path, { start: seg.start + segStart - pos, end: seg.start + segEnd - pos - 1 }) as AsyncIterable<Buffer>) {
          sent += chunk.length;
          if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
          if (res.destroyed) return status;
        }
      }
      pos += seg.length;
    }
    if (truncate || sent !== length) {
      res.socket?.destroy();
      return -1;
    }
    res.end();
    return status;
  }

  // ---- listing -----------------------------------------------------------------------------

  #listV2(bucket: string, q: Record<string, string>): string {
    const b = this.#bucket(bucket);
    const prefix = q['prefix'] ?? '';
    const delimiter = q['delimiter'] ?? '';
    const encodingType = q['encoding-type'];
    if (encodingType !== undefined && encodingType !== 'url') throw new OssError(400, 'InvalidArgument', 'The encoding-type parameter must be url.', { ArgumentName: 'encoding-type', ArgumentValue: encodingType });
    const maxKeysRaw = q['max-keys'] ?? '100';
    const maxKeys = /^\d+$/.test(maxKeysRaw) ? Number(maxKeysRaw) : NaN;
    if (!(maxKeys >= 1 && maxKeys <= 1000)) throw new OssError(400, 'InvalidArgument', 'max-keys must be between 1 and 1000.', { ArgumentName: 'max-keys', ArgumentValue: maxKeysRaw });
    for (const [name, v] of [['prefix', prefix], ['start-after', q['start-after'] ?? ''], ['delimiter', delimiter]] as const) {
      if (Buffer.byteLength(v) > 1024) throw new OssError(400, 'InvalidArgument', `${name} is too long.`, { ArgumentName: name });
    }
    // The token names the last entry of the previous page, and whether it was a common prefix.
    let after = q['start-after'] ?? '';
    let skipPrefix = '';
    const token = q['continuation-token'];
    if (token !== undefined) {
      try {
        const t = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { k: unknown; p: unknown; b: unknown };
        if (typeof t.k !== 'string' || typeof t.p !== 'boolean' || t.b !== bucket) throw new Error('bad token');
        after = t.k;
        if (t.p) skipPrefix = t.k;
      } catch {
        throw new OssError(400, 'InvalidArgument', 'The continuation token provided is incorrect.', { ArgumentName: 'continuation-token' });
      }
    }
    const cap = Math.min(maxKeys, this.#options.maxPageKeys);
    const enc = (s: string): string => xmlEscape(encodingType === 'url' ? encodeURIComponent(s) : s);
    let i = this.#bound(b.keys, prefix, false);
    if (byteOrder(after, prefix) >= 0) i = this.#bound(b.keys, after, true);
    const contents: string[] = [];
    const prefixes: string[] = [];
    let count = 0;
    let last: { k: string; p: boolean } | undefined;
    let truncated = false;
    for (; i < b.keys.length; i++) {
      const key = b.keys[i]!;
      if (!key.startsWith(prefix)) {
        if (byteOrder(key, prefix) > 0) break;
        continue;
      }
      if (skipPrefix && key.startsWith(skipPrefix)) continue;
      const d = delimiter ? key.indexOf(delimiter, prefix.length) : -1;
      const common = d >= 0 ? key.slice(0, d + delimiter.length) : undefined;
      if (common !== undefined && last?.p && last.k === common) continue;
      if (count === cap) {
        truncated = true;
        break;
      }
      count++;
      if (common !== undefined) {
        prefixes.push(`  <CommonPrefixes>\n    <Prefix>${enc(common)}</Prefix>\n  </CommonPrefixes>\n`);
        last = { k: common, p: true };
        skipPrefix = common;
      } else {
        const o = b.objects.get(key)!;
        contents.push(
          `  <Contents>\n    <Key>${enc(key)}</Key>\n    <LastModified>${o.lastModified.toISOString()}</LastModified>\n    <ETag>${xmlEscape(o.etag)}</ETag>\n` +
            `    <Type>${o.type}</Type>\n    <Size>${o.size}</Size>\n    <StorageClass>${o.storageClass}</StorageClass>\n  </Contents>\n`,
        );
        last = { k: key, p: false };
      }
    }
    const next = truncated && last ? Buffer.from(JSON.stringify({ ...last, b: bucket })).toString('base64url') : undefined;
    return (
      '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>\n' +
      `  <Name>${xmlEscape(bucket)}</Name>\n  <Prefix>${enc(prefix)}</Prefix>\n` +
      (q['start-after'] !== undefined ? `  <StartAfter>${enc(q['start-after'])}</StartAfter>\n` : '') +
      (token !== undefined ? `  <ContinuationToken>${xmlEscape(token)}</ContinuationToken>\n` : '') +
      `  <MaxKeys>${maxKeys}</MaxKeys>\n` +
      (delimiter ? `  <Delimiter>${enc(delimiter)}</Delimiter>\n` : '') +
      (encodingType ? `  <EncodingType>url</EncodingType>\n` : '') +
      `  <IsTruncated>${truncated}</IsTruncated>\n` +
      (next ? `  <NextContinuationToken>${next}</NextContinuationToken>\n` : '') +
      `  <KeyCount>${count}</KeyCount>\n` +
      contents.join('') +
      prefixes.join('') +
      '</ListBucketResult>\n'
    );
  }

  async #deleteMultiple(req: IncomingMessage, bucket: string): Promise<string> {
    if (!req.headers['content-md5']) throw new OssError(400, 'InvalidDigest', 'Content-MD5 is required for DeleteMultipleObjects.');
    const body = (await this.#readSmall(req, 2 * 1024 * 1024)).toString('utf8');
    if (!/<Delete>[\s\S]*<\/Delete>/.test(body)) throw new OssError(400, 'MalformedXML', 'The XML you provided was not well-formed.');
    const quiet = /<Quiet>\s*true\s*<\/Quiet>/i.test(body);
    const keys = [...body.matchAll(/<Object>\s*<Key>([\s\S]*?)<\/Key>[\s\S]*?<\/Object>/g)].map((m) => xmlUnescape(m[1]!));
    if (keys.length === 0 || keys.length > 1000) throw new OssError(400, 'MalformedXML', 'A Delete request names 1 to 1000 objects.');
    for (const k of keys) this.#checkKey(k);
    for (const k of keys) this.#remove(bucket, k);
    const deleted = quiet ? '' : keys.map((k) => `  <Deleted>\n    <Key>${xmlEscape(k)}</Key>\n  </Deleted>\n`).join('');
    return `<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult>\n${deleted}</DeleteResult>\n`;
  }

  // ---- multipart ---------------------------------------------------------------------------

  async #initiate(req: IncomingMessage, res: ServerResponse, bucket: string, key: string, id: string): Promise<number> {
    await this.#readSmall(req, 0);
    const storageClass = this.#storageClass(req.headers);
    // OSS lists x-oss-forbid-overwrite for InitiateMultipartUpload too: an upload that could never complete is refused at once.
    if (String(req.headers['x-oss-forbid-overwrite'] ?? '').toLowerCase() === 'true' && this.#bucket(bucket).objects.has(key)) {
      throw new OssError(409, 'FileAlreadyExists', 'The object you specified already exists and can not be overwritten.');
    }
    const uploadId = randomBytes(16).toString('hex').toUpperCase();
    this.#uploads.set(uploadId, { bucket, key, storageClass, contentType: String(req.headers['content-type'] ?? 'application/octet-stream'), parts: new Map() });
    return this.#send(res, 200, id, `<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult>\n  <Bucket>${xmlEscape(bucket)}</Bucket>\n  <Key>${xmlEscape(key)}</Key>\n  <UploadId>${uploadId}</UploadId>\n</InitiateMultipartUploadResult>\n`);
  }

  #upload(uploadId: string, bucket: string, key: string): Upload {
    const u = this.#uploads.get(uploadId);
    if (!u || u.bucket !== bucket || u.key !== key) throw new OssError(404, 'NoSuchUpload', 'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.', { UploadId: uploadId });
    return u;
  }

  async #uploadPart(op: string, req: IncomingMessage, res: ServerResponse, bucket: string, key: string, q: Record<string, string>, id: string): Promise<number> {
    const u = this.#upload(q['uploadId'] ?? '', bucket, key);
    const n = /^\d+$/.test(q['partNumber'] ?? '') ? Number(q['partNumber']) : NaN;
    if (!(n >= 1 && n <= MAX_PARTS)) throw new OssError(400, 'InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive.', { ArgumentName: 'partNumber' });
    let part: Part;
    if (op === 'UploadPartCopy') {
      await this.#readSmall(req, 0);
      const from = this.#copySource(req.headers);
      const src = this.#object(from.bucket, from.key);
      let a = 0;
      let z = src.size - 1;
      const r = req.headers['x-oss-copy-source-range'];
      if (r !== undefined) {
        const m = /^bytes=(\d+)-(\d+)$/.exec(String(r));
        if (!m || Number(m[1]) > Number(m[2]) || Number(m[2]) >= src.size) throw new OssError(400, 'InvalidArgument', 'The x-oss-copy-source-range is not valid.', { ArgumentName: 'x-oss-copy-source-range' });
        a = Number(m[1]);
        z = Number(m[2]);
      }
      const segments = slice(src.segments, a, z - a + 1);
      const md5 = createHash('md5');
      for (const s of segments) for await (const c of createReadStream(s.path, { start: s.start, end: s.start + s.length - 1 }) as AsyncIterable<Buffer>) md5.update(c);
      const digest = md5.digest();
      part = { size: z - a + 1, md5: digest, etag: quoted(digest.toString('hex')), segments };
    } else {
      const { segment, md5 } = await this.#receive(req, MAX_PUT);
      part = { size: segment.length, md5, etag: quoted(md5.toString('hex')), segments: [segment] };
    }
    if (!this.#uploads.has(q['uploadId']!)) throw new OssError(404, 'NoSuchUpload', 'The specified upload does not exist.', { UploadId: q['uploadId']! });
    u.parts.set(n, part);
    if (op === 'UploadPartCopy') {
      return this.#send(res, 200, id, `<?xml version="1.0" encoding="UTF-8"?>\n<CopyPartResult>\n  <LastModified>${now().toISOString()}</LastModified>\n  <ETag>${part.etag}</ETag>\n</CopyPartResult>\n`, { ETag: part.etag });
    }
    return this.#send(res, 200, id, undefined, { ETag: part.etag });
  }

  async #complete(req: IncomingMessage, res: ServerResponse, bucket: string, key: string, q: Record<string, string>, id: string): Promise<number> {
    const uploadId = q['uploadId'] ?? '';
    const u = this.#upload(uploadId, bucket, key);
    const body = (await this.#readSmall(req, 4 * 1024 * 1024)).toString('utf8');
    if (!/<CompleteMultipartUpload>[\s\S]*<\/CompleteMultipartUpload>/.test(body)) throw new OssError(400, 'MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema.');
    const listed = [...body.matchAll(/<Part>([\s\S]*?)<\/Part>/g)].map((m) => {
      const num = /<PartNumber>\s*(\d+)\s*<\/PartNumber>/.exec(m[1]!);
      const etag = /<ETag>([\s\S]*?)<\/ETag>/.exec(m[1]!);
      if (!num || !etag) throw new OssError(400, 'MalformedXML', 'Each Part needs a PartNumber and an ETag.');
      return { n: Number(num[1]), etag: xmlUnescape(etag[1]!) };
    });
    if (listed.length === 0) throw new OssError(400, 'MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema.');
    const chosen: Part[] = [];
    for (let i = 0; i < listed.length; i++) {
      const p = listed[i]!;
      if (i > 0 && p.n <= listed[i - 1]!.n) throw new OssError(400, 'InvalidPartOrder', 'The list of parts was not in ascending order. Parts list must specified in order by part number.');
      const part = u.parts.get(p.n);
      if (!part || unquote(part.etag) !== unquote(p.etag)) throw new OssError(400, 'InvalidPart', 'One or more of the specified parts could not be found or the specified entity tag might not have matched the part\'s entity tag.', { PartNumber: String(p.n), ETag: p.etag });
      if (i < listed.length - 1 && part.size < MIN_PART) throw new OssError(400, 'EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed size.', { PartNumber: String(p.n), MinSizeAllowed: String(MIN_PART) });
      chosen.push(part);
    }
    const md5s = createHash('md5');
    for (const p of chosen) md5s.update(p.md5);
    const etag = `"${md5s.digest('hex').toUpperCase()}-${chosen.length}"`;
    this.#store(bucket, key, {
      size: chosen.reduce((n, p) => n + p.size, 0),
      etag,
      lastModified: now(),
      storageClass: u.storageClass,
      contentType: u.contentType,
      type: 'Multipart',
      segments: chosen.flatMap((p) => p.segments),
    }, req.headers);
    // A completion refused (FileAlreadyExists) leaves the upload open, to be aborted, as OSS does.
    this.#uploads.delete(uploadId);
    return this.#send(res, 200, id, `<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUploadResult>\n  <Bucket>${xmlEscape(bucket)}</Bucket>\n  <Key>${xmlEscape(key)}</Key>\n  <ETag>${etag}</ETag>\n</CompleteMultipartUploadResult>\n`, { ETag: etag });
  }
}

/** OSS keeps times to the second. */
function now(): Date {
  return new Date(Math.floor(Date.now() / 1000) * 1000);
}

/** The segments covering `length` bytes from `start` of the concatenation of `segments`. */
function slice(segments: Segment[], start: number, length: number): Segment[] {
  const out: Segment[] = [];
  let pos = 0;
  for (const s of segments) {
    const a = Math.max(start, pos);
    const z = Math.min(start + length, pos + s.length);
    if (z > a) out.push({ path: s.path, start: s.start + a - pos, length: z - a });
    pos += s.length;
  }
  return out;
}
