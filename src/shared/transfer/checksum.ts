import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import type { ObjectStore } from '../storage/types.js';

/** Counts (and optionally digests) the bytes that flow through a stream. */
export class DigestTap {
  readonly #hash;
  size = 0;
  readonly stream: Transform;
  /** Counts bytes always; hashes them only when `hash` (MD5 costs ~2 ms a MiB). */
  constructor(onBytes?: (n: number) => void, hash = true) {
    const h = hash ? createHash('md5') : undefined;
    this.#hash = h;
    this.stream = new Transform({
      transform: (chunk: Buffer, _enc, cb) => {
        h?.update(chunk);
        this.size += chunk.length;
        onBytes?.(chunk.length);
        cb(null, chunk);
      },
    });
  }
  digest(): string | undefined {
    return this.#hash?.digest('hex');
  }
}

/** MD5 of an object's content, read through the store. */
export async function digestOf(store: ObjectStore, key: string, signal?: AbortSignal): Promise<{ digest: string; size: number }> {
  const h = createHash('md5');
  let size = 0;
  const body = await store.get(key, signal ? { signal } : {});
  for await (const c of body as AsyncIterable<Buffer>) {
    h.update(c);
    size += c.length;
  }
  return { digest: h.digest('hex'), size };
}
