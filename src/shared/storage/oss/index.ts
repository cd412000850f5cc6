import { Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { isIP } from 'node:net';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import OSS from 'ali-oss';
import type { Address } from '../address.js';
import { AlreadyExistsError, FatalError, FerryError, ListOrderError, TransientError, UsageError } from '../../errors.js';
import { abortable, abortablePages, checkDeclaredSize, destroyOnAbort, orAborted, readBody, throwIfAborted } from '../body.js';
import { copyRanges, multipartUploads, runMultipart, uploadInParts, type ByteRange, type MultipartRequests, type PartData } from '../multipart.js';
import { compareKeys } from '../keys.js';
import { parseListPage, type ListPage } from '../listing-xml.js';
import { credentialEnv, secretEnv } from './env.js';
import type { Backend, OpenOptions } from '../registry.js';
import type { CopySource, Entry, Features, GetOptions, ListOptions, MultipartUploads, ObjectStore, PutOptions } from '../types.js';
import { resolveCredentials, resolveEndpoint, type OssEndpoint } from './config.js';
import { ossError, refusedOverwrite } from './errors.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** OSS's limits: parts of 100 KB to 5 GB, at most 10,000 of them; CopyObject copies objects under 1 GB. */
const OSS_MIN_PART = 100 * KiB;
const OSS_MAX_PART = 5 * GiB;
const OSS_MAX_PARTS = 10_000;
const OSS_COPY_LIMIT = 1_000_000_000;
const LIST_PAGE = 1000;
const DELETE_BATCH = 1000;
const COPY_PARTS_IN_FLIGHT = 4;

export interface OssLimits {
  /** Bodies above this size (or of unknown size) go up in parts. */
  multipartThreshold: number;
  /** Part size of uploads; grows with the size so that 10,000 parts hold the object. */
  partSize: number;
  /** Copies of objects this size or bigger use UploadPartCopy. */
  copyLimit: number;
  copyPartSize: number;
  /** Parts of one object in flight at once. */
  partsInFlight: number;
  /** Requests without a body must be answered within this time. */
  timeoutMs: number;
  /** Requests with a body get `timeoutMs` plus the time the body takes at this rate. */
  minBytesPerSecond: number;
  /** A download whose connection stays silent this long fails. */
  idleMs: number;
}

const DEFAULT_LIMITS: OssLimits = {
  multipartThreshold: 8 * MiB,
  partSize: 8 * MiB,
  copyLimit: OSS_COPY_LIMIT,
  copyPartSize: 256 * MiB,
  partsInFlight: 2,
  timeoutMs: 60_000,
  minBytesPerSecond: 256 * KiB,
  idleMs: 120_000,
};

/** Options that are not part of an address; tests use them. */
export interface OssInternalOptions {
  /**
   * Connect to this URL (`http://IP:PORT`) instead of the endpoint's host. ali-oss, given an IP,
   * still sends the endpoint's virtual-host header (`Host: BUCKET.oss-REGION.aliyuncs.com`), so the
   * server sees the same request as the real endpoint would. Only for `*.aliyuncs.com` endpoints.
   */
  connectTo?: string;
  limits?: Partial<OssLimits>;
}

interface OssLocation {
  bucket: string;
  key: string;
}

/** ali-oss's request behind uploadPart(), which takes a stream of a known size (ali-oss 6.x, lib/common/multipart.js). */
interface AliOssUploadPart {
  _uploadPart(name: string, uploadId: string, partNo: number, data: { stream: Readable; size: number }, options: { timeout: number }): Promise<{ etag: string }>;
}

/** The two ali-oss internals its own listV2() is made of (ali-oss 6.x, lib/object.js). */
interface AliOssInternals {
  _objectRequestParams(method: string, name: string, options: Record<string, unknown>): Record<string, unknown> & { query?: unknown; successStatuses?: number[] };
  request(params: Record<string, unknown>): Promise<{ data: unknown }>;
}

/**
 * An Aliyun OSS bucket through ali-oss. One attempt per call (ali-oss's retries are off): ferry's
 * retry policy reads the error class. Listings page through ListObjectsV2; large or unsized bodies
 * go up as multipart uploads, one part buffered per part in flight.
 */
export class OssStore implements ObjectStore {
  readonly scheme = 'oss';
  readonly description: string;
  readonly features: Features;
  readonly multipart: MultipartUploads;
  readonly bucket: string;
  readonly endpoint: OssEndpoint;
  readonly #client: OSS;
  readonly #httpAgent: HttpAgent;
  readonly #httpsAgent: HttpsAgent;
  readonly #scope: string;
  readonly #storageClass: string | undefined;
  readonly #limits: OssLimits;
  /** host:port requests go to, for messages. */
  readonly #reach: string;

  constructor(address: Address, options: OpenOptions = {}, internal: OssInternalOptions = {}) {
    this.bucket = address.bucket;
    this.endpoint = resolveEndpoint(address, options);
    const credentials = resolveCredentials(address, options.env ?? process.env);
    this.#limits = { ...DEFAULT_LIMITS, ...internal.limits };
    this.#storageClass = options.storageClass;
    this.description = `oss://${this.bucket}.${this.endpoint.host}/`;
    this.#scope = `oss:${this.endpoint.host.replace(/-internal(?=\.aliyuncs\.com)/, '')}:${credentials.accessKeyId}`;

    let url = this.endpoint.url;
    if (internal.connectTo !== undefined) {
      const to = new URL(internal.connectTo);
      if (!isIP(to.hostname.replace(/^\[|\]$/g, ''))) throw new UsageError(`connectTo must be an IP address, not ${to.hostname}`);
      const sent = `${this.bucket}.${this.endpoint.region}${this.endpoint.internal ? '-internal' : ''}.aliyuncs.com`;
      if (sent !== `${this.bucket}.${this.endpoint.host}`) throw new UsageError(`connectTo needs an *.aliyuncs.com endpoint: requests would carry Host ${sent}, not ${this.bucket}.${this.endpoint.host}`);
      url = `${to.protocol}//${to.host}`;
    }
    this.#reach = new URL(url).host;
    const sockets = Math.max(8, (options.concurrency ?? 8) * this.#limits.partsInFlight + 4);
    this.#httpAgent = new HttpAgent({ keepAlive: true, maxSockets: sockets, scheduling: 'lifo' });
    this.#httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: sockets, scheduling: 'lifo' });
    try {
      this.#client = new OSS({
        accessKeyId: credentials.accessKeyId,
        accessKeySecret: credentials.accessKeySecret,
        ...(credentials.securityToken ? { stsToken: credentials.securityToken, refreshSTSTokenInterval: 24 * 3600_000 } : {}),
        bucket: this.bucket,
        endpoint: url,
        region: this.endpoint.region,
        internal: this.endpoint.internal,
        secure: url.startsWith('https:'),
        cname: false,
        timeout: this.#limits.timeoutMs,
        retryMax: 0,
        agent: this.#httpAgent,
        httpsAgent: this.#httpsAgent,
      } as OSS.Options);
    } catch (err) {
      // ali-oss checks the bucket name and endpoint; its messages hold no secrets.
      throw new UsageError(`${address.display}: ${(err as Error).message}`, { cause: err });
    }
    this.features = {
      copy: { scope: this.#scope },
      multipart: { minPartSize: OSS_MIN_PART, maxPartSize: OSS_MAX_PART, maxParts: OSS_MAX_PARTS },
      // x-oss-forbid-overwrite: true on PutObject and on CompleteMultipartUpload.
      exclusiveCreate: true,
    };
    this.multipart = multipartUploads(
      this.features.multipart!,
      (storageClass = this.#storageClass) => this.#uploadRequests(storageClass ? { 'x-oss-storage-class': storageClass } : {}),
      (op, key) => `oss multipart ${op} ${this.bucket}/${key}`,
    );
  }

  #where(op: string, what: string) {
    return { op, bucket: this.bucket, what, endpoint: this.#reach };
  }

  /** One request; failures leave classified and named, an interrupted one as AbortedError. */
  async #call<T>(op: string, what: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    const name = `oss ${op} ${this.bucket}/${what}`;
    throwIfAborted(signal, name);
    try {
      return await fn();
    } catch (err) {
      throw orAborted(ossError(err, this.#where(op, what)), signal, name);
    }
  }

  /** OSS names are 1 to 1023 bytes and do not start with '/'; ali-oss would silently strip a leading '/'. */
  #checkKey(op: string, key: string): void {
    if (key === '' || key.startsWith('/')) throw new FatalError(`oss ${op} ${this.bucket}/${key}: OSS object names cannot be empty or start with "/"`);
  }

  #bodyTimeout(bytes: number): number {
    return this.#limits.timeoutMs + Math.ceil((bytes / this.#limits.minBytesPerSecond) * 1000);
  }

  list(options: ListOptions = {}): AsyncIterable<Entry[]> {
    return abortablePages(this.#list(options), options.signal, `oss LIST ${this.bucket}/${options.prefix ?? ''}*`);
  }

  async *#list(options: ListOptions): AsyncIterable<Entry[]> {
    const prefix = options.prefix ?? '';
    const what = `${prefix}*`;
    let token: string | undefined;
    let previous: string | undefined;
    for (;;) {
      const query: OSS.ListV2ObjectsQuery = { prefix, 'max-keys': LIST_PAGE, 'encoding-type': 'url' };
      if (options.delimiter) query.delimiter = options.delimiter;
      if (token !== undefined) query['continuation-token'] = token;
      else if (options.startAfter !== undefined) query['start-after'] = options.startAfter;
      const r = await this.#call('LIST', what, options.signal, () => this.#listPage(query));
      const page: Entry[] = [];
      for (const o of r.contents) {
        const key = this.#decode(o.key, what);
        const isDir = key.endsWith('/');
        const e: Entry = { key, size: isDir ? 0 : o.size, mtime: o.mtime, isDir };
        if (o.etag) e.etag = o.etag;
        page.push(e);
      }
      for (const p of r.prefixes) page.push({ key: this.#decode(p, what), size: 0, mtime: 0, isDir: true });
      // Contents and CommonPrefixes come as two lists; merged, each page must follow the last.
      page.sort((a, b) => compareKeys(a.key, b.key));
      for (const e of page) {
        if (previous !== undefined && compareKeys(previous, e.key) >= 0) throw new ListOrderError(`oss://${this.bucket}/${prefix}`, previous, e.key);
        previous = e.key;
      }
      if (page.length > 0) yield page;
      const next = r.nextToken;
      if (!r.truncated) return;
      if (!next) throw new FatalError(`oss LIST ${this.bucket}/${what}: the server said the listing is truncated but gave no continuation token`);
      token = next;
    }
  }

  /**
   * One ListObjectsV2 page, signed and sent by ali-oss as its listV2() does, but read with
   * parseListPage instead of xml2js (~1 µs a key instead of ~30).
   */
  async #listPage(query: OSS.ListV2ObjectsQuery): Promise<ListPage> {
    const client = this.#client as unknown as AliOssInternals;
    const { 'continuation-token': token, ...rest } = query as Record<string, string | number | undefined>;
    const params = client._objectRequestParams('GET', '', { timeout: this.#limits.timeoutMs, ...(token ? { subres: { 'continuation-token': token } } : {}) });
    params.query = { 'list-type': 2, ...rest };
    params.successStatuses = [200];
    const result = await client.request(params);
    const data = result.data;
    return parseListPage(Buffer.isBuffer(data) ? data.toString('utf8') : String(data ?? ''));
  }

  /** Keys come URL-encoded (encoding-type=url), so that any byte survives XML. */
  #decode(s: string, what: string): string {
    try {
      return decodeURIComponent(s.replace(/\+/g, ' '));
    } catch (err) {
      throw new FatalError(`oss LIST ${this.bucket}/${what}: the server sent a badly encoded key ${JSON.stringify(s)}`, { cause: err });
    }
  }

  async head(key: string, options: { signal?: AbortSignal } = {}): Promise<Entry> {
    this.#checkKey('HEAD', key);
    const r = await this.#call('HEAD', key, options.signal, () => this.#client.head(key, { timeout: this.#limits.timeoutMs }));
    const h = r.res.headers as Record<string, string | undefined>;
    const isDir = key.endsWith('/');
    const e: Entry = { key, size: isDir ? 0 : Number(h['content-length'] ?? 0), mtime: Date.parse(h['last-modified'] ?? '') || 0, isDir };
    if (h['etag']) e.etag = h['etag'].replace(/^"|"$/g, '');
    return e;
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    this.#checkKey('GET', key);
    const offset = options.offset ?? 0;
    const length = options.length;
    if (length === 0) {
      await this.head(key, options.signal ? { signal: options.signal } : {});
      return Readable.from([]);
    }
    const ranged = offset > 0 || length !== undefined;
    const headers: Record<string, string> = {};
    if (ranged) {
      headers['Range'] = `bytes=${offset}-${length === undefined ? '' : offset + length - 1}`;
      // Without it OSS answers an unsatisfiable range with the whole object.
      headers['x-oss-range-behavior'] = 'standard';
    }
    let r: OSS.GetStreamResult;
    try {
      r = await this.#call('GET', key, options.signal, () => this.#client.getStream(key, { headers, timeout: this.#limits.timeoutMs } as OSS.GetStreamOptions));
    } catch (err) {
      // 416: the range starts at or after the end, so it is empty (the object exists).
      if ((err as FerryError).cause && ((err as FerryError).cause as { status?: number }).status === 416) return Readable.from([]);
      throw err;
    }
    const res = r.stream as IncomingMessage;
    const status = (r.res as { status?: number }).status ?? res.statusCode;
    const declared = Number(res.headers['content-length']);
    if (ranged && status !== 206) {
      res.destroy();
      throw new FatalError(`oss GET ${this.bucket}/${key}: asked for bytes ${offset}-${length === undefined ? '' : offset + length - 1} and the server answered ${status} without a range`);
    }
    const body = new LengthCheck(Number.isFinite(declared) ? declared : undefined, (got, want) => new TransientError(`oss GET ${this.bucket}/${key}: the connection to ${this.#reach} ended after ${got} of ${want} bytes`));
    // A reset or a stall while the caller reads surfaces as a classified error, not as Node's bare one.
    const lost = (err?: Error): void => {
      if (!body.destroyed) body.destroy(err instanceof FerryError ? err : new TransientError(`oss GET ${this.bucket}/${key}: the connection to ${this.#reach} failed${err ? ` (${err.message})` : ''}`, { cause: err }));
    };
    res.setTimeout(this.#limits.idleMs, () => lost(new TransientError(`oss GET ${this.bucket}/${key}: no data from ${this.#reach} for ${this.#limits.idleMs / 1000} s`)));
    res.on('error', lost);
    res.on('close', () => {
      if (!res.complete) lost();
    });
    body.on('close', () => res.destroy());
    res.pipe(body);
    return abortable(body, options.signal, `oss GET ${this.bucket}/${key}`);
  }

  /**
   * Bodies up to `multipartThreshold` are read whole and sent in one PutObject with Content-MD5,
   * so that a source that gives more or fewer bytes than announced is caught before the request
   * starts; larger or unsized bodies go up in parts (multipart.ts), each buffered. (A request body
   * that fails mid-request also makes urllib print "callback twice" warnings on stderr: none is
   * ever cut.)
   */
  async put(key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    const storageClass = options.storageClass ?? this.#storageClass;
    const headers: Record<string, string> = storageClass ? { 'x-oss-storage-class': storageClass } : {};
    // OSS refuses (409 FileAlreadyExists) to replace an existing key; multipart uploads send it on completion too.
    if (options.ifAbsent) headers['x-oss-forbid-overwrite'] = 'true';
    const signal = options.signal;
    const size = options.size;
    const what = `oss PUT ${this.bucket}/${key}`;
    const unhook = destroyOnAbort(body, signal, what);
    try {
      this.#checkKey('PUT', key);
      throwIfAborted(signal, what);
      if (Buffer.isBuffer(body)) checkDeclaredSize(body, size, what);
      const known = Buffer.isBuffer(body) ? body.length : size;
      if (known !== undefined && known <= this.#limits.multipartThreshold) {
        const data = Buffer.isBuffer(body) ? body : await readBody(body, known, what);
        return await this.#putObject(key, data, headers, signal);
      }
      // An unsized body that ends within its first part goes up in one request.
      await uploadInParts(this.#uploadRequests(headers), key, body, {
        size: known,
        partSize: this.#limits.partSize,
        partsInFlight: this.#limits.partsInFlight,
        limits: this.features.multipart!,
        signal,
        what,
        single: (data) => this.#putObject(key, data, headers, signal),
      });
    } catch (err) {
      if (!Buffer.isBuffer(body)) body.destroy();
      if (options.ifAbsent && refusedOverwrite(err)) throw new AlreadyExistsError(`${what}: the key exists already`, { cause: err });
      throw orAborted(err, signal, what);
    } finally {
      unhook();
    }
  }

  async #putObject(key: string, data: Buffer, headers: Record<string, string>, signal: AbortSignal | undefined): Promise<void> {
    await this.#call('PUT', key, signal, () => this.#client.put(key, data, { headers, timeout: this.#bodyTimeout(data.length) } as OSS.PutObjectOptions));
  }

  /** Initiate, complete and abort, for uploads and copies alike. `headers` go with the initiation and the completion (where x-oss-forbid-overwrite counts). */
  #multipartRequests<P>(headers: Record<string, string>, op: string, uploadPart: MultipartRequests<P>['uploadPart']): MultipartRequests<P> {
    return {
      create: async (key, signal) => {
        const init = await this.#call(op, key, signal, () => this.#client.initMultipartUpload(key, { headers, timeout: this.#limits.timeoutMs } as OSS.InitMultipartUploadOptions));
        return init.uploadId;
      },
      uploadPart,
      complete: async (upload, parts, signal) => {
        const done = parts.map((p) => ({ number: p.partNumber, etag: p.etag }));
        await this.#call(`${op} complete`, upload.key, signal, () => this.#client.completeMultipartUpload(upload.key, upload.uploadId, done, { headers, timeout: this.#limits.timeoutMs }));
      },
      abort: async (upload) => {
        await this.#call(`${op} abort`, upload.key, undefined, () => this.#client.abortMultipartUpload(upload.key, upload.uploadId, { timeout: this.#limits.timeoutMs }));
      },
    };
  }

  /** UploadPart from a buffer, or a stream of the part's size. ali-oss cannot cancel a request: a part in flight finishes before the upload is aborted. */
  #uploadRequests(headers: Record<string, string>): MultipartRequests<PartData> {
    return this.#multipartRequests<PartData>(headers, 'PUT', async (upload, number, part, signal) => {
      const options = { timeout: this.#bodyTimeout(part.size) };
      const r = await this.#call(`PUT part ${number}`, upload.key, signal, () =>
        Buffer.isBuffer(part.body)
          ? this.#client.uploadPart(upload.key, upload.uploadId, number, part.body, 0, part.size, options)
          : (this.#client as unknown as AliOssUploadPart)._uploadPart(upload.key, upload.uploadId, number, { stream: part.body, size: part.size }, options),
      );
      return r.etag;
    });
  }

  async delete(key: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#checkKey('DELETE', key);
    try {
      await this.#call('DELETE', key, options.signal, () => this.#client.delete(key, { timeout: this.#limits.timeoutMs }));
    } catch (err) {
      // OSS answers 204 for a missing key; a store that says NoSuchKey means the same.
      if (err instanceof FerryError && err.code === 'FERRY_NOT_FOUND' && ((err.cause as { code?: string })?.code === 'NoSuchKey')) return;
      throw err;
    }
  }

  async deleteMany(keys: string[], options: { signal?: AbortSignal } = {}): Promise<void> {
    for (const k of keys) this.#checkKey('DELETE', k);
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const what = `${batch[0]} and ${batch.length - 1} more`;
      const r = await this.#call('DELETE', what, options.signal, () => this.#client.deleteMulti(batch, { quiet: false, timeout: this.#limits.timeoutMs } as OSS.DeleteMultiOptions));
      const deleted = new Set((r.deleted ?? []).map((d) => String((d as { Key?: unknown }).Key)));
      const missed = batch.filter((k) => !deleted.has(k));
      if (missed.length > 0) throw new FatalError(`oss DELETE ${this.bucket}: the server did not delete ${missed.length} of ${batch.length} keys, e.g. ${JSON.stringify(missed[0])}`);
    }
  }

  copySource(key: string): CopySource {
    const location: OssLocation = { bucket: this.bucket, key };
    return { scope: this.#scope, location };
  }

  async copyFrom(key: string, source: CopySource, options: PutOptions & { size: number }): Promise<void> {
    this.#checkKey('COPY', key);
    if (source.scope !== this.#scope) throw new FatalError(`oss COPY ${this.bucket}/${key}: cannot copy server-side from ${source.scope} into ${this.#scope}`);
    const from = source.location as OssLocation;
    this.#checkKey('COPY', from.key);
    const storageClass = options.storageClass ?? this.#storageClass;
    const headers: Record<string, string> = storageClass ? { 'x-oss-storage-class': storageClass } : {};
    const what = `${key} (from ${from.bucket}/${from.key})`;
    if (options.size < this.#limits.copyLimit) {
      await this.#call('COPY', what, options.signal, () => this.#client.copy(key, from.key, from.bucket, { headers, timeout: this.#limits.timeoutMs }));
      return;
    }
    const partSize = Math.max(this.#limits.copyPartSize, Math.ceil(options.size / OSS_MAX_PARTS));
    // Server-side part copies carry no body: several may run at once.
    const requests = this.#multipartRequests<ByteRange>(headers, 'COPY', async (upload, number, range, signal) => {
      const r = await this.#call(`COPY part ${number}`, what, signal, () =>
        this.#client.uploadPartCopy(upload.key, upload.uploadId, number, `${range.first}-${range.last}`, { sourceKey: from.key, sourceBucketName: from.bucket }, { timeout: this.#bodyTimeout(range.last - range.first + 1) }),
      );
      return r.etag;
    });
    await runMultipart(requests, key, copyRanges(options.size, partSize), {
      partSize,
      size: options.size,
      sizeOfPart: (r) => r.last - r.first + 1,
      partsInFlight: COPY_PARTS_IN_FLIGHT,
      limits: this.features.multipart!,
      signal: options.signal,
      what: `oss COPY ${from.bucket}/${from.key} to ${this.bucket}/${key}`,
    });
  }

  async close(): Promise<void> {
    this.#httpAgent.destroy();
    this.#httpsAgent.destroy();
  }
}

/** Counts the bytes through it and fails when they are more or fewer than `expected`. */
class LengthCheck extends Transform {
  #seen = 0;
  constructor(
    readonly expected: number | undefined,
    readonly mismatch: (got: number, want: number) => FerryError,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.#seen += chunk.length;
    if (this.expected !== undefined && this.#seen > this.expected) return done(this.mismatch(this.#seen, this.expected));
    done(null, chunk);
  }
  override _flush(done: TransformCallback): void {
    if (this.expected !== undefined && this.#seen !== this.expected) return done(this.mismatch(this.#seen, this.expected));
    done();
  }
}

export const ossBackend: Backend = {
  scheme: 'oss',
  summary: 'oss://[AK:SK[:TOKEN]@]BUCKET.ENDPOINT[/PREFIX] — Aliyun OSS (ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET from the environment)',
  credentialEnv,
  secretEnv,
  async open(address, options) {
    return new OssStore(address, options);
  },
};
