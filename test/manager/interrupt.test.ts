import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = mkdtempSync(join(tmpdir(), 'ferry-int-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function startSlowSync(dst: string): { child: ReturnType<typeof spawn>; out: () => string; err: () => string; exit: Promise<number | null> } {
  const src = join(root, 'src');
  mkdirSync(src, { recursive: true });
  const data = Buffer.alloc(64 * 1024, 7);
  for (let i = 0; i < 100; i++) writeFileSync(join(src, `f${String(i).padStart(3, '0')}`), data);
  // 4 Mbit/s: 0.5 MB/s, so 6.4 MB take ~13 s — long enough to interrupt.
  const child = spawn(process.execPath, ['bin/ferry.js', 'sync', '--bwlimit', '4', '--threads', '2', '--json', src + '/', dst + '/'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (err += c));
  const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out: () => out, err: () => err, exit };
}

function complete(dir: string): { files: string[]; partial: string[] } {
  const files = readdirSync(dir);
  return { files, partial: files.filter((f) => f.startsWith('.ferry-tmp-') || statSync(join(dir, f)).size !== 64 * 1024) };
}

describe('Ctrl-C', () => {
  it('once: stops starting copies, finishes running ones, prints the summary, exits 130', async () => {
    const dst = join(root, 'dst1');
    const run = startSlowSync(dst);
    await new Promise((r) => setTimeout(r, 1500));
    run.child.kill('SIGINT');
    const started = Date.now();
    expect(await run.exit).toBe(130);
    expect(Date.now() - started).toBeLessThan(5000);
    const summary = JSON.parse(run.out().trim());
    expect(summary.copied).toBeGreaterThan(0);
    expect(summary.copied).toBeLessThan(100);
    // Keys not listed yet are not counted; those listed were all handled.
    expect(summary).toMatchObject({ stopped: 'interrupted', lost: 0, failed: 0 });
    expect(run.err()).toContain(`Found: ${summary.copied},`);
    expect(run.err()).toContain('run the same command again to finish');
    // What is there is whole: running copies finished, nothing half-written under a real name.
    const { files, partial } = complete(dst);
    expect(partial).toEqual([]);
    expect(files.length).toBe(summary.copied);
  });

  it('twice: stops at once', async () => {
    const dst = join(root, 'dst2');
    const run = startSlowSync(dst);
    await new Promise((r) => setTimeout(r, 1500));
    run.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 50));
    run.child.kill('SIGINT');
    expect(await run.exit).toBe(130);
    const { partial } = complete(dst);
    // An aborted copy leaves no file under its real name.
    expect(partial.filter((f) => !f.startsWith('.ferry-tmp-'))).toEqual([]);
  });
});

describe('the process arguments', () => {
  it('do not show a secret key from an address to other users of the machine (ps, /proc)', async () => {
    const src = join(root, 'ps-src');
    mkdirSync(src, { recursive: true });
    // --files-from on a pipe that stays open keeps the process waiting after it has started.
    const child = spawn(process.execPath, ['bin/ferry.js', 'sync', '--files-from', '/dev/stdin', src + '/', 's3://AKIDPS:TOPSECRET%2Fkey@127.0.0.1:9/bucket/'], { stdio: ['pipe', 'ignore', 'ignore'] });
    try {
      let cmdline = '';
      for (let i = 0; i < 50 && !cmdline.includes('ferry sync'); i++) {
        await new Promise((r) => setTimeout(r, 100));
        cmdline = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      }
      expect(cmdline).toContain('ferry sync --files-from /dev/stdin');
      expect(cmdline).toContain('s3://AKIDPS:****@127.0.0.1:9/bucket/');
      expect(cmdline).not.toContain('TOPSECRET');
    } finally {
      child.kill('SIGKILL');
    }
  });
});
