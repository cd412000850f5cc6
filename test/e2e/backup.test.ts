/**
 * Scheduled DR replication through the built command line: `ferry sync --backup-meta` writes one
 * metadata backup per interval however many managers race for it, and `--repeat` keeps syncing
 * until Ctrl-C, with one summary per run.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { FerryProcesses, type FerryProcess as Proc } from '../support/ferry-process.js';

const root = mkdtempSync(join(tmpdir(), 'ferry-backup-e2e-'));
const processes = new FerryProcesses();
const ferry = (args: string[]): Proc => processes.spawn(args);
afterAll(() => {
  processes.killAll();
  rmSync(root, { recursive: true, force: true });
});

const summaries = (p: Proc) =>
  p
    .out()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown> & { backup?: Record<string, unknown> });

async function until(what: string, test: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!test()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function tree(name: string, files = 20): string {
  const dir = join(root, name);
  for (let i = 0; i < files; i++) {
    mkdirSync(join(dir, `d${i % 4}`), { recursive: true });
    writeFileSync(join(dir, `d${i % 4}`, `f${i}.txt`), `file ${i}\n`);
  }
  return dir + '/';
}

const meta = (dst: string) => readdirSync(join(dst, '.ferry', 'meta')).sort();

describe('ferry sync --backup-meta', () => {
  it('two managers started at once on one local DST: exactly one backup for the interval, the other says it was claimed', async () => {
    const src = tree('race-src');
    const dst = join(root, 'race-dst') + '/';
    const [a, b] = [ferry(['sync', src, dst, '--backup-meta', '1d', '--json']), ferry(['sync', src, dst, '--backup-meta', '1d', '--json'])];
    expect([await a.done, await b.done]).toEqual([0, 0]);
    const backups = [...summaries(a), ...summaries(b)].map((s) => s.backup!);
    expect(backups.map((r) => r['status']).sort()).toEqual(['skipped', 'written']);
    const loser = backups.find((r) => r['status'] === 'skipped')!;
    const winner = backups.find((r) => r['status'] === 'written')!;
    // Started together, the second either loses the claim or, when the first was already done
    // (a loaded machine starts them apart), finds this interval's backup: one backup either way.
    // The claim race itself is tested in process (test/manager/backup/schedule.test.ts).
    expect(['claimed', 'not-due']).toContain(loser['reason']);
    if (loser['reason'] === 'claimed') expect([a.err(), b.err()].join('\n')).toContain("metadata backup skipped: this interval's backup");
    const files = meta(dst);
    expect(files[1]).toMatch(/^dump-\d{4}-\d{2}-\d{2}-\d{6}\.json\.gz$/);
    // The claim names the interval: with --backup-meta 1d, the backup's UTC day from midnight.
    expect(files).toEqual([`claim-${files[1]!.slice(5, 15)}-000000`, (winner['key'] as string).slice('.ferry/meta/'.length)]);
    const doc = JSON.parse(gunzipSync(readFileSync(join(dst, '.ferry', 'meta', files[1]!))).toString('utf8'));
    expect(doc.format).toBe('ferry-dump/1');
    expect(winner['counters']).toEqual({ files: 20, dirs: 4, symlinks: 0, bytes: 20 * 7 + 10 * 1 });
    // The mirror itself is complete, and .ferry/ is not part of it.
    expect(readdirSync(dst).sort()).toEqual(['.ferry', 'd0', 'd1', 'd2', 'd3']);
  });

  it('--repeat: one summary per run, the backup once per interval, Ctrl-C while waiting stops at once with the last run\'s status', async () => {
    const src = tree('repeat-src', 8);
    const dst = join(root, 'repeat-dst') + '/';
    const p = ferry(['sync', src, dst, '--repeat', '4s', '--backup-meta', '1d', '--json']);
    await until('the first summary', () => summaries(p).length === 1);
    writeFileSync(join(src, 'late.txt'), 'arrived between runs\n');
    await until('the second summary', () => summaries(p).length === 2);
    await until('the wait for run 3', () => p.err().includes('--repeat: run 3 starts at'));
    const stopped = Date.now();
    p.child.kill('SIGINT');
    expect(await p.done).toBe(0);
    expect(Date.now() - stopped).toBeLessThan(3000);
    const [one, two] = summaries(p);
    expect(one).toMatchObject({ run: 1, copied: 8, exitCode: 0, backup: { status: 'written' } });
    expect(two).toMatchObject({ run: 2, copied: 1, skipped: 8, exitCode: 0, backup: { status: 'skipped', reason: 'not-due' } });
    expect(p.err()).toContain('--repeat: stopped while waiting; run 2 was the last');
    expect(meta(dst).filter((f) => f.startsWith('dump-'))).toHaveLength(1);
  });

  it('--repeat: Ctrl-C during a run finishes it as a single run does (130), backs nothing up, and starts no other', async () => {
    const src = join(root, 'slow-src');
    mkdirSync(src, { recursive: true });
    const data = Buffer.alloc(64 * 1024, 7);
    for (let i = 0; i < 60; i++) writeFileSync(join(src, `f${String(i).padStart(3, '0')}`), data);
    const dst = join(root, 'slow-dst') + '/';
    // 4 Mbit/s: 3.9 MB take ~8 s — long enough to interrupt.
    const p = ferry(['sync', src + '/', dst, '--bwlimit', '4', '--threads', '2', '--repeat', '2s', '--backup-meta', '1h', '--json']);
    await new Promise((r) => setTimeout(r, 1500));
    p.child.kill('SIGINT');
    expect(await p.done).toBe(130);
    const all = summaries(p);
    expect(all).toHaveLength(1);
    expect(all[0]).toMatchObject({ run: 1, stopped: 'interrupted', exitCode: 130, backup: { status: 'skipped', reason: 'interrupted' } });
    expect(p.err()).toContain('--repeat: stopped after run 1');
  });

  it('a backup that cannot be written fails the run (exit 1) and says why; --dry writes none', async () => {
    const src = tree('fail-src', 4);
    const dst = join(root, 'fail-dst') + '/';
    // A symlink where the backups would go: ferry never writes through links inside a destination.
    mkdirSync(join(dst, '.ferry'), { recursive: true });
    mkdirSync(join(root, 'elsewhere'));
    symlinkSync(join(root, 'elsewhere'), join(dst, '.ferry', 'meta'));
    const dry = ferry(['sync', src, dst, '--backup-meta', '1h', '--dry', '--json']);
    expect(await dry.done).toBe(0);
    expect(summaries(dry)[0]).toMatchObject({ backup: { status: 'skipped', reason: 'dry' } });
    const p = ferry(['sync', src, dst, '--backup-meta', '1h', '--json']);
    expect(await p.done).toBe(1);
    const [summary] = summaries(p);
    expect(summary).toMatchObject({ copied: 4, failed: 0, exitCode: 1, backup: { status: 'failed', reason: 'error' } });
    expect(summary!['error']).toMatch(/^metadata backup FAILED: .*\.ferry\/meta.*\[FERRY_UNSAFE_PATH\]$/);
    expect(readdirSync(join(root, 'elsewhere'))).toEqual([]);
    expect(p.err()).toContain('ferry: error: metadata backup FAILED: ');
  });

  it('a bad interval is a usage error that says what it takes', async () => {
    const p = ferry(['sync', '/tmp/x/', '/tmp/y/', '--repeat', '10', '--json']);
    expect(await p.done).toBe(2);
    expect(p.err()).toContain('--repeat takes an interval such as 30s, 10m, 1h, 1d or 1h30m (at least 1s), not "10"');
    expect(summaries(p)[0]).toMatchObject({ exitCode: 2 });
    // Backups go under DST/.ferry/meta/: a DST that is a key prefix has no such place.
    const q = ferry(['sync', tree('prefix-src', 1).slice(0, -1), join(root, 'prefix-dst'), '--backup-meta', '1h', '--json']);
    expect(await q.done).toBe(2);
    expect(q.err()).toContain("--backup-meta needs a directory as DST (ending in '/')");
    expect(summaries(q)[0]).toMatchObject({ exitCode: 2, backup: { status: 'skipped', reason: 'refused' } });
  });
});
