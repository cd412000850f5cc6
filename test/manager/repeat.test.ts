import { describe, expect, it } from 'vitest';
import { formatInterval, parseInterval, repeatRuns } from '../../src/manager/repeat.js';

function said() {
  const lines: string[] = [];
  const log = { info: (m: string) => lines.push(m), warn: (m: string) => lines.push('warning: ' + m), error: (m: string) => lines.push('error: ' + m), debug: () => undefined };
  return { lines, log };
}

/** A simulated clock: waits advance it at once (or end when `stop` aborts). */
function clock(start = 1_000_000) {
  const c = {
    t: start,
    now: () => c.t,
    waits: [] as number[],
    wait: async (ms: number, signal: AbortSignal) => {
      if (signal.aborted) throw new Error('aborted');
      c.waits.push(ms);
      c.t += Math.max(0, ms);
    },
  };
  return c;
}

describe('parseInterval', () => {
  it.each([
    ['30s', 30_000],
    ['10m', 600_000],
    ['1h', 3_600_000],
    ['1d', 86_400_000],
    ['1h30m', 5_400_000],
    ['2d12h', 216_000_000],
    [' 90s ', 90_000],
  ])('%s is %i ms', (text, ms) => {
    expect(parseInterval(text, '--repeat')).toBe(ms);
    expect(parseInterval(formatInterval(ms), '--repeat')).toBe(ms);
  });

  it.each(['', '10', '0s', '500ms', '1.5h', '5x', 'h', '1m1h', '-1h', '1 h', '1w'])('%j is a usage error naming the option and the forms it takes', (text) => {
    let err: unknown;
    try {
      parseInterval(text, '--backup-meta');
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'FERRY_USAGE' });
    expect((err as Error).message).toBe(`--backup-meta takes an interval such as 30s, 10m, 1h, 1d or 1h30m (at least 1s), not ${JSON.stringify(text)}`);
  });
});

describe('repeatRuns', () => {
  it('starts each run one interval after the previous one started, at once when a run took longer', async () => {
    const c = clock();
    const { lines, log } = said();
    const stop = new AbortController();
    const started: number[] = [];
    const took = [20_000, 70_000, 5_000, 59_999];
    const code = await repeatRuns({
      intervalMs: 60_000,
      run: async (n) => {
        started.push(c.t);
        c.t += took[n - 1]!;
        if (n === took.length) stop.abort(); // Ctrl-C during the 4th run
        return n === 3 ? 1 : 0;
      },
      stop: stop.signal,
      log,
      now: c.now,
      wait: c.wait,
    });
    const t0 = 1_000_000;
    expect(started).toEqual([t0, t0 + 60_000, t0 + 130_000, t0 + 190_000]);
    expect(code).toBe(0);
    expect(lines).toContain('warning: --repeat: run 2 took 1m10s, longer than the interval (1m): the next run starts at once');
    expect(lines).toContain(`--repeat: run 4 starts at ${new Date(t0 + 190_000).toISOString()} (Ctrl-C to stop)`);
    expect(lines.at(-1)).toBe('--repeat: stopped after run 4');
  });

  it('Ctrl-C while waiting stops at once with the last run\'s exit code', async () => {
    const stop = new AbortController();
    const { lines, log } = said();
    let runs = 0;
    const began = Date.now();
    const code = await repeatRuns({
      intervalMs: 3_600_000, // real waiting: an hour unless stopped
      run: async () => {
        runs++;
        setTimeout(() => stop.abort(), 50);
        return 1;
      },
      stop: stop.signal,
      log,
    });
    expect(Date.now() - began).toBeLessThan(2000);
    expect(runs).toBe(1);
    expect(code).toBe(1);
    expect(lines.at(-1)).toBe('--repeat: stopped while waiting; run 1 was the last');
  });

  it('a run refused as bad usage ends the loop: the same arguments would be refused again', async () => {
    const c = clock();
    const { lines, log } = said();
    let runs = 0;
    const code = await repeatRuns({
      intervalMs: 60_000,
      run: async () => (runs++, runs === 1 ? 1 : 2),
      stop: new AbortController().signal,
      final: [2],
      log,
      now: c.now,
      wait: c.wait,
    });
    expect([runs, code]).toEqual([2, 2]);
    expect(lines.at(-1)).toContain('run 2 was refused (exit 2)');
  });
});
