/**
 * The names of ferry's metadata backups and claims under a destination's `.ferry/meta/` (ferry's
 * reserved directory, never listed by a sync). Only keys that match these names exactly are
 * ferry's: anything else there is left alone.
 */

/** Where backups and claims live, below the destination's root. */
export const META_PREFIX = '.ferry/meta/';

const DUMP = /^dump-(\d{4})-(\d{2})-(\d{2})-(\d{2})(\d{2})(\d{2})\.json\.gz$/;
const CLAIM = /^claim-(\d{4})-(\d{2})-(\d{2})-(\d{2})(\d{2})(\d{2})$/;

/** A time (ms since the epoch) as `YYYY-MM-DD-HHMMSS` in UTC, to the second (rounded down). */
export function utcStamp(ms: number): string {
  const d = new Date(Math.floor(ms / 1000) * 1000);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getUTCFullYear(), 4)}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}-${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}`;
}

/** The key of the backup that started at `ms`. */
export function dumpKey(ms: number): string {
  return `${META_PREFIX}dump-${utcStamp(ms)}.json.gz`;
}

/** The key of the claim on the interval that starts at `intervalStart`. */
export function claimKey(intervalStart: number): string {
  return `${META_PREFIX}claim-${utcStamp(intervalStart)}`;
}

/**
 * What a key under META_PREFIX is, when ferry wrote it: a backup (its start time) or a claim (its
 * interval's start). Names that only look alike (`dump-2026-13-45-…`, a suffix, another
 * extension) are not ferry's and return undefined.
 */
export function parseMetaKey(key: string): { kind: 'dump' | 'claim'; at: number } | undefined {
  if (!key.startsWith(META_PREFIX)) return undefined;
  const name = key.slice(META_PREFIX.length);
  const m = DUMP.exec(name) ?? CLAIM.exec(name);
  if (!m) return undefined;
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const at = Date.UTC(y, mo - 1, d, h, mi, s);
  // Date.UTC rolls over out-of-range fields (month 13, second 61): such a name is not one ferry wrote.
  if (utcStamp(at) !== name.slice(name.indexOf('-') + 1, name.indexOf('-') + 18)) return undefined;
  return { kind: name.startsWith('dump-') ? 'dump' : 'claim', at };
}
