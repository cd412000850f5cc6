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

describe('ByteRateLimiter rate changes', () => {
  it('a new rate applies to transfers already waiting, and a rate of 0 lets them go', async () => {
    // The cluster re-shares --bwlimit when a worker joins or leaves: a waiting chunk must not keep the old rate.
    const l = new ByteRateLimiter(1000, 1000);
    await l.take(1000);
    const t0 = performance.now();
    const waiting = l.take(10_000); // 10 s at 1000 B/s
    setTimeout(() => l.setRate(1_000_000), 50);
    await waiting;
    expect(performance.now() - t0).toBeLessThan(1000);
    const stuck = l.take(1_000_000_000);
    setTimeout(() => l.setRate(0), 50);
    await stuck;
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('an abort rejects a waiting take', async () => {
    const l = new ByteRateLimiter(1000, 1000);
    await l.take(1000);
    const ac = new AbortController();
    const p = l.take(100_000, ac.signal);
    ac.abort();
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
  });
});
