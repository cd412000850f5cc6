import { createHash } from 'node:crypto';
import type { Agent } from 'node:http';
import { Readable, Transform } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
  type _Error as DeleteError,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { AlreadyExistsError, FatalError, type FerryError, ListOrderError, NotFoundError, PermissionDeniedError, ThrottledError, TransientError } from '../../errors.js';
import { compareKeys } from '../keys.js';
import { credentialEnv, secretEnv } from './env.js';
import type { Backend } from '../registry.js';
import type { CopySource, Entry, Features, GetOptions, ListOptions, MultipartUploads, ObjectStore, PutOptions } from '../types.js';
import { clientConfig, keepAliveAgent, resolveSettings, type S3Settings } from './config.js';
import { lostConditionalCreate, mapS3Error, type CallSite } from './errors.js';
import { parseListPage, type ListedObject, type ListPage } from '../listing-xml.js';
import { LeanS3 } from './lean.js';
import { abortable, abortablePages, checkDeclaredSize, destroyOnAbort, orAborted, readBody, sizeGuard, sourceError } from '../body.js';
import { copyRanges, MiB, multipartUploads, runMultipart, uploadInParts, type ByteRange, type MultipartRequests, type PartData } from '../multipart.js';

export { resolveSettings, clientConfig, keepAliveAgent, type S3Settings } from './config.js';

const GiB = 1024 * MiB;
/** S3's limits: every part but the last at least 5 MiB, at most 5 GiB, at most 10,000 parts, 5 TiB per object. */
const MIN_PART = 5 * MiB;
const MAX_PART = 5 * GiB;
const MAX_PARTS = 10_000;
const MAX_OBJECT = 5 * 1024 * GiB;

/** Sizes and counts a store works with; tests shrink them to reach the multipart paths cheaply. */
export interface S3Tuning {
  /** Largest object sent with one PutObject; larger or unknown sizes go multipart. */
  putThreshold: number;
  /** Largest object copied with one CopyObject (S3 allows 5 GiB); larger ones use UploadPartCopy. */
  copyThreshold: number;
  /** Smallest part of a multipart copy (the part count stays within 10,000). */
  copyPartSize: number;
  /** Size of upload parts (raised where 10,000 parts would not hold the object). */
  partSize: number;
  /** Parts of one object in flight at once. */
  partConcurrency: number;
  /** Keys per ListObjectsV2 request (S3 returns at most 1,000). */
  pageSize: number;
}

export const DEFAULT_TUNING: S3Tuning = {
  putThreshold: 32 * MiB,
  copyThreshold: 5 * GiB,
  copyPartSize: 512 * MiB,
  partSize: MIN_PART,
  partConcurrency: 4,
  pageSize: 1000,
};

/** DeleteObjects takes at most this many keys. */
const DELETE_BATCH = 1000;

interface S3Location {
  bucket: string;
  key: string;
}

/** `bucket/key` for x-amz-copy-source: each key segment percent-encoded. */
function copySourceHeader(loc: S3Location): string {
  return `${loc.bucket}/${loc.key.split('/').map(encodeURIComponent).join('/')}`;
}

function withSignal(signal: AbortSignal | undefined): { abortSignal?: AbortSignal } {
  return signal ? { abortSignal: signal } : {};
}

/** An AbortController that also fires when `outer` does; `dispose` unhooks it. */
function linkedController(outer: AbortSignal | undefined): { controller: AbortController; dispose(): void } {
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(outer?.reason);
  if (outer?.aborted) controller.abort(outer.reason);
  else outer?.addEventListener('abort', onAbort, { once: true });
  return { controller, dispose: () => outer?.removeEventListener('abort', onAbort) };
}

/** What a GetObject gives back, from the SDK or from lean.ts. */
interface GetOutput {
  Body?: Readable | undefined;
  ContentLength?: number | undefined;
  ContentRange?: string | undefined;
}

/**
 * An S3 bucket (AWS or any S3-compatible service). Keys are object keys; a key ending in '/' is a
 * directory marker. One attempt per call: ferry's retry policy acts on the mapped error class.
 * GetObject, HeadObject, single-part PutObject and DeleteObject go straight over HTTP (lean.ts: the
 * SDK's middleware costs ~3 ms of CPU per request); the rest goes through the SDK.
 */
export class S3Store implements ObjectStore {
  readonly scheme = 's3';
  readonly description: string;
  readonly features: Features;
  readonly multipart: MultipartUploads;
  readonly settings: S3Settings;
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #storageClass: string | undefined;
  readonly #tuning: S3Tuning;
  readonly #endpointName: string;
  readonly #agent: Agent;
  /** Undefined when every call goes through the SDK (`leanRequests: false`, for tests). */
  readonly #lean: LeanS3 | undefined;

  constructor(
    settings: S3Settings,
    options: { description?: string; storageClass?: string; concurrency?: number; tuning?: Partial<S3Tuning>; leanRequests?: boolean } = {},
  ) {
    this.settings = settings;
    this.#bucket = settings.bucket;
    this.#tuning = { ...DEFAULT_TUNING, ...options.tuning };
    this.#storageClass = options.storageClass;
    this.#endpointName = settings.endpoint ?? `https://s3.${settings.region}.amazonaws.com`;
    this.description = options.description ?? `s3://${settings.bucket}`;
    const sizes = { ...(options.concurrency === undefined ? {} : { concurrency: options.concurrency }), partConcurrency: this.#tuning.partConcurrency };
    this.#agent = keepAliveAgent(settings, sizes);
    this.#client = new S3Client(clientConfig(settings, { ...sizes, agent: this.#agent }));
    this.#lean = options.leanRequests === false ? undefined : new LeanS3(this.#client, settings, this.#agent);
    this.#addContentMd5();
    this.features = {
      copy: { scope: settings.scope },
      multipart: { minPartSize: MIN_PART, maxPartSize: MAX_PART, maxParts: MAX_PARTS },
      // If-None-Match: * on PutObject and CompleteMultipartUpload (S3 since August 2024; MinIO too).
      exclusiveCreate: true,
    };
    this.multipart = multipartUploads(this.features.multipart!, (storageClass) => this.#uploadRequests(storageClass ?? this.#storageClass), (op, key) => `s3 multipart ${op} ${this.#bucket}/${key}`);
  }

  /**
   * Since 2025 the SDK sends DeleteObjects with a CRC32 checksum only; many S3-compatible services
   * still require Content-MD5 on it, which real S3 accepts too.
   */
  #addContentMd5(): void {
    this.#client.middlewareStack.add(
      (next, context) => async (args) => {
        const request = args.request as { headers?: Record<string, string>; body?: unknown } | undefined;
        if (context.commandName === 'DeleteObjectsCommand' && request?.headers && (typeof request.body === 'string' || request.body instanceof Uint8Array)) {
          request.headers['content-md5'] = createHash('md5').update(request.body as string | Uint8Array).digest('base64');
        }
        return next(args);
      },
      { step: 'build', name: 'ferryDeleteObjectsContentMd5' },
    );
  }

  /** lean.ts, when it can reach this bucket (the SDK must send requests to S3 Express, ARNs, ...). */
  async #leanFor(): Promise<LeanS3 | undefined> {
    return this.#lean && (await this.#lean.usable()) ? this.#lean : undefined;
  }

  #site(op: string, key: string | undefined, signal: AbortSignal | undefined): CallSite {
    return { op, bucket: this.#bucket, endpoint: this.#endpointName, ...(key === undefined ? {} : { key }), ...(signal ? { signal } : {}) };
  }

  async #call<T>(site: CallSite, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw mapS3Error(err, site);
    }
  }

  list(options: ListOptions = {}): AsyncIterable<Entry[]> {
    return abortablePages(this.#list(options), options.signal, `s3 LIST ${this.#bucket}/${options.prefix ?? ''}`);
  }

  async *#list(options: ListOptions): AsyncIterable<Entry[]> {
    const prefix = options.prefix ?? '';
    const site = this.#site('LIST', prefix, options.signal);
    let token: string | undefined;
    let startAfter = options.startAfter;
    let last: string | undefined;
    const lean = await this.#leanFor();
    for (;;) {
      const out = lean ? await this.#listLean(lean, site, prefix, options, token, startAfter) : await this.#listSdk(site, prefix, options, token, startAfter);
      const page = this.#mergePage(out.contents, out.prefixes, last, `s3://${this.#bucket}/${prefix}`);
      if (page.length > 0) {
        last = page[page.length - 1]!.key;
        yield page;
      }
      if (!out.truncated) return;
      token = out.nextToken;
      // Services that page without continuation tokens: carry on after the last key seen.
      if (!token) {
        if (last === undefined) throw new FatalError(`s3 LIST ${this.#bucket}/${prefix}: the service says the listing is truncated but gives no way to continue`);
        startAfter = last;
      }
    }
  }

  /** One ListObjectsV2 page over the direct path, parsed by parseListPage. */
  async #listLean(lean: LeanS3, site: CallSite, prefix: string, options: ListOptions, token: string | undefined, startAfter: string | undefined): Promise<ListPage> {
    const query: Record<string, string> = { 'list-type': '2', 'max-keys': String(this.#tuning.pageSize) };
    if (prefix) query['prefix'] = prefix;
    if (options.delimiter) query['delimiter'] = options.delimiter;
    if (token) query['continuation-token'] = token;
    else if (startAfter !== undefined) query['start-after'] = startAfter;
    const res = await this.#call(site, () => lean.send({ method: 'GET', key: '', query, signal: options.signal, what: `s3 LIST ${this.#bucket}/${prefix}` }));
    return parseListPage((res as { text?: string }).text ?? '');
  }

  async #listSdk(site: CallSite, prefix: string, options: ListOptions, token: string | undefined, startAfter: string | undefined): Promise<ListPage> {
    const out = await this.#call(site, () =>
      this.#client.send(
        new ListObjectsV2Command({
          Bucket: this.#bucket,
          MaxKeys: this.#tuning.pageSize,
          ...(prefix ? { Prefix: prefix } : {}),
          ...(options.delimiter ? { Delimiter: options.delimiter } : {}),
          ...(token ? { ContinuationToken: token } : startAfter !== undefined ? { StartAfter: startAfter } : {}),
        }),
        withSignal(options.signal),
      ),
    );
    const page: ListPage = {
      contents: (out.Contents ?? []).map((c) => ({ key: c.Key ?? '', size: c.Size ?? 0, mtime: c.LastModified?.getTime() ?? 0, ...(c.ETag ? { etag: c.ETag.replace(/"/g, '') } : {}) })),
      prefixes: (out.CommonPrefixes ?? []).map((p) => p.Prefix ?? ''),
      truncated: Boolean(out.IsTruncated),
    };
    if (out.NextContinuationToken) page.nextToken = out.NextContinuationToken;
    return page;
  }

  /**
   * One page: objects and common prefixes (each sorted by the service in UTF-8 byte order) merged
   * into one ordered list. A common prefix repeated from the previous page is dropped (some
   * services end a page inside a prefix); anything else out of order is an error.
   */
  #mergePage(contents: ListedObject[], prefixes: string[], previous: string | undefined, where: string): Entry[] {
    const page: Entry[] = [];
    let last = previous;
    let i = 0;
    let j = 0;
    while (i < contents.length || j < prefixes.length) {
      const c = contents[i];
      const p = prefixes[j];
      let e: Entry;
      if (c && (p === undefined || compareKeys(c.key, p) <= 0)) {
        i++;
        const isDir = c.key.endsWith('/');
        e = { key: c.key, size: isDir ? 0 : c.size, mtime: c.mtime, isDir };
        if (c.etag) e.etag = c.etag;
      } else {
        j++;
        e = { key: p!, size: 0, mtime: 0, isDir: true };
      }
      if (last !== undefined) {
        const order = compareKeys(last, e.key);
        if (order === 0 && e.isDir) continue;
        if (order >= 0) throw new ListOrderError(where, last, e.key);
      }
      page.push(e);
      last = e.key;
    }
    return page;
  }

  async head(key: string, options: { signal?: AbortSignal } = {}): Promise<Entry> {
    const signal = options.signal;
    const site = this.#site('HEAD', key, signal);
    const lean = await this.#leanFor();
    let size: number | undefined;
    let mtime: number | undefined;
    let etag: string | undefined;
    if (lean) {
      const { headers } = await this.#call(site, () => lean.send({ method: 'HEAD', key, signal, what: `s3 HEAD ${this.#bucket}/${key}` }));
      size = numberHeader(headers['content-length']);
      const modified = headers['last-modified'] ? Date.parse(headers['last-modified']) : NaN;
      mtime = Number.isNaN(modified) ? undefined : modified;
      etag = headers.etag;
    } else {
      const out = await this.#call(site, () => this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }), withSignal(signal)));
      size = out.ContentLength;
      mtime = out.LastModified?.getTime();
      etag = out.ETag;
    }
    const isDir = key.endsWith('/');
    const e: Entry = { key, size: isDir ? 0 : (size ?? 0), mtime: mtime ?? 0, isDir };
    if (etag) e.etag = etag.replace(/"/g, '');
    return e;
  }

  /** One GetObject; failures as the SDK throws them (unmapped). */
  async #getObject(key: string, range: string | undefined, signal: AbortSignal | undefined): Promise<GetOutput> {
    const lean = await this.#leanFor();
    if (!lean) {
      const out = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key, ...(range ? { Range: range } : {}) }), withSignal(signal));
      return { Body: out.Body as Readable | undefined, ContentLength: out.ContentLength, ContentRange: out.ContentRange };
    }
    const res = await lean.send({ method: 'GET', key, ...(range ? { headers: { range } } : {}), signal, what: `s3 GET ${this.#bucket}/${key}` });
    return { Body: res, ContentLength: numberHeader(res.headers['content-length']), ContentRange: res.headers['content-range'] };
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const site = this.#site('GET', key, options.signal);
    const offset = options.offset ?? 0;
    if (options.length === 0) {
      await this.head(key, options.signal ? { signal: options.signal } : {});
      return Readable.from([]);
    }
    const range = offset > 0 || options.length !== undefined ? `bytes=${offset}-${options.length === undefined ? '' : offset + options.length - 1}` : undefined;
    let out: GetOutput;
    try {
      out = await this.#getObject(key, range, options.signal);
    } catch (err) {
      // A range starting at or past the end: the object exists, and there is nothing to read.
      if ((err as { name?: string }).name === 'InvalidRange') return Readable.from([]);
      throw mapS3Error(err, site);
    }
    const body = out.Body;
    if (!body) return Readable.from([]);
    if (range && !out.ContentRange) {
      body.destroy();
      throw new FatalError(`s3 GET ${this.#bucket}/${key}: the service ignored the range ${range} and sent the whole object`);
    }
    return abortable(checkedLength(body, out.ContentLength, site), options.signal, `s3 GET ${this.#bucket}/${key}`);
  }

  async put(key: string, body: Readable | Buffer, options: PutOptions = {}): Promise<void> {
    const storageClass = options.storageClass ?? this.#storageClass;
    const signal = options.signal;
    const what = `s3 PUT ${this.#bucket}/${key}`;
    const unhook = destroyOnAbort(body, signal, what);
    const ifAbsent = options.ifAbsent === true;
    try {
      if (Buffer.isBuffer(body)) checkDeclaredSize(body, options.size, what);
      const size = Buffer.isBuffer(body) ? body.length : options.size;
      if (size !== undefined && size > MAX_OBJECT) throw new FatalError(`${what}: ${size} bytes is more than S3's 5 TiB limit`);
      // An empty body is read first: the service may answer a request of length 0 before the source shows it holds more.
      if (size === 0 && !Buffer.isBuffer(body)) return await this.#putObject(key, await readBody(body, 0, what), 0, storageClass, signal, ifAbsent);
      if (size !== undefined && size <= this.#tuning.putThreshold) return await this.#putObject(key, body, size, storageClass, signal, ifAbsent);
      // Larger or unsized bodies go up in parts; a stream of unknown size that fits in one part goes up with one PutObject.
      await uploadInParts(this.#uploadRequests(storageClass, ifAbsent), key, body, {
        size,
        partSize: this.#tuning.partSize,
        partsInFlight: this.#tuning.partConcurrency,
        limits: this.features.multipart!,
        signal,
        what,
        single: (data) => this.#putObject(key, data, data.length, storageClass, signal, ifAbsent),
      });
    } catch (err) {
      if (!Buffer.isBuffer(body)) body.destroy();
      if (ifAbsent && lostConditionalCreate(err)) throw new AlreadyExistsError(`${what}: the key exists already`, { cause: err });
      throw orAborted(err, signal, what);
    } finally {
      unhook();
    }
  }

  /** `ifAbsent`: If-None-Match: *, so that the service refuses (412) to replace an existing key. */
  async #putObject(key: string, body: Readable | Buffer, size: number, storageClass: string | undefined, signal: AbortSignal | undefined, ifAbsent = false): Promise<void> {
    const site = this.#site('PUT', key, signal);
    const what = `s3 PUT ${this.#bucket}/${key}`;
    const lean = await this.#leanFor();
    const request = {
      Bucket: this.#bucket,
      Key: key,
      ContentLength: size,
      ...(storageClass ? { StorageClass: storageClass as StorageClass } : {}),
      ...(ifAbsent ? { IfNoneMatch: '*' } : {}),
    };
    // The headers the SDK sends for the same PutObject.
    const headers: Record<string, string> = {
      'content-length': String(size),
      'content-type': 'application/octet-stream',
      ...(storageClass ? { 'x-amz-storage-class': storageClass } : {}),
      ...(ifAbsent ? { 'if-none-match': '*' } : {}),
    };
    if (Buffer.isBuffer(body)) {
      await this.#call<unknown>(site, () =>
        lean ? lean.send({ method: 'PUT', key, headers, body, signal, what }) : this.#client.send(new PutObjectCommand({ ...request, Body: body }), withSignal(signal)),
      );
      return;
    }
    // A failing or wrongly sized body would leave the request waiting: abort it with the reason.
    const { controller, dispose } = linkedController(signal);
    const checked = lengthChecked(body, size, what, (err) => controller.abort(err));
    try {
      await this.#call<unknown>(site, () =>
        lean
          ? lean.send({ method: 'PUT', key, headers, body: checked, signal: controller.signal, what })
          : this.#client.send(new PutObjectCommand({ ...request, Body: checked }), { abortSignal: controller.signal }),
      );
    } finally {
      dispose();
      checked.destroy();
      body.destroy();
    }
  }

  /**
   * CreateMultipartUpload, CompleteMultipartUpload and AbortMultipartUpload, for uploads and copies
   * alike. `ifAbsent`: the completion carries If-None-Match: *, the one moment the key changes.
   */
  #multipartRequests<P>(storageClass: string | undefined, uploadPart: MultipartRequests<P>['uploadPart'], ifAbsent = false): MultipartRequests<P> {
    return {
      create: async (key, signal) => {
        const out = await this.#call(this.#site('CreateMultipartUpload', key, signal), () =>
          this.#client.send(
            new CreateMultipartUploadCommand({ Bucket: this.#bucket, Key: key, ...(storageClass ? { StorageClass: storageClass as StorageClass } : {}) }),
            withSignal(signal),
          ),
        );
        if (!out.UploadId) throw new FatalError(`s3 CreateMultipartUpload ${this.#bucket}/${key}: the service returned no upload id`);
        return out.UploadId;
      },
      uploadPart,
      complete: async (upload, parts, signal) => {
        await this.#call(this.#site('CompleteMultipartUpload', upload.key, signal), () =>
          this.#client.send(
            new CompleteMultipartUploadCommand({
              Bucket: this.#bucket,
              Key: upload.key,
              UploadId: upload.uploadId,
              MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) },
              ...(ifAbsent ? { IfNoneMatch: '*' } : {}),
            }),
            withSignal(signal),
          ),
        );
      },
      abort: async (upload) => {
        await this.#call(this.#site('AbortMultipartUpload', upload.key, undefined), () =>
          this.#client.send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: upload.key, UploadId: upload.uploadId })),
        );
      },
    };
  }

  /** UploadPart from a buffer or a stream of the part's size. */
  #uploadRequests(storageClass: string | undefined, ifAbsent = false): MultipartRequests<PartData> {
    return this.#multipartRequests<PartData>(storageClass, async (upload, partNumber, part, signal) => {
      const out = await this.#call(this.#site(`UploadPart #${partNumber}`, upload.key, signal), () =>
        this.#client.send(
          new UploadPartCommand({ Bucket: this.#bucket, Key: upload.key, UploadId: upload.uploadId, PartNumber: partNumber, Body: part.body, ContentLength: part.size }),
          { abortSignal: signal },
        ),
      );
      return out.ETag ?? '';
    }, ifAbsent);
  }

  async delete(key: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    const signal = options.signal;
    const lean = await this.#leanFor();
    try {
      await this.#call<unknown>(this.#site('DELETE', key, signal), () =>
        lean
          ? lean.send({ method: 'DELETE', key, signal, what: `s3 DELETE ${this.#bucket}/${key}` })
          : this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key }), withSignal(signal)),
      );
    } catch (err) {
      // S3 answers 204 for a missing key; some compatible services say 404 NoSuchKey.
      if (err instanceof NotFoundError && (err.cause as { name?: string } | undefined)?.name !== 'NoSuchBucket') return;
      throw err;
    }
  }

  /** Batched deletes, 1,000 keys a request. Keys the service could not delete are reported together. */
  async deleteMany(keys: string[], options: { signal?: AbortSignal } = {}): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      const site = this.#site('DeleteObjects', batch.length === 1 ? batch[0] : undefined, options.signal);
      const out = await this.#call(site, () =>
        this.#client.send(
          new DeleteObjectsCommand({ Bucket: this.#bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
          withSignal(options.signal),
        ),
      );
      const failed = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (failed.length > 0) throw deleteErrors(this.#bucket, batch.length, failed);
    }
  }

  copySource(key: string): CopySource {
    const location: S3Location = { bucket: this.#bucket, key };
    return { scope: this.settings.scope, location };
  }

  async copyFrom(key: string, source: CopySource, options: PutOptions & { size: number }): Promise<void> {
    const from = source.location as S3Location;
    if (source.scope !== this.settings.scope) throw new FatalError(`s3 COPY ${from.bucket}/${from.key} to ${this.#bucket}/${key}: the source is on another endpoint or account (${source.scope})`);
    const storageClass = options.storageClass ?? this.#storageClass;
    const signal = options.signal;
    const header = copySourceHeader(from);
    if (options.size <= this.#tuning.copyThreshold) {
      await this.#call(this.#site(`COPY from ${from.bucket}/${from.key} to`, key, signal), () =>
        this.#client.send(
          new CopyObjectCommand({ Bucket: this.#bucket, Key: key, CopySource: header, ...(storageClass ? { StorageClass: storageClass as StorageClass } : {}) }),
          withSignal(signal),
        ),
      );
      return;
    }
    if (options.size > MAX_OBJECT) throw new FatalError(`s3 COPY ${from.bucket}/${from.key}: ${options.size} bytes is more than S3's 5 TiB limit`);
    const what = `s3 COPY ${from.bucket}/${from.key} to ${this.#bucket}/${key}`;
    const partSize = Math.min(MAX_PART, Math.max(this.#tuning.copyPartSize, Math.ceil(options.size / MAX_PARTS / MiB) * MiB));
    const requests = this.#multipartRequests<ByteRange>(storageClass, async (upload, partNumber, range, partSignal) => {
      const out = await this.#call(this.#site(`UploadPartCopy #${partNumber} from ${from.bucket}/${from.key} to`, upload.key, partSignal), () =>
        this.#client.send(
          new UploadPartCopyCommand({
            Bucket: this.#bucket,
            Key: upload.key,
            UploadId: upload.uploadId,
            PartNumber: partNumber,
            CopySource: header,
            CopySourceRange: `bytes=${range.first}-${range.last}`,
          }),
          { abortSignal: partSignal },
        ),
      );
      return out.CopyPartResult?.ETag ?? '';
    });
    await runMultipart(requests, key, copyRanges(options.size, partSize), {
      partSize,
      size: options.size,
      sizeOfPart: (r) => r.last - r.first + 1,
      partsInFlight: this.#tuning.partConcurrency,
      limits: this.features.multipart!,
      signal,
      what,
    });
  }

  async close(): Promise<void> {
    this.#client.destroy();
    // The SDK's handler destroys the agent only once it has sent a request itself.
    this.#agent.destroy();
  }
}

function numberHeader(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * The body of a PutObject whose length was announced: fails (through `fail`, which aborts the
 * request) when the source errors or turns out longer or shorter than `size`. The chunk that
 * completes `size` goes only once the source has ended, so the service never receives a whole
 * body from a source that is longer.
 */
function lengthChecked(body: Readable, size: number, what: string, fail: (err: FerryError) => void): Readable {
  const out = sizeGuard(size, what);
  out.on('error', (err) => fail(sourceError(err, what)));
  body.on('error', (err) => out.destroy(sourceError(err, what)));
  body.pipe(out);
  return out;
}

/** The body of a GetObject, with network errors mapped and a short body reported as transient. */
function checkedLength(body: Readable, expected: number | undefined, site: CallSite): Readable {
  let seen = 0;
  const out = new Transform({
    highWaterMark: MiB,
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      callback(null, chunk);
    },
    flush(callback) {
      if (expected !== undefined && seen !== expected) {
        return callback(new TransientError(`s3 ${site.op} ${site.bucket}/${site.key ?? ''}: the response ended after ${seen} of ${expected} bytes`));
      }
      callback();
    },
  });
  body.on('error', (err) => out.destroy(mapS3Error(err, site)));
  // A reader that stops early must free the connection.
  out.on('close', () => {
    if (!body.readableEnded) body.destroy();
  });
  body.pipe(out);
  return out;
}

function deleteErrors(bucket: string, total: number, failed: DeleteError[]): FerryError {
  const shown = failed
    .slice(0, 5)
    .map((e) => `${e.Key ?? '?'} (${e.Code ?? 'error'}${e.Message ? ': ' + e.Message : ''})`)
    .join(', ');
  const more = failed.length > 5 ? ` and ${failed.length - 5} more` : '';
  const message = `s3 DeleteObjects ${bucket}: ${failed.length} of ${total} keys were not deleted: ${shown}${more}`;
  // The batch is retried whole when every failure is worth retrying; deleting twice is harmless.
  const codes = failed.map((e) => e.Code ?? '');
  if (codes.every((c) => c === 'SlowDown' || c === 'ServiceUnavailable')) return new ThrottledError(message);
  if (codes.every((c) => c === 'InternalError' || c === 'SlowDown' || c === 'ServiceUnavailable')) return new TransientError(message);
  if (codes.some((c) => c === 'AccessDenied')) return new PermissionDeniedError(message);
  return new FatalError(message);
}

export const s3Backend: Backend = {
  scheme: 's3',
  aliases: ['minio'],
  summary: 's3://[AK:SK[:TOKEN]@]BUCKET[.ENDPOINT][/PREFIX], minio://[AK:SK@]ENDPOINT/BUCKET[/PREFIX] — Amazon S3 and S3-compatible stores',
  credentialEnv,
  secretEnv,
  async open(address, options) {
    const settings = resolveSettings(address, options);
    return new S3Store(settings, {
      description: address.display,
      ...(options.storageClass ? { storageClass: options.storageClass } : {}),
      ...(options.concurrency === undefined ? {} : { concurrency: options.concurrency }),
    });
  },
};
