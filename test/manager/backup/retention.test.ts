import { describe, expect, it } from 'vitest';
import { claimKey, dumpKey, parseMetaKey } from '../../../src/manager/backup/names.js';
import { retention, type BackupFate } from '../../../src/manager/backup/retention.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const utc = (s: string) => Date.parse(s + 'Z');

/**
 * What should be kept at `now` of hourly backups from `first` on, worked out day by day from the
 * calendar (no buckets, no "oldest"): today and yesterday every hour; days 3–14 their midnight;
 * back to the 1st of last month the midnight of Mondays and of the 1st of a month; before that the
 * midnight of the 1st; and the very first backup's day counts as a 1st and a Monday (its bucket
 * starts there).
 */
function expectedKept(first: number, now: number): number[] {
  const today = Math.floor(now / DAY) * DAY;
  const d = new Date(today);
  const weeklyFrom = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - 1, 1);
  const kept: number[] = [];
  for (let day = first; day <= today; day += DAY) {
    const date = new Date(day);
    const isFirst = date.getUTCDate() === 1 || day === first;
    const isMonday = date.getUTCDay() === 1 || day === first;
    if (day >= today - DAY) {
      for (let h = day; h < day + DAY && h <= now; h += HOUR) kept.push(h);
    } else if (day >= today - 13 * DAY) kept.push(day);
    else if (day >= weeklyFrom) {
      if (isFirst || isMonday) kept.push(day);
    } else if (isFirst) kept.push(day);
  }
  return kept;
}

const key = (f: BackupFate) => `${f.tier} ${f.bucket}`;

describe('retention of metadata backups', () => {
  it('400 days of hourly backups, pruned every hour: exactly the calendar-aligned set is kept, and nothing kept is lost while its bucket lasts', () => {
    const first = utc('2025-01-01T00:00:00'); // a Wednesday
    const hours = 400 * 24;
    let present: number[] = [];
    /** The bucket each present backup was kept in at the last pruning. */
    let keptIn = new Map<number, string>();
    const lostRepresentatives: string[] = [];
    const prunedAgain: string[] = [];
    for (let h = 0; h < hours; h++) {
      const at = first + h * HOUR;
      const now = at + 60_000; // pruned a minute after each backup
      present.push(at);
      const fates = retention(present, now);
      for (const f of fates) {
        // A backup that is deleted has moved to a coarser bucket since it was kept: a kept one is never
        // deleted while it stays in the bucket it was kept for.
        if (!f.keep && keptIn.get(f.at) === key(f)) lostRepresentatives.push(`${new Date(f.at).toISOString()} (${key(f)}) at ${new Date(now).toISOString()}`);
      }
      present = fates.filter((f) => f.keep).map((f) => f.at);
      keptIn = new Map(fates.filter((f) => f.keep).map((f) => [f.at, key(f)]));
      // Pruning again at the same moment deletes nothing more.
      if (!retention(present, now).every((f) => f.keep)) prunedAgain.push(new Date(now).toISOString());
      if (h % 24 === 13 || h === hours - 1) expect(present.map((t) => new Date(t).toISOString())).toEqual(expectedKept(first, now).map((t) => new Date(t).toISOString()));
    }
    expect(lostRepresentatives).toEqual([]);
    expect(prunedAgain).toEqual([]);
    const now = first + (hours - 1) * HOUR + 60_000; // 2026-02-04T23:01Z, a Wednesday
    expect(new Date(now).toISOString()).toBe('2026-02-04T23:01:00.000Z');
    // Counted by hand: 48 hourly (Feb 3 and 4) + 12 daily (Jan 22 – Feb 2) + 4 weekly in January
    // (Jan 1, the Mondays Jan 5, 12, 19) + 12 monthly (the 1st of each month of 2025).
    expect(present.length).toBe(48 + 12 + 4 + 12);
    const tiers = retention(present, now).reduce<Record<string, number>>((n, f) => ((n[f.tier] = (n[f.tier] ?? 0) + 1), n), {});
    expect(tiers).toEqual({ recent: 48, daily: 12, weekly: 4, monthly: 12 });
    expect(present.filter((t) => t < utc('2026-01-01T00:00:00')).map((t) => new Date(t).toISOString().slice(0, 10))).toEqual(
      Array.from({ length: 12 }, (_, m) => `2025-${String(m + 1).padStart(2, '0')}-01`),
    );
    // Path independence: pruning once, at the end, over every backup ever written keeps the same set.
    const all = Array.from({ length: hours }, (_, h) => first + h * HOUR);
    expect(
      retention(all, now)
        .filter((f) => f.keep)
        .map((f) => f.at),
    ).toEqual(present);
  });

  it.each([
    // [backup, now, tier, bucket]
    ['2026-11-30T00:00:00', '2026-12-01T23:59:59', 'recent', '2026-11-30T00:00:00.000Z'],
    ['2026-11-29T23:59:59', '2026-12-01T00:00:00', 'daily', '2026-11-29'],
    ['2026-11-18T00:00:00', '2026-12-01T00:00:00', 'daily', '2026-11-18'],
    ['2026-11-17T23:00:00', '2026-12-01T00:00:00', 'weekly', '2026-W47 in 2026-11'],
    ['2026-11-01T00:00:00', '2026-12-01T00:00:00', 'weekly', '2026-W44 in 2026-11'],
    ['2026-10-31T23:00:00', '2026-12-01T00:00:00', 'monthly', '2026-10'],
    ['2026-10-31T23:00:00', '2026-11-30T23:00:00', 'weekly', '2026-W44 in 2026-10'],
    // ISO weeks across New Year: 2027-01-01 is a Friday of 2026-W53; 2026-01-01 a Thursday of 2026-W01.
    ['2027-01-01T12:00:00', '2027-01-31T00:00:00', 'weekly', '2026-W53 in 2027-01'],
    ['2026-01-01T12:00:00', '2026-02-01T00:00:00', 'weekly', '2026-W01 in 2026-01'],
    ['2025-12-29T12:00:00', '2026-01-30T00:00:00', 'weekly', '2026-W01 in 2025-12'],
    // Another host's clock ahead: kept.
    ['2026-12-03T00:00:00', '2026-12-01T00:00:00', 'recent', '2026-12-03T00:00:00.000Z'],
  ])('%s at %s is %s, bucket %s', (at, now, tier, bucket) => {
    expect(retention([utc(at)], utc(now))).toEqual([{ at: utc(at), tier, bucket, keep: true }]);
  });

  it('keeps the oldest of each bucket, and a week that spans two months once in each', () => {
    const now = utc('2026-12-20T12:00:00');
    // Mon 2026-11-30 and Tue 2026-12-01 share ISO week 2026-W49 but not their month.
    const backups = ['2026-11-30T05:00:00', '2026-11-30T01:00:00', '2026-12-01T03:00:00', '2026-12-02T00:00:00', '2026-12-07T23:00:00'].map(utc);
    expect(retention(backups, now).map((f) => f.keep)).toEqual([false, true, true, false, true]);
    expect(retention(backups, now)[4]!.tier).toBe('daily');
  });

  it("recognises exactly the names ferry writes, and nothing that only looks like them", () => {
    const at = utc('2026-11-30T09:05:07');
    expect(dumpKey(at + 999)).toBe('.ferry/meta/dump-2026-11-30-090507.json.gz');
    expect(claimKey(at)).toBe('.ferry/meta/claim-2026-11-30-090507');
    expect(parseMetaKey(dumpKey(at))).toEqual({ kind: 'dump', at });
    expect(parseMetaKey(claimKey(at))).toEqual({ kind: 'claim', at });
    for (const other of [
      '.ferry/meta/dump-2026-11-30-090507.json',
      '.ferry/meta/dump-2026-11-30-090507.json.gz.bak',
      '.ferry/meta/dump-2026-13-30-090507.json.gz',
      '.ferry/meta/dump-2026-02-30-090507.json.gz',
      '.ferry/meta/dump-2026-11-30-250507.json.gz',
      '.ferry/meta/dump-2026-11-30-0905.json.gz',
      '.ferry/meta/my-dump-2026-11-30-090507.json.gz',
      '.ferry/meta/sub/dump-2026-11-30-090507.json.gz',
      '.ferry/meta/claim-2026-11-30-090507.tmp',
      'dump-2026-11-30-090507.json.gz',
    ])
      expect(parseMetaKey(other), other).toBeUndefined();
  });
});
