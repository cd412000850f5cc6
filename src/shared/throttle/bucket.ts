import { Transform, type TransformCallback } from 'node:stream';

/**
 * A token bucket of bytes shared by every transfer of a process. `take(n)` may run the bucket into
 * debt by one chunk and then waits it out, so chunks larger than the burst still pass. The rate
 * can change while transfers wait (the cluster re-shares --bwlimit); a rate of 0 means no limit.
 */
export class ByteRateLimiter {
  #tokens: number;
  #last = performance.now();
  #burst: number;
  /** Bytes credited since the start: a waiter waits until this passes what it owes. */
  #credited = 0;
  /** Bumped when the rate changes, so waiters recompute their sleep. */
  #wake: (() => void)[] = [];

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
    for (const w of this.#wake.splice(0)) w();
  }

  #refill(): void {
    const now = performance.now();
    const add = ((now - this.#last) / 1000) * this.bytesPerSecond;
    this.#credited += add;
    this.#tokens = Math.min(this.#burst, this.#tokens + add);
    this.#last = now;
  }

  async take(n: number, signal?: AbortSignal): Promise<void> {
    if (this.bytesPerSecond <= 0) return;
    this.#refill();
    this.#tokens -= n;
    if (this.#tokens >= 0) return;
    // What this chunk owes: the bucket's whole debt now, repaid as credit accrues at whatever rate.
    const target = this.#credited - this.#tokens;
    while (this.#credited < target) {
      if (this.bytesPerSecond <= 0) {
        this.#tokens = Math.max(this.#tokens, 0);
        return;
      }
      signal?.throwIfAborted();
      const ms = ((target - this.#credited) / this.bytesPerSecond) * 1000;
      await new Promise<void>((resolve, reject) => {
        const cleanup = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          const i = this.#wake.indexOf(done);
          if (i >= 0) this.#wake.splice(i, 1);
        };
        const done = () => {
          cleanup();
          resolve();
        };
        const onAbort = () => {
          cleanup();
          reject(signal!.reason);
        };
        const timer = setTimeout(done, Math.max(1, ms));
        this.#wake.push(done);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      this.#refill();
    }
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
