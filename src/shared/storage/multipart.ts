/**
 * The one multipart driver of the object stores (s3, oss, cos). It sizes parts from the store's
 * limits (`features.multipart`) and the object's size, keeps a bounded number of parts in flight
 * (memory: that many parts plus the one being read), aborts the upload on any failure and on the
 * run's signal, so that no parts are left to be billed, and completes with the parts in order.
 *
 * A backend supplies the requests (`MultipartRequests`): create, upload part N, complete, abort.
 * What the driver keeps about an upload (`MultipartUpload`) is plain serialisable data, and
 * uploading one part is a call of its own, so that a part can later be uploaded by another executor.
 */
import type { Readable } from 'node:stream';
import { FatalError, NotFoundError } from '../errors.js';
import { checkDeclaredSize, destroyOnAbort, orAborted, sizeGuard, sourceError, throwIfAborted, tooLong, tooShort } from './body.js';
import type { Features, MultipartUploads } from './types.js';

export const MiB = 1024 * 1024;

/** A store's multipart limits, as its `features.multipart` declares them. */
export type PartLimits = NonNullable<Features['multipart']>;

/** One part that the service has: what completing the upload lists. */
export interface UploadedPart {
  partNumber: number;
  etag: string;
  size: number;
}

/** One multipart upload as plain data (JSON as it is): enough for any executor to upload a part of it, complete or abort it. */
export interface MultipartUpload {
  v: 1;
  key: string;
  uploadId: string;
  /**
   * Bytes of every part but the last; part N holds bytes [(N-1) * partSize, N * partSize) of the
   * object (partRange). For a stream of unknown size, the size of the first parts (partSizing).
   */
  partSize: number;
  /** The object's size, when it was known in advance. */
  size?: number;
  /** Parts uploaded so far, in the order they finished. */
  parts: UploadedPart[];
}

/** What names an upload to the service: all a part upload, a completion or an abort needs. */
export type UploadRef = Pick<MultipartUpload, 'key' | 'uploadId'>;

/** The bytes of one part: in memory, or a stream of exactly `size` bytes. */
export interface PartData {
  body: Buffer | Readable;
  size: number;
}

/** A range of a source object (inclusive ends), for parts copied on the server. */
export interface ByteRange {
  first: number;
  last: number;
}

/** The requests of a multipart upload, as the backend makes them. `P` is what a part is made from: bytes, or a range of an object to copy. */
export interface MultipartRequests<P> {
  /** Start an upload of `key`: its upload id. */
  create(key: string, signal: AbortSignal | undefined): Promise<string>;
  /** Upload (or copy) part `partNumber`: its ETag. */
  uploadPart(upload: UploadRef, partNumber: number, part: P, signal: AbortSignal): Promise<string>;
  /** Complete the upload from `parts`, in ascending part numbers. */
  complete(upload: UploadRef, parts: UploadedPart[], signal: AbortSignal | undefined): Promise<void>;
  /** Abort the upload. Called without the run's signal: an interrupted upload is cleaned up too. */
  abort(upload: UploadRef): Promise<void>;
}

export interface PartSizing {
  /** The size of the first part. */
  partSize: number;
  /** The size of part `index` (from 0) but the last, which may be shorter. */
  sizeOf(index: number): number;
}

/**
 * Part sizes for an object of `size` bytes within the store's limits, starting from the size the
 * store prefers. A known size gets one part size, raised (to whole MiB) until `maxParts` parts hold
 * the object. An unknown size starts at the preferred size and doubles every tenth of `maxParts`
 * parts, so small streams go in small parts and `maxParts` parts still reach far (S3: from 5 MiB,
 * 10,000 parts hold 5 TB).
 */
export function partSizing(limits: PartLimits, preferred: number, size: number | undefined, what: string): PartSizing {
  const base = Math.min(limits.maxPartSize, Math.max(preferred, limits.minPartSize));
  if (size === undefined) {
    const step = Math.max(1, Math.floor(limits.maxParts / 10));
    return { partSize: base, sizeOf: (i) => Math.min(limits.maxPartSize, base * 2 ** Math.floor(i / step)) };
  }
  const needed = Math.ceil(size / limits.maxParts);
  const partSize = needed <= base ? base : Math.min(limits.maxPartSize, needed < MiB ? needed : Math.ceil(needed / MiB) * MiB);
  if (Math.ceil(size / partSize) > limits.maxParts) {
    throw new FatalError(`${what}: ${size} bytes do not fit in ${limits.maxParts} parts of at most ${limits.maxPartSize} bytes, the most this store holds in one object`);
  }
  return { partSize, sizeOf: () => partSize };
}

/** Where part `partNumber` of an upload of known size lies in the object. */
export function partRange(upload: Pick<MultipartUpload, 'partSize' | 'size'>, partNumber: number): ByteRange {
  if (upload.size === undefined) throw new FatalError('the parts of an upload of unknown size have no fixed ranges');
  const first = (partNumber - 1) * upload.partSize;
  return { first, last: Math.min(upload.size, first + upload.partSize) - 1 };
}

/** The ranges of a server-side copy of `size` bytes in parts of `partSize`. */
export function* copyRanges(size: number, partSize: number): Generator<ByteRange> {
  for (let off = 0; off < size; off += partSize) yield { first: off, last: Math.min(size, off + partSize) - 1 };
}

export interface DriverOptions {
  /** Parts uploading at once. */
  partsInFlight: number;
  /** The store's limits (features.multipart). */
  limits: PartLimits;
  signal?: AbortSignal | undefined;
  /** Names the upload in messages: 's3 PUT bucket/key'. */
  what: string;
}

/**
 * Run one multipart upload of `parts` (numbered from 1 in the order they come): create it, upload
 * the parts `partsInFlight` at a time, taking the next one only when a slot is free, then complete
 * it with the parts in order. Any failure, and the signal, stop the other parts and abort the
 * upload; an interrupted upload fails with AbortedError. Returns the completed upload.
 */
export async function runMultipart<P>(
  requests: MultipartRequests<P>,
  key: string,
  parts: AsyncIterable<P> | Iterable<P>,
  options: DriverOptions & { partSize: number; size?: number | undefined; sizeOfPart(part: P): number },
): Promise<MultipartUpload> {
  const { signal, what } = options;
  throwIfAborted(signal, what);
  let uploadId: string;
  try {
    uploadId = await requests.create(key, signal);
  } catch (err) {
    throw orAborted(err, signal, what);
  }
  const upload: MultipartUpload = { v: 1, key, uploadId, partSize: options.partSize, ...(options.size === undefined ? {} : { size: options.size }), parts: [] };
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  const inFlight = new Set<Promise<void>>();
  let failure: { err: unknown } | undefined;
  let n = 0;
  try {
    for await (const part of parts) {
      if (failure || stop.signal.aborted) break;
      const partNumber = ++n;
      if (partNumber > options.limits.maxParts) throw new FatalError(`${what}: more than ${options.limits.maxParts} parts; give the size of a body this large`);
      const size = options.sizeOfPart(part);
      const p: Promise<void> = requests.uploadPart(upload, partNumber, part, stop.signal).then(
        (etag) => void upload.parts.push({ partNumber, etag, size }),
        (err: unknown) => {
          failure ??= { err };
          stop.abort();
        },
      );
      const tracked = p.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      while (inFlight.size >= options.partsInFlight) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    throwIfAborted(signal, what);
    if (failure) throw failure.err;
    await requests.complete(upload, [...upload.parts].sort((a, b) => a.partNumber - b.partNumber), signal);
    return upload;
  } catch (err) {
    stop.abort();
    await Promise.allSettled(inFlight);
    await requests.abort(upload).catch(() => {});
    throw orAborted(err, signal, what);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * A store's `multipart` (MultipartUploads) over its requests: limits checked before anything is
 * sent, a stream part held to its announced size, completion with the parts in order, and an abort
 * that does not mind an upload already gone. `requests(storageClass)` are the backend's requests
 * for uploads of that storage class; `what(op, key)` names a call in messages ('s3 UploadPart bucket/key').
 */
export function multipartUploads(limits: PartLimits, requests: (storageClass: string | undefined) => MultipartRequests<PartData>, what: (op: string, key: string) => string): MultipartUploads {
  const plain = requests(undefined);
  return {
    async start(key, size, options) {
      const name = what('start', key);
      const { partSize } = options;
      const parts = Math.max(1, Math.ceil(size / partSize));
      if (!Number.isSafeInteger(partSize) || partSize < 1 || partSize > limits.maxPartSize || (parts > 1 && partSize < limits.minPartSize)) {
        throw new FatalError(`${name}: parts of ${partSize} bytes are outside this store's limits (${limits.minPartSize} to ${limits.maxPartSize} bytes)`);
      }
      if (parts > limits.maxParts) throw new FatalError(`${name}: ${size} bytes in parts of ${partSize} bytes make ${parts} parts, more than the ${limits.maxParts} this store allows`);
      throwIfAborted(options.signal, name);
      let uploadId: string;
      try {
        uploadId = await requests(options.storageClass).create(key, options.signal);
      } catch (err) {
        throw orAborted(err, options.signal, name);
      }
      return { v: 1, key, uploadId, partSize, size, parts: [] };
    },
    async uploadPart(upload, partNumber, data, options = {}) {
      const name = what(`part ${partNumber}`, upload.key);
      if (!Number.isSafeInteger(partNumber) || partNumber < 1 || partNumber > limits.maxParts) throw new FatalError(`${name}: part numbers run from 1 to ${limits.maxParts}`);
      const etag = await uploadExactly(plain, upload, partNumber, data, options.signal, name);
      return { partNumber, etag, size: data.size };
    },
    async complete(upload, parts, options = {}) {
      const name = what('complete', upload.key);
      throwIfAborted(options.signal, name);
      try {
        await plain.complete(upload, [...parts].sort((a, b) => a.partNumber - b.partNumber), options.signal);
      } catch (err) {
        throw orAborted(err, options.signal, name);
      }
    },
    async abort(upload) {
      try {
        await plain.abort(upload);
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
      }
    },
  };
}

/**
 * One part upload whose stream body is held to `data.size` bytes (sizeGuard): a source that ends
 * early, runs long or fails stops the request (through its signal) and the call fails with that
 * error at once, whether or not the backend can cancel a request in flight.
 */
async function uploadExactly(requests: MultipartRequests<PartData>, upload: UploadRef, partNumber: number, data: PartData, signal: AbortSignal | undefined, what: string): Promise<string> {
  throwIfAborted(signal, what);
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  const body = data.body;
  try {
    if (Buffer.isBuffer(body)) {
      checkDeclaredSize(body, data.size, what);
      return await requests.uploadPart(upload, partNumber, data, stop.signal);
    }
    const guard = sizeGuard(data.size, what);
    const broken = new Promise<never>((_, reject) =>
      guard.on('error', (err) => {
        stop.abort();
        reject(err);
      }),
    );
    broken.catch(() => {});
    body.on('error', (err) => guard.destroy(sourceError(err, what)));
    body.pipe(guard);
    try {
      return await Promise.race([requests.uploadPart(upload, partNumber, { body: guard, size: data.size }, stop.signal), broken]);
    } catch (err) {
      // The source's failure, not what it did to the request.
      throw guard.errored ?? err;
    } finally {
      guard.destroy();
      body.destroy();
    }
  } catch (err) {
    throw orAborted(err, signal, what);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

export interface UploadOptions extends DriverOptions {
  /** The part size the store prefers; raised to fit the object within the part limits. */
  partSize: number;
  /** The body's announced size: enforced (SourceChangedError, and nothing is stored). */
  size?: number | undefined;
  /**
   * Store a body of unknown size that ends within its first part in one request instead. Without
   * it such a body is one part.
   */
  single?(data: Buffer): Promise<void>;
}

const EMPTY = Buffer.alloc(0);

/**
 * Upload a body in parts: a buffer is cut without copying, a stream is read one part at a time
 * as slots free up (backpressure). A body longer or shorter than `size` fails before the upload
 * completes, and the upload is aborted.
 */
export async function uploadInParts(requests: MultipartRequests<PartData>, key: string, body: Readable | Buffer, options: UploadOptions): Promise<void> {
  const { signal, what } = options;
  const unhook = destroyOnAbort(body, signal, what);
  const run = (parts: AsyncIterable<Buffer> | Iterable<Buffer>, partSize: number, size: number | undefined): Promise<MultipartUpload> =>
    runMultipart(requests, key, wrap(parts), { ...options, partSize, size, sizeOfPart: (p) => p.size });
  try {
    throwIfAborted(signal, what);
    if (Buffer.isBuffer(body)) {
      checkDeclaredSize(body, options.size, what);
      const { partSize } = partSizing(options.limits, options.partSize, body.length, what);
      await run(sliceParts(body, partSize), partSize, body.length);
      return;
    }
    const sizing = partSizing(options.limits, options.partSize, options.size, what);
    const parts = readParts(body, sizing.sizeOf, options.size, what);
    try {
      let items: AsyncIterable<Buffer> = parts;
      if (options.size === undefined && options.single) {
        const first = await parts.next();
        if (first.done || first.value.length < sizing.sizeOf(0)) {
          throwIfAborted(signal, what);
          return await options.single(first.done ? EMPTY : first.value);
        }
        items = prepend(first.value, parts);
      }
      await run(items, sizing.partSize, options.size);
    } finally {
      await parts.return(undefined);
    }
  } catch (err) {
    if (!Buffer.isBuffer(body)) body.destroy();
    throw orAborted(err, signal, what);
  } finally {
    unhook();
  }
}

async function* wrap(parts: AsyncIterable<Buffer> | Iterable<Buffer>): AsyncGenerator<PartData> {
  for await (const body of parts) yield { body, size: body.length };
}

async function* prepend<T>(first: T, rest: AsyncIterator<T>): AsyncGenerator<T> {
  yield first;
  for (;;) {
    const r = await rest.next();
    if (r.done) return;
    yield r.value;
  }
}

/** Cut a buffer into parts without copying. */
export function* sliceParts(body: Buffer, partSize: number): Generator<Buffer> {
  if (body.length === 0) yield body;
  for (let off = 0; off < body.length; off += partSize) yield body.subarray(off, Math.min(body.length, off + partSize));
}

/**
 * Cut a stream into parts of `sizeOf(i)` bytes (the last may be shorter; an empty stream is one
 * empty part). A part is read only when the consumer asks for it. With `size`, the stream must be
 * exactly that long: it fails as soon as it is longer, and at its end when it is shorter, before
 * the consumer sees the end (so the upload is never completed).
 */
export async function* readParts(body: Readable, sizeOf: (index: number) => number, size: number | undefined, what: string): AsyncGenerator<Buffer> {
  let index = 0;
  let total = 0;
  let handed = 0;
  const want = (): number => (size === undefined ? sizeOf(index) : Math.min(sizeOf(index), size - handed));
  let part = Buffer.allocUnsafe(want());
  let filled = 0;
  const chunks = (body as AsyncIterable<Buffer | Uint8Array | string>)[Symbol.asyncIterator]();
  for (;;) {
    let r: IteratorResult<Buffer | Uint8Array | string>;
    try {
      r = await chunks.next();
    } catch (err) {
      throw sourceError(err, what);
    }
    if (r.done) break;
    const v = r.value;
    let c = Buffer.isBuffer(v) ? v : typeof v === 'string' ? Buffer.from(v) : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    total += c.length;
    if (size !== undefined && total > size) {
      await chunks.return?.();
      throw tooLong(size, what);
    }
    while (c.length > 0) {
      const n = Math.min(c.length, part.length - filled);
      c.copy(part, filled, 0, n);
      filled += n;
      c = c.subarray(n);
      if (filled === part.length) {
        handed += filled;
        index++;
        yield part;
        part = Buffer.allocUnsafe(want());
        filled = 0;
      }
    }
  }
  if (size !== undefined && total !== size) throw tooShort(total, size, what);
  if (filled > 0 || index === 0) yield part.subarray(0, filled);
}

