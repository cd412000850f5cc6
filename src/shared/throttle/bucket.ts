import { Transform, type TransformCallback } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A token bucket of bytes shared by every transfer of a process. `take(n)` may run the bucket into
 * debt by one chunk and then waits it out, so chunks larger than the burst still pass.
 */
export class ByteRateLimiter {
  #tokens: number;
  #last = performance.now();
  #burst: number;

  constructor(
    public bytesPerSecond: number,
    burst?: number,
  ) {
    this.#burst = burst ?? Math.max(64 * 1024, bytesPerSecond / 10);
    this.#tokens = this.#burst;
  }

  /** Change the rate (the cluster re-shares the limit when executors join or leave). */
  setRate(bytesPerSecond: number): void {
    this.#refill();
    this.bytesPerSecond = bytesPerSecond;
    this.#burst = Math.max(64 * 1024, bytesPerSecond / 10);
    this.#tokens = Math.min(this.#tokens, this.#burst);
  }

  #refill(): void {
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.bytesPerSecond);
    this.#last = now;
  }

  async take(n: number, signal?: AbortSignal): Promise<void> {
    this.#refill();
    this.#tokens -= n;
    if (this.#tokens < 0) await sleep((-this.#tokens / this.bytesPerSecond) * 1000, undefined, signal ? { signal } : {});
  }
}

/** A pass-through stream that holds each chunk until the limiter lets it go. */
export function throttle(limiter: ByteRateLimiter, signal?: AbortSignal): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      limiter.take(chunk.length, signal).then(
        () => cb(null, chunk),
        (err) => cb(err as Error),
      );
    },
  });
}
