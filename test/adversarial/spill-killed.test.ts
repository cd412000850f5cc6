/**
 * A run killed while it lists a directory sorted on disk (SIGKILL, the OOM killer, a closed
 * terminal's SIGHUP) cannot remove its spill directory, which holds the names of the whole
 * directory (gigabytes for 100 million names). Bug: nothing ever removed it; the next run that
 * spills must reclaim the spill directories of ferry processes that are gone, as it reclaims
 * their temporary files.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { thisHost } from '../../src/shared/storage/temp.js';
import { spillsOf } from '../support/files.js';

const work = mkdtempSync(join(tmpdir(), 'ferry-adversarial-killed-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function start(args: string[]) {
  return spawn(process.execPath, [join(process.cwd(), 'bin/ferry.js'), ...args], { stdio: 'ignore' });
}

describe('spill directories of killed runs', () => {
  for (const signal of ['SIGKILL', 'SIGHUP'] as const) {
    it(`are reclaimed by the next run that spills (${signal})`, async () => {
      const src = join(work, `src-${signal}`);
      mkdirSync(join(src, 'big'), { recursive: true });
      for (let i = 0; i < 3000; i++) writeFileSync(join(src, 'big', `f${i}`), 'x'.repeat(1000));
      // Slow (--bwlimit), so that it is still listing big/ when killed.
      const child = start(['sync', '--list-cutoff', '10', '--bwlimit', '0.05', src + '/', join(work, `dst-${signal}`) + '/']);
      const pid = child.pid!;
      const deadline = Date.now() + 20_000;
      while (spillsOf(pid).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(spillsOf(pid).length).toBeGreaterThan(0);
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await exited;
      // The next run that sorts a directory on disk.
      const next = start(['sync', '--list-cutoff', '10', src + '/', join(work, `dst2-${signal}`) + '/']);
      await new Promise((r) => next.once('exit', r));
      const left = spillsOf(pid);
      for (const n of left) rmSync(join(tmpdir(), n), { recursive: true, force: true });
      expect(left).toEqual([]);
    }, 60_000);
  }

  it("of another host sharing the directory (a container's) are left alone until a day unchanged; this host's live ones always", async () => {
    // Process numbers of another host (or PID namespace) say nothing here: such a spill directory
    // goes by its age, as another host's temporary files do (temp.ts isAbandoned).
    const gone = 2 ** 22 + 777; // above Linux's pid_max: no such process here
    const dirs = {
      otherOld: `ferry-list-${gone}-0a0b0c0d-1.elsewhere-host`,
      otherFresh: `ferry-list-${gone}-0a0b0c0d-2.elsewhere-host`,
      liveHere: `ferry-list-${process.pid}-0a0b0c0d-3.${thisHost()}`,
    };
    for (const d of Object.values(dirs)) mkdirSync(join(tmpdir(), d, 'runs'), { recursive: true });
    const old = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    utimesSync(join(tmpdir(), dirs.otherOld), old, old);
    try {
      const src = join(work, 'src-hosts');
      mkdirSync(join(src, 'big'), { recursive: true });
      for (let i = 0; i < 3000; i++) writeFileSync(join(src, 'big', `f${i}`), 'x');
      const next = start(['sync', '--list-cutoff', '10', src + '/', join(work, 'dst-hosts') + '/']);
      await new Promise((r) => next.once('exit', r));
      expect(existsSync(join(tmpdir(), dirs.otherOld))).toBe(false);
      expect(existsSync(join(tmpdir(), dirs.otherFresh))).toBe(true);
      expect(existsSync(join(tmpdir(), dirs.liveHere))).toBe(true);
    } finally {
      for (const d of Object.values(dirs)) rmSync(join(tmpdir(), d), { recursive: true, force: true });
    }
  }, 60_000);
});
