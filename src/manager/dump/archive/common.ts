import { PassThrough, Transform, type Readable } from 'node:stream';
import { FerryError, InvalidDumpError, isAbortError } from '../../../shared/errors.js';
import type { DumpEntry } from '../entry.js';

export type ArchiveFormat = 'tar' | 'tar.gz' | 'zip';

export interface ArchiveWriter {
  /**
   * Adds one entry; a file's data (not a hard link's) streams in as `data`, exactly `e.size` bytes
   * (or is given whole, read ahead). Resolves when the data has been consumed, so entries are added
   * one at a time; a writer may return nothing when it took the entry at once. Every entry goes
   * through a NamespaceCheck first: an archive ferry writes is one ferry load accepts.
   */
  add(e: DumpEntry, data?: Readable | Buffer): void | Promise<void>;
  /** Ends the archive (its trailer or central directory) and waits until `out` has finished. */
  finish(): Promise<void>;
}

/**
 * What a reader hands each entry to: a file's data as a stream, or whole as a Buffer when the
 * reader had it at hand (a small file of a tar). It may return nothing when it took the entry at once.
 */
export type EntryCallback = (e: DumpEntry, data?: Readable | Buffer) => void | Promise<void>;

/**
 * The caller's callback with its errors marked, so that a reader lets them through untouched (an
 * error of the store being written is no corrupt archive).
 */
export class Consumer {
  private readonly failures = new WeakSet<object>();
  constructor(private readonly each: EntryCallback) {}

  /** The callback, its errors marked; nothing to wait for when it took the entry at once. */
  call(e: DumpEntry, data?: Readable | Buffer): void | Promise<void> {
    let r: void | Promise<void>;
    try {
      r = this.each(e, data);
    } catch (err) {
      throw this.mark(err);
    }
    if (r) {
      return r.catch((err: unknown) => {
        throw this.mark(err);
      });
    }
  }

  /** Runs the callback without marking its errors (bridge decides whose an error is). */
  callUnmarked(e: DumpEntry, data: Readable): void | Promise<void> {
    return this.each(e, data);
  }

  mark(err: unknown): unknown {
    if (typeof err === 'object' && err !== null) this.failures.add(err);
    return err;
  }

  threw(err: unknown): boolean {
    return typeof err === 'object' && err !== null && this.failures.has(err);
  }
}

/**
 * Hands `source` (an entry's data as an async iterable) to the consumer as a Node stream with
 * backpressure, then drains what it left unread: a reader may not move on to the next entry before
 * the data of this one has gone by. `verify` sees each chunk, then (chunk undefined) the byte count
 * at the end, before the stream ends: a reason there (a CRC or a length that disagrees) destroys the
 * stream with it instead, so a consumer never sees bad data end cleanly. When the archive fails
 * while the consumer reads, the archive's error is the one thrown.
 */
export async function bridge(
  e: DumpEntry,
  source: AsyncIterable<unknown>,
  consumer: Consumer,
  verify: (bytes: number, chunk?: Buffer) => string | undefined,
  signal?: AbortSignal,
): Promise<void> {
  const data = new PassThrough();
  // A consumer that stopped listening must not crash the process when the archive fails after it.
  data.on('error', () => undefined);
  let pumpFailed = false;
  let pumpError: unknown;
  const pumped = (async () => {
    let n = 0;
    try {
      for await (const c of source) {
        signal?.throwIfAborted();
        const chunk = c as Buffer;
        n += chunk.length;
        verify(-1, chunk);
        if (data.destroyed) continue; // the consumer gave up: drain the rest
        if (!data.write(chunk)) {
          await new Promise<void>((resolve) => {
            const go = (): void => {
              data.off('drain', go);
              data.off('close', go);
              resolve();
            };
            data.on('drain', go);
            data.on('close', go);
          });
        }
      }
      const why = verify(n);
      if (why !== undefined) throw new InvalidDumpError(`${JSON.stringify(e.path)}: ${why}`);
      data.end();
    } catch (err) {
      pumpFailed = true;
      pumpError = err;
      data.destroy(err as Error);
      throw err;
    }
  })();
  pumped.catch(() => undefined);
  try {
    await consumer.callUnmarked(e, data);
  } catch (err) {
    // The consumer may rethrow the error its stream got: then the archive's error is the one to say.
    throw pumpFailed ? pumpError : consumer.mark(err);
  } finally {
    data.resume();
  }
  await pumped;
}

/**
 * An error met while reading an archive, as the user should see it: the file system's own errors
 * (no such file, permission) and ferry's as they are (an invalid entry's message prefixed with the
 * file); anything the format libraries raise
 * (checksums, truncation, gzip trailers, zip structure) as InvalidDumpError naming the file.
 */
export function archiveError(err: unknown, file: string, format: ArchiveFormat, consumer?: Consumer): unknown {
  if (consumer?.threw(err)) return err;
  if (err instanceof InvalidDumpError && !err.message.includes(file)) return new InvalidDumpError(`${file}: ${err.message}`, { cause: err });
  if (err instanceof FerryError || isAbortError(err)) return err;
  if (typeof (err as { syscall?: unknown } | null)?.syscall === 'string') return err;
  const message = (err as Error | null)?.message ?? String(err);
  const cut = /unexpected end|end of file|truncated|premature/i.test(message);
  return new InvalidDumpError(
    `${file}: the ${format} archive is ${cut ? 'truncated' : 'corrupt'} (${message})`,
    { cause: err },
  );
}

/** The first error of a writer's output, for every later call to see. */
export class Failure {
  private err: unknown;
  private reject: ((err: unknown) => void) | undefined;
  private readonly failed: Promise<never>;
  constructor() {
    this.failed = new Promise<never>((_, reject) => (this.reject = reject));
    this.failed.catch(() => undefined);
  }
  set(err: unknown): void {
    if (this.err !== undefined) return;
    this.err = err ?? new Error('archive output failed');
    this.reject?.(this.err);
  }
  throwIfSet(): void {
    if (this.err !== undefined) throw this.err;
  }
  race<T>(p: Promise<T>): Promise<T> {
    p.catch(() => undefined); // when the failure wins, p's own rejection is no news
    return Promise.race([p, this.failed]);
  }
}

/** Bytes gathered before a write goes out. */
const COALESCE_BYTES = 256 * 1024;

/**
 * Gathers the small pieces an archive library emits (a 512-byte tar header, its padding, a zip
 * local header) into writes of COALESCE_BYTES: one write a piece made a file write syscall per
 * piece, and a 200,000-file tar spent most of its time waiting on them.
 */
export function coalesce(): Transform {
  let pending: Buffer[] = [];
  let size = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      pending.push(chunk);
      size += chunk.length;
      if (size < COALESCE_BYTES) return cb();
      const out = pending.length === 1 ? chunk : Buffer.concat(pending, size);
      pending = [];
      size = 0;
      cb(null, out);
    },
    flush(cb) {
      cb(null, size === 0 ? undefined : Buffer.concat(pending, size));
    },
  });
}
