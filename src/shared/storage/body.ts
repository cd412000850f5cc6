/**
 * The contract every store keeps on bodies and signals, in one place:
 * - an interrupted call fails with AbortedError (FERRY_ABORTED), whatever the SDK or Node threw
 *   when the signal fired (AbortError, ERR_STREAM_PREMATURE_CLOSE, a reset connection...);
 * - a body must be exactly the `size` it was announced with, or the put fails with
 *   SourceChangedError (FERRY_SOURCE_CHANGED) and stores nothing.
 */
import { Readable, Transform } from 'node:stream';
import { AbortedError, FerryError, fromSystemError, SourceChangedError } from '../errors.js';
import type { Entry } from './types.js';

/** The error of a call its signal interrupted; `what` names it ('s3 PUT bucket/key'). */
export function interrupted(what: string): AbortedError {
  return new AbortedError(`${what}: interrupted`);
}

export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw interrupted(what);
}

/** `err` as the caller must see it: AbortedError once the signal has fired, whatever the abort broke on the way. */
export function orAborted(err: unknown, signal: AbortSignal | undefined, what: string): unknown {
  return signal?.aborted && !(err instanceof AbortedError) ? interrupted(what) : err;
}

/**
 * Destroy an upload body with AbortedError when the signal fires, so that a store waiting for the
 * body's next bytes stops at once. Returns the function that unhooks it (call it in `finally`).
 */
export function destroyOnAbort(body: Readable | Buffer, signal: AbortSignal | undefined, what: string): () => void {
  if (!signal || Buffer.isBuffer(body)) return () => {};
  const onAbort = (): void => destroyWith(body, interrupted(what));
  if (signal.aborted) {
    onAbort();
    return () => {};
  }
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

/**
 * A download that fails with AbortedError when the signal fires while it is read. An already
 * aborted signal fails the call itself (the stream is destroyed).
 */
export function abortable<T extends Readable>(stream: T, signal: AbortSignal | undefined, what: string): T {
  if (!signal) return stream;
  if (signal.aborted) {
    stream.destroy();
    throw interrupted(what);
  }
  const onAbort = (): void => destroyWith(stream, interrupted(what));
  signal.addEventListener('abort', onAbort, { once: true });
  stream.once('close', () => signal.removeEventListener('abort', onAbort));
  return stream;
}

/**
 * Destroy a stream with `err`, which whoever reads it then gets; when nobody is reading yet, the
 * error stays on the stream (`errored`) instead of being thrown as an unhandled 'error' event.
 */
function destroyWith(stream: Readable, err: Error): void {
  if (stream.destroyed) return;
  stream.on('error', () => {});
  stream.destroy(err);
}

/**
 * The pages of a listing, stopping with AbortedError once the signal has fired: it is looked at
 * before every page is asked for, and whatever the listing throws after it fired becomes
 * AbortedError.
 */
export async function* abortablePages(pages: AsyncIterable<Entry[]>, signal: AbortSignal | undefined, what: string): AsyncGenerator<Entry[]> {
  if (!signal) return yield* pages;
  const it = pages[Symbol.asyncIterator]();
  try {
    for (;;) {
      throwIfAborted(signal, what);
      let r: IteratorResult<Entry[]>;
      try {
        r = await it.next();
      } catch (err) {
        throw orAborted(err, signal, what);
      }
      if (r.done) return;
      throwIfAborted(signal, what);
      yield r.value;
    }
  } finally {
    await it.return?.();
  }
}

/** A buffer body must have the size it was announced with. */
export function checkDeclaredSize(body: Buffer, size: number | undefined, what: string): void {
  if (size !== undefined && body.length !== size) throw new SourceChangedError(`${what}: the body has ${body.length} bytes, not the ${size} announced`);
}

export function tooLong(size: number, what: string): SourceChangedError {
  return new SourceChangedError(`${what}: the source has more than the ${size} bytes announced`);
}

export function tooShort(got: number, size: number, what: string): SourceChangedError {
  return new SourceChangedError(`${what}: the source ended after ${got} of the ${size} bytes announced`);
}

/** A failure reading an upload's source, as a ferry error. */
export function sourceError(err: unknown, what: string): FerryError {
  return err instanceof FerryError ? err : fromSystemError(err, `${what}: reading the source`);
}

/**
 * A whole body in memory. With `size`, it must be exactly that long: reading stops as soon as it is
 * longer. Errors of the source leave as ferry errors.
 */
export async function readBody(body: Readable, size: number | undefined, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const c of body as AsyncIterable<Buffer | Uint8Array | string>) {
      const chunk = Buffer.isBuffer(c) ? c : typeof c === 'string' ? Buffer.from(c) : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
      total += chunk.length;
      if (size !== undefined && total > size) throw tooLong(size, what);
      chunks.push(chunk);
    }
  } catch (err) {
    body.destroy();
    throw sourceError(err, what);
  }
  if (size !== undefined && total !== size) throw tooShort(total, size, what);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
}

/**
 * Passes a body through and fails when it is not exactly `size` bytes. The chunk that completes
 * `size` is held back until the body's end is seen, so a receiver never gets a whole-looking body
 * from a source that turns out longer.
 */
export function sizeGuard(size: number, what: string): Transform {
  let n = 0;
  let held: Buffer | undefined;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (chunk.length === 0) return cb();
      n += chunk.length;
      if (n > size) return cb(tooLong(size, what));
      if (n === size) {
        held = chunk;
        return cb();
      }
      cb(null, chunk);
    },
    flush(cb) {
      if (n !== size) return cb(tooShort(n, size, what));
      cb(null, held);
    },
  });
}

/** A buffer as a stream of slices of at most `chunk` bytes (no copy), so that a reader can stop between them. */
export function sliced(data: Buffer, chunk = 1 << 20): Readable {
  function* slices(): Generator<Buffer> {
    for (let off = 0; off < data.length; off += chunk) yield data.subarray(off, Math.min(data.length, off + chunk));
  }
  return Readable.from(slices(), { objectMode: false });
}
