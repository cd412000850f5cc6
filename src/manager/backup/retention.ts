/**
 * Which metadata backups to keep (`ferry sync --backup-meta`): a pure function of the backups'
 * times and the present, so it can be tested with a simulated clock and gives the same answer
 * whichever manager applies it.
 *
 * Tiers, by UTC calendar day (today is day 1):
 * - `recent`: days 1–2 (today and yesterday): every backup;
 * - `daily`: days 3–14: one per calendar day;
 * - `weekly`: back to the first day of the previous calendar month (this month and the last): one
 *   per ISO week (Monday to Sunday), a week that spans two months counting as one week in each;
 * - `monthly`: everything older: one per calendar month, for ever.
 * A backup dated in the future (another host's clock) is `recent`.
 *
 * Within a bucket the OLDEST backup is kept. New backups only ever join a bucket on the new side, so
 * the oldest stays the oldest: the choice never moves. Keeping the newest (or spacing kept backups
 * from the last one kept, or from now) changes the choice every time a backup arrives or the policy
 * runs at another hour, so what was kept yesterday is deleted today and the kept set drifts with the
 * schedule — JuiceFS's cleanup behaves so.
 *
 * Buckets nest (a day lies within one week-of-a-month, which lies within one month), and each
 * tier's far boundary is a boundary of its own buckets (day boundaries; the weekly tier ends at the
 * start of a month): so the oldest of a coarser bucket is always the oldest of one of its finer
 * buckets, and it was kept at every earlier tier. Hence the policy is path-independent: pruning
 * every hour, once a month, or never gives the same set, and a bucket's representative is never
 * deleted while it stays in that bucket. That is why weeks are split at month boundaries: a whole
 * ISO week cut by the weekly tier's edge would see its oldest move to the monthly tier and the next
 * one — deleted long before — become the week's choice.
 */

export type Tier = 'recent' | 'daily' | 'weekly' | 'monthly';

export interface BackupFate {
  /** The backup's time (ms since the epoch). */
  at: number;
  tier: Tier;
  /** The bucket within the tier (a label: '2026-11-30', '2026-W48 in 2026-11', '2026-11'; a recent backup is its own). */
  bucket: string;
  keep: boolean;
}

const DAY = 86_400_000;

/** The fate of each backup at `now`, in the order given. Duplicated times: the first is kept. */
export function retention(backups: readonly number[], now: number): BackupFate[] {
  const today = Math.floor(now / DAY) * DAY;
  const recentFrom = today - DAY;
  const dailyFrom = today - 13 * DAY;
  const n = new Date(today);
  const weeklyFrom = Date.UTC(n.getUTCFullYear(), n.getUTCMonth() - 1, 1);
  const fates = backups.map((at): Omit<BackupFate, 'keep'> => {
    if (at >= recentFrom) return { at, tier: 'recent', bucket: new Date(at).toISOString() };
    if (at >= dailyFrom) return { at, tier: 'daily', bucket: dayLabel(at) };
    if (at >= weeklyFrom) return { at, tier: 'weekly', bucket: `${isoWeekLabel(at)} in ${monthLabel(at)}` };
    return { at, tier: 'monthly', bucket: monthLabel(at) };
  });
  // The oldest of each bucket (by index: the first of equal times).
  const oldest = new Map<string, number>();
  fates.forEach((f, i) => {
    if (f.tier === 'recent') return;
    const id = `${f.tier} ${f.bucket}`;
    const held = oldest.get(id);
    if (held === undefined || f.at < fates[held]!.at) oldest.set(id, i);
  });
  return fates.map((f, i) => ({ ...f, keep: f.tier === 'recent' || oldest.get(`${f.tier} ${f.bucket}`) === i }));
}

/** The backups to delete at `now` (a convenience over `retention`). */
export function backupsToDelete(backups: readonly number[], now: number): number[] {
  return retention(backups, now)
    .filter((f) => !f.keep)
    .map((f) => f.at);
}

function dayLabel(at: number): string {
  return new Date(at).toISOString().slice(0, 10);
}

function monthLabel(at: number): string {
  return new Date(at).toISOString().slice(0, 7);
}

/** ISO 8601 week: weeks start on Monday; week 1 holds the year's first Thursday. */
function isoWeekLabel(at: number): string {
  const day = Math.floor(at / DAY);
  // 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays.
  const weekday = (((day + 3) % 7) + 7) % 7;
  const thursday = day - weekday + 3;
  const year = new Date(thursday * DAY).getUTCFullYear();
  const jan1 = Math.floor(Date.UTC(year, 0, 1) / DAY);
  const week = Math.floor((thursday - jan1) / 7) + 1;
  return `${year}-W${String(week).padStart(2, '0')}`;
}
