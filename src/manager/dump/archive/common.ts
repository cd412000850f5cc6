import { PassThrough, type Readable } from 'node:stream';
import { FerryError, InvalidDumpError, isAbortError } from '../../../shared/errors.js';
import type { DumpEntry } from '../entry.js';

export type ArchiveFormat = 'tar' | 'tar.gz' | 'zip';

export interface ArchiveWriter {
  /**
   * Adds one entry; a file's data (not a hard link's) streams in as `data`, exactly `e.size` bytes.
   * Resolves when the data has been consumed, so entries are added one at a time. Every entry goes
   * through a NamespaceCheck first: an archive ferry writes is one ferry load accepts.
   */
  add(e: DumpEntry, data?: Readable): Promise<void>;
  /** Ends the archive (its trailer or central directory) and waits until `out` has finished. */
  finish(): Promise<void>;
}

export type EntryCallback = (e: DumpEntry, data?: Readable) => Promise<void>;

/**
 * Hands `source` (an entry's data as an async iterable) to `each` as a Node stream with backpressure,
 * then drains what `each` left unread: a reader may not move on to the next entry before the data of
 * this one has gone by. `verify(bytes)` runs at the end of the data, before the stream ends: a
 * reason there (a CRC or a length that disagrees) destroys the stream with it instead, so a consumer
 * never sees bad data end cleanly.
 */
export async function bridge(
  e: DumpEntry,
  source: AsyncIterable<unknown>,
  each: EntryCallback,
  verify: (bytes: number, chunk?: Buffer) => string | undefined,
): Promise<void> {
  const data = new PassThrough();
  const pumped = (async () => {
    let n = 0;
    try {
      for await (const c of source) {
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
      data.destroy(err as Error);
      throw err;
    }
  })();
  pumped.catch(() => undefined);
  try {
    await each(e, data);
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
export function archiveError(err: unknown, file: string, format: ArchiveFormat): unknown {
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
