/**
 * `--min-size --max-size --min-age --max-age --start-time --end-time`: their parsers and the filter
 * they make. The filter follows `juicefs sync`: it looks at regular files only (directories and
 * symlinks always pass); sizes are inclusive bounds; ages and times are strict (a file modified
 * exactly at --start-time, at --end-time or exactly --max-age ago is skipped).
 */
import { UsageError } from '../errors.js';

const SIZE_SHIFTS: Readonly<Record<string, number>> = { '': 0, k: 10, m: 20, g: 30, t: 40, p: 50, e: 60 };

/**
 * A size in bytes: a number (decimals and exponents allowed) and an optional unit K M G T P E, each
 * a power of 1024 as in juicefs, optionally followed by B or iB ("10M", "10MB" and "10MiB" are all
 * 10485760). Fractions of a byte are dropped. juicefs itself takes only the one-letter unit.
 */
export function parseSize(value: string, option: string): number {
  const m = /^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)((?:e[+-]?[0-9]+)?)(?:([kmgtpe])(?:i?b)?|b)?$/i.exec(value.trim());
  if (!m) {
    throw new UsageError(
      `invalid value ${JSON.stringify(value)} for ${option}: expected a size such as 100, 1.5K, 10M, 2G or 1T ` +
        '(units are powers of 1024)',
    );
  }
  const shift = SIZE_SHIFTS[(m[3] ?? '').toLowerCase()]!;
  const bytes = Math.floor(Number(m[1]! + m[2]!) * 2 ** shift);
  if (!Number.isFinite(bytes)) throw new UsageError(`invalid value ${JSON.stringify(value)} for ${option}: too large`);
  return bytes;
}

/** Milliseconds per unit of a Go duration ("µs" is U+00B5, "μs" U+03BC; Go takes both). */
const DURATION_UNITS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  'µs': 1e-3,
  'μs': 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};
const DAY_MS = 86_400_000;

/**
 * A duration in milliseconds, as juicefs reads --max-age/--min-age: a plain number is seconds
 * ("90", "1.5"); otherwise a Go duration ("1h30m", "500ms", "2.5h"), optionally preceded by days
 * ("7d", "1.5d", "1d12h"). juicefs rounds fractional days down to whole hours; ferry does not.
 */
export function parseDuration(value: string, option: string): number {
  const bad = () =>
    new UsageError(
      `invalid value ${JSON.stringify(value)} for ${option}: expected a duration such as 90 (seconds), ` +
        '500ms, 90s, 15m, 1h30m, 7d or 1d12h',
    );
  const s = value.trim();
  if (/^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(e[+-]?[0-9]+)?$/i.test(s)) return checked(Number(s) * 1000, bad);
  let ms = 0;
  let rest = s;
  const d = s.indexOf('d');
  if (d >= 0) {
    const days = s.slice(0, d);
    if (!/^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)$/.test(days)) throw bad();
    ms = Number(days) * DAY_MS;
    rest = s.slice(d + 1);
  } else if (rest === '') {
    throw bad();
  }
  const part = /([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)/y;
  while (part.lastIndex < rest.length) {
    const m = part.exec(rest);
    if (!m) throw bad();
    ms += Number(m[1]) * DURATION_UNITS[m[2]!]!;
  }
  return checked(ms, bad);
}

function checked(ms: number, bad: () => UsageError): number {
  if (!Number.isFinite(ms)) throw bad();
  return ms;
}

/**
 * A point in time, in milliseconds since the epoch: "2006-01-02 15:04:05" or "2006-01-02" in local
 * time, or ISO 8601 ("2006-01-02T15:04:05", with optional fraction and "Z" or "+07:00"/"+0700"; a
 * time without a zone is local). Seconds may be left out ("2006-01-02 15:04").
 */
export function parseTime(value: string, option: string): number {
  const bad = (why: string) =>
    new UsageError(
      `invalid value ${JSON.stringify(value)} for ${option}: ${why}; expected a time such as ` +
        '"2006-01-02 15:04:05" (local time), "2006-01-02" or "2006-01-02T15:04:05Z"',
    );
  const m =
    /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?(?: ?(Z|[+-]\d{2}:?\d{2}))?)?$/i.exec(
      value.trim(),
    );
  if (!m) throw bad('not a date');
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map((x) => Number(x ?? 0)) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const millis = Number((m[7] ?? '').padEnd(3, '0').slice(0, 3));
  if (month < 1 || month > 12) throw bad('month out of range');
  if (day < 1 || day > daysInMonth(year, month)) throw bad('day out of range');
  if (hour > 23) throw bad('hour out of range');
  if (minute > 59) throw bad('minute out of range');
  if (second > 59) throw bad('second out of range');

  const zone = m[8];
  if (zone === undefined) {
    const t = new Date(2000, 0, 1);
    t.setFullYear(year, month - 1, day);
    t.setHours(hour, minute, second, millis);
    return t.getTime();
  }
  const t = new Date(0);
  t.setUTCFullYear(year, month - 1, day);
  t.setUTCHours(hour, minute, second, millis);
  let offset = 0;
  if (zone.toUpperCase() !== 'Z') {
    const digits = zone.slice(1).replace(':', '');
    const oh = Number(digits.slice(0, 2));
    const om = Number(digits.slice(2));
    if (oh > 23 || om > 59) throw bad('time zone offset out of range');
    offset = (zone[0] === '-' ? -1 : 1) * (oh * 60 + om) * 60_000;
  }
  return t.getTime() - offset;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

export interface EntryLimits {
  /** Bytes; files smaller are skipped. */
  minSize?: number | undefined;
  /** Bytes; files larger are skipped. */
  maxSize?: number | undefined;
  /** Milliseconds; files modified longer ago are skipped (0: no limit). */
  maxAge?: number | undefined;
  /** Milliseconds; files modified more recently are skipped (0: no limit). */
  minAge?: number | undefined;
  /** Milliseconds since the epoch; files modified at or before it are skipped. */
  startTime?: number | undefined;
  /** Milliseconds since the epoch; files modified at or after it are skipped. */
  endTime?: number | undefined;
  /** The instant ages are measured from, fixed for the run; defaults to the time of the call. */
  now?: number | undefined;
}

export interface LimitedEntry {
  size: number;
  mtime: number;
  isDir: boolean;
  isSymlink?: boolean | undefined;
}

/** true = keep. Throws UsageError for contradicting bounds, as juicefs refuses them. */
export function makeEntryFilter(limits: EntryLimits): (entry: LimitedEntry) => boolean {
  const minSize = limits.minSize ?? 0;
  const maxSize = limits.maxSize ?? Infinity;
  if (minSize > maxSize) {
    throw new UsageError(`--min-size (${minSize} bytes) is larger than --max-size (${maxSize} bytes): nothing would be copied`);
  }
  const maxAge = limits.maxAge ?? 0;
  const minAge = limits.minAge ?? 0;
  if (maxAge > 0 && minAge > maxAge) {
    throw new UsageError(`--min-age (${minAge} ms) is longer than --max-age (${maxAge} ms): nothing would be copied`);
  }
  const now = limits.now ?? Date.now();
  // Each bound as an open interval on mtime: keep when after < mtime < before.
  let after = -Infinity;
  let before = Infinity;
  if (maxAge > 0) after = now - maxAge;
  if (minAge > 0) before = now - minAge;
  if (limits.startTime !== undefined) after = Math.max(after, limits.startTime);
  if (limits.endTime !== undefined) before = Math.min(before, limits.endTime);

  return (entry) => {
    if (entry.isDir || entry.isSymlink === true) return true;
    return entry.size >= minSize && entry.size <= maxSize && entry.mtime > after && entry.mtime < before;
  };
}
