import { setTimeout as sleep } from 'node:timers/promises';
import { retryClassOf } from '../errors.js';

export interface RetryOptions {
  /** Attempts in all, the first included. */
  attempts: number;
  /** Delay before the first retry; doubles each time, with jitter. */
  baseDelayMs: number;
  signal?: AbortSignal;
  onRetry?(err: unknown, attempt: number, delayMs: number): void;
}

export const DEFAULT_RETRY: RetryOptions = { attempts: 5, baseDelayMs: 200 };

/**
 * Run `fn` again after throttling and transient errors only; not-found, denied and fatal errors
 * come back at once. Throttling waits longer than other transient errors.
 */
export async function withRetry<T>(fn: () => Promise<T>, options: RetryOptions = DEFAULT_RETRY): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const cls = retryClassOf(err);
      if ((cls !== 'transient' && cls !== 'throttled') || attempt >= options.attempts || options.signal?.aborted) throw err;
      const base = options.baseDelayMs * 2 ** (attempt - 1) * (cls === 'throttled' ? 4 : 1);
      const delay = Math.round(base * (0.5 + Math.random()));
      options.onRetry?.(err, attempt, delay);
      await sleep(delay, undefined, options.signal ? { signal: options.signal } : {});
    }
  }
}
