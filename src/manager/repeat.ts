import { setTimeout as sleep } from 'node:timers/promises';
import { UsageError } from '../shared/errors.js';
import type { Logger } from './sync/run.js';

const UNITS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000 } as const;

/**
 * An interval of `--repeat` or `--backup-meta`: whole days, hours, minutes and seconds in that
 * order (`30s`, `10m`, `1h`, `1d`, `1h30m`), at least a second. Anything else is a usage error.
 */
export function parseInterval(value: string, option: string): number {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(value.trim());
  const ms = m && m[0] !== '' ? Number(m[1] ?? 0) * UNITS.d + Number(m[2] ?? 0) * UNITS.h + Number(m[3] ?? 0) * UNITS.m + Number(m[4] ?? 0) * UNITS.s : 0;
  if (!(ms >= 1000 && Number.isSafeInteger(ms))) {
    throw new UsageError(`${option} takes an interval such as 30s, 10m, 1h, 1d or 1h30m (at least 1s), not ${JSON.stringify(value)}`);
  }
  return ms;
}

/** Milliseconds as an interval of parseInterval's form, rounded down to the second ('1h30m'; '0s'). */
export function formatInterval(ms: number): string {
  let rest = Math.max(0, Math.floor(ms / 1000)) * 1000;
  let text = '';
  for (const [unit, size] of Object.entries(UNITS)) {
    const n = Math.floor(rest / size);
    if (n > 0) text += `${n}${unit}`;
    rest -= n * size;
  }
  return text || '0s';
}

export interface RepeatControl {
  /** `--repeat`: a run starts this long after the previous one started (at once if that one took longer). */
  intervalMs: number;
  /** One run, numbered from 1: resolves to its exit code. */
  run(n: number): Promise<number>;
  /**
   * Aborted (Ctrl-C): no run starts after this one; a wait for the next run ends at once. The run
   * in progress stops by its own signals, as a single run does.
   */
  stop: AbortSignal;
  /** Exit codes that end the loop at once: the same arguments would fail the same way again (bad usage). */
  final?: readonly number[];
  log: Logger;
  /** The clock (tests): ms since the epoch. */
  now?: () => number;
  /** Wait (tests): resolves after `ms`, rejects once `signal` aborts. */
  wait?: (ms: number, signal: AbortSignal) => Promise<void>;
}

/**
 * `--repeat`: runs again and again with the same arguments until stopped. Resolves to the exit code
 * of the last run: when Ctrl-C interrupted a run, that run's (130); when it came during a wait, the
 * last finished run's. An earlier run's failure was said in that run's own summary.
 */
export async function repeatRuns(c: RepeatControl): Promise<number> {
  const now = c.now ?? Date.now;
  const wait = c.wait ?? ((ms: number, signal: AbortSignal) => sleep(ms, undefined, { signal }));
  for (let n = 1; ; n++) {
    const started = now();
    const code = await c.run(n);
    if (c.stop.aborted) {
      c.log.info(`--repeat: stopped after run ${n}`);
      return code;
    }
    if (c.final?.includes(code)) {
      c.log.error(`--repeat: run ${n} was refused (exit ${code}); the same arguments would be refused again, so no further run starts`);
      return code;
    }
    const next = started + c.intervalMs;
    const took = now() - started;
    if (took >= c.intervalMs) {
      c.log.warn(`--repeat: run ${n} took ${formatInterval(took)}, longer than the interval (${formatInterval(c.intervalMs)}): the next run starts at once`);
      continue;
    }
    c.log.info(`--repeat: run ${n + 1} starts at ${new Date(next).toISOString()} (Ctrl-C to stop)`);
    try {
      await wait(next - now(), c.stop);
    } catch (err) {
      if (!c.stop.aborted) throw err;
    }
    if (c.stop.aborted) {
      c.log.info(`--repeat: stopped while waiting; run ${n} was the last`);
      return code;
    }
  }
}
