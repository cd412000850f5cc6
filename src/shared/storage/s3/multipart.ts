import type { Readable } from 'node:stream';
import { FatalError } from '../../errors.js';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
/** S3's limits: every part but the last at least 5 MiB, at most 5 GiB, at most 10,000 parts, 5 TiB per object. */
export const MIN_PART = 5 * MiB;
export const MAX_PART = 5 * GiB;
export const MAX_PARTS = 10_000;
export const MAX_OBJECT = 5 * 1024 * GiB;

/** Part size for an object of known size: at least 5 MiB, a whole number of MiB, at most 10,000 parts. */
export function partSizeFor(size: number): number {
  return Math.max(MIN_PART, Math.ceil(size / MAX_PARTS / MiB) * MiB);
}

/**
 * Part sizes when the size is unknown: 5 MiB for the first 1,000 parts, doubling every 1,000 parts
 * after that (S3 lets parts differ in size), so 10,000 parts reach past 5 TiB while small streams
 * still go in small parts.
 */
export function partSizeForUnknown(index: number): number {
  return Math.min(MAX_PART, MIN_PART * 2 ** Math.floor(index / 1000));
}

/**
 * Cut a stream into parts of `sizeOf(i)` bytes (the last one may be shorter). A part is read only
 * when the consumer asks for it, so at most one part is being filled at a time.
 */
export async function* readParts(body: Readable, sizeOf: (index: number) => number): AsyncGenerator<Buffer> {
  let index = 0;
  let part = Buffer.allocUnsafe(sizeOf(0));
  let filled = 0;
  for await (const chunk of body as AsyncIterable<Buffer | string>) {
    let c = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    while (c.length > 0) {
      const n = Math.min(c.length, part.length - filled);
      c.copy(part, filled, 0, n);
      filled += n;
      c = c.subarray(n);
      if (filled === part.length) {
        yield part;
        index++;
        part = Buffer.allocUnsafe(sizeOf(index));
        filled = 0;
      }
    }
  }
  if (filled > 0) yield part.subarray(0, filled);
}

/** Cut a buffer into parts without copying. */
export function* sliceParts(body: Buffer, partSize: number): Generator<Buffer> {
  for (let off = 0; off < body.length; off += partSize) yield body.subarray(off, Math.min(body.length, off + partSize));
}

/** Byte ranges (inclusive ends) of a multipart copy. */
export function* copyRanges(size: number, partSize: number): Generator<{ first: number; last: number }> {
  for (let off = 0; off < size; off += partSize) yield { first: off, last: Math.min(size, off + partSize) - 1 };
}

/** The service side of one multipart upload; `T` is what a part is made from (bytes or a range). */
export interface MultipartTarget<T> {
  create(): Promise<string>;
  part(uploadId: string, partNumber: number, item: T, signal: AbortSignal): Promise<string>;
  complete(uploadId: string, parts: { PartNumber: number; ETag: string }[]): Promise<void>;
  abort(uploadId: string): Promise<void>;
}

/**
 * Run a multipart upload: parts go up `concurrency` at a time and the next item is pulled only when
 * a slot is free (memory stays at `concurrency + 1` parts). Any failure stops the other parts and
 * aborts the upload, so no orphaned parts are left to be billed. Returns the number of parts.
 */
export async function runMultipart<T>(
  target: MultipartTarget<T>,
  items: AsyncIterable<T> | Iterable<T>,
  options: { concurrency: number; signal?: AbortSignal; what: string },
): Promise<number> {
  const uploadId = await target.create();
  const stop = new AbortController();
  const onAbort = (): void => stop.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const done: { PartNumber: number; ETag: string }[] = [];
  const inFlight = new Set<Promise<void>>();
  let failure: { err: unknown } | undefined;
  let n = 0;
  try {
    for await (const item of items) {
      if (failure) break;
      options.signal?.throwIfAborted();
      const partNumber = ++n;
      if (partNumber > MAX_PARTS) throw new FatalError(`${options.what}: more than ${MAX_PARTS} parts; the object is too large for its part size`);
      const p: Promise<void> = target.part(uploadId, partNumber, item, stop.signal).then(
        (etag) => void done.push({ PartNumber: partNumber, ETag: etag }),
        (err: unknown) => {
          failure ??= { err };
          stop.abort();
        },
      );
      const tracked = p.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      if (inFlight.size >= options.concurrency) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    if (failure) throw failure.err;
    options.signal?.throwIfAborted();
    done.sort((a, b) => a.PartNumber - b.PartNumber);
    await target.complete(uploadId, done);
    return n;
  } catch (err) {
    stop.abort();
    await Promise.allSettled(inFlight);
    await target.abort(uploadId).catch(() => {});
    throw err;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
}
