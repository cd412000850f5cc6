import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ByteRateLimiter } from '../../../src/shared/throttle/bucket.js';

describe('ByteRateLimiter', () => {
  beforeEach(() => vi.useFakeTimers({ toFake: ['setTimeout', 'performance'] }));
  afterEach(() => vi.useRealTimers());

  it('lets a burst through, then holds bytes to the rate', async () => {
    const limiter = new ByteRateLimiter(1_000_000, 100_000);
    let done = 0;
    const take = (n: number) => limiter.take(n).then(() => done++);
    await take(100_000); // the burst
    expect(done).toBe(1);
    const p = take(500_000); // half a second of debt
    await vi.advanceTimersByTimeAsync(400);
    expect(done).toBe(1);
    await vi.advanceTimersByTimeAsync(150);
    await p;
    expect(done).toBe(2);
  });

  it('follows a new rate', async () => {
    const limiter = new ByteRateLimiter(1_000_000, 65_536);
    await limiter.take(65_536);
    limiter.setRate(100_000);
    let done = false;
    const p = limiter.take(100_000).then(() => (done = true));
    await vi.advanceTimersByTimeAsync(900);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(200);
    await p;
    expect(done).toBe(true);
  });
});
