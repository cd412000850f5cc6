import { describe, expect, it } from 'vitest';
import {
  makeEntryFilter,
  parseDuration,
  parseSize,
  parseTime,
  type EntryLimits,
} from '../../../src/shared/filter/limits.js';

function thrown(fn: () => unknown): { code?: unknown; message?: unknown } {
  try {
    fn();
  } catch (err) {
    return err as { code?: unknown; message?: unknown };
  }
  throw new Error('did not throw');
}

function expectUsageError(fn: () => unknown, ...mentions: string[]): void {
  const err = thrown(fn);
  expect(err.code).toBe('FERRY_USAGE');
  for (const m of mentions) expect(String(err.message)).toContain(m);
}

describe('parseSize', () => {
  it.each([
    ['0', 0],
    ['100', 100],
    ['100B', 100],
    ['100b', 100],
    ['1K', 1024],
    ['1k', 1024],
    ['1KB', 1024],
    ['1KiB', 1024],
    ['10M', 10 * 1024 * 1024],
    ['10MiB', 10 * 1024 * 1024],
    ['1G', 1024 ** 3],
    ['2T', 2 * 1024 ** 4],
    ['1P', 2 ** 50],
    ['1E', 2 ** 60],
    ['1.5K', 1536],
    ['1.5G', 1.5 * 1024 ** 3],
    ['.5M', 512 * 1024],
    ['5.M', 5 * 1024 * 1024],
    // juicefs truncates fractions of a byte.
    ['0.1K', 102],
    ['2.9', 2],
    ['1e3', 1000],
    ['1e3K', 1024000],
    ['1E2M', 100 * 1024 * 1024],
  ])('%j is %d bytes', (value, bytes) => {
    expect(parseSize(value, '--max-size')).toBe(bytes);
  });

  it.each(['', 'K', 'B', '-1', '-1K', '1X', '1KK', '1iB', '1 K', 'abc', '0x10', 'Infinity', 'NaN', '1e999', '1,5K'])(
    '%j throws FERRY_USAGE naming the option and the value',
    (value) => {
      expectUsageError(() => parseSize(value, '--min-size'), '--min-size', JSON.stringify(value));
    },
  );
});

describe('parseDuration', () => {
  it.each([
    // A bare number is seconds.
    ['0', 0],
    ['90', 90_000],
    ['1.5', 1500],
    ['1e3', 1_000_000],
    ['90s', 90_000],
    ['500ms', 500],
    ['1m30s', 90_000],
    ['1h30m', 5_400_000],
    ['2.5h', 9_000_000],
    ['.5h', 1_800_000],
    ['1h0.5m', 3_630_000],
    ['100ns', 0.0001],
    ['1us', 0.001],
    ['1µs', 0.001],
    ['1μs', 0.001],
    ['1d', 86_400_000],
    ['7d', 604_800_000],
    ['1.5d', 129_600_000],
    ['1d12h', 129_600_000],
    ['2d30m', 2 * 86_400_000 + 1_800_000],
  ])('%j is %d ms', (value, ms) => {
    expect(parseDuration(value, '--max-age')).toBeCloseTo(ms, 9);
  });

  it.each(['', 'd', 'h', '1x', '1 h', '-1h', '-5', '1h-1m', '1d2d', '1h2d', 'd1h', '1.5.5s', '1e3s', 'abc', '1H', '1dd'])(
    '%j throws FERRY_USAGE naming the option and the value',
    (value) => {
      expectUsageError(() => parseDuration(value, '--min-age'), '--min-age', JSON.stringify(value));
    },
  );
});

describe('parseTime', () => {
  const local = (y: number, mo: number, d: number, h = 0, mi = 0, s = 0, ms = 0) =>
    new Date(y, mo - 1, d, h, mi, s, ms).getTime();

  it.each([
    ['2024-01-02 03:04:05', local(2024, 1, 2, 3, 4, 5)],
    ['2024-01-02', local(2024, 1, 2)],
    ['2024-01-02T03:04:05', local(2024, 1, 2, 3, 4, 5)],
    ['2024-01-02 03:04', local(2024, 1, 2, 3, 4)],
    ['2024-01-02 03:04:05.250', local(2024, 1, 2, 3, 4, 5, 250)],
    ['2024-07-15 12:00:00', local(2024, 7, 15, 12)],
    ['2024-02-29', local(2024, 2, 29)],
    ['2000-02-29', local(2000, 2, 29)],
    ['2024-01-02T03:04:05Z', Date.UTC(2024, 0, 2, 3, 4, 5)],
    ['2024-01-02T03:04:05z', Date.UTC(2024, 0, 2, 3, 4, 5)],
    ['2024-01-02T03:04:05.123456789Z', Date.UTC(2024, 0, 2, 3, 4, 5, 123)],
    ['2024-01-02T03:04:05+08:00', Date.UTC(2024, 0, 1, 19, 4, 5)],
    ['2024-01-02T03:04:05-0130', Date.UTC(2024, 0, 2, 4, 34, 5)],
    ['2024-01-02 03:04:05 +08:00', Date.UTC(2024, 0, 1, 19, 4, 5)],
    ['2024-01-02 03:04:05 -0700', Date.UTC(2024, 0, 2, 10, 4, 5)],
  ])('%j', (value, ms) => {
    expect(parseTime(value, '--start-time')).toBe(ms);
  });

  it('a two-digit year is that year, not 19xx', () => {
    expect(new Date(parseTime('0099-06-01', '--end-time')).getFullYear()).toBe(99);
  });

  it.each([
    '',
    'yesterday',
    '2024/01/02',
    '24-01-02',
    '2024-1-2',
    '2024-13-01',
    '2024-00-10',
    '2024-01-00',
    '2024-04-31',
    '2023-02-29',
    '2100-02-29',
    '2024-01-02 24:00:00',
    '2024-01-02 23:60:00',
    '2024-01-02 23:59:60',
    '2024-01-02T03:04:05+25:00',
    '2024-01-02T03:04:05+08:60',
    '2024-01-02 03:04:05 CET',
    '1704164645',
  ])('%j throws FERRY_USAGE naming the option and the value', (value) => {
    expectUsageError(() => parseTime(value, '--end-time'), '--end-time', JSON.stringify(value));
  });
});

describe('makeEntryFilter', () => {
  const now = 1_700_000_000_000;
  const file = (size: number, mtime = now) => ({ size, mtime, isDir: false });
  const keeps = (limits: EntryLimits, entries: Array<{ size: number; mtime: number; isDir: boolean; isSymlink?: boolean }>) => {
    const keep = makeEntryFilter({ now, ...limits });
    return entries.map((e) => keep(e));
  };

  it('sizes are inclusive bounds', () => {
    expect(keeps({ minSize: 10, maxSize: 100 }, [file(9), file(10), file(100), file(101)])).toEqual([false, true, true, false]);
    expect(keeps({ maxSize: 0 }, [file(0), file(1)])).toEqual([true, false]);
    expect(keeps({ minSize: 1 }, [file(0), file(2 ** 60)])).toEqual([false, true]);
  });

  it('--max-age keeps files modified strictly within it', () => {
    const age = 100_000;
    expect(keeps({ maxAge: age }, [file(1, now - age - 1), file(1, now - age), file(1, now - age + 1), file(1, now), file(1, now + 5)])).toEqual([
      false,
      false,
      true,
      true,
      true,
    ]);
  });

  it('--min-age keeps files modified strictly before it', () => {
    const age = 10_000;
    expect(keeps({ minAge: age }, [file(1, now - age - 1), file(1, now - age), file(1, now - age + 1), file(1, now)])).toEqual([
      true,
      false,
      false,
      false,
    ]);
  });

  it('--start-time and --end-time are strict', () => {
    const start = now - 3_600_000;
    const end = now - 60_000;
    expect(keeps({ startTime: start, endTime: end }, [file(1, start - 1), file(1, start), file(1, start + 1), file(1, end - 1), file(1, end), file(1, end + 1)])).toEqual([
      false,
      false,
      true,
      true,
      false,
      false,
    ]);
  });

  it('all limits together', () => {
    const limits: EntryLimits = { minSize: 10, maxSize: 100, maxAge: 100_000, minAge: 10_000 };
    expect(keeps(limits, [file(10, now - 15_000), file(200, now - 200_000), file(50, now - 5_000), file(5, now - 15_000)])).toEqual([
      true,
      false,
      false,
      false,
    ]);
  });

  it('directories and symlinks always pass', () => {
    const limits: EntryLimits = { minSize: 10, maxSize: 100, maxAge: 1000, startTime: now - 10, endTime: now - 5 };
    expect(
      keeps(limits, [
        { size: 0, mtime: 0, isDir: true },
        { size: 10_000, mtime: now + 1e9, isDir: false, isSymlink: true },
        { size: 0, mtime: 0, isDir: false, isSymlink: false },
      ]),
    ).toEqual([true, true, false]);
  });

  it('no limits, or zero ages, keep everything', () => {
    expect(keeps({}, [file(0, 0), file(2 ** 62, now + 1e12)])).toEqual([true, true]);
    expect(keeps({ maxAge: 0, minAge: 0 }, [file(0, 0), file(1, now + 1e12)])).toEqual([true, true]);
  });

  it('ages are measured from the time of the call when `now` is not given', () => {
    const keep = makeEntryFilter({ maxAge: 3_600_000 });
    expect(keep(file(1, Date.now() - 1000))).toBe(true);
    expect(keep(file(1, Date.now() - 7_200_000))).toBe(false);
  });

  it('contradicting bounds throw FERRY_USAGE, as juicefs refuses them', () => {
    expectUsageError(() => makeEntryFilter({ minSize: 101, maxSize: 100 }), '--min-size', '--max-size');
    expectUsageError(() => makeEntryFilter({ minAge: 2000, maxAge: 1000 }), '--min-age', '--max-age');
    expect(() => makeEntryFilter({ minSize: 100, maxSize: 100 })).not.toThrow();
    expect(() => makeEntryFilter({ minAge: 2000 })).not.toThrow();
  });
});
