import { Readable, Writable } from 'node:stream';
import type COS from 'cos-nodejs-sdk-v5';
import type { Address } from '../address.js';
import { FatalError, type FerryError, ListOrderError, PermissionDeniedError, SourceChangedError, TransientError, UsageError } from '../../errors.js';
import { abortable, abortablePages, checkDeclaredSize, destroyOnAbort, orAborted, throwIfAborted } from '../body.js';
import { copyRanges, multipartUploads, runMultipart, uploadInParts, type ByteRange, type MultipartRequests, type PartData } from '../multipart.js';
import { compareKeys } from '../keys.js';
import { parseListPage } from '../listing-xml.js';
import { credentialEnv, secretEnv } from './env.js';
import type { Backend, OpenOptions } from '../registry.js';
import type { CopySource, Entry, Features, GetOptions, ListOptions, MultipartUploads, ObjectStore, PutOptions } from '../types.js';
import { SliceReader } from './body.js';
import { CosClient, type Attempt, type CosCredentials } from './client.js';

const MiB = 1 << 20;
const GiB = 1024 * MiB;
/** COS's limits: parts of 1 MiB to 5 GiB (the last may be smaller), at most 10,000 of them. */
const MIN_PART = MiB;
const MAX_PART = 5 * GiB;
const MAX_PARTS = 10_000;
/** A single PUT or PUT Object - copy takes at most 5 GiB. */
const MAX_SINGLE = 5 * GiB;
const DELETE_BATCH = 1000;
/** COS refuses (409 FileAlreadyExists) to replace a key when a PUT or a completion carries it. */
const FORBID_OVERWRITE = 'x-cos-forbid-overwrite';
const COPY_PARTS_IN_FLIGHT = 4;

/** Where a copy reads from: what `copySource()` hands to another store of the same scope. */
interface CosLocation {
  bucket: string;
  endpoint: string;
  key: string;
}

export interface CosConfig {
  bucket: string;
  region: string;
  endpoint: string;
  https: boolean;
  credentials: CosCredentials;
  storageClass?: string;
  concurrency?: number;
}

/**
 * Settings for tests and benchmarks. Nothing a user types reaches them: `cosBackend.open()` uses
 * the defaults; tests call `openCosStore()` directly.
 */
export interface CosInternalOptions {
  /**
   * Connect to this `host:port` instead of the bucket's host name, still sending the real
   * `Host: BUCKET-APPID.cos.REGION.myqcloud.com` (the SDK's `Ip` option). This is how tests reach a
   * local COS server; combine with `noHttps`.
   */
  connectTo?: string;
  /** Idle and connect timeout of one request (default 120 s). */
  timeoutMs?: number;
  /** Bodies larger than this go up in parts (default 64 MiB). */
  multipartThreshold?: number;
  /** Smallest part of a multipart upload (default 16 MiB; grows with the size to stay within 10,000 parts). */
  partSize?: number;
  /** Parts of one upload in flight at once (default 2; each is held in memory). */
  partsInFlight?: number;
  /** Copies larger than this go through UploadPartCopy (default 5 GiB, COS's limit for one copy). */
  multipartCopyThreshold?: number;
  /** Smallest part of a multipart copy (default 1 GiB). */
  copyPartSize?: number;
}

const ADDRESS_FORM = 'cos://[SECRETID:SECRETKEY[:TOKEN]@]BUCKET-APPID.cos.REGION.myqcloud.com[/PREFIX]';

/** Read a `cos://` address and the run's options into what the store needs. */
export function cosConfig(address: Address, options: OpenOptions): CosConfig {
  const bucket = address.bucket.toLowerCase();
  if (!/^[a-z0-9][a-z0-9-]*-\d+$/.test(bucket)) {
    throw new UsageError(`${address.display}: the bucket must be named BUCKETNAME-APPID (e.g. examplebucket-1250000000); addresses read ${ADDRESS_FORM}`);
  }
  const endpoint = address.endpoint.toLowerCase();
  if (endpoint === '') throw new UsageError(`${address.display}: no region; addresses read ${ADDRESS_FORM}`);
  // cos.REGION.myqcloud.com, cos-internal.REGION.tencentcos.cn, cos.accelerate.myqcloud.com, ...
  const m = /^[a-z0-9-]+\.([a-z0-9-]+)\.[a-z0-9.-]+(?::\d+)?$/.exec(endpoint);
  if (!m) throw new UsageError(`${address.display}: cannot find the region in ${JSON.stringify(endpoint)}; addresses read ${ADDRESS_FORM}`);
  const config: CosConfig = { bucket, region: m[1]!, endpoint, https: !options.noHttps, credentials: credentialsFor(address, options.env ?? process.env) };
  if (options.storageClass !== undefined) config.storageClass = options.storageClass;
  if (options.concurrency !== undefined) config.concurrency = options.concurrency;
  return config;
}

/** The address's keys, else COS_SECRETID/COS_SECRETKEY, else the TENCENTCLOUD_* variables. */
function credentialsFor(address: Address, env: NodeJS.ProcessEnv): CosCredentials {
  if (address.accessKey !== undefined && address.accessKey !== '') {
    if (!address.secretKey) throw new UsageError(`${address.display}: a SecretId without its SecretKey; write cos://SECRETID:SECRETKEY@...`);
    return address.token ? { secretId: address.accessKey, secretKey: address.secretKey, token: address.token } : { secretId: address.accessKey, secretKey: address.secretKey };
  }
  if (env['COS_SECRETID'] && env['COS_SECRETKEY']) return { secretId: env['COS_SECRETID'], secretKey: env['COS_SECRETKEY'] };
  if (env['TENCENTCLOUD_SECRETID'] && env['TENCENTCLOUD_SECRETKEY']) {
    const token = env['TENCENTCLOUD_SESSIONTOKEN'];
    return token
      ? { secretId: env['TENCENTCLOUD_SECRETID'], secretKey: env['TENCENTCLOUD_SECRETKEY'], token }
      : { secretId: env['TENCENTCLOUD_SECRETID'], secretKey: env['TENCENTCLOUD_SECRETKEY'] };
  }
  throw new UsageError(
    `${address.display}: no credentials; put SECRETID:SECRETKEY@ in the address or set COS_SECRETID and COS_SECRETKEY (or TENCENTCLOUD_SECRETID, TENCENTCLOUD_SECRETKEY and TENCENTCLOUD_SESSIONTOKEN)`,
  );
}

/** Percent-encode a key for `x-cos-copy-source`, keeping '/' (RFC 3986 unreserved characters stay). */
function encodeKey(key: string): string {
  return encodeURIComponent(key)
    .replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())
    .replace(/%2F/g, '/');
}

/** COS's `encoding-type=url` names: percent-encoded, and '+' may stand for a space (as Go's QueryUnescape reads them). */
function decodeListed(s: string): string {
  return decodeURIComponent(s.replace(/\+/g, ' '));
}

function stripQuotes(etag: string | undefined): string | undefined {
  return etag === undefined ? undefined : etag.replace(/^"|"$/g, '');
}

function asArray<T>(v: T | T[] | undefined | ''): T[] {
  if (v === undefined || v === '') return [];
  return Array.isArray(v) ? v : [v];
}

/** Tencent COS through cos-nodejs-sdk-v5, rooted at one bucket. */
export class CosStore implements ObjectStore {
  readonly scheme = 'cos';
  readonly description: string;
  readonly features: Features;
  readonly multipart: MultipartUploads;
  readonly region: string;
  /** `https://BUCKET-APPID.cos.REGION.myqcloud.com`: where requests go. */
  readonly baseUrl: string;
  readonly #config: CosConfig;
  readonly #client: CosClient;
  readonly #scope: string;
  readonly #multipartThreshold: number;
  readonly #partSize: number;
  readonly #partsInFlight: number;
  readonly #copyThreshold: number;
  readonly #copyPartSize: number;

  constructor(config: CosConfig, internal: CosInternalOptions = {}) {
    this.#config = config;
    this.region = config.region;
    this.description = `cos://${config.bucket}.${config.endpoint}`;
    this.baseUrl = `${config.https ? 'https' : 'http'}://${config.bucket}.${config.endpoint}`;
    this.#client = new CosClient({
      bucket: config.bucket,
      region: config.region,
      endpoint: config.endpoint,
      https: config.https,
      credentials: config.credentials,
      timeoutMs: internal.timeoutMs ?? 120_000,
      maxSockets: Math.max(16, 2 * (config.concurrency ?? 8)),
      ...(internal.connectTo ? { connectTo: internal.connectTo } : {}),
    });
    this.#multipartThreshold = Math.min(internal.multipartThreshold ?? 64 * MiB, MAX_SINGLE);
    this.#partSize = Math.max(internal.partSize ?? 16 * MiB, MIN_PART);
    this.#partsInFlight = Math.max(1, internal.partsInFlight ?? 2);
    this.#copyThreshold = Math.min(internal.multipartCopyThreshold ?? MAX_SINGLE, MAX_SINGLE);
    this.#copyPartSize = Math.max(internal.copyPartSize ?? GiB, MIN_PART);
    // Copies work between buckets of one endpoint, signed by one SecretId.
    this.#scope = `cos:${config.endpoint}:${config.credentials.secretId}`;
    this.features = {
      copy: { scope: this.#scope },
      multipart: { minPartSize: MIN_PART, maxPartSize: MAX_PART, maxParts: MAX_PARTS },
      // x-cos-forbid-overwrite: true on PUT Object and Complete Multipart Upload.
      exclusiveCreate: true,
    };
    this.multipart = multipartUploads(this.features.multipart!, (storageClass) => this.#uploadRequests(storageClass ?? config.storageClass), (op, key) => `cos multipart ${op} ${this.#client.where(key)}`);
  }

  get #b(): { Bucket: string; Region: string } {
    return { Bucket: this.#config.bucket, Region: this.#config.region };
  }

  // ---- list -----------------------------------------------------------------------------------

  list(options: ListOptions = {}): AsyncIterable<Entry[]> {
    return abortablePages(this.#list(options), options.signal, `cos LIST ${this.#client.where(options.prefix ?? '')}`);
  }

  async *#list(options: ListOptions): AsyncIterable<Entry[]> {
    const prefix = options.prefix ?? '';
    const after = options.startAfter;
    const delimiter = options.delimiter;
    let marker = after !== undefined && compareKeys(after, prefix) > 0 ? after : '';
    let last: string | undefined;
    for (;;) {
      // GET Bucket, signed and sent by the SDK but read with parseListPage (~1 µs a key) instead
      // of the SDK's XML parser (~30).
      const query: Record<string, string> = { prefix, 'max-keys': '1000', 'encoding-type': 'url' };
      if (marker !== '') query['marker'] = marker;
      if (delimiter !== undefined) query['delimiter'] = delimiter;
      const raw = await this.#client.call<{ Body: Buffer | string }>(
        { op: 'LIST', key: prefix },
        (cos, done) => cos.request({ ...this.#b, Method: 'GET', Query: query, RawBody: true } as unknown as COS.RequestParams, done as unknown as (err: COS.CosError, data: COS.RequestResult) => void),
        { signal: options.signal },
      );
      const r = parseListPage(Buffer.isBuffer(raw.Body) ? raw.Body.toString('utf8') : String(raw.Body ?? ''));
      const decode = (s: string): string => {
        if (r.encodingType !== 'url') return s;
        try {
          return decodeListed(s);
        } catch {
          throw new FatalError(`cos LIST ${this.#client.where(prefix)}: the service sent a key that is not URL-encoded: ${JSON.stringify(s)}`);
        }
      };
      const found: Entry[] = [];
      for (const c of r.contents) {
        const key = decode(c.key);
        const isDir = key.endsWith('/');
        const e: Entry = { key, size: isDir ? 0 : c.size, mtime: c.mtime, isDir };
        if (c.etag) e.etag = c.etag;
        found.push(e);
      }
      for (const p of r.prefixes) found.push({ key: decode(p), size: 0, mtime: 0, isDir: true });
      found.sort((a, b) => compareKeys(a.key, b.key));

      const page: Entry[] = [];
      let pageLast: string | undefined;
      for (const e of found) {
        if (pageLast !== undefined && compareKeys(e.key, pageLast) === 0) continue;
        pageLast = e.key;
        if (after !== undefined && compareKeys(e.key, after) <= 0) continue;
        if (last !== undefined) {
          const c = compareKeys(e.key, last);
          // A common prefix may come again on the next page; anything else out of order is an error.
          if (c === 0 && e.isDir) continue;
          if (c <= 0) throw new ListOrderError(`${this.description} (prefix ${JSON.stringify(prefix)})`, last, e.key);
        }
        last = e.key;
        page.push(e);
      }
      if (page.length > 0) yield page;
      if (!r.truncated) return;
      // The next page starts after this page's last entry: that is what NextMarker holds, and
      // the decoded entry does not depend on whether the service URL-encodes NextMarker too.
      const next = pageLast ?? (r.nextMarker ? decode(r.nextMarker) : undefined);
      if (next === undefined || compareKeys(next, marker) <= 0) {
        throw new FatalError(`cos LIST ${this.#client.where(prefix)}: the listing is truncated but does not move past ${JSON.stringify(marker)}`);
      }
      marker = next;
    }
  }

  // ---- head / get -----------------------------------------------------------------------------

  async head(key: string, options: { signal?: AbortSignal } = {}): Promise<Entry> {
    const r = await this.#client.call<COS.HeadObjectResult>({ op: 'HEAD', key }, (cos, done) => cos.headObject({ ...this.#b, Key: key }, done), { signal: options.signal });
    const h = (r.headers ?? {}) as Record<string, string | undefined>;
    const isDir = key.endsWith('/');
    const e: Entry = { key, size: isDir ? 0 : Number(h['content-length'] ?? 0), mtime: Date.parse(h['last-modified'] ?? '') || 0, isDir };
    const etag = stripQuotes(h['etag']);
    if (etag) e.etag = etag;
    return e;
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const offset = options.offset ?? 0;
    const length = options.length;
    if (length === 0) {
      await this.head(key, options.signal ? { signal: options.signal } : {});
      return Readable.from([]);
    }
    const range = offset > 0 || length !== undefined ? `bytes=${offset}-${length === undefined ? '' : offset + length - 1}` : undefined;
    const body = await this.#download(key, range, options.signal);
    if (body) return abortable(body, options.signal, `cos GET ${this.#client.where(key)}`);
    // 416: reading from the end of an object (or from 0 of an empty one) is empty, not an error.
    const e = await this.head(key, options.signal ? { signal: options.signal } : {});
    if (offset >= e.size) return Readable.from([]);
    throw new SourceChangedError(`cos GET ${this.#client.where(key)}: ${range} was refused as unsatisfiable, yet the object holds ${e.size} bytes`);
  }

  /**
   * The SDK writes the body into `sink` (its `Output`); the reader gets `out`. The two are apart so
   * that the SDK's raw errors never reach the reader: it gets mapped ones, and a body shorter than
   * its Content-Length fails instead of ending quietly. Resolves when the response headers say 2xx,
   * or with null when the range is not satisfiable (416).
   */
  #download(key: string, range: string | undefined, signal: AbortSignal | undefined): Promise<Readable | null> {
    const where = this.#client.where(key);
    return new Promise<Readable | null>((resolve, reject) => {
      const attempt: Attempt = { errorBody: [], streaming: true };
      let ok = false;
      let finished = false;
      let expected: number | undefined;
      let received = 0;
      let pending: (() => void) | null = null;
      const out = new Readable({
        highWaterMark: MiB,
        read() {
          const p = pending;
          pending = null;
          p?.();
        },
        destroy(err, cb) {
          // The reader stopped early: drop the connection instead of reading the rest.
          if (!finished) attempt.req?.destroy();
          const p = pending;
          pending = null;
          p?.();
          cb(err);
        },
      });
      const sink = new Writable({
        highWaterMark: MiB,
        write(chunk: Buffer, _enc, cb) {
          // Before a 2xx answer, what arrives is the XML of an error: the mapped error says it.
          if (!ok || out.destroyed) return cb();
          received += chunk.length;
          if (out.push(chunk)) cb();
          else pending = () => cb();
        },
        final(cb) {
          finished = true;
          if (ok && !out.destroyed) {
            if (expected !== undefined && received !== expected) {
              out.destroy(new TransientError(`cos GET ${where}: the body ended after ${received} of ${expected} bytes`));
            } else out.push(null);
          }
          cb();
        },
      });
      // The SDK also emits its raw errors on its Output; the reader gets the mapped one from `call`.
      sink.on('error', () => {});
      attempt.onResponse = (res) => {
        const status = res.statusCode ?? 0;
        if (status < 200 || status >= 300) return;
        if (range !== undefined && status !== 206) {
          attempt.req?.destroy();
          reject(new FatalError(`cos GET ${where}: asked for ${range} and got the whole object (${status})`));
          return;
        }
        ok = true;
        const cl = res.headers['content-length'];
        if (cl !== undefined) expected = Number(cl);
        resolve(out);
      };
      const params: COS.GetObjectParams = { ...this.#b, Key: key, Output: sink };
      if (range !== undefined) params.Range = range;
      this.#client
        .call<COS.GetObjectResult>({ op: 'GET', key }, (cos, done) => void cos.getObject(params, done), { signal, attempt })
        .then(
          () => {
            finished = true;
            if (!ok) reject(new FatalError(`cos GET ${where}: no body in the answer (${attempt.status ?? 'no status'})`));
          },
          (err: FerryError) => {
            finished = true;
            if (ok) out.destroy(err);
            else if (attempt.status === 416 && range !== undefined) resolve(null);
            else reject(err);
          },
        );
    });
  }

  // ---- put ------------------------------------------------------------------------------------

  /**
   * Bodies up to `multipartThreshold` go in one PUT, a stream sent as it is read (SliceReader
   * checks its length before the last byte goes); larger or unsized ones in parts (multipart.ts),
   * `partsInFlight` buffered parts at a time.
   */
  async put(key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    const storageClass = options.storageClass ?? this.#config.storageClass;
    const signal = options.signal;
    const what = `cos PUT ${this.#client.where(key)}`;
    const ifAbsent = options.ifAbsent === true;
    const unhook = destroyOnAbort(body, signal, what);
    try {
      throwIfAborted(signal, what);
      if (Buffer.isBuffer(body)) checkDeclaredSize(body, options.size, what);
      const size = Buffer.isBuffer(body) ? body.length : options.size;
      if (size !== undefined && size <= this.#multipartThreshold) {
        if (Buffer.isBuffer(body)) return await this.#putOnce(key, body, size, storageClass, signal, ifAbsent);
        const reader = new SliceReader(body, what);
        try {
          if (size === 0) {
            if (!(await reader.atEnd())) throw new SourceChangedError(`${what}: the source holds more than the 0 bytes expected`);
            return await this.#putOnce(key, Buffer.alloc(0), 0, storageClass, signal, ifAbsent);
          }
          return await this.#putOnce(key, reader.slice(size, { last: true, total: size }), size, storageClass, signal, ifAbsent);
        } finally {
          reader.destroy();
        }
      }
      await uploadInParts(this.#uploadRequests(storageClass, ifAbsent), key, body, {
        size,
        partSize: this.#partSize,
        partsInFlight: this.#partsInFlight,
        limits: this.features.multipart!,
        signal,
        what,
        single: (data) => this.#putOnce(key, data, data.length, storageClass, signal, ifAbsent),
      });
    } catch (err) {
      if (!Buffer.isBuffer(body)) body.destroy();
      throw orAborted(err, signal, what);
    } finally {
      unhook();
    }
  }

  /** `ifAbsent`: x-cos-forbid-overwrite: true, so that COS refuses (409 FileAlreadyExists) to replace the key. */
  async #putOnce(key: string, body: Buffer | Readable, size: number, storageClass: string | undefined, signal: AbortSignal | undefined, ifAbsent = false): Promise<void> {
    const params: COS.PutObjectParams & { SkipTask: boolean } = { ...this.#b, Key: key, Body: body, ContentLength: size, SkipTask: true };
    if (storageClass !== undefined) params.StorageClass = storageClass as COS.StorageClass;
    if (ifAbsent) params.Headers = { [FORBID_OVERWRITE]: 'true' };
    await this.#client.call<COS.PutObjectResult>({ op: 'PUT', key }, (cos, done) => cos.putObject(params, done), { signal });
  }

  /** Initiate, complete and abort, for uploads and copies alike. `ifAbsent`: the completion carries x-cos-forbid-overwrite. */
  #multipartRequests<P>(storageClass: string | undefined, uploadPart: MultipartRequests<P>['uploadPart'], ifAbsent = false): MultipartRequests<P> {
    return {
      create: async (key, signal) => {
        const init: COS.MultipartInitParams = { ...this.#b, Key: key };
        if (storageClass !== undefined) init.StorageClass = storageClass as COS.StorageClass;
        const { UploadId } = await this.#client.call<COS.MultipartInitResult>({ op: 'INIT MULTIPART', key }, (cos, done) => cos.multipartInit(init, done), { signal });
        if (!UploadId) throw new FatalError(`cos INIT MULTIPART ${this.#client.where(key)}: the answer has no UploadId`);
        return UploadId;
      },
      uploadPart,
      complete: async (upload, parts, signal) => {
        const Parts: COS.Part[] = parts.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag }));
        await this.#client.call(
          { op: 'COMPLETE MULTIPART', key: upload.key },
          (cos, done) =>
            cos.multipartComplete({ ...this.#b, Key: upload.key, UploadId: upload.uploadId, Parts, ...(ifAbsent ? { Headers: { [FORBID_OVERWRITE]: 'true' } } : {}) }, done),
          { signal },
        );
      },
      abort: async (upload) => {
        await this.#client.call({ op: 'ABORT MULTIPART', key: upload.key }, (cos, done) => cos.multipartAbort({ ...this.#b, Key: upload.key, UploadId: upload.uploadId }, done));
      },
    };
  }

  /** UploadPart from a buffer or a stream of the part's size. */
  #uploadRequests(storageClass: string | undefined, ifAbsent = false): MultipartRequests<PartData> {
    return this.#multipartRequests<PartData>(storageClass, async (upload, n, part, signal) => {
      const r = await this.#client.call<COS.MultipartUploadResult>(
        { op: 'UPLOAD PART', key: upload.key, detail: `part ${n}` },
        (cos, done) => cos.multipartUpload({ ...this.#b, Key: upload.key, UploadId: upload.uploadId, PartNumber: n, Body: part.body, ContentLength: part.size }, done),
        { signal },
      );
      return r.ETag;
    }, ifAbsent);
  }

  // ---- delete ---------------------------------------------------------------------------------

  async delete(key: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    const attempt: Attempt = { errorBody: [] };
    await this.#client.call({ op: 'DELETE', key }, (cos, done) => cos.deleteObject({ ...this.#b, Key: key }, done), { signal: options.signal, attempt });
    // The SDK reports a 404 (the bucket is missing: a missing key answers 204) as success.
    if (attempt.status === 404) throw this.#client.toError({ op: 'DELETE', key }, undefined, attempt);
  }

  async deleteMany(keys: string[], options: { signal?: AbortSignal } = {}): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const r = await this.#client.call<COS.DeleteMultipleObjectResult>(
        { op: 'DELETE MANY', detail: `${batch.length} keys from ${JSON.stringify(batch[0])}` },
        (cos, done) => cos.deleteMultipleObject({ ...this.#b, Objects: batch.map((Key) => ({ Key })), Quiet: true }, done),
        { signal: options.signal },
      );
      const failed = asArray(r.Error).filter((e) => e && e.Code !== 'NoSuchKey');
      const first = failed[0];
      if (first) {
        const msg = `cos DELETE ${this.#client.where(first.Key)}: ${first.Message || 'failed'} (${first.Code}${failed.length > 1 ? `; ${failed.length - 1} more keys failed` : ''})`;
        throw first.Code === 'AccessDenied' ? new PermissionDeniedError(msg) : new FatalError(msg);
      }
    }
  }

  // ---- server-side copy -----------------------------------------------------------------------

  copySource(key: string): CopySource {
    const location: CosLocation = { bucket: this.#config.bucket, endpoint: this.#config.endpoint, key };
    return { scope: this.#scope, location };
  }

  async copyFrom(key: string, source: CopySource, options: PutOptions & { size: number } = { size: 0 }): Promise<void> {
    if (source.scope !== this.#scope) throw new FatalError(`cos COPY ${this.#client.where(key)}: cannot copy server-side from ${source.scope}`);
    const loc = source.location as CosLocation;
    const from = `${loc.bucket}/${loc.key}`;
    const copySource = `${loc.bucket}.${loc.endpoint}/${encodeKey(loc.key)}`;
    const storageClass = options.storageClass ?? this.#config.storageClass;
    const signal = options.signal;
    if (options.size <= this.#copyThreshold) {
      const params: COS.PutObjectCopyParams = { ...this.#b, Key: key, CopySource: copySource, MetadataDirective: 'Copy' };
      if (storageClass !== undefined) params.StorageClass = storageClass as COS.StorageClass;
      await this.#client.call({ op: 'COPY', key, detail: `from ${from}` }, (cos, done) => cos.putObjectCopy(params, done), { signal });
      return;
    }
    const partSize = Math.max(this.#copyPartSize, Math.ceil(options.size / MAX_PARTS / MiB) * MiB);
    if (partSize > MAX_PART) throw new FatalError(`cos COPY ${this.#client.where(key)}: ${options.size} bytes is more than COS holds in one object`);
    const requests = this.#multipartRequests<ByteRange>(storageClass, async (upload, n, range, partSignal) => {
      const r = await this.#client.call<COS.UploadPartCopyResult>(
        { op: 'COPY PART', key: upload.key, detail: `part ${n} from ${from}` },
        (cos, done) =>
          cos.uploadPartCopy({ ...this.#b, Key: upload.key, UploadId: upload.uploadId, PartNumber: n, CopySource: copySource, CopySourceRange: `bytes=${range.first}-${range.last}` }, done),
        { signal: partSignal },
      );
      return r.ETag;
    });
    await runMultipart(requests, key, copyRanges(options.size, partSize), {
      partSize,
      size: options.size,
      sizeOfPart: (r) => r.last - r.first + 1,
      partsInFlight: COPY_PARTS_IN_FLIGHT,
      limits: this.features.multipart!,
      signal,
      what: `cos COPY ${from} to ${this.#client.where(key)}`,
    });
  }

  async close(): Promise<void> {
    this.#client.close();
  }
}

/** Open a COS store; `internal` is for tests and benchmarks (see CosInternalOptions). */
export function openCosStore(address: Address, options: OpenOptions, internal: CosInternalOptions = {}): CosStore {
  return new CosStore(cosConfig(address, options), internal);
}

export const cosBackend: Backend = {
  scheme: 'cos',
  summary: 'cos://[SECRETID:SECRETKEY[:TOKEN]@]BUCKET-APPID.cos.REGION.myqcloud.com[/PREFIX] — Tencent COS',
  credentialEnv,
  secretEnv,
  async open(address, options) {
    return openCosStore(address, options);
  },
};

