import { Readable } from 'node:stream';
import { FerryError, fromSystemError, SourceChangedError } from '../../errors.js';

/**
 * Reads an upload body in exact-length slices, each handed to the SDK as a stream of its own, so a
 * large object goes up part by part without being held in memory. A slice pulls from the source
 * only when the request asks for more (backpressure end to end). A source that ends early or goes
 * on past the declared size fails the slice before its last byte is sent, so the service never
 * stores a wrong object.
 */
export class SliceReader {
  readonly #source: Readable;
  readonly #it: AsyncIterator<unknown>;
  readonly #what: string;
  #rest: Buffer | null = null;
  #ended = false;
  /** Bytes handed out so far. */
  #offset = 0;

  /** `what` names the upload in messages: `cos PUT bucket/key`. */
  constructor(source: Readable, what: string) {
    this.#source = source;
    this.#it = source[Symbol.asyncIterator]();
    this.#what = what;
  }

  get offset(): number {
    return this.#offset;
  }

  async #pull(max: number): Promise<Buffer | null> {
    let chunk = this.#rest;
    this.#rest = null;
    while (!chunk || chunk.length === 0) {
      if (this.#ended) return null;
      let r: IteratorResult<unknown>;
      try {
        r = await this.#it.next();
      } catch (err) {
        throw err instanceof FerryError ? err : fromSystemError(err, `${this.#what}: reading the source`);
      }
      if (r.done) {
        this.#ended = true;
        return null;
      }
      const v = r.value;
      chunk = Buffer.isBuffer(v) ? v : typeof v === 'string' ? Buffer.from(v) : Buffer.from(v as Uint8Array);
    }
    if (chunk.length > max) {
      this.#rest = chunk.subarray(max);
      chunk = chunk.subarray(0, max);
    }
    this.#offset += chunk.length;
    return chunk;
  }

  /** True when the source has no byte left. */
  async atEnd(): Promise<boolean> {
    if (this.#rest && this.#rest.length > 0) return false;
    const c = await this.#pull(Infinity);
    if (!c) return true;
    this.#offset -= c.length;
    this.#rest = c;
    return false;
  }

  /** Up to `n` bytes in memory; fewer only at the end of the source. */
  async read(n: number): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let got = 0;
    while (got < n) {
      const c = await this.#pull(n - got);
      if (!c) break;
      chunks.push(c);
      got += c.length;
    }
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, got);
  }

  /**
   * The next `n` bytes as a stream. With `last`, the source must end right after them, and the
   * final chunk is held back until that is known. `total` is the declared size, for messages.
   */
  slice(n: number, options: { last: boolean; total: number }): Readable {
    const self = this;
    async function* bytes(): AsyncGenerator<Buffer> {
      let left = n;
      while (left > 0) {
        const c = await self.#pull(Math.min(left, 1 << 20));
        if (!c) throw new SourceChangedError(`${self.#what}: the source ended after ${self.#offset} bytes; ${options.total} were expected`);
        left -= c.length;
        if (left === 0 && options.last && !(await self.atEnd())) {
          throw new SourceChangedError(`${self.#what}: the source holds more than the ${options.total} bytes expected`);
        }
        yield c;
      }
    }
    return Readable.from(bytes(), { objectMode: false, highWaterMark: 1 << 20 });
  }

  /** Stop reading: the source is destroyed unless it was read to its end. */
  destroy(): void {
    if (!this.#ended) {
      this.#ended = true;
      void this.#it.return?.().catch(() => {});
      this.#source.destroy();
    }
  }
}
