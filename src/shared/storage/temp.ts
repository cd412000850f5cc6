import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/**
 * Temporary files. Tree stores (file, sftp, hdfs) write a file under a temporary name in its
 * directory and rename it into place, so a reader never sees half a file. The name says whose it
 * is, `.ferry-tmp-HOST_PID_RUN_RANDOM`, so that a later run can tell a live writer's file from one
 * left by a killed process or a dropped connection, and reclaim only the latter.
 */
export const TEMP_PREFIX = '.ferry-tmp-';

/** A temporary whose writer runs on another host (or cannot be told) is reclaimed after this long unchanged. */
export const TEMP_MAX_AGE_MS = 24 * 3600 * 1000;

const HOST = hostname().replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 64) || 'localhost';
const RUN = randomBytes(4).toString('hex');

/** The part of a temporary's name that is the same for every file this process writes. */
export function tempNamePrefix(): string {
  return `${TEMP_PREFIX}${HOST}_${process.pid.toString(36)}_${RUN}_`;
}

/** A fresh temporary file name (no directory) for this process. */
export function tempName(): string {
  return tempNamePrefix() + randomBytes(5).toString('hex');
}

/**
 * Is `name` a temporary file's, in the one form ferry writes (tempName)? A user's own file that
 * merely starts with the prefix ('.ferry-tmp-notes') is not: it is listed, copied and never
 * reclaimed.
 */
export function isTempName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX) && TEMP_NAME.test(name);
}
/** TEMP_PREFIX, HOST, the pid in base 36, RUN, then what makes the file's name unique (tempName, threadTempName). */
const TEMP_NAME = /^\.ferry-tmp-[A-Za-z0-9.-]{1,64}_[0-9a-z]{1,11}_[0-9a-f]{8}_[0-9a-z][0-9a-z-]{0,39}$/;

/**
 * A temporary name made on a file-system thread (file/fs-thread.ts) from the process's
 * tempNamePrefix(): unique by thread and sequence, with no random bytes to draw for each file.
 */
export function threadTempName(prefix: string, thread: number, seq: number): string {
  return prefix + thread.toString(36) + '-' + seq.toString(36) + '-' + Math.random().toString(36).slice(2, 8);
}

/** This host's name as temporary names (and spill directories, file/pool.ts) carry it. */
export function thisHost(): string {
  return HOST;
}

/**
 * A temporary left behind by a writer that is gone: on this host, its process no longer runs; from
 * another host, it has not changed for TEMP_MAX_AGE_MS.
 * A live concurrent run's temporaries are never abandoned.
 */
export function isAbandoned(name: string, mtimeMs: number, now = Date.now()): boolean {
  if (!isTempName(name)) return false;
  const [host, pid36, run] = name.slice(TEMP_PREFIX.length).split('_');
  if (host === HOST && pid36 !== undefined && run !== undefined) {
    const pid = parseInt(pid36, 36);
    if (pid === process.pid) return run !== RUN; // an earlier process with our pid is gone
    if (Number.isSafeInteger(pid) && pid > 0) return !processRuns(pid);
  }
  return now - mtimeMs > TEMP_MAX_AGE_MS;
}

/** Does process `pid` of this host run (whoever runs it)? */
export function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, as another user.
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}
